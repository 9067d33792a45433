/* The worker's memory ceiling: after each turn of the loop, while the
 * worker holds more than worker_memory_limit (mem.h), its biggest holders
 * among open WebSockets are shed (conn_shed), biggest first. A walk over
 * every connection, but only while the worker is over its ceiling, and each
 * walk takes up to SHED_BATCH of them. */
#ifndef WSECHOD_SHED_H
#define WSECHOD_SHED_H

#define SHED_BATCH 16

#include "ev.h"

struct conn_env;

/* Registers the ceiling's end-of-turn work for env's connections. */
void shed_setup(struct ev_loop *loop, struct conn_env *env);

#endif
