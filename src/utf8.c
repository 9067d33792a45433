#include "utf8.h"

#include <string.h>

/* Length of the sequence starting at s[0], 0 if it is not valid there, or
 * INCOMPLETE if s[0..n) is a valid start cut short. */
#define INCOMPLETE ((size_t)-1)

static size_t sequence(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;  /* overlong */
        hi = c == 0xed ? 0x9f : 0xbf;  /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;  /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf;  /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < 2)
        return INCOMPLETE;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (i == n)
            return INCOMPLETE;
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

int utf8_scan(const uint8_t *s, size_t n, size_t *complete)
{
    const uint8_t *start = s;
    while (n > 0) {
        /* Mostly ASCII: eight bytes at a time while no high bit is set. */
        uint64_t v;
        while (n >= 8 && (memcpy(&v, s, 8), (v & 0x8080808080808080ull) == 0)) {
            s += 8;
            n -= 8;
        }
        if (n == 0)
            break;
        size_t len = sequence(s, n);
        if (len == 0)
            return 0;
        if (len == INCOMPLETE)
            break;
        s += len;
        n -= len;
    }
    *complete = (size_t)(s - start);
    return 1;
}

int utf8_valid(const uint8_t *s, size_t n)
{
    size_t done;
    return utf8_scan(s, n, &done) && done == n;
}
