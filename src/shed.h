/* The worker's memory ceiling: after each turn of the loop, while the
 * worker holds more than worker_memory_limit (mem.h), its biggest holders
 * among open WebSockets are shed (conn_shed), biggest first. A walk over
 * every connection, but only while the worker is over its ceiling, and each
 * walk takes up to SHED_BATCH of them. */
#ifndef WSECHOD_SHED_H
#define WSECHOD_SHED_H

#define SHED_BATCH 16

struct conn_env;

void shed_run(struct conn_env *env);

#endif
