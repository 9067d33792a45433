/* A worker process: its own epoll loop over its own listening sockets. */
#ifndef WSECHOD_WORKER_H
#define WSECHOD_WORKER_H

#include <stddef.h>

struct config;

/* Exit status meaning "cannot work in this environment": not respawned. */
#define WORKER_EXIT_FATAL 2

/* Commands the master writes, one byte each, on the worker's channel. */
#define WORKER_CMD_RELOAD  'R' /* drain with 1012; the listener stays in use */
#define WORKER_CMD_RETIRE  'X' /* drain with 1012; take the listener's queue first */
#define WORKER_CMD_QUIT    'Q' /* drain with 1001 */
#define WORKER_CMD_UPGRADE 'U' /* as 'X': a new master takes over the listeners */
#define WORKER_CMD_REOPEN  'O' /* adopt the reopened log file sent along */
#define WORKER_CMD_HURRY   'H' /* draining: close everything now */
#define WORKER_CMD_TARGET  'T' /* a new worker's inbox (attached), for a handoff */
#define WORKER_CMD_GO      'G' /* hand connections to the inboxes sent since the last 'G' */
#define WORKER_CMD_TICKETS 'K' /* TLS session ticket keys (readable from the fd sent along) */
#define WORKER_CMD_ALOG    'A' /* adopt the reopened access log sent along */
#define WORKER_MSG_READY   'r' /* worker -> master: serving */

struct worker_args {
    const struct config *cf;
    unsigned slot, generation;
    const int *listen_fds;  /* this slot's socket for each listen address */
    unsigned ncpus;         /* CPUs the master may run on, for affinity */
    size_t nlisten;
    int channel;            /* EOF here means the master is gone */
    int inbox;              /* connections handed over by other workers */
};

/* Runs the worker until it has drained; never returns. */
void worker_main(const struct worker_args *a) __attribute__((noreturn));

#endif
