#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "config.h"
#include "frame.h"
#include "mem.h"
#include "pool.h"
#include "utf8.h"

/* Rounds of read+write per ws_run before yielding to other connections. */
#define WS_ROUNDS 4
/* Reads go into one per-worker scratch buffer: a connection owns read bytes
 * only between runs, when a partial frame (or input it may not read yet) is
 * left; they are kept in an exact-size copy. Big enough for a 16 KiB
 * message's frame to arrive, and be echoed, in one read. */
#define WS_RBUF_SIZE 65536
static char scratch[WS_RBUF_SIZE];
/* Bytes one ws_run reads before letting other connections have a turn. */
#define WS_RUN_READ_MAX (256u << 10)
/* Bytes read after our close frame while looking for the peer's. */
#define WS_CLOSING_READ_MAX (1u << 20)
/* wslay hands a frame's header and payload over in separate calls: they are
 * gathered here, per worker, and written with one system call per wake-up.
 * Only the connection being run uses it, and it is empty between runs. */
#define WS_WBUF_SIZE 65536
static uint8_t wbuf[WS_WBUF_SIZE];
static size_t wbuf_len;
static int wbuf_short;  /* send_cb took less than offered: wslay stops then */
/* The connection being run: only it may write into wbuf directly. */
static struct ws_conn *running;

/* What wslay 1.1 allocates, counted against the limits (its structures are
 * opaque; sizes read off its 1.1.1 headers on x86_64): an event context
 * (4376 B) and its frame context (4256 B), and per queued message a 40-byte
 * header in the same block as the payload copy. Heap headers included. */
#define WS_WSLAY_CTX_BYTES (4376 + 4256 + 2 * MEM_BLOCK_OVERHEAD)
#define WS_WSLAY_MSG_BYTES (40 + MEM_BLOCK_OVERHEAD)

/* Output the socket did not take yet. */
struct wpend {
    uint32_t len, pos;
    char data[];
};

/* What exists only while a connection is busy (a message, an echo or a
 * close in progress): an idle connection holds none of it. */
struct ws_busy {
    wslay_event_context_ptr ctx;
    uint8_t *msg;           /* the data message being reassembled */
    char *close_reason;     /* of the close waiting in close_code */
    uint32_t msg_len, msg_cap;
    uint32_t msg_most;      /* what the message may still grow to */
    uint32_t frame_left;    /* bytes of the current frame not yet given to wslay */
    uint32_t after_close;   /* bytes read since our close frame was queued */
    uint16_t close_code;    /* a close waiting for the data queued before it */
    uint8_t frame_data;     /* wslay is reading a data frame (not a control one) */
};

/* Kept small: an idle WebSocket costs this plus its struct conn. */
struct ws_conn {
    struct ws_busy *b;
    const struct config_route *route; /* its module, and its path for a handoff */
    void *data;
    char *rbuf;             /* read ahead, freed whenever it empties */
    struct wpend *wpend;
    struct frame_seq seq;
    uint32_t rpos, rlen;
    int fd;
    uint32_t held;          /* bytes counted in the worker's budget (mem.h) */
    uint16_t close_received;/* the peer's close code (1005: none given) */
    uint8_t blocked;        /* BLOCK_*: why reading stopped */
    uint8_t failed : 1;     /* socket error or out of memory: drop it */
    uint8_t eof : 1;        /* the peer ended its side (or reading failed) */
    uint8_t peer_fin : 1;   /* epoll saw the peer's FIN: read until EOF */
    uint8_t closing : 1;    /* a close frame is queued, waiting or sent */
    uint8_t active : 1;     /* bytes arrived during this ws_run */
    uint8_t drained : 1;    /* a short read emptied the socket this run */
};

static struct pool ws_pool = POOL_INIT(struct ws_conn);

/* The worker's configuration: one per process, like the connections. */
static const struct config *cf;
/* Bytes read during the current ws_run, to yield to other connections. */
static size_t run_read;

enum { BLOCK_NONE, BLOCK_OUTPUT, BLOCK_YIELD };

static wslay_event_context_ptr ctx_of(const struct ws_conn *w)
{
    return w->b ? w->b->ctx : NULL;
}

/* ---- Accounting: every byte a connection holds ------------------------ */

/* What the connection owes its peer: wslay's queue and wpend, with the
 * cost of each queued message (a peer that sends empty messages and never
 * reads costs memory, not payload). */
static size_t output_held(const struct ws_conn *w)
{
    size_t n = w->wpend ? sizeof(*w->wpend) + w->wpend->len + MEM_BLOCK_OVERHEAD : 0;
    wslay_event_context_ptr ctx = ctx_of(w);
    if (ctx != NULL)
        n += wslay_event_get_queued_msg_length(ctx) +
             wslay_event_get_queued_msg_count(ctx) * WS_WSLAY_MSG_BYTES;
    return n;
}

static size_t held_now(const struct ws_conn *w)
{
    size_t n = output_held(w);
    const struct ws_busy *b = w->b;
    if (w->rbuf != NULL && w->rbuf != scratch)
        n += w->rlen + MEM_BLOCK_OVERHEAD;
    if (b != NULL) {
        n += sizeof(*b) + MEM_BLOCK_OVERHEAD + WS_WSLAY_CTX_BYTES;
        n += b->msg ? b->msg_cap + MEM_BLOCK_OVERHEAD : 0;
        n += b->close_reason ? strlen(b->close_reason) + 1 + MEM_BLOCK_OVERHEAD : 0;
    }
    return n;
}

/* Inline: it ends every run, and the common case (an echo fully written)
 * holds nothing before or after. */
static inline void account(struct ws_conn *w)
{
    if (w->held != 0 || w->b != NULL || w->wpend != NULL || w->rbuf != NULL)
        mem_move(&w->held, held_now(w));
}

size_t ws_held(const struct ws_conn *w)
{
    return w->held;
}

/* Backpressure: reading more would queue output beyond max_pending_output. */
static int output_blocked(const struct ws_conn *w)
{
    return output_held(w) > cf->max_pending_output;
}

/* ---- Reading ----------------------------------------------------------- */

/* 1: bytes were read, 0: would block (or we will not read now), -1: EOF
 * or error. */
static int fill(struct ws_conn *w)
{
    /* After a short read new bytes raise a new edge-triggered event, but a
     * FIN that came with the last bytes raises none: read on to see it. */
    if (w->drained && !w->peer_fin)
        return 0;
    if (run_read >= WS_RUN_READ_MAX) {
        w->blocked = BLOCK_YIELD;
        return 0;
    }
    /* Closing: nothing the peer sends matters until our close frame is
     * out; after that we read only to find its close, and a peer that
     * keeps sending instead is left unread until close_timeout drops it
     * (no reset sooner: our close frame may still be queued to it). */
    if (w->closing && (!wslay_event_get_close_sent(w->b->ctx) || w->wpend != NULL ||
                       w->b->after_close > WS_CLOSING_READ_MAX))
        return 0;
    if (w->rbuf == NULL)
        w->rbuf = scratch;
    if (w->rpos > 0) {
        memmove(w->rbuf, w->rbuf + w->rpos, w->rlen - w->rpos);
        w->rlen -= w->rpos;
        w->rpos = 0;
    }
    /* The buffer holds at least WS_RBUF_SIZE (more if the handshake's
     * leftovers were bigger); fill runs only once those are consumed. */
    size_t room = (w->rlen > WS_RBUF_SIZE ? w->rlen : WS_RBUF_SIZE) - w->rlen;
    for (;;) {
        ssize_t n = read(w->fd, w->rbuf + w->rlen, room);
        if (n > 0) {
            w->rlen += (uint32_t)n;
            w->active = 1;
            run_read += (size_t)n;
            /* A short read emptied the receive queue: skip the EAGAIN read. */
            w->drained = (size_t)n < room;
            if (w->closing)
                w->b->after_close += (uint32_t)n;
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

static ssize_t would_block(wslay_event_context_ptr ctx, struct ws_conn *w)
{
    if (w->rpos == w->rlen) {
        /* Nothing buffered: an idle connection keeps no read buffer. */
        if (w->rbuf != scratch)
            free(w->rbuf);
        w->rbuf = NULL;
        w->rpos = w->rlen = 0;
    }
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
}

/* wslay sends control frames ahead of queued data, so a close queued now
 * would overtake the echoes of messages that arrived before it: the close
 * waits in close_code until the data queue is empty. */
static void queue_close(struct ws_conn *w, uint16_t code, const char *reason, size_t len)
{
    struct ws_busy *b = w->b;
    w->closing = 1;
    if (b->close_code != 0 || wslay_event_get_close_sent(b->ctx))
        return; /* the first close stands */
    if (wslay_event_get_queued_msg_count(b->ctx) == 0) {
        (void)wslay_event_queue_close(b->ctx, code, (const uint8_t *)reason, len);
        return;
    }
    b->close_code = code;
    if (len > 0 && (b->close_reason = malloc(len + 1)) != NULL) {
        memcpy(b->close_reason, reason, len);
        b->close_reason[len] = '\0';
    }
}

/* The waiting close goes once everything queued before it is out. */
static void close_if_flushed(struct ws_conn *w)
{
    struct ws_busy *b = w->b;
    if (b == NULL || b->close_code == 0 || wslay_event_get_queued_msg_count(b->ctx) != 0)
        return;
    const char *reason = b->close_reason;
    (void)wslay_event_queue_close(b->ctx, b->close_code, (const uint8_t *)reason,
                                  reason ? strlen(reason) : 0);
    free(b->close_reason);
    b->close_reason = NULL;
    b->close_code = 0;
}

/* Fails the connection: close frame with code, read nothing more. */
static ssize_t fail(wslay_event_context_ptr ctx, struct ws_conn *w, uint16_t code)
{
    queue_close(w, code, NULL, 0);
    wslay_event_shutdown_read(ctx);
    return would_block(ctx, w);
}

/* A whole close frame is in rbuf: validate it and answer it ourselves
 * (wslay would refuse the registered codes 1012-1014). */
static ssize_t on_close_frame(wslay_event_context_ptr ctx, struct ws_conn *w,
                              const struct frame_info *fi)
{
    uint16_t code;
    uint16_t bad = frame_close_check(fi, (uint8_t *)w->rbuf + w->rpos + fi->header_len, &code);
    w->rpos += (uint32_t)(fi->header_len + fi->payload_len);
    if (bad)
        return fail(ctx, w, bad);
    w->close_received = code ? code : 1005;
    return fail(ctx, w, code); /* echo the peer's code, or an empty close */
}

/* Judges the frame at the head of rbuf. 1: hand it to wslay; 0: more bytes
 * needed; -1: stop reading (recv_cb returns *ret). */
static int gate(wslay_event_context_ptr ctx, struct ws_conn *w, ssize_t *ret)
{
    struct frame_info fi;
    size_t avail = w->rlen - w->rpos;
    int h = frame_parse((uint8_t *)w->rbuf + w->rpos, avail, &fi);
    if (h > 0 && fi.opcode != FRAME_CLOSE && output_blocked(w)) {
        /* Before frame_check: the frame is judged once, when it is taken. */
        w->blocked = BLOCK_OUTPUT;
        *ret = would_block(ctx, w);
        return -1;
    }
    struct frame_limits lim = { cf->max_frame_size, cf->max_message_size };
    uint16_t code = h < 0 ? 1002 : h == 0 ? 0 : frame_check(&w->seq, &fi, &lim);
    if (code) {
        *ret = fail(ctx, w, code);
        return -1;
    }
    if (h == 0 || (fi.opcode == FRAME_CLOSE && avail < (size_t)h + fi.payload_len))
        return 0;
    if (fi.opcode == FRAME_CLOSE) {
        *ret = on_close_frame(ctx, w, &fi);
        return -1;
    }
    w->b->frame_left = (uint32_t)((uint64_t)h + fi.payload_len);
    return 1;
}

/* Hands wslay the bytes of one frame at a time, so that every frame header
 * is judged before wslay sees it and reading can stop in front of it. */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user)
{
    struct ws_conn *w = user;
    struct ws_busy *b = w->b;
    ssize_t ret;
    (void)flags;
    for (;;) {
        size_t avail = w->rlen - w->rpos;
        if (w->failed) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        if (b->frame_left == 0 && avail > 0 && gate(ctx, w, &ret) < 0)
            return ret;
        if (b->frame_left > 0 && avail > 0) {
            size_t n = avail < len ? avail : len;
            n = n < b->frame_left ? n : (size_t)b->frame_left;
            memcpy(buf, w->rbuf + w->rpos, n);
            w->rpos += (uint32_t)n;
            b->frame_left -= (uint32_t)n;
            return (ssize_t)n;
        }
        /* Backpressure: a peer that sends but does not read stops being read. */
        if (b->frame_left == 0 && output_blocked(w)) {
            w->blocked = BLOCK_OUTPUT;
            return would_block(ctx, w);
        }
        int r = fill(w);
        if (r < 0)
            w->eof = 1; /* the peer is gone: what is queued still goes out */
        if (r <= 0)
            return would_block(ctx, w);
    }
}

/* ---- Reassembly: one buffer per message, grown as fragments arrive ------ */

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

static void msg_free(struct ws_busy *b)
{
    free(b->msg);
    b->msg = NULL;
    b->msg_len = b->msg_cap = 0;
}

static void on_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct ws_conn *w = user;
    struct ws_busy *b = w->b;
    (void)ctx;
    b->frame_data = arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME ||
                    arg->opcode == WSLAY_CONTINUATION_FRAME;
    if (!b->frame_data)
        return;
    if (arg->opcode != WSLAY_CONTINUATION_FRAME)
        b->msg_len = 0;
    b->msg_most = (uint32_t)(arg->fin ? b->msg_len + arg->payload_length
                                      : cf->max_message_size);
    if (msg_reserve(b, b->msg_len) < 0) /* an empty message has a buffer too */
        w->failed = 1; /* out of memory: recv_cb stops wslay */
}

static void on_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    struct ws_conn *w = user;
    struct ws_busy *b = w->b;
    (void)ctx;
    if (!b->frame_data || b->msg == NULL)
        return; /* a control frame (wslay keeps those), or a shed message */
    if (msg_reserve(b, (size_t)b->msg_len + arg->data_length) < 0) {
        w->failed = 1;
        return;
    }
    memcpy(b->msg + b->msg_len, arg->data, arg->data_length);
    b->msg_len += (uint32_t)arg->data_length;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    struct ws_conn *w = user;
    struct ws_busy *b = w->b;
    (void)ctx;
    /* Control frames are answered by wslay itself (pong, close echo). */
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
        return;
    if (b->msg != NULL)
        w->route->module->on_message(w, (enum ws_msg_type)arg->opcode, b->msg, b->msg_len);
    msg_free(b);
}

/* ---- Writing ----------------------------------------------------------- */

/* Writes what was gathered; what the socket does not take waits in wpend.
 * -1 if the socket failed. */
static int flush(struct ws_conn *w)
{
    size_t off = 0;
    while (off < wbuf_len) {
        ssize_t n = send(w->fd, wbuf + off, wbuf_len - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        else
            w->failed = 1;
        if (w->failed)
            break;
    }
    if (!w->failed && off < wbuf_len) {
        if ((w->wpend = malloc(sizeof(*w->wpend) + wbuf_len - off)) == NULL) {
            w->failed = 1;
        } else {
            memcpy(w->wpend->data, wbuf + off, wbuf_len - off);
            w->wpend->len = (uint32_t)(wbuf_len - off);
            w->wpend->pos = 0;
        }
    }
    wbuf_len = 0;
    return w->failed ? -1 : 0;
}

/* 0: nothing left; 1: the socket is full; -1: it failed. */
static int flush_pending(struct ws_conn *w)
{
    struct wpend *p = w->wpend;
    while (p->pos < p->len) {
        ssize_t n = send(w->fd, p->data + p->pos, p->len - p->pos, MSG_NOSIGNAL);
        if (n > 0)
            p->pos += (uint32_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        else
            return w->failed = 1, -1;
    }
    free(p);
    w->wpend = NULL;
    return 0;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *user)
{
    struct ws_conn *w = user;
    (void)flags;
    if (w->wpend == NULL && wbuf_len == WS_WBUF_SIZE && flush(w) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (w->wpend != NULL) {
        /* Order matters: nothing new until the older bytes are out. */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < WS_WBUF_SIZE - wbuf_len ? len : WS_WBUF_SIZE - wbuf_len;
    wbuf_short = n < len;
    memcpy(wbuf + wbuf_len, data, n);
    wbuf_len += n;
    return (ssize_t)n;
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_frame_recv_start_callback = on_frame_start,
    .on_frame_recv_chunk_callback = on_frame_chunk,
    .on_msg_recv_callback = on_msg,
};

static int busy_get(struct ws_conn *w)
{
    if (w->b != NULL)
        return 0;
    struct ws_busy *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -1;
    if (wslay_event_context_server_init(&b->ctx, &callbacks, w) != 0) {
        free(b);
        return -1;
    }
    /* Messages are reassembled here, in one buffer (wslay would keep one
     * heap block per fragment and copy them all once more at the end). */
    wslay_event_config_set_no_buffering(b->ctx, 1);
    wslay_event_config_set_max_recv_msg_length(b->ctx, cf->max_message_size);
    w->b = b;
    return 0;
}

static void busy_free(struct ws_conn *w)
{
    struct ws_busy *b = w->b;
    if (b == NULL)
        return;
    wslay_event_context_free(b->ctx);
    free(b->msg);
    free(b->close_reason);
    free(b);
    w->b = NULL;
}

/* Between messages wslay holds nothing we need: give its memory back. */
static void busy_put_if_idle(struct ws_conn *w)
{
    const struct ws_busy *b = w->b;
    if (b != NULL && !w->closing && b->frame_left == 0 && !w->seq.in_message &&
        b->msg == NULL && wslay_event_get_queued_msg_count(b->ctx) == 0)
        busy_free(w);
}

/* ---- Running ----------------------------------------------------------- */

struct ws_conn *ws_open(int fd, const struct config *config, const struct config_route *route,
                        char *pending, size_t len)
{
    const struct module *m = route->module;
    struct ws_conn *w = pool_alloc(&ws_pool);
    if (w == NULL) {
        free(pending);
        return NULL;
    }
    cf = config;
    w->route = route;
    w->fd = fd;
    if (len == 0)
        free(pending);
    else
        w->rbuf = pending; /* kept as it is until the first run */
    w->rlen = (uint32_t)len;
    if (m->on_open && m->on_open(w) != 0)
        ws_close(w, 1011, "module refused the connection");
    account(w);
    return w;
}

static unsigned status(struct ws_conn *w)
{
    wslay_event_context_ptr ctx = ctx_of(w);
    int reading = ctx ? wslay_event_want_read(ctx) : 1;
    int writing = (ctx && wslay_event_want_write(ctx)) || w->wpend != NULL;
    unsigned f = (w->active ? WS_ACTIVE : 0) | (w->blocked == BLOCK_OUTPUT ? WS_STALLED : 0);
    if (w->failed || w->eof)
        return f | WS_DONE | WS_BROKEN;
    if (!reading && !writing)
        return f | WS_DONE;
    /* wslay stops reading once it has queued a close (peer's or error). */
    int closing = w->closing || !reading || (ctx && wslay_event_get_close_sent(ctx));
    return f | (writing ? WS_WANT_WRITE : 0) | (closing ? WS_CLOSING : 0);
}

/* wslay treats a short write as a full socket and stops; only the socket
 * saying so (output left in wpend) should stop us. */
static int send_all(struct ws_conn *w)
{
    wslay_event_context_ptr ctx = w->b->ctx;
    while (w->wpend == NULL && wslay_event_want_write(ctx)) {
        wbuf_short = 0;
        int r = wslay_event_send(ctx);
        if (flush(w) < 0 || r != 0)
            return -1;
        if (!wbuf_short)
            break;
    }
    return 0;
}

/* Output, then the close that waited for it. */
static int send_out(struct ws_conn *w)
{
    int pending = w->wpend != NULL ? flush_pending(w) : 0;
    if (pending < 0 || send_all(w) < 0)
        return -1;
    if (w->b->close_code != 0 && w->wpend == NULL) {
        close_if_flushed(w);
        return send_all(w);
    }
    return 0;
}

/* The general path: frames through wslay, a few rounds of read and write. */
static unsigned slow_run(struct ws_conn *w)
{
    unsigned f;
    if (busy_get(w) < 0)
        return WS_DONE | WS_BROKEN;
    for (int round = 0;; round++) {
        w->blocked = BLOCK_NONE;
        if (wslay_event_want_read(w->b->ctx) && wslay_event_recv(w->b->ctx) != 0)
            return WS_DONE | WS_BROKEN;
        if (send_out(w) < 0)
            return WS_DONE | WS_BROKEN;
        if (w->blocked == BLOCK_YIELD) {
            f = status(w) | WS_AGAIN;
            break;
        }
        /* With edge-triggered epoll nobody else will tell us to read again. */
        if (w->blocked != BLOCK_OUTPUT || output_blocked(w) || w->eof) {
            f = status(w);
            break;
        }
        if (round + 1 == WS_ROUNDS) {
            f = status(w) | WS_AGAIN;
            break;
        }
    }
    busy_put_if_idle(w);
    return f;
}

/* 16 bytes at a time (GCC/clang vector extension: SSE2/NEON registers). */
typedef uint8_t ws_v16 __attribute__((vector_size(16)));

static void unmask(uint8_t *p, size_t n, const uint8_t mask[4])
{
    uint32_t m4;
    memcpy(&m4, mask, 4);
    uint64_t m8 = (uint64_t)m4 << 32 | m4, v8; /* the mask twice, in memory order */
    size_t i = 0;
    if (n >= 16) {
        ws_v16 m, v;
        memcpy(&m, &m8, 8);
        memcpy((char *)&m + 8, &m8, 8);
        for (; i + 16 <= n; i += 16) {
            memcpy(&v, p + i, 16);
            v ^= m;
            memcpy(p + i, &v, 16);
        }
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&v8, p + i, 8);
        v8 ^= m8;
        memcpy(p + i, &v8, 8);
    }
    for (; i < n; i++)
        p[i] ^= mask[i & 3];
}

/* What the fast path takes: a whole message in one frame, within limits
 * (the rest of frame_check's rules, for this shape of frame). */
static int fast_frame_ok(const struct ws_conn *w, const struct frame_info *fi)
{
    return fi->fin && fi->rsv == 0 && fi->masked && !w->seq.in_message &&
           (fi->opcode == FRAME_TEXT || fi->opcode == FRAME_BINARY) &&
           fi->payload_len <= cf->max_frame_size && fi->payload_len <= cf->max_message_size;
}

/* Unmasks the frame at rpos in place and hands it to the module. 0: it
 * must go the general way (invalid UTF-8 is failed there, with 1007). */
static int fast_deliver(struct ws_conn *w, const struct frame_info *fi, size_t h)
{
    uint8_t *payload = (uint8_t *)w->rbuf + w->rpos + h;
    size_t len = (size_t)fi->payload_len;
    unmask(payload, len, fi->mask);
    if (fi->opcode == FRAME_TEXT && !utf8_valid(payload, len)) {
        unmask(payload, len, fi->mask); /* back as it came */
        return 0;
    }
    w->rpos += (uint32_t)(h + len);
    w->route->module->on_message(w, (enum ws_msg_type)fi->opcode, payload, len);
    return 1;
}

/* Echo-shaped traffic without wslay: while no message is in progress and
 * nothing is queued, whole data frames are unmasked in the scratch buffer
 * and answered straight into wbuf. 1: done (the socket is drained, or may
 * not be read now); 0: go on with the general path; -1: the peer is gone. */
static int fast_path(struct ws_conn *w)
{
    while (w->b == NULL && w->wpend == NULL && !w->closing && !w->failed) {
        struct frame_info fi;
        size_t avail = w->rlen - w->rpos;
        int h = avail ? frame_parse((uint8_t *)w->rbuf + w->rpos, avail, &fi) : 0;
        if (h < 0 || (h > 0 && !fast_frame_ok(w, &fi)))
            return 0;
        if (h > 0 && avail >= (size_t)h + fi.payload_len) {
            if (!fast_deliver(w, &fi, (size_t)h))
                return 0;
            continue;
        }
        /* More bytes needed: wslay streams what cannot fit the scratch. */
        if ((w->rbuf != NULL && w->rbuf != scratch) ||
            (h > 0 && (size_t)h + fi.payload_len > WS_RBUF_SIZE))
            return 0;
        int r = fill(w);
        if (r <= 0)
            return r < 0 ? -1 : 1;
    }
    return 0;
}

static unsigned run(struct ws_conn *w)
{
    w->blocked = BLOCK_NONE;
    if (w->wpend != NULL && flush_pending(w) < 0)
        return WS_DONE | WS_BROKEN;
    if (w->wpend != NULL && output_blocked(w)) {
        /* The socket is full and enough waits behind it: nothing to do
         * until it takes more (wslay's queue goes out behind wpend). */
        w->blocked = BLOCK_OUTPUT;
        return status(w);
    }
    int fast = fast_path(w);
    /* Output of the fast path leaves first: one write per wake-up. */
    if (wbuf_len > 0 && flush(w) < 0)
        return WS_DONE | WS_BROKEN;
    if (fast < 0 || w->failed)
        return WS_DONE | WS_BROKEN;
    if (fast > 0)
        return status(w) | (w->blocked == BLOCK_YIELD ? WS_AGAIN : 0);
    return slow_run(w);
}

/* Bytes left from the last run move into the scratch buffer (leftovers of
 * a handshake bigger than it are read in place until they fit). */
static void run_begin(struct ws_conn *w)
{
    size_t n = w->rlen - w->rpos;
    w->active = 0;
    w->drained = 0;
    run_read = 0;
    running = w;
    if (w->rbuf != NULL && n <= WS_RBUF_SIZE) {
        memcpy(scratch, w->rbuf + w->rpos, n);
        free(w->rbuf);
        w->rbuf = scratch;
        w->rpos = 0;
        w->rlen = (uint32_t)n;
    }
}

/* Keeps what was read but not processed in an exact-size copy. 0, or -1
 * if out of memory. */
static int run_end(struct ws_conn *w)
{
    running = NULL;
    if (w->rbuf != scratch)
        return 0;
    size_t n = w->rlen - w->rpos;
    char *keep = n ? malloc(n) : NULL;
    if (n && keep == NULL)
        return -1;
    if (n)
        memcpy(keep, scratch + w->rpos, n);
    w->rbuf = keep;
    w->rpos = 0;
    w->rlen = (uint32_t)n;
    return 0;
}

unsigned ws_run(struct ws_conn *w)
{
    run_begin(w);
    unsigned f = run(w);
    if (run_end(w) < 0)
        f = WS_DONE | WS_BROKEN;
    account(w);
    return f;
}

void ws_peer_closed(struct ws_conn *w)
{
    w->peer_fin = 1;
}

unsigned ws_shed(struct ws_conn *w)
{
    if (w->wpend != NULL) {
        /* Its peer does not take what it owes: a close frame would wait
         * behind the same bytes. Drop it. */
        w->failed = 1;
        return WS_DONE | WS_BROKEN;
    }
    if (busy_get(w) < 0)
        return WS_DONE | WS_BROKEN;
    msg_free(w->b);
    (void)fail(w->b->ctx, w, 1009);
    return ws_run(w);
}

void ws_free(struct ws_conn *w)
{
    const struct module *m = w->route->module;
    if (m->on_close)
        m->on_close(w, w->close_received ? w->close_received : 1006);
    ws_detach(w);
}

const struct config_route *ws_route(const struct ws_conn *w)
{
    return w->route;
}

int ws_export(const struct ws_conn *w, const char **pending, size_t *len)
{
    /* No busy state: no message half received, no echo or close queued. */
    if (w->b != NULL || w->wpend != NULL || w->closing || w->failed || w->eof)
        return -1;
    *pending = w->rbuf ? w->rbuf + w->rpos : NULL;
    *len = w->rlen - w->rpos;
    return 0;
}

void ws_detach(struct ws_conn *w)
{
    busy_free(w);
    free(w->rbuf);
    free(w->wpend);
    mem_move(&w->held, 0);
    pool_free(&ws_pool, w);
}

/* An unmasked frame straight into wbuf, behind the output gathered so far.
 * -1 if it has to be queued through wslay: it does not fit, or older
 * output is still waiting for the socket. */
static int frame_out(struct ws_conn *w, int opcode, const uint8_t *data, size_t len)
{
    size_t h = len < 126 ? 2 : len < 65536 ? 4 : 10;
    if (h + len > WS_WBUF_SIZE)
        return -1;
    if (wbuf_len + h + len > WS_WBUF_SIZE && flush(w) < 0)
        return -1;
    if (w->wpend != NULL)
        return -1;
    h = frame_header_encode(wbuf + wbuf_len, opcode, len);
    memcpy(wbuf + wbuf_len + h, data, len);
    wbuf_len += h + len;
    return 0;
}

int ws_send(struct ws_conn *w, enum ws_msg_type type, const uint8_t *data, size_t len)
{
    struct wslay_event_msg msg = { .opcode = (uint8_t)type, .msg = data, .msg_length = len };
    if (w->failed || w->closing)
        return -1;
    /* Nothing queued in wslay: this frame may go out ahead of it. */
    if (w == running && w->b == NULL && frame_out(w, type, data, len) == 0)
        return 0;
    if (busy_get(w) < 0)
        return -1;
    int r = wslay_event_queue_msg(w->b->ctx, &msg);
    if (w != running)
        account(w);
    return r == 0 ? 0 : -1;
}

void ws_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    size_t len = reason ? strlen(reason) : 0;
    if (busy_get(w) < 0) {
        w->closing = 1;
        w->failed = 1; /* out of memory: drop the connection */
        return;
    }
    queue_close(w, code, reason, len > 123 ? 123 : len);
    if (w != running)
        account(w);
}

void ws_ping(struct ws_conn *w)
{
    struct wslay_event_msg msg = { .opcode = WSLAY_PING, .msg = NULL, .msg_length = 0 };
    if (busy_get(w) == 0)
        (void)wslay_event_queue_msg(w->b->ctx, &msg);
    account(w);
}

void *ws_data(struct ws_conn *w)
{
    return w->data;
}

void ws_set_data(struct ws_conn *w, void *data)
{
    w->data = data;
}
