/* The WebSocket phase of a connection: wslay glue and the module calls.
 * Knows the socket and nothing of epoll: callers run it when the socket is
 * ready and act on the flags it returns. */
#ifndef WSECHOD_WS_H
#define WSECHOD_WS_H

#include <stddef.h>

#include "module.h"

struct config;
struct config_route;

enum {
    WS_WANT_WRITE = 1 << 0, /* output is queued: wait for EPOLLOUT */
    WS_AGAIN      = 1 << 1, /* gave up the CPU with input left: run again soon */
    WS_CLOSING    = 1 << 2, /* our close frame is out: waiting for the peer's */
    WS_DONE       = 1 << 3, /* finished: end the TCP connection */
    WS_BROKEN     = 1 << 4, /* ...and the socket failed: no lingering */
    WS_ACTIVE     = 1 << 5, /* bytes arrived from the peer */
    WS_STALLED    = 1 << 6, /* reading paused: the peer does not read its echoes */
};

/* Takes ownership of pending[0..len): bytes that arrived with the handshake
 * (or with a handed-over connection). Calls the route's module's on_open.
 * NULL if out of memory. */
struct ws_conn *ws_open(int fd, const struct config *cf, const struct config_route *route,
                        char *pending, size_t len);
/* Reads, dispatches, writes; returns WS_* flags. */
unsigned ws_run(struct ws_conn *w);
/* epoll saw the peer's FIN (EPOLLRDHUP/EPOLLHUP): the next run reads
 * until EOF even after a short read, since no new edge will come. */
void ws_peer_closed(struct ws_conn *w);
/* Bytes w holds beyond its fixed-size object, as counted in mem.h. */
size_t ws_held(const struct ws_conn *w);
/* The worker is over worker_memory_limit and w is among the biggest
 * holders: a message being received is dropped and the connection failed
 * with 1009; one whose peer does not take its output is dropped (WS_BROKEN:
 * a close frame could not get through). Returns WS_* flags like ws_run. */
unsigned ws_shed(struct ws_conn *w);
/* Queues a keepalive ping. */
void ws_ping(struct ws_conn *w);
/* Calls the module's on_close and frees everything (not the socket). */
void ws_free(struct ws_conn *w);
const struct config_route *ws_route(const struct ws_conn *w);
/* At a clean point (nothing half received, nothing queued to send, not
 * closing) returns 0 and the bytes read but not yet processed, which stay
 * owned by w; otherwise -1. */
int ws_export(const struct ws_conn *w, const char **pending, size_t *len);
/* Frees everything without telling the module: the connection lives on in
 * another worker. The socket is the caller's. */
void ws_detach(struct ws_conn *w);

#endif
