/* For the unit tests of the configuration: YAML text loaded as the server
 * loads a file, from a scratch file named by `path` (the test sets it). */
#ifndef WSECHOD_UNIT_CONFLOAD_H
#define WSECHOD_UNIT_CONFLOAD_H

#include <stdio.h>

#include "config.h"

static char path[64];

static struct config *load(const char *text, char err[CONFIG_ERR_MAX])
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    err[0] = '\0';
    return config_load(path, err);
}

#endif
