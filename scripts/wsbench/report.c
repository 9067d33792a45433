#define _GNU_SOURCE
#include "report.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "options.h"
#include "stats.h"
#include "thread.h"

/* What both parts of the output are computed from. */
struct totals {
    uint64_t s[ST_N];
    uint64_t hn, errors, units;
    double secs, cli_cpu, cli_wall, srv_cpu, srv_wall;
    double p50, p99, p999, pmax; /* us */
};

static void compute(const struct run *r, struct totals *m)
{
    static uint64_t hist[HBUCKETS]; /* static: ~30 kB */
    /* Called once per --rounds window: each report starts from zero. */
    memset(m, 0, sizeof *m);
    memset(hist, 0, sizeof hist);
    threads_sum(m->s, hist, &m->hn);
    m->s[ST_E_TIMEOUT] += r->timeouts;
    for (int s = ST_E_CONNECT; s <= ST_E_TIMEOUT; s++)
        if (stat_is_error(s))
            m->errors += m->s[s];
    m->secs = r->win_secs > 0 ? r->win_secs : O.duration;
    m->cli_cpu = (r->c1.user + r->c1.sys) - (r->c0.user + r->c0.sys);
    m->cli_wall = m->secs;
    double tick = (double)sysconf(_SC_CLK_TCK);
    m->srv_cpu = r->have_srv ? ((double)(r->s1.utime + r->s1.stime) - (double)(r->s0.utime + r->s0.stime)) / tick
                             : 0;
    m->srv_wall = r->have_srv ? (r->s1.t_ns - r->s0.t_ns) / 1e9 : 0;
    m->units = O.mode == M_CONNRATE ? m->s[ST_HS_WIN] : m->s[ST_MSGS_WIN];
    m->p50 = hist_pct(hist, m->hn, 50) / 1e3;
    m->p99 = hist_pct(hist, m->hn, 99) / 1e3;
    m->p999 = hist_pct(hist, m->hn, 99.9) / 1e3;
    m->pmax = hist_pct(hist, m->hn, 100) / 1e3;
}

static double srv_pct(const struct totals *m)
{
    return m->srv_wall > 0 ? 100 * m->srv_cpu / m->srv_wall : 0;
}

static double srv_ns_per_unit(const struct totals *m)
{
    return m->units ? m->srv_cpu * 1e9 / m->units : 0;
}

/* Percent of CPU i's ticks between the two samples; < 0 if none passed. */
static double cpu_pct(const struct run *r, int i, const uint64_t *a0, const uint64_t *a1)
{
    double all = (double)(r->k1.all[i] - r->k0.all[i]);
    return all > 0 ? 100 * (a1[i] - a0[i]) / all : -1;
}

static int cpu_ticked(const struct run *r, int i)
{
    return (double)(r->k1.all[i] - r->k0.all[i]) > 0;
}

static void summary_rates(const struct run *r, const struct totals *m)
{
    const uint64_t *s = m->s;
    if (O.mode != M_CONNRATE)
        printf("  connections: %" PRIu64 "/%d open after %.2f s\n", r->connected, O.conns, r->conn_secs);
    if (O.mode == M_ECHO)
        printf("  echoed:      %" PRIu64 " msgs in window: %.0f msgs/s, %.2f MB/s payload each way\n",
               s[ST_MSGS_WIN], s[ST_MSGS_WIN] / m->secs, s[ST_BYTES_WIN] / m->secs / 1e6);
    if (O.mode == M_CONNRATE)
        printf("  handshakes:  %" PRIu64 " in window: %.0f/s (%" PRIu64 " total)\n", s[ST_HS_WIN],
               s[ST_HS_WIN] / m->secs, s[ST_HS_OK]);
    if (O.mode != M_IDLE)
        printf("  latency:     p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us  (%" PRIu64 " samples)\n",
               m->p50, m->p99, m->p999, m->pmax, m->hn);
    if (O.mode == M_IDLE) {
        printf("  idle:        %" PRIu64 " connections held %.1f s; server RSS %" PRIu64 " kB -> %" PRIu64
               " kB: %.0f B/conn (user space); kernel TCP mem %+.0f B/conn (both ends)\n",
               r->idle_open, m->secs, r->base.rss_kb, r->s0.rss_kb, r->rss_per_conn, r->tcp_per_conn);
        printf("  poke:        %" PRIu64 "/%" PRIu64 " sampled connections echoed\n", s[ST_POKE_OK],
               s[ST_POKE_SENT]);
    }
}

static void summary_resources(const struct run *r, const struct totals *m)
{
    if (r->have_srv)
        printf("  server:      %d procs, CPU %.2f s user+sys in %.2f s (%.0f%%), %.0f ns per %s, RSS %" PRIu64
               " kB\n", r->s1.nprocs, m->srv_cpu, m->srv_wall, srv_pct(m), srv_ns_per_unit(m),
               O.mode == M_CONNRATE ? "handshake" : "message", r->s1.rss_kb);
    printf("  client:      CPU %.2f s in %.2f s (%.0f%%)\n", m->cli_cpu, m->cli_wall,
           100 * m->cli_cpu / m->cli_wall);
    printf("  cpus:       ");
    for (int i = 0; i < r->k1.n; i++) {
        if (!cpu_ticked(r, i))
            continue;
        printf(" cpu%d %.0f%% busy (softirq %.0f%%, steal %.0f%%)", i, cpu_pct(r, i, r->k0.busy, r->k1.busy),
               cpu_pct(r, i, r->k0.sirq, r->k1.sirq), cpu_pct(r, i, r->k0.steal, r->k1.steal));
    }
    printf("\n");
}

static void summary_errors(const struct totals *m)
{
    const uint64_t *s = m->s;
    printf("  errors:      %" PRIu64 " (connect %" PRIu64 ", handshake %" PRIu64 " [503: %" PRIu64
           "], mismatch %" PRIu64 ", reset %" PRIu64 ", eof %" PRIu64 ", close %" PRIu64 ", proto %" PRIu64
           ", timeout %" PRIu64 ")\n", m->errors, s[ST_E_CONNECT], s[ST_E_HS], s[ST_E_HS503], s[ST_E_MISMATCH],
           s[ST_E_RESET], s[ST_E_EOF], s[ST_E_CLOSE], s[ST_E_PROTO], s[ST_E_TIMEOUT]);
    if (O.mode != M_CONNRATE)
        printf("  close:       %" PRIu64 " closed with a close reply, %" PRIu64 " without\n", s[ST_CLOSE_OK],
               s[ST_CLOSE_NOREPLY]);
}

/* wss:// only: ws:// output stays as it was. */
static void summary_tls(const struct totals *m)
{
    const uint64_t *s = m->s;
    printf("  tls:         %" PRIu64 " handshakes (TLSv1.3 %" PRIu64 ", TLSv1.2 %" PRIu64 "), %" PRIu64
           " resumed, %" PRIu64 " failed; SNI %s, certificate not verified\n", s[ST_TLS13] + s[ST_TLS12],
           s[ST_TLS13], s[ST_TLS12], s[ST_TLS_RESUMED], s[ST_TLS_FAIL], O.sni);
}

static void summary(const struct run *r, const struct totals *m)
{
    printf("wsbench %s %s://%s%s  conns=%d size=%zu inflight=%d %s threads=%d duration=%.1fs warmup=%.1fs\n",
           mode_name(), O.tls ? "wss" : "ws", O.hosthdr, O.path, O.conns, O.size, O.inflight, O.text ? "text" : "binary",
           O.threads, O.duration, O.warmup);
    summary_rates(r, m);
    summary_resources(r, m);
    summary_errors(m);
    if (O.tls)
        summary_tls(m);
}

static void result_main(const struct run *r, const struct totals *m)
{
    const uint64_t *s = m->s;
    printf("RESULT mode=%s conns=%d size=%zu inflight=%d threads=%d duration=%.2f connected=%" PRIu64
           " msgs=%" PRIu64 " msgs_per_s=%.1f mb_per_s=%.3f hs=%" PRIu64 " hs_per_s=%.1f"
           " p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
           mode_name(), O.conns, O.size, O.inflight, O.threads, m->secs,
           O.mode == M_CONNRATE ? 0 : r->connected, s[ST_MSGS_WIN], s[ST_MSGS_WIN] / m->secs,
           s[ST_BYTES_WIN] / m->secs / 1e6, s[ST_HS_WIN], s[ST_HS_WIN] / m->secs, m->p50, m->p99, m->p999,
           m->pmax);
    if (r->have_srv)
        printf(" srv_procs=%d srv_cpu_s=%.3f srv_cpu_pct=%.1f srv_ns_per_msg=%.1f srv_rss_kb=%" PRIu64
               " srv_rss_base_kb=%" PRIu64, r->s1.nprocs, m->srv_cpu, srv_pct(m), srv_ns_per_unit(m),
               r->s1.rss_kb, r->base.rss_kb);
    if (O.mode == M_IDLE)
        printf(" idle_open=%" PRIu64 " rss_per_conn_b=%.1f anon_per_conn_b=%.1f tcpmem_per_conn_b=%.1f"
               " poke_sent=%" PRIu64 " poke_ok=%" PRIu64, r->idle_open, r->rss_per_conn, r->anon_per_conn,
               r->tcp_per_conn, s[ST_POKE_SENT], s[ST_POKE_OK]);
}

static void result_tail(const struct run *r, const struct totals *m)
{
    const uint64_t *s = m->s;
    printf(" cli_cpu_pct=%.1f", 100 * m->cli_cpu / m->cli_wall);
    for (int i = 0; i < r->k1.n; i++) {
        if (cpu_ticked(r, i))
            printf(" cpu%d_busy_pct=%.1f cpu%d_sirq_pct=%.1f cpu%d_steal_pct=%.1f", i,
                   cpu_pct(r, i, r->k0.busy, r->k1.busy), i, cpu_pct(r, i, r->k0.sirq, r->k1.sirq), i,
                   cpu_pct(r, i, r->k0.steal, r->k1.steal));
    }
    /* err_hs503 is listed too, though not part of errors. */
    for (int k = ST_E_CONNECT; k <= ST_E_TIMEOUT; k++)
        printf(" %s=%" PRIu64, stat_names[k], s[k]);
    printf(" close_ok=%" PRIu64 " close_noreply=%" PRIu64 " errors=%" PRIu64, s[ST_CLOSE_OK],
           s[ST_CLOSE_NOREPLY], m->errors);
    /* New keys go last, and only where they mean something. */
    if (O.rounds > 1)
        printf(" round=%d", r->round);
    if (O.greet)
        printf(" greet_ok=%" PRIu64, r->greeted);
    printf(" pings=%" PRIu64, s[ST_PINGS]);
    if (O.tls)
        printf(" tls_fail=%" PRIu64 " resumed=%" PRIu64 " tls13=%" PRIu64 " tls12=%" PRIu64, s[ST_TLS_FAIL],
               s[ST_TLS_RESUMED], s[ST_TLS13], s[ST_TLS12]);
    printf("\n");
}

void report_print(const struct run *r)
{
    static struct totals m;
    compute(r, &m);
    summary(r, &m);
    result_main(r, &m);
    result_tail(r, &m);
    fflush(stdout);
}
