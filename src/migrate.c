#include "migrate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "handoff.h"
#include "log.h"
#include "peer.h"
#include "stats.h"
#include "module.h"

/* How soon a handoff that found every inbox full tries again. */
#define RETRY_MS 5

struct migrate {
    struct conn_env *env;
    int *targets;               /* the new workers' inboxes (ours to close) */
    unsigned ntargets, next_target;
    unsigned full : 1;          /* every inbox was full: the timer tries again */
    unsigned live : 1;          /* some inbox is still usable */
    struct ev_queue retry_q;
    struct ev_timer retry_t;
    unsigned long handed;
};

static void close_targets(struct migrate *m)
{
    for (unsigned i = 0; i < m->ntargets; i++)
        if (m->targets[i] >= 0)
            close(m->targets[i]);
    free(m->targets);
    m->targets = NULL;
    m->ntargets = 0;
}

/* 0: sent; 1: every inbox is full; -1: it cannot go anywhere. */
static int send_any(struct migrate *m, const struct handoff_conn *hc)
{
    int full = 0, live = 0;
    for (unsigned tries = 0; tries < m->ntargets; tries++) {
        unsigned i = m->next_target++ % m->ntargets;
        if (m->targets[i] < 0)
            continue;
        live++;
        if (handoff_send(m->targets[i], hc) == 0)
            return 0;
        /* ETOOMANYREFS: more descriptors in flight than RLIMIT_NOFILE allows
         * (an unprivileged user's workers, thousands queued in the inboxes):
         * they drain as the new workers read, like a full inbox. */
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ETOOMANYREFS) {
            full = 1;
        } else if (errno != EMSGSIZE) {
            /* That worker is gone; its inbox is of no more use. */
            log_warn("handoff: a new worker's inbox failed: %s", strerror(errno));
            close(m->targets[i]);
            m->targets[i] = -1;
            live--;
        } else {
            return -1;
        }
    }
    if (live == 0 && m->live) {
        log_warn("handoff: no new worker left to take connections; they drain here");
        m->live = 0;
    }
    return full ? 1 : -1;
}

/* After a run of c (conn.h's after_ws): moves it if it is at a clean point. */
static void try_move(struct conn *c, void *arg)
{
    struct migrate *m = arg;
    struct handoff_conn hc;
    uint8_t state[WS_STATE_MAX];
    if (!m->live || m->full)
        return;
    int r = conn_export(c, &hc, state, sizeof(state));
    if (r == -2) {
        conn_drain(c); /* its module's connections cannot move */
        return;
    }
    if (r < 0)
        return; /* not at a clean point: tried again after its next run */
    r = send_any(m, &hc);
    conn_export_wipe();
    if (r < 0)
        STATS_ADD(stats_me->c.handoffs_failed, 1);
    if (r == 0) {
        STATS_ADD(stats_me->c.handoffs_out, 1);
        conn_release(c);
        m->handed++;
    } else if (r > 0) {
        m->full = 1;
        ev_timer_start(m->env->loop, &m->retry_q, &m->retry_t, RETRY_MS);
    }
}

static int visit_one(struct conn *c, void *arg)
{
    struct migrate *m = arg;
    try_move(c, m);
    return !m->live || m->full;
}

static void retry(struct migrate *m)
{
    m->full = 0;
    conn_visit_open(m->env, visit_one, m);
}

static void on_retry(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop;
    (void)t;
    retry(list_entry(q, struct migrate, retry_q));
}

struct migrate *migrate_begin(struct migrate *m, struct conn_env *env, int *targets, unsigned n)
{
    if (m == NULL) {
        if ((m = calloc(1, sizeof(*m))) == NULL) {
            log_error("handoff: out of memory; connections drain here");
            for (unsigned i = 0; i < n; i++)
                close(targets[i]);
            free(targets);
            return NULL;
        }
        m->env = env;
        ev_queue_init(env->loop, &m->retry_q, on_retry);
        ev_timer_init(&m->retry_t);
        env->after_ws = try_move;
        env->after_arg = m;
    }
    close_targets(m);
    m->targets = targets;
    m->ntargets = n;
    m->next_target = 0;
    m->live = n > 0;
    retry(m);
    return m;
}

unsigned long migrate_handed(const struct migrate *m)
{
    return m ? m->handed : 0;
}

void migrate_end(struct migrate *m)
{
    if (m == NULL)
        return;
    m->env->after_ws = NULL;
    close_targets(m);
    ev_timer_stop(&m->retry_t);
    ev_queue_del(&m->retry_q);
    free(m);
}

int migrate_adopt(struct conn_env *env, const struct handoff_conn *hc)
{
    const struct config_route *r = config_route_find(env->cf, hc->path, hc->path_len);
    char peer[64];
    peer_adopt(hc); /* before anything logs its name or closes it */
    struct conn *c = conn_adopt_new(env, hc->fd);
    if (c == NULL) {
        log_error("cannot take over a connection: %s", strerror(errno));
        STATS_ADD(stats_me->c.handoffs_failed, 1);
        peer_close(hc->fd);
        close(hc->fd);
        return -1;
    }
    STATS_ADD(stats_me->c.handoffs_in, 1);
    if (conn_adopt_tls(c, hc) < 0) {
        /* Nothing can be said to it without its keys, not even a close. */
        log_error("a handed-over wss connection's record state is not valid: dropped");
        return -1;
    }
    if (r == NULL) {
        log_info("handed-over connection from %s: path %.*s no longer routed, closing with 1012",
                 conn_peer_name(c, peer, sizeof(peer)), (int)hc->path_len, hc->path);
        conn_close_with(c, 1012, "route removed by reload");
        return 0;
    }
    if (conn_start_ws(c, r, hc) < 0) {
        log_error("out of memory for a handed-over connection");
        return -1;
    }
    return 0;
}
