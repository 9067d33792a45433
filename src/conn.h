/* A client connection from accept to close: the HTTP handshake, then the
 * WebSocket phase (ws.c), then lingering, on one socket (sock.h). Owned by
 * one worker. Handing connections to another worker is migrate.c's, on the
 * helpers at the end of this header. */
#ifndef WSECHOD_CONN_H
#define WSECHOD_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "ev.h"
#include "list.h"

struct config;
struct conn;
struct handoff_conn;

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
    struct list dead_q;         /* closed during this turn: freed after it */
    struct ev_hook end_of_turn; /* freeing dead_q */
    /* Called after every run of an open WebSocket that did not end it:
     * how migrate.c moves connections at a clean point. */
    void (*after_ws)(struct conn *c, void *arg);
    void *after_arg;
    unsigned nconns;
    unsigned long adopted;
};

/* Registers the timer queues and the end-of-turn work with loop. */
void conn_env_init(struct conn_env *env, const struct config *cf, struct ev_loop *loop);

/* Takes ownership of the accepted socket fd. A non-zero reject status
 * (503) answers the handshake with that status instead of upgrading; with
 * tls, the connection speaks TLS first (tls.h). */
struct config_tls;
int  conn_accept(struct conn_env *env, int fd, int reject_status, const struct config_tls *tls);
/* Ends every connection: WebSockets get a close frame with code, pending
 * handshakes are closed. Connections then finish on their own. */
void conn_close_all(struct conn_env *env, uint16_t code);
/* Sends a close frame with code to up to max WebSockets, oldest first.
 * Amortised O(1) per connection. */
void conn_close_oldest(struct conn_env *env, uint16_t code, unsigned max);
/* Closes and frees everything at once (fast exit). */
void conn_destroy_all(struct conn_env *env);

struct conn;

/* ---- For shed.c --------------------------------------------------------- */

/* Bytes c holds beyond its fixed-size objects (mem.h). */
size_t conn_held(const struct conn *c);
/* Calls fn for every open WebSocket not already closing, once each. */
void conn_foreach_open(struct conn_env *env, void (*fn)(struct conn *c, void *arg), void *arg);
/* c is among the biggest holders of a worker over its memory ceiling: a
 * message being received is dropped with 1009; a peer that does not read
 * what it is owed is reset. Logged at warn with the peer and the bytes. */
void conn_shed(struct conn *c);

/* ---- For migrate.c ------------------------------------------------------ */

/* Visits open WebSockets: the keepalive queues first, in deadline order
 * (the receiver's queues then stay sorted cheaply), then the rest. Stops
 * when fn returns non-zero. fn may release the connection it is given. */
void conn_visit_open(struct conn_env *env, int (*fn)(struct conn *c, void *arg), void *arg);
/* Fills hc (state[0..cap) receives the module's state) if c is at a clean
 * point to move: 0; -1 not now (or never: TLS records OpenSSL keeps); -2
 * never (its module cannot move). What hc's tally and sections point to
 * is valid until the next call; conn_export_wipe erases the TLS keys of
 * the last one, once it is sent (or not). */
int  conn_export(struct conn *c, struct handoff_conn *hc, uint8_t *state, size_t cap);
void conn_export_wipe(void);
/* c lives on in another worker: forget it without a word to the peer. */
void conn_release(struct conn *c);
/* c cannot move: close it as a reload without handoff would (1012). */
void conn_drain(struct conn *c);
struct config_route;
/* The receiving side: a connection on a handed-over fd (NULL, fd still the
 * caller's, on failure); then either its WebSocket goes on (-1: out of
 * memory, c is closed), or it is closed with a close frame. */
struct conn *conn_adopt_new(struct conn_env *env, int fd);
/* Its TLS records, if hc carries them, before anything is read or said:
 * 0 (or none came), -1 if they are not valid (c is reset and closed:
 * nothing can be said to it). */
int  conn_adopt_tls(struct conn *c, const struct handoff_conn *hc);
int  conn_start_ws(struct conn *c, const struct config_route *r, const struct handoff_conn *hc);
void conn_close_with(struct conn *c, uint16_t code, const char *reason);
const char *conn_peer_name(const struct conn *c, char *buf, size_t len);

#endif
