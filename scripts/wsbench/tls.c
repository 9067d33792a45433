#define _GNU_SOURCE
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "options.h"
#include "util.h"

static SSL_CTX *ctx;
static _Thread_local char why_buf[200];

static const char *err_text(void)
{
    static _Thread_local char b[160];
    unsigned long e = ERR_peek_last_error();
    if (!e)
        return "unknown error";
    ERR_error_string_n(e, b, sizeof b);
    return b;
}

void tls_init(void)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new: %s", err_text());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* Partial writes: flush_out keeps its own offset, one record at a time.
     * The buffer moves when send_ctrl compacts it. */
    long mode = SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
    /* Idle mode holds many connections that never send: ~34 kB of record
     * buffers each otherwise. Echo mode keeps them (no malloc per record). */
    if (O.mode == M_IDLE)
        mode |= SSL_MODE_RELEASE_BUFFERS;
    SSL_CTX_set_mode(ctx, mode);
    /* A TCP EOF without close_notify reads as an end of stream, as in ws://. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    int v = O.tls_ver == 13 ? TLS1_3_VERSION : O.tls_ver == 12 ? TLS1_2_VERSION : 0;
    if (v && (!SSL_CTX_set_min_proto_version(ctx, v) || !SSL_CTX_set_max_proto_version(ctx, v)))
        die("cannot pin TLS 1.%d: %s", O.tls_ver - 10, err_text());
    static const unsigned char alpn[] = "\x08http/1.1";
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1) != 0)
        die("SSL_CTX_set_alpn_protos: %s", err_text());
}

struct ssl_st *tls_new(int fd, struct ssl_session_st *offer)
{
    SSL *s = SSL_new(ctx);
    if (!s || !SSL_set_fd(s, fd) || !SSL_set_tlsext_host_name(s, O.sni))
        die("SSL_new: %s", err_text());
    if (offer)
        SSL_set_session(s, offer);
    SSL_set_connect_state(s);
    return s;
}

/* Fills why_buf for an error SSL_get_error() returned; err is the errno
 * right after the call. Empties OpenSSL's error queue, which would
 * otherwise be blamed on this thread's next call. */
static void set_why(int e, int err)
{
    if (e == SSL_ERROR_SSL)
        snprintf(why_buf, sizeof why_buf, "%s", err_text());
    else if (e == SSL_ERROR_SYSCALL && err)
        snprintf(why_buf, sizeof why_buf, "%s", strerror(err));
    else
        snprintf(why_buf, sizeof why_buf, "connection closed by the server");
    ERR_clear_error();
}

const char *tls_why(void)
{
    return why_buf;
}

int tls_handshake(struct ssl_st *s)
{
    int r = SSL_do_handshake(s);
    if (r == 1)
        return 1;
    int err = errno, e = SSL_get_error(s, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    set_why(e, err);
    return -1;
}

/* The errno convention of read(2)/write(2) for a failed SSL_read/write. */
static ssize_t io_fail(SSL *s, int r, int eof_ret)
{
    int err = errno, e = SSL_get_error(s, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        errno = EPIPE;
        return eof_ret;
    case SSL_ERROR_SYSCALL:
        set_why(e, err);
        errno = err ? err : EPIPE;
        return err ? -1 : eof_ret;
    default:
        set_why(e, err);
        errno = EPROTO;
        return -1;
    }
}

ssize_t tls_read(struct ssl_st *s, void *buf, size_t n)
{
    int r = SSL_read(s, buf, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : io_fail(s, r, 0);
}

ssize_t tls_write(struct ssl_st *s, const void *buf, size_t n)
{
    int r = SSL_write(s, buf, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : io_fail(s, r, -1);
}

struct ssl_session_st *tls_take_session(struct ssl_st *s)
{
    SSL_SESSION *x = SSL_get1_session(s);
    if (x && !SSL_SESSION_is_resumable(x)) {
        SSL_SESSION_free(x);
        x = NULL;
    }
    return x;
}

void tls_session_free(struct ssl_session_st *sess)
{
    SSL_SESSION_free(sess);
}

int tls_resumed(const struct ssl_st *s)
{
    return SSL_session_reused(s) == 1;
}

int tls_version(const struct ssl_st *s)
{
    int v = SSL_version(s);
    return v >= TLS1_VERSION && v <= TLS1_3_VERSION ? 10 + (v - TLS1_VERSION) : 0;
}

/* Freed without a close_notify, OpenSSL marks the session not resumable. */
void tls_free(struct ssl_st *s, int polite)
{
    if (polite)
        SSL_shutdown(s);
    SSL_free(s);
    ERR_clear_error();
}
