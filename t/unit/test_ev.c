/* src/ev.c: timer queues (no epoll needed: loop->now is set by hand). */
#include "ev.h"
#include "tap.h"

struct item {
    struct ev_timer t;
    int id, fired;
};

static int order[16], nfired;
static struct ev_queue *requeue; /* the callback starts the timer here again */

static void fire(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    struct item *it = list_entry(t, struct item, t);
    (void)q;
    it->fired++;
    order[nfired++ % 16] = it->id;
    if (requeue)
        ev_timer_start(loop, requeue, t, 100);
}

/* Deferred work: an item runs once per add, at the next ev_run_ready, and
 * one that queues itself again runs at the turn after. */
struct job {
    struct list link;
    int runs, again;
};

static void run_job(struct ev_loop *loop, struct ev_ready *q, struct list *item)
{
    struct job *j = list_entry(item, struct job, link);
    (void)loop;
    j->runs++;
    if (j->again-- > 0)
        ev_ready_add(q, &j->link);
}

static void deferred(void)
{
    struct ev_loop loop = { 0 };
    struct ev_ready q;
    struct job a = { .runs = 0 }, b = { .again = 1 };
    list_init(&loop.readies);
    ev_ready_init(&loop, &q, run_job);
    list_init(&a.link);
    list_init(&b.link);
    ev_ready_add(&q, &a.link);
    ev_ready_add(&q, &a.link);
    ev_ready_add(&q, &b.link);
    ev_run_ready(&loop);
    ok(a.runs == 1 && b.runs == 1, "each queued item runs once, however often it was added");
    ok(list_linked(&b.link) && !list_linked(&a.link), "an item queued by its callback waits");
    ev_run_ready(&loop);
    ok(a.runs == 1 && b.runs == 2 && !list_linked(&b.link), "...for the next turn");
}

int main(void)
{
    deferred();
    struct ev_loop loop = { 0 };
    struct ev_queue a, b;
    struct item it[4] = { { .id = 0 }, { .id = 1 }, { .id = 2 }, { .id = 3 } };
    list_init(&loop.queues);
    ev_queue_init(&loop, &a, fire);
    ev_queue_init(&loop, &b, fire);
    for (int i = 0; i < 4; i++)
        ev_timer_init(&it[i].t);
    ok(ev_next_timeout(&loop) == -1, "no timers: wait forever");
    loop.now = 1000;
    ev_timer_start(&loop, &a, &it[0].t, 50);
    ev_timer_start(&loop, &a, &it[1].t, 50);
    ev_timer_start(&loop, &b, &it[2].t, 20);
    ok(ev_next_timeout(&loop) == 20 && ev_timer_active(&it[2].t), "earliest head over queues");
    ev_timer_stop(&it[2].t);
    ok(!ev_timer_active(&it[2].t) && ev_next_timeout(&loop) == 50, "stopped timers do not count");
    loop.now = 1049;
    ev_expire(&loop);
    ok(nfired == 0, "nothing before its deadline");
    loop.now = 1050;
    ev_expire(&loop);
    ok(nfired == 2 && order[0] == 0 && order[1] == 1 && !ev_timer_active(&it[0].t),
       "due timers fire in order and are stopped");
    ev_timer_start(&loop, &a, &it[0].t, 10);
    ev_timer_start(&loop, &a, &it[0].t, 30);
    ok(ev_next_timeout(&loop) == 30, "restarting moves a timer, never duplicates it");
    ev_timer_stop(&it[0].t);
    ev_timer_start(&loop, &b, &it[1].t, 100);
    ev_timer_start(&loop, &b, &it[2].t, 300);
    ev_timer_start_sorted(&loop, &b, &it[3].t, 200);
    nfired = 0;
    loop.now = 1350;
    ev_expire(&loop);
    ok(nfired == 3 && order[0] == 1 && order[1] == 3 && order[2] == 2,
       "sorted start goes between earlier and later deadlines");
    requeue = &a;
    ev_timer_start(&loop, &a, &it[0].t, 0);
    nfired = 0;
    ev_expire(&loop);
    ok(nfired == 1 && ev_timer_active(&it[0].t) && ev_next_timeout(&loop) == 100,
       "a callback may start its timer again without looping");
    loop.now = 1000000;
    ok(ev_next_timeout(&loop) == 0, "an overdue timer: no wait");
    loop.now = 0;
    it[0].t.deadline = 200000;
    ok(ev_next_timeout(&loop) == 60000, "long waits are capped at a minute");
    return tap_done();
}
