#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "ws.h"

#define EV_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)
/* A lingering peer may send this much before we stop being polite. */
#define LINGER_MAX_BYTES (1u << 20)

enum conn_state { CONN_HTTP, CONN_WS, CONN_LINGER, CONN_DEAD };

struct conn {
    struct ev_io io;
    struct conn_env *env;
    struct list link;       /* env->all while alive, env->dead_q after */
    struct list tlink;      /* handshake_q or closing_q */
    struct list rlink;      /* ready_q */
    uint64_t deadline;
    enum conn_state state;
    uint16_t reject;
    unsigned shut_wr : 1;
    size_t lingered;
    char *in;               /* request bytes (HTTP phase only) */
    size_t in_len;
    char *out;              /* response bytes the socket did not take yet */
    size_t out_len, out_pos;
    struct http_req *req;
    struct ws_conn *ws;
};

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events);

void conn_env_init(struct conn_env *env, const struct config *cf, struct ev_loop *loop)
{
    memset(env, 0, sizeof(*env));
    env->cf = cf;
    env->loop = loop;
    list_init(&env->all);
    list_init(&env->handshake_q);
    list_init(&env->closing_q);
    list_init(&env->ready_q);
    list_init(&env->dead_q);
}

static void timer_set(struct conn *c, struct list *q, uint64_t timeout_ms)
{
    list_remove(&c->tlink);
    c->deadline = c->env->loop->now + timeout_ms;
    list_append(q, &c->tlink);
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

static void conn_close(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    if (c->ws != NULL)
        ws_free(c->ws);
    close(c->io.fd);
    free(c->in);
    free(c->out);
    free(c->req);
    c->ws = NULL;
    c->in = c->out = NULL;
    c->req = NULL;
    c->state = CONN_DEAD;
    list_remove(&c->tlink);
    list_remove(&c->rlink);
    list_remove(&c->link);
    list_append(&c->env->dead_q, &c->link);
    c->env->nconns--;
}

static void want_write(struct conn *c, int on)
{
    if (ev_mod(c->env->loop, &c->io, EV_BASE | (on ? EPOLLOUT : 0)) < 0)
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
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_pos = 0;
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
    c->out_len = len;
    c->out_pos = 0;
    return out_flush(c);
}

static void http_end(struct conn *c)
{
    free(c->req);
    free(c->in);
    c->req = NULL;
    c->in = NULL;
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
    size_t n = http_error_response(status, reason, buf, sizeof(buf));
    log_info("handshake from %s refused: %d %s", peer_name(c->io.fd, peer, sizeof(peer)),
             status, reason);
    http_end(c);
    c->state = CONN_LINGER;
    timer_set(c, &c->env->closing_q, c->env->cf->close_timeout_ms);
    if (out_send(c, buf, n) == 0)
        linger_step(c);
}

static void ws_step(struct conn *c)
{
    if (out_flush(c) != 0)
        return; /* the 101 response must leave before any frame */
    unsigned f = ws_run(c->ws);
    if (f & WS_DONE) {
        conn_close(c);
        return;
    }
    want_write(c, f & WS_WANT_WRITE);
    if (c->state == CONN_DEAD)
        return;
    if ((f & WS_AGAIN) && !list_linked(&c->rlink))
        list_append(&c->env->ready_q, &c->rlink);
    if ((f & WS_CLOSING) && !list_linked(&c->tlink))
        timer_set(c, &c->env->closing_q, c->env->cf->close_timeout_ms);
}

static void upgrade(struct conn *c, const struct config_route *route, size_t end)
{
    char buf[256];
    size_t n = http_upgrade_response(c->req, c->in, buf, sizeof(buf));
    size_t rest = c->in_len - end;
    /* Frames pipelined behind the request belong to the WebSocket. */
    memmove(c->in, c->in + end, rest);
    char *pending = c->in;
    c->in = NULL;
    http_end(c);
    list_remove(&c->tlink);
    c->ws = n ? ws_open(c->io.fd, c->env->cf, route->module, pending, rest) : NULL;
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
    http_req_check(c->req, c->in, c->env->cf, &v);
    if (v.status != 101)
        respond(c, v.status, v.reason);
    else
        upgrade(c, v.route, end);
}

static int http_buffers(struct conn *c)
{
    if (c->in != NULL)
        return 0;
    /* One byte over the limit tells "too large" from "exactly full". */
    c->in = malloc(c->env->cf->max_header_size + 1);
    c->req = malloc(sizeof(*c->req));
    if (c->in == NULL || c->req == NULL)
        return -1;
    http_req_init(c->req);
    return 0;
}

static void http_step(struct conn *c)
{
    size_t cap = c->env->cf->max_header_size + 1, end;
    if (http_buffers(c) < 0) {
        conn_close(c);
        return;
    }
    while (c->in_len < cap) {
        ssize_t n = read(c->io.fd, c->in + c->in_len, cap - c->in_len);
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
            respond(c, 400, "malformed HTTP request");
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
    /* HUP and RDHUP are seen as EOF by the read path, after any data. */
    switch (c->state) {
    case CONN_HTTP:   http_step(c);   break;
    case CONN_WS:     ws_step(c);     break;
    case CONN_LINGER: linger_step(c); break;
    case CONN_DEAD:   break;
    }
}

int conn_accept(struct conn_env *env, int fd, int reject_status)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return -1;
    }
    c->io.fd = fd;
    c->io.cb = on_event;
    c->env = env;
    c->reject = (uint16_t)reject_status;
    list_init(&c->tlink);
    list_init(&c->rlink);
    if (ev_add(env->loop, &c->io, EV_BASE) < 0) {
        close(fd);
        free(c);
        return -1;
    }
    list_append(&env->all, &c->link);
    env->nconns++;
    timer_set(c, &env->handshake_q, env->cf->handshake_timeout_ms);
    return 0;
}

static void expire_handshakes(struct conn_env *env)
{
    while (!list_empty(&env->handshake_q)) {
        struct conn *c = list_entry(env->handshake_q.next, struct conn, tlink);
        if (c->deadline > env->loop->now)
            return;
        respond(c, 408, "handshake not completed in time");
    }
}

static void expire_closing(struct conn_env *env)
{
    while (!list_empty(&env->closing_q)) {
        struct conn *c = list_entry(env->closing_q.next, struct conn, tlink);
        if (c->deadline > env->loop->now)
            return;
        conn_close(c);
    }
}

void conn_expire_timers(struct conn_env *env)
{
    expire_handshakes(env);
    expire_closing(env);
}

static uint64_t head_deadline(const struct list *q)
{
    return list_empty(q) ? UINT64_MAX : list_entry(q->next, struct conn, tlink)->deadline;
}

int conn_next_timeout(const struct conn_env *env)
{
    if (!list_empty(&env->ready_q))
        return 0;
    uint64_t a = head_deadline(&env->handshake_q), b = head_deadline(&env->closing_q);
    uint64_t d = a < b ? a : b;
    if (d == UINT64_MAX)
        return -1;
    return d <= env->loop->now ? 0 : d - env->loop->now > 60000 ? 60000 : (int)(d - env->loop->now);
}

void conn_run_ready(struct conn_env *env)
{
    struct list batch;
    list_init(&batch);
    /* Take the whole queue first: a connection may yield again. */
    if (!list_empty(&env->ready_q)) {
        batch.next = env->ready_q.next;
        batch.prev = env->ready_q.prev;
        batch.next->prev = batch.prev->next = &batch;
        list_init(&env->ready_q);
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
    if (c->state != CONN_WS || list_linked(&c->tlink))
        return 0; /* a handshake, a lingering error, or already closing */
    ws_close(c->ws, code, close_reason(code));
    ws_step(c);
    return 1;
}

void conn_close_all(struct conn_env *env, uint16_t code)
{
    struct list *it = env->all.next;
    while (it != &env->all) {
        struct conn *c = list_entry(it, struct conn, link);
        it = it->next; /* c may move to dead_q below */
        if (c->state == CONN_HTTP)
            conn_close(c);
        else
            ws_start_close(c, code);
    }
}

void conn_close_oldest(struct conn_env *env, uint16_t code, unsigned max)
{
    /* Visited connections go to the tail, so the next call starts with
     * ones not yet told. */
    for (unsigned seen = env->nconns; max > 0 && seen > 0 && !list_empty(&env->all); seen--) {
        struct conn *c = list_entry(env->all.next, struct conn, link);
        list_remove(&c->link);
        list_append(&env->all, &c->link);
        max -= (unsigned)ws_start_close(c, code);
    }
}

void conn_reap(struct conn_env *env)
{
    while (!list_empty(&env->dead_q)) {
        struct list *n = env->dead_q.next;
        list_remove(n);
        free(list_entry(n, struct conn, link));
    }
}

void conn_destroy_all(struct conn_env *env)
{
    while (!list_empty(&env->all))
        conn_close(list_entry(env->all.next, struct conn, link));
    conn_reap(env);
}
