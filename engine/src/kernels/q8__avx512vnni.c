/* q8__avx512vnni.c - integer kernels with AVX-512 VNNI.
 *
 * GEMM: vpdpbusd sums four uint8 x int8 products into each int32 lane, so one instruction does 64
 * multiply-adds. Depthwise: 16 channels per vector; codes zero-extended to int32 lanes and weights
 * sign-extended, so vpdpwssd (two int16 products per lane, the upper one 0 x w) is one exact
 * multiply-add per lane; laid out like the float kernel (see its section below). Requantization to the next layer's codes happens in the epilogues. */
#include <immintrin.h>
#include <string.h>

#include "math__avx512.h"
#include "q8.h"

/* Codes of 16 floats: (y - offset) / scale clamped to [0, qmax] (unsigned grids; q8_quantize also
 * handles a signed one), then rounded half to even by the conversion itself (embedded rounding,
 * whatever MXCSR says): clamping first gives the same code, the bounds being integers. */
static inline __m128i q8_codes512(__m512 y, __m512 qb, __m512 qs, __m512 qmax)
{
    __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(_mm512_sub_ps(y, qb), qs), _mm512_setzero_ps()), qmax);
    return _mm512_cvtepi32_epi8(_mm512_cvt_roundps_epi32(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* ==== GEMM ===================================================================================== */

/* 12 rows x 32 columns: per group of 4 k, two weight vectors and 12 broadcasts of 4 activation
 * bytes, 24 vpdpbusd. */
#define Q8_MR 12

static inline __attribute__((always_inline)) void q8_tile(const lsq_q8_gemm_args *a, int m, int p, const int mr,
                                                          const int nv)
{
    const int K4 = (a->K + 3) / 4;
    const int8_t *b0p = a->B + (size_t)p * K4 * LSQ_Q8_NR * 4;
    const int8_t *b1p = b0p + (size_t)K4 * LSQ_Q8_NR * 4; /* next panel */
    const uint8_t *ap = a->A + (size_t)m * a->lda;
    __m512i acc[Q8_MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    for (int g = 0; g < K4; g++) {
        __m512i b0 = _mm512_loadu_si512(b0p + (size_t)g * 64);
        __m512i b1 = nv > 1 ? _mm512_loadu_si512(b1p + (size_t)g * 64) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            int32_t four;
            memcpy(&four, ap + (size_t)i * a->lda + (size_t)g * 4, 4);
            __m512i av = _mm512_set1_epi32(four);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
            if (nv > 1) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
        }
    }
    const __m512 qb = _mm512_set1_ps(a->q.offset), qs = _mm512_set1_ps(a->q.scale), qmax = _mm512_set1_ps((float)a->q.qmax);
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
        int n0 = (p + v) * LSQ_Q8_NR;
        __mmask16 mask = lsq_mask16(a->N - n0);
        __m512 mult = _mm512_maskz_loadu_ps(mask, a->mult + n0), add = _mm512_maskz_loadu_ps(mask, a->add + n0);
        __m512i ib = a->ibias ? _mm512_maskz_loadu_epi32(mask, a->ibias + n0) : _mm512_setzero_si512();
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512i s = a->ibias ? _mm512_add_epi32(acc[i][v], ib) : acc[i][v];
            __m512 y = lsq_act512(a->act, _mm512_fmadd_ps(mult, _mm512_cvtepi32_ps(s), add));
            if (a->R) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, a->R + (size_t)(m + i) * a->ldr + n0));
            if (a->C) _mm512_mask_storeu_ps(a->C + (size_t)(m + i) * a->ldc + n0, mask, y);
            if (a->Q) _mm_mask_storeu_epi8(a->Q + (size_t)(m + i) * a->ldq + n0, mask, q8_codes512(y, qb, qs, qmax));
        }
    }
}

static void q8_rows(const lsq_q8_gemm_args *a, int m, int mend, int p, int nv)
{
    if (nv == 2) {
        for (; m + Q8_MR <= mend; m += Q8_MR) q8_tile(a, m, p, Q8_MR, 2);
        for (; m + 4 <= mend; m += 4) q8_tile(a, m, p, 4, 2);
        for (; m < mend; m++) q8_tile(a, m, p, 1, 2);
    } else {
        for (; m + Q8_MR <= mend; m += Q8_MR) q8_tile(a, m, p, Q8_MR, 1);
        for (; m + 4 <= mend; m += 4) q8_tile(a, m, p, 4, 1);
        for (; m < mend; m++) q8_tile(a, m, p, 1, 1);
    }
}

static void q8_gemm__avx512vnni(const lsq_q8_gemm_args *a, int m0, int m1)
{
    int npanels = (a->N + LSQ_Q8_NR - 1) / LSQ_Q8_NR;
    for (int mb = m0; mb < m1; mb += 96) {
        int mend = mb + 96 < m1 ? mb + 96 : m1;
        for (int p = 0; p < npanels; p += 2) q8_rows(a, mb, mend, p, p + 1 < npanels ? 2 : 1);
    }
}

/* ==== depthwise ================================================================================
 * The float kernel's structure (f32__avx512.c): rows outer and 16-channel groups inner, so the k
 * input rows an output row needs stay in cache while every group passes over them; DW_NB outputs
 * of a row at once, each input pixel loaded (and zero-extended) once per kernel row and used by
 * every output whose window covers it, with DW_NB independent accumulators. Taps outside the image
 * are masked-off loads (code 0 adds nothing to the sums); the outputs whose windows leave the image
 * then take the epilogue constant of their valid taps (bias + coef * their weight sum). */

#define DW_NB 8

/* DW_NB outputs of one row: acc[j] += sum over kernel rows [ky0, ky1) and all K columns of
 * codes * weights. `base` points at input column ix0 of the window's row 0, possibly outside (border
 * columns: lsq_dw_columns512). */
static inline __attribute__((always_inline)) void dw_group(const uint8_t *base, const int8_t *wc, size_t rowstride,
                                                           size_t C, int nc, __mmask16 mask, int ix0, int W,
                                                           __m512i *acc, int ky0, int ky1, const int K, const int S,
                                                           const int border)
{
    __mmask16 km[(DW_NB - 1) * 2 + 11];
    ptrdiff_t off[(DW_NB - 1) * 2 + 11];
    lsq_dw_columns512((DW_NB - 1) * S + K, ix0, W, C, mask, border, km, off);
    for (int ky = ky0; ky < ky1; ky++) {
        const uint8_t *row = base + (ptrdiff_t)ky * (ptrdiff_t)rowstride;
        const int8_t *wr = wc + (size_t)ky * K * nc;
        __m512i w[11];
#pragma GCC unroll 11
        for (int kx = 0; kx < K; kx++) w[kx] = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, wr + (size_t)kx * nc));
#pragma GCC unroll 32
        for (int i = 0; i < (DW_NB - 1) * S + K; i++) {
            __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(km[i], row + off[i]));
#pragma GCC unroll 8
            for (int j = 0; j < DW_NB; j++) {
                const int kx = i - j * S;
                if (kx >= 0 && kx < K) acc[j] = _mm512_dpwssd_epi32(acc[j], x, w[kx]);
            }
        }
    }
}

/* One output row of one 16-channel group. */
static inline __attribute__((always_inline)) void dw_row(const lsq_q8_dw_args *a, int c, int oy, float *chsum,
                                                         const int K, const int S)
{
    const __mmask16 mask = lsq_mask16(a->nc - c);
    const size_t C = (size_t)a->C, rowstride = (size_t)a->W * C;
    const int8_t *wc = a->w + c;
    const int iy0 = oy * S - a->pad_t;
    const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + K > a->H ? a->H - iy0 : K;
    const __m512 mult = _mm512_maskz_loadu_ps(mask, a->mult + c), bias = _mm512_maskz_loadu_ps(mask, a->bias + c);
    const __m512 coef = _mm512_maskz_loadu_ps(mask, a->coef + c);
    const __m512 qb = _mm512_set1_ps(a->q.offset), qs = _mm512_set1_ps(a->q.scale), qmax = _mm512_set1_ps((float)a->q.qmax);
    /* the valid rows' weight sums per kernel column, for outputs whose window leaves the image */
    __m512i colsum[11];
#pragma GCC unroll 11
    for (int kx = 0; kx < K; kx++) {
        colsum[kx] = _mm512_setzero_si512();
        for (int ky = ky0; ky < ky1; ky++)
            colsum[kx] = _mm512_add_epi32(colsum[kx],
                                          _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, wc + (size_t)(ky * K + kx) * a->nc)));
    }
    const __m512 add_full = ky0 == 0 && ky1 == K ? _mm512_maskz_loadu_ps(mask, a->add + c) : _mm512_setzero_ps();
    const uint8_t *rowbase = a->in + a->c0 + c + (ptrdiff_t)iy0 * (ptrdiff_t)rowstride;
    const size_t orow = (size_t)oy * a->OW * C + a->c0 + c;
    __m512 sum = _mm512_setzero_ps();
    for (int ox = 0; ox < a->OW; ox += DW_NB) {
        __m512i acc[DW_NB];
#pragma GCC unroll 8
        for (int j = 0; j < DW_NB; j++) acc[j] = _mm512_setzero_si512();
        const int ix0 = ox * S - a->pad_l;
        const uint8_t *gb = rowbase + (ptrdiff_t)ix0 * (ptrdiff_t)C;
        if (ix0 >= 0 && ix0 + (DW_NB - 1) * S + K <= a->W)
            dw_group(gb, wc, rowstride, C, a->nc, mask, ix0, a->W, acc, ky0, ky1, K, S, 0);
        else
            dw_group(gb, wc, rowstride, C, a->nc, mask, ix0, a->W, acc, ky0, ky1, K, S, 1);
        const int n = a->OW - ox < DW_NB ? a->OW - ox : DW_NB;
#pragma GCC unroll 8
        for (int j = 0; j < DW_NB; j++) {
            if (j >= n) break;
            const int ix = ix0 + j * S, kx0 = ix < 0 ? -ix : 0, kx1 = ix + K > a->W ? a->W - ix : K;
            __m512 add = add_full;
            if (kx0 != 0 || kx1 != K || ky0 != 0 || ky1 != K) {
                __m512i ws = _mm512_setzero_si512();
                for (int kx = kx0; kx < kx1; kx++) ws = _mm512_add_epi32(ws, colsum[kx]);
                add = _mm512_fmadd_ps(coef, _mm512_cvtepi32_ps(ws), bias);
            }
            __m512 y = lsq_act512(a->act, _mm512_fmadd_ps(mult, _mm512_cvtepi32_ps(acc[j]), add));
            const size_t o = orow + (size_t)(ox + j) * C;
            if (a->Q) {
                _mm_mask_storeu_epi8(a->Q + o, mask, q8_codes512(y, qb, qs, qmax));
            } else {
                _mm512_mask_storeu_ps(a->out + o, mask, y);
                sum = _mm512_add_ps(sum, y);
            }
        }
    }
    if (chsum && !a->Q) _mm512_mask_storeu_ps(chsum + c, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, chsum + c), sum));
}

static void q8_dwconv__avx512vnni(const lsq_q8_dw_args *a, int oy0, int oy1, float *chsum)
{
    LSQ_DW_DRIVER(16, dw_row, lsq_q8_kernels_scalar.q8_dwconv)
}

/* ==== quantize ================================================================================= */

/* The constants of lsq_q8_code on any grid (the input's is signed). */
typedef struct {
    __m512 qb, qs, qmin, qmax;
    __m512i qmin_i;
} q8_grid_any;

static inline q8_grid_any q8_grid_any_of(const lsq_q8_requant *q)
{
    return (q8_grid_any){_mm512_set1_ps(q->offset), _mm512_set1_ps(q->scale), _mm512_set1_ps((float)q->qmin),
                         _mm512_set1_ps((float)q->qmax), _mm512_set1_epi32(q->qmin)};
}

/* code - qmin of 16 floats, as int32 lanes: clamped, then rounded by the conversion (as q8_codes512) */
static inline __m512i q8_codes_any512(__m512 v, const q8_grid_any *g)
{
    __m512 u = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(_mm512_sub_ps(v, g->qb), g->qs), g->qmin), g->qmax);
    return _mm512_sub_epi32(_mm512_cvt_roundps_epi32(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), g->qmin_i);
}

static void q8_quantize__avx512vnni(const lsq_q8_quant_args *a, int m0, int m1)
{
    const q8_grid_any g = q8_grid_any_of(&a->q);
    for (int m = m0; m < m1; m++) {
        const float *x = a->x + (size_t)m * a->C;
        uint8_t *q = a->Q + (size_t)m * a->C;
        for (int c = 0; c < a->C; c += 16) {
            __mmask16 mask = lsq_mask16(a->C - c);
            __m512 v = _mm512_maskz_loadu_ps(mask, x + c);
            if (a->gate) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, a->gate + c));
            _mm_mask_storeu_epi8(q + c, mask, _mm512_cvtepi32_epi8(q8_codes_any512(v, &g)));
        }
    }
}

/* 16 pixels at a time: the three planes' codes as int32 lanes, merged to r | g << 8 | b << 16,
 * vpshufb packs each 128-bit lane's four pixels into 12 bytes and vpermd the four lanes' 12 bytes
 * into the low 48, stored with a byte mask (also the tail's). */
static void q8_quantize_hwc3__avx512vnni(const float *x, int n, const lsq_q8_requant *q, uint8_t *out, int i0, int i1)
{
    const q8_grid_any g = q8_grid_any_of(q);
    const __m512i pack = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 3, 7, 11, 15);
    for (int i = i0; i < i1; i += 16) {
        const int m = i1 - i < 16 ? i1 - i : 16;
        const __mmask16 mask = lsq_mask16(m);
        __m512i v = _mm512_setzero_si512();
        for (int c = 0; c < 3; c++)
            v = _mm512_or_si512(v, _mm512_slli_epi32(q8_codes_any512(_mm512_maskz_loadu_ps(mask, x + (size_t)c * n + i), &g), 8 * c));
        v = _mm512_permutexvar_epi32(lanes, _mm512_shuffle_epi8(v, pack));
        _mm512_mask_storeu_epi8(out + 3 * (size_t)i, m == 16 ? (__mmask64)0xFFFFFFFFFFFFull : ((__mmask64)1 << (3 * m)) - 1, v);
    }
}

const lsq_q8_kernels lsq_q8_kernels_avx512vnni = {
    .name = "avx512vnni",
    .q8_gemm = q8_gemm__avx512vnni,
    .q8_dwconv = q8_dwconv__avx512vnni,
    .q8_quantize = q8_quantize__avx512vnni,
    .q8_quantize_hwc3 = q8_quantize_hwc3__avx512vnni,
};
