/* A request is read whole (it fits in STATUS_REQ_MAX or gets 431), the
 * answer is rendered whole into a buffer and written out, then the socket
 * closes: scrapes are rare and small, so there is nothing to stream. */
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <grp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ev.h"
#include "http.h"
#include "log.h"
#include "proctitle.h"
#include "sbuf.h"
#include "stats.h"
#include "statusfmt.h"
#include "statuspage.h"

#define STATUS_REQ_MAX 4096

struct sconn {
    struct ev_io io;            /* first: the loop hands back &io */
    struct ev_timer timer;
    struct sbuf out;
    size_t sent, inlen;
    int used;
    char in[STATUS_REQ_MAX];
};

static struct {
    struct ev_loop loop;
    struct ev_io listen;
    struct ev_queue timeouts, ticks;
    struct ev_timer tick;
    struct sconn conns[STATUS_CONNS];
    struct status_series series[STATS_SLOTS];
} S;

/* The master's side: the socket, the process, and a socket opened by
 * status_prepare for a reload not yet committed. */
static struct {
    int fd, next_fd;
    char addr[128], next_addr[128]; /* config_listen.text */
    pid_t pid;
    uint64_t due;               /* start the process then; 0: not scheduled */
    int drop;                   /* switch to uid/gid (`user`) before serving */
    uid_t uid;
    gid_t gid;
} SM = { -1, -1, "", "", 0, 0, 0, 0, 0 };

static void sconn_close(struct sconn *c)
{
    ev_del(&S.loop, &c->io);
    ev_timer_stop(&c->timer);
    close(c->io.fd);
    sbuf_free(&c->out);
    c->used = 0;
}

static void respond(struct sconn *c, int status, const char *type, struct sbuf *body, int head)
{
    if (body->failed)
        status = 500, body->len = 0;
    const char *text = http_status_text(status);
    sbuf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n", status, text, type,
                body->len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head && body->len)
        sbuf_add(&c->out, body->p, body->len);
    sbuf_free(body);
}

static void text(struct sbuf *b, const char *s)
{
    sbuf_printf(b, "%s\n", s);
}

/* The answer to a complete request line "METHOD target HTTP/1.x". */
static void route(struct sconn *c, const char *line)
{
    struct sbuf b = { 0 };
    char method[8], target[256];
    if (sscanf(line, "%7s %255s HTTP/1.", method, target) != 2) {
        text(&b, "bad request line");
        respond(c, 400, "text/plain", &b, 0);
        return;
    }
    int head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        text(&b, "GET or HEAD");
        respond(c, 405, "text/plain", &b, 0);
        return;
    }
    target[strcspn(target, "?")] = '\0';
    if (strcmp(target, "/metrics") == 0) {
        status_metrics(&b);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b, head);
    } else if (strcmp(target, "/healthz") == 0 || strcmp(target, "/readyz") == 0) {
        int ok = target[1] == 'h' ? status_healthy() : status_ready();
        text(&b, ok ? "ok" : STATS_GET(stats->stopping) ? "stopping" : "not serving");
        respond(c, ok ? 200 : 503, "text/plain", &b, head);
    } else if (strcmp(target, "/status.json") == 0) {
        status_json(&b, S.series);
        respond(c, 200, "application/json", &b, head);
    } else if (strcmp(target, "/status") == 0 || strcmp(target, "/") == 0) {
        status_html(&b);
        respond(c, 200, "text/html; charset=utf-8", &b, head);
    } else {
        text(&b, "not found: /metrics, /healthz, /readyz, /status, /status.json");
        respond(c, 404, "text/plain", &b, head);
    }
}

/* Writes what is left; 1 when all of it went. */
static int flush(struct sconn *c)
{
    while (c->sent < c->out.len) {
        ssize_t n = send(c->io.fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_mod(&S.loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLET);
            return 0;
        }
        if (n <= 0)
            return 1; /* the client left: nothing more to do */
        c->sent += (size_t)n;
    }
    shutdown(c->io.fd, SHUT_WR);
    return 1;
}

static void readable(struct sconn *c)
{
    for (;;) {
        ssize_t n = read(c->io.fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            break;
        c->inlen += (size_t)n;
        c->in[c->inlen] = '\0';
        if (strstr(c->in, "\r\n\r\n") != NULL || strstr(c->in, "\n\n") != NULL) {
            route(c, c->in);
            break;
        }
        if (c->inlen == sizeof(c->in) - 1) {
            struct sbuf b = { 0 };
            text(&b, "request too large");
            respond(c, 431, "text/plain", &b, 0);
            break;
        }
    }
    if (c->out.len == 0 || flush(c))
        sconn_close(c);
}

static void on_conn(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct sconn *c = (struct sconn *)(void *)io;
    (void)loop;
    if (c->out.len > 0) {
        if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && flush(c))
            sconn_close(c);
        return;
    }
    readable(c);
}

static void on_accept(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    (void)events;
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct sconn *c = NULL;
        for (unsigned i = 0; i < STATUS_CONNS && c == NULL; i++)
            if (!S.conns[i].used)
                c = &S.conns[i];
        if (c == NULL) {
            close(fd); /* busy: a scraper retries */
            continue;
        }
        memset(c, 0, offsetof(struct sconn, in));
        c->used = 1;
        c->io.fd = fd;
        c->io.cb = on_conn;
        ev_timer_init(&c->timer);
        if (ev_add(loop, &c->io, EPOLLIN | EPOLLET) < 0) {
            close(fd);
            c->used = 0;
            continue;
        }
        ev_timer_start(loop, &S.timeouts, &c->timer, STATUS_TIMEOUT_MS);
        readable(c);
    }
}

static void on_timeout(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop, (void)q;
    sconn_close(list_entry(t, struct sconn, timer));
}

static void on_tick(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    status_sample(S.series);
    ev_timer_start(loop, q, t, STATUS_SAMPLE_MS);
}

/* Everything inherited but the socket and the log goes: a listener of the
 * workers kept open here would stay in its reuseport group. */
static void keep_only(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    if (lo > 3)
        close_range(3, (unsigned)lo - 1, 0);
    if (hi > lo + 1)
        close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
    close_range((unsigned)hi + 1, ~0u, 0);
}

static void __attribute__((noreturn)) serve(int fd)
{
    sigset_t none;
    struct sigaction sa = { .sa_handler = SIG_DFL };
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != stats->master)
        _exit(0); /* the master is gone already */
    keep_only(fd, log_fd_get());
    /* It parses what anyone who reaches its port sends: never as root
     * when the workers are not. */
    if (SM.drop && geteuid() == 0 &&
        (setgroups(1, &SM.gid) < 0 || setgid(SM.gid) < 0 || setuid(SM.uid) < 0)) {
        log_error("status process: cannot switch user: %s", strerror(errno));
        _exit(1);
    }
    proctitle_set("wsechod: status process");
    if (ev_loop_init(&S.loop, 64) < 0)
        _exit(1);
    S.listen = (struct ev_io){ .fd = fd, .cb = on_accept };
    ev_queue_init(&S.loop, &S.timeouts, on_timeout);
    ev_queue_init(&S.loop, &S.ticks, on_tick);
    ev_timer_init(&S.tick);
    ev_timer_start(&S.loop, &S.ticks, &S.tick, STATUS_SAMPLE_MS);
    status_sample(S.series);
    if (ev_add(&S.loop, &S.listen, EPOLLIN | EPOLLET) < 0)
        _exit(1);
    for (;;)
        if (ev_run_once(&S.loop) < 0)
            _exit(1);
}

static int listen_on(const struct config_listen *a, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(a->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&a->addr, a->addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "status.listen %s: %s", a->text, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}


int status_prepare(const struct config *cf, char *err, size_t errlen)
{
    if (cf->status.addrlen == 0 || (SM.fd >= 0 && strcmp(cf->status.text, SM.addr) == 0))
        return 0;
    if ((SM.next_fd = listen_on(&cf->status, err, errlen)) < 0)
        return -1;
    snprintf(SM.next_addr, sizeof(SM.next_addr), "%s", cf->status.text);
    return 0;
}

void status_abort(void)
{
    if (SM.next_fd >= 0)
        close(SM.next_fd);
    SM.next_fd = -1;
}

static void stop_process(void)
{
    if (SM.pid > 0)
        kill(SM.pid, SIGTERM); /* reaped like any child; status_reaped then knows it is not ours */
    SM.pid = 0;
}

void status_commit(const struct config *cf)
{
    SM.drop = cf->user != NULL;
    SM.uid = cf->uid;
    SM.gid = cf->gid;
    if (cf->status.addrlen != 0 && SM.next_fd < 0)
        return; /* the same address: the same socket and process */
    stop_process();
    if (SM.fd >= 0)
        close(SM.fd);
    SM.fd = SM.next_fd;
    SM.next_fd = -1;
    snprintf(SM.addr, sizeof(SM.addr), "%s", SM.fd >= 0 ? SM.next_addr : "");
    SM.due = SM.fd >= 0 ? ev_now_ms() : 0;
    if (SM.fd >= 0)
        log_notice("status listener on %s", SM.addr);
}

int status_reaped(pid_t pid, const char *how)
{
    if (pid != SM.pid || pid <= 0)
        return 0;
    log_error("status process %d %s; starting it again in %d ms", (int)pid, how,
              STATUS_RESPAWN_MS);
    SM.pid = 0;
    SM.due = ev_now_ms() + STATUS_RESPAWN_MS;
    return 1;
}

uint64_t status_timers(uint64_t now)
{
    if (SM.due == 0 || SM.fd < 0)
        return UINT64_MAX;
    if (SM.due > now)
        return SM.due;
    pid_t pid = fork();
    if (pid == 0)
        serve(SM.fd);
    if (pid < 0) {
        log_error("fork of the status process: %s", strerror(errno));
        SM.due = now + STATUS_RESPAWN_MS;
        return SM.due;
    }
    SM.pid = pid;
    SM.due = 0;
    return UINT64_MAX;
}

void status_close_in_child(void)
{
    if (SM.fd >= 0)
        close(SM.fd);
    if (SM.next_fd >= 0)
        close(SM.next_fd);
}

void status_exit(void)
{
    stop_process();
    status_abort();
    if (SM.fd >= 0)
        close(SM.fd);
    SM.fd = -1;
}
