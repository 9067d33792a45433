#include "frame.h"

#include <string.h>
#include <sys/types.h>
#include <wslay/wslay.h>

#include "utf8.h"

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
    uint8_t rot[4];
    if (phase & 3) { /* the mask as seen from p[0] */
        for (int k = 0; k < 4; k++)
            rot[k] = mask[(phase + (uint64_t)k) & 3];
        mask = rot;
    }
    uint32_t m4, v4;
    memcpy(&m4, mask, 4);
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
    if (i + 8 <= n) {
        memcpy(&v8, p + i, 8);
        v8 ^= m8;
        memcpy(p + i, &v8, 8);
        i += 8;
    }
    if (i + 4 <= n) {
        memcpy(&v4, p + i, 4);
        v4 ^= m4;
        memcpy(p + i, &v4, 4);
        i += 4;
    }
    for (; i < n; i++)
        p[i] ^= mask[i & 3];
}

/* ---- Encoding, through wslay's frame layer ------------------------------ */

/* The sink of the frame being written: wslay's context is made once with
 * fixed callbacks, so the destination is passed beside it, and the header
 * wslay writes first is kept for the cache below. */
static struct {
    wslay_frame_context_ptr ctx;
    frame_sink *sink;
    void *arg;
    int failed;
    uint8_t hdr[FRAME_HEADER_MAX];
    size_t hlen;            /* 0 until wslay wrote the header */
} E;

/* Headers wslay encoded, by opcode and payload length. A header depends on
 * nothing else, echo traffic repeats a few sizes, and a hit spares
 * wslay_frame_send's state machine and its two callbacks (about 130
 * instructions a frame, scripts/RESULTS.md). */
#define HDR_CACHE 64
static struct hdr_entry {
    uint64_t len;
    uint8_t opcode, hlen;
    uint8_t hdr[FRAME_HEADER_MAX];
} hdr_cache[HDR_CACHE];

static ssize_t enc_send(const uint8_t *data, size_t len, int flags, void *user)
{
    (void)flags;
    (void)user;
    if (E.hlen == 0 && len <= FRAME_HEADER_MAX) {
        memcpy(E.hdr, data, len);
        E.hlen = len;
    }
    if (E.sink(E.arg, data, len, NULL, 0) < 0) {
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

/* The frame through wslay; its header then goes into the cache at e. */
static int encode(struct hdr_entry *e, frame_sink *sink, void *arg, int opcode,
                  const uint8_t *data, size_t len)
{
    if (E.ctx == NULL && wslay_frame_context_init(&E.ctx, &enc_callbacks, NULL) != 0)
        return -1;
    struct wslay_frame_iocb io = { .fin = 1, .rsv = (opcode & FRAME_RSV1) ? WSLAY_RSV1_BIT : 0,
                                   .opcode = (uint8_t)(opcode & 0xf), .payload_length = len,
                                   .data = data, .data_length = len };
    E.sink = sink;
    E.arg = arg;
    E.failed = 0;
    E.hlen = 0;
    ssize_t r = wslay_frame_send(E.ctx, &io);
    if (E.failed || r != (ssize_t)len) {
        /* A failed sink leaves wslay half-way through a frame: start over. */
        wslay_frame_context_free(E.ctx);
        E.ctx = NULL;
        return -1;
    }
    if (E.hlen > 0) {
        e->len = len;
        e->opcode = (uint8_t)opcode;
        e->hlen = (uint8_t)E.hlen;
        memcpy(e->hdr, E.hdr, E.hlen);
    }
    return 0;
}

int frame_write(frame_sink *sink, void *arg, int opcode, const uint8_t *data, size_t len)
{
    struct hdr_entry *e = &hdr_cache[(len ^ (size_t)opcode << 4) % HDR_CACHE];
    if (e->hlen == 0 || e->len != len || e->opcode != opcode)
        return encode(e, sink, arg, opcode, data, len);
    return sink(arg, e->hdr, e->hlen, data, len);
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
