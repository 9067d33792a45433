/* Shared by the libFuzzer harnesses: a config loaded from YAML text, as the
 * server would load it, so the harnesses follow config.c's defaults. */
#ifndef WSECHOD_FUZZ_COMMON_H
#define WSECHOD_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static inline struct config *fuzz_config(const char *yaml)
{
    char path[] = "/tmp/wsechod-fuzz-XXXXXX";
    char err[CONFIG_ERR_MAX];
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) {
        perror("fuzz config");
        abort();
    }
    close(fd);
    struct config *cf = config_load(path, err);
    unlink(path);
    if (cf == NULL) {
        fprintf(stderr, "fuzz config: %s\n", err);
        abort();
    }
    log_set_level(LOGL_ERROR); /* refusals are logged at info: keep quiet */
    return cf;
}

/* Tiny deterministic PRNG (xorshift32) for splits driven by the input. */
static inline uint32_t fuzz_next(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

#endif
