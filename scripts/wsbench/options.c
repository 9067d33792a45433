#define _GNU_SOURCE
#include "options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Bounds keep per-connection and per-thread allocations within reason and
 * the size arithmetic (uint32_t buffer lengths) from overflowing. */
#define MAX_CONNS 2000000
#define MAX_SIZE (64u << 20)
#define MAX_INFLIGHT 65536

struct options O = {
    .conns = 100, .inflight = 1, .threads = 1, .nsrc = 64, .max_pending = 256,
    .size = 20, .duration = 10, .warmup = 2, .connect_timeout = 60,
    .hs_timeout = 10, .drain_timeout = 3, .settle = 1, .mode = M_ECHO,
    .poke = 1000, .rounds = 1,
};

const char *mode_name(void)
{
    return O.mode == M_ECHO ? "echo" : O.mode == M_CONNRATE ? "connrate" : "idle";
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: wsbench [options] ws[s]://HOST[:PORT][/PATH]\n"
"\n"
"WebSocket load generator: real RFC 6455 handshakes, masked messages, every\n"
"echoed byte checked (connection id + sequence number + pattern).\n"
"\n"
"Modes (--mode):\n"
"  echo      (default) C connections, each keeps P messages of S bytes in\n"
"            flight for the duration; reports msgs/s, MB/s, latency.\n"
"  connrate  C concurrent slots, each: connect, handshake, send a close frame,\n"
"            close the socket, repeat; reports handshakes/s and latency\n"
"            (connect start -> 101 checked).\n"
"  idle      open C connections and hold them idle for the duration; reports\n"
"            the server's RSS per connection = (RSS after - RSS before)/C\n"
"            (needs --server-pid), then sends one echo on a sample (--poke).\n"
"\n"
"Options:\n"
"  -c, --conns N         connections (default 100)\n"
"  -s, --size BYTES      message size (default 20; k/m suffixes)\n"
"  -p, --inflight N      messages in flight per connection (default 1)\n"
"  -d, --duration SEC    measured time (default 10); idle mode: hold time\n"
"  -w, --warmup SEC      warm-up before measuring, excluded (default 2)\n"
"  -t, --text            send text messages (default binary)\n"
"      --deflate         offer permessage-deflate (no context takeover either way) and send\n"
"                        one JSON-like text of --size, compressed once; echoes are checked\n"
"                        whole, inflated when the server compressed them\n"
"      --varied          with --deflate: the text's records vary (numbers, words), about\n"
"                        3:1 like everyday JSON, instead of one record repeated (50:1)\n"
"  -j, --threads N       client threads, each with its own epoll (default 1)\n"
"  -m, --mode MODE       echo | connrate | idle\n"
"  -P, --server-pid PID  server pid: CPU and RSS of it and its descendants\n"
"                        are sampled from /proc before and after the window\n"
"      --sources N       127.0.x.y source addresses to spread over when the\n"
"                        target is in 127/8 (default 64; 0 = don't bind)\n"
"      --max-pending N   connects+handshakes in progress at once (default 256)\n"
"      --connect-timeout SEC  limit for opening all connections (default 60)\n"
"      --hs-timeout SEC  per-connection connect+handshake limit (default 10)\n"
"      --drain SEC       wait for outstanding echoes after the window (default 3)\n"
"      --poke N          idle mode: connections poked with one echo; -1 = all\n"
"                        (default 1000)\n"
"      --settle SEC      idle mode: wait before sampling RSS (default 1)\n"
"      --greet           idle mode: each connection echoes one message as soon\n"
"                        as it opens; connecting ends when all have (greet_ok)\n"
"      --rounds N        echo mode: N measured windows over the same connections,\n"
"                        quiet in between; a summary and RESULT (round=K) each\n"
"      --signal          driven by SIGUSR1 (for scripts running many processes):\n"
"                        prints 'READY open=N greeted=G errors=E' on stdout once\n"
"                        connecting (and --greet) ended; then in echo mode\n"
"                        each round starts at a SIGUSR1, in idle mode the hold\n"
"                        ends at one (-d is then its upper bound); at most 1 h\n"
"                        is waited for one\n"
"TLS (wss:// URLs; the server's certificate is NOT verified: this is a load\n"
"generator for test certificates):\n"
"      --sni NAME        server name sent (default: the URL's host)\n"
"      --tls12, --tls13  only that TLS version (default: negotiated)\n"
"      --tls-resume      each connection offers the session (ticket) of its\n"
"                        thread's previous one; resumed handshakes are counted\n"
"                        (mostly for --mode connrate)\n"
"  -q, --quiet           no per-second progress on stderr\n"
"  -h, --help            this text\n"
"\n"
"Output: a summary, then one line 'RESULT key=value ...' for scripts. Keys:\n"
"  msgs_per_s mb_per_s (echoed payload MB/s, 10^6 bytes, one direction)\n"
"  p50_us p99_us p999_us max_us, hs_per_s (connrate), srv_cpu_pct\n"
"  srv_ns_per_msg (server user+sys CPU per echoed message or handshake)\n"
"  srv_rss_kb, rss_per_conn_b (idle), cli_cpu_pct, err_* counters, errors;\n"
"  wss:// only, at the end: tls_fail (TLS handshake failures, also in\n"
"  err_handshake), resumed (resumed TLS handshakes), tls13, tls12 (handshakes\n"
"  per version). Then round (--rounds: the window reported), greet_ok\n"
"  (--greet: echoed on opening), pings (from the server, each answered).\n"
"Exit status: 0 run completed, 1 fatal error, 2 usage error.\n");
}

/* k/m are binary multiples so that "-s 64k" is a power of two. */
static double parse_num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s)
        goto bad;
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end)
        goto bad;
    return v;
bad:
    fprintf(stderr, "wsbench: bad %s '%s'\n", what, s);
    exit(2);
}

/* Splits HOST[:PORT] (HOST may be [v6]) out of O.hosthdr. */
static void split_host_port(const char *url)
{
    const char *hp = O.hosthdr, *port = NULL;
    if (hp[0] == '[') {
        const char *rb = strchr(hp, ']');
        if (!rb) {
            fprintf(stderr, "wsbench: bad IPv6 host in '%s'\n", url);
            exit(2);
        }
        snprintf(O.host, sizeof O.host, "%.*s", (int)(rb - hp - 1), hp + 1);
        if (rb[1] == ':')
            port = rb + 2;
    } else {
        const char *colon = strrchr(hp, ':');
        snprintf(O.host, sizeof O.host, "%.*s", (int)(colon ? (size_t)(colon - hp) : strlen(hp)), hp);
        if (colon)
            port = colon + 1;
    }
    snprintf(O.port, sizeof O.port, "%s", port && *port ? port : O.tls ? "443" : "80");
}

static void parse_url(const char *url)
{
    O.tls = strncmp(url, "wss://", 6) == 0;
    if (!O.tls && strncmp(url, "ws://", 5) != 0) {
        fprintf(stderr, "wsbench: URL must start with ws:// or wss:// (got '%s')\n", url);
        exit(2);
    }
    const char *h = url + (O.tls ? 6 : 5), *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(O.path, sizeof O.path, "%s", slash ? slash : "/");
    if (hl == 0 || hl >= sizeof O.hosthdr - 1) {
        fprintf(stderr, "wsbench: bad host in '%s'\n", url);
        exit(2);
    }
    memcpy(O.hosthdr, h, hl);
    O.hosthdr[hl] = 0;
    split_host_port(url);
    if (O.tls && !O.sni[0])
        snprintf(O.sni, sizeof O.sni, "%s", O.host);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int r = getaddrinfo(O.host, O.port, &hints, &ai);
    if (r)
        die("cannot resolve %s:%s: %s", O.host, O.port, gai_strerror(r));
    memcpy(&O.addr, ai->ai_addr, ai->ai_addrlen);
    O.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    /* Loopback has one address per side by default, which caps a run at
     * ~28k connections (ephemeral ports); all of 127/8 is ours to use. */
    if (O.addr.ss_family == AF_INET && O.nsrc > 0) {
        struct sockaddr_in *a = (struct sockaddr_in *)&O.addr;
        if ((ntohl(a->sin_addr.s_addr) >> 24) == 127)
            O.spread = 1;
    }
}

enum {
    OPT_SOURCES = 1000, OPT_MAXPEND, OPT_CTO, OPT_HSTO, OPT_DRAIN, OPT_POKE, OPT_SETTLE,
    OPT_SNI, OPT_TLS12, OPT_TLS13, OPT_RESUME, OPT_DEFLATE, OPT_VARIED, OPT_GREET,
    OPT_ROUNDS, OPT_SIGNAL
};

/* The TLS options; 0 if o is not one of them. */
static int apply_tls_option(int o, const char *arg)
{
    switch (o) {
    case OPT_SNI:
        if (!*arg || strlen(arg) >= sizeof O.sni) {
            fprintf(stderr, "wsbench: bad --sni '%s'\n", arg);
            exit(2);
        }
        snprintf(O.sni, sizeof O.sni, "%s", arg);
        return 1;
    case OPT_TLS12: O.tls_ver = O.tls_ver == 13 ? -1 : 12; return 1;
    case OPT_TLS13: O.tls_ver = O.tls_ver == 12 ? -1 : 13; return 1;
    case OPT_RESUME: O.tls_resume = 1; return 1;
    case OPT_DEFLATE: O.deflate = 1; O.text = 1; return 1;
    case OPT_VARIED: O.varied = 1; return 1;
    default: return 0;
    }
}

/* Applies one getopt_long result; returns -1, or the status to exit with. */
static int apply_option(int o, const char *arg)
{
    switch (o) {
    case 'c': O.conns = (int)parse_num(arg, "connection count"); break;
    case 's': O.size = (size_t)parse_num(arg, "size"); break;
    case 'p': O.inflight = (int)parse_num(arg, "in-flight count"); break;
    case 'd': O.duration = parse_num(arg, "duration"); break;
    case 'w': O.warmup = parse_num(arg, "warm-up"); break;
    case 't': O.text = 1; break;
    case 'j': O.threads = (int)parse_num(arg, "thread count"); break;
    case 'm':
        if (!strcmp(arg, "echo")) O.mode = M_ECHO;
        else if (!strcmp(arg, "connrate")) O.mode = M_CONNRATE;
        else if (!strcmp(arg, "idle")) O.mode = M_IDLE;
        else { fprintf(stderr, "wsbench: unknown mode '%s'\n", arg); return 2; }
        break;
    case 'P': O.server_pid = (pid_t)parse_num(arg, "pid"); break;
    case OPT_SOURCES: O.nsrc = (int)parse_num(arg, "source count"); break;
    case OPT_MAXPEND: O.max_pending = (int)parse_num(arg, "max-pending"); break;
    case OPT_CTO: O.connect_timeout = parse_num(arg, "connect timeout"); break;
    case OPT_HSTO: O.hs_timeout = parse_num(arg, "handshake timeout"); break;
    case OPT_DRAIN: O.drain_timeout = parse_num(arg, "drain time"); break;
    case OPT_POKE: O.poke = (long)parse_num(arg, "poke count"); break;
    case OPT_SETTLE: O.settle = parse_num(arg, "settle time"); break;
    case OPT_GREET: O.greet = 1; break;
    case OPT_ROUNDS: O.rounds = (int)parse_num(arg, "round count"); break;
    case OPT_SIGNAL: O.signal = 1; break;
    case 'q': O.quiet = 1; break;
    case 'h': usage(stdout); return 0;
    default:
        if (apply_tls_option(o, arg))
            break;
        usage(stderr);
        return 2;
    }
    return -1;
}

static int options_in_range(void)
{
    return !(O.conns < 1 || O.conns > MAX_CONNS || O.size < 1 || O.size > MAX_SIZE ||
             O.inflight < 1 || O.inflight > MAX_INFLIGHT || O.threads < 1 || O.threads > MAX_THREADS ||
             O.threads > O.conns || O.duration <= 0 || O.duration > 86400 || O.warmup < 0 ||
             O.warmup > 3600 || O.nsrc < 0 || O.nsrc > 250 * 250 || O.max_pending < 1 ||
             O.connect_timeout <= 0 || O.hs_timeout <= 0 || O.drain_timeout < 0 || O.settle < 0 ||
             O.rounds < 1 || O.rounds > 1000);
}

int options_parse(int argc, char **argv)
{
    static const struct option lo[] = {
        {"conns", 1, 0, 'c'}, {"size", 1, 0, 's'}, {"inflight", 1, 0, 'p'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"text", 0, 0, 't'},
        {"threads", 1, 0, 'j'}, {"mode", 1, 0, 'm'}, {"server-pid", 1, 0, 'P'},
        {"sources", 1, 0, OPT_SOURCES}, {"max-pending", 1, 0, OPT_MAXPEND},
        {"connect-timeout", 1, 0, OPT_CTO}, {"hs-timeout", 1, 0, OPT_HSTO},
        {"drain", 1, 0, OPT_DRAIN}, {"poke", 1, 0, OPT_POKE}, {"settle", 1, 0, OPT_SETTLE},
        {"sni", 1, 0, OPT_SNI}, {"tls12", 0, 0, OPT_TLS12}, {"tls13", 0, 0, OPT_TLS13},
        {"tls-resume", 0, 0, OPT_RESUME}, {"deflate", 0, 0, OPT_DEFLATE},
        {"varied", 0, 0, OPT_VARIED}, {"greet", 0, 0, OPT_GREET}, {"rounds", 1, 0, OPT_ROUNDS},
        {"signal", 0, 0, OPT_SIGNAL},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:s:p:d:w:tj:m:P:qh", lo, NULL)) != -1) {
        int rc = apply_option(o, optarg);
        if (rc >= 0)
            return rc;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (!options_in_range()) {
        fprintf(stderr, "wsbench: option out of range (see -h)\n");
        return 2;
    }
    if (O.tls_ver < 0) {
        fprintf(stderr, "wsbench: --tls12 and --tls13 exclude each other\n");
        return 2;
    }
    if ((O.greet && O.mode != M_IDLE) || (O.rounds > 1 && O.mode != M_ECHO)) {
        fprintf(stderr, "wsbench: --greet is for idle mode, --rounds for echo mode\n");
        return 2;
    }
    int tls_opts = O.tls_resume || O.tls_ver || O.sni[0];
    parse_url(argv[optind]);
    if (tls_opts && !O.tls) {
        fprintf(stderr, "wsbench: --sni, --tls12, --tls13 and --tls-resume need a wss:// URL\n");
        return 2;
    }
    return -1;
}
