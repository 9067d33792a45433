/* The WebSocket phase of a connection: the codec's message level (frames
 * judged, unmasked and reassembled here; every frame we send encoded by
 * frame.h) and the module calls. One path for every frame: a whole
 * single-frame message is unmasked in the read buffer and handed to the
 * module without a copy; fragments, and frames bigger than the read
 * buffer, are gathered in one buffer per message.
 *
 * Reads and writes go through the connection's socket (sock.h); the
 * caller runs ws_run when the socket is ready and acts on the flags. */
#ifndef WSECHOD_WS_H
#define WSECHOD_WS_H

#include <stddef.h>

#include "module.h"
#include "pmd.h"

struct config_route;
struct sock;

enum {
    WS_CLOSING    = 1 << 0, /* our close frame is queued or out: waiting for the peer's */
    WS_DONE       = 1 << 1, /* finished: end the TCP connection */
    WS_BROKEN     = 1 << 2, /* ...and the socket failed: no lingering */
    WS_ACTIVE     = 1 << 3, /* bytes arrived from the peer */
    WS_STALLED    = 1 << 4, /* reading paused: the peer does not read its echoes */
};

/* Takes ownership of pending[0..len) (bytes that arrived with the
 * handshake, or with a handed-over connection) into s. Calls the route
 * module's on_open with req, or on_adopt with the state that travelled
 * when req is NULL. NULL if out of memory. */
struct ws_conn *ws_open(struct sock *s, const struct config_route *route,
                        const struct ws_request *req, const uint8_t *state, size_t state_len);
/* Reads, dispatches, writes; returns WS_* flags. */
unsigned ws_run(struct ws_conn *w);
/* Bytes w holds beyond its fixed-size object and its socket's, as counted
 * in mem.h (the message being received, what its module holds). */
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
 * closing, and the module agrees) returns 0 and writes the module's state
 * into state[0..*state_len) (*state_len: its room on entry); -1 otherwise,
 * and -2 if the module's connections never move. */
int ws_export(struct ws_conn *w, uint8_t *state, size_t *state_len);
/* The connection lives on in another worker: the module hears on_close
 * with WS_MOVED, everything is freed. The socket is the caller's. */
void ws_detach(struct ws_conn *w);
/* Closes w for a timeout of ours (idle, not reading): counted as such. */
void ws_timeout(struct ws_conn *w, uint16_t code, const char *reason);
/* When w's WebSocket began (ws_clock units), for a handoff to carry. */
uint32_t ws_started(const struct ws_conn *w);
void ws_set_started(struct ws_conn *w, uint32_t started);
/* The access log's record of w for a handoff, into buf[0..cap): its
 * length, 0 if w keeps none (the log is off) or it does not fit. The
 * receiving side gives it to ws_tally_adopt (len 0: none came; the record
 * then starts now, with path as its target). */
size_t ws_tally_export(struct ws_conn *w, uint8_t *buf, size_t cap);
void ws_tally_adopt(struct ws_conn *w, const uint8_t *buf, size_t len, const char *path,
                    size_t path_len);
/* permessage-deflate agreed for w (pmd.h; server_bits 0: none). With
 * context takeover, w gets its windows: empty, or those of ctx[0..len)
 * (a handoff's, from ws_pmd_export). -1 if they cannot be had (out of
 * memory, or bytes that are not windows for pp): w is not to be served. */
int  ws_set_pmd(struct ws_conn *w, const struct pmd_params *pp, const uint8_t *ctx, size_t len);
void ws_pmd(const struct ws_conn *w, struct pmd_params *pp);
/* w's windows for a handoff into buf[0..cap) (PMD_CTX_MAX fits any): the
 * length, 0 if it keeps none. */
size_t ws_pmd_export(const struct ws_conn *w, uint8_t *buf, size_t cap);
/* Deciseconds of CLOCK_MONOTONIC, modulo 2^32: one clock for every process
 * of the machine, so an age survives a handoff; differences are right for
 * 13 years. */
uint32_t ws_clock(void);
/* Runs a module timer's callback for w as part of a run of w, so what it
 * sends leaves with one write. Returns WS_* flags like ws_run. */
unsigned ws_run_timer(struct ws_conn *w, void (*cb)(struct ws_conn *, void *), void *arg);

#endif
