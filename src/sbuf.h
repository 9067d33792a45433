/* A growable text buffer for responses built in one go (the status
 * listener's pages). A failed allocation sticks: the buffer is then marked
 * failed and further appends do nothing, so callers check once at the end. */
#ifndef WSECHOD_SBUF_H
#define WSECHOD_SBUF_H

#include <stddef.h>

struct sbuf {
    char *p;        /* malloc'd, NUL-terminated while not failed */
    size_t len, cap;
    int failed;
};

void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_add(struct sbuf *b, const char *s, size_t n);
/* s as the inside of a JSON string (jsonstr.h). */
void sbuf_json_str(struct sbuf *b, const char *s);
void sbuf_free(struct sbuf *b);

#endif
