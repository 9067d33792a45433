#include "confdump.h"

#include <errno.h>
#include <grp.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "cidr.h"
#include "module.h"
#include "tls.h"

/* Plain YAML scalars only where no YAML reader could take them for
 * anything else (an alias, a flow collection, a comment, true/false/null
 * in YAML 1.1), so the output is the same strings for any tool. */
static int plain_ok(const char *s)
{
    static const char *const words[] = { "y", "n", "yes", "no", "true", "false", "on", "off",
                                         "null", "~" };
    if (s[0] == '\0' || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789/._", s[0]))
        return 0;
    for (const char *c = s; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+@-:",
                    *c) || (*c == ':' && c[1] == '\0'))
            return 0;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasecmp(s, words[i]) == 0)
            return 0;
    return 1;
}

/* A string value: plain, or double-quoted with YAML's escapes. */
static void put_str(FILE *out, const char *s)
{
    if (plain_ok(s)) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(out, "\\x%02x", *c);
        else
            fputc(*c, out); /* UTF-8, as libyaml read it */
    }
    fputc('"', out);
}

/* The largest unit that says v exactly, so the text reads as written. */
static void put_duration(FILE *out, uint64_t ms)
{
    static const struct { uint64_t ms; const char *unit; } units[] = {
        { 3600000, "h" }, { 60000, "m" }, { 1000, "s" }, { 1, "ms" },
    };
    for (size_t i = 0; ms != 0 && i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            fprintf(out, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    fputc('0', out);
}

static void put_size(FILE *out, uint64_t bytes)
{
    static const char units[] = "gmk";
    for (unsigned i = 0; bytes != 0 && i < 3; i++) {
        unsigned shift = 10 * (3 - i);
        if (bytes % ((uint64_t)1 << shift) == 0) {
            fprintf(out, "%llu%c", (unsigned long long)(bytes >> shift), units[i]);
            return;
        }
    }
    fprintf(out, "%llu", (unsigned long long)bytes);
}

static void key_str(FILE *out, const char *indent, const char *key, const char *value)
{
    fprintf(out, "%s%s: ", indent, key);
    put_str(out, value);
    fputc('\n', out);
}

static void key_duration(FILE *out, const char *key, uint64_t ms)
{
    fprintf(out, "%s: ", key);
    put_duration(out, ms);
    fputc('\n', out);
}

static void key_size(FILE *out, const char *key, uint64_t bytes)
{
    fprintf(out, "%s: ", key);
    put_size(out, bytes);
    fputc('\n', out);
}

static void put_tls(FILE *out, const struct config_tls *t)
{
    static const char *const versions[] = { [12] = "TLSv1.2", [13] = "TLSv1.3" };
    const char *in = "      ";
    fputs("    tls:\n", out);
    key_str(out, in, "certificate", t->main.certificate);
    key_str(out, in, "key", t->main.key);
    fprintf(out, "%scertificates:%s\n", in, t->nextra ? "" : " []");
    for (size_t i = 0; i < t->nextra; i++) {
        key_str(out, "        - ", "certificate", t->extra[i].certificate);
        key_str(out, "          ", "key", t->extra[i].key);
    }
    fprintf(out, "%sprotocols: [%s", in, versions[t->min_version]);
    if (t->max_version != t->min_version)
        fprintf(out, ", %s", versions[t->max_version]);
    fputs("]\n", out);
    key_str(out, in, "ciphers", t->ciphers ? t->ciphers : tls_default_ciphers());
    key_str(out, in, "ciphersuites", t->ciphersuites ? t->ciphersuites
                                                     : tls_default_ciphersuites());
    fprintf(out, "%ssession_tickets: %s\n", in, t->session_tickets ? "on" : "off");
    fprintf(out, "%srecords: %s\n", in, t->own_records ? "wsechod" : "openssl");
}

/* The keys of a listener behind a load balancer (conflb.h). */
static void put_lb(FILE *out, const struct config_listen *l)
{
    char block[64];
    if (l->addr.ss_family == AF_UNIX) {
        fprintf(out, "    mode: \"%04o\"\n", l->mode);
        if (l->owner != NULL)
            key_str(out, "    ", "owner", l->owner);
        else
            fputs("    # owner: not set (the master's user and group)\n", out);
    }
    fprintf(out, "    proxy_protocol: %s\n", l->proxy_protocol ? "on" : "off");
    if (l->nproxy_from == 0)
        return;
    fputs("    proxy_protocol_from:\n", out);
    for (size_t i = 0; i < l->nproxy_from; i++) {
        cidr_format(&l->proxy_from[i], block, sizeof(block));
        fputs("      - ", out);
        put_str(out, block);
        fputc('\n', out);
    }
}

static void put_listen(FILE *out, const struct config *cf)
{
    fputs("listen:\n", out);
    for (size_t i = 0; i < cf->nlisten; i++) {
        const struct config_listen *l = &cf->listen[i];
        if (l->tls == NULL && !l->proxy_protocol && l->addr.ss_family != AF_UNIX) {
            fputs("  - ", out);
            put_str(out, l->text);
            fputc('\n', out);
            continue;
        }
        key_str(out, "  - ", "address", l->text);
        put_lb(out, l);
        if (l->tls != NULL)
            put_tls(out, l->tls);
    }
}

/* max_connections_per_ip and the keys around it. */
static void put_per_ip(FILE *out, const struct config *cf)
{
    static const struct { uint32_t ms; char unit; } periods[] = {
        { 1000, 's' }, { 60000, 'm' }, { 3600000, 'h' },
    };
    const struct config_rate *r = &cf->handshake_rate;
    fprintf(out, "max_connections_per_ip: %u\n", cf->max_connections_per_ip);
    if (r->count == 0) {
        fputs("handshake_rate_per_ip: \"off\"\n", out);
    } else {
        char unit = 's';
        for (size_t i = 0; i < sizeof(periods) / sizeof(periods[0]); i++)
            if (periods[i].ms == r->period_ms)
                unit = periods[i].unit;
        fprintf(out, "handshake_rate_per_ip:\n  rate: %u/%c\n  burst: %u\n", r->count, unit,
                r->burst);
    }
    fprintf(out, "per_ip_table_size: %u\nper_ip_ipv6_prefix: %u\n", cf->per_ip_table_size,
            cf->per_ip_ipv6_prefix);
}

/* A list of strings; "*" (any) when there is none and star says so. */
static void put_strings(FILE *out, const char *key, char *const *v, size_t n, int star)
{
    fprintf(out, "%s:%s\n", key, n ? "" : star ? " \"*\"" : " []");
    for (size_t i = 0; i < n; i++) {
        fputs("  - ", out);
        put_str(out, v[i]);
        fputc('\n', out);
    }
}

static void put_route(FILE *out, const struct config_route *r)
{
    const struct module *m = r->module;
    const char *conf = r->conf ? r->conf : m->conf_default;
    fputs("  ", out);
    put_str(out, r->path);
    fputs(":\n", out);
    key_str(out, "    ", "module", m->name);
    for (const struct module_key *k = m->keys; k != NULL && k->name != NULL; k++) {
        fprintf(out, "    %s: ", k->name);
        if (k->type == MODULE_KEY_SIZE)
            put_size(out, *(const size_t *)(const void *)(conf + k->offset));
        else if (k->type == MODULE_KEY_DURATION)
            put_duration(out, *(const uint64_t *)(const void *)(conf + k->offset));
        else
            fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)(const void *)
                                     (conf + k->offset));
        fputc('\n', out);
    }
}

/* The group by name, as the key takes it; the user's own when not given. */
static void put_identity(FILE *out, const struct config *cf)
{
    if (cf->user == NULL) {
        fputs("# user: not set (workers keep the master's identity)\n"
              "# group: not set (needs user)\n", out);
        return;
    }
    key_str(out, "", "user", cf->user);
    struct group *gr = getgrgid(cf->gid);
    if (gr != NULL)
        key_str(out, "", "group", gr->gr_name);
    else
        fprintf(out, "# group: gid %u has no name: the user's own group\n", (unsigned)cf->gid);
}

static void put_core(FILE *out, const struct config *cf)
{
    fprintf(out, "worker_processes: %u\n", cf->worker_processes);
    put_listen(out, cf);
    key_str(out, "", "pid_file", cf->pid_file);
    key_str(out, "", "error_log", cf->error_log);
    fprintf(out, "log_level: %s\n", log_level_name(cf->log_level));
    fprintf(out, "log_format: %s\n", log_format_name(cf->log_format));
    fprintf(out, "worker_connections: %u\n", cf->worker_connections);
    fprintf(out, "listen_backlog: %u\n", cf->listen_backlog);
    key_duration(out, "shutdown_timeout", cf->shutdown_timeout_ms);
    key_duration(out, "close_timeout", cf->close_timeout_ms);
    key_duration(out, "handshake_timeout", cf->handshake_timeout_ms);
    key_size(out, "max_header_size", cf->max_header_size);
    key_size(out, "max_message_size", cf->max_message_size);
    key_size(out, "max_pending_output", cf->max_pending_output);
    key_size(out, "worker_memory_limit", cf->worker_memory_limit);
    key_duration(out, "drain_spread", cf->drain_spread_ms);
    put_identity(out, cf);
    fprintf(out, "worker_rlimit_nofile: %u\n", cf->worker_rlimit_nofile);
    fprintf(out, "worker_cpu_affinity: %s\n", cf->worker_cpu_affinity ? "auto" : "\"off\"");
    key_size(out, "max_frame_size", cf->max_frame_size);
    key_duration(out, "idle_timeout", cf->idle_timeout_ms);
    key_duration(out, "ping_interval", cf->ping_interval_ms);
    key_duration(out, "send_timeout", cf->send_timeout_ms);
}

static void put_pmd(FILE *out, const struct config_pmd *p)
{
    fprintf(out, "permessage_deflate:\n  enabled: %s\n  server_max_window_bits: %u\n"
            "  client_max_window_bits: %u\n  server_no_context_takeover: %s\n"
            "  client_no_context_takeover: %s\n  compression_level: %u\n  mem_level: %u\n",
            p->enabled ? "on" : "off", p->server_max_window_bits, p->client_max_window_bits,
            p->server_no_context_takeover ? "on" : "off",
            p->client_no_context_takeover ? "on" : "off", p->compression_level, p->mem_level);
    fputs("  ", out);
    key_size(out, "server_history", p->server_history);
    fputs("  ", out);
    key_size(out, "min_size", p->min_size);
}

static void put_status(FILE *out, const struct config *cf)
{
    put_pmd(out, &cf->pmd);
    key_str(out, "", "access_log", cf->access_log ? cf->access_log : "off");
    fprintf(out, "access_log_format: %s\n", cf->access_log_json ? "json" : "text");
    if (cf->status.addrlen != 0) {
        fputs("status:\n", out);
        key_str(out, "  ", "listen", cf->status.text);
    } else {
        fputs("# status: none (no status listener)\n", out);
    }
    if (cf->healthz_path == NULL && cf->readyz_path == NULL) {
        fputs("# health_paths: none (only on the status listener)\n", out);
        return;
    }
    fputs("health_paths:\n", out);
    if (cf->healthz_path != NULL)
        key_str(out, "  ", "healthz", cf->healthz_path);
    if (cf->readyz_path != NULL)
        key_str(out, "  ", "readyz", cf->readyz_path);
}

int confdump_write(FILE *out, const struct config *cf)
{
    fputs("# wsechod/" WSECHOD_VERSION ": the effective configuration (wsechod -T),\n"
          "# every key with its default filled in.\n", out);
    put_core(out, cf);
    put_strings(out, "allowed_origins", cf->origins, cf->norigins, 1);
    put_strings(out, "subprotocols", cf->subprotocols, cf->nsubprotocols, 0);
    fputs("routes:\n", out);
    for (size_t i = 0; i < cf->nroutes; i++)
        put_route(out, &cf->routes[i]);
    put_status(out, cf);
    fprintf(out, "reload_handoff: %s\n", cf->reload_handoff ? "on" : "off");
    key_duration(out, "upgrade_timeout", cf->upgrade_timeout_ms);
    key_duration(out, "session_ticket_rotation", cf->ticket_rotation_ms);
    put_per_ip(out, cf);
    if (fflush(out) != 0 || ferror(out)) {
        if (errno == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}
