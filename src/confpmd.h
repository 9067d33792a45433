/* The `permessage_deflate` key: a mapping of enabled, server_max_window_bits
 * and client_max_window_bits (9..15), server_no_context_takeover and
 * client_no_context_takeover, server_history (256..32768 bytes),
 * compression_level (0..9), mem_level (1..9) and min_size, each checked
 * with file:line:column errors like every key. */
#ifndef WSECHOD_CONFPMD_H
#define WSECHOD_CONFPMD_H

#include "confval.h"

int conf_pmd(struct parse *p, yaml_node_t *n, struct config *cf, const struct key *k);

#endif
