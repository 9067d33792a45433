/* Strict UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), for close reasons. */
#ifndef WSECHOD_UTF8_H
#define WSECHOD_UTF8_H

#include <stddef.h>
#include <stdint.h>

int utf8_valid(const uint8_t *s, size_t n);

#endif
