#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static struct sockaddr_un addr;
static socklen_t addr_len;
static char path_seen[sizeof(addr.sun_path)]; /* as $NOTIFY_SOCKET said it */

void notify_init(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t len = path ? strlen(path) : 0;
    if (len == 0)
        return;
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path)) {
        log_warn("ignoring NOTIFY_SOCKET '%s': not a unix socket path", path);
    } else {
        addr.sun_family = AF_UNIX;
        memcpy(addr.sun_path, path, len);
        if (path[0] == '@')
            addr.sun_path[0] = '\0'; /* abstract namespace */
        addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
        memcpy(path_seen, path, len + 1);
    }
    unsetenv("NOTIFY_SOCKET");
}

void notify_export(void)
{
    if (addr_len != 0)
        setenv("NOTIFY_SOCKET", path_seen, 1);
}

void notify_send(const char *fmt, ...)
{
    char msg[1024];
    if (addr_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1,
                         MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len) < 0)
        log_warn("sd_notify: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
}

unsigned long long notify_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u;
}
