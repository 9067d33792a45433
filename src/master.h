/* The master process: owns the listening sockets, forks and supervises the
 * workers, and acts on signals (reload, stop, reopen). */
#ifndef WSECHOD_MASTER_H
#define WSECHOD_MASTER_H

struct config;

/* Takes ownership of cf. Returns the process exit status. */
int master_run(const char *conf_file, struct config *cf);
/* `wsechod -s NAME`: signal the running master. Returns an exit status. */
int master_signal(const struct config *cf, const char *name);

#endif
