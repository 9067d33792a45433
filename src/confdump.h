/* `wsechod -T`: the effective configuration, written as YAML.
 *
 * Contract: every key config_load accepts is written, defaults filled in
 * and resolved as the server uses them (worker_processes: auto as its
 * number, a drain_spread shrunk to shutdown_timeout, and so on): the core
 * keys in config.c's table order, each listen entry with all its tls keys
 * (the built-in cipher lists spelt out), each route with its module and
 * every key that module declares. Keys whose default is "not set" (user,
 * group) are written as comments. config_load reads the output back into
 * the same configuration, and dumping that gives the same text. A key
 * added to config.c's table must be added here: t/unit/test_confdump.c
 * fails until it is. */
#ifndef WSECHOD_CONFDUMP_H
#define WSECHOD_CONFDUMP_H

#include <stdio.h>

#include "config.h"

/* 0, or -1 (errno set) if writing to out failed. */
int confdump_write(FILE *out, const struct config *cf);

#endif
