/* In a worker: connections accepted on a proxy_protocol listener, from
 * accept until their PROXY protocol header is in (proxyproto.h), before
 * any HTTP or TLS.
 *
 * - A peer not in the listener's proxy_protocol_from is closed at once
 *   (unix sockets: any peer; their mode and owner decide who connects).
 * - The header is read with MSG_PEEK and parsed whole; then exactly its
 *   bytes are consumed, so whatever follows (the request, a ClientHello)
 *   stays in the kernel for the next layer, whose registration with epoll
 *   reports it at once.
 * - A header that is not one, none within handshake_timeout, or a peer
 *   that leaves in the middle of one: closed, logged at info with the real
 *   peer and counted (wsechod_proxy_protocol_errors_total). A peer that
 *   connects and leaves without a byte (a TCP health check) is not an
 *   error.
 * Each waiting connection holds one small pooled object and a timer. */
#ifndef WSECHOD_PROXYWAIT_H
#define WSECHOD_PROXYWAIT_H

#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "ev.h"

/* The header of fd (accepted on l) is in: client is the address it named,
 * NULL for a LOCAL or UNKNOWN header (the connection's own is the one). */
typedef void proxywait_done_fn(int fd, const struct config_listen *l,
                               const struct sockaddr *client);

void proxywait_setup(struct ev_loop *loop, uint64_t timeout_ms, proxywait_done_fn *done);
/* Takes fd, accepted on l from peer[0..peerlen). */
void proxywait_start(int fd, const struct config_listen *l, const struct sockaddr_storage *peer,
                     socklen_t peerlen);
/* Closes every connection still waiting (at exit). */
void proxywait_close_all(void);

#endif
