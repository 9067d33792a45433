#define _GNU_SOURCE
#include "modes.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "handshake.h"
#include "options.h"
#include "report.h"
#include "run.h"
#include "thread.h"
#include "tls.h"
#include "util.h"

volatile sig_atomic_t g_stop;
volatile sig_atomic_t g_go;

#define GO_WAIT_S 3600.0 /* --signal: the longest wait for one SIGUSR1 */
static sig_atomic_t go_seen;
static int g_slow; /* the main thread's waits: once a second */

static uint64_t last_msgs, last_hs;
static uint64_t t0_ns, last_prog_ns;

static uint64_t errors_now(void)
{
    uint64_t errs = 0;
    for (int s = ST_E_CONNECT; s <= ST_E_TIMEOUT; s++)
        if (stat_is_error(s))
            errs += total(s);
    return errs;
}

static void progress(const char *phase)
{
    uint64_t now = now_ns();
    double dt = (now - last_prog_ns) / 1e9;
    last_prog_ns = now;
    uint64_t msgs = total(ST_MSGS), hs = total(ST_HS_OK), errs = errors_now();
    if (!O.quiet) {
        if (O.mode == M_CONNRATE)
            fprintf(stderr, "[%6.1fs] %-8s hs/s=%-9.0f errors=%" PRIu64 "\n", (now - t0_ns) / 1e9, phase,
                    dt > 0 ? (hs - last_hs) / dt : 0, errs);
        else
            fprintf(stderr, "[%6.1fs] %-8s open=%-7" PRIu64 " msgs/s=%-10.0f MB/s=%-8.2f inflight=%-7" PRIu64
                    " errors=%" PRIu64 "\n", (now - t0_ns) / 1e9, phase, total(ST_OPEN),
                    dt > 0 ? (msgs - last_msgs) / dt : 0,
                    dt > 0 ? (double)(msgs - last_msgs) * O.size / dt / 1e6 : 0, total(ST_INFLIGHT), errs);
    }
    last_msgs = msgs;
    last_hs = hs;
}

/* Sleeps until deadline (absolute ns) or until cond() holds, printing
 * progress each second. Bounded by the deadline. */
static void wait_until(uint64_t deadline, const char *phase, int (*cond)(void))
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline || g_stop || (cond && cond()))
            return;
        if (now - last_prog_ns >= 1000000000u)
            progress(phase);
        /* The idle hold wakes once a second (a signal ends the sleep at
         * once): see thread.c. */
        uint64_t left = deadline - now, step = g_slow ? 1000000000u : 20000000u;
        if (left < step)
            step = left;
        struct timespec ts = {(time_t)(step / 1000000000u), (long)(step % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

static uint64_t after(double secs) { return now_ns() + (uint64_t)(secs * 1e9); }

static int all_settled(void) { return total(ST_SETTLED) >= (uint64_t)O.conns; }
static int none_inflight(void) { return total(ST_INFLIGHT) == 0; }
static int none_open(void) { return total(ST_OPEN) == 0; }
static int go_signalled(void) { return g_go != go_seen; }

/* --signal: one SIGUSR1 per step; a signal sent early is not lost. */
static void wait_go(const char *phase)
{
    wait_until(after(GO_WAIT_S), phase, go_signalled);
    if (go_seen != g_go)
        go_seen++;
}

/* Sets the phase and waits (at most 30 s: poking tens of thousands of
 * connections on a loaded machine takes seconds) until every thread has
 * acted on it, so that a phase is not cut short before it began. */
static void set_phase(int p)
{
    atomic_store(&g_phase, p);
    threads_wake();
    if (p == P_EXIT)
        return;
    for (int i = 0; i < 30000; i++) {
        int all = 1;
        for (int k = 0; k < O.threads; k++)
            all &= atomic_load(&thr[k].ack) == p;
        if (all)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static ssize_t xwrite(int fd, struct ssl_st *s, const void *p, size_t n)
{
    return s ? tls_write(s, p, n) : write(fd, p, n);
}

static ssize_t xread(int fd, struct ssl_st *s, void *p, size_t n)
{
    return s ? tls_read(s, p, n) : read(fd, p, n);
}

/* Idle mode: one complete exchange before the baseline, so that code and
 * library pages the server touches once (handshake hashing, first frame;
 * over wss the TLS handshake too) are not counted as per-connection memory.
 * Blocking, best effort. */
static void warm_up_server(void)
{
    static const char frame[] = { (char)0x82, (char)0x84, 1, 2, 3, 4, 'w' ^ 1, 'a' ^ 2, 'r' ^ 3, 'm' ^ 4 };
    char req[1600], buf[4096];
    int fd = socket(O.addr.ss_family, SOCK_STREAM, 0);
    struct timeval tv = { 2, 0 };
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* The RFC's sample key: the answer is not checked here. */
    int n = hs_request(req, sizeof req, "dGhlIHNhbXBsZSBub25jZQ==");
    struct ssl_st *s = NULL;
    int ok = connect(fd, (struct sockaddr *)&O.addr, O.addrlen) == 0;
    if (ok && O.tls)
        ok = tls_handshake(s = tls_new(fd, NULL)) == 1;
    if (ok && xwrite(fd, s, req, (size_t)n) == n && xread(fd, s, buf, sizeof buf) > 0 &&
        xwrite(fd, s, frame, sizeof frame) == (ssize_t)sizeof frame)
        (void)!xread(fd, s, buf, sizeof buf);
    if (s)
        tls_free(s, ok);
    close(fd);
    usleep(200000);
}

void run_prepare(struct run *r)
{
    if (O.mode == M_IDLE && O.server_pid > 0)
        warm_up_server();
    r->have_srv = O.server_pid > 0 && proc_snapshot(O.server_pid, &r->base) == 0;
    if (O.server_pid > 0 && !r->have_srv)
        die("server pid %d not found in /proc", (int)O.server_pid);
    r->tcpmem0 = tcp_mem_pages();
}

static void sample(const struct run *r, struct procsnap *s, struct cpu *c, struct cpustat *k)
{
    if (r->have_srv)
        proc_snapshot(O.server_pid, s);
    *c = self_cpu();
    cpu_snapshot(k);
}

static void connect_all(struct run *r)
{
    wait_until(after(O.connect_timeout), "connect", all_settled);
    if (O.greet)
        wait_until(after(O.connect_timeout), "greet", none_inflight);
    r->conn_secs = (now_ns() - t0_ns) / 1e9;
    r->connected = total(ST_OPEN);
    r->greeted = O.greet ? total(ST_MSGS) : 0;
    if (!O.quiet)
        fprintf(stderr, "wsbench: %" PRIu64 "/%d connections open after %.2f s\n", r->connected, O.conns,
                r->conn_secs);
    if (O.signal) {
        printf("READY open=%" PRIu64 " greeted=%" PRIu64 " errors=%" PRIu64 "\n", r->connected, r->greeted,
               errors_now());
        fflush(stdout);
    }
}

/* Memory per connection is the growth since the baseline taken before any
 * connection existed, divided by the connections actually open. */
static void idle_memory(struct run *r)
{
    r->idle_open = total(ST_OPEN);
    long tcpmem1 = tcp_mem_pages();
    if (r->idle_open > 0 && r->have_srv)
        r->rss_per_conn = ((double)r->s0.rss_kb - (double)r->base.rss_kb) * 1024.0 / (double)r->idle_open;
    if (r->idle_open > 0 && r->have_srv)
        r->anon_per_conn = ((double)r->s0.anon_kb - (double)r->base.anon_kb) * 1024.0 / (double)r->idle_open;
    if (r->idle_open > 0 && r->tcpmem0 >= 0 && tcpmem1 >= 0)
        r->tcp_per_conn = (double)(tcpmem1 - r->tcpmem0) * (double)sysconf(_SC_PAGESIZE) /
                          (double)r->idle_open;
}

static void run_idle(struct run *r, uint64_t win_ns)
{
    wait_until(after(O.settle), "settle", NULL);
    sample(r, &r->s0, &r->c0, &r->k0);
    idle_memory(r);
    uint64_t t = now_ns();
    atomic_store(&g_win_start, t);
    atomic_store(&g_win_end, t + win_ns);
    g_slow = 1;
    wait_until(t + win_ns, "idle", O.signal ? go_signalled : NULL);
    g_slow = 0;
    r->win_secs = (now_ns() - t) / 1e9;
    sample(r, &r->s1, &r->c1, &r->k1);
    set_phase(P_POKE);
    /* Poking tens of thousands at once takes a while on a shared machine,
     * more when many processes poke at once: a bound, left early when all
     * are back. */
    double poke_wait = O.conns / 500.0 > 5 ? O.conns / 500.0 : 5;
    wait_until(after(poke_wait), "poke", none_inflight);
}

/* echo and connrate: warm-up, then the window. The end is stored before
 * the start, so a worker never sees an open window without its end. */
static void run_window(struct run *r, uint64_t win_ns)
{
    if (O.signal)
        wait_go("wait");
    set_phase(P_RUN);
    wait_until(after(O.warmup), "warmup", NULL);
    sample(r, &r->s0, &r->c0, &r->k0);
    uint64_t t = now_ns();
    atomic_store(&g_win_end, t + win_ns);
    atomic_store(&g_win_start, t);
    wait_until(t + win_ns, "run", NULL);
    sample(r, &r->s1, &r->c1, &r->k1);
    if (O.mode == M_CONNRATE) {
        set_phase(P_EXIT);
    } else {
        set_phase(P_DRAIN);
        wait_until(after(O.drain_timeout), "drain", none_inflight);
    }
}

/* Every round but the last is reported here, while its connections wait
 * quietly (PAUSE) for the next; the last one is the caller's. */
static void run_timed(struct run *r, uint64_t win_ns)
{
    for (r->round = 1; !g_stop; r->round++) {
        run_window(r, win_ns);
        if (r->round >= O.rounds || O.mode == M_CONNRATE)
            return;
        set_phase(P_PAUSE);
        r->timeouts = total(ST_INFLIGHT);
        report_print(r);
    }
}

void run_modes(struct run *r)
{
    t0_ns = last_prog_ns = now_ns();
    atomic_store(&g_phase, O.mode == M_CONNRATE ? P_RUN : P_CONNECT);
    threads_start();
    if (O.mode != M_CONNRATE)
        connect_all(r);
    uint64_t win_ns = (uint64_t)(O.duration * 1e9);
    if (O.mode == M_IDLE)
        run_idle(r, win_ns);
    else
        run_timed(r, win_ns);
    r->timeouts = total(ST_INFLIGHT);
    if (r->timeouts)
        fprintf(stderr, "wsbench: %" PRIu64 " messages not echoed %s\n", r->timeouts,
                O.mode == M_IDLE ? "by the end of the poke" : "by the end of the drain time");
    if (O.mode != M_CONNRATE) {
        set_phase(P_CLOSE);
        wait_until(now_ns() + 3000000000u, "close", none_open);
    }
    set_phase(P_EXIT);
    threads_join();
}
