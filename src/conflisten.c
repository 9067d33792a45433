#include "conflisten.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conflb.h"
#include "tls.h"

static void cert_free(struct config_cert *c)
{
    free(c->certificate);
    free(c->key);
}

static void tls_settings_free(struct config_tls *t)
{
    if (t == NULL)
        return;
    tls_ctx_free(t);
    cert_free(&t->main);
    for (size_t i = 0; i < t->nextra; i++)
        cert_free(&t->extra[i]);
    free(t->extra);
    free(t->ciphers);
    free(t->ciphersuites);
    free(t);
}

/* The string value of n into *out (strdup'ed). */
static int take_string(struct parse *p, yaml_node_t *n, const char *key, char **out)
{
    const char *s = conf_scalar(p, n, key);
    if (s == NULL)
        return -1;
    if (s[0] == '\0')
        return conf_fail(p, n, "%s: must not be empty", key);
    free(*out);
    if ((*out = strdup(s)) == NULL)
        return conf_fail(p, n, "%s: out of memory", key);
    return 0;
}

/* {certificate: FILE, key: FILE}, or those two keys of the tls mapping. */
static int cert_key(struct parse *p, yaml_node_t *kn, yaml_node_t *vn, struct config_cert *c)
{
    const char *name = (const char *)kn->data.scalar.value;
    if (strcmp(name, "certificate") == 0) {
        c->line = (unsigned)vn->start_mark.line + 1;
        c->col = (unsigned)vn->start_mark.column + 1;
        return take_string(p, vn, "tls.certificate", &c->certificate);
    }
    if (strcmp(name, "key") == 0)
        return take_string(p, vn, "tls.key", &c->key);
    return 1; /* not one of them */
}

static int cert_done(struct parse *p, yaml_node_t *n, const struct config_cert *c)
{
    if (c->certificate == NULL || c->key == NULL)
        return conf_fail(p, n, "tls: needs both 'certificate' and 'key'");
    return 0;
}

static int parse_extra(struct parse *p, yaml_node_t *n, struct config_tls *t)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return conf_fail(p, n, "tls.certificates: expected a list of {certificate, key}");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *en = yaml_document_get_node(&p->doc, *it);
        if (en->type != YAML_MAPPING_NODE)
            return conf_fail(p, en, "tls.certificates: expected {certificate: FILE, key: FILE}");
        struct config_cert *grown = realloc(t->extra, (t->nextra + 1) * sizeof(*grown));
        if (grown == NULL)
            return conf_fail(p, en, "tls.certificates: out of memory");
        t->extra = grown;
        struct config_cert *c = &t->extra[t->nextra++];
        memset(c, 0, sizeof(*c));
        for (yaml_node_pair_t *pr = en->data.mapping.pairs.start; pr < en->data.mapping.pairs.top; pr++) {
            yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
            int r = kn->type == YAML_SCALAR_NODE
                    ? cert_key(p, kn, yaml_document_get_node(&p->doc, pr->value), c) : 1;
            if (r < 0)
                return -1;
            if (r > 0)
                return conf_fail(p, kn, "tls.certificates: unknown key (expected certificate, key)");
        }
        if (cert_done(p, en, c) < 0)
            return -1;
    }
    return 0;
}

static int version_of(const char *s)
{
    return strcmp(s, "TLSv1.2") == 0 ? 12 : strcmp(s, "TLSv1.3") == 0 ? 13 : 0;
}

/* protocols: [TLSv1.2, TLSv1.3]: the lowest and highest named. */
static int parse_protocols(struct parse *p, yaml_node_t *n, struct config_tls *t)
{
    if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top)
        return conf_fail(p, n, "tls.protocols: expected a list such as [TLSv1.2, TLSv1.3]");
    t->min_version = 99;
    t->max_version = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *vn = yaml_document_get_node(&p->doc, *it);
        const char *s = conf_scalar(p, vn, "tls.protocols");
        int v = s ? version_of(s) : 0;
        if (s == NULL)
            return -1;
        if (v == 0)
            return conf_fail(p, vn, "tls.protocols: '%s' is not offered (TLSv1.2, TLSv1.3; "
                             "older versions are refused)", s);
        t->min_version = v < t->min_version ? v : t->min_version;
        t->max_version = v > t->max_version ? v : t->max_version;
    }
    return 0;
}

static int tls_key(struct parse *p, yaml_node_t *kn, yaml_node_t *vn, struct config_tls *t)
{
    const char *name = (const char *)kn->data.scalar.value;
    int r = cert_key(p, kn, vn, &t->main);
    if (r <= 0)
        return r;
    if (strcmp(name, "certificates") == 0)
        return parse_extra(p, vn, t);
    if (strcmp(name, "protocols") == 0)
        return parse_protocols(p, vn, t);
    if (strcmp(name, "ciphers") == 0)
        return take_string(p, vn, "tls.ciphers", &t->ciphers);
    if (strcmp(name, "ciphersuites") == 0)
        return take_string(p, vn, "tls.ciphersuites", &t->ciphersuites);
    if (strcmp(name, "session_tickets") == 0) {
        const char *s = conf_scalar(p, vn, "tls.session_tickets");
        if (s == NULL)
            return -1;
        if (strcmp(s, "on") && strcmp(s, "off") && strcmp(s, "true") && strcmp(s, "false"))
            return conf_fail(p, vn, "tls.session_tickets: expected on or off, got '%s'", s);
        t->session_tickets = strcmp(s, "on") == 0 || strcmp(s, "true") == 0;
        return 0;
    }
    if (strcmp(name, "records") == 0) {
        const char *s = conf_scalar(p, vn, "tls.records");
        if (s == NULL)
            return -1;
        if (strcmp(s, "wsechod") && strcmp(s, "openssl"))
            return conf_fail(p, vn, "tls.records: expected wsechod or openssl, got '%s'", s);
        t->own_records = strcmp(s, "wsechod") == 0;
        return 0;
    }
    return conf_fail(p, kn, "tls: unknown key '%s' (certificate, key, certificates, protocols, "
                     "ciphers, ciphersuites, session_tickets, records)", name);
}

static int parse_tls(struct parse *p, yaml_node_t *n, struct config_tls **out)
{
    struct config_tls *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return conf_fail(p, n, "tls: out of memory");
    *out = t;
    t->min_version = 12;
    t->max_version = 13;
    t->session_tickets = 1;
    t->own_records = 1;
    snprintf(t->file, sizeof(t->file), "%s", p->file);
    if (n->type != YAML_MAPPING_NODE)
        return conf_fail(p, n, "tls: expected a mapping with certificate and key");
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        if (kn->type != YAML_SCALAR_NODE)
            return conf_fail(p, kn, "tls: keys must be names");
        if (tls_key(p, kn, yaml_document_get_node(&p->doc, pr->value), t) < 0)
            return -1;
    }
    return cert_done(p, n, &t->main);
}

/* The value of key name in mapping n, or NULL. */
static yaml_node_t *mapping_get(struct parse *p, yaml_node_t *n, const char *name)
{
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        if (kn->type == YAML_SCALAR_NODE && strcmp((char *)kn->data.scalar.value, name) == 0)
            return yaml_document_get_node(&p->doc, pr->value);
    }
    return NULL;
}

/* The keys of {address: ..., tls: {...}, proxy_protocol: ..., ...} but the
 * address (read first: which keys apply depends on it). */
static int listen_options(struct parse *p, yaml_node_t *n, struct config_listen *l)
{
    static const char *const names[] = { "address", "tls", "proxy_protocol",
                                         "proxy_protocol_from", "mode", "owner" };
    unsigned seen = 0;
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(&p->doc, pr->value);
        const char *name = conf_scalar(p, kn, "listen");
        size_t i = 0;
        if (name == NULL)
            return -1;
        while (i < sizeof(names) / sizeof(names[0]) && strcmp(names[i], name) != 0)
            i++;
        if (i == sizeof(names) / sizeof(names[0]))
            return conf_fail(p, kn, "listen: unknown key '%s' (address, tls, proxy_protocol, "
                             "proxy_protocol_from, mode, owner)", name);
        if (seen & (1u << i))
            return conf_fail(p, kn, "listen: duplicate key '%s'", name);
        seen |= 1u << i;
        if (i == 0)
            continue;
        int r = i == 1 ? parse_tls(p, vn, &l->tls) : conf_lb_listen_key(p, kn, vn, l);
        if (r != 0)
            return -1;
    }
    return 0;
}

static void listen_free(struct config_listen *l)
{
    tls_settings_free(l->tls);
    l->tls = NULL;
    conf_lb_listen_free(l);
}

static void conf_listen_free_all(struct config *cf)
{
    for (size_t i = 0; i < cf->nlisten; i++)
        listen_free(&cf->listen[i]);
    cf->nlisten = 0;
}

void conf_listen_free(struct config *cf)
{
    conf_listen_free_all(cf);
    free(cf->listen);
    cf->listen = NULL;
}

int conf_listen_address(const char *s, struct config_listen *l)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    const char *unit;
    uint64_t port;
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    if (conf_number(colon + 1, &port, &unit) < 0 || *unit || port < 1 || port > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(l, 0, sizeof(*l));
    if (host[0] == '[') {
        size_t len = strlen(host);
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&l->addr;
        if (len < 3 || host[len - 1] != ']')
            return -1;
        host[len - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        l->addrlen = sizeof(*a6);
        snprintf(l->text, sizeof(l->text), "[%s]:%u", host + 1, (unsigned)port);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&l->addr;
    if (strcmp(host, "*") == 0)
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    l->addrlen = sizeof(*a4);
    snprintf(l->text, sizeof(l->text), "%s:%u", host, (unsigned)port);
    return 0;
}

/* The address of a listener: IPv4, IPv6 or unix:/path. */
static int listen_address(struct parse *p, yaml_node_t *an, struct config_listen *l)
{
    const char *s = conf_scalar(p, an, "listen");
    if (s == NULL)
        return -1;
    int r = conf_lb_unix_address(p, an, s, l);
    if (r <= 0)
        return r;
    if (conf_listen_address(s, l) < 0)
        return conf_fail(p, an, "listen: invalid address '%s' (expected IPv4:port, *:port, "
                    "[IPv6]:port with a port in 1..65535, or unix:/path)", s);
    return 0;
}

static int add_listen(struct parse *p, yaml_node_t *n, struct config *cf)
{
    yaml_node_t *an = n;
    struct config_listen l;
    memset(&l, 0, sizeof(l));
    if (n->type == YAML_MAPPING_NODE && (an = mapping_get(p, n, "address")) == NULL)
        return conf_fail(p, n, "listen: a mapping needs 'address'");
    if (listen_address(p, an, &l) < 0)
        return -1;
    for (size_t i = 0; i < cf->nlisten; i++)
        if (strcmp(cf->listen[i].text, l.text) == 0)
            return conf_fail(p, an, "listen: duplicate address '%s'", l.text);
    if ((n->type == YAML_MAPPING_NODE && listen_options(p, n, &l) < 0) ||
        conf_lb_listen_check(p, n, &l) < 0) {
        listen_free(&l);
        return -1;
    }
    struct config_listen *grown = realloc(cf->listen, (cf->nlisten + 1) * sizeof(*grown));
    if (grown == NULL) {
        listen_free(&l);
        return conf_fail(p, n, "listen: out of memory");
    }
    cf->listen = grown;
    cf->listen[cf->nlisten++] = l;
    return 0;
}

int conf_listen(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    conf_listen_free_all(cf);
    if (n->type == YAML_SCALAR_NODE)
        return add_listen(p, n, cf);
    if (n->type != YAML_SEQUENCE_NODE)
        return conf_fail(p, n, "%s: expected a list of addresses", k->name);
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++)
        if (add_listen(p, yaml_document_get_node(&p->doc, *it), cf) < 0)
            return -1;
    if (cf->nlisten == 0)
        return conf_fail(p, n, "%s: at least one address is required", k->name);
    return 0;
}

void conf_listen_default(struct config_listen *l)
{
    conf_listen_address("127.0.0.1:8080", l);
}
