#include "stats.h"

const char *const stat_names[ST_N] = {
    "msgs_win", "bytes_win", "msgs", "hs_ok", "hs_win", "open", "inflight",
    "settled", "err_connect", "err_handshake", "err_hs503", "err_mismatch",
    "err_reset", "err_eof", "err_close", "err_proto", "err_timeout",
    "poke_sent", "poke_ok", "close_ok", "close_noreply", "tls_fail", "resumed",
    "tls13", "tls12", "pings",
};

/* The midpoint halves the worst-case error against either bucket edge. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < HSUB)
        return idx;
    unsigned e = idx / HSUB + HSUB_BITS - 1, sub = idx % HSUB;
    uint64_t lo = (uint64_t)(HSUB + sub) << (e - HSUB_BITS);
    uint64_t w = (uint64_t)1 << (e - HSUB_BITS);
    return lo + w / 2;
}

uint64_t hist_pct(const uint64_t *h, uint64_t total, double pct)
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)((double)total * pct / 100.0);
    if (rank >= total)
        rank = total - 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        acc += h[i];
        if (acc > rank)
            return hist_value(i);
    }
    return hist_value(HBUCKETS - 1);
}
