/* The parser follows RFC 7692 section 5's grammar over RFC 6455 9.1's
 * extension list: offers separated by commas, each a name then
 * ";"-separated parameters, a value a token or a quoted string. */
#include "pmd.h"

#include "mem.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* ---- Negotiation -------------------------------------------------------- */

struct offer {
    int server_nct, client_nct; /* seen */
    int server_bits;            /* 0: not given */
    int client_bits;            /* -1: not given; 0: given without a value */
};

struct cursor {
    const char *p, *end;
};

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* A token or a quoted string into out (NUL-terminated); 0, or -1. */
static int word(struct cursor *c, char *out, size_t cap, int quoted_ok)
{
    size_t n = 0;
    int quoted = quoted_ok && c->p < c->end && *c->p == '"';
    if (quoted)
        c->p++;
    while (c->p < c->end && (quoted ? *c->p != '"' : tchar((unsigned char)*c->p))) {
        if (n + 1 >= cap || (quoted && !tchar((unsigned char)*c->p)))
            return -1; /* window bits are digits, quoted or not */
        out[n++] = *c->p++;
    }
    if (quoted && (c->p >= c->end || *c->p++ != '"'))
        return -1;
    out[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* 8..15 written plainly; -1 otherwise. */
static int window_bits(const char *v)
{
    if (!isdigit((unsigned char)v[0]) || v[0] == '0' || strlen(v) > 2)
        return -1;
    int b = atoi(v);
    return b >= 8 && b <= 15 ? b : -1;
}

/* One parameter into o; -1 if it makes the offer unacceptable. */
static int param(struct offer *o, const char *name, const char *value)
{
    if (strcmp(name, "server_no_context_takeover") == 0 && !value && !o->server_nct)
        return o->server_nct = 1, 0;
    if (strcmp(name, "client_no_context_takeover") == 0 && !value && !o->client_nct)
        return o->client_nct = 1, 0;
    if (strcmp(name, "server_max_window_bits") == 0 && value && !o->server_bits)
        return (o->server_bits = window_bits(value)) < 0 ? -1 : 0;
    if (strcmp(name, "client_max_window_bits") == 0 && o->client_bits < 0)
        return (o->client_bits = value ? window_bits(value) : 0) < 0 ? -1 : 0;
    return -1; /* unknown, repeated, or a value where none belongs (or none where one must) */
}

/* Reads the offer at c up to its comma: 1 an acceptable permessage-deflate
 * offer into *o, 0 another extension or one to decline, -1 broken syntax
 * (the rest of the line is skipped). */
static int read_offer(struct cursor *c, struct offer *o)
{
    char name[64], value[64];
    int ok = 1;
    *o = (struct offer){ 0, 0, 0, -1 };
    skip_ows(c);
    if (word(c, name, sizeof(name), 0) < 0)
        return -1;
    int ours = strcasecmp(name, "permessage-deflate") == 0;
    for (skip_ows(c); c->p < c->end && *c->p == ';'; skip_ows(c)) {
        c->p++;
        skip_ows(c);
        if (word(c, name, sizeof(name), 0) < 0)
            return -1;
        skip_ows(c);
        int has = c->p < c->end && *c->p == '=';
        if (has) {
            c->p++;
            skip_ows(c);
            if (word(c, value, sizeof(value), 1) < 0)
                return -1;
        }
        if (ours && ok && param(o, name, has ? value : NULL) < 0)
            ok = 0;
    }
    if (c->p < c->end && *c->p != ',')
        return -1;
    if (c->p < c->end)
        c->p++;
    return ours && ok;
}

/* What we answer an acceptable offer with; 0 if we cannot honour it. */
static int answer(const struct config_pmd *cf, const struct offer *o, struct pmd_params *out,
                  char *resp, size_t cap)
{
    int sbits = (int)cf->server_max_window_bits;
    if (o->server_bits && o->server_bits < 9)
        return 0; /* zlib has no 256-byte window: the next offer, or none */
    if (o->server_bits && o->server_bits < sbits)
        sbits = o->server_bits;
    int n = snprintf(resp, cap, "permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover");
    if (o->server_bits && n > 0 && (size_t)n < cap)
        n += snprintf(resp + n, cap - (size_t)n, "; server_max_window_bits=%d", sbits);
    int cmax = o->client_bits > 0 ? o->client_bits : 15;
    if (o->client_bits >= 0 && (int)cf->client_max_window_bits < cmax && n > 0 &&
        (size_t)n < cap)
        n += snprintf(resp + n, cap - (size_t)n, "; client_max_window_bits=%u",
                      cf->client_max_window_bits);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    out->server_bits = (uint8_t)sbits;
    return 1;
}

int pmd_negotiate(const struct config_pmd *cf, const struct pmd_line *lines, size_t n,
                  struct pmd_params *out, char *resp, size_t cap)
{
    struct offer o;
    out->server_bits = 0;
    if (!cf->enabled)
        return 0;
    for (size_t i = 0; i < n; i++) {
        struct cursor c = { lines[i].p, lines[i].p + lines[i].len };
        while (c.p < c.end) {
            int r = read_offer(&c, &o);
            if (r < 0)
                break;
            if (r > 0 && answer(cf, &o, out, resp, cap))
                return 1;
            skip_ows(&c);
        }
    }
    return 0;
}

/* ---- The worker's compressor and decompressor --------------------------- */

#define DEFLATERS 4             /* distinct (level, mem_level, bits) at once */
#define KEEP_BYTES (256 << 10)  /* buffers beyond this are given back */

static const uint8_t tail[4] = { 0x00, 0x00, 0xff, 0xff };

static struct {
    z_stream in;
    int in_ready;
    struct { z_stream z; int ready, level, mem, bits; } out[DEFLATERS];
    uint8_t *ibuf, *obuf;       /* inflated / deflated messages */
    size_t icap, ocap;
    unsigned evict;             /* the deflater to give up next */
    uint32_t held;              /* the two buffers, in the worker's budget (mem.h) */
} Z;

static void account(void)
{
    mem_move(&Z.held, (Z.icap ? Z.icap + MEM_BLOCK_OVERHEAD : 0) +
                      (Z.ocap ? Z.ocap + MEM_BLOCK_OVERHEAD : 0));
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

int pmd_inflate(const uint8_t *in, size_t n, size_t max, const uint8_t **out, size_t *outlen)
{
    size_t len = 0;
    if (!Z.in_ready) {
        if (inflateInit2(&Z.in, -15) != Z_OK)
            return PMD_NOMEM;
        Z.in_ready = 1;
    } else if (inflateReset(&Z.in) != Z_OK) {
        return PMD_NOMEM;
    }
    int r = inflate_some(in, n, max, &len);
    if (r == PMD_OK)
        r = inflate_some(tail, sizeof(tail), max, &len);
    if (r < 0)
        r = PMD_OK; /* a final block: what follows it is not ours to read */
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

int pmd_deflate(const struct config_pmd *cf, const struct pmd_params *pp, const uint8_t *in,
                size_t n, const uint8_t **out, size_t *outlen)
{
    z_stream *z = deflater(cf, pp->server_bits ? pp->server_bits : 15);
    if (z == NULL || grow(&Z.obuf, &Z.ocap, deflateBound(z, (uLong)n) + 16) < 0)
        return PMD_NOMEM;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    z->next_out = Z.obuf;
    z->avail_out = (uInt)Z.ocap;
    if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in != 0)
        return PMD_NOMEM;
    size_t len = Z.ocap - z->avail_out;
    if (len >= 4 && memcmp(Z.obuf + len - 4, tail, 4) == 0)
        len -= 4; /* RFC 7692 7.2.1: the sync flush's empty block goes */
    *out = Z.obuf;
    *outlen = len;
    return PMD_OK;
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
    account();
}
