/* Address blocks ("10.0.0.0/8", "::1/128", "192.0.2.7"): parsing, printing
 * and matching a peer's address against a list of them. Pure functions,
 * for proxy_protocol_from (who may send a PROXY protocol header). */
#ifndef WSECHOD_CIDR_H
#define WSECHOD_CIDR_H

#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

/* "ADDR/BITS" or a single address (all its bits) into *c. 0; -1 not an
 * address block; -2 bits set past the prefix (a typo for the network). */
int  cidr_parse(const char *s, struct config_cidr *c);
/* "ADDR/BITS" of c into buf. */
void cidr_format(const struct config_cidr *c, char *buf, size_t len);
/* Whether sa (AF_INET or AF_INET6) lies in one of c[0..n). An IPv4 address
 * matches IPv4 blocks only, an IPv6 one IPv6 blocks only. */
int  cidr_match(const struct config_cidr *c, size_t n, const struct sockaddr *sa);

#endif
