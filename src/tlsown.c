#include "tlsown.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "log.h"
#include "mem.h"
#include "sock.h"
#include "stats.h"

/* Input: a batch as big as the socket layer's scratch, after a saved
 * partial record. Output: one send seals at most SEAL_CHUNK bytes (the
 * gather buffer's size), which with its records' overhead and a KeyUpdate
 * (owed, or our own when the key is due) fits TX_SIZE. */
#define RX_SIZE (SOCK_SCRATCH_SIZE + TLSREC_MAX_RECORD)
#define SEAL_CHUNK 65536
#define TX_SIZE (SEAL_CHUNK + (SEAL_CHUNK / TLSREC_MAX_PLAIN + 1) * TLSREC_OVERHEAD + \
                 2 * TLSREC_KEYUPDATE_SIZE)

/* Bytes kept between calls, exact size: from pos to len; for input, the
 * first `plain` of them opened already. */
struct kept {
    uint32_t len, pos, plain;
    uint8_t data[];
};

/* Kept small: it is what an idle wss connection costs beyond a ws one. */
struct tlsown {
    struct tlsrec r;
    struct kept *in;    /* input not yet returned */
    struct kept *out;   /* ciphertext the kernel has not taken */
};

static struct kept *kept_new(size_t n)
{
    struct kept *k = malloc(sizeof(*k) + n);
    if (k == NULL)
        return errno = ENOMEM, NULL;
    k->len = (uint32_t)n;
    k->pos = k->plain = 0;
    return k;
}

static struct {
    int index;
    uint8_t rx[RX_SIZE];
    uint8_t tx[TX_SIZE];
} O = { .index = -1 };

/* ---- Output ------------------------------------------------------------- */

/* p[0..n) to the kernel: the bytes it took, or -1 with errno. */
static ssize_t wire_write(struct sock *s, const uint8_t *p, size_t n)
{
    ssize_t w;
    do {
        w = send(s->io.fd, p, n, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w > 0)
        STATS_ADD(stats_me->c.wire_out, (uint64_t)w);
    return w;
}

/* p[0..n) waits behind what already does. */
static int out_keep(struct tlsown *t, const uint8_t *p, size_t n)
{
    size_t left = t->out ? t->out->len - t->out->pos : 0;
    struct kept *k = kept_new(left + n);
    if (k == NULL)
        return -1;
    if (left > 0)
        memcpy(k->data, t->out->data + t->out->pos, left);
    memcpy(k->data + left, p, n);
    free(t->out);
    t->out = k;
    return 0;
}

/* What waits goes out: 0 once nothing does, else -1 with errno (EAGAIN:
 * some still waits). */
static int push(struct sock *s, struct tlsown *t)
{
    while (t->out != NULL && t->out->pos < t->out->len) {
        ssize_t w = wire_write(s, t->out->data + t->out->pos, t->out->len - t->out->pos);
        if (w < 0)
            return -1;
        t->out->pos += (uint32_t)w;
    }
    free(t->out);
    t->out = NULL;
    return 0;
}

/* Sealed bytes: written now if nothing waits before them, the rest kept.
 * Sealing advanced the sequence number, so they are never dropped. */
static int emit(struct sock *s, struct tlsown *t, const uint8_t *p, size_t n)
{
    ssize_t w = 0;
    if (t->out == NULL && (w = wire_write(s, p, n)) < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        w = 0;
    }
    return (size_t)w == n ? 0 : out_keep(t, p + w, n - (size_t)w);
}

static ssize_t own_send(struct sock *s, const void *buf, size_t len)
{
    struct tlsown *t = s->be_data;
    size_t n = len < SEAL_CHUNK ? len : SEAL_CHUNK, sealed;
    if (t->out != NULL && push(s, t) < 0)
        return -1; /* in order: nothing new before what waits */
    if (tlsrec_seal(&t->r, TLSREC_CT_APPLICATION_DATA, buf, n, O.tx, sizeof(O.tx), &sealed) !=
        TLSREC_OK)
        return errno = EPROTO, -1;
    return emit(s, t, O.tx, sealed) < 0 ? -1 : (ssize_t)n;
}

static int own_flush(struct sock *s)
{
    struct tlsown *t = s->be_data;
    if (t->out == NULL || push(s, t) == 0 || errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
    return -1;
}

/* Our alert, then the end: best effort, the connection is lost anyway. */
static void send_alert(struct sock *s, struct tlsown *t, uint8_t alert)
{
    uint8_t rec[TLSREC_ALERT_SIZE];
    if (tlsrec_seal_alert(&t->r, alert, rec) == TLSREC_OK && emit(s, t, rec, sizeof(rec)) == 0)
        (void)push(s, t);
}

static void own_shutdown(struct sock *s)
{
    struct tlsown *t = s->be_data;
    if (!(t->r.flags & TLSREC_WR_DONE))
        send_alert(s, t, TLSREC_CLOSE_NOTIFY);
}

/* ---- Input -------------------------------------------------------------- */

/* One recv's view of the input: rx[pos..have) not yet opened, plaintext
 * opened but not taken (spill), the caller's buffer filled to got. */
struct rx {
    size_t have, pos;
    const uint8_t *spill;
    size_t spill_len;
    uint8_t *buf;
    size_t len, got;
};

static int refuse(struct sock *s, struct tlsown *t, uint8_t alert)
{
    char peer[64];
    log_info("TLS record from %s refused (alert %u)", sock_peer_name(s, peer, sizeof(peer)),
             alert);
    send_alert(s, t, alert);
    errno = EPROTO;
    return -1;
}

/* A KeyUpdate the client asked for is answered now, even with nothing
 * else to say (RFC 8446 4.6.3). */
static int answer_keyupdate(struct sock *s, struct tlsown *t)
{
    uint8_t rec[TLSREC_KEYUPDATE_SIZE];
    if (tlsrec_seal_keyupdate(&t->r, rec) != TLSREC_OK)
        return errno = EPROTO, -1;
    if (emit(s, t, rec, sizeof(rec)) < 0)
        return -1;
    if (t->out != NULL)
        sock_arm_write(s);
    return 0;
}

/* Opens the whole records in x as long as their plaintext fits: 1 at the
 * client's close_notify, -1 (errno) when the connection is over, else 0. */
static int open_some(struct sock *s, struct tlsown *t, struct rx *x)
{
    while (x->got < x->len) {
        size_t rlen;
        uint8_t alert;
        struct tlsrec_in in;
        int r = tlsrec_peek(O.rx + x->pos, x->have - x->pos, &rlen, &alert);
        if (r == TLSREC_AGAIN)
            return 0;
        if (r != TLSREC_OK)
            return refuse(s, t, alert);
        if (x->got > 0 && x->got + (rlen > TLSREC_OVERHEAD ? rlen - TLSREC_OVERHEAD : 0) > x->len)
            return 0; /* the next call's */
        r = tlsrec_open(&t->r, O.rx + x->pos, rlen, &in);
        x->pos += rlen;
        if (r == TLSREC_KEYUPDATE && answer_keyupdate(s, t) < 0)
            return -1;
        if (r == TLSREC_EOF)
            return 1;
        if (r == TLSREC_ALERT) {
            log_info("TLS alert %u from the client", in.alert);
            return errno = ECONNRESET, -1;
        }
        if (r == TLSREC_ERROR)
            return refuse(s, t, in.alert);
        size_t n = in.len < x->len - x->got ? in.len : x->len - x->got;
        if (n > 0)
            memcpy(x->buf + x->got, in.data, n);
        x->got += n;
        if (n < in.len) {
            x->spill = in.data + n;
            x->spill_len = in.len - n;
            return 0;
        }
    }
    return 0;
}

/* Plaintext kept from last time goes first. */
static void take_plain(struct tlsown *t, struct rx *x)
{
    struct kept *k = t->in;
    size_t n = k == NULL ? 0 : k->plain < x->len ? k->plain : x->len;
    if (n == 0)
        return;
    memcpy(x->buf, k->data + k->pos, n);
    x->got = n;
    k->plain -= (uint32_t)n;
    k->pos += (uint32_t)n;
}

/* Saved ciphertext into rx; the copy goes. */
static void load_saved(struct tlsown *t, struct rx *x)
{
    struct kept *k = t->in;
    x->have = k ? k->len - k->pos : 0;
    if (x->have > 0)
        memcpy(O.rx, k->data + k->pos, x->have);
    free(k);
    t->in = NULL;
}

/* What is left of x, in an exact-size copy. */
static int save(struct tlsown *t, const struct rx *x)
{
    size_t ct = x->have - x->pos, n = x->spill_len + ct;
    if (n == 0)
        return 0;
    struct kept *k = kept_new(n);
    if (k == NULL)
        return -1;
    if (x->spill_len > 0)
        memcpy(k->data, x->spill, x->spill_len);
    if (ct > 0)
        memcpy(k->data + x->spill_len, O.rx + x->pos, ct);
    k->plain = (uint32_t)x->spill_len;
    t->in = k;
    return 0;
}

/* More ciphertext from the kernel: > 0 bytes, 0 at EOF, -1 with errno. */
static ssize_t rx_read(struct sock *s, struct rx *x)
{
    if (x->pos > 0) {
        memmove(O.rx, O.rx + x->pos, x->have - x->pos);
        x->have -= x->pos;
        x->pos = 0;
    }
    size_t room = RX_SIZE - x->have;
    ssize_t n;
    if (room == 0)
        return errno = EAGAIN, -1; /* whole records wait: the caller has no room */
    do {
        n = read(s->io.fd, O.rx + x->have, room);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        x->have += (size_t)n;
        s->be_drained = (size_t)n < room;
        STATS_ADD(stats_me->c.wire_in, (uint64_t)n);
    }
    return n;
}

static ssize_t own_recv(struct sock *s, void *buf, size_t len)
{
    struct tlsown *t = s->be_data;
    struct rx x = { .buf = buf, .len = len };
    ssize_t r = 0;
    if (t->r.flags & (TLSREC_RD_EOF | TLSREC_RD_FAILED))
        return t->r.flags & TLSREC_RD_EOF ? 0 : (errno = ECONNRESET, -1);
    take_plain(t, &x);
    if ((t->in != NULL && t->in->plain > 0) || x.got == len)
        return (ssize_t)x.got;
    load_saved(t, &x);
    for (int fresh = 0;;) {
        if ((r = open_some(s, t, &x)) != 0 || x.got > 0)
            break;
        if (fresh && s->be_drained) {
            errno = EAGAIN;
            r = -1;
            break;
        }
        if ((r = rx_read(s, &x)) <= 0) {
            r = r == 0 ? 1 : -1; /* a FIN without close_notify ends it too */
            break;
        }
        fresh = 1;
    }
    int e = errno;
    if (save(t, &x) < 0)
        return -1;
    errno = e;
    if (x.got > 0)
        return (ssize_t)x.got;
    return r > 0 ? 0 : -1;
}

/* ---- The backend -------------------------------------------------------- */

static int own_wants_write(const struct sock *s)
{
    return ((const struct tlsown *)s->be_data)->out != NULL;
}

static size_t own_pending(const struct sock *s)
{
    const struct kept *k = ((const struct tlsown *)s->be_data)->out;
    return k ? k->len - k->pos : 0;
}

static size_t own_held(const struct sock *s)
{
    const struct tlsown *t = s->be_data;
    return (t->in ? sizeof(*t->in) + t->in->len + MEM_BLOCK_OVERHEAD : 0) +
           (t->out ? sizeof(*t->out) + t->out->len + MEM_BLOCK_OVERHEAD : 0);
}

static int own_handshaken(const struct sock *s)
{
    (void)s;
    return 1;
}

/* The kernel had no more, and nothing kept makes a whole record. */
static int own_drained(const struct sock *s)
{
    const struct tlsown *t = s->be_data;
    const struct kept *k = t->in;
    size_t rlen;
    uint8_t alert;
    return s->be_drained && (k == NULL || (k->plain == 0 &&
           tlsrec_peek(k->data + k->pos, k->len - k->pos, &rlen, &alert) == TLSREC_AGAIN));
}

static void own_free(struct sock *s)
{
    struct tlsown *t = s->be_data;
    if (t == NULL)
        return;
    tlsrec_clear(&t->r);
    free(t->in);
    free(t->out);
    free(t);
    s->be_data = NULL;
}

static const struct sock_backend own_backend = {
    .recv = own_recv, .send = own_send, .shutdown = own_shutdown, .free = own_free,
    .wants_write = own_wants_write, .handshaken = own_handshaken, .drained = own_drained,
    .flush = own_flush, .pending = own_pending, .held = own_held, .conn_bytes = sizeof(struct tlsown) + MEM_BLOCK_OVERHEAD,
};

int tlsown_setup(void)
{
    if (tlsrec_setup() < 0)
        return -1;
    O.index = sock_backend_add(&own_backend);
    return O.index < 0 ? -1 : 0;
}

int tlsown_start(struct sock *s, const struct tlsrec *r)
{
    struct tlsown *t = O.index >= 0 ? calloc(1, sizeof(*t)) : NULL;
    if (t == NULL)
        return -1;
    t->r = *r;
    sock_set_backend(s, O.index, t);
    return 0;
}

int tlsown_is(const struct sock *s)
{
    return O.index >= 0 && s->backend == O.index;
}

int tlsown_export(const struct sock *s, uint8_t blob[TLSOWN_STATE_SIZE])
{
    const struct tlsown *t = s->be_data;
    if (!tlsown_is(s) || t->in != NULL || t->out != NULL ||
        (t->r.flags & (TLSREC_RD_EOF | TLSREC_RD_FAILED | TLSREC_WR_DONE)))
        return -1;
    tlsrec_export(&t->r, blob);
    return 0;
}

int tlsown_import(struct sock *s, const uint8_t *blob, size_t len)
{
    struct tlsrec r;
    if (len != TLSOWN_STATE_SIZE || tlsrec_import(&r, blob) < 0)
        return -1;
    int rc = tlsown_start(s, &r);
    OPENSSL_cleanse(&r, sizeof(r)); /* a copy: its keys live on in the connection */
    return rc;
}
