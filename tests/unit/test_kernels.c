/* test_kernels.c - every SIMD kernel level against the portable C reference, on shapes that hit
 * the tails: M not a multiple of the row tile, N not a multiple of 16 or 32, channel blocks with
 * masks, every depthwise kernel size 3..11, strides 1 and 2, PyTorch and TF-SAME padding, tiny
 * images where every pixel is a border pixel. Also the thread pool's work split. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "threadpool.h"
#include "util.h"
#include "unit.h"

static uint64_t rng_state = 12345;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xFFFFFF) / (float)(1 << 23) - 1.f;
}

static float *rand_buf(size_t n)
{
    float *p = lsq_alloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* |a - b| <= tol * (1 + |b|) elementwise; prints the first mismatch */
static int close_all(const float *a, const float *b, size_t n, float tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= tol * (1.f + fabsf(b[i])))) {
            printf("#   %s: index %zu: got %.8g, reference %.8g\n", what, i, a[i], b[i]);
            return 0;
        }
    return 1;
}

static const lsq_kernels *levels[4];
static int nlevels;

static void find_levels(void)
{
    for (int isa = LSQ_ISA_AVX2; isa <= LSQ_ISA_AVX512; isa++) {
        const lsq_kernels *k = lsq_kernels_for((lsq_isa)isa);
        if (k && k != &lsq_kernels_scalar) levels[nlevels++] = k;
    }
    printf("# levels under test:");
    for (int i = 0; i < nlevels; i++) printf(" %s", levels[i]->name);
    printf(" (vs scalar)\n");
}

static void check_gemm(int M, int N, int K, int lda, lsq_act act, int with_res)
{
    float *A = rand_buf((size_t)M * lda), *W = rand_buf((size_t)N * K), *bias = rand_buf((size_t)N);
    float *R = with_res ? rand_buf((size_t)M * N) : NULL;
    float *B = lsq_alloc(lsq_gemm_packed_floats(K, N) * sizeof(float));
    float *Cref = lsq_alloc((size_t)M * N * sizeof(float)), *C = lsq_alloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] *= 3.f / sqrtf((float)K); /* keep outputs O(1..3) */
    lsq_gemm_pack(W, K, K, N, B);
    lsq_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = lda, .B = B, .bias = bias, .C = Cref, .ldc = N,
                       .R = R, .ldr = N, .act = act};
    lsq_kernels_scalar.f32_gemm(&a, 0, M);
    for (int l = 0; l < nlevels; l++) {
        memset(C, 0xff, (size_t)M * N * sizeof(float)); /* NaN: catches unwritten outputs */
        a.C = C;
        /* split the rows in two calls, as threads do */
        levels[l]->f32_gemm(&a, 0, M / 3);
        levels[l]->f32_gemm(&a, M / 3, M);
        char what[128];
        snprintf(what, sizeof what, "%s gemm M=%d N=%d K=%d act=%d res=%d", levels[l]->name, M, N, K, act, with_res);
        CHECK(close_all(C, Cref, (size_t)M * N, 2e-5f, what));
    }
    lsq_free(A), lsq_free(W), lsq_free(bias), lsq_free(R), lsq_free(B), lsq_free(Cref), lsq_free(C);
}

static void test_gemm_shapes(void)
{
    /* row tiles: AVX2 6, 4, 2, 1; AVX-512 12, 4, 1 */
    static const int Ms[] = {1, 3, 4, 11, 12, 13, 49, 100};
    /* AVX2 columns in vectors of 8 (half panels of 16), AVX-512 in 16, panels of 32 */
    static const int Ns[] = {1, 8, 9, 16, 17, 24, 32, 33, 40, 57, 96, 100};
    static const int Ks[] = {1, 3, 16, 27, 97, 320};
    for (size_t i = 0; i < LSQ_ARRAY_LEN(Ms); i++)
        for (size_t j = 0; j < LSQ_ARRAY_LEN(Ns); j++)
            for (size_t k = 0; k < LSQ_ARRAY_LEN(Ks); k++)
                check_gemm(Ms[i], Ns[j], Ks[k], Ks[k] + (int)(i % 3), (lsq_act)((i + j + k) % 4), (int)((i + k) & 1));
}

static void test_gemm_activations(void)
{
    for (int act = LSQ_ACT_NONE; act <= LSQ_ACT_SIGMOID; act++) check_gemm(37, 70, 40, 40, (lsq_act)act, 0);
    /* saturating inputs: swish/sigmoid far out on both sides must not give inf or NaN */
    float A[16 * 2], W[2 * 16], bias[16] = {0};
    for (int i = 0; i < 32; i++) A[i] = (i % 2 ? 1.f : -1.f) * (float)(i * 7);
    for (int i = 0; i < 32; i++) W[i] = (i % 3) - 1.f;
    float *B = lsq_alloc(lsq_gemm_packed_floats(2, 16) * sizeof(float));
    lsq_gemm_pack(W, 2, 2, 16, B);
    for (int act = LSQ_ACT_SWISH; act <= LSQ_ACT_SIGMOID; act++) {
        float ref[16 * 16], out[16 * 16];
        lsq_gemm_args a = {.M = 16, .N = 16, .K = 2, .A = A, .lda = 2, .B = B, .bias = bias, .C = ref, .ldc = 16,
                           .act = (lsq_act)act};
        lsq_kernels_scalar.f32_gemm(&a, 0, 16);
        for (int l = 0; l < nlevels; l++) {
            a.C = out;
            levels[l]->f32_gemm(&a, 0, 16);
            for (int i = 0; i < 256; i++) CHECK(isfinite(out[i]));
            CHECK(close_all(out, ref, 256, 1e-5f, "saturating activation"));
        }
    }
    lsq_free(B);
}

/* The SIMD levels share one Swish/sigmoid approximation (math__avx2.h computes math__avx512.h's
 * bit for bit), so on a K = 1 GEMM, where the sums are exact, they must agree exactly with each
 * other over the whole range, saturation included, and stay within 1e-5 of expf. */
static void test_simd_activations_identical(void)
{
    enum { M = 1000, N = 24 };
    float *A = lsq_alloc(M * sizeof(float)), *W = lsq_alloc(N * sizeof(float)), *bias = lsq_alloc(N * sizeof(float));
    float *B = lsq_alloc(lsq_gemm_packed_floats(1, N) * sizeof(float));
    float *ref = lsq_alloc(M * N * sizeof(float)), *first = lsq_alloc(M * N * sizeof(float));
    float *out = lsq_alloc(M * N * sizeof(float));
    for (int m = 0; m < M; m++) A[m] = -120.f + 0.24f * (float)m;
    for (int n = 0; n < N; n++) W[n] = 1.f, bias[n] = 0.01f * (float)n; /* x = A + bias: every 0.01 */
    lsq_gemm_pack(W, 1, 1, N, B);
    for (int act = LSQ_ACT_SWISH; act <= LSQ_ACT_SIGMOID; act++) {
        lsq_gemm_args a = {.M = M, .N = N, .K = 1, .A = A, .lda = 1, .B = B, .bias = bias, .C = ref, .ldc = N,
                           .act = (lsq_act)act};
        lsq_kernels_scalar.f32_gemm(&a, 0, M);
        for (int l = 0; l < nlevels; l++) {
            a.C = l ? out : first;
            levels[l]->f32_gemm(&a, 0, M);
            CHECK(close_all(a.C, ref, M * N, 1e-5f, levels[l]->name));
            if (l && memcmp(out, first, M * N * sizeof(float))) {
                printf("#   %s and %s activations differ\n", levels[l]->name, levels[0]->name);
                CHECK(0);
            }
        }
    }
    lsq_free(A), lsq_free(W), lsq_free(bias), lsq_free(B), lsq_free(ref), lsq_free(first), lsq_free(out);
}

static void check_dw(int H, int W, int C, int c0, int nc, int k, int stride, int tf_same, lsq_act act)
{
    int OH, OW, pt, pl;
    arch_conv_geometry(tf_same, H, k, stride, &OH, &pt);
    arch_conv_geometry(tf_same, W, k, stride, &OW, &pl);
    float *in = rand_buf((size_t)H * W * C), *w = rand_buf((size_t)k * k * nc), *bias = rand_buf((size_t)nc);
    float *ref = lsq_alloc((size_t)OH * OW * C * sizeof(float)), *out = lsq_alloc((size_t)OH * OW * C * sizeof(float));
    /* channel sums per output row: row oy's at [oy * C, oy * C + nc) (the caller offsets by c0) */
    const size_t nsum = (size_t)OH * C;
    float *sref = lsq_alloc(nsum * sizeof(float)), *sum = lsq_alloc(nsum * sizeof(float));
    memset(sref, 0, nsum * sizeof(float));
    lsq_dw_args a = {.in = in, .H = H, .W = W, .C = C, .c0 = c0, .nc = nc, .k = k, .stride = stride, .pad_t = pt,
                     .pad_l = pl, .w = w, .bias = bias, .out = ref, .OH = OH, .OW = OW, .act = act};
    lsq_kernels_scalar.f32_dwconv(&a, 0, OH, sref);
    for (int oy = 0; oy < OH; oy++) /* each row's sums are its outputs' sums */
        for (int c = 0; c < nc; c++) {
            double s = 0;
            for (int ox = 0; ox < OW; ox++) s += ref[((size_t)oy * OW + ox) * C + c0 + c];
            CHECK(fabs(sref[(size_t)oy * C + c] - s) <= 1e-4 * (1 + fabs(s)));
        }
    for (int l = 0; l < nlevels; l++) {
        /* channels outside [c0, c0 + nc) must stay untouched: fill both with the same pattern */
        memcpy(out, ref, (size_t)OH * OW * C * sizeof(float));
        for (int p = 0; p < OH * OW; p++)
            for (int c = c0; c < c0 + nc; c++) out[(size_t)p * C + c] = NAN;
        memset(sum, 0, nsum * sizeof(float));
        a.out = out;
        levels[l]->f32_dwconv(&a, 0, OH / 2, sum);
        levels[l]->f32_dwconv(&a, OH / 2, OH, sum);
        a.out = ref;
        char what[160];
        snprintf(what, sizeof what, "%s dw %dx%dx%d c0=%d nc=%d k=%d s=%d tf=%d act=%d", levels[l]->name, H, W, C, c0,
                 nc, k, stride, tf_same, act);
        CHECK(close_all(out, ref, (size_t)OH * OW * C, 2e-5f, what));
        CHECK(close_all(sum, sref, nsum, 1e-4f, what));
    }
    lsq_free(in), lsq_free(w), lsq_free(bias), lsq_free(ref), lsq_free(out), lsq_free(sref), lsq_free(sum);
}

static void test_dw_all_kernels(void)
{
    for (int k = 3; k <= 11; k += 2)
        for (int s = 1; s <= 2; s++)
            for (int tf = 0; tf <= 1; tf++) {
                check_dw(17, 23, 48, 0, 48, k, s, tf, LSQ_ACT_SWISH);
                check_dw(14, 14, 90, 30, 27, k, s, tf, LSQ_ACT_RELU);  /* a middle split with a tail mask */
            }
}

static void test_dw_tiny_images(void)
{
    /* every pixel is a border pixel; kernels larger than the image */
    for (int k = 3; k <= 11; k += 2)
        for (int hw = 1; hw <= 4; hw++) {
            check_dw(hw, hw, 20, 0, 20, k, 1, 0, LSQ_ACT_NONE);
            check_dw(hw, hw + 1, 20, 4, 16, k, 2, 1, LSQ_ACT_SWISH);
        }
}

static void test_dw_wide_rows(void)
{
    check_dw(9, 112, 32, 0, 32, 3, 1, 0, LSQ_ACT_SWISH);
    check_dw(8, 113, 96, 0, 96, 3, 2, 0, LSQ_ACT_SWISH);
    check_dw(8, 113, 96, 0, 96, 3, 2, 1, LSQ_ACT_SWISH);
}

/* A band of input rows (row0 > 0), as the fused expand + depthwise path passes: output rows
 * [o0, o1) from a buffer that holds only the input rows they need must match the whole-tensor run. */
static void check_dw_band(int H, int W, int C, int k, int stride, int tf_same, int o0, int o1)
{
    int OH, OW, pt, pl;
    arch_conv_geometry(tf_same, H, k, stride, &OH, &pt);
    arch_conv_geometry(tf_same, W, k, stride, &OW, &pl);
    if (o1 > OH) o1 = OH;
    int lo = o0 * stride - pt, hi = (o1 - 1) * stride - pt + k;
    lo = lo < 0 ? 0 : lo;
    hi = hi > H ? H : hi;
    float *in = rand_buf((size_t)H * W * C), *w = rand_buf((size_t)k * k * C), *bias = rand_buf((size_t)C);
    float *band = lsq_alloc((size_t)(hi - lo) * W * C * sizeof(float));
    memcpy(band, in + (size_t)lo * W * C, (size_t)(hi - lo) * W * C * sizeof(float));
    float *ref = lsq_alloc((size_t)OH * OW * C * sizeof(float)), *out = lsq_alloc((size_t)OH * OW * C * sizeof(float));
    const size_t nsum = (size_t)OH * C; /* per-row channel sums */
    float *sref = lsq_alloc(nsum * sizeof(float)), *sum = lsq_alloc(nsum * sizeof(float));
    memset(sref, 0, nsum * sizeof(float));
    lsq_dw_args a = {.in = in, .H = H, .W = W, .C = C, .c0 = 0, .nc = C, .k = k, .stride = stride, .pad_t = pt,
                     .pad_l = pl, .w = w, .bias = bias, .out = ref, .OH = OH, .OW = OW, .act = LSQ_ACT_SWISH};
    lsq_kernels_scalar.f32_dwconv(&a, o0, o1, sref);
    a.in = band;
    a.row0 = lo;
    for (int l = -1; l < nlevels; l++) {
        const lsq_kernels *kt = l < 0 ? &lsq_kernels_scalar : levels[l];
        memset(sum, 0, nsum * sizeof(float));
        a.out = out;
        kt->f32_dwconv(&a, o0, o1, sum);
        char what[160];
        snprintf(what, sizeof what, "%s dw band %dx%dx%d k=%d s=%d tf=%d rows %d..%d", kt->name, H, W, C, k, stride,
                 tf_same, o0, o1);
        CHECK(close_all(out + (size_t)o0 * OW * C, ref + (size_t)o0 * OW * C, (size_t)(o1 - o0) * OW * C, 2e-5f, what));
        CHECK(close_all(sum, sref, nsum, 1e-4f, what));
    }
    lsq_free(in), lsq_free(w), lsq_free(bias), lsq_free(band), lsq_free(ref), lsq_free(out), lsq_free(sref),
        lsq_free(sum);
}

static void test_dw_band(void)
{
    for (int k = 3; k <= 7; k += 2)
        for (int s = 1; s <= 2; s++) {
            check_dw_band(20, 19, 40, k, s, s - 1, 0, 3);
            check_dw_band(20, 19, 40, k, s, s - 1, 4, 6);
            check_dw_band(20, 19, 40, k, s, 0, 7, 20);
        }
}

/* A pool job whose thread 1 takes three times as long per unit as thread 0 (busy-waiting, so the
 * ratio holds whatever the CPUs): the pool must shift units to thread 0 and still hand out every
 * unit exactly once per job. */
typedef struct {
    int units;
    int hits[400];
    int b1, e1; /* thread 1's part in the last job */
} skew_job;

static void spin_us(double us)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((double)(t.tv_sec - t0.tv_sec) * 1e6 + (double)(t.tv_nsec - t0.tv_nsec) * 1e-3 < us);
}

static void skew_task(void *ctx, int tid, int n)
{
    skew_job *j = ctx;
    int b, e;
    lsq_pool_range(j->units, 1, tid, n, &b, &e);
    for (int i = b; i < e; i++) j->hits[i]++, spin_us(tid == 1 ? 3.0 : 1.0);
    if (tid == 1) j->b1 = b, j->e1 = e;
}

static void test_pool_adaptive(void)
{
    unsetenv("LSQ_POOL_EVEN"); /* the benchmark switch back to even splits */
    lsq_pool *p = lsq_pool_create(2);
    CHECK(p != NULL);
    if (!p) return;
    skew_job j = {.units = 400};
    int jobs = 0, predicted = 0;
    for (; jobs < 60; jobs++) {
        int b, e; /* what placement relies on: the part predicted before a job is the one it gets */
        lsq_pool_next_range(p, j.units, 1, 1, &b, &e);
        lsq_pool_run(p, skew_task, &j);
        predicted += b == j.b1 && e == j.e1;
    }
    CHECK(predicted == jobs);
    for (int i = 0; i < j.units; i++) CHECK(j.hits[i] == jobs);
    double share1 = (double)(j.e1 - j.b1) / j.units; /* 0.25 balances 3x; an even split is 0.5 */
    if (!(share1 < 0.4)) printf("#   thread 1's share after %d jobs: %.3f\n", jobs, share1);
    CHECK(share1 < 0.4 && share1 > 0.1);
    CHECK(j.e1 == j.units); /* the last thread ends the range */
    lsq_pool_free(p);
}

static void test_pool_range(void)
{
    for (int n = 0; n < 50; n++)
        for (int t = 1; t <= 5; t++)
            for (int align = 1; align <= 4; align += 3) {
                int next = 0;
                for (int tid = 0; tid < t; tid++) {
                    int b, e;
                    lsq_pool_range(n, align, tid, t, &b, &e);
                    CHECK(b == next && e >= b && e <= n);
                    CHECK(b % align == 0 || b == n);
                    next = e;
                }
                CHECK(next == n);
            }
}

typedef struct {
    int hits[8];
} pool_ctx;

static void pool_fn(void *ctx, int tid, int n)
{
    pool_ctx *c = ctx;
    if (n == 3 && tid < 8) __atomic_fetch_add(&c->hits[tid], 1, __ATOMIC_RELAXED);
}

static void test_pool_runs_every_thread(void)
{
    lsq_pool *p = lsq_pool_create(3);
    CHECK(p != NULL);
    pool_ctx c = {{0}};
    for (int i = 0; i < 1000; i++) lsq_pool_run(p, pool_fn, &c);
    for (int t = 0; t < 3; t++) CHECK(c.hits[t] == 1000);
    lsq_pool_free(p);
}

int main(void)
{
    find_levels();
    RUN(test_gemm_shapes);
    RUN(test_gemm_activations);
    RUN(test_simd_activations_identical);
    RUN(test_dw_all_kernels);
    RUN(test_dw_tiny_images);
    RUN(test_dw_wide_rows);
    RUN(test_dw_band);
    RUN(test_pool_range);
    RUN(test_pool_adaptive);
    RUN(test_pool_runs_every_thread);
    return unit_done();
}
