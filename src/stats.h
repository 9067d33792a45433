/* Counters every process of one master shares: a fixed-size segment the
 * master maps before forking anything (MAP_SHARED, inherited), so a scrape
 * reads it without asking any worker, and costs them nothing.
 *
 * - One slot per live worker, written by that worker alone (plain
 *   relaxed stores: no locked instruction on the echo path), read by the
 *   status process. The master assigns a slot at fork, marks it serving,
 *   and when the worker is reaped folds its counters into `retired`, so
 *   the sums stay monotonic across worker exits, restarts and reloads. A
 *   sequence number around that fold lets a reader see a consistent sum.
 * - The master's own part (reloads, exits, generations, stopping, recent
 *   events) is written by the master only.
 * A binary upgrade starts a new segment (a new master: counters restart,
 * as Prometheus expects of a restarted target). */
#ifndef WSECHOD_STATS_H
#define WSECHOD_STATS_H

#include <stdint.h>
#include <sys/types.h>

/* Handshake results: 101 and every status the server answers with. */
enum stats_hs { HS_101, HS_400, HS_403, HS_404, HS_405, HS_408, HS_426, HS_429, HS_431,
                HS_503, HS_505, HS_OTHER, HS_N };
/* Connections on a proxy_protocol listener closed before any HTTP: a peer
 * not in proxy_protocol_from, a header that is not one, none in time, the
 * peer leaving halfway through it. */
enum stats_pp { PP_UNTRUSTED, PP_INVALID, PP_TIMEOUT, PP_TRUNCATED, PP_N };
/* Handshakes refused by a per-client limit. */
enum stats_limit { LIMIT_CONNECTIONS, LIMIT_RATE, LIMIT_N };
/* Close codes counted by name; anything else is "other". */
enum stats_code { CC_1000, CC_1001, CC_1002, CC_1003, CC_1005, CC_1006, CC_1007, CC_1008,
                  CC_1009, CC_1010, CC_1011, CC_1012, CC_1013, CC_OTHER, CC_N };
/* Who ended a WebSocket first. */
enum stats_by { BY_CLIENT, BY_SERVER, BY_TIMEOUT, BY_RESET, BY_N };
/* Worker exits, by cause. */
enum stats_exit { EXIT_NORMAL, EXIT_ERROR, EXIT_SIGNAL, EXIT_N };

#define STATS_SIZE_BUCKETS 10   /* message sizes: 64 B .. 16 MiB, +Inf */
#define STATS_DUR_BUCKETS 10    /* connection durations: 0.1 s .. 1 day, +Inf */
#define STATS_SLOTS 256         /* live workers at once, all generations */
#define STATS_GENS 4
#define STATS_EVENTS 16

struct stats_counters {
    uint64_t accepted;
    uint64_t handshakes[HS_N];
    uint64_t closes[CC_N][BY_N];
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, wire_in, wire_out;
    uint64_t handoffs_out, handoffs_in, handoffs_failed;
    uint64_t tls[2][2];         /* [TLS 1.3][resumed] */
    uint64_t tls_failed;
    uint64_t size_bucket[STATS_SIZE_BUCKETS], size_sum;
    uint64_t dur_bucket[STATS_DUR_BUCKETS], dur_sum_ms;
    uint64_t proxy_errors[PP_N];
    uint64_t per_ip_refused[LIMIT_N];
    uint64_t per_ip_full;       /* admitted uncounted: no room in the per-IP table */
};

enum stats_slot_state { SLOT_FREE, SLOT_STARTING, SLOT_SERVING, SLOT_DRAINING };

struct stats_slot {
    /* the master's */
    uint32_t state;             /* enum stats_slot_state */
    pid_t pid;
    uint32_t generation, slot;
    uint64_t started_ms;        /* wall clock */
    /* the worker's */
    int64_t open;               /* connections open now */
    struct stats_counters c;
} __attribute__((aligned(64)));

struct stats_gen {
    uint32_t id;                /* 0: unused */
    uint32_t state;             /* 0 starting, 1 serving, 2 draining */
    uint32_t workers;
    uint64_t started_ms;
};

struct stats_event {
    uint64_t ms;
    char text[112];
};

struct stats_shm {
    uint32_t seq;               /* odd while a slot is being folded */
    uint32_t stopping;          /* the master is shutting down */
    pid_t master;
    uint64_t master_started_ms, config_loaded_ms;
    char config_file[256];
    uint64_t reloads_ok, reloads_failed;
    uint64_t exits[EXIT_N];
    struct stats_gen gens[STATS_GENS];
    uint32_t nevents;           /* events written so far; the last STATS_EVENTS kept */
    struct stats_event events[STATS_EVENTS];
    struct stats_counters retired;
    struct stats_slot slots[STATS_SLOTS];
};

/* The segment (NULL before stats_init), and this worker's slot (a private
 * dummy outside workers, so counting never needs a test). */
extern struct stats_shm *stats;
extern struct stats_slot *stats_me;

/* Single writer: a relaxed load and store, no locked instruction. */
#define STATS_ADD(field, n) \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), \
                     __ATOMIC_RELAXED)
#define STATS_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define STATS_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)

/* Master, once: maps the segment. 0, or -1 with errno. */
int  stats_init(const char *config_file);
/* Master: a free slot for a worker about to be forked (NULL: none). */
struct stats_slot *stats_slot_take(uint32_t generation, uint32_t slot);
void stats_slot_pid(struct stats_slot *s, pid_t pid);
/* Master: the worker is gone; its counters join `retired`. */
void stats_slot_free(struct stats_slot *s);
/* Worker, right after the fork: counts go to s (NULL: nowhere). */
void stats_worker(struct stats_slot *s);
/* Master: something an operator wants on the status page. */
void stats_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Counting, in workers. */
enum stats_hs stats_hs_of(int status);
void stats_close(uint16_t code, enum stats_by by);
void stats_duration(uint64_t ms);
/* A data message received (in) or sent: inline, it is on the echo path. */
extern const uint64_t stats_size_le[STATS_SIZE_BUCKETS - 1];
static inline void stats_message(int in, uint64_t len)
{
    struct stats_counters *c = &stats_me->c;
    unsigned b = 0;
    if (!in) {
        STATS_ADD(c->msgs_out, 1);
        STATS_ADD(c->bytes_out, len);
        return;
    }
    STATS_ADD(c->msgs_in, 1);
    STATS_ADD(c->bytes_in, len);
    while (b < STATS_SIZE_BUCKETS - 1 && len > stats_size_le[b])
        b++;
    STATS_ADD(c->size_bucket[b], 1);
    STATS_ADD(c->size_sum, len);
}

/* Reader: everything summed, consistent with respect to folds. */
void stats_sum(struct stats_counters *out);

uint64_t stats_wall_ms(void);

#endif
