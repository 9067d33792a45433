/* The YAML configuration: parsed and validated as a whole, or rejected with
 * "file:line:column: message" naming the offending node. */
#ifndef WSECHOD_CONFIG_H
#define WSECHOD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "log.h"

struct module;

/* A certificate chain (leaf first) and its key, PEM files. */
struct config_cert {
    char *certificate;
    char *key;
    unsigned line, col;         /* of the certificate's node, for errors */
};

/* A listener's TLS settings (conflisten.h), and the contexts tls.h made. */
struct config_tls {
    char file[256];             /* the config file, for errors */
    struct config_cert main;    /* clients without SNI, or an unknown name */
    struct config_cert *extra;  /* chosen by SNI */
    size_t nextra;
    int min_version, max_version; /* 12 or 13: TLS 1.2 / 1.3 */
    char *ciphers;              /* TLS 1.2 list; NULL: Mozilla "intermediate" */
    char *ciphersuites;         /* TLS 1.3; NULL: OpenSSL's default */
    int session_tickets;
    int own_records;            /* records: wsechod (TLS 1.3 records kept by us, tlsown.h) */
    void *ctx;                  /* SSL_CTX of main */
    void **extra_ctx;           /* SSL_CTX of each extra */
};

/* permessage-deflate (RFC 7692): what we agree to (pmd.h). */
struct config_pmd {
    int enabled;
    unsigned server_max_window_bits;    /* 9..15: our compressor's window */
    unsigned client_max_window_bits;    /* 9..15: asked of a client that offers it */
    int server_no_context_takeover;
    int client_no_context_takeover;
    size_t server_history;              /* with our context kept: how far back we refer */
    unsigned compression_level;         /* 0..9 */
    unsigned mem_level;                 /* 1..9 */
    size_t min_size;                    /* shorter messages go uncompressed */
};

/* An address block of proxy_protocol_from (conflb.h). */
struct config_cidr {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned bits;              /* prefix length */
    uint8_t addr[16];           /* network order, bits past the prefix clear; IPv4: 4 bytes */
};

struct config_listen {
    struct sockaddr_storage addr; /* AF_INET, AF_INET6, or AF_UNIX (a path) */
    socklen_t addrlen;
    /* "127.0.0.1:8080" / "[::1]:8080" / "unix:/path", for logs and matching */
    char text[128];
    struct config_tls *tls;     /* NULL: plain */
    int proxy_protocol;         /* a PROXY protocol header comes first */
    struct config_cidr *proxy_from; /* peers that may send it (not for unix) */
    size_t nproxy_from;
    unsigned mode;              /* unix: the socket file's permission bits */
    char *owner;                /* unix: "user[:group]" as written; NULL: the master's */
    uid_t uid;                  /* unix: owner's ids, when owner is set */
    gid_t gid;
};

/* handshake_rate_per_ip: a token bucket per client address. */
struct config_rate {
    uint32_t count;             /* tokens per period; 0: off */
    uint32_t period_ms;         /* 1000 (/s), 60000 (/m) or 3600000 (/h) */
    uint32_t burst;             /* the bucket's size */
};

struct config;

struct config_route {
    char *path;
    const struct module *module;
    void *conf;                 /* the module's keys (module.h), or NULL */
    const struct config *cf;    /* the configuration it belongs to */
};

struct config {
    char *file;
    unsigned worker_processes;
    struct config_listen *listen;
    size_t nlisten;
    struct config_route *routes;
    size_t nroutes;
    char *pid_file;
    char *error_log;
    enum log_level log_level;
    enum log_format log_format;
    unsigned worker_connections;
    unsigned listen_backlog;
    uint64_t shutdown_timeout_ms;
    uint64_t close_timeout_ms;
    uint64_t handshake_timeout_ms;
    size_t max_header_size;
    size_t max_message_size;
    size_t max_pending_output;
    size_t worker_memory_limit; /* what one worker's connections may hold in all */
    uint64_t drain_spread_ms;
    size_t max_frame_size;
    uint64_t idle_timeout_ms;   /* 0: never */
    uint64_t ping_interval_ms;  /* 0: no keepalive pings */
    uint64_t send_timeout_ms;
    char **origins;             /* NULL: any Origin */
    size_t norigins;
    char **subprotocols;
    size_t nsubprotocols;
    char *user;                 /* NULL: keep the master's identity */
    uid_t uid;
    gid_t gid;
    unsigned worker_rlimit_nofile; /* 0: leave the limit alone */
    int worker_cpu_affinity;    /* 1: pin worker i to the i-th allowed CPU */
    int reload_handoff;         /* 1: reloads hand open WebSockets to the new workers */
    uint64_t upgrade_timeout_ms;/* a new executable must be serving within this */
    uint64_t ticket_rotation_ms;/* TLS session ticket keys: a new one this often */
    struct config_listen status;/* the status listener; addrlen 0: none */
    char *healthz_path;         /* on the main listeners too; NULL: not there */
    char *readyz_path;
    struct config_pmd pmd;
    char *access_log;           /* a path, "stderr", or NULL: off */
    int access_log_json;
    unsigned max_connections_per_ip; /* 0: off */
    struct config_rate handshake_rate; /* per client address */
    unsigned per_ip_table_size; /* entries of the table every worker shares */
    unsigned per_ip_ipv6_prefix;/* IPv6 clients are counted by this prefix */
};

#define CONFIG_ERR_MAX 1024

/* Returns a new config, or NULL with err holding "file:line:col: message". */
struct config *config_load(const char *file, char err[CONFIG_ERR_MAX]);
void config_free(struct config *cf);
/* The name of the i-th key of the configuration's table, NULL past the
 * last (for checks that every key is covered, such as confdump.h's). */
const char *config_key_name(size_t i);
/* The route whose path equals path[0..len), or NULL. */
const struct config_route *config_route_find(const struct config *cf,
                                             const char *path, size_t len);

#endif
