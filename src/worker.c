#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "ev.h"
#include "log.h"
#include "proctitle.h"

/* How long accept() rests after running out of descriptors. */
#define ACCEPT_RETRY_MS 100
#define EVENTS_PER_WAIT 512

struct listener_io {
    struct ev_io io;
};

static struct {
    const struct worker_args *a;
    struct ev_loop loop;
    struct conn_env env;
    struct listener_io *ls;
    struct ev_io channel;
    int draining;
    int closing_sent;           /* close frames went out at the deadline */
    uint16_t drain_code;
    uint64_t drain_deadline;
    uint64_t accept_retry_at;   /* 0: accepting normally */
    uint64_t emfile_logged_at;
} W;

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
        W.accept_retry_at = W.loop.now + ACCEPT_RETRY_MS;
        if (W.loop.now - W.emfile_logged_at >= 1000 || W.emfile_logged_at == 0) {
            log_warn("accept: %s; pausing accepts for %d ms", strerror(err), ACCEPT_RETRY_MS);
            W.emfile_logged_at = W.loop.now;
        }
    } else {
        log_error("accept: %s", strerror(err));
    }
    return -1;
}

static void accept_all(int lfd)
{
    const struct config *cf = W.a->cf;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                accept_error(errno);
            return;
        }
        set_nodelay(fd);
        /* Over the limit, still answer 503 to a bounded number of extra
         * clients so they learn why; beyond that, just close. */
        int full = W.env.nconns >= cf->worker_connections;
        if (full && W.env.nconns >= cf->worker_connections + cf->worker_connections / 8 + 16)
            close(fd);
        else
            conn_accept(&W.env, fd, full ? 503 : 0);
    }
}

static void on_listener(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    (void)loop;
    (void)events;
    if (W.accept_retry_at == 0)
        accept_all(io->fd);
}

static void close_listeners(int take_queue)
{
    for (size_t i = 0; i < W.a->nlisten; i++) {
        if (W.ls[i].io.fd < 0)
            continue;
        if (take_queue)
            accept_all(W.ls[i].io.fd);
        ev_del(&W.loop, &W.ls[i].io);
        close(W.ls[i].io.fd);
        W.ls[i].io.fd = -1;
    }
}

static void drain_start(uint16_t code, int take_queue, const char *why)
{
    if (W.draining) {
        if (code == 1001)
            W.drain_code = 1001; /* a stop overrides a reload's 1012 */
        return;
    }
    W.draining = 1;
    W.drain_code = code;
    W.drain_deadline = W.loop.now + W.a->cf->shutdown_timeout_ms;
    close_listeners(take_queue);
    proctitle_set("wsechod: worker process #%u gen %u draining", W.a->slot, W.a->generation);
    log_info("worker #%u gen %u draining (%s): %u connections, up to %llu ms",
             W.a->slot, W.a->generation, why, W.env.nconns,
             (unsigned long long)W.a->cf->shutdown_timeout_ms);
}

static void on_channel(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    char cmds[16];
    (void)loop;
    (void)events;
    for (;;) {
        ssize_t n = read(io->fd, cmds, sizeof(cmds));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            ev_del(&W.loop, io);
            drain_start(1001, 0, "master is gone");
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            switch (cmds[i]) {
            case WORKER_CMD_RELOAD: drain_start(1012, 0, "reload"); break;
            case WORKER_CMD_RETIRE: drain_start(1012, 1, "reload, slot retired"); break;
            case WORKER_CMD_QUIT:   drain_start(1001, 0, "shutdown"); break;
            case WORKER_CMD_REOPEN: log_reopen(); break;
            default: log_warn("unknown command %d from master", cmds[i]); break;
            }
        }
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
    if (ev_loop_init(&W.loop, EVENTS_PER_WAIT) < 0)
        return -1;
    conn_env_init(&W.env, a->cf, &W.loop);
    W.ls = calloc(a->nlisten, sizeof(*W.ls));
    if (W.ls == NULL)
        return -1;
    for (size_t i = 0; i < a->nlisten; i++) {
        W.ls[i].io.fd = a->listen_fds[i];
        W.ls[i].io.cb = on_listener;
        if (ev_add(&W.loop, &W.ls[i].io, EPOLLIN | EPOLLET) < 0)
            return -1;
    }
    W.channel.fd = a->channel;
    W.channel.cb = on_channel;
    fcntl(a->channel, F_SETFL, O_NONBLOCK);
    return ev_add(&W.loop, &W.channel, EPOLLIN | EPOLLRDHUP | EPOLLET);
}

static int next_timeout(void)
{
    int t = conn_next_timeout(&W.env);
    uint64_t d = W.accept_retry_at;
    if (W.draining && !W.closing_sent && (d == 0 || W.drain_deadline < d))
        d = W.drain_deadline;
    if (d != 0) {
        int td = d <= W.loop.now ? 0 : (int)(d - W.loop.now);
        if (t < 0 || td < t)
            t = td;
    }
    return t;
}

static void run_worker_timers(void)
{
    if (W.accept_retry_at && W.accept_retry_at <= W.loop.now) {
        W.accept_retry_at = 0;
        for (size_t i = 0; i < W.a->nlisten; i++)
            if (W.ls[i].io.fd >= 0)
                accept_all(W.ls[i].io.fd);
    }
    if (W.draining && !W.closing_sent && W.drain_deadline <= W.loop.now) {
        W.closing_sent = 1;
        log_info("worker #%u gen %u: shutdown_timeout reached, closing %u connections with %u",
                 W.a->slot, W.a->generation, W.env.nconns, W.drain_code);
        conn_close_all(&W.env, W.drain_code);
    }
}

void worker_main(const struct worker_args *a)
{
    setup_signals();
    proctitle_set("wsechod: worker process #%u gen %u", a->slot, a->generation);
    if (setup(a) < 0) {
        log_error("worker #%u: cannot start: %s", a->slot, strerror(errno));
        exit(WORKER_EXIT_FATAL);
    }
    log_debug("worker #%u gen %u started", a->slot, a->generation);
    while (!W.draining || W.env.nconns > 0) {
        if (ev_poll(&W.loop, next_timeout()) < 0) {
            log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        conn_run_ready(&W.env);
        conn_expire_timers(&W.env);
        run_worker_timers();
        conn_reap(&W.env);
    }
    log_info("worker #%u gen %u exiting", a->slot, a->generation);
    close_listeners(0);
    conn_destroy_all(&W.env);
    ev_loop_free(&W.loop);
    free(W.ls);
    exit(0);
}
