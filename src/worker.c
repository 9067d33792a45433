#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sched.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel.h"
#include "alog.h"
#include "config.h"
#include "conn.h"
#include "ev.h"
#include "handoff.h"
#include "log.h"
#include "mem.h"
#include "migrate.h"
#include "peer.h"
#include "perip.h"
#include "proxywait.h"
#include "stats.h"
#include "modules.h"
#include "shed.h"
#include "sock.h"
#include "tls.h"
#include "wstimer.h"
#include "proctitle.h"

/* How long accept() rests after running out of descriptors. */
#define ACCEPT_RETRY_MS 100
/* A retired listener keeps being accepted from this long after the steering
 * moved new connections away, for handshakes that were already under way. */
#define RETIRE_GRACE_MS 1000
/* Granularity of the staggered closes. */
#define SPREAD_TICK_MS 10
#define EVENTS_PER_WAIT 512

struct listener_io {
    struct ev_io io;
    const struct config_listen *lc; /* its address, TLS (NULL: plain), PROXY protocol */
};

static struct {
    const struct worker_args *a;
    struct ev_loop loop;
    struct conn_env env;
    struct migrate *mig;        /* handing connections over (reload) */
    struct listener_io *ls;
    struct ev_io channel;
    struct ev_io inbox;         /* fd -1 once every sender is gone */
    int *targets;               /* inboxes received since the last 'G' */
    unsigned ntargets;
    int draining;
    int closing_sent;           /* every connection has been told to close */
    uint16_t drain_code;
    uint64_t retire_at;         /* close a retired listener then; 0: none */
    uint64_t spread_start;      /* first staggered close */
    uint64_t drain_deadline;    /* last close: shutdown_timeout after the start */
    unsigned spread_total, spread_done;
    uint64_t emfile_logged_at;
    int limits;                 /* a per-IP limit is on: peer.h admits each client */
    /* The worker's own deadlines, in one queue of the loop (few timers
     * with different timeouts: started sorted). */
    struct ev_queue timers;
    struct ev_timer accept_t;   /* running: accepts rest after EMFILE */
    struct ev_timer drain_t;    /* the next step of a drain: a close, retiring */
} W;

static void drain_arm(void);
static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t);

static void set_nodelay(int fd)
{
    int one = 1;
    /* Echoes are small and interactive: do not let Nagle hold them. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int accept_error(int err)
{
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        /* Out of descriptors: retrying at once would spin the loop. */
        ev_timer_start_sorted(&W.loop, &W.timers, &W.accept_t, ACCEPT_RETRY_MS);
        if (W.loop.now - W.emfile_logged_at >= 1000 || W.emfile_logged_at == 0) {
            log_warn("accept: %s; pausing accepts for %d ms", strerror(err), ACCEPT_RETRY_MS);
            W.emfile_logged_at = W.loop.now;
        }
    } else {
        log_error("accept: %s", strerror(err));
    }
    return -1;
}

/* A connection whose client is known (client: NULL if it has no IP
 * address; from_header: named by a PROXY header) becomes a conn. */
static void admit(int fd, const struct config_listen *lc, const struct sockaddr *client,
                  int from_header)
{
    const struct config *cf = W.a->cf;
    /* Over the limit, still answer 503 to a bounded number of extra
     * clients so they learn why; beyond that, just close. */
    /* Once every client has been told to go, a latecomer would never
     * be: answer it instead (only reachable through a retired socket
     * whose queue outlived the grace period). */
    int full = W.env.nconns >= cf->worker_connections || W.closing_sent;
    if (full && W.env.nconns >= cf->worker_connections + cf->worker_connections / 8 + 16) {
        close(fd);
        return;
    }
    if (from_header || W.limits)
        peer_accepted(fd, client, from_header);
    if (conn_accept(&W.env, fd, full ? 503 : 0, lc->tls) < 0)
        peer_close(fd); /* the descriptor is closed: its count goes too */
}

static void on_header(int fd, const struct config_listen *lc, const struct sockaddr *client)
{
    admit(fd, lc, client, 1);
}

static void accept_all(struct listener_io *l)
{
    const struct config_listen *lc = l->lc;
    /* The peer's address only where something reads it. */
    int want = lc->proxy_protocol || W.limits;
    int ip = lc->addr.ss_family != AF_UNIX;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->io.fd, want ? (struct sockaddr *)&ss : NULL, want ? &sl : NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                accept_error(errno);
            return;
        }
        if (ip)
            set_nodelay(fd);
        if (lc->proxy_protocol)
            proxywait_start(fd, lc, &ss, ip ? sl : 0);
        else
            admit(fd, lc, want && ip ? (const struct sockaddr *)&ss : NULL, 0);
    }
}

static void on_listener(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    (void)loop;
    (void)events;
    if (!ev_timer_active(&W.accept_t))
        accept_all((struct listener_io *)(void *)io);
}

static void close_listeners(int take_queue)
{
    for (size_t i = 0; i < W.a->nlisten; i++) {
        if (W.ls[i].io.fd < 0)
            continue;
        if (take_queue)
            accept_all(&W.ls[i]);
        ev_del(&W.loop, &W.ls[i].io);
        close(W.ls[i].io.fd);
        W.ls[i].io.fd = -1;
    }
}

static void drain_start(uint16_t code, int retire, const char *why)
{
    const struct config *cf = W.a->cf;
    if (W.draining) {
        if (code == 1001)
            W.drain_code = 1001; /* a stop overrides a reload's 1012 */
        if (!retire && W.retire_at) {
            /* Our retired socket serves a new worker again: leave it to it. */
            W.retire_at = 0;
            close_listeners(0);
            drain_arm();
        }
        return;
    }
    W.draining = 1;
    W.drain_code = code;
    W.drain_deadline = W.loop.now + cf->shutdown_timeout_ms;
    W.spread_start = W.drain_deadline - cf->drain_spread_ms;
    if (retire)
        W.retire_at = W.loop.now + (cf->shutdown_timeout_ms < RETIRE_GRACE_MS
                                   ? cf->shutdown_timeout_ms : RETIRE_GRACE_MS);
    else
        close_listeners(0);
    drain_arm();
    proctitle_set("wsechod: worker process #%u gen %u draining", W.a->slot, W.a->generation);
    log_info("worker #%u gen %u draining (%s): %u connections, up to %llu ms",
             W.a->slot, W.a->generation, why, W.env.nconns,
             (unsigned long long)cf->shutdown_timeout_ms);
}

static void hurry(void)
{
    if (W.draining && !W.closing_sent) {
        W.spread_start = W.drain_deadline = W.loop.now;
        drain_arm();
    }
}

static void add_target(int fd)
{
    int *grown = realloc(W.targets, (W.ntargets + 1) * sizeof(*grown));
    if (grown == NULL) {
        close(fd);
        return;
    }
    W.targets = grown;
    W.targets[W.ntargets++] = fd;
}

static void handoff_go(void)
{
    unsigned before = W.env.nconns;
    if (!W.draining) {
        /* Only a worker being replaced hands its connections over. */
        for (unsigned i = 0; i < W.ntargets; i++)
            close(W.targets[i]);
        free(W.targets);
    } else {
        W.mig = migrate_begin(W.mig, &W.env, W.targets, W.ntargets);
        log_info("worker #%u gen %u: handing %u connections to %u new workers",
                 W.a->slot, W.a->generation, before, W.ntargets);
    }
    W.targets = NULL;
    W.ntargets = 0;
}

static void on_inbox(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct handoff_conn hc;
    int r;
    (void)loop;
    (void)events;
    while ((r = handoff_recv(io->fd, &hc)) > 0)
        migrate_adopt(&W.env, &hc);
    if (r < 0) {
        /* Every worker that could send is gone: nothing more will come. */
        ev_del(&W.loop, io);
        close(io->fd);
        io->fd = -1;
    }
}

static void on_channel(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    char cmd;
    int fd, r;
    (void)loop;
    (void)events;
    while ((r = channel_recv(io->fd, &cmd, &fd)) > 0) {
        switch (cmd) {
        case WORKER_CMD_RELOAD: drain_start(1012, 0, "reload"); break;
        case WORKER_CMD_RETIRE: drain_start(1012, 1, "reload, slot retired"); break;
        case WORKER_CMD_QUIT:   drain_start(1001, 0, "shutdown"); break;
        case WORKER_CMD_UPGRADE: drain_start(1012, 1, "binary upgrade"); break;
        case WORKER_CMD_HURRY:  hurry(); break;
        case WORKER_CMD_REOPEN: log_adopt(fd); fd = -1; break;
        case WORKER_CMD_ALOG:   alog_adopt(fd); fd = -1; break;
        case WORKER_CMD_TICKETS: tls_tickets_adopt(fd); break;
        case WORKER_CMD_TARGET: if (fd >= 0) add_target(fd); fd = -1; break;
        case WORKER_CMD_GO:     handoff_go(); break;
        default: log_warn("unknown command %d from master", cmd); break;
        }
        if (fd >= 0)
            close(fd);
    }
    if (r < 0) {
        ev_del(&W.loop, io);
        drain_start(1001, 0, "master is gone");
    }
}

static void setup_signals(void)
{
    struct sigaction sa;
    sigset_t none;
    memset(&sa, 0, sizeof(sa));
    /* The master decides; a terminal's ^C reaches the whole group. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = SIG_DFL; /* SIGTERM from the master is the fast stop */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static int setup(const struct worker_args *a)
{
    W.a = a;
    mem_setup(a->cf->worker_memory_limit);
    if (ev_loop_init(&W.loop, EVENTS_PER_WAIT) < 0)
        return -1;
    sock_setup(&W.loop);
    tls_setup();
    ws_timer_setup(&W.loop);
    alog_setup(&W.loop, alog_master_fd(), a->cf->access_log_json, a->generation);
    conn_env_init(&W.env, a->cf, &W.loop);
    shed_setup(&W.loop, &W.env);
    peer_setup(a->cf);
    perip_worker(stats_me);
    W.limits = peer_limits_on();
    proxywait_setup(&W.loop, a->cf->handshake_timeout_ms, on_header);
    if (modules_init() < 0)
        return -1;
    ev_queue_init(&W.loop, &W.timers, on_timer);
    ev_timer_init(&W.accept_t);
    ev_timer_init(&W.drain_t);
    W.ls = calloc(a->nlisten, sizeof(*W.ls));
    if (W.ls == NULL)
        return -1;
    for (size_t i = 0; i < a->nlisten; i++) {
        W.ls[i].io.fd = a->listen_fds[i];
        W.ls[i].io.cb = on_listener;
        W.ls[i].lc = &a->cf->listen[i];
        /* A unix socket is one for all workers: wake one of them, not all. */
        uint32_t excl = W.ls[i].lc->addr.ss_family == AF_UNIX ? EPOLLEXCLUSIVE : 0;
        if (ev_add(&W.loop, &W.ls[i].io, EPOLLIN | EPOLLET | excl) < 0)
            return -1;
    }
    W.inbox.fd = a->inbox;
    W.inbox.cb = on_inbox;
    if (ev_add(&W.loop, &W.inbox, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0)
        return -1;
    W.channel.fd = a->channel;
    W.channel.cb = on_channel;
    return ev_add(&W.loop, &W.channel, EPOLLIN | EPOLLRDHUP | EPOLLET);
}

static uint64_t next_drain_event(void)
{
    uint64_t d = W.retire_at;
    if (W.draining && !W.closing_sent) {
        uint64_t t = W.loop.now < W.spread_start ? W.spread_start : W.loop.now + SPREAD_TICK_MS;
        t = t < W.drain_deadline ? t : W.drain_deadline;
        d = (d == 0 || t < d) ? t : d;
    }
    return d;
}

/* Closes are spread evenly over [spread_start, drain_deadline] so that
 * clients do not all reconnect in the same instant. */
static void drain_step(void)
{
    uint64_t now = W.loop.now;
    if (W.retire_at && W.retire_at <= now) {
        W.retire_at = 0;
        close_listeners(1);
    }
    if (!W.draining || W.closing_sent || now < W.spread_start)
        return;
    if (now >= W.drain_deadline) {
        W.closing_sent = 1;
        log_info("worker #%u gen %u: shutdown_timeout reached, closing %u connections with %u",
                 W.a->slot, W.a->generation, W.env.nconns, W.drain_code);
        conn_close_all(&W.env, W.drain_code);
        return;
    }
    if (W.spread_total == 0 && (W.spread_total = W.env.nconns) == 0)
        return;
    uint64_t span = W.drain_deadline - W.spread_start;
    /* The k-th of N closes at k/N of the window: one connection alone is
     * served for the whole shutdown_timeout. */
    unsigned target = (unsigned)((now - W.spread_start) * W.spread_total / span);
    if (target > W.spread_done) {
        conn_close_oldest(&W.env, W.drain_code, target - W.spread_done);
        W.spread_done = target;
    }
}

/* The drain timer runs drain_step at its next event, then waits for the
 * one after (none once every close is sent and nothing is retiring). */
static void drain_arm(void)
{
    uint64_t d = next_drain_event();
    if (d == 0)
        ev_timer_stop(&W.drain_t);
    else
        ev_timer_start_sorted(&W.loop, &W.timers, &W.drain_t,
                              d > W.loop.now ? d - W.loop.now : 0);
}

static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop;
    (void)q;
    if (t == &W.accept_t) {
        for (size_t i = 0; i < W.a->nlisten; i++)
            if (W.ls[i].io.fd >= 0)
                accept_all(&W.ls[i]);
    } else {
        drain_step();
        drain_arm();
    }
}

/* Limits and identity, while still root: before anything is allocated. */
static int apply_process_settings(const struct worker_args *a)
{
    const struct config *cf = a->cf;
    if (cf->worker_rlimit_nofile) {
        struct rlimit rl = { cf->worker_rlimit_nofile, cf->worker_rlimit_nofile };
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("worker #%u: cannot set worker_rlimit_nofile %u: %s", a->slot,
                     cf->worker_rlimit_nofile, strerror(errno));
    }
    if (cf->worker_cpu_affinity && a->ncpus > 1) {
        cpu_set_t allowed, one;
        unsigned want = a->slot % a->ncpus, seen = 0;
        sched_getaffinity(0, sizeof(allowed), &allowed);
        CPU_ZERO(&one);
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &allowed) && seen++ == want)
                CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof(one), &one) < 0)
            log_warn("worker #%u: cannot set CPU affinity: %s", a->slot, strerror(errno));
    }
    if (cf->user == NULL || geteuid() != 0)
        return 0;
    if (setgroups(1, &cf->gid) < 0 || setgid(cf->gid) < 0 || setuid(cf->uid) < 0) {
        log_error("worker #%u: cannot switch to user %s: %s", a->slot, cf->user, strerror(errno));
        return -1;
    }
    return 0;
}

void worker_main(const struct worker_args *a)
{
    setup_signals();
    proctitle_set("wsechod: worker process #%u gen %u", a->slot, a->generation);
    if (apply_process_settings(a) < 0)
        exit(WORKER_EXIT_FATAL);
    if (setup(a) < 0) {
        log_error("worker #%u: cannot start: %s", a->slot, strerror(errno));
        exit(WORKER_EXIT_FATAL);
    }
    channel_send(a->channel, WORKER_MSG_READY, -1);
    log_debug("worker #%u gen %u started", a->slot, a->generation);
    /* A draining worker also waits for its inbox to close: a connection
     * may still be on its way to it from an older worker. */
    while (!W.draining || W.env.nconns > 0 || W.retire_at || W.inbox.fd >= 0) {
        if (ev_run_once(&W.loop) < 0) {
            log_error("epoll_wait: %s", strerror(errno));
            break;
        }
    }
    log_info("worker #%u gen %u exiting (%lu connections handed over, %lu taken over)",
             a->slot, a->generation, migrate_handed(W.mig), W.env.adopted);
    close_listeners(0);
    proxywait_close_all();
    migrate_end(W.mig);
    conn_destroy_all(&W.env);
    alog_flush(); /* the lines of everything that ended, the last ones included */
    modules_exit();
    ev_loop_free(&W.loop);
    free(W.ls);
    exit(0);
}
