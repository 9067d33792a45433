/* A client connection from accept to close: the HTTP handshake, then the
 * WebSocket phase (ws.c), then lingering. Owned by one worker. */
#ifndef WSECHOD_CONN_H
#define WSECHOD_CONN_H

#include <stdint.h>

#include "ev.h"
#include "list.h"

struct config;

/* Timer queues (the loop's, ev.h). A connection waits in at most one. Each
 * queue has one fixed timeout, so appending keeps it in deadline order and
 * expiry costs O(1) per connection. */
enum conn_queue {
    CONN_Q_NONE,
    CONN_Q_HANDSHAKE,   /* HTTP phase: handshake_timeout, then 408 */
    CONN_Q_PING,        /* open, heard from: ping_interval, then a ping */
    CONN_Q_IDLE,        /* open, silent: idle_timeout, then close 1001 */
    CONN_Q_STALL,       /* not reading its echoes: send_timeout, then 1008 */
    CONN_Q_CLOSING,     /* close sent or lingering: close_timeout, then drop */
    CONN_Q_COUNT
};

/* What one worker shares with its connections. */
struct conn_env {
    const struct config *cf;
    struct ev_loop *loop;
    struct list all;            /* every live connection */
    struct ev_queue queues[CONN_Q_COUNT]; /* [CONN_Q_NONE] is unused */
    struct list ready_q;        /* yielded with input left: run next iteration */
    struct list dead_q;         /* closed during this iteration: freed after it */
    unsigned nconns;
    /* Reload handoff: inboxes of the new generation's workers (ours to
     * close), tried in turn. */
    int *targets;
    unsigned ntargets, next_target;
    unsigned handing_off : 1;   /* hand every WebSocket over at a clean point */
    unsigned handoff_full : 1;  /* every inbox was full: handoff_t tries again */
    struct ev_queue handoff_q;
    struct ev_timer handoff_t;
    unsigned long handed, adopted;
};

void conn_env_init(struct conn_env *env, const struct config *cf, struct ev_loop *loop);

/* Takes ownership of the accepted socket fd. A non-zero reject status
 * (503) answers the handshake with that status instead of upgrading. */
int  conn_accept(struct conn_env *env, int fd, int reject_status);
/* How long the loop may wait: 0 when connections yielded with input left,
 * else until the loop's next deadline (-1: none). The deadlines themselves
 * run from ev_expire. */
int  conn_next_timeout(const struct conn_env *env);
/* Runs the connections that yielded last iteration. */
void conn_run_ready(struct conn_env *env);
/* Ends every connection: WebSockets get a close frame with code, pending
 * handshakes are closed. Connections then finish on their own. */
void conn_close_all(struct conn_env *env, uint16_t code);
/* Sends a close frame with code to up to max WebSockets, oldest first.
 * Amortised O(1) per connection. */
void conn_close_oldest(struct conn_env *env, uint16_t code, unsigned max);
/* Over worker_memory_limit: sheds the biggest holders (1009, or dropped
 * when they do not read their output) until the worker is under it. */
void conn_shed(struct conn_env *env);
/* Frees what was closed during this iteration. */
void conn_reap(struct conn_env *env);
/* Closes and frees everything at once (fast exit). */
void conn_destroy_all(struct conn_env *env);

struct handoff_conn;
/* From now on, hands every open WebSocket to one of targets (inbox write
 * ends, which env takes over, replacing earlier ones) as soon as it is at a
 * clean point; when every inbox is full, a timer of env's own tries again a
 * few milliseconds later. */
void conn_handoff_begin(struct conn_env *env, int *targets, unsigned n);
/* Serves a connection handed over by another worker; hc->fd becomes ours. */
int  conn_adopt(struct conn_env *env, const struct handoff_conn *hc);

#endif
