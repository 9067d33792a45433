/*
 * run — the state a run's threads share: the phase, the measurement window,
 * and the records of each worker and of its connections. The lowest layer
 * of the worker side: thread, conn and inbound all read it, and it calls
 * none of them, so the per-message code reaches it without a call.
 *
 * Contract:
 *   g_phase      set only by the main thread (see modes.h); each worker
 *                acts on a new phase once, then stores it in its ack.
 *   g_win_*      the measurement window (monotonic ns); in_window() says
 *                whether an event at t counts towards the results.
 *   thr[]        one record per worker (O.threads used); a worker's st[],
 *                hist[] and connections are written only by that worker,
 *                pub[] and ack are what other threads may read.
 *   struct conn  one connection's state: its lifecycle and send side are
 *                conn.h's, the frame parser fields (in_payload .. ctrl)
 *                inbound.h's; no other module writes them. ssl is NULL on
 *                a ws:// connection, which is all the plain path tests.
 *   thr.sess     wss --tls-resume: the session the worker's next connection
 *                offers (the latest one taken); conn.c's.
 */
#ifndef WSBENCH_RUN_H
#define WSBENCH_RUN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "options.h"
#include "stats.h"

#define RBUF_SIZE (256u << 10) /* per-thread read buffer */

/* P_PAUSE: echo --rounds, between two windows: connections open, quiet. */
enum phase { P_CONNECT, P_RUN, P_POKE, P_DRAIN, P_CLOSE, P_EXIT, P_PAUSE };

/* C_TLS (wss: TLS handshake, between C_CONNECTING and C_HANDSHAKE) comes
 * last so that the numbers in log lines keep their meaning. */
enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DEAD, C_TLS };

struct hsbuf;
struct ssl_st;         /* tls.h */
struct ssl_session_st; /* tls.h */

struct conn {
    int fd;
    uint8_t state;
    uint8_t in_payload, f_op, f_fin, msg_op, fh_have, fh_need, ctrl_len;
    uint8_t poke;
    uint8_t sess_taken; /* --tls-resume: this connection's session is kept */
    uint32_t id;
    struct thr *t;
    uint64_t send_seq, recv_seq;
    uint32_t inflight;
    uint32_t out_len, out_off, out_cap;
    uint8_t *out;
    uint64_t *ts; /* send timestamps, ring of O.inflight */
    struct hsbuf *hs;
    struct ssl_st *ssl; /* wss:// only */
    uint64_t t_start; /* connect start */
    uint64_t f_len, f_off, msg_off;
    uint8_t fh[14];
    uint8_t ctrl[125];
    uint8_t msg_z;              /* --deflate: the message coming in is compressed */
    uint8_t *zbuf;              /* its bytes so far (zlen of zcap) */
    uint32_t zlen, zcap;
};

struct thr {
    int id, ep;
    int wake; /* eventfd: a new phase (threads_wake) */
    pthread_t tid;
    struct conn *conns;
    int nconns, next_connect, pending;
    uint8_t *rbuf, *pat;
    uint64_t rng;
    struct ssl_session_st *sess;
    uint64_t st[ST_N];
    _Atomic uint64_t pub[ST_N];
    uint64_t hist[HBUCKETS];
    uint64_t hist_n;
    atomic_int ack; /* last phase this thread has acted on */
};

extern struct thr thr[MAX_THREADS];
extern atomic_int g_phase;
extern _Atomic uint64_t g_win_start, g_win_end;

/* Inline: asked once per echoed message. A start of 0 means "not yet". */
static inline int in_window(uint64_t t)
{
    uint64_t s = atomic_load_explicit(&g_win_start, memory_order_relaxed);
    return s != 0 && t >= s && t < atomic_load_explicit(&g_win_end, memory_order_relaxed);
}

#endif
