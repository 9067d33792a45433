/*
 * thread — the worker threads (-j): one epoll loop each, owning a fixed
 * share of the connections, and the phase protocol the main thread drives
 * them with.
 *
 * Contract:
 *   g_phase      set only by the main thread (see modes.h); each worker
 *                acts on a new phase once, then stores it in its ack.
 *   g_win_*      the measurement window (monotonic ns); in_window() says
 *                whether an event at t counts towards the results.
 *   threads_init()   allocates every worker and its connections; must run
 *                    before threads_start(), after options_parse().
 *   threads_start() / threads_join()   run the loops until P_EXIT.
 *   threads_free()   releases what threads_init() took.
 *   total(s)     sum of counter s over workers as last published (as of
 *                each worker's last loop iteration); any thread may call it.
 *   threads_sum()    exact sums of counters and histograms; only after
 *                    threads_join().
 *   A worker's st[] and hist[] are written only by that worker.
 */
#ifndef WSBENCH_THREAD_H
#define WSBENCH_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "options.h"
#include "stats.h"

#define RBUF_SIZE (256u << 10) /* per-thread read buffer */

enum phase { P_CONNECT, P_RUN, P_POKE, P_DRAIN, P_CLOSE, P_EXIT };

struct conn;

struct thr {
    int id, ep;
    pthread_t tid;
    struct conn *conns;
    int nconns, next_connect, pending;
    uint8_t *rbuf, *pat;
    uint64_t rng;
    uint64_t st[ST_N];
    _Atomic uint64_t pub[ST_N];
    uint64_t hist[HBUCKETS];
    uint64_t hist_n;
    atomic_int ack; /* last phase this thread has acted on */
};

extern struct thr thr[MAX_THREADS];
extern atomic_int g_phase;
extern _Atomic uint64_t g_win_start, g_win_end;

/* Inline: asked once per echoed message. A start of 0 means "not yet". */
static inline int in_window(uint64_t t)
{
    uint64_t s = atomic_load_explicit(&g_win_start, memory_order_relaxed);
    return s != 0 && t >= s && t < atomic_load_explicit(&g_win_end, memory_order_relaxed);
}

void threads_init(void);
void threads_start(void);
void threads_join(void);
void threads_free(void);
uint64_t total(enum counter s);
void threads_sum(uint64_t s[ST_N], uint64_t *hist, uint64_t *hist_n);

#endif
