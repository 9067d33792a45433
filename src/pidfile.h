/* The pid file: how `wsechod -s` and operators find the master. */
#ifndef WSECHOD_PIDFILE_H
#define WSECHOD_PIDFILE_H

#include <sys/types.h>

/* The pid of a live wsechod recorded in path, or 0 (missing, stale or
 * another program's pid). */
pid_t pidfile_running(const char *path);
int   pidfile_write(const char *path, pid_t pid);
/* Removes path only if it still names pid. */
void  pidfile_remove(const char *path, pid_t pid);

#endif
