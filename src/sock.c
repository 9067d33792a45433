#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mem.h"
#include "peer.h"
#include "stats.h"

#define EV_BASE (EPOLLIN | EPOLLRDHUP | EPOLLET)
/* Bytes one run reads before letting other connections have a turn. */
#define RUN_READ_MAX (256u << 10)
/* The gather buffer: every write of a run, sent with one system call. */
#define GATHER_SIZE 65536

/* Output the kernel did not take yet. */
struct sock_out {
    uint32_t len, pos, cap;
    char data[];
};

/* One per worker: only the running socket reads into scratch and gathers
 * into gather, and both are empty between runs. */
static struct {
    struct ev_loop *loop;
    struct ev_ready ready;
    struct sock *running;
    size_t run_read;
    size_t glen;
    char scratch[SOCK_SCRATCH_SIZE];
    char gather[GATHER_SIZE];
} S;

/* ---- Backends ----------------------------------------------------------- */

static ssize_t plain_recv(struct sock *s, void *buf, size_t len)
{
    ssize_t n = read(s->io.fd, buf, len);
    if (n > 0)
        STATS_ADD(stats_me->c.wire_in, (uint64_t)n);
    return n;
}

static ssize_t plain_send(struct sock *s, const void *buf, size_t len)
{
    ssize_t n = send(s->io.fd, buf, len, MSG_NOSIGNAL);
    if (n > 0)
        STATS_ADD(stats_me->c.wire_out, (uint64_t)n);
    return n;
}

static const struct sock_backend plain = {
    .recv = plain_recv, .send = plain_send, .short_read_drains = 1,
};

#define MAX_BACKENDS 4
static const struct sock_backend *backends[MAX_BACKENDS] = { &plain };
static int nbackends = 1;

static const struct sock_backend *be(const struct sock *s)
{
    return backends[s->backend];
}

int sock_handshaken(const struct sock *s)
{
    return be(s)->handshaken == NULL || be(s)->handshaken(s);
}

int sock_backend_add(const struct sock_backend *b)
{
    for (int i = 0; i < nbackends; i++)
        if (backends[i] == b)
            return i;
    if (nbackends == MAX_BACKENDS)
        return -1;
    backends[nbackends] = b;
    return nbackends++;
}


/* ---- Accounting --------------------------------------------------------- */

static size_t held_now(const struct sock *s)
{
    size_t n = be(s)->conn_bytes + (be(s)->held != NULL ? be(s)->held(s) : 0);
    n += s->out ? sizeof(*s->out) + s->out->cap + MEM_BLOCK_OVERHEAD : 0;
    if (s->rbuf != NULL && s->rbuf != S.scratch)
        n += s->rlen + MEM_BLOCK_OVERHEAD;
    return n;
}

/* Inline: it ends every run, and the common case holds nothing. */
static inline void account(struct sock *s)
{
    if (s->held != 0 || s->out != NULL || (s->rbuf != NULL && s->rbuf != S.scratch) ||
        s->backend != 0)
        mem_move(&s->held, held_now(s));
}

void sock_set_backend(struct sock *s, int index, void *data)
{
    s->backend = (uint8_t)index;
    s->be_data = data;
    account(s);
}

/* ---- Lifetime ----------------------------------------------------------- */

static void on_ready(struct ev_loop *loop, struct ev_ready *q, struct list *item)
{
    struct sock *s = list_entry(item, struct sock, ready);
    (void)q;
    s->io.cb(loop, &s->io, 0);
}

void sock_setup(struct ev_loop *loop)
{
    S.loop = loop;
    ev_ready_init(loop, &S.ready, on_ready);
}

int sock_open(struct sock *s, int fd, ev_cb *cb)
{
    memset(s, 0, sizeof(*s));
    s->io.fd = fd;
    s->io.cb = cb;
    list_init(&s->ready);
    return ev_add(S.loop, &s->io, EV_BASE);
}

static void free_buffers(struct sock *s)
{
    list_remove(&s->ready);
    if (s->rbuf != S.scratch)
        free(s->rbuf);
    free(s->out);
    s->rbuf = NULL;
    s->out = NULL;
    s->rpos = s->rlen = 0;
    mem_move(&s->held, 0);
}

void sock_close(struct sock *s)
{
    free_buffers(s);
    if (be(s)->free != NULL)
        be(s)->free(s);
    close(s->io.fd);
}

void sock_release(struct sock *s)
{
    ev_del(S.loop, &s->io);
    sock_close(s);
}

void sock_wake(struct sock *s)
{
    ev_ready_add(&S.ready, &s->ready);
}

int sock_event(struct sock *s, uint32_t events)
{
    if (events & EPOLLERR)
        s->failed = 1;
    if (events & (EPOLLRDHUP | EPOLLHUP))
        s->peer_fin = 1;
    if (!s->failed && (events & EPOLLOUT) &&
        (s->out != NULL || (be(s)->flush != NULL && be(s)->wants_write(s))))
        (void)sock_flush(s);
    return s->failed ? SOCK_ERROR : SOCK_OK;
}

/* ---- Input -------------------------------------------------------------- */

static ssize_t recv_result(struct sock *s, ssize_t n)
{
    if (n > 0)
        return n;
    if (n == 0) {
        s->eof = 1;
        return SOCK_EOF;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return SOCK_AGAIN;
    s->eof = s->failed = 1;
    return SOCK_ERROR;
}

ssize_t sock_recv(struct sock *s, void *buf, size_t len)
{
    ssize_t n;
    do {
        n = be(s)->recv(s, buf, len);
    } while (n < 0 && errno == EINTR);
    return recv_result(s, n);
}

void sock_set_input(struct sock *s, char *buf, size_t len)
{
    if (s->rbuf != S.scratch)
        free(s->rbuf);
    if (len == 0) {
        free(buf);
        buf = NULL;
    }
    s->rbuf = buf;
    s->rpos = 0;
    s->rlen = (uint32_t)len;
    account(s);
}

/* Leftovers move into the scratch buffer (those of a handshake bigger than
 * it are read in place until they fit). */
static void to_scratch(struct sock *s)
{
    size_t n = sock_avail(s);
    if (s->rbuf != NULL && s->rbuf != S.scratch && n <= SOCK_SCRATCH_SIZE) {
        memcpy(S.scratch, s->rbuf + s->rpos, n);
        free(s->rbuf);
        s->rbuf = S.scratch;
        s->rpos = 0;
        s->rlen = (uint32_t)n;
    }
}

void sock_begin(struct sock *s)
{
    S.running = s;
    S.run_read = 0;
    s->drained = 0;
    /* A backend's short read is news only within the run that made it:
     * edges that came after it may have been taken by a run that read
     * nothing (ws.c when output blocks it), and a read that TLS serves
     * from its buffer alone would pass the stale one on, ending the run
     * with the kernel's bytes unread and no edge left to bring it back. */
    s->be_drained = 0;
    to_scratch(s);
}

ssize_t sock_fill(struct sock *s)
{
    /* After a short read new bytes raise a new edge, but a FIN that came
     * with the last bytes raises none: read on to see it. */
    if ((s->drained && !s->peer_fin) || s->eof)
        return s->eof ? SOCK_EOF : SOCK_AGAIN;
    if (S.run_read >= RUN_READ_MAX) {
        sock_wake(s);
        return SOCK_AGAIN;
    }
    if (s->rbuf == NULL)
        s->rbuf = S.scratch;
    to_scratch(s);
    if (s->rbuf != S.scratch)
        return SOCK_AGAIN; /* big leftovers: processed before anything new */
    if (s->rpos > 0) {
        memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
        s->rlen -= s->rpos;
        s->rpos = 0;
    }
    size_t room = SOCK_SCRATCH_SIZE - s->rlen;
    if (room == 0)
        return SOCK_AGAIN;
    ssize_t n = sock_recv(s, s->rbuf + s->rlen, room);
    if (n > 0) {
        s->rlen += (uint32_t)n;
        S.run_read += (size_t)n;
        /* Skip the read that would say EAGAIN. */
        s->drained = be(s)->short_read_drains ? (size_t)n < room
                   : be(s)->drained != NULL && be(s)->drained(s);
    }
    return n;
}

/* Keeps what was read but not processed in an exact-size copy. */
static void keep_input(struct sock *s)
{
    if (s->rbuf != S.scratch)
        return;
    size_t n = sock_avail(s);
    char *keep = n ? malloc(n) : NULL;
    if (n && keep == NULL)
        s->failed = 1;
    else if (n)
        memcpy(keep, S.scratch + s->rpos, n);
    s->rbuf = keep;
    s->rpos = 0;
    s->rlen = keep ? (uint32_t)n : 0;
}

int sock_end(struct sock *s)
{
    int r = sock_flush(s);
    S.running = NULL;
    keep_input(s);
    account(s);
    return s->failed ? SOCK_ERROR : r;
}

/* ---- Output ------------------------------------------------------------- */

static int out_append(struct sock *s, const char *data, size_t len)
{
    struct sock_out *o = s->out;
    size_t used = o ? o->len - o->pos : 0;
    if (o != NULL && o->len + len > o->cap && o->pos > 0) {
        /* What was sent makes room before the block grows. */
        memmove(o->data, o->data + o->pos, used);
        o->len = (uint32_t)used;
        o->pos = 0;
    }
    if (o == NULL || used + len > o->cap) {
        size_t cap = o ? (size_t)o->cap * 2 : 0;
        cap = cap < used + len ? used + len : cap;
        if (cap > UINT32_MAX || (o = realloc(o, sizeof(*o) + cap)) == NULL) {
            s->failed = 1;
            return SOCK_ERROR;
        }
        if (s->out == NULL)
            o->len = o->pos = 0;
        o->cap = (uint32_t)cap;
        s->out = o;
    }
    memcpy(o->data + o->len, data, len);
    o->len += (uint32_t)len;
    return SOCK_OK;
}

/* Sends buf[0..len); returns how much the kernel took, or SOCK_ERROR. */
static ssize_t send_some(struct sock *s, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = be(s)->send(s, buf + off, len - off);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        else
            return s->failed = 1, SOCK_ERROR;
    }
    return (ssize_t)off;
}

/* The gather buffer goes out; what the kernel leaves joins the queue. */
static int gather_flush(struct sock *s)
{
    ssize_t n = send_some(s, S.gather, S.glen);
    size_t left = n < 0 ? 0 : S.glen - (size_t)n;
    int r = n < 0 ? SOCK_ERROR : left ? out_append(s, S.gather + n, left) : SOCK_OK;
    S.glen = 0;
    return r;
}

/* a[0..alen) then b[0..blen) (a frame's header and payload) behind
 * everything queued: into the gather buffer while s runs and nothing older
 * waits, else into its queue, waking s if it is not running. Inline into
 * both entry points: every frame comes here. */
static inline int write_bytes(struct sock *s, const void *a, size_t alen,
                              const void *b, size_t blen)
{
    size_t len = alen + blen;
    if (s->failed)
        return SOCK_ERROR;
    if (len == 0)
        return SOCK_OK; /* nothing to copy (the pointers may be NULL) */
    if (s == S.running && s->out == NULL) {
        if (S.glen + len > GATHER_SIZE && S.glen > 0 && gather_flush(s) < 0)
            return SOCK_ERROR;
        if (s->out == NULL && S.glen + len <= GATHER_SIZE) {
            if (alen > 0)
                memcpy(S.gather + S.glen, a, alen);
            if (blen > 0)
                memcpy(S.gather + S.glen + alen, b, blen);
            S.glen += len;
            return SOCK_OK;
        }
    }
    if ((alen > 0 && out_append(s, a, alen) < 0) || (blen > 0 && out_append(s, b, blen) < 0))
        return SOCK_ERROR;
    if (s != S.running)
        sock_wake(s);
    account(s);
    return SOCK_OK;
}

int sock_write(struct sock *s, const void *data, size_t len)
{
    return write_bytes(s, data, len, NULL, 0);
}

int sock_sink(void *arg, const void *a, size_t alen, const void *b, size_t blen)
{
    return write_bytes(arg, a, alen, b, blen) == SOCK_OK ? 0 : -1;
}

static int want_write(struct sock *s, int on)
{
    on = on || (be(s)->wants_write != NULL && be(s)->wants_write(s));
    /* Most flushes leave the interest as it was: no call at all then. */
    if (((s->io.events & EPOLLOUT) != 0) != on &&
        ev_mod(S.loop, &s->io, EV_BASE | (on ? EPOLLOUT : 0)) < 0)
        s->failed = 1;
    return s->failed ? SOCK_ERROR : on ? SOCK_AGAIN : SOCK_OK;
}

int sock_flush(struct sock *s)
{
    struct sock_out *o = s->out;
    if (s->failed || (be(s)->flush != NULL && be(s)->flush(s) < 0))
        return s->failed = 1, SOCK_ERROR;
    if (o != NULL) {
        ssize_t n = send_some(s, o->data + o->pos, o->len - o->pos);
        if (n < 0)
            return SOCK_ERROR;
        o->pos += (uint32_t)n;
        if (o->pos < o->len) {
            account(s);
            return want_write(s, 1);
        }
        free(o);
        s->out = NULL;
    }
    if (s == S.running && S.glen > 0 && gather_flush(s) < 0)
        return SOCK_ERROR;
    account(s);
    return want_write(s, s->out != NULL);
}

size_t sock_pending(const struct sock *s)
{
    size_t n = s->out ? s->out->len - s->out->pos : 0;
    if (be(s)->pending != NULL)
        n += be(s)->pending(s);
    return n + (s == S.running ? S.glen : 0);
}

/* ---- Closing ------------------------------------------------------------ */

void sock_shutdown_write(struct sock *s)
{
    if (!s->shut_wr) {
        if (be(s)->shutdown != NULL)
            be(s)->shutdown(s);
        shutdown(s->io.fd, SHUT_WR);
    }
    s->shut_wr = 1;
}

void sock_reset_on_close(struct sock *s)
{
    struct linger lg = { 1, 0 };
    setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

const char *sock_peer_name(const struct sock *s, char *buf, size_t len)
{
    return peer_name(s->io.fd, buf, len); /* a PROXY header's client, or the socket's peer */
}

void sock_arm_write(struct sock *s)
{
    (void)want_write(s, 1);
}
