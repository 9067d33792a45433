/* Reading YAML nodes into values, for the configuration's keys (config.c)
 * and the per-route keys modules declare: numbers, durations, sizes and
 * strings, each checked against its key's range, and errors as
 * "file:line:column: key: message" naming the node. */
#ifndef WSECHOD_CONFVAL_H
#define WSECHOD_CONFVAL_H

#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config.h"

/* One configuration file being read. */
struct parse {
    const char *file;
    yaml_document_t doc;
    char *err;
    yaml_node_t *group_set;  /* the group key, if given */
    yaml_node_t *spread;     /* the drain_spread value, if given */
    yaml_node_t *status_at;  /* status.listen, health_paths.healthz / readyz: */
    yaml_node_t *health_at[2]; /* checked against listen and routes at the end */
};

struct key;
typedef int (*key_fn)(struct parse *p, yaml_node_t *v, struct config *cf,
                      const struct key *k);

struct key {
    const char *name;
    key_fn fn;
    size_t off;
    uint64_t min, max;
};

/* The field a key writes: its offset from the block being filled (the
 * config, or a module's route configuration). */
#define FIELD(cf, k, type) ((type *)(void *)((char *)(cf) + (k)->off))


/* Writes the error for node n into p->err; returns -1. */
int conf_fail(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* n's text, or NULL (error set) if n is a list or mapping. */
const char *conf_scalar(struct parse *p, yaml_node_t *n, const char *key);
/* Digits, then an optional unit suffix left in *unit. 0, or -1. */
int conf_number(const char *s, uint64_t *out, const char **unit);
int conf_range(struct parse *p, yaml_node_t *n, const struct key *k, uint64_t v,
               const char *text);
int conf_get_uint(struct parse *p, yaml_node_t *n, const struct key *k, uint64_t *v);
/* Key parsers (key_fn): an unsigned int, milliseconds (uint64_t) from
 * "10", "500ms", "30s", "5m", "1h", bytes (size_t) from "4096", "64k",
 * "16m", "1g", and a strdup'ed string. */
int conf_uint(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
int conf_duration(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
int conf_size(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
int conf_string(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
/* An int 1 or 0 from on/off (true/false, yes/no). */
int conf_switch(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);

#endif
