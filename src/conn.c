#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "alog.h"
#include "config.h"
#include "frame.h"
#include "handoff.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "peer.h"
#include "pool.h"
#include "sock.h"
#include "stats.h"
#include "tls.h"
#include "tlsown.h"
#include "ws.h"

/* A lingering peer may send this much before we stop being polite. */
#define LINGER_MAX_BYTES (1u << 20)

enum conn_state { CONN_HTTP, CONN_WS, CONN_LINGER, CONN_DEAD };

/* Kept small: an idle WebSocket costs this plus its struct ws_conn. */
struct conn {
    struct sock s;          /* first: the loop hands back &s.io */
    struct list link;       /* env->all while alive, env->dead_q after */
    struct ev_timer timer;  /* in env->queues[queue] */
    struct conn_env *env;
    union {
        struct http_in *in; /* CONN_HTTP: the request so far */
        struct ws_conn *ws; /* CONN_WS */
        uint32_t lingered;  /* CONN_LINGER: bytes discarded */
    };
    uint16_t reject;
    uint8_t queue;          /* enum conn_queue */
    uint8_t state;          /* enum conn_state */
};

static struct pool conn_pool = POOL_INIT(struct conn);

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events);
static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t);
static void end_of_turn(struct ev_loop *loop, struct ev_hook *h);

void conn_env_init(struct conn_env *e, const struct config *cf, struct ev_loop *loop)
{
    memset(e, 0, sizeof(*e));
    e->cf = cf;
    e->loop = loop;
    http_set_max_header_size(cf->max_header_size);
    list_init(&e->all);
    list_init(&e->dead_q);
    for (int q = CONN_Q_HANDSHAKE; q < CONN_Q_COUNT; q++)
        ev_queue_init(loop, &e->queues[q], on_timer);
    ev_hook_add(loop, &e->end_of_turn, end_of_turn);
}

/* ---- Timers ------------------------------------------------------------- */

/* Each queue is used with one timeout (the config's for its kind), so the
 * loop's FIFO timer queues apply. */
static void timer_set(struct conn *c, enum conn_queue q, uint64_t timeout_ms)
{
    c->queue = q;
    ev_timer_start(c->env->loop, &c->env->queues[q], &c->timer, timeout_ms);
}

/* For a deadline that may be earlier than others in the queue. Handed-over
 * connections arrive in deadline order, so the walk back stays short. */
static void timer_set_sorted(struct conn *c, enum conn_queue q, uint64_t timeout_ms)
{
    c->queue = q;
    ev_timer_start_sorted(c->env->loop, &c->env->queues[q], &c->timer, timeout_ms);
}

static void timer_clear(struct conn *c)
{
    ev_timer_stop(&c->timer);
    c->queue = CONN_Q_NONE;
}

/* An open WebSocket was heard from: restart its keepalive clock. */
static void keepalive_reset(struct conn *c)
{
    const struct config *cf = c->env->cf;
    if (cf->ping_interval_ms)
        timer_set(c, CONN_Q_PING, cf->ping_interval_ms);
    else if (cf->idle_timeout_ms)
        timer_set(c, CONN_Q_IDLE, cf->idle_timeout_ms);
    else
        timer_clear(c);
}

/* The keepalive clocks carry on where the old worker left them, under the
 * new configuration's intervals. */
static void keepalive_since(struct conn *c, uint32_t silent)
{
    const struct config *cf = c->env->cf;
    if (cf->ping_interval_ms && silent < cf->ping_interval_ms)
        timer_set_sorted(c, CONN_Q_PING, cf->ping_interval_ms - silent);
    else if (cf->idle_timeout_ms)
        timer_set_sorted(c, CONN_Q_IDLE, cf->idle_timeout_ms > silent
                                         ? cf->idle_timeout_ms - silent : 0);
    else
        keepalive_reset(c);
}

/* ---- Lifetime ----------------------------------------------------------- */

static void http_end(struct conn *c)
{
    http_in_free(c->in);
    c->in = NULL;
}

/* A connection registered with the loop and in env's list, in the HTTP
 * phase with nothing allocated yet. NULL on failure; fd stays the caller's. */
static struct conn *conn_new(struct conn_env *e, int fd)
{
    struct conn *c = pool_alloc(&conn_pool);
    if (c == NULL)
        return NULL;
    if (sock_open(&c->s, fd, on_event) < 0) {
        pool_free(&conn_pool, c);
        return NULL;
    }
    c->env = e;
    ev_timer_init(&c->timer);
    list_append(&e->all, &c->link);
    e->nconns++;
    STATS_SET(stats_me->open, (int64_t)e->nconns);
    return c;
}

/* Out of every list and timer; freed after this turn (end_of_turn). */
static void conn_unlink(struct conn *c)
{
    c->state = CONN_DEAD;
    timer_clear(c);
    list_remove(&c->link);
    list_append(&c->env->dead_q, &c->link);
    c->env->nconns--;
    STATS_SET(stats_me->open, (int64_t)c->env->nconns);
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    if (c->state == CONN_HTTP)
        http_end(c);
    else if (c->state == CONN_WS && c->ws != NULL)
        ws_free(c->ws);
    peer_close(c->s.io.fd);
    sock_close(&c->s);
    conn_unlink(c);
}

void conn_release(struct conn *c)
{
    ws_detach(c->ws);
    c->ws = NULL;
    peer_handed(c->s.io.fd);
    sock_release(&c->s);
    conn_unlink(c);
}

static void linger_step(struct conn *c)
{
    char sink[4096];
    int r = sock_flush(&c->s);
    if (r != SOCK_OK) {
        if (r == SOCK_ERROR)
            conn_close(c);
        return;
    }
    /* FIN after the response, then read until the peer closes: closing
     * with unread input would send RST and could destroy the response. */
    sock_shutdown_write(&c->s);
    for (;;) {
        ssize_t n = sock_recv(&c->s, sink, sizeof(sink));
        if (n == SOCK_AGAIN)
            return;
        if (n <= 0 || (c->lingered += (size_t)n) > LINGER_MAX_BYTES)
            break;
    }
    conn_close(c);
}

/* Sends bytes as a run of the socket (gathered, one write), then lingers. */
static void send_and_linger(struct conn *c, const void *data, size_t len)
{
    c->state = CONN_LINGER;
    c->lingered = 0;
    if (c->queue != CONN_Q_CLOSING)
        timer_set(c, CONN_Q_CLOSING, c->env->cf->close_timeout_ms);
    sock_begin(&c->s);
    sock_write(&c->s, data, len);
    if (sock_end(&c->s) == SOCK_ERROR)
        conn_close(c);
    else
        linger_step(c);
}

/* The access log's line for a refused handshake: the request target
 * (path and query) if the request line got that far. */
static void log_refused(struct conn *c, const char *peer, int status, const char *reason)
{
    char target[512];
    const struct http_req *r = c->state == CONN_HTTP && c->in ? &c->in->req : NULL;
    if (!alog_on())
        return;
    if (r != NULL && r->url.len > 0)
        snprintf(target, sizeof(target), "%.*s", (int)r->url.len, c->in->buf + r->url.off);
    alog_refused(&(struct alog_refused){ peer, r && r->url.len ? target : NULL, status, reason });
}

/* headers: more header lines, or NULL. */
static void respond_with(struct conn *c, int status, const char *reason, const char *headers)
{
    char buf[512], peer[64];
    int head = c->state == CONN_HTTP && c->in != NULL && http_req_is_head(&c->in->req);
    size_t n = http_error_response_with(status, reason, headers, head, buf, sizeof(buf));
    STATS_ADD(stats_me->c.handshakes[stats_hs_of(status)], 1);
    sock_peer_name(&c->s, peer, sizeof(peer));
    log_info("handshake from %s refused: %d %s", peer, status, reason);
    log_refused(c, peer, status, reason);
    http_end(c);
    send_and_linger(c, buf, n);
}

static void respond(struct conn *c, int status, const char *reason)
{
    respond_with(c, status, reason, NULL);
}

/* ---- The WebSocket phase ------------------------------------------------ */

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
    send_and_linger(c, NULL, 0);
}

static void ws_timers(struct conn *c, unsigned f)
{
    const struct config *cf = c->env->cf;
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

/* Acts on the WS_* flags of a run. */
static void ws_after(struct conn *c, unsigned f)
{
    if (f & WS_DONE) {
        ws_finish(c, f & WS_BROKEN);
        return;
    }
    ws_timers(c, f);
    if (c->env->after_ws != NULL)
        c->env->after_ws(c, c->env->after_arg);
}

static void ws_step(struct conn *c)
{
    ws_after(c, ws_run(c->ws));
}

/* ---- The HTTP phase ----------------------------------------------------- */

static void upgrade(struct conn *c, const struct http_verdict *v, size_t end)
{
    char buf[1024], peer[64];
    size_t n = http_upgrade_response(&c->in->req, c->in->buf, v, buf, sizeof(buf)), rest;
    struct http_view view;
    struct ws_request req;
    http_req_view(c->in, end, &view, &req);
    req.subprotocol = v->protocol;
    req.peer = sock_peer_name(&c->s, peer, sizeof(peer));
    /* The 101 leads the socket's output: whatever on_open sends and the
     * echoes of frames pipelined behind the request follow it. */
    sock_begin(&c->s);
    sock_write(&c->s, buf, n);
    timer_clear(c);
    STATS_ADD(stats_me->c.handshakes[HS_101], 1);
    struct ws_conn *ws = n ? ws_open(&c->s, v->route, &req, NULL, 0) : NULL;
    if (ws != NULL)
        ws_set_pmd(ws, &v->pmd, NULL, 0); /* failing, it closes with 1011 */
    char *pending = http_in_take_rest(c->in, end, &rest);
    sock_set_input(&c->s, pending, rest); /* frames pipelined behind the request */
    http_end(c);
    c->ws = ws; /* in the union, where the request was */
    if (c->ws == NULL) {
        log_error("out of memory for a WebSocket from %s", peer);
        sock_end(&c->s);
        conn_close(c);
        return;
    }
    c->state = CONN_WS;
    ws_step(c);
}

/* health_paths: a load balancer's check on a public port, answered like
 * the status listener's (ready: serving, not stopping, not at the
 * connection limit). 1 if the request was one. */
static int health(struct conn *c)
{
    const struct config *cf = c->env->cf;
    const struct http_req *r = &c->in->req;
    char buf[256];
    int status = 200;
    const char *text = "ok";
    if (cf->readyz_path && http_req_path_is(r, c->in->buf, cf->readyz_path)) {
        if (stats != NULL && STATS_GET(stats->stopping))
            status = 503, text = "stopping";
        else if (c->reject)
            status = 503, text = "at the connection limit";
    } else if (!cf->healthz_path || !http_req_path_is(r, c->in->buf, cf->healthz_path)) {
        return 0;
    }
    size_t n = http_error_response(status, text, http_req_is_head(r), buf, sizeof(buf));
    http_end(c);
    send_and_linger(c, buf, n);
    return 1;
}

static void http_complete(struct conn *c, size_t end)
{
    struct http_verdict v;
    char hdr[64];
    const char *why;
    int limited;
    if (health(c))
        return;
    if ((limited = peer_refusal(c->s.io.fd, &why, hdr, sizeof(hdr))) != 0) {
        respond_with(c, limited, why, hdr); /* a per-IP limit (peer.h) */
        return;
    }
    if (c->reject) {
        respond(c, c->reject, "server is at its connection limit, try again later");
        return;
    }
    http_req_check(&c->in->req, c->in->buf, c->env->cf, &v);
    if (v.status != 101)
        respond(c, v.status, v.reason);
    else
        upgrade(c, &v, end);
}

static void http_step(struct conn *c)
{
    size_t room, end;
    int full;
    if (c->in == NULL && (c->in = http_in_new(c->env->cf->max_header_size)) == NULL)
        goto drop;
    while ((full = http_in_room(c->in, &room)) == 0) {
        ssize_t n = sock_recv(&c->s, c->in->buf + c->in->len, room);
        if (n == SOCK_AGAIN)
            return;
        if (n <= 0)
            goto drop; /* the client left before finishing its request */
        switch (http_in_feed(c->in, (size_t)n, &end)) {
        case HTTP_DONE:
            http_complete(c, end);
            return;
        case HTTP_BAD:
            respond(c, c->in->req.bad_status, c->in->req.bad_reason);
            return;
        case HTTP_MORE:
            break;
        }
    }
    if (full > 0) {
        respond(c, 431, HTTP_TOO_LARGE);
        return;
    }
drop:
    conn_close(c);
}

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct conn *c = (struct conn *)(void *)io;
    (void)loop;
    if (c->state == CONN_DEAD)
        return;
    if (sock_event(&c->s, events) == SOCK_ERROR) {
        conn_close(c);
        return;
    }
    switch (c->state) {
    case CONN_HTTP:   http_step(c);   break;
    case CONN_WS:     ws_step(c);     break;
    case CONN_LINGER: linger_step(c); break;
    }
}

int conn_accept(struct conn_env *e, int fd, int reject_status, const struct config_tls *tls)
{
    struct conn *c = conn_new(e, fd);
    if (c == NULL) {
        close(fd);
        return -1;
    }
    STATS_ADD(stats_me->c.accepted, 1);
    if (tls != NULL && tls_accept(&c->s, tls) < 0) {
        log_error("out of memory for a TLS connection");
        conn_close(c);
        return -1;
    }
    c->reject = (uint16_t)reject_status;
    timer_set(c, CONN_Q_HANDSHAKE, e->cf->handshake_timeout_ms);
    return 0;
}

/* ---- Deadlines ---------------------------------------------------------- */

static void expire(struct conn *c, enum conn_queue q)
{
    const struct config *cf = c->env->cf;
    switch (q) {
    case CONN_Q_HANDSHAKE:
        if (!sock_handshaken(&c->s)) {
            char peer[64];
            log_info("TLS handshake from %s not completed in time",
                     sock_peer_name(&c->s, peer, sizeof(peer)));
            conn_close(c); /* no 408 can reach a peer that has no TLS session */
        } else {
            respond(c, 408, "handshake not completed in time");
        }
        return;
    case CONN_Q_PING:
        /* Silent for ping_interval: ask. An answer (or anything) resets. */
        if (cf->idle_timeout_ms)
            timer_set(c, CONN_Q_IDLE, cf->idle_timeout_ms - cf->ping_interval_ms);
        else
            timer_set(c, CONN_Q_PING, cf->ping_interval_ms);
        ws_ping(c->ws);
        break;
    case CONN_Q_IDLE:
        ws_timeout(c->ws, 1001, "idle timeout");
        break;
    case CONN_Q_STALL:
        /* The peer sends but does not read: its close frame may never get
         * through either; close_timeout then drops the connection. */
        ws_timeout(c->ws, 1008, "not reading");
        break;
    default:
        conn_close(c);
        return;
    }
    ws_step(c);
}

static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    struct conn *c = list_entry(t, struct conn, timer);
    (void)loop;
    c->queue = CONN_Q_NONE; /* the loop took it off the queue */
    expire(c, (enum conn_queue)(q - c->env->queues));
}

/* ---- Ending many ------------------------------------------------------- */

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

void conn_drain(struct conn *c)
{
    ws_start_close(c, 1012);
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

void conn_destroy_all(struct conn_env *e)
{
    while (!list_empty(&e->all))
        conn_close(list_entry(e->all.next, struct conn, link));
    end_of_turn(e->loop, &e->end_of_turn);
}

/* ---- Worker memory ceiling (shed.c chooses) ----------------------------- */

size_t conn_held(const struct conn *c)
{
    return sock_held(&c->s) + ws_held(c->ws);
}

void conn_foreach_open(struct conn_env *e, void (*fn)(struct conn *c, void *arg), void *arg)
{
    for (struct list *it = e->all.next; it != &e->all; it = it->next) {
        struct conn *c = list_entry(it, struct conn, link);
        if (c->state == CONN_WS && c->queue != CONN_Q_CLOSING)
            fn(c, arg);
    }
}

void conn_shed(struct conn *c)
{
    char peer[64];
    size_t held = conn_held(c);
    unsigned f = ws_shed(c->ws);
    log_warn("worker_memory_limit (%zu bytes) reached: %s the connection from %s, "
             "which held %zu bytes", mem_limit(),
             (f & WS_BROKEN) ? "dropping (it does not read its output)" : "closing with 1009",
             sock_peer_name(&c->s, peer, sizeof(peer)), held);
    /* A reset, not a FIN behind output the peer will not read: the kernel
     * frees the socket's buffers too. */
    if (f & WS_BROKEN)
        sock_reset_on_close(&c->s);
    ws_after(c, f);
}

/* What this turn closed is freed (the loop may still have held events for
 * it), and memory given back. */
static void end_of_turn(struct ev_loop *loop, struct ev_hook *h)
{
    struct conn_env *e = list_entry(h, struct conn_env, end_of_turn);
    (void)loop;
    while (!list_empty(&e->dead_q)) {
        struct list *n = e->dead_q.next;
        list_remove(n);
        pool_free(&conn_pool, list_entry(n, struct conn, link));
    }
    mem_release();
}

/* ---- Handed over ------------------------------------------------------- */

/* How long the peer has been silent, read back from its keepalive timer. */
static uint32_t silent_ms(const struct conn *c)
{
    const struct config *cf = c->env->cf;
    uint64_t now = c->env->loop->now, span;
    if (c->queue == CONN_Q_PING)
        span = cf->ping_interval_ms;
    else if (c->queue == CONN_Q_IDLE)
        span = cf->idle_timeout_ms;
    else
        return 0;
    uint64_t heard = c->timer.deadline > span ? c->timer.deadline - span : 0;
    return heard < now ? (uint32_t)(now - heard) : 0;
}

/* The keys of the last export: wiped once it is sent (conn_export_wipe). */
static uint8_t tls_state[TLSOWN_STATE_SIZE];

void conn_export_wipe(void)
{
    OPENSSL_cleanse(tls_state, sizeof(tls_state));
}

int conn_export(struct conn *c, struct handoff_conn *hc, uint8_t *state, size_t cap)
{
    static uint8_t tally[HANDOFF_TALLY_MAX]; /* hc->tally: valid until the next export */
    static uint8_t windows[PMD_CTX_MAX];     /* and the sections of windows, */
    struct pmd_params pp;
    /* Only OpenSSL's TLS connections (TLS 1.2, records: openssl) stay
     * where their keys are until they drain; ours travel (tlsown.h). */
    if (c->state != CONN_WS || c->queue == CONN_Q_CLOSING ||
        (!sock_plain(&c->s) && tlsown_export(&c->s, tls_state) < 0))
        return -1;
    hc->state_len = cap;
    int r = ws_export(c->ws, state, &hc->state_len);
    if (r < 0)
        return r;
    const struct config_route *route = ws_route(c->ws);
    hc->fd = c->s.io.fd;
    hc->silent_ms = silent_ms(c);
    hc->path = route->path;
    hc->path_len = strlen(route->path);
    hc->state = state;
    hc->pending = (const char *)sock_input(&c->s);
    hc->pending_len = sock_avail(&c->s);
    hc->started = ws_started(c->ws);
    ws_pmd(c->ws, &pp);
    hc->pmd = pmd_params_pack(&pp);
    hc->tally = tally;
    hc->tally_len = ws_tally_export(c->ws, tally, sizeof(tally));
    hc->nsec = 0;
    hc->sec[0] = (struct handoff_section){ HANDOFF_SEC_PMD, windows,
                                           ws_pmd_export(c->ws, windows, sizeof(windows)) };
    hc->nsec += hc->sec[0].len > 0;
    if (!sock_plain(&c->s))
        hc->sec[hc->nsec++] = (struct handoff_section){ HANDOFF_SEC_TLS, tls_state,
                                                        sizeof(tls_state) };
    hc->nsec += (size_t)peer_export(c->s.io.fd, &hc->sec[hc->nsec]);
    return 0;
}

static int visit(struct list *head, size_t link_offset,
                 int (*fn)(struct conn *c, void *arg), void *arg)
{
    struct list *it = head->next;
    while (it != head) {
        struct conn *c = (struct conn *)(void *)((char *)it - link_offset);
        it = it->next; /* c may leave this list */
        if (c->state == CONN_WS && fn(c, arg))
            return 1;
    }
    return 0;
}

void conn_visit_open(struct conn_env *e, int (*fn)(struct conn *c, void *arg), void *arg)
{
    if (!visit(&e->queues[CONN_Q_PING].timers, offsetof(struct conn, timer.link), fn, arg) &&
        !visit(&e->queues[CONN_Q_IDLE].timers, offsetof(struct conn, timer.link), fn, arg))
        visit(&e->all, offsetof(struct conn, link), fn, arg);
}

struct conn *conn_adopt_new(struct conn_env *e, int fd)
{
    struct conn *c = conn_new(e, fd);
    if (c != NULL)
        e->adopted++;
    return c;
}

void conn_close_with(struct conn *c, uint16_t code, const char *reason)
{
    c->state = CONN_LINGER;
    timer_set(c, CONN_Q_CLOSING, c->env->cf->close_timeout_ms);
    sock_begin(&c->s);
    if (frame_write_close(sock_sink, &c->s, code, reason) < 0)
        c->s.failed = 1;
    if (sock_end(&c->s) == SOCK_ERROR)
        conn_close(c);
    else
        linger_step(c);
}

int conn_adopt_tls(struct conn *c, const struct handoff_conn *hc)
{
    for (size_t i = 0; i < hc->nsec; i++) {
        if (hc->sec[i].type == HANDOFF_SEC_TLS &&
            tlsown_import(&c->s, hc->sec[i].p, hc->sec[i].len) < 0) {
            sock_reset_on_close(&c->s);
            conn_close(c);
            return -1;
        }
    }
    return 0;
}

/* What was agreed with the peer is kept, whatever our config says now;
 * its windows (if it keeps context) came in their section. */
static int adopt_pmd(struct ws_conn *ws, const struct handoff_conn *hc)
{
    struct pmd_params pp;
    const struct handoff_section *win = NULL;
    for (size_t i = 0; i < hc->nsec; i++)
        if (hc->sec[i].type == HANDOFF_SEC_PMD)
            win = &hc->sec[i];
    if (pmd_params_unpack(hc->pmd, &pp) < 0) {
        ws_close(ws, 1011, "compression state lost");
        return -1;
    }
    return ws_set_pmd(ws, &pp, win ? win->p : (const uint8_t *)"", win ? win->len : 0);
}

int conn_start_ws(struct conn *c, const struct config_route *r, const struct handoff_conn *hc)
{
    char *pending = hc->pending_len ? malloc(hc->pending_len) : NULL;
    if (hc->pending_len && pending == NULL) {
        conn_close(c);
        return -1;
    }
    if (pending)
        memcpy(pending, hc->pending, hc->pending_len);
    sock_set_input(&c->s, pending, hc->pending_len);
    if ((c->ws = ws_open(&c->s, r, NULL, hc->state, hc->state_len)) == NULL) {
        conn_close(c);
        return -1;
    }
    if (hc->started != 0)
        ws_set_started(c->ws, hc->started);
    if (adopt_pmd(c->ws, hc) < 0)
        log_error("a handed-over WebSocket's compression state is not valid: closing it (1011)");
    ws_tally_adopt(c->ws, hc->tally, hc->tally_len, hc->path, hc->path_len);
    c->state = CONN_WS;
    keepalive_since(c, hc->silent_ms);
    /* Bytes that travelled with it are ours to process now; for anything
     * waiting on the socket, adding it to epoll raised an event already. */
    if (hc->pending_len > 0)
        ws_step(c);
    return 0;
}

const char *conn_peer_name(const struct conn *c, char *buf, size_t len)
{
    return sock_peer_name(&c->s, buf, len);
}
