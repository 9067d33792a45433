/* The keys of what an operator watches: `status` (a mapping with `listen`,
 * the status listener's address), `health_paths` (a mapping with
 * `healthz` and `readyz`, absolute paths answered on the main listeners
 * too), `access_log` (a path, "stderr" or "off") and `access_log_format`
 * (text or json), checked with file:line:column errors like every key. */
#ifndef WSECHOD_CONFSTATUS_H
#define WSECHOD_CONFSTATUS_H

#include "confval.h"

int  conf_status(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
int  conf_health_paths(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
/* The rules that involve other keys (listen, routes), once all are read. */
int  conf_status_check(struct parse *p, const struct config *cf);
int  conf_access_log(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
int  conf_access_log_format(struct parse *p, yaml_node_t *n, struct config *cf,
                            const struct key *k);
void conf_status_free(struct config *cf);

#endif
