#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jsonstr.h"

static const char *const level_names[] = { "debug", "info", "notice", "warn", "error" };
static const char *const format_names[] = { "text", "json" };

/* A message is cut here; a line has room for it escaped several times
 * over, and json_escape cuts cleanly if even that is not enough. */
#define LOG_MSG_MAX  2048
#define LOG_LINE_MAX 4096

static struct {
    enum log_level min_level;
    enum log_format format;
    int fd;
    char path[4096];        /* empty while logging to stderr */
    int probed;             /* the three below are known for fd */
    int journal;            /* fd is the journal */
    int stderr_journal;     /* stderr is */
    int same_as_stderr;     /* fd writes where stderr does */
    int startup;
} L = { LOGL_NOTICE, LOGF_TEXT, STDERR_FILENO, "", 0, 0, 0, 0, 0 };

/* systemd's own test (systemd.exec(5), JOURNAL_STREAM): the variable holds
 * the device and inode of the stream it connected; a descriptor is the
 * journal only if it still is that stream, not something redirected since. */
static int is_journal(const struct stat *st)
{
    const char *env = getenv("JOURNAL_STREAM");
    char *end;
    if (env == NULL || *env < '0' || *env > '9')
        return 0;
    unsigned long long dev = strtoull(env, &end, 10), ino;
    if (*end != ':' || end[1] < '0' || end[1] > '9')
        return 0;
    ino = strtoull(end + 1, &end, 10);
    return *end == '\0' && (unsigned long long)st->st_dev == dev &&
           (unsigned long long)st->st_ino == ino;
}

static void probe(void)
{
    struct stat lst, est;
    int lok = fstat(L.fd, &lst) == 0, eok = fstat(STDERR_FILENO, &est) == 0;
    L.journal = lok && is_journal(&lst);
    L.stderr_journal = eok && is_journal(&est);
    L.same_as_stderr = L.fd == STDERR_FILENO ||
                       (lok && eok && lst.st_dev == est.st_dev && lst.st_ino == est.st_ino);
    L.probed = 1;
}

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_open(const char *path)
{
    if (strcmp(path, "stderr") == 0) {
        if (L.fd != STDERR_FILENO)
            close(L.fd);
        L.fd = STDERR_FILENO;
        L.path[0] = '\0';
        L.probed = 0;
        return 0;
    }
    if (strlen(path) >= sizeof(L.path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open_file(path);
    if (fd < 0)
        return -1;
    if (L.fd != STDERR_FILENO)
        close(L.fd);
    L.fd = fd;
    strcpy(L.path, path);
    L.probed = 0;
    return 0;
}

int log_reopen(void)
{
    if (L.path[0] == '\0')
        return 0;
    int fd = open_file(L.path);
    if (fd < 0)
        return -1;
    /* dup2 keeps the descriptor number, so nothing holding it goes stale. */
    dup2(fd, L.fd);
    close(fd);
    L.probed = 0;
    return 0;
}

void log_adopt(int fd)
{
    if (fd < 0)
        return;
    if (L.path[0] != '\0') {
        dup2(fd, L.fd);
        L.probed = 0;
    }
    close(fd);
}

int log_fd_get(void)
{
    return L.fd;
}

void log_set_level(enum log_level level)
{
    L.min_level = level;
}

int log_enabled(enum log_level level)
{
    return level >= L.min_level;
}

static int name_index(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

int log_level_parse(const char *name, enum log_level *out)
{
    int i = name_index(name, level_names, sizeof(level_names) / sizeof(level_names[0]));
    if (i >= 0)
        *out = (enum log_level)i;
    return i < 0 ? -1 : 0;
}

const char *log_level_name(enum log_level level)
{
    return level_names[level];
}

void log_set_format(enum log_format format)
{
    L.format = format;
}

int log_format_parse(const char *name, enum log_format *out)
{
    int i = name_index(name, format_names, sizeof(format_names) / sizeof(format_names[0]));
    if (i >= 0)
        *out = (enum log_format)i;
    return i < 0 ? -1 : 0;
}

const char *log_format_name(enum log_format format)
{
    return format_names[format];
}

void log_startup(int on)
{
    L.startup = on;
}

/* snprintf that never moves n past the end (its return value may). */
static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...)
{
    if (n >= cap)
        return n;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
    return k < 0 ? n : n + (size_t)k >= cap ? cap - 1 : n + (size_t)k;
}

size_t log_time_iso(uint64_t wall_ms, char *buf, size_t cap)
{
    struct tm tm;
    time_t sec = (time_t)(wall_ms / 1000);
    gmtime_r(&sec, &tm);
    int k = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(wall_ms % 1000));
    return k < 0 ? 0 : (size_t)k >= cap ? cap - 1 : (size_t)k;
}

static size_t put_time(char *buf, size_t cap, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return n + log_time_iso((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, buf + n,
                            cap - n);
}

/* syslog(3) priorities: LOG_DEBUG 7 down to LOG_ERR 3. */
static int priority(enum log_level level)
{
    return 7 - (int)level;
}

/* Room is kept for the line's end ("\n", or "\"}\n"). */
static size_t text_line(char *buf, size_t cap, enum log_level level, const char *msg,
                        size_t mlen)
{
    size_t n = 0;
    if (L.journal)
        n = put(buf, cap, n, "<%d>", priority(level));
    else
        n = put(buf, cap, put_time(buf, cap, n), " ");
    n = put(buf, cap, n, "[%s] %d: ", level_names[level], (int)getpid());
    if (mlen > cap - 1 - n)
        mlen = cap - 1 - n; /* truncated, still one line */
    memcpy(buf + n, msg, mlen);
    n += mlen;
    buf[n++] = '\n';
    return n;
}

static size_t json_line(char *buf, size_t cap, enum log_level level, const char *msg,
                        size_t mlen)
{
    size_t n = 0;
    if (L.journal)
        n = put(buf, cap, n, "<%d>", priority(level));
    n = put_time(buf, cap, put(buf, cap, n, "{\"time\":\""));
    n = put(buf, cap, n, "\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"", level_names[level],
            (int)getpid());
    n += json_escape(buf + n, n + 3 < cap ? cap - 3 - n : 0, msg, mlen);
    memcpy(buf + n, "\"}\n", 3);
    return n + 3;
}

/* One write per line: O_APPEND keeps lines from several processes whole. */
static void write_line(int fd, const char *line, size_t n)
{
    ssize_t w;
    do {
        w = write(fd, line, n);
    } while (w < 0 && errno == EINTR);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < L.min_level)
        return;
    int saved_errno = errno;
    char msg[LOG_MSG_MAX], line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : (size_t)m >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)m;
    if (!L.probed)
        probe();
    size_t n = (L.format == LOGF_JSON ? json_line : text_line)(line, sizeof(line), level,
                                                                msg, mlen);
    write_line(L.fd, line, n);
    if (L.startup && level >= LOGL_WARN && !L.same_as_stderr) {
        n = L.stderr_journal ? put(line, sizeof(line), 0, "<%d>", priority(level)) : 0;
        n = put(line, sizeof(line), n, "wsechod: [%s] %.*s\n", level_names[level],
                (int)mlen, msg);
        write_line(STDERR_FILENO, line, n);
    }
    errno = saved_errno;
}
