/*
 * report — the results on stdout: a human-readable summary, then a single
 * "RESULT key=value ..." line (wss:// runs add TLS keys at its end). scripts/bench, idle-load, hostile-load,
 * reload-under-load and scaling parse that line (and only look for the
 * "wsbench: " prefix on stderr), so its keys, their order and their number
 * formats are an interface: change them only together with those scripts.
 *
 * Contract:
 *   report_print(r)  after run_modes(r) (workers joined): sums the workers'
 *       counters and histograms, prints both parts and flushes stdout.
 *       Rates are per second of the window (-d), not of the whole run.
 */
#ifndef WSBENCH_REPORT_H
#define WSBENCH_REPORT_H

#include "modes.h"

void report_print(const struct run *r);

#endif
