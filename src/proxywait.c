#include "proxywait.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cidr.h"
#include "list.h"
#include "log.h"
#include "peer.h"
#include "pool.h"
#include "proxyproto.h"
#include "stats.h"

struct waiter {
    struct ev_io io;            /* first: the loop hands back &io */
    struct ev_timer timer;
    struct list link;           /* W.all */
    const struct config_listen *l;
};

static struct {
    struct ev_loop *loop;
    struct ev_queue q;          /* one timeout: handshake_timeout */
    uint64_t timeout_ms;
    proxywait_done_fn *done;
    struct list all;
} W;

static struct pool waiter_pool = POOL_INIT(struct waiter);

static void forget(struct waiter *w)
{
    ev_del(W.loop, &w->io);
    ev_timer_stop(&w->timer);
    list_remove(&w->link);
    pool_free(&waiter_pool, w); /* the loop has no other event for it in this batch */
}

/* Closed before HTTP; reason counted unless the peer just said nothing. */
static void fail(struct waiter *w, int reason, const char *why)
{
    char peer[160];
    int fd = w->io.fd;
    if (reason >= 0) {
        STATS_ADD(stats_me->c.proxy_errors[reason], 1);
        log_info("PROXY protocol from %s on %s: %s; closing",
                 peer_name(fd, peer, sizeof(peer)), w->l->text, why);
    }
    forget(w);
    close(fd);
}

static void complete(struct waiter *w, const struct proxyproto_result *r)
{
    uint8_t sink[PROXYPROTO_MAX];
    int fd = w->io.fd;
    const struct config_listen *l = w->l;
    ssize_t n;
    do {
        n = recv(fd, sink, r->len, 0); /* exactly the header: it was all there */
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)r->len) {
        fail(w, PP_TRUNCATED, "the header could not be read again");
        return;
    }
    forget(w);
    W.done(fd, l, r->local ? NULL : (const struct sockaddr *)&r->src);
}

static void on_event(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct waiter *w = (struct waiter *)(void *)io;
    struct proxyproto_result r;
    uint8_t buf[PROXYPROTO_MAX];
    (void)loop;
    ssize_t n = recv(io->fd, buf, sizeof(buf), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
        !(events & (EPOLLERR | EPOLLHUP)))
        return;
    if (n <= 0) {
        /* Nothing at all before it left: a TCP check, not an error. */
        fail(w, n == 0 ? -1 : PP_TRUNCATED, n == 0 ? "" : strerror(errno));
        return;
    }
    switch (proxyproto_parse(buf, (size_t)n, &r)) {
    case PROXYPROTO_OK:
        complete(w, &r);
        return;
    case PROXYPROTO_BAD:
        fail(w, PP_INVALID, r.reason);
        return;
    case PROXYPROTO_NEED_MORE:
        /* More bytes raise a new edge; after the peer's FIN none will come. */
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            fail(w, PP_TRUNCATED, "the peer closed inside the header");
        return;
    }
}

static void on_timer(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop;
    (void)q;
    fail(list_entry(t, struct waiter, timer), PP_TIMEOUT, "no complete header within "
         "handshake_timeout");
}

void proxywait_setup(struct ev_loop *loop, uint64_t timeout_ms, proxywait_done_fn *done)
{
    W.loop = loop;
    W.timeout_ms = timeout_ms;
    W.done = done;
    list_init(&W.all);
    ev_queue_init(loop, &W.q, on_timer);
}

void proxywait_start(int fd, const struct config_listen *l, const struct sockaddr_storage *peer,
                     socklen_t peerlen)
{
    char name[160];
    if (l->addr.ss_family != AF_UNIX &&
        (peerlen == 0 || !cidr_match(l->proxy_from, l->nproxy_from,
                                     (const struct sockaddr *)peer))) {
        STATS_ADD(stats_me->c.proxy_errors[PP_UNTRUSTED], 1);
        log_info("connection from %s to %s refused: not in its proxy_protocol_from",
                 peer_name(fd, name, sizeof(name)), l->text);
        close(fd);
        return;
    }
    struct waiter *w = pool_alloc(&waiter_pool);
    if (w == NULL) {
        log_error("out of memory for a connection on %s", l->text);
        close(fd);
        return;
    }
    w->io.fd = fd;
    w->io.cb = on_event;
    w->l = l;
    ev_timer_init(&w->timer);
    list_append(&W.all, &w->link);
    if (ev_add(W.loop, &w->io, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0) {
        log_error("epoll_ctl: %s", strerror(errno));
        close(fd);
        list_remove(&w->link);
        pool_free(&waiter_pool, w);
        return;
    }
    ev_timer_start(W.loop, &W.q, &w->timer, W.timeout_ms);
}

void proxywait_close_all(void)
{
    while (W.loop != NULL && !list_empty(&W.all)) {
        struct waiter *w = list_entry(W.all.next, struct waiter, link);
        int fd = w->io.fd;
        forget(w);
        close(fd);
    }
}
