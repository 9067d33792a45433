/* TLS termination with OpenSSL 3, on the socket layer's backend seam.
 *
 * At configuration load (so `-t` and a reload check them before anything
 * changes), every TLS listener gets its contexts: the certificate chain and
 * key of `tls` and of each SNI certificate, checked to match (an expired
 * certificate is a warning), the protocol versions (TLS 1.2 and 1.3 at
 * most), cipher lists, ALPN `http/1.1`, and session tickets whose keys
 * belong to the process that loaded the first configuration (the master:
 * every worker of every generation forked from it shares them, so a client
 * resumes on any of them). Errors read "file:line:col: tls.certificate:
 * <OpenSSL's reason>".
 *
 * A TLS connection is a socket whose backend is OpenSSL's: the handshake
 * runs inside the first reads (non-blocking, in the edge-triggered loop),
 * SSL_MODE_RELEASE_BUFFERS keeps an idle connection without OpenSSL's
 * record buffers, and a failed handshake is logged at info with OpenSSL's
 * reason and the peer, counted, and ends that connection only. */
#ifndef WSECHOD_TLS_H
#define WSECHOD_TLS_H

#include "config.h"

struct sock;

/* Makes the contexts of every TLS listener of cf. 0, or -1 with err set. */
int  tls_load(struct config *cf, char err[CONFIG_ERR_MAX]);
/* Frees t's contexts (not t). */
void tls_ctx_free(struct config_tls *t);
/* Once per worker, before the first TLS connection. */
void tls_setup(void);
/* s (just opened) speaks TLS as a server with t's contexts. 0, or -1. */
int  tls_accept(struct sock *s, const struct config_tls *t);
/* Session ticket keys. The process that made them (the master) rotates
 * them: tls_tickets_due says when next (UINT64_MAX: no TLS listener with
 * tickets), tls_tickets_rotate makes a new current key, keeps the one
 * before for tickets already out (so a ticket lives one to two rotation
 * periods), and returns a descriptor the keys can be read from, for the
 * workers (-1 if none); a worker adopts them from it. Workers forked later
 * inherit them. */
uint64_t tls_tickets_due(void);
int  tls_tickets_rotate(uint64_t now, uint64_t period_ms);
void tls_tickets_adopt(int fd);
/* The lists a listener without `ciphers` / `ciphersuites` gets. */
const char *tls_default_ciphers(void);
const char *tls_default_ciphersuites(void);
/* Handshakes that failed in this process so far (its stats.h slot's count). */
unsigned long tls_failed_handshakes(void);

#endif
