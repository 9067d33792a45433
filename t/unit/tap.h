/* A minimal TAP producer for the C unit tests: `ok(cond, "name", ...)`
 * prints one "ok N - name" / "not ok N - name" line; `tap_done()` prints
 * the plan and returns the exit status (non-zero if anything failed).
 * Header-only, one per test program. */
#ifndef WSECHOD_TAP_H
#define WSECHOD_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_run, tap_failed;

__attribute__((format(printf, 2, 3)))
static int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    tap_run++;
    if (!cond)
        tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    return cond;
}

static int tap_done(void)
{
    printf("1..%d\n", tap_run);
    if (tap_failed)
        printf("# %d of %d failed\n", tap_failed, tap_run);
    return tap_failed != 0;
}

#endif
