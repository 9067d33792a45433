#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "config.h"
#include "frame.h"
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

/* Output the socket did not take yet. */
struct wpend {
    uint32_t len, pos;
    char data[];
};

/* Kept small: an idle WebSocket costs this plus its struct conn. */
struct ws_conn {
    /* Exists only while a message, an echo or a close is in progress: an
     * idle connection holds none of wslay's ~4 KiB of buffers. */
    wslay_event_context_ptr ctx;
    const struct config_route *route; /* its module, and its path for a handoff */
    void *data;
    char *rbuf;             /* read ahead, freed whenever it empties */
    struct wpend *wpend;
    uint32_t frame_left;    /* bytes of the current frame not yet given to wslay */
    struct frame_seq seq;
    uint32_t rpos, rlen;
    int fd;
    uint32_t after_close;   /* bytes read since our close frame was queued */
    uint16_t close_received;/* the peer's close code (1005: none given) */
    uint8_t blocked;        /* BLOCK_*: why reading stopped */
    uint8_t failed : 1;     /* socket error or EOF without a close frame */
    uint8_t closing : 1;    /* a close frame is queued or sent */
    uint8_t active : 1;     /* bytes arrived during this ws_run */
    uint8_t drained : 1;    /* a short read emptied the socket this run */
};

static struct pool ws_pool = POOL_INIT(struct ws_conn);

/* The worker's configuration: one per process, like the connections. */
static const struct config *cf;
/* Bytes read during the current ws_run, to yield to other connections. */
static size_t run_read;

enum { BLOCK_NONE, BLOCK_OUTPUT, BLOCK_CLOSE, BLOCK_YIELD };

/* 1: bytes were read, 0: would block (or we will not read now), -1: EOF
 * or error. */
static int fill(struct ws_conn *w)
{
    if (w->drained)
        return 0; /* new bytes will raise a new edge-triggered event */
    if (run_read >= WS_RUN_READ_MAX) {
        w->blocked = BLOCK_YIELD;
        return 0;
    }
    /* Closing: nothing the peer sends matters until our close frame is
     * out; after that we read only to find its close, and a peer that
     * keeps sending instead is left unread until close_timeout drops it
     * (no reset sooner: our close frame may still be queued to it). */
    if (w->closing && (!wslay_event_get_close_sent(w->ctx) || w->wpend != NULL ||
                       w->after_close > WS_CLOSING_READ_MAX))
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
                w->after_close += (uint32_t)n;
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
}

/* Output the socket has not taken yet, in wslay's queue and in wpend. */
static size_t pending_output(const struct ws_conn *w)
{
    return (w->ctx ? wslay_event_get_queued_msg_length(w->ctx) : 0) +
           (w->wpend ? w->wpend->len - w->wpend->pos : 0);
}

/* Backpressure: reading more would queue output beyond max_pending_output. */
static int output_blocked(const struct ws_conn *w)
{
    return pending_output(w) > cf->max_pending_output;
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

/* Fails the connection: close frame with code, read nothing more. */
static ssize_t fail(wslay_event_context_ptr ctx, struct ws_conn *w, uint16_t code)
{
    w->closing = 1;
    (void)wslay_event_queue_close(ctx, code, NULL, 0);
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
    struct frame_limits lim = { cf->max_frame_size, cf->max_message_size };
    uint16_t code = h < 0 ? 1002 : h == 0 ? 0 : frame_check(&w->seq, &fi, &lim);
    if (code) {
        *ret = fail(ctx, w, code);
        return -1;
    }
    if (h == 0 || (fi.opcode == FRAME_CLOSE && avail < (size_t)h + fi.payload_len))
        return 0;
    if (fi.opcode == FRAME_CLOSE) {
        /* wslay sends control frames before queued data: let the echoes
         * of earlier messages leave before the close is answered. */
        if (wslay_event_get_queued_msg_count(ctx)) {
            w->blocked = BLOCK_CLOSE;
            *ret = would_block(ctx, w);
        } else {
            *ret = on_close_frame(ctx, w, &fi);
        }
        return -1;
    }
    w->frame_left = (uint64_t)h + fi.payload_len;
    return 1;
}

/* Hands wslay the bytes of one frame at a time, so that every frame header
 * is judged before wslay sees it and reading can stop in front of it. */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user)
{
    struct ws_conn *w = user;
    ssize_t ret;
    (void)flags;
    for (;;) {
        size_t avail = w->rlen - w->rpos;
        if (w->frame_left == 0 && avail > 0 && gate(ctx, w, &ret) < 0)
            return ret;
        if (w->frame_left > 0 && avail > 0) {
            size_t n = avail < len ? avail : len;
            n = n < w->frame_left ? n : (size_t)w->frame_left;
            memcpy(buf, w->rbuf + w->rpos, n);
            w->rpos += (uint32_t)n;
            w->frame_left -= n;
            return (ssize_t)n;
        }
        /* Backpressure: a peer that sends but does not read stops being read. */
        if (output_blocked(w)) {
            w->blocked = BLOCK_OUTPUT;
            return would_block(ctx, w);
        }
        int r = fill(w);
        if (r == 0)
            return would_block(ctx, w);
        if (r < 0) {
            w->failed = 1; /* EOF or error: the peer is gone */
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
    }
}

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

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    struct ws_conn *w = user;
    (void)ctx;
    /* Control frames are answered by wslay itself (pong, close echo). */
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        w->route->module->on_message(w, (enum ws_msg_type)arg->opcode, arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_msg_recv_callback = on_msg,
};

static int ctx_get(struct ws_conn *w)
{
    if (w->ctx != NULL)
        return 0;
    if (wslay_event_context_server_init(&w->ctx, &callbacks, w) != 0) {
        w->ctx = NULL;
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, cf->max_message_size);
    return 0;
}

/* Between messages wslay holds nothing we need: give its memory back. */
static void ctx_put_if_idle(struct ws_conn *w)
{
    if (w->ctx != NULL && !w->closing && w->frame_left == 0 && !w->seq.in_message &&
        wslay_event_get_queued_msg_count(w->ctx) == 0) {
        wslay_event_context_free(w->ctx);
        w->ctx = NULL;
    }
}

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
    return w;
}

static unsigned status(struct ws_conn *w)
{
    int reading = w->ctx ? wslay_event_want_read(w->ctx) : 1;
    int writing = (w->ctx && wslay_event_want_write(w->ctx)) || w->wpend != NULL;
    unsigned f = (w->active ? WS_ACTIVE : 0) | (w->blocked == BLOCK_OUTPUT ? WS_STALLED : 0);
    if (w->failed)
        return f | WS_DONE | WS_BROKEN;
    if (!reading && !writing)
        return f | WS_DONE;
    /* wslay stops reading once it has queued a close (peer's or error). */
    int closing = w->closing || !reading || (w->ctx && wslay_event_get_close_sent(w->ctx));
    return f | (writing ? WS_WANT_WRITE : 0) | (closing ? WS_CLOSING : 0);
}

/* wslay treats a short write as a full socket and stops; only the socket
 * saying so (output left in wpend) should stop us. */
static int send_all(struct ws_conn *w)
{
    while (w->wpend == NULL && wslay_event_want_write(w->ctx)) {
        wbuf_short = 0;
        int r = wslay_event_send(w->ctx);
        if (flush(w) < 0 || r != 0)
            return -1;
        if (!wbuf_short)
            break;
    }
    return 0;
}

/* Reading stopped for output to drain; has it drained enough? */
static int unblocked(struct ws_conn *w)
{
    if (w->blocked == BLOCK_OUTPUT)
        return !output_blocked(w);
    return w->blocked == BLOCK_CLOSE && wslay_event_get_queued_msg_count(w->ctx) == 0;
}

/* The general path: frames through wslay, a few rounds of read and write. */
static unsigned slow_run(struct ws_conn *w)
{
    unsigned f;
    if (ctx_get(w) < 0)
        return WS_DONE | WS_BROKEN;
    for (int round = 0;; round++) {
        w->blocked = BLOCK_NONE;
        if (wslay_event_want_read(w->ctx) && wslay_event_recv(w->ctx) != 0)
            return WS_DONE | WS_BROKEN;
        int pending = w->wpend != NULL ? flush_pending(w) : 0;
        if (pending < 0 || send_all(w) < 0)
            return WS_DONE | WS_BROKEN;
        if (w->blocked == BLOCK_YIELD) {
            f = status(w) | WS_AGAIN;
            break;
        }
        /* With edge-triggered epoll nobody else will tell us to read again. */
        if (!unblocked(w)) {
            f = status(w);
            break;
        }
        if (round + 1 == WS_ROUNDS) {
            f = status(w) | WS_AGAIN;
            break;
        }
    }
    ctx_put_if_idle(w);
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
    while (w->ctx == NULL && w->wpend == NULL && !w->closing && !w->failed) {
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
    return run_end(w) < 0 ? WS_DONE | WS_BROKEN : f;
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
    /* No wslay context: no message half received, no echo or close queued. */
    if (w->ctx != NULL || w->wpend != NULL || w->closing || w->failed)
        return -1;
    *pending = w->rbuf ? w->rbuf + w->rpos : NULL;
    *len = w->rlen - w->rpos;
    return 0;
}

void ws_detach(struct ws_conn *w)
{
    if (w->ctx != NULL)
        wslay_event_context_free(w->ctx);
    free(w->rbuf);
    free(w->wpend);
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
    uint8_t *p = wbuf + wbuf_len;
    p[0] = (uint8_t)(0x80 | opcode);
    if (h == 2) {
        p[1] = (uint8_t)len;
    } else if (h == 4) {
        p[1] = 126;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(p + h, data, len);
    wbuf_len += h + len;
    return 0;
}

int ws_send(struct ws_conn *w, enum ws_msg_type type, const uint8_t *data, size_t len)
{
    struct wslay_event_msg msg = { .opcode = (uint8_t)type, .msg = data, .msg_length = len };
    /* Nothing queued in wslay: this frame may go out ahead of it. */
    if (w == running && w->ctx == NULL && !w->closing && !w->failed &&
        frame_out(w, type, data, len) == 0)
        return 0;
    if (w->failed || ctx_get(w) < 0)
        return -1;
    return wslay_event_queue_msg(w->ctx, &msg) == 0 ? 0 : -1;
}

void ws_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    size_t len = reason ? strlen(reason) : 0;
    w->closing = 1;
    if (ctx_get(w) < 0) {
        w->failed = 1; /* out of memory: drop the connection */
        return;
    }
    /* Ignored when a close is already queued or sent: the first one stands. */
    (void)wslay_event_queue_close(w->ctx, code, (const uint8_t *)reason, len > 123 ? 123 : len);
}

void ws_ping(struct ws_conn *w)
{
    struct wslay_event_msg msg = { .opcode = WSLAY_PING, .msg = NULL, .msg_length = 0 };
    if (ctx_get(w) == 0)
        (void)wslay_event_queue_msg(w->ctx, &msg);
}

void *ws_data(struct ws_conn *w)
{
    return w->data;
}

void ws_set_data(struct ws_conn *w, void *data)
{
    w->data = data;
}
