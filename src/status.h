/* The status listener (`status: {listen: ...}`): a separate process the
 * master forks, serving /metrics, /healthz, /readyz, /status and
 * /status.json from the shared counters (stats.h) on its own socket, so a
 * scrape never touches a worker and a slow or hostile client of this port
 * costs the server nothing but this process's time. Requests are GET or
 * HEAD, answered and closed (Connection: close); at most STATUS_CONNS at
 * once, STATUS_TIMEOUT_MS each. The process dies with the master
 * (PR_SET_PDEATHSIG) and the master starts it again if it dies. */
#ifndef WSECHOD_STATUS_H
#define WSECHOD_STATUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

#define STATUS_CONNS 64
#define STATUS_TIMEOUT_MS 10000
#define STATUS_RESPAWN_MS 1000

/* Master side. status_prepare opens cf's listener when its address is
 * new (SO_REUSEPORT, so that a binary upgrade's new master can bind it
 * beside us): 0, or -1 with err set and nothing changed. Then either
 * status_commit (cf is current: the process is started, restarted on the
 * new socket, or stopped) or status_abort (the reload failed). */
int  status_prepare(const struct config *cf, char *err, size_t errlen);
void status_commit(const struct config *cf);
void status_abort(void);
/* 1 if pid was the status process (started again STATUS_RESPAWN_MS later). */
int  status_reaped(pid_t pid, const char *how);
/* Starts the process when due; the next deadline (UINT64_MAX: none). */
uint64_t status_timers(uint64_t now);
/* In a worker: the status socket is not its to keep. */
void status_close_in_child(void);
/* The master is exiting. */
void status_exit(void);

#endif
