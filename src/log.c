#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = { "debug", "info", "notice", "warn", "error" };

static enum log_level min_level = LOGL_NOTICE;
static int log_fd = STDERR_FILENO;
static char log_path[4096]; /* empty while logging to stderr */

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_open(const char *path)
{
    if (strcmp(path, "stderr") == 0) {
        if (log_fd != STDERR_FILENO)
            close(log_fd);
        log_fd = STDERR_FILENO;
        log_path[0] = '\0';
        return 0;
    }
    if (strlen(path) >= sizeof(log_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open_file(path);
    if (fd < 0)
        return -1;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    strcpy(log_path, path);
    return 0;
}

int log_reopen(void)
{
    if (log_path[0] == '\0')
        return 0;
    int fd = open_file(log_path);
    if (fd < 0)
        return -1;
    /* dup2 keeps the descriptor number, so nothing holding it goes stale. */
    dup2(fd, log_fd);
    close(fd);
    return 0;
}

void log_adopt(int fd)
{
    if (fd < 0)
        return;
    if (log_path[0] != '\0')
        dup2(fd, log_fd);
    close(fd);
}

int log_fd_get(void)
{
    return log_fd;
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

int log_enabled(enum log_level level)
{
    return level >= min_level;
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    int saved_errno = errno;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld [%s] %d: ",
                          ts.tv_nsec / 1000000, level_names[level], (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    n = (m < 0) ? n : n + (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2; /* truncated, still one line */
    line[n++] = '\n';
    /* One write per line: O_APPEND keeps lines from several processes whole. */
    ssize_t w;
    do {
        w = write(log_fd, line, n);
    } while (w < 0 && errno == EINTR);
    errno = saved_errno;
}
