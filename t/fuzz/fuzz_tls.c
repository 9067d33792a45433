/* libFuzzer harness for the TLS side of a connection: src/tls.c (tls_accept,
 * the shared socket BIO, ssl_result, refuse_plaintext, handshake_failed,
 * the SNI, ALPN and ticket callbacks) under the socket layer (src/sock.c),
 * as a connection accepted on a TLS listener meets them.
 *
 * Input: 1 byte of flags, 4 bytes of split seed, then client bytes (at most
 * 8 KiB). A socketpair stands for the connection: tls_accept on one end,
 * the client's bytes written to the other in pieces of random length (seed
 * 0: one write), then its FIN. The server end is driven as the worker's
 * edge-triggered loop drives it: it reads only when epoll (or a wake) says
 * so, until SOCK_AGAIN, an EOF or an error. What it writes is drained.
 * Flag bits 0-1, what comes before the bytes:
 *   0: nothing: the bytes are the client's first flight (the seeds hold
 *      real ClientHellos, plain HTTP, an SSLv2 hello, garbage);
 *   1: a real ClientHello (made at startup by an OpenSSL client): the bytes
 *      are the client's second flight, after the server has answered;
 *   2: a real handshake with an OpenSSL client, then the bytes raw;
 *   3: a real handshake, then the bytes as the client's application data,
 *      which must reach the server intact, in order and without a stall.
 * Bit 2: the client offers TLS 1.2 at most. Bit 3: it resumes a session
 * made at startup (2-3). Bit 4: the server reads in runs (sock_begin /
 * sock_fill / sock_end, as ws.c) rather than with sock_recv (as conn.c
 * reads the request). Bit 5: the server echoes what it reads, through a
 * small send buffer, and the client checks the echoes (3). Bit 6: small
 * reads: sock_recv asks for 1-16 bytes; a run takes part of its input and
 * leaves the rest for the next run. Bit 7: no FIN, the client stays.
 * Throughout, the server must not leave errors on OpenSSL's queue (it is
 * the worker's, shared by every connection), must not read bytes no TLS
 * client sent, and after the client's FIN must see the end; its plaintext
 * refusal must never follow OpenSSL's own alert or encrypted records, and
 * exactly the handshakes that ended in an error count as failed.
 *
 * The key and certificates are made at startup; none is kept on disk. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "ev.h"
#include "fuzz_common.h"
#include "sock.h"
#include "tls.h"

enum { P_NONE, P_HELLO, P_HANDSHAKE, P_APPDATA };
#define F_PRELUDE 3u
#define F_TLS12   4u
#define F_RESUME  8u
#define F_RUNS    16u
#define F_ECHO    32u
#define F_SMALL   64u
#define F_NOFIN   128u
#define INPUT_MAX 8192
#define OUT_CAP   65536              /* of the server's output, kept to check */
#define SNI_NAME  "www.fuzz.example" /* the SNI certificate's, *.fuzz.example */

static struct config *cf;          /* kept whole: the contexts are its */
static const struct config_tls *server_tls;
static struct ev_loop loop;
static SSL_CTX *client_ctx[2];      /* [1]: TLS 1.2 at most */
static SSL_SESSION *session[2];     /* to resume, per client context */
static uint8_t *hello[2];           /* each context's ClientHello */
static size_t hello_len[2];

/* One connection, both ends. */
struct run {
    struct sock s;              /* first: the loop hands back &s.io */
    unsigned flags;
    int cfd;                    /* the client's end */
    SSL *client;                /* preludes 2-3 */
    const uint8_t *in;          /* what the client sends */
    size_t n, off, piece;
    uint32_t seed, rseed;
    int whole;                  /* one write */
    unsigned steps;             /* server callbacks so far */
    int done, eof, fin;         /* server ended (eof: cleanly); client's FIN sent */
    size_t got, echoed;         /* read by the server; echoes read by the client */
    unsigned long failed;       /* tls_failed_handshakes() before */
    uint8_t *out;               /* what the server sent, as read raw */
    size_t out_len;
};

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tls: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

static unsigned prelude(const struct run *r)
{
    return r->flags & F_PRELUDE;
}

/* ---- Startup: key, certificates, config, clients ---------------------- */

/* Self-signed for key, CN cn, with a subjectAltName if san is given. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, long serial)
{
    X509 *x = X509_new();
    X509V3_CTX v3;
    if (x == NULL || !X509_set_version(x, X509_VERSION_3) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), serial) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 7L * 86400) || !X509_set_pubkey(x, key))
        die("certificate");
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                    -1, 0) ||
        !X509_set_issuer_name(x, name))
        die("certificate name");
    if (san != NULL) {
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        if (ext == NULL || !X509_add_ext(x, ext, -1))
            die("subjectAltName");
        X509_EXTENSION_free(ext);
    }
    if (X509_sign(x, key, EVP_sha256()) == 0)
        die("signing");
    return x;
}

/* x, or key when x is NULL, as PEM in a new file (mode 0600) named in path. */
static void write_pem(char path[64], X509 *x, EVP_PKEY *key)
{
    snprintf(path, 64, "/tmp/wsechod-fuzz-tls-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL)
        die("mkstemp");
    int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0 || !ok)
        die("writing PEM");
}

/* A TLS listener with a main certificate and an SNI one, loaded as the
 * server loads it (config_load runs tls_load); the files go right after. */
static void load_server(void)
{
    char key_pem[64], main_pem[64], sni_pem[64], yaml[1024];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        die("key");
    X509 *main_cert = make_cert(key, "fuzz.example", NULL, 1);
    X509 *sni_cert = make_cert(key, "sni.fuzz.example", "DNS:*.fuzz.example", 2);
    write_pem(key_pem, NULL, key);
    write_pem(main_pem, main_cert, NULL);
    write_pem(sni_pem, sni_cert, NULL);
    /* Never bound; address_parse refuses port 0. */
    snprintf(yaml, sizeof(yaml),
             "listen:\n"
             "  - address: 127.0.0.1:1\n"
             "    tls:\n"
             "      certificate: %s\n"
             "      key: %s\n"
             "      certificates: [{certificate: %s, key: %s}]\n",
             main_pem, key_pem, sni_pem, key_pem);
    cf = fuzz_config(yaml);
    unlink(key_pem);
    unlink(main_pem);
    unlink(sni_pem);
    X509_free(main_cert);
    X509_free(sni_cert);
    EVP_PKEY_free(key);
    if (cf->nlisten != 1 || cf->listen[0].tls == NULL || cf->listen[0].tls->ctx == NULL)
        die("no TLS listener in the config");
    server_tls = cf->listen[0].tls;
}

static SSL_CTX *client_ctx_new(int tls12)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (c == NULL || !SSL_CTX_set_max_proto_version(c, tls12 ? TLS1_2_VERSION : TLS1_3_VERSION) ||
        SSL_CTX_set_alpn_protos(c, alpn, sizeof(alpn) - 1) != 0)
        die("client context");
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL); /* self-signed: nothing to check */
    return c;
}

/* A client on fd, or on memory BIOs when fd < 0. */
static SSL *client_new(int tls12, int fd)
{
    SSL *c = SSL_new(client_ctx[tls12]);
    if (c == NULL || !SSL_set_tlsext_host_name(c, SNI_NAME) || (fd >= 0 && !SSL_set_fd(c, fd)))
        die("client");
    SSL_set_connect_state(c);
    return c;
}

/* The first flight of an OpenSSL client, for prelude 1. */
static void capture_hello(int tls12)
{
    SSL *c = client_new(tls12, -1);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    char *p;
    if (rb == NULL || wb == NULL)
        die("memory BIO");
    SSL_set_bio(c, rb, wb);
    int k = SSL_do_handshake(c);
    if (k != -1 || SSL_get_error(c, k) != SSL_ERROR_WANT_READ)
        die("ClientHello");
    long n = BIO_get_mem_data(wb, &p);
    if (n <= 0 || (hello[tls12] = malloc((size_t)n)) == NULL)
        die("ClientHello bytes");
    memcpy(hello[tls12], p, (size_t)n);
    hello_len[tls12] = (size_t)n;
    SSL_free(c);
    ERR_clear_error();
}

/* ---- The server end ---------------------------------------------------- */

static void server_end(struct run *r, ssize_t why)
{
    r->done = 1;
    r->eof = why == SOCK_EOF;
}

/* Bytes the server read: only a TLS client's application data can be. */
static void take(struct run *r, const void *p, size_t k)
{
    if (prelude(r) != P_APPDATA)
        die("the server read application data no TLS client sent");
    if (k > r->n - r->got || memcmp(p, r->in + r->got, k) != 0)
        die("the server read bytes the client did not send, or out of order");
    r->got += k;
}

/* conn.c's HTTP phase: sock_recv until SOCK_AGAIN; an answer is sent as a
 * run of its own (as conn.c's respond). */
static void serve_recv(struct run *r)
{
    char buf[16384];
    for (;;) {
        size_t room = (r->flags & F_SMALL) ? 1 + fuzz_next(&r->rseed) % 16 : sizeof(buf);
        ssize_t n = sock_recv(&r->s, buf, room);
        if (n == SOCK_AGAIN)
            return;
        if (n <= 0) {
            server_end(r, n);
            return;
        }
        take(r, buf, (size_t)n);
        if (r->flags & F_ECHO) {
            sock_begin(&r->s);
            sock_write(&r->s, buf, (size_t)n);
            if (sock_end(&r->s) == SOCK_ERROR) {
                server_end(r, SOCK_ERROR);
                return;
            }
        }
    }
}

/* ws.c's way: a run reads with sock_fill what it has room for. With small
 * reads it takes part of it and is woken for the rest, which sock.c keeps
 * between runs: the woken run begins without a read, like one of ws.c's
 * after output blocked it, which is what a stale "drained" breaks. */
static void serve_run(struct run *r)
{
    sock_begin(&r->s);
    for (;;) {
        if (sock_avail(&r->s) == 0) {
            ssize_t n = sock_fill(&r->s);
            if (n == SOCK_EOF || n == SOCK_ERROR)
                server_end(r, n);
            if (n <= 0)
                break;
        }
        size_t avail = sock_avail(&r->s), k = avail;
        if (r->flags & F_SMALL)
            k = 1 + fuzz_next(&r->rseed) % avail;
        take(r, sock_input(&r->s), k);
        if ((r->flags & F_ECHO) && sock_write(&r->s, sock_input(&r->s), k) < 0)
            server_end(r, SOCK_ERROR);
        sock_consume(&r->s, k);
        if (r->done)
            break;
        if (k < avail) {
            sock_wake(&r->s);
            break;
        }
    }
    if (sock_end(&r->s) == SOCK_ERROR)
        server_end(r, SOCK_ERROR);
}

/* The loop's callback for the server end, as conn.c's on_event. */
static void on_io(struct ev_loop *l, struct ev_io *io, uint32_t events)
{
    struct run *r = (struct run *)(void *)io;
    (void)l;
    r->steps++;
    if (r->done)
        return;
    if (sock_event(&r->s, events) == SOCK_ERROR)
        server_end(r, SOCK_ERROR);
    else if (r->flags & F_RUNS)
        serve_run(r);
    else
        serve_recv(r);
    /* The queue is per thread, and a worker's one thread serves every
     * connection: an error left there fails the next SSL_get_error of
     * another connection. */
    if (ERR_peek_error() != 0)
        die("the server left an error on OpenSSL's queue");
}

/* One turn of the loop without waiting: events, then wakes. */
static void pump(void)
{
    if (ev_poll(&loop, 0) < 0)
        die("epoll");
    ev_run_ready(&loop);
}

/* ---- The client end ---------------------------------------------------- */

/* Whether the client wrote something. The client itself is not under test:
 * its errors never reach the server's calls. */
static int client_send(struct run *r)
{
    ssize_t k;
    if (r->piece == 0)
        r->piece = r->whole ? r->n - r->off
                 : 1 + fuzz_next(&r->seed) % ((r->seed & 0x100) ? 8 : 1500);
    if (r->piece > r->n - r->off)
        r->piece = r->n - r->off;
    if (prelude(r) == P_APPDATA) {
        /* Retried with the same piece until OpenSSL takes it whole. */
        int w = SSL_write(r->client, r->in + r->off, (int)r->piece);
        if (w <= 0 && SSL_get_error(r->client, w) != SSL_ERROR_WANT_WRITE)
            die("client write");
        k = w;
    } else {
        k = send(r->cfd, r->in + r->off, r->piece, MSG_NOSIGNAL);
    }
    ERR_clear_error();
    if (k <= 0)
        return 0;
    r->off += (size_t)k;
    r->piece -= (size_t)k;
    return 1;
}

/* After the bytes (and, echoing, every echo): close_notify if the client
 * speaks TLS still, then the FIN. */
static int client_fin(struct run *r)
{
    if (r->fin || (r->flags & F_NOFIN) || r->off < r->n ||
        (prelude(r) == P_APPDATA && (r->flags & F_ECHO) && r->echoed < r->n))
        return 0;
    if (prelude(r) == P_APPDATA && SSL_shutdown(r->client) < 0 &&
        SSL_get_error(r->client, -1) == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0; /* again next turn */
    }
    ERR_clear_error();
    shutdown(r->cfd, SHUT_WR);
    r->fin = 1;
    return 1;
}

/* What the server sent: echoes are read through the client and checked,
 * anything else is thrown away. Whether something came. */
static int client_recv(struct run *r)
{
    char buf[16384];
    int any = 0;
    if (prelude(r) != P_APPDATA || !(r->flags & F_ECHO)) {
        ssize_t k;
        while ((k = read(r->cfd, buf, sizeof(buf))) > 0) {
            size_t keep = (size_t)k < OUT_CAP - r->out_len ? (size_t)k : OUT_CAP - r->out_len;
            memcpy(r->out + r->out_len, buf, keep);
            r->out_len += keep;
            any = 1;
        }
        return any;
    }
    for (;;) {
        int k = SSL_read(r->client, buf, sizeof(buf));
        if (k <= 0) {
            if (SSL_get_error(r->client, k) != SSL_ERROR_WANT_READ)
                die("client read of the echoes");
            ERR_clear_error();
            return any;
        }
        if ((size_t)k > r->got - r->echoed || memcmp(buf, r->in + r->echoed, (size_t)k) != 0)
            die("an echo the server was not sent");
        r->echoed += (size_t)k;
        any = 1;
    }
}

/* ---- One connection ----------------------------------------------------- */

static void start(struct run *r, unsigned flags, const uint8_t *in, size_t n, uint32_t seed)
{
    static uint8_t out[OUT_CAP];
    int sv[2];
    memset(r, 0, sizeof(*r));
    r->out = out;
    r->failed = tls_failed_handshakes();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    if (flags & F_ECHO) {
        /* Echoes the kernel does not take at once: OpenSSL's retried writes. */
        int small = 4096;
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    if (sock_open(&r->s, sv[0], on_io) < 0 || tls_accept(&r->s, server_tls) < 0)
        die("sock_open / tls_accept");
    r->cfd = sv[1];
    r->flags = flags;
    r->in = in;
    r->n = n;
    r->seed = seed;
    r->whole = seed == 0;
    r->rseed = seed ^ 0x5bd1e995u;
}

/* Preludes 2-3: an OpenSSL client on the other end, until both are done. */
static void handshake(struct run *r)
{
    int tls12 = (r->flags & F_TLS12) != 0;
    r->client = client_new(tls12, r->cfd);
    if (r->flags & F_RESUME) {
        /* A copy: freeing a client that did not shut down marks its
         * session not resumable, and this one serves every run. */
        SSL_SESSION *copy = SSL_SESSION_dup(session[tls12]);
        if (copy == NULL || !SSL_set_session(r->client, copy))
            die("client session");
        SSL_SESSION_free(copy);
    }
    for (int i = 0; i < 100; i++) {
        int k = SSL_do_handshake(r->client);
        int e = k == 1 ? SSL_ERROR_NONE : SSL_get_error(r->client, k);
        if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            die("client handshake");
        ERR_clear_error();
        pump();
        if (r->done)
            die("the server ended a real client's handshake");
        if (k == 1 && sock_handshaken(&r->s)) {
            if ((r->flags & F_RESUME) && !SSL_session_reused(r->client))
                die("the session was not resumed");
            return;
        }
    }
    die("a real client's handshake did not finish");
}

/* Until the server ends, or nothing moves with everything sent. Each turn
 * that moves nothing while bytes remain is a stall: with the server
 * reading, the socket takes more at every turn. */
static void drive(struct run *r)
{
    int idle = 0;
    for (size_t turn = 0; turn < r->n + 2000; turn++) {
        unsigned steps = r->steps;
        int moved = r->off < r->n ? client_send(r) : client_fin(r);
        pump();
        moved |= client_recv(r);
        if (r->done)
            return;
        if (moved || r->steps != steps)
            idle = 0;
        else if (r->off == r->n && ++idle >= 3)
            return;
    }
    die("no end: the client or the server is stuck");
}

/* The server's records, as the client got them raw: the refusal of
 * plaintext (refuse_plaintext) is ours to send only when OpenSSL says
 * nothing, so it never follows an alert of OpenSSL's or encryption. */
static void check_records(const uint8_t *p, size_t n)
{
    static const uint8_t refusal[] = { 0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x0a };
    int alerted = 0, encrypted = 0;
    while (n >= 5) {
        size_t len = 5 + ((size_t)p[3] << 8 | p[4]);
        if (len > n)
            return;
        if (len == sizeof(refusal) && memcmp(p, refusal, len) == 0 && (alerted || encrypted))
            die("a plaintext alert behind OpenSSL's own alert, or on an encrypted stream");
        alerted |= p[0] == 0x15;
        encrypted |= p[0] == 0x14 || p[0] == 0x17; /* ChangeCipherSpec, application data */
        p += len;
        n -= len;
    }
}

/* What must hold once it is over. */
static void check_end(const struct run *r)
{
    unsigned long failed = tls_failed_handshakes() - r->failed;
    if (r->fin && !r->done)
        die("the server missed the client's FIN");
    check_records(r->out, r->out_len);
    /* Exactly the handshakes that ended in an error count as failed. */
    if (prelude(r) >= P_HANDSHAKE ? failed != 0 : failed != (r->done && !r->eof))
        die("tls_failed_handshakes() miscounted");
    if (prelude(r) != P_APPDATA)
        return;
    if (r->got != r->n)
        die("application data stalled or lost");
    if ((r->flags & F_ECHO) && r->echoed != r->n)
        die("echoes stalled or lost");
    if (r->fin && !r->eof)
        die("the client's close_notify was not an EOF");
}

static void finish(struct run *r)
{
    /* As conn.c lingers after a response: close_notify, then the FIN. */
    if (sock_handshaken(&r->s) && !r->s.failed)
        sock_shutdown_write(&r->s);
    if (ERR_peek_error() != 0)
        die("the server's shutdown left an error on OpenSSL's queue");
    sock_close(&r->s);
    SSL_free(r->client);
    ERR_clear_error();
    close(r->cfd);
}

/* A session from a full handshake, to resume (bit 3). A TLS 1.3 ticket
 * comes after the handshake: the client reads it. */
static void capture_session(int tls12)
{
    struct run r;
    char b;
    start(&r, P_HANDSHAKE | (tls12 ? F_TLS12 : 0), NULL, 0, 0);
    handshake(&r);
    for (int i = 0; i < 100 && !SSL_SESSION_is_resumable(SSL_get0_session(r.client)); i++) {
        if (SSL_read(r.client, &b, 1) > 0)
            die("data before the ticket");
        ERR_clear_error();
        pump();
    }
    /* A copy, for the same reason as in handshake. */
    if ((session[tls12] = SSL_SESSION_dup(SSL_get0_session(r.client))) == NULL ||
        !SSL_SESSION_is_resumable(session[tls12]))
        die("no session to resume");
    finish(&r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN); /* as the worker: a peer gone is EPIPE */
    if (ev_loop_init(&loop, 16) < 0)
        die("ev_loop_init");
    sock_setup(&loop);
    tls_setup();
    load_server();
    for (int v = 0; v < 2; v++) {
        client_ctx[v] = client_ctx_new(v);
        capture_hello(v);
        capture_session(v);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run r;
    uint32_t seed;
    uint8_t *buf = NULL;
    if (size < 5)
        return 0;
    unsigned flags = data[0];
    memcpy(&seed, data + 1, 4);
    const uint8_t *in = data + 5;
    size_t n = size - 5 > INPUT_MAX ? INPUT_MAX : size - 5;
    if ((flags & F_PRELUDE) == P_HELLO) {
        /* the real ClientHello leads the bytes in one stream */
        int v = (flags & F_TLS12) != 0;
        if ((buf = malloc(hello_len[v] + n)) == NULL)
            die("out of memory");
        memcpy(buf, hello[v], hello_len[v]);
        memcpy(buf + hello_len[v], in, n);
        in = buf;
        n += hello_len[v];
    }
    start(&r, flags, in, n, seed);
    if ((flags & F_PRELUDE) >= P_HANDSHAKE)
        handshake(&r);
    drive(&r);
    check_end(&r);
    finish(&r);
    free(buf);
    return 0;
}
