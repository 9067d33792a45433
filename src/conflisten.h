/* The `listen` key: addresses to listen on, each a plain string
 * ("127.0.0.1:8080", "*:8080", "[::1]:8080", "unix:/path") or a mapping
 * with `address` and `tls` (certificate, key, more certificates chosen by
 * SNI, protocol versions, cipher lists, session tickets) and the keys of
 * conflb.h (PROXY protocol; a unix socket's mode and owner), checked with
 * file:line:column errors like every key. The TLS contexts themselves are
 * made by tls.h. */
#ifndef WSECHOD_CONFLISTEN_H
#define WSECHOD_CONFLISTEN_H

#include "confval.h"

/* The key's parser (key_fn). */
int  conf_listen(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);
/* "1.2.3.4:80", "*:80" or "[::1]:80" into l (plain; unix: is conflb.h's).
 * 0, or -1. */
int  conf_listen_address(const char *s, struct config_listen *l);
/* The default listener, 127.0.0.1:8080, plain. */
void conf_listen_default(struct config_listen *l);
/* Frees the listeners and their TLS settings and contexts. */
void conf_listen_free(struct config *cf);

#endif
