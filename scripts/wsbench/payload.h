/*
 * payload — the bytes wsbench puts on the wire after the handshake, and the
 * check of what comes back. Pure functions of their arguments and of
 * O.size / O.text; no I/O, no shared state.
 *
 * Contract:
 *   Each message is O.size bytes: the (connection id, sequence) pair
 *   (12 bytes binary, 24 hex digits with -t; truncated if O.size is
 *   smaller) followed by a slice of the per-run pattern that depends on
 *   (id, seq), so a server that mixes up connections or reorders or
 *   corrupts messages is caught at the first wrong byte.
 *
 *   frame_hdr_len(n)     header bytes of a masked frame with n payload bytes.
 *   put_frame_hdr()      writes such a header with a fresh mask from *rng;
 *                        returns its length and the mask in mk.
 *   mask_xor()           applies (or removes) a mask in place.
 *   payload_pattern()    fills the pattern buffer (payload_pattern_len()
 *                        bytes) deterministically from the run's seed.
 *   payload_build()      writes one complete masked data frame at d (room:
 *                        frame_hdr_len(O.size) + O.size); returns its length.
 *   payload_verify()     checks k echoed bytes that sit at offset off of
 *                        message (id, seq); 0 if they match, else -1 with
 *                        the first differing byte in *diff.
 *
 *   With --deflate every message is instead one JSON-like text of O.size
 *   bytes, compressed once (payload_deflate_init, before the threads start;
 *   zlib level 6, no context takeover), sent with RSV1; an echo is
 *   compared whole: payload_text() for a plain one, payload_inflated_ok()
 *   for a compressed one (a per-thread inflater). payload_frame_len() is
 *   what one message takes on the wire either way.
 */
#ifndef WSBENCH_PAYLOAD_H
#define WSBENCH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

struct payload_diff {
    uint64_t off;
    uint8_t got, sent;
};

size_t frame_hdr_len(size_t plen);
size_t put_frame_hdr(uint8_t *d, int op, size_t plen, uint64_t *rng, uint8_t mk[4]);
void mask_xor(uint8_t *p, size_t n, const uint8_t mk[4]);
size_t payload_pattern_len(void);
void payload_pattern(uint8_t *pat, uint64_t seed);
size_t payload_build(uint8_t *d, uint32_t id, uint64_t seq, const uint8_t *pat, uint64_t *rng);
size_t payload_frame_len(void);
int payload_deflate_init(void);
const uint8_t *payload_text(void);
int payload_inflated_ok(const uint8_t *z, size_t n);
int payload_verify(const uint8_t *d, size_t k, uint64_t off, uint32_t id, uint64_t seq,
                   const uint8_t *pat, struct payload_diff *diff);

#endif
