#include "payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "options.h"
#include "util.h"

#define ID_BIN 12
#define ID_TXT 24
/* Offsets into the pattern cycle over 251 (prime) positions, so that
 * consecutive messages of a connection differ; the buffer has room for the
 * largest offset plus a whole message. */
#define PAT_CYCLE 251
#define PAT_SLACK 256

static size_t id_len(void)
{
    size_t il = O.text ? ID_TXT : ID_BIN;
    return il < O.size ? il : O.size;
}

/* Hex in text mode: a text frame must be valid UTF-8. */
static void put_conn_id(uint8_t *d, uint32_t id, uint64_t seq)
{
    if (O.text) {
        static const char hx[] = "0123456789abcdef";
        for (int i = 0; i < 8; i++)
            d[i] = (uint8_t)hx[(id >> (4 * i)) & 15];
        for (int i = 0; i < 16; i++)
            d[8 + i] = (uint8_t)hx[(seq >> (4 * i)) & 15];
    } else {
        for (int i = 0; i < 4; i++)
            d[i] = (uint8_t)(id >> (8 * i));
        for (int i = 0; i < 8; i++)
            d[4 + i] = (uint8_t)(seq >> (8 * i));
    }
}

static size_t pat_off(uint32_t id, uint64_t seq) { return (size_t)((seq * 37 + id) % PAT_CYCLE); }

size_t frame_hdr_len(size_t plen)
{
    return 2 + (plen < 126 ? 0 : plen < 65536 ? 2 : 8) + 4;
}

/* Eight bytes at a time: with large messages masking is most of the
 * client's CPU, which the bench reports and wants small. */
void mask_xor(uint8_t *p, size_t n, const uint8_t mk[4])
{
    uint8_t m8[8] = {mk[0], mk[1], mk[2], mk[3], mk[0], mk[1], mk[2], mk[3]};
    uint64_t m;
    memcpy(&m, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++)
        p[i] ^= mk[i & 3];
}

size_t put_frame_hdr(uint8_t *d, int op, size_t plen, uint64_t *rng, uint8_t mk[4])
{
    size_t h = 0;
    d[h++] = (uint8_t)(0x80 | op);
    if (plen < 126) {
        d[h++] = (uint8_t)(0x80 | plen);
    } else if (plen < 65536) {
        d[h++] = 0x80 | 126;
        d[h++] = (uint8_t)(plen >> 8);
        d[h++] = (uint8_t)plen;
    } else {
        d[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            d[h++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    uint32_t r = (uint32_t)rng_next(rng);
    memcpy(mk, &r, 4);
    memcpy(d + h, mk, 4);
    return h + 4;
}

size_t payload_pattern_len(void) { return O.size + PAT_SLACK; }

/* Printable ASCII in text mode, again for UTF-8 validity. */
void payload_pattern(uint8_t *pat, uint64_t seed)
{
    uint64_t ps = seed ^ 0xabcdef;
    for (size_t k = 0; k < payload_pattern_len(); k++) {
        uint64_t r = rng_next(&ps);
        pat[k] = O.text ? (uint8_t)(' ' + r % 95) : (uint8_t)r;
    }
}

/* --deflate: the one message, plain and compressed. */
static struct {
    uint8_t *text, *z;
    size_t zlen;
} D;

/* Records whose numbers and words change (a fixed LCG: the same text on
 * every run), compressing about as well as everyday JSON does. */
static void varied_json(uint8_t *d, size_t n)
{
    static const char *const words[] = { "alpha", "beta", "gamma", "delta", "user", "price",
                                         "status", "active", "pending", "item", "order", "qty" };
    char rec[160];
    uint32_t x = 12345;
    size_t at = 0;
    while (at < n) {
        uint32_t r[6];
        for (int i = 0; i < 6; i++)
            r[i] = (x = x * 1103515245u + 12345u) >> 8;
        int k = snprintf(rec, sizeof(rec), "{\"id\":%u,\"%s\":\"%s-%u\",\"v\":%u.%02u,\"ok\":%s},",
                         r[0] % 100000, words[r[1] % 12], words[r[2] % 12], r[3] % 1000,
                         r[4] % 1000, r[5] % 100, (r[5] >> 7) & 1 ? "true" : "false");
        size_t take = (size_t)k < n - at ? (size_t)k : n - at;
        memcpy(d + at, rec, take);
        at += take;
    }
}

int payload_deflate_init(void)
{
    static const char rec[] = "{\"user\":12345,\"action\":\"purchase\",\"items\":[{\"id\":\"A1\","
                              "\"name\":\"mouse\",\"price\":25.99},{\"id\":\"B2\",\"name\":"
                              "\"keyboard\",\"price\":89.99}],\"status\":\"approved\"},";
    z_stream zs = { 0 };
    D.text = malloc(O.size ? O.size : 1);
    D.z = malloc(O.size + O.size / 8 + 1024);
    if (D.text == NULL || D.z == NULL ||
        deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    if (O.varied)
        varied_json(D.text, O.size);
    else
        for (size_t i = 0; i < O.size; i++)
            D.text[i] = (uint8_t)rec[i % (sizeof(rec) - 1)];
    zs.next_in = D.text;
    zs.avail_in = (uInt)O.size;
    zs.next_out = D.z;
    zs.avail_out = (uInt)(O.size + O.size / 8 + 1024);
    int r = deflate(&zs, Z_SYNC_FLUSH);
    D.zlen = (O.size + O.size / 8 + 1024) - zs.avail_out;
    deflateEnd(&zs);
    if (r != Z_OK || D.zlen < 4)
        return -1;
    D.zlen -= 4; /* RFC 7692 7.2.1: the empty block's tail goes */
    return 0;
}

const uint8_t *payload_text(void)
{
    return D.text;
}

int payload_inflated_ok(const uint8_t *z, size_t n)
{
    static _Thread_local z_stream zs;
    static _Thread_local int ready;
    static _Thread_local uint8_t *out;
    static const uint8_t tail[4] = { 0, 0, 0xff, 0xff };
    if (!ready && (inflateInit2(&zs, -15) != Z_OK || (out = malloc(O.size + 1)) == NULL))
        return 0;
    ready = 1;
    inflateReset(&zs);
    zs.next_out = out;
    zs.avail_out = (uInt)O.size + 1;
    zs.next_in = (Bytef *)(uintptr_t)z;
    zs.avail_in = (uInt)n;
    int r = inflate(&zs, Z_SYNC_FLUSH);
    if (r == Z_OK || r == Z_BUF_ERROR) {
        zs.next_in = (Bytef *)(uintptr_t)tail;
        zs.avail_in = 4;
        r = inflate(&zs, Z_SYNC_FLUSH);
    }
    size_t got = O.size + 1 - zs.avail_out;
    return (r == Z_OK || r == Z_BUF_ERROR || r == Z_STREAM_END) && got == O.size &&
           memcmp(out, D.text, O.size) == 0;
}

size_t payload_frame_len(void)
{
    return O.deflate ? frame_hdr_len(D.zlen) + D.zlen : frame_hdr_len(O.size) + O.size;
}

size_t payload_build(uint8_t *d, uint32_t id, uint64_t seq, const uint8_t *pat, uint64_t *rng)
{
    if (O.deflate) {
        uint8_t mz[4];
        size_t hz = put_frame_hdr(d, 0x40 | 1, D.zlen, rng, mz);
        memcpy(d + hz, D.z, D.zlen);
        mask_xor(d + hz, D.zlen, mz);
        return hz + D.zlen;
    }
    uint8_t mk[4];
    size_t h = put_frame_hdr(d, O.text ? 1 : 2, O.size, rng, mk);
    uint8_t *p = d + h;
    uint8_t idb[ID_TXT];
    size_t il = id_len();
    put_conn_id(idb, id, seq);
    memcpy(p, idb, il);
    memcpy(p + il, pat + pat_off(id, seq), O.size - il);
    mask_xor(p, O.size, mk);
    return h + O.size;
}

int payload_verify(const uint8_t *d, size_t k, uint64_t off, uint32_t id, uint64_t seq,
                   const uint8_t *pat, struct payload_diff *diff)
{
    uint8_t idb[ID_TXT];
    size_t il = id_len();
    size_t i = 0;
    if (off < il) {
        put_conn_id(idb, id, seq);
        for (; i < k && off + i < il; i++)
            if (d[i] != idb[off + i]) {
                *diff = (struct payload_diff){off + i, d[i], idb[off + i]};
                return -1;
            }
    }
    if (i < k) {
        const uint8_t *e = pat + pat_off(id, seq) + (off + i - il);
        /* memcmp first: the byte loop only runs once something is wrong. */
        if (memcmp(d + i, e, k - i) != 0) {
            size_t j = i;
            while (j < k && d[j] == e[j - i])
                j++;
            *diff = (struct payload_diff){off + j, d[j], e[j - i]};
            return -1;
        }
    }
    return 0;
}
