/* The access log (`access_log`, `access_log_format`): one line when a
 * WebSocket ends and one per refused handshake, in text or JSON (one
 * object per line, stable field names: README's *Access log*).
 *
 * Lines gather in a per-worker buffer that leaves with one write(2) when
 * it is nearly full, within ALOG_FLUSH_MS of its first line, and at exit:
 * no system call per line. The file is opened by the master (O_APPEND:
 * each write lands whole at the end, so workers never interleave within a
 * line) and inherited; on SIGUSR1 the master reopens it and each worker
 * adopts the new descriptor after flushing what it had. */
#ifndef WSECHOD_ALOG_H
#define WSECHOD_ALOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ev.h"

#define ALOG_BUF 65536
#define ALOG_FLUSH_MS 1000

/* One WebSocket that ended. */
struct alog_ws {
    uint64_t start_ms, end_ms;  /* wall clock */
    const char *peer;           /* "1.2.3.4:5678", "[::1]:5678" */
    const char *target;         /* path and query, as requested */
    const char *subprotocol;    /* NULL: none */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out, wire_in, wire_out;
    uint16_t code_sent, code_received;  /* 0: no close frame */
    const char *closed_by;      /* client, server, timeout, reset */
    uint32_t handoffs;
};

/* One handshake answered with an error status. */
struct alog_refused {
    const char *peer;
    const char *target;         /* NULL: the request never got that far */
    int status;
    const char *reason;
};

/* Master: opens cf's access log (none when it is off) in place of the
 * current one, which stays if this fails: 0, or -1 with err set. Workers
 * forked afterwards inherit it (alog_master_fd). */
int  alog_master_open(const char *path, char *err, size_t errlen);
int  alog_master_fd(void);
/* Master, SIGUSR1: the file again under its name (logrotate moved it); the
 * new descriptor for the workers (the caller closes it), or -1. */
int  alog_master_reopen(void);

/* In a worker: lines go to fd (-1: the access log is off), formatted as
 * JSON if json, tagged with pid and generation. */
void alog_setup(struct ev_loop *loop, int fd, int json, unsigned generation);
int  alog_on(void);
void alog_ws(const struct alog_ws *r);
void alog_refused(const struct alog_refused *r);
/* Writes out what is buffered (at exit, before a handoff of the file). */
void alog_flush(void);
/* The master reopened the file: fd replaces ours (closed if we are off). */
void alog_adopt(int fd);

#endif
