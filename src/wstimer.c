#include "wstimer.h"

#include <stdlib.h>

#include "ev.h"
#include "module.h"

struct ws_timer {
    struct ev_timer t;
    struct ws_conn *c;
    void (*cb)(struct ws_conn *c, void *arg);
    void *arg;
};

static struct {
    struct ev_loop *loop;
    struct ev_queue q;
} T;

static void on_expire(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    struct ws_timer *wt = list_entry(t, struct ws_timer, t);
    (void)loop;
    (void)q;
    wt->cb(wt->c, wt->arg);
}

void ws_timer_setup(struct ev_loop *loop)
{
    T.loop = loop;
    ev_queue_init(loop, &T.q, on_expire);
}

struct ws_timer *ws_timer_new(struct ws_conn *c, void (*cb)(struct ws_conn *c, void *arg),
                              void *arg)
{
    struct ws_timer *wt = malloc(sizeof(*wt));
    if (wt == NULL)
        return NULL;
    ev_timer_init(&wt->t);
    wt->c = c;
    wt->cb = cb;
    wt->arg = arg;
    return wt;
}

void ws_timer_start(struct ws_timer *wt, uint64_t ms)
{
    ev_timer_start_sorted(T.loop, &T.q, &wt->t, ms);
}

void ws_timer_stop(struct ws_timer *wt)
{
    ev_timer_stop(&wt->t);
}

void ws_timer_free(struct ws_timer *wt)
{
    if (wt != NULL)
        ev_timer_stop(&wt->t);
    free(wt);
}

uint64_t ws_now_ms(void)
{
    return T.loop ? T.loop->now : ev_now_ms();
}
