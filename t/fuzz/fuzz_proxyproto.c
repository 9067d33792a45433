/* libFuzzer harness for the PROXY protocol parser (src/proxyproto.c).
 *
 * Input: the first bytes of a connection. Each call gets a buffer of
 * exactly the bytes it may read (a fresh allocation), so a read past them
 * is an ASan error. Beyond not crashing, the answers must agree with each
 * other the way the worker relies on: an OK header lies within the bytes
 * given and within PROXYPROTO_MAX, and every shorter prefix of it asks for
 * more (so reading in pieces finds the same header); a prefix of a header
 * still incomplete was never refused (so a refusal does not depend on how
 * the bytes were split); an answer never depends on bytes after the
 * header; what is OK and not local names an IPv4 or IPv6 client. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

static enum proxyproto_status parse_copy(const uint8_t *data, size_t n,
                                         struct proxyproto_result *r)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, n);
    enum proxyproto_status st = proxyproto_parse(copy, n, r);
    free(copy);
    return st;
}

static void check_ok(const uint8_t *data, size_t size, const struct proxyproto_result *r)
{
    struct proxyproto_result again;
    if (r->len == 0 || r->len > size || r->len > PROXYPROTO_MAX || r->reason != NULL ||
        (r->version != 1 && r->version != 2))
        abort();
    if (!r->local && ((r->src.ss_family != AF_INET && r->src.ss_family != AF_INET6) ||
                      r->src.ss_family != r->dst.ss_family))
        abort();
    /* The header alone says the same. */
    if (parse_copy(data, r->len, &again) != PROXYPROTO_OK || again.len != r->len ||
        again.local != r->local || memcmp(&again.src, &r->src, sizeof(r->src)) != 0)
        abort();
    /* Split anywhere before its end, it is not complete yet. */
    size_t cuts[3] = { r->len - 1, r->len / 2, size % r->len };
    for (int i = 0; i < 3; i++)
        if (parse_copy(data, cuts[i], &again) != PROXYPROTO_NEED_MORE)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_result r, more;
    if (size > PROXYPROTO_MAX + 64)
        size = PROXYPROTO_MAX + 64;
    switch (parse_copy(data, size, &r)) {
    case PROXYPROTO_OK:
        check_ok(data, size, &r);
        break;
    case PROXYPROTO_NEED_MORE:
        if (size >= PROXYPROTO_MAX)
            abort(); /* a reader that peeked this much must get an answer */
        /* Nothing shorter was refused or complete: refusals stay refusals. */
        for (size_t n = size / 2; n > 0; n /= 2)
            if (parse_copy(data, n, &more) != PROXYPROTO_NEED_MORE)
                abort();
        break;
    case PROXYPROTO_BAD:
        if (r.reason == NULL)
            abort();
        break;
    }
    return 0;
}
