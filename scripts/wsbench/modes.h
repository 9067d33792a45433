/*
 * modes — the main thread's side of a run: it moves the workers through
 * the phases of the chosen mode, prints progress, and takes the resource
 * samples the report is computed from.
 *
 *   echo      connect all -> RUN (warm-up, window) -> DRAIN -> CLOSE -> EXIT;
 *             --rounds N: [PAUSE (report) -> RUN -> DRAIN] N-1 more times
 *   connrate  RUN from the start (slots connect and recycle) -> EXIT
 *   idle      connect all [-> greet echoes] -> settle -> sample -> window
 *             (hold; --signal: until SIGUSR1) -> POKE -> CLOSE -> EXIT
 *   --signal  READY line on stdout after connecting; each echo round
 *             starts at a SIGUSR1
 *
 * Contract:
 *   run_prepare(r)  before run_modes(), with workers initialised but not
 *       started: the baseline samples (and, in idle mode with -P, one
 *       warm-up exchange with the server). Exits 1 if -P names no process.
 *   run_modes(r)    starts the workers, runs the mode to the end, joins
 *       them, and leaves every sample in r (rounds before the last are
 *       reported on the way, with report_print). Prints progress to stderr
 *       unless -q, and stops early when g_stop is set (SIGINT/SIGTERM).
 */
#ifndef WSBENCH_MODES_H
#define WSBENCH_MODES_H

#include <signal.h>
#include <stdint.h>

#include "procstat.h"

struct run {
    int have_srv;                 /* -P given and found */
    struct procsnap base, s0, s1; /* server: before connecting, window start, end */
    struct cpu c0, c1;            /* client CPU at window start, end */
    struct cpustat k0, k1;        /* per-CPU ticks at window start, end */
    long tcpmem0;                 /* kernel TCP pages before connecting */
    uint64_t connected;           /* open once connecting ended */
    double conn_secs;             /* time connecting took */
    uint64_t idle_open;           /* idle: open when sampled */
    double rss_per_conn, anon_per_conn, tcp_per_conn; /* idle, bytes */
    uint64_t timeouts;            /* messages never echoed */
    uint64_t greeted;             /* idle --greet: echoed on opening */
    int round;                    /* echo --rounds: the window reported (1..) */
    double win_secs;              /* idle: the hold as it happened (--signal ends it) */
};

extern volatile sig_atomic_t g_stop;
extern volatile sig_atomic_t g_go; /* SIGUSR1s received (--signal) */

void run_prepare(struct run *r);
void run_modes(struct run *r);

#endif
