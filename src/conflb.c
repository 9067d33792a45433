#include "conflb.h"

#include <grp.h>
#include <stdio.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "cidr.h"

/* A node, marked so the checks after parsing can point at it. */
static yaml_node_t *mark_proxy_from;

static int proxy_from_item(struct parse *p, yaml_node_t *n, struct config_listen *l)
{
    const char *s = conf_scalar(p, n, "proxy_protocol_from");
    struct config_cidr c;
    if (s == NULL)
        return -1;
    int r = cidr_parse(s, &c);
    if (r == -2)
        return conf_fail(p, n, "proxy_protocol_from: '%s' has bits set past its prefix "
                         "(a network address is expected)", s);
    if (r < 0)
        return conf_fail(p, n, "proxy_protocol_from: '%s' is not an address or address block "
                         "such as 10.0.0.0/8 or ::1/128", s);
    struct config_cidr *grown = realloc(l->proxy_from, (l->nproxy_from + 1) * sizeof(*grown));
    if (grown == NULL)
        return conf_fail(p, n, "proxy_protocol_from: out of memory");
    l->proxy_from = grown;
    l->proxy_from[l->nproxy_from++] = c;
    return 0;
}

static int proxy_from(struct parse *p, yaml_node_t *n, struct config_listen *l)
{
    mark_proxy_from = n;
    if (n->type == YAML_SCALAR_NODE)
        return proxy_from_item(p, n, l);
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top)
        return conf_fail(p, n, "proxy_protocol_from: expected a list of address blocks");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
        if (proxy_from_item(p, yaml_document_get_node(&p->doc, *it), l) < 0)
            return -1;
    return 0;
}

/* Octal permission bits: "0660", "660", "0600". */
static int unix_mode(struct parse *p, yaml_node_t *n, struct config_listen *l)
{
    const char *s = conf_scalar(p, n, "mode");
    unsigned v = 0;
    if (s == NULL)
        return -1;
    if (*s == '\0' || strlen(s) > 4 || strspn(s, "01234567") != strlen(s))
        return conf_fail(p, n, "mode: expected octal permission bits such as \"0660\", got '%s'",
                         s);
    for (; *s; s++)
        v = v * 8 + (unsigned)(*s - '0');
    if (v > 0777)
        return conf_fail(p, n, "mode: only permission bits (0..0777)");
    l->mode = v;
    return 0;
}

/* "user" or "user:group", names resolved now like the `user` key. */
static int unix_owner(struct parse *p, yaml_node_t *n, struct config_listen *l)
{
    const char *s = conf_scalar(p, n, "owner");
    char name[256];
    if (s == NULL)
        return -1;
    const char *colon = strchr(s, ':');
    size_t ul = colon ? (size_t)(colon - s) : strlen(s);
    if (ul == 0 || ul >= sizeof(name) || (colon && colon[1] == '\0'))
        return conf_fail(p, n, "owner: expected user or user:group, got '%s'", s);
    memcpy(name, s, ul);
    name[ul] = '\0';
    struct passwd *pw = getpwnam(name);
    if (pw == NULL)
        return conf_fail(p, n, "owner: unknown user '%s'", name);
    l->uid = pw->pw_uid;
    l->gid = pw->pw_gid;
    if (colon) {
        struct group *gr = getgrnam(colon + 1);
        if (gr == NULL)
            return conf_fail(p, n, "owner: unknown group '%s'", colon + 1);
        l->gid = gr->gr_gid;
    }
    free(l->owner);
    if ((l->owner = strdup(s)) == NULL)
        return conf_fail(p, n, "owner: out of memory");
    return 0;
}

int conf_lb_listen_key(struct parse *p, yaml_node_t *kn, yaml_node_t *vn,
                       struct config_listen *l)
{
    const char *name = (const char *)kn->data.scalar.value;
    if (strcmp(name, "proxy_protocol") == 0) {
        struct key k = { "proxy_protocol", NULL, 0, 0, 0 };
        return conf_switch(p, vn, (struct config *)(void *)&l->proxy_protocol, &k);
    }
    if (strcmp(name, "proxy_protocol_from") == 0)
        return proxy_from(p, vn, l);
    if (strcmp(name, "mode") == 0 || strcmp(name, "owner") == 0) {
        if (l->addr.ss_family != AF_UNIX)
            return conf_fail(p, kn, "%s: only for unix: addresses", name);
        return name[0] == 'm' ? unix_mode(p, vn, l) : unix_owner(p, vn, l);
    }
    return 1;
}

int conf_lb_unix_address(struct parse *p, yaml_node_t *n, const char *s,
                         struct config_listen *l)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&l->addr;
    if (strncmp(s, "unix:", 5) != 0)
        return 1;
    const char *path = s + 5;
    memset(l, 0, sizeof(*l));
    if (path[0] != '/')
        return conf_fail(p, n, "listen: '%s': a unix socket needs an absolute path", s);
    if (strlen(path) >= sizeof(un->sun_path))
        return conf_fail(p, n, "listen: '%s': the path is longer than %zu bytes", s,
                         sizeof(un->sun_path) - 1);
    /* ';' and '=' separate sockets in the binary upgrade's environment. */
    if (strpbrk(path, ";=,") != NULL)
        return conf_fail(p, n, "listen: '%s': ';', '=' and ',' are not allowed in the path", s);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, strlen(path) + 1);
    l->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    snprintf(l->text, sizeof(l->text), "%s", s);
    l->mode = CONF_UNIX_MODE_DEFAULT;
    return 0;
}

int conf_lb_listen_check(struct parse *p, yaml_node_t *n, const struct config_listen *l)
{
    if (l->nproxy_from && !l->proxy_protocol)
        return conf_fail(p, mark_proxy_from ? mark_proxy_from : n,
                         "proxy_protocol_from: needs proxy_protocol: on");
    if (l->nproxy_from && l->addr.ss_family == AF_UNIX)
        return conf_fail(p, mark_proxy_from ? mark_proxy_from : n,
                         "proxy_protocol_from: not for unix: addresses (the socket's mode and "
                         "owner decide who may connect)");
    if (l->proxy_protocol && !l->nproxy_from && l->addr.ss_family != AF_UNIX)
        return conf_fail(p, n, "listen: %s: proxy_protocol: on needs proxy_protocol_from (the "
                         "addresses of the balancers that may send the header)", l->text);
    mark_proxy_from = NULL;
    return 0;
}

void conf_lb_listen_free(struct config_listen *l)
{
    free(l->proxy_from);
    free(l->owner);
    l->proxy_from = NULL;
    l->owner = NULL;
    l->nproxy_from = 0;
}

/* "20/s", "100/m", "1000/h". */
static int rate_value(struct parse *p, yaml_node_t *n, const char *key, struct config_rate *r)
{
    static const struct { const char *unit; uint32_t ms; } units[] = {
        { "/s", 1000 }, { "/m", 60000 }, { "/h", 3600000 },
    };
    const char *s = conf_scalar(p, n, key), *unit;
    uint64_t v;
    if (s == NULL)
        return -1;
    if (conf_number(s, &v, &unit) == 0 && v >= 1 && v <= 1000000) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(unit, units[i].unit) == 0) {
                r->count = (uint32_t)v;
                r->period_ms = units[i].ms;
                return 0;
            }
        }
    }
    return conf_fail(p, n, "%s: expected a rate such as 20/s, 100/m or 1000/h (1..1000000 "
                     "per period), got '%s'", key, s);
}

static int rate_mapping(struct parse *p, yaml_node_t *n, const struct key *k, struct config_rate *r)
{
    yaml_node_t *burst = NULL;
    int have_rate = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(&p->doc, pr->value);
        const char *name = conf_scalar(p, kn, k->name);
        if (name == NULL)
            return -1;
        if (strcmp(name, "rate") == 0) {
            if (rate_value(p, vn, "handshake_rate_per_ip.rate", r) < 0)
                return -1;
            have_rate = 1;
        } else if (strcmp(name, "burst") == 0) {
            burst = vn;
        } else {
            return conf_fail(p, kn, "%s: unknown key '%s' (rate, burst)", k->name, name);
        }
    }
    if (!have_rate)
        return conf_fail(p, n, "%s: a mapping needs 'rate'", k->name);
    r->burst = r->count;
    if (burst != NULL) {
        struct key bk = { "handshake_rate_per_ip.burst", NULL, 0, 1, 1000000 };
        uint64_t v;
        if (conf_get_uint(p, burst, &bk, &v) < 0)
            return -1;
        r->burst = (uint32_t)v;
    }
    return 0;
}

int conf_rate(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    struct config_rate *r = &cf->handshake_rate;
    memset(r, 0, sizeof(*r));
    if (n->type == YAML_MAPPING_NODE)
        return rate_mapping(p, n, k, r);
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (strcmp(s, "off") == 0)
        return 0;
    if (rate_value(p, n, k->name, r) < 0)
        return -1;
    r->burst = r->count;
    return 0;
}
