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
            int32_t acc = 0;
            for (int k = 0; k < a->K; k++) acc += (int32_t)row[k] * b[(size_t)(k / 4) * LSQ_Q8_NR * 4 + k % 4];
            float y = lsq_act_apply(a->act, fmaf(a->mult[n], (float)acc, a->add[n]));
            if (a->R) y += a->R[(size_t)m * a->ldr + n];
            a->C[(size_t)m * a->ldc + n] = y;
        }
    }
}

const lsq_q8_kernels lsq_q8_kernels_scalar = {.name = "scalar", .q8_gemm = q8_gemm__scalar};
