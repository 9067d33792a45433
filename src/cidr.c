#include "cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Whether the first bits of a and b agree. */
static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int cidr_parse(const char *s, struct config_cidr *c)
{
    char host[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    unsigned max, bits = 0;
    memset(c, 0, sizeof(*c));
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, c->addr) == 1)
        c->family = AF_INET, max = 32;
    else if (inet_pton(AF_INET6, host, c->addr) == 1)
        c->family = AF_INET6, max = 128;
    else
        return -1;
    if (slash == NULL) {
        c->bits = max;
        return 0;
    }
    const char *d = slash + 1;
    if (*d == '\0' || strlen(d) > 3 || (d[0] == '0' && d[1] != '\0'))
        return -1;
    for (; *d; d++) {
        if (*d < '0' || *d > '9')
            return -1;
        bits = bits * 10 + (unsigned)(*d - '0');
    }
    if (bits > max)
        return -1;
    c->bits = bits;
    uint8_t masked[16];
    memcpy(masked, c->addr, sizeof(masked));
    for (unsigned i = bits; i < max; i++)
        masked[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
    /* The host part must be zero: "10.1.2.3/8" is a typo for a network. */
    return memcmp(masked, c->addr, sizeof(masked)) == 0 ? 0 : -2;
}

void cidr_format(const struct config_cidr *c, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    inet_ntop(c->family, c->addr, host, sizeof(host));
    snprintf(buf, len, "%s/%u", host, c->bits);
}

int cidr_match(const struct config_cidr *c, size_t n, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa->sa_family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    else
        return 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].family == sa->sa_family && prefix_eq(a, c[i].addr, c[i].bits))
            return 1;
    return 0;
}
