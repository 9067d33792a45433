#define _GNU_SOURCE
#include "thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "handshake.h"
#include "options.h"
#include "payload.h"
#include "run.h"
#include "tls.h"
#include "util.h"

#define MAX_EVENTS 1024
#define SCAN_NS 200000000u /* timeout scan period */

/* Workers count in plain st[] (no atomics on the hot path) and copy them
 * out here for the main thread's progress and phase conditions. */
static void publish(struct thr *t)
{
    for (int i = 0; i < ST_N; i++)
        atomic_store_explicit(&t->pub[i], t->st[i], memory_order_relaxed);
}

uint64_t total(enum counter s)
{
    uint64_t v = 0;
    for (int i = 0; i < O.threads; i++)
        v += atomic_load_explicit(&thr[i].pub[s], memory_order_relaxed);
    return v;
}

/* Each window (--rounds) is measured on its own. */
static void start_echo(struct thr *t, uint64_t now)
{
    t->st[ST_MSGS_WIN] = t->st[ST_BYTES_WIN] = 0;
    memset(t->hist, 0, sizeof t->hist);
    t->hist_n = 0;
    for (int i = 0; i < t->nconns; i++)
        fill_and_send(&t->conns[i], UINT64_MAX, now);
}

/* Every stride-th connection by id: about O.poke of them, spread over all
 * workers and over the order connections were opened in. */
static void poke(struct thr *t, uint64_t now)
{
    long stride = O.poke == 0 ? 0 : (O.poke < 0 || O.poke >= O.conns) ? 1 : O.conns / O.poke;
    for (int i = 0; stride && i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (c->state == C_OPEN && c->id % (uint32_t)stride == 0) {
            c->poke = 1;
            t->st[ST_POKE_SENT]++;
            fill_and_send(c, 1, now);
        }
    }
}

static void close_all(struct thr *t)
{
    uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (c->state != C_OPEN)
            continue;
        c->state = C_CLOSING;
        send_ctrl(c, 8, code, 2);
    }
}

static void on_phase(struct thr *t, int ph, uint64_t now)
{
    if (ph == P_RUN && O.mode == M_ECHO)
        start_echo(t, now);
    if (ph == P_POKE)
        poke(t, now);
    if (ph == P_CLOSE)
        close_all(t);
    /* Publish before acking, so the main thread sees this phase's effects
     * (pokes sent, connections closing) once it sees the ack. */
    publish(t);
    atomic_store(&t->ack, ph);
}

/* At most max_pending connects+handshakes in progress (split over the
 * workers): a burst of thousands of SYNs overflows the server's backlog. */
static void start_connects(struct thr *t, int ph, uint64_t now)
{
    int may_connect = (ph == P_CONNECT && O.mode != M_CONNRATE) ||
                      (ph == P_RUN && O.mode == M_CONNRATE);
    int cap = O.max_pending / O.threads > 0 ? O.max_pending / O.threads : 1;
    while (may_connect && t->pending < cap && t->next_connect < t->nconns) {
        struct conn *c = &t->conns[t->next_connect++];
        conn_start(c, now);
    }
}

/* The source address and what was still unsent tell a full accept queue
 * or listen backlog from a server that accepted and then stalled. */
static void hs_timed_out(struct conn *c)
{
    struct sockaddr_in la = {0};
    socklen_t ll = sizeof la;
    getsockname(c->fd, (struct sockaddr *)&la, &ll);
    char why[160], ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &la.sin_addr, ip, sizeof ip);
    if (c->state == C_TLS)
        snprintf(why, sizeof why, "TLS handshake not done within %.1f s (from %s:%u)", O.hs_timeout, ip,
                 ntohs(la.sin_port));
    else
        snprintf(why, sizeof why, "no complete response within %.1f s (from %s:%u, %u request "
                 "bytes unsent, %u response bytes)", O.hs_timeout, ip, ntohs(la.sin_port),
                 c->out_len - c->out_off, c->hs ? c->hs->len : 0);
    hs_fail(c, why, 0);
}

static void scan_timeouts(struct thr *t, uint64_t now)
{
    uint64_t hs_to = (uint64_t)(O.hs_timeout * 1e9);
    for (int i = 0; i < t->nconns && t->pending > 0; i++) {
        struct conn *c = &t->conns[i];
        if ((c->state != C_CONNECTING && c->state != C_TLS && c->state != C_HANDSHAKE) ||
            now - c->t_start <= hs_to)
            continue;
        if (c->state == C_CONNECTING) {
            t->st[ST_E_CONNECT]++;
            t->st[ST_SETTLED]++;
            elog(ST_E_CONNECT, "conn %u: connect timed out", c->id);
            conn_kill(c);
        } else {
            hs_timed_out(c);
        }
    }
}

/* connrate: a slot whose connection failed is started again, so the
 * concurrency stays at -c even when the server refuses some. */
static void restart_slots(struct thr *t, uint64_t now)
{
    for (int i = 0; i < t->next_connect; i++)
        if (t->conns[i].state == C_DEAD || t->conns[i].state == C_IDLE)
            conn_start(&t->conns[i], now);
}

static void thread_release(struct thr *t)
{
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (c->state == C_CLOSING)
            t->st[ST_CLOSE_NOREPLY]++;
        if (c->fd >= 0)
            conn_kill(c);
        free(c->out);
        free(c->ts);
        c->out = NULL;
        c->ts = NULL;
    }
    tls_session_free(t->sess);
    t->sess = NULL;
    publish(t);
}

static void *thread_main(void *arg)
{
    struct thr *t = arg;
    struct epoll_event evs[MAX_EVENTS];
    int last_phase = -1;
    uint64_t last_scan = 0;
    for (;;) {
        int ph = atomic_load(&g_phase);
        uint64_t now = now_ns();
        if (ph != last_phase) {
            last_phase = ph;
            if (ph == P_EXIT)
                break;
            on_phase(t, ph, now);
        }
        start_connects(t, ph, now);
        /* A new phase wakes the worker (threads_wake); while connecting it
         * also looks every 10 ms (timeouts, pacing), an idle-mode worker done
         * connecting only every second: its wake-ups would otherwise be the
         * load a million idle connections put on the machine. */
        int held = O.mode == M_IDLE && t->pending == 0 && t->next_connect >= t->nconns;
        int n = epoll_wait(t->ep, evs, MAX_EVENTS, held ? 1000 : 10);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                (void)!read(t->wake, &v, sizeof v);
                continue;
            }
            conn_on_event(evs[i].data.ptr, evs[i].events);
        }
        now = now_ns();
        if (now - last_scan > SCAN_NS) {
            last_scan = now;
            scan_timeouts(t, now);
            if (O.mode == M_CONNRATE && ph == P_RUN)
                restart_slots(t, now);
        }
        publish(t);
    }
    thread_release(t);
    return NULL;
}

/* Connection ids interleave over workers (id = k * threads + i), so that
 * --sources and --poke spread evenly over them. */
static void thread_init(struct thr *t, int i, uint64_t seed)
{
    t->id = i;
    atomic_store(&t->ack, -1);
    t->rng = seed + (uint64_t)i * 0x1234567ull;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    t->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event we = {.events = EPOLLIN, .data.ptr = NULL};
    if (t->ep < 0 || t->wake < 0 || epoll_ctl(t->ep, EPOLL_CTL_ADD, t->wake, &we) < 0)
        die("epoll/eventfd: %s", strerror(errno));
    t->nconns = O.conns / O.threads + (i < O.conns % O.threads);
    t->conns = calloc((size_t)t->nconns, sizeof *t->conns);
    t->rbuf = malloc(RBUF_SIZE);
    t->pat = malloc(payload_pattern_len());
    if (!t->conns || !t->rbuf || !t->pat)
        die("out of memory");
    payload_pattern(t->pat, seed);
    for (int k = 0; k < t->nconns; k++) {
        struct conn *c = &t->conns[k];
        c->fd = -1;
        c->t = t;
        c->id = (uint32_t)(k * O.threads + i);
        c->ts = malloc(sizeof *c->ts * (size_t)O.inflight);
        if (!c->ts)
            die("out of memory");
    }
}

void threads_init(void)
{
    uint64_t seed = random_seed();
    for (int i = 0; i < O.threads; i++)
        thread_init(&thr[i], i, seed);
}

void threads_start(void)
{
    for (int i = 0; i < O.threads; i++)
        if (pthread_create(&thr[i].tid, NULL, thread_main, &thr[i]))
            die("pthread_create failed");
}

void threads_join(void)
{
    for (int i = 0; i < O.threads; i++)
        pthread_join(thr[i].tid, NULL);
}

void threads_sum(uint64_t s[ST_N], uint64_t *hist, uint64_t *hist_n)
{
    for (int i = 0; i < O.threads; i++) {
        for (int k = 0; k < ST_N; k++)
            s[k] += thr[i].st[k];
        for (unsigned b = 0; b < HBUCKETS; b++)
            hist[b] += thr[i].hist[b];
        *hist_n += thr[i].hist_n;
    }
}

void threads_wake(void)
{
    uint64_t one = 1;
    for (int i = 0; i < O.threads; i++)
        (void)!write(thr[i].wake, &one, sizeof one);
}

void threads_free(void)
{
    for (int i = 0; i < O.threads; i++) {
        close(thr[i].ep);
        close(thr[i].wake);
        free(thr[i].conns);
        free(thr[i].rbuf);
        free(thr[i].pat);
    }
}
