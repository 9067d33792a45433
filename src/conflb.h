/* The keys for running behind a load balancer, checked with
 * file:line:column errors like every key:
 * - in a `listen` mapping (conflisten.c asks): `proxy_protocol` (a PROXY
 *   protocol header comes first), `proxy_protocol_from` (the address
 *   blocks that may send one; required with it, except on unix sockets),
 *   and for an address `unix:/path`, `mode` (octal, default "0660") and
 *   `owner` ("user[:group]", default: whoever the master runs as);
 * - at the top level: `max_connections_per_ip`, `handshake_rate_per_ip`
 *   (`off`, "20/s", or {rate: 20/s, burst: 40}; periods /s, /m, /h),
 *   `per_ip_table_size` and `per_ip_ipv6_prefix` are in config.c's table,
 *   the rate through conf_rate. */
#ifndef WSECHOD_CONFLB_H
#define WSECHOD_CONFLB_H

#include "confval.h"

#define CONF_UNIX_MODE_DEFAULT 0660

/* The listen mapping's key name with value vn into l: 0, -1 (error set),
 * or 1 if name is none of these keys. */
int  conf_lb_listen_key(struct parse *p, yaml_node_t *kn, yaml_node_t *vn,
                        struct config_listen *l);
/* "unix:/path" into l: 0; 1 if s is not a unix address; -1 (error set on
 * n) if it is one but invalid. */
int  conf_lb_unix_address(struct parse *p, yaml_node_t *n, const char *s,
                          struct config_listen *l);
/* The rules between a listener's keys, once all are read (n: its node). */
int  conf_lb_listen_check(struct parse *p, yaml_node_t *n, const struct config_listen *l);
/* Frees what these keys allocated in l. */
void conf_lb_listen_free(struct config_listen *l);
/* handshake_rate_per_ip's parser (key_fn). */
int  conf_rate(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);

#endif
