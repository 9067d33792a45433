/* The HTTP/1.1 side of the RFC 6455 opening handshake: incremental parsing
 * with http-parser, validation, and the bytes of the response. No I/O. */
#ifndef WSECHOD_HTTP_H
#define WSECHOD_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#include "pmdoffer.h"

struct config;
struct config_route;

struct http_span {
    uint32_t off, len; /* offsets into the caller's request buffer */
};

enum http_hdr {
    HDR_HOST, HDR_UPGRADE, HDR_CONNECTION, HDR_WS_KEY, HDR_WS_VERSION,
    HDR_CONTENT_LENGTH, HDR_TRANSFER_ENCODING, HDR_ORIGIN, HDR_WS_PROTOCOL,
    HDR_WS_EXTENSIONS, HDR_COUNT
};

/* Headers that are comma-separated lists: several lines are one list
 * (RFC 9110 5.3), so every line is kept, up to this many. */
#define HTTP_LIST_LINES 8
enum http_list { LIST_WS_PROTOCOL, LIST_WS_EXTENSIONS, LIST_COUNT };

struct http_req {
    http_parser parser;
    const char *base;       /* the buffer while a feed is running */
    struct http_span url, field, value;
    int last;               /* which span the parser touched last */
    struct http_span hdr[HDR_COUNT];    /* the last line of each */
    uint8_t count[HDR_COUNT];
    struct http_span list[LIST_COUNT][HTTP_LIST_LINES];
    const char *bad_reason;             /* on HTTP_BAD: why, for bad_status */
    int bad_status;                     /* on HTTP_BAD: 400 or 431 */
    unsigned conn_upgrade : 1;
    unsigned done : 1;
};

enum http_result { HTTP_MORE, HTTP_DONE, HTTP_BAD };

struct http_verdict {
    int status;                         /* 101 on success */
    const char *reason;                 /* short text for the error body */
    const struct config_route *route;
    const char *protocol;               /* the chosen subprotocol, or NULL */
    struct pmd_params pmd;              /* permessage-deflate, if agreed */
    char extensions[192];               /* our Sec-WebSocket-Extensions ("": none) */
};

#define HTTP_TOO_LARGE "request headers too large"

/* The request as it arrives: the parser and the bytes read so far, in a
 * buffer that starts small and doubles up to max_header_size + 1 (one byte
 * over the limit tells "too large" from "exactly full"). What it holds is
 * counted in mem.h. */
struct http_in {
    struct http_req req;
    char *buf;
    uint32_t len, cap, max;
};

/* NULL if out of memory. */
struct http_in *http_in_new(size_t max_header_size);
void http_in_free(struct http_in *in);
/* Where the next read goes: in->buf + in->len, *room bytes. 0, 1 when
 * the request is too large already, -1 out of memory. */
int  http_in_room(struct http_in *in, size_t *room);
/* n bytes were read into the room: http_req_feed on them. */
enum http_result http_in_feed(struct http_in *in, size_t n, size_t *end);
/* The bytes after the request (frames pipelined behind it), moved to the
 * front of the buffer, which the caller now owns (malloc'd; *len may be 0). */
char *http_in_take_rest(struct http_in *in, size_t end, size_t *len);

struct ws_request;
/* What ws_request_header reads (the module's view of a request). */
struct http_view {
    const struct http_req *r;
    const char *buf;
    size_t end;
};
/* Fills *req (path and query; subprotocol and peer are the caller's) for
 * the complete request in in[0..end); view must outlive req's use. */
void http_req_view(const struct http_in *in, size_t end, struct http_view *view,
                   struct ws_request *req);

/* Makes http-parser's own header limit the configured one (it is global
 * to the process and defaults to 80 KiB). */
void http_set_max_header_size(size_t max);
void http_req_init(struct http_req *r);
/* buf[0..len) is everything received so far and buf[from..len) is new.
 * On HTTP_DONE, *end is the offset just past the request: anything after
 * it is already WebSocket data. On HTTP_BAD, bad_status and bad_reason
 * say what to answer. */
enum http_result http_req_feed(struct http_req *r, const char *buf, size_t from,
                               size_t len, size_t *end);
/* Judges a complete request against RFC 6455 section 4.2.1 and the routes. */
void http_req_check(const struct http_req *r, const char *buf,
                    const struct config *cf, struct http_verdict *v);

/* A GET or HEAD whose target's path (before any query) is path. */
int http_req_path_is(const struct http_req *r, const char *buf, const char *path);
/* A HEAD request: its response carries no body. */
int http_req_is_head(const struct http_req *r);

/* The reason phrase for the statuses we answer with ("Internal Server
 * Error" for any other). */
const char *http_status_text(int status);
/* Write a complete response into out[0..cap) and return its length; with
 * head set, the headers only. */
size_t http_error_response(int status, const char *reason, int head, char *out, size_t cap);
/* The same with more header lines ("Retry-After: 1\r\n"; NULL: none). */
size_t http_error_response_with(int status, const char *reason, const char *headers, int head,
                                char *out, size_t cap);
size_t http_upgrade_response(const struct http_req *r, const char *buf,
                             const struct http_verdict *v, char *out, size_t cap);

#endif
