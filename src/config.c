#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "module.h"
#include "modules.h"

#include "conflisten.h"
#include "conflb.h"
#include "confpmd.h"
#include "confstatus.h"
#include "confval.h"
#include "tls.h"

static unsigned online_cpus(unsigned max)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > (long)max ? max : (unsigned)cpus;
}

static int parse_workers(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    if (n->type == YAML_SCALAR_NODE && strcmp((char *)n->data.scalar.value, "auto") == 0) {
        cf->worker_processes = online_cpus((unsigned)k->max);
        return 0;
    }
    const char *s = conf_scalar(p, n, k->name), *unit;
    uint64_t v;
    if (s == NULL)
        return -1;
    if (conf_number(s, &v, &unit) < 0 || *unit != '\0')
        return conf_fail(p, n, "%s: expected an integer or 'auto', got '%s'", k->name, s);
    if (conf_range(p, n, k, v, s) < 0)
        return -1;
    cf->worker_processes = (unsigned)v;
    return 0;
}

static int parse_log_level(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (log_level_parse(s, &cf->log_level) < 0)
        return conf_fail(p, n, "%s: expected debug, info, notice, warn or error, got '%s'",
                    k->name, s);
    return 0;
}

static int parse_log_format(struct parse *p, yaml_node_t *n, struct config *cf,
                            const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (log_format_parse(s, &cf->log_format) < 0)
        return conf_fail(p, n, "%s: expected text or json, got '%s'", k->name, s);
    return 0;
}

/* A module key's value, parsed like a core key of its type; the module's
 * block stands where the parsers expect the config (they only add the
 * key's offset to it). */
static int module_value(struct parse *p, yaml_node_t *n, const struct module_key *mk,
                        void *conf)
{
    static const key_fn fns[] = {
        [MODULE_KEY_DURATION] = conf_duration, [MODULE_KEY_SIZE] = conf_size,
    };
    struct key k = { mk->name, NULL, mk->offset, mk->min, mk->max };
    if (mk->type == MODULE_KEY_UINT) {
        uint64_t v;
        if (conf_get_uint(p, n, &k, &v) < 0)
            return -1;
        *FIELD(conf, &k, uint64_t) = v;
        return 0;
    }
    return fns[mk->type](p, n, (struct config *)conf, &k);
}

static int module_key(struct parse *p, yaml_node_t *kn, yaml_node_t *vn,
                      struct config_route *r)
{
    const char *name = conf_scalar(p, kn, "routes");
    const struct module_key *mk = r->module->keys;
    if (name == NULL)
        return -1;
    for (; mk != NULL && mk->name != NULL; mk++)
        if (strcmp(mk->name, name) == 0)
            return module_value(p, vn, mk, r->conf);
    return conf_fail(p, kn, "routes: %s: module %s has no key '%s'", r->path, r->module->name, name);
}

/* `module: NAME` first, since it says which keys the others may be. */
static const char *route_module(struct parse *p, yaml_node_t *vn, const char *path)
{
    if (vn->type != YAML_MAPPING_NODE)
        return conf_scalar(p, vn, "routes");
    for (yaml_node_pair_t *it = vn->data.mapping.pairs.start; it < vn->data.mapping.pairs.top; it++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, it->key);
        if (kn->type == YAML_SCALAR_NODE && strcmp((char *)kn->data.scalar.value, "module") == 0)
            return conf_scalar(p, yaml_document_get_node(&p->doc, it->value), "routes");
    }
    conf_fail(p, vn, "routes: %s: a mapping needs 'module'", path);
    return NULL;
}

static int route_conf(struct parse *p, yaml_node_t *vn, struct config_route *r)
{
    const struct module *m = r->module;
    if (m->conf_size == 0 && vn->type != YAML_MAPPING_NODE)
        return 0;
    if ((r->conf = calloc(1, m->conf_size ? m->conf_size : 1)) == NULL)
        return conf_fail(p, vn, "routes: out of memory");
    if (m->conf_default != NULL)
        memcpy(r->conf, m->conf_default, m->conf_size);
    if (vn->type != YAML_MAPPING_NODE)
        return 0;
    for (yaml_node_pair_t *it = vn->data.mapping.pairs.start; it < vn->data.mapping.pairs.top; it++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, it->key);
        if (kn->type == YAML_SCALAR_NODE && strcmp((char *)kn->data.scalar.value, "module") == 0)
            continue;
        if (module_key(p, kn, yaml_document_get_node(&p->doc, it->value), r) < 0)
            return -1;
    }
    return 0;
}

static int add_route(struct parse *p, yaml_node_pair_t *pair, struct config *cf)
{
    yaml_node_t *kn = yaml_document_get_node(&p->doc, pair->key);
    yaml_node_t *vn = yaml_document_get_node(&p->doc, pair->value);
    const char *path = conf_scalar(p, kn, "routes"), *name;
    if (path == NULL || (name = route_module(p, vn, path)) == NULL)
        return -1;
    if (path[0] != '/' || strpbrk(path, "?# \t") != NULL)
        return conf_fail(p, kn, "routes: '%s' is not a URL path (must start with '/', "
                    "no query or spaces)", path);
    if (config_route_find(cf, path, strlen(path)) != NULL)
        return conf_fail(p, kn, "routes: duplicate path '%s'", path);
    const struct module *m = modules_find(name);
    if (m == NULL)
        return conf_fail(p, vn, "routes: unknown module '%s' (available: %s)", name, modules_names());
    struct config_route *grown = realloc(cf->routes, (cf->nroutes + 1) * sizeof(*grown));
    if (grown == NULL)
        return conf_fail(p, kn, "routes: out of memory");
    cf->routes = grown;
    struct config_route *r = &cf->routes[cf->nroutes++];
    *r = (struct config_route){ strdup(path), m, NULL, cf };
    return route_conf(p, vn, r);
}

static void routes_clear(struct config *cf)
{
    for (size_t i = 0; i < cf->nroutes; i++) {
        free(cf->routes[i].path);
        free(cf->routes[i].conf);
    }
    cf->nroutes = 0;
}

static int parse_routes(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    routes_clear(cf);
    if (n->type != YAML_MAPPING_NODE)
        return conf_fail(p, n, "%s: expected a mapping of URL path to module", k->name);
    for (yaml_node_pair_t *pair = n->data.mapping.pairs.start;
         pair < n->data.mapping.pairs.top; pair++)
        if (add_route(p, pair, cf) < 0)
            return -1;
    if (cf->nroutes == 0)
        return conf_fail(p, n, "%s: at least one route is required", k->name);
    return 0;
}

static int parse_user(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    if (conf_string(p, n, cf, k) < 0)
        return -1;
    struct passwd *pw = getpwnam(cf->user);
    if (pw == NULL)
        return conf_fail(p, n, "%s: unknown user '%s'", k->name, cf->user);
    cf->uid = pw->pw_uid;
    if (!p->group_set)
        cf->gid = pw->pw_gid;
    return 0;
}

static int parse_group(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    struct group *gr = getgrnam(s);
    if (gr == NULL)
        return conf_fail(p, n, "%s: unknown group '%s'", k->name, s);
    cf->gid = gr->gr_gid;
    p->group_set = n;
    return 0;
}

static int parse_affinity(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (strcmp(s, "auto") != 0 && strcmp(s, "off") != 0)
        return conf_fail(p, n, "%s: expected 'auto' or 'off', got '%s'", k->name, s);
    cf->worker_cpu_affinity = strcmp(s, "auto") == 0;
    return 0;
}

/* on/off (and the YAML 1.1 spellings true/false, yes/no) into an int. */
static void strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A list of non-empty strings without spaces or commas, or "*" (any). */
static int conf_strings(struct parse *p, yaml_node_t *n, const struct key *k,
                         char ***out, size_t *nout)
{
    if (n->type == YAML_SCALAR_NODE && strcmp((char *)n->data.scalar.value, "*") == 0)
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return conf_fail(p, n, "%s: expected a list of strings or \"*\"", k->name);
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(&p->doc, *it);
        const char *s = conf_scalar(p, item, k->name);
        if (s == NULL)
            return -1;
        if (*s == '\0' || strpbrk(s, " \t,") != NULL)
            return conf_fail(p, item, "%s: '%s' must be one token, no spaces or commas", k->name, s);
        char **grown = realloc(*out, (*nout + 1) * sizeof(*grown));
        if (grown == NULL || (grown[*nout] = strdup(s)) == NULL) {
            if (grown)
                *out = grown;
            return conf_fail(p, item, "%s: out of memory", k->name);
        }
        *out = grown;
        (*nout)++;
    }
    return 0;
}

static int parse_origins(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    return conf_strings(p, n, k, &cf->origins, &cf->norigins);
}

static int parse_subprotocols(struct parse *p, yaml_node_t *n, struct config *cf,
                              const struct key *k)
{
    if (n->type == YAML_SCALAR_NODE)
        return conf_fail(p, n, "%s: expected a list of protocol names", k->name);
    return conf_strings(p, n, k, &cf->subprotocols, &cf->nsubprotocols);
}

#define OFF(f) offsetof(struct config, f)
static const struct key keys[] = {
    { "worker_processes",   parse_workers,   0, 1, 512 },
    { "listen",             conf_listen,     0, 0, 0 },
    { "pid_file",           conf_string,    OFF(pid_file), 0, 0 },
    { "error_log",          conf_string,    OFF(error_log), 0, 0 },
    { "log_level",          parse_log_level, 0, 0, 0 },
    { "log_format",         parse_log_format, 0, 0, 0 },
    { "worker_connections", conf_uint,      OFF(worker_connections), 1, 1000000 },
    { "listen_backlog",     conf_uint,      OFF(listen_backlog), 1, 65535 },
    { "shutdown_timeout",   conf_duration,  OFF(shutdown_timeout_ms), 0, 86400000 },
    { "close_timeout",      conf_duration,  OFF(close_timeout_ms), 10, 600000 },
    { "handshake_timeout",  conf_duration,  OFF(handshake_timeout_ms), 10, 3600000 },
    { "max_header_size",    conf_size,      OFF(max_header_size), 256, 1 << 20 },
    { "max_message_size",   conf_size,      OFF(max_message_size), 1, 1 << 30 },
    { "max_pending_output", conf_size,      OFF(max_pending_output), 1024, 1 << 30 },
    { "worker_memory_limit", conf_size,     OFF(worker_memory_limit), 1 << 20, (uint64_t)1 << 40 },
    { "drain_spread",       conf_duration,  OFF(drain_spread_ms), 0, 3600000 },
    { "user",               parse_user,      OFF(user), 0, 0 },
    { "group",              parse_group,     0, 0, 0 },
    { "worker_rlimit_nofile", conf_uint,    OFF(worker_rlimit_nofile), 0, 1 << 24 },
    { "worker_cpu_affinity", parse_affinity, 0, 0, 0 },
    { "max_frame_size",     conf_size,      OFF(max_frame_size), 1, 1 << 30 },
    { "idle_timeout",       conf_duration,  OFF(idle_timeout_ms), 0, 86400000 },
    { "ping_interval",      conf_duration,  OFF(ping_interval_ms), 0, 86400000 },
    { "send_timeout",       conf_duration,  OFF(send_timeout_ms), 100, 3600000 },
    { "allowed_origins",    parse_origins,   0, 0, 0 },
    { "subprotocols",       parse_subprotocols, 0, 0, 0 },
    { "routes",             parse_routes,    0, 0, 0 },
    { "permessage_deflate", conf_pmd,        0, 0, 0 },
    { "access_log",         conf_access_log, 0, 0, 0 },
    { "access_log_format",  conf_access_log_format, 0, 0, 0 },
    { "status",             conf_status,     0, 0, 0 },
    { "health_paths",       conf_health_paths, 0, 0, 0 },
    { "reload_handoff",     conf_switch,     OFF(reload_handoff), 0, 0 },
    { "upgrade_timeout",    conf_duration,  OFF(upgrade_timeout_ms), 100, 3600000 },
    { "session_ticket_rotation", conf_duration, OFF(ticket_rotation_ms), 1000, 86400000 },
    { "max_connections_per_ip", conf_uint,  OFF(max_connections_per_ip), 0, 1000000 },
    { "handshake_rate_per_ip", conf_rate,    0, 0, 0 },
    { "per_ip_table_size",  conf_uint,      OFF(per_ip_table_size), 1024, 1 << 20 },
    { "per_ip_ipv6_prefix", conf_uint,      OFF(per_ip_ipv6_prefix), 1, 128 },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static int defaults(struct config *cf)
{
    cf->worker_processes = online_cpus(512);
    cf->pid_file = strdup("/run/wsechod.pid");
    cf->error_log = strdup("stderr");
    cf->log_level = LOGL_NOTICE;
    cf->log_format = LOGF_TEXT;
    cf->worker_connections = 10240;
    cf->listen_backlog = 511;
    cf->shutdown_timeout_ms = 10000;
    cf->close_timeout_ms = 5000;
    cf->handshake_timeout_ms = 10000;
    cf->max_header_size = 8192;
    cf->max_message_size = 16 << 20;
    cf->max_pending_output = 1 << 20;
    cf->worker_memory_limit = (size_t)1 << 30;
    cf->drain_spread_ms = 1000;
    cf->max_frame_size = 16 << 20;
    cf->idle_timeout_ms = 120000;
    cf->ping_interval_ms = 30000;
    cf->send_timeout_ms = 30000;
    cf->reload_handoff = 1;
    cf->upgrade_timeout_ms = 30000;
    cf->ticket_rotation_ms = 3600000;
    cf->per_ip_table_size = 65536;
    cf->per_ip_ipv6_prefix = 64;
    cf->pmd = (struct config_pmd){ .server_max_window_bits = 15, .client_max_window_bits = 15,
                                   .server_no_context_takeover = 1,
                                   .client_no_context_takeover = 1, .server_history = 8192,
                                   .compression_level = 1, .mem_level = 8, .min_size = 64 };
    cf->uid = getuid();
    cf->gid = getgid();
    cf->listen = calloc(1, sizeof(*cf->listen));
    cf->routes = calloc(1, sizeof(*cf->routes));
    if (!cf->pid_file || !cf->error_log || !cf->listen || !cf->routes)
        return -1;
    cf->nlisten = 1;
    conf_listen_default(&cf->listen[0]);
    cf->nroutes = 1;
    cf->routes[0] = (struct config_route){ strdup("/"), modules_find("echo"), NULL, cf };
    return cf->routes[0].path ? 0 : -1;
}

/* Rules that involve more than one key. */
static int check_whole(struct parse *p, struct config *cf)
{
    if (cf->drain_spread_ms > cf->shutdown_timeout_ms) {
        if (p->spread)
            return conf_fail(p, p->spread, "drain_spread: must not exceed shutdown_timeout (%llu ms)",
                        (unsigned long long)cf->shutdown_timeout_ms);
        cf->drain_spread_ms = cf->shutdown_timeout_ms; /* the default yields */
    }
    if (p->group_set && cf->user == NULL)
        return conf_fail(p, p->group_set, "group: needs 'user' too");
    if (cf->idle_timeout_ms && cf->ping_interval_ms >= cf->idle_timeout_ms)
        cf->ping_interval_ms = 0; /* no time to ping before giving up */
    return conf_status_check(p, cf);
}

static int parse_root(struct parse *p, struct config *cf)
{
    yaml_node_t *root = yaml_document_get_root_node(&p->doc);
    int seen[NKEYS] = { 0 };
    if (root == NULL)
        return check_whole(p, cf); /* an empty file: all defaults */
    if (root->type != YAML_MAPPING_NODE)
        return conf_fail(p, root, "the configuration must be a mapping of keys to values");
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pair->key);
        const char *name = conf_scalar(p, kn, "key");
        size_t i;
        if (name == NULL)
            return -1;
        for (i = 0; i < NKEYS && strcmp(keys[i].name, name) != 0; i++)
            ;
        if (i == NKEYS)
            return conf_fail(p, kn, "unknown key '%s'", name);
        if (seen[i]++)
            return conf_fail(p, kn, "duplicate key '%s'", name);
        yaml_node_t *vn = yaml_document_get_node(&p->doc, pair->value);
        if (keys[i].fn(p, vn, cf, &keys[i]) < 0)
            return -1;
        if (strcmp(name, "drain_spread") == 0)
            p->spread = vn;
    }
    return check_whole(p, cf);
}

static int load_document(struct parse *p, FILE *f)
{
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int ok = yaml_parser_load(&parser, &p->doc);
    if (!ok) {
        const yaml_mark_t *m = &parser.problem_mark, *c = &parser.context_mark;
        int k = snprintf(p->err, CONFIG_ERR_MAX, "%s:%zu:%zu: YAML syntax error: %s",
                         p->file, m->line + 1, m->column + 1,
                         parser.problem ? parser.problem : "unreadable input");
        if (parser.context && k > 0 && k < CONFIG_ERR_MAX)
            snprintf(p->err + k, CONFIG_ERR_MAX - (size_t)k, " (%s started at %zu:%zu)",
                     parser.context, c->line + 1, c->column + 1);
    }
    yaml_parser_delete(&parser);
    return ok ? 0 : -1;
}

struct config *config_load(const char *file, char err[CONFIG_ERR_MAX])
{
    struct parse p = { .file = file, .err = err };
    struct config *cf = calloc(1, sizeof(*cf));
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: cannot open: %s", file, strerror(errno));
        free(cf);
        return NULL;
    }
    int rc = -1;
    if (cf == NULL || defaults(cf) < 0 || (cf->file = strdup(file)) == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: out of memory", file);
    } else if (load_document(&p, f) == 0) {
        rc = parse_root(&p, cf);
        yaml_document_delete(&p.doc);
    }
    if (rc == 0)
        rc = tls_load(cf, err); /* every certificate and key, checked now */
    fclose(f);
    if (rc < 0) {
        config_free(cf);
        return NULL;
    }
    return cf;
}

void config_free(struct config *cf)
{
    if (cf == NULL)
        return;
    routes_clear(cf);
    free(cf->routes);
    conf_listen_free(cf);
    conf_status_free(cf);
    free(cf->pid_file);
    free(cf->error_log);
    free(cf->user);
    strings_free(cf->origins, cf->norigins);
    strings_free(cf->subprotocols, cf->nsubprotocols);
    free(cf->file);
    free(cf);
}

const struct config_route *config_route_find(const struct config *cf,
                                             const char *path, size_t len)
{
    for (size_t i = 0; i < cf->nroutes; i++)
        if (strlen(cf->routes[i].path) == len && memcmp(cf->routes[i].path, path, len) == 0)
            return &cf->routes[i];
    return NULL;
}

const char *config_key_name(size_t i)
{
    return i < NKEYS ? keys[i].name : NULL;
}
