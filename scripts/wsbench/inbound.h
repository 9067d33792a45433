/*
 * inbound — parses and checks the frames the server sends back, on the
 * owning worker thread.
 *
 * Contract:
 *   ws_consume(c, p, n, now) feeds n bytes read from c (in C_OPEN or
 *   C_CLOSING, or right after the 101) to its frame parser. Frames may be
 *   split anywhere across calls. Echoed data is compared byte by byte with
 *   what was sent (payload.h); a completed message settles one in-flight
 *   slot and, inside the window, one latency sample. Pings are answered;
 *   a close ends the connection (counted as close_ok if we closed first).
 *   Returns -1 once the connection is dead (mismatch, protocol error, close
 *   — already counted and logged), else 0.
 */
#ifndef WSBENCH_INBOUND_H
#define WSBENCH_INBOUND_H

#include <stddef.h>
#include <stdint.h>

struct conn;

int ws_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now);

#endif
