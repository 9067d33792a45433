/* The socket layer: one client connection's descriptor and everything
 * between it and the protocol code above (HTTP in conn.c, WebSocket in
 * ws.c), which never touch the descriptor themselves.
 *
 * - Input: during a run (sock_begin .. sock_end) bytes are read into the
 *   worker's scratch buffer; what the protocol leaves unprocessed is kept
 *   between runs in an exact-size copy, so an idle socket holds no buffer.
 * - Output: one ordered queue for everything sent to the peer (HTTP
 *   responses and frames alike). During a run, writes gather in a
 *   per-worker buffer that leaves with one system call; what the kernel
 *   does not take waits in the socket's own queue, with EPOLLOUT armed
 *   until it is gone. Output for a socket that is not running (a module
 *   sending to another connection, a timer) is queued and wakes it.
 * - EINTR and EAGAIN, the peer's FIN (RDHUP, which comes with no new edge
 *   after a short read), EOF and socket errors end here.
 * - Wake: sock_wake puts the socket on the loop's ready queue; its owner's
 *   event callback then runs with events 0 before the loop waits again.
 * - Every byte goes through the socket's backend (plain sockets today; TLS
 *   plugs in underneath without the protocol code knowing).
 * What a socket holds is counted in the worker's budget (mem.h).
 *
 * Return values: a byte count, or SOCK_OK / SOCK_AGAIN (would block; for
 * output: the rest waits, EPOLLOUT is armed) / SOCK_EOF / SOCK_ERROR. */
#ifndef WSECHOD_SOCK_H
#define WSECHOD_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ev.h"
#include "list.h"

enum { SOCK_OK = 0, SOCK_ERROR = -1, SOCK_AGAIN = -2, SOCK_EOF = -3 };

/* Read buffer of a run: a 16 KiB message's frame arrives, and is echoed,
 * in one read. */
#define SOCK_SCRATCH_SIZE 65536

struct sock;

/* How bytes reach the kernel: plain read/send, or a TLS library. */
struct sock_backend {
    /* > 0 bytes, 0 at EOF, -1 with errno (EAGAIN: nothing now). */
    ssize_t (*recv)(struct sock *s, void *buf, size_t len);
    ssize_t (*send)(struct sock *s, const void *buf, size_t len);
    void (*shutdown)(struct sock *s);   /* optional: before our FIN */
    void (*free)(struct sock *s);       /* optional: at close */
    /* Optional: the backend itself waits to write (a handshake flight the
     * kernel did not take), so EPOLLOUT stays armed with no output queued. */
    int (*wants_write)(const struct sock *s);
    /* Optional: 0 until the backend's own handshake is done (before it,
     * nothing can be said to the peer in HTTP). */
    int (*handshaken)(const struct sock *s);
    /* Optional, for backends whose reads are not the kernel's: after a
     * read, whether the kernel had no more and the backend holds nothing. */
    int (*drained)(const struct sock *s);
    /* Optional, for backends that keep bytes of their own to write (a
     * record the kernel took part of): pushes them, before anything queued
     * here. 0 (pushed, or still waiting: wants_write says), -1 failed. */
    int (*flush)(struct sock *s);
    /* Optional, with flush: the bytes it keeps (counted in sock_pending, so
     * that nothing closes the socket before they are out). */
    size_t (*pending)(const struct sock *s);
    /* Optional: what the backend holds now beyond conn_bytes (its buffers),
     * counted in mem.h with the socket's own at the end of every run. */
    size_t (*held)(const struct sock *s);
    /* What one connection of this backend holds besides our buffers
     * (measured), counted in mem.h like them. */
    size_t conn_bytes;
    /* A read shorter than asked means the kernel had no more (not so for
     * TLS, which returns a record at a time). */
    unsigned short_read_drains : 1;
};

struct sock_out;

/* Kept small: it is most of what an idle connection costs. */
struct sock {
    struct ev_io io;            /* the descriptor and its owner's callback */
    struct list ready;          /* in the worker's ready queue: woken */
    struct sock_out *out;       /* output the kernel has not taken, in order */
    char *rbuf;                 /* input not yet processed */
    uint32_t rpos, rlen;
    uint32_t held;              /* bytes counted in mem.h */
    uint8_t backend;            /* index into the backends (sock.c) */
    void *be_data;              /* the backend's (an SSL object) */
    uint8_t eof : 1;            /* the peer ended its side */
    uint8_t peer_fin : 1;       /* epoll saw the FIN: read on to EOF */
    uint8_t drained : 1;        /* a short read emptied the socket this run */
    uint8_t failed : 1;         /* an error, or out of memory: drop it */
    uint8_t shut_wr : 1;        /* our FIN is sent */
    uint8_t be_drained : 1;     /* the backend's: its last kernel read was short */
    uint8_t be_mark : 1;        /* the backend's: its handshake was counted */
    uint8_t be_busy : 1;        /* the backend's: a write it must finish */
    uint8_t be_final : 1;       /* the backend's: it stays (no record layer of ours) */
};

/* Once per worker, before any socket. */
void sock_setup(struct ev_loop *loop);
/* Registers a backend (at most 4); its index, or -1. */
int  sock_backend_add(const struct sock_backend *be);
/* s (just opened, nothing read or written yet) goes through backend
 * index, with data for it. */
void sock_set_backend(struct sock *s, int index, void *data);
/* For a backend that must write while reading (a handshake): EPOLLOUT is
 * armed, and the owner runs again when the socket can take more. */
void sock_arm_write(struct sock *s);
/* Takes fd (non-blocking) and registers it; cb gets s->io back. -1 on
 * failure (fd stays the caller's). */
int  sock_open(struct sock *s, int fd, ev_cb *cb);
/* Deregisters, frees the buffers and closes the descriptor. */
void sock_close(struct sock *s);
/* The socket lives on in another process: the same, but epoll must be told
 * explicitly (the open file outlives our descriptor). */
void sock_release(struct sock *s);
/* The socket's part of an event: a FIN is noted, an error fails it, and on
 * EPOLLOUT the queue is written. SOCK_ERROR if it failed. */
int  sock_event(struct sock *s, uint32_t events);

/* Reads into buf, outside runs (the HTTP request, lingering). */
ssize_t sock_recv(struct sock *s, void *buf, size_t len);
/* Takes ownership of buf[0..len) (malloc'd): input that arrived before
 * this layer saw the socket (behind the handshake, or with a handoff). */
void sock_set_input(struct sock *s, char *buf, size_t len);

void sock_begin(struct sock *s);
/* Reads more input behind what is there. Bytes read, or SOCK_AGAIN (none
 * now; or this run had its share, and s is woken to go on), SOCK_EOF,
 * SOCK_ERROR. */
ssize_t sock_fill(struct sock *s);
/* Sends what gathered and keeps unprocessed input. SOCK_OK, SOCK_AGAIN or
 * SOCK_ERROR, as sock_flush. */
int  sock_end(struct sock *s);

/* Whether the peer can be answered yet (a TLS handshake is done). */
int  sock_handshaken(const struct sock *s);
/* Whether bytes go to the kernel as they are (no TLS). */
static inline int sock_plain(const struct sock *s) { return s->backend == 0; }
static inline size_t sock_avail(const struct sock *s) { return s->rlen - s->rpos; }
static inline uint8_t *sock_input(const struct sock *s)
{
    return s->rbuf ? (uint8_t *)s->rbuf + s->rpos : NULL; /* NULL: no input held */
}
static inline void sock_consume(struct sock *s, size_t n) { s->rpos += (uint32_t)n; }

/* Queues a copy of data[0..len) behind everything before it. SOCK_OK, or
 * SOCK_ERROR when out of memory (s is failed). */
int  sock_write(struct sock *s, const void *data, size_t len);
/* Writes the queue. SOCK_OK: nothing left; SOCK_AGAIN: the rest waits for
 * EPOLLOUT; SOCK_ERROR. */
int  sock_flush(struct sock *s);
/* Output queued and not yet taken by the kernel. */
size_t sock_pending(const struct sock *s);
/* Bytes s holds beyond its own struct (as counted in mem.h). */
static inline size_t sock_held(const struct sock *s) { return s->held; }
void sock_wake(struct sock *s);
/* sock_write of a then b, as a frame.h sink (arg is the socket). */
int  sock_sink(void *s, const void *a, size_t alen, const void *b, size_t blen);

/* FIN after the output (lingering close). */
void sock_shutdown_write(struct sock *s);
/* Closing will send RST and drop what the kernel still holds. */
void sock_reset_on_close(struct sock *s);
/* "1.2.3.4:5", "[::1]:5" or "unix...", for logs: the client a PROXY
 * header named, if any (peer.h). */
const char *sock_peer_name(const struct sock *s, char *buf, size_t len);

#endif
