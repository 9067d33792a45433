/* wsechod: command line. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confdump.h"
#include "config.h"
#include "master.h"
#include "proctitle.h"

#ifndef WSECHOD_CONF
#define WSECHOD_CONF "/etc/wsechod/wsechod.yaml"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: wsechod [-c FILE] [-t] [-T] [-s SIGNAL] [-h] [-v]\n"
            "\n"
            "  -c FILE    configuration file (default: " WSECHOD_CONF ")\n"
            "  -t         check the configuration and exit (0: valid, 1: invalid)\n"
            "  -T         as -t, and print the effective configuration (every key,\n"
            "             defaults filled in) as YAML to stdout\n"
            "  -s SIGNAL  send SIGNAL to the running master and exit:\n"
            "             reload (SIGHUP), stop (SIGTERM), quit (SIGQUIT), reopen (SIGUSR1),\n"
            "             upgrade (SIGUSR2: start the executable anew, keeping connections)\n"
            "  -h         show this help\n"
            "  -v         show the version\n"
            "\n"
            "Without -t, -T or -s, runs the master in the foreground.\n");
}

static int dump_config(const struct config *cf)
{
    if (confdump_write(stdout, cf) == 0)
        return 0;
    fprintf(stderr, "wsechod: cannot write the configuration: %s\n", strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    const char *conf = WSECHOD_CONF, *signame = NULL;
    int test = 0, dump = 0, opt;
    while ((opt = getopt(argc, argv, "c:tTs:hv")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 't': test = 1; break;
        case 'T': test = dump = 1; break;
        case 's': signame = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'v': printf("wsechod/%s\n", WSECHOD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsechod: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    /* The process title will overwrite argv: keep our own copies. */
    char *conf_file = strdup(conf), *sig = signame ? strdup(signame) : NULL;
    if (conf_file == NULL || (signame && sig == NULL))
        return 1;
    proctitle_init(argc, argv);

    char err[CONFIG_ERR_MAX];
    struct config *cf = config_load(conf_file, err);
    int rc;
    if (cf == NULL) {
        fprintf(stderr, "%s\n", err);
        if (test)
            fprintf(stderr, "wsechod: configuration file %s test failed\n", conf_file);
        rc = 1;
    } else if (test) {
        rc = dump ? dump_config(cf) : 0;
        if (rc == 0)
            fprintf(stderr, "wsechod: configuration file %s test is successful\n", conf_file);
        config_free(cf);
    } else if (sig) {
        rc = master_signal(cf, sig);
        config_free(cf);
    } else {
        rc = master_run(conf_file, cf);
    }
    free(sig);
    free(conf_file);
    return rc;
}
