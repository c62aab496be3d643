/* f32__avx512.c - AVX-512 float32 kernels: the pointwise GEMM with a fused bias / activation /
 * residual epilogue, and NHWC depthwise convolution for kernel sizes 3..11. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"
#include "math__avx512.h"

/* ==== GEMM: 12 x 32 register tile ================================================================
 * Per k: two B vectors (one panel row) and MR broadcasts of A, 2*MR FMAs. A rows are walked in
 * blocks of GEMM_MB so that the block stays in L1 while every B panel streams past it. */

#define GEMM_MR 12
#define GEMM_MB 96

static inline __attribute__((always_inline)) void gemm_tile(const lsq_gemm_args *a, int m, int p, const int mr,
                                                            const int nv)
{
    const int K = a->K, lda = a->lda;
    const float *b = a->B + (size_t)p * K * LSQ_GEMM_NR;
    const float *ap = a->A + (size_t)m * lda;
    __m512 acc[GEMM_MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_load_ps(b + (size_t)k * LSQ_GEMM_NR);
        __m512 b1 = nv > 1 ? _mm512_load_ps(b + (size_t)k * LSQ_GEMM_NR + 16) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512 av = _mm512_set1_ps(ap[(size_t)i * lda + k]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            if (nv > 1) acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    const int n0 = p * LSQ_GEMM_NR;
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
        int nrem = a->N - n0 - 16 * v;
        __mmask16 mask = lsq_mask16(nrem);
        __m512 bias = _mm512_maskz_loadu_ps(mask, a->bias + n0 + 16 * v);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512 y = lsq_act512(a->act, _mm512_add_ps(acc[i][v], bias));
            if (a->R) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, a->R + (size_t)(m + i) * a->ldr + n0 + 16 * v));
            _mm512_mask_storeu_ps(a->C + (size_t)(m + i) * a->ldc + n0 + 16 * v, mask, y);
        }
    }
}

static void gemm_rows(const lsq_gemm_args *a, int m, int mend, int p, int nv)
{
    if (nv == 2) {
        for (; m + GEMM_MR <= mend; m += GEMM_MR) gemm_tile(a, m, p, GEMM_MR, 2);
        for (; m + 4 <= mend; m += 4) gemm_tile(a, m, p, 4, 2);
        for (; m < mend; m++) gemm_tile(a, m, p, 1, 2);
    } else {
        for (; m + GEMM_MR <= mend; m += GEMM_MR) gemm_tile(a, m, p, GEMM_MR, 1);
        for (; m + 4 <= mend; m += 4) gemm_tile(a, m, p, 4, 1);
        for (; m < mend; m++) gemm_tile(a, m, p, 1, 1);
    }
}

static void f32_gemm__avx512(const lsq_gemm_args *a, int m0, int m1)
{
    int npanels = (a->N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR;
    for (int mb = m0; mb < m1; mb += GEMM_MB) {
        int mend = mb + GEMM_MB < m1 ? mb + GEMM_MB : m1;
        for (int p = 0; p < npanels; p++) gemm_rows(a, mb, mend, p, a->N - p * LSQ_GEMM_NR > 16 ? 2 : 1);
    }
}

/* ==== depthwise convolution ======================================================================
 * One 16-channel block at a time (masked at the tail), output rows [oy0, oy1). Interior pixels,
 * where every tap is inside the image, take the unrolled path with K a compile-time constant and
 * four outputs per step sharing each weight load; border pixels take the bounds-checked path. */

/* One output pixel near the left/right border: rows [ky0, ky1) and, per column tap, a mask that is
 * all-zero for taps outside the image. A masked-off load never touches memory (and never faults),
 * so the out-of-range addresses are not dereferenced. */
static inline __attribute__((always_inline)) __m512 dw_pixel_border(const lsq_dw_args *a, const float *wc,
                                                                    const float *rowbase, size_t rowstride,
                                                                    __mmask16 mask, __m512 acc, int ox, int ky0,
                                                                    int ky1, const int K, const int S)
{
    const size_t C = (size_t)a->C;
    int ix0 = ox * S - a->pad_l;
    __mmask16 km[11];
#pragma GCC unroll 11
    for (int kx = 0; kx < K; kx++) km[kx] = (ix0 + kx >= 0 && ix0 + kx < a->W) ? mask : 0;
    for (int ky = ky0; ky < ky1; ky++) {
        const float *row = rowbase + (ptrdiff_t)ky * (ptrdiff_t)rowstride + (ptrdiff_t)ix0 * (ptrdiff_t)C;
        const float *wr = wc + (size_t)ky * K * a->nc;
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km[kx], row + (ptrdiff_t)kx * (ptrdiff_t)C),
                                  _mm512_maskz_loadu_ps(mask, wr + (size_t)kx * a->nc), acc);
    }
    return acc;
}

/* Sum of the taps of one output pixel whose columns are all inside: rows [ky0, ky1) only. */
static inline __attribute__((always_inline)) __m512 dw_taps(const float *base, const float *w, size_t rowstride,
                                                            size_t C, int nc, __mmask16 mask, __m512 acc, int ky0,
                                                            int ky1, const int K)
{
    for (int ky = ky0; ky < ky1; ky++) {
        const float *row = base + (size_t)ky * rowstride;
        const float *wr = w + (size_t)ky * K * nc;
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, row + (size_t)kx * C),
                                  _mm512_maskz_loadu_ps(mask, wr + (size_t)kx * nc), acc);
    }
    return acc;
}

/* DW_NB outputs of one row whose columns are all inside. Each input pixel is loaded once per
 * kernel row and used by every output whose window covers it (stride 1: DW_NB + K - 1 loads for
 * DW_NB * K FMAs instead of 2 * DW_NB * K), with the row's K weights held in registers; eight
 * independent accumulators cover the FMA latency. */
#define DW_NB 8
static inline __attribute__((always_inline)) void dw_group(const float *base, const float *wc, size_t rowstride,
                                                           size_t C, int nc, __mmask16 mask, __m512 *acc, int ky0,
                                                           int ky1, const int K, const int S)
{
    for (int ky = ky0; ky < ky1; ky++) {
        const float *row = base + (size_t)ky * rowstride;
        const float *wr = wc + (size_t)ky * K * nc;
        __m512 w[11];
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++) w[kx] = _mm512_maskz_loadu_ps(mask, wr + (size_t)kx * nc);
#pragma GCC unroll 32
        for (int i = 0; i < (DW_NB - 1) * S + K; i++) {
            __m512 x = _mm512_maskz_loadu_ps(mask, row + (size_t)i * C);
#pragma GCC unroll 8
            for (int j = 0; j < DW_NB; j++) {
                const int kx = i - j * S;
                if (kx >= 0 && kx < K) acc[j] = _mm512_fmadd_ps(x, w[kx], acc[j]);
            }
        }
    }
}

static inline __attribute__((always_inline)) void dw_row(const lsq_dw_args *a, int c, int oy_row, float *chsum,
                                                         const int K, const int S)
{
    const __mmask16 mask = lsq_mask16(a->nc - c);
    const __m512 bias = _mm512_maskz_loadu_ps(mask, a->bias + c);
    const size_t C = (size_t)a->C, rowstride = (size_t)a->W * C;
    const float *inc = a->in + a->c0 + c;
    const float *wc = a->w + c;
    float *outc = a->out + a->c0 + c;
    __m512 sum = _mm512_setzero_ps();
    const int oy0 = oy_row, oy1 = oy_row + 1;
    /* interior columns: ox*S - pad_l >= 0 and ox*S - pad_l + K - 1 < W */
    int ox_lo = (a->pad_l + S - 1) / S;
    int ox_hi = a->W - K + a->pad_l >= 0 ? (a->W - K + a->pad_l) / S + 1 : 0; /* exclusive */
    if (ox_hi > a->OW) ox_hi = a->OW;
    if (ox_lo > ox_hi) ox_lo = ox_hi;
    for (int oy = oy0; oy < oy1; oy++) {
        int iy0 = oy * S - a->pad_t;
        int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + K > a->H ? a->H - iy0 : K;
        float *orow = outc + (size_t)oy * a->OW * C;
        int ox = 0;
        const float *rowbase = inc + (ptrdiff_t)(iy0 - a->row0) * (ptrdiff_t)rowstride;
        for (; ox < ox_lo; ox++) {
            __m512 y = lsq_act512(a->act, dw_pixel_border(a, wc, rowbase, rowstride, mask, bias, ox, ky0, ky1, K, S));
            sum = _mm512_add_ps(sum, y);
            _mm512_mask_storeu_ps(orow + (size_t)ox * C, mask, y);
        }
        for (; ox + DW_NB <= ox_hi; ox += DW_NB) {
            __m512 acc[DW_NB];
#pragma GCC unroll 8
            for (int j = 0; j < DW_NB; j++) acc[j] = bias;
            dw_group(rowbase + (ptrdiff_t)(ox * S - a->pad_l) * (ptrdiff_t)C, wc, rowstride, C, a->nc, mask, acc, ky0,
                     ky1, K, S);
            float *o = orow + (size_t)ox * C;
#pragma GCC unroll 8
            for (int j = 0; j < DW_NB; j++) {
                __m512 y = lsq_act512(a->act, acc[j]);
                sum = _mm512_add_ps(sum, y);
                _mm512_mask_storeu_ps(o + (size_t)j * C, mask, y);
            }
        }
        for (; ox + 4 <= ox_hi; ox += 4) {
            __m512 acc0 = bias, acc1 = bias, acc2 = bias, acc3 = bias;
            const float *base = rowbase + (ptrdiff_t)(ox * S - a->pad_l) * (ptrdiff_t)C;
            for (int ky = ky0; ky < ky1; ky++) {
                const float *row = base + (size_t)ky * rowstride;
                const float *wr = wc + (size_t)ky * K * a->nc;
#pragma GCC unroll 11
                for (int kx = 0; kx < K; kx++) {
                    __m512 w = _mm512_maskz_loadu_ps(mask, wr + (size_t)kx * a->nc);
                    const float *px = row + (size_t)kx * C;
                    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, px), w, acc0);
                    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, px + S * C), w, acc1);
                    acc2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, px + 2 * S * C), w, acc2);
                    acc3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, px + 3 * S * C), w, acc3);
                }
            }
            acc0 = lsq_act512(a->act, acc0);
            acc1 = lsq_act512(a->act, acc1);
            acc2 = lsq_act512(a->act, acc2);
            acc3 = lsq_act512(a->act, acc3);
            sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
            float *o = orow + (size_t)ox * C;
            _mm512_mask_storeu_ps(o, mask, acc0);
            _mm512_mask_storeu_ps(o + C, mask, acc1);
            _mm512_mask_storeu_ps(o + 2 * C, mask, acc2);
            _mm512_mask_storeu_ps(o + 3 * C, mask, acc3);
        }
        for (; ox < ox_hi; ox++) {
            const float *base = rowbase + (ptrdiff_t)(ox * S - a->pad_l) * (ptrdiff_t)C;
            __m512 y = lsq_act512(a->act, dw_taps(base, wc, rowstride, C, a->nc, mask, bias, ky0, ky1, K));
            sum = _mm512_add_ps(sum, y);
            _mm512_mask_storeu_ps(orow + (size_t)ox * C, mask, y);
        }
        for (; ox < a->OW; ox++) {
            __m512 y = lsq_act512(a->act, dw_pixel_border(a, wc, rowbase, rowstride, mask, bias, ox, ky0, ky1, K, S));
            sum = _mm512_add_ps(sum, y);
            _mm512_mask_storeu_ps(orow + (size_t)ox * C, mask, y);
        }
    }
    if (chsum) _mm512_mask_storeu_ps(chsum + c, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, chsum + c), sum));
}

/* Rows outer, channel blocks inner: the K input rows a row of outputs needs stay in L1/L2 while
 * every channel block passes over them, and the tensor streams through the cache once. */
#define DW_CASE(K)                                                                                \
    case K:                                                                                       \
        for (int oy = oy0; oy < oy1; oy++) {                                                      \
            if (a->stride == 1)                                                                   \
                for (int c = 0; c < a->nc; c += 16) dw_row(a, c, oy, chsum, K, 1);                \
            else                                                                                  \
                for (int c = 0; c < a->nc; c += 16) dw_row(a, c, oy, chsum, K, 2);                \
        }                                                                                         \
        return;

static void f32_dwconv__avx512(const lsq_dw_args *a, int oy0, int oy1, float *chsum)
{
    switch (a->stride <= 2 ? a->k : 0) {
        DW_CASE(3)
        DW_CASE(5)
        DW_CASE(7)
        DW_CASE(9)
        DW_CASE(11)
    default:
        lsq_kernels_scalar.f32_dwconv(a, oy0, oy1, chsum);
    }
}

const lsq_kernels lsq_kernels_avx512 = {
    .name = "avx512",
    .f32_gemm = f32_gemm__avx512,
    .f32_dwconv = f32_dwconv__avx512,
};
