/* Error log: one line per event, "TIME [level] PID: message". */
#ifndef WSECHOD_LOG_H
#define WSECHOD_LOG_H

enum log_level { LOGL_DEBUG, LOGL_INFO, LOGL_NOTICE, LOGL_WARN, LOGL_ERROR };

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
void log_set_level(enum log_level level);
int  log_level_parse(const char *name, enum log_level *out);
int  log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...)  log_msg(LOGL_DEBUG, __VA_ARGS__)
#define log_info(...)   log_msg(LOGL_INFO, __VA_ARGS__)
#define log_notice(...) log_msg(LOGL_NOTICE, __VA_ARGS__)
#define log_warn(...)   log_msg(LOGL_WARN, __VA_ARGS__)
#define log_error(...)  log_msg(LOGL_ERROR, __VA_ARGS__)

#endif
