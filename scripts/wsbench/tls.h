/*
 * tls — the client side of TLS for wss:// (OpenSSL 3), as a thin layer
 * over one socket: no connection state, no counters. conn.c drives it from
 * the worker's epoll loop; modes.c uses it blocking for the idle warm-up.
 * No certificate is verified: this is a load generator for test servers.
 *
 * Contract:
 *   tls_init()   once, on the main thread, before any worker starts and only
 *                if O.tls: the shared client context (versions from --tls12 /
 *                --tls13, ALPN http/1.1, buffers released when idle in idle
 *                mode). Exits 1 if OpenSSL cannot make it.
 *   tls_new(fd, offer)  a client object on the (connected) socket fd, SNI
 *                O.sni, offering session offer for resumption if not NULL.
 *                Any thread; an object is then used by that thread only.
 *   tls_handshake(s)  one step: 1 done, 0 wants the socket readable or
 *                writable again (edge-triggered epoll with both armed just
 *                calls it on the next event), -1 failed (tls_why()).
 *   tls_read() / tls_write()  as read(2) / write(2): > 0 bytes, 0 end of
 *                stream (read only; a close_notify or a plain TCP EOF), -1
 *                with errno EAGAIN when OpenSSL wants the socket again, EPROTO
 *                for a TLS error (tls_why()), else the socket's errno. A read
 *                returns one record at most: read until EAGAIN. A write may
 *                be partial; after EAGAIN it must be retried with the same
 *                unwritten bytes first (the buffer may move or grow).
 *   tls_why()    the reason for this thread's last -1 / EPROTO.
 *   tls_take_session(s)  a reference to s's session if it can be resumed
 *                (TLS 1.3: a ticket has arrived), else NULL; release it
 *                with tls_session_free() (NULL is fine).
 *   tls_resumed(s), tls_version(s)  after the handshake: 1 if the session
 *                was resumed; 13, 12, ... for TLS 1.3, 1.2, ...
 *   tls_free(s, polite)  releases s; polite sends a close_notify first
 *                (never after an error), which also keeps its session
 *                resumable.
 */
#ifndef WSBENCH_TLS_H
#define WSBENCH_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct ssl_st;         /* OpenSSL's SSL */
struct ssl_session_st; /* OpenSSL's SSL_SESSION */

void tls_init(void);
struct ssl_st *tls_new(int fd, struct ssl_session_st *offer);
int tls_handshake(struct ssl_st *s);
ssize_t tls_read(struct ssl_st *s, void *buf, size_t n);
ssize_t tls_write(struct ssl_st *s, const void *buf, size_t n);
const char *tls_why(void);
struct ssl_session_st *tls_take_session(struct ssl_st *s);
void tls_session_free(struct ssl_session_st *sess);
int tls_resumed(const struct ssl_st *s);
int tls_version(const struct ssl_st *s);
void tls_free(struct ssl_st *s, int polite);

#endif
