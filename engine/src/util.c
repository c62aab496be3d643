/* util.c - error reporting, aligned allocation and file reading shared by the engine. */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

const char *lsq_status_to_string(lsq_status s)
{
    switch (s) {
    case LSQ_OK: return "ok";
    case LSQ_ERR_ARG: return "invalid argument";
    case LSQ_ERR_IO: return "I/O error";
    case LSQ_ERR_FORMAT: return "malformed file";
    case LSQ_ERR_TENSOR: return "bad tensor";
    case LSQ_ERR_ARCH: return "unknown architecture";
    case LSQ_ERR_IMAGE: return "bad image";
    case LSQ_ERR_LIMIT: return "limit exceeded";
    case LSQ_ERR_NOMEM: return "out of memory";
    case LSQ_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

lsq_status lsq_fail(lsq_error *err, lsq_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void *lsq_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded ? rounded : 64);
    return p;
}

void lsq_free(void *p) { free(p); }

lsq_status lsq_read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *size, lsq_error *err)
{
    *out = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lsq_fail(err, LSQ_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return lsq_fail(err, LSQ_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return lsq_fail(err, LSQ_ERR_LIMIT, "%s: %lld bytes exceeds the limit of %zu", path,
                        (long long)st.st_size, max_bytes);
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        fclose(f);
        return lsq_fail(err, LSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (n != (size_t)st.st_size) {
        free(buf);
        return lsq_fail(err, LSQ_ERR_IO, "%s: short read", path);
    }
    *out = buf;
    *size = n;
    return LSQ_OK;
}
