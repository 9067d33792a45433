/* Listening sockets: for every listen address, a SO_REUSEPORT group with
 * one socket per worker slot, created and kept by the master so queued
 * connections survive worker restarts and reloads.
 *
 * Shrinking a group without losing its accept queues: a classic BPF program
 * attached to the group picks sockets only among the first nactive entries
 * of the kernel's socket array, so retired sockets stop receiving new
 * connections while their old workers still accept what was queued. The
 * master mirrors the kernel's array order (append on listen, close only
 * from the tail) so that index i is always slot i's socket.
 *
 * A unix socket (unix:/path) is one socket that every worker accepts from
 * (SO_REUSEPORT does not apply): its group holds one descriptor for all
 * slots. The master makes it (removing a stale socket file, never another
 * kind of file, nor one something still accepts on), with the configured
 * mode and owner (set again by a reload), keeps it across reloads (same
 * path, same socket) and binary upgrades (inherited), and removes the
 * file only where the server ends for good (listeners_unlink). */
#ifndef WSECHOD_LISTENER_H
#define WSECHOD_LISTENER_H

#include <stddef.h>

#include "config.h"

struct lgroup {
    struct config_listen addr;
    int *fds;          /* kernel array order: fds[i] is slot i's socket */
    unsigned n;        /* sockets open, retired ones included */
    unsigned nactive;  /* fds[0..nactive) receive new connections */
};

struct listeners {
    struct lgroup *g;  /* one per listen address, in config order */
    size_t ng;
};

/* Opens what cf asks for, taking over the groups of reuse with the same
 * address (retired sockets are reactivated before new ones are made).
 * On error nothing changes, err says why and -1 is returned. */
int  listeners_open(struct listeners *out, const struct config *cf,
                    struct listeners *reuse, char *err, size_t errlen);
void listeners_close(struct listeners *ls);
/* Removes the files of ls's unix sockets (before closing them for good). */
void listeners_unlink(const struct listeners *ls);
/* Closes the retired sockets, once no worker accepts on them any more. */
void listeners_close_retired(struct listeners *ls);
/* In a worker: close every socket but slot's. */
void listeners_keep_slot(struct listeners *ls, unsigned slot);
int  listeners_fd(const struct listeners *ls, size_t addr, unsigned slot);

#endif
