/*
 * inbound — parses and checks the frames the server sends back, on the
 * owning worker thread. It only reads and counts: what the connection must
 * do about a frame comes back as a verdict for conn.c to carry out, so that
 * parsing needs nothing from the layer that drives it.
 *
 * Contract:
 *   ws_consume(c, p, n, now, &used) feeds bytes read from c (in C_OPEN or
 *   C_CLOSING, or right after the 101) to its frame parser. Frames may be
 *   split anywhere across calls. Echoed data is compared byte by byte with
 *   what was sent (payload.h); a completed message settles one in-flight
 *   slot and, inside the window, one latency sample. Returns
 *     WS_OK    all n bytes taken;
 *     WS_PONG  a ping ended at p + used: the caller answers it with a pong
 *              carrying c->ctrl[0 .. c->ctrl_len), then feeds the rest;
 *     WS_KILL  the connection must be killed now: a mismatch, a protocol
 *              error, or the server's close (counted as close_ok if we
 *              closed first). Already counted and logged.
 *   It never changes c->state, c's send side, or the socket.
 */
#ifndef WSBENCH_INBOUND_H
#define WSBENCH_INBOUND_H

#include <stddef.h>
#include <stdint.h>

enum ws_verdict { WS_OK, WS_PONG, WS_KILL };

struct conn; /* run.h */

enum ws_verdict ws_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now, size_t *used);

#endif
