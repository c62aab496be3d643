/* quant.h - LSQ+ configurations, quantizer parameters and integer code packing (private).
 *
 * The math is shared/reference/lsqplus.md and models/lsqnet/quant.py, which the trainer uses:
 *   activations  u = (x - beta) / s, x_q = clamp(round_half_even(u), n, p), x_hat = s x_q + beta
 *   weights      w_q = clamp(round_half_even(w / s_w), -2^(b-1), 2^(b-1) - 1), s_w per out channel
 *                (or per tensor)
 * computed in float32 in exactly these forms (x / s, not x * (1/s)), so codes agree bit for bit.
 */
#ifndef LSQ_QUANT_H
#define LSQ_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "lsq.h"

/* ==== configurations ==========================================================================
 * A configuration name (README "Configurations"; models/lsqnet/quant.py parses the same grammar):
 *
 *   config := "fp32" | "w" W "a" A ["-lsq"] { "+" clause }      W, A, B: one digit in 2..8
 *   clause := "pt"                 per-tensor weight scales (one scale per weight tensor)
 *           | "fl" B               first and last layers (stem weights; classifier weights and input) at B
 *           | "dw" B | "se" B      a named layer group at B bits (weights and input), see lsq_qgroups
 *           | PATTERN "=" B        the conv/linear layers whose timm module name matches the fnmatch(3)
 *                                  PATTERN (1..47 of [A-Za-z0-9._*]) at B bits (weights and input)
 *
 * Overrides (group and pattern clauses) apply in order, the last match wins, and win over "fl"; the
 * network input's quantizer stays signed 8-bit whatever matches the stem. The alphabet keeps names
 * usable as file names and URL path segments ('*' only with a pattern clause). Every configuration
 * prints back to one canonical name: base, "+pt", "+fl<B>" (omitted at 8), then the overrides in
 * their order, a pattern equal to a group's written as the group. */

#define LSQ_QCONFIG_NAME_LEN 64 /* canonical names are at most 63 characters */
#define LSQ_QCONFIG_MAX_RULES 8
#define LSQ_QPATTERN_LEN 48

typedef struct {
    char pattern[LSQ_QPATTERN_LEN]; /* fnmatch(3) pattern on the module name, flags 0 */
    int bits;
} lsq_qrule;

typedef struct {
    int quantized;       /* 0 for fp32 */
    int w_bits, a_bits;  /* inner layers, 2..8 */
    int lsq_plus;        /* 1: learned offset; 0: LSQ (offset fixed at 0) */
    int per_tensor;      /* 1: one weight scale per tensor ([1]); 0: per output channel ([Cout]) */
    int first_last_bits; /* stem conv weights and the classifier (weights and input): 8 unless +fl */
    int input_bits;      /* the network input's signed quantizer: always 8 */
    int nrules;
    lsq_qrule rule[LSQ_QCONFIG_MAX_RULES]; /* per-layer overrides, in order (the last match wins) */
    char name[LSQ_QCONFIG_NAME_LEN];       /* the canonical name */
} lsq_qconfig;

/* Named groups of the "+<group><B>" clauses, as patterns on timm module names. */
typedef struct {
    const char *name, *pattern;
} lsq_qgroup;
extern const lsq_qgroup lsq_qgroups[];
extern const int lsq_nqgroups;

lsq_status lsq_qconfig_parse(const char *name, lsq_qconfig *out, lsq_error *err);

/* Where a conv/linear sits: its role decides the defaults before overrides. */
typedef enum { LSQ_QROLE_INNER = 0, LSQ_QROLE_FIRST, LSQ_QROLE_LAST } lsq_qrole;

/* The quantizers of one conv/linear layer under a configuration. */
typedef struct {
    int w_bits;      /* weight codes, signed */
    int a_bits;      /* input codes */
    int a_signed;    /* the network input (the stem's input) only */
    int a_offset;    /* learned offset: LSQ+, and the network input always */
    int per_channel; /* weight scales per output channel, else one per tensor */
} lsq_qlayer;

/* The one place that decides a layer's bits, grid and scale granularity (quantized configurations;
 * module is the conv's timm name - a MixNet mixed conv's, never a split's). */
lsq_qlayer lsq_qconfig_layer(const lsq_qconfig *qc, const char *module, lsq_qrole role);

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
