/* f32_scalar.c - portable C reference kernels (float32). Always built; the SIMD kernels are
 * tested against these. Plain loops in the obvious order: clarity over speed. */
#include <string.h>

#include "kernels.h"

void lsq_gemm_pack(const float *w, int ldw, int K, int N, float *packed)
{
    int npanels = (N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR;
    memset(packed, 0, lsq_gemm_packed_floats(K, N) * sizeof(float));
    for (int p = 0; p < npanels; p++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j < LSQ_GEMM_NR; j++) {
                int n = p * LSQ_GEMM_NR + j;
                if (n < N) packed[((size_t)p * K + k) * LSQ_GEMM_NR + j] = w[(size_t)n * ldw + k];
            }
}

static void f32_gemm__scalar(const lsq_gemm_args *a, int m0, int m1)
{
    for (int m = m0; m < m1; m++) {
        const float *arow = a->A + (size_t)m * a->lda;
        for (int n = 0; n < a->N; n++) {
            const float *b = a->B + (size_t)(n / LSQ_GEMM_NR) * a->K * LSQ_GEMM_NR + n % LSQ_GEMM_NR;
            float acc = 0.f;
            for (int k = 0; k < a->K; k++) acc += arow[k] * b[(size_t)k * LSQ_GEMM_NR];
            float y = lsq_act_apply(a->act, acc + a->bias[n]);
            if (a->R) y += a->R[(size_t)m * a->ldr + n];
            a->C[(size_t)m * a->ldc + n] = y;
        }
    }
}

static void f32_dwconv__scalar(const lsq_dw_args *a, int oy0, int oy1, float *chsum)
{
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < a->OW; ox++)
            for (int c = 0; c < a->nc; c++) {
                float acc = 0.f;
                for (int ky = 0; ky < a->k; ky++) {
                    int iy = oy * a->stride - a->pad_t + ky;
                    if (iy < 0 || iy >= a->H) continue;
                    for (int kx = 0; kx < a->k; kx++) {
                        int ix = ox * a->stride - a->pad_l + kx;
                        if (ix < 0 || ix >= a->W) continue;
                        acc += a->in[((size_t)(iy - a->row0) * a->W + ix) * a->C + a->c0 + c] * a->w[(ky * a->k + kx) * a->nc + c];
                    }
                }
                float y = lsq_act_apply(a->act, acc + a->bias[c]);
                a->out[((size_t)oy * a->OW + ox) * a->C + a->c0 + c] = y;
                if (chsum) chsum[(size_t)oy * a->C + c] += y;
            }
}

const lsq_kernels lsq_kernels_scalar = {
    .name = "scalar",
    .f32_gemm = f32_gemm__scalar,
    .f32_dwconv = f32_dwconv__scalar,
};
