/* test_gemm_blas.c - OpenBLAS is the reference BLAS: every kernel level's GEMM (with its fused
 * bias and activation) against cblas_sgemm followed by the same epilogue in plain C, on
 * efficientnet_b0's pointwise shapes (cut to fewer rows) and on awkward ones. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "unit.h"
#include "util.h"

static void check(const lsq_kernels *k, int M, int K, int N, lsq_act act)
{
    float *A = lsq_alloc((size_t)M * K * sizeof(float)), *W = lsq_alloc((size_t)N * K * sizeof(float));
    float *Wt = lsq_alloc((size_t)N * K * sizeof(float)), *Bp = lsq_alloc(lsq_gemm_packed_floats(K, N) * sizeof(float));
    float *bias = lsq_alloc((size_t)N * sizeof(float)), *C = lsq_alloc((size_t)M * N * sizeof(float));
    float *R = lsq_alloc((size_t)M * N * sizeof(float));
    srand(M * 31 + K * 7 + N);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)rand() / RAND_MAX - 0.5f;
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = ((float)rand() / RAND_MAX - 0.5f) * 2.f / sqrtf((float)K);
    for (int n = 0; n < N; n++) bias[n] = (float)rand() / RAND_MAX - 0.5f;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < K; i++) Wt[(size_t)i * N + n] = W[(size_t)n * K + i];
    lsq_gemm_pack(W, K, K, N, Bp);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, A, K, Wt, N, 0.f, R, N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) R[(size_t)m * N + n] = lsq_act_apply(act, R[(size_t)m * N + n] + bias[n]);
    lsq_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .bias = bias, .C = C, .ldc = N, .act = act};
    k->f32_gemm(&a, 0, M);
    double worst = 0;
    for (size_t i = 0; i < (size_t)M * N; i++) {
        double d = fabs(C[i] - R[i]) / (1.0 + fabs(R[i]));
        if (!(d <= worst)) worst = d;
    }
    if (!(worst <= 1e-5)) printf("#   %s M=%d K=%d N=%d act=%d: worst relative error %g\n", k->name, M, K, N, act, worst);
    CHECK(worst <= 1e-5);
    lsq_free(A), lsq_free(W), lsq_free(Wt), lsq_free(Bp), lsq_free(bias), lsq_free(C), lsq_free(R);
}

static void test_against_openblas(void)
{
    static const int shapes[][3] = {{256, 27, 32},  {256, 16, 96},   {200, 144, 24}, {196, 480, 112}, {49, 1152, 320},
                                    {49, 320, 1280}, {1, 1280, 1000}, {13, 7, 5},     {3, 200, 33}};
    for (int isa = LSQ_ISA_SCALAR; isa <= LSQ_ISA_AVX512; isa++) {
        const lsq_kernels *k = lsq_kernels_for((lsq_isa)isa);
        if (!k) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int act = LSQ_ACT_NONE; act <= LSQ_ACT_SIGMOID; act++)
                check(k, shapes[s][0], shapes[s][1], shapes[s][2], (lsq_act)act);
    }
}

int main(void)
{
    RUN(test_against_openblas);
    return unit_done();
}
