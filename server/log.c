/* log.c - the server's log line and error-message helpers. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

void srv_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lsq-server: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int srv_fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -1;
}
