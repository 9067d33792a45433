/* Per-client counts shared by every worker of every generation of one
 * master, for max_connections_per_ip and handshake_rate_per_ip: one
 * fixed-size MAP_SHARED segment the master maps before forking anything
 * (like stats.h), per_ip_table_size entries, never grown.
 *
 * - A client is a key: its IPv4 address, or its IPv6 address cut to
 *   per_ip_ipv6_prefix bits. A keyed hash (random per segment) picks a
 *   bucket of PERIP_WAYS entries; each entry holds a key, its open
 *   connections and the rate's state (GCRA: one "theoretical arrival time"
 *   is a whole token bucket). A bucket is changed under its spinlock,
 *   whose word is the holder's pid; a spinner that waits long checks
 *   whether the holder is gone (and takes the lock over from a dead one).
 * - An entry without connections whose bucket has refilled says nothing
 *   a new entry would not: it is reused for another key, so eviction loses
 *   no count. A bucket with no such entry admits the client uncounted
 *   (counted in per_ip_table_full_total).
 * - Worker death: each worker also keeps a ledger in the segment (its
 *   stats slot's row: one uint16 per entry, how many of the entry's
 *   connections are its own). When the master reaps a worker it frees the
 *   locks the dead pid held and subtracts its ledger, so a SIGKILLed
 *   worker leaves the counts exact. A connection handed to another worker
 *   moves from the sender's ledger to the receiver's; the entry's count
 *   stays (nothing is counted twice or released twice).
 * - A binary upgrade's new master makes a new segment (its id differs):
 *   connections handed to it are counted there afresh.
 * Not for the hot path: only consulted when a limit is on. */
#ifndef WSECHOD_PERIP_H
#define WSECHOD_PERIP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PERIP_WAYS 8
#define PERIP_NONE UINT32_MAX

struct stats_slot;

struct perip_key {
    uint8_t b[16];              /* IPv4 as ::ffff:a.b.c.d; IPv6 masked to the prefix */
};

struct perip_limits {
    unsigned max_conns;         /* 0: connections are not counted */
    uint64_t interval_us;       /* the rate: one handshake per interval; 0: no rate */
    uint64_t burst_us;          /* burst handshakes at once: burst * interval */
};

enum perip_verdict {
    PERIP_COUNTED,              /* admitted, and counted in *entry */
    PERIP_ADMITTED,             /* admitted, nothing to release (no connection limit) */
    PERIP_NO_ROOM,              /* admitted uncounted: the bucket is full of live entries */
    PERIP_TOO_MANY,             /* at max_conns */
    PERIP_TOO_FAST,             /* over the rate; *retry_s says when a token is back */
};

/* Master, once, before forking: 0, or -1 with errno. */
int  perip_init(unsigned entries);
unsigned perip_entries(void);
/* Master: the worker pid (counting in ss's ledger; NULL: none) is gone. */
void perip_reaped(const struct stats_slot *ss, pid_t pid);

/* Worker, after the fork: its pid and ledger (ss: its stats slot). */
void perip_worker(const struct stats_slot *ss);
/* The key of an AF_INET/AF_INET6 address: 0; -1 for any other family. */
int  perip_key_of(const struct sockaddr *sa, unsigned v6_prefix, struct perip_key *k);
enum perip_verdict perip_admit(const struct perip_key *k, const struct perip_limits *l,
                               uint32_t *entry, uint32_t *retry_s);
/* Counts a connection without asking the limits (one handed over from a
 * worker that did not count it): 0 with *entry, or -1 (no room). */
int  perip_count(const struct perip_key *k, uint32_t *entry);
/* Its connection closed. */
void perip_release(uint32_t entry);
/* Its connection went to another worker, which takes the count over. */
void perip_hand_out(uint32_t entry);
/* A connection counted in entry of table (perip_table) arrived: 0, it is
 * counted here now; -1, not this segment's (count it afresh). */
int  perip_hand_in(uint64_t table, uint32_t entry, const struct perip_key *k);
uint64_t perip_table(void);
/* Connections counted for k now (tests, diagnostics). */
unsigned perip_conns(const struct perip_key *k);
/* The key counted in entry (held: it has connections): 0, or -1. */
int  perip_key_at(uint32_t entry, struct perip_key *k);

#endif
