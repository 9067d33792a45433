#include "confstatus.h"

#include <stdlib.h>
#include <string.h>

#include "conflisten.h"

/* Walks a mapping's pairs: fn gets each key's name and value node. */
static int each_pair(struct parse *p, yaml_node_t *n, const char *key, struct config *cf,
                     int (*fn)(struct parse *, const char *, yaml_node_t *, yaml_node_t *,
                               struct config *))
{
    if (n->type != YAML_MAPPING_NODE)
        return conf_fail(p, n, "%s: expected a mapping", key);
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(&p->doc, pr->value);
        const char *name = conf_scalar(p, kn, key);
        if (name == NULL || fn(p, name, kn, vn, cf) < 0)
            return -1;
    }
    return 0;
}

static int status_key(struct parse *p, const char *name, yaml_node_t *kn, yaml_node_t *vn,
                      struct config *cf)
{
    if (strcmp(name, "listen") != 0)
        return conf_fail(p, kn, "status: unknown key '%s' (expected listen)", name);
    const char *s = conf_scalar(p, vn, "status.listen");
    if (s == NULL)
        return -1;
    if (conf_listen_address(s, &cf->status) < 0)
        return conf_fail(p, vn, "status.listen: invalid address '%s' (expected IPv4:port, "
                         "*:port or [IPv6]:port with a port in 1..65535)", s);
    p->status_at = vn;
    return 0;
}

int conf_status(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    memset(&cf->status, 0, sizeof(cf->status));
    if (each_pair(p, n, k->name, cf, status_key) < 0)
        return -1;
    if (cf->status.addrlen == 0)
        return conf_fail(p, n, "status: 'listen' is required");
    return 0;
}

static int health_key(struct parse *p, const char *name, yaml_node_t *kn, yaml_node_t *vn,
                      struct config *cf)
{
    char **out = strcmp(name, "healthz") == 0 ? &cf->healthz_path
               : strcmp(name, "readyz") == 0 ? &cf->readyz_path : NULL;
    if (out == NULL)
        return conf_fail(p, kn, "health_paths: unknown key '%s' (expected healthz or readyz)",
                         name);
    const char *s = conf_scalar(p, vn, "health_paths");
    if (s == NULL)
        return -1;
    if (s[0] != '/' || strpbrk(s, "?# \t") != NULL)
        return conf_fail(p, vn, "health_paths.%s: '%s' is not an absolute path", name, s);
    p->health_at[out == &cf->readyz_path] = vn;
    free(*out);
    if ((*out = strdup(s)) == NULL)
        return conf_fail(p, vn, "health_paths: out of memory");
    return 0;
}

int conf_health_paths(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    return each_pair(p, n, k->name, cf, health_key);
}

int conf_status_check(struct parse *p, const struct config *cf)
{
    const char *paths[2] = { cf->healthz_path, cf->readyz_path };
    for (size_t i = 0; cf->status.addrlen && i < cf->nlisten; i++)
        if (strcmp(cf->listen[i].text, cf->status.text) == 0)
            return conf_fail(p, p->status_at, "status.listen: '%s' is also in listen",
                             cf->status.text);
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; paths[k] && i < cf->nroutes; i++)
            if (strcmp(cf->routes[i].path, paths[k]) == 0)
                return conf_fail(p, p->health_at[k], "health_paths.%s: '%s' is a WebSocket "
                                 "route", k ? "readyz" : "healthz", paths[k]);
    return 0;
}

int conf_access_log(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (*s == '\0')
        return conf_fail(p, n, "%s: expected a path, \"stderr\" or \"off\"", k->name);
    free(cf->access_log);
    cf->access_log = NULL;
    if (strcmp(s, "off") != 0 && (cf->access_log = strdup(s)) == NULL)
        return conf_fail(p, n, "%s: out of memory", k->name);
    return 0;
}

int conf_access_log_format(struct parse *p, yaml_node_t *n, struct config *cf,
                           const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (strcmp(s, "text") != 0 && strcmp(s, "json") != 0)
        return conf_fail(p, n, "%s: '%s' is not text or json", k->name, s);
    cf->access_log_json = strcmp(s, "json") == 0;
    return 0;
}

void conf_status_free(struct config *cf)
{
    free(cf->access_log);
    free(cf->healthz_path);
    free(cf->readyz_path);
}
