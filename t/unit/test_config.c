/* src/config.c: value parsers and errors that name file:line:column. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "confload.h"
#include "tap.h"


int main(void)
{
    char err[CONFIG_ERR_MAX], want[CONFIG_ERR_MAX + 64];
    snprintf(path, sizeof(path), "/tmp/wsechod-unit-%d.yaml", (int)getpid());
    struct config *cf = load("", err);
    ok(cf && cf->worker_memory_limit == (size_t)1 << 30 && cf->max_pending_output == 1 << 20,
       "defaults: worker_memory_limit 1g, max_pending_output 1m");
    config_free(cf);
    cf = load("worker_memory_limit: 64m\nmax_message_size: 512k\nclose_timeout: 250ms\n", err);
    ok(cf && cf->worker_memory_limit == 64u << 20 && cf->max_message_size == 512u << 10 &&
       cf->close_timeout_ms == 250, "sizes and durations with units");
    config_free(cf);
    cf = load("log_level: info\nworker_memory_limit: 512k\n", err);
    snprintf(want, sizeof(want), "%s:2:22: worker_memory_limit:", path);
    ok(cf == NULL && strncmp(err, want, strlen(want)) == 0 && strstr(err, "out of range"),
       "below the range: file:line:col (%s)", err);
    cf = load("max_message_size: lots\n", err);
    snprintf(want, sizeof(want), "%s:1:19: max_message_size: expected a size", path);
    ok(cf == NULL && strncmp(err, want, strlen(want)) == 0, "not a size (%s)", err);
    cf = load("no_such_key: 1\n", err);
    ok(cf == NULL && strstr(err, ":1:1:") && strstr(err, "no_such_key"), "unknown key (%s)", err);
    unlink(path);
    return tap_done();
}
