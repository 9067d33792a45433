/* src/confdump.c: every key of the table is written, and what is written
 * reads back into the same configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "confdump.h"
#include "config.h"
#include "confload.h"
#include "tap.h"


/* The dump of cf, malloc'ed (NULL if confdump_write failed). */
static char *dump(const struct config *cf)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = confdump_write(f, cf);
    fclose(f);
    if (rc < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* "name:" at the start of a line, or commented out there. */
static int has_key(const char *text, const char *name)
{
    char want[128];
    size_t n = (size_t)snprintf(want, sizeof(want), "%s:", name);
    for (const char *line = text; line != NULL; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, "# ", 2) == 0)
            line += 2;
        if (strncmp(line, want, n) == 0)
            return 1;
    }
    return 0;
}

static void every_key(void)
{
    char err[CONFIG_ERR_MAX];
    struct config *cf = load("", err);
    char *text = cf ? dump(cf) : NULL;
    size_t i, missing = 0;
    ok(text != NULL, "the defaults are written (%s)", err);
    for (i = 0; text && config_key_name(i) != NULL; i++)
        if (!ok(has_key(text, config_key_name(i)), "key %s is written", config_key_name(i)))
            missing++;
    ok(i > 25 && missing == 0, "all %zu keys of the table", i);
    free(text);
    config_free(cf);
}

/* Dumped, read back, dumped again: the same text. */
static void round_trip(const char *name, const char *yaml)
{
    char err[CONFIG_ERR_MAX];
    struct config *cf = load(yaml, err);
    char *first = cf ? dump(cf) : NULL;
    config_free(cf);
    cf = first ? load(first, err) : NULL;
    char *second = cf ? dump(cf) : NULL;
    config_free(cf);
    ok(first && second && strcmp(first, second) == 0, "%s: reads back the same (%s)", name,
       err);
    free(first);
    free(second);
}

int main(void)
{
    snprintf(path, sizeof(path), "/tmp/wsechod-unit-dump-%d.yaml", (int)getpid());
    every_key();
    round_trip("defaults", "");
    round_trip("units", "max_header_size: 1000\nmax_message_size: 3k\nworker_memory_limit: 2g\n"
               "close_timeout: 1500ms\nidle_timeout: 90\nping_interval: 0\nshutdown_timeout: 0\n"
               "drain_spread: 0\nsend_timeout: 2m\nupgrade_timeout: 1h\n");
    round_trip("strings that need quotes",
               "pid_file: \"/tmp/a b#c: \\\"q\\\" \\\\ \\t \\u00e9\"\nerror_log: \"on\"\n"
               "allowed_origins: [\"https://a.example\", \"*\", \"null\"]\n"
               "subprotocols: [chat, \"x:\"]\n");
    round_trip("routes and module keys",
               "routes:\n  /: echo\n  \"/a:b\": {module: echo, delay: 250ms}\n"
               "  /s: {module: stream, interval: 100ms, size: 1k, count: 7}\n"
               "  /b: broadcast\n");
    round_trip("switches", "reload_handoff: off\nworker_cpu_affinity: auto\nlog_format: json\n"
               "log_level: debug\nworker_processes: 3\n");
    round_trip("behind a load balancer",
               "listen: [127.0.0.1:1, {address: \"[::1]:2\", proxy_protocol: on,\n"
               "  proxy_protocol_from: [10.0.0.0/8, \"::1/128\", 192.0.2.7]},\n"
               "  {address: unix:/run/x.sock, mode: \"0600\", owner: root, proxy_protocol: on}]\n"
               "max_connections_per_ip: 100\nhandshake_rate_per_ip: {rate: 100/m, burst: 7}\n"
               "per_ip_table_size: 4096\nper_ip_ipv6_prefix: 48\n");
    round_trip("a rate without a burst", "handshake_rate_per_ip: 20/s\n");
    char err[CONFIG_ERR_MAX];
    struct config *cf = load("routes: {/s: {module: stream, size: 1k}}\n", err);
    char *text = cf ? dump(cf) : NULL;
    ok(text && strstr(text, "  /s:\n    module: stream\n    interval: 1s\n    size: 1k\n"
                      "    count: 0\n"), "a route's module keys, defaults filled in");
    free(text);
    config_free(cf);
    unlink(path);
    return tap_done();
}
