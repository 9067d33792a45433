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

/* Unmasks (or masks) p[0..n) in place; phase is the payload offset of p[0]
 * (a frame read in pieces goes on where the last piece ended). */
void frame_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t phase);

/* Where an encoded frame goes: 0, or -1 if it could not take the bytes. */
typedef int frame_sink(void *arg, const void *data, size_t len);
/* Encodes an unmasked, final frame with wslay's frame layer into sink (a
 * header, then the payload). One wslay context serves the whole process:
 * between two frames it holds no state. 0, or -1 if the sink failed. */
int frame_write(frame_sink *sink, void *arg, int opcode, const uint8_t *data, size_t len);
/* A close frame with code and reason (cut to 123 bytes). */
int frame_write_close(frame_sink *sink, void *arg, uint16_t code, const char *reason);

#endif
