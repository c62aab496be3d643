/* q8__avx512vnni.c - integer kernels with AVX-512 VNNI.
 *
 * GEMM: vpdpbusd sums four uint8 x int8 products into each int32 lane, so one instruction does 64
 * multiply-adds. Depthwise: 16 channels per vector; codes zero-extended to int32 lanes and weights
 * sign-extended, so vpdpwssd (two int16 products per lane, the upper one 0 x w) is one exact
 * multiply-add per lane. Requantization to the next layer's codes happens in the epilogues. */
#include <immintrin.h>
#include <string.h>

#include "math__avx512.h"
#include "q8.h"

/* Codes of 16 floats: round half to even of (y - offset) / scale, clamped to [0, qmax] (unsigned
 * grids; q8_quantize also handles a signed one). */
static inline __m128i q8_codes512(__m512 y, __m512 qb, __m512 qs, __m512 qmax)
{
    __m512 u = _mm512_roundscale_ps(_mm512_div_ps(_mm512_sub_ps(y, qb), qs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    u = _mm512_min_ps(_mm512_max_ps(u, _mm512_setzero_ps()), qmax);
    return _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(u));
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

/* ==== depthwise ================================================================================ */

#define Q8_DW_MAXTAPS 121 /* 11 x 11 */

/* 16 codes at p, zero-extended to int32 lanes (masked past the group's channels). */
static inline __m512i q8_load16(const uint8_t *p, __mmask16 mask, int full)
{
    return _mm512_cvtepu8_epi32(full ? _mm_loadu_si128((const __m128i *)p) : _mm_maskz_loadu_epi8(mask, p));
}

typedef struct {
    __m512 mult, add, bias, coef, qb, qs, qmax;
} dw_consts;

static inline void dw_store(const lsq_q8_dw_args *a, const dw_consts *k, __m512 y, size_t o, __mmask16 mask,
                            __m512 *csum)
{
    if (a->Q) {
        _mm_mask_storeu_epi8(a->Q + o, mask, q8_codes512(y, k->qb, k->qs, k->qmax));
    } else {
        _mm512_mask_storeu_ps(a->out + o, mask, y);
        *csum = _mm512_add_ps(*csum, y);
    }
}

/* One output row band of one 16-channel group; `kc` is the kernel size as a compile-time constant
 * where the caller has one (the tap loops then unroll), else 0 and a->k is used. */
static inline __attribute__((always_inline)) void dw_rows(const lsq_q8_dw_args *a, const int kc, int oy0, int oy1,
                                                          int c, const __m512i *wv, const dw_consts *K, __mmask16 mask,
                                                          int full, __m512 *csum)
{
    const int k = kc ? kc : a->k, S = a->stride, C = a->C;
    const size_t xstep = (size_t)S * C; /* bytes between the taps of neighbouring output pixels */
    const uint8_t *in = a->in + a->c0 + c;
    for (int oy = oy0; oy < oy1; oy++) {
        const int iy0 = oy * S - a->pad_t;
        const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + k > a->H ? a->H - iy0 : k;
        const int rows_full = ky0 == 0 && ky1 == k;
        size_t orow = (size_t)oy * a->OW * C + a->c0 + c;
        int ox = 0;
        while (ox < a->OW) {
            const int ix0 = ox * S - a->pad_l;
            const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + k > a->W ? a->W - ix0 : k;
            /* four interior pixels at once: four independent accumulation chains */
            if (rows_full && kx0 == 0 && (ox + 3) * S - a->pad_l + k <= a->W && ox + 4 <= a->OW) {
                __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
                const uint8_t *row = in + ((size_t)iy0 * a->W + ix0) * C;
                for (int ky = 0; ky < k; ky++, row += (size_t)a->W * C) {
                    const uint8_t *p = row;
                    for (int kx = 0; kx < k; kx++, p += C) {
                        __m512i w = wv[ky * k + kx];
                        s0 = _mm512_dpwssd_epi32(s0, q8_load16(p, mask, full), w);
                        s1 = _mm512_dpwssd_epi32(s1, q8_load16(p + xstep, mask, full), w);
                        s2 = _mm512_dpwssd_epi32(s2, q8_load16(p + 2 * xstep, mask, full), w);
                        s3 = _mm512_dpwssd_epi32(s3, q8_load16(p + 3 * xstep, mask, full), w);
                    }
                }
                dw_store(a, K, lsq_act512(a->act, _mm512_fmadd_ps(K->mult, _mm512_cvtepi32_ps(s0), K->add)), orow + (size_t)ox * C, mask, csum);
                dw_store(a, K, lsq_act512(a->act, _mm512_fmadd_ps(K->mult, _mm512_cvtepi32_ps(s1), K->add)), orow + (size_t)(ox + 1) * C, mask, csum);
                dw_store(a, K, lsq_act512(a->act, _mm512_fmadd_ps(K->mult, _mm512_cvtepi32_ps(s2), K->add)), orow + (size_t)(ox + 2) * C, mask, csum);
                dw_store(a, K, lsq_act512(a->act, _mm512_fmadd_ps(K->mult, _mm512_cvtepi32_ps(s3), K->add)), orow + (size_t)(ox + 3) * C, mask, csum);
                ox += 4;
                continue;
            }
            /* one pixel, border or not: only the valid taps, and their weight sum */
            __m512i s = _mm512_setzero_si512(), ws = _mm512_setzero_si512();
            for (int ky = ky0; ky < ky1; ky++) {
                const uint8_t *p = in + ((size_t)(iy0 + ky) * a->W + ix0 + kx0) * C;
                for (int kx = kx0; kx < kx1; kx++, p += C) {
                    s = _mm512_dpwssd_epi32(s, q8_load16(p, mask, full), wv[ky * k + kx]);
                    ws = _mm512_add_epi32(ws, wv[ky * k + kx]);
                }
            }
            __m512 add = rows_full && kx0 == 0 && kx1 == k ? K->add : _mm512_fmadd_ps(K->coef, _mm512_cvtepi32_ps(ws), K->bias);
            dw_store(a, K, lsq_act512(a->act, _mm512_fmadd_ps(K->mult, _mm512_cvtepi32_ps(s), add)), orow + (size_t)ox * C, mask, csum);
            ox++;
        }
    }
}

static void q8_dwconv__avx512vnni(const lsq_q8_dw_args *a, int oy0, int oy1, float *chsum)
{
    const int kk = a->k * a->k;
    __m512i wv[Q8_DW_MAXTAPS];
    for (int c = 0; c < a->nc; c += 16) {
        const __mmask16 mask = lsq_mask16(a->nc - c);
        const int full = a->nc - c >= 16;
        for (int t = 0; t < kk; t++) wv[t] = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, a->w + (size_t)t * a->nc + c));
        dw_consts K = {
            .mult = _mm512_maskz_loadu_ps(mask, a->mult + c), .add = _mm512_maskz_loadu_ps(mask, a->add + c),
            .bias = _mm512_maskz_loadu_ps(mask, a->bias + c), .coef = _mm512_maskz_loadu_ps(mask, a->coef + c),
            .qb = _mm512_set1_ps(a->q.offset), .qs = _mm512_set1_ps(a->q.scale), .qmax = _mm512_set1_ps((float)a->q.qmax),
        };
        __m512 csum = _mm512_setzero_ps();
        switch (a->k) {
        case 3: dw_rows(a, 3, oy0, oy1, c, wv, &K, mask, full, &csum); break;
        case 5: dw_rows(a, 5, oy0, oy1, c, wv, &K, mask, full, &csum); break;
        case 7: dw_rows(a, 7, oy0, oy1, c, wv, &K, mask, full, &csum); break;
        default: dw_rows(a, 0, oy0, oy1, c, wv, &K, mask, full, &csum); break;
        }
        if (chsum && !a->Q) _mm512_mask_storeu_ps(chsum + c, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, chsum + c), csum));
    }
}

/* ==== quantize ================================================================================= */

static void q8_quantize__avx512vnni(const lsq_q8_quant_args *a, int m0, int m1)
{
    const __m512 qb = _mm512_set1_ps(a->q.offset), qs = _mm512_set1_ps(a->q.scale);
    const __m512 qmin = _mm512_set1_ps((float)a->q.qmin), qmax = _mm512_set1_ps((float)a->q.qmax);
    for (int m = m0; m < m1; m++) {
        const float *x = a->x + (size_t)m * a->C;
        uint8_t *q = a->Q + (size_t)m * a->C;
        for (int c = 0; c < a->C; c += 16) {
            __mmask16 mask = lsq_mask16(a->C - c);
            __m512 v = _mm512_maskz_loadu_ps(mask, x + c);
            if (a->gate) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, a->gate + c));
            __m512 u = _mm512_roundscale_ps(_mm512_div_ps(_mm512_sub_ps(v, qb), qs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            u = _mm512_sub_ps(_mm512_min_ps(_mm512_max_ps(u, qmin), qmax), qmin); /* exact: small integers */
            _mm_mask_storeu_epi8(q + c, mask, _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(u)));
        }
    }
}

const lsq_q8_kernels lsq_q8_kernels_avx512vnni = {
    .name = "avx512vnni",
    .q8_gemm = q8_gemm__avx512vnni,
    .q8_dwconv = q8_dwconv__avx512vnni,
    .q8_quantize = q8_quantize__avx512vnni,
};
