/* q8.h - integer kernels of the quantized path (private): uint8 activation codes times int8
 * weight codes, int32 accumulation, float epilogue.
 *
 * Pointwise GEMM, for every m in [m0, m1) and n < N:
 *     acc = sum_k A[m, k] * W[n, k]  (+ ibias[n])              (exact, int32)
 *     y   = act(mult[n] * acc + add[n])  (+ R[m, n])            (float; fmaf, same in every variant)
 *     C[m, n] = y                                               (if C)
 *     Q[m, n] = clamp(round_half_even((y - qb) / qs), 0, qmax)  (if Q: the next layer's input codes,
 *                                                                requantization fused)
 * A: uint8 codes, rows of lda bytes. mult/add fold the activation and weight scales, the
 * activation offset (beta * s_w * sum_k W[n, k]: a per-channel constant for 1x1 convs) and
 * BatchNorm (lsqplus.md, "Integer inference"). Codes of fewer bits are unpacked to these bytes.
 *
 * Packed weights (lsq_q8_pack): panels of 16 output channels; inside a panel, K in groups of 4,
 * each group 16 x 4 bytes: Bp[panel][k / 4][n % 16][k % 4], zero-padded in k and n. That is the
 * operand layout of AVX-512 VNNI's vpdpbusd (4 u8 x s8 products summed per int32 lane); AVX2
 * reads each group as two halves of 8 columns (q8__avx2.c). One layout for every level.
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

/* The activation quantizer a kernel writes codes for: u = (y - offset) / scale, exactly in that
 * form (the trainer's), rounded half to even, clamped to [qmin, qmax], stored as code - qmin
 * (qmin = 0 for the unsigned inner layers; -128 for the network input). */
typedef struct {
    float scale, offset;
    int qmin, qmax;
} lsq_q8_requant;

static inline uint8_t lsq_q8_code(const lsq_q8_requant *q, float y)
{
    float u = nearbyintf((y - q->offset) / q->scale);
    u = u < (float)q->qmin ? (float)q->qmin : u > (float)q->qmax ? (float)q->qmax : u;
    return (uint8_t)((int)u - q->qmin);
}

typedef struct {
    int M, N, K;
    const uint8_t *A;
    int lda;
    const int8_t *B;       /* lsq_q8_pack layout */
    const int32_t *ibias;  /* N integers added to the sums, or NULL */
    const float *mult;     /* N */
    const float *add;      /* N */
    float *C;              /* float output, or NULL */
    int ldc;
    const float *R;        /* residual added after the activation, or NULL */
    int ldr;
    uint8_t *Q;            /* codes output, or NULL */
    int ldq;
    lsq_q8_requant q;
    lsq_act act;
} lsq_q8_gemm_args;

/* Depthwise convolution of channels [c0, c0 + nc) of an NHWC uint8 code tensor with C channels
 * (zero point 0), one kernel size k, summing only the taps inside the image:
 *     acc = sum_{valid taps} in[iy, ix, c] * w[ky*k + kx][c - c0]                    (int32)
 *     y   = act(mult * acc + add)                      for outputs whose taps are all valid
 *     y   = act(mult * acc + bias + coef * wsum_valid)   at the borders
 * add = bias + coef * (sum of all k*k weights): the activation offset's share, folded once
 * (lsqplus.md: the float model pads with the real 0.0, i.e. it sums the offset over valid taps
 * only). Output: float at out[(oy*OW + ox)*C + c] (and each row summed per channel into
 * chsum[oy * C + c - c0] as in lsq_dw_args: the squeeze of a following SE block), or, if Q, codes
 * of the next layer's quantizer at the same place. */
typedef struct {
    const uint8_t *in;
    int H, W, C;
    int c0, nc;
    int k, stride, pad_t, pad_l;
    const int8_t *w;                      /* [k*k][nc] */
    const float *mult, *add, *bias, *coef; /* nc each */
    float *out;
    uint8_t *Q;
    lsq_q8_requant q;
    int OH, OW;
    lsq_act act;
} lsq_q8_dw_args;

/* Codes of x (* gate[c], if gate) for M rows of C contiguous floats; the same rounding as above. */
typedef struct {
    const float *x;
    const float *gate;
    int M, C;
    uint8_t *Q;
    lsq_q8_requant q;
} lsq_q8_quant_args;

typedef struct {
    const char *name;
    void (*q8_gemm)(const lsq_q8_gemm_args *a, int m0, int m1);
    void (*q8_dwconv)(const lsq_q8_dw_args *a, int oy0, int oy1, float *chsum);
    void (*q8_quantize)(const lsq_q8_quant_args *a, int m0, int m1);
    /* The network input: codes of 3 planes of n floats (x + c * n) interleaved to pixels, out[3 * i
     * + c] (code - qmin, lsq_q8_code); pixels [i0, i1). NULL where quantizing the planes and
     * interleaving them separately is as fast. */
    void (*q8_quantize_hwc3)(const float *x, int n, const lsq_q8_requant *q, uint8_t *out, int i0, int i1);
} lsq_q8_kernels;

extern const lsq_q8_kernels lsq_q8_kernels_scalar;
extern const lsq_q8_kernels lsq_q8_kernels_avx2;
extern const lsq_q8_kernels lsq_q8_kernels_avxvnni; /* AVX2 + AVX-VNNI (vpdpbusd on 256 bits) */
extern const lsq_q8_kernels lsq_q8_kernels_avx512vnni;

/* Best for this CPU (AVX-512 VNNI, else AVX2 with AVX-VNNI, else AVX2, else scalar), capped by
 * LSQ_ISA like the float kernels (LSQ_ISA=avx2 gives avxvnni where the CPU has it); decided once. */
const lsq_q8_kernels *lsq_q8_kernels_best(void);
/* The table of a level (LSQ_ISA_AVX512 is AVX-512 VNNI; LSQ_ISA_AVX2 is avxvnni where the CPU has
 * AVX-VNNI, else avx2), or NULL if the CPU cannot run it (tests compare every level). */
const lsq_q8_kernels *lsq_q8_kernels_for(lsq_isa isa);
/* 1 when the CPU and OS run AVX-512 VNNI. */
int lsq_cpu_has_avx512vnni(void);
/* 1 when the CPU and OS run AVX2 and AVX-VNNI (256-bit vpdpbusd). */
int lsq_cpu_has_avxvnni(void);

#endif
