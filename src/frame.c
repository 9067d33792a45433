#include "frame.h"

#include <string.h>

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

size_t frame_close_encode(uint8_t *out, uint16_t code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    rlen = rlen > 123 ? 123 : rlen;
    size_t h = frame_header_encode(out, FRAME_CLOSE, 2 + rlen);
    out[h] = (uint8_t)(code >> 8);
    out[h + 1] = (uint8_t)code;
    if (rlen > 0)
        memcpy(out + h + 2, reason, rlen);
    return h + 2 + rlen;
}
