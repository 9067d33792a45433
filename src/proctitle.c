#include "proctitle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static char *area;
static size_t area_len;

void proctitle_init(int argc, char **argv)
{
    static char **env_copy; /* the moved environment, alive for good */
    static char *env_strings;
    if (argc < 1 || argv[0] == NULL)
        return;
    char *end = argv[0];
    for (int i = 0; i < argc && argv[i] == end; i++)
        end = argv[i] + strlen(argv[i]) + 1;
    size_t n = 0, bytes = 0;
    for (; environ[n] != NULL; n++)
        bytes += strlen(environ[n]) + 1;
    env_copy = calloc(n + 1, sizeof(*env_copy));
    env_strings = malloc(bytes ? bytes : 1);
    if (env_copy == NULL || env_strings == NULL)
        return;
    char *p = env_strings;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(environ[i]) + 1;
        if (environ[i] == end)
            end = environ[i] + len;
        env_copy[i] = memcpy(p, environ[i], len);
        p += len;
    }
    environ = env_copy;
    area = argv[0];
    area_len = (size_t)(end - argv[0]);
}

void proctitle_set(const char *fmt, ...)
{
    if (area == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(area, area_len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < area_len)
        memset(area + n, 0, area_len - (size_t)n);
}
