/*
 * conn — one client connection: non-blocking connect, the opening
 * handshake, and sending; driven by its worker's edge-triggered epoll.
 * All functions run on the owning worker thread only. The record itself,
 * struct conn, is in run.h; what the server sends is parsed by inbound.h,
 * whose verdicts (answer a ping, drop the connection) are carried out here.
 *
 * Contract:
 *   State moves C_IDLE -> C_CONNECTING [-> C_TLS] -> C_HANDSHAKE -> C_OPEN
 *   [-> C_CLOSING] -> C_DEAD; C_TLS (wss://) is the TLS handshake (tls.h),
 *   after which every byte goes through c->ssl. connrate mode recycles a
 *   slot from C_OPEN back to C_IDLE/C_CONNECTING instead (TLS: with a
 *   close_notify; --tls-resume keeps the session for the thread's next). Every exit is counted in exactly one
 *   counter of the worker (see stats.h); ST_OPEN, ST_INFLIGHT and the
 *   worker's pending count always match the live connections.
 *
 *   conn_start()     opens a socket and starts connecting; -1 if it failed
 *                    at once (already counted, connection dead).
 *   conn_on_event()  handles one epoll event for the connection.
 *   conn_kill()      closes the socket and settles the books.
 *   hs_fail()        counts a failed handshake (why is logged; in C_TLS also
 *                    as a TLS failure) and kills.
 *   send_ctrl()      queues a control frame and flushes; a frame that does
 *                    not fit the output buffer is dropped (only pongs and
 *                    closes use it). Returns as flush does: 1 flushed,
 *                    0 blocked, -1 the connection died.
 *   fill_and_send()  tops the in-flight window up with at most max new
 *                    messages (only in C_OPEN) and writes them at once.
 */
#ifndef WSBENCH_CONN_H
#define WSBENCH_CONN_H

#include <stddef.h>
#include <stdint.h>

struct conn; /* run.h */

int conn_start(struct conn *c, uint64_t now);
void conn_on_event(struct conn *c, uint32_t ev);
void conn_kill(struct conn *c);
void hs_fail(struct conn *c, const char *why, int status);
int send_ctrl(struct conn *c, int op, const uint8_t *pl, size_t n);
void fill_and_send(struct conn *c, uint64_t max, uint64_t now);

#endif
