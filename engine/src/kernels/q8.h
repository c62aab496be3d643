/* q8.h - integer kernels of the quantized path (private): uint8 activation codes times int8
 * weight codes, int32 accumulation, float epilogue.
 *
 * Pointwise GEMM, for every m in [m0, m1) and n < N:
 *     acc = sum_k A[m, k] * W[n, k]                  (exact, int32)
 *     y   = act(mult[n] * acc + add[n])  (+ R[m, n])  (float; fmaf, same in every variant)
 * A: uint8 codes, rows of lda bytes. mult/add fold the activation and weight scales, the
 * activation offset (beta * s_w * sum_k W[n, k]: a per-channel constant for 1x1 convs) and
 * BatchNorm (lsqplus.md, "Integer inference"). Codes of fewer bits are unpacked to these bytes.
 *
 * Packed weights (lsq_q8_pack): panels of 16 output channels; inside a panel, K in groups of 4,
 * each group 16 x 4 bytes: Bp[panel][k / 4][n % 16][k % 4], zero-padded in k and n. That is the
 * operand layout of AVX-512 VNNI's vpdpbusd (4 u8 x s8 products summed per int32 lane).
 * Over-read contract: kernels read A rows in whole groups of 4 bytes, up to byte
 * round_up(K, 4) - 1 of a row (multiplied by zero weights): the A buffer must have
 * LSQ_Q8_AREAD_PAD bytes readable past its last row's K bytes.
 */
#ifndef LSQ_Q8_H
#define LSQ_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#define LSQ_Q8_NR 16
#define LSQ_Q8_AREAD_PAD 4

static inline size_t lsq_q8_packed_bytes(int K, int N)
{
    return (size_t)((N + LSQ_Q8_NR - 1) / LSQ_Q8_NR) * (size_t)((K + 3) / 4) * LSQ_Q8_NR * 4;
}

/* w: int8 codes in PyTorch's [N][K] order (row n at w + n * ldw). */
void lsq_q8_pack(const int8_t *w, int ldw, int K, int N, int8_t *packed);

typedef struct {
    int M, N, K;
    const uint8_t *A;
    int lda;
    const int8_t *B;     /* lsq_q8_pack layout */
    const float *mult;   /* N */
    const float *add;    /* N */
    float *C;
    int ldc;
    const float *R;      /* residual added after the activation, or NULL */
    int ldr;
    lsq_act act;
} lsq_q8_gemm_args;

typedef struct {
    const char *name;
    void (*q8_gemm)(const lsq_q8_gemm_args *a, int m0, int m1);
} lsq_q8_kernels;

extern const lsq_q8_kernels lsq_q8_kernels_scalar;
extern const lsq_q8_kernels lsq_q8_kernels_avx512vnni;

/* Best for this CPU (AVX-512 VNNI, else scalar), capped by LSQ_ISA like the float kernels. */
const lsq_q8_kernels *lsq_q8_kernels_best(void);
/* 1 when the CPU and OS run AVX-512 VNNI. */
int lsq_cpu_has_avx512vnni(void);

#endif
