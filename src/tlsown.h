/* wsechod's own TLS 1.3 record layer as a socket backend (sock.h): once
 * OpenSSL has done a TLS 1.3 handshake, tls.c captures its record state
 * (tlsrec.h), frees the SSL, and the socket goes on through this backend.
 *
 * - Input: records are read into a per-worker buffer, opened in place and
 *   their plaintext copied to the socket layer; a record not yet whole
 *   (or plaintext the reader had no room for) waits in an exact-size copy,
 *   so an idle connection holds no buffer. A KeyUpdate the client asks
 *   for is answered at once; its close_notify is an EOF; a bad record gets
 *   the alert RFC 8446 names before the connection ends, logged at info.
 * - Output: plaintext is sealed into a per-worker buffer and written with
 *   one system call; ciphertext the kernel does not take waits in the
 *   connection's own copy (EPOLLOUT armed through wants_write), and is
 *   always written before anything sealed later.
 * - Handoff: a connection with nothing waiting either way exports its
 *   whole state as one blob (TLSOWN_STATE_SIZE), and the receiving process
 *   goes on from it with the same keys and sequence numbers.
 * An idle connection holds sizeof its state (tlsrec's keys and sequence
 * numbers, two pointers): the backend's conn_bytes in mem.h, where what it
 * keeps in either direction is counted too. */
#ifndef WSECHOD_TLSOWN_H
#define WSECHOD_TLSOWN_H

#include <stddef.h>
#include <stdint.h>

#include "tlsrec.h"

struct sock;

#define TLSOWN_STATE_SIZE TLSREC_BLOB_SIZE

/* Once per worker, before the first connection. 0, or -1. */
int  tlsown_setup(void);
/* s (whose SSL the caller has freed) goes on with the record state r.
 * 0, or -1 (out of memory: s is to be dropped). */
int  tlsown_start(struct sock *s, const struct tlsrec *r);
/* Whether s runs through this backend. */
int  tlsown_is(const struct sock *s);
/* s's state for a handoff into blob: 0, or -1 if bytes wait in either
 * direction (not a clean point: try after its next run). */
int  tlsown_export(const struct sock *s, uint8_t blob[TLSOWN_STATE_SIZE]);
/* s (just opened, nothing read) goes on from a blob tlsown_export made:
 * 0, or -1 if the blob is not one. */
int  tlsown_import(struct sock *s, const uint8_t *blob, size_t len);

#endif
