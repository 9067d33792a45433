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
/* Monotonic milliseconds. */
uint64_t ev_now_ms(void);

#endif
