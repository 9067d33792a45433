/* The master's own part: signals, configuration reloads, the stop, and
 * its timers; the workers are generation.c's, a binary upgrade's state and
 * protocol upgrade.c's.
 *
 * Everything that happens to the master arrives as a signal (SIGIO for
 * the channels, SIGCHLD, SIGALRM, the operator's), so it sleeps in
 * sigsuspend. Its timers are therefore a deliberately separate mechanism
 * from ev.h's queues, which belong to an epoll loop the master does not
 * run: each is a deadline field (a worker's kill deadline, a slot's
 * respawn time, the upgrade's deadline), scanned on every wake-up by
 * run_timers, which arms ITIMER_REAL for the earliest. There are a few
 * per worker at most, so a scan costs nothing a queue would save. */
#include "master.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alog.h"
#include "config.h"
#include "ev.h"
#include "generation.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "perip.h"
#include "pidfile.h"
#include "proctitle.h"
#include "stats.h"
#include "status.h"
#include "tls.h"
#include "upgrade.h"
#include "worker.h"

static volatile sig_atomic_t sig_reload, sig_stop, sig_fast, sig_child, sig_reopen, sig_io,
                             sig_upgrade;

static struct {
    const char *conf_file;
    struct listeners ls;
    int stopping;           /* 1: graceful, 2: fast (or after an upgrade: 1) */
    pid_t pid;
} M;

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

static void reap(void)
{
    char how[96];
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        describe_exit(status, how, sizeof(how));
        if (pid == upgrade_new_master()) {
            upgrade_exited(how);
        } else if (!status_reaped(pid, how)) {
            gen_reaped(pid, status, how);
        }
    }
    /* Retired sockets close once no old worker can accept from them. */
    if (gen_draining() == 0)
        listeners_close_retired(&M.ls);
}

/* The new master serves: our workers hand it their connections, then we go. */
static void hand_over(pid_t new_master, const int *inboxes, unsigned n)
{
    gen_hand_over(new_master, inboxes, n);
    M.stopping = 1; /* no respawns, no reloads: exit once the workers are done */
    listeners_close(&M.ls);
}

static void read_channels(void)
{
    gen_read_channels();
    upgrade_read(hand_over);
    gen_check_ready();
}

static int apply_logging(const struct config *cf)
{
    if (log_open(cf->error_log) < 0) {
        log_error("cannot open error_log %s: %s", cf->error_log, strerror(errno));
        return -1;
    }
    log_set_level(cf->log_level);
    log_set_format(cf->log_format);
    return 0;
}

/* The next generation, its configuration in *ncp (the generation's) and
 * its sockets in *nls; NULL with err filled. */
static struct generation *load_generation(struct listeners *nls, const struct config **ncp,
                                          char *err)
{
    struct generation *g = NULL;
    struct config *nc = config_load(M.conf_file, err);
    if (nc != NULL && (g = gen_new(nc)) == NULL)
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
    *ncp = nc;
    if (g != NULL && listeners_open(nls, nc, &M.ls, err, CONFIG_ERR_MAX) < 0) {
        gen_discard(g);
        g = NULL;
    } else if (g != NULL && status_prepare(nc, err, CONFIG_ERR_MAX) < 0) {
        listeners_close(nls);
        gen_discard(g);
        g = NULL;
    } else if (g != NULL && alog_master_open(nc->access_log, err, CONFIG_ERR_MAX) < 0) {
        status_abort();
        listeners_close(nls);
        gen_discard(g);
        g = NULL;
    }
    return g;
}

static void reload(void)
{
    char err[CONFIG_ERR_MAX];
    struct listeners nls;
    const struct config *ocf = gen_config(), *nc;
    log_notice("reloading configuration %s (generation %u)", M.conf_file, gen_id());
    notify_send("RELOADING=1\nMONOTONIC_USEC=%llu", notify_monotonic_usec());
    struct generation *g = load_generation(&nls, &nc, err);
    if (g == NULL) {
        if (stats != NULL)
            stats->reloads_failed++;
        stats_event("reload failed: %.90s", err);
        log_error("reload failed, keeping generation %u: %s", gen_id(), err);
        notify_send("READY=1\nSTATUS=reload failed, keeping generation %u: %.900s", gen_id(),
                    err);
        return;
    }
    if (apply_logging(nc) < 0)
        apply_logging(ocf);
    if (nc->per_ip_table_size != ocf->per_ip_table_size)
        log_warn("per_ip_table_size: the per-IP table keeps its %u entries until the next start "
                 "or binary upgrade", perip_entries());
    if (strcmp(nc->pid_file, ocf->pid_file) != 0) {
        if (pidfile_write(nc->pid_file, M.pid) < 0)
            log_error("cannot write pid file %s: %s", nc->pid_file, strerror(errno));
        pidfile_remove(ocf->pid_file, M.pid);
    }
    struct listeners ols = M.ls;
    M.ls = nls;
    /* Addresses no longer configured go before any fork, or the new workers
     * would inherit their sockets and keep them in the reuseport group. */
    listeners_unlink(&ols);
    listeners_close(&ols);
    status_commit(nc);
    gen_start(g);
    stats->reloads_ok++;
    stats->config_loaded_ms = stats_wall_ms();
    stats_event("reload: generation %u", gen_id());
    log_notice("reload complete: generation %u, %u workers", gen_id(), nc->worker_processes);
}

static void stop(int fast)
{
    if (M.stopping == 2 || (M.stopping == 1 && !fast))
        return;
    size_t n = gen_workers();
    log_notice("%s shutdown of generation %u: %zu workers to stop", fast ? "fast" : "graceful",
               gen_id(), n);
    notify_send("STOPPING=1\nSTATUS=%s shutdown: %zu workers to stop",
                fast ? "fast" : "graceful", n);
    gen_stop(fast);
    M.stopping = fast ? 2 : 1;
    STATS_SET(stats->stopping, 1);
    stats_event("%s shutdown", fast ? "fast" : "graceful");
    upgrade_abort("shutdown requested");
    /* New connections must not queue behind workers that will not take them.
     * The socket files go too, unless an old master still serves on them
     * (we are a binary upgrade that did not finish). */
    if (!upgrade_from_old())
        listeners_unlink(&M.ls);
    listeners_close(&M.ls);
}

static void reopen(void)
{
    if (log_reopen() < 0)
        log_error("cannot reopen error_log %s: %s", gen_config()->error_log, strerror(errno));
    /* Workers may have dropped the privileges needed to open the file:
     * they get the master's descriptor instead. */
    gen_tell_all(WORKER_CMD_REOPEN, log_fd_get());
    int afd = alog_master_reopen();
    if (afd >= 0) {
        gen_tell_all(WORKER_CMD_ALOG, afd);
        close(afd);
    }
    log_notice("log files reopened");
}

/* Runs what is due; returns ms to the next deadline, -1 if none. */
/* Every worker gets the new ticket keys; later ones inherit them. */
static uint64_t rotate_tickets(uint64_t now)
{
    if (tls_tickets_due() > now)
        return tls_tickets_due();
    int fd = tls_tickets_rotate(now, gen_config()->ticket_rotation_ms);
    if (fd >= 0) {
        gen_tell_all(WORKER_CMD_TICKETS, fd);
        close(fd);
    }
    log_info("TLS session ticket keys rotated");
    return tls_tickets_due();
}

static int64_t run_timers(void)
{
    uint64_t now = ev_now_ms(), next = upgrade_expire(now), workers = gen_timers(now);
    uint64_t tickets = rotate_tickets(now), status = status_timers(now);
    next = workers < next ? workers : next;
    next = status < next ? status : next;
    next = tickets < next ? tickets : next;
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

static void on_signals(void)
{
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
        if (upgrade_under_way())
            log_warn("reload ignored: a binary upgrade is under way");
        else if (!M.stopping)
            reload();
    }
    if (sig_upgrade) {
        sig_upgrade = 0;
        if (M.stopping)
            log_warn("binary upgrade ignored: shutting down");
        else
            upgrade_start(M.conf_file, &M.ls, gen_config(), gen_id());
    }
    if (sig_reopen) {
        sig_reopen = 0;
        reopen();
    }
}

static void loop(void)
{
    sigset_t none;
    sigemptyset(&none);
    while (!M.stopping || gen_workers() > 0) {
        arm_alarm(run_timers());
        if (M.stopping && gen_workers() == 0)
            break;
        sigsuspend(&none);
        on_signals();
    }
}

static void describe_listen(const struct config *cf, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < cf->nlisten && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", cf->listen[i].text);
}

/* Everything but the workers: logging, sockets (an old master's or new),
 * the pid file. Returns 0, or -1 with the error reported. The log comes
 * first so that the errors after it reach it too (log_startup: and
 * stderr, where whoever started us is looking). */
static int master_init(const struct config *cf)
{
    char err[CONFIG_ERR_MAX];
    struct listeners inherited;
    if (apply_logging(cf) < 0)
        return -1;
    if (upgrade_init(M.pid, &inherited) < 0) {
        log_error("malformed upgrade environment from the old master");
        listeners_close(&inherited);
        return -1;
    }
    /* An upgrade's old master is alive and named in the pid file: the
     * file becomes ours once our workers serve. */
    pid_t other = upgrade_from_old() ? 0 : pidfile_running(cf->pid_file);
    if (other) {
        log_error("already running (pid %d, from %s)", (int)other, cf->pid_file);
        return -1;
    }
    int rc = listeners_open(&M.ls, cf, &inherited, err, sizeof(err));
    listeners_close(&inherited); /* addresses the new configuration dropped */
    if (rc < 0) {
        log_error("%s", err);
        return -1;
    }
    if (!upgrade_from_old() && pidfile_write(cf->pid_file, M.pid) < 0) {
        log_error("cannot write pid file %s: %s", cf->pid_file, strerror(errno));
        listeners_unlink(&M.ls);
        return -1;
    }
    err[0] = '\0';
    if (status_prepare(cf, err, sizeof(err)) < 0 ||
        alog_master_open(cf->access_log, err, sizeof(err)) < 0 || stats_init(M.conf_file) < 0 ||
        perip_init(cf->per_ip_table_size) < 0) {
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "shared memory for the counters: %s", strerror(errno));
        log_error("%s", err);
        status_abort();
        pidfile_remove(cf->pid_file, M.pid);
        if (!upgrade_from_old())
            listeners_unlink(&M.ls);
        return -1;
    }
    stats->master = M.pid;
    status_commit(cf);
    return 0;
}

int master_run(const char *conf_file, struct config *cf)
{
    char where[512];
    cpu_set_t cpus;
    M.conf_file = conf_file;
    M.pid = getpid();
    struct generation *g = gen_new(cf); /* owns cf from now on */
    if (g == NULL) {
        fprintf(stderr, "wsechod: out of memory\n");
        return 1;
    }
    log_startup(1);
    int rc = master_init(cf);
    log_startup(0); /* before any fork: workers log to the log alone */
    if (rc < 0) {
        gen_discard(g);
        return 1;
    }
    signals_init();
    notify_init();
    gen_init(&M.ls, M.pid,
             sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? (unsigned)CPU_COUNT(&cpus) : 1);
    proctitle_set("wsechod: master process %s", conf_file);
    describe_listen(cf, where, sizeof(where));
    log_notice("wsechod/%s master %d started%s: %u workers, listening on %s", WSECHOD_VERSION,
               (int)M.pid, upgrade_from_old() ? " (binary upgrade)" : "",
               cf->worker_processes, where);
    gen_start(g);
    loop();
    pidfile_remove(gen_config()->pid_file, M.pid); /* unless a new master took it */
    if (upgrade_handed_over())
        log_notice("master %d exiting: master %d took over", (int)M.pid,
                   (int)upgrade_new_master());
    else
        log_notice("master %d exiting", (int)M.pid);
    listeners_close(&M.ls);
    status_exit();
    gen_free_all();
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
