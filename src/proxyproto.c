/* Written from HAProxy's proxy-protocol.txt (sections 2.1 and 2.2). Strict
 * where the text says "must": a sender that does not follow it is refused
 * rather than guessed at, since the header decides whom we believe the
 * client to be. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char v1_sig[] = "PROXY ";

static enum proxyproto_status bad(struct proxyproto_result *r, const char *why)
{
    r->reason = why;
    return PROXYPROTO_BAD;
}

/* ---- Version 1 ---------------------------------------------------------- */

/* A decimal number up to max without leading zeros, all of s[0..n). */
static int decimal(const char *s, size_t n, unsigned max, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* Four octets, each 0..255 without leading zeros, three single dots. */
static int ipv4(const char *s, size_t n, struct in_addr *a)
{
    uint8_t b[4];
    size_t start = 0;
    for (int k = 0; k < 4; k++) {
        size_t end = start;
        unsigned v;
        while (end < n && s[end] != '.')
            end++;
        if (decimal(s + start, end - start, 255, &v) < 0 || (k < 3) != (end < n))
            return -1;
        b[k] = (uint8_t)v;
        start = end + 1;
    }
    memcpy(&a->s_addr, b, 4);
    return 0;
}

static int ipv6(const char *s, size_t n, struct in6_addr *a)
{
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(text) || strspn(s, "0123456789abcdefABCDEF:.") < n)
        return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(AF_INET6, text, a) == 1 ? 0 : -1;
}

/* The next field of line[*pos..n), up to a single space or the end. */
static int field(const char *line, size_t n, size_t *pos, const char **f, size_t *flen)
{
    size_t p = *pos, e = p;
    while (e < n && line[e] != ' ')
        e++;
    if (e == p)
        return -1; /* two spaces in a row, or a missing field */
    *f = line + p;
    *flen = e - p;
    *pos = e < n ? e + 1 : e;
    return e < n && e + 1 == n ? -1 : 0; /* a trailing space */
}

static int sockaddr_of(int family, const char *s, size_t n, const char *port, size_t pn,
                       struct sockaddr_storage *ss)
{
    unsigned p;
    memset(ss, 0, sizeof(*ss));
    if (decimal(port, pn, 65535, &p) < 0)
        return -1;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)p);
        return ipv4(s, n, &a->sin_addr);
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)p);
    return ipv6(s, n, &a->sin6_addr);
}

/* "TCP4 src dst sport dport" (line: after "PROXY ", before the CRLF). */
static enum proxyproto_status v1_line(const char *line, size_t n, struct proxyproto_result *r)
{
    const char *f[5];
    size_t fl[5], pos = 0;
    if (n >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (n == 7 || line[7] == ' ')) {
        r->local = 1; /* whatever follows is to be ignored */
        return PROXYPROTO_OK;
    }
    for (int i = 0; i < 5; i++)
        if (field(line, n, &pos, &f[i], &fl[i]) < 0)
            return bad(r, "v1: malformed line");
    if (pos != n)
        return bad(r, "v1: too many fields");
    int family = fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0 ? AF_INET
               : fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0 ? AF_INET6 : 0;
    if (family == 0)
        return bad(r, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    if (sockaddr_of(family, f[1], fl[1], f[3], fl[3], &r->src) < 0 ||
        sockaddr_of(family, f[2], fl[2], f[4], fl[4], &r->dst) < 0)
        return bad(r, "v1: invalid address or port");
    return PROXYPROTO_OK;
}

static enum proxyproto_status v1(const uint8_t *buf, size_t len, struct proxyproto_result *r)
{
    size_t n = len < PROXYPROTO_V1_MAX ? len : PROXYPROTO_V1_MAX;
    if (memcmp(buf, v1_sig, n < 6 ? n : 6) != 0)
        return bad(r, "not a PROXY protocol header");
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\r') {
            if (i + 2 > PROXYPROTO_V1_MAX)
                break; /* the LF could not fit */
            if (i + 1 == len)
                return PROXYPROTO_NEED_MORE;
            if (buf[i + 1] != '\n')
                return bad(r, "v1: CR without LF");
            r->len = i + 2;
            r->version = 1;
            return v1_line((const char *)buf + 6, i - 6, r);
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return bad(r, buf[i] == '\n' ? "v1: LF without CR" : "v1: not printable ASCII");
    }
    return len >= PROXYPROTO_V1_MAX ? bad(r, "v1: no CRLF in the first 107 bytes")
                                    : PROXYPROTO_NEED_MORE;
}

/* ---- Version 2 ---------------------------------------------------------- */

/* Address bytes a family/transport byte calls for; -1: not a valid one. */
static int v2_addr_len(uint8_t fam)
{
    switch (fam) {
    case 0x00: return 0;                /* UNSPEC */
    case 0x11: case 0x12: return 12;    /* TCP, UDP over IPv4 */
    case 0x21: case 0x22: return 36;    /* over IPv6 */
    case 0x31: case 0x32: return 216;   /* UNIX stream, datagram */
    default: return -1;
    }
}

/* TLVs: a type byte, a 16-bit length, that many bytes; all must fit. */
static int tlvs_ok(const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (n < 3)
            return 0;
        size_t l = ((size_t)p[1] << 8) | p[2];
        if (l > n - 3)
            return 0;
        p += 3 + l;
        n -= 3 + l;
    }
    return 1;
}

static void v2_addresses(const uint8_t *a, uint8_t fam, struct proxyproto_result *r)
{
    memset(&r->src, 0, sizeof(r->src));
    memset(&r->dst, 0, sizeof(r->dst));
    if (fam == 0x11) {
        struct sockaddr_in *s = (struct sockaddr_in *)&r->src, *d = (struct sockaddr_in *)&r->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
        return;
    }
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&r->src, *d = (struct sockaddr_in6 *)&r->dst;
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, a, 16);
    memcpy(&d->sin6_addr, a + 16, 16);
    memcpy(&s->sin6_port, a + 32, 2);
    memcpy(&d->sin6_port, a + 34, 2);
}

static enum proxyproto_status v2(const uint8_t *buf, size_t len, struct proxyproto_result *r)
{
    if (memcmp(buf, v2_sig, len < 12 ? len : 12) != 0)
        return bad(r, "not a PROXY protocol header");
    if (len > 12 && ((buf[12] >> 4) != 2 || (buf[12] & 0x0F) > 1))
        return bad(r, (buf[12] >> 4) != 2 ? "v2: version is not 2" : "v2: unknown command");
    int local = len > 12 && (buf[12] & 0x0F) == 0;
    int alen = len > 13 ? v2_addr_len(buf[13]) : 0;
    if (!local && alen < 0)
        return bad(r, "v2: unknown address family or transport");
    if (len < 16)
        return PROXYPROTO_NEED_MORE;
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    if (body > PROXYPROTO_V2_MAX_LEN)
        return bad(r, "v2: header longer than 2064 bytes");
    if (!local && body < (size_t)alen)
        return bad(r, "v2: address block too short for its family");
    if (len < 16 + body)
        return PROXYPROTO_NEED_MORE;
    r->len = 16 + body;
    r->version = 2;
    r->local = local || (buf[13] != 0x11 && buf[13] != 0x21);
    if (local)
        return PROXYPROTO_OK; /* the block, family included, is to be ignored */
    if (!tlvs_ok(buf + 16 + alen, body - (size_t)alen))
        return bad(r, "v2: malformed TLV");
    if (!r->local)
        v2_addresses(buf + 16, buf[13], r);
    return PROXYPROTO_OK;
}

enum proxyproto_status proxyproto_parse(const uint8_t *buf, size_t len,
                                        struct proxyproto_result *r)
{
    memset(r, 0, sizeof(*r));
    if (len == 0)
        return PROXYPROTO_NEED_MORE;
    if (buf[0] == v2_sig[0])
        return v2(buf, len, r);
    if (buf[0] == 'P')
        return v1(buf, len, r);
    return bad(r, "not a PROXY protocol header");
}
