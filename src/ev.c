#include "ev.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int ev_loop_init(struct ev_loop *loop, unsigned max_events)
{
    loop->max_events = max_events;
    list_init(&loop->queues);
    list_init(&loop->readies);
    list_init(&loop->hooks);
    loop->now = ev_now_ms();
    loop->events = calloc(max_events, sizeof(*loop->events));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->events == NULL || loop->epfd < 0) {
        ev_loop_free(loop);
        return -1;
    }
    return 0;
}

void ev_loop_free(struct ev_loop *loop)
{
    free(loop->events);
    loop->events = NULL;
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
}

static int ctl(struct ev_loop *loop, int op, struct ev_io *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    if (epoll_ctl(loop->epfd, op, io->fd, &ev) < 0)
        return -1;
    io->events = events;
    return 0;
}

int ev_add(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    return ctl(loop, EPOLL_CTL_ADD, io, events);
}

int ev_mod(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    return events == io->events ? 0 : ctl(loop, EPOLL_CTL_MOD, io, events);
}

void ev_del(struct ev_loop *loop, struct ev_io *io)
{
    /* Closing the fd would deregister it too, but not while a forked
     * process still shares the open file: be explicit. */
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->events = 0; /* ev_poll skips what is left of it in this batch */
}

int ev_poll(struct ev_loop *loop, int timeout_ms)
{
    int n = epoll_wait(loop->epfd, loop->events, (int)loop->max_events, timeout_ms);
    /* Before any callback: deadlines set by callbacks must not start from
     * a time that is as old as the wait was long. */
    loop->now = ev_now_ms();
    if (n < 0)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        struct ev_io *io = loop->events[i].data.ptr;
        /* Deleted by an earlier callback of this batch: the caller may
         * have closed what it was for (its object is still valid). */
        if (io->events != 0)
            io->cb(loop, io, loop->events[i].events);
    }
    return n;
}

void ev_queue_init(struct ev_loop *loop, struct ev_queue *q, ev_timer_cb *cb)
{
    list_init(&q->timers);
    q->cb = cb;
    list_append(&loop->queues, &q->link);
}

void ev_queue_del(struct ev_queue *q)
{
    list_remove(&q->link);
}

void ev_timer_init(struct ev_timer *t)
{
    list_init(&t->link);
    t->deadline = 0;
}

void ev_timer_start(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t,
                    uint64_t timeout_ms)
{
    list_remove(&t->link);
    t->deadline = loop->now + timeout_ms;
    list_append(&q->timers, &t->link);
}

void ev_timer_start_sorted(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t,
                           uint64_t timeout_ms)
{
    struct list *head = &q->timers, *at = head->prev;
    list_remove(&t->link);
    t->deadline = loop->now + timeout_ms;
    while (at != head && list_entry(at, struct ev_timer, link)->deadline > t->deadline)
        at = at->prev;
    list_append(at->next, &t->link); /* appending before at->next = after at */
}

void ev_timer_stop(struct ev_timer *t)
{
    list_remove(&t->link);
}

int ev_timer_active(const struct ev_timer *t)
{
    return list_linked(&t->link);
}

int ev_next_timeout(const struct ev_loop *loop)
{
    uint64_t d = UINT64_MAX;
    for (const struct list *it = loop->queues.next; it != &loop->queues; it = it->next) {
        const struct ev_queue *q = list_entry(it, struct ev_queue, link);
        if (!list_empty(&q->timers)) {
            uint64_t qd = list_entry(q->timers.next, struct ev_timer, link)->deadline;
            d = qd < d ? qd : d;
        }
    }
    if (d == UINT64_MAX)
        return -1;
    return d <= loop->now ? 0 : d - loop->now > 60000 ? 60000 : (int)(d - loop->now);
}

void ev_expire(struct ev_loop *loop)
{
    for (struct list *it = loop->queues.next; it != &loop->queues; it = it->next) {
        struct ev_queue *q = list_entry(it, struct ev_queue, link);
        while (!list_empty(&q->timers)) {
            struct ev_timer *t = list_entry(q->timers.next, struct ev_timer, link);
            if (t->deadline > loop->now)
                break;
            list_remove(&t->link); /* whatever the callback does, it is off this queue */
            q->cb(loop, q, t);
        }
    }
}

void ev_ready_init(struct ev_loop *loop, struct ev_ready *q, ev_ready_cb *cb)
{
    list_init(&q->items);
    q->cb = cb;
    list_append(&loop->readies, &q->link);
}

void ev_ready_add(struct ev_ready *q, struct list *item)
{
    if (!list_linked(item))
        list_append(&q->items, item);
}

static void run_queue(struct ev_loop *loop, struct ev_ready *q)
{
    struct list batch;
    if (list_empty(&q->items))
        return;
    /* Take the whole queue first: an item may queue itself again. */
    batch.next = q->items.next;
    batch.prev = q->items.prev;
    batch.next->prev = batch.prev->next = &batch;
    list_init(&q->items);
    while (!list_empty(&batch)) {
        struct list *item = batch.next;
        list_remove(item);
        q->cb(loop, q, item);
    }
}

void ev_run_ready(struct ev_loop *loop)
{
    for (struct list *it = loop->readies.next; it != &loop->readies; it = it->next)
        run_queue(loop, list_entry(it, struct ev_ready, link));
}

static int ready_pending(const struct ev_loop *loop)
{
    for (const struct list *it = loop->readies.next; it != &loop->readies; it = it->next)
        if (!list_empty(&list_entry(it, struct ev_ready, link)->items))
            return 1;
    return 0;
}

void ev_hook_add(struct ev_loop *loop, struct ev_hook *h, ev_hook_cb *cb)
{
    h->cb = cb;
    list_append(&loop->hooks, &h->link);
}

int ev_run_once(struct ev_loop *loop)
{
    if (ev_poll(loop, ready_pending(loop) ? 0 : ev_next_timeout(loop)) < 0)
        return -1;
    ev_run_ready(loop);
    ev_expire(loop);
    for (struct list *it = loop->hooks.next; it != &loop->hooks; it = it->next) {
        struct ev_hook *h = list_entry(it, struct ev_hook, link);
        h->cb(loop, h);
    }
    return 0;
}

uint64_t ev_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
