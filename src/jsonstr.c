#include "jsonstr.h"

#include <stdint.h>
#include <string.h>

#include "utf8.h"

/* Bytes of the UTF-8 sequence a lead byte announces; 0 for a byte that
 * cannot start one (utf8_valid then judges the whole sequence). */
static size_t lead_length(uint8_t c)
{
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

/* How s[0..len) starts: the escape to write (out, *outlen) and how many
 * input bytes it stands for. */
static size_t next_char(const uint8_t *s, size_t len, char out[8], size_t *outlen)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t c = s[0];
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        *outlen = 2;
        return 1;
    }
    if (c < 0x20 || c == 0x7f) {
        memcpy(out, "\\u00", 4);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        *outlen = 6;
        return 1;
    }
    if (c < 0x80) {
        out[0] = (char)c;
        *outlen = 1;
        return 1;
    }
    size_t n = lead_length(c);
    if (n != 0 && n <= len && utf8_valid(s, n)) {
        memcpy(out, s, n);
        *outlen = n;
        return n;
    }
    memcpy(out, "\\ufffd", 6);
    *outlen = 6;
    return 1;
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    const uint8_t *in = (const uint8_t *)s;
    size_t used = 0;
    char one[8];
    while (len > 0) {
        size_t n, took = next_char(in, len, one, &n);
        if (n > cap - used)
            break;
        memcpy(dst + used, one, n);
        used += n;
        in += took;
        len -= took;
    }
    return used;
}
