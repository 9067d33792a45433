/* libFuzzer harness for the HTTP side of the handshake (src/http.c).
 *
 * Input: 4 bytes of split seed, then the request bytes. The request is fed
 * to http_req_feed in pieces of random length, as conn.c does when it
 * arrives in several reads; each piece is passed in a buffer of exactly
 * the bytes received so far (a fresh allocation), so a read past them is
 * an ASan error. A complete request is judged with http_req_check, and the
 * response is built with http_upgrade_response / http_error_response; the
 * strict config has permessage-deflate on, so Sec-WebSocket-Extensions
 * goes through the negotiation (pmd.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "http.h"
#include "module.h"

static struct config *cf_strict, *cf_open;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cf_strict = fuzz_config(
        "max_header_size: 2k\n"
        "allowed_origins: [\"https://good.example\", \"http://localhost:8000\"]\n"
        "subprotocols: [chat.v2, chat]\n"
        "routes: {/: echo, /echo: echo, /a/b: echo}\n"
        "permessage_deflate: {enabled: on, client_max_window_bits: 10}\n");
    cf_open = fuzz_config("max_header_size: 512\n");
    return 0;
}

static void respond(const struct http_req *r, const char *buf, const struct config *cf)
{
    struct http_verdict v;
    char out[1024];
    http_req_check(r, buf, cf, &v);
    /* What we agree to is always the lean form, with a window zlib has. */
    if (v.extensions[0] &&
        (strncmp(v.extensions, "permessage-deflate; server_no_context_takeover; "
                 "client_no_context_takeover", 74) != 0 ||
         v.pmd.server_bits < 9 || v.pmd.server_bits > 15))
        abort();
    if (v.status == 101) {
        size_t n = http_upgrade_response(r, buf, &v, out, sizeof(out));
        if (n == 0 || memcmp(out, "HTTP/1.1 101 ", 13) != 0)
            abort();
    } else {
        size_t n = http_error_response(v.status, v.reason, http_req_is_head(r), out, sizeof(out));
        if (n == 0 || v.reason == NULL || v.status < 400 || v.status > 599)
            abort();
    }
}

/* The module's view of a complete request: every span it gives lies within
 * the request. */
static void view(const struct http_req *r, char *buf, size_t end)
{
    struct http_in in = { .req = *r, .buf = buf, .len = (uint32_t)end };
    struct http_view v;
    struct ws_request req;
    static const char *const names[] = { "host", "Sec-WebSocket-Key", "x-missing", "origin" };
    http_req_view(&in, end, &v, &req);
    if (req.path < buf || req.path + req.path_len > buf + end ||
        (req.query_len && req.query + req.query_len > buf + end))
        abort();
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = 0;
        const char *h = ws_request_header(&req, names[i], &n);
        if (h != NULL && (h < buf || h + n > buf + end))
            abort();
    }
}

static void run(const uint8_t *data, size_t size, uint32_t seed, const struct config *cf)
{
    size_t cap = cf->max_header_size + 1, len = 0, end = 0;
    struct http_req *r = malloc(sizeof(*r));
    char *buf = NULL;
    enum http_result res = HTTP_MORE;
    http_req_init(r);
    if (size > cap)
        size = cap;
    while (len < size && res == HTTP_MORE) {
        size_t piece = 1 + fuzz_next(&seed) % (seed & 0x100 ? 8 : 200);
        if (piece > size - len)
            piece = size - len;
        free(buf);
        buf = malloc(len + piece);
        memcpy(buf, data, len + piece);
        res = http_req_feed(r, buf, len, len + piece, &end);
        len += piece;
    }
    if (res == HTTP_DONE) {
        if (end > len)
            abort(); /* the request cannot end past what was received */
        respond(r, buf, cf);
        view(r, buf, end);
    } else {
        char out[512];
        http_error_response(res == HTTP_BAD ? r->bad_status : len >= cap ? 431 : 408, "fuzz", 0, out,
                            sizeof(out));
    }
    free(buf);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed = 0;
    if (size < 4)
        return 0;
    memcpy(&seed, data, 4);
    run(data + 4, size - 4, seed, cf_strict);
    run(data + 4, size - 4, seed ^ 0x5a5a5a5a, cf_open);
    /* all at once, as when the whole request arrives in one read */
    {
        size_t n = size - 4 > 4096 ? 4096 : size - 4;
        struct http_req r;
        size_t end;
        char *buf = malloc(n ? n : 1);
        memcpy(buf, data + 4, n);
        http_req_init(&r);
        if (n > 0 && http_req_feed(&r, buf, 0, n, &end) == HTTP_DONE)
            respond(&r, buf, cf_strict);
        free(buf);
    }
    return 0;
}
