/*
 * thread — the worker threads (-j): one epoll loop each, owning a fixed
 * share of the connections and acting on the phases the main thread sets
 * (the shared state itself is in run.h).
 *
 * Contract:
 *   threads_init()   allocates every worker and its connections; must run
 *                    before threads_start(), after options_parse().
 *   threads_start() / threads_join()   run the loops until P_EXIT.
 *   threads_free()   releases what threads_init() took.
 *   total(s)     sum of counter s over workers as last published (as of
 *                each worker's last loop iteration); any thread may call it.
 *   threads_sum()    exact sums of counters and histograms; after
 *                    threads_join(), or while the workers are paused.
 *   threads_wake()   makes every worker look at g_phase now (an idle
 *                    worker otherwise waits up to a second in epoll).
 */
#ifndef WSBENCH_THREAD_H
#define WSBENCH_THREAD_H

#include <stdint.h>

#include "stats.h"

void threads_init(void);
void threads_start(void);
void threads_join(void);
void threads_free(void);
void threads_wake(void);
uint64_t total(enum counter s);
void threads_sum(uint64_t s[ST_N], uint64_t *hist, uint64_t *hist_n);

#endif
