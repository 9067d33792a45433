/* permessage-deflate (RFC 7692): the worker's compressor and decompressor,
 * and the windows of connections that keep context (what was agreed:
 * pmdoffer.h).
 *
 * Engines: a message without context goes through libdeflate in one call
 * (several times zlib's speed on everyday text); zlib's streams serve the
 * rest: context takeover (a preset dictionary), a window below 2^15, and
 * extremely redundant messages, where zlib's level 1 is the faster one.
 * Memory: the engines are the worker's (one per level and window in use),
 * reset per message, so no compressor state is ever per connection.
 * Without context takeover (the default both ways: our answer carries
 * server_no_context_takeover and client_no_context_takeover, which RFC
 * 7692 7.1.1.2 lets a server ask unoffered) an idle compressed connection
 * holds nothing more than a plain one. With context takeover in a
 * direction, the connection keeps a window (struct pmd_ctx): the tail of
 * that direction's uncompressed stream, which is all LZ77 may refer back
 * to. It becomes the shared stream's preset dictionary for the next
 * message: what the client sent, 2^client_bits bytes of it, exactly what
 * its compressor may reach; what we sent, at most server_history bytes of
 * it (our compressor may refer back less far than it told the client to
 * keep, and hashing the dictionary is what a message costs extra). A
 * compressed message is inflated whole once its last frame is in, into a
 * per-worker buffer that grows only as far as the output does (never past
 * max_message_size: a decompression bomb costs at most that). Buffers and
 * windows are counted in the worker's budget (mem.h). */
#ifndef WSECHOD_PMD_H
#define WSECHOD_PMD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "pmdoffer.h"

/* A connection's windows, with context takeover in either direction. */
struct pmd_ctx;

/* The windows pp needs (server_history: cf's), empty until messages pass;
 * NULL if pp keeps no context either way, or out of memory. */
struct pmd_ctx *pmd_ctx_new(const struct config_pmd *cf, const struct pmd_params *pp);
void pmd_ctx_free(struct pmd_ctx *cx);
/* Completes *pp (server_bits given) with what cx keeps: the client's
 * window bits and which directions keep context. */
void pmd_ctx_params(const struct pmd_ctx *cx, struct pmd_params *pp);
/* What cx holds, as counted in mem.h by its owner. */
size_t pmd_ctx_held(const struct pmd_ctx *cx);
/* Its bytes for a handoff: the length written to buf[0..cap), 0 if it
 * does not fit. PMD_CTX_MAX always does. */
#define PMD_CTX_MAX (16 + (2u << 15))
size_t pmd_ctx_export(const struct pmd_ctx *cx, uint8_t *buf, size_t cap);
/* The windows back from an export that matches pp; NULL if the bytes are
 * not one (or out of memory). */
struct pmd_ctx *pmd_ctx_import(const struct pmd_params *pp, const uint8_t *buf, size_t len);

enum { PMD_OK = 0, PMD_TOO_BIG = 1, PMD_BAD = 2, PMD_NOMEM = 3 };

/* Inflates a whole compressed message in[0..n) (the tail RFC 7692 7.2.2
 * drops is added here), with the client's window of cx if it has one (and
 * adds the message to it). PMD_OK with *out, *outlen (valid until the next
 * call); PMD_TOO_BIG past max bytes, PMD_BAD for invalid data. */
int pmd_inflate(struct pmd_ctx *cx, const uint8_t *in, size_t n, size_t max,
                const uint8_t **out, size_t *outlen);
/* Deflates in[0..n) as one message (the tail removed), with our window of
 * cx if it has one (and adds the message to it). PMD_OK with *out,
 * *outlen valid until the next call, or PMD_NOMEM. */
int pmd_deflate(const struct config_pmd *cf, const struct pmd_params *pp, struct pmd_ctx *cx,
                const uint8_t *in, size_t n, const uint8_t **out, size_t *outlen);
/* Gives back what a large message made the buffers grow to. */
void pmd_trim(void);

#endif
