#include "shed.h"

#include <stddef.h>

#include "conn.h"
#include "mem.h"

/* The biggest holders seen so far, biggest first. */
struct top {
    struct conn *c[SHED_BATCH];
    size_t held[SHED_BATCH];
    unsigned n;
};

static void consider(struct conn *c, void *arg)
{
    struct top *t = arg;
    size_t h = conn_held(c);
    if (h == 0 || (t->n == SHED_BATCH && h <= t->held[SHED_BATCH - 1]))
        return;
    unsigned i = t->n < SHED_BATCH ? t->n++ : SHED_BATCH - 1;
    for (; i > 0 && t->held[i - 1] < h; i--) {
        t->c[i] = t->c[i - 1];
        t->held[i] = t->held[i - 1];
    }
    t->c[i] = c;
    t->held[i] = h;
}

static struct {
    struct ev_hook hook;
    struct conn_env *env;
} H;

static void shed_run(struct ev_loop *loop, struct ev_hook *h)
{
    struct conn_env *env = H.env;
    (void)loop;
    (void)h;
    while (mem_over()) {
        struct top t = { .n = 0 };
        conn_foreach_open(env, consider, &t);
        if (t.n == 0)
            return; /* what is held is in handshakes and closing connections */
        for (unsigned i = 0; i < t.n && mem_over(); i++)
            conn_shed(t.c[i]);
    }
}

void shed_setup(struct ev_loop *loop, struct conn_env *env)
{
    H.env = env;
    ev_hook_add(loop, &H.hook, shed_run);
}
