/* Listening sockets: one SO_REUSEPORT socket per listen address per worker
 * slot, created and kept by the master so that queued connections survive
 * worker restarts and reloads. */
#ifndef WSECHOD_LISTENER_H
#define WSECHOD_LISTENER_H

#include <stddef.h>

#include "config.h"

struct listeners {
    struct config_listen *addrs; /* copy of the configured addresses */
    size_t naddr;
    unsigned nslots;
    int *fds;                    /* fds[slot * naddr + addr], -1 if closed */
};

/* Opens the sockets cf asks for, taking over any with the same address and
 * slot from reuse (which may be NULL). On error nothing is taken, err says
 * why and -1 is returned. */
int  listeners_open(struct listeners *out, const struct config *cf,
                    struct listeners *reuse, char *err, size_t errlen);
void listeners_close(struct listeners *ls);
/* In a worker: close the sockets of every other slot. */
void listeners_keep_slot(struct listeners *ls, unsigned slot);
const int *listeners_slot_fds(const struct listeners *ls, unsigned slot);

#endif
