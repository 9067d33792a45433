/* src/frame.c: header parsing, sequence rules, close frames, encoding. */
#include <string.h>

#include "frame.h"
#include "tap.h"

static const struct frame_limits lim = { 1000, 3000, 0 };
static const struct frame_limits lim_z = { 1000, 3000, 1 };

static uint16_t check(struct frame_seq *seq, const uint8_t *h, size_t n)
{
    struct frame_info fi;
    int r = frame_parse(h, n, &fi);
    return r <= 0 ? (uint16_t)(r < 0 ? 1002 : 0) : frame_check(seq, &fi, &lim);
}

/* RSV1 (permessage-deflate): only on a data message's first frame, and
 * only when the extension was agreed. */
static void rsv1(void)
{
    struct frame_seq seq = { 0, 0, 0 };
    struct frame_info fi;
    const uint8_t z1[] = { 0xc1, 0x81, 1, 2, 3, 4, 0 }, zstart[] = { 0x41, 0x81, 1, 2, 3, 4, 0 };
    const uint8_t zcont[] = { 0xc0, 0x81, 1, 2, 3, 4, 0 }, cont[] = { 0x80, 0x81, 1, 2, 3, 4, 0 };
    const uint8_t zping[] = { 0xc9, 0x80, 1, 2, 3, 4 }, rsv2[] = { 0xa1, 0x81, 1, 2, 3, 4, 0 };
    frame_parse(z1, sizeof(z1), &fi);
    ok(frame_check(&seq, &fi, &lim) == 1002, "RSV1 without the extension: 1002");
    ok(frame_check(&seq, &fi, &lim_z) == 0 && seq.compressed, "RSV1 message with it");
    frame_parse(zstart, sizeof(zstart), &fi);
    ok(frame_check(&seq, &fi, &lim_z) == 0 && seq.compressed && seq.in_message,
       "a compressed fragmented message starts");
    frame_parse(zcont, sizeof(zcont), &fi);
    ok(frame_check(&seq, &fi, &lim_z) == 1002, "RSV1 on a continuation: 1002");
    frame_parse(zping, sizeof(zping), &fi);
    ok(frame_check(&seq, &fi, &lim_z) == 1002, "RSV1 on a ping: 1002");
    frame_parse(cont, sizeof(cont), &fi);
    ok(frame_check(&seq, &fi, &lim_z) == 0 && seq.compressed && !seq.in_message,
       "its plain continuation ends it, still compressed");
    frame_parse(rsv2, sizeof(rsv2), &fi);
    ok(frame_check(&seq, &fi, &lim_z) == 1002, "RSV2 is never ours");
}

static void parse(void)
{
    struct frame_info fi;
    const uint8_t small[] = { 0x81, 0x85, 1, 2, 3, 4 };
    ok(frame_parse(small, 1, &fi) == 0, "one byte is not a header yet");
    ok(frame_parse(small, 5, &fi) == 0, "a masked header needs its key");
    ok(frame_parse(small, 6, &fi) == 6 && fi.fin && fi.opcode == 1 && fi.masked &&
       fi.payload_len == 5 && fi.mask[3] == 4, "masked 7-bit header");
    const uint8_t m16[] = { 0x82, 0xfe, 0x00, 0x7d, 0, 0, 0, 0 };
    ok(frame_parse(m16, sizeof(m16), &fi) < 0, "16-bit length below 126 is not minimal");
    const uint8_t ok16[] = { 0x82, 0xfe, 0x01, 0x00, 0, 0, 0, 0 };
    ok(frame_parse(ok16, sizeof(ok16), &fi) == 8 && fi.payload_len == 256, "16-bit length");
    const uint8_t m64[] = { 0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0 };
    ok(frame_parse(m64, sizeof(m64), &fi) < 0, "64-bit length below 65536 is not minimal");
    const uint8_t top[] = { 0x82, 0xff, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
    ok(frame_parse(top, sizeof(top), &fi) < 0, "64-bit length with the top bit set");
}

static void sequence(void)
{
    struct frame_seq seq = { 0 };
    const uint8_t start[] = { 0x01, 0x80 | 10, 0, 0, 0, 0 };    /* text, FIN=0 */
    const uint8_t cont[] = { 0x00, 0x80 | 10, 0, 0, 0, 0 };
    const uint8_t last[] = { 0x80, 0x80 | 10, 0, 0, 0, 0 };
    const uint8_t ping[] = { 0x89, 0x80, 0, 0, 0, 0 };
    const uint8_t text[] = { 0x81, 0x80, 0, 0, 0, 0 };
    ok(check(&seq, cont, 6) == 1002, "continuation without a message");
    ok(check(&seq, start, 6) == 0 && seq.in_message, "first fragment");
    ok(check(&seq, ping, 6) == 0, "ping between fragments");
    ok(check(&seq, text, 6) == 1002, "new message inside a fragmented one");
    ok(check(&seq, cont, 6) == 0 && seq.message_len == 20, "continuation adds up");
    ok(check(&seq, last, 6) == 0 && !seq.in_message, "last fragment ends it");
    const uint8_t unmasked[] = { 0x81, 0x00 };
    const uint8_t rsv[] = { 0xc1, 0x80, 0, 0, 0, 0 };
    const uint8_t opcode3[] = { 0x83, 0x80, 0, 0, 0, 0 };
    const uint8_t bigping[] = { 0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0 };
    const uint8_t fragping[] = { 0x09, 0x80, 0, 0, 0, 0 };
    ok(check(&seq, unmasked, 2) == 1002, "unmasked client frame");
    ok(check(&seq, rsv, 6) == 1002, "RSV1 without an extension");
    ok(check(&seq, opcode3, 6) == 1002, "reserved opcode");
    ok(check(&seq, bigping, 8) == 1002, "control frame over 125 bytes");
    ok(check(&seq, fragping, 6) == 1002, "fragmented control frame");
}

static void limits(void)
{
    struct frame_seq seq = { 0 };
    const uint8_t frame1001[] = { 0x82, 0x80 | 126, 0x03, 0xe9, 0, 0, 0, 0 };
    ok(check(&seq, frame1001, 8) == 1009, "frame over max_frame");
    const uint8_t part[] = { 0x02, 0x80 | 126, 0x03, 0xe8, 0, 0, 0, 0 };   /* 1000 */
    const uint8_t more[] = { 0x00, 0x80 | 126, 0x03, 0xe8, 0, 0, 0, 0 };
    const uint8_t end[] = { 0x80, 0x80 | 126, 0x03, 0xe8, 0, 0, 0, 0 };
    ok(check(&seq, part, 8) == 0 && check(&seq, more, 8) == 0 && check(&seq, end, 8) == 0,
       "a message of exactly max_message in fragments");
    struct frame_seq seq2 = { 0 };
    const uint8_t one[] = { 0x00, 0x81, 0, 0, 0, 0 };
    ok(check(&seq2, part, 8) == 0 && check(&seq2, more, 8) == 0 && check(&seq2, more, 8) == 0,
       "fragments up to max_message");
    ok(check(&seq2, one, 6) == 1009, "one byte more is 1009");
}

static void close_frames(void)
{
    struct frame_info fi = { .opcode = FRAME_CLOSE, .masked = 1 };
    uint16_t code = 0;
    uint8_t p[8] = { 0x03, 0xe8, 'b', 'y', 'e' };
    fi.payload_len = 0;
    ok(frame_close_check(&fi, p, &code) == 0 && code == 0, "empty close");
    fi.payload_len = 1;
    ok(frame_close_check(&fi, p, &code) == 1002, "one-byte close payload");
    fi.payload_len = 5;
    ok(frame_close_check(&fi, p, &code) == 0 && code == 1000, "1000 with a reason");
    p[0] = 0x03, p[1] = 0xee; /* 1006 */
    ok(frame_close_check(&fi, p, &code) == 1002, "1006 may not be sent");
    p[0] = 0x0f, p[1] = 0xa0, p[2] = 0xc0; /* 4000, invalid UTF-8 */
    ok(frame_close_check(&fi, p, &code) == 1007, "reason that is not UTF-8");
    ok(frame_code_allowed(1012) && frame_code_allowed(3000) && !frame_code_allowed(1015) &&
       !frame_code_allowed(5000) && !frame_code_allowed(999), "allowed close codes");
}

/* A sink into a fixed buffer, failing when it is full. */
static uint8_t sunk[1 << 21];
static size_t sunk_len, sunk_cap = sizeof(sunk);

static int sink1(const void *data, size_t len)
{
    if (sunk_len + len > sunk_cap)
        return -1;
    if (len > 0)
        memcpy(sunk + sunk_len, data, len);
    sunk_len += len;
    return 0;
}

static int sink(void *arg, const void *a, size_t alen, const void *b, size_t blen)
{
    (void)arg;
    return sink1(a, alen) < 0 || sink1(b, blen) < 0 ? -1 : 0;
}

static size_t encode(int opcode, size_t len)
{
    static uint8_t payload[1 << 20];
    sunk_len = 0;
    return frame_write(sink, NULL, opcode, payload, len) == 0 ? sunk_len : 0;
}

static void encoding(void)
{
    struct frame_info fi;
    ok(encode(FRAME_TEXT, 125) == 127 && sunk[0] == 0x81 && sunk[1] == 125, "7-bit header");
    ok(encode(FRAME_BINARY, 126) == 130 && sunk[1] == 126 && sunk[3] == 126, "16-bit header");
    ok(encode(FRAME_BINARY, 1u << 20) == 10 + (1u << 20), "64-bit header");
    sunk[1] |= 0x80; /* parse it as a client frame would be (with a key) */
    ok(frame_parse(sunk, 14, &fi) == 14 && fi.payload_len == 1u << 20, "64-bit header parses back");
    sunk_len = 0;
    ok(frame_write_close(sink, NULL, 1012, "route removed by reload") == 0 &&
       sunk_len == 2 + 2 + 23 && sunk[0] == 0x88 && sunk[1] == 25 && sunk[2] == 0x03 &&
       sunk[3] == 0xf4 && memcmp(sunk + 4, "route removed by reload", 23) == 0,
       "close frame with a reason");
    char long_reason[200];
    memset(long_reason, 'r', sizeof(long_reason) - 1);
    long_reason[sizeof(long_reason) - 1] = '\0';
    sunk_len = 0;
    ok(frame_write_close(sink, NULL, 1001, long_reason) == 0 && sunk_len == 2 + 125 &&
       sunk[1] == 125, "reason cut to fit a control frame");
    sunk_len = 0;
    ok(frame_write_close(sink, NULL, 1000, NULL) == 0 && sunk_len == 4, "close without a reason");
    sunk_cap = 1; /* a sink that fails mid-frame, then one that works again */
    ok(encode(FRAME_TEXT, 5) == 0, "a failing sink fails the frame");
    sunk_cap = sizeof(sunk);
    ok(encode(FRAME_TEXT, 5) == 7 && sunk[0] == 0x81 && sunk[1] == 5,
       "the encoder starts over after a failed frame");
    uint8_t m[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, key[4] = { 0xa, 0xb, 0xc, 0xd };
    frame_unmask(m, 3, key, 0);
    frame_unmask(m + 3, 6, key, 3);
    ok(m[0] == (1 ^ 0xa) && m[3] == (4 ^ 0xd) && m[4] == (5 ^ 0xa) && m[8] == (9 ^ 0xa),
       "unmasking in pieces keeps the mask's phase");
}

int main(void)
{
    parse();
    rsv1();
    sequence();
    limits();
    close_frames();
    encoding();
    return tap_done();
}
