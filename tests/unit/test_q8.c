/* test_q8.c - the integer kernels: every level this CPU runs (AVX2, AVX-512 VNNI) against the
 * portable C reference (int32 sums must be identical, so outputs are bit-identical except after
 * Swish/sigmoid), and the reference itself against a direct computation from unpacked codes. */
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "kernels/q8.h"
#include "unit.h"
#include "util.h"

static uint32_t seed = 7;
static uint32_t rnd(void) { return seed = seed * 1664525u + 1013904223u; }

/* The SIMD levels under test (not scalar, the reference). */
static const lsq_q8_kernels *levels[4];
static int nlevels;

static void find_levels(void)
{
    if (lsq_cpu_isa() >= LSQ_ISA_AVX2) levels[nlevels++] = &lsq_q8_kernels_avx2; /* also under avxvnni */
    for (int isa = LSQ_ISA_AVX2; isa <= LSQ_ISA_AVX512; isa++) {
        const lsq_q8_kernels *k = lsq_q8_kernels_for((lsq_isa)isa);
        if (k && k != &lsq_q8_kernels_scalar && k != &lsq_q8_kernels_avx2) levels[nlevels++] = k;
    }
    printf("# integer levels under test:");
    for (int i = 0; i < nlevels; i++) printf(" %s", levels[i]->name);
    printf(" (vs scalar); best: %s\n", lsq_q8_kernels_best()->name);
}

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
    for (int l = 0; l < nlevels; l++) {
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
    /* row tiles of 12 (VNNI) and 6, 4, 2, 1 (AVX2); column groups of 8 and 16; K groups of 4 */
    static const int Ms[] = {1, 3, 5, 12, 13, 49, 100}, Ns[] = {1, 7, 9, 15, 16, 17, 24, 40, 96},
                     Ks[] = {1, 3, 4, 27, 90, 333};
    int i = 0;
    for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
        for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++, i++)
                check(Ms[a], Ns[b], Ks[c], Ks[c] + i % 3, (lsq_act)(i % 4), i % 2, 2 + i % 7, 2 + (i / 3) % 7);
}

static void test_q8_extremes(void)
{
    /* all codes at their extremes: 255 * -128 * K must not overflow or saturate; and the weights
     * on either side of [-64, 63], where AVX2 switches from 16-bit pair sums (vpmaddubsw,
     * 2 * 255 * 64 = 32640 fits) to widened operands (2 * 255 * 65 = 33150 would saturate) */
    static const int wcodes[] = {-128, -65, -64, 63, 64, 127};
    int M = 13, N = 33, K = 1152;
    uint8_t *A = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD);
    int8_t *W = lsq_alloc((size_t)N * K), *Bp = lsq_alloc(lsq_q8_packed_bytes(K, N));
    float *mult = lsq_alloc(N * 4), *add = lsq_alloc(N * 4), *C = lsq_alloc((size_t)M * N * 4);
    memset(A, 255, (size_t)M * K);
    for (int n = 0; n < N; n++) mult[n] = 1.f, add[n] = 0.f;
    for (size_t w = 0; w < sizeof wcodes / sizeof *wcodes; w++) {
        memset(W, wcodes[w], (size_t)N * K);
        lsq_q8_pack(W, K, K, N, Bp);
        lsq_q8_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .mult = mult, .add = add, .C = C,
                              .ldc = N, .act = LSQ_ACT_NONE};
        for (int l = -1; l < nlevels; l++) {
            const lsq_q8_kernels *kt = l < 0 ? &lsq_q8_kernels_scalar : levels[l];
            memset(C, 0, (size_t)M * N * 4);
            kt->q8_gemm(&a, 0, M);
            int bad = 0;
            for (int i = 0; i < M * N; i++) bad += C[i] != 255.f * (float)wcodes[w] * K;
            if (bad) printf("#   %s extremes, weights %d: %d wrong sums\n", kt->name, wcodes[w], bad);
            CHECK(!bad);
        }
    }
    lsq_free(A), lsq_free(W), lsq_free(Bp), lsq_free(mult), lsq_free(add), lsq_free(C);
}

/* Fused requantization and the integer bias: codes against a direct computation, then every level
 * against the scalar kernel (identical codes without Swish; with it, at most one code apart), and
 * every level's codes against the division form (lsq_q8_code) of its own float outputs, bit for
 * bit: the epilogues compute codes by faster forms and must still give exactly these. One case in
 * four puts half of the values exactly on rounding ties; one in five has an offset outside the
 * fused-Swish bounds (q8__avx512vnni.c). */
static void test_q8_gemm_requant(void)
{
    for (int t = 0; t < 24; t++) {
        int M = 1 + (int)(rnd() % 40), N = 1 + (int)(rnd() % 70), K = 1 + (int)(rnd() % 200);
        lsq_act act = (lsq_act)(t % 3);
        uint8_t *A = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD), *Q = lsq_alloc((size_t)M * N), *Q2 = lsq_alloc((size_t)M * N);
        int8_t *W = lsq_alloc((size_t)N * K), *Bp = lsq_alloc(lsq_q8_packed_bytes(K, N));
        float *mult = lsq_alloc(N * 4), *add = lsq_alloc(N * 4), *Cf = lsq_alloc((size_t)M * N * 4);
        const int ties = t % 4 == 3; /* y = s/2 acc, u = (y - s/2) / s = (acc - 1) / 2, s = 61/1024: y * (1/s) rounds 121 of 256 such ties the other way */
        int32_t *ib = lsq_alloc(N * 4);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (uint8_t)(rnd() >> 9);
        for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (int8_t)(rnd() >> 9);
        for (int n = 0; n < N; n++)
            mult[n] = 1e-4f * (1 + (float)(rnd() % 100)), add[n] = (float)((int)(rnd() % 200) - 100) / 50,
            ib[n] = (int32_t)(rnd() % 20001) - 10000;
        if (ties) {
            for (int n = 0; n < N; n++) mult[n] = 61.f / 2048, add[n] = 0, ib[n] = (int32_t)(rnd() % 201) - 100;
            for (size_t i = 0; i < (size_t)M * K; i++) A[i] &= 3;
            for (size_t i = 0; i < (size_t)N * K; i++) W[i] %= 2;
        }
        lsq_q8_pack(W, K, K, N, Bp);
        const lsq_q8_requant q = ties ? (lsq_q8_requant){.scale = 61.f / 1024, .offset = 61.f / 2048, .qmax = 255}
                                      : (lsq_q8_requant){.scale = 0.05f, .offset = t % 5 == 4 ? -5.f : -0.3f, .qmax = t % 2 ? 255 : 15};
        lsq_q8_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .ibias = ib, .mult = mult, .add = add,
                              .Q = Q, .ldq = N, .q = q, .act = act};
        lsq_q8_kernels_scalar.q8_gemm(&a, 0, M);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                int32_t acc = ib[n];
                for (int k = 0; k < K; k++) acc += A[(size_t)m * K + k] * W[(size_t)n * K + k];
                float y = lsq_act_apply(act, fmaf(mult[n], (float)acc, add[n]));
                CHECK(Q[(size_t)m * N + n] == lsq_q8_code(&a.q, y));
            }
        a.Q = Q2;
        for (int l = 0; l < nlevels; l++) {
            memset(Q2, 0xAA, (size_t)M * N);
            levels[l]->q8_gemm(&a, 0, M / 3);
            levels[l]->q8_gemm(&a, M / 3, M);
            for (size_t i = 0; i < (size_t)M * N; i++)
                if (act == LSQ_ACT_SWISH ? abs(Q[i] - Q2[i]) > 1 : Q[i] != Q2[i]) {
                    printf("#   %s requant M=%d N=%d K=%d act=%d: [%zu] %d vs %d\n", levels[l]->name, M, N, K, act, i,
                           Q2[i], Q[i]);
                    CHECK(0);
                    break;
                }
            lsq_q8_gemm_args f = a; /* the same level's floats */
            f.Q = NULL, f.C = Cf, f.ldc = N;
            levels[l]->q8_gemm(&f, 0, M);
            int bad = 0;
            for (size_t i = 0; i < (size_t)M * N; i++) bad += Q2[i] != lsq_q8_code(&a.q, Cf[i]);
            if (bad) printf("#   %s requant M=%d N=%d K=%d act=%d ties=%d: %d codes differ from the division form\n",
                            levels[l]->name, M, N, K, act, ties, bad);
            CHECK(!bad);
        }
        lsq_free(A), lsq_free(Q), lsq_free(Q2), lsq_free(W), lsq_free(Bp), lsq_free(mult), lsq_free(add), lsq_free(ib);
        lsq_free(Cf);
    }
}

/* Swish's codes from a million outputs per level and grid, against the division form of the same
 * level's floats: the fused form differs from it by a few ulp, so codes would differ where a value
 * lies that close to a tie - rare, hence the size (a few such lanes per run). */
static void test_q8_swish_codes(void)
{
    const int M = 8192, N = 128, K = 16;
    uint8_t *A = lsq_alloc((size_t)M * K + LSQ_Q8_AREAD_PAD), *Q = lsq_alloc((size_t)M * N);
    int8_t *W = lsq_alloc((size_t)N * K), *Bp = lsq_alloc(lsq_q8_packed_bytes(K, N));
    float *mult = lsq_alloc(N * 4), *add = lsq_alloc(N * 4), *Cf = lsq_alloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (uint8_t)(rnd() >> 24);
    for (size_t i = 0; i < (size_t)N * K; i++) W[i] = (int8_t)(rnd() >> 24);
    for (int n = 0; n < N; n++) mult[n] = 2e-6f * (1 + (float)(rnd() % 100)), add[n] = (float)((int)(rnd() % 200) - 100) / 25;
    lsq_q8_pack(W, K, K, N, Bp);
    static const lsq_q8_requant grids[] = {{.scale = 0.031f, .offset = -0.2785f, .qmax = 255},
                                           {.scale = 0.55f, .offset = -0.31f, .qmax = 15},
                                           {.scale = 1.9f, .offset = -0.25f, .qmax = 3}};
    for (int l = 0; l < nlevels; l++)
        for (size_t g = 0; g < sizeof grids / sizeof *grids; g++) {
            lsq_q8_gemm_args a = {.M = M, .N = N, .K = K, .A = A, .lda = K, .B = Bp, .mult = mult, .add = add,
                                  .Q = Q, .ldq = N, .q = grids[g], .act = LSQ_ACT_SWISH};
            levels[l]->q8_gemm(&a, 0, M);
            a.Q = NULL, a.C = Cf, a.ldc = N;
            levels[l]->q8_gemm(&a, 0, M);
            int bad = 0;
            for (size_t i = 0; i < (size_t)M * N; i++) bad += Q[i] != lsq_q8_code(&grids[g], Cf[i]);
            if (bad) printf("#   %s grid %zu: %d of %d Swish codes differ from the division form\n", levels[l]->name, g, bad, M * N);
            CHECK(!bad);
        }
    lsq_free(A), lsq_free(Q), lsq_free(W), lsq_free(Bp), lsq_free(mult), lsq_free(add), lsq_free(Cf);
}

/* Depthwise: every kernel size 3..11, strides 1 and 2, symmetric and TF-style padding, images
 * smaller than the kernel and wide enough for the interior paths, channel sub-ranges of any width.
 * The scalar kernel against a direct computation of the float model's semantics (offset summed
 * over valid taps), then every level against the scalar kernel: identical float outputs and codes
 * without a transcendental activation (with Swish: floats to 1e-5, codes at most one apart),
 * channel sums up to float reordering. */
static void check_dw(int t, int H, int W, int k, int stride, int tf, lsq_act act)
{
    int C = 8 + (int)(rnd() % 80), c0 = (int)(rnd() % 4), nc = 1 + (int)(rnd() % (unsigned)(C - c0)), OH, OW, pt, pl;
    arch_conv_geometry(tf, H, k, stride, &OH, &pt);
    arch_conv_geometry(tf, W, k, stride, &OW, &pl);
    uint8_t *in = lsq_alloc((size_t)H * W * C), *Q = lsq_alloc((size_t)OH * OW * C), *Q2 = lsq_alloc((size_t)OH * OW * C);
    int8_t *w = lsq_alloc((size_t)k * k * nc);
    float *mult = lsq_alloc(nc * 4), *add = lsq_alloc(nc * 4), *bias = lsq_alloc(nc * 4), *coef = lsq_alloc(nc * 4);
    float *out = lsq_alloc((size_t)OH * OW * C * 4), *out2 = lsq_alloc((size_t)OH * OW * C * 4);
    const size_t nsum = (size_t)OH * C; /* channel sums per output row, row oy's at oy * C */
    float *cs = lsq_alloc(nsum * 4), *cs2 = lsq_alloc(nsum * 4);
    for (size_t i = 0; i < (size_t)H * W * C; i++) in[i] = (uint8_t)(rnd() >> 9);
    for (size_t i = 0; i < (size_t)k * k * nc; i++) w[i] = (int8_t)(rnd() >> 9);
    for (int c = 0; c < nc; c++) {
        int32_t ws = 0;
        for (int j = 0; j < k * k; j++) ws += w[(size_t)j * nc + c];
        mult[c] = 1e-4f * (1 + (float)(rnd() % 100));
        bias[c] = (float)((int)(rnd() % 200) - 100) / 50;
        coef[c] = (float)((int)(rnd() % 200) - 100) / 5000;
        add[c] = bias[c] + coef[c] * (float)ws;
    }
    lsq_q8_dw_args a = {.in = in, .H = H, .W = W, .C = C, .c0 = c0, .nc = nc, .k = k, .stride = stride, .pad_t = pt,
                        .pad_l = pl, .w = w, .mult = mult, .add = add, .bias = bias, .coef = coef, .out = out,
                        .q = {.scale = 0.02f, .offset = -0.5f, .qmax = 255}, .OH = OH, .OW = OW, .act = act};
    memset(out, 0, (size_t)OH * OW * C * 4);
    memset(cs, 0, nsum * 4);
    lsq_q8_kernels_scalar.q8_dwconv(&a, 0, OH, cs);
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++)
            for (int c = 0; c < nc; c++) {
                double acc = 0, ws = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * stride - pt + ky, ix = ox * stride - pl + kx;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                        acc += (double)w[(size_t)(ky * k + kx) * nc + c] * in[((size_t)iy * W + ix) * C + c0 + c];
                        ws += w[(size_t)(ky * k + kx) * nc + c];
                    }
                double y = lsq_act_apply(act, (float)(mult[c] * acc + bias[c] + coef[c] * ws));
                CHECK_NEAR(out[((size_t)oy * OW + ox) * C + c0 + c], y, 1e-4 * (1 + fabs(y)));
            }
    for (int oy = 0; oy < OH; oy++) /* each row's sums are its outputs' sums */
        for (int c = 0; c < nc; c++) {
            double s = 0;
            for (int ox = 0; ox < OW; ox++) s += out[((size_t)oy * OW + ox) * C + c0 + c];
            CHECK(fabs(cs[(size_t)oy * C + c] - s) <= 1e-4 * (1 + fabs(s)));
        }
    a.out = NULL;
    a.Q = Q;
    memset(Q, 0, (size_t)OH * OW * C);
    lsq_q8_kernels_scalar.q8_dwconv(&a, 0, OH, NULL);
    for (int i = 0; i < OH * OW; i++)
        for (int c = 0; c < nc; c++) CHECK(Q[(size_t)i * C + c0 + c] == lsq_q8_code(&a.q, out[(size_t)i * C + c0 + c]));
    const int exact = act == LSQ_ACT_NONE || act == LSQ_ACT_RELU;
    for (int l = 0; l < nlevels; l++) {
        /* outside [c0, c0 + nc) both stay as they were set: 0 */
        memset(out2, 0, (size_t)OH * OW * C * 4);
        memset(cs2, 0, nsum * 4);
        a.Q = NULL;
        a.out = out2;
        levels[l]->q8_dwconv(&a, 0, OH / 2, cs2);
        levels[l]->q8_dwconv(&a, OH / 2, OH, cs2);
        int bad = 0;
        for (size_t i = 0; i < (size_t)OH * OW * C; i++)
            bad += exact ? out2[i] != out[i] : !(fabsf(out2[i] - out[i]) <= 1e-5f * (1 + fabsf(out[i])));
        for (size_t i = 0; i < nsum; i++) bad += !(fabsf(cs2[i] - cs[i]) <= 1e-4f * (1 + fabsf(cs[i])));
        a.out = NULL;
        a.Q = Q2;
        memset(Q2, 0, (size_t)OH * OW * C);
        levels[l]->q8_dwconv(&a, 0, OH, NULL);
        for (size_t i = 0; i < (size_t)OH * OW * C; i++) bad += exact ? Q2[i] != Q[i] : abs(Q2[i] - Q[i]) > 1;
        for (int i = 0; i < OH * OW; i++) /* the division form of this level's own floats, bit for bit */
            for (int c = 0; c < nc; c++) bad += Q2[(size_t)i * C + c0 + c] != lsq_q8_code(&a.q, out2[(size_t)i * C + c0 + c]);
        if (bad) printf("#   %s: %d differences\n", levels[l]->name, bad);
        CHECK(!bad);
    }
    if (unit_cur_failed)
        printf("#   dwconv t=%d k=%d s=%d %dx%d C=%d c0=%d nc=%d tf=%d act=%d\n", t, k, stride, H, W, C, c0, nc, tf, act);
    lsq_free(in), lsq_free(Q), lsq_free(Q2), lsq_free(w), lsq_free(mult), lsq_free(add), lsq_free(bias), lsq_free(coef);
    lsq_free(out), lsq_free(out2), lsq_free(cs), lsq_free(cs2);
}

static void test_q8_dwconv(void)
{
    for (int t = 0; t < 60 && !unit_cur_failed; t++) {
        int k = 3 + 2 * (t % 5), stride = 1 + (t / 5) % 2, H = 1 + (int)(rnd() % 14), W = 1 + (int)(rnd() % 14);
        check_dw(t, H, W, k, stride, t % 3 == 2, (lsq_act)(t % 2)); /* none, relu: exact across levels */
    }
    /* rows wide enough for the four-pixel interior path at every kernel size, and Swish */
    for (int k = 3; k <= 11 && !unit_cur_failed; k += 2)
        for (int s = 1; s <= 2; s++) {
            check_dw(100 + k, 5 + k, 3 * k + 9, k, s, s - 1, LSQ_ACT_RELU);
            check_dw(200 + k, k + 2, 2 * k + 5, k, s, 2 - s, LSQ_ACT_SWISH);
        }
}

/* Quantize (with and without an SE gate, unsigned and the input's signed grid): identical codes on
 * every level, ties rounded to even; rows of 37 (vector tails), 8 and 3 values. */
static void check_quantize(int M, int C)
{
    float *x = lsq_alloc((size_t)M * C * 4), *gate = lsq_alloc(C * 4);
    uint8_t *Q = lsq_alloc((size_t)M * C), *Q2 = lsq_alloc((size_t)M * C);
    for (int i = 0; i < M * C; i++) x[i] = (float)((int)(rnd() % 4000) - 1000) / 100;
    x[0] = 0.25f, x[1] = 0.75f, x[2] = 1.25f; /* (x - offset) / scale = 2.5, 3.5, 4.5 exactly */
    for (int c = 0; c < C; c++) gate[c] = (float)(rnd() % 1000) / 1000;
    lsq_q8_quant_args a = {.x = x, .M = M, .C = C, .Q = Q, .q = {.scale = 0.5f, .offset = -1.0f, .qmax = 15}};
    for (int g = 0; g < 3; g++) {
        a.gate = g == 1 ? gate : NULL;
        if (g == 2) a.q = (lsq_q8_requant){.scale = 0.05f, .offset = 0.1f, .qmin = -128, .qmax = 127}; /* the input's grid */
        a.Q = Q;
        lsq_q8_kernels_scalar.q8_quantize(&a, 0, M);
        if (!g) CHECK(Q[0] == 2 && Q[1] == 4 && Q[2] == 4);
        for (int i = 0; i < M * C && g < 2; i++) CHECK(Q[i] <= 15);
        for (int i = 0; i < M * C && g == 2; i++) CHECK(Q[i] == lsq_q8_code(&a.q, x[i]));
        if (g == 2) CHECK(Q[0] == 128 + 3); /* (0.25 - 0.1) / 0.05 = 3 */
        for (int l = 0; l < nlevels; l++) {
            memset(Q2, 0xAA, (size_t)M * C);
            a.Q = Q2;
            levels[l]->q8_quantize(&a, 0, 2);
            levels[l]->q8_quantize(&a, 2, M);
            if (memcmp(Q, Q2, (size_t)M * C)) printf("#   %s quantize M=%d C=%d g=%d differs\n", levels[l]->name, M, C, g);
            CHECK(memcmp(Q, Q2, (size_t)M * C) == 0);
        }
    }
    lsq_free(x), lsq_free(gate), lsq_free(Q), lsq_free(Q2);
}

/* The network input in one pass (q8_quantize_hwc3, where a level has it): codes of 3 planes
 * interleaved to pixels, equal to the scalar quantizer's codes plane by plane; n with a vector
 * tail, split into two calls; bytes past the last pixel untouched. */
static void check_quantize_hwc3(int n)
{
    float *x = lsq_alloc((size_t)3 * n * 4);
    uint8_t *planes = lsq_alloc((size_t)3 * n), *out = lsq_alloc((size_t)3 * n + 64);
    for (int i = 0; i < 3 * n; i++) x[i] = (float)((int)(rnd() % 4000) - 2000) / 300;
    x[0] = 0.25f, x[n] = -0.075f; /* (x - offset) / scale = 3 and -3.5 (ties to even: -4) */
    const lsq_q8_requant q = {.scale = 0.05f, .offset = 0.1f, .qmin = -128, .qmax = 127};
    lsq_q8_quant_args a = {.x = x, .M = 3, .C = n, .Q = planes, .q = q};
    lsq_q8_kernels_scalar.q8_quantize(&a, 0, 3);
    CHECK(planes[0] == 128 + 3 && planes[n] == 128 - 4);
    for (int l = -1; l < nlevels; l++) {
        const lsq_q8_kernels *k = l < 0 ? &lsq_q8_kernels_scalar : levels[l];
        if (!k->q8_quantize_hwc3) continue;
        memset(out, 0xAA, (size_t)3 * n + 64);
        k->q8_quantize_hwc3(x, n, &q, out, 0, n / 3);
        k->q8_quantize_hwc3(x, n, &q, out, n / 3, n);
        int same = 1;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) same &= out[3 * i + c] == planes[(size_t)c * n + i];
        for (int i = 3 * n; i < 3 * n + 64; i++) same &= out[i] == 0xAA;
        if (!same) printf("#   %s quantize_hwc3 n=%d differs\n", k->name, n);
        CHECK(same);
    }
    lsq_free(x), lsq_free(planes), lsq_free(out);
}

static void test_q8_quantize(void)
{
    check_quantize_hwc3(1000);
    check_quantize_hwc3(37);
    check_quantize_hwc3(16);
    check_quantize(7, 37);
    check_quantize(5, 8);
    check_quantize(4, 3);
}

int main(void)
{
    find_levels();
    RUN(test_q8_gemm_shapes);
    RUN(test_q8_extremes);
    RUN(test_q8_gemm_requant);
    RUN(test_q8_swish_codes);
    RUN(test_q8_dwconv);
    RUN(test_q8_quantize);
    return unit_done();
}
