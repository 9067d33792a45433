/* The status page: /status.json (workers, generations, recent events,
 * totals, and each worker's messages/s and bytes/s over the last minutes)
 * and /status, one self-contained HTML page (no external assets, no
 * framework) whose script draws /status.json as tables and inline SVG. */
#ifndef WSECHOD_STATUSPAGE_H
#define WSECHOD_STATUSPAGE_H

#include <stdint.h>
#include <sys/types.h>

#include "sbuf.h"

#define STATUS_SAMPLES 72       /* six minutes of samples */
#define STATUS_SAMPLE_MS 5000

/* One worker slot's rates, sampled by the status process. */
struct status_series {
    pid_t pid;                  /* whose: another pid in the slot starts afresh */
    unsigned n, head;           /* samples kept; where the next goes */
    uint64_t last_msgs, last_bytes;
    float msgs[STATUS_SAMPLES], bytes[STATUS_SAMPLES]; /* per second */
};

/* One sample of every live slot, into series[STATS_SLOTS]. */
void status_sample(struct status_series *series);
void status_json(struct sbuf *b, const struct status_series *series);
void status_html(struct sbuf *b);

#endif
