/* The segment is anonymous shared memory: every process forked after
 * stats_init shares it, nothing else can reach it. */
#include "stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

struct stats_shm *stats;
static struct stats_slot dummy;
struct stats_slot *stats_me = &dummy;

const uint64_t stats_size_le[STATS_SIZE_BUCKETS - 1] = {
    64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 16777216,
};
static const uint64_t dur_le_ms[STATS_DUR_BUCKETS - 1] = {
    100, 1000, 10000, 60000, 300000, 1800000, 3600000, 21600000, 86400000,
};

uint64_t stats_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int stats_init(const char *config_file)
{
    void *p = mmap(NULL, sizeof(struct stats_shm), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    char *abs = realpath(config_file, NULL);
    stats = p;
    stats->master_started_ms = stats->config_loaded_ms = stats_wall_ms();
    snprintf(stats->config_file, sizeof(stats->config_file), "%s", abs ? abs : config_file);
    free(abs);
    return 0;
}

struct stats_slot *stats_slot_take(uint32_t generation, uint32_t slot)
{
    for (unsigned i = 0; stats != NULL && i < STATS_SLOTS; i++) {
        struct stats_slot *s = &stats->slots[i];
        if (STATS_GET(s->state) == SLOT_FREE) {
            memset(&s->c, 0, sizeof(s->c));
            s->open = 0;
            s->pid = 0;
            s->generation = generation;
            s->slot = slot;
            s->started_ms = stats_wall_ms();
            STATS_SET(s->state, SLOT_STARTING);
            return s;
        }
    }
    return NULL;
}

void stats_slot_pid(struct stats_slot *s, pid_t pid)
{
    if (s != NULL)
        s->pid = pid;
}

static void add_counters(struct stats_counters *to, const struct stats_counters *from)
{
    const uint64_t *f = (const uint64_t *)(const void *)from;
    uint64_t *t = (uint64_t *)(void *)to;
    for (size_t i = 0; i < sizeof(*from) / sizeof(uint64_t); i++)
        t[i] += STATS_GET(f[i]);
}

/* The fold is the only change to what a reader sums that is not a single
 * counter's increment: bracketed by the sequence number. */
void stats_slot_free(struct stats_slot *s)
{
    if (s == NULL)
        return;
    __atomic_add_fetch(&stats->seq, 1, __ATOMIC_ACQ_REL);
    add_counters(&stats->retired, &s->c);
    STATS_SET(s->state, SLOT_FREE);
    __atomic_add_fetch(&stats->seq, 1, __ATOMIC_ACQ_REL);
}

void stats_worker(struct stats_slot *s)
{
    stats_me = s != NULL ? s : &dummy;
}

void stats_event(const char *fmt, ...)
{
    if (stats == NULL)
        return;
    struct stats_event *e = &stats->events[stats->nevents % STATS_EVENTS];
    va_list ap;
    e->ms = stats_wall_ms();
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof(e->text), fmt, ap);
    va_end(ap);
    __atomic_add_fetch(&stats->nevents, 1, __ATOMIC_RELEASE);
}

enum stats_hs stats_hs_of(int status)
{
    switch (status) {
    case 101: return HS_101;
    case 400: return HS_400;
    case 403: return HS_403;
    case 404: return HS_404;
    case 405: return HS_405;
    case 408: return HS_408;
    case 426: return HS_426;
    case 429: return HS_429;
    case 431: return HS_431;
    case 503: return HS_503;
    case 505: return HS_505;
    default:  return HS_OTHER;
    }
}

void stats_close(uint16_t code, enum stats_by by)
{
    enum stats_code c = code >= 1000 && code <= 1013 && code != 1004
                        ? (enum stats_code)(code - 1000 - (code > 1004)) : CC_OTHER;
    STATS_ADD(stats_me->c.closes[c][by], 1);
}

void stats_duration(uint64_t ms)
{
    unsigned b = 0;
    while (b < STATS_DUR_BUCKETS - 1 && ms > dur_le_ms[b])
        b++;
    STATS_ADD(stats_me->c.dur_bucket[b], 1);
    STATS_ADD(stats_me->c.dur_sum_ms, ms);
}

void stats_sum(struct stats_counters *out)
{
    uint32_t before, after;
    do {
        while ((before = __atomic_load_n(&stats->seq, __ATOMIC_ACQUIRE)) & 1)
            ;
        memset(out, 0, sizeof(*out));
        add_counters(out, &stats->retired);
        for (unsigned i = 0; i < STATS_SLOTS; i++)
            if (STATS_GET(stats->slots[i].state) != SLOT_FREE)
                add_counters(out, &stats->slots[i].c);
        after = __atomic_load_n(&stats->seq, __ATOMIC_ACQUIRE);
    } while (before != after);
}
