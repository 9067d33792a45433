/* permessage-deflate (RFC 7692): the negotiation, and the worker's
 * compressor and decompressor.
 *
 * Negotiation: the client's offers (Sec-WebSocket-Extensions, one list over
 * any number of header lines) are judged in its order; an offer with an
 * unknown, repeated or invalid parameter is declined and the next one
 * considered (RFC 7692 section 5). The first acceptable one is answered
 * with exactly what was agreed.
 *
 * Memory: one inflater and one deflater per worker serve every
 * connection, reset per message, so no zlib state is ever per connection.
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

/* What a connection agreed to; server_bits 0: no extension. */
struct pmd_params {
    uint8_t server_bits;        /* our compressor's window, 9..15 */
    uint8_t client_bits;        /* the client's, 8..15: what we keep of its stream */
    uint8_t server_takeover;    /* context kept between our messages */
    uint8_t client_takeover;    /* between the client's */
};

/* A connection's windows, with context takeover in either direction. */
struct pmd_ctx;

/* One header line's value, as the request holds it. */
struct pmd_line {
    const char *p;
    size_t len;
};

/* Judges the offers of lines[0..n) against cf. 1 with *out filled and the
 * response header's value (no name, no CRLF) in resp[0..cap); 0 if no
 * offer is acceptable (or the extension is off). */
int pmd_negotiate(const struct config_pmd *cf, const struct pmd_line *lines, size_t n,
                  struct pmd_params *out, char *resp, size_t cap);

/* The 32-bit form of *pp that travels with a handoff, and back (0 for
 * anything that is not a valid agreement). */
uint32_t pmd_params_pack(const struct pmd_params *pp);
int pmd_params_unpack(uint32_t v, struct pmd_params *pp);

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
