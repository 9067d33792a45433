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
    if (argc < 1 || argv[0] == NULL)
        return;
    char *end = argv[0];
    for (int i = 0; i < argc && argv[i] == end; i++)
        end = argv[i] + strlen(argv[i]) + 1;
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **copy = calloc(n + 1, sizeof(*copy));
    if (copy == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (environ[i] == end)
            end = environ[i] + strlen(environ[i]) + 1;
        copy[i] = strdup(environ[i]);
    }
    environ = copy;
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
