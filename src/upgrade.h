/* Binary upgrade: a running master starts a new executable that inherits
 * the listening sockets (so no queued connection is lost) and a channel
 * back to the old master, over which the new one later says it serves and
 * passes its workers' inboxes. Both sides meet through the environment. */
#ifndef WSECHOD_UPGRADE_H
#define WSECHOD_UPGRADE_H

#include <stddef.h>
#include <sys/types.h>

struct listeners;

/* Old side: forks and runs exe -c conf_file with the sockets of ls and one
 * end of a new channel inherited; *chan is our end. The new pid, or -1. */
pid_t upgrade_exec(const char *exe, const char *conf_file, const struct listeners *ls,
                   int *chan);
/* New side: takes (and removes from the environment) what an old master
 * left: its sockets into *ls (empty if none) and its channel into *chan
 * (-1 if this is no upgrade). -1 if the environment is malformed. */
int upgrade_inherit(struct listeners *ls, int *chan);
/* The path this executable was started from: where a new version lands. */
int upgrade_self(char *buf, size_t len);

#endif
