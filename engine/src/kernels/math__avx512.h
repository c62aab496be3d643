/* math__avx512.h - vector exp, sigmoid and activations for the AVX-512 kernels.
 * Include only from files compiled with AVX-512 flags. exp: Cody-Waite range reduction and a
 * degree-5 polynomial, relative error about 2e-7; scalef applies 2^n. */
#ifndef LSQ_MATH_AVX512_H
#define LSQ_MATH_AVX512_H

#include <immintrin.h>

#include "kernels.h"

static inline __m512 lsq_exp512(__m512 x)
{
    /* Only the top needs a clamp: below -87 scalef flushes smoothly to 0. */
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    /* degree-5 least-squares fit of e^r on [-ln2/2, ln2/2], max relative error 1.7e-7 */
    __m512 p = _mm512_set1_ps(0.00826153252273798f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04189875349402428f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16668114066123962f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49999141693115234f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.9999995231628418f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 1 / (1 + exp(-x)): reciprocal estimate (14 bits) plus one Newton step, ~1e-7 relative, much
 * cheaper than a vector division. d is clamped so the estimate never sees infinity. */
static inline __m512 lsq_sigmoid512(__m512 x)
{
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 d = _mm512_add_ps(one, lsq_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

static inline __m512 lsq_act512(lsq_act act, __m512 x)
{
    if (act == LSQ_ACT_RELU) return _mm512_max_ps(x, _mm512_setzero_ps());
    if (act == LSQ_ACT_SWISH) return _mm512_mul_ps(x, lsq_sigmoid512(x));
    if (act == LSQ_ACT_SIGMOID) return lsq_sigmoid512(x);
    return x;
}

static inline __mmask16 lsq_mask16(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

#endif
