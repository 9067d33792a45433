/* A client connection from accept to close: the HTTP handshake, then the
 * WebSocket phase (ws.c), then lingering. Owned by one worker. */
#ifndef WSECHOD_CONN_H
#define WSECHOD_CONN_H

#include <stdint.h>

#include "ev.h"
#include "list.h"

struct config;

/* What one worker shares with its connections. The timer queues hold
 * connections in deadline order because each has one fixed timeout:
 * appending keeps them sorted, so expiry is O(1) per connection. */
struct conn_env {
    const struct config *cf;
    struct ev_loop *loop;
    struct list all;            /* every live connection */
    struct list handshake_q;    /* HTTP phase, by handshake_timeout */
    struct list closing_q;      /* close sent or lingering, by close_timeout */
    struct list ready_q;        /* yielded with input left: run next iteration */
    struct list dead_q;         /* closed during this iteration: freed after it */
    unsigned nconns;
};

void conn_env_init(struct conn_env *env, const struct config *cf, struct ev_loop *loop);

/* Takes ownership of the accepted socket fd. A non-zero reject status
 * (503) answers the handshake with that status instead of upgrading. */
int  conn_accept(struct conn_env *env, int fd, int reject_status);
/* Deadlines: every connection in both timer queues whose time has come. */
void conn_expire_timers(struct conn_env *env);
/* Milliseconds until the next connection deadline, or -1 if none. */
int  conn_next_timeout(const struct conn_env *env);
/* Runs the connections that yielded last iteration. */
void conn_run_ready(struct conn_env *env);
/* Ends every connection: WebSockets get a close frame with code, pending
 * handshakes are closed. Connections then finish on their own. */
void conn_close_all(struct conn_env *env, uint16_t code);
/* Sends a close frame with code to up to max WebSockets, oldest first.
 * Amortised O(1) per connection. */
void conn_close_oldest(struct conn_env *env, uint16_t code, unsigned max);
/* Frees what was closed during this iteration. */
void conn_reap(struct conn_env *env);
/* Closes and frees everything at once (fast exit). */
void conn_destroy_all(struct conn_env *env);

#endif
