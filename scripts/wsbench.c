/*
 * wsbench — WebSocket (RFC 6455) load generator for benchmarking echo servers.
 *
 * Epoll, edge-triggered, non-blocking; one event loop per thread (-j).
 * Every connection performs a real opening handshake (random 16-byte key,
 * Sec-WebSocket-Accept checked with libcrypto SHA-1), then sends masked
 * messages carrying (connection id, sequence number) and a pattern, and
 * checks every echoed byte. See usage() for the modes and options.
 *
 * Build: make bench   (-> build/wsbench)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_THREADS 64
#define MAX_CONNS 2000000
#define MAX_SIZE (64u << 20)
#define MAX_INFLIGHT 65536
#define OUT_CAP_MAX (1u << 20) /* largest batch built per connection */
#define RBUF_SIZE (256u << 10)  /* per-thread read buffer */
#define HS_BUF 4096             /* handshake response buffer */
#define READS_PER_EVENT 64      /* bound on read() calls per event */
#define MAX_EVENTS 1024
#define LOG_LIMIT 5             /* detailed messages per error kind */

/* ------------------------------------------------------------------ */
/* options */

enum mode { M_ECHO, M_CONNRATE, M_IDLE };

static struct {
    char host[256], port[16], path[1024], hosthdr[300];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int conns, inflight, threads, text, nsrc, max_pending, quiet;
    size_t size;
    double duration, warmup, connect_timeout, hs_timeout, drain_timeout, settle;
    enum mode mode;
    pid_t server_pid;
    long poke; /* idle mode: connections poked afterwards; -1 = all */
    int spread; /* bind sources over 127/8 */
} O = {
    .conns = 100, .inflight = 1, .threads = 1, .nsrc = 64, .max_pending = 256,
    .size = 20, .duration = 10, .warmup = 2, .connect_timeout = 60,
    .hs_timeout = 10, .drain_timeout = 3, .settle = 1, .mode = M_ECHO,
    .poke = 1000,
};

/* ------------------------------------------------------------------ */
/* small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        s = now_ns() ^ ((uint64_t)getpid() << 32);
    return s;
}

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wsbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static atomic_int log_counts[16];

static void elog(int kind, const char *fmt, ...)
{
    if (atomic_fetch_add(&log_counts[kind & 15], 1) >= LOG_LIMIT)
        return;
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "wsbench: %s\n", buf);
}

/* ------------------------------------------------------------------ */
/* latency histogram: log-linear, 64 sub-buckets per power of two (<1.6%) */

#define HSUB_BITS 6
#define HSUB (1u << HSUB_BITS)
#define HBUCKETS ((64 - HSUB_BITS + 1) * HSUB)

static unsigned hist_index(uint64_t v)
{
    if (v < HSUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HSUB_BITS */
    unsigned sub = (unsigned)(v >> (e - HSUB_BITS)) & (HSUB - 1);
    return (e - HSUB_BITS + 1) * HSUB + sub;
}

static uint64_t hist_value(unsigned idx) /* midpoint of the bucket */
{
    if (idx < HSUB)
        return idx;
    unsigned e = idx / HSUB + HSUB_BITS - 1, sub = idx % HSUB;
    uint64_t lo = (uint64_t)(HSUB + sub) << (e - HSUB_BITS);
    uint64_t w = (uint64_t)1 << (e - HSUB_BITS);
    return lo + w / 2;
}

static uint64_t hist_pct(const uint64_t *h, uint64_t total, double pct)
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)((double)total * pct / 100.0);
    if (rank >= total)
        rank = total - 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        acc += h[i];
        if (acc > rank)
            return hist_value(i);
    }
    return hist_value(HBUCKETS - 1);
}

/* ------------------------------------------------------------------ */
/* statistics */

enum counter {
    ST_MSGS_WIN, ST_BYTES_WIN, ST_MSGS, ST_HS_OK, ST_HS_WIN, ST_OPEN,
    ST_INFLIGHT, ST_SETTLED, /* connections whose connect finished (ok or not) */
    ST_E_CONNECT, ST_E_HS, ST_E_HS503, ST_E_MISMATCH, ST_E_RESET, ST_E_EOF,
    ST_E_CLOSE, ST_E_PROTO, ST_E_TIMEOUT, ST_POKE_SENT, ST_POKE_OK,
    ST_CLOSE_OK, ST_CLOSE_NOREPLY, ST_N
};
static const char *stat_names[ST_N] = {
    "msgs_win", "bytes_win", "msgs", "hs_ok", "hs_win", "open", "inflight",
    "settled", "err_connect", "err_handshake", "err_hs503", "err_mismatch",
    "err_reset", "err_eof", "err_close", "err_proto", "err_timeout",
    "poke_sent", "poke_ok", "close_ok", "close_noreply",
};

/* ------------------------------------------------------------------ */
/* connections and threads */

enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DEAD };

struct hsbuf {
    char accept[32];
    uint32_t len;
    char data[HS_BUF];
};

struct thr;

struct conn {
    int fd;
    uint8_t state;
    uint8_t in_payload, f_op, f_fin, msg_op, fh_have, fh_need, ctrl_len;
    uint8_t poke;
    uint32_t id;
    struct thr *t;
    uint64_t send_seq, recv_seq;
    uint32_t inflight;
    uint32_t out_len, out_off, out_cap;
    uint8_t *out;
    uint64_t *ts; /* send timestamps, ring of O.inflight */
    struct hsbuf *hs;
    uint64_t t_start; /* connect start */
    uint64_t f_len, f_off, msg_off;
    uint8_t fh[14];
    uint8_t ctrl[125];
};

struct thr {
    int id, ep;
    pthread_t tid;
    struct conn *conns;
    int nconns, next_connect, pending;
    uint8_t *rbuf, *pat;
    size_t patlen;
    uint64_t rng;
    uint64_t st[ST_N];
    _Atomic uint64_t pub[ST_N];
    uint64_t hist[HBUCKETS];
    uint64_t hist_n;
    atomic_int ack; /* last phase this thread has acted on */
};

enum phase { P_CONNECT, P_RUN, P_POKE, P_DRAIN, P_CLOSE, P_EXIT };
static atomic_int g_phase = P_CONNECT;
static _Atomic uint64_t g_win_start = 0, g_win_end = UINT64_MAX;
static volatile sig_atomic_t g_stop;
static struct thr thr[MAX_THREADS];
static struct sockaddr_in src_base;

static inline int in_window(uint64_t t)
{
    uint64_t s = atomic_load_explicit(&g_win_start, memory_order_relaxed);
    return s != 0 && t >= s && t < atomic_load_explicit(&g_win_end, memory_order_relaxed);
}

static void publish(struct thr *t)
{
    for (int i = 0; i < ST_N; i++)
        atomic_store_explicit(&t->pub[i], t->st[i], memory_order_relaxed);
}

static uint64_t total(enum counter s)
{
    uint64_t v = 0;
    for (int i = 0; i < O.threads; i++)
        v += atomic_load_explicit(&thr[i].pub[s], memory_order_relaxed);
    return v;
}

/* ------------------------------------------------------------------ */
/* payload: (connection id, sequence) header then a pattern slice */

#define ID_BIN 12
#define ID_TXT 24

static size_t id_len(void) { return O.text ? ID_TXT : ID_BIN; }

static void gen_id(uint8_t *d, uint32_t id, uint64_t seq)
{
    if (O.text) {
        static const char hx[] = "0123456789abcdef";
        for (int i = 0; i < 8; i++)
            d[i] = (uint8_t)hx[(id >> (4 * i)) & 15];
        for (int i = 0; i < 16; i++)
            d[8 + i] = (uint8_t)hx[(seq >> (4 * i)) & 15];
    } else {
        for (int i = 0; i < 4; i++)
            d[i] = (uint8_t)(id >> (8 * i));
        for (int i = 0; i < 8; i++)
            d[4 + i] = (uint8_t)(seq >> (8 * i));
    }
}

static size_t pat_off(uint32_t id, uint64_t seq) { return (size_t)((seq * 37 + id) % 251); }

static size_t frame_hdr_len(size_t plen)
{
    return 2 + (plen < 126 ? 0 : plen < 65536 ? 2 : 8) + 4;
}

static void mask_xor(uint8_t *p, size_t n, const uint8_t mk[4])
{
    uint8_t m8[8] = {mk[0], mk[1], mk[2], mk[3], mk[0], mk[1], mk[2], mk[3]};
    uint64_t m;
    memcpy(&m, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= mk[i & 3];
}

/* Writes a masked frame header at d; returns header length; mask in mk. */
static size_t put_frame_hdr(uint8_t *d, int op, size_t plen, struct thr *t, uint8_t mk[4])
{
    size_t h = 0;
    d[h++] = (uint8_t)(0x80 | op);
    if (plen < 126) {
        d[h++] = (uint8_t)(0x80 | plen);
    } else if (plen < 65536) {
        d[h++] = 0x80 | 126;
        d[h++] = (uint8_t)(plen >> 8);
        d[h++] = (uint8_t)plen;
    } else {
        d[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            d[h++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    uint32_t r = (uint32_t)rng_next(&t->rng);
    memcpy(mk, &r, 4);
    memcpy(d + h, mk, 4);
    return h + 4;
}

/* Builds one data message (conn c, sequence seq) at d; returns bytes. */
static size_t build_msg(struct conn *c, uint8_t *d, uint64_t seq)
{
    uint8_t mk[4];
    size_t h = put_frame_hdr(d, O.text ? 1 : 2, O.size, c->t, mk);
    uint8_t *p = d + h;
    uint8_t idb[ID_TXT];
    size_t il = id_len() < O.size ? id_len() : O.size;
    gen_id(idb, c->id, seq);
    memcpy(p, idb, il);
    memcpy(p + il, c->t->pat + pat_off(c->id, seq), O.size - il);
    mask_xor(p, O.size, mk);
    return h + O.size;
}

/* ------------------------------------------------------------------ */

static void conn_kill(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state == C_OPEN || c->state == C_CLOSING)
        c->t->st[ST_OPEN]--;
    if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
        c->t->pending--;
    c->t->st[ST_INFLIGHT] -= c->inflight;
    c->inflight = 0;
    c->state = C_DEAD;
    free(c->hs);
    c->hs = NULL;
}

static void io_error(struct conn *c, int err, const char *what)
{
    if (err == ECONNRESET || err == EPIPE) {
        c->t->st[ST_E_RESET]++;
        elog(ST_E_RESET, "conn %u: %s: %s (state %d, inflight %u)", c->id, what,
             strerror(err), c->state, c->inflight);
    } else {
        c->t->st[ST_E_RESET]++;
        elog(ST_E_RESET, "conn %u: %s: %s", c->id, what, strerror(err));
    }
    conn_kill(c);
}

static int ensure_out(struct conn *c)
{
    if (c->out)
        return 0;
    size_t fs = frame_hdr_len(O.size) + O.size;
    size_t cap = fs * (size_t)O.inflight;
    if (cap > OUT_CAP_MAX)
        cap = OUT_CAP_MAX;
    if (cap < fs)
        cap = fs;
    if (cap < 256)
        cap = 256;
    c->out = malloc(cap);
    if (!c->out)
        die("out of memory");
    c->out_cap = (uint32_t)cap;
    return 0;
}

/* Writes pending output; returns 1 if all flushed, 0 if blocked, -1 dead. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            io_error(c, errno, "write");
            return -1;
        }
        c->out_off += (uint32_t)n;
        if (c->out_off < c->out_len)
            return 0; /* short write: wait for EPOLLOUT */
    }
    c->out_off = c->out_len = 0;
    return 1;
}

/* Appends a small control frame to the output and flushes. */
static int send_ctrl(struct conn *c, int op, const uint8_t *pl, size_t n)
{
    ensure_out(c);
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + 14 + n > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + 14 + n > c->out_cap)
            return 0; /* output full; drop (only pongs/close) */
    }
    uint8_t mk[4];
    uint8_t *d = c->out + c->out_len;
    size_t h = put_frame_hdr(d, op, n, c->t, mk);
    memcpy(d + h, pl, n);
    mask_xor(d + h, n, mk);
    c->out_len += (uint32_t)(h + n);
    return flush_out(c);
}

/* Fills the in-flight window with messages (up to max) and writes them in
 * one write(). */
static void fill_and_send(struct conn *c, uint64_t max, uint64_t now)
{
    if (c->state != C_OPEN)
        return;
    ensure_out(c);
    if (c->out_len > c->out_off) {
        int r = flush_out(c);
        if (r <= 0)
            return;
    }
    size_t fs = frame_hdr_len(O.size) + O.size;
    uint32_t len = 0;
    uint64_t n = 0;
    while (c->inflight < (uint32_t)O.inflight && n < max && len + fs <= c->out_cap) {
        len += (uint32_t)build_msg(c, c->out + len, c->send_seq);
        c->ts[c->send_seq % (uint64_t)O.inflight] = now;
        c->send_seq++;
        c->inflight++;
        n++;
    }
    if (n == 0)
        return;
    c->t->st[ST_INFLIGHT] += n;
    c->out_len = len;
    c->out_off = 0;
    flush_out(c);
}

/* ------------------------------------------------------------------ */
/* handshake */

static void b64(const unsigned char *in, int n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, n);
}

static void expected_accept(const char *key, char *out)
{
    char buf[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t kl = strlen(key);
    memcpy(buf, key, kl);
    memcpy(buf + kl, WS_GUID, 36);
    if (!EVP_Digest(buf, kl + 36, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        die("SHA-1 failed");
    b64(md, 20, out);
}

static int conn_start(struct conn *c, uint64_t now);

static void hs_fail(struct conn *c, const char *why, int status)
{
    struct thr *t = c->t;
    t->st[ST_E_HS]++;
    if (status == 503)
        t->st[ST_E_HS503]++;
    elog(ST_E_HS, "conn %u: handshake failed: %s", c->id, why);
    conn_kill(c);
    t->st[ST_SETTLED]++;
}

static int header_has(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = v; *p; p++)
        if (strncasecmp(p, tok, n) == 0)
            return 1;
    return 0;
}

static int ws_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now);

static void on_open(struct conn *c, uint64_t now);

/* Returns -1 if the connection went away. */
static int hs_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    struct hsbuf *hs = c->hs;
    size_t room = HS_BUF - 1 - hs->len;
    size_t k = n < room ? n : room;
    memcpy(hs->data + hs->len, p, k);
    hs->len += (uint32_t)k;
    hs->data[hs->len] = 0;
    char *end = strstr(hs->data, "\r\n\r\n");
    if (!end) {
        if (hs->len >= HS_BUF - 1) {
            hs_fail(c, "response headers too large", 0);
            return -1;
        }
        return 0;
    }
    size_t hdr_len = (size_t)(end - hs->data) + 4;
    size_t extra_off = hdr_len - (hs->len - k); /* offset in p of bytes after headers */
    *end = 0;
    int status = 0;
    char *line = hs->data, *save = NULL;
    char *first = strtok_r(line, "\r\n", &save);
    if (!first || sscanf(first, "HTTP/1.1 %d", &status) != 1) {
        char why[128];
        snprintf(why, sizeof why, "bad status line '%.60s'", first ? first : "");
        hs_fail(c, why, 0);
        return -1;
    }
    if (status != 101) {
        char why[128];
        snprintf(why, sizeof why, "'%.80s'", first);
        hs_fail(c, why, status);
        return -1;
    }
    int up = 0, conn = 0, acc = 0;
    for (char *h = strtok_r(NULL, "\r\n", &save); h; h = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(h, ':');
        if (!colon)
            continue;
        *colon = 0;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = 0;
        if (strcasecmp(h, "upgrade") == 0)
            up = header_has(v, "websocket");
        else if (strcasecmp(h, "connection") == 0)
            conn = header_has(v, "upgrade");
        else if (strcasecmp(h, "sec-websocket-accept") == 0)
            acc = strcmp(v, hs->accept) == 0 ? 1 : -1;
    }
    if (!up || !conn || acc != 1) {
        hs_fail(c, !up ? "no 'Upgrade: websocket'" : !conn ? "no 'Connection: upgrade'"
                   : acc == 0 ? "no Sec-WebSocket-Accept" : "wrong Sec-WebSocket-Accept", 101);
        return -1;
    }
    free(c->hs);
    c->hs = NULL;
    c->t->pending--;
    c->t->st[ST_HS_OK]++;
    c->t->st[ST_SETTLED]++;
    c->state = C_OPEN;
    c->t->st[ST_OPEN]++;
    if (O.mode == M_CONNRATE) {
        struct thr *t = c->t;
        if (in_window(now)) {
            t->st[ST_HS_WIN]++;
            uint64_t lat = now - c->t_start;
            t->hist[hist_index(lat)]++;
            t->hist_n++;
        }
        /* immediate close: close frame (1000), then close the socket */
        uint8_t code[2] = {0x03, 0xE8};
        send_ctrl(c, 8, code, 2);
        if (c->state != C_DEAD) {
            c->t->st[ST_OPEN]--;
            close(c->fd);
            c->fd = -1;
            c->state = C_IDLE;
            c->out_len = c->out_off = 0;
        }
        if (atomic_load(&g_phase) == P_RUN)
            conn_start(c, now);
        return -1;
    }
    if (extra_off < n && ws_consume(c, p + extra_off, n - extra_off, now) < 0)
        return -1;
    on_open(c, now);
    return c->state == C_DEAD ? -1 : 0;
}

static void on_open(struct conn *c, uint64_t now)
{
    if (O.mode == M_ECHO && atomic_load_explicit(&g_phase, memory_order_relaxed) == P_RUN)
        fill_and_send(c, UINT64_MAX, now);
}

static void send_handshake(struct conn *c)
{
    unsigned char raw[16];
    uint64_t a = rng_next(&c->t->rng), b = rng_next(&c->t->rng);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    char key[32];
    b64(raw, 16, key);
    c->hs = malloc(sizeof *c->hs);
    if (!c->hs)
        die("out of memory");
    c->hs->len = 0;
    expected_accept(key, c->hs->accept);
    char req[1600];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     O.path, O.hosthdr, key);
    c->state = C_HANDSHAKE;
    ensure_out(c);
    if ((size_t)n > c->out_cap) {
        free(c->out);
        c->out = malloc((size_t)n);
        if (!c->out)
            die("out of memory");
        c->out_cap = (uint32_t)n;
    }
    memcpy(c->out, req, (size_t)n);
    c->out_len = (uint32_t)n;
    c->out_off = 0;
    flush_out(c);
}

static int conn_start(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    int fam = O.addr.ss_family;
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        t->st[ST_E_CONNECT]++;
        t->st[ST_SETTLED]++;
        elog(ST_E_CONNECT, "conn %u: socket: %s", c->id, strerror(errno));
        c->state = C_DEAD;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.spread) {
        struct sockaddr_in s = src_base;
        uint32_t k = c->id % (uint32_t)O.nsrc;
        /* 127.0.(1+k/250).(1+k%250) */
        s.sin_addr.s_addr = htonl(0x7F000000u | ((1 + k / 250) << 8) | (1 + k % 250));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&s, sizeof s) < 0) {
            t->st[ST_E_CONNECT]++;
            t->st[ST_SETTLED]++;
            elog(ST_E_CONNECT, "conn %u: bind: %s", c->id, strerror(errno));
            close(fd);
            c->state = C_DEAD;
            return -1;
        }
    }
    c->fd = fd;
    c->t_start = now;
    c->state = C_CONNECTING;
    c->in_payload = c->fh_have = c->msg_op = c->ctrl_len = 0;
    c->fh_need = 2;
    c->out_len = c->out_off = 0;
    t->pending++;
    if (connect(fd, (struct sockaddr *)&O.addr, O.addrlen) < 0 && errno != EINPROGRESS) {
        int e = errno;
        t->st[ST_E_CONNECT]++;
        t->st[ST_SETTLED]++;
        elog(ST_E_CONNECT, "conn %u: connect: %s", c->id, strerror(e));
        conn_kill(c);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    return 0;
}

/* ------------------------------------------------------------------ */
/* frames from the server */

static void mismatch(struct conn *c, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->t->st[ST_E_MISMATCH]++;
    elog(ST_E_MISMATCH, "conn %u seq %" PRIu64 ": mismatch: %s", c->id, c->recv_seq, buf);
    conn_kill(c);
}

/* Checks k echoed bytes at message offset off against what was sent. */
static int verify(struct conn *c, const uint8_t *d, size_t k, uint64_t off)
{
    uint8_t idb[ID_TXT];
    size_t il = id_len() < O.size ? id_len() : O.size;
    size_t i = 0;
    if (off < il) {
        gen_id(idb, c->id, c->recv_seq);
        for (; i < k && off + i < il; i++)
            if (d[i] != idb[off + i]) {
                mismatch(c, "byte %" PRIu64 ": got 0x%02x, sent 0x%02x", off + i, d[i], idb[off + i]);
                return -1;
            }
    }
    if (i < k) {
        const uint8_t *e = c->t->pat + pat_off(c->id, c->recv_seq) + (off + i - il);
        if (memcmp(d + i, e, k - i) != 0) {
            size_t j = i;
            while (j < k && d[j] == e[j - i])
                j++;
            mismatch(c, "byte %" PRIu64 ": got 0x%02x, sent 0x%02x", off + j, d[j], e[j - i]);
            return -1;
        }
    }
    return 0;
}

static void message_done(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    if (c->msg_off != O.size) {
        mismatch(c, "message of %" PRIu64 " bytes, sent %zu", c->msg_off, O.size);
        return;
    }
    if (c->inflight == 0) {
        mismatch(c, "unsolicited message");
        return;
    }
    uint64_t lat = now - c->ts[c->recv_seq % (uint64_t)O.inflight];
    c->recv_seq++;
    c->inflight--;
    t->st[ST_INFLIGHT]--;
    t->st[ST_MSGS]++;
    if (c->poke) {
        c->poke = 0;
        t->st[ST_POKE_OK]++;
    }
    if (in_window(now)) {
        t->st[ST_MSGS_WIN]++;
        t->st[ST_BYTES_WIN] += O.size;
        t->hist[hist_index(lat)]++;
        t->hist_n++;
    }
    c->msg_op = 0;
}

static int frame_done(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    c->in_payload = 0;
    c->fh_have = 0;
    c->fh_need = 2;
    switch (c->f_op) {
    case 0: case 1: case 2:
        if (c->f_fin)
            message_done(c, now);
        break;
    case 9: /* ping */
        send_ctrl(c, 10, c->ctrl, c->ctrl_len);
        break;
    case 10:
        break;
    case 8: {
        int code = c->ctrl_len >= 2 ? (c->ctrl[0] << 8 | c->ctrl[1]) : 1005;
        if (c->state == C_CLOSING) {
            t->st[ST_CLOSE_OK]++;
        } else {
            t->st[ST_E_CLOSE]++;
            elog(ST_E_CLOSE, "conn %u: server sent close %d '%.*s' (inflight %u)", c->id, code,
                 c->ctrl_len > 2 ? c->ctrl_len - 2 : 0, (const char *)c->ctrl + 2, c->inflight);
        }
        conn_kill(c);
        break;
    }
    }
    c->ctrl_len = 0;
    return c->state == C_DEAD ? -1 : 0;
}

static void proto_error(struct conn *c, const char *why)
{
    c->t->st[ST_E_PROTO]++;
    elog(ST_E_PROTO, "conn %u: protocol error from server: %s", c->id, why);
    conn_kill(c);
}

static int ws_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    int expect_op = O.text ? 1 : 2;
    while (n > 0) {
        if (!c->in_payload) {
            size_t k = c->fh_need - c->fh_have;
            if (k > n)
                k = n;
            memcpy(c->fh + c->fh_have, p, k);
            c->fh_have += (uint8_t)k;
            p += k;
            n -= k;
            if (c->fh_have == 2) {
                unsigned l7 = c->fh[1] & 0x7f;
                c->fh_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (c->fh[1] & 0x80 ? 4 : 0));
            }
            if (c->fh_have < c->fh_need)
                continue;
            uint8_t b0 = c->fh[0], b1 = c->fh[1];
            if (b1 & 0x80) { proto_error(c, "masked frame"); return -1; }
            if (b0 & 0x70) { proto_error(c, "RSV bits set"); return -1; }
            c->f_fin = b0 >> 7;
            c->f_op = b0 & 15;
            unsigned l7 = b1 & 0x7f;
            uint64_t len = l7;
            if (l7 == 126)
                len = (uint64_t)c->fh[2] << 8 | c->fh[3];
            else if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | c->fh[2 + i];
            }
            c->f_len = len;
            c->f_off = 0;
            if (c->f_op >= 8) {
                if (!c->f_fin || len > 125 || (c->f_op != 8 && c->f_op != 9 && c->f_op != 10)) {
                    proto_error(c, "bad control frame");
                    return -1;
                }
            } else if (c->f_op == 0) {
                if (!c->msg_op) { proto_error(c, "continuation without a message"); return -1; }
            } else if (c->f_op == 1 || c->f_op == 2) {
                if (c->msg_op) { proto_error(c, "new message inside a fragmented one"); return -1; }
                if (c->f_op != expect_op) {
                    mismatch(c, "opcode %d, sent %d", c->f_op, expect_op);
                    return -1;
                }
                c->msg_op = c->f_op;
                c->msg_off = 0;
            } else {
                proto_error(c, "reserved opcode");
                return -1;
            }
            if (c->f_op < 8 && c->msg_off + len > O.size) {
                mismatch(c, "message longer than %zu bytes", O.size);
                return -1;
            }
            c->in_payload = 1;
            if (len == 0 && frame_done(c, now) < 0)
                return -1;
            continue;
        }
        uint64_t rem = c->f_len - c->f_off;
        size_t k = rem < n ? (size_t)rem : n;
        if (c->f_op < 8) {
            if (verify(c, p, k, c->msg_off) < 0)
                return -1;
            c->msg_off += k;
        } else {
            memcpy(c->ctrl + c->ctrl_len, p, k);
            c->ctrl_len += (uint8_t)k;
        }
        c->f_off += k;
        p += k;
        n -= k;
        if (c->f_off == c->f_len && frame_done(c, now) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* events */

static void on_readable(struct conn *c)
{
    struct thr *t = c->t;
    for (int i = 0; i < READS_PER_EVENT && c->state != C_DEAD && c->state != C_IDLE; i++) {
        ssize_t n = read(c->fd, t->rbuf, RBUF_SIZE);
        if (n > 0) {
            uint64_t now = now_ns();
            int r = c->state == C_HANDSHAKE ? hs_consume(c, t->rbuf, (size_t)n, now)
                                            : ws_consume(c, t->rbuf, (size_t)n, now);
            if (r < 0)
                return;
            if ((size_t)n < RBUF_SIZE)
                return; /* drained; edge-triggered epoll reports new data */
            continue;
        }
        if (n == 0) {
            if (c->state == C_HANDSHAKE) {
                hs_fail(c, "connection closed during handshake", 0);
            } else if (c->state == C_CLOSING) {
                t->st[ST_CLOSE_NOREPLY]++;
                conn_kill(c);
            } else {
                t->st[ST_E_EOF]++;
                elog(ST_E_EOF, "conn %u: server closed the TCP connection (inflight %u, sent %" PRIu64 ")",
                     c->id, c->inflight, c->send_seq);
                conn_kill(c);
            }
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR)
            continue;
        if (c->state == C_HANDSHAKE) {
            char why[96];
            snprintf(why, sizeof why, "read: %s", strerror(errno));
            hs_fail(c, why, 0);
        } else {
            io_error(c, errno, "read");
        }
        return;
    }
}

static void on_event(struct conn *c, uint32_t ev)
{
    struct thr *t = c->t;
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) {
            t->st[ST_E_CONNECT]++;
            t->st[ST_SETTLED]++;
            elog(ST_E_CONNECT, "conn %u: connect: %s", c->id, strerror(err ? err : ECONNREFUSED));
            conn_kill(c);
            return;
        }
        send_handshake(c);
        /* Edge-triggered: a response already in this event (a server may
         * answer at once, e.g. with an error) is not reported again. */
        if (!(ev & (EPOLLIN | EPOLLRDHUP)) || c->state != C_HANDSHAKE)
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        on_readable(c);
    if (c->state == C_DEAD || c->state == C_IDLE)
        return;
    uint64_t now = now_ns();
    if (c->out_len > c->out_off && flush_out(c) < 0)
        return;
    if (c->state == C_OPEN && O.mode == M_ECHO &&
        atomic_load_explicit(&g_phase, memory_order_relaxed) == P_RUN)
        fill_and_send(c, UINT64_MAX, now);
}

/* ------------------------------------------------------------------ */
/* thread */

static void *thread_main(void *arg)
{
    struct thr *t = arg;
    struct epoll_event evs[MAX_EVENTS];
    int last_phase = -1;
    uint64_t last_scan = 0;
    uint64_t hs_to = (uint64_t)(O.hs_timeout * 1e9);
    for (;;) {
        int ph = atomic_load(&g_phase);
        uint64_t now = now_ns();
        if (ph != last_phase) {
            last_phase = ph;
            if (ph == P_EXIT)
                break;
            if (ph == P_RUN && O.mode == M_ECHO)
                for (int i = 0; i < t->nconns; i++)
                    fill_and_send(&t->conns[i], UINT64_MAX, now);
            if (ph == P_POKE) {
                /* every stride-th connection by id: about O.poke of them */
                long stride = O.poke == 0 ? 0 : (O.poke < 0 || O.poke >= O.conns) ? 1 : O.conns / O.poke;
                for (int i = 0; stride && i < t->nconns; i++) {
                    struct conn *c = &t->conns[i];
                    if (c->state == C_OPEN && c->id % (uint32_t)stride == 0) {
                        c->poke = 1;
                        t->st[ST_POKE_SENT]++;
                        fill_and_send(c, 1, now);
                    }
                }
            }
            if (ph == P_CLOSE) {
                uint8_t code[2] = {0x03, 0xE8};
                for (int i = 0; i < t->nconns; i++) {
                    struct conn *c = &t->conns[i];
                    if (c->state != C_OPEN)
                        continue;
                    c->state = C_CLOSING;
                    send_ctrl(c, 8, code, 2);
                }
            }
            publish(t);
            atomic_store(&t->ack, ph);
        }
        /* start connections, at most max_pending in progress per thread */
        int may_connect = (ph == P_CONNECT && O.mode != M_CONNRATE) ||
                          (ph == P_RUN && O.mode == M_CONNRATE);
        int cap = O.max_pending / O.threads > 0 ? O.max_pending / O.threads : 1;
        while (may_connect && t->pending < cap && t->next_connect < t->nconns) {
            struct conn *c = &t->conns[t->next_connect++];
            conn_start(c, now);
        }
        int n = epoll_wait(t->ep, evs, MAX_EVENTS, 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
        now = now_ns();
        if (now - last_scan > 200000000u) {
            last_scan = now;
            /* handshake timeouts; connrate: restart idle slots */
            for (int i = 0; i < t->nconns && t->pending > 0; i++) {
                struct conn *c = &t->conns[i];
                if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE) && now - c->t_start > hs_to) {
                    if (c->state == C_CONNECTING) {
                        t->st[ST_E_CONNECT]++;
                        t->st[ST_SETTLED]++;
                        elog(ST_E_CONNECT, "conn %u: connect timed out", c->id);
                        conn_kill(c);
                    } else {
                        struct sockaddr_in la = {0};
                        socklen_t ll = sizeof la;
                        getsockname(c->fd, (struct sockaddr *)&la, &ll);
                        char why[160], ip[INET_ADDRSTRLEN] = "?";
                        inet_ntop(AF_INET, &la.sin_addr, ip, sizeof ip);
                        snprintf(why, sizeof why, "no complete response within %.1f s (from %s:%u, %u request "
                                 "bytes unsent, %u response bytes)", O.hs_timeout, ip, ntohs(la.sin_port),
                                 c->out_len - c->out_off, c->hs ? c->hs->len : 0);
                        hs_fail(c, why, 0);
                    }
                }
            }
            if (O.mode == M_CONNRATE && ph == P_RUN)
                for (int i = 0; i < t->next_connect; i++)
                    if (t->conns[i].state == C_DEAD || t->conns[i].state == C_IDLE)
                        conn_start(&t->conns[i], now);
        }
        publish(t);
    }
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (c->state == C_CLOSING)
            t->st[ST_CLOSE_NOREPLY]++;
        if (c->fd >= 0)
            conn_kill(c);
        free(c->out);
        free(c->ts);
        c->out = NULL;
        c->ts = NULL;
    }
    publish(t);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* server processes: /proc/PID/stat and status of PID and descendants */

struct procsnap {
    int nprocs;
    uint64_t utime, stime; /* clock ticks */
    uint64_t rss_kb, anon_kb;
    uint64_t t_ns;
};

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

#define MAX_SCAN 65536

static int proc_snapshot(pid_t root, struct procsnap *s)
{
    memset(s, 0, sizeof *s);
    s->t_ns = now_ns();
    if (root <= 0)
        return -1;
    static pid_t pids[MAX_SCAN], ppids[MAX_SCAN];
    static uint64_t ut[MAX_SCAN], st[MAX_SCAN];
    static char in[MAX_SCAN];
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    char path[300], buf[2048];
    while ((e = readdir(d)) && np < MAX_SCAN) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (read_file(path, buf, sizeof buf) <= 0)
            continue;
        char *rp = strrchr(buf, ')');
        if (!rp)
            continue;
        char state;
        int ppid;
        unsigned long long u, sy;
        /* fields after comm: 3 state, 4 ppid, ..., 14 utime, 15 stime */
        if (sscanf(rp + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ppid, &u, &sy) != 4)
            continue;
        pids[np] = (pid_t)atoi(e->d_name);
        ppids[np] = ppid;
        ut[np] = u;
        st[np] = sy;
        in[np] = pids[np] == root;
        np++;
    }
    closedir(d);
    for (int pass = 0, changed = 1; changed && pass < 64; pass++) {
        changed = 0;
        for (int i = 0; i < np; i++) {
            if (in[i])
                continue;
            for (int j = 0; j < np; j++)
                if (in[j] && pids[j] == ppids[i]) {
                    in[i] = 1;
                    changed = 1;
                    break;
                }
        }
    }
    for (int i = 0; i < np; i++) {
        if (!in[i])
            continue;
        s->nprocs++;
        s->utime += ut[i];
        s->stime += st[i];
        snprintf(path, sizeof path, "/proc/%d/status", (int)pids[i]);
        if (read_file(path, buf, sizeof buf) <= 0)
            continue;
        char *p = strstr(buf, "VmRSS:");
        if (p)
            s->rss_kb += strtoull(p + 6, NULL, 10);
        p = strstr(buf, "RssAnon:");
        if (p)
            s->anon_kb += strtoull(p + 8, NULL, 10);
    }
    return s->nprocs > 0 ? 0 : -1;
}

/* kernel TCP memory (pages), whole machine: /proc/net/sockstat "TCP: ... mem N" */
static long tcp_mem_pages(void)
{
    char buf[1024];
    if (read_file("/proc/net/sockstat", buf, sizeof buf) <= 0)
        return -1;
    char *p = strstr(buf, "TCP:");
    if (!p)
        return -1;
    p = strstr(p, " mem ");
    return p ? strtol(p + 5, NULL, 10) : -1;
}

/* per-CPU time from /proc/stat (ticks): busy = user+nice+system+irq+softirq */
#define MAX_CPUS 64
struct cpustat {
    int n;
    uint64_t busy[MAX_CPUS], sirq[MAX_CPUS], steal[MAX_CPUS], all[MAX_CPUS];
};

static void cpu_snapshot(struct cpustat *cs)
{
    static char buf[65536];
    memset(cs, 0, sizeof *cs);
    if (read_file("/proc/stat", buf, sizeof buf) <= 0)
        return;
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int id;
        unsigned long long v[10] = {0};
        if (sscanf(l, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) < 9 || id < 0 || id >= MAX_CPUS)
            continue;
        cs->busy[id] = v[0] + v[1] + v[2] + v[5] + v[6];
        cs->sirq[id] = v[6];
        cs->steal[id] = v[7];
        cs->all[id] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        if (id + 1 > cs->n)
            cs->n = id + 1;
    }
}

/* ------------------------------------------------------------------ */
/* command line */

static void usage(FILE *f)
{
    fprintf(f,
"usage: wsbench [options] ws://HOST[:PORT][/PATH]\n"
"\n"
"WebSocket load generator: real RFC 6455 handshakes, masked messages, every\n"
"echoed byte checked (connection id + sequence number + pattern).\n"
"\n"
"Modes (--mode):\n"
"  echo      (default) C connections, each keeps P messages of S bytes in\n"
"            flight for the duration; reports msgs/s, MB/s, latency.\n"
"  connrate  C concurrent slots, each: connect, handshake, send a close frame,\n"
"            close the socket, repeat; reports handshakes/s and latency\n"
"            (connect start -> 101 checked).\n"
"  idle      open C connections and hold them idle for the duration; reports\n"
"            the server's RSS per connection = (RSS after - RSS before)/C\n"
"            (needs --server-pid), then sends one echo on a sample (--poke).\n"
"\n"
"Options:\n"
"  -c, --conns N         connections (default 100)\n"
"  -s, --size BYTES      message size (default 20; k/m suffixes)\n"
"  -p, --inflight N      messages in flight per connection (default 1)\n"
"  -d, --duration SEC    measured time (default 10); idle mode: hold time\n"
"  -w, --warmup SEC      warm-up before measuring, excluded (default 2)\n"
"  -t, --text            send text messages (default binary)\n"
"  -j, --threads N       client threads, each with its own epoll (default 1)\n"
"  -m, --mode MODE       echo | connrate | idle\n"
"  -P, --server-pid PID  server pid: CPU and RSS of it and its descendants\n"
"                        are sampled from /proc before and after the window\n"
"      --sources N       127.0.x.y source addresses to spread over when the\n"
"                        target is in 127/8 (default 64; 0 = don't bind)\n"
"      --max-pending N   connects+handshakes in progress at once (default 256)\n"
"      --connect-timeout SEC  limit for opening all connections (default 60)\n"
"      --hs-timeout SEC  per-connection connect+handshake limit (default 10)\n"
"      --drain SEC       wait for outstanding echoes after the window (default 3)\n"
"      --poke N          idle mode: connections poked with one echo; -1 = all\n"
"                        (default 1000)\n"
"      --settle SEC      idle mode: wait before sampling RSS (default 1)\n"
"  -q, --quiet           no per-second progress on stderr\n"
"  -h, --help            this text\n"
"\n"
"Output: a summary, then one line 'RESULT key=value ...' for scripts. Keys:\n"
"  msgs_per_s mb_per_s (echoed payload MB/s, 10^6 bytes, one direction)\n"
"  p50_us p99_us p999_us max_us, hs_per_s (connrate), srv_cpu_pct\n"
"  srv_ns_per_msg (server user+sys CPU per echoed message or handshake)\n"
"  srv_rss_kb, rss_per_conn_b (idle), cli_cpu_pct, err_* counters, errors.\n"
"Exit status: 0 run completed, 1 fatal error, 2 usage error.\n");
}

static double parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s)
        goto bad;
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end)
        goto bad;
    return v;
bad:
    fprintf(stderr, "wsbench: bad %s '%s'\n", what, s);
    exit(2);
}

static void parse_url(const char *url)
{
    if (strncmp(url, "ws://", 5) != 0) {
        fprintf(stderr, "wsbench: URL must start with ws:// (got '%s')\n", url);
        exit(2);
    }
    const char *h = url + 5, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(O.path, sizeof O.path, "%s", slash ? slash : "/");
    if (hl == 0 || hl >= sizeof O.hosthdr - 1) {
        fprintf(stderr, "wsbench: bad host in '%s'\n", url);
        exit(2);
    }
    memcpy(O.hosthdr, h, hl);
    O.hosthdr[hl] = 0;
    const char *hp = O.hosthdr, *port = NULL;
    if (hp[0] == '[') {
        const char *rb = strchr(hp, ']');
        if (!rb) {
            fprintf(stderr, "wsbench: bad IPv6 host in '%s'\n", url);
            exit(2);
        }
        snprintf(O.host, sizeof O.host, "%.*s", (int)(rb - hp - 1), hp + 1);
        if (rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = strrchr(hp, ':');
        snprintf(O.host, sizeof O.host, "%.*s", (int)(colon ? (size_t)(colon - hp) : strlen(hp)), hp);
        if (colon)
            port = colon + 1;
    }
    snprintf(O.port, sizeof O.port, "%s", port && *port ? port : "80");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int r = getaddrinfo(O.host, O.port, &hints, &ai);
    if (r)
        die("cannot resolve %s:%s: %s", O.host, O.port, gai_strerror(r));
    memcpy(&O.addr, ai->ai_addr, ai->ai_addrlen);
    O.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (O.addr.ss_family == AF_INET && O.nsrc > 0) {
        struct sockaddr_in *a = (struct sockaddr_in *)&O.addr;
        if ((ntohl(a->sin_addr.s_addr) >> 24) == 127) {
            O.spread = 1;
            src_base.sin_family = AF_INET;
            src_base.sin_port = 0;
        }
    }
}

static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if ((long)rl.rlim_cur >= need)
        return;
    if ((long)rl.rlim_max < need) {
        struct rlimit r2 = {(rlim_t)need, (rlim_t)need};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
            return;
    }
    rl.rlim_cur = (long)rl.rlim_max < need ? rl.rlim_max : (rlim_t)need;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < need)
        fprintf(stderr, "wsbench: warning: RLIMIT_NOFILE is %lu, below the %ld needed\n",
                (unsigned long)rl.rlim_cur, need);
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ------------------------------------------------------------------ */
/* main */

struct cpu {
    double user, sys;
};

static struct cpu self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (struct cpu){ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
}

static const char *mode_name(void)
{
    return O.mode == M_ECHO ? "echo" : O.mode == M_CONNRATE ? "connrate" : "idle";
}

static uint64_t last_msgs, last_bytes_total, last_hs;
static uint64_t t0_ns, last_prog_ns;

static void progress(const char *phase)
{
    uint64_t now = now_ns();
    double dt = (now - last_prog_ns) / 1e9;
    last_prog_ns = now;
    uint64_t msgs = total(ST_MSGS), hs = total(ST_HS_OK);
    uint64_t errs = 0;
    for (int s = ST_E_CONNECT; s <= ST_E_TIMEOUT; s++)
        if (s != ST_E_HS503)
            errs += total(s);
    if (!O.quiet) {
        if (O.mode == M_CONNRATE)
            fprintf(stderr, "[%6.1fs] %-8s hs/s=%-9.0f errors=%" PRIu64 "\n", (now - t0_ns) / 1e9, phase,
                    dt > 0 ? (hs - last_hs) / dt : 0, errs);
        else
            fprintf(stderr, "[%6.1fs] %-8s open=%-7" PRIu64 " msgs/s=%-10.0f MB/s=%-8.2f inflight=%-7" PRIu64
                    " errors=%" PRIu64 "\n", (now - t0_ns) / 1e9, phase, total(ST_OPEN),
                    dt > 0 ? (msgs - last_msgs) / dt : 0,
                    dt > 0 ? (double)(msgs - last_msgs) * O.size / dt / 1e6 : 0, total(ST_INFLIGHT), errs);
    }
    last_msgs = msgs;
    last_hs = hs;
    (void)last_bytes_total;
}

/* Sleeps until deadline (absolute ns) or until cond() holds, printing
 * progress each second. Bounded by the deadline. */
static void wait_until(uint64_t deadline, const char *phase, int (*cond)(void))
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline || g_stop || (cond && cond()))
            return;
        if (now - last_prog_ns >= 1000000000u)
            progress(phase);
        uint64_t left = deadline - now, step = 20000000u;
        if (left < step)
            step = left;
        struct timespec ts = {0, (long)step};
        nanosleep(&ts, NULL);
    }
}

static int all_settled(void) { return total(ST_SETTLED) >= (uint64_t)O.conns; }
static int none_inflight(void) { return total(ST_INFLIGHT) == 0; }
static int none_open(void) { return total(ST_OPEN) == 0; }

/* Sets the phase and waits (at most 30 s: poking tens of thousands of
 * connections on a loaded machine takes seconds) until every thread has
 * acted on it, so that a phase is not cut short before it began. */
static void set_phase(int p)
{
    atomic_store(&g_phase, p);
    if (p == P_EXIT)
        return;
    for (int i = 0; i < 30000; i++) {
        int all = 1;
        for (int k = 0; k < O.threads; k++)
            all &= atomic_load(&thr[k].ack) == p;
        if (all)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Idle mode: one complete exchange before the baseline, so that code and
 * library pages the server touches once (handshake hashing, first frame)
 * are not counted as per-connection memory. Blocking, best effort. */
static void warm_up_server(void)
{
    static const char frame[] = { (char)0x82, (char)0x84, 1, 2, 3, 4, 'w' ^ 1, 'a' ^ 2, 'r' ^ 3, 'm' ^ 4 };
    char req[1600], buf[4096];
    int fd = socket(O.addr.ss_family, SOCK_STREAM, 0);
    struct timeval tv = { 2, 0 };
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     O.path, O.hosthdr);
    if (connect(fd, (struct sockaddr *)&O.addr, O.addrlen) == 0 && write(fd, req, (size_t)n) == n &&
        read(fd, buf, sizeof buf) > 0 && write(fd, frame, sizeof frame) == (ssize_t)sizeof frame)
        (void)!read(fd, buf, sizeof buf);
    close(fd);
    usleep(200000);
}

int main(int argc, char **argv)
{
    enum { OPT_SOURCES = 1000, OPT_MAXPEND, OPT_CTO, OPT_HSTO, OPT_DRAIN, OPT_POKE, OPT_SETTLE };
    static const struct option lo[] = {
        {"conns", 1, 0, 'c'}, {"size", 1, 0, 's'}, {"inflight", 1, 0, 'p'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"text", 0, 0, 't'},
        {"threads", 1, 0, 'j'}, {"mode", 1, 0, 'm'}, {"server-pid", 1, 0, 'P'},
        {"sources", 1, 0, OPT_SOURCES}, {"max-pending", 1, 0, OPT_MAXPEND},
        {"connect-timeout", 1, 0, OPT_CTO}, {"hs-timeout", 1, 0, OPT_HSTO},
        {"drain", 1, 0, OPT_DRAIN}, {"poke", 1, 0, OPT_POKE}, {"settle", 1, 0, OPT_SETTLE},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:s:p:d:w:tj:m:P:qh", lo, NULL)) != -1) {
        switch (o) {
        case 'c': O.conns = (int)parse_num(optarg, "connection count"); break;
        case 's': O.size = (size_t)parse_num(optarg, "size"); break;
        case 'p': O.inflight = (int)parse_num(optarg, "in-flight count"); break;
        case 'd': O.duration = parse_num(optarg, "duration"); break;
        case 'w': O.warmup = parse_num(optarg, "warm-up"); break;
        case 't': O.text = 1; break;
        case 'j': O.threads = (int)parse_num(optarg, "thread count"); break;
        case 'm':
            if (!strcmp(optarg, "echo")) O.mode = M_ECHO;
            else if (!strcmp(optarg, "connrate")) O.mode = M_CONNRATE;
            else if (!strcmp(optarg, "idle")) O.mode = M_IDLE;
            else { fprintf(stderr, "wsbench: unknown mode '%s'\n", optarg); return 2; }
            break;
        case 'P': O.server_pid = (pid_t)parse_num(optarg, "pid"); break;
        case OPT_SOURCES: O.nsrc = (int)parse_num(optarg, "source count"); break;
        case OPT_MAXPEND: O.max_pending = (int)parse_num(optarg, "max-pending"); break;
        case OPT_CTO: O.connect_timeout = parse_num(optarg, "connect timeout"); break;
        case OPT_HSTO: O.hs_timeout = parse_num(optarg, "handshake timeout"); break;
        case OPT_DRAIN: O.drain_timeout = parse_num(optarg, "drain time"); break;
        case OPT_POKE: O.poke = (long)parse_num(optarg, "poke count"); break;
        case OPT_SETTLE: O.settle = parse_num(optarg, "settle time"); break;
        case 'q': O.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (O.conns < 1 || O.conns > MAX_CONNS || O.size < 1 || O.size > MAX_SIZE ||
        O.inflight < 1 || O.inflight > MAX_INFLIGHT || O.threads < 1 || O.threads > MAX_THREADS ||
        O.threads > O.conns || O.duration <= 0 || O.duration > 86400 || O.warmup < 0 ||
        O.warmup > 3600 || O.nsrc < 0 || O.nsrc > 250 * 250 || O.max_pending < 1 ||
        O.connect_timeout <= 0 || O.hs_timeout <= 0 || O.drain_timeout < 0 || O.settle < 0) {
        fprintf(stderr, "wsbench: option out of range (see -h)\n");
        return 2;
    }
    parse_url(argv[optind]);
    raise_nofile((long)O.conns + 64);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    uint64_t seed = random_seed();
    size_t patlen = O.size + 256;
    for (int i = 0; i < O.threads; i++) {
        struct thr *t = &thr[i];
        t->id = i;
        atomic_store(&t->ack, -1);
        t->rng = seed + (uint64_t)i * 0x1234567ull;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        if (t->ep < 0)
            die("epoll_create1: %s", strerror(errno));
        t->nconns = O.conns / O.threads + (i < O.conns % O.threads);
        t->conns = calloc((size_t)t->nconns, sizeof *t->conns);
        t->rbuf = malloc(RBUF_SIZE);
        t->pat = malloc(patlen);
        if (!t->conns || !t->rbuf || !t->pat)
            die("out of memory");
        uint64_t ps = seed ^ 0xabcdef;
        for (size_t k = 0; k < patlen; k++) {
            uint64_t r = rng_next(&ps);
            t->pat[k] = O.text ? (uint8_t)(' ' + r % 95) : (uint8_t)r;
        }
        for (int k = 0; k < t->nconns; k++) {
            struct conn *c = &t->conns[k];
            c->fd = -1;
            c->t = t;
            c->id = (uint32_t)(k * O.threads + i);
            c->ts = malloc(sizeof *c->ts * (size_t)O.inflight);
            if (!c->ts)
                die("out of memory");
        }
    }

    struct procsnap base, s0, s1;
    if (O.mode == M_IDLE && O.server_pid > 0)
        warm_up_server();
    int have_srv = O.server_pid > 0 && proc_snapshot(O.server_pid, &base) == 0;
    if (O.server_pid > 0 && !have_srv)
        die("server pid %d not found in /proc", (int)O.server_pid);
    long tcpmem0 = tcp_mem_pages();

    t0_ns = last_prog_ns = now_ns();
    atomic_store(&g_phase, O.mode == M_CONNRATE ? P_RUN : P_CONNECT);
    for (int i = 0; i < O.threads; i++)
        if (pthread_create(&thr[i].tid, NULL, thread_main, &thr[i]))
            die("pthread_create failed");

    uint64_t connected = 0;
    double conn_secs = 0;
    if (O.mode != M_CONNRATE) {
        wait_until(now_ns() + (uint64_t)(O.connect_timeout * 1e9), "connect", all_settled);
        conn_secs = (now_ns() - t0_ns) / 1e9;
        connected = total(ST_OPEN);
        if (!O.quiet)
            fprintf(stderr, "wsbench: %" PRIu64 "/%d connections open after %.2f s\n", connected, O.conns,
                    conn_secs);
    }

    struct cpu c0 = {0, 0}, c1 = {0, 0};
    static struct cpustat k0, k1;
    uint64_t win_ns = (uint64_t)(O.duration * 1e9);
    double rss_per_conn = 0, tcp_per_conn = 0, anon_per_conn = 0;
    uint64_t idle_open = 0;
    if (O.mode == M_IDLE) {
        wait_until(now_ns() + (uint64_t)(O.settle * 1e9), "settle", NULL);
        if (have_srv)
            proc_snapshot(O.server_pid, &s0);
        c0 = self_cpu();
        cpu_snapshot(&k0);
        idle_open = total(ST_OPEN);
        long tcpmem1 = tcp_mem_pages();
        if (idle_open > 0 && have_srv)
            rss_per_conn = ((double)s0.rss_kb - (double)base.rss_kb) * 1024.0 / (double)idle_open;
        if (idle_open > 0 && have_srv)
            anon_per_conn = ((double)s0.anon_kb - (double)base.anon_kb) * 1024.0 / (double)idle_open;
        if (idle_open > 0 && tcpmem0 >= 0 && tcpmem1 >= 0)
            tcp_per_conn = (double)(tcpmem1 - tcpmem0) * (double)sysconf(_SC_PAGESIZE) / (double)idle_open;
        uint64_t t = now_ns();
        atomic_store(&g_win_start, t);
        atomic_store(&g_win_end, t + win_ns);
        wait_until(t + win_ns, "idle", NULL);
        if (have_srv)
            proc_snapshot(O.server_pid, &s1);
        c1 = self_cpu();
        cpu_snapshot(&k1);
        set_phase(P_POKE);
        /* Poking tens of thousands at once takes a while on a shared machine. */
        double poke_wait = O.conns / 2000.0 > 5 ? O.conns / 2000.0 : 5;
        wait_until(now_ns() + (uint64_t)(poke_wait * 1e9), "poke", none_inflight);
    } else {
        set_phase(P_RUN);
        wait_until(now_ns() + (uint64_t)(O.warmup * 1e9), "warmup", NULL);
        if (have_srv)
            proc_snapshot(O.server_pid, &s0);
        c0 = self_cpu();
        cpu_snapshot(&k0);
        uint64_t t = now_ns();
        atomic_store(&g_win_end, t + win_ns);
        atomic_store(&g_win_start, t);
        wait_until(t + win_ns, "run", NULL);
        if (have_srv)
            proc_snapshot(O.server_pid, &s1);
        c1 = self_cpu();
        cpu_snapshot(&k1);
        if (O.mode == M_CONNRATE) {
            set_phase(P_EXIT);
        } else {
            set_phase(P_DRAIN);
            wait_until(now_ns() + (uint64_t)(O.drain_timeout * 1e9), "drain", none_inflight);
        }
    }
    uint64_t timeouts = total(ST_INFLIGHT);
    if (timeouts)
        fprintf(stderr, "wsbench: %" PRIu64 " messages not echoed %s\n", timeouts,
                O.mode == M_IDLE ? "within 5 s of the poke" : "by the end of the drain time");
    if (O.mode != M_CONNRATE) {
        set_phase(P_CLOSE);
        wait_until(now_ns() + 3000000000u, "close", none_open);
    }
    set_phase(P_EXIT);
    for (int i = 0; i < O.threads; i++)
        pthread_join(thr[i].tid, NULL);

    /* ---- results ---- */
    uint64_t S[ST_N] = {0};
    static uint64_t H[HBUCKETS];
    uint64_t hn = 0;
    for (int i = 0; i < O.threads; i++) {
        for (int s = 0; s < ST_N; s++)
            S[s] += thr[i].st[s];
        for (unsigned b = 0; b < HBUCKETS; b++)
            H[b] += thr[i].hist[b];
        hn += thr[i].hist_n;
    }
    S[ST_E_TIMEOUT] += timeouts;
    uint64_t errors = 0;
    for (int s = ST_E_CONNECT; s <= ST_E_TIMEOUT; s++)
        if (s != ST_E_HS503)
            errors += S[s];
    double secs = O.duration;
    double cli_cpu = (c1.user + c1.sys) - (c0.user + c0.sys);
    double tick = (double)sysconf(_SC_CLK_TCK);
    double srv_cpu = have_srv ? ((double)(s1.utime + s1.stime) - (double)(s0.utime + s0.stime)) / tick : 0;
    double srv_wall = have_srv ? (s1.t_ns - s0.t_ns) / 1e9 : 0;
    double cli_wall = secs;
    uint64_t units = O.mode == M_CONNRATE ? S[ST_HS_WIN] : S[ST_MSGS_WIN];
    double p50 = hist_pct(H, hn, 50) / 1e3, p99 = hist_pct(H, hn, 99) / 1e3,
           p999 = hist_pct(H, hn, 99.9) / 1e3, pmax = hist_pct(H, hn, 100) / 1e3;

    printf("wsbench %s ws://%s%s  conns=%d size=%zu inflight=%d %s threads=%d duration=%.1fs warmup=%.1fs\n",
           mode_name(), O.hosthdr, O.path, O.conns, O.size, O.inflight, O.text ? "text" : "binary",
           O.threads, O.duration, O.warmup);
    if (O.mode != M_CONNRATE)
        printf("  connections: %" PRIu64 "/%d open after %.2f s\n", connected, O.conns, conn_secs);
    if (O.mode == M_ECHO)
        printf("  echoed:      %" PRIu64 " msgs in window: %.0f msgs/s, %.2f MB/s payload each way\n",
               S[ST_MSGS_WIN], S[ST_MSGS_WIN] / secs, S[ST_BYTES_WIN] / secs / 1e6);
    if (O.mode == M_CONNRATE)
        printf("  handshakes:  %" PRIu64 " in window: %.0f/s (%" PRIu64 " total)\n", S[ST_HS_WIN],
               S[ST_HS_WIN] / secs, S[ST_HS_OK]);
    if (O.mode != M_IDLE)
        printf("  latency:     p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us  (%" PRIu64 " samples)\n",
               p50, p99, p999, pmax, hn);
    if (O.mode == M_IDLE) {
        printf("  idle:        %" PRIu64 " connections held %.1f s; server RSS %" PRIu64 " kB -> %" PRIu64
               " kB: %.0f B/conn (user space); kernel TCP mem %+.0f B/conn (both ends)\n",
               idle_open, secs, base.rss_kb, s0.rss_kb, rss_per_conn, tcp_per_conn);
        printf("  poke:        %" PRIu64 "/%" PRIu64 " sampled connections echoed\n", S[ST_POKE_OK], S[ST_POKE_SENT]);
    }
    if (have_srv)
        printf("  server:      %d procs, CPU %.2f s user+sys in %.2f s (%.0f%%), %.0f ns per %s, RSS %" PRIu64
               " kB\n", s1.nprocs, srv_cpu, srv_wall, srv_wall > 0 ? 100 * srv_cpu / srv_wall : 0,
               units ? srv_cpu * 1e9 / units : 0, O.mode == M_CONNRATE ? "handshake" : "message", s1.rss_kb);
    printf("  client:      CPU %.2f s in %.2f s (%.0f%%)\n", cli_cpu, cli_wall, 100 * cli_cpu / cli_wall);
    printf("  cpus:       ");
    for (int i = 0; i < k1.n; i++) {
        double all = (double)(k1.all[i] - k0.all[i]);
        if (all <= 0)
            continue;
        printf(" cpu%d %.0f%% busy (softirq %.0f%%, steal %.0f%%)", i, 100 * (k1.busy[i] - k0.busy[i]) / all,
               100 * (k1.sirq[i] - k0.sirq[i]) / all, 100 * (k1.steal[i] - k0.steal[i]) / all);
    }
    printf("\n");
    printf("  errors:      %" PRIu64 " (connect %" PRIu64 ", handshake %" PRIu64 " [503: %" PRIu64
           "], mismatch %" PRIu64 ", reset %" PRIu64 ", eof %" PRIu64 ", close %" PRIu64 ", proto %" PRIu64
           ", timeout %" PRIu64 ")\n", errors, S[ST_E_CONNECT], S[ST_E_HS], S[ST_E_HS503], S[ST_E_MISMATCH],
           S[ST_E_RESET], S[ST_E_EOF], S[ST_E_CLOSE], S[ST_E_PROTO], S[ST_E_TIMEOUT]);
    if (O.mode != M_CONNRATE)
        printf("  close:       %" PRIu64 " closed with a close reply, %" PRIu64 " without\n", S[ST_CLOSE_OK],
               S[ST_CLOSE_NOREPLY]);

    printf("RESULT mode=%s conns=%d size=%zu inflight=%d threads=%d duration=%.2f connected=%" PRIu64
           " msgs=%" PRIu64 " msgs_per_s=%.1f mb_per_s=%.3f hs=%" PRIu64 " hs_per_s=%.1f"
           " p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
           mode_name(), O.conns, O.size, O.inflight, O.threads, secs, O.mode == M_CONNRATE ? 0 : connected,
           S[ST_MSGS_WIN], S[ST_MSGS_WIN] / secs, S[ST_BYTES_WIN] / secs / 1e6, S[ST_HS_WIN],
           S[ST_HS_WIN] / secs, p50, p99, p999, pmax);
    if (have_srv)
        printf(" srv_procs=%d srv_cpu_s=%.3f srv_cpu_pct=%.1f srv_ns_per_msg=%.1f srv_rss_kb=%" PRIu64
               " srv_rss_base_kb=%" PRIu64, s1.nprocs, srv_cpu, srv_wall > 0 ? 100 * srv_cpu / srv_wall : 0,
               units ? srv_cpu * 1e9 / units : 0, s1.rss_kb, base.rss_kb);
    if (O.mode == M_IDLE)
        printf(" idle_open=%" PRIu64 " rss_per_conn_b=%.1f anon_per_conn_b=%.1f tcpmem_per_conn_b=%.1f"
               " poke_sent=%" PRIu64 " poke_ok=%" PRIu64, idle_open, rss_per_conn, anon_per_conn,
               tcp_per_conn, S[ST_POKE_SENT], S[ST_POKE_OK]);
    printf(" cli_cpu_pct=%.1f", 100 * cli_cpu / cli_wall);
    for (int i = 0; i < k1.n; i++) {
        double all = (double)(k1.all[i] - k0.all[i]);
        if (all > 0)
            printf(" cpu%d_busy_pct=%.1f cpu%d_sirq_pct=%.1f cpu%d_steal_pct=%.1f", i,
                   100 * (k1.busy[i] - k0.busy[i]) / all, i, 100 * (k1.sirq[i] - k0.sirq[i]) / all, i,
                   100 * (k1.steal[i] - k0.steal[i]) / all);
    }
    for (int s = ST_E_CONNECT; s <= ST_E_TIMEOUT; s++)
        printf(" %s=%" PRIu64, stat_names[s], S[s]);
    printf(" close_ok=%" PRIu64 " close_noreply=%" PRIu64 " errors=%" PRIu64 "\n", S[ST_CLOSE_OK],
           S[ST_CLOSE_NOREPLY], errors);
    fflush(stdout);
    for (int i = 0; i < O.threads; i++) {
        close(thr[i].ep);
        free(thr[i].conns);
        free(thr[i].rbuf);
        free(thr[i].pat);
    }
    return 0;
}
