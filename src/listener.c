#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int sock_open(const struct config_listen *a, unsigned backlog)
{
    int one = 1;
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        /* [::]:port must not swallow *:port: each family listens for itself. */
        (a->addr.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) < 0 ||
        listen(fd, (int)backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int take(struct listeners *reuse, const char *text, unsigned slot)
{
    if (reuse == NULL || slot >= reuse->nslots)
        return -1;
    for (size_t i = 0; i < reuse->naddr; i++) {
        int *fd = &reuse->fds[slot * reuse->naddr + i];
        if (*fd >= 0 && strcmp(reuse->addrs[i].text, text) == 0) {
            int got = *fd;
            *fd = -1;
            return got;
        }
    }
    return -1;
}

/* Hands back what open took, so a failed reload leaves reuse untouched. */
static void give_back(struct listeners *out, struct listeners *reuse, const char *taken)
{
    for (unsigned s = 0; s < out->nslots; s++) {
        for (size_t i = 0; i < out->naddr; i++) {
            size_t k = s * out->naddr + i;
            if (out->fds[k] < 0)
                continue;
            if (!taken[k]) {
                close(out->fds[k]);
                continue;
            }
            for (size_t j = 0; j < reuse->naddr; j++)
                if (strcmp(reuse->addrs[j].text, out->addrs[i].text) == 0)
                    reuse->fds[s * reuse->naddr + j] = out->fds[k];
        }
    }
}

static int fill(struct listeners *out, const struct config *cf, struct listeners *reuse,
                char *taken, char *err, size_t errlen)
{
    for (unsigned s = 0; s < out->nslots; s++) {
        for (size_t i = 0; i < out->naddr; i++) {
            size_t k = s * out->naddr + i;
            const struct config_listen *a = &out->addrs[i];
            out->fds[k] = take(reuse, a->text, s);
            taken[k] = out->fds[k] >= 0;
            /* listen() again applies a changed backlog to a kept socket. */
            if (taken[k] ? listen(out->fds[k], (int)cf->listen_backlog) == 0
                         : (out->fds[k] = sock_open(a, cf->listen_backlog)) >= 0)
                continue;
            snprintf(err, errlen, "cannot listen on %s: %s", a->text, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int listeners_open(struct listeners *out, const struct config *cf,
                   struct listeners *reuse, char *err, size_t errlen)
{
    size_t n = cf->nlisten * cf->worker_processes;
    memset(out, 0, sizeof(*out));
    out->naddr = cf->nlisten;
    out->nslots = cf->worker_processes;
    out->addrs = malloc(cf->nlisten * sizeof(*out->addrs));
    out->fds = malloc(n * sizeof(*out->fds));
    char *taken = calloc(n, 1);
    int rc = -1;
    if (out->addrs == NULL || out->fds == NULL || taken == NULL) {
        snprintf(err, errlen, "out of memory");
        out->nslots = 0;
    } else {
        memcpy(out->addrs, cf->listen, cf->nlisten * sizeof(*out->addrs));
        for (size_t k = 0; k < n; k++)
            out->fds[k] = -1;
        rc = fill(out, cf, reuse, taken, err, errlen);
        if (rc < 0)
            give_back(out, reuse, taken);
    }
    free(taken);
    if (rc < 0) {
        free(out->addrs);
        free(out->fds);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

void listeners_close(struct listeners *ls)
{
    for (size_t k = 0; k < ls->nslots * ls->naddr; k++)
        if (ls->fds[k] >= 0)
            close(ls->fds[k]);
    free(ls->fds);
    free(ls->addrs);
    memset(ls, 0, sizeof(*ls));
}

void listeners_keep_slot(struct listeners *ls, unsigned slot)
{
    for (unsigned s = 0; s < ls->nslots; s++) {
        if (s == slot)
            continue;
        for (size_t i = 0; i < ls->naddr; i++) {
            int *fd = &ls->fds[s * ls->naddr + i];
            if (*fd >= 0)
                close(*fd);
            *fd = -1;
        }
    }
}

const int *listeners_slot_fds(const struct listeners *ls, unsigned slot)
{
    return &ls->fds[slot * ls->naddr];
}
