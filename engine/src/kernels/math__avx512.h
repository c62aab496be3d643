/* math__avx512.h - vector sigmoid and activations for the AVX-512 kernels.
 * Include only from files compiled with AVX-512 flags. */
#ifndef LSQ_MATH_AVX512_H
#define LSQ_MATH_AVX512_H

#include <immintrin.h>

#include "kernels.h"

/* 1 + exp(-x). exp(-x) = 2^t with t = -x log2(e): vreduceps gives the fraction f = t - floor(t)
 * in [0, 1) exactly, a degree-5 fit gives 2^f (relative error 1.6e-7; degree 4, 2.7e-6, moved
 * whole-network logits by 7e-6 of their range, too close to the 1e-5 the CLI test allows vs the
 * scalar path), and vscalefps multiplies by 2^floor(t) itself, so no separate rounding or
 * Cody-Waite step is needed. x is clamped at -87 so that the result stays finite; above, scalef
 * flushes smoothly to 0. */
static inline __m512 lsq_one_plus_exp_neg512(__m512 x)
{
    __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(-1.44269504088896341f));
    __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_set1_ps(0.0018775759963318706f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.008989342488348484f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05582631379365921f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24015362560749054f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931530833244324f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999999403953552f));
    return _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, t));
}

/* swish x / (1 + e^-x) and sigmoid 1 / (1 + e^-x) end in one true division: on Zen 5 vdivps zmm
 * measured faster than the rcp14 estimate + Newton step + multiply it replaces (2.0 -> 1.3 ns per
 * swish vector in a throughput loop), and it is exactly rounded. */
static inline __m512 lsq_sigmoid512(__m512 x) { return _mm512_div_ps(_mm512_set1_ps(1.0f), lsq_one_plus_exp_neg512(x)); }

static inline __m512 lsq_act512(lsq_act act, __m512 x)
{
    if (act == LSQ_ACT_RELU) return _mm512_max_ps(x, _mm512_setzero_ps());
    if (act == LSQ_ACT_SWISH) return _mm512_div_ps(x, lsq_one_plus_exp_neg512(x));
    if (act == LSQ_ACT_SIGMOID) return lsq_sigmoid512(x);
    return x;
}

static inline __mmask16 lsq_mask16(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* The columns of a depthwise window group of the AVX-512 kernels (float and integer alike): n input
 * columns from ix0 of an image W wide, C elements apart. km[i]: the load mask of column i (all-zero
 * outside [0, W) when border); off[i]: its element offset from column ix0. A masked-off load must
 * still point inside the tensor: on AMD Zen a masked load whose masked-off lanes would fault (before
 * the buffer, past its end) takes a microcode assist costing hundreds of cycles (measured 3.5x slower
 * top rows in a 14x14 k9 layer), so border columns outside the image read column 0 or W - 1. */
static inline __attribute__((always_inline)) void lsq_dw_columns512(int n, int ix0, int W, size_t C, __mmask16 mask,
                                                                    const int border, __mmask16 *km, ptrdiff_t *off)
{
#pragma GCC unroll 32
    for (int i = 0; i < n; i++) {
        int col = ix0 + i, inside = (unsigned)col < (unsigned)W;
        km[i] = !border || inside ? mask : 0;
        off[i] = border ? (ptrdiff_t)((col < 0 ? 0 : col >= W ? W - 1 : col) - ix0) * (ptrdiff_t)C
                        : (ptrdiff_t)i * (ptrdiff_t)C;
    }
}

#endif
