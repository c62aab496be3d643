/* util.h - small helpers shared by the engine's files: error reporting, aligned allocation,
 * overflow-checked arithmetic. Private to the engine. */
#ifndef LSQ_UTIL_H
#define LSQ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lsq.h"

#define LSQ_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LSQ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LSQ_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Invariant violated: a bug in the engine, not bad input. Aborts with file:line. */
#define LSQ_ASSERT(cond)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* Format err->msg (err may be NULL) and return st, so callers can write
 *     return lsq_fail(err, LSQ_ERR_TENSOR, "%s: tensor '%s' ...", path, name); */
lsq_status lsq_fail(lsq_error *err, lsq_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 64-byte aligned, zeroed allocation (for SIMD loads and to keep cache lines apart). */
void *lsq_alloc(size_t bytes);
void lsq_free(void *p);

/* a * b with overflow check: returns 0 and sets *out, or -1 on overflow. */
static inline int lsq_mul_size(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

/* Flush denormals to zero (MXCSR FTZ and DAZ) on this thread for the duration of a forward pass;
 * returns the previous state for lsq_fp_restore(). A near-zero SE gate (sigmoid of a large negative
 * value, ~1e-38) times an activation is a denormal, and on AMD Zen 5 every denormal result of a
 * vector multiply takes a microcode assist: mixnet_s w2a2 with seeded weights spent 0.50 ms instead
 * of 0.35 ms in its projections. Codes do not change: a denormal is below half an ulp of any
 * nonzero quantizer offset, and with a zero offset it rounds to code 0 either way. */
static inline unsigned lsq_fp_flush_denormals(void)
{
#if defined(__SSE__)
    unsigned old = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(old | 0x8040u);
    return old;
#else
    return 0;
#endif
}

static inline void lsq_fp_restore(unsigned old)
{
#if defined(__SSE__)
    __builtin_ia32_ldmxcsr(old);
#else
    (void)old;
#endif
}

/* Read a whole file into a malloc'd buffer (for small files: images, JSON). */
lsq_status lsq_read_file(const char *path, size_t max_bytes, uint8_t **out, size_t *size, lsq_error *err);

#endif
