/*
 * options — the command line, parsed once by the main thread before any
 * worker starts; read-only (O) everywhere afterwards.
 *
 * Contract:
 *   options_parse(argc, argv)  fills O from the options and the ws:// or
 *       wss:// URL (resolved to O.addr; wss sets O.tls, O.sni defaults to
 *       the host). Returns -1 when the run should go ahead,
 *       otherwise the status main must exit with: 0 after --help, 2 for a
 *       usage error (message already on stderr). Exits 1 itself if the host
 *       does not resolve.
 *   O.spread  set when the target is IPv4 127/8 and --sources > 0: workers
 *       then bind each connection to one of O.nsrc 127.0.x.y sources.
 *   mode_name()  the --mode spelling of O.mode.
 */
#ifndef WSBENCH_OPTIONS_H
#define WSBENCH_OPTIONS_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#define MAX_THREADS 64

enum mode { M_ECHO, M_CONNRATE, M_IDLE };

struct options {
    char host[256], port[16], path[1024], hosthdr[300];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int conns, inflight, threads, text, nsrc, max_pending, quiet;
    size_t size;
    double duration, warmup, connect_timeout, hs_timeout, drain_timeout, settle;
    enum mode mode;
    pid_t server_pid;
    long poke; /* idle mode: connections poked afterwards; -1 = all */
    int spread; /* bind sources over 127/8 */
    int tls, tls_resume, tls_ver; /* wss://; --tls-resume; 12/13 pinned, 0 = any */
    int deflate; /* --deflate: permessage-deflate, one compressible JSON text for all */
    int varied;  /* --varied: its records vary */
    int greet;   /* --greet: idle connections echo once on opening */
    int signal;  /* --signal: SIGUSR1 starts each round / ends the hold */
    int rounds;  /* --rounds: echo windows over the same connections */
    char sni[256];
};

extern struct options O;

int options_parse(int argc, char **argv);
const char *mode_name(void);

#endif
