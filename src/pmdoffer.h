/* permessage-deflate (RFC 7692): the negotiation. The client's offers
 * (Sec-WebSocket-Extensions, one list over any number of header lines) are
 * judged in its order; an offer with an unknown, repeated or invalid
 * parameter is declined and the next one considered (RFC 7692 section 5).
 * The first acceptable one is answered with exactly what was agreed: a
 * direction keeps its context unless the client or our config says not.
 * What was agreed travels with a handoff as 32 bits. */
#ifndef WSECHOD_PMDOFFER_H
#define WSECHOD_PMDOFFER_H

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

#endif
