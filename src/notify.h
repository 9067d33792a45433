/* The systemd notification protocol (sd_notify): datagrams to the unix
 * socket named by $NOTIFY_SOCKET ("@name" is an abstract address). Does
 * nothing when the variable is unset, as when not run by systemd. */
#ifndef WSECHOD_NOTIFY_H
#define WSECHOD_NOTIFY_H

/* Reads and unsets $NOTIFY_SOCKET so that workers do not inherit it. */
void notify_init(void);
/* Puts $NOTIFY_SOCKET back, for a new executable replacing this one. */
void notify_export(void);
/* Sends one datagram, e.g. "READY=1\nSTATUS=serving". */
void notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Microseconds of CLOCK_MONOTONIC, for MONOTONIC_USEC=. */
unsigned long long notify_monotonic_usec(void);

#endif
