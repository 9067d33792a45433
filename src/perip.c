/* The segment: a header, the locks (one word per bucket, packed so the
 * master's sweep after a death touches little), the buckets, and
 * STATS_SLOTS ledgers. It is mapped MAP_NORESERVE: untouched pages (the
 * ledgers of slots no worker uses, buckets no client hashed to) cost no
 * memory. */
#include "perip.h"

#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stats.h"

#define LEDGER_MAX UINT16_MAX

struct entry {
    uint8_t key[16];
    uint32_t conns;             /* open connections of this key, all workers */
    uint32_t used;
    uint64_t tat_us;            /* GCRA: when the bucket is full again */
};

struct bucket {
    struct entry e[PERIP_WAYS];
};

struct shm {
    uint64_t rnd[3];            /* the segment's id, then the hash's seed */
    uint32_t nbuckets;
    uint32_t ledger_total[STATS_SLOTS]; /* each ledger's sum, by its worker alone */
};

static struct {
    struct shm *h;
    uint32_t *locks;
    struct bucket *b;
    uint16_t *ledgers;          /* [STATS_SLOTS][nbuckets * PERIP_WAYS] */
    uint16_t *mine;             /* this worker's row; NULL: no ledger */
    uint32_t *my_total;
    uint32_t pid;
} P;

static size_t nentries(void)
{
    return (size_t)P.h->nbuckets * PERIP_WAYS;
}

int perip_init(unsigned entries)
{
    uint32_t nb = (entries + PERIP_WAYS - 1) / PERIP_WAYS;
    size_t hsz = (sizeof(struct shm) + 63) & ~(size_t)63;
    size_t lsz = ((size_t)nb * sizeof(uint32_t) + 63) & ~(size_t)63;
    size_t bsz = (size_t)nb * sizeof(struct bucket);
    size_t size = hsz + lsz + bsz + (size_t)STATS_SLOTS * nb * PERIP_WAYS * sizeof(uint16_t);
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    P.h = m;
    P.locks = (uint32_t *)(void *)((char *)m + hsz);
    P.b = (struct bucket *)(void *)((char *)m + hsz + lsz);
    P.ledgers = (uint16_t *)(void *)((char *)m + hsz + lsz + bsz);
    P.h->nbuckets = nb;
    /* The seed keeps clients from choosing keys that share a bucket. */
    if (getrandom(P.h->rnd, sizeof(P.h->rnd), 0) != (ssize_t)sizeof(P.h->rnd)) {
        P.h->rnd[0] = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
        P.h->rnd[1] = P.h->rnd[0] * 0x9E3779B97F4A7C15u;
        P.h->rnd[2] = ~P.h->rnd[1];
    }
    P.pid = (uint32_t)getpid();
    return 0;
}

unsigned perip_entries(void)
{
    return P.h ? (unsigned)nentries() : 0;
}

uint64_t perip_table(void)
{
    return P.h ? P.h->rnd[0] : 0;
}

/* ---- Locks -------------------------------------------------------------- */

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void lock(uint32_t b)
{
    uint32_t *w = &P.locks[b];
    for (unsigned spin = 0;; spin++) {
        uint32_t cur = 0;
        if (__atomic_compare_exchange_n(w, &cur, P.pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
        if (spin < 100) {
            cpu_relax();
            continue;
        }
        /* Critical sections are a few dozen instructions: a holder this
         * slow may be dead. Taken over from a pid that no longer exists;
         * one that is a zombie is freed by the master when it reaps it. */
        if (cur != 0 && kill((pid_t)cur, 0) < 0 && errno == ESRCH &&
            __atomic_compare_exchange_n(w, &cur, P.pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return;
        sched_yield();
    }
}

static void unlock(uint32_t b)
{
    __atomic_store_n(&P.locks[b], 0, __ATOMIC_RELEASE);
}

/* ---- Keys and entries --------------------------------------------------- */

int perip_key_of(const struct sockaddr *sa, unsigned v6_prefix, struct perip_key *k)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF };
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET) {
        memcpy(k->b, mapped, 12);
        memcpy(k->b + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    memcpy(k->b, ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr, 16);
    if (memcmp(k->b, mapped, 12) == 0)
        return 0; /* an IPv4 client, whichever way it was written */
    for (unsigned i = v6_prefix; i < 128; i++)
        k->b[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
    return 0;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDu;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53u;
    return x ^ (x >> 33);
}

static uint32_t bucket_of(const struct perip_key *k)
{
    uint64_t a, b;
    memcpy(&a, k->b, 8);
    memcpy(&b, k->b + 8, 8);
    return (uint32_t)(mix(mix(a ^ P.h->rnd[1]) ^ b ^ P.h->rnd[2]) % P.h->nbuckets);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* one clock for every process */
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* k's entry in bucket b (locked), made from a free or idle one if create;
 * NULL if there is none (or no room). */
static struct entry *find(uint32_t b, const struct perip_key *k, uint64_t now, int create)
{
    struct entry *spare = NULL;
    for (unsigned w = 0; w < PERIP_WAYS; w++) {
        struct entry *e = &P.b[b].e[w];
        if (e->used && memcmp(e->key, k->b, 16) == 0)
            return e;
        if (spare == NULL && (!e->used || (e->conns == 0 && e->tat_us <= now)))
            spare = e;
    }
    if (!create || spare == NULL)
        return NULL;
    memcpy(spare->key, k->b, 16);
    spare->used = 1;
    spare->conns = 0;
    spare->tat_us = 0;
    return spare;
}

static uint32_t index_of(uint32_t b, const struct entry *e)
{
    return b * PERIP_WAYS + (uint32_t)(e - P.b[b].e);
}

/* The count of e (bucket locked) is this worker's too; 0, or -1 if its
 * ledger cannot say more. */
static int own(uint32_t idx)
{
    if (P.mine == NULL)
        return 0;
    if (P.mine[idx] == LEDGER_MAX)
        return -1;
    STATS_SET(P.mine[idx], (uint16_t)(P.mine[idx] + 1));
    STATS_SET(*P.my_total, *P.my_total + 1);
    return 0;
}

static void disown(uint32_t idx)
{
    if (P.mine == NULL || P.mine[idx] == 0)
        return;
    STATS_SET(P.mine[idx], (uint16_t)(P.mine[idx] - 1));
    STATS_SET(*P.my_total, *P.my_total - 1);
}

/* ---- Worker ------------------------------------------------------------- */

void perip_worker(const struct stats_slot *ss)
{
    P.pid = (uint32_t)getpid();
    P.mine = NULL;
    if (P.h == NULL || stats == NULL || ss < stats->slots || ss >= stats->slots + STATS_SLOTS)
        return; /* counts then live without a ledger: a SIGKILL would leak them */
    size_t slot = (size_t)(ss - stats->slots);
    P.mine = P.ledgers + slot * nentries();
    P.my_total = &P.h->ledger_total[slot];
}

/* GCRA: a handshake at now is allowed while the arrival time it pushes to
 * stays within the burst's tolerance. */
static int rate_ok(struct entry *e, const struct perip_limits *l, uint64_t now, uint32_t *retry_s)
{
    if (l->interval_us == 0)
        return 1;
    uint64_t next = (e->tat_us > now ? e->tat_us : now) + l->interval_us;
    if (next - now > l->burst_us) {
        uint64_t wait = next - now - l->burst_us;
        *retry_s = (uint32_t)((wait + 999999) / 1000000);
        return 0;
    }
    e->tat_us = next;
    return 1;
}

enum perip_verdict perip_admit(const struct perip_key *k, const struct perip_limits *l,
                               uint32_t *entry, uint32_t *retry_s)
{
    uint64_t now = now_us();
    uint32_t b = P.h ? bucket_of(k) : 0;
    enum perip_verdict v = PERIP_ADMITTED;
    *entry = PERIP_NONE;
    *retry_s = 0;
    if (P.h == NULL)
        return v;
    lock(b);
    struct entry *e = find(b, k, now, 1);
    if (e == NULL)
        v = PERIP_NO_ROOM;
    else if (l->max_conns && e->conns >= l->max_conns)
        v = PERIP_TOO_MANY;
    else if (!rate_ok(e, l, now, retry_s))
        v = PERIP_TOO_FAST;
    else if (l->max_conns && own(index_of(b, e)) == 0) {
        e->conns++;
        *entry = index_of(b, e);
        v = PERIP_COUNTED;
    }
    unlock(b);
    return v;
}

int perip_count(const struct perip_key *k, uint32_t *entry)
{
    if (P.h == NULL)
        return -1;
    uint32_t b = bucket_of(k);
    int rc = -1;
    lock(b);
    struct entry *e = find(b, k, now_us(), 1);
    if (e != NULL && own(index_of(b, e)) == 0) {
        e->conns++;
        *entry = index_of(b, e);
        rc = 0;
    }
    unlock(b);
    return rc;
}

void perip_release(uint32_t entry)
{
    uint32_t b = entry / PERIP_WAYS;
    if (P.h == NULL || entry >= nentries())
        return;
    lock(b);
    struct entry *e = &P.b[b].e[entry % PERIP_WAYS];
    if (e->conns > 0)
        e->conns--;
    disown(entry);
    unlock(b);
}

void perip_hand_out(uint32_t entry)
{
    uint32_t b = entry / PERIP_WAYS;
    if (P.h == NULL || entry >= nentries())
        return;
    lock(b);
    disown(entry);
    unlock(b);
}

int perip_hand_in(uint64_t table, uint32_t entry, const struct perip_key *k)
{
    uint32_t b = entry / PERIP_WAYS;
    int rc = -1;
    if (P.h == NULL || table != P.h->rnd[0] || entry >= nentries())
        return -1;
    lock(b);
    struct entry *e = &P.b[b].e[entry % PERIP_WAYS];
    /* Its count kept the entry (conns > 0 is never reused). */
    if (e->used && e->conns > 0 && memcmp(e->key, k->b, 16) == 0) {
        if (own(entry) == 0) {
            rc = 0;
        } else {
            e->conns--; /* no ledger room here: it goes on uncounted */
        }
    }
    unlock(b);
    return rc;
}

unsigned perip_conns(const struct perip_key *k)
{
    if (P.h == NULL)
        return 0;
    uint32_t b = bucket_of(k);
    lock(b);
    const struct entry *e = find(b, k, 0, 0);
    unsigned n = e ? e->conns : 0;
    unlock(b);
    return n;
}

int perip_key_at(uint32_t entry, struct perip_key *k)
{
    uint32_t b = entry / PERIP_WAYS;
    int rc = -1;
    if (P.h == NULL || entry >= nentries())
        return -1;
    lock(b);
    const struct entry *e = &P.b[b].e[entry % PERIP_WAYS];
    if (e->used && e->conns > 0) {
        memcpy(k->b, e->key, sizeof(k->b));
        rc = 0;
    }
    unlock(b);
    return rc;
}

/* ---- Master ------------------------------------------------------------- */

void perip_reaped(const struct stats_slot *ss, pid_t pid)
{
    if (P.h == NULL)
        return;
    for (uint32_t b = 0; b < P.h->nbuckets; b++) {
        uint32_t cur = (uint32_t)pid;
        __atomic_compare_exchange_n(&P.locks[b], &cur, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    }
    if (stats == NULL || ss < stats->slots || ss >= stats->slots + STATS_SLOTS)
        return;
    size_t slot = (size_t)(ss - stats->slots);
    uint32_t left = STATS_GET(P.h->ledger_total[slot]);
    uint16_t *row = P.ledgers + slot * nentries();
    if (left == 0)
        return; /* an orderly exit released everything itself */
    for (size_t i = 0; i < nentries(); i++) {
        if (row[i] == 0)
            continue;
        uint32_t b = (uint32_t)(i / PERIP_WAYS);
        lock(b);
        struct entry *e = &P.b[b].e[i % PERIP_WAYS];
        e->conns = e->conns > row[i] ? e->conns - row[i] : 0;
        row[i] = 0;
        unlock(b);
    }
    STATS_SET(P.h->ledger_total[slot], 0);
    log_notice("worker %d was counted for %u connections in the per-IP table: released",
               (int)pid, left);
}
