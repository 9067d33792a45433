/* Every figure comes from one pass over the segment (stats_sum for the
 * counters, the slots and the master's part as they are), so a page is
 * consistent up to counters moving while it is written. */
#include "statusfmt.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "stats.h"

static const char *const hs_name[HS_N] = {
    "101", "400", "403", "404", "405", "408", "426", "429", "431", "503", "505", "other",
};
static const char *const code_name[CC_N] = {
    "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    "1012", "1013", "other",
};
static const char *const by_name[BY_N] = { "client", "server", "timeout", "reset" };
static const char *const exit_name[EXIT_N] = { "normal", "error", "signal" };
const char *const status_slot_state[4] = { "free", "starting", "serving", "draining" };
const char *const status_gen_state[3] = { "starting", "serving", "draining" };
static const char *const size_le[STATS_SIZE_BUCKETS] = {
    "64", "256", "1024", "4096", "16384", "65536", "262144", "1048576", "16777216", "+Inf",
};
static const char *const dur_le[STATS_DUR_BUCKETS] = {
    "0.1", "1", "10", "60", "300", "1800", "3600", "21600", "86400", "+Inf",
};

uint64_t status_rss(pid_t pid)
{
    char path[64];
    unsigned long size = 0, res = 0;
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sbuf_printf(b, "# HELP wsechod_%s %s\n# TYPE wsechod_%s %s\n", name, help, name, type);
}

static void counter(struct sbuf *b, const char *name, const char *help, uint64_t v)
{
    head(b, name, "counter", help);
    sbuf_printf(b, "wsechod_%s %llu\n", name, (unsigned long long)v);
}

static void histogram(struct sbuf *b, const char *name, const char *help, const uint64_t *bk,
                      const char *const *le, unsigned n, double sum)
{
    uint64_t acc = 0;
    head(b, name, "histogram", help);
    for (unsigned i = 0; i < n; i++) {
        acc += bk[i];
        sbuf_printf(b, "wsechod_%s_bucket{le=\"%s\"} %llu\n", name, le[i],
                    (unsigned long long)acc);
    }
    sbuf_printf(b, "wsechod_%s_sum %.3f\nwsechod_%s_count %llu\n", name, sum, name,
                (unsigned long long)acc);
}

static void per_worker(struct sbuf *b)
{
    head(b, "connections_open", "gauge", "Connections open, by worker.");
    for (unsigned i = 0; i < STATS_SLOTS; i++) {
        const struct stats_slot *s = &stats->slots[i];
        uint32_t st = STATS_GET(s->state);
        if (st != SLOT_FREE && s->pid > 0)
            sbuf_printf(b, "wsechod_connections_open{slot=\"%u\",generation=\"%u\",pid=\"%d\","
                        "state=\"%s\"} %lld\n", s->slot, s->generation, (int)s->pid,
                        status_slot_state[st], (long long)STATS_GET(s->open));
    }
    head(b, "resident_memory_bytes", "gauge", "Resident memory of each process.");
    sbuf_printf(b, "wsechod_resident_memory_bytes{process=\"master\",pid=\"%d\"} %llu\n",
                (int)stats->master, (unsigned long long)status_rss(stats->master));
    sbuf_printf(b, "wsechod_resident_memory_bytes{process=\"status\",pid=\"%d\"} %llu\n",
                (int)getpid(), (unsigned long long)status_rss(getpid()));
    for (unsigned i = 0; i < STATS_SLOTS; i++) {
        const struct stats_slot *s = &stats->slots[i];
        if (STATS_GET(s->state) != SLOT_FREE && s->pid > 0)
            sbuf_printf(b, "wsechod_resident_memory_bytes{process=\"worker\",pid=\"%d\","
                        "slot=\"%u\",generation=\"%u\"} %llu\n", (int)s->pid, s->slot,
                        s->generation, (unsigned long long)status_rss(s->pid));
    }
}

/* One metric whose samples differ by one label: values[i] under label=names[i]. */
static void by_label(struct sbuf *b, const char *name, const char *type, const char *help,
                     const char *label, const char *const *names, const uint64_t *values,
                     unsigned n)
{
    head(b, name, type, help);
    for (unsigned i = 0; i < n; i++)
        sbuf_printf(b, "wsechod_%s{%s=\"%s\"} %llu\n", name, label, names[i],
                    (unsigned long long)values[i]);
}

static void traffic(struct sbuf *b, const struct stats_counters *c)
{
    static const char *const dir[] = { "in", "out" };
    static const char *const hand[] = { "sent", "received", "failed" };
    by_label(b, "messages_total", "counter", "WebSocket messages, by direction.", "direction",
             dir, (uint64_t[]){ c->msgs_in, c->msgs_out }, 2);
    by_label(b, "payload_bytes_total", "counter", "WebSocket message payload bytes.",
             "direction", dir, (uint64_t[]){ c->bytes_in, c->bytes_out }, 2);
    by_label(b, "wire_bytes_total", "counter", "Bytes on client sockets (TLS records included).",
             "direction", dir, (uint64_t[]){ c->wire_in, c->wire_out }, 2);
    by_label(b, "handoffs_total", "counter", "Connections handed between workers.", "result",
             hand, (uint64_t[]){ c->handoffs_out, c->handoffs_in, c->handoffs_failed }, 3);
}

static void results(struct sbuf *b, const struct stats_counters *c)
{
    counter(b, "connections_accepted_total", "TCP connections accepted.", c->accepted);
    head(b, "handshakes_total", "counter", "Opening handshakes, by response status.");
    for (unsigned i = 0; i < HS_N; i++)
        sbuf_printf(b, "wsechod_handshakes_total{status=\"%s\"} %llu\n", hs_name[i],
                    (unsigned long long)c->handshakes[i]);
    head(b, "closes_total", "counter", "WebSockets ended, by close code and who ended first.");
    for (unsigned i = 0; i < CC_N; i++)
        for (unsigned j = 0; j < BY_N; j++)
            sbuf_printf(b, "wsechod_closes_total{code=\"%s\",initiator=\"%s\"} %llu\n",
                        code_name[i], by_name[j], (unsigned long long)c->closes[i][j]);
    head(b, "tls_handshakes_total", "counter", "Completed TLS handshakes.");
    for (unsigned v = 0; v < 2; v++)
        for (unsigned r = 0; r < 2; r++)
            sbuf_printf(b, "wsechod_tls_handshakes_total{version=\"%s\",resumed=\"%s\"} %llu\n",
                        v ? "TLSv1.3" : "TLSv1.2", r ? "yes" : "no",
                        (unsigned long long)c->tls[v][r]);
    counter(b, "tls_handshake_failures_total", "Failed TLS handshakes.", c->tls_failed);
}

/* Running behind a load balancer: PROXY protocol refusals, per-IP limits. */
static void front(struct sbuf *b, const struct stats_counters *c)
{
    static const char *const pp[PP_N] = { "untrusted", "invalid", "timeout", "truncated" };
    static const char *const limit[LIMIT_N] = { "connections", "rate" };
    by_label(b, "proxy_protocol_errors_total", "counter", "Connections on proxy_protocol "
             "listeners closed before HTTP, by reason.", "reason", pp, c->proxy_errors, PP_N);
    by_label(b, "per_ip_refused_total", "counter", "Handshakes refused by a per-client limit "
             "(503: max_connections_per_ip, 429: handshake_rate_per_ip).", "limit", limit,
             c->per_ip_refused, LIMIT_N);
    counter(b, "per_ip_table_full_total", "Connections admitted uncounted: no room in the "
            "per-IP table.", c->per_ip_full);
}

static void master_part(struct sbuf *b)
{
    static const char *const result[] = { "ok", "failed" };
    by_label(b, "reloads_total", "counter", "Configuration reloads, by result.", "result", result,
             (uint64_t[]){ stats->reloads_ok, stats->reloads_failed }, 2);
    by_label(b, "worker_exits_total", "counter", "Worker processes that ended, by cause.",
             "cause", exit_name, stats->exits, EXIT_N);
    head(b, "draining", "gauge", "1 while the server is stopping.");
    sbuf_printf(b, "wsechod_draining %u\n", STATS_GET(stats->stopping) ? 1u : 0u);
    head(b, "generations", "gauge", "Live generations, by state.");
    unsigned n[3] = { 0 };
    for (unsigned i = 0; i < STATS_GENS; i++)
        if (stats->gens[i].id != 0 && stats->gens[i].state < 3)
            n[stats->gens[i].state]++;
    for (unsigned i = 0; i < 3; i++)
        sbuf_printf(b, "wsechod_generations{state=\"%s\"} %u\n", status_gen_state[i], n[i]);
    head(b, "start_time_seconds", "gauge", "When the master started (Unix time).");
    sbuf_printf(b, "wsechod_start_time_seconds %.3f\n", stats->master_started_ms / 1000.0);
    head(b, "config_load_time_seconds", "gauge", "When the running configuration was loaded.");
    sbuf_printf(b, "wsechod_config_load_time_seconds %.3f\n", stats->config_loaded_ms / 1000.0);
    head(b, "build_info", "gauge", "The running version.");
    sbuf_printf(b, "wsechod_build_info{version=\"%s\"} 1\n", WSECHOD_VERSION);
}

void status_metrics(struct sbuf *b)
{
    struct stats_counters c;
    stats_sum(&c);
    results(b, &c);
    front(b, &c);
    traffic(b, &c);
    histogram(b, "message_size_bytes", "Sizes of the messages received.", c.size_bucket,
              size_le, STATS_SIZE_BUCKETS, (double)c.size_sum);
    histogram(b, "connection_duration_seconds", "How long WebSockets lasted.", c.dur_bucket,
              dur_le, STATS_DUR_BUCKETS, c.dur_sum_ms / 1000.0);
    per_worker(b);
    master_part(b);
}

/* ---- Health ------------------------------------------------------------- */

static int serving_in(uint32_t generation)
{
    for (unsigned i = 0; i < STATS_SLOTS; i++) {
        const struct stats_slot *s = &stats->slots[i];
        if (STATS_GET(s->state) == SLOT_SERVING &&
            (generation == 0 || s->generation == generation))
            return 1;
    }
    return 0;
}

int status_healthy(void)
{
    return getppid() == stats->master && serving_in(0);
}

int status_ready(void)
{
    uint32_t newest = 0;
    if (!status_healthy() || STATS_GET(stats->stopping))
        return 0;
    for (unsigned i = 0; i < STATS_GENS; i++)
        if (stats->gens[i].id > newest && stats->gens[i].state != 2)
            newest = stats->gens[i].id;
    return newest != 0 && serving_in(newest);
}
