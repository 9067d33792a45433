#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ev.h"
#include "log.h"
#include "sock.h"
#include "stats.h"
#include "tlsown.h"
#include "tlsrec.h"

/* Mozilla's "intermediate" TLS 1.2 list (TLS 1.3 suites are separate). */
#define TLS12_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* Session ticket keys: made once in the process that loads the first
 * configuration with TLS (the master), inherited by every worker it forks,
 * kept across reloads, rotated by the master (tls_tickets_rotate). */
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

static struct {
    int made;
    uint64_t due;               /* the next rotation (master) */
    struct ticket_key key[2];   /* [0] encrypts; [1], the one before, still decrypts */
} K;

static int backend_index = -1;
static int own_records_ok;      /* tlsown's backend is set up in this process */
/* OpenSSL wrote, or tried to, since the BIO was last bound (bound). */
static int bio_wrote;

/* ---- Errors ------------------------------------------------------------- */

/* OpenSSL's reason for the last failure, its queue emptied. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : e ? "error" : "unknown error");
    ERR_clear_error();
    return buf;
}

static int cert_fail(const struct config_tls *t, const struct config_cert *c, char *err,
                     const char *key, const char *what, const char *why)
{
    snprintf(err, CONFIG_ERR_MAX, "%s:%u:%u: tls.%s: %s: %s", t->file, c->line, c->col, key,
             what, why);
    return -1;
}

/* ---- Contexts ----------------------------------------------------------- */

static int key_params(EVP_MAC_CTX *hctx, struct ticket_key *k)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string("key", k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* 1: done; 2: decrypted with the previous key (OpenSSL issues a fresh
 * ticket); 0: unknown key, a full handshake; -1: failure. */
static int on_ticket(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key *k = &K.key[0];
    (void)ssl;
    if (enc) {
        memcpy(name, k->name, sizeof(k->name));
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
            EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 ||
            key_params(hctx, k) < 0)
            return -1;
        return 1;
    }
    if (memcmp(name, k->name, sizeof(k->name)) != 0)
        k = &K.key[1];
    if (memcmp(name, k->name, sizeof(k->name)) != 0)
        return 0; /* not ours, or older than the key before */
    if (EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 ||
        key_params(hctx, k) < 0)
        return -1;
    return k == &K.key[0] ? 1 : 2;
}

static int new_key(struct ticket_key *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes, sizeof(k->aes)) == 1 &&
           RAND_bytes(k->hmac, sizeof(k->hmac)) == 1 ? 0 : -1;
}

uint64_t tls_tickets_due(void)
{
    return K.made ? K.due : UINT64_MAX;
}

int tls_tickets_rotate(uint64_t now, uint64_t period_ms)
{
    struct ticket_key next;
    K.due = now + period_ms;
    if (!K.made || new_key(&next) < 0)
        return -1;
    K.key[1] = K.key[0];
    K.key[0] = next;
    /* One memory file that every worker reads from offset 0 (a pipe would
     * give the keys to the first reader only). */
    int fd = memfd_create("wsechod-ticket-keys", MFD_CLOEXEC);
    if (fd >= 0 && write(fd, K.key, sizeof(K.key)) != (ssize_t)sizeof(K.key)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void tls_tickets_adopt(int fd)
{
    struct ticket_key keys[2];
    if (fd >= 0 && pread(fd, keys, sizeof(keys), 0) == (ssize_t)sizeof(keys)) {
        memcpy(K.key, keys, sizeof(keys));
        K.made = 1;
    }
    OPENSSL_cleanse(keys, sizeof(keys));
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* SNI: the certificate whose names match, else the main one. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const struct config_tls *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < t->nextra; i++) {
        X509 *x = SSL_CTX_get0_certificate(t->extra_ctx[i]);
        if (x != NULL && X509_check_host(x, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, t->extra_ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

const char *tls_default_ciphers(void)
{
    return TLS12_CIPHERS;
}

const char *tls_default_ciphersuites(void)
{
    return OSSL_default_ciphersuites();
}

static int settings(SSL_CTX *ctx, const struct config_tls *t, const struct config_cert *c,
                    char *err)
{
    char why[256];
    int vers[] = { [12] = TLS1_2_VERSION, [13] = TLS1_3_VERSION };
    SSL_CTX_set_min_proto_version(ctx, vers[t->min_version]);
    SSL_CTX_set_max_proto_version(ctx, vers[t->max_version]);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Whole reads, not a header then a body: one system call per batch. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers ? t->ciphers : TLS12_CIPHERS) != 1)
        return cert_fail(t, c, err, "ciphers", t->ciphers ? t->ciphers : "default",
                         ssl_reason(why, sizeof(why)));
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1)
        return cert_fail(t, c, err, "ciphersuites", t->ciphersuites,
                         ssl_reason(why, sizeof(why)));
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets, not a per-worker cache */
    if (!t->session_tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    } else {
        SSL_CTX_set_num_tickets(ctx, 1);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket);
    }
    /* Every context a handshake may end in (SNI's too) hands its keys over. */
    if (t->own_records && tlsrec_capture_attach(ctx) < 0)
        return cert_fail(t, c, err, "records", "wsechod", ssl_reason(why, sizeof(why)));
    return 0;
}

static void warn_if_expired(const struct config_tls *t, const struct config_cert *c, SSL_CTX *ctx)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    if (x != NULL && X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        log_warn("%s:%u:%u: tls.certificate: %s has expired", t->file, c->line, c->col,
                 c->certificate);
}

static int readable(const struct config_tls *t, const struct config_cert *c, char *err,
                    const char *key, const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return cert_fail(t, c, err, key, path, strerror(errno));
    fclose(f);
    return 0;
}

/* One certificate's context, checked. NULL with err set. */
static SSL_CTX *make_ctx(const struct config_tls *t, const struct config_cert *c, char *err)
{
    char why[256];
    SSL_CTX *ctx = NULL;
    if (readable(t, c, err, "certificate", c->certificate) < 0 ||
        readable(t, c, err, "key", c->key) < 0)
        return NULL;
    if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        cert_fail(t, c, err, "certificate", c->certificate, ssl_reason(why, sizeof(why)));
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, c->certificate) != 1)
        cert_fail(t, c, err, "certificate", c->certificate, ssl_reason(why, sizeof(why)));
    else if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1)
        cert_fail(t, c, err, "key", c->key, ssl_reason(why, sizeof(why)));
    else if (SSL_CTX_check_private_key(ctx) != 1)
        cert_fail(t, c, err, "key", c->key, "does not match the certificate");
    else if (settings(ctx, t, c, err) == 0) {
        warn_if_expired(t, c, ctx);
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

static int load_one(struct config_tls *t, char *err)
{
    if ((t->ctx = make_ctx(t, &t->main, err)) == NULL)
        return -1;
    if (t->nextra > 0 && (t->extra_ctx = calloc(t->nextra, sizeof(*t->extra_ctx))) == NULL)
        return cert_fail(t, &t->main, err, "certificates", "", "out of memory");
    for (size_t i = 0; i < t->nextra; i++)
        if ((t->extra_ctx[i] = make_ctx(t, &t->extra[i], err)) == NULL)
            return -1;
    SSL_CTX_set_tlsext_servername_callback(t->ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
    return 0;
}

int tls_load(struct config *cf, char err[CONFIG_ERR_MAX])
{
    for (size_t i = 0; i < cf->nlisten; i++) {
        struct config_tls *t = cf->listen[i].tls;
        if (t == NULL)
            continue;
        if (!K.made && (new_key(&K.key[0]) < 0 || new_key(&K.key[1]) < 0))
            return cert_fail(t, &t->main, err, "session_tickets", "keys", "no randomness");
        if (!K.made)
            K.due = ev_now_ms() + cf->ticket_rotation_ms;
        K.made = 1;
        if (load_one(t, err) < 0)
            return -1;
    }
    return 0;
}

void tls_ctx_free(struct config_tls *t)
{
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; t->extra_ctx != NULL && i < t->nextra; i++)
        SSL_CTX_free(t->extra_ctx[i]);
    free(t->extra_ctx);
    t->ctx = NULL;
    t->extra_ctx = NULL;
}

/* ---- The backend -------------------------------------------------------- */

/* The first bytes were not TLS (a plain HTTP request, say): OpenSSL
 * sends nothing then, so the refusal is ours — an unexpected_message
 * alert — and what came with the bytes is read away, so that closing sends
 * a FIN behind the alert rather than a reset that could destroy it.
 * (The same reasons come for a bad record later in a handshake or on an
 * established connection: OpenSSL sends its own alert then, encrypted once
 * keys are in use, and ssl_result does not call this.) */
static void refuse_plaintext(struct sock *s)
{
    static const unsigned char alert[] = { 0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x0a };
    char sink[4096];
    int n = 0;
    (void)send(s->io.fd, alert, sizeof(alert), MSG_NOSIGNAL);
    while (n++ < 16 && read(s->io.fd, sink, sizeof(sink)) > 0)
        ;
}

static void handshake_failed(struct sock *s, const char *why)
{
    char peer[64];
    STATS_ADD(stats_me->c.tls_failed, 1);
    log_info("TLS handshake from %s failed: %s", sock_peer_name(s, peer, sizeof(peer)), why);
}

/* Maps an SSL_read/SSL_write failure onto the socket layer's errno
 * convention: EAGAIN (wants I/O), 0 for a clean close_notify, or an error
 * (logged once, with OpenSSL's reason, if the handshake was not done). */
static ssize_t ssl_result(struct sock *s, SSL *ssl, int n)
{
    char why[256];
    switch (SSL_get_error(ssl, n)) {
    case SSL_ERROR_WANT_WRITE:
        sock_arm_write(s);
        /* fall through */
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || ERR_peek_error() == 0) {
            ERR_clear_error();
            return 0; /* the peer just left */
        }
        /* fall through */
    default: {
        int reason = ERR_GET_REASON(ERR_peek_last_error());
        ssl_reason(why, sizeof(why));
        /* Only if OpenSSL said nothing in this call: a plaintext alert
         * behind its own (encrypted) one would be garbage on the stream. */
        if ((reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST ||
             reason == SSL_R_WRONG_VERSION_NUMBER) && !bio_wrote)
            refuse_plaintext(s);
        /* Not SSL_is_init_finished: a fatal error puts OpenSSL back "in
         * init", so an error on an established connection would be logged
         * and counted as a failed handshake. The handshake state stays at
         * TLS_ST_OK once it is done. */
        if (SSL_get_state(ssl) != TLS_ST_OK)
            handshake_failed(s, why);
        else
            log_info("TLS error: %s", why);
        errno = ECONNRESET;
        return -1;
    }
    }
}

static SSL *bound(struct sock *s);

/* Once per connection, when its handshake is found done. */
static void count_handshake(struct sock *s)
{
    SSL *ssl = s->be_data;
    s->be_mark = 1;
    STATS_ADD(stats_me->c.tls[SSL_version(ssl) == TLS1_3_VERSION][SSL_session_reused(ssl) == 1],
              1);
}

/* Once OpenSSL holds nothing either way (its read said "want read", its
 * last write was whole), a TLS 1.3 connection's records become ours and
 * the SSL goes (tlsown.h); TLS 1.2, or records: openssl, stays here. */
static void take_records(struct sock *s)
{
    struct tlsrec r;
    int rc = tlsrec_capture_take(s->be_data, &r);
    if (rc == TLSREC_AGAIN)
        return;
    if (rc != TLSREC_OK) {
        s->be_final = 1;
        ERR_clear_error();
        return;
    }
    SSL_free(s->be_data);
    s->be_data = NULL;
    if (tlsown_start(s, &r) < 0) {
        log_error("out of memory for a TLS connection's records");
        s->failed = 1;
        sock_set_backend(s, 0, NULL); /* nothing of OpenSSL's is left to free */
        tlsrec_clear(&r);
    } else {
        OPENSSL_cleanse(&r, sizeof(r)); /* a copy: its keys live on in the connection */
    }
}

static ssize_t tls_recv(struct sock *s, void *buf, size_t len)
{
    int n = SSL_read(bound(s), buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (!s->be_mark && SSL_is_init_finished((SSL *)s->be_data))
        count_handshake(s);
    if (n > 0)
        return n;
    ssize_t r = ssl_result(s, s->be_data, n);
    if (r < 0 && errno == EAGAIN && own_records_ok && s->be_mark && !s->be_final && !s->be_busy &&
        !SSL_want_write((SSL *)s->be_data)) {
        take_records(s);
        errno = EAGAIN;
    }
    return r;
}

static ssize_t tls_send(struct sock *s, const void *buf, size_t len)
{
    int n = SSL_write(bound(s), buf, len > INT32_MAX ? INT32_MAX : (int)len);
    s->be_busy = n <= 0; /* OpenSSL may hold part of a record: it is to be called again */
    return n > 0 ? n : ssl_result(s, s->be_data, n);
}

/* close_notify, best effort: the connection ends either way. */
static void tls_shutdown(struct sock *s)
{
    if (SSL_is_init_finished(s->be_data))
        (void)SSL_shutdown(bound(s));
    ERR_clear_error();
}

static void tls_free(struct sock *s)
{
    SSL_free(s->be_data);
    s->be_data = NULL;
}

static int tls_wants_write(const struct sock *s)
{
    return SSL_want_write((SSL *)s->be_data);
}

/* What OpenSSL 3.0 keeps per idle TLS 1.3 connection with
 * SSL_MODE_RELEASE_BUFFERS (malloc'd bytes per server SSL after a
 * handshake and an echo, measured: scripts/RESULTS.md). */
#define TLS_CONN_BYTES 15000

static int tls_handshaken(const struct sock *s)
{
    return SSL_is_init_finished((SSL *)s->be_data);
}

static int tls_drained(const struct sock *s)
{
    return s->be_drained && !SSL_has_pending((SSL *)s->be_data);
}

/* ---- The socket BIO: OpenSSL's reads and writes, seen by us ------------ */

/* OpenSSL's socket BIO would hide whether a read emptied the kernel's
 * queue; this one notes it (be_drained), so that an edge-triggered run
 * skips the read that would only say EAGAIN, as on plain sockets.
 *
 * One BIO serves every connection of the worker, pointed at the socket
 * before each call into OpenSSL (bound): a BIO of its own would cost each
 * idle connection about 250 bytes, and OpenSSL only touches an SSL's BIO
 * inside a call made on that SSL, with read_ahead buffering in the SSL. */
static BIO_METHOD *bio_method;
static BIO *bio_shared;

static int bio_read(BIO *b, char *buf, int len)
{
    struct sock *s = BIO_get_data(b);
    ssize_t n;
    BIO_clear_retry_flags(b);
    do {
        n = read(s->io.fd, buf, (size_t)len);
    } while (n < 0 && errno == EINTR);
    s->be_drained = n < len;
    if (n > 0)
        STATS_ADD(stats_me->c.wire_in, (uint64_t)n);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    return (int)n;
}

static int bio_write(BIO *b, const char *buf, int len)
{
    struct sock *s = BIO_get_data(b);
    ssize_t n;
    bio_wrote = 1;
    BIO_clear_retry_flags(b);
    do {
        n = send(s->io.fd, buf, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    if (n > 0)
        STATS_ADD(stats_me->c.wire_out, (uint64_t)n);
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* nothing is buffered here */
}

/* The shared BIO with one more reference, for an SSL to own. */
static BIO *bio_ref(void)
{
    if (bio_method == NULL) {
        bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsechod-sock");
        if (bio_method == NULL || !BIO_meth_set_read(bio_method, bio_read) ||
            !BIO_meth_set_write(bio_method, bio_write) || !BIO_meth_set_ctrl(bio_method, bio_ctrl))
            return NULL;
    }
    if (bio_shared == NULL) {
        if ((bio_shared = BIO_new(bio_method)) == NULL)
            return NULL;
        BIO_set_init(bio_shared, 1);
    }
    return BIO_up_ref(bio_shared) ? bio_shared : NULL;
}

static SSL *bound(struct sock *s)
{
    BIO_set_data(bio_shared, s);
    bio_wrote = 0;
    return s->be_data;
}

static const struct sock_backend tls_backend = {
    .recv = tls_recv, .send = tls_send, .shutdown = tls_shutdown, .free = tls_free,
    .wants_write = tls_wants_write, .handshaken = tls_handshaken, .drained = tls_drained,
    .conn_bytes = TLS_CONN_BYTES,
};

void tls_setup(void)
{
    backend_index = sock_backend_add(&tls_backend);
    own_records_ok = tlsown_setup() == 0;
    if (!own_records_ok)
        log_error("TLS records of our own are unavailable: OpenSSL keeps them");
}

int tls_accept(struct sock *s, const struct config_tls *t)
{
    SSL *ssl = backend_index >= 0 ? SSL_new(t->ctx) : NULL;
    BIO *b = ssl ? bio_ref() : NULL;
    if (b == NULL) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    SSL_set_bio(ssl, b, b);
    SSL_set_accept_state(ssl);
    sock_set_backend(s, backend_index, ssl);
    return 0;
}

unsigned long tls_failed_handshakes(void)
{
    return (unsigned long)STATS_GET(stats_me->c.tls_failed);
}
