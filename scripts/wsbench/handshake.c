#define _GNU_SOURCE
#include "handshake.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "options.h"
#include "util.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static void b64(const unsigned char *in, int n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, n);
}

static void expected_accept(const char *key, char *out)
{
    char buf[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t kl = strlen(key);
    memcpy(buf, key, kl);
    memcpy(buf + kl, WS_GUID, 36);
    if (!EVP_Digest(buf, kl + 36, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        die("SHA-1 failed");
    b64(md, 20, out);
}

void hs_new_key(uint64_t *rng, char key[32], char accept[32])
{
    unsigned char raw[16];
    uint64_t a = rng_next(rng), b = rng_next(rng);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    b64(raw, 16, key);
    expected_accept(key, accept);
}

int hs_request(char *buf, size_t cap, const char *key)
{
    return snprintf(buf, cap,
                    "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    "Sec-WebSocket-Version: 13\r\n%s\r\n",
                    O.path, O.hosthdr, key,
                    O.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                "client_no_context_takeover; server_no_context_takeover\r\n" : "");
}

int hs_feed(struct hsbuf *hs, const uint8_t *p, size_t n, size_t *extra_off)
{
    size_t room = HS_BUF - 1 - hs->len;
    size_t k = n < room ? n : room;
    memcpy(hs->data + hs->len, p, k);
    hs->len += (uint32_t)k;
    hs->data[hs->len] = 0;
    char *end = strstr(hs->data, "\r\n\r\n");
    if (!end)
        return hs->len >= HS_BUF - 1 ? -1 : 0;
    size_t hdr_len = (size_t)(end - hs->data) + 4;
    /* hdr_len counts from the start of the buffer, p from hs->len - k. */
    *extra_off = hdr_len - (hs->len - k);
    *end = 0;
    return 1;
}

/* Substring match, case-insensitive: good enough for token lists such as
 * "keep-alive, Upgrade". */
static int header_has(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = v; *p; p++)
        if (strncasecmp(p, tok, n) == 0)
            return 1;
    return 0;
}

struct hs_seen {
    int up, conn, acc; /* acc: 0 absent, 1 right, -1 wrong */
};

static void hs_header(char *h, const char *accept, struct hs_seen *s)
{
    char *colon = strchr(h, ':');
    if (!colon)
        return;
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        v[--vl] = 0;
    if (strcasecmp(h, "upgrade") == 0)
        s->up = header_has(v, "websocket");
    else if (strcasecmp(h, "connection") == 0)
        s->conn = header_has(v, "upgrade");
    else if (strcasecmp(h, "sec-websocket-accept") == 0)
        s->acc = strcmp(v, accept) == 0 ? 1 : -1;
}

int hs_check(struct hsbuf *hs, char *why, size_t cap, int *status)
{
    char *save = NULL;
    char *first = strtok_r(hs->data, "\r\n", &save);
    *status = 0;
    if (!first || sscanf(first, "HTTP/1.1 %d", status) != 1) {
        *status = 0;
        snprintf(why, cap, "bad status line '%.60s'", first ? first : "");
        return -1;
    }
    if (*status != 101) {
        snprintf(why, cap, "'%.80s'", first);
        return -1;
    }
    struct hs_seen s = {0, 0, 0};
    for (char *h = strtok_r(NULL, "\r\n", &save); h; h = strtok_r(NULL, "\r\n", &save))
        hs_header(h, hs->accept, &s);
    if (!s.up || !s.conn || s.acc != 1) {
        snprintf(why, cap, "%s", !s.up ? "no 'Upgrade: websocket'" : !s.conn ? "no 'Connection: upgrade'"
                 : s.acc == 0 ? "no Sec-WebSocket-Accept" : "wrong Sec-WebSocket-Accept");
        return -1;
    }
    return 0;
}
