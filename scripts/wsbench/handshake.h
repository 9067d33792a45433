/*
 * handshake — the client side of the RFC 6455 opening handshake, as text:
 * building the request and judging the response. No sockets here.
 *
 * Contract:
 *   hs_new_key()  a random Sec-WebSocket-Key from *rng and the
 *                 Sec-WebSocket-Accept a correct server must answer with.
 *   hs_request()  the GET request for O.path / O.hosthdr with that key,
 *                 into buf; returns its length as snprintf does.
 *   hs_feed()     appends n received bytes to hs. Returns 0 when the
 *                 headers are not complete yet, -1 when they cannot fit in
 *                 HS_BUF, 1 once "\r\n\r\n" arrived: then *extra_off is
 *                 the offset in p of the first byte after the headers
 *                 (WebSocket frames that came in the same read).
 *   hs_check()    after hs_feed() returned 1: 0 if the response is a 101
 *                 with Upgrade, Connection and the expected Accept; else -1,
 *                 a reason in why and, in *status, the HTTP status (0 if
 *                 unparsable). Destroys hs->data.
 */
#ifndef WSBENCH_HANDSHAKE_H
#define WSBENCH_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define HS_BUF 4096 /* handshake response buffer */

struct hsbuf {
    char accept[32];
    uint32_t len;
    char data[HS_BUF];
};

void hs_new_key(uint64_t *rng, char key[32], char accept[32]);
int hs_request(char *buf, size_t cap, const char *key);
int hs_feed(struct hsbuf *hs, const uint8_t *p, size_t n, size_t *extra_off);
int hs_check(struct hsbuf *hs, char *why, size_t cap, int *status);

#endif
