#define _GNU_SOURCE
#include "util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        s = now_ns() ^ ((uint64_t)getpid() << 32);
    return s;
}

_Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wsbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Shared by all threads: one failure mode hit by 100k connections must not
 * bury the first few messages that explain it. */
static atomic_int log_counts[16];

void elog(int kind, const char *fmt, ...)
{
    if (atomic_fetch_add(&log_counts[kind & 15], 1) >= LOG_LIMIT)
        return;
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* One fprintf, so lines from concurrent threads do not interleave. */
    fprintf(stderr, "wsbench: %s\n", buf);
}
