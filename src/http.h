/* The HTTP/1.1 side of the RFC 6455 opening handshake: incremental parsing
 * with http-parser, validation, and the bytes of the response. No I/O. */
#ifndef WSECHOD_HTTP_H
#define WSECHOD_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct config_route;

struct http_span {
    uint32_t off, len; /* offsets into the caller's request buffer */
};

enum http_hdr {
    HDR_HOST, HDR_UPGRADE, HDR_CONNECTION, HDR_WS_KEY, HDR_WS_VERSION,
    HDR_CONTENT_LENGTH, HDR_TRANSFER_ENCODING, HDR_ORIGIN, HDR_WS_PROTOCOL, HDR_COUNT
};

struct http_req {
    http_parser parser;
    const char *base;       /* the buffer while a feed is running */
    struct http_span url, field, value;
    int last;               /* which span the parser touched last */
    struct http_span hdr[HDR_COUNT];
    uint8_t count[HDR_COUNT];
    unsigned conn_upgrade : 1;
    unsigned done : 1;
};

enum http_result { HTTP_MORE, HTTP_DONE, HTTP_BAD };

struct http_verdict {
    int status;                         /* 101 on success */
    const char *reason;                 /* short text for the error body */
    const struct config_route *route;
    const char *protocol;               /* the chosen subprotocol, or NULL */
};

void http_req_init(struct http_req *r);
/* buf[0..len) is everything received so far and buf[from..len) is new.
 * On HTTP_DONE, *end is the offset just past the request: anything after
 * it is already WebSocket data. */
enum http_result http_req_feed(struct http_req *r, const char *buf, size_t from,
                               size_t len, size_t *end);
/* Judges a complete request against RFC 6455 section 4.2.1 and the routes. */
void http_req_check(const struct http_req *r, const char *buf,
                    const struct config *cf, struct http_verdict *v);

/* Write a complete response into out[0..cap) and return its length. */
size_t http_error_response(int status, const char *reason, char *out, size_t cap);
size_t http_upgrade_response(const struct http_req *r, const char *buf,
                             const struct http_verdict *v, char *out, size_t cap);

#endif
