/* The handler interface: everything a module in modules/ sees of the core.
 *
 * A module is a file modules/NAME.c defining `const struct module
 * NAME_module` (the build registers every such file). Routes name it:
 *     routes: {/: echo, /slow: {module: echo, delay: 250ms}}
 * and the keys it declares are parsed and checked by the core like its own
 * (errors name the YAML node's file:line:column).
 *
 * In each worker: init once before the first connection, exit once at the
 * end. Per connection: on_open (or on_adopt after a reload moved it), then
 * on_message for each complete, reassembled, validated data message, then
 * on_close. Data passed to on_message is valid during the call only;
 * ws_send copies what it queues. Everything runs on the worker's one
 * thread: a module may send to any of its connections at any time (the
 * target is woken), and arm timers.
 *
 * Moving on reload (reload_handoff): a connection moves to the new
 * generation at a clean point (nothing half received or queued) if its
 * module has `export`; what export writes travels with the socket and is
 * given to on_adopt in the new worker; the old side gets on_close with
 * WS_MOVED. A module without export is drained like without handoff: its
 * connections get 1012 and reconnect. */
#ifndef WSECHOD_MODULE_H
#define WSECHOD_MODULE_H

#include <stddef.h>
#include <stdint.h>

struct ws_conn; /* one open WebSocket, owned by the core */

enum ws_msg_type { WS_MSG_TEXT = 1, WS_MSG_BINARY = 2 };

/* on_close's code when the connection moved to another worker. */
#define WS_MOVED 0
/* The most state a connection may carry to the next generation. */
#define WS_STATE_MAX 256

/* The handshake, read-only, during on_open. Strings are not
 * NUL-terminated unless said so. */
struct ws_request {
    const char *path;       /* without the query */
    size_t path_len;
    const char *query;      /* after '?'; query_len 0 if none */
    size_t query_len;
    const char *subprotocol;/* the one chosen (NUL-terminated), or NULL */
    const char *peer;       /* "1.2.3.4:5" or "[::1]:5" (NUL-terminated) */
    const void *priv;       /* the core's, for ws_request_header */
};

/* The value of the request's header name (case-insensitive; the last line
 * if repeated), or NULL; *len is its length. */
const char *ws_request_header(const struct ws_request *r, const char *name, size_t *len);

/* Per-route keys a module declares. */
enum module_key_type {
    MODULE_KEY_DURATION,    /* "250ms", "2s": uint64_t milliseconds */
    MODULE_KEY_SIZE,        /* "1k", "16m": size_t bytes */
    MODULE_KEY_UINT,        /* uint64_t */
};

struct module_key {
    const char *name;
    enum module_key_type type;
    size_t offset;          /* in the module's route configuration */
    uint64_t min, max;
};

struct module {
    const char *name;
    /* Optional per-route configuration: conf_size bytes, starting as
     * conf_default, filled from the route's keys (NULL-name-terminated). */
    const struct module_key *keys;
    size_t conf_size;
    const void *conf_default;
    /* Optional, per worker. init: non-zero stops the worker. */
    int  (*init)(void);
    void (*exit)(void);
    /* Optional. Return 0 to accept; anything else closes with 1011. */
    int  (*on_open)(struct ws_conn *c, const struct ws_request *req);
    void (*on_message)(struct ws_conn *c, enum ws_msg_type type,
                       const uint8_t *data, size_t len);
    /* Optional. code is the peer's close code, 1006 if the TCP connection
     * ended without a close handshake, or WS_MOVED. */
    void (*on_close)(struct ws_conn *c, uint16_t code);
    /* Optional: see "Moving on reload" above. export returns the state's
     * length (at most cap), or -1 when not at a clean point now (tried
     * again after the connection's next run). on_adopt returns 0, or
     * anything else to close with 1011. */
    int  (*export)(struct ws_conn *c, uint8_t *state, size_t cap);
    int  (*on_adopt)(struct ws_conn *c, const uint8_t *state, size_t len);
};

/* Queues a message; returns 0, or -1 if the connection is closing. */
int   ws_send(struct ws_conn *c, enum ws_msg_type type, const uint8_t *data, size_t len);
/* Starts the close handshake with code (1000..4999) and an optional reason. */
void  ws_close(struct ws_conn *c, uint16_t code, const char *reason);
/* Bytes queued to the peer and not yet taken by it. A module that sends
 * on its own (not in answer to a message) waits while this is at least
 * ws_output_limit(c): the peer is not reading. */
size_t ws_pending(const struct ws_conn *c);
size_t ws_output_limit(const struct ws_conn *c);
/* Bytes the module holds for c (messages it keeps for later, say): they
 * count against max_pending_output (reading stops while over it) and the
 * worker's memory limit, as the core's own. delta may be negative. */
void  ws_hold(struct ws_conn *c, long delta);
/* The route's configuration (conf_size bytes), or NULL without keys. */
const void *ws_route_conf(const struct ws_conn *c);
/* One pointer of per-connection module state. */
void *ws_data(struct ws_conn *c);
void  ws_set_data(struct ws_conn *c, void *data);

/* A module timer: calls cb(c, arg) once, ms from now, as part of a run of
 * c. Stop it before c's on_close returns. */
struct ws_timer;
struct ws_timer *ws_timer_new(struct ws_conn *c, void (*cb)(struct ws_conn *c, void *arg),
                              void *arg);
void ws_timer_start(struct ws_timer *t, uint64_t ms);
void ws_timer_stop(struct ws_timer *t);
void ws_timer_free(struct ws_timer *t);
/* Milliseconds of the worker's monotonic clock. */
uint64_t ws_now_ms(void);

#endif
