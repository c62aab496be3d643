/* bench_levels.c - every kernel level this CPU runs (scalar, avx2, avx2 with AVX-VNNI's integer
 * kernels where the CPU has them, avx512), kernel against kernel,
 * one thread: efficientnet_b0's 20 pointwise-convolution GEMMs at 224 (float; integer with 8-bit
 * and with 4-bit weight codes, which take different AVX2 paths) and 13 depthwise layers of
 * efficientnet_b0 / mixnet at 224 (float, integer), all with Swish. Prints the total of each
 * layer's fastest of REPS runs per level (the scalar level runs once: it is 30-100x slower) and the
 * ratios of each level to the one below. Usage: build/bench_levels [REPS]   (default 7) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arch.h"
#include "kernels/kernels.h"
#include "kernels/q8.h"
#include "util.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

enum { T_GEMM_F32, T_GEMM_W8, T_GEMM_W4, T_DW_F32, T_DW_Q8, T_N };
static const char *const tname[T_N] = {"gemm f32", "gemm int8 w8", "gemm int8 w4", "dw f32", "dw int8"};

static const int gemm_shapes[][3] = { /* M, K, N */
    {12544, 27, 32}, {12544, 32, 16}, {12544, 16, 96}, {3136, 96, 24},  {3136, 24, 144}, {3136, 144, 24},
    {784, 144, 40},  {784, 40, 240},  {784, 240, 40},  {196, 240, 80},  {196, 80, 480},  {196, 480, 80},
    {196, 480, 112}, {196, 112, 672}, {196, 672, 112}, {49, 672, 192},  {49, 192, 1152}, {49, 1152, 192},
    {49, 1152, 320}, {49, 320, 1280},
};
static const int dw_shapes[][4] = { /* H = W, C, k, stride (TF SAME padding) */
    {112, 32, 3, 1}, {112, 96, 3, 2}, {56, 144, 3, 1}, {56, 144, 5, 2}, {28, 240, 5, 1}, {28, 240, 3, 2},
    {14, 480, 3, 1}, {14, 672, 5, 1}, {14, 672, 5, 2}, {7, 1152, 5, 1}, {7, 1152, 3, 1}, {14, 240, 9, 1},
    {7, 480, 11, 1},
};

#define MAX_COLS 4
static double t[MAX_COLS][T_N];

/* total += the fastest of reps runs of call */
#define TIME_BEST(total, reps, call)                                                              \
    do {                                                                                          \
        double best_ = 1e30;                                                                      \
        for (int r_ = 0; r_ < (reps); r_++) {                                                     \
            double t0_ = now_ms();                                                                \
            call;                                                                                 \
            double d_ = now_ms() - t0_;                                                           \
            if (d_ < best_) best_ = d_;                                                           \
        }                                                                                         \
        (total) += best_;                                                                         \
    } while (0)

static void bench_gemm(int l, int reps, const lsq_kernels *f, const lsq_q8_kernels *q)
{
    for (size_t s = 0; s < LSQ_ARRAY_LEN(gemm_shapes); s++) {
        int M = gemm_shapes[s][0], K = gemm_shapes[s][1], N = gemm_shapes[s][2];
        float *A = lsq_alloc((size_t)M * K * 4), *W = lsq_alloc((size_t)N * K * 4), *B = lsq_alloc(lsq_gemm_packed_floats(K, N) * 4);
        float *bias = lsq_alloc(N * 4), *C = lsq_alloc((size_t)M * N * 4);
        uint8_t *Aq = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD), *Q = lsq_alloc((size_t)M * N);
        int8_t *W8 = lsq_alloc((size_t)N * K), *W4 = lsq_alloc((size_t)N * K);
        int8_t *B8 = lsq_alloc(lsq_q8_packed_bytes(K, N)), *B4 = lsq_alloc(lsq_q8_packed_bytes(K, N));
        for (size_t i = 0; i < (size_t)M * K; i++) Aq[i] = (uint8_t)(i * 2654435761u >> 24), A[i] = 0.01f * Aq[i];
        for (size_t i = 0; i < (size_t)N * K; i++)
            W8[i] = (int8_t)(i * 40503u >> 8), W4[i] = (int8_t)((W8[i] & 15) - 8), W[i] = 0.01f * W4[i];
        for (int n = 0; n < N; n++) bias[n] = 1e-3f * (float)(n % 7);
        lsq_gemm_pack(W, K, K, N, B);
        lsq_q8_pack(W8, K, K, N, B8);
        lsq_q8_pack(W4, K, K, N, B4);
        lsq_gemm_args fa = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = B, .bias = bias, .C = C, .ldc = N,
                            .act = LSQ_ACT_SWISH};
        lsq_q8_gemm_args qa = {.M = M, .N = N, .K = K, .A = Aq, .lda = K, .B = B8, .mult = bias, .add = bias, .Q = Q,
                               .ldq = N, .q = {.scale = 0.1f, .qmax = 255}, .act = LSQ_ACT_SWISH};
        TIME_BEST(t[l][T_GEMM_F32], reps, f->f32_gemm(&fa, 0, M));
        TIME_BEST(t[l][T_GEMM_W8], reps, q->q8_gemm(&qa, 0, M));
        qa.B = B4;
        TIME_BEST(t[l][T_GEMM_W4], reps, q->q8_gemm(&qa, 0, M));
        lsq_free(A), lsq_free(W), lsq_free(B), lsq_free(bias), lsq_free(C), lsq_free(Aq), lsq_free(Q), lsq_free(W8),
            lsq_free(W4), lsq_free(B8), lsq_free(B4);
    }
}

static void bench_dw(int l, int reps, const lsq_kernels *f, const lsq_q8_kernels *q)
{
    for (size_t s = 0; s < LSQ_ARRAY_LEN(dw_shapes); s++) {
        int H = dw_shapes[s][0], C = dw_shapes[s][1], k = dw_shapes[s][2], S = dw_shapes[s][3], OH, pad;
        arch_conv_geometry(1, H, k, S, &OH, &pad);
        float *in = lsq_alloc((size_t)H * H * C * 4), *w = lsq_alloc((size_t)k * k * C * 4), *v = lsq_alloc(C * 4);
        float *out = lsq_alloc((size_t)OH * OH * C * 4), *chsum = lsq_alloc(C * 4);
        uint8_t *qin = lsq_alloc((size_t)H * H * C), *Q = lsq_alloc((size_t)OH * OH * C);
        int8_t *qw = lsq_alloc((size_t)k * k * C);
        for (size_t i = 0; i < (size_t)H * H * C; i++) qin[i] = (uint8_t)(i % 13), in[i] = 0.1f * qin[i];
        for (size_t i = 0; i < (size_t)k * k * C; i++) qw[i] = (int8_t)(i % 9) - 4, w[i] = 0.01f * qw[i];
        for (int c = 0; c < C; c++) v[c] = 1e-3f * (float)(c % 5);
        lsq_dw_args fa = {.in = in, .H = H, .W = H, .C = C, .nc = C, .k = k, .stride = S, .pad_t = pad, .pad_l = pad,
                          .w = w, .bias = v, .out = out, .OH = OH, .OW = OH, .act = LSQ_ACT_SWISH};
        lsq_q8_dw_args qa = {.in = qin, .H = H, .W = H, .C = C, .nc = C, .k = k, .stride = S, .pad_t = pad,
                             .pad_l = pad, .w = qw, .mult = v, .add = v, .bias = v, .coef = v, .Q = Q,
                             .q = {.scale = 0.1f, .qmax = 15}, .OH = OH, .OW = OH, .act = LSQ_ACT_SWISH};
        TIME_BEST(t[l][T_DW_F32], reps, f->f32_dwconv(&fa, 0, OH, chsum));
        TIME_BEST(t[l][T_DW_Q8], reps, q->q8_dwconv(&qa, 0, OH, NULL));
        lsq_free(in), lsq_free(w), lsq_free(v), lsq_free(out), lsq_free(chsum), lsq_free(qin), lsq_free(Q), lsq_free(qw);
    }
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    if (reps < 1) reps = 1;
    const lsq_kernels *f[MAX_COLS];
    const lsq_q8_kernels *q[MAX_COLS];
    int nl = 0;
    for (int l = LSQ_ISA_SCALAR; l <= LSQ_ISA_AVX512; l++) {
        const lsq_kernels *fk = lsq_kernels_for((lsq_isa)l);
        if (!fk) break;
        const lsq_q8_kernels *qk = lsq_q8_kernels_for((lsq_isa)l);
        if (!qk) qk = q[nl - 1]; /* AVX-512 without VNNI: the AVX2 integer kernels */
        if (qk == &lsq_q8_kernels_avxvnni) { /* plain AVX2 first, so the VNNI column has its baseline */
            f[nl] = fk, q[nl] = &lsq_q8_kernels_avx2, nl++;
        }
        f[nl] = fk, q[nl] = qk, nl++;
    }
    for (int l = 0; l < nl; l++) {
        bench_gemm(l, l ? reps : 1, f[l], q[l]);
        bench_dw(l, l ? reps : 1, f[l], q[l]);
    }
    printf("# ms per pass over the layers, fastest of %d runs per layer (scalar: 1), one thread\n", reps);
    printf("# columns: float kernels/integer kernels\n");
    char name[MAX_COLS][32];
    for (int l = 0; l < nl; l++) snprintf(name[l], sizeof name[l], "%s/%s", f[l]->name, q[l]->name);
    printf("%-14s", "kernel");
    for (int l = 0; l < nl; l++) printf(" %18s", name[l]);
    for (int l = 1; l < nl; l++) printf("  %s:%s", name[l - 1], name[l]);
    printf("\n");
    for (int k = 0; k < T_N; k++) {
        printf("%-14s", tname[k]);
        for (int l = 0; l < nl; l++) printf(" %18.2f", t[l][k]);
        for (int l = 1; l < nl; l++) printf("  %*.2f", (int)(strlen(name[l - 1]) + strlen(name[l]) + 1), t[l - 1][k] / t[l][k]);
        printf("\n");
    }
    return 0;
}
