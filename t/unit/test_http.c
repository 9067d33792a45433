/* src/http.c: incremental parsing, the handshake checks and responses. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "echo.h"
#include "http.h"
#include "tap.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static char *subprotocols[] = { "chat", "superchat" };
static struct config_route routes[] = { { "/", &echo_module, NULL, NULL } };
static struct config cf = {
    .routes = routes, .nroutes = 1, .subprotocols = subprotocols, .nsubprotocols = 2,
};

/* Feeds text in pieces of `piece` bytes, as reads would deliver it. */
static enum http_result feed(struct http_req *r, const char *text, size_t piece)
{
    size_t len = strlen(text), from = 0, end;
    enum http_result res = HTTP_MORE;
    http_req_init(r);
    while (res == HTTP_MORE && from < len) {
        size_t to = from + piece < len ? from + piece : len;
        res = http_req_feed(r, text, from, to, &end);
        from = to;
    }
    return res;
}

static int verdict(const char *text, size_t piece, struct http_verdict *v)
{
    struct http_req r;
    if (feed(&r, text, piece) != HTTP_DONE)
        return -1;
    http_req_check(&r, text, &cf, v);
    return v->status;
}

static void good_and_bad(void)
{
    struct http_verdict v;
    const char *good = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n";
    ok(verdict(good, 1000, &v) == 101, "a valid handshake");
    ok(verdict(good, 1, &v) == 101, "the same, one byte per read");
    char buf[2048];
    snprintf(buf, sizeof(buf), "GET / HTTP/2.0\r\nHost: x\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n");
    ok(verdict(buf, 1000, &v) == 505, "HTTP/2.0 gets 505");
    snprintf(buf, sizeof(buf), "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    ok(verdict(buf, 1000, &v) == 404, "unknown path gets 404");
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ok(verdict(buf, 1000, &v) == 426, "plain HTTP on a route gets 426");
}

static void folding(void)
{
    struct http_req r;
    const char *fold = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n websocket\r\n\r\n";
    ok(feed(&r, fold, 1000) == HTTP_BAD && r.bad_status == 400 &&
       strstr(r.bad_reason, "folding") != NULL, "obs-fold is refused with a reason");
    ok(feed(&r, fold, 3) == HTTP_BAD && r.bad_status == 400, "also when split across reads");
    const char *empty = "GET / HTTP/1.1\r\nHost: x\r\nOrigin: \r\n\r\n";
    ok(feed(&r, empty, 1000) == HTTP_DONE, "an empty value is not a fold");
}

static void header_limit(void)
{
    struct http_req r;
    char big[4096];
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(big + n, 'p', 1500);
    strcpy(big + n + 1500, "\r\n\r\n");
    http_set_max_header_size(1024);
    ok(feed(&r, big, 1000) == HTTP_BAD && r.bad_status == 431, "over the parser's limit: 431");
    http_set_max_header_size(8192);
    ok(feed(&r, big, 1000) == HTTP_DONE, "the limit is the configured one");
}

static void lists(void)
{
    struct http_verdict v;
    const char *two = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Protocol: x, superchat\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
    ok(verdict(two, 1000, &v) == 101 && v.protocol && strcmp(v.protocol, "superchat") == 0,
       "the first offer wins across lines");
    char many[2048];
    int n = snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n");
    for (int i = 0; i < HTTP_LIST_LINES + 1; i++)
        n += snprintf(many + n, sizeof(many) - (size_t)n, "Sec-WebSocket-Extensions: e%d\r\n", i);
    snprintf(many + n, sizeof(many) - (size_t)n, "\r\n");
    ok(verdict(many, 1000, &v) == 400, "more list lines than kept: 400");
}

static void responses(void)
{
    char out[512];
    size_t n = http_error_response(426, "upgrade required", 0, out, sizeof(out));
    ok(n > 0 && strstr(out, "Upgrade: websocket\r\n") && strstr(out, "Connection: Upgrade, close\r\n"),
       "426 names Upgrade in Connection");
    n = http_error_response(405, "WebSocket handshakes use GET", 1, out, sizeof(out));
    ok(n > 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0 && strstr(out, "Content-Length: 29\r\n"),
       "HEAD: the headers GET would get, no body");
    n = http_error_response(505, "WebSocket handshakes use HTTP/1.1", 0, out, sizeof(out));
    ok(strncmp(out, "HTTP/1.1 505 HTTP Version Not Supported\r\n", 41) == 0, "505 status line");
}

int main(void)
{
    good_and_bad();
    folding();
    header_limit();
    lists();
    responses();
    return tap_done();
}
