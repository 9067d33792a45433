/* The master's workers, one generation per configuration loaded: forking
 * them into their slots and respawning them, their readiness, telling them
 * to drain, hurry or hand their connections over, and killing those past
 * their deadline. Only the newest generation is current; older ones drain
 * and are freed with their last worker. A generation that drains never
 * gets a worker again: once the current one drains (a stop, an upgrade)
 * nothing is respawned. For the master process only. */
#ifndef WSECHOD_GENERATION_H
#define WSECHOD_GENERATION_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct generation;
struct listeners;

/* ls: the master's sockets, read at every fork (slot i's worker gets its
 * socket i) and replaced in place by reloads; master: its pid, for SIGIO;
 * ncpus: for worker_cpu_affinity. */
void gen_init(struct listeners *ls, pid_t master, unsigned ncpus);
/* The next generation of cf (taken), not started: NULL if out of memory
 * (cf is freed then). */
struct generation *gen_new(struct config *cf);
/* Frees a generation gen_new made and gen_start never got. */
void gen_discard(struct generation *g);
/* Makes g current and forks its workers; older generations are told to
 * drain (the oldest beyond a bound to hurry). The sockets must be g's. */
void gen_start(struct generation *g);
/* The current generation's configuration and number. */
const struct config *gen_config(void);
unsigned gen_id(void);
/* Workers alive, and of them those not of the current generation. */
size_t   gen_workers(void);
unsigned gen_draining(void);

/* Reads the workers' channels (on SIGIO). */
void gen_read_channels(void);
/* Once every worker of a starting generation serves: has the older ones
 * (or an upgrade's old master) hand it their connections; READY=1. */
void gen_check_ready(void);
/* 1 if pid was a worker, now gone (how: its exit described). */
int  gen_reaped(pid_t pid, int status, const char *how);
/* Kills overdue workers and respawns due slots; returns the next deadline
 * (UINT64_MAX: none). */
uint64_t gen_timers(uint64_t now);

/* Every generation drains: fast, with SIGTERM; otherwise as asked with
 * WORKER_CMD_QUIT. No handoff will come any more. */
void gen_stop(int fast);
/* A binary upgrade's new master serves: every worker hands its
 * connections to inboxes (the new master's) and drains. */
void gen_hand_over(pid_t new_master, const int *inboxes, unsigned n);
/* Sends every worker cmd, with fd attached unless it is < 0. */
void gen_tell_all(char cmd, int fd);
/* At exit: frees every generation (their workers are gone). */
void gen_free_all(void);

#endif
