#define _GNU_SOURCE
#include "inbound.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "payload.h"
#include "run.h"
#include "stats.h"
#include "util.h"

/* The failure paths below count and log, then return WS_KILL for the
 * caller to pass up unchanged. */
static int mismatch(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int mismatch(struct conn *c, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    c->t->st[ST_E_MISMATCH]++;
    elog(ST_E_MISMATCH, "conn %u seq %" PRIu64 ": mismatch: %s", c->id, c->recv_seq, buf);
    return WS_KILL;
}

static int proto_error(struct conn *c, const char *why)
{
    c->t->st[ST_E_PROTO]++;
    elog(ST_E_PROTO, "conn %u: protocol error from server: %s", c->id, why);
    return WS_KILL;
}

static int verify(struct conn *c, const uint8_t *d, size_t k, uint64_t off)
{
    struct payload_diff df;
    if (payload_verify(d, k, off, c->id, c->recv_seq, c->t->pat, &df) == 0)
        return WS_OK;
    return mismatch(c, "byte %" PRIu64 ": got 0x%02x, sent 0x%02x", df.off, df.got, df.sent);
}

/* Echoes come back in order, so the oldest send timestamp is this one's. */
static int message_done(struct conn *c, uint64_t now)
{
    struct thr *t = c->t;
    if (c->msg_z) {
        if (!payload_inflated_ok(c->zbuf, c->zlen))
            return mismatch(c, "compressed echo (%u bytes) does not inflate to what was sent",
                            c->zlen);
        c->msg_off = O.size;
        c->zlen = 0;
        c->msg_z = 0;
    }
    if (c->msg_off != O.size)
        return mismatch(c, "message of %" PRIu64 " bytes, sent %zu", c->msg_off, O.size);
    if (c->inflight == 0)
        return mismatch(c, "unsolicited message");
    uint64_t lat = now - c->ts[c->recv_seq % (uint64_t)O.inflight];
    c->recv_seq++;
    c->inflight--;
    t->st[ST_INFLIGHT]--;
    t->st[ST_MSGS]++;
    if (c->poke) {
        c->poke = 0;
        t->st[ST_POKE_OK]++;
    }
    if (in_window(now)) {
        t->st[ST_MSGS_WIN]++;
        t->st[ST_BYTES_WIN] += O.size;
        t->hist[hist_index(lat)]++;
        t->hist_n++;
    }
    c->msg_op = 0;
    return WS_OK;
}

static int close_frame(struct conn *c)
{
    struct thr *t = c->t;
    int code = c->ctrl_len >= 2 ? (c->ctrl[0] << 8 | c->ctrl[1]) : 1005;
    if (c->state == C_CLOSING) {
        t->st[ST_CLOSE_OK]++;
    } else {
        t->st[ST_E_CLOSE]++;
        elog(ST_E_CLOSE, "conn %u: server sent close %d '%.*s' (inflight %u)", c->id, code,
             c->ctrl_len > 2 ? c->ctrl_len - 2 : 0, (const char *)c->ctrl + 2, c->inflight);
    }
    return WS_KILL;
}

/* A ping's payload stays in c->ctrl for the pong: it is cleared when the
 * next frame starts, not here. */
static int frame_done(struct conn *c, uint64_t now)
{
    c->in_payload = 0;
    c->fh_have = 0;
    c->fh_need = 2;
    switch (c->f_op) {
    case 0: case 1: case 2:
        return c->f_fin ? message_done(c, now) : WS_OK;
    case 9:
        c->t->st[ST_PINGS]++;
        return WS_PONG;
    case 8:
        return close_frame(c);
    }
    return WS_OK; /* a pong */
}

/* Copies header bytes; once the first two are in, the full header length
 * is known. Returns the bytes of p taken. */
static size_t take_header(struct conn *c, const uint8_t *p, size_t n)
{
    size_t k = c->fh_need - c->fh_have;
    if (k > n)
        k = n;
    memcpy(c->fh + c->fh_have, p, k);
    c->fh_have += (uint8_t)k;
    if (c->fh_have == 2) {
        unsigned l7 = c->fh[1] & 0x7f;
        c->fh_need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (c->fh[1] & 0x80 ? 4 : 0));
    }
    return k;
}

static uint64_t header_payload_len(const uint8_t *fh)
{
    unsigned l7 = fh[1] & 0x7f;
    uint64_t len = l7;
    if (l7 == 126) {
        len = (uint64_t)fh[2] << 8 | fh[3];
    } else if (l7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | fh[2 + i];
    }
    return len;
}

/* RFC 6455 5.4/5.5 rules, plus: data must have the opcode we sent. */
static int check_opcode(struct conn *c)
{
    int expect_op = O.text ? 1 : 2;
    if (c->f_op >= 8) {
        if (!c->f_fin || c->f_len > 125 || (c->f_op != 8 && c->f_op != 9 && c->f_op != 10))
            return proto_error(c, "bad control frame");
    } else if (c->f_op == 0) {
        if (!c->msg_op)
            return proto_error(c, "continuation without a message");
    } else if (c->f_op == 1 || c->f_op == 2) {
        if (c->msg_op)
            return proto_error(c, "new message inside a fragmented one");
        if (c->f_op != expect_op)
            return mismatch(c, "opcode %d, sent %d", c->f_op, expect_op);
        c->msg_op = c->f_op;
        c->msg_off = 0;
    } else {
        return proto_error(c, "reserved opcode");
    }
    return WS_OK;
}

static int start_frame(struct conn *c, uint64_t now)
{
    uint8_t b0 = c->fh[0], b1 = c->fh[1];
    if (b1 & 0x80)
        return proto_error(c, "masked frame");
    int rsv1 = O.deflate && (b0 & 0x40) && ((b0 & 15) == 1 || (b0 & 15) == 2);
    if ((b0 & 0x70) && !rsv1)
        return proto_error(c, "RSV bits set");
    c->f_fin = b0 >> 7;
    c->f_op = b0 & 15;
    if (c->f_op == 1 || c->f_op == 2)
        c->msg_z = (uint8_t)rsv1;
    c->f_len = header_payload_len(c->fh);
    c->f_off = 0;
    c->ctrl_len = 0;
    if (check_opcode(c) != WS_OK)
        return WS_KILL;
    /* Checked on the header, before buffering: a server gone wrong must not
     * make us read gigabytes to find out. */
    if (c->f_op < 8 && c->msg_off + c->f_len > O.size + (c->msg_z ? O.size / 8 + 1024 : 0))
        return mismatch(c, "message longer than %zu bytes", O.size);
    c->in_payload = 1;
    return c->f_len == 0 ? frame_done(c, now) : WS_OK;
}

/* Data is verified as it streams in and never stored: a message may be
 * up to 64 MiB and many are in flight. */
/* --deflate: a compressed echo is kept whole (it is checked inflated); a
 * plain one is compared as it streams. */
static int take_deflate(struct conn *c, const uint8_t *p, size_t k)
{
    if (!c->msg_z)
        return memcmp(p, payload_text() + c->msg_off, k) == 0 ? WS_OK
               : mismatch(c, "plain echo differs near byte %" PRIu64, c->msg_off);
    if (c->zlen + k > c->zcap) {
        uint32_t cap = c->zcap ? c->zcap * 2 : 4096;
        while (cap < c->zlen + k)
            cap *= 2;
        uint8_t *b = realloc(c->zbuf, cap);
        if (b == NULL)
            return mismatch(c, "out of memory for a compressed echo");
        c->zbuf = b;
        c->zcap = cap;
    }
    memcpy(c->zbuf + c->zlen, p, k);
    c->zlen += (uint32_t)k;
    return WS_OK;
}

static int take_payload(struct conn *c, const uint8_t *p, size_t k)
{
    if (c->f_op < 8) {
        if ((O.deflate ? take_deflate(c, p, k) : verify(c, p, k, c->msg_off)) != WS_OK)
            return WS_KILL;
        c->msg_off += k;
    } else {
        memcpy(c->ctrl + c->ctrl_len, p, k);
        c->ctrl_len += (uint8_t)k;
    }
    c->f_off += k;
    return WS_OK;
}

enum ws_verdict ws_consume(struct conn *c, const uint8_t *p, size_t n, uint64_t now, size_t *used)
{
    size_t i = 0;
    int r = WS_OK;
    while (i < n && r == WS_OK) {
        if (!c->in_payload) {
            i += take_header(c, p + i, n - i);
            if (c->fh_have == c->fh_need)
                r = start_frame(c, now);
            continue;
        }
        uint64_t rem = c->f_len - c->f_off;
        size_t k = rem < n - i ? (size_t)rem : n - i;
        r = take_payload(c, p + i, k);
        i += k;
        if (r == WS_OK && c->f_off == c->f_len)
            r = frame_done(c, now);
    }
    *used = i;
    return (enum ws_verdict)r;
}
