/* Error log: one line per event, written with one write(2) so lines from
 * the master and every worker stay whole in one O_APPEND file.
 *
 * text: "2026-12-02T03:48:52.639Z [notice] 1234: message" (UTC, ISO 8601
 * with milliseconds and the explicit offset Z).
 * json: {"time":"2026-12-02T03:48:52.639Z","level":"notice","pid":1234,
 * "msg":"message"}, always these four fields in this order, msg escaped by
 * jsonstr.h (valid JSON and UTF-8 whatever the message holds).
 *
 * When the log descriptor is the journal (JOURNAL_STREAM names its
 * device:inode, systemd.exec(5)), every line starts with the syslog
 * priority "<N>" (debug 7, info 6, notice 5, warn 4, error 3) so journald
 * keeps the level, and text lines drop the time (journald stamps each
 * entry itself); json lines keep all their fields.
 *
 * Start-up mode (log_startup): while the master starts, warnings and
 * errors written to a log file are also printed to stderr as "wsechod:
 * [level] message", unless that file is stderr itself. */
#ifndef WSECHOD_LOG_H
#define WSECHOD_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOGL_DEBUG, LOGL_INFO, LOGL_NOTICE, LOGL_WARN, LOGL_ERROR };
enum log_format { LOGF_TEXT, LOGF_JSON };

/* "stderr" or a file path (opened for append). On failure the current
 * destination is kept and -1 is returned with errno set. */
int  log_open(const char *path);
/* Reopens the current file (after logrotate renamed it). */
int  log_reopen(void);
/* Takes fd (the master's freshly reopened log) in place of the current
 * file, keeping our descriptor number. Closes fd when logging to stderr. */
void log_adopt(int fd);
/* The descriptor log lines go to. */
int  log_fd_get(void);
/* wall_ms as "2026-12-02T03:48:52.639Z" into buf[0..cap); its length. */
size_t log_time_iso(uint64_t wall_ms, char *buf, size_t cap);
void log_set_level(enum log_level level);
int  log_level_parse(const char *name, enum log_level *out);
const char *log_level_name(enum log_level level);
void log_set_format(enum log_format format);
int  log_format_parse(const char *name, enum log_format *out);
const char *log_format_name(enum log_format format);
int  log_enabled(enum log_level level);
/* 1: start-up mode on (see above), 0: off. */
void log_startup(int on);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...)  log_msg(LOGL_DEBUG, __VA_ARGS__)
#define log_info(...)   log_msg(LOGL_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOGL_NOTICE, __VA_ARGS__)
#define log_warn(...)   log_msg(LOGL_WARN, __VA_ARGS__)
#define log_error(...)  log_msg(LOGL_ERROR, __VA_ARGS__)

#endif
