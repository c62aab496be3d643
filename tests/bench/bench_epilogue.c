/* bench_epilogue.c - what each step of the fused Swish + requantization epilogue costs.
 *
 *   taskset -c 0 build/bench_epilogue
 *
 * The integer path's expansion GEMMs and depthwise layers are bound by their per-output epilogue
 * (engine/PERFORMANCE_LOG.md), not by vpdpbusd. This times that epilogue alone in a throughput loop
 * over 65,536 int32 sums (16 per vector, independent vectors, hot caches): the engine's form
 * (int32 -> float, multiply-add, Swish = x / (1 + e^-x) with math__avx512.h's e^-x, then
 * (y - offset) / scale clamped, rounded and narrowed to bytes), and ablations of it that each drop or
 * replace one step. The ablations are not exact and exist only to show where the cycles go; the
 * engine's codes must stay equal to the division form (tests/unit/test_q8.c). Prints the fastest of
 * 50 passes, ns per vector of 16 outputs. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "kernels/math__avx512.h"

#define NV 4096

enum { ENGINE, NO_SWISH, MUL_NOT_DIV, NO_VREDUCEPS, NO_VSCALEFPS, POLY_DEGREE_3, EXPONENT_ADD, NVARIANTS };
static const char *const names[NVARIANTS] = {
    "engine's epilogue", "without Swish", "multiplies for both divisions", "vreduceps -> vsubps",
    "vscalefps -> vmulps", "degree-3 polynomial", "2^n by exponent add (exact)",
};

static int32_t acc[NV * 16] __attribute__((aligned(64)));
static uint8_t out[NV * 16] __attribute__((aligned(64)));

/* 1 + e^-x as math__avx512.h computes it, with one step changed per variant. */
static inline __m512 one_plus_exp_neg(__m512 x, int v)
{
    if (v == ENGINE || v == MUL_NOT_DIV) return lsq_one_plus_exp_neg512(x);
    __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    if (v == EXPONENT_ADD) xc = _mm512_min_ps(xc, _mm512_set1_ps(80.0f)); /* keeps 2^n normal */
    __m512 t = _mm512_mul_ps(xc, _mm512_set1_ps(-1.44269504088896341f));
    __m512 f = v == NO_VREDUCEPS ? _mm512_sub_ps(t, _mm512_set1_ps(0.5f))
                                 : _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_set1_ps(0.0018775759963318706f);
    if (v != POLY_DEGREE_3) {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.008989342488348484f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05582631379365921f));
    }
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24015362560749054f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931530833244324f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999999403953552f));
    __m512 e;
    if (v == EXPONENT_ADD) {
        __m512i n = _mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        e = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(n, 23)));
    } else {
        e = v == NO_VSCALEFPS ? _mm512_mul_ps(p, t) : _mm512_scalef_ps(p, t);
    }
    return _mm512_add_ps(_mm512_set1_ps(1.0f), e);
}

static void pass(int v)
{
    const __m512 mult = _mm512_set1_ps(0.01f), add = _mm512_set1_ps(-0.3f), qb = _mm512_set1_ps(-0.2f);
    const __m512 qs = _mm512_set1_ps(0.05f), rqs = _mm512_set1_ps(20.0f), qmax = _mm512_set1_ps(255.0f);
    for (int i = 0; i < NV; i++) {
        __m512 y = _mm512_fmadd_ps(mult, _mm512_cvtepi32_ps(_mm512_load_si512(acc + 16 * i)), add);
        if (v != NO_SWISH) {
            __m512 d = one_plus_exp_neg(y, v);
            y = v == MUL_NOT_DIV ? _mm512_mul_ps(y, d) : _mm512_div_ps(y, d);
        }
        __m512 u = _mm512_sub_ps(y, qb);
        u = v == MUL_NOT_DIV ? _mm512_mul_ps(u, rqs) : _mm512_div_ps(u, qs);
        u = _mm512_min_ps(_mm512_max_ps(u, _mm512_setzero_ps()), qmax);
        __m128i c = _mm512_cvtepi32_epi8(_mm512_cvt_roundps_epi32(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm_store_si128((__m128i *)(out + 16 * i), c);
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void)
{
    for (int i = 0; i < NV * 16; i++) acc[i] = (i * 7919) % 2000 - 1000; /* y over [-10.3, 9.7] */
    unsigned sum = 0;
    for (int v = 0; v < NVARIANTS; v++) {
        double best = 1e9;
        for (int k = 0; k < 50; k++) {
            double t = now();
            pass(v);
            t = now() - t;
            best = t < best ? t : best;
            sum += out[k];
        }
        printf("%-32s %6.3f ns per 16 outputs\n", names[v], 1e9 * best / NV);
    }
    return sum == 1u ? 1 : 0; /* keeps the stores alive */
}
