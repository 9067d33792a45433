#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "config.h"
#include "frame.h"

/* Rounds of read+write per ws_run before yielding to other connections. */
#define WS_ROUNDS 4
/* Read-ahead buffer, allocated only while bytes are waiting in it. */
#define WS_RBUF_SIZE 16384

struct ws_conn {
    wslay_event_context_ptr ctx;
    const struct module *module;
    void *data;
    int fd;
    size_t max_pending;
    char *rbuf;             /* read ahead, freed whenever it empties */
    size_t rpos, rlen, rcap;
    uint64_t frame_left;    /* bytes of the current frame not yet given to wslay */
    struct frame_seq seq;
    struct frame_limits lim;
    enum { BLOCK_NONE, BLOCK_OUTPUT, BLOCK_CLOSE } blocked; /* why reading stopped */
    uint16_t close_received;/* the peer's close code (1005: none given) */
    unsigned failed : 1;    /* socket error or EOF without a close frame */
    unsigned closing : 1;   /* a close frame is queued or sent */
    unsigned active : 1;    /* bytes arrived during this ws_run */
};

/* 1: bytes were read, 0: would block, -1: EOF or error. */
static int fill(struct ws_conn *w)
{
    if (w->rcap < WS_RBUF_SIZE) {
        /* The handshake's leftovers came in a buffer of their own size. */
        char *grown = realloc(w->rbuf, WS_RBUF_SIZE);
        if (grown == NULL)
            return -1;
        w->rbuf = grown;
        w->rcap = WS_RBUF_SIZE;
    }
    if (w->rpos > 0) {
        memmove(w->rbuf, w->rbuf + w->rpos, w->rlen - w->rpos);
        w->rlen -= w->rpos;
        w->rpos = 0;
    }
    for (;;) {
        ssize_t n = read(w->fd, w->rbuf + w->rlen, w->rcap - w->rlen);
        if (n > 0) {
            w->rlen += (size_t)n;
            w->active = 1;
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
        free(w->rbuf);
        w->rbuf = NULL;
        w->rpos = w->rlen = w->rcap = 0;
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
    w->rpos += fi->header_len + (size_t)fi->payload_len;
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
    uint16_t code = h < 0 ? 1002 : h == 0 ? 0 : frame_check(&w->seq, &fi, &w->lim);
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
            w->rpos += n;
            w->frame_left -= n;
            return (ssize_t)n;
        }
        /* Backpressure: a peer that sends but does not read stops being read. */
        if (wslay_event_get_queued_msg_length(ctx) > w->max_pending) {
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

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *user)
{
    struct ws_conn *w = user;
    (void)flags;
    for (;;) {
        ssize_t n = send(w->fd, data, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        w->failed = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    struct ws_conn *w = user;
    (void)ctx;
    /* Control frames are answered by wslay itself (pong, close echo). */
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        w->module->on_message(w, (enum ws_msg_type)arg->opcode, arg->msg, arg->msg_length);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .on_msg_recv_callback = on_msg,
};

struct ws_conn *ws_open(int fd, const struct config *cf, const struct module *m,
                        char *pending, size_t len)
{
    struct ws_conn *w = calloc(1, sizeof(*w));
    if (w == NULL || wslay_event_context_server_init(&w->ctx, &callbacks, w) != 0) {
        free(w);
        free(pending);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, cf->max_message_size);
    w->module = m;
    w->fd = fd;
    w->max_pending = cf->max_pending_output;
    w->lim.max_frame = cf->max_frame_size;
    w->lim.max_message = cf->max_message_size;
    w->rbuf = len ? pending : NULL;
    w->rlen = w->rcap = len;
    if (len == 0)
        free(pending);
    if (m->on_open && m->on_open(w) != 0)
        ws_close(w, 1011, "module refused the connection");
    return w;
}

static unsigned status(struct ws_conn *w)
{
    int reading = wslay_event_want_read(w->ctx), writing = wslay_event_want_write(w->ctx);
    unsigned f = (w->active ? WS_ACTIVE : 0) | (w->blocked == BLOCK_OUTPUT ? WS_STALLED : 0);
    if (w->failed)
        return f | WS_DONE | WS_BROKEN;
    if (!reading && !writing)
        return f | WS_DONE;
    /* wslay stops reading once it has queued a close (peer's or error). */
    int closing = w->closing || !reading || wslay_event_get_close_sent(w->ctx);
    return f | (writing ? WS_WANT_WRITE : 0) | (closing ? WS_CLOSING : 0);
}

/* Reading stopped for output to drain; has it drained enough? */
static int unblocked(struct ws_conn *w)
{
    if (w->blocked == BLOCK_OUTPUT)
        return wslay_event_get_queued_msg_length(w->ctx) <= w->max_pending;
    return w->blocked == BLOCK_CLOSE && wslay_event_get_queued_msg_count(w->ctx) == 0;
}

unsigned ws_run(struct ws_conn *w)
{
    w->active = 0;
    for (int round = 0; round < WS_ROUNDS; round++) {
        w->blocked = BLOCK_NONE;
        if (wslay_event_want_read(w->ctx) && wslay_event_recv(w->ctx) != 0)
            return WS_DONE | WS_BROKEN;
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0)
            return WS_DONE | WS_BROKEN;
        /* With edge-triggered epoll nobody else will tell us to read again. */
        if (!unblocked(w))
            return status(w);
    }
    return status(w) | WS_AGAIN;
}

void ws_free(struct ws_conn *w)
{
    if (w->module->on_close) {
        w->module->on_close(w, w->close_received ? w->close_received : 1006);
    }
    wslay_event_context_free(w->ctx);
    free(w->rbuf);
    free(w);
}

int ws_send(struct ws_conn *w, enum ws_msg_type type, const uint8_t *data, size_t len)
{
    struct wslay_event_msg msg = { .opcode = (uint8_t)type, .msg = data, .msg_length = len };
    return wslay_event_queue_msg(w->ctx, &msg) == 0 ? 0 : -1;
}

void ws_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    size_t len = reason ? strlen(reason) : 0;
    w->closing = 1;
    /* Ignored when a close is already queued or sent: the first one stands. */
    (void)wslay_event_queue_close(w->ctx, code, (const uint8_t *)reason, len > 123 ? 123 : len);
}

void ws_ping(struct ws_conn *w)
{
    struct wslay_event_msg msg = { .opcode = WSLAY_PING, .msg = NULL, .msg_length = 0 };
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
