#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static pid_t pidfile_read(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long pid = 0;
    return sscanf(buf, "%ld", &pid) == 1 && pid > 0 ? (pid_t)pid : 0;
}

/* A recycled pid must not make us signal an unrelated process. */
static int is_wsechod(pid_t pid)
{
    char path[64], cmd[256];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == EACCES; /* cannot tell: assume it is */
    ssize_t n = read(fd, cmd, sizeof(cmd) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    for (ssize_t i = 0; i < n; i++)
        if (cmd[i] == '\0')
            cmd[i] = ' ';
    cmd[n] = '\0';
    return strstr(cmd, "wsechod") != NULL;
}

pid_t pidfile_running(const char *path)
{
    pid_t pid = pidfile_read(path);
    if (pid == 0 || (kill(pid, 0) < 0 && errno == ESRCH) || !is_wsechod(pid))
        return 0;
    return pid;
}

int pidfile_write(const char *path, pid_t pid)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int ok = write(fd, buf, (size_t)len) == len;
    return (close(fd) == 0 && ok) ? 0 : -1;
}

void pidfile_remove(const char *path, pid_t pid)
{
    if (pidfile_read(path) == pid)
        unlink(path);
}
