/* Workers live in their generation's array; a generation's counts (started,
 * ready) are kept as workers come and go rather than counted from flags. */
#include "generation.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "channel.h"
#include "config.h"
#include "ev.h"
#include "handoff.h"
#include "list.h"
#include "listener.h"
#include "perip.h"
#include "log.h"
#include "notify.h"
#include "stats.h"
#include "status.h"
#include "upgrade.h"
#include "worker.h"

/* Extra time a draining worker gets past its own deadlines before SIGKILL. */
#define KILL_GRACE_MS 2000
/* A worker that dies younger than this counts as failing at start-up. */
#define QUICK_DEATH_MS 5000
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 30000
/* Generations alive at once: the current one and this many draining. A
 * reload beyond that makes the oldest close its connections at once. */
#define MAX_DRAINING_GENERATIONS 2

struct wproc {
    pid_t pid;
    unsigned slot;
    int channel;            /* master's end */
    int inbox;              /* write end of its inbox, until given away; -1 */
    int ready;              /* said it is serving */
    uint64_t started_ms;
    uint64_t kill_at_ms;    /* 0: no deadline */
    struct stats_slot *ss;  /* its counters (NULL: no slot was free) */
};

struct slot {
    uint64_t respawn_at_ms; /* 0: nothing scheduled */
    unsigned backoff_ms;
};

enum gen_state {
    GEN_STARTING,           /* not every worker serves yet */
    GEN_SERVING,
    GEN_DRAINING,           /* its workers were told to finish */
};

struct generation {
    struct list link;       /* G.gens, oldest first */
    unsigned id;
    struct config *cf;      /* what its workers were started with */
    enum gen_state state;
    struct wproc *workers;  /* started and not yet reaped */
    unsigned started, ready; /* workers in workers[]; how many of them serve */
    struct slot *slots;     /* cf->worker_processes; respawned while current */
    uint64_t started_ms;    /* when it became current, for its time to ready */
};

static struct {
    struct list gens;
    struct generation *cur; /* the newest generation, last in gens */
    struct listeners *ls;
    pid_t master;
    unsigned ncpus;
} G;

#define gen_of(l) list_entry(l, struct generation, link)
/* Plain nested loops: a break leaves only the workers of one generation. */
#define FOR_EACH_GEN(g) \
    for (struct generation *g = gen_of(G.gens.next); &g->link != &G.gens; \
         g = gen_of(g->link.next))
#define FOR_EACH_WORKER(g, w) \
    FOR_EACH_GEN(g) \
        for (struct wproc *w = g->workers; g->started && w < g->workers + g->started; w++)

void gen_init(struct listeners *ls, pid_t master, unsigned ncpus)
{
    list_init(&G.gens);
    G.ls = ls;
    G.master = master;
    G.ncpus = ncpus;
}

struct generation *gen_new(struct config *cf)
{
    struct generation *g = calloc(1, sizeof(*g));
    struct slot *slots = calloc(cf->worker_processes, sizeof(*slots));
    if (g == NULL || slots == NULL) {
        free(g);
        free(slots);
        config_free(cf);
        return NULL;
    }
    *g = (struct generation){ .id = G.cur ? G.cur->id + 1 : 1, .cf = cf,
                              .state = GEN_STARTING, .slots = slots };
    list_init(&g->link);
    return g;
}

void gen_discard(struct generation *g)
{
    list_remove(&g->link);
    config_free(g->cf);
    free(g->slots);
    free(g->workers);
    free(g);
}

const struct config *gen_config(void)
{
    return G.cur->cf;
}

unsigned gen_id(void)
{
    return G.cur->id;
}

size_t gen_workers(void)
{
    size_t n = 0;
    FOR_EACH_GEN(g)
        n += g->started;
    return n;
}

unsigned gen_draining(void)
{
    return (unsigned)(gen_workers() - G.cur->started);
}

static uint64_t drain_budget(const struct config *cf)
{
    return cf->shutdown_timeout_ms + cf->close_timeout_ms + KILL_GRACE_MS;
}

/* A worker keeps the earliest deadline it was given: asking it again to
 * drain or to hurry never grants it more time. */
static void kill_by(struct wproc *w, uint64_t at)
{
    if (w->kill_at_ms == 0 || at < w->kill_at_ms)
        w->kill_at_ms = at;
}

static void tell_fd(struct wproc *w, char cmd, int fd)
{
    if (channel_send(w->channel, cmd, fd) < 0)
        log_warn("cannot reach worker %d: %s", (int)w->pid, strerror(errno));
}

static void tell(struct wproc *w, char cmd)
{
    tell_fd(w, cmd, -1);
}

void gen_tell_all(char cmd, int fd)
{
    FOR_EACH_WORKER(g, w)
        tell_fd(w, cmd, fd);
}

static void inbox_close(struct wproc *w)
{
    if (w->inbox >= 0)
        close(w->inbox);
    w->inbox = -1;
}

/* The status listener's view of the generations and their workers (stats.h),
 * rewritten whenever one changes state: the newest STATS_GENS generations. */
static void publish(void)
{
    unsigned n = 0, k = 0, skip;
    uint64_t mono = ev_now_ms(), wall = stats_wall_ms();
    if (stats == NULL)
        return;
    FOR_EACH_GEN(g)
        n++;
    skip = n > STATS_GENS ? n - STATS_GENS : 0;
    memset(stats->gens, 0, sizeof(stats->gens));
    FOR_EACH_GEN(g) {
        if (skip > 0 && skip--)
            continue;
        stats->gens[k++] = (struct stats_gen){
            .id = g->id, .state = (uint32_t)g->state, .workers = g->started,
            .started_ms = wall - (mono - g->started_ms),
        };
    }
    FOR_EACH_WORKER(g, w)
        if (w->ss != NULL)
            STATS_SET(w->ss->state, g->state == GEN_DRAINING ? SLOT_DRAINING
                                    : w->ready ? SLOT_SERVING : SLOT_STARTING);
}

/* ---- Forks and deaths ---- */

static void child_start(unsigned slot, int channel, int inbox, struct stats_slot *ss)
{
    const struct config *cf = G.cur->cf;
    int fds[cf->nlisten];
    /* Keep only this slot's sockets and our own channel end. Another
     * worker's inbox kept open here would never report its end. */
    FOR_EACH_WORKER(g, w) {
        close(w->channel);
        inbox_close(w);
    }
    upgrade_close_in_child();
    listeners_keep_slot(G.ls, slot);
    status_close_in_child();
    stats_worker(ss);
    for (size_t i = 0; i < cf->nlisten; i++)
        fds[i] = listeners_fd(G.ls, i, slot);
    struct worker_args a = {
        .cf = cf,
        .slot = slot,
        .generation = G.cur->id,
        .listen_fds = fds,
        .nlisten = cf->nlisten,
        .ncpus = G.ncpus,
        .channel = channel,
        .inbox = inbox,
    };
    worker_main(&a);
}

static void close_pair(int sv[2])
{
    close(sv[0]);
    close(sv[1]);
}

/* Forks slot's worker into the current generation. */
static int spawn(unsigned slot)
{
    struct generation *g = G.cur;
    int sv[2], ib[2];
    struct wproc *grown = realloc(g->workers, (g->started + 1) * sizeof(*g->workers));
    if (grown == NULL)
        return -1;
    g->workers = grown;
    if (channel_pair(sv) < 0) {
        log_error("socketpair: %s", strerror(errno));
        return -1;
    }
    if (handoff_pair(ib) < 0) {
        log_error("socketpair: %s", strerror(errno));
        close_pair(sv);
        return -1;
    }
    /* Before the fork: a worker's first message must raise SIGIO too. */
    channel_watch(sv[0], G.master);
    struct stats_slot *ss = stats_slot_take(g->id, slot);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        stats_slot_free(ss);
        close_pair(sv);
        close_pair(ib);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        close(ib[1]);
        child_start(slot, sv[1], ib[0], ss);
    }
    if (ss == NULL)
        log_warn("worker %d (slot %u) is not counted: all %u status slots are taken",
                 (int)pid, slot, STATS_SLOTS);
    stats_slot_pid(ss, pid);
    close(sv[1]);
    close(ib[0]);
    /* The inbox's write end is given away once the generation is ready; a
     * worker respawned later gets no handoffs and its inbox closes now. */
    if (g->state != GEN_STARTING) {
        close(ib[1]);
        ib[1] = -1;
    }
    g->workers[g->started++] = (struct wproc){
        .pid = pid, .slot = slot, .channel = sv[0], .inbox = ib[1], .started_ms = ev_now_ms(),
        .ss = ss,
    };
    log_info("worker %d started (slot %u, generation %u)", (int)pid, slot, g->id);
    return 0;
}

static void respawn_later(struct slot *s, uint64_t lived_ms)
{
    if (lived_ms >= QUICK_DEATH_MS)
        s->backoff_ms = 0;
    else
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    s->respawn_at_ms = ev_now_ms() + s->backoff_ms;
}

static void worker_gone(struct generation *g, struct wproc *wp, int status, const char *how)
{
    struct wproc w = *wp;
    close(w.channel);
    inbox_close(&w);
    *wp = g->workers[--g->started];
    g->ready -= w.ready ? 1 : 0;
    perip_reaped(w.ss, w.pid); /* its per-IP counts, if it could not release them */
    stats_slot_free(w.ss);
    if (stats != NULL)
        stats->exits[WIFSIGNALED(status) ? EXIT_SIGNAL : WEXITSTATUS(status) ? EXIT_ERROR
                                                                          : EXIT_NORMAL]++;
    if (g->state == GEN_DRAINING) {
        log_info("worker %d (slot %u, generation %u) %s", (int)w.pid, w.slot, g->id, how);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_FATAL) {
        stats_event("worker %d (slot %u, generation %u) %s: fatal", (int)w.pid, w.slot, g->id,
                    how);
        log_error("worker %d (slot %u, generation %u) %s: fatal start-up error, "
                  "slot %u stays empty until the next reload", (int)w.pid, w.slot,
                  g->id, how, w.slot);
    } else {
        struct slot *s = &g->slots[w.slot];
        respawn_later(s, ev_now_ms() - w.started_ms);
        stats_event("worker %d (slot %u, generation %u) %s; respawning", (int)w.pid, w.slot,
                    g->id, how);
        log_error("worker %d (slot %u, generation %u) %s; respawning %s%u ms", (int)w.pid,
                  w.slot, g->id, how, s->backoff_ms ? "with back-off in " : "in ",
                  s->backoff_ms);
    }
    if (g != G.cur && g->started == 0)
        gen_discard(g);
    publish();
}

int gen_reaped(pid_t pid, int status, const char *how)
{
    FOR_EACH_WORKER(g, w) {
        if (w->pid == pid) {
            worker_gone(g, w, status, how);
            return 1;
        }
    }
    return 0;
}

uint64_t gen_timers(uint64_t now)
{
    uint64_t next = UINT64_MAX;
    FOR_EACH_WORKER(g, w) {
        if (w->kill_at_ms && w->kill_at_ms <= now) {
            log_warn("worker %d (slot %u, generation %u) missed its deadline; killing it",
                     (int)w->pid, w->slot, g->id);
            kill(w->pid, SIGKILL);
            w->kill_at_ms = 0;
        }
        if (w->kill_at_ms && w->kill_at_ms < next)
            next = w->kill_at_ms;
    }
    for (unsigned s = 0; G.cur->state != GEN_DRAINING && s < G.cur->cf->worker_processes; s++) {
        struct slot *sl = &G.cur->slots[s];
        if (sl->respawn_at_ms && sl->respawn_at_ms <= now) {
            sl->respawn_at_ms = 0;
            if (spawn(s) < 0)
                respawn_later(sl, 0);
        }
        if (sl->respawn_at_ms && sl->respawn_at_ms < next)
            next = sl->respawn_at_ms;
    }
    return next;
}

/* ---- Generations coming and going ---- */

/* Asks the workers of older generations (or all, when stopping) to drain. */
static void drain_workers(char cmd_keep, char cmd_retire, int all)
{
    const struct config *cf = G.cur->cf;
    uint64_t kill_at = ev_now_ms() + drain_budget(cf);
    FOR_EACH_GEN(g) {
        if (!all && g == G.cur)
            continue;
        g->state = GEN_DRAINING;
        for (unsigned i = 0; i < g->started; i++) {
            struct wproc *w = &g->workers[i];
            tell(w, w->slot >= cf->worker_processes ? cmd_retire : cmd_keep);
            kill_by(w, kill_at);
        }
    }
}

/* Bounds the generations alive: the oldest ones close their clients now. */
static void hurry_old_generations(void)
{
    uint64_t kill_at = ev_now_ms() + G.cur->cf->close_timeout_ms + KILL_GRACE_MS;
    FOR_EACH_WORKER(g, w) {
        if (g->id + MAX_DRAINING_GENERATIONS >= G.cur->id)
            continue;
        tell(w, WORKER_CMD_HURRY);
        kill_by(w, kill_at);
    }
}

void gen_start(struct generation *g)
{
    struct generation *prev = G.cur;
    list_append(&G.gens, &g->link);
    G.cur = g;
    g->started_ms = ev_now_ms();
    for (unsigned s = 0; s < g->cf->worker_processes; s++)
        if (spawn(s) < 0)
            respawn_later(&g->slots[s], 0); /* try again shortly rather than give up */
    if (prev == NULL) {
        publish();
        return;
    }
    drain_workers(WORKER_CMD_RELOAD, WORKER_CMD_RETIRE, 0);
    hurry_old_generations();
    /* Older ones are freed by the reap of their last worker; this one may
     * have had none left to reap. */
    if (prev->started == 0)
        gen_discard(prev);
    publish();
}

void gen_stop(int fast)
{
    if (fast) {
        /* SIGTERM's own grace, replacing any drain deadline. */
        FOR_EACH_WORKER(g, w) {
            kill(w->pid, SIGTERM);
            w->kill_at_ms = ev_now_ms() + KILL_GRACE_MS;
        }
        FOR_EACH_GEN(g)
            g->state = GEN_DRAINING;
    } else {
        drain_workers(WORKER_CMD_QUIT, WORKER_CMD_QUIT, 1);
    }
    /* Draining workers must not wait for handoffs that will never come. */
    FOR_EACH_WORKER(g, w)
        inbox_close(w);
    publish();
}

void gen_hand_over(pid_t new_master, const int *inboxes, unsigned n)
{
    uint64_t kill_at = ev_now_ms() + drain_budget(G.cur->cf);
    log_notice("binary upgrade: master %d serves; handing %zu workers' connections to its "
               "%u workers", (int)new_master, gen_workers(), n);
    FOR_EACH_WORKER(g, w) {
        /* As when retired: our workers take their listeners' queues first. */
        tell(w, WORKER_CMD_UPGRADE);
        for (unsigned k = 0; k < n; k++)
            tell_fd(w, WORKER_CMD_TARGET, inboxes[k]);
        tell(w, WORKER_CMD_GO);
        kill_by(w, kill_at);
        inbox_close(w);
    }
    FOR_EACH_GEN(g)
        g->state = GEN_DRAINING;
    publish();
}

void gen_free_all(void)
{
    while (!list_empty(&G.gens))
        gen_discard(gen_of(G.gens.next));
}

/* ---- Readiness and handoffs ---- */

/* The new generation serves: older workers hand it their connections. */
static void give_inboxes(void)
{
    struct generation *cur = G.cur;
    if (upgrade_from_old()) {
        for (unsigned i = 0; i < cur->started; i++)
            if (cur->workers[i].inbox >= 0)
                upgrade_send_inbox(cur->workers[i].inbox);
        upgrade_send_serving(cur->cf->pid_file);
    } else if (cur->cf->reload_handoff) {
        FOR_EACH_WORKER(g, o) {
            if (g == cur)
                continue;
            for (unsigned n = 0; n < cur->started; n++)
                if (cur->workers[n].inbox >= 0)
                    tell_fd(o, WORKER_CMD_TARGET, cur->workers[n].inbox);
            tell(o, WORKER_CMD_GO);
        }
    }
    /* Senders now hold their own copies: once they are gone, an inbox
     * reports its end and its worker knows nothing more will come. */
    FOR_EACH_WORKER(g, w)
        inbox_close(w);
}

void gen_check_ready(void)
{
    struct generation *cur = G.cur;
    if (cur->state != GEN_STARTING || cur->ready < cur->cf->worker_processes)
        return;
    give_inboxes();
    cur->state = GEN_SERVING;
    log_notice("generation %u ready: %u workers serving, %u draining (%llu ms)", cur->id,
               cur->cf->worker_processes, gen_draining(),
               (unsigned long long)(ev_now_ms() - cur->started_ms));
    stats_event("generation %u serving: %u workers", cur->id, cur->cf->worker_processes);
    publish();
    notify_send("READY=1");
    notify_send("STATUS=generation %u: %u of %u workers serving, %u draining", cur->id,
                cur->ready, cur->cf->worker_processes, gen_draining());
}

void gen_read_channels(void)
{
    char cmd;
    int fd;
    FOR_EACH_WORKER(g, w) {
        while (channel_recv(w->channel, &cmd, &fd) > 0) {
            if (cmd == WORKER_MSG_READY && !w->ready) {
                w->ready = 1;
                g->ready++;
                if (w->ss != NULL && g->state != GEN_DRAINING)
                    STATS_SET(w->ss->state, SLOT_SERVING);
            }
            if (fd >= 0)
                close(fd);
        }
    }
}
