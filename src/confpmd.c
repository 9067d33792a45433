#include "confpmd.h"

#include <stddef.h>
#include <string.h>

#define POFF(f) offsetof(struct config_pmd, f)
static const struct key pmd_keys[] = {
    { "enabled",                    conf_switch, POFF(enabled), 0, 0 },
    { "server_max_window_bits",     conf_uint,   POFF(server_max_window_bits), 9, 15 },
    { "client_max_window_bits",     conf_uint,   POFF(client_max_window_bits), 9, 15 },
    { "server_no_context_takeover", conf_switch, POFF(server_no_context_takeover), 0, 0 },
    { "client_no_context_takeover", conf_switch, POFF(client_no_context_takeover), 0, 0 },
    { "server_history",             conf_size,   POFF(server_history), 256, 32768 },
    { "compression_level",          conf_uint,   POFF(compression_level), 0, 9 },
    { "mem_level",                  conf_uint,   POFF(mem_level), 1, 9 },
    { "min_size",                   conf_size,   POFF(min_size), 0, 1 << 30 },
};
#define NPMD (sizeof(pmd_keys) / sizeof(pmd_keys[0]))

/* The keys write into cf->pmd: it is the block their offsets count from. */
int conf_pmd(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k)
{
    struct config *base = (struct config *)(void *)&cf->pmd;
    int seen[NPMD] = { 0 };
    if (n->type != YAML_MAPPING_NODE)
        return conf_fail(p, n, "%s: expected a mapping", k->name);
    for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(&p->doc, pr->key);
        const char *name = conf_scalar(p, kn, k->name);
        size_t i;
        if (name == NULL)
            return -1;
        for (i = 0; i < NPMD && strcmp(pmd_keys[i].name, name) != 0; i++)
            ;
        if (i == NPMD)
            return conf_fail(p, kn, "%s: unknown key '%s'", k->name, name);
        if (seen[i]++)
            return conf_fail(p, kn, "%s: duplicate key '%s'", k->name, name);
        yaml_node_t *vn = yaml_document_get_node(&p->doc, pr->value);
        if (pmd_keys[i].fn(p, vn, base, &pmd_keys[i]) < 0)
            return -1;
    }
    return 0;
}
