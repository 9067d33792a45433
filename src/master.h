/* The master process: owns the listening sockets, forks and supervises the
 * workers (generation.h), and acts on signals (reload, stop, reopen, and
 * upgrade: see upgrade.h). Its timers are its own, not ev.h's: master.c
 * says why. */
#ifndef WSECHOD_MASTER_H
#define WSECHOD_MASTER_H

struct config;

/* Takes ownership of cf. Returns the process exit status. */
int master_run(const char *conf_file, struct config *cf);
/* `wsechod -s NAME`: signal the running master. Returns an exit status. */
int master_signal(const struct config *cf, const char *name);

#endif
