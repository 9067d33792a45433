#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "config.h"
#include "ev.h"
#include "handoff.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "pidfile.h"
#include "proctitle.h"
#include "upgrade.h"
#include "worker.h"

/* Extra time a draining worker gets past its own deadlines before SIGKILL. */
#define KILL_GRACE_MS 2000
/* A worker that dies younger than this counts as failing at start-up. */
#define QUICK_DEATH_MS 5000
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000
/* Generations alive at once: the current one and this many draining. A
 * reload beyond that makes the oldest close its connections at once. */
#define MAX_DRAINING_GENERATIONS 2

enum wstate { W_RUNNING, W_DRAINING };

struct wproc {
    pid_t pid;
    unsigned slot, generation;
    int channel;            /* master's end */
    int inbox;              /* write end of its inbox, until given away; -1 */
    enum wstate state;
    int ready;              /* said it is serving */
    uint64_t started_ms;
    uint64_t kill_at_ms;    /* 0: no deadline */
};

struct slot {
    uint64_t respawn_at_ms; /* 0: nothing scheduled */
    unsigned backoff_ms;
};

static volatile sig_atomic_t sig_reload, sig_stop, sig_fast, sig_child, sig_reopen, sig_io,
                             sig_upgrade;

static struct {
    const char *conf_file;
    struct config *cf;
    unsigned generation;
    struct listeners ls;
    struct wproc *w;
    size_t nw;
    struct slot *slots;
    int stopping;
    pid_t pid;
    unsigned ncpus;             /* CPUs we may run on, for worker_cpu_affinity */
    uint64_t reload_started_ms; /* 0: no generation waiting to be ready */
    char exe[4096];             /* our executable's path, for an upgrade */
    /* Binary upgrade, old side: the new master we started. */
    pid_t up_pid;               /* 0: none running */
    int up_fd;                  /* our end of its channel; -1 */
    uint64_t up_deadline_ms;
    int *up_inboxes;            /* its workers' inboxes, sent before its 'G' */
    unsigned n_up_inboxes;
    int upgraded;               /* everything handed to up_pid: exit when drained */
    /* New side: the old master's channel, until our workers serve. */
    int parent_fd;
} M = { .up_fd = -1, .parent_fd = -1 };

static void upgrade_abort(const char *why);
static void read_upgrade(void);

static void on_signal(int signo)
{
    switch (signo) {
    case SIGHUP:  sig_reload = 1; break;
    case SIGTERM:
    case SIGQUIT: sig_stop = 1; break;
    case SIGINT:  sig_fast = 1; break;
    case SIGCHLD: sig_child = 1; break;
    case SIGUSR1: sig_reopen = 1; break;
    case SIGUSR2: sig_upgrade = 1; break;
    case SIGIO:   sig_io = 1; break;
    default: break; /* SIGALRM: just wake up */
    }
}

static const int handled[] = {
    SIGHUP, SIGTERM, SIGQUIT, SIGINT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGIO,
};

static void signals_init(void)
{
    struct sigaction sa;
    sigset_t set;
    sigemptyset(&set);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) {
        sigaddset(&set, handled[i]);
        sigaction(handled[i], &sa, NULL);
    }
    /* Delivered only inside sigsuspend: handlers never race the loop. */
    sigprocmask(SIG_BLOCK, &set, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

static void tell_fd(struct wproc *w, char cmd, int fd)
{
    if (channel_send(w->channel, cmd, fd) < 0)
        log_warn("cannot reach worker %d: %s", (int)w->pid, strerror(errno));
}

static void tell(struct wproc *w, char cmd)
{
    tell_fd(w, cmd, -1);
}

static void inbox_close(struct wproc *w)
{
    if (w->inbox >= 0)
        close(w->inbox);
    w->inbox = -1;
}

static void child_start(unsigned slot, int channel, int inbox)
{
    int fds[M.cf->nlisten];
    /* Keep only this slot's sockets and our own channel end. Another
     * worker's inbox kept open here would never report its end. */
    for (size_t i = 0; i < M.nw; i++) {
        close(M.w[i].channel);
        inbox_close(&M.w[i]);
    }
    if (M.up_fd >= 0)
        close(M.up_fd);
    if (M.parent_fd >= 0)
        close(M.parent_fd);
    listeners_keep_slot(&M.ls, slot);
    for (size_t i = 0; i < M.cf->nlisten; i++)
        fds[i] = listeners_fd(&M.ls, i, slot);
    struct worker_args a = {
        .cf = M.cf,
        .slot = slot,
        .generation = M.generation,
        .listen_fds = fds,
        .nlisten = M.cf->nlisten,
        .ncpus = M.ncpus,
        .channel = channel,
        .inbox = inbox,
    };
    worker_main(&a);
}

/* Readiness and EOF on the master's channel ends arrive as SIGIO. */
static void channel_watch(int fd)
{
    if (fcntl(fd, F_SETOWN, M.pid) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) < 0)
        log_warn("channel: cannot enable SIGIO: %s", strerror(errno));
}

static int spawn(unsigned slot)
{
    int sv[2], ib[2];
    struct wproc *grown = realloc(M.w, (M.nw + 1) * sizeof(*M.w));
    if (grown == NULL)
        return -1;
    M.w = grown;
    if (channel_pair(sv) < 0) {
        log_error("socketpair: %s", strerror(errno));
        return -1;
    }
    if (handoff_pair(ib) < 0) {
        log_error("socketpair: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    /* Before the fork: a worker's first message must raise SIGIO too. */
    channel_watch(sv[0]);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        close(ib[0]);
        close(ib[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        close(ib[1]);
        child_start(slot, sv[1], ib[0]);
    }
    close(sv[1]);
    close(ib[0]);
    /* The inbox's write end is given away once the generation is ready; a
     * worker respawned later gets no handoffs and its inbox closes now. */
    if (M.reload_started_ms == 0) {
        close(ib[1]);
        ib[1] = -1;
    }
    M.w[M.nw++] = (struct wproc){
        .pid = pid, .slot = slot, .generation = M.generation, .channel = sv[0],
        .inbox = ib[1], .state = W_RUNNING, .started_ms = ev_now_ms(),
    };
    log_info("worker %d started (slot %u, generation %u)", (int)pid, slot, M.generation);
    return 0;
}

static void respawn_later(unsigned slot, uint64_t lived_ms)
{
    struct slot *s = &M.slots[slot];
    if (lived_ms >= QUICK_DEATH_MS)
        s->backoff_ms = 0;
    else
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    s->respawn_at_ms = ev_now_ms() + s->backoff_ms;
}

static void worker_gone(size_t i, int status)
{
    struct wproc w = M.w[i];
    char how[96];
    close(w.channel);
    inbox_close(&w);
    M.w[i] = M.w[--M.nw];
    describe_exit(status, how, sizeof(how));
    if (w.state == W_DRAINING || M.stopping) {
        log_info("worker %d (slot %u, generation %u) %s", (int)w.pid, w.slot, w.generation, how);
        return;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_FATAL) {
        log_error("worker %d (slot %u, generation %u) %s: fatal start-up error, "
                  "slot %u stays empty until the next reload", (int)w.pid, w.slot,
                  w.generation, how, w.slot);
        return;
    }
    respawn_later(w.slot, ev_now_ms() - w.started_ms);
    log_error("worker %d (slot %u, generation %u) %s; respawning %s%u ms", (int)w.pid,
              w.slot, w.generation, how, M.slots[w.slot].backoff_ms ? "with back-off in " : "in ",
              M.slots[w.slot].backoff_ms);
}

static unsigned count_workers(int current, int ready_only)
{
    unsigned n = 0;
    for (size_t i = 0; i < M.nw; i++)
        if ((M.w[i].generation == M.generation) == current && (!ready_only || M.w[i].ready))
            n++;
    return n;
}

static void report_status(const char *prefix)
{
    notify_send("STATUS=%sgeneration %u: %u of %u workers serving, %u draining", prefix,
                M.generation, count_workers(1, 1), M.cf->worker_processes,
                count_workers(0, 0));
}

/* A binary upgrade's new master: the old one may now hand its
 * connections to our workers, and we are the one the pid file names. */
static void give_inboxes_to_parent(void)
{
    if (pidfile_write(M.cf->pid_file, M.pid) < 0)
        log_error("cannot write pid file %s: %s", M.cf->pid_file, strerror(errno));
    for (size_t i = 0; i < M.nw; i++)
        if (M.w[i].inbox >= 0 && channel_send(M.parent_fd, WORKER_CMD_TARGET, M.w[i].inbox) < 0)
            log_warn("upgrade: cannot pass an inbox to the old master: %s", strerror(errno));
    if (channel_send(M.parent_fd, WORKER_CMD_GO, -1) < 0)
        log_error("upgrade: cannot reach the old master: %s", strerror(errno));
    close(M.parent_fd);
    M.parent_fd = -1;
}

/* The new generation serves: older workers hand it their connections. */
static void give_inboxes(void)
{
    if (M.parent_fd >= 0) {
        give_inboxes_to_parent();
    } else if (M.cf->reload_handoff) {
        for (size_t o = 0; o < M.nw; o++) {
            if (M.w[o].generation == M.generation)
                continue;
            for (size_t n = 0; n < M.nw; n++)
                if (M.w[n].generation == M.generation && M.w[n].inbox >= 0)
                    tell_fd(&M.w[o], WORKER_CMD_TARGET, M.w[n].inbox);
            tell(&M.w[o], WORKER_CMD_GO);
        }
    }
    /* Senders now hold their own copies: once they are gone, an inbox
     * reports its end and its worker knows nothing more will come. */
    for (size_t i = 0; i < M.nw; i++)
        inbox_close(&M.w[i]);
}

/* READY=1 once every worker of a new generation said it serves. */
static void check_ready(void)
{
    if (M.reload_started_ms == 0 || M.stopping ||
        count_workers(1, 1) < M.cf->worker_processes)
        return;
    give_inboxes();
    log_notice("generation %u ready: %u workers serving, %u draining (%llu ms)",
               M.generation, M.cf->worker_processes, count_workers(0, 0),
               (unsigned long long)(ev_now_ms() - M.reload_started_ms));
    M.reload_started_ms = 0;
    notify_send("READY=1");
    report_status("");
}

static void read_channels(void)
{
    char cmd;
    int fd;
    for (size_t i = 0; i < M.nw; i++) {
        while (channel_recv(M.w[i].channel, &cmd, &fd) > 0) {
            if (cmd == WORKER_MSG_READY)
                M.w[i].ready = 1;
            if (fd >= 0)
                close(fd);
        }
    }
    read_upgrade();
    check_ready();
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == M.up_pid) {
            char how[96];
            describe_exit(status, how, sizeof(how));
            if (M.up_fd >= 0)
                upgrade_abort(how);
            else
                log_notice("new master %d %s", (int)pid, how);
            if (!M.upgraded)
                M.up_pid = 0;
            continue;
        }
        for (size_t i = 0; i < M.nw; i++) {
            if (M.w[i].pid == pid) {
                worker_gone(i, status);
                break;
            }
        }
    }
    /* Retired sockets close once no old worker can accept from them. */
    if (count_workers(0, 0) == 0)
        listeners_close_retired(&M.ls);
}

static uint64_t drain_budget(const struct config *cf)
{
    return cf->shutdown_timeout_ms + cf->close_timeout_ms + KILL_GRACE_MS;
}

/* Asks the workers of older generations (or all, when stopping) to drain. */
static void drain_workers(char cmd_keep, char cmd_retire, int all)
{
    uint64_t kill_at = ev_now_ms() + drain_budget(M.cf);
    for (size_t i = 0; i < M.nw; i++) {
        struct wproc *w = &M.w[i];
        if (!all && w->generation == M.generation)
            continue;
        int retire = w->slot >= M.cf->worker_processes;
        tell(w, retire ? cmd_retire : cmd_keep);
        w->state = W_DRAINING;
        if (w->kill_at_ms == 0 || kill_at < w->kill_at_ms)
            w->kill_at_ms = kill_at;
    }
}

/* Bounds the generations alive: the oldest ones close their clients now. */
static void hurry_old_generations(void)
{
    uint64_t kill_at = ev_now_ms() + M.cf->close_timeout_ms + KILL_GRACE_MS;
    for (size_t i = 0; i < M.nw; i++) {
        struct wproc *w = &M.w[i];
        if (w->generation + MAX_DRAINING_GENERATIONS >= M.generation)
            continue;
        tell(w, WORKER_CMD_HURRY);
        if (w->kill_at_ms == 0 || kill_at < w->kill_at_ms)
            w->kill_at_ms = kill_at;
    }
}

static void start_generation(void)
{
    free(M.slots);
    M.slots = calloc(M.cf->worker_processes, sizeof(*M.slots));
    for (unsigned s = 0; s < M.cf->worker_processes; s++)
        if (M.slots == NULL || spawn(s) < 0)
            respawn_later(s, 0); /* try again shortly rather than give up */
}

static int apply_logging(const struct config *cf)
{
    if (log_open(cf->error_log) < 0) {
        log_error("cannot open error_log %s: %s", cf->error_log, strerror(errno));
        return -1;
    }
    log_set_level(cf->log_level);
    return 0;
}

static void reload(void)
{
    char err[CONFIG_ERR_MAX];
    struct listeners nls;
    log_notice("reloading configuration %s (generation %u)", M.conf_file, M.generation);
    notify_send("RELOADING=1\nMONOTONIC_USEC=%llu", notify_monotonic_usec());
    struct config *nc = config_load(M.conf_file, err);
    if (nc != NULL && listeners_open(&nls, nc, &M.ls, err, sizeof(err)) < 0) {
        config_free(nc);
        nc = NULL;
    }
    if (nc == NULL) {
        log_error("reload failed, keeping generation %u: %s", M.generation, err);
        notify_send("READY=1\nSTATUS=reload failed, keeping generation %u: %.900s",
                    M.generation, err);
        return;
    }
    if (apply_logging(nc) < 0)
        apply_logging(M.cf);
    if (strcmp(nc->pid_file, M.cf->pid_file) != 0) {
        if (pidfile_write(nc->pid_file, M.pid) < 0)
            log_error("cannot write pid file %s: %s", nc->pid_file, strerror(errno));
        pidfile_remove(M.cf->pid_file, M.pid);
    }
    struct config *old = M.cf;
    struct listeners ols = M.ls;
    M.cf = nc;
    M.ls = nls;
    M.generation++;
    M.reload_started_ms = ev_now_ms();
    /* Addresses no longer configured go before any fork, or the new workers
     * would inherit their sockets and keep them in the reuseport group. */
    listeners_close(&ols);
    start_generation();
    drain_workers(WORKER_CMD_RELOAD, WORKER_CMD_RETIRE, 0);
    hurry_old_generations();
    config_free(old);
    log_notice("reload complete: generation %u, %u workers", M.generation,
               M.cf->worker_processes);
}

/* ---- Binary upgrade, old side ---- */

static void upgrade_forget_inboxes(void)
{
    for (unsigned i = 0; i < M.n_up_inboxes; i++)
        close(M.up_inboxes[i]);
    free(M.up_inboxes);
    M.up_inboxes = NULL;
    M.n_up_inboxes = 0;
}

static void upgrade_abort(const char *why)
{
    log_error("binary upgrade failed: %s; generation %u keeps serving", why, M.generation);
    notify_send("STATUS=binary upgrade failed (%.200s); generation %u keeps serving", why,
                M.generation);
    if (M.up_fd >= 0)
        close(M.up_fd);
    M.up_fd = -1;
    upgrade_forget_inboxes();
    if (M.up_pid > 0)
        kill(M.up_pid, SIGTERM); /* whatever it started drains itself */
    /* It may have claimed the pid file just before failing. */
    if (pidfile_write(M.cf->pid_file, M.pid) < 0)
        log_error("cannot write pid file %s: %s", M.cf->pid_file, strerror(errno));
}

static void upgrade_start(void)
{
    if (M.stopping || M.up_fd >= 0) {
        log_warn("binary upgrade ignored: %s", M.stopping ? "shutting down"
                                                           : "an upgrade is under way");
        return;
    }
    if (M.up_pid > 0) {
        log_warn("binary upgrade ignored: the previous new master %d has not exited yet",
                 (int)M.up_pid);
        return;
    }
    log_notice("binary upgrade: starting %s", M.exe);
    M.up_pid = upgrade_exec(M.exe, M.conf_file, &M.ls, &M.up_fd);
    if (M.up_pid < 0) {
        M.up_pid = 0;
        upgrade_abort(strerror(errno));
        return;
    }
    channel_watch(M.up_fd);
    M.up_deadline_ms = ev_now_ms() + M.cf->upgrade_timeout_ms;
}

/* The new master serves: our workers hand it their connections, then we go. */
static void upgrade_complete(void)
{
    uint64_t kill_at = ev_now_ms() + drain_budget(M.cf);
    log_notice("binary upgrade: master %d serves; handing %zu workers' connections to its "
               "%u workers", (int)M.up_pid, M.nw, M.n_up_inboxes);
    for (size_t i = 0; i < M.nw; i++) {
        struct wproc *w = &M.w[i];
        /* As when retired: our workers take their listeners' queues first. */
        tell(w, WORKER_CMD_UPGRADE);
        for (unsigned k = 0; k < M.n_up_inboxes; k++)
            tell_fd(w, WORKER_CMD_TARGET, M.up_inboxes[k]);
        tell(w, WORKER_CMD_GO);
        w->state = W_DRAINING;
        if (w->kill_at_ms == 0 || kill_at < w->kill_at_ms)
            w->kill_at_ms = kill_at;
        inbox_close(w);
    }
    upgrade_forget_inboxes();
    close(M.up_fd);
    M.up_fd = -1;
    M.upgraded = 1;
    M.stopping = 1; /* no respawns, no reloads: exit once the workers are done */
    listeners_close(&M.ls);
    notify_send("MAINPID=%d\nSTATUS=upgraded: connections handed to master %d",
                (int)M.up_pid, (int)M.up_pid);
}

static void read_upgrade(void)
{
    char cmd;
    int fd, r;
    while (M.up_fd >= 0 && (r = channel_recv(M.up_fd, &cmd, &fd)) > 0) {
        if (cmd == WORKER_CMD_TARGET && fd >= 0) {
            int *grown = realloc(M.up_inboxes, (M.n_up_inboxes + 1) * sizeof(*grown));
            if (grown != NULL) {
                M.up_inboxes = grown;
                M.up_inboxes[M.n_up_inboxes++] = fd;
                fd = -1;
            }
        } else if (cmd == WORKER_CMD_GO) {
            upgrade_complete();
        }
        if (fd >= 0)
            close(fd);
    }
    if (M.up_fd >= 0 && r < 0)
        upgrade_abort("the new master closed its channel before serving");
}

static void stop(int fast)
{
    if (M.stopping == 2 || (M.stopping == 1 && !fast))
        return;
    log_notice("%s shutdown of generation %u: %zu workers to stop", fast ? "fast" : "graceful",
               M.generation, M.nw);
    notify_send("STOPPING=1\nSTATUS=%s shutdown: %zu workers to stop",
                fast ? "fast" : "graceful", M.nw);
    if (fast) {
        for (size_t i = 0; i < M.nw; i++) {
            kill(M.w[i].pid, SIGTERM);
            M.w[i].kill_at_ms = ev_now_ms() + KILL_GRACE_MS;
        }
    } else {
        drain_workers(WORKER_CMD_QUIT, WORKER_CMD_QUIT, 1);
    }
    M.stopping = fast ? 2 : 1;
    if (M.up_fd >= 0)
        upgrade_abort("shutdown requested");
    /* Draining workers must not wait for handoffs that will never come. */
    for (size_t i = 0; i < M.nw; i++)
        inbox_close(&M.w[i]);
    /* New connections must not queue behind workers that will not take them. */
    listeners_close(&M.ls);
}

static void reopen(void)
{
    if (log_reopen() < 0)
        log_error("cannot reopen error_log %s: %s", M.cf->error_log, strerror(errno));
    /* Workers may have dropped the privileges needed to open the file:
     * they get the master's descriptor instead. */
    for (size_t i = 0; i < M.nw; i++)
        tell_fd(&M.w[i], WORKER_CMD_REOPEN, log_fd_get());
    log_notice("log files reopened");
}

/* Respawns due slots, kills overdue workers; returns ms to the next timer. */
static int64_t run_timers(void)
{
    uint64_t now = ev_now_ms(), next = UINT64_MAX;
    if (M.up_fd >= 0 && M.up_deadline_ms <= now)
        upgrade_abort("the new master was not serving within upgrade_timeout");
    else if (M.up_fd >= 0)
        next = M.up_deadline_ms;
    for (size_t i = 0; i < M.nw; i++) {
        struct wproc *w = &M.w[i];
        if (w->kill_at_ms && w->kill_at_ms <= now) {
            log_warn("worker %d (slot %u, generation %u) missed its deadline; killing it",
                     (int)w->pid, w->slot, w->generation);
            kill(w->pid, SIGKILL);
            w->kill_at_ms = 0;
        } else if (w->kill_at_ms && w->kill_at_ms < next) {
            next = w->kill_at_ms;
        }
    }
    for (unsigned s = 0; !M.stopping && M.slots && s < M.cf->worker_processes; s++) {
        uint64_t at = M.slots[s].respawn_at_ms;
        if (at && at <= now) {
            M.slots[s].respawn_at_ms = 0;
            if (spawn(s) < 0)
                respawn_later(s, 0);
        }
        if (M.slots[s].respawn_at_ms && M.slots[s].respawn_at_ms < next)
            next = M.slots[s].respawn_at_ms;
    }
    return next == UINT64_MAX ? -1 : (int64_t)(next - now);
}

static void arm_alarm(int64_t ms)
{
    struct itimerval it = { 0 };
    if (ms >= 0) {
        ms = ms < 1 ? 1 : ms;
        it.it_value.tv_sec = ms / 1000;
        it.it_value.tv_usec = (ms % 1000) * 1000;
    }
    setitimer(ITIMER_REAL, &it, NULL);
}

static void loop(void)
{
    sigset_t none;
    sigemptyset(&none);
    while (!M.stopping || M.nw > 0) {
        arm_alarm(run_timers());
        if (M.stopping && M.nw == 0)
            break;
        sigsuspend(&none);
        /* A stop first: workers that died of the same group-wide signal
         * are then part of the shutdown, not failures to respawn. */
        if (sig_fast || sig_stop) {
            stop(sig_fast);
            sig_fast = sig_stop = 0;
        }
        if (sig_child) {
            sig_child = 0;
            reap();
        }
        if (sig_io) {
            sig_io = 0;
            read_channels();
        }
        if (sig_reload) {
            sig_reload = 0;
            if (M.up_fd >= 0)
                log_warn("reload ignored: a binary upgrade is under way");
            else if (!M.stopping)
                reload();
        }
        if (sig_upgrade) {
            sig_upgrade = 0;
            upgrade_start();
        }
        if (sig_reopen) {
            sig_reopen = 0;
            reopen();
        }
    }
}

static void describe_listen(char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < M.cf->nlisten && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                M.cf->listen[i].text);
}

int master_run(const char *conf_file, struct config *cf)
{
    char err[CONFIG_ERR_MAX], where[512];
    struct listeners inherited;
    M.conf_file = conf_file;
    M.cf = cf;
    M.pid = getpid();
    M.generation = 1;
    if (upgrade_self(M.exe, sizeof(M.exe)) < 0)
        M.exe[0] = '\0';
    if (upgrade_inherit(&inherited, &M.parent_fd) < 0) {
        fprintf(stderr, "wsechod: malformed upgrade environment from the old master\n");
        listeners_close(&inherited);
        return 1;
    }
    /* An upgrade's old master is alive and named in the pid file: the
     * file becomes ours once our workers serve. */
    pid_t other = M.parent_fd < 0 ? pidfile_running(cf->pid_file) : 0;
    if (other) {
        fprintf(stderr, "wsechod: already running (pid %d, from %s)\n", (int)other, cf->pid_file);
        return 1;
    }
    int rc = listeners_open(&M.ls, cf, &inherited, err, sizeof(err));
    listeners_close(&inherited); /* addresses the new configuration dropped */
    if (rc < 0) {
        fprintf(stderr, "wsechod: %s\n", err);
        return 1;
    }
    if (M.parent_fd < 0 && pidfile_write(cf->pid_file, M.pid) < 0) {
        fprintf(stderr, "wsechod: cannot write pid file %s: %s\n", cf->pid_file, strerror(errno));
        return 1;
    }
    if (apply_logging(cf) < 0) {
        pidfile_remove(cf->pid_file, M.pid);
        return 1;
    }
    signals_init();
    notify_init();
    cpu_set_t cpus;
    M.ncpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? (unsigned)CPU_COUNT(&cpus) : 1;
    M.reload_started_ms = ev_now_ms();
    proctitle_set("wsechod: master process %s", conf_file);
    describe_listen(where, sizeof(where));
    log_notice("wsechod/%s master %d started%s: %u workers, listening on %s", WSECHOD_VERSION,
               (int)M.pid, M.parent_fd >= 0 ? " (binary upgrade)" : "", cf->worker_processes,
               where);
    start_generation();
    loop();
    pidfile_remove(M.cf->pid_file, M.pid); /* unless a new master took it */
    if (M.upgraded)
        log_notice("master %d exiting: master %d took over", (int)M.pid, (int)M.up_pid);
    else
        log_notice("master %d exiting", (int)M.pid);
    listeners_close(&M.ls);
    config_free(M.cf);
    free(M.slots);
    free(M.w);
    return 0;
}

int master_signal(const struct config *cf, const char *name)
{
    static const struct { const char *name; int signo; } sigs[] = {
        { "reload", SIGHUP }, { "stop", SIGTERM }, { "quit", SIGQUIT }, { "reopen", SIGUSR1 },
        { "upgrade", SIGUSR2 },
    };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (strcmp(name, sigs[i].name) != 0)
            continue;
        pid_t pid = pidfile_running(cf->pid_file);
        if (pid == 0) {
            fprintf(stderr, "wsechod: not running (no live master in pid file %s)\n", cf->pid_file);
            return 1;
        }
        if (kill(pid, sigs[i].signo) < 0) {
            fprintf(stderr, "wsechod: cannot signal master %d: %s\n", (int)pid, strerror(errno));
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "wsechod: unknown signal '%s' (reload, stop, quit, reopen or upgrade)\n",
            name);
    return 2;
}
