/*
 * wsbench — WebSocket (RFC 6455) load generator for benchmarking echo servers.
 *
 * Epoll, edge-triggered, non-blocking; one event loop per thread (-j).
 * Every connection performs a real opening handshake (random 16-byte key,
 * Sec-WebSocket-Accept checked with libcrypto SHA-1), then sends masked
 * messages carrying (connection id, sequence number) and a pattern, and
 * checks every echoed byte; wss:// adds a TLS handshake (OpenSSL, libssl)
 * before the upgrade. See usage() in options.c for the modes and
 * options.
 *
 * Build: make bench   (-> build/wsbench)
 *
 * Files (each .h states its contract):
 *   options   command line            thread    worker event loops, phases
 *   conn      connection state        inbound   frames from the server
 *   handshake request / response      payload   what is sent and checked
 *   modes     main-thread phase driver, samples
 *   procstat  /proc and rusage        stats     counters, histogram
 *   report    summary + RESULT line   util      clock, rng, logging
 *   tls       wss:// over OpenSSL
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>

#include "modes.h"
#include "options.h"
#include "payload.h"
#include "report.h"
#include "thread.h"
#include "tls.h"

/* One descriptor per connection plus headroom; raising the soft limit up
 * to the hard one needs no privilege, beyond it is worth a try as root. */
static void raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if ((long)rl.rlim_cur >= need)
        return;
    if ((long)rl.rlim_max < need) {
        struct rlimit r2 = {(rlim_t)need, (rlim_t)need};
        if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
            return;
    }
    rl.rlim_cur = (long)rl.rlim_max < need ? rl.rlim_max : (rlim_t)need;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < need)
        fprintf(stderr, "wsbench: warning: RLIMIT_NOFILE is %lu, below the %ld needed\n",
                (unsigned long)rl.rlim_cur, need);
}

/* Ends the current wait early; the run still closes, joins and reports. */
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_go(int sig)
{
    (void)sig;
    g_go++;
}

int main(int argc, char **argv)
{
    static struct run r; /* static: the per-CPU tables are large */
    int rc = options_parse(argc, argv);
    if (rc >= 0)
        return rc;
    raise_nofile((long)O.conns + 64);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_go);
    if (O.tls)
        tls_init();
    if (O.deflate && payload_deflate_init() < 0) {
        fprintf(stderr, "wsbench: cannot compress the --deflate message\n");
        return 1;
    }
    threads_init();
    run_prepare(&r);
    run_modes(&r);
    report_print(&r);
    threads_free();
    return 0;
}
