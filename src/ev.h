/* A small edge-triggered epoll loop: callers embed an ev_io in their own
 * object and get it back in the callback. */
#ifndef WSECHOD_EV_H
#define WSECHOD_EV_H

#include <stdint.h>
#include <sys/epoll.h>

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
    int nready, next;       /* the batch being run: events[next..nready) are to come */
};

int  ev_loop_init(struct ev_loop *loop, unsigned max_events);
void ev_loop_free(struct ev_loop *loop);
int  ev_add(struct ev_loop *loop, struct ev_io *io, uint32_t events);
/* No system call when the interest is unchanged. */
int  ev_mod(struct ev_loop *loop, struct ev_io *io, uint32_t events);
/* Events for io still to come in the batch being run are dropped. */
void ev_del(struct ev_loop *loop, struct ev_io *io);
/* Waits up to timeout_ms (-1: forever), updates loop->now, and runs the
 * callbacks of ready descriptors. Returns how many were ready, 0 on
 * timeout or EINTR. */
int  ev_poll(struct ev_loop *loop, int timeout_ms);
/* Monotonic milliseconds. */
uint64_t ev_now_ms(void);

#endif
