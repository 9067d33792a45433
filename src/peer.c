#include "peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"
#include "handoff.h"
#include "log.h"
#include "perip.h"
#include "stats.h"

/* What a client over max_connections_per_ip is told to wait: a WebSocket
 * frees its place only when it closes, which nobody can predict. */
#define RETRY_CONNS_S 5

enum { REC_ADDR = 1, REC_COUNTED = 2, REC_REFUSED = 4 };

struct rec {
    uint8_t flags;
    uint8_t family;             /* REC_ADDR: of addr */
    uint16_t port;              /* network order */
    uint16_t status;            /* REC_REFUSED: 503 or 429 */
    uint16_t retry_s;
    uint32_t entry;             /* REC_COUNTED: its per-IP entry */
    uint8_t addr[16];
};

/* A record as it travels with a handed-over connection. */
struct wire {
    uint8_t version, flags, family, pad;
    uint16_t port, pad2;
    uint32_t entry;
    uint64_t table;             /* perip_table() of the sender */
    uint8_t addr[16];
    uint8_t key[16];
};
#define WIRE_VERSION 1

unsigned peer_nfds;

static struct {
    struct rec *r;
    struct perip_limits lim;
    unsigned v6_prefix;
    int on;                     /* a per-IP limit is on */
    struct wire out;            /* the last export */
} PR;

void peer_setup(const struct config *cf)
{
    const struct config_rate *rt = &cf->handshake_rate;
    PR.lim.max_conns = cf->max_connections_per_ip;
    PR.lim.interval_us = rt->count ? (uint64_t)rt->period_ms * 1000 / rt->count : 0;
    if (rt->count && PR.lim.interval_us == 0)
        PR.lim.interval_us = 1;
    PR.lim.burst_us = (uint64_t)rt->burst * PR.lim.interval_us;
    PR.v6_prefix = cf->per_ip_ipv6_prefix;
    PR.on = PR.lim.max_conns || PR.lim.interval_us;
}

int peer_limits_on(void)
{
    return PR.on;
}

/* fd's record, the array grown to hold it; NULL if out of memory. */
static struct rec *rec_for(int fd)
{
    if (fd < 0)
        return NULL;
    if ((unsigned)fd >= peer_nfds) {
        unsigned n = peer_nfds ? peer_nfds : 1024;
        while (n <= (unsigned)fd)
            n *= 2;
        struct rec *grown = realloc(PR.r, n * sizeof(*grown));
        if (grown == NULL) {
            log_error("out of memory for the client records of %u descriptors", n);
            return NULL;
        }
        memset(grown + peer_nfds, 0, (n - peer_nfds) * sizeof(*grown));
        PR.r = grown;
        peer_nfds = n;
    }
    return &PR.r[fd];
}

static void set_addr(struct rec *r, const struct sockaddr *sa)
{
    r->flags |= REC_ADDR;
    r->family = (uint8_t)sa->sa_family;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        memcpy(r->addr, &a->sin_addr, 4);
        r->port = a->sin_port;
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(r->addr, &a->sin6_addr, 16);
        r->port = a->sin6_port;
    }
}

/* The client's address: the header's, or the socket's peer. */
static int client_of(int fd, const struct rec *r, struct sockaddr_storage *ss)
{
    socklen_t sl = sizeof(*ss);
    memset(ss, 0, sizeof(*ss));
    if (!(r->flags & REC_ADDR))
        return getpeername(fd, (struct sockaddr *)ss, &sl);
    ss->ss_family = r->family;
    if (r->family == AF_INET) {
        memcpy(&((struct sockaddr_in *)ss)->sin_addr, r->addr, 4);
        ((struct sockaddr_in *)ss)->sin_port = r->port;
    } else {
        memcpy(&((struct sockaddr_in6 *)ss)->sin6_addr, r->addr, 16);
        ((struct sockaddr_in6 *)ss)->sin6_port = r->port;
    }
    return 0;
}

static void admit(struct rec *r, const struct sockaddr *client)
{
    struct perip_key k;
    uint32_t entry, retry;
    if (perip_key_of(client, PR.v6_prefix, &k) < 0)
        return;
    switch (perip_admit(&k, &PR.lim, &entry, &retry)) {
    case PERIP_COUNTED:
        r->flags |= REC_COUNTED;
        r->entry = entry;
        break;
    case PERIP_ADMITTED:
        break;
    case PERIP_NO_ROOM:
        STATS_ADD(stats_me->c.per_ip_full, 1);
        break;
    case PERIP_TOO_MANY:
        r->flags |= REC_REFUSED;
        r->status = 503;
        r->retry_s = RETRY_CONNS_S;
        break;
    case PERIP_TOO_FAST:
        r->flags |= REC_REFUSED;
        r->status = 429;
        r->retry_s = (uint16_t)(retry > UINT16_MAX ? UINT16_MAX : retry);
        break;
    }
}

void peer_accepted(int fd, const struct sockaddr *client, int from_header)
{
    if (!PR.on && !(from_header && client))
        return;
    struct rec *r = rec_for(fd);
    if (r == NULL)
        return; /* served as if the features were off */
    memset(r, 0, sizeof(*r));
    if (from_header && client != NULL)
        set_addr(r, client);
    if (PR.on && client != NULL)
        admit(r, client);
}

int peer_refusal_slow(int fd, const char **reason, char *hdr, size_t len)
{
    struct rec *r = &PR.r[fd];
    if (!(r->flags & REC_REFUSED))
        return 0;
    r->flags &= (uint8_t)~REC_REFUSED;
    int connections = r->status == 503;
    STATS_ADD(stats_me->c.per_ip_refused[connections ? LIMIT_CONNECTIONS : LIMIT_RATE], 1);
    *reason = connections ? "too many connections from this address"
                          : "too many handshakes from this address, slow down";
    snprintf(hdr, len, "Retry-After: %u\r\n", (unsigned)r->retry_s);
    return r->status;
}

void peer_close_slow(int fd)
{
    struct rec *r = &PR.r[fd];
    if (r->flags & REC_COUNTED)
        perip_release(r->entry);
    r->flags = 0;
}

void peer_handed(int fd)
{
    if ((unsigned)fd >= peer_nfds)
        return;
    struct rec *r = &PR.r[fd];
    if (r->flags & REC_COUNTED)
        perip_hand_out(r->entry);
    r->flags = 0;
}

int peer_export(int fd, struct handoff_section *sec)
{
    struct perip_key k;
    if ((unsigned)fd >= peer_nfds || !(PR.r[fd].flags & (REC_ADDR | REC_COUNTED)))
        return 0;
    const struct rec *r = &PR.r[fd];
    memset(&PR.out, 0, sizeof(PR.out));
    PR.out.version = WIRE_VERSION;
    PR.out.flags = r->flags & (REC_ADDR | REC_COUNTED);
    PR.out.family = r->family;
    PR.out.port = r->port;
    memcpy(PR.out.addr, r->addr, sizeof(r->addr));
    if ((r->flags & REC_COUNTED) && perip_key_at(r->entry, &k) == 0) {
        PR.out.entry = r->entry;
        PR.out.table = perip_table();
        memcpy(PR.out.key, k.b, sizeof(k.b));
    } else {
        PR.out.flags &= (uint8_t)~REC_COUNTED;
    }
    *sec = (struct handoff_section){ HANDOFF_SEC_PEER, (const uint8_t *)&PR.out,
                                     sizeof(PR.out) };
    return 1;
}

/* The sender's record, if it sent one we read. */
static int wire_of(const struct handoff_conn *hc, struct wire *w)
{
    for (size_t i = 0; i < hc->nsec; i++) {
        const struct handoff_section *s = &hc->sec[i];
        if (s->type == HANDOFF_SEC_PEER && s->len == sizeof(*w)) {
            memcpy(w, s->p, sizeof(*w));
            return w->version == WIRE_VERSION &&
                   (!(w->flags & REC_ADDR) || w->family == AF_INET || w->family == AF_INET6);
        }
    }
    return 0;
}

/* Counted here afresh: from another table, or by a worker that did not. */
static void count_here(int fd, struct rec *r)
{
    struct sockaddr_storage ss;
    struct perip_key k;
    uint32_t entry;
    if (client_of(fd, r, &ss) == 0 && perip_key_of((struct sockaddr *)&ss, PR.v6_prefix, &k) == 0 &&
        perip_count(&k, &entry) == 0) {
        r->flags |= REC_COUNTED;
        r->entry = entry;
    }
}

void peer_adopt(const struct handoff_conn *hc)
{
    struct wire w;
    int have = wire_of(hc, &w);
    if (!have && !PR.on)
        return;
    struct rec *r = rec_for(hc->fd);
    if (r == NULL)
        return;
    memset(r, 0, sizeof(*r));
    if (have && (w.flags & REC_ADDR)) {
        r->flags = REC_ADDR;
        r->family = w.family;
        r->port = w.port;
        memcpy(r->addr, w.addr, sizeof(r->addr));
    }
    struct perip_key k;
    memcpy(k.b, w.key, sizeof(k.b));
    if (have && (w.flags & REC_COUNTED) && perip_hand_in(w.table, w.entry, &k) == 0) {
        r->flags |= REC_COUNTED;
        r->entry = w.entry;
    } else if (PR.lim.max_conns) {
        count_here(hc->fd, r);
    }
}

/* ---- Names -------------------------------------------------------------- */

static const char *format(const struct sockaddr_storage *ss, socklen_t sl, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (sl > off + 1 && un->sun_path[0] != '\0')
            snprintf(buf, len, "unix:%.*s", (int)(sl - off), un->sun_path);
        else
            snprintf(buf, len, "unix");
        return buf;
    }
    const void *a = ss->ss_family == AF_INET6
        ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
        : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    unsigned port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET || ss->ss_family == AF_INET6)
        inet_ntop(ss->ss_family, a, host, sizeof(host));
    else
        port = 0;
    snprintf(buf, len, ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
    return buf;
}

const char *peer_name(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if ((unsigned)fd < peer_nfds && (PR.r[fd].flags & REC_ADDR)) {
        client_of(fd, &PR.r[fd], &ss);
        return format(&ss, sizeof(ss), buf, len);
    }
    memset(&ss, 0, sizeof(ss));
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, len, "?:0"); /* reset: the kernel no longer names it */
        return buf;
    }
    return format(&ss, sl, buf, len);
}
