#include "confval.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int conf_fail(struct parse *p, const yaml_node_t *n, const char *fmt, ...)
{
    int k = snprintf(p->err, CONFIG_ERR_MAX, "%s:%zu:%zu: ", p->file,
                     n->start_mark.line + 1, n->start_mark.column + 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + k, CONFIG_ERR_MAX - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

const char *conf_scalar(struct parse *p, yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SCALAR_NODE) {
        conf_fail(p, n, "%s: expected a single value, not a %s", key,
             n->type == YAML_MAPPING_NODE ? "mapping" : "list");
        return NULL;
    }
    return (const char *)n->data.scalar.value;
}

/* Digits, then an optional unit suffix left in *unit. */
int conf_number(const char *s, uint64_t *out, const char **unit)
{
    if (*s < '0' || *s > '9')
        return -1;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    *unit = s;
    return 0;
}

int conf_range(struct parse *p, yaml_node_t *n, const struct key *k,
                       uint64_t v, const char *text)
{
    if (v < k->min || v > k->max)
        return conf_fail(p, n, "%s: %s is out of range (%llu..%llu)", k->name, text,
                    (unsigned long long)k->min, (unsigned long long)k->max);
    return 0;
}

int conf_get_uint(struct parse *p, yaml_node_t *n, const struct key *k, uint64_t *v)
{
    const char *s = conf_scalar(p, n, k->name), *unit;
    if (s == NULL)
        return -1;
    if (conf_number(s, v, &unit) < 0 || *unit != '\0')
        return conf_fail(p, n, "%s: expected an integer, got '%s'", k->name, s);
    return conf_range(p, n, k, *v, s);
}

int conf_switch(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    static const char *const on[] = { "on", "true", "yes" }, *const off[] = { "off", "false", "no" };
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, on[i]) == 0 || strcmp(s, off[i]) == 0) {
            *FIELD(cf, k, int) = strcmp(s, on[i]) == 0;
            return 0;
        }
    }
    return conf_fail(p, n, "%s: expected 'on' or 'off', got '%s'", k->name, s);
}

int conf_uint(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    uint64_t v = 0;
    if (conf_get_uint(p, n, k, &v) < 0)
        return -1;
    *FIELD(cf, k, unsigned) = (unsigned)v;
    return 0;
}

int conf_duration(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    };
    const char *s = conf_scalar(p, n, k->name), *unit;
    uint64_t v;
    if (s == NULL)
        return -1;
    if (conf_number(s, &v, &unit) == 0) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(unit, units[i].unit) == 0 && v <= UINT64_MAX / units[i].ms) {
                v *= units[i].ms;
                if (conf_range(p, n, k, v, s) < 0)
                    return -1;
                *FIELD(cf, k, uint64_t) = v;
                return 0;
            }
        }
    }
    return conf_fail(p, n, "%s: expected a duration such as 10, 500ms, 30s, 5m or 1h, got '%s'",
                k->name, s);
}

int conf_size(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name), *unit;
    uint64_t v;
    if (s == NULL)
        return -1;
    if (conf_number(s, &v, &unit) == 0 && strlen(unit) <= 1) {
        const char *at = unit[0] ? strchr("kmg", unit[0] | 0x20) : NULL;
        unsigned shift = at ? 10u * (unsigned)(at - "kmg" + 1) : 0;
        if ((unit[0] == '\0' || at) && v <= (UINT64_MAX >> shift)) {
            v <<= shift;
            if (conf_range(p, n, k, v, s) < 0)
                return -1;
            *FIELD(cf, k, size_t) = (size_t)v;
            return 0;
        }
    }
    return conf_fail(p, n, "%s: expected a size such as 4096, 64k or 16m, got '%s'", k->name, s);
}

int conf_string(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    const char *s = conf_scalar(p, n, k->name);
    if (s == NULL)
        return -1;
    if (*s == '\0')
        return conf_fail(p, n, "%s: must not be empty", k->name);
    char *copy = strdup(s);
    if (copy == NULL)
        return conf_fail(p, n, "%s: out of memory", k->name);
    char **field = FIELD(cf, k, char *);
    free(*field);
    *field = copy;
    return 0;
}

