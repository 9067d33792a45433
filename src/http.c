#include "http.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "mem.h"
#include "module.h"

enum { LAST_NONE, LAST_URL, LAST_FIELD, LAST_VALUE };

static const char *const hdr_names[HDR_COUNT] = {
    [HDR_HOST] = "host",
    [HDR_UPGRADE] = "upgrade",
    [HDR_CONNECTION] = "connection",
    [HDR_WS_KEY] = "sec-websocket-key",
    [HDR_WS_VERSION] = "sec-websocket-version",
    [HDR_CONTENT_LENGTH] = "content-length",
    [HDR_TRANSFER_ENCODING] = "transfer-encoding",
    [HDR_ORIGIN] = "origin",
    [HDR_WS_PROTOCOL] = "sec-websocket-protocol",
    [HDR_WS_EXTENSIONS] = "sec-websocket-extensions",
};

static struct http_req *req_of(http_parser *p)
{
    return p->data;
}

/* http-parser splits a token only where our buffer ended, and the buffer is
 * contiguous: a piece that starts where the span ends continues it. */
static int continues(const struct http_span *s, uint32_t off)
{
    return s->off + s->len == off;
}

static int span_is(const char *base, struct http_span s, const char *name)
{
    return strlen(name) == s.len && strncasecmp(base + s.off, name, s.len) == 0;
}

static int has_token(const char *base, struct http_span s, const char *token);

/* A completed header line: remember the ones the handshake needs. */
static void header_done(struct http_req *r)
{
    for (int i = 0; i < HDR_COUNT; i++) {
        if (!span_is(r->base, r->field, hdr_names[i]))
            continue;
        if (i == HDR_WS_PROTOCOL || i == HDR_WS_EXTENSIONS) {
            enum http_list l = i == HDR_WS_PROTOCOL ? LIST_WS_PROTOCOL : LIST_WS_EXTENSIONS;
            if (r->count[i] < HTTP_LIST_LINES)
                r->list[l][r->count[i]] = r->value;
        }
        if (r->count[i] < UINT8_MAX)
            r->count[i]++;
        r->hdr[i] = r->value;
        /* Connection may legitimately repeat; any line may carry the token. */
        if (i == HDR_CONNECTION && has_token(r->base, r->value, "upgrade"))
            r->conn_upgrade = 1;
        return;
    }
}

/* Closes the header line in progress, if any (its value may be empty). */
static void header_flush(struct http_req *r)
{
    if (r->last == LAST_FIELD)
        r->value = (struct http_span){ r->field.off + r->field.len, 0 };
    if (r->last == LAST_FIELD || r->last == LAST_VALUE)
        header_done(r);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_req *r = req_of(p);
    uint32_t off = (uint32_t)(at - r->base);
    if (r->last == LAST_URL && continues(&r->url, off))
        r->url.len += (uint32_t)len;
    else
        r->url = (struct http_span){ off, (uint32_t)len };
    r->last = LAST_URL;
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    struct http_req *r = req_of(p);
    uint32_t off = (uint32_t)(at - r->base);
    if (r->last == LAST_FIELD && continues(&r->field, off)) {
        r->field.len += (uint32_t)len;
    } else {
        header_flush(r);
        r->field = (struct http_span){ off, (uint32_t)len };
    }
    r->last = LAST_FIELD;
    return 0;
}

/* A value that starts on a line of its own is obs-fold (RFC 9112 5.2): the
 * continuation of the previous line's value. http-parser passes it on as
 * a new piece, which would silently replace what came before it. */
static int folded(const struct http_req *r, const char *at, size_t len)
{
    const char *p = at;
    if (len == 0)
        return 0; /* an empty value is reported where the line ends */
    while (p > r->base && (p[-1] == ' ' || p[-1] == '\t'))
        p--;
    return (p > r->base && p[-1] == '\n') || memchr(at, '\n', len) != NULL;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    struct http_req *r = req_of(p);
    uint32_t off = (uint32_t)(at - r->base);
    if (r->last == LAST_VALUE && continues(&r->value, off)) {
        r->value.len += (uint32_t)len;
    } else if (folded(r, at, len)) {
        r->bad_status = 400;
        r->bad_reason = "obsolete line folding in a header field (RFC 9112 5.2)";
        return 1;
    } else {
        r->value = (struct http_span){ off, (uint32_t)len };
    }
    r->last = LAST_VALUE;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_req *r = req_of(p);
    header_flush(r);
    r->last = LAST_NONE;
    return 1; /* a handshake has no body: what follows is WebSocket data */
}

static int on_message_complete(http_parser *p)
{
    req_of(p)->done = 1;
    /* Stop right here: the rest of the buffer belongs to the WebSocket. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void http_set_max_header_size(size_t max)
{
    http_parser_set_max_header_size(max > UINT32_MAX ? UINT32_MAX : (uint32_t)max);
}

void http_req_init(struct http_req *r)
{
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
}

enum http_result http_req_feed(struct http_req *r, const char *buf, size_t from,
                               size_t len, size_t *end)
{
    r->base = buf;
    size_t n = http_parser_execute(&r->parser, &settings, buf + from, len - from);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    r->base = NULL;
    if (r->done) {
        *end = from + n;
        return HTTP_DONE;
    }
    if (e == HPE_OK && !r->parser.upgrade)
        return HTTP_MORE;
    if (r->bad_status == 0) {
        int big = e == HPE_HEADER_OVERFLOW;
        r->bad_status = big ? 431 : 400;
        r->bad_reason = big ? HTTP_TOO_LARGE : "malformed HTTP request";
    }
    return HTTP_BAD;
}

int http_req_path_is(const struct http_req *r, const char *buf, const char *path)
{
    size_t n = strlen(path), len = r->url.len;
    const char *u = buf + r->url.off, *q = memchr(u, '?', len);
    if (q != NULL)
        len = (size_t)(q - u);
    return (r->parser.method == HTTP_GET || r->parser.method == HTTP_HEAD) && len == n &&
           memcmp(u, path, n) == 0;
}

int http_req_is_head(const struct http_req *r)
{
    return r->url.len > 0 && r->parser.method == HTTP_HEAD;
}

static struct http_span trim(const char *base, struct http_span s)
{
    while (s.len && (base[s.off] == ' ' || base[s.off] == '\t')) {
        s.off++;
        s.len--;
    }
    while (s.len && (base[s.off + s.len - 1] == ' ' || base[s.off + s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Is token one of the comma-separated, case-insensitive items of s? */
/* The next comma-separated item of s at or after *pos, trimmed; 0 when
 * there is none left. Start with *pos = s.off. */
static int next_item(const char *base, struct http_span s, uint32_t *pos,
                     struct http_span *item)
{
    uint32_t end = s.off + s.len, i = *pos;
    if (i > end)
        return 0;
    while (i < end && base[i] != ',')
        i++;
    *item = trim(base, (struct http_span){ *pos, i - *pos });
    *pos = i + 1;
    return 1;
}

static int has_token(const char *base, struct http_span s, const char *token)
{
    struct http_span item;
    for (uint32_t pos = s.off; next_item(base, s, &pos, &item);)
        if (span_is(base, item, token))
            return 1;
    return 0;
}

static int valid_host(const char *base, struct http_span s)
{
    if (s.len == 0)
        return 0;
    for (uint32_t i = s.off; i < s.off + s.len; i++) {
        unsigned char ch = (unsigned char)base[i];
        if (ch <= ' ' || ch >= 0x7f || strchr("/\\?#@\"<>{}|^`", ch) != NULL)
            return 0;
    }
    return 1;
}

/* RFC 6455 4.1: a base64-encoded 16-byte nonce, i.e. 22 characters + "==". */
static int valid_key(const char *base, struct http_span s)
{
    unsigned char raw[24];
    if (s.len != 24 || base[s.off + 22] != '=' || base[s.off + 23] != '=')
        return 0;
    if (strchr("AQgw", base[s.off + 21]) == NULL) /* no stray bits past 16 bytes */
        return 0;
    return EVP_DecodeBlock(raw, (const unsigned char *)base + s.off, 24) == 18;
}

static int verdict(struct http_verdict *v, int status, const char *reason)
{
    v->status = status;
    v->reason = reason;
    return status;
}

static int check_target(const struct http_req *r, const char *buf,
                        const struct config *cf, struct http_verdict *v)
{
    struct http_parser_url u;
    const http_parser *p = &r->parser;
    if (p->http_major >= 2)
        return verdict(v, 505, "WebSocket handshakes use HTTP/1.1");
    if (p->http_major < 1 || (p->http_major == 1 && p->http_minor < 1))
        return verdict(v, 400, "WebSocket handshakes need HTTP/1.1 or later");
    http_parser_url_init(&u);
    if (http_parser_parse_url(buf + r->url.off, r->url.len, 0, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH)))
        return verdict(v, 400, "invalid request target");
    v->route = config_route_find(cf, buf + r->url.off + u.field_data[UF_PATH].off,
                                 u.field_data[UF_PATH].len);
    if (v->route == NULL)
        return verdict(v, 404, "no WebSocket route for this path");
    if (p->method != HTTP_GET)
        return verdict(v, 405, "WebSocket handshakes use GET");
    return 0;
}

static int check_headers(const struct http_req *r, const char *buf, struct http_verdict *v)
{
    const uint8_t *n = r->count;
    if (n[HDR_HOST] != 1 || !valid_host(buf, trim(buf, r->hdr[HDR_HOST])))
        return verdict(v, 400, n[HDR_HOST] > 1 ? "duplicate Host header"
                                               : "missing or invalid Host header");
    if (n[HDR_UPGRADE] == 0 && n[HDR_WS_KEY] == 0)
        return verdict(v, 426, "this is a WebSocket endpoint: upgrade required");
    if (n[HDR_UPGRADE] != 1 || !has_token(buf, r->hdr[HDR_UPGRADE], "websocket"))
        return verdict(v, 400, "Upgrade header must be 'websocket'");
    if (!r->conn_upgrade)
        return verdict(v, 400, "Connection header must include 'Upgrade'");
    if (n[HDR_WS_VERSION] > 1)
        return verdict(v, 400, "duplicate Sec-WebSocket-Version header");
    if (n[HDR_WS_VERSION] != 1 || !span_is(buf, trim(buf, r->hdr[HDR_WS_VERSION]), "13"))
        return verdict(v, 426, "unsupported Sec-WebSocket-Version (13 required)");
    if (n[HDR_WS_KEY] != 1 || !valid_key(buf, trim(buf, r->hdr[HDR_WS_KEY])))
        return verdict(v, 400, "missing or invalid Sec-WebSocket-Key");
    if (n[HDR_TRANSFER_ENCODING] || (n[HDR_CONTENT_LENGTH] && r->parser.content_length))
        return verdict(v, 400, "a WebSocket handshake has no body");
    if (n[HDR_ORIGIN] > 1)
        return verdict(v, 400, "duplicate Origin header");
    if (n[HDR_WS_PROTOCOL] > HTTP_LIST_LINES || n[HDR_WS_EXTENSIONS] > HTTP_LIST_LINES)
        return verdict(v, 400, "too many Sec-WebSocket-Protocol or -Extensions lines");
    return 0;
}

/* An absent Origin is allowed: non-browser clients do not send one, and
 * Origin only protects browsers' users. */
static int check_origin(const struct http_req *r, const char *buf,
                        const struct config *cf, struct http_verdict *v)
{
    if (cf->origins == NULL || r->count[HDR_ORIGIN] == 0)
        return 0;
    struct http_span o = trim(buf, r->hdr[HDR_ORIGIN]);
    for (size_t i = 0; i < cf->norigins; i++)
        if (strlen(cf->origins[i]) == o.len && memcmp(cf->origins[i], buf + o.off, o.len) == 0)
            return 0;
    return verdict(v, 403, "Origin not allowed");
}

/* The first protocol the client offers that we serve, in its order, over
 * all its Sec-WebSocket-Protocol lines. */
static const char *choose_protocol(const struct http_req *r, const char *buf,
                                   const struct config *cf)
{
    struct http_span item;
    for (unsigned line = 0; line < r->count[HDR_WS_PROTOCOL]; line++) {
        struct http_span s = r->list[LIST_WS_PROTOCOL][line];
        for (uint32_t pos = s.off; next_item(buf, s, &pos, &item);)
            for (size_t k = 0; k < cf->nsubprotocols; k++)
                if (strlen(cf->subprotocols[k]) == item.len &&
                    memcmp(buf + item.off, cf->subprotocols[k], item.len) == 0)
                    return cf->subprotocols[k]; /* protocol names are case-sensitive */
    }
    return NULL;
}

static void choose_extensions(const struct http_req *r, const char *buf,
                              const struct config *cf, struct http_verdict *v)
{
    struct pmd_line lines[HTTP_LIST_LINES];
    size_t n = r->count[HDR_WS_EXTENSIONS] < HTTP_LIST_LINES ? r->count[HDR_WS_EXTENSIONS]
                                                             : HTTP_LIST_LINES;
    for (size_t i = 0; i < n; i++) {
        lines[i].p = buf + r->list[LIST_WS_EXTENSIONS][i].off;
        lines[i].len = r->list[LIST_WS_EXTENSIONS][i].len;
    }
    if (!pmd_negotiate(&cf->pmd, lines, n, &v->pmd, v->extensions, sizeof(v->extensions)))
        v->extensions[0] = '\0';
}

void http_req_check(const struct http_req *r, const char *buf,
                    const struct config *cf, struct http_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (check_target(r, buf, cf, v) == 0 && check_headers(r, buf, v) == 0 &&
        check_origin(r, buf, cf, v) == 0) {
        verdict(v, 101, "Switching Protocols");
        v->protocol = choose_protocol(r, buf, cf);
        choose_extensions(r, buf, cf, v);
    }
}

const char *http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default:  return "Internal Server Error";
    }
}

size_t http_error_response_with(int status, const char *reason, const char *headers, int head,
                                char *out, size_t cap)
{
    /* RFC 9110 7.8: whoever sends Upgrade lists it in Connection too. */
    const char *conn = status == 426 ? "Upgrade, close" : "close";
    const char *extra = status == 426 ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      : status == 405 ? "Allow: GET\r\n"
                      : "";
    /* A response to HEAD has the headers GET would get, and no body. */
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: %s\r\n"
                     "%s%s\r\n%s%s",
                     status, http_status_text(status), strlen(reason) + 1, conn, extra,
                     headers ? headers : "", head ? "" : reason, head ? "" : "\n");
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

size_t http_error_response(int status, const char *reason, int head, char *out, size_t cap)
{
    return http_error_response_with(status, reason, NULL, head, out, cap);
}

size_t http_upgrade_response(const struct http_req *r, const char *buf,
                             const struct http_verdict *v, char *out, size_t cap)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct http_span key = trim(buf, r->hdr[HDR_WS_KEY]);
    unsigned char material[24 + sizeof(guid) - 1], digest[EVP_MAX_MD_SIZE];
    unsigned char accept[32]; /* base64 of 20 bytes: 28 chars + NUL */
    unsigned dlen = 0;
    memcpy(material, buf + key.off, 24);
    memcpy(material + 24, guid, sizeof(guid) - 1);
    if (!EVP_Digest(material, sizeof(material), digest, &dlen, EVP_sha1(), NULL))
        return 0;
    EVP_EncodeBlock(accept, digest, (int)dlen);
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%s%s%s%s%s\r\n",
                     accept, v->protocol ? "Sec-WebSocket-Protocol: " : "",
                     v->protocol ? v->protocol : "", v->protocol ? "\r\n" : "",
                     v->extensions[0] ? "Sec-WebSocket-Extensions: " : "", v->extensions,
                     v->extensions[0] ? "\r\n" : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

/* ---- The request buffer ------------------------------------------------- */

/* First size of the request buffer: most requests are a few hundred bytes. */
#define HTTP_IN_START 1024

struct http_in *http_in_new(size_t max_header_size)
{
    struct http_in *in = malloc(sizeof(*in));
    if (in == NULL)
        return NULL;
    in->max = (uint32_t)max_header_size + 1;
    in->cap = HTTP_IN_START < in->max ? HTTP_IN_START : in->max;
    in->len = 0;
    if ((in->buf = malloc(in->cap)) == NULL) {
        free(in);
        return NULL;
    }
    http_req_init(&in->req);
    mem_add(sizeof(*in) + in->cap + 2 * MEM_BLOCK_OVERHEAD);
    return in;
}

void http_in_free(struct http_in *in)
{
    if (in == NULL)
        return;
    mem_sub(sizeof(*in) + MEM_BLOCK_OVERHEAD + (in->buf ? in->cap + MEM_BLOCK_OVERHEAD : 0));
    free(in->buf);
    free(in);
}

int http_in_room(struct http_in *in, size_t *room)
{
    if (in->len >= in->max)
        return 1;
    if (in->len == in->cap) {
        size_t grown = in->cap * 2 < in->max ? in->cap * 2 : in->max;
        char *buf = realloc(in->buf, grown);
        if (buf == NULL)
            return -1;
        mem_add(grown - in->cap);
        in->buf = buf;
        in->cap = (uint32_t)grown;
    }
    *room = in->cap - in->len;
    return 0;
}

enum http_result http_in_feed(struct http_in *in, size_t n, size_t *end)
{
    size_t from = in->len;
    in->len += (uint32_t)n;
    return http_req_feed(&in->req, in->buf, from, in->len, end);
}

char *http_in_take_rest(struct http_in *in, size_t end, size_t *len)
{
    char *buf = in->buf;
    *len = in->len - end;
    memmove(buf, buf + end, *len);
    mem_sub(in->cap + MEM_BLOCK_OVERHEAD); /* its new owner counts what it keeps */
    in->buf = NULL;
    return buf;
}

/* ---- The module's view -------------------------------------------------- */

void http_req_view(const struct http_in *in, size_t end, struct http_view *view,
                   struct ws_request *req)
{
    const char *url = in->buf + in->req.url.off;
    const char *q = memchr(url, '?', in->req.url.len);
    memset(req, 0, sizeof(*req));
    view->r = &in->req;
    view->buf = in->buf;
    view->end = end;
    req->path = url;
    req->path_len = q ? (size_t)(q - url) : in->req.url.len;
    req->query = q ? q + 1 : url + in->req.url.len;
    req->query_len = q ? in->req.url.len - req->path_len - 1 : 0;
    req->priv = view;
}

static int name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

const char *ws_request_header(const struct ws_request *req, const char *name, size_t *len)
{
    const struct http_view *v = req->priv;
    const char *p = memchr(v->buf, '\n', v->end), *stop = v->buf + v->end, *found = NULL;
    /* Line by line after the request line; obs-fold was refused already. */
    while (p != NULL && ++p < stop) {
        const char *eol = memchr(p, '\n', (size_t)(stop - p));
        const char *colon = eol ? memchr(p, ':', (size_t)(eol - p)) : NULL;
        if (colon != NULL && name_is(p, (size_t)(colon - p), name)) {
            const char *a = colon + 1, *b = eol;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == '\r' || b[-1] == ' ' || b[-1] == '\t'))
                b--;
            found = a;
            *len = (size_t)(b - a);
        }
        p = eol;
    }
    return found;
}
