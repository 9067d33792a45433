#include "pmd.h"

#include "mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
#include <zlib.h>

/* ---- A connection's windows --------------------------------------------- */

/* The last cap bytes (at most) of one direction's uncompressed stream, in
 * order. The buffer grows as the stream does, to cap and no further. */
struct pmd_window {
    uint8_t *buf;
    uint32_t len, size, cap;
};

struct pmd_ctx {
    struct pmd_window in, out;  /* the client's stream; ours */
};

static int window_reserve(struct pmd_window *w, size_t want)
{
    if (want <= w->size)
        return 0;
    size_t size = w->size ? w->size : 1024;
    while (size < want)
        size *= 2;
    if (size > w->cap)
        size = w->cap;
    uint8_t *p = realloc(w->buf, size);
    if (p == NULL)
        return -1;
    w->buf = p;
    w->size = (uint32_t)size;
    return 0;
}

/* Appends p[0..n) to w, dropping from its head what falls out of reach. */
static int window_add(struct pmd_window *w, const uint8_t *p, size_t n)
{
    if (w->cap == 0)
        return 0;
    if (n >= w->cap) {
        if (window_reserve(w, w->cap) < 0)
            return -1;
        memcpy(w->buf, p + n - w->cap, w->cap);
        w->len = w->cap;
        return 0;
    }
    size_t keep = w->len < w->cap - n ? w->len : w->cap - n;
    if (keep > 0)
        memmove(w->buf, w->buf + w->len - keep, keep);
    w->len = (uint32_t)keep;
    if (window_reserve(w, keep + n) < 0)
        return -1;
    memcpy(w->buf + keep, p, n);
    w->len = (uint32_t)(keep + n);
    return 0;
}

static uint32_t out_cap(const struct config_pmd *cf, const struct pmd_params *pp)
{
    uint32_t most = 1u << pp->server_bits;
    return !pp->server_takeover ? 0 : cf->server_history < most ? (uint32_t)cf->server_history
                                                                : most;
}

static struct pmd_ctx *ctx_make(uint32_t in_cap, uint32_t out_cap_)
{
    struct pmd_ctx *cx = in_cap || out_cap_ ? calloc(1, sizeof(*cx)) : NULL;
    if (cx != NULL) {
        cx->in.cap = in_cap;
        cx->out.cap = out_cap_;
    }
    return cx;
}

struct pmd_ctx *pmd_ctx_new(const struct config_pmd *cf, const struct pmd_params *pp)
{
    return ctx_make(pp->client_takeover ? 1u << pp->client_bits : 0, out_cap(cf, pp));
}

void pmd_ctx_free(struct pmd_ctx *cx)
{
    if (cx != NULL) {
        free(cx->in.buf);
        free(cx->out.buf);
        free(cx);
    }
}

void pmd_ctx_params(const struct pmd_ctx *cx, struct pmd_params *pp)
{
    int bits = 8;
    while (bits < 15 && (1u << bits) < cx->in.cap)
        bits++;
    pp->client_bits = (uint8_t)(cx->in.cap ? bits : 15);
    pp->client_takeover = cx->in.cap != 0;
    pp->server_takeover = cx->out.cap != 0;
}

size_t pmd_ctx_held(const struct pmd_ctx *cx)
{
    if (cx == NULL)
        return 0;
    return sizeof(*cx) + MEM_BLOCK_OVERHEAD + (cx->in.size ? cx->in.size + MEM_BLOCK_OVERHEAD : 0) +
           (cx->out.size ? cx->out.size + MEM_BLOCK_OVERHEAD : 0);
}

/* Export: in.cap, in.len, out.cap, out.len (host order: both ends are
 * this machine), then the two windows' bytes. */
size_t pmd_ctx_export(const struct pmd_ctx *cx, uint8_t *buf, size_t cap)
{
    uint32_t h[4] = { cx->in.cap, cx->in.len, cx->out.cap, cx->out.len };
    size_t n = sizeof(h) + cx->in.len + cx->out.len;
    if (n > cap)
        return 0;
    memcpy(buf, h, sizeof(h));
    if (cx->in.len)
        memcpy(buf + sizeof(h), cx->in.buf, cx->in.len);
    if (cx->out.len)
        memcpy(buf + sizeof(h) + cx->in.len, cx->out.buf, cx->out.len);
    return n;
}

struct pmd_ctx *pmd_ctx_import(const struct pmd_params *pp, const uint8_t *buf, size_t len)
{
    uint32_t h[4];
    if (len < sizeof(h))
        return NULL;
    memcpy(h, buf, sizeof(h));
    int in_ok = pp->client_takeover ? h[0] == 1u << pp->client_bits : h[0] == 0;
    int out_ok = pp->server_takeover ? h[2] > 0 && h[2] <= 1u << pp->server_bits : h[2] == 0;
    if (!in_ok || !out_ok || h[1] > h[0] || h[3] > h[2] || len != sizeof(h) + h[1] + h[3])
        return NULL;
    struct pmd_ctx *cx = ctx_make(h[0], h[2]);
    if (cx == NULL || window_add(&cx->in, buf + sizeof(h), h[1]) < 0 ||
        window_add(&cx->out, buf + sizeof(h) + h[1], h[3]) < 0) {
        pmd_ctx_free(cx);
        return NULL;
    }
    return cx;
}

/* ---- The worker's compressor and decompressor --------------------------- */

#define DEFLATERS 4             /* distinct (level, mem_level, bits) at once */
#define KEEP_BYTES (256 << 10)  /* buffers beyond this are given back */

static const uint8_t tail[4] = { 0x00, 0x00, 0xff, 0xff };

static struct {
    z_stream in;
    int in_ready;
    struct { z_stream z; int ready, level, mem, bits; } out[DEFLATERS];
    struct libdeflate_decompressor *whole_in;
    struct { struct libdeflate_compressor *c; int level; } whole_out[DEFLATERS];
    uint8_t *ibuf, *obuf, *zbuf;/* inflated / deflated messages; a whole one's input */
    size_t icap, ocap, zcap;
    unsigned evict;             /* the deflater to give up next */
    int redundant;              /* the last message we sent shrank 16-fold or more */
    int in_redundant;           /* the last one inflated had grown as much */
    uint32_t held;              /* the two buffers, in the worker's budget (mem.h) */
} Z;

static void account(void)
{
    mem_move(&Z.held, (Z.icap ? Z.icap + MEM_BLOCK_OVERHEAD : 0) +
                      (Z.ocap ? Z.ocap + MEM_BLOCK_OVERHEAD : 0) +
                      (Z.zcap ? Z.zcap + MEM_BLOCK_OVERHEAD : 0));
}

static int grow(uint8_t **buf, size_t *cap, size_t want)
{
    if (want <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < want)
        c *= 2;
    uint8_t *p = realloc(*buf, c);
    if (p == NULL)
        return -1;
    *buf = p;
    *cap = c;
    account();
    return 0;
}

/* Runs the inflater over in[0..n) into Z.ibuf from *len on, growing it up
 * to max + 1 bytes (one more tells "too big" from "exactly max"). */
static int inflate_some(const uint8_t *in, size_t n, size_t max, size_t *len)
{
    Z.in.next_in = (Bytef *)(uintptr_t)in;
    Z.in.avail_in = (uInt)n;
    for (;;) {
        if (*len == Z.icap && grow(&Z.ibuf, &Z.icap, *len < max + 1 ? *len + 1 : max + 1) < 0)
            return PMD_NOMEM;
        size_t room = (Z.icap < max + 1 ? Z.icap : max + 1) - *len;
        if (room == 0)
            return PMD_TOO_BIG;
        Z.in.next_out = Z.ibuf + *len;
        Z.in.avail_out = (uInt)(room > (1u << 30) ? 1u << 30 : room);
        uInt before = Z.in.avail_out;
        int r = inflate(&Z.in, Z_SYNC_FLUSH);
        *len += before - Z.in.avail_out;
        if (*len > max)
            return PMD_TOO_BIG;
        if (r == Z_STREAM_END || (r == Z_OK && Z.in.avail_in == 0 && Z.in.avail_out > 0) ||
            (r == Z_BUF_ERROR && Z.in.avail_in == 0))
            return r == Z_STREAM_END ? -1 : PMD_OK; /* -1: the stream ended here */
        if (r != Z_OK && r != Z_BUF_ERROR)
            return r == Z_MEM_ERROR ? PMD_NOMEM : PMD_BAD;
    }
}

/* Without the client's context: the whole message at once (libdeflate),
 * which wants a stream that ends. After the tail RFC 7692 7.2.2 restores
 * (an empty stored block) comes an empty final block of fixed codes. The
 * output buffer grows fourfold until the message fits, or max does not. */
static int inflate_whole(const uint8_t *in, size_t n, size_t max, size_t *len)
{
    static const uint8_t end[6] = { 0x00, 0x00, 0xff, 0xff, 0x03, 0x00 };
    if (Z.whole_in == NULL && (Z.whole_in = libdeflate_alloc_decompressor()) == NULL)
        return PMD_NOMEM;
    if (grow(&Z.zbuf, &Z.zcap, n + sizeof(end)) < 0)
        return PMD_NOMEM;
    memcpy(Z.zbuf, in, n);
    memcpy(Z.zbuf + n, end, sizeof(end));
    size_t want = n < 4096 ? 16384 : 4 * n;
    for (;;) {
        size_t cap = want < max + 1 ? want : max + 1;
        if (grow(&Z.ibuf, &Z.icap, cap) < 0)
            return PMD_NOMEM;
        cap = Z.icap < max + 1 ? Z.icap : max + 1;
        size_t used;
        enum libdeflate_result r = libdeflate_deflate_decompress_ex(
            Z.whole_in, Z.zbuf, n + sizeof(end), Z.ibuf, cap, &used, len);
        if (r == LIBDEFLATE_SUCCESS)
            return *len > max ? PMD_TOO_BIG : PMD_OK;
        if (r != LIBDEFLATE_INSUFFICIENT_SPACE)
            return PMD_BAD;
        if (cap > max)
            return PMD_TOO_BIG;
        want = 4 * cap;
    }
}

/* With it (or while messages are extremely redundant, as for deflating):
 * zlib's inflater, the client's window set as its dictionary. */
static int inflate_stream(struct pmd_ctx *cx, const uint8_t *in, size_t n, size_t max,
                          size_t *len)
{
    if (!Z.in_ready) {
        if (inflateInit2(&Z.in, -15) != Z_OK)
            return PMD_NOMEM;
        Z.in_ready = 1;
    } else if (inflateReset(&Z.in) != Z_OK) {
        return PMD_NOMEM;
    }
    /* For a raw stream zlib takes a dictionary at any point. */
    if (cx != NULL && cx->in.len > 0 &&
        inflateSetDictionary(&Z.in, cx->in.buf, cx->in.len) != Z_OK)
        return PMD_NOMEM;
    int r = inflate_some(in, n, max, len);
    if (r == PMD_OK)
        r = inflate_some(tail, sizeof(tail), max, len);
    if (r < 0)
        r = PMD_OK; /* a final block: what follows it is not ours to read */
    if (r == PMD_OK && cx != NULL && window_add(&cx->in, Z.ibuf, *len) < 0)
        r = PMD_NOMEM;
    return r;
}

int pmd_inflate(struct pmd_ctx *cx, const uint8_t *in, size_t n, size_t max,
                const uint8_t **out, size_t *outlen)
{
    size_t len = 0;
    int fresh = cx == NULL || cx->in.cap == 0;
    int r = fresh && !Z.in_redundant ? inflate_whole(in, n, max, &len)
                                     : inflate_stream(fresh ? NULL : cx, in, n, max, &len);
    if (fresh && r == PMD_OK)
        Z.in_redundant = len >= 16 * n;
    *out = Z.ibuf;
    *outlen = len;
    return r;
}

static z_stream *deflater(const struct config_pmd *cf, int bits)
{
    int level = (int)cf->compression_level, mem = (int)cf->mem_level, free_slot = -1;
    for (int i = 0; i < DEFLATERS; i++) {
        if (Z.out[i].ready && Z.out[i].level == level && Z.out[i].mem == mem &&
            Z.out[i].bits == bits)
            return deflateReset(&Z.out[i].z) == Z_OK ? &Z.out[i].z : NULL;
        if (!Z.out[i].ready && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        /* Settings changed by reloads: one makes way, in turn. In place: a
         * z_stream's state points back at it, so it must never move. */
        free_slot = Z.evict++ % DEFLATERS;
        deflateEnd(&Z.out[free_slot].z);
        Z.out[free_slot].ready = 0;
    }
    z_stream *z = &Z.out[free_slot].z;
    memset(z, 0, sizeof(*z));
    if (deflateInit2(z, level, Z_DEFLATED, -bits, mem, Z_DEFAULT_STRATEGY) != Z_OK)
        return Z.out[free_slot].ready = 0, NULL;
    Z.out[free_slot].ready = 1;
    Z.out[free_slot].level = level;
    Z.out[free_slot].mem = mem;
    Z.out[free_slot].bits = bits;
    return z;
}

/* One per compression_level in use (reloads may change it), like zlib's. */
static struct libdeflate_compressor *whole_deflater(int level)
{
    int i, free_slot = -1;
    for (i = 0; i < DEFLATERS; i++) {
        if (Z.whole_out[i].c != NULL && Z.whole_out[i].level == level)
            return Z.whole_out[i].c;
        if (Z.whole_out[i].c == NULL && free_slot < 0)
            free_slot = i;
    }
    i = free_slot >= 0 ? free_slot : (int)(Z.evict++ % DEFLATERS);
    if (Z.whole_out[i].c != NULL)
        libdeflate_free_compressor(Z.whole_out[i].c);
    Z.whole_out[i].c = libdeflate_alloc_compressor(level);
    Z.whole_out[i].level = level;
    return Z.whole_out[i].c;
}

/* Without our context and at the full window: the whole message at once
 * (libdeflate: two to three times zlib's speed on everyday text). Its
 * last block is final, which RFC 7692 7.2.3.3 allows: the byte after it
 * lets a receiver append the usual tail and inflate as always. */
static int deflate_whole(const struct config_pmd *cf, const uint8_t *in, size_t n, size_t *len)
{
    struct libdeflate_compressor *c = whole_deflater((int)cf->compression_level);
    if (c == NULL || grow(&Z.obuf, &Z.ocap, libdeflate_deflate_compress_bound(c, n) + 1) < 0)
        return PMD_NOMEM;
    *len = libdeflate_deflate_compress(c, in, n, Z.obuf, Z.ocap - 1);
    if (*len == 0)
        return PMD_NOMEM;
    Z.obuf[(*len)++] = 0x00;
    return PMD_OK;
}

/* Otherwise zlib's deflater, our window set as its dictionary. */
static int deflate_stream(const struct config_pmd *cf, const struct pmd_params *pp,
                          struct pmd_ctx *cx, const uint8_t *in, size_t n, size_t *len)
{
    z_stream *z = deflater(cf, pp->server_bits ? pp->server_bits : 15);
    if (z == NULL || grow(&Z.obuf, &Z.ocap, deflateBound(z, (uLong)n) + 16) < 0)
        return PMD_NOMEM;
    /* After a reset the stream is at a block boundary, where a raw
     * deflater takes a dictionary; the client's inflater, after our last
     * message's sync flush, is at one too. */
    if (cx != NULL && cx->out.len > 0 &&
        deflateSetDictionary(z, cx->out.buf, cx->out.len) != Z_OK)
        return PMD_NOMEM;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    z->next_out = Z.obuf;
    z->avail_out = (uInt)Z.ocap;
    if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in != 0)
        return PMD_NOMEM;
    *len = Z.ocap - z->avail_out;
    if (*len >= 4 && memcmp(Z.obuf + *len - 4, tail, 4) == 0)
        *len -= 4; /* RFC 7692 7.2.1: the sync flush's empty block goes */
    if (cx != NULL && window_add(&cx->out, in, n) < 0)
        return PMD_NOMEM; /* the client would keep what we did not: never send it */
    return PMD_OK;
}

/* A message without our context goes to libdeflate, except while the
 * worker's messages are extremely redundant (the last one shrank 16-fold
 * or more): there zlib's level 1 skips hashing inside long matches and is
 * the faster one (measured: RESULTS.md). Each message decides the next. */
int pmd_deflate(const struct config_pmd *cf, const struct pmd_params *pp, struct pmd_ctx *cx,
                const uint8_t *in, size_t n, const uint8_t **out, size_t *outlen)
{
    size_t len = 0;
    int fresh = (cx == NULL || cx->out.cap == 0) && (pp->server_bits == 15 || !pp->server_bits);
    int r = fresh && !Z.redundant ? deflate_whole(cf, in, n, &len)
                                  : deflate_stream(cf, pp, cx, in, n, &len);
    if (fresh && r == PMD_OK)
        Z.redundant = n >= 16 * len;
    *out = Z.obuf;
    *outlen = len;
    return r;
}

void pmd_trim(void)
{
    if (Z.icap > KEEP_BYTES) {
        free(Z.ibuf);
        Z.ibuf = NULL;
        Z.icap = 0;
    }
    if (Z.ocap > KEEP_BYTES) {
        free(Z.obuf);
        Z.obuf = NULL;
        Z.ocap = 0;
    }
    if (Z.zcap > KEEP_BYTES) {
        free(Z.zbuf);
        Z.zbuf = NULL;
        Z.zcap = 0;
    }
    account();
}
