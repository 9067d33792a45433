/* The parser follows RFC 7692 section 5's grammar over RFC 6455 9.1's
 * extension list: offers separated by commas, each a name then
 * ";"-separated parameters, a value a token or a quoted string. */
#include "pmdoffer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct offer {
    int server_nct, client_nct; /* seen */
    int server_bits;            /* 0: not given */
    int client_bits;            /* -1: not given; 0: given without a value */
};

struct cursor {
    const char *p, *end;
};

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* A token or a quoted string into out (NUL-terminated); 0, or -1. */
static int word(struct cursor *c, char *out, size_t cap, int quoted_ok)
{
    size_t n = 0;
    int quoted = quoted_ok && c->p < c->end && *c->p == '"';
    if (quoted)
        c->p++;
    while (c->p < c->end && (quoted ? *c->p != '"' : tchar((unsigned char)*c->p))) {
        if (n + 1 >= cap || (quoted && !tchar((unsigned char)*c->p)))
            return -1; /* window bits are digits, quoted or not */
        out[n++] = *c->p++;
    }
    if (quoted && (c->p >= c->end || *c->p++ != '"'))
        return -1;
    out[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* 8..15 written plainly; -1 otherwise. */
static int window_bits(const char *v)
{
    if (!isdigit((unsigned char)v[0]) || v[0] == '0' || strlen(v) > 2)
        return -1;
    int b = atoi(v);
    return b >= 8 && b <= 15 ? b : -1;
}

/* One parameter into o; -1 if it makes the offer unacceptable. */
static int param(struct offer *o, const char *name, const char *value)
{
    if (strcmp(name, "server_no_context_takeover") == 0 && !value && !o->server_nct)
        return o->server_nct = 1, 0;
    if (strcmp(name, "client_no_context_takeover") == 0 && !value && !o->client_nct)
        return o->client_nct = 1, 0;
    if (strcmp(name, "server_max_window_bits") == 0 && value && !o->server_bits)
        return (o->server_bits = window_bits(value)) < 0 ? -1 : 0;
    if (strcmp(name, "client_max_window_bits") == 0 && o->client_bits < 0)
        return (o->client_bits = value ? window_bits(value) : 0) < 0 ? -1 : 0;
    return -1; /* unknown, repeated, or a value where none belongs (or none where one must) */
}

/* Reads the offer at c up to its comma: 1 an acceptable permessage-deflate
 * offer into *o, 0 another extension or one to decline, -1 broken syntax
 * (the rest of the line is skipped). */
static int read_offer(struct cursor *c, struct offer *o)
{
    char name[64], value[64];
    int ok = 1;
    *o = (struct offer){ 0, 0, 0, -1 };
    skip_ows(c);
    if (word(c, name, sizeof(name), 0) < 0)
        return -1;
    int ours = strcasecmp(name, "permessage-deflate") == 0;
    for (skip_ows(c); c->p < c->end && *c->p == ';'; skip_ows(c)) {
        c->p++;
        skip_ows(c);
        if (word(c, name, sizeof(name), 0) < 0)
            return -1;
        skip_ows(c);
        int has = c->p < c->end && *c->p == '=';
        if (has) {
            c->p++;
            skip_ows(c);
            if (word(c, value, sizeof(value), 1) < 0)
                return -1;
        }
        if (ours && ok && param(o, name, has ? value : NULL) < 0)
            ok = 0;
    }
    if (c->p < c->end && *c->p != ',')
        return -1;
    if (c->p < c->end)
        c->p++;
    return ours && ok;
}

/* Appends "; text" to the answer; -1 once it does not fit. */
static int put(char *resp, size_t cap, size_t *n, const char *fmt, int v)
{
    int k = snprintf(resp + *n, cap - *n, fmt, v);
    if (k < 0 || (size_t)k >= cap - *n)
        return -1;
    *n += (size_t)k;
    return 0;
}

/* The client's window: what our answer binds it to, or its own hint (RFC
 * 7692 7.1.2.2), which we turn into a binding answer when we keep its
 * context; 15 when it offered the parameter nowhere. */
static int client_window(const struct config_pmd *cf, const struct offer *o, int keep, int *say)
{
    int cmax = o->client_bits > 0 ? o->client_bits : 15;
    *say = 0;
    if (o->client_bits >= 0 && (int)cf->client_max_window_bits < cmax)
        return *say = 1, (int)cf->client_max_window_bits;
    if (keep && o->client_bits > 0)
        *say = 1;
    return cmax;
}

/* What we answer an acceptable offer with; 0 if we cannot honour it. A
 * direction keeps its context unless the client or our config says not. */
static int answer(const struct config_pmd *cf, const struct offer *o, struct pmd_params *out,
                  char *resp, size_t cap)
{
    int sbits = (int)cf->server_max_window_bits, say, r = 0;
    if (o->server_bits && o->server_bits < 9)
        return 0; /* zlib has no 256-byte window: the next offer, or none */
    if (o->server_bits && o->server_bits < sbits)
        sbits = o->server_bits;
    int st = !cf->server_no_context_takeover && !o->server_nct;
    int ct = !cf->client_no_context_takeover && !o->client_nct;
    int cbits = client_window(cf, o, ct, &say);
    size_t n = 0;
    r |= put(resp, cap, &n, "permessage-deflate", 0);
    if (!st)
        r |= put(resp, cap, &n, "; server_no_context_takeover", 0);
    if (!ct)
        r |= put(resp, cap, &n, "; client_no_context_takeover", 0);
    if (o->server_bits)
        r |= put(resp, cap, &n, "; server_max_window_bits=%d", sbits);
    if (say)
        r |= put(resp, cap, &n, "; client_max_window_bits=%d", cbits);
    if (r < 0)
        return 0;
    *out = (struct pmd_params){ (uint8_t)sbits, (uint8_t)cbits, (uint8_t)st, (uint8_t)ct };
    return 1;
}

int pmd_negotiate(const struct config_pmd *cf, const struct pmd_line *lines, size_t n,
                  struct pmd_params *out, char *resp, size_t cap)
{
    struct offer o;
    *out = (struct pmd_params){ 0, 0, 0, 0 };
    if (!cf->enabled)
        return 0;
    for (size_t i = 0; i < n; i++) {
        struct cursor c = { lines[i].p, lines[i].p + lines[i].len };
        while (c.p < c.end) {
            int r = read_offer(&c, &o);
            if (r < 0)
                break;
            if (r > 0 && answer(cf, &o, out, resp, cap))
                return 1;
            skip_ows(&c);
        }
    }
    return 0;
}

uint32_t pmd_params_pack(const struct pmd_params *pp)
{
    return pp->server_bits | (uint32_t)pp->client_bits << 8 |
           (uint32_t)(pp->server_takeover != 0) << 16 | (uint32_t)(pp->client_takeover != 0) << 17;
}

int pmd_params_unpack(uint32_t v, struct pmd_params *pp)
{
    *pp = (struct pmd_params){ (uint8_t)v, (uint8_t)(v >> 8), (v >> 16) & 1, (v >> 17) & 1 };
    if (v == 0)
        return 0;
    if ((v >> 18) != 0 || pp->server_bits < 9 || pp->server_bits > 15)
        return -1;
    if (pp->client_bits == 0) /* an older handoff: no context was kept */
        pp->client_bits = 15;
    return pp->client_bits >= 8 && pp->client_bits <= 15 ? 0 : -1;
}
