/* math__avx2.h - vector sigmoid, activations and tail masks for the AVX2 kernels.
 * Include only from files compiled with AVX2 + FMA flags.
 *
 * The activations compute bit for bit what math__avx512.h computes (same clamp, same polynomial
 * and FMA order, same exact scaling), so the two SIMD levels agree exactly and both stay within
 * the tolerance the tests allow against the scalar expf path. */
#ifndef LSQ_MATH_AVX2_H
#define LSQ_MATH_AVX2_H

#include <immintrin.h>

#include "kernels.h"

/* 1 + exp(-x), as lsq_one_plus_exp_neg512. AVX2 has neither vreduceps nor vscalefps.
 * vreduceps's fraction f = t - floor(t) is rounded toward -inf (its rounding-control bits): it is
 * exact except for -0.5 < t < 0, where 1 + t needs more bits than a float has. The subtraction
 * here rounds to nearest; its error, (s + floor(t)) - t (both steps exact), says when s came out
 * one ulp (2^-24 below 1) too high, and that ulp is taken off; every float t in [-1, 0] and a dense
 * sample elsewhere checked equal to vreduceps. 2^floor(t) is built in the exponent field, so the
 * product is the same exact p * 2^floor(t) as vscalefps's. t <= 125.6 because x >= -87; t is held
 * at >= -125 (+inf inputs stay finite), where p * 2^-125 (p >= 1 - 2^-24, so a normal number:
 * denormal results cost a microcode assist each, measured 1.8x on a whole GEMM of large inputs)
 * vanishes in 1 + ... exactly as scalef's smaller result does. So the sums agree for every x. */
static inline __m256 lsq_one_plus_exp_neg256(__m256 x)
{
    __m256 t = _mm256_mul_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(-1.44269504088896341f));
    t = _mm256_max_ps(t, _mm256_set1_ps(-125.0f));
    __m256 fl = _mm256_round_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 s = _mm256_sub_ps(t, fl);
    __m256 up = _mm256_cmp_ps(_mm256_sub_ps(_mm256_add_ps(s, fl), t), _mm256_setzero_ps(), _CMP_GT_OQ);
    __m256 f = _mm256_sub_ps(s, _mm256_and_ps(up, _mm256_set1_ps(0x1p-24f)));
    __m256 p = _mm256_set1_ps(0.0018775759963318706f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.008989342488348484f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.05582631379365921f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24015362560749054f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931530833244324f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.9999999403953552f));
    __m256i e = _mm256_cvtps_epi32(fl);
    __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
    return _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(p, scale));
}

static inline __m256 lsq_sigmoid256(__m256 x) { return _mm256_div_ps(_mm256_set1_ps(1.0f), lsq_one_plus_exp_neg256(x)); }

static inline __m256 lsq_act256(lsq_act act, __m256 x)
{
    if (act == LSQ_ACT_RELU) return _mm256_max_ps(x, _mm256_setzero_ps());
    if (act == LSQ_ACT_SWISH) return _mm256_div_ps(x, lsq_one_plus_exp_neg256(x));
    if (act == LSQ_ACT_SIGMOID) return lsq_sigmoid256(x);
    return x;
}

/* Lane mask for the first n of 8 lanes (n may exceed 8), for vmaskmov loads and stores. Masked
 * moves are only for tails: a masked-off lane never faults, but on AMD Zen one that would fault
 * costs a microcode assist, so full vectors use plain loads. */
static inline __m256i lsq_mask8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* n floats (n >= 8: a whole vector) at p; lanes past n read as 0 and are never touched. */
static inline __m256 lsq_load8_ps(const float *p, int n)
{
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lsq_mask8(n));
}

static inline void lsq_store8_ps(float *p, int n, __m256 v)
{
    if (n >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, lsq_mask8(n), v);
}

#endif
