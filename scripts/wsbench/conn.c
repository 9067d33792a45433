#define _GNU_SOURCE
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handshake.h"
#include "inbound.h"
#include "options.h"
#include "payload.h"
#include "run.h"
#include "stats.h"
#include "tls.h"
#include "util.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define OUT_CAP_MAX (1u << 20) /* largest batch built per connection */
#define READS_PER_EVENT 64     /* bound on read() calls per event */
/* TLS reads return one record (<= 16 kB): the same bytes per event. */
#define TLS_READS_PER_EVENT (READS_PER_EVENT * (RBUF_SIZE / 16384))

/* --tls-resume: the thread's next connections offer this one's session. */
static void take_session(struct conn *c)
{
    struct ssl_session_st *s = tls_take_session(c->ssl);
    if (!s)
        return;
    tls_session_free(c->t->sess);
    c->t->sess = s;
    c->sess_taken = 1;
}

/* polite: a close_notify, and the session taken if not yet (a TLS 1.3
 * ticket may arrive after the last read). */
static void tls_close(struct conn *c, int polite)
{
    if (polite && O.tls_resume && !c->sess_taken)
        take_session(c);
    tls_free(c->ssl, polite);
    c->ssl = NULL;
}

void conn_kill(struct conn *c)
{
    if (c->ssl)
        tls_close(c, 0);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state == C_OPEN || c->state == C_CLOSING)
        c->t->st[ST_OPEN]--;
    if (c->state == C_CONNECTING || c->state == C_TLS || c->state == C_HANDSHAKE)
        c->t->pending--;
    c->t->st[ST_INFLIGHT] -= c->inflight;
    c->inflight = 0;
    c->state = C_DEAD;
    free(c->hs);
    c->hs = NULL;
}

/* A TLS error has OpenSSL's reason rather than an errno. */
static const char *err_str(const struct conn *c, int err)
{
    return c->ssl && err == EPROTO ? tls_why() : strerror(err);
}

static void io_error(struct conn *c, int err, const char *what)
{
    c->t->st[ST_E_RESET]++;
    /* A reset is the usual way a server gives up on a client; what the
     * connection was doing then is the interesting part. */
    if (err == ECONNRESET || err == EPIPE)
        elog(ST_E_RESET, "conn %u: %s: %s (state %d, inflight %u)", c->id, what,
             err_str(c, err), c->state, c->inflight);
    else
        elog(ST_E_RESET, "conn %u: %s: %s", c->id, what, err_str(c, err));
    conn_kill(c);
}

/* Allocated on first use: in idle mode most connections never send. */
static void ensure_out(struct conn *c)
{
    if (c->out)
        return;
    size_t fs = payload_frame_len();
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
}

/* Writes pending output; returns 1 if all flushed, 0 if blocked, -1 dead.
 * A partial TLS write is one record, not a full socket: go on until EAGAIN. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = c->ssl ? tls_write(c->ssl, c->out + c->out_off, c->out_len - c->out_off)
                           : write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            io_error(c, errno, "write");
            return -1;
        }
        c->out_off += (uint32_t)n;
        if (c->out_off < c->out_len && !c->ssl)
            return 0; /* short write: wait for EPOLLOUT */
    }
    c->out_off = c->out_len = 0;
    return 1;
}

int send_ctrl(struct conn *c, int op, const uint8_t *pl, size_t n)
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
    size_t h = put_frame_hdr(d, op, n, &c->t->rng, mk);
    memcpy(d + h, pl, n);
    mask_xor(d + h, n, mk);
    c->out_len += (uint32_t)(h + n);
    return flush_out(c);
}

/* One write() per batch: a syscall per message would measure the client. */
void fill_and_send(struct conn *c, uint64_t max, uint64_t now)
{
    if (c->state != C_OPEN)
        return;
    ensure_out(c);
    if (c->out_len > c->out_off && flush_out(c) <= 0)
        return;
    size_t fs = payload_frame_len();
    uint32_t len = 0;
    uint64_t n = 0;
    while (c->inflight < (uint32_t)O.inflight && n < max && len + fs <= c->out_cap) {
        len += (uint32_t)payload_build(c->out + len, c->id, c->send_seq, c->t->pat, &c->t->rng);
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

/* Carries out inbound's verdicts. A ping stops the parse so that its pong
 * goes out before anything later in the same read is acted on. Returns -1
 * if the connection died. */
static int take_frames(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    for (;;) {
        size_t used;
        enum ws_verdict v = ws_consume(c, p, n, now, &used);
        if (v == WS_OK)
            return 0;
        if (v == WS_KILL) {
            conn_kill(c);
            return -1;
        }
        if (send_ctrl(c, 10, c->ctrl, c->ctrl_len) < 0)
            return -1;
        p += used;
        n -= used;
    }
}

void hs_fail(struct conn *c, const char *why, int status)
{
    struct thr *t = c->t;
    t->st[ST_E_HS]++;
    if (c->state == C_TLS)
        t->st[ST_TLS_FAIL]++;
    if (status == 503)
        t->st[ST_E_HS503]++;
    elog(ST_E_HS, "conn %u: handshake failed: %s", c->id, why);
    conn_kill(c);
    t->st[ST_SETTLED]++;
}

/* connrate: the handshake is the unit measured, so the connection is
 * closed right away (politely: close frame first) and the slot reused. */
static void connrate_recycle(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    if (in_window(now)) {
        t->st[ST_HS_WIN]++;
        uint64_t lat = now - c->t_start;
        t->hist[hist_index(lat)]++;
        t->hist_n++;
    }
    uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
    send_ctrl(c, 8, code, 2);
    if (c->state != C_DEAD) {
        t->st[ST_OPEN]--;
        if (c->ssl)
            tls_close(c, 1);
        close(c->fd);
        c->fd = -1;
        c->state = C_IDLE;
        c->out_len = c->out_off = 0;
    }
    if (atomic_load(&g_phase) == P_RUN)
        conn_start(c, now);
}

static void on_open(struct conn *c, uint64_t now)
{
    if (O.mode == M_ECHO && atomic_load_explicit(&g_phase, memory_order_relaxed) == P_RUN)
        fill_and_send(c, UINT64_MAX, now);
    if (O.mode == M_IDLE && O.greet)
        fill_and_send(c, 1, now);
}

/* Returns -1 if the connection went away (or was recycled). */
static int hs_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    size_t extra_off = 0;
    int r = hs_feed(c->hs, p, n, &extra_off);
    if (r < 0) {
        hs_fail(c, "response headers too large", 0);
        return -1;
    }
    if (r == 0)
        return 0;
    char why[128];
    int status = 0;
    if (hs_check(c->hs, why, sizeof why, &status) < 0) {
        hs_fail(c, why, status);
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
        connrate_recycle(c, now);
        return -1;
    }
    if (extra_off < n && take_frames(c, p + extra_off, n - extra_off, now) < 0)
        return -1;
    on_open(c, now);
    return c->state == C_DEAD ? -1 : 0;
}

static void send_handshake(struct conn *c)
{
    char key[32];
    c->hs = malloc(sizeof *c->hs);
    if (!c->hs)
        die("out of memory");
    c->hs->len = 0;
    hs_new_key(&c->t->rng, key, c->hs->accept);
    char req[1600];
    int n = hs_request(req, sizeof req, key);
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

static void connect_failed(struct conn *c, const char *what, int err)
{
    c->t->st[ST_E_CONNECT]++;
    c->t->st[ST_SETTLED]++;
    elog(ST_E_CONNECT, "conn %u: %s: %s", c->id, what, strerror(err));
}

/* IP_BIND_ADDRESS_NO_PORT: the port is picked at connect() time, per
 * (source, destination), instead of one port per source at bind(). */
static int bind_source(struct conn *c, int fd)
{
    int one = 1;
    uint32_t k = c->id % (uint32_t)O.nsrc;
    struct sockaddr_in s = {.sin_family = AF_INET};
    /* 127.0.(1+k/250).(1+k%250) */
    s.sin_addr.s_addr = htonl(0x7F000000u | ((1 + k / 250) << 8) | (1 + k % 250));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    return bind(fd, (struct sockaddr *)&s, sizeof s);
}

int conn_start(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    int fd = socket(O.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(c, "socket", errno);
        c->state = C_DEAD;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.spread && bind_source(c, fd) < 0) {
        connect_failed(c, "bind", errno);
        close(fd);
        c->state = C_DEAD;
        return -1;
    }
    c->fd = fd;
    c->t_start = now;
    c->state = C_CONNECTING;
    c->in_payload = c->fh_have = c->msg_op = c->ctrl_len = c->sess_taken = 0;
    c->fh_need = 2;
    c->out_len = c->out_off = 0;
    t->pending++;
    if (connect(fd, (struct sockaddr *)&O.addr, O.addrlen) < 0 && errno != EINPROGRESS) {
        connect_failed(c, "connect", errno);
        conn_kill(c);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    return 0;
}

static void on_eof(struct conn *c)
{
    struct thr *t = c->t;
    if (c->state == C_HANDSHAKE || c->state == C_TLS) {
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
}

static void on_read_error(struct conn *c, int err)
{
    if (c->state == C_HANDSHAKE || c->state == C_TLS) {
        char why[224];
        snprintf(why, sizeof why, "read: %s", err_str(c, err));
        hs_fail(c, why, 0);
    } else {
        io_error(c, err, "read");
    }
}

/* Bounded so that one fast connection cannot starve the others of its
 * thread; edge-triggered epoll would not report the rest again, hence the
 * loop until a short read (TLS: until EAGAIN, a read being one record).
 * A TLS 1.3 ticket comes before the first data, so that is when the
 * session is worth taking. */
static void on_readable(struct conn *c)
{
    struct thr *t = c->t;
    int max = c->ssl ? TLS_READS_PER_EVENT : READS_PER_EVENT;
    for (int i = 0; i < max && c->state != C_DEAD && c->state != C_IDLE; i++) {
        ssize_t n = c->ssl ? tls_read(c->ssl, t->rbuf, RBUF_SIZE) : read(c->fd, t->rbuf, RBUF_SIZE);
        if (n > 0) {
            uint64_t now = now_ns();
            if (c->ssl && O.tls_resume && !c->sess_taken)
                take_session(c);
            int r = c->state == C_HANDSHAKE ? hs_consume(c, t->rbuf, (size_t)n, now)
                                            : take_frames(c, t->rbuf, (size_t)n, now);
            if (r < 0)
                return;
            if ((size_t)n < RBUF_SIZE && !c->ssl)
                return; /* drained; edge-triggered epoll reports new data */
            continue;
        }
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR)
            continue;
        on_read_error(c, errno);
        return;
    }
}

/* Returns 1 if the event should be processed further. */
static int on_connect_event(struct conn *c, uint32_t ev)
{
    if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        return 0;
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err || (ev & (EPOLLERR | EPOLLHUP))) {
        connect_failed(c, "connect", err ? err : ECONNREFUSED);
        conn_kill(c);
        return 0;
    }
    if (O.tls) {
        c->ssl = tls_new(c->fd, O.tls_resume ? c->t->sess : NULL);
        c->state = C_TLS;
        return 1; /* the ClientHello goes out at once */
    }
    send_handshake(c);
    /* Edge-triggered: a response already in this event (a server may
     * answer at once, e.g. with an error) is not reported again. */
    return (ev & (EPOLLIN | EPOLLRDHUP)) && c->state == C_HANDSHAKE;
}

/* One TLS handshake step; on success the HTTP upgrade request goes out.
 * Returns 1 when done, 0 when it needs another event, -1 if c died. */
static int tls_step(struct conn *c)
{
    int r = tls_handshake(c->ssl);
    if (r == 0)
        return 0;
    if (r < 0) {
        char why[224];
        snprintf(why, sizeof why, "TLS: %s", tls_why());
        hs_fail(c, why, 0);
        return -1;
    }
    struct thr *t = c->t;
    int v = tls_version(c->ssl);
    if (v == 13 || v == 12)
        t->st[v == 13 ? ST_TLS13 : ST_TLS12]++;
    if (tls_resumed(c->ssl))
        t->st[ST_TLS_RESUMED]++;
    send_handshake(c);
    return c->state == C_HANDSHAKE ? 1 : -1;
}

void conn_on_event(struct conn *c, uint32_t ev)
{
    if (c->state == C_CONNECTING && !on_connect_event(c, ev))
        return;
    /* Records may already wait in OpenSSL's buffer: read after the step. */
    if (c->state == C_TLS) {
        if (tls_step(c) <= 0)
            return;
        ev |= EPOLLIN;
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
