/* src/perip.c and src/cidr.c: address blocks; per-client keys; the shared
 * table's counts and rate, exact across processes, handed between
 * workers, and put right by the master after a worker is SIGKILLed (also
 * while it may hold a bucket's lock). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cidr.h"
#include "perip.h"
#include "stats.h"
#include "tap.h"

static struct sockaddr_storage addr_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &a4->sin_addr) == 1)
        a4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1)
        a6->sin6_family = AF_INET6;
    return ss;
}

static struct perip_key key(const char *text, unsigned prefix)
{
    struct sockaddr_storage ss = addr_of(text);
    struct perip_key k;
    if (perip_key_of((struct sockaddr *)&ss, prefix, &k) < 0)
        abort();
    return k;
}

static void cidrs(void)
{
    struct config_cidr c[3];
    char text[64];
    ok(cidr_parse("10.0.0.0/8", &c[0]) == 0 && cidr_parse("::1/128", &c[1]) == 0 &&
       cidr_parse("192.0.2.7", &c[2]) == 0 && c[2].bits == 32, "cidr: blocks and a host");
    cidr_format(&c[0], text, sizeof(text));
    ok(strcmp(text, "10.0.0.0/8") == 0, "cidr: printed back (%s)", text);
    ok(cidr_parse("10.0.0.1/8", &c[0]) == -2, "cidr: host bits set past the prefix");
    ok(cidr_parse("10.0.0.0/33", &c[0]) == -1 && cidr_parse("10.0.0.0/", &c[0]) == -1 &&
       cidr_parse("10.0.0.0/08", &c[0]) == -1 && cidr_parse("nope", &c[0]) == -1 &&
       cidr_parse("::/129", &c[0]) == -1, "cidr: refused forms");
    cidr_parse("10.0.0.0/8", &c[0]);
    struct sockaddr_storage in = addr_of("10.200.3.4"), out = addr_of("11.0.0.1");
    struct sockaddr_storage lo6 = addr_of("::1"), other6 = addr_of("::2");
    struct sockaddr_storage mapped = addr_of("::ffff:10.0.0.1");
    ok(cidr_match(c, 3, (struct sockaddr *)&in) && !cidr_match(c, 3, (struct sockaddr *)&out),
       "cidr: IPv4 match");
    ok(cidr_match(c, 3, (struct sockaddr *)&lo6) && !cidr_match(c, 3, (struct sockaddr *)&other6),
       "cidr: IPv6 match");
    ok(!cidr_match(c, 3, (struct sockaddr *)&mapped), "cidr: an IPv6 peer matches IPv6 blocks only");
    ok(cidr_parse("0.0.0.0/0", &c[0]) == 0 && cidr_match(c, 1, (struct sockaddr *)&out),
       "cidr: /0 is everything of its family");
}

static void keys(void)
{
    struct perip_key a = key("2001:db8:1:2::1", 64), b = key("2001:db8:1:2:ffff::9", 64);
    struct perip_key c = key("2001:db8:1:3::1", 64), d = key("2001:db8:1:2::1", 128);
    struct perip_key e = key("192.0.2.1", 64), f = key("::ffff:192.0.2.1", 64);
    ok(memcmp(&a, &b, sizeof(a)) == 0 && memcmp(&a, &c, sizeof(a)) != 0,
       "keys: one /64, one key; the next /64, another");
    ok(memcmp(&a, &d, sizeof(a)) != 0, "keys: /128 keeps every bit");
    ok(memcmp(&e, &f, sizeof(e)) == 0, "keys: IPv4 and IPv4-mapped IPv6 are one client");
    struct sockaddr_storage un = { .ss_family = AF_UNIX };
    ok(perip_key_of((struct sockaddr *)&un, 64, &a) < 0, "keys: a unix peer has none");
}

static void counts_and_rate(void)
{
    struct perip_limits l = { .max_conns = 3 };
    struct perip_key k = key("198.51.100.1", 64);
    uint32_t e[4], retry;
    int counted = 0;
    for (int i = 0; i < 3; i++)
        counted += perip_admit(&k, &l, &e[i], &retry) == PERIP_COUNTED;
    ok(counted == 3 && perip_conns(&k) == 3, "limit 3: three counted");
    ok(perip_admit(&k, &l, &e[3], &retry) == PERIP_TOO_MANY && perip_conns(&k) == 3,
       "limit 3: the fourth is refused and not counted");
    perip_release(e[0]);
    ok(perip_admit(&k, &l, &e[0], &retry) == PERIP_COUNTED, "a release makes room");
    for (int i = 0; i < 3; i++)
        perip_release(e[i]);
    ok(perip_conns(&k) == 0, "all released: 0");

    struct perip_limits r = { .interval_us = 100000, .burst_us = 5 * 100000 }; /* 10/s, burst 5 */
    struct perip_key q = key("198.51.100.2", 64);
    int ok5 = 0;
    for (int i = 0; i < 5; i++)
        ok5 += perip_admit(&q, &r, &e[0], &retry) == PERIP_ADMITTED;
    enum perip_verdict v = perip_admit(&q, &r, &e[0], &retry);
    ok(ok5 == 5 && v == PERIP_TOO_FAST && retry == 1, "rate 10/s burst 5: five, then 429 "
       "with Retry-After 1 (%u)", retry);
    struct timespec ts = { 0, 120 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    ok(perip_admit(&q, &r, &e[0], &retry) == PERIP_ADMITTED, "a token is back after 100 ms");
    ok(perip_admit(&q, &r, &e[0], &retry) == PERIP_TOO_FAST, "and only one");
}

/* More live clients than entries: some admitted uncounted; once they are
 * gone, their entries serve new clients. */
static void room(void)
{
    struct perip_limits l = { .max_conns = 10 };
    static uint32_t e[3000];
    unsigned counted = 0, none = 0;
    uint32_t retry;
    char text[64];
    for (unsigned i = 0; i < 3000; i++) {
        snprintf(text, sizeof(text), "10.%u.%u.1", i / 256, i % 256);
        struct perip_key k = key(text, 64);
        enum perip_verdict v = perip_admit(&k, &l, &e[i], &retry);
        counted += v == PERIP_COUNTED;
        none += v == PERIP_NO_ROOM;
        if (v != PERIP_COUNTED)
            e[i] = PERIP_NONE;
    }
    ok(counted <= perip_entries() && counted + none == 3000 && none >= 3000 - perip_entries(),
       "a full table admits uncounted (%u counted, %u not, %u entries)", counted, none,
       perip_entries());
    for (unsigned i = 0; i < 3000; i++)
        if (e[i] != PERIP_NONE)
            perip_release(e[i]);
    counted = 0;
    for (unsigned i = 0; i < 500; i++) {
        snprintf(text, sizeof(text), "172.16.%u.%u", i / 256, i % 256);
        struct perip_key k = key(text, 64);
        counted += perip_admit(&k, &l, &e[i], &retry) == PERIP_COUNTED;
    }
    ok(counted >= 450, "idle entries are reused (%u of 500 counted)", counted);
    for (unsigned i = 0; i < 500; i++)
        perip_release(e[i]);
}

/* Two worker processes, each its own ledger, count the same client. */
static void across_processes(void)
{
    struct perip_limits l = { .max_conns = 1000000 };
    struct perip_key k = key("203.0.113.50", 64);
    int go[2], done[2];
    pid_t kids[2];
    if (pipe(go) < 0 || pipe(done) < 0)
        abort();
    for (int w = 0; w < 2; w++) {
        struct stats_slot *ss = stats_slot_take(1, (uint32_t)w);
        if ((kids[w] = fork()) == 0) {
            uint32_t e[500], retry;
            char c;
            perip_worker(ss);
            for (int round = 0; round < 20; round++) { /* contention on one bucket */
                for (int i = 0; i < 500; i++)
                    perip_admit(&k, &l, &e[i], &retry);
                for (int i = 0; i < 500; i++)
                    if (round < 19)
                        perip_release(e[i]);
            }
            if (write(done[1], "x", 1) != 1 || read(go[0], &c, 1) != 1)
                _exit(1);
            for (int i = 0; i < 500; i++)
                perip_release(e[i]);
            _exit(0);
        }
        stats_slot_pid(ss, kids[w]);
    }
    char c;
    for (int w = 0; w < 2; w++)
        if (read(done[0], &c, 1) != 1)
            abort();
    ok(perip_conns(&k) == 1000, "two processes hold 500 each: 1000 exactly (%u)",
       perip_conns(&k));
    if (write(go[1], "xx", 2) != 2)
        abort();
    for (int w = 0; w < 2; w++)
        waitpid(kids[w], NULL, 0);
    ok(perip_conns(&k) == 0, "both released: 0 (%u)", perip_conns(&k));
}

/* A worker SIGKILLed holding counts, and one killed at any instant of a
 * busy loop (maybe inside a bucket's lock): the master's reaping puts the
 * counts right and frees the lock. */
static void worker_death(void)
{
    struct perip_limits l = { .max_conns = 1000000 };
    struct perip_key k = key("203.0.113.60", 64), busy = key("203.0.113.61", 64);
    int ready[2];
    if (pipe(ready) < 0)
        abort();
    struct stats_slot *ss = stats_slot_take(1, 5);
    pid_t pid = fork();
    if (pid == 0) {
        uint32_t e, retry;
        perip_worker(ss);
        for (int i = 0; i < 50; i++)
            perip_admit(&k, &l, &e, &retry);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        for (;;) {
            perip_admit(&busy, &l, &e, &retry);
            perip_release(e);
        }
    }
    char c;
    if (read(ready[0], &c, 1) != 1)
        abort();
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    ok(perip_conns(&k) == 50, "the worker holds 50");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    perip_reaped(ss, pid);
    stats_slot_free(ss);
    alarm(10); /* a lock left held would hang what follows */
    ok(perip_conns(&k) == 0 && perip_conns(&busy) == 0, "after its death: released (%u, %u)",
       perip_conns(&k), perip_conns(&busy));
    uint32_t e, retry;
    ok(perip_admit(&busy, &l, &e, &retry) == PERIP_COUNTED, "its bucket's lock is free");
    perip_release(e);
    alarm(0);
}

static void handoff(void)
{
    struct perip_limits l = { .max_conns = 2 };
    struct perip_key k = key("2001:db8:77::1", 64);
    uint32_t e, e2, retry;
    struct perip_key back;
    ok(perip_admit(&k, &l, &e, &retry) == PERIP_COUNTED && perip_key_at(e, &back) == 0 &&
       memcmp(&back, &k, sizeof(k)) == 0, "handoff: the sender finds its entry's key");
    perip_hand_out(e);
    ok(perip_conns(&k) == 1, "handoff: in flight, still counted once");
    ok(perip_hand_in(perip_table() + 1, e, &k) < 0, "handoff: another table's entry is refused");
    ok(perip_hand_in(perip_table(), e, &k) == 0 && perip_conns(&k) == 1,
       "handoff: taken over, not counted twice");
    ok(perip_count(&k, &e2) == 0 && perip_conns(&k) == 2, "counted afresh without a limit");
    perip_release(e);
    perip_release(e2);
    ok(perip_conns(&k) == 0, "handoff: released once each");
}

int main(void)
{
    cidrs();
    keys();
    if (stats_init("/tmp") < 0 || perip_init(1024) < 0) {
        ok(0, "shared segments");
        return tap_done();
    }
    perip_worker(stats_slot_take(1, 0));
    counts_and_rate();
    room();
    across_processes();
    worker_death();
    handoff();
    return tap_done();
}
