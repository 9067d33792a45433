/* The inside of a JSON string (RFC 8259) from arbitrary bytes, for log
 * lines that must parse as JSON whatever a message carries: '"' and '\'
 * are escaped, control characters (U+0000..U+001F and DEL) become \u00XX,
 * valid UTF-8 passes through unchanged, and each byte that is not part of
 * a valid UTF-8 sequence becomes \ufffd (the replacement character), so
 * the result is always valid UTF-8 and valid JSON. */
#ifndef WSECHOD_JSONSTR_H
#define WSECHOD_JSONSTR_H

#include <stddef.h>

/* Writes the escaped form of s[0..len) into dst[0..cap) without quotes or
 * a NUL, and returns the bytes written. Output that does not fit is cut
 * before the first character (escape or UTF-8 sequence) that would not
 * fit whole, so a cut result is still a valid string's inside. */
size_t json_escape(char *dst, size_t cap, const char *s, size_t len);

#endif
