/* src/proxyproto.c: PROXY protocol v1 and v2 headers, whole and in every
 * split, the bytes after them, and the ways a header is refused. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"
#include "tap.h"

static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                                 0x54, 0x0A };

static enum proxyproto_status parse_str(const char *s, struct proxyproto_result *r)
{
    return proxyproto_parse((const uint8_t *)s, strlen(s), r);
}

static int is_v4(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    char text[INET_ADDRSTRLEN];
    return a->sin_family == AF_INET && ntohs(a->sin_port) == port &&
           inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text)) && strcmp(text, addr) == 0;
}

static int is_v6(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    char text[INET6_ADDRSTRLEN];
    return a->sin6_family == AF_INET6 && ntohs(a->sin6_port) == port &&
           inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text)) && strcmp(text, addr) == 0;
}

/* Every proper prefix of buf[0..len) asks for more. */
static int prefixes_need_more(const uint8_t *buf, size_t len)
{
    struct proxyproto_result r;
    for (size_t i = 0; i < len; i++)
        if (proxyproto_parse(buf, i, &r) != PROXYPROTO_NEED_MORE)
            return 0;
    return 1;
}

static void v1_valid(void)
{
    struct proxyproto_result r;
    const char *h4 = "PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n";
    char with_rest[128];
    snprintf(with_rest, sizeof(with_rest), "%sGET / HTTP/1.1\r\n", h4);
    ok(parse_str(with_rest, &r) == PROXYPROTO_OK && r.len == strlen(h4) && r.version == 1 &&
       !r.local && is_v4(&r.src, "192.168.0.1", 56324) && is_v4(&r.dst, "10.0.0.2", 443),
       "v1 TCP4: addresses, ports, and the request after it is not consumed");
    ok(prefixes_need_more((const uint8_t *)h4, strlen(h4)), "v1 TCP4: every prefix needs more");
    ok(parse_str("PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", &r) == PROXYPROTO_OK &&
       is_v6(&r.src, "2001:db8::1", 0) && is_v6(&r.dst, "::1", 65535), "v1 TCP6");
    ok(parse_str("PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n", &r) == PROXYPROTO_OK,
       "v1: the extremes of addresses and ports");
    ok(parse_str("PROXY UNKNOWN\r\n", &r) == PROXYPROTO_OK && r.local && r.len == 15,
       "v1 UNKNOWN, short form: the connection's own addresses");
    ok(parse_str("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", &r) == PROXYPROTO_OK &&
       r.local && r.len == 107, "v1 UNKNOWN, worst case: 107 bytes");
    const char *max6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    ok(parse_str(max6, &r) == PROXYPROTO_OK && r.len == 104, "v1 TCP6, longest: 104 bytes");
}

static void v1_refused(void)
{
    static const char *const bad[] = {
        "PROXY TCP4 192.168.0.01 10.0.0.2 1 2\r\n",     /* leading zero */
        "PROXY TCP4 192.168.0.1 10.0.0.2 01 2\r\n",
        "PROXY TCP4 192.168.0.1  10.0.0.2 1 2\r\n",     /* two spaces */
        "PROXY TCP4 192.168.0.1 10.0.0.2 1 2 \r\n",     /* trailing space */
        "PROXY TCP4 192.168.0.1 10.0.0.2 1\r\n",        /* a field missing */
        "PROXY TCP4 192.168.0.1 10.0.0.2 1 2 3\r\n",    /* one too many */
        "PROXY TCP4 192.168.0.1 10.0.0.2 1 65536\r\n",  /* port range */
        "PROXY TCP4 192.168.0.256 10.0.0.2 1 2\r\n",
        "PROXY TCP4 192.168.0 10.0.0.2 1 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",                   /* family mismatch */
        "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP6 1:::2 ::1 1 2\r\n",
        "PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",             /* LF alone */
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",            /* CR alone */
        "PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n",
        "PROXY \r\n",
        "proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        "GET / HTTP/1.1\r\n",
    };
    struct proxyproto_result r;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(parse_str(bad[i], &r) == PROXYPROTO_BAD && r.reason != NULL, "v1 refused: %.*s (%s)",
           (int)strcspn(bad[i], "\r\n"), bad[i], r.reason ? r.reason : "-");
    char line[200];
    memset(line, 'f', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    ok(proxyproto_parse((const uint8_t *)line, 107, &r) == PROXYPROTO_BAD,
       "v1: no CRLF in 107 bytes");
    ok(proxyproto_parse((const uint8_t *)line, 106, &r) == PROXYPROTO_NEED_MORE,
       "v1: 106 bytes without CRLF may still end");
    memcpy(line + 106, "\r\n", 2);
    ok(proxyproto_parse((const uint8_t *)line, 108, &r) == PROXYPROTO_BAD,
       "v1: a CRLF ending at byte 108 is too late");
    ok(proxyproto_parse((const uint8_t *)"G", 1, &r) == PROXYPROTO_BAD &&
       proxyproto_parse((const uint8_t *)"PRX", 3, &r) == PROXYPROTO_BAD,
       "something else is refused from its first wrong byte");
}

/* A v2 header: signature, ver_cmd, fam, then body[0..blen). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static void v2_valid(void)
{
    uint8_t buf[PROXYPROTO_MAX + 64], body[PROXYPROTO_V2_MAX_LEN];
    struct proxyproto_result r;
    const uint8_t a4[12] = { 203, 0, 113, 7, 10, 0, 0, 1, 0xC3, 0x50, 0x01, 0xBB };
    size_t n = v2(buf, 0x21, 0x11, a4, sizeof(a4));
    memcpy(buf + n, "\x16\x03\x01", 3); /* a ClientHello follows */
    ok(proxyproto_parse(buf, n + 3, &r) == PROXYPROTO_OK && r.len == 28 && r.version == 2 &&
       !r.local && is_v4(&r.src, "203.0.113.7", 50000) && is_v4(&r.dst, "10.0.0.1", 443),
       "v2 TCP over IPv4; what follows is left");
    ok(prefixes_need_more(buf, n), "v2 IPv4: every prefix needs more");
    memset(body, 0, 36);
    body[0] = 0x20, body[1] = 0x01, body[2] = 0x0d, body[3] = 0xb8, body[15] = 9;
    body[31] = 1;
    body[32] = 0x30, body[33] = 0x39, body[34] = 0, body[35] = 80;
    n = v2(buf, 0x21, 0x21, body, 36);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && is_v6(&r.src, "2001:db8::9", 12345) &&
       is_v6(&r.dst, "::1", 80), "v2 TCP over IPv6");
    /* TLVs after the addresses: ALPN, a NOOP, an SSL one with sub-TLVs. */
    memcpy(body, a4, 12);
    static const uint8_t tlvs[] = { 0x01, 0, 2, 'h', '2', 0x04, 0, 0,
                                    0x20, 0, 8, 1, 0, 0, 0, 0, 0x21, 0, 0 };
    memcpy(body + 12, tlvs, sizeof(tlvs));
    n = v2(buf, 0x21, 0x11, body, 12 + sizeof(tlvs));
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.len == n && !r.local,
       "v2 with TLVs: skipped");
    n = v2(buf, 0x20, 0x00, NULL, 0);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.local && r.len == 16,
       "v2 LOCAL (a health check): the connection's own addresses");
    n = v2(buf, 0x20, 0x77, (const uint8_t *)"junk", 4);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.local && r.len == 20,
       "v2 LOCAL: its block and family are ignored");
    n = v2(buf, 0x21, 0x00, NULL, 0);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.local, "v2 PROXY UNSPEC: local");
    n = v2(buf, 0x21, 0x12, a4, sizeof(a4));
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.local, "v2 UDP: local");
    memset(body, 'x', 216);
    n = v2(buf, 0x21, 0x31, body, 216);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.local && r.len == 232,
       "v2 UNIX stream: local");
    memcpy(body, a4, 12);
    body[12] = 0x04;
    body[13] = (uint8_t)((PROXYPROTO_V2_MAX_LEN - 15) >> 8);
    body[14] = (uint8_t)(PROXYPROTO_V2_MAX_LEN - 15);
    n = v2(buf, 0x21, 0x11, body, PROXYPROTO_V2_MAX_LEN);
    ok(n == PROXYPROTO_MAX && proxyproto_parse(buf, n, &r) == PROXYPROTO_OK && r.len == n,
       "v2 of the largest length taken (%d bytes)", PROXYPROTO_MAX);
}

static void v2_refused(void)
{
    uint8_t buf[PROXYPROTO_MAX + 64], body[PROXYPROTO_V2_MAX_LEN + 1];
    struct proxyproto_result r;
    const uint8_t a4[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2 };
    size_t n = v2(buf, 0x11, 0x11, a4, 12);
    ok(proxyproto_parse(buf, 13, &r) == PROXYPROTO_BAD, "v2: version 1 in a v2 header");
    n = v2(buf, 0x22, 0x11, a4, 12);
    ok(proxyproto_parse(buf, 13, &r) == PROXYPROTO_BAD, "v2: command 2");
    n = v2(buf, 0x21, 0x41, a4, 12);
    ok(proxyproto_parse(buf, 14, &r) == PROXYPROTO_BAD, "v2: family 4");
    n = v2(buf, 0x21, 0x13, a4, 12);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_BAD, "v2: transport 3");
    n = v2(buf, 0x21, 0x11, a4, 11);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_BAD, "v2: IPv4 block of 11 bytes");
    n = v2(buf, 0x21, 0x21, a4, 12);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_BAD, "v2: IPv6 block of 12 bytes");
    memset(body, 0, sizeof(body));
    n = v2(buf, 0x21, 0x11, body, PROXYPROTO_V2_MAX_LEN + 1);
    ok(proxyproto_parse(buf, 16, &r) == PROXYPROTO_BAD, "v2: a length over the bound, "
       "refused from the 16 bytes that say it");
    memcpy(body, a4, 12);
    memcpy(body + 12, "\x01\x00\x05" "ab", 5); /* says 5, has 2 */
    n = v2(buf, 0x21, 0x11, body, 17);
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_BAD, "v2: a TLV longer than the header");
    n = v2(buf, 0x21, 0x11, body, 14); /* 2 bytes: not even a TLV head */
    ok(proxyproto_parse(buf, n, &r) == PROXYPROTO_BAD, "v2: a cut TLV head");
    memcpy(buf, sig, 12);
    buf[5] = 0x0C;
    ok(proxyproto_parse(buf, 6, &r) == PROXYPROTO_BAD, "v2: a wrong signature byte");
    ok(proxyproto_parse(buf, 0, &r) == PROXYPROTO_NEED_MORE, "nothing yet: need more");
}

int main(void)
{
    v1_valid();
    v1_refused();
    v2_valid();
    v2_refused();
    return tap_done();
}
