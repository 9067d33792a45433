#include "frame.h"

#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "utf8.h"

int frame_parse(const uint8_t *p, size_t avail, struct frame_info *fi)
{
    if (avail < 2)
        return 0;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0) + ((p[1] & 0x80) ? 4 : 0);
    if (avail < h)
        return 0;
    fi->fin = p[0] >> 7;
    fi->rsv = (p[0] >> 4) & 7;
    fi->opcode = p[0] & 0x0f;
    fi->masked = p[1] >> 7;
    fi->header_len = h;
    if (len == 126) {
        len = (uint64_t)p[2] << 8 | p[3];
        if (len < 126)
            return -1; /* the length must use the fewest bytes */
    } else if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; i++)
            len = len << 8 | p[i];
        if (len < 65536 || (len >> 63))
            return -1;
    }
    fi->payload_len = len;
    if (fi->masked)
        memcpy(fi->mask, p + h - 4, 4);
    return (int)h;
}

static int is_control(int opcode)
{
    return opcode >= 8;
}

uint16_t frame_check(struct frame_seq *seq, const struct frame_info *fi,
                     const struct frame_limits *lim)
{
    int op = fi->opcode;
    if (fi->rsv != 0 || !fi->masked)
        return 1002; /* no extension is negotiated; clients must mask */
    if ((op > FRAME_BINARY && op < FRAME_CLOSE) || op > FRAME_PONG)
        return 1002; /* reserved opcode */
    if (is_control(op))
        return (fi->payload_len > 125 || !fi->fin) ? 1002 : 0;
    if ((op == FRAME_CONT) != seq->in_message)
        return 1002; /* continuation without a start, or a start inside one */
    if (fi->payload_len > lim->max_frame)
        return 1009;
    uint64_t total = (op == FRAME_CONT ? seq->message_len : 0) + fi->payload_len;
    if (total > lim->max_message)
        return 1009;
    seq->message_len = (uint32_t)total; /* max_message is at most 1 GiB */
    seq->in_message = !fi->fin;
    return 0;
}

int frame_code_allowed(unsigned code)
{
    return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 && code != 1006) ||
           (code >= 3000 && code <= 4999);
}

uint16_t frame_close_check(const struct frame_info *fi, const uint8_t *payload,
                           uint16_t *code)
{
    uint8_t buf[125];
    size_t n = (size_t)fi->payload_len;
    *code = 0;
    if (n == 0)
        return 0;
    if (n == 1)
        return 1002;
    for (size_t i = 0; i < n; i++)
        buf[i] = payload[i] ^ fi->mask[i % 4];
    *code = (uint16_t)(buf[0] << 8 | buf[1]);
    if (!frame_code_allowed(*code))
        return 1002;
    return utf8_valid(buf + 2, n - 2) ? 0 : 1007;
}

/* 16 bytes at a time (GCC/clang vector extension: SSE2/NEON registers). */
typedef uint8_t frame_v16 __attribute__((vector_size(16)));

void frame_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t phase)
{
    uint8_t m[4];
    for (int k = 0; k < 4; k++)
        m[k] = mask[(phase + (uint64_t)k) & 3];
    uint32_t m4;
    memcpy(&m4, m, 4);
    uint64_t m8 = (uint64_t)m4 << 32 | m4, v8; /* the mask twice, in memory order */
    size_t i = 0;
    if (n >= 16) {
        frame_v16 mv, v;
        memcpy(&mv, &m8, 8);
        memcpy((char *)&mv + 8, &m8, 8);
        for (; i + 16 <= n; i += 16) {
            memcpy(&v, p + i, 16);
            v ^= mv;
            memcpy(p + i, &v, 16);
        }
    }
    for (; i + 8 <= n; i += 8) {
        memcpy(&v8, p + i, 8);
        v8 ^= m8;
        memcpy(p + i, &v8, 8);
    }
    for (; i < n; i++)
        p[i] ^= m[i & 3];
}

/* ---- Encoding, through wslay's frame layer ------------------------------ */

/* The sink of the frame being written: wslay's context is made once with
 * fixed callbacks, so the destination is passed beside it. */
static struct {
    wslay_frame_context_ptr ctx;
    frame_sink *sink;
    void *arg;
    int failed;
} E;

static ssize_t enc_send(const uint8_t *data, size_t len, int flags, void *user)
{
    (void)flags;
    (void)user;
    if (E.sink(E.arg, data, len) < 0) {
        E.failed = 1;
        return WSLAY_ERR_WOULDBLOCK;
    }
    return (ssize_t)len;
}

static ssize_t enc_recv(uint8_t *buf, size_t len, int flags, void *user)
{
    (void)buf, (void)len, (void)flags, (void)user;
    return WSLAY_ERR_WOULDBLOCK; /* this context only encodes */
}

static int enc_genmask(uint8_t *buf, size_t len, void *user)
{
    (void)buf, (void)len, (void)user;
    return -1; /* server frames are never masked */
}

static const struct wslay_frame_callbacks enc_callbacks = { enc_send, enc_recv, enc_genmask };

int frame_write(frame_sink *sink, void *arg, int opcode, const uint8_t *data, size_t len)
{
    if (E.ctx == NULL && wslay_frame_context_init(&E.ctx, &enc_callbacks, NULL) != 0)
        return -1;
    struct wslay_frame_iocb io = { .fin = 1, .opcode = (uint8_t)opcode, .payload_length = len,
                                   .data = data, .data_length = len };
    E.sink = sink;
    E.arg = arg;
    E.failed = 0;
    ssize_t r = wslay_frame_send(E.ctx, &io);
    if (E.failed || r != (ssize_t)len) {
        /* A failed sink leaves wslay half-way through a frame: start over. */
        wslay_frame_context_free(E.ctx);
        E.ctx = NULL;
        return -1;
    }
    return 0;
}

int frame_write_close(frame_sink *sink, void *arg, uint16_t code, const char *reason)
{
    uint8_t payload[125];
    size_t rlen = reason ? strlen(reason) : 0;
    rlen = rlen > 123 ? 123 : rlen;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rlen > 0)
        memcpy(payload + 2, reason, rlen);
    return frame_write(sink, arg, FRAME_CLOSE, payload, 2 + rlen);
}
