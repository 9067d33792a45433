#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "listener.h"
#include "notify.h"

#define ENV_LISTEN "WSECHOD_LISTEN_FDS"
#define ENV_CHANNEL "WSECHOD_UPGRADE_FD"

static int keep_open(int fd)
{
    return fcntl(fd, F_SETFD, 0);
}

/* "text=fd,fd,...;text=fd,..." with every socket made inheritable. */
static int describe(const struct listeners *ls, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ls->ng; i++) {
        const struct lgroup *g = &ls->g[i];
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s=", i ? ";" : "",
                                g->addr.text);
        for (unsigned k = 0; k < g->n; k++) {
            if (keep_open(g->fds[k]) < 0)
                return -1;
            off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%d", k ? "," : "",
                                    g->fds[k]);
        }
    }
    return off < len ? 0 : -1;
}

static void child(const char *exe, const char *conf_file, const struct listeners *ls, int chan)
{
    static char fds[65536];
    char num[16];
    sigset_t none;
    char *argv[] = { (char *)exe, "-c", (char *)conf_file, NULL };
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    snprintf(num, sizeof(num), "%d", chan);
    if (describe(ls, fds, sizeof(fds)) < 0 || keep_open(chan) < 0 ||
        setenv(ENV_LISTEN, fds, 1) < 0 || setenv(ENV_CHANNEL, num, 1) < 0)
        _exit(127);
    notify_export();
    execv(exe, argv);
    fprintf(stderr, "wsechod: upgrade: cannot run %s: %s\n", exe, strerror(errno));
    _exit(127);
}

pid_t upgrade_exec(const char *exe, const char *conf_file, const struct listeners *ls,
                   int *chan)
{
    int sv[2];
    if (channel_pair(sv) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        child(exe, conf_file, ls, sv[1]);
    }
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return -1;
    }
    *chan = sv[0];
    return pid;
}

static int parse_fd(const char *s, char **end)
{
    errno = 0;
    long v = strtol(s, end, 10);
    if (errno || *end == s || v < 0 || v > 1 << 24 || fcntl((int)v, F_GETFD) < 0)
        return -1;
    return (int)v;
}

/* One "text=fd,fd" entry into g. */
static int parse_group(char *entry, struct lgroup *g)
{
    char *eq = strrchr(entry, '=');
    if (eq == NULL || (size_t)(eq - entry) >= sizeof(g->addr.text))
        return -1;
    memcpy(g->addr.text, entry, (size_t)(eq - entry));
    g->addr.text[eq - entry] = '\0';
    for (char *p = eq + 1; *p;) {
        char *end;
        int fd = parse_fd(p, &end);
        int *grown = fd < 0 ? NULL : realloc(g->fds, (g->n + 1) * sizeof(*grown));
        if (grown == NULL)
            return -1;
        g->fds = grown;
        g->fds[g->n++] = fd;
        if (*end != ',' && *end != '\0')
            return -1;
        p = *end ? end + 1 : end;
    }
    g->nactive = g->n;
    return 0;
}

static int parse_listen(const char *text, struct listeners *ls)
{
    char *copy = strdup(text), *save = NULL;
    int rc = copy ? 0 : -1;
    for (char *e = copy ? strtok_r(copy, ";", &save) : NULL; e && rc == 0;
         e = strtok_r(NULL, ";", &save)) {
        struct lgroup *grown = realloc(ls->g, (ls->ng + 1) * sizeof(*grown));
        if (grown == NULL) {
            rc = -1;
            break;
        }
        ls->g = grown;
        memset(&ls->g[ls->ng], 0, sizeof(ls->g[0]));
        rc = parse_group(e, &ls->g[ls->ng++]);
    }
    free(copy);
    return rc;
}

int upgrade_inherit(struct listeners *ls, int *chan)
{
    const char *fds = getenv(ENV_LISTEN), *ch = getenv(ENV_CHANNEL);
    int rc = 0;
    char *end;
    memset(ls, 0, sizeof(*ls));
    *chan = -1;
    if (ch != NULL && ((*chan = parse_fd(ch, &end)) < 0 || *end != '\0'))
        rc = -1;
    if (fds != NULL && parse_listen(fds, ls) < 0)
        rc = -1;
    /* Inherited descriptors are ours now: not to be passed further. */
    for (size_t i = 0; i < ls->ng; i++)
        for (unsigned k = 0; k < ls->g[i].n; k++)
            fcntl(ls->g[i].fds[k], F_SETFD, FD_CLOEXEC);
    if (*chan >= 0)
        fcntl(*chan, F_SETFD, FD_CLOEXEC);
    unsetenv(ENV_LISTEN);
    unsetenv(ENV_CHANNEL);
    return rc;
}

int upgrade_self(char *buf, size_t len)
{
    static const char deleted[] = " (deleted)";
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* Replaced on disk since we started: the path still names the new one. */
    size_t dl = sizeof(deleted) - 1;
    if ((size_t)n > dl && strcmp(buf + n - dl, deleted) == 0)
        buf[n - dl] = '\0';
    return 0;
}
