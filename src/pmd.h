/* permessage-deflate (RFC 7692): the negotiation, and the worker's
 * compressor and decompressor.
 *
 * Negotiation: the client's offers (Sec-WebSocket-Extensions, one list over
 * any number of header lines) are judged in its order; an offer with an
 * unknown, repeated or invalid parameter is declined and the next one
 * considered (RFC 7692 section 5). The first acceptable one is answered
 * with exactly what was agreed.
 *
 * Memory: no context is kept between messages in either direction — our
 * answer always carries server_no_context_takeover and
 * client_no_context_takeover (RFC 7692 7.1.1.2 lets a server ask it even
 * unoffered) — so one inflater and one deflater per worker serve every
 * connection, reset per message, and an idle compressed connection holds
 * no zlib state at all. A compressed message is inflated whole once its
 * last frame is in, into a per-worker buffer that grows only as far as
 * the output does (never past max_message_size: a decompression bomb
 * costs at most that), counted in the worker's budget (mem.h) like what
 * connections hold. */
#ifndef WSECHOD_PMD_H
#define WSECHOD_PMD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* What a connection agreed to; server_bits 0: no extension. */
struct pmd_params {
    uint8_t server_bits;        /* our compressor's window, 9..15 */
};

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

enum { PMD_OK = 0, PMD_TOO_BIG = 1, PMD_BAD = 2, PMD_NOMEM = 3 };

/* Inflates a whole compressed message in[0..n) (the tail RFC 7692 7.2.2
 * drops is added here). PMD_OK with *out, *outlen (valid until the next
 * call); PMD_TOO_BIG past max bytes, PMD_BAD for invalid data. */
int pmd_inflate(const uint8_t *in, size_t n, size_t max, const uint8_t **out, size_t *outlen);
/* Deflates in[0..n) as one message (the tail removed). PMD_OK with *out,
 * *outlen valid until the next call, or PMD_NOMEM. */
int pmd_deflate(const struct config_pmd *cf, const struct pmd_params *pp, const uint8_t *in,
                size_t n, const uint8_t **out, size_t *outlen);
/* Gives back what a large message made the buffers grow to. */
void pmd_trim(void);

#endif
