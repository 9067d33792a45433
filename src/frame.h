/* RFC 6455 section 5 rules that can be judged from a frame header and the
 * frames before it, applied before wslay sees a frame, and the encoding of
 * the frames the server writes itself. Pure functions, no I/O: easy to test
 * and fuzz. */
#ifndef WSECHOD_FRAME_H
#define WSECHOD_FRAME_H

#include <stddef.h>
#include <stdint.h>

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
    unsigned in_message : 1;
};

struct frame_limits {
    uint64_t max_frame;
    uint64_t max_message;
};

/* Parses a header at p. Returns its length (filling *fi), 0 if more bytes
 * are needed, or -1 if the header itself breaks the protocol. */
int frame_parse(const uint8_t *p, size_t avail, struct frame_info *fi);
/* Judges a client frame in sequence; returns 0, or the close code to fail
 * the connection with (1002 protocol error, 1009 too big). */
uint16_t frame_check(struct frame_seq *seq, const struct frame_info *fi,
                     const struct frame_limits *lim);
/* Judges a whole close frame's (masked) payload. Returns 0 and the code to
 * echo in *code (0: none), or the close code to fail with (1002, 1007). */
uint16_t frame_close_check(const struct frame_info *fi, const uint8_t *payload,
                           uint16_t *code);
/* Codes a peer may send (RFC 6455 7.4 and the IANA registry). */
int frame_code_allowed(unsigned code);

/* The longest header of an unmasked (server) frame. */
#define FRAME_HEADER_MAX 10
/* Writes the header of an unmasked, final frame carrying len bytes into
 * out (FRAME_HEADER_MAX bytes of room) and returns its length. Inline: it
 * is on the fast path of every echo. */
static inline size_t frame_header_encode(uint8_t *out, int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}
/* Writes a whole close frame with code and reason (cut to 123 bytes) into
 * out (FRAME_HEADER_MAX + 125 bytes of room) and returns its length. */
size_t frame_close_encode(uint8_t *out, uint16_t code, const char *reason);

#endif
