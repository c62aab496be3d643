/* q8__scalar.c - portable C reference for the integer kernels (always built). */
#include <math.h>
#include <string.h>

#include "q8.h"

void lsq_q8_pack(const int8_t *w, int ldw, int K, int N, int8_t *packed)
{
    int K4 = (K + 3) / 4, npanels = (N + LSQ_Q8_NR - 1) / LSQ_Q8_NR;
    memset(packed, 0, lsq_q8_packed_bytes(K, N));
    for (int p = 0; p < npanels; p++)
        for (int g = 0; g < K4; g++)
            for (int j = 0; j < LSQ_Q8_NR; j++)
                for (int t = 0; t < 4; t++) {
                    int n = p * LSQ_Q8_NR + j, k = g * 4 + t;
                    if (n < N && k < K) packed[(((size_t)p * K4 + g) * LSQ_Q8_NR + j) * 4 + t] = w[(size_t)n * ldw + k];
                }
}

static void q8_gemm__scalar(const lsq_q8_gemm_args *a, int m0, int m1)
{
    int K4 = (a->K + 3) / 4;
    for (int m = m0; m < m1; m++) {
        const uint8_t *row = a->A + (size_t)m * a->lda;
        for (int n = 0; n < a->N; n++) {
            const int8_t *b = a->B + (size_t)(n / LSQ_Q8_NR) * K4 * LSQ_Q8_NR * 4 + (size_t)(n % LSQ_Q8_NR) * 4;
            int32_t acc = a->ibias ? a->ibias[n] : 0;
            for (int k = 0; k < a->K; k++) acc += (int32_t)row[k] * b[(size_t)(k / 4) * LSQ_Q8_NR * 4 + k % 4];
            float y = lsq_act_apply(a->act, fmaf(a->mult[n], (float)acc, a->add[n]));
            if (a->R) y += a->R[(size_t)m * a->ldr + n];
            if (a->C) a->C[(size_t)m * a->ldc + n] = y;
            if (a->Q) a->Q[(size_t)m * a->ldq + n] = lsq_q8_code(&a->q, y);
        }
    }
}

static void q8_dwconv__scalar(const lsq_q8_dw_args *a, int oy0, int oy1, float *chsum)
{
    const int k = a->k;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = 0; ox < a->OW; ox++) {
            int iy0 = oy * a->stride - a->pad_t, ix0 = ox * a->stride - a->pad_l;
            int full = iy0 >= 0 && ix0 >= 0 && iy0 + k <= a->H && ix0 + k <= a->W;
            size_t o = ((size_t)oy * a->OW + ox) * a->C + a->c0;
            for (int c = 0; c < a->nc; c++) {
                int32_t acc = 0, wsum = 0;
                for (int ky = 0; ky < k; ky++) {
                    int iy = iy0 + ky;
                    if (iy < 0 || iy >= a->H) continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ix0 + kx;
                        if (ix < 0 || ix >= a->W) continue;
                        int w = a->w[(size_t)(ky * k + kx) * a->nc + c];
                        acc += w * a->in[((size_t)iy * a->W + ix) * a->C + a->c0 + c];
                        wsum += w;
                    }
                }
                float add = full ? a->add[c] : fmaf(a->coef[c], (float)wsum, a->bias[c]);
                float y = lsq_act_apply(a->act, fmaf(a->mult[c], (float)acc, add));
                if (a->Q) {
                    a->Q[o + c] = lsq_q8_code(&a->q, y);
                } else {
                    a->out[o + c] = y;
                    if (chsum) chsum[(size_t)oy * a->C + c] += y;
                }
            }
        }
}

static void q8_quantize__scalar(const lsq_q8_quant_args *a, int m0, int m1)
{
    for (int m = m0; m < m1; m++)
        for (int c = 0; c < a->C; c++) {
            float x = a->x[(size_t)m * a->C + c];
            if (a->gate) x *= a->gate[c];
            a->Q[(size_t)m * a->C + c] = lsq_q8_code(&a->q, x);
        }
}

static void q8_quantize_hwc3__scalar(const float *x, int n, const lsq_q8_requant *q, uint8_t *out, int i0, int i1)
{
    for (int i = i0; i < i1; i++)
        for (int c = 0; c < 3; c++) out[3 * (size_t)i + c] = lsq_q8_code(q, x[(size_t)c * n + i]);
}

const lsq_q8_kernels lsq_q8_kernels_scalar = {
    .name = "scalar",
    .q8_gemm = q8_gemm__scalar,
    .q8_dwconv = q8_dwconv__scalar,
    .q8_quantize = q8_quantize__scalar,
    .q8_quantize_hwc3 = q8_quantize_hwc3__scalar,
};
