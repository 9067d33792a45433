/*
 * util — helpers every wsbench module may use, from any thread.
 *
 * Contract:
 *   now_ns()       CLOCK_MONOTONIC in nanoseconds.
 *   rng_next(s)    splitmix64 step on a caller-owned state; a state must not
 *                  be shared between threads (each worker owns one).
 *   random_seed()  64 bits from getrandom(), or time^pid if that fails.
 *   die()          "wsbench: <msg>" on stderr, then exit(1).
 *   elog(kind,..)  "wsbench: <msg>" on stderr, at most LOG_LIMIT times per
 *                  kind (0..15, wrapped) over the whole process.
 */
#ifndef WSBENCH_UTIL_H
#define WSBENCH_UTIL_H

#include <stdint.h>
#include <time.h>

#define LOG_LIMIT 5 /* detailed messages per error kind */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Inline: it masks every frame sent, so it sits on the hot path. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t random_seed(void);
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void elog(int kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
