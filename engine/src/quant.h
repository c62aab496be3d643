/* quant.h - LSQ+ configurations, quantizer parameters and integer code packing (private).
 *
 * The math is shared/reference/lsqplus.md and models/lsqnet/quant.py, which the trainer uses:
 *   activations  u = (x - beta) / s, x_q = clamp(round_half_even(u), n, p), x_hat = s x_q + beta
 *   weights      w_q = clamp(round_half_even(w / s_w), -2^(b-1), 2^(b-1) - 1), s_w per out channel
 * computed in float32 in exactly these forms (x / s, not x * (1/s)), so codes agree bit for bit.
 */
#ifndef LSQ_QUANT_H
#define LSQ_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "lsq.h"

/* A parsed configuration name: "fp32", "wXaY" (LSQ+) or "wXaY-lsq" (the LSQ baseline). */
typedef struct {
    int quantized;       /* 0 for fp32 */
    int w_bits, a_bits;  /* inner layers, 2..8 */
    int lsq_plus;        /* 1: learned offset; 0: LSQ (offset fixed at 0) */
    int first_last_bits; /* stem conv weights and the classifier: 8 */
    int input_bits;      /* the network input's signed quantizer: 8 */
} lsq_qconfig;

lsq_status lsq_qconfig_parse(const char *name, lsq_qconfig *out, lsq_error *err);

/* One activation quantizer (on a conv's or linear's input). bits == 0: not quantized. */
typedef struct {
    int bits, is_signed;
    int qmin, qmax;
    float scale, offset;
} lsq_act_quant;

void lsq_act_quant_init(lsq_act_quant *q, int bits, int is_signed);

static inline float lsq_act_quant_code(const lsq_act_quant *q, float x)
{
    float u = nearbyintf((x - q->offset) / q->scale);
    return u < (float)q->qmin ? (float)q->qmin : u > (float)q->qmax ? (float)q->qmax : u;
}

/* Weight codes of one output channel's weights, as the trainer computes them. */
static inline float lsq_weight_code(float w, float s, int bits)
{
    float lo = (float)-(1 << (bits - 1)), hi = (float)((1 << (bits - 1)) - 1);
    float u = nearbyintf(w / s);
    return u < lo ? lo : u > hi ? hi : u;
}

/* Pack n integer codes of `bits` bits into ceil(n * bits / 8) bytes, little-endian bit order (code
 * i occupies stream bits i*bits .. i*bits+bits-1, least significant first; stream bit k is bit
 * k % 8 of byte k / 8; negative codes as two's complement). models/lsqnet/quant.py agrees. */
size_t lsq_packed_bytes(size_t n, int bits);
void lsq_pack_codes(const int8_t *codes, size_t n, int bits, uint8_t *out);
void lsq_unpack_codes(const uint8_t *data, size_t n, int bits, int is_signed, int8_t *out);

#endif
