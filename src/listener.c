#include "listener.h"

#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Why the last unix socket could not be made, when errno does not say. */
static const char *unix_why;

static int is_unix(const struct lgroup *g)
{
    return g->addr.addr.ss_family == AF_UNIX || strncmp(g->addr.text, "unix:", 5) == 0;
}

static const char *unix_path(const struct config_listen *a)
{
    return ((const struct sockaddr_un *)&a->addr)->sun_path;
}

/* A file where the socket goes: a stale socket (nothing accepts on it) is
 * removed; a live one, or anything that is not a socket, is left alone. */
static int unix_clear(const struct config_listen *a)
{
    struct stat st;
    if (lstat(unix_path(a), &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        unix_why = "the path exists and is not a socket (left in place)";
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int live = connect(fd, (const struct sockaddr *)&a->addr, a->addrlen) == 0 ||
               errno == EAGAIN;
    close(fd);
    if (live) {
        unix_why = "another process accepts connections on it";
        return -1;
    }
    return unlink(unix_path(a));
}

/* The socket file's mode and owner, as configured. */
static int unix_perms(const struct config_listen *a)
{
    if (chmod(unix_path(a), a->mode) < 0)
        return -1;
    if (a->owner != NULL && chown(unix_path(a), a->uid, a->gid) < 0)
        return -1;
    return 0;
}

/* One socket every worker accepts from (no SO_REUSEPORT for unix
 * sockets); its mode and owner are set before listen(), so nobody can
 * connect through a file with other permissions. */
static int unix_open(const struct config_listen *a, unsigned backlog)
{
    if (unix_clear(a) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (unix_perms(a) < 0 || listen(fd, (int)backlog) < 0) {
        int saved = errno;
        close(fd);
        unlink(unix_path(a));
        errno = saved;
        return -1;
    }
    return fd;
}

static int sock_open(const struct config_listen *a, unsigned backlog)
{
    if (a->addr.ss_family == AF_UNIX)
        return unix_open(a, backlog);

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

/* New connections go to a random one of the first nactive sockets. */
static int steer(const struct lgroup *g)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_RANDOM)),
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, g->nactive),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
    return setsockopt(g->fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

static struct lgroup *find(struct listeners *ls, const char *text)
{
    for (size_t i = 0; ls != NULL && i < ls->ng; i++)
        if (ls->g[i].fds != NULL && strcmp(ls->g[i].addr.text, text) == 0)
            return &ls->g[i];
    return NULL;
}

/* Grows g (a copy of an old group, or empty) to want active sockets.
 * On failure closes only what it created. */
static int group_fill(struct lgroup *g, unsigned want, unsigned backlog)
{
    unsigned had = g->n;
    if (is_unix(g)) {
        want = 1; /* one socket for every slot */
        if (had > 0 && unix_perms(&g->addr) < 0)
            return -1; /* a reload may change them */
    }
    int *fds = realloc(g->fds, (want > had ? want : had ? had : 1) * sizeof(*fds));
    if (fds == NULL)
        return -1;
    g->fds = fds;
    for (; g->n < want; g->n++) {
        if ((g->fds[g->n] = sock_open(&g->addr, backlog)) < 0) {
            int saved = errno;
            while (g->n > had)
                close(g->fds[--g->n]);
            errno = saved;
            return -1;
        }
    }
    g->nactive = want;
    /* listen() again applies a changed backlog to kept sockets. */
    for (unsigned i = 0; i < had && i < want; i++)
        listen(g->fds[i], (int)backlog);
    return 0;
}

int listeners_open(struct listeners *out, const struct config *cf,
                   struct listeners *reuse, char *err, size_t errlen)
{
    out->ng = cf->nlisten;
    out->g = calloc(cf->nlisten, sizeof(*out->g));
    if (out->g == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cf->nlisten; i++) {
        struct lgroup *g = &out->g[i], *old = find(reuse, cf->listen[i].text);
        g->addr = cf->listen[i];
        unix_why = NULL;
        if (old != NULL && (g->fds = malloc(old->n * sizeof(*g->fds))) != NULL) {
            memcpy(g->fds, old->fds, old->n * sizeof(*g->fds));
            g->n = old->n;
        }
        if ((old != NULL && g->fds == NULL) ||
            group_fill(g, cf->worker_processes, cf->listen_backlog) < 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", g->addr.text,
                     unix_why ? unix_why : strerror(errno));
            for (size_t j = 0; j <= i; j++) {
                struct lgroup *o = find(reuse, out->g[j].addr.text);
                /* Close what this call created; the old group keeps the rest. */
                for (unsigned k = o ? o->n : 0; k < out->g[j].n; k++)
                    close(out->g[j].fds[k]);
                free(out->g[j].fds);
            }
            free(out->g);
            out->g = NULL;
            out->ng = 0;
            return -1;
        }
    }
    /* Commit: the old groups hand their sockets over. */
    for (size_t i = 0; i < out->ng; i++) {
        struct lgroup *old = find(reuse, out->g[i].addr.text);
        if (old != NULL) {
            free(old->fds);
            old->fds = NULL;
            old->n = old->nactive = 0;
        }
        if (!is_unix(&out->g[i]) && steer(&out->g[i]) < 0)
            log_warn("cannot steer connections on %s (%s): shrinking worker_processes "
                     "may reset queued connections", out->g[i].addr.text, strerror(errno));
    }
    return 0;
}

void listeners_close(struct listeners *ls)
{
    for (size_t i = 0; i < ls->ng; i++) {
        for (unsigned k = 0; k < ls->g[i].n; k++)
            close(ls->g[i].fds[k]);
        free(ls->g[i].fds);
    }
    free(ls->g);
    ls->g = NULL;
    ls->ng = 0;
}

void listeners_close_retired(struct listeners *ls)
{
    /* From the tail: the kernel fills a hole with its last socket, and
     * closing the last one keeps every other index where it is. */
    for (size_t i = 0; i < ls->ng; i++)
        while (ls->g[i].n > ls->g[i].nactive)
            close(ls->g[i].fds[--ls->g[i].n]);
}

void listeners_unlink(const struct listeners *ls)
{
    struct stat st;
    for (size_t i = 0; i < ls->ng; i++) {
        const struct lgroup *g = &ls->g[i];
        if (g->fds != NULL && g->n > 0 && g->addr.addr.ss_family == AF_UNIX &&
            lstat(unix_path(&g->addr), &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(unix_path(&g->addr));
    }
}

void listeners_keep_slot(struct listeners *ls, unsigned slot)
{
    for (size_t i = 0; i < ls->ng; i++) {
        unsigned keep = is_unix(&ls->g[i]) ? 0 : slot;
        for (unsigned k = 0; k < ls->g[i].n; k++) {
            if (k != keep && ls->g[i].fds[k] >= 0) {
                close(ls->g[i].fds[k]);
                ls->g[i].fds[k] = -1;
            }
        }
    }
}

int listeners_fd(const struct listeners *ls, size_t addr, unsigned slot)
{
    return ls->g[addr].fds[is_unix(&ls->g[addr]) ? 0 : slot];
}
