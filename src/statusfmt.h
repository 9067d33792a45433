/* /metrics in the Prometheus text format 0.0.4 and the health verdicts,
 * from the shared counters (stats.h). Rendering reads only: the workers
 * are never asked. */
#ifndef WSECHOD_STATUSFMT_H
#define WSECHOD_STATUSFMT_H

#include <stdint.h>
#include <sys/types.h>

#include "sbuf.h"

void status_metrics(struct sbuf *b);
/* 1 if the master is up and at least one worker serves; 1 if, moreover,
 * it is not stopping and its current generation serves. */
int  status_healthy(void);
int  status_ready(void);
/* Names of enum stats_slot_state and of struct stats_gen's state. */
extern const char *const status_slot_state[4];
extern const char *const status_gen_state[3];
/* Resident bytes of a process of ours, 0 if it is gone. */
uint64_t status_rss(pid_t pid);

#endif
