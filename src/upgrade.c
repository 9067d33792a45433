#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "config.h"
#include "ev.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "pidfile.h"

#define ENV_LISTEN "WSECHOD_LISTEN_FDS"
#define ENV_CHANNEL "WSECHOD_UPGRADE_FD"

static struct {
    pid_t self;
    char exe[4096];             /* our executable's path: where a new version lands */
    /* Old side. */
    pid_t pid;                  /* the new master; 0: none running */
    int fd;                     /* our end of its channel; -1: no upgrade under way */
    uint64_t deadline_ms;
    const struct config *cf;    /* what keeps serving if it fails */
    unsigned generation;
    int *inboxes;               /* its workers' inboxes, sent before its SERVING */
    unsigned n_inboxes;
    int handed_over;
    /* New side: the old master's channel, until our workers serve. */
    int parent_fd;
} U = { .fd = -1, .parent_fd = -1 };

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

/* Forks and runs exe -c conf_file with the sockets of ls and one end of a
 * new channel inherited; *chan is our end. The new pid, or -1. */
static pid_t exec_new(const char *exe, const char *conf_file, const struct listeners *ls,
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

/* What an old master left in the environment: its sockets into *ls (empty
 * if none) and its channel into *chan (-1 if this is no upgrade). */
static int inherit(struct listeners *ls, int *chan)
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

/* The path this executable was started from. */
static int exe_path(char *buf, size_t len)
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

int upgrade_init(pid_t self, struct listeners *inherited)
{
    U.self = self;
    if (exe_path(U.exe, sizeof(U.exe)) < 0)
        U.exe[0] = '\0'; /* an upgrade then fails in its child, and says so */
    return inherit(inherited, &U.parent_fd);
}

void upgrade_close_in_child(void)
{
    if (U.fd >= 0)
        close(U.fd);
    if (U.parent_fd >= 0)
        close(U.parent_fd);
}

/* ---- New side ---- */

int upgrade_from_old(void)
{
    return U.parent_fd >= 0;
}

void upgrade_send_inbox(int inbox)
{
    if (channel_send(U.parent_fd, UPGRADE_MSG_INBOX, inbox) < 0)
        log_warn("upgrade: cannot pass an inbox to the old master: %s", strerror(errno));
}

void upgrade_send_serving(const char *pid_file)
{
    if (pidfile_write(pid_file, U.self) < 0)
        log_error("cannot write pid file %s: %s", pid_file, strerror(errno));
    if (channel_send(U.parent_fd, UPGRADE_MSG_SERVING, -1) < 0)
        log_error("upgrade: cannot reach the old master: %s", strerror(errno));
    close(U.parent_fd);
    U.parent_fd = -1;
}

/* ---- Old side ---- */

static void forget_inboxes(void)
{
    for (unsigned i = 0; i < U.n_inboxes; i++)
        close(U.inboxes[i]);
    free(U.inboxes);
    U.inboxes = NULL;
    U.n_inboxes = 0;
}

/* Also for a start that failed before any channel existed. */
static void fail(const char *why)
{
    log_error("binary upgrade failed: %s; generation %u keeps serving", why, U.generation);
    notify_send("STATUS=binary upgrade failed (%.200s); generation %u keeps serving", why,
                U.generation);
    if (U.fd >= 0)
        close(U.fd);
    U.fd = -1;
    forget_inboxes();
    if (U.pid > 0)
        kill(U.pid, SIGTERM); /* whatever it started drains itself */
    /* It may have claimed the pid file just before failing. */
    if (pidfile_write(U.cf->pid_file, U.self) < 0)
        log_error("cannot write pid file %s: %s", U.cf->pid_file, strerror(errno));
}

void upgrade_start(const char *conf_file, const struct listeners *ls,
                   const struct config *cf, unsigned generation)
{
    if (U.fd >= 0) {
        log_warn("binary upgrade ignored: an upgrade is under way");
        return;
    }
    if (U.pid > 0) {
        log_warn("binary upgrade ignored: the previous new master %d has not exited yet",
                 (int)U.pid);
        return;
    }
    U.cf = cf;
    U.generation = generation;
    log_notice("binary upgrade: starting %s", U.exe);
    U.pid = exec_new(U.exe, conf_file, ls, &U.fd);
    if (U.pid < 0) {
        U.pid = 0;
        fail(strerror(errno));
        return;
    }
    channel_watch(U.fd, U.self);
    U.deadline_ms = ev_now_ms() + cf->upgrade_timeout_ms;
}

int upgrade_under_way(void)
{
    return U.fd >= 0;
}

static void keep_inbox(int *fd)
{
    int *grown = realloc(U.inboxes, (U.n_inboxes + 1) * sizeof(*grown));
    if (grown == NULL)
        return;
    U.inboxes = grown;
    U.inboxes[U.n_inboxes++] = *fd;
    *fd = -1;
}

static void served(upgrade_serving_cb *serving)
{
    serving(U.pid, U.inboxes, U.n_inboxes);
    forget_inboxes();
    close(U.fd);
    U.fd = -1;
    U.handed_over = 1;
    notify_send("MAINPID=%d\nSTATUS=upgraded: connections handed to master %d", (int)U.pid,
                (int)U.pid);
}

void upgrade_read(upgrade_serving_cb *serving)
{
    char msg;
    int fd, r;
    while (U.fd >= 0 && (r = channel_recv(U.fd, &msg, &fd)) > 0) {
        if (msg == UPGRADE_MSG_INBOX && fd >= 0)
            keep_inbox(&fd);
        else if (msg == UPGRADE_MSG_SERVING)
            served(serving);
        if (fd >= 0)
            close(fd);
    }
    if (U.fd >= 0 && r < 0)
        fail("the new master closed its channel before serving");
}

void upgrade_abort(const char *why)
{
    if (U.fd >= 0)
        fail(why);
}

uint64_t upgrade_expire(uint64_t now)
{
    if (U.fd >= 0 && U.deadline_ms <= now)
        fail("the new master was not serving within upgrade_timeout");
    return U.fd >= 0 ? U.deadline_ms : UINT64_MAX;
}

pid_t upgrade_new_master(void)
{
    return U.pid;
}

void upgrade_exited(const char *how)
{
    if (U.fd >= 0)
        fail(how);
    else
        log_notice("new master %d %s", (int)U.pid, how);
    if (!U.handed_over)
        U.pid = 0;
}

int upgrade_handed_over(void)
{
    return U.handed_over;
}
