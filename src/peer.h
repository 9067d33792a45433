/* Who a connection's client is, when that is more than getpeername says,
 * in one worker: the address a PROXY protocol header gave, and the
 * connection's place in the per-client limits (perip.h), counted at
 * accept and released at close, handed over with the connection.
 *
 * Records live in a worker-private array indexed by descriptor, made only
 * once a connection needs one (a proxy_protocol listener, or a per-IP
 * limit on): struct conn does not grow, and with neither feature every
 * entry point below is one comparison against 0 (peer_nfds).
 *
 * Names for logs (peer_name, which sock_peer_name calls): the PROXY
 * client if there is one, else the socket's peer: "1.2.3.4:5", "[::1]:5",
 * or for a unix socket "unix:" and the peer's path, "unix" if it has none. */
#ifndef WSECHOD_PEER_H
#define WSECHOD_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct config;
struct handoff_conn;
struct handoff_section;

/* Descriptors below this have a record slot (0 while nothing needs one). */
extern unsigned peer_nfds;

/* Per worker, at start: the limits of cf. */
void peer_setup(const struct config *cf);
/* Whether new connections must go through peer_accepted. */
int  peer_limits_on(void);
/* The connection on fd was accepted. client: who it is (the PROXY header's
 * address when from_header, else the socket's peer; NULL: no IP client,
 * as on a unix socket or for a LOCAL header). With a per-IP limit on, the
 * client is admitted or refused here (the refusal is answered once its
 * request is in: peer_refusal). */
void peer_accepted(int fd, const struct sockaddr *client, int from_header);

/* A per-IP limit refused the client: the status (503 or 429) and its
 * reason, with the Retry-After header line in hdr; 0 if not refused. */
int  peer_refusal_slow(int fd, const char **reason, char *hdr, size_t len);
static inline int peer_refusal(int fd, const char **reason, char *hdr, size_t len)
{
    return (unsigned)fd < peer_nfds ? peer_refusal_slow(fd, reason, hdr, len) : 0;
}
/* fd is being closed: its count is released. */
void peer_close_slow(int fd);
static inline void peer_close(int fd)
{
    if ((unsigned)fd < peer_nfds)
        peer_close_slow(fd);
}
/* fd went to another worker (conn_release): the count goes with it. */
void peer_handed(int fd);
/* The handoff section of fd's record, valid until the next call: 1 with
 * *sec filled, 0 if it has nothing to carry. */
int  peer_export(int fd, struct handoff_section *sec);
/* A connection handed over to us (hc->fd): its record from its section,
 * its count taken over (or counted here if it comes from another table). */
void peer_adopt(const struct handoff_conn *hc);

const char *peer_name(int fd, char *buf, size_t len);

#endif
