/* bench_gemm.c - our pointwise-conv GEMM against OpenBLAS's sgemm on efficientnet_b0's shapes at
 * 224x224 (M = pixels, K = input channels, N = output channels), one thread, side by side.
 *
 * Ours computes C = act(A B + bias) in one pass over packed weights; OpenBLAS computes A B only
 * (cblas_sgemm, row-major) and is timed without any epilogue, so the comparison favours OpenBLAS.
 * Prints the median time of each and their ratio per shape, and the totals. The last column is
 * the integer GEMM (uint8 x int8 codes, int32 sums, the same fused float epilogue) that the
 * quantized path will use, against our float GEMM.
 * Usage: build/bench_gemm [REPS]   (make bench runs it) */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "kernels/q8.h"
#include "util.h"

char *openblas_get_corename(void);
void openblas_set_num_threads(int);

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const struct {
    int M, K, N;
    const char *what;
} shapes[] = {
    {12544, 27, 32, "stem (im2col)"}, {12544, 32, 16, "project"},  {12544, 16, 96, "expand"},
    {3136, 96, 24, "project"},        {3136, 24, 144, "expand"},   {3136, 144, 24, "project"},
    {784, 144, 40, "project"},        {784, 40, 240, "expand"},    {784, 240, 40, "project"},
    {196, 240, 80, "project"},        {196, 80, 480, "expand"},    {196, 480, 80, "project"},
    {196, 480, 112, "project"},       {196, 112, 672, "expand"},   {196, 672, 112, "project"},
    {49, 672, 192, "project"},        {49, 192, 1152, "expand"},   {49, 1152, 192, "project"},
    {49, 1152, 320, "project"},       {49, 320, 1280, "head"},
};

int main(int argc, char **argv)
{
    lsq_blas_fixup(argc, argv);
    int reps = argc > 1 ? atoi(argv[1]) : 30;
    if (reps < 3) reps = 3;
    openblas_set_num_threads(1);
    const lsq_kernels *k = lsq_kernels_best();
    printf("# ours: %s kernels (fused bias + swish); OpenBLAS core %s (sgemm only); median of %d\n", k->name,
           openblas_get_corename(), reps);
    const lsq_q8_kernels *q8 = lsq_q8_kernels_best();
    printf("# integer GEMM: %s kernels\n", q8->name);
    printf("%-14s %6s %5s %5s %10s %10s %7s %10s %9s\n", "layer", "M", "K", "N", "ours_us", "blas_us", "ratio", "int8_us",
           "int8/f32");
    double tot_ours = 0, tot_blas = 0, tot_q8 = 0;
    double *t1 = malloc(reps * sizeof(double)), *t2 = malloc(reps * sizeof(double)), *t3 = malloc(reps * sizeof(double));
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s].M, K = shapes[s].K, N = shapes[s].N;
        float *A = lsq_alloc((size_t)M * K * sizeof(float)), *W = lsq_alloc((size_t)K * N * sizeof(float));
        float *Bp = lsq_alloc(lsq_gemm_packed_floats(K, N) * sizeof(float)), *bias = lsq_alloc(N * sizeof(float));
        float *C = lsq_alloc((size_t)M * N * sizeof(float)), *Bt = lsq_alloc((size_t)K * N * sizeof(float));
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)((i * 2654435761u) % 1000) / 1000.f - 0.5f;
        for (size_t i = 0; i < (size_t)K * N; i++) W[i] = (float)((i * 40503u) % 1000) / 1000.f - 0.5f;
        lsq_gemm_pack(W, K, K, N, Bp); /* W is [N][K] */
        for (int n = 0; n < N; n++)
            for (int kk = 0; kk < K; kk++) Bt[(size_t)kk * N + n] = W[(size_t)n * K + kk];
        lsq_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .bias = bias, .C = C, .ldc = N,
                           .act = LSQ_ACT_SWISH};
        uint8_t *Aq = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD);
        int8_t *Wq = lsq_alloc((size_t)K * N), *Bq = lsq_alloc(lsq_q8_packed_bytes(K, N));
        for (size_t i = 0; i < (size_t)M * K; i++) Aq[i] = (uint8_t)(i * 2654435761u >> 24);
        for (size_t i = 0; i < (size_t)K * N; i++) Wq[i] = (int8_t)(i * 40503u >> 8);
        lsq_q8_pack(Wq, K, K, N, Bq);
        lsq_q8_gemm_args qa = {.M = M, .N = N, .K = K, .A = Aq, .lda = K, .B = Bq, .mult = bias, .add = bias, .C = C,
                               .ldc = N, .act = LSQ_ACT_SWISH};
        for (int r = 0; r < reps; r++) {
            double t0 = now_ms();
            k->f32_gemm(&a, 0, M);
            t1[r] = now_ms() - t0;
            t0 = now_ms();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f, A, K, Bt, N, 0.f, C, N);
            t2[r] = now_ms() - t0;
            t0 = now_ms();
            q8->q8_gemm(&qa, 0, M);
            t3[r] = now_ms() - t0;
        }
        qsort(t1, reps, sizeof(double), cmp);
        qsort(t2, reps, sizeof(double), cmp);
        qsort(t3, reps, sizeof(double), cmp);
        double o = t1[reps / 2] * 1e3, b = t2[reps / 2] * 1e3, q = t3[reps / 2] * 1e3;
        tot_ours += o;
        tot_blas += b;
        tot_q8 += q;
        printf("%-14s %6d %5d %5d %10.1f %10.1f %7.3f %10.1f %9.3f\n", shapes[s].what, M, K, N, o, b, o / b, q, q / o);
        lsq_free(Aq), lsq_free(Wq), lsq_free(Bq);
        lsq_free(A), lsq_free(W), lsq_free(Bp), lsq_free(bias), lsq_free(C), lsq_free(Bt);
    }
    printf("%-14s %18s %10.1f %10.1f %7.3f %10.1f %9.3f\n", "total", "", tot_ours, tot_blas, tot_ours / tot_blas,
           tot_q8, tot_q8 / tot_ours);
    free(t1);
    free(t2);
    free(t3);
    return 0;
}
