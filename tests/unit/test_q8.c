/* test_q8.c - the integer GEMM: every level against the portable C reference (int32 sums must be
 * identical, so outputs are bit-identical except after Swish/sigmoid), and the reference itself
 * against a direct double-precision computation from unpacked codes. */
#include <stdlib.h>
#include <string.h>

#include "kernels/q8.h"
#include "unit.h"
#include "util.h"

static uint32_t seed = 7;
static uint32_t rnd(void) { return seed = seed * 1664525u + 1013904223u; }

static void check(int M, int N, int K, int lda, lsq_act act, int res, int wbits, int abits)
{
    uint8_t *A = lsq_alloc((size_t)M * lda + LSQ_Q8_AREAD_PAD);
    int8_t *W = lsq_alloc((size_t)N * K), *Bp = lsq_alloc(lsq_q8_packed_bytes(K, N));
    float *mult = lsq_alloc(N * 4), *add = lsq_alloc(N * 4), *R = res ? lsq_alloc((size_t)M * N * 4) : NULL;
    float *ref = lsq_alloc((size_t)M * N * 4), *out = lsq_alloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * lda; i++) A[i] = (uint8_t)(rnd() >> 8) & (uint8_t)((1 << abits) - 1);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (int8_t)((int)((rnd() >> 8) % (1u << wbits)) - (1 << (wbits - 1)));
    for (int n = 0; n < N; n++) mult[n] = 1e-3f * (1 + (float)(rnd() % 100) / 50), add[n] = (float)((int)(rnd() % 200) - 100) / 100;
    for (size_t i = 0; R && i < (size_t)M * N; i++) R[i] = (float)(rnd() % 100) / 100;
    lsq_q8_pack(W, K, K, N, Bp);
    lsq_q8_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .B = Bp, .mult = mult, .add = add, .C = ref,
                          .ldc = N, .R = R, .ldr = N, .act = act};
    lsq_q8_kernels_scalar.q8_gemm(&a, 0, M);
    /* the reference against plain arithmetic on the unpacked codes */
    for (int m = 0; m < M; m += 7)
        for (int n = 0; n < N; n++) {
            long acc = 0;
            for (int k = 0; k < K; k++) acc += (long)A[(size_t)m * lda + k] * W[(size_t)n * K + k];
            double y = lsq_act_apply(act, (float)((double)mult[n] * acc + add[n]));
            if (R) y += R[(size_t)m * N + n];
            CHECK(fabs(ref[(size_t)m * N + n] - y) <= 1e-5 * (1 + fabs(y)));
        }
    const lsq_q8_kernels *levels[] = {lsq_q8_kernels_best()};
    for (size_t l = 0; l < 1; l++) {
        if (levels[l] == &lsq_q8_kernels_scalar) continue;
        memset(out, 0xff, (size_t)M * N * 4);
        a.C = out;
        levels[l]->q8_gemm(&a, 0, M / 2);
        levels[l]->q8_gemm(&a, M / 2, M);
        int exact = act == LSQ_ACT_NONE || act == LSQ_ACT_RELU;
        for (size_t i = 0; i < (size_t)M * N; i++) {
            int ok = exact ? out[i] == ref[i] : fabsf(out[i] - ref[i]) <= 1e-5f * (1 + fabsf(ref[i]));
            if (!ok) {
                printf("#   %s M=%d N=%d K=%d act=%d: [%zu] %.9g vs %.9g\n", levels[l]->name, M, N, K, act, i, out[i], ref[i]);
                CHECK(0);
                break;
            }
        }
    }
    lsq_free(A), lsq_free(W), lsq_free(Bp), lsq_free(mult), lsq_free(add), lsq_free(R), lsq_free(ref), lsq_free(out);
}

static void test_q8_gemm_shapes(void)
{
    static const int Ms[] = {1, 5, 12, 13, 49, 100}, Ns[] = {1, 15, 16, 17, 24, 40, 96}, Ks[] = {1, 3, 4, 27, 90, 333};
    int i = 0;
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++, i++)
                check(Ms[a], Ns[b], Ks[c], Ks[c] + i % 3, (lsq_act)(i % 4), i % 2, 2 + i % 7, 2 + (i / 3) % 7);
}

static void test_q8_extremes(void)
{
    /* all codes at their extremes: 255 * -128 * K must not overflow or saturate */
    int M = 13, N = 33, K = 1152;
    uint8_t *A = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD);
    int8_t *W = lsq_alloc((size_t)N * K), *Bp = lsq_alloc(lsq_q8_packed_bytes(K, N));
    float *mult = lsq_alloc(N * 4), *add = lsq_alloc(N * 4), *C = lsq_alloc((size_t)M * N * 4);
    memset(A, 255, (size_t)M * K);
    memset(W, 0x80, (size_t)N * K);
    for (int n = 0; n < N; n++) mult[n] = 1.f, add[n] = 0.f;
    lsq_q8_pack(W, K, K, N, Bp);
    lsq_q8_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .mult = mult, .add = add, .C = C,
                          .ldc = N, .act = LSQ_ACT_NONE};
    lsq_q8_kernels_best()->q8_gemm(&a, 0, M);
    for (int i = 0; i < M * N; i++) CHECK(C[i] == -255.f * 128.f * K);
    lsq_free(A), lsq_free(W), lsq_free(Bp), lsq_free(mult), lsq_free(add), lsq_free(C);
}

int main(void)
{
    printf("# integer kernels: %s (vs scalar)\n", lsq_q8_kernels_best()->name);
    RUN(test_q8_gemm_shapes);
    RUN(test_q8_extremes);
    return unit_done();
}
