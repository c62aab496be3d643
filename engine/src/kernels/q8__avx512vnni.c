/* q8__avx512vnni.c - integer kernels with AVX-512 VNNI: vpdpbusd sums four uint8 x int8
 * products into each int32 lane, so one instruction does 64 multiply-adds. */
#include <immintrin.h>
#include <string.h>

#include "math__avx512.h"
#include "q8.h"

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
#pragma GCC unroll 2
    for (int v = 0; v < nv; v++) {
        int n0 = (p + v) * LSQ_Q8_NR;
        __mmask16 mask = lsq_mask16(a->N - n0);
        __m512 mult = _mm512_maskz_loadu_ps(mask, a->mult + n0), add = _mm512_maskz_loadu_ps(mask, a->add + n0);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512 y = lsq_act512(a->act, _mm512_fmadd_ps(mult, _mm512_cvtepi32_ps(acc[i][v]), add));
            if (a->R) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, a->R + (size_t)(m + i) * a->ldr + n0));
            _mm512_mask_storeu_ps(a->C + (size_t)(m + i) * a->ldc + n0, mask, y);
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

const lsq_q8_kernels lsq_q8_kernels_avx512vnni = {.name = "avx512vnni", .q8_gemm = q8_gemm__avx512vnni};
