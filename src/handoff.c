#include "handoff.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HANDOFF_MAGIC 0x57534834u /* "WSH4": with typed sections */
/* The formats before are still read, so that a binary upgrade from those
 * versions hands its connections over too: "WSH3" (no sections), "WSH2"
 * (no age: it starts again) and "WSH1" (no module state either). */
#define HANDOFF_MAGIC_V3 0x57534833u
#define HANDOFF_MAGIC_V2 0x57534832u
#define HANDOFF_MAGIC_V1 0x57534831u

struct wire {
    uint32_t magic, silent_ms, path_len, pending_len, state_len;
    uint32_t started, tally_len, flags;  /* v3; flags: permessage-deflate (pmd_params_pack) */
    uint32_t secs_len;                   /* v4: sections, each type, length, bytes */
};

/* Checks the header of a received message of n bytes into *w (older
 * headers are shorter); its length, or 0 if the message is malformed. */
static size_t wire_check(const char *buf, size_t n, struct wire *w)
{
    size_t hlen = sizeof(*w);
    memset(w, 0, sizeof(*w));
    memcpy(w, buf, n < sizeof(*w) ? n : sizeof(*w));
    if (w->magic == HANDOFF_MAGIC_V3) {
        hlen = offsetof(struct wire, secs_len);
        w->secs_len = 0;
    } else if (w->magic == HANDOFF_MAGIC_V1 || w->magic == HANDOFF_MAGIC_V2) {
        hlen = offsetof(struct wire, started) -
               (w->magic == HANDOFF_MAGIC_V1 ? sizeof(w->state_len) : 0);
        w->started = w->tally_len = w->flags = w->secs_len = 0;
        if (w->magic == HANDOFF_MAGIC_V1)
            w->state_len = 0;
    } else if (w->magic != HANDOFF_MAGIC) {
        return 0;
    }
    if (n < hlen || w->path_len > HANDOFF_PATH_MAX || w->pending_len > HANDOFF_PENDING_MAX ||
        w->state_len > HANDOFF_STATE_MAX || w->tally_len > HANDOFF_TALLY_MAX ||
        w->secs_len > HANDOFF_SECS_MAX ||
        n != hlen + w->path_len + w->pending_len + w->state_len + w->tally_len + w->secs_len)
        return 0;
    return hlen;
}

/* Inbox sockets queue many connections; a 64 KiB message must still fit. */
#define INBOX_SNDBUF (1 << 20)

int handoff_pair(int sv[2])
{
    int size = INBOX_SNDBUF;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    /* Best effort: the default still carries every message, just fewer at once. */
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    return 0;
}

/* Each section's head on the wire: its type and length, then its bytes. */
struct sec_head {
    uint32_t type, len;
};

int handoff_send(int sock, const struct handoff_conn *hc)
{
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    struct sec_head heads[HANDOFF_SECS];
    struct iovec iov[5 + 2 * HANDOFF_SECS];
    size_t secs_len = 0, k = 5;
    for (size_t i = 0; i < hc->nsec && i < HANDOFF_SECS; i++) {
        heads[i] = (struct sec_head){ hc->sec[i].type, (uint32_t)hc->sec[i].len };
        iov[k++] = (struct iovec){ &heads[i], sizeof(heads[i]) };
        iov[k++] = (struct iovec){ (void *)hc->sec[i].p, hc->sec[i].len };
        secs_len += sizeof(heads[i]) + hc->sec[i].len;
    }
    struct wire w = { HANDOFF_MAGIC, hc->silent_ms, (uint32_t)hc->path_len,
                      (uint32_t)hc->pending_len, (uint32_t)hc->state_len, hc->started,
                      (uint32_t)hc->tally_len, hc->pmd, (uint32_t)secs_len };
    iov[0] = (struct iovec){ &w, sizeof(w) };
    iov[1] = (struct iovec){ (void *)hc->path, hc->path_len };
    iov[2] = (struct iovec){ (void *)hc->pending, hc->pending_len };
    iov[3] = (struct iovec){ (void *)hc->state, hc->state_len };
    iov[4] = (struct iovec){ (void *)hc->tally, hc->tally_len };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = k,
                          .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
    if (hc->path_len > HANDOFF_PATH_MAX || hc->pending_len > HANDOFF_PENDING_MAX ||
        hc->state_len > HANDOFF_STATE_MAX || hc->tally_len > HANDOFF_TALLY_MAX ||
        hc->nsec > HANDOFF_SECS || secs_len > HANDOFF_SECS_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    memset(&ctl, 0, sizeof(ctl));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &hc->fd, sizeof(int));
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0;
}

/* The sections of a received message into hc; -1 if they are malformed
 * or of a type this build does not know. */
static int sections(const char *p, size_t n, struct handoff_conn *hc)
{
    hc->nsec = 0;
    while (n > 0) {
        struct sec_head h;
        if (n < sizeof(h) || hc->nsec == HANDOFF_SECS)
            return -1;
        memcpy(&h, p, sizeof(h));
        if ((h.type != HANDOFF_SEC_PMD && h.type != HANDOFF_SEC_TLS && h.type != HANDOFF_SEC_PEER) ||
            h.len > n - sizeof(h))
            return -1;
        hc->sec[hc->nsec++] = (struct handoff_section){ h.type, (const uint8_t *)p + sizeof(h),
                                                        h.len };
        p += sizeof(h) + h.len;
        n -= sizeof(h) + h.len;
    }
    return 0;
}

/* Takes the descriptor out of a received message's control data. */
static int take_fd(struct msghdr *msg)
{
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

int handoff_recv(int sock, struct handoff_conn *hc)
{
    static char buf[sizeof(struct wire) + HANDOFF_PATH_MAX + HANDOFF_PENDING_MAX +
                    HANDOFF_STATE_MAX + HANDOFF_TALLY_MAX + HANDOFF_SECS_MAX];
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
    for (;;) {
        struct iovec iov = { buf, sizeof(buf) };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        if (n == 0)
            return -1;
        int fd = take_fd(&msg);
        struct wire w;
        size_t hlen = wire_check(buf, (size_t)n, &w);
        if (fd < 0 || hlen == 0 || sections(buf + n - w.secs_len, w.secs_len, hc) < 0) {
            if (fd >= 0)
                close(fd); /* not ours to serve: a malformed message */
            continue;
        }
        hc->fd = fd;
        hc->silent_ms = w.silent_ms;
        hc->path = buf + hlen;
        hc->path_len = w.path_len;
        hc->pending = hc->path + w.path_len;
        hc->pending_len = w.pending_len;
        hc->state = (const uint8_t *)hc->pending + w.pending_len;
        hc->state_len = w.state_len;
        hc->started = w.started;
        hc->tally = hc->state + w.state_len;
        hc->tally_len = w.tally_len;
        hc->pmd = w.flags;
        return 1;
    }
}
