/* A small edge-triggered epoll loop that owns its file and time events:
 * callers embed an ev_io or an ev_timer in their own object and get it back
 * in the callback.
 *
 * Timers sit in queues. A queue holds timers started with one timeout
 * (callers keep it so), so appending keeps it in deadline order: starting,
 * stopping and expiring a timer are O(1) however many there are — the
 * shape of per-connection timeouts, where a million idle connections must
 * cost nothing per event. A timer whose deadline may be earlier than others
 * in its queue is inserted from the tail instead (ev_timer_start_sorted). */
#ifndef WSECHOD_EV_H
#define WSECHOD_EV_H

#include <stdint.h>
#include <sys/epoll.h>

#include "list.h"

struct ev_loop;
struct ev_io;
typedef void ev_cb(struct ev_loop *loop, struct ev_io *io, uint32_t events);

struct ev_io {
    int fd;
    uint32_t events; /* currently registered interest */
    ev_cb *cb;
};

struct ev_loop {
    uint64_t now;           /* ev_now_ms() when the last wait returned */
    int epfd;
    unsigned max_events;
    struct epoll_event *events;
    struct list queues;     /* every ev_queue, in the order they expire */
    struct list readies;    /* every ev_ready, in the order they run */
    struct list hooks;      /* every ev_hook, run at the end of each turn */
};

struct ev_timer {
    struct list link;       /* in its queue while started */
    uint64_t deadline;      /* loop->now-based milliseconds */
};

struct ev_queue;
/* t is stopped when its callback runs; the callback may start it again. */
typedef void ev_timer_cb(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t);

struct ev_queue {
    struct list timers;     /* by deadline, earliest first */
    struct list link;       /* loop->queues */
    ev_timer_cb *cb;
};

/* Deferred work: an ev_ready queue holds items (list nodes embedded in the
 * callers' objects) to run at the next turn of the loop, before it waits
 * again — a connection that yielded with input left, or was given output
 * by someone else. */
struct ev_ready;
typedef void ev_ready_cb(struct ev_loop *loop, struct ev_ready *q, struct list *item);

struct ev_ready {
    struct list items;
    struct list link;       /* loop->readies */
    ev_ready_cb *cb;
};

/* Work at the end of every turn (freeing what the turn closed, memory). */
struct ev_hook;
typedef void ev_hook_cb(struct ev_loop *loop, struct ev_hook *h);

struct ev_hook {
    struct list link;       /* loop->hooks */
    ev_hook_cb *cb;
};

int  ev_loop_init(struct ev_loop *loop, unsigned max_events);
void ev_loop_free(struct ev_loop *loop);
int  ev_add(struct ev_loop *loop, struct ev_io *io, uint32_t events);
/* No system call when the interest is unchanged. */
int  ev_mod(struct ev_loop *loop, struct ev_io *io, uint32_t events);
/* Events for io still to come in the batch being run are dropped, so io
 * must stay allocated until that batch is over (connections are freed
 * after it; listeners live as long as the loop). */
void ev_del(struct ev_loop *loop, struct ev_io *io);
/* Waits up to timeout_ms (-1: forever), updates loop->now, and runs the
 * callbacks of ready descriptors. Returns how many were ready, 0 on
 * timeout or EINTR. */
int  ev_poll(struct ev_loop *loop, int timeout_ms);
/* Registers q with the loop; its timers expire through cb. */
void ev_queue_init(struct ev_loop *loop, struct ev_queue *q, ev_timer_cb *cb);
/* Unregisters q; its timers must be stopped first. */
void ev_queue_del(struct ev_queue *q);
void ev_timer_init(struct ev_timer *t);
/* (Re)starts t in q, due timeout_ms after loop->now, behind the others. */
void ev_timer_start(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t,
                    uint64_t timeout_ms);
/* The same for a deadline that may come before others already in q: a walk
 * back from the tail (short when timers arrive nearly in deadline order). */
void ev_timer_start_sorted(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t,
                           uint64_t timeout_ms);
void ev_timer_stop(struct ev_timer *t);
int  ev_timer_active(const struct ev_timer *t);
/* Milliseconds until the earliest deadline (at most 60000), -1 if none. */
int  ev_next_timeout(const struct ev_loop *loop);
/* Runs the callback of every timer whose deadline has come, queue by queue
 * in registration order. */
void ev_expire(struct ev_loop *loop);
/* Registers q with the loop; its items run through cb. */
void ev_ready_init(struct ev_loop *loop, struct ev_ready *q, ev_ready_cb *cb);
/* Queues item (list_init'ed by its owner) unless it is queued already. */
void ev_ready_add(struct ev_ready *q, struct list *item);
/* Runs every item queued before the call; one queued again by its callback
 * runs at the next turn, so a busy item cannot starve the loop. */
void ev_run_ready(struct ev_loop *loop);
void ev_hook_add(struct ev_loop *loop, struct ev_hook *h, ev_hook_cb *cb);
/* One turn: waits for I/O (not at all when deferred work is queued; at
 * most until the next deadline), runs the ready descriptors, the deferred
 * work, the due timers and the hooks. -1 if epoll failed. */
int  ev_run_once(struct ev_loop *loop);
/* Monotonic milliseconds. */
uint64_t ev_now_ms(void);

#endif
