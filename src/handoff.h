/* Handing an open WebSocket from one worker to another: its socket (sent
 * with SCM_RIGHTS) and the little state that belongs to it, as one
 * message on a SOCK_SEQPACKET socket. Every worker has an inbox; the
 * master gives the write ends of a new generation's inboxes to the workers
 * that are to hand their connections over. A message is atomic: a
 * connection is either handed over whole or stays where it was. */
#ifndef WSECHOD_HANDOFF_H
#define WSECHOD_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

/* What travels besides the socket. */
#define HANDOFF_PATH_MAX 2048
#define HANDOFF_PENDING_MAX 65536
#define HANDOFF_STATE_MAX 256   /* WS_STATE_MAX in module.h */
#define HANDOFF_TALLY_MAX (HANDOFF_PATH_MAX + 512) /* the access log's record */

/* State a layer adds when it has some, as typed sections: a receiver that
 * meets a type it does not know refuses that connection rather than serve
 * it wrongly. */
enum {
    HANDOFF_SEC_PMD = 1,        /* permessage-deflate's windows (pmd_ctx_export) */
    HANDOFF_SEC_TLS = 2,        /* TLS 1.3 records kept by us (tlsown_export) */
    HANDOFF_SEC_PEER = 3,       /* the client behind a proxy, its per-IP count (peer.h) */
};
#define HANDOFF_SECS 4
#define HANDOFF_SECS_MAX (2u << 16) /* all sections' bytes */

struct handoff_section {
    uint32_t type;
    const uint8_t *p;
    size_t len;
};

struct handoff_conn {
    int fd;
    uint32_t silent_ms;     /* since the peer was last heard from */
    const char *path;       /* the request path, to route it again */
    size_t path_len;
    const char *pending;    /* bytes read from the socket, not yet processed */
    size_t pending_len;
    const uint8_t *state;   /* the module's (module.h: export, on_adopt) */
    size_t state_len;
    uint32_t started;       /* when the WebSocket began (ws_clock); 0: not said */
    uint32_t pmd;           /* permessage-deflate agreed (pmd_params_pack), 0: none */
    const uint8_t *tally;   /* the access log's record (ws_tally_export), or none */
    size_t tally_len;
    struct handoff_section sec[HANDOFF_SECS];
    size_t nsec;
};

/* An inbox: sv[0] for the receiving worker, sv[1] for the senders. */
int handoff_pair(int sv[2]);
/* 0, or -1 with errno (EAGAIN: the inbox is full, try later). The caller
 * keeps its descriptor and closes it once this succeeded. */
int handoff_send(int sock, const struct handoff_conn *hc);
/* 1: *hc filled (path, pending and the sections point into a buffer valid
 * until the next call; hc->fd is ours); 0: nothing waiting; -1: every
 * sender is gone. A malformed message, or one with a section of a type
 * this build does not know, is dropped (its descriptor closed). */
int handoff_recv(int sock, struct handoff_conn *hc);

#endif
