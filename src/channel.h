/* A channel between two processes (master and worker, or an old and a new
 * master): a SOCK_SEQPACKET pair carrying one-byte messages, optionally
 * with a file descriptor attached (SCM_RIGHTS). What the bytes mean is the
 * business of each protocol (worker.h, upgrade.h). */
#ifndef WSECHOD_CHANNEL_H
#define WSECHOD_CHANNEL_H

#include <sys/types.h>

int channel_pair(int sv[2]);
/* pass_fd < 0: no descriptor. Returns 0 or -1 with errno. */
int channel_send(int fd, char cmd, int pass_fd);
/* 1: got *cmd (and *got_fd, or -1); 0: nothing yet; -1: peer gone or error. */
int channel_recv(int fd, char *cmd, int *got_fd);
/* Makes readiness and EOF on fd arrive at owner as SIGIO, for a process
 * that sleeps in sigsuspend rather than polling. Logs a failure. */
void channel_watch(int fd, pid_t owner);

#endif
