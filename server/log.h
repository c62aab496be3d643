/* log.h - the server's log line and error-message helpers, shared by its files. */
#ifndef LSQ_SERVER_LOG_H
#define LSQ_SERVER_LOG_H

#include <stddef.h>

/* One line on stderr: "lsq-server: " + the message. */
void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Format the message into err (len bytes) and return -1: `return srv_fail(err, len, ...)`. */
int srv_fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
