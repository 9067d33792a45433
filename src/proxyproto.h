/* The PROXY protocol (HAProxy's, versions 1 and 2) header a load balancer
 * sends before the client's bytes, telling who the client is. A pure
 * function of the bytes received so far: no I/O, no allocation, so the
 * worker can parse what it peeked (MSG_PEEK) and then read exactly the
 * header, leaving every byte after it in the kernel for HTTP or TLS.
 *
 * Accepted: v1 "PROXY TCP4|TCP6 src dst sport dport\r\n" (canonical
 * addresses, no leading zeros, exactly one space, at most 107 bytes with
 * the CRLF) and "PROXY UNKNOWN...\r\n"; v2 (the 12-byte signature, version
 * 2, command LOCAL or PROXY, then family/transport and a length, at most
 * PROXYPROTO_V2_MAX_LEN bytes of addresses and TLVs, whose framing is
 * checked and whose content is skipped). LOCAL, UNKNOWN, and a PROXY
 * command for a family or transport we do not serve (UNSPEC, UDP, UNIX)
 * mean "use the connection's own addresses". Anything else is refused. */
#ifndef WSECHOD_PROXYPROTO_H
#define WSECHOD_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXYPROTO_V1_MAX 107
/* Addresses and TLVs a v2 header may carry (the field allows 65535):
 * enough for every TLV HAProxy, AWS and GCP send, small enough to peek. */
#define PROXYPROTO_V2_MAX_LEN 2048
/* The most bytes a header can take: what a reader must be able to peek. */
#define PROXYPROTO_MAX (16 + PROXYPROTO_V2_MAX_LEN)

enum proxyproto_status { PROXYPROTO_NEED_MORE, PROXYPROTO_OK, PROXYPROTO_BAD };

struct proxyproto_result {
    size_t len;                     /* OK: the header's bytes, to consume */
    int version;                    /* OK: 1 or 2 */
    int local;                      /* OK: use the connection's own addresses */
    struct sockaddr_storage src;    /* OK, !local: the client (AF_INET or AF_INET6) */
    struct sockaddr_storage dst;    /* OK, !local: the address it connected to */
    const char *reason;             /* BAD: why, a static string */
};

/* Judges buf[0..len), the first bytes of a connection. NEED_MORE: a
 * prefix of a valid header (read more, within a deadline); OK: a whole
 * header of r->len bytes; BAD: not one, r->reason says why. */
enum proxyproto_status proxyproto_parse(const uint8_t *buf, size_t len,
                                        struct proxyproto_result *r);

#endif
