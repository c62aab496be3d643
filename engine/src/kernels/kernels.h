/* kernels.h - compute kernels and their per-ISA dispatch table (private to the engine).
 *
 * Every kernel has a portable C reference (kernels/f32__scalar.c) that is always built; SIMD
 * variants (kernels/f32__avx2.c, kernels/f32__avx512.c) are compiled with their ISA's flags only
 * and checked against the reference by tests/unit/test_kernels.c. cpu.c picks one table at
 * start-up.
 *
 * Kernels are dumb: no allocation, no error returns; preconditions are asserted by the caller.
 * All activations are NHWC float32: pixel-major, channels contiguous.
 */
#ifndef LSQ_KERNELS_H
#define LSQ_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "arch.h"

/* Packed GEMM weights: the B matrix [K][N] stored as panels of LSQ_GEMM_NR columns, each panel
 * [K][LSQ_GEMM_NR] contiguous and zero-padded past N, so kernels may read whole panels. */
#define LSQ_GEMM_NR 32

static inline size_t lsq_gemm_packed_floats(int K, int N)
{
    return (size_t)K * (size_t)((N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR * LSQ_GEMM_NR);
}

/* C[m, n] = act(bias[n] + sum_k A[m, k] * B[k, n]) (+ R[m, n])   for m in [m0, m1), all n.
 * A: rows of lda floats; B: packed panels; C and R: rows of ldc / ldr floats (R may be NULL).
 * May over-read nothing: A rows are read for k < K only. */
typedef struct {
    int M, N, K;
    const float *A;
    int lda;
    const float *B;    /* packed, lsq_gemm_packed_floats(K, N) floats */
    const float *bias; /* N floats */
    float *C;
    int ldc;
    const float *R;    /* residual to add after the activation, or NULL */
    int ldr;
    lsq_act act;
} lsq_gemm_args;

/* Depthwise convolution of channels [c0, c0 + nc) of an NHWC tensor with C channels, one kernel
 * size k. out[oy, ox, c] = act(bias[c] + sum_{ky,kx} in[oy*s - pt + ky, ox*s - pl + kx, c] *
 * w[ky*k + kx][c - c0]) with zero padding. If chsum is not NULL, each output row's outputs are
 * also summed per channel into chsum[oy * C + c - c0] (the squeeze of a following SE block, kept
 * per row and added up in row order by the caller, so that it does not depend on how rows were
 * split between threads; a row's sum runs over ox in order at every level).
 * `in` may hold only a band of the input's rows, from row0 on: input row iy is read at
 * in + (iy - row0) * W * C, and only the rows the requested output rows need are read (rows
 * [oy*stride - pad_t, oy*stride - pad_t + k) clipped to [0, H)). row0 = 0 for a whole tensor. */
typedef struct {
    const float *in;
    int row0;
    int H, W, C;
    int c0, nc;
    int k, stride, pad_t, pad_l;
    const float *w;    /* [k*k][nc] */
    const float *bias; /* nc */
    float *out;
    int OH, OW;
    lsq_act act;
} lsq_dw_args;

/* The body of every SIMD depthwise kernel (float and integer): rows outer, blocks of STEP channels
 * inner, so the K input rows an output row needs stay in L1/L2 while every channel block passes over
 * them and the tensor streams through the cache once. ROW(a, c, oy, chsum, K, S) gets the kernel
 * size (3..11) and the stride (1, 2) as compile-time constants; other shapes go to
 * FALLBACK(a, oy0, oy1, chsum). Expects a, oy0, oy1 and chsum in scope. */
/* The channel means of an OH x OW depthwise output from its per-row sums ([OH][C], as the kernels
 * write them), added in row order: the same for any split of the rows between threads. */
static inline void lsq_dw_rowsum_mean(const float *rows, int OH, int OW, int C, float *mean)
{
    for (int c = 0; c < C; c++) mean[c] = 0.f;
    for (int oy = 0; oy < OH; oy++)
        for (int c = 0; c < C; c++) mean[c] += rows[(size_t)oy * C + c];
    for (int c = 0; c < C; c++) mean[c] /= (float)(OH * OW);
}

#define LSQ_DW_ROWSUM_(chsum, oy) ((chsum) ? (chsum) + (size_t)(oy) * a->C : NULL)
#define LSQ_DW_CASE_(K, STEP, ROW)                                                                \
    case K:                                                                                       \
        for (int oy = oy0; oy < oy1; oy++) {                                                      \
            if (a->stride == 1)                                                                   \
                for (int c = 0; c < a->nc; c += (STEP)) ROW(a, c, oy, LSQ_DW_ROWSUM_(chsum, oy), K, 1); \
            else                                                                                  \
                for (int c = 0; c < a->nc; c += (STEP)) ROW(a, c, oy, LSQ_DW_ROWSUM_(chsum, oy), K, 2); \
        }                                                                                         \
        return;
#define LSQ_DW_DRIVER(STEP, ROW, FALLBACK)                                                        \
    switch (a->stride <= 2 ? a->k : 0) {                                                          \
        LSQ_DW_CASE_(3, STEP, ROW)                                                                \
        LSQ_DW_CASE_(5, STEP, ROW)                                                                \
        LSQ_DW_CASE_(7, STEP, ROW)                                                                \
        LSQ_DW_CASE_(9, STEP, ROW)                                                                \
        LSQ_DW_CASE_(11, STEP, ROW)                                                               \
    default:                                                                                      \
        FALLBACK(a, oy0, oy1, chsum);                                                             \
    }

typedef struct {
    const char *name; /* "scalar", "avx2", "avx512" */
    void (*f32_gemm)(const lsq_gemm_args *a, int m0, int m1);
    void (*f32_dwconv)(const lsq_dw_args *a, int oy0, int oy1, float *chsum);
} lsq_kernels;

typedef enum {
    LSQ_ISA_SCALAR = 0,
    LSQ_ISA_AVX2,
    LSQ_ISA_AVX512,
} lsq_isa;

/* The best table this CPU and OS support, capped by the LSQ_ISA environment variable
 * ("scalar", "avx2", "avx512"); decided once. */
const lsq_kernels *lsq_kernels_best(void);
/* A specific level, or NULL if the CPU cannot run it (tests compare every level). */
const lsq_kernels *lsq_kernels_for(lsq_isa isa);
const char *lsq_isa_name(lsq_isa isa);
/* Highest level the CPU supports, ignoring LSQ_ISA. */
lsq_isa lsq_cpu_isa(void);

extern const lsq_kernels lsq_kernels_scalar;
extern const lsq_kernels lsq_kernels_avx2;
extern const lsq_kernels lsq_kernels_avx512;

/* Pack B [K][N] given as w[n * ldw + k] (PyTorch's [out][in] layout) into panels. */
void lsq_gemm_pack(const float *w, int ldw, int K, int N, float *packed);

/* Reference activation, shared by all scalar code. */
static inline float lsq_act_apply(lsq_act act, float x)
{
    switch (act) {
    case LSQ_ACT_RELU: return x > 0.f ? x : 0.f;
    case LSQ_ACT_SWISH: return x / (1.f + expf(-x));
    case LSQ_ACT_SIGMOID: return 1.f / (1.f + expf(-x));
    default: return x;
    }
}

#endif
