/*
 * stats — the counters every worker keeps and the latency histogram.
 *
 * Contract:
 *   enum counter   indexes a worker's counter array; stat_names[] gives the
 *                  key each one has in the RESULT line.
 *   stat_is_error  the kinds that add up to "errors": err_connect..err_timeout
 *                  except err_hs503 and tls_fail, which are also counted in
 *                  err_handshake.
 *   Histogram      HBUCKETS log-linear buckets (64 per power of two, so any
 *                  value is within 1.6% of its bucket); hist_index() maps a
 *                  value (ns) to its bucket, hist_pct() reads a percentile
 *                  (0..100) back as the bucket midpoint, 0 if empty.
 */
#ifndef WSBENCH_STATS_H
#define WSBENCH_STATS_H

#include <stdint.h>

enum counter {
    ST_MSGS_WIN, ST_BYTES_WIN, ST_MSGS, ST_HS_OK, ST_HS_WIN, ST_OPEN,
    ST_INFLIGHT, ST_SETTLED, /* connections whose connect finished (ok or not) */
    ST_E_CONNECT, ST_E_HS, ST_E_HS503, ST_E_MISMATCH, ST_E_RESET, ST_E_EOF,
    ST_E_CLOSE, ST_E_PROTO, ST_E_TIMEOUT, ST_POKE_SENT, ST_POKE_OK,
    ST_CLOSE_OK, ST_CLOSE_NOREPLY,
    ST_TLS_FAIL, /* TLS handshake failures, also counted in ST_E_HS */
    ST_TLS_RESUMED, ST_TLS13, ST_TLS12, /* completed TLS handshakes */
    ST_PINGS, /* pings from the server, each answered with a pong */
    ST_N
};

extern const char *const stat_names[ST_N];

static inline int stat_is_error(int s)
{
    return s >= ST_E_CONNECT && s <= ST_E_TIMEOUT && s != ST_E_HS503;
}

#define HSUB_BITS 6
#define HSUB (1u << HSUB_BITS)
#define HBUCKETS ((64 - HSUB_BITS + 1) * HSUB)

/* Inline: called once per echoed message. */
static inline unsigned hist_index(uint64_t v)
{
    if (v < HSUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HSUB_BITS */
    unsigned sub = (unsigned)(v >> (e - HSUB_BITS)) & (HSUB - 1);
    return (e - HSUB_BITS + 1) * HSUB + sub;
}

uint64_t hist_pct(const uint64_t *h, uint64_t total, double pct);

#endif
