/* Both formats carry the same fields under the same names: text is
 * "name=value" pairs (strings quoted with JSON's escapes, "-" for none),
 * json one object per line; README's *Access log* lists them. */
#include "alog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonstr.h"
#include "log.h"
#include "stats.h"

#define ALOG_LINE_MAX 4096

static struct {
    struct ev_loop *loop;
    struct ev_queue q;
    struct ev_timer t;
    int fd, json, queued;
    unsigned generation;
    size_t len;
    char buf[ALOG_BUF];
} A = { .fd = -1 };

/* ---- The master's side -------------------------------------------------- */

static struct {
    int fd;
    char *path;                 /* NULL: stderr or off */
} M = { -1, NULL };

static int open_path(const char *path)
{
    return strcmp(path, "stderr") == 0
           ? fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)
           : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int alog_master_open(const char *path, char *err, size_t errlen)
{
    int fd = path ? open_path(path) : -1;
    char *copy = path && strcmp(path, "stderr") != 0 ? strdup(path) : NULL;
    if (path != NULL && (fd < 0 || (strcmp(path, "stderr") != 0 && copy == NULL))) {
        snprintf(err, errlen, "cannot open access_log %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(copy);
        return -1;
    }
    if (M.fd >= 0)
        close(M.fd);
    free(M.path);
    M.fd = fd;
    M.path = copy;
    return 0;
}

int alog_master_fd(void)
{
    return M.fd;
}

int alog_master_reopen(void)
{
    if (M.path == NULL)
        return -1;
    int fd = open_path(M.path);
    if (fd < 0) {
        log_error("cannot reopen access_log %s: %s", M.path, strerror(errno));
        return -1;
    }
    dup3(fd, M.fd, O_CLOEXEC); /* ours stays at its number; the workers get theirs */
    return fd;
}

/* ---- The worker's side -------------------------------------------------- */

static void write_out(void)
{
    size_t off = 0;
    while (off < A.len && A.fd >= 0) {
        ssize_t n = write(A.fd, A.buf + off, A.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            log_error("access log: write: %s (%zu bytes lost)", n < 0 ? strerror(errno) : "short",
                      A.len - off);
            break;
        }
        off += (size_t)n;
    }
    A.len = 0;
}

void alog_flush(void)
{
    if (A.queued)
        ev_timer_stop(&A.t);
    A.queued = 0;
    write_out();
}

static void on_flush(struct ev_loop *loop, struct ev_queue *q, struct ev_timer *t)
{
    (void)loop, (void)q, (void)t;
    A.queued = 0;
    write_out();
}

void alog_setup(struct ev_loop *loop, int fd, int json, unsigned generation)
{
    A.loop = loop;
    A.fd = fd;
    A.json = json;
    A.generation = generation;
    ev_queue_init(loop, &A.q, on_flush);
    ev_timer_init(&A.t);
}

int alog_on(void)
{
    return A.fd >= 0;
}

void alog_adopt(int fd)
{
    alog_flush();
    if (A.fd >= 0 && fd >= 0) {
        dup3(fd, A.fd, O_CLOEXEC); /* keep our number: nothing else holds it */
        close(fd);
    } else if (fd >= 0) {
        close(fd);
    }
}

/* Appends one finished line, flushing first when it would not fit. */
static void append(const char *line, size_t n)
{
    if (A.len + n > sizeof(A.buf))
        write_out();
    memcpy(A.buf + A.len, line, n);
    A.len += n;
    if (!A.queued) {
        ev_timer_start(A.loop, &A.q, &A.t, ALOG_FLUSH_MS);
        A.queued = 1;
    }
}

/* ---- Formatting --------------------------------------------------------- */

struct line {
    char p[ALOG_LINE_MAX];
    size_t n;
    int first;
};

static void raw(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void raw(struct line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(l->p + l->n, sizeof(l->p) - l->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        l->n = l->n + (size_t)k >= sizeof(l->p) ? sizeof(l->p) - 1 : l->n + (size_t)k;
}

static void name(struct line *l, const char *key)
{
    if (A.json)
        raw(l, "%s\"%s\":", l->first ? "{" : ",", key);
    else
        raw(l, "%s%s=", l->first ? "" : " ", key);
    l->first = 0;
}

/* A string field; NULL is null in JSON, "-" in text. */
static void str(struct line *l, const char *key, const char *v)
{
    name(l, key);
    if (v == NULL) {
        raw(l, "%s", A.json ? "null" : "-");
        return;
    }
    raw(l, "\"");
    if (l->n + 2 < sizeof(l->p)) /* room kept for the closing quote */
        l->n += json_escape(l->p + l->n, sizeof(l->p) - 2 - l->n, v, strlen(v));
    raw(l, "\"");
}

static void num(struct line *l, const char *key, uint64_t v)
{
    name(l, key);
    raw(l, "%llu", (unsigned long long)v);
}

/* A close code; 0 (none) is null / "-". */
static void code(struct line *l, const char *key, uint16_t v)
{
    name(l, key);
    if (v)
        raw(l, "%u", v);
    else
        raw(l, "%s", A.json ? "null" : "-");
}

static void head(struct line *l, const char *event, const char *peer)
{
    char t[32];
    l->n = 0;
    l->first = 1;
    log_time_iso(stats_wall_ms(), t, sizeof(t));
    if (A.json) {
        str(l, "time", t);
    } else {
        raw(l, "%s", t);
        l->first = 0;
    }
    num(l, "pid", (uint64_t)getpid());
    num(l, "generation", A.generation);
    str(l, "event", event);
    str(l, "client", peer);
}

static void finish(struct line *l)
{
    if (l->n > sizeof(l->p) - 3)
        l->n = sizeof(l->p) - 3;
    raw(l, "%s\n", A.json ? "}" : "");
    append(l->p, l->n);
}

void alog_ws(const struct alog_ws *r)
{
    static struct line l;
    if (A.fd < 0)
        return;
    head(&l, "ws", r->peer);
    str(&l, "path", r->target);
    str(&l, "subprotocol", r->subprotocol);
    num(&l, "duration_ms", r->end_ms > r->start_ms ? r->end_ms - r->start_ms : 0);
    num(&l, "messages_in", r->msgs_in);
    num(&l, "messages_out", r->msgs_out);
    num(&l, "bytes_in", r->bytes_in);
    num(&l, "bytes_out", r->bytes_out);
    num(&l, "wire_bytes_in", r->wire_in);
    num(&l, "wire_bytes_out", r->wire_out);
    code(&l, "close_sent", r->code_sent);
    code(&l, "close_received", r->code_received);
    str(&l, "closed_by", r->closed_by);
    num(&l, "handoffs", r->handoffs);
    finish(&l);
}

void alog_refused(const struct alog_refused *r)
{
    static struct line l;
    if (A.fd < 0)
        return;
    head(&l, "refused", r->peer);
    str(&l, "path", r->target);
    num(&l, "status", (uint64_t)r->status);
    str(&l, "reason", r->reason);
    finish(&l);
}
