/* f32__avx2.c - AVX2 + FMA float32 kernels: the pointwise GEMM with a fused bias / activation /
 * residual epilogue, and NHWC depthwise convolution for kernel sizes 3..11. The same algorithms as
 * f32__avx512.c on 8-lane vectors and 16 registers; tails use vmaskmov instead of k-masks. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"
#include "math__avx2.h"

/* ==== GEMM: 6 x 16 register tile =================================================================
 * A 32-column panel is walked as two 16-column halves. Per k: two B vectors and six broadcasts of
 * A, 12 FMAs into 12 accumulators (15 of the 16 ymm registers live). A rows are walked in blocks of
 * GEMM_MB so that the block stays in L1/L2 while every B panel streams past it. */

#define GEMM_MR 6
#define GEMM_MB 96

static inline __attribute__((always_inline)) void gemm_tile(const lsq_gemm_args *a, int m, int p, int h, const int mr,
                                                            const int nv)
{
    const int K = a->K, lda = a->lda;
    const float *b = a->B + (size_t)p * K * LSQ_GEMM_NR + 16 * h;
    const float *ap = a->A + (size_t)m * lda;
    __m256 acc[GEMM_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(b + (size_t)k * LSQ_GEMM_NR);
        __m256 b1 = nv > 1 ? _mm256_loadu_ps(b + (size_t)k * LSQ_GEMM_NR + 8) : b0;
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 av = _mm256_broadcast_ss(ap + (size_t)i * lda + k);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            if (nv > 1) acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    const int n0 = p * LSQ_GEMM_NR + 16 * h;
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
        const int nrem = a->N - n0 - 8 * v;
        __m256 bias = lsq_load8_ps(a->bias + n0 + 8 * v, nrem);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 y = lsq_act256(a->act, _mm256_add_ps(acc[i][v], bias));
            if (a->R) y = _mm256_add_ps(y, lsq_load8_ps(a->R + (size_t)(m + i) * a->ldr + n0 + 8 * v, nrem));
            lsq_store8_ps(a->C + (size_t)(m + i) * a->ldc + n0 + 8 * v, nrem, y);
        }
    }
}

/* Rows [m, mend) of one half panel: tiles of 6 rows, then 4, 2 and 1 for the rest. */
static inline __attribute__((always_inline)) void gemm_rows(const lsq_gemm_args *a, int m, int mend, int p, int h,
                                                            const int nv)
{
    for (; m + GEMM_MR <= mend; m += GEMM_MR) gemm_tile(a, m, p, h, GEMM_MR, nv);
    if (mend - m >= 4) gemm_tile(a, m, p, h, 4, nv), m += 4;
    if (mend - m >= 2) gemm_tile(a, m, p, h, 2, nv), m += 2;
    if (mend - m >= 1) gemm_tile(a, m, p, h, 1, nv);
}

static void f32_gemm__avx2(const lsq_gemm_args *a, int m0, int m1)
{
    const int npanels = (a->N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR;
    for (int mb = m0; mb < m1; mb += GEMM_MB) {
        const int mend = mb + GEMM_MB < m1 ? mb + GEMM_MB : m1;
        for (int p = 0; p < npanels; p++)
            for (int h = 0; h < 2; h++) {
                const int ncols = a->N - p * LSQ_GEMM_NR - 16 * h;
                if (ncols <= 0) break;
                if (ncols > 8)
                    gemm_rows(a, mb, mend, p, h, 2);
                else
                    gemm_rows(a, mb, mend, p, h, 1);
            }
    }
}

/* ==== depthwise convolution ======================================================================
 * One 8-channel block at a time, output rows [oy0, oy1), in groups of NB output pixels with K, the
 * stride and NB compile-time constants. As in f32__avx512.c, each input pixel is loaded once per
 * kernel row and used by every output of the group whose window covers it, with the row's K weights
 * in registers: NB = 8 accumulators for K <= 5, 4 for larger K (8 + K weights would not fit in 16
 * registers). Interior groups of whole 8-channel blocks use plain loads; the rest (image borders,
 * short rows, the channel tail) use vmaskmov loads whose mask is zero for columns outside [0, W),
 * pointed at column 0 or W - 1 so that no masked-off lane could fault (see f32__avx512.c on the
 * cost of that on AMD). */

#define DW_NB_MAX 8
#define DW_NB(K) ((K) <= 5 ? 8 : 4)

/* `base` points at input column ix0 = ox * S - pad_l of row 0 of the window, possibly outside. */
static inline __attribute__((always_inline)) void dw_group(const float *base, const float *wc, size_t rowstride,
                                                           size_t C, int nc, __m256i chmask, int ix0, int W,
                                                           __m256 *acc, int ky0, int ky1, const int K, const int S,
                                                           const int general)
{
    const int NB = DW_NB(K), ncols = (NB - 1) * S + K;
    __m256i km[(DW_NB_MAX - 1) * 2 + 11];
    ptrdiff_t off[(DW_NB_MAX - 1) * 2 + 11];
#pragma GCC unroll 32
    for (int i = 0; i < ncols; i++) {
        int col = ix0 + i, inside = (unsigned)col < (unsigned)W;
        km[i] = inside ? chmask : _mm256_setzero_si256();
        off[i] = general ? (ptrdiff_t)((col < 0 ? 0 : col >= W ? W - 1 : col) - ix0) * (ptrdiff_t)C
                         : (ptrdiff_t)i * (ptrdiff_t)C;
    }
    for (int ky = ky0; ky < ky1; ky++) {
        const float *row = base + (ptrdiff_t)ky * (ptrdiff_t)rowstride;
        const float *wr = wc + (size_t)ky * K * nc;
        __m256 w[11];
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++)
            w[kx] = general ? _mm256_maskload_ps(wr + (size_t)kx * nc, chmask) : _mm256_loadu_ps(wr + (size_t)kx * nc);
#pragma GCC unroll 32
        for (int i = 0; i < ncols; i++) {
            __m256 x = general ? _mm256_maskload_ps(row + off[i], km[i]) : _mm256_loadu_ps(row + off[i]);
#pragma GCC unroll 8
            for (int j = 0; j < NB; j++) {
                const int kx = i - j * S;
                if (kx >= 0 && kx < K) acc[j] = _mm256_fmadd_ps(x, w[kx], acc[j]);
            }
        }
    }
}

/* One output row of one channel block, all in groups of NB (the last one partly stored). */
static inline __attribute__((always_inline)) void dw_row(const lsq_dw_args *a, int c, int oy, float *chsum, const int K,
                                                         const int S)
{
    const int NB = DW_NB(K), nrem = a->nc - c;
    const __m256i chmask = lsq_mask8(nrem);
    const __m256 bias = lsq_load8_ps(a->bias + c, nrem);
    const size_t C = (size_t)a->C, rowstride = (size_t)a->W * C;
    const float *wc = a->w + c;
    int iy0 = oy * S - a->pad_t;
    int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + K > a->H ? a->H - iy0 : K;
    const float *rowbase = a->in + a->c0 + c + (ptrdiff_t)(iy0 - a->row0) * (ptrdiff_t)rowstride;
    float *orow = a->out + a->c0 + c + (size_t)oy * a->OW * C;
    __m256 sum = _mm256_setzero_ps();
    for (int ox = 0; ox < a->OW; ox += NB) {
        __m256 acc[DW_NB_MAX];
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) acc[j] = bias;
        int ix0 = ox * S - a->pad_l;
        const float *gb = rowbase + (ptrdiff_t)ix0 * (ptrdiff_t)C;
        if (nrem >= 8 && ix0 >= 0 && ix0 + (NB - 1) * S + K <= a->W)
            dw_group(gb, wc, rowstride, C, a->nc, chmask, ix0, a->W, acc, ky0, ky1, K, S, 0);
        else
            dw_group(gb, wc, rowstride, C, a->nc, chmask, ix0, a->W, acc, ky0, ky1, K, S, 1);
        int n = a->OW - ox < NB ? a->OW - ox : NB;
        float *o = orow + (size_t)ox * C;
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) {
            if (j < n) {
                __m256 y = lsq_act256(a->act, acc[j]);
                sum = _mm256_add_ps(sum, y);
                lsq_store8_ps(o + (size_t)j * C, nrem, y);
            }
        }
    }
    if (chsum) lsq_store8_ps(chsum + c, nrem, _mm256_add_ps(lsq_load8_ps(chsum + c, nrem), sum));
}

static void f32_dwconv__avx2(const lsq_dw_args *a, int oy0, int oy1, float *chsum)
{
    LSQ_DW_DRIVER(8, dw_row, lsq_kernels_scalar.f32_dwconv)
}

const lsq_kernels lsq_kernels_avx2 = {
    .name = "avx2",
    .f32_gemm = f32_gemm__avx2,
    .f32_dwconv = f32_dwconv__avx2,
};
