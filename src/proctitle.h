/* Process titles ("wsechod: worker process #0 gen 3") shown by ps and in
 * /proc/PID/cmdline, so operators can tell master, workers and draining
 * generations apart. */
#ifndef WSECHOD_PROCTITLE_H
#define WSECHOD_PROCTITLE_H

/* Call once, early: moves the environment out of the way so the title can
 * use the whole argv+environ area. argv strings are invalid afterwards
 * for anyone who did not copy them. */
void proctitle_init(int argc, char **argv);
void proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
