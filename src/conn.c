#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "frame.h"
#include "handoff.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "pool.h"
#include "ws.h"

#define EV_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)
/* First size of the request buffer. */
#define HTTP_IN_START 1024
/* A lingering peer may send this much before we stop being polite. */
#define LINGER_MAX_BYTES (1u << 20)
/* How soon a handoff that found every inbox full tries again. */
#define HANDOFF_RETRY_MS 5

enum conn_state { CONN_HTTP, CONN_WS, CONN_LINGER, CONN_DEAD };

/* Kept small: an idle WebSocket costs this plus its struct ws_conn. */
struct conn {
    struct ev_io io;
    struct list link;       /* env->all while alive, env->dead_q after */
    struct ev_timer timer;  /* in env->queues[queue] */
    struct list rlink;      /* ready_q */
    char *out;              /* response bytes the socket did not take yet */
    uint32_t out_len, out_pos;
    union {
        struct {            /* CONN_HTTP */
            char *in;       /* request bytes */
            struct http_req *req;
            uint32_t in_len, in_cap;
        };
        struct ws_conn *ws; /* CONN_WS */
        uint32_t lingered;  /* CONN_LINGER: bytes discarded */
    };
    uint16_t reject;
    uint8_t queue;          /* enum conn_queue */
    uint8_t state;          /* enum conn_state */
    uint8_t shut_wr;
};

/* The one environment of this worker process. */
static struct conn_env *env;
static struct pool conn_pool = POOL_INIT(struct conn);

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events);
static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t);
static void on_handoff_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t);

void conn_env_init(struct conn_env *e, const struct config *cf, struct ev_loop *loop)
{
    env = e;
    memset(env, 0, sizeof(*env));
    env->cf = cf;
    env->loop = loop;
    http_set_max_header_size(cf->max_header_size);
    list_init(&env->all);
    for (int q = CONN_Q_HANDSHAKE; q < CONN_Q_COUNT; q++)
        ev_queue_init(loop, &env->queues[q], on_timer);
    ev_queue_init(loop, &env->handoff_q, on_handoff_timer);
    ev_timer_init(&env->handoff_t);
    list_init(&env->ready_q);
    list_init(&env->dead_q);
}

/* Each queue is used with one timeout (the config's for its kind), so the
 * loop's FIFO timer queues apply. */
static void timer_set(struct conn *c, enum conn_queue q, uint64_t timeout_ms)
{
    c->queue = q;
    ev_timer_start(env->loop, &env->queues[q], &c->timer, timeout_ms);
}

static void timer_clear(struct conn *c)
{
    ev_timer_stop(&c->timer);
    c->queue = CONN_Q_NONE;
}

/* An open WebSocket was heard from: restart its keepalive clock. */
static void keepalive_reset(struct conn *c)
{
    const struct config *cf = env->cf;
    if (cf->ping_interval_ms)
        timer_set(c, CONN_Q_PING, cf->ping_interval_ms);
    else if (cf->idle_timeout_ms)
        timer_set(c, CONN_Q_IDLE, cf->idle_timeout_ms);
    else
        timer_clear(c);
}

static const char *peer_name(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        const void *a = ss.ss_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
            : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
        inet_ntop(ss.ss_family, a, host, sizeof(host));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
    return buf;
}

static void http_end(struct conn *c)
{
    if (c->req != NULL)
        mem_sub(sizeof(*c->req) + MEM_BLOCK_OVERHEAD);
    if (c->in != NULL)
        mem_sub(c->in_cap + MEM_BLOCK_OVERHEAD);
    free(c->req);
    free(c->in);
    c->req = NULL;
    c->in = NULL;
}

static void out_free(struct conn *c)
{
    if (c->out != NULL)
        mem_sub(c->out_len + MEM_BLOCK_OVERHEAD);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = 0;
}

/* A connection registered with the loop and in env's list, in the HTTP
 * phase with nothing allocated yet. NULL on failure; fd stays the caller's. */
static struct conn *conn_new(struct conn_env *e, int fd)
{
    struct conn *c = pool_alloc(&conn_pool);
    if (c == NULL)
        return NULL;
    c->io.fd = fd;
    c->io.cb = on_event;
    ev_timer_init(&c->timer);
    list_init(&c->rlink);
    if (ev_add(e->loop, &c->io, EV_BASE) < 0) {
        pool_free(&conn_pool, c);
        return NULL;
    }
    list_append(&e->all, &c->link);
    e->nconns++;
    return c;
}

/* Out of every list and timer; freed after this iteration (conn_reap). */
static void conn_unlink(struct conn *c)
{
    c->state = CONN_DEAD;
    timer_clear(c);
    list_remove(&c->rlink);
    list_remove(&c->link);
    list_append(&env->dead_q, &c->link);
    env->nconns--;
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    if (c->state == CONN_HTTP)
        http_end(c);
    else if (c->state == CONN_WS && c->ws != NULL)
        ws_free(c->ws);
    close(c->io.fd);
    out_free(c);
    conn_unlink(c);
}

static void want_write(struct conn *c, int on)
{
    if (ev_mod(env->loop, &c->io, EV_BASE | (on ? EPOLLOUT : 0)) < 0)
        conn_close(c);
}

/* 0: everything written; 1: the rest waits for EPOLLOUT; -1: closed. */
static int out_flush(struct conn *c)
{
    while (c->out_pos < c->out_len) {
        ssize_t n = send(c->io.fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (n >= 0) {
            c->out_pos += (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            want_write(c, 1);
            return c->state == CONN_DEAD ? -1 : 1;
        } else if (errno != EINTR) {
            conn_close(c);
            return -1;
        }
    }
    out_free(c);
    return 0;
}

/* Queues a copy of data (the caller keeps its buffer) and starts writing. */
static int out_send(struct conn *c, const char *data, size_t len)
{
    c->out = malloc(len);
    if (c->out == NULL) {
        conn_close(c);
        return -1;
    }
    memcpy(c->out, data, len);
    mem_add(len + MEM_BLOCK_OVERHEAD);
    c->out_len = len;
    c->out_pos = 0;
    return out_flush(c);
}


static void linger_step(struct conn *c)
{
    char sink[4096];
    if (out_flush(c) != 0)
        return;
    if (!c->shut_wr) {
        /* FIN after the response, then read until the peer closes: closing
         * with unread input would send RST and could destroy the response. */
        shutdown(c->io.fd, SHUT_WR);
        c->shut_wr = 1;
        want_write(c, 0);
    }
    for (;;) {
        ssize_t n = read(c->io.fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0 || (c->lingered += (size_t)n) > LINGER_MAX_BYTES)
            break;
    }
    conn_close(c);
}

static void respond(struct conn *c, int status, const char *reason)
{
    char buf[512], peer[64];
    int head = c->state == CONN_HTTP && c->req != NULL && http_req_is_head(c->req);
    size_t n = http_error_response(status, reason, head, buf, sizeof(buf));
    log_info("handshake from %s refused: %d %s", peer_name(c->io.fd, peer, sizeof(peer)),
             status, reason);
    http_end(c);
    c->state = CONN_LINGER;
    timer_set(c, CONN_Q_CLOSING, env->cf->close_timeout_ms);
    if (out_send(c, buf, n) == 0)
        linger_step(c);
}

/* The WebSocket is over: the module hears of it now, the socket lingers
 * until the peer closes (unread input at close() would send RST and could
 * destroy our close frame). */
static void ws_finish(struct conn *c, int broken)
{
    if (broken) {
        conn_close(c);
        return;
    }
    ws_free(c->ws);
    c->ws = NULL;
    c->state = CONN_LINGER;
    if (c->queue != CONN_Q_CLOSING)
        timer_set(c, CONN_Q_CLOSING, env->cf->close_timeout_ms);
    linger_step(c);
}

static void ws_timers(struct conn *c, unsigned f)
{
    const struct config *cf = env->cf;
    if (f & WS_CLOSING) {
        if (c->queue != CONN_Q_CLOSING)
            timer_set(c, CONN_Q_CLOSING, cf->close_timeout_ms);
    } else if (f & WS_STALLED) {
        if (c->queue != CONN_Q_STALL)
            timer_set(c, CONN_Q_STALL, cf->send_timeout_ms);
    } else if ((f & WS_ACTIVE) || c->queue == CONN_Q_STALL || c->queue == CONN_Q_NONE) {
        keepalive_reset(c);
    }
}

static void handoff_one(struct conn *c);

/* Acts on the WS_* flags of a run. */
static void ws_after(struct conn *c, unsigned f)
{
    if (f & WS_DONE) {
        ws_finish(c, f & WS_BROKEN);
        return;
    }
    want_write(c, f & WS_WANT_WRITE);
    if (c->state == CONN_DEAD)
        return;
    if ((f & WS_AGAIN) && !list_linked(&c->rlink))
        list_append(&env->ready_q, &c->rlink);
    ws_timers(c, f);
    if (env->handing_off && !env->handoff_full)
        handoff_one(c);
}

static void ws_step(struct conn *c)
{
    if (out_flush(c) != 0)
        return; /* the 101 response must leave before any frame */
    ws_after(c, ws_run(c->ws));
}

static void upgrade(struct conn *c, const struct http_verdict *v, size_t end)
{
    char buf[1024];
    size_t n = http_upgrade_response(c->req, c->in, v, buf, sizeof(buf));
    size_t rest = c->in_len - end;
    /* Frames pipelined behind the request belong to the WebSocket. */
    memmove(c->in, c->in + end, rest);
    char *pending = c->in;
    mem_sub(c->in_cap + MEM_BLOCK_OVERHEAD); /* ws.c counts what it keeps */
    c->in = NULL;
    http_end(c);
    timer_clear(c);
    c->ws = n ? ws_open(c->io.fd, env->cf, v->route, pending, rest) : NULL;
    if (c->ws == NULL) {
        if (n)
            log_error("out of memory for a WebSocket");
        else
            free(pending);
        conn_close(c);
        return;
    }
    c->state = CONN_WS;
    if (out_send(c, buf, n) == 0)
        ws_step(c);
}

static void http_complete(struct conn *c, size_t end)
{
    struct http_verdict v;
    if (c->reject) {
        respond(c, c->reject, "server is at its connection limit, try again later");
        return;
    }
    http_req_check(c->req, c->in, env->cf, &v);
    if (v.status != 101)
        respond(c, v.status, v.reason);
    else
        upgrade(c, &v, end);
}

static int http_buffers(struct conn *c)
{
    if (c->in != NULL)
        return 0;
    /* Most requests are a few hundred bytes: start small, grow to the limit. */
    c->in_cap = HTTP_IN_START < env->cf->max_header_size + 1
                ? HTTP_IN_START : env->cf->max_header_size + 1;
    c->in = malloc(c->in_cap);
    c->req = malloc(sizeof(*c->req));
    if (c->in != NULL)
        mem_add(c->in_cap + MEM_BLOCK_OVERHEAD);
    if (c->req != NULL)
        mem_add(sizeof(*c->req) + MEM_BLOCK_OVERHEAD);
    if (c->in == NULL || c->req == NULL)
        return -1;
    http_req_init(c->req);
    return 0;
}

/* Room to read into: doubles the buffer up to max_header_size + 1 (one byte
 * over the limit tells "too large" from "exactly full"). */
static int http_room(struct conn *c, size_t cap)
{
    if (c->in_len < c->in_cap)
        return 0;
    size_t grown = c->in_cap * 2 < cap ? c->in_cap * 2 : cap;
    char *in = realloc(c->in, grown);
    if (in == NULL)
        return -1;
    mem_add(grown - c->in_cap);
    c->in = in;
    c->in_cap = grown;
    return 0;
}

static void http_step(struct conn *c)
{
    size_t cap = env->cf->max_header_size + 1, end;
    if (http_buffers(c) < 0) {
        conn_close(c);
        return;
    }
    while (c->in_len < cap) {
        if (http_room(c, cap) < 0) {
            conn_close(c);
            return;
        }
        ssize_t n = read(c->io.fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            conn_close(c); /* the client left before finishing its request */
            return;
        }
        size_t from = c->in_len;
        c->in_len += (size_t)n;
        switch (http_req_feed(c->req, c->in, from, c->in_len, &end)) {
        case HTTP_DONE:
            http_complete(c, end);
            return;
        case HTTP_BAD:
            respond(c, c->req->bad_status, c->req->bad_reason);
            return;
        case HTTP_MORE:
            break;
        }
    }
    respond(c, 431, "request headers too large");
}

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct conn *c = (struct conn *)(void *)io;
    (void)loop;
    if (events & EPOLLERR) {
        conn_close(c);
        return;
    }
    /* HUP and RDHUP are seen as EOF by the read path, after any data; a
     * FIN that came with data must still be read after a short read. */
    if ((events & (EPOLLRDHUP | EPOLLHUP)) && c->state == CONN_WS)
        ws_peer_closed(c->ws);
    switch (c->state) {
    case CONN_HTTP:   http_step(c);   break;
    case CONN_WS:     ws_step(c);     break;
    case CONN_LINGER: linger_step(c); break;
    case CONN_DEAD:   break;
    }
}

int conn_accept(struct conn_env *e, int fd, int reject_status)
{
    struct conn *c = conn_new(e, fd);
    if (c == NULL) {
        close(fd);
        return -1;
    }
    c->reject = (uint16_t)reject_status;
    timer_set(c, CONN_Q_HANDSHAKE, e->cf->handshake_timeout_ms);
    return 0;
}

static void expire(struct conn *c, enum conn_queue q)
{
    const struct config *cf = env->cf;
    switch (q) {
    case CONN_Q_HANDSHAKE:
        respond(c, 408, "handshake not completed in time");
        break;
    case CONN_Q_PING:
        /* Silent for ping_interval: ask. An answer (or anything) resets. */
        if (cf->idle_timeout_ms)
            timer_set(c, CONN_Q_IDLE, cf->idle_timeout_ms - cf->ping_interval_ms);
        else
            timer_set(c, CONN_Q_PING, cf->ping_interval_ms);
        ws_ping(c->ws);
        ws_step(c);
        break;
    case CONN_Q_IDLE:
        ws_close(c->ws, 1001, "idle timeout");
        ws_step(c);
        break;
    case CONN_Q_STALL:
        /* The peer sends but does not read: its close frame may never get
         * through either; close_timeout then drops the connection. */
        ws_close(c->ws, 1008, "not reading");
        ws_step(c);
        break;
    default:
        conn_close(c);
        break;
    }
}

static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    struct conn *c = list_entry(t, struct conn, timer);
    enum conn_queue kind = (enum conn_queue)(q - env->queues);
    (void)loop;
    c->queue = CONN_Q_NONE; /* the loop took it off the queue */
    expire(c, kind);
}

int conn_next_timeout(const struct conn_env *e)
{
    return list_empty(&e->ready_q) ? ev_next_timeout(e->loop) : 0;
}

void conn_run_ready(struct conn_env *e)
{
    struct list batch;
    list_init(&batch);
    /* Take the whole queue first: a connection may yield again. */
    if (!list_empty(&e->ready_q)) {
        batch.next = e->ready_q.next;
        batch.prev = e->ready_q.prev;
        batch.next->prev = batch.prev->next = &batch;
        list_init(&e->ready_q);
    }
    while (!list_empty(&batch)) {
        struct conn *c = list_entry(batch.next, struct conn, rlink);
        list_remove(&c->rlink);
        if (c->state == CONN_WS)
            ws_step(c);
    }
}

static const char *close_reason(uint16_t code)
{
    return code == 1012 ? "server restarting" : "server shutting down";
}

/* Starts the close handshake; 0 if c was not an open WebSocket. */
static int ws_start_close(struct conn *c, uint16_t code)
{
    if (c->state != CONN_WS || c->queue == CONN_Q_CLOSING)
        return 0; /* a handshake, a lingering error, or already closing */
    ws_close(c->ws, code, close_reason(code));
    ws_step(c);
    return 1;
}

void conn_close_all(struct conn_env *e, uint16_t code)
{
    struct list *it = e->all.next;
    while (it != &e->all) {
        struct conn *c = list_entry(it, struct conn, link);
        it = it->next; /* c may move to dead_q below */
        if (c->state == CONN_HTTP)
            conn_close(c);
        else
            ws_start_close(c, code);
    }
}

void conn_close_oldest(struct conn_env *e, uint16_t code, unsigned max)
{
    /* Visited connections go to the tail, so the next call starts with
     * ones not yet told. */
    for (unsigned seen = e->nconns; max > 0 && seen > 0 && !list_empty(&e->all); seen--) {
        struct conn *c = list_entry(e->all.next, struct conn, link);
        list_remove(&c->link);
        list_append(&e->all, &c->link);
        max -= (unsigned)ws_start_close(c, code);
    }
}

void conn_reap(struct conn_env *e)
{
    while (!list_empty(&e->dead_q)) {
        struct list *n = e->dead_q.next;
        list_remove(n);
        pool_free(&conn_pool, list_entry(n, struct conn, link));
    }
}

/* ---- Worker memory ceiling ---------------------------------------------- */

/* Holders looked for per walk over the connections. */
#define SHED_BATCH 16

/* The biggest holders among open WebSockets not already closing, biggest
 * first. A walk over every connection, but only while the worker is over
 * its ceiling, and each walk takes up to SHED_BATCH of them. */
static unsigned heaviest(struct conn_env *e, struct conn **top, unsigned max)
{
    unsigned n = 0;
    for (struct list *it = e->all.next; it != &e->all; it = it->next) {
        struct conn *c = list_entry(it, struct conn, link);
        if (c->state != CONN_WS || c->queue == CONN_Q_CLOSING)
            continue;
        size_t h = ws_held(c->ws);
        if (h == 0 || (n == max && h <= ws_held(top[max - 1]->ws)))
            continue;
        unsigned i = n < max ? n++ : max - 1;
        for (; i > 0 && ws_held(top[i - 1]->ws) < h; i--)
            top[i] = top[i - 1];
        top[i] = c;
    }
    return n;
}

static void shed_one(struct conn *c)
{
    char peer[64];
    size_t held = ws_held(c->ws);
    unsigned f = ws_shed(c->ws);
    log_warn("worker_memory_limit (%zu bytes) reached: %s the connection from %s, "
             "which held %zu bytes", mem_limit(),
             (f & WS_BROKEN) ? "dropping (it does not read its output)" : "closing with 1009",
             peer_name(c->io.fd, peer, sizeof(peer)), held);
    if (f & WS_BROKEN) {
        /* A reset, not a FIN behind output the peer will not read: the
         * kernel frees the socket's buffers too. */
        struct linger lg = { 1, 0 };
        setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    ws_after(c, f);
}

void conn_shed(struct conn_env *e)
{
    struct conn *top[SHED_BATCH];
    while (mem_over()) {
        unsigned n = heaviest(e, top, SHED_BATCH);
        if (n == 0)
            return; /* what is held is in handshakes and closing connections */
        for (unsigned i = 0; i < n && mem_over(); i++)
            shed_one(top[i]);
    }
}

void conn_destroy_all(struct conn_env *e)
{
    while (!list_empty(&e->all))
        conn_close(list_entry(e->all.next, struct conn, link));
    conn_reap(e);
}

/* ---- Reload handoff ---------------------------------------------------- */

/* How long the peer has been silent, read back from its keepalive timer. */
static uint32_t silent_ms(const struct conn *c)
{
    const struct config *cf = env->cf;
    uint64_t now = env->loop->now, span;
    if (c->queue == CONN_Q_PING)
        span = cf->ping_interval_ms;
    else if (c->queue == CONN_Q_IDLE)
        span = cf->idle_timeout_ms;
    else
        return 0;
    uint64_t heard = c->timer.deadline > span ? c->timer.deadline - span : 0;
    return heard < now ? (uint32_t)(now - heard) : 0;
}

/* Like timer_set, for a deadline that may be earlier than others in the
 * queue. Handed-over connections arrive in deadline order, so the walk back
 * from the tail stays short. */
static void timer_set_sorted(struct conn *c, enum conn_queue q, uint64_t timeout_ms)
{
    c->queue = q;
    ev_timer_start_sorted(env->loop, &env->queues[q], &c->timer, timeout_ms);
}

/* The keepalive clocks carry on where the old worker left them, under the
 * new configuration's intervals. */
static void keepalive_since(struct conn *c, uint32_t silent)
{
    const struct config *cf = env->cf;
    if (cf->ping_interval_ms && silent < cf->ping_interval_ms)
        timer_set_sorted(c, CONN_Q_PING, cf->ping_interval_ms - silent);
    else if (cf->idle_timeout_ms)
        timer_set_sorted(c, CONN_Q_IDLE, cf->idle_timeout_ms > silent
                                         ? cf->idle_timeout_ms - silent : 0);
    else
        keepalive_reset(c);
}

/* The connection lives on in another worker: forget it without a word to
 * the peer or the module. */
static void conn_release(struct conn *c)
{
    /* The socket stays open elsewhere: closing our descriptor alone would
     * leave it registered in our epoll set. */
    ev_del(env->loop, &c->io);
    ws_detach(c->ws);
    c->ws = NULL;
    close(c->io.fd);
    conn_unlink(c);
    env->handed++;
}

/* 0: sent; 1: every inbox is full; -1: it cannot go anywhere. */
static int handoff_send_any(const struct handoff_conn *hc)
{
    int full = 0, live = 0;
    for (unsigned tries = 0; tries < env->ntargets; tries++) {
        unsigned i = env->next_target++ % env->ntargets;
        if (env->targets[i] < 0)
            continue;
        live++;
        if (handoff_send(env->targets[i], hc) == 0)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            full = 1;
        } else if (errno != EMSGSIZE) {
            /* That worker is gone; its inbox is of no more use. */
            log_warn("handoff: a new worker's inbox failed: %s", strerror(errno));
            close(env->targets[i]);
            env->targets[i] = -1;
            live--;
        } else {
            return -1;
        }
    }
    if (live == 0 && env->handing_off) {
        log_warn("handoff: no new worker left to take connections; they drain here");
        env->handing_off = 0;
    }
    return full ? 1 : -1;
}

static void handoff_one(struct conn *c)
{
    struct handoff_conn hc;
    if (c->state != CONN_WS || c->out != NULL || c->queue == CONN_Q_CLOSING ||
        ws_export(c->ws, &hc.pending, &hc.pending_len) < 0)
        return; /* not at a clean point: tried again after its next run */
    const struct config_route *r = ws_route(c->ws);
    hc.fd = c->io.fd;
    hc.silent_ms = silent_ms(c);
    hc.path = r->path;
    hc.path_len = strlen(r->path);
    int rc = handoff_send_any(&hc);
    if (rc == 0)
        conn_release(c);
    else if (rc > 0 && !env->handoff_full) {
        env->handoff_full = 1;
        ev_timer_start(env->loop, &env->handoff_q, &env->handoff_t, HANDOFF_RETRY_MS);
    }
}

static void handoff_list(struct list *head, size_t link_offset)
{
    struct list *it = head->next;
    while (it != head && env->handing_off && !env->handoff_full) {
        struct conn *c = (struct conn *)(void *)((char *)it - link_offset);
        it = it->next; /* c may leave this list */
        handoff_one(c);
    }
}

/* Tries again the connections that found every inbox full. */
static void conn_handoff_retry(struct conn_env *e)
{
    e->handoff_full = 0;
    /* Keepalive queues first, in deadline order: the receiver's queues
     * then stay sorted cheaply. Then whatever has no timer. */
    handoff_list(&e->queues[CONN_Q_PING].timers, offsetof(struct conn, timer.link));
    handoff_list(&e->queues[CONN_Q_IDLE].timers, offsetof(struct conn, timer.link));
    handoff_list(&e->all, offsetof(struct conn, link));
}

static void on_handoff_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop;
    (void)q;
    (void)t;
    conn_handoff_retry(env);
}

void conn_handoff_begin(struct conn_env *e, int *targets, unsigned n)
{
    for (unsigned i = 0; i < e->ntargets; i++)
        if (e->targets[i] >= 0)
            close(e->targets[i]);
    free(e->targets);
    e->targets = targets;
    e->ntargets = n;
    e->next_target = 0;
    e->handing_off = n > 0;
    conn_handoff_retry(e);
}

/* The route is gone from the new configuration: close as a reload would. */
static void route_gone(struct conn *c, const struct handoff_conn *hc)
{
    uint8_t frame[FRAME_HEADER_MAX + 125];
    char peer[64];
    size_t n = frame_close_encode(frame, 1012, "route removed by reload");
    log_info("handed-over connection from %s: path %.*s no longer routed, closing with 1012",
             peer_name(c->io.fd, peer, sizeof(peer)), (int)hc->path_len, hc->path);
    c->state = CONN_LINGER;
    timer_set(c, CONN_Q_CLOSING, env->cf->close_timeout_ms);
    if (out_send(c, (const char *)frame, n) == 0)
        linger_step(c);
}

int conn_adopt(struct conn_env *e, const struct handoff_conn *hc)
{
    const struct config_route *r = config_route_find(e->cf, hc->path, hc->path_len);
    char *pending = hc->pending_len ? malloc(hc->pending_len) : NULL;
    struct conn *c = hc->pending_len == 0 || pending != NULL ? conn_new(e, hc->fd) : NULL;
    if (c == NULL) {
        log_error("cannot take over a connection: %s", strerror(errno));
        free(pending);
        close(hc->fd);
        return -1;
    }
    e->adopted++;
    if (r == NULL) {
        free(pending);
        route_gone(c, hc);
        return 0;
    }
    if (pending)
        memcpy(pending, hc->pending, hc->pending_len);
    if ((c->ws = ws_open(c->io.fd, e->cf, r, pending, hc->pending_len)) == NULL) {
        log_error("out of memory for a handed-over connection");
        conn_close(c);
        return -1;
    }
    c->state = CONN_WS;
    keepalive_since(c, hc->silent_ms);
    /* Bytes that travelled with it are ours to process now; for anything
     * waiting on the socket, adding it to epoll raised an event already. */
    if (hc->pending_len > 0)
        ws_step(c);
    return 0;
}
