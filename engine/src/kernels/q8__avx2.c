/* q8__avx2.c - integer kernels with AVX2 + FMA, bit-identical to the portable C ones (up to the
 * activation approximation, which is math__avx512.h's, bit for bit).
 *
 * vpmaddubsw (u8 x s8, adjacent products summed into int16) saturates when a pair sum exceeds
 * 32767: 8-bit activations times 8-bit weights reach 2 * 255 * -128 = -65280. So the GEMM uses it
 * only where it is exact: on half panels whose weight codes all lie in [-64, 63] (|pair| <= 2 * 255
 * * 64 = 32640; every 2..7-bit weight grid), checked per call (one pass over the half panel's
 * bytes, under 1% of its work for a block of rows). Elsewhere (8-bit weights) both operands are
 * widened to int16 (codes zero-extended, weights sign-extended) and vpmaddwd sums pairs of exact
 * products into int32 lanes: about half the speed. Same packed weights as every level
 * (lsq_q8_pack); GEMM tiles of 6 rows x 8 columns. Depthwise: 8 channels per vector, codes
 * zero-extended to int32 lanes and weights sign-extended, so vpmaddwd (the upper int16 of every
 * code lane is 0) is one exact multiply per lane, as vpdpwssd is in q8__avx512vnni.c.
 * Requantization to the next layer's codes happens in the epilogues.
 *
 * Built a second time as q8__avxvnni.c (LSQ_Q8_AVXVNNI) for AVX2 CPUs with AVX-VNNI (Intel
 * Alder Lake and later clients, Sierra Forest, AMD Zen 5): there the 256-bit vpdpbusd sums four
 * u8 x s8 products into each int32 lane without saturation, so every weight width takes one
 * instruction per group of 4 k, the narrow path's speed with no narrow/wide split. Same results
 * bit for bit: both are exact integer sums. Tried and dropped (bench_levels, Zen 5): tiles of 6 x
 * 16 columns sharing each broadcast (9% slower than 6 x 8) and vpdpwssd in the depthwise kernel
 * (4% slower: its latency lengthens the accumulation chains that vpmaddwd + vpaddd keep short).
 * Also dropped: q8__avx512vnni.c's depthwise layout (rows outer, 8 outputs per input load): 10%
 * slower over bench_levels' layers here, faster only at 112x112; at 14x14 and below nearly every
 * group is a border group, and without byte-masked loads each of its loads needs an AND. */
#include <immintrin.h>
#include <string.h>

#include "math__avx2.h"
#include "q8.h"

/* Codes of 8 floats in the low 8 bytes: round half to even of (y - offset) / scale, clamped to
 * [qmin, qmax], minus qmin (lsq_q8_code, lane by lane). */
static inline __m128i q8_codes256(__m256 y, __m256 qb, __m256 qs, __m256 qmin, __m256 qmax)
{
    __m256 u = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(y, qb), qs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    u = _mm256_sub_ps(_mm256_min_ps(_mm256_max_ps(u, qmin), qmax), qmin); /* exact: small integers */
    __m256i i = _mm256_cvtps_epi32(u);
    __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packus_epi16(w, w);
}

/* n bytes (n >= 8: eight) of v's low 8 to p. */
static inline void q8_store8(uint8_t *p, int n, __m128i v)
{
    if (n >= 8) {
        _mm_storel_epi64((__m128i *)p, v);
    } else {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)t, v);
        memcpy(p, t, (size_t)n);
    }
}

typedef struct {
    __m256 qb, qs, qmin, qmax;
} q8_grid;

/* Per column lane, the sum of 4 u8 x s8 products (bytes of a times bytes of b) added to acc.
 * AVX-VNNI: one exact vpdpbusd, so every weight width takes this (narrow) path. AVX2: vpmaddubsw
 * (saturating int16 pair sums: exact only for weight codes in [-64, 63]) then vpmaddwd with ones. */
#ifdef LSQ_Q8_AVXVNNI
#define Q8_ANY_NARROW 1
static inline __m256i q8_dot4(__m256i acc, __m256i a, __m256i b, __m256i ones)
{
    (void)ones;
    return _mm256_dpbusd_avx_epi32(acc, a, b);
}
#else
#define Q8_ANY_NARROW 0
static inline __m256i q8_dot4(__m256i acc, __m256i a, __m256i b, __m256i ones)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
}
#endif

static inline q8_grid q8_grid_of(const lsq_q8_requant *q)
{
    return (q8_grid){_mm256_set1_ps(q->offset), _mm256_set1_ps(q->scale), _mm256_set1_ps((float)q->qmin),
                     _mm256_set1_ps((float)q->qmax)};
}

/* ==== GEMM =====================================================================================
 * Per group of 4 k, a 16-column panel holds 64 bytes [n][k % 4]; a tile takes one half of it (8
 * columns, 32 bytes).
 * narrow: vpmaddubsw of each row's 4 codes (broadcast) with the 32 bytes gives (k0 + k1, k2 + k3)
 * per column in int16, and vpmaddwd with ones sums them into one int32 lane per column.
 * wide: the 32 bytes are sign-extended to two int16 vectors of 4 columns x 4 k; each row's 4
 * codes are zero-extended and repeated to (a0 a1 a2 a3) x 4, and vpmaddwd gives per column two
 * int32 partial sums (k0 + k1, k2 + k3), added into 2 accumulators per row; one vphaddd per tile
 * folds the pairs. 12 accumulators + 2 weight vectors + 1 activation vector: 15 registers. */

#define Q8_MR 6

static inline __attribute__((always_inline)) void q8_tile(const lsq_q8_gemm_args *a, int m, int p, int h, const int mr,
                                                          const int narrow)
{
    const int K4 = (a->K + 3) / 4;
    const int8_t *bp = a->B + (size_t)p * K4 * LSQ_Q8_NR * 4 + (size_t)h * 32;
    const uint8_t *ap = a->A + (size_t)m * a->lda;
    /* bytes 0..3 of each 32-bit lane to int16 lanes 0..3 and again 4..7 (index -1: a zero byte) */
    const __m256i spread = _mm256_setr_epi8(0, -1, 1, -1, 2, -1, 3, -1, 0, -1, 1, -1, 2, -1, 3, -1, 0, -1, 1, -1, 2,
                                            -1, 3, -1, 0, -1, 1, -1, 2, -1, 3, -1);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[Q8_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int g = 0; g < K4 && narrow; g++) {
        const __m256i b = _mm256_loadu_si256((const __m256i *)(bp + (size_t)g * LSQ_Q8_NR * 4));
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            int32_t four;
            memcpy(&four, ap + (size_t)i * a->lda + (size_t)g * 4, 4);
            acc[i][0] = q8_dot4(acc[i][0], _mm256_set1_epi32(four), b, ones);
        }
    }
    for (int g = 0; g < K4 && !narrow; g++) {
        const int8_t *bg = bp + (size_t)g * LSQ_Q8_NR * 4;
        __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)bg));        /* columns 0..3 */
        __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bg + 16))); /* columns 4..7 */
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            int32_t four;
            memcpy(&four, ap + (size_t)i * a->lda + (size_t)g * 4, 4);
            __m256i av = _mm256_shuffle_epi8(_mm256_set1_epi32(four), spread);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, b0));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, b1));
        }
    }
    const int n0 = p * LSQ_Q8_NR + 8 * h, nrem = a->N - n0;
    const __m256 mult = lsq_load8_ps(a->mult + n0, nrem), add = lsq_load8_ps(a->add + n0, nrem);
    __m256i ib = _mm256_setzero_si256();
    if (a->ibias)
        ib = nrem >= 8 ? _mm256_loadu_si256((const __m256i *)(a->ibias + n0))
                       : _mm256_maskload_epi32((const int *)(a->ibias + n0), lsq_mask8(nrem));
    const q8_grid q = q8_grid_of(&a->q);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        /* acc[i][0] holds columns (0 0 1 1 | 2 2 3 3), acc[i][1] (4 4 5 5 | 6 6 7 7); the pair sums
         * come out as (0 1 4 5 | 2 3 6 7) and the 64-bit permute puts them in order */
        __m256i s = narrow ? acc[i][0] : _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][0], acc[i][1]), 0xD8);
        s = _mm256_add_epi32(s, ib);
        __m256 y = lsq_act256(a->act, _mm256_fmadd_ps(mult, _mm256_cvtepi32_ps(s), add));
        if (a->R) y = _mm256_add_ps(y, lsq_load8_ps(a->R + (size_t)(m + i) * a->ldr + n0, nrem));
        if (a->C) lsq_store8_ps(a->C + (size_t)(m + i) * a->ldc + n0, nrem, y);
        if (a->Q) q8_store8(a->Q + (size_t)(m + i) * a->ldq + n0, nrem, q8_codes256(y, q.qb, q.qs, q.qmin, q.qmax));
    }
}

static inline __attribute__((always_inline)) void q8_rows(const lsq_q8_gemm_args *a, int m, int mend, int p, int h,
                                                          const int narrow)
{
    for (; m + Q8_MR <= mend; m += Q8_MR) q8_tile(a, m, p, h, Q8_MR, narrow);
    if (mend - m >= 4) q8_tile(a, m, p, h, 4, narrow), m += 4;
    if (mend - m >= 2) q8_tile(a, m, p, h, 2, narrow), m += 2;
    if (mend - m >= 1) q8_tile(a, m, p, h, 1, narrow);
}

/* 1 when every weight code of half panel h of panel p lies in [-64, 63] (bits 7 and 6 equal:
 * code + 64 has its top bit clear), so that vpmaddubsw cannot saturate. */
static int q8_half_is_narrow(const lsq_q8_gemm_args *a, int p, int h)
{
    const int K4 = (a->K + 3) / 4;
    const int8_t *bp = a->B + (size_t)p * K4 * LSQ_Q8_NR * 4 + (size_t)h * 32;
    __m256i any = _mm256_setzero_si256();
    for (int g = 0; g < K4; g++)
        any = _mm256_or_si256(any, _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(bp + (size_t)g * 64)),
                                                    _mm256_set1_epi8(64)));
    return _mm256_movemask_epi8(any) == 0;
}

static void q8_gemm__avx2(const lsq_q8_gemm_args *a, int m0, int m1)
{
    const int nhalves = (a->N + 7) / 8;
    for (int mb = m0; mb < m1; mb += 96) {
        const int mend = mb + 96 < m1 ? mb + 96 : m1;
        for (int hp = 0; hp < nhalves; hp++) {
            if (Q8_ANY_NARROW || q8_half_is_narrow(a, hp / 2, hp % 2))
                q8_rows(a, mb, mend, hp / 2, hp % 2, 1);
            else
                q8_rows(a, mb, mend, hp / 2, hp % 2, 0);
        }
    }
}

/* ==== depthwise ================================================================================ */

#define Q8_DW_MAXTAPS 121 /* 11 x 11 */

/* 8 codes at p (only n of them, if n < 8: the channel tail may end at the tensor's last byte),
 * zero-extended to int32 lanes. */
static inline __m256i q8_load8(const uint8_t *p, int n)
{
    if (n >= 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    uint64_t t = 0;
    memcpy(&t, p, (size_t)n);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)t));
}

typedef struct {
    __m256 mult, add, bias, coef;
    q8_grid q;
} dw_consts;

static inline void dw_store(const lsq_q8_dw_args *a, const dw_consts *k, __m256 y, size_t o, int n, __m256 *csum)
{
    if (a->Q) {
        q8_store8(a->Q + o, n, q8_codes256(y, k->q.qb, k->q.qs, k->q.qmin, k->q.qmax));
    } else {
        lsq_store8_ps(a->out + o, n, y);
        *csum = _mm256_add_ps(*csum, y);
    }
}

/* One output row band of one 8-channel group (n channels valid); `kc` is the kernel size as a
 * compile-time constant where the caller has one (the tap loops then unroll), else 0 and a->k. */
static inline __attribute__((always_inline)) void dw_rows(const lsq_q8_dw_args *a, const int kc, int oy0, int oy1,
                                                          int c, const __m256i *wv, const dw_consts *K, int n,
                                                          float *chsum)
{
    const int k = kc ? kc : a->k, S = a->stride, C = a->C;
    const size_t xstep = (size_t)S * C; /* bytes between the taps of neighbouring output pixels */
    const uint8_t *in = a->in + a->c0 + c;
    for (int oy = oy0; oy < oy1; oy++) {
        const int iy0 = oy * S - a->pad_t;
        const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + k > a->H ? a->H - iy0 : k;
        const int rows_full = ky0 == 0 && ky1 == k;
        size_t orow = (size_t)oy * a->OW * C + a->c0 + c;
        __m256 rowsum = _mm256_setzero_ps(), *csum = &rowsum;
        int ox = 0;
        while (ox < a->OW) {
            const int ix0 = ox * S - a->pad_l;
            const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + k > a->W ? a->W - ix0 : k;
            /* four interior pixels at once: four independent accumulation chains */
            if (rows_full && kx0 == 0 && (ox + 3) * S - a->pad_l + k <= a->W && ox + 4 <= a->OW) {
                __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
                const uint8_t *row = in + ((size_t)iy0 * a->W + ix0) * C;
                for (int ky = 0; ky < k; ky++, row += (size_t)a->W * C) {
                    const uint8_t *p = row;
                    for (int kx = 0; kx < k; kx++, p += C) {
                        __m256i w = wv[ky * k + kx];
                        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(q8_load8(p, n), w));
                        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(q8_load8(p + xstep, n), w));
                        s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(q8_load8(p + 2 * xstep, n), w));
                        s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(q8_load8(p + 3 * xstep, n), w));
                    }
                }
                dw_store(a, K, lsq_act256(a->act, _mm256_fmadd_ps(K->mult, _mm256_cvtepi32_ps(s0), K->add)), orow + (size_t)ox * C, n, csum);
                dw_store(a, K, lsq_act256(a->act, _mm256_fmadd_ps(K->mult, _mm256_cvtepi32_ps(s1), K->add)), orow + (size_t)(ox + 1) * C, n, csum);
                dw_store(a, K, lsq_act256(a->act, _mm256_fmadd_ps(K->mult, _mm256_cvtepi32_ps(s2), K->add)), orow + (size_t)(ox + 2) * C, n, csum);
                dw_store(a, K, lsq_act256(a->act, _mm256_fmadd_ps(K->mult, _mm256_cvtepi32_ps(s3), K->add)), orow + (size_t)(ox + 3) * C, n, csum);
                ox += 4;
                continue;
            }
            /* one pixel, border or not: only the valid taps, and their weight sum */
            __m256i s = _mm256_setzero_si256(), ws = _mm256_setzero_si256();
            for (int ky = ky0; ky < ky1; ky++) {
                const uint8_t *p = in + ((size_t)(iy0 + ky) * a->W + ix0 + kx0) * C;
                for (int kx = kx0; kx < kx1; kx++, p += C) {
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(q8_load8(p, n), wv[ky * k + kx]));
                    ws = _mm256_add_epi32(ws, wv[ky * k + kx]);
                }
            }
            __m256 add = rows_full && kx0 == 0 && kx1 == k ? K->add : _mm256_fmadd_ps(K->coef, _mm256_cvtepi32_ps(ws), K->bias);
            dw_store(a, K, lsq_act256(a->act, _mm256_fmadd_ps(K->mult, _mm256_cvtepi32_ps(s), add)), orow + (size_t)ox * C, n, csum);
            ox++;
        }
        if (chsum && !a->Q) {
            float *rs = chsum + (size_t)oy * C + c;
            lsq_store8_ps(rs, n, _mm256_add_ps(lsq_load8_ps(rs, n), rowsum));
        }
    }
}

static void q8_dwconv__avx2(const lsq_q8_dw_args *a, int oy0, int oy1, float *chsum)
{
    const int kk = a->k * a->k;
    __m256i wv[Q8_DW_MAXTAPS];
    for (int c = 0; c < a->nc; c += 8) {
        const int n = a->nc - c;
        for (int t = 0; t < kk; t++) {
            int64_t w8 = 0;
            memcpy(&w8, a->w + (size_t)t * a->nc + c, (size_t)(n < 8 ? n : 8));
            wv[t] = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)w8));
        }
        dw_consts K = {
            .mult = lsq_load8_ps(a->mult + c, n), .add = lsq_load8_ps(a->add + c, n),
            .bias = lsq_load8_ps(a->bias + c, n), .coef = lsq_load8_ps(a->coef + c, n), .q = q8_grid_of(&a->q),
        };
        switch (a->k) {
        case 3: dw_rows(a, 3, oy0, oy1, c, wv, &K, n, chsum); break;
        case 5: dw_rows(a, 5, oy0, oy1, c, wv, &K, n, chsum); break;
        case 7: dw_rows(a, 7, oy0, oy1, c, wv, &K, n, chsum); break;
        default: dw_rows(a, 0, oy0, oy1, c, wv, &K, n, chsum); break;
        }
    }
}

/* ==== quantize ================================================================================= */

static void q8_quantize__avx2(const lsq_q8_quant_args *a, int m0, int m1)
{
    const q8_grid q = q8_grid_of(&a->q);
    for (int m = m0; m < m1; m++) {
        const float *x = a->x + (size_t)m * a->C;
        uint8_t *out = a->Q + (size_t)m * a->C;
        int c = 0;
        for (; c + 8 <= a->C; c += 8) {
            __m256 v = _mm256_loadu_ps(x + c);
            if (a->gate) v = _mm256_mul_ps(v, _mm256_loadu_ps(a->gate + c));
            _mm_storel_epi64((__m128i *)(out + c), q8_codes256(v, q.qb, q.qs, q.qmin, q.qmax));
        }
        for (; c < a->C; c++) out[c] = lsq_q8_code(&a->q, a->gate ? x[c] * a->gate[c] : x[c]);
    }
}

#ifdef LSQ_Q8_AVXVNNI
const lsq_q8_kernels lsq_q8_kernels_avxvnni = {
    .name = "avxvnni",
#else
const lsq_q8_kernels lsq_q8_kernels_avx2 = {
    .name = "avx2",
#endif
    .q8_gemm = q8_gemm__avx2,
    .q8_dwconv = q8_dwconv__avx2,
    .q8_quantize = q8_quantize__avx2,
};
