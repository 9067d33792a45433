#include "ws.h"

#include <stdlib.h>
#include <string.h>

#include "alog.h"
#include "config.h"
#include "frame.h"
#include "mem.h"
#include "pmd.h"
#include "pool.h"
#include "sock.h"
#include "stats.h"
#include "tcpinfo.h"
#include "utf8.h"

/* Bytes read after our close frame went out, while looking for the peer's. */
#define WS_CLOSING_READ_MAX (1u << 20)

/* What exists only while a connection is busy (a message being received,
 * bytes its module holds): an idle connection holds none of it, unless it
 * keeps compression context (whose windows dwarf this anyway). */
struct ws_busy {
    uint8_t *msg;           /* the data message being reassembled */
    uint32_t msg_len, msg_cap;
    uint32_t msg_most;      /* what the message may still grow to */
    uint32_t msg_checked;   /* its bytes known to be whole UTF-8 sequences */
    uint32_t frame_left;    /* of a frame bigger than the read buffer */
    uint32_t frame_done;    /* its bytes already taken: the mask's phase */
    uint32_t after_close;   /* bytes read since our close frame went out */
    long module_held;       /* ws_hold */
    struct pmd_ctx *pmd;    /* permessage-deflate's windows: kept while w lives */
    uint8_t mask[4];
    uint8_t msg_type;       /* FRAME_TEXT or FRAME_BINARY */
    uint8_t frame_fin : 1;
    uint8_t discard : 1;    /* the frame is read past, not kept (closing) */
};

/* Kept small: an idle WebSocket costs this plus its struct conn. */
struct ws_conn {
    struct sock *s;
    struct ws_busy *b;
    const struct config_route *route; /* its module, config and path */
    void *data;
    struct frame_seq seq;
    uint32_t held;          /* bytes counted in the worker's budget (mem.h) */
    uint16_t close_received;/* the peer's close code (1005: none given) */
    uint16_t close_sent;    /* ours (1005: none given), once closing */
    uint32_t started;       /* ws_clock() when the WebSocket began */
    uint8_t pmd_bits;       /* permessage-deflate: our window bits; 0: not agreed */
    uint8_t closing : 1;    /* our close frame is queued */
    uint8_t read_shut : 1;  /* nothing more is read: done once output is out */
    uint8_t failed : 1;     /* out of memory: drop it */
    uint8_t active : 1;     /* bytes arrived during this run */
    uint8_t blocked : 1;    /* reading stopped: too much output waits */
    uint8_t by : 2;         /* enum stats_by: who closed first, once closing */
    uint8_t logged : 1;     /* a ws_logged: the access log is on */
};

/* What the access log says of a WebSocket, kept only while the log is on:
 * a connection then costs this much more (an idle one otherwise holds
 * nothing for the log). It travels with a handoff (ws_tally_export). */
struct ws_tally {
    uint64_t start_ms;      /* wall clock */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    uint32_t hops;          /* handoffs so far */
    char *target;           /* its strings: target, subprotocol, peer (tally_set) */
};

struct ws_logged {
    struct ws_conn w;
    struct ws_tally t;
};

static struct pool ws_pool = POOL_INIT(struct ws_conn);
static struct pool ws_logged_pool = POOL_INIT(struct ws_logged);

static inline struct ws_tally *tally(struct ws_conn *w)
{
    return w->logged ? &((struct ws_logged *)(void *)w)->t : NULL;
}

/* ---- Accounting --------------------------------------------------------- */

static size_t held_now(const struct ws_conn *w)
{
    const struct ws_busy *b = w->b;
    if (b == NULL)
        return 0;
    return sizeof(*b) + MEM_BLOCK_OVERHEAD + (b->msg ? b->msg_cap + MEM_BLOCK_OVERHEAD : 0) +
           (size_t)(b->module_held > 0 ? b->module_held : 0) + pmd_ctx_held(b->pmd);
}

static inline void account(struct ws_conn *w)
{
    if (w->held != 0 || w->b != NULL)
        mem_move(&w->held, held_now(w));
}

size_t ws_held(const struct ws_conn *w)
{
    return w->held;
}

static size_t output_held(const struct ws_conn *w)
{
    long m = w->b ? w->b->module_held : 0;
    return sock_pending(w->s) + (size_t)(m > 0 ? m : 0);
}

/* Backpressure: reading more would queue output beyond max_pending_output. */
static int output_blocked(const struct ws_conn *w)
{
    return output_held(w) > w->route->cf->max_pending_output;
}

static struct ws_busy *busy_get(struct ws_conn *w)
{
    if (w->b == NULL && (w->b = calloc(1, sizeof(*w->b))) == NULL)
        w->failed = 1;
    return w->b;
}

static void msg_free(struct ws_busy *b)
{
    free(b->msg);
    b->msg = NULL;
    b->msg_len = b->msg_cap = b->msg_checked = 0;
}

/* Between messages nothing of it is needed: give its memory back. */
/* Nothing in progress: no frame or message half read, nothing held. */
static int busy_idle(const struct ws_conn *w)
{
    const struct ws_busy *b = w->b;
    return b == NULL || (b->frame_left == 0 && !w->seq.in_message && b->msg == NULL &&
                         b->module_held == 0);
}

static void busy_put_if_idle(struct ws_conn *w)
{
    struct ws_busy *b = w->b;
    if (b != NULL && busy_idle(w) && b->pmd == NULL && !w->closing) {
        free(b);
        w->b = NULL;
    }
}

/* ---- Output: every frame through the encoder into the socket ------------ */

static void send_frame(struct ws_conn *w, int opcode, const uint8_t *data, size_t len)
{
    if (frame_write(sock_sink, w->s, opcode, data, len) < 0)
        w->failed = 1;
}

/* The close frame goes behind everything queued before it: one queue. */
static void queue_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    if (w->closing)
        return; /* the first close stands */
    w->closing = 1;
    w->close_sent = code ? code : 1005;
    if (w->close_received)
        w->by = BY_CLIENT;
    if (code == 0)
        send_frame(w, FRAME_CLOSE, NULL, 0); /* the peer's close had no code */
    else if (frame_write_close(sock_sink, w->s, code, reason) < 0)
        w->failed = 1;
}

/* Fails the connection: close frame with code, read nothing more. */
static int fail(struct ws_conn *w, uint16_t code)
{
    queue_close(w, code, NULL);
    w->read_shut = 1;
    return -1;
}

/* ---- Messages ----------------------------------------------------------- */

/* Room for need bytes, grown as bytes arrive (a header alone claims
 * nothing), by doubling, never beyond msg_most: the message's size when its
 * last frame is known, else max_message_size (frame_check holds need
 * below both). */
static int msg_reserve(struct ws_busy *b, size_t need)
{
    if (need <= b->msg_cap && b->msg != NULL)
        return 0;
    size_t cap = (size_t)b->msg_cap * 2;
    cap = cap > 256 ? cap : 256;
    cap = cap < b->msg_most ? cap : b->msg_most;
    cap = cap < need ? need : cap;
    uint8_t *msg = realloc(b->msg, cap ? cap : 1);
    if (msg == NULL)
        return -1;
    b->msg = msg;
    b->msg_cap = (uint32_t)cap;
    return 0;
}

static void deliver(struct ws_conn *w, int type, const uint8_t *data, size_t len)
{
    struct ws_tally *t = tally(w);
    stats_message(1, len);
    if (t != NULL) {
        t->msgs_in++;
        t->bytes_in += len;
    }
    if (!w->closing)
        w->route->module->on_message(w, (enum ws_msg_type)type, data, len);
}

/* A whole compressed message (pmd.h): inflated, judged, delivered. */
static int deliver_compressed(struct ws_conn *w, int type, const uint8_t *p, size_t n)
{
    const uint8_t *out;
    size_t len;
    int r = pmd_inflate(w->b ? w->b->pmd : NULL, p, n, w->route->cf->max_message_size, &out, &len);
    if (r == PMD_OK && type == FRAME_TEXT && !utf8_valid(out, len))
        r = PMD_BAD;
    if (r == PMD_OK)
        deliver(w, type, out, len);
    pmd_trim(); /* a bomb's buffer goes back at once, too */
    if (r == PMD_NOMEM)
        return w->failed = 1, -1;
    if (r != PMD_OK)
        return fail(w, r == PMD_TOO_BIG ? 1009 : 1007);
    return 1;
}

/* Adds an unmasked piece to the message; delivers it after its last piece.
 * Text is judged as it grows: invalid UTF-8 fails at once (1007); a
 * compressed message is judged once inflated, whole. */
static int msg_add(struct ws_conn *w, const uint8_t *p, size_t n, int last)
{
    struct ws_busy *b = w->b;
    size_t done;
    if (msg_reserve(b, (size_t)b->msg_len + n) < 0)
        return w->failed = 1, -1;
    memcpy(b->msg + b->msg_len, p, n);
    b->msg_len += (uint32_t)n;
    if (w->seq.compressed) {
        int r = last ? deliver_compressed(w, b->msg_type, b->msg, b->msg_len) : 0;
        if (r > 0)
            msg_free(b);
        return r < 0 ? -1 : 0;
    }
    if (b->msg_type == FRAME_TEXT) {
        if (!utf8_scan(b->msg + b->msg_checked, b->msg_len - b->msg_checked, &done))
            return fail(w, 1007);
        b->msg_checked += (uint32_t)done;
        if (last && b->msg_checked != b->msg_len)
            return fail(w, 1007); /* cut short at the end */
    }
    if (last) {
        deliver(w, b->msg_type, b->msg, b->msg_len);
        msg_free(b);
    }
    return 0;
}

/* A new message begins (its first frame's opcode) or goes on. */
static struct ws_busy *msg_frame(struct ws_conn *w, const struct frame_info *fi)
{
    struct ws_busy *b = busy_get(w);
    if (b == NULL)
        return NULL;
    if (fi->opcode != FRAME_CONT) {
        msg_free(b);
        b->msg_type = (uint8_t)fi->opcode;
    }
    b->msg_most = (uint32_t)(fi->fin ? b->msg_len + fi->payload_len
                                     : w->route->cf->max_message_size);
    return b;
}

/* A whole data frame in the read buffer, unmasked in place. */
static int data_frame(struct ws_conn *w, const struct frame_info *fi, uint8_t *p)
{
    size_t n = (size_t)fi->payload_len;
    frame_unmask(p, n, fi->mask, 0);
    if (fi->fin && fi->opcode != FRAME_CONT) {
        if (fi->rsv & 4)
            return deliver_compressed(w, fi->opcode, p, n);
        /* A whole message: straight from the read buffer, no copy. */
        if (fi->opcode == FRAME_TEXT && !utf8_valid(p, n))
            return fail(w, 1007);
        deliver(w, fi->opcode, p, n);
        return 1;
    }
    if (msg_frame(w, fi) == NULL || msg_add(w, p, n, fi->fin) < 0)
        return -1;
    return 1;
}

/* ---- Frames ------------------------------------------------------------- */

static int control_frame(struct ws_conn *w, const struct frame_info *fi, uint8_t *p)
{
    uint16_t code = 0, bad;
    switch (fi->opcode) {
    case FRAME_PING:
        frame_unmask(p, (size_t)fi->payload_len, fi->mask, 0);
        if (!w->closing)
            send_frame(w, FRAME_PONG, p, (size_t)fi->payload_len);
        return 1;
    case FRAME_CLOSE:
        if ((bad = frame_close_check(fi, p, &code)) != 0)
            return fail(w, bad);
        w->close_received = code ? code : 1005;
        return fail(w, code); /* echo the peer's code, or an empty close */
    default:
        return 1; /* a pong: the peer is alive, which reading it shows */
    }
}

/* A frame bigger than the read buffer: its payload is taken as it comes. */
static int frame_piece(struct ws_conn *w)
{
    struct ws_busy *b = w->b;
    size_t n = sock_avail(w->s);
    if (n == 0)
        return 0;
    n = n < b->frame_left ? n : b->frame_left;
    uint8_t *p = sock_input(w->s);
    sock_consume(w->s, n);
    b->frame_left -= (uint32_t)n;
    if (b->discard)
        return 1;
    frame_unmask(p, n, b->mask, b->frame_done);
    b->frame_done += (uint32_t)n;
    return msg_add(w, p, n, b->frame_left == 0 && b->frame_fin) < 0 ? -1 : 1;
}

static int frame_begin_pieces(struct ws_conn *w, const struct frame_info *fi, int discard)
{
    struct ws_busy *b = discard ? busy_get(w) : msg_frame(w, fi);
    if (b == NULL)
        return -1;
    sock_consume(w->s, fi->header_len);
    b->frame_left = (uint32_t)fi->payload_len;
    b->frame_done = 0;
    b->frame_fin = (uint8_t)fi->fin;
    b->discard = (uint8_t)discard;
    memcpy(b->mask, fi->mask, 4);
    return 1;
}

/* After our close: frames are read past until the peer's close. */
static int closing_frame(struct ws_conn *w, const struct frame_info *fi, size_t avail)
{
    size_t whole = fi->header_len + (size_t)fi->payload_len;
    if (fi->opcode == FRAME_CLOSE || fi->opcode == FRAME_PING || fi->opcode == FRAME_PONG) {
        if (fi->payload_len > 125)
            return w->read_shut = 1, -1;
        if (avail < whole)
            return 0;
        int r = control_frame(w, fi, sock_input(w->s) + fi->header_len);
        sock_consume(w->s, whole);
        return r;
    }
    if (avail >= whole) {
        sock_consume(w->s, whole);
        return 1;
    }
    return frame_begin_pieces(w, fi, 1);
}

/* Takes the next frame from the read buffer. 1: go on; 0: more bytes are
 * needed; -1: stop reading. */
static int next_frame(struct ws_conn *w)
{
    struct frame_info fi;
    size_t avail = sock_avail(w->s);
    if (w->b != NULL && w->b->frame_left > 0)
        return frame_piece(w);
    int h = frame_parse(sock_input(w->s), avail, &fi);
    if (h <= 0)
        return h < 0 ? (w->closing ? (w->read_shut = 1, -1) : fail(w, 1002)) : 0;
    if (w->closing)
        return closing_frame(w, &fi, avail);
    if (fi.opcode != FRAME_CLOSE && output_blocked(w)) {
        w->blocked = 1; /* judged below once it is taken */
        return -1;
    }
    const struct config *cf = w->route->cf;
    struct frame_limits lim = { cf->max_frame_size, cf->max_message_size, w->pmd_bits != 0 };
    struct frame_seq seq = w->seq; /* committed when the frame is taken */
    uint16_t code = frame_check(&seq, &fi, &lim);
    if (code)
        return fail(w, code);
    size_t whole = (size_t)h + (size_t)fi.payload_len;
    if (avail < whole && (whole <= SOCK_SCRATCH_SIZE || fi.opcode >= FRAME_CLOSE))
        return 0; /* it arrives whole into the read buffer */
    w->seq = seq;
    if (avail < whole)
        return frame_begin_pieces(w, &fi, 0);
    uint8_t *p = sock_input(w->s) + h;
    sock_consume(w->s, whole);
    return fi.opcode >= FRAME_CLOSE ? control_frame(w, &fi, p) : data_frame(w, &fi, p);
}

/* ---- Running ------------------------------------------------------------ */

/* Whether to read now. Closing: nothing the peer sends matters until our
 * close frame is out; after that we read only to find its close, and a
 * peer that keeps sending instead is left unread until close_timeout drops
 * it (no reset sooner: our close frame may still be queued to it). */
static inline int may_read(struct ws_conn *w)
{
    if (w->failed || w->read_shut || w->s->failed)
        return 0;
    if (!w->closing)
        return 1;
    return sock_pending(w->s) == 0 && (w->b == NULL || w->b->after_close <= WS_CLOSING_READ_MAX);
}

/* Reads and dispatches until input runs out (0) or reading has to wait
 * for output to leave (1). */
static int run(struct ws_conn *w)
{
    while (may_read(w)) {
        int r = next_frame(w);
        if (r > 0)
            continue;
        if (r < 0)
            return w->blocked;
        ssize_t n = sock_fill(w->s);
        if (n <= 0)
            return 0;
        w->active = 1;
        if (w->closing && busy_get(w) != NULL)
            w->b->after_close += (uint32_t)n;
    }
    return w->closing && !w->read_shut;
}

static unsigned status(struct ws_conn *w)
{
    struct sock *s = w->s;
    unsigned f = (w->active ? WS_ACTIVE : 0) | (w->blocked ? WS_STALLED : 0);
    if (w->failed || s->failed || s->eof)
        return f | WS_DONE | WS_BROKEN; /* what was queued went out with the run */
    if (w->read_shut && sock_pending(s) == 0)
        return f | WS_DONE;
    return f | (w->closing || w->read_shut ? WS_CLOSING : 0);
}

unsigned ws_run(struct ws_conn *w)
{
    struct sock *s = w->s;
    sock_begin(s);
    w->active = 0;
    w->blocked = 0;
    int waited = run(w);
    /* With edge-triggered epoll nobody else will tell us to read again
     * once the output that stopped us has gone. */
    if (sock_end(s) == SOCK_OK && waited && sock_pending(s) == 0 && may_read(w))
        sock_wake(s);
    busy_put_if_idle(w);
    account(w);
    return status(w);
}

unsigned ws_shed(struct ws_conn *w)
{
    if (sock_pending(w->s) > 0) {
        /* Its peer does not take what it owes: a close frame would wait
         * behind the same bytes. Drop it. */
        w->failed = 1;
        return WS_DONE | WS_BROKEN;
    }
    if (w->b != NULL) {
        msg_free(w->b);
        w->b->frame_left = 0;
    }
    w->seq.in_message = 0;
    (void)fail(w, 1009);
    return ws_run(w);
}

/* ---- Lifetime ----------------------------------------------------------- */

/* The record's strings, one block: "path?query", subprotocol ("" if
 * none), peer ("1.2.3.4:5"), each NUL-terminated. The peer is taken while
 * the connection is there to ask: once the client has reset it, the kernel
 * no longer says who it was. */
#define TALLY_STRINGS 3

static const char *tally_str(const char *block, int k)
{
    while (k-- > 0)
        block += strlen(block) + 1;
    return block;
}

static size_t tally_block_len(const char *block)
{
    const char *end = tally_str(block, TALLY_STRINGS);
    return (size_t)(end - block);
}

static int tally_set(struct ws_tally *t, const char *path, size_t pl, const char *query, size_t ql,
                     const char *proto, const char *peer)
{
    size_t sl = strlen(proto), el = strlen(peer);
    char *p = malloc(pl + 1 + ql + 1 + sl + 1 + el + 1);
    if (p == NULL)
        return -1;
    free(t->target);
    t->target = p;
    memcpy(p, path, pl);
    p += pl;
    if (ql) {
        *p++ = '?';
        memcpy(p, query, ql);
        p += ql;
    }
    *p++ = '\0';
    memcpy(p, proto, sl + 1);
    memcpy(p + sl + 1, peer, el + 1);
    return 0;
}

/* From the request; empty for a handed-over connection (ws_tally_adopt
 * fills it then). */
static int tally_open(struct ws_tally *t, const struct ws_request *req)
{
    t->start_ms = stats_wall_ms();
    t->target = NULL;
    if (req == NULL)
        return tally_set(t, "", 0, NULL, 0, "", "");
    return tally_set(t, req->path, req->path_len, req->query, req->query_len,
                     req->subprotocol ? req->subprotocol : "", req->peer ? req->peer : "?");
}

struct ws_conn *ws_open(struct sock *s, const struct config_route *route,
                        const struct ws_request *req, const uint8_t *state, size_t state_len)
{
    const struct module *m = route->module;
    int logged = alog_on();
    struct ws_conn *w = pool_alloc(logged ? &ws_logged_pool : &ws_pool);
    if (w == NULL)
        return NULL;
    w->logged = logged ? 1 : 0;
    if (logged && tally_open(tally(w), req) < 0) {
        pool_free(&ws_logged_pool, w);
        return NULL;
    }
    w->s = s;
    w->route = route;
    w->started = ws_clock();
    w->by = BY_SERVER;
    int refused = req ? (m->on_open ? m->on_open(w, req) : 0)
                      : (m->on_adopt ? m->on_adopt(w, state, state_len) : 0);
    if (refused)
        ws_close(w, 1011, "module refused the connection");
    account(w);
    return w;
}

static void release(struct ws_conn *w)
{
    if (w->b != NULL) {
        free(w->b->msg);
        pmd_ctx_free(w->b->pmd);
        free(w->b);
        w->b = NULL;
    }
    mem_move(&w->held, 0);
    if (w->logged) {
        free(tally(w)->target);
        pool_free(&ws_logged_pool, w);
    } else {
        pool_free(&ws_pool, w);
    }
}

static void log_end(struct ws_conn *w, enum stats_by by)
{
    static const char *const names[BY_N] = { "client", "server", "timeout", "reset" };
    struct ws_tally *t = tally(w);
    struct alog_ws r = {
        .start_ms = t->start_ms, .end_ms = stats_wall_ms(),
        .peer = tally_str(t->target, 2), .target = t->target,
        .msgs_in = t->msgs_in, .msgs_out = t->msgs_out,
        .bytes_in = t->bytes_in, .bytes_out = t->bytes_out,
        .code_sent = w->closing ? w->close_sent : 0, .code_received = w->close_received,
        .closed_by = names[by], .handoffs = t->hops,
    };
    const char *proto = tally_str(t->target, 1);
    r.subprotocol = *proto ? proto : NULL;
    tcp_bytes(w->s->io.fd, &r.wire_in, &r.wire_out);
    alog_ws(&r);
}

/* The WebSocket is over (not moved): what the metrics and the access log
 * say of it. */
static void count_end(struct ws_conn *w)
{
    enum stats_by by = !w->closing && !w->close_received ? BY_RESET
                     : w->by == BY_CLIENT || !w->closing ? BY_CLIENT : (enum stats_by)w->by;
    stats_close(by == BY_RESET ? 1006 : by == BY_CLIENT ? w->close_received : w->close_sent, by);
    stats_duration((uint64_t)(uint32_t)(ws_clock() - w->started) * 100);
    if (w->logged)
        log_end(w, by);
}

void ws_free(struct ws_conn *w)
{
    const struct module *m = w->route->module;
    count_end(w);
    if (m->on_close)
        m->on_close(w, w->close_received ? w->close_received : 1006);
    release(w);
}

const struct config_route *ws_route(const struct ws_conn *w)
{
    return w->route;
}

int ws_export(struct ws_conn *w, uint8_t *state, size_t *state_len)
{
    const struct module *m = w->route->module;
    if (m->export == NULL)
        return -2;
    if (!busy_idle(w) || sock_pending(w->s) > 0 || w->closing || w->read_shut || w->failed ||
        w->s->eof)
        return -1;
    int n = m->export(w, state, *state_len);
    if (n < 0 || (size_t)n > *state_len)
        return -1;
    *state_len = (size_t)n;
    return 0;
}

void ws_detach(struct ws_conn *w)
{
    const struct module *m = w->route->module;
    if (m->on_close)
        m->on_close(w, WS_MOVED); /* its state went with the connection */
    release(w);
}

/* ---- The module's side -------------------------------------------------- */

int ws_send(struct ws_conn *w, enum ws_msg_type type, const uint8_t *data, size_t len)
{
    if (w->failed || w->closing)
        return -1;
    const struct config_pmd *pc = &w->route->cf->pmd;
    const uint8_t *z;
    size_t zlen;
    struct pmd_params pp = { w->pmd_bits, 0, 0, 0 };
    if (w->pmd_bits && len > 0 && len >= pc->min_size &&
        pmd_deflate(pc, &pp, w->b ? w->b->pmd : NULL, data, len, &z, &zlen) == PMD_OK) {
        send_frame(w, (int)type | FRAME_RSV1, z, zlen); /* copied into the socket's output */
        pmd_trim();
    } else {
        send_frame(w, type, data, len);
    }
    stats_message(0, len);
    struct ws_tally *t = tally(w);
    if (t != NULL) {
        t->msgs_out++;
        t->bytes_out += len;
    }
    return w->failed ? -1 : 0;
}

void ws_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    queue_close(w, code, reason);
}

void ws_timeout(struct ws_conn *w, uint16_t code, const char *reason)
{
    if (!w->closing)
        w->by = BY_TIMEOUT;
    queue_close(w, code, reason);
}

uint32_t ws_started(const struct ws_conn *w)
{
    return w->started;
}

void ws_set_started(struct ws_conn *w, uint32_t started)
{
    w->started = started;
}

#define TALLY_FIXED (5 * sizeof(uint64_t) + sizeof(uint32_t))

size_t ws_tally_export(struct ws_conn *w, uint8_t *buf, size_t cap)
{
    struct ws_tally *t = tally(w);
    size_t bl = t ? tally_block_len(t->target) : 0;
    if (t == NULL || TALLY_FIXED + bl > cap)
        return 0;
    uint64_t v[5] = { t->start_ms, t->msgs_in, t->msgs_out, t->bytes_in, t->bytes_out };
    uint32_t hops = t->hops + 1;
    memcpy(buf, v, sizeof(v));
    memcpy(buf + sizeof(v), &hops, sizeof(hops));
    memcpy(buf + TALLY_FIXED, t->target, bl);
    return TALLY_FIXED + bl;
}

/* The block holds exactly TALLY_STRINGS NUL-terminated strings. */
static int tally_block_ok(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\0';
    return n > 0 && s[n - 1] == '\0' && k == TALLY_STRINGS;
}

void ws_tally_adopt(struct ws_conn *w, const uint8_t *buf, size_t len, const char *path,
                    size_t path_len)
{
    struct ws_tally *t = tally(w);
    const char *s = (const char *)buf + TALLY_FIXED;
    size_t rest = len > TALLY_FIXED ? len - TALLY_FIXED : 0;
    char peer[64];
    if (t == NULL)
        return;
    if (!tally_block_ok(s, rest)) {
        /* None came (the old worker kept no log), or not one we read:
         * the record starts here, the peer asked now. */
        tally_set(t, path, path_len, NULL, 0, "", sock_peer_name(w->s, peer, sizeof(peer)));
        return;
    }
    char *block = malloc(rest);
    if (block == NULL)
        return;
    uint64_t v[5];
    memcpy(v, buf, sizeof(v));
    memcpy(&t->hops, buf + sizeof(v), sizeof(t->hops));
    t->start_ms = v[0], t->msgs_in = v[1], t->msgs_out = v[2];
    t->bytes_in = v[3], t->bytes_out = v[4];
    memcpy(block, s, rest);
    free(t->target);
    t->target = block;
}

int ws_set_pmd(struct ws_conn *w, const struct pmd_params *pp, const uint8_t *ctx, size_t len)
{
    int keeps = pp->server_takeover || pp->client_takeover;
    struct pmd_ctx *cx = NULL;
    w->pmd_bits = pp->server_bits;
    if (!keeps)
        return 0;
    cx = ctx ? pmd_ctx_import(pp, ctx, len) : pmd_ctx_new(&w->route->cf->pmd, pp);
    if (cx == NULL || busy_get(w) == NULL) {
        pmd_ctx_free(cx);
        /* Without its windows, what the peer sends next may not inflate. */
        queue_close(w, 1011, "compression state lost");
        return -1;
    }
    w->b->pmd = cx;
    account(w);
    return 0;
}

void ws_pmd(const struct ws_conn *w, struct pmd_params *pp)
{
    *pp = (struct pmd_params){ w->pmd_bits, 0, 0, 0 };
    if (w->b != NULL && w->b->pmd != NULL)
        pmd_ctx_params(w->b->pmd, pp);
}

size_t ws_pmd_export(const struct ws_conn *w, uint8_t *buf, size_t cap)
{
    return w->b != NULL && w->b->pmd != NULL ? pmd_ctx_export(w->b->pmd, buf, cap) : 0;
}

uint32_t ws_clock(void)
{
    return (uint32_t)(ev_now_ms() / 100);
}

void ws_ping(struct ws_conn *w)
{
    if (!w->closing)
        send_frame(w, FRAME_PING, NULL, 0);
}

size_t ws_pending(const struct ws_conn *w)
{
    return output_held(w);
}

size_t ws_output_limit(const struct ws_conn *w)
{
    return w->route->cf->max_pending_output;
}

void ws_hold(struct ws_conn *w, long delta)
{
    if (busy_get(w) == NULL)
        return;
    w->b->module_held += delta;
    if (delta < 0) {
        busy_put_if_idle(w);
        if (w->blocked)
            sock_wake(w->s); /* reading waited for this */
    }
    account(w);
}

const void *ws_route_conf(const struct ws_conn *w)
{
    return w->route->conf;
}

void *ws_data(struct ws_conn *w)
{
    return w->data;
}

void ws_set_data(struct ws_conn *w, void *data)
{
    w->data = data;
}
