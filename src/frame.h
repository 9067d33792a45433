/* The WebSocket codec's frame level: RFC 6455 section 5 rules judged from
 * a frame header and the frames before it, unmasking, and the encoding of
 * every frame the server sends. No I/O: easy to test and fuzz.
 *
 * Decoding is ours, encoding is wslay's frame layer (wslay_frame_send):
 * wslay_frame_recv unmasks a byte at a time, 14.5 us per 16 KiB frame
 * against 0.4 us here (scripts/RESULTS.md), which would double the
 * server's CPU per 16 KiB echo. */
#ifndef WSECHOD_FRAME_H
#define WSECHOD_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { FRAME_CONT = 0, FRAME_TEXT = 1, FRAME_BINARY = 2,
       FRAME_CLOSE = 8, FRAME_PING = 9, FRAME_PONG = 10 };

struct frame_info {
    int fin, opcode, masked;
    unsigned rsv;
    uint64_t payload_len;
    size_t header_len;
    uint8_t mask[4];
};

/* What the previous frames of the connection leave behind. */
struct frame_seq {
    uint32_t message_len;   /* bytes of the data message in progress (<= 1 GiB) */
    uint8_t in_message;     /* a plain byte: copied per frame, unlike a bitfield */
    uint8_t compressed;     /* the message (its first frame had RSV1) */
};

struct frame_limits {
    uint64_t max_frame;
    uint64_t max_message;
    int rsv1_ok;            /* permessage-deflate was agreed */
};

/* Parses a header at p. Returns its length (filling *fi), 0 if more bytes
 * are needed, or -1 if the header itself breaks the protocol. Inline, like
 * frame_check: they run for every frame, and are most of its cost. */
static inline int frame_parse(const uint8_t *p, size_t avail, struct frame_info *fi)
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

static inline int frame_is_control(int opcode)
{
    return opcode >= 8;
}

/* Judges a client frame in sequence; returns 0, or the close code to fail
 * the connection with (1002 protocol error, 1009 too big). */
static inline uint16_t frame_check(struct frame_seq *seq, const struct frame_info *fi,
                     const struct frame_limits *lim)
{
    int op = fi->opcode;
    /* The common shape first: a whole text or binary message within limits. */
    if ((op == FRAME_TEXT || op == FRAME_BINARY) && fi->fin && fi->masked && fi->rsv == 0 &&
        !seq->in_message && fi->payload_len <= lim->max_frame &&
        fi->payload_len <= lim->max_message) {
        seq->message_len = (uint32_t)fi->payload_len;
        seq->compressed = 0;
        return 0;
    }
    if ((fi->rsv & ~(lim->rsv1_ok ? 4u : 0u)) != 0 || !fi->masked)
        return 1002; /* no other extension is negotiated; clients must mask */
    if ((fi->rsv & 4) && (op == FRAME_CONT || frame_is_control(op)))
        return 1002; /* RSV1 marks a message's first frame only (RFC 7692 6) */
    if ((op > FRAME_BINARY && op < FRAME_CLOSE) || op > FRAME_PONG)
        return 1002; /* reserved opcode */
    if (frame_is_control(op))
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
    if (op != FRAME_CONT)
        seq->compressed = (fi->rsv & 4) != 0;
    return 0;
}

/* Judges a whole close frame's (masked) payload. Returns 0 and the code to
 * echo in *code (0: none), or the close code to fail with (1002, 1007). */
uint16_t frame_close_check(const struct frame_info *fi, const uint8_t *payload,
                           uint16_t *code);
/* Codes a peer may send (RFC 6455 7.4 and the IANA registry). */
int frame_code_allowed(unsigned code);

/* Unmasks (or masks) p[0..n) in place; phase is the payload offset of p[0]
 * (a frame read in pieces goes on where the last piece ended). */
void frame_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t phase);

/* The longest header of an unmasked (server) frame. */
#define FRAME_HEADER_MAX 10

/* Where an encoded frame goes: a[0..alen) then b[0..blen) (a header and
 * its payload in one call, when the header is known). 0, or -1 if it could
 * not take the bytes. */
typedef int frame_sink(void *arg, const void *a, size_t alen, const void *b, size_t blen);
/* With frame_write's opcode: the frame has RSV1 set (a compressed message). */
#define FRAME_RSV1 0x40
/* Encodes an unmasked, final frame with wslay's frame layer into sink (a
 * header, then the payload). One wslay context serves the whole process:
 * between two frames it holds no state. 0, or -1 if the sink failed. */
int frame_write(frame_sink *sink, void *arg, int opcode, const uint8_t *data, size_t len);
/* A close frame with code and reason (cut to 123 bytes). */
int frame_write_close(frame_sink *sink, void *arg, uint16_t code, const char *reason);

#endif
