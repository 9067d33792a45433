#include "ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "config.h"

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
    enum { BLOCK_NONE, BLOCK_OUTPUT, BLOCK_CLOSE } blocked; /* why reading stopped */
    unsigned failed : 1;    /* socket error or EOF without a close frame */
    unsigned closing : 1;   /* ws_close was called */
};

/* Size of a complete frame header at p, 0 if more bytes are needed. */
static size_t frame_header(const uint8_t *p, size_t avail, uint64_t *frame_len, int *opcode)
{
    size_t h = 2;
    uint64_t plen;
    if (avail < 2)
        return 0;
    plen = p[1] & 0x7f;
    h += plen == 126 ? 2 : plen == 127 ? 8 : 0;
    h += (p[1] & 0x80) ? 4 : 0;
    if (avail < h)
        return 0;
    if (plen == 126) {
        plen = (uint64_t)p[2] << 8 | p[3];
    } else if (plen == 127) {
        plen = 0;
        for (int i = 2; i < 10; i++)
            plen = plen << 8 | p[i];
    }
    *opcode = p[0] & 0x0f;
    *frame_len = plen > UINT64_MAX - h ? UINT64_MAX : h + plen;
    return h;
}

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

/* Hands wslay the bytes of one frame at a time, so that we see every frame
 * header before wslay does and can stop in front of it. */
static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *user)
{
    struct ws_conn *w = user;
    (void)flags;
    for (;;) {
        size_t avail = w->rlen - w->rpos;
        uint64_t frame_len;
        int opcode;
        if (w->frame_left == 0 &&
            frame_header((uint8_t *)w->rbuf + w->rpos, avail, &frame_len, &opcode)) {
            /* wslay sends control frames before queued data: let the echoes
             * of earlier messages leave before it answers a close. */
            if (opcode == WSLAY_CONNECTION_CLOSE && wslay_event_get_queued_msg_count(ctx)) {
                w->blocked = BLOCK_CLOSE;
                return would_block(ctx, w);
            }
            w->frame_left = frame_len;
        }
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
    if (w->failed || (!reading && !writing))
        return WS_DONE;
    /* wslay stops reading once it has queued a close (peer's or error). */
    int closing = w->closing || !reading || wslay_event_get_close_sent(w->ctx);
    return (writing ? WS_WANT_WRITE : 0) | (closing ? WS_CLOSING : 0);
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
    for (int round = 0; round < WS_ROUNDS; round++) {
        w->blocked = BLOCK_NONE;
        if (wslay_event_want_read(w->ctx) && wslay_event_recv(w->ctx) != 0)
            return WS_DONE;
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0)
            return WS_DONE;
        /* With edge-triggered epoll nobody else will tell us to read again. */
        if (!unblocked(w))
            return status(w);
    }
    return status(w) | WS_AGAIN;
}

void ws_free(struct ws_conn *w)
{
    if (w->module->on_close) {
        uint16_t code = wslay_event_get_close_received(w->ctx)
                        ? wslay_event_get_status_code_received(w->ctx) : 1006;
        w->module->on_close(w, code);
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

void *ws_data(struct ws_conn *w)
{
    return w->data;
}

void ws_set_data(struct ws_conn *w, void *data)
{
    w->data = data;
}
