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
 * One 16-channel block at a time (masked at the tail), output rows [oy0, oy1), in groups of eight
 * output pixels with K and the stride compile-time constants. Taps outside the image are masked
 * loads with an all-zero mask for columns and a shortened ky range for rows. */

/* DW_NB outputs of one row. Each input pixel is loaded once per kernel row and used by every
 * output whose window covers it (stride 1: DW_NB + K - 1 loads for DW_NB * K FMAs instead of
 * 2 * DW_NB * K), with the row's K weights held in registers; eight independent accumulators cover
 * the FMA latency. Input columns outside [0, W) get an all-zero load mask (a masked-off load never
 * touches memory), so border pixels and short rows (14 and 7 wide in late layers, where a
 * per-pixel border path used to do half the work) need no other path.
 * `base` points at input column ix0 = ox * S - pad_l of row 0 of the window, possibly outside. */
#define DW_NB 8
static inline __attribute__((always_inline)) void dw_group_masked(const float *base, const float *wc,
                                                                  size_t rowstride, size_t C, int nc, __mmask16 mask,
                                                                  int ix0, int W, __m512 *acc, int ky0, int ky1,
                                                                  const int K, const int S, const int border)
{
    __mmask16 km[(DW_NB - 1) * 2 + 11];
    ptrdiff_t off[(DW_NB - 1) * 2 + 11];
    lsq_dw_columns512((DW_NB - 1) * S + K, ix0, W, C, mask, border, km, off);
    for (int ky = ky0; ky < ky1; ky++) {
        const float *row = base + (ptrdiff_t)ky * (ptrdiff_t)rowstride;
        const float *wr = wc + (size_t)ky * K * nc;
        __m512 w[11];
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++) w[kx] = _mm512_maskz_loadu_ps(mask, wr + (size_t)kx * nc);
#pragma GCC unroll 32
        for (int i = 0; i < (DW_NB - 1) * S + K; i++) {
            __m512 x = _mm512_maskz_loadu_ps(km[i], row + off[i]);
#pragma GCC unroll 8
            for (int j = 0; j < DW_NB; j++) {
                const int kx = i - j * S;
                if (kx >= 0 && kx < K) acc[j] = _mm512_fmadd_ps(x, w[kx], acc[j]);
            }
        }
    }
}

/* One output row of one channel block, all in groups of DW_NB (the last one partly stored). */
static inline __attribute__((always_inline)) void dw_row(const lsq_dw_args *a, int c, int oy, float *chsum, const int K,
                                                         const int S)
{
    const __mmask16 mask = lsq_mask16(a->nc - c);
    const __m512 bias = _mm512_maskz_loadu_ps(mask, a->bias + c);
    const size_t C = (size_t)a->C, rowstride = (size_t)a->W * C;
    const float *wc = a->w + c;
    int iy0 = oy * S - a->pad_t;
    int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + K > a->H ? a->H - iy0 : K;
    const float *rowbase = a->in + a->c0 + c + (ptrdiff_t)(iy0 - a->row0) * (ptrdiff_t)rowstride;
    float *orow = a->out + a->c0 + c + (size_t)oy * a->OW * C;
    __m512 sum = _mm512_setzero_ps();
    for (int ox = 0; ox < a->OW; ox += DW_NB) {
        __m512 acc[DW_NB];
#pragma GCC unroll 8
        for (int j = 0; j < DW_NB; j++) acc[j] = bias;
        int ix0 = ox * S - a->pad_l;
        const float *gb = rowbase + (ptrdiff_t)ix0 * (ptrdiff_t)C;
        if (ix0 >= 0 && ix0 + (DW_NB - 1) * S + K <= a->W)
            dw_group_masked(gb, wc, rowstride, C, a->nc, mask, ix0, a->W, acc, ky0, ky1, K, S, 0);
        else
            dw_group_masked(gb, wc, rowstride, C, a->nc, mask, ix0, a->W, acc, ky0, ky1, K, S, 1);
        int n = a->OW - ox < DW_NB ? a->OW - ox : DW_NB;
        float *o = orow + (size_t)ox * C;
#pragma GCC unroll 8
        for (int j = 0; j < DW_NB; j++) {
            if (j < n) {
                __m512 y = lsq_act512(a->act, acc[j]);
                sum = _mm512_add_ps(sum, y);
                _mm512_mask_storeu_ps(o + (size_t)j * C, mask, y);
            }
        }
    }
    if (chsum) _mm512_mask_storeu_ps(chsum + c, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, chsum + c), sum));
}

static void f32_dwconv__avx512(const lsq_dw_args *a, int oy0, int oy1, float *chsum)
{
    LSQ_DW_DRIVER(16, dw_row, lsq_kernels_scalar.f32_dwconv)
}

const lsq_kernels lsq_kernels_avx512 = {
    .name = "avx512",
    .f32_gemm = f32_gemm__avx512,
    .f32_dwconv = f32_dwconv__avx512,
};
