/* The master<->worker channel: a SOCK_SEQPACKET pair carrying one-byte
 * commands, optionally with a file descriptor attached (SCM_RIGHTS). */
#ifndef WSECHOD_CHANNEL_H
#define WSECHOD_CHANNEL_H

int channel_pair(int sv[2]);
/* pass_fd < 0: no descriptor. Returns 0 or -1 with errno. */
int channel_send(int fd, char cmd, int pass_fd);
/* 1: got *cmd (and *got_fd, or -1); 0: nothing yet; -1: peer gone or error. */
int channel_recv(int fd, char *cmd, int *got_fd);

#endif
