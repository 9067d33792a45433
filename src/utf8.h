/* Strict UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), for text messages and close reasons. */
#ifndef WSECHOD_UTF8_H
#define WSECHOD_UTF8_H

#include <stddef.h>
#include <stdint.h>

int utf8_valid(const uint8_t *s, size_t n);
/* For text that arrives in pieces: 0 if s[0..n) cannot begin valid UTF-8;
 * else 1, with *complete the length of its whole sequences (the rest is a
 * valid sequence cut short, to be judged with the bytes that follow). */
int utf8_scan(const uint8_t *s, size_t n, size_t *complete);

#endif
