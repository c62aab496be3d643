/* quant.c - LSQ+ configuration names, quantizer set-up and integer code packing. */
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

lsq_status lsq_qconfig_parse(const char *name, lsq_qconfig *out, lsq_error *err)
{
    memset(out, 0, sizeof *out);
    out->first_last_bits = 8;
    out->input_bits = 8;
    if (!name || !strcmp(name, "fp32")) return LSQ_OK;
    int w, a, n = 0;
    char rest[8] = "";
    if (sscanf(name, "w%1d" "a%1d%n", &w, &a, &n) == 2 && w >= 2 && w <= 8 && a >= 2 && a <= 8 &&
        (name[n] == 0 || !strcmp(name + n, "-lsq"))) {
        snprintf(rest, sizeof rest, "%s", name + n);
        out->quantized = 1;
        out->w_bits = w;
        out->a_bits = a;
        out->lsq_plus = rest[0] == 0;
        return LSQ_OK;
    }
    return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s' (expected fp32, wXaY or wXaY-lsq with X, Y in 2..8)",
                    name);
}

void lsq_act_quant_init(lsq_act_quant *q, int bits, int is_signed)
{
    memset(q, 0, sizeof *q);
    q->bits = bits;
    q->is_signed = is_signed;
    q->qmin = is_signed ? -(1 << (bits - 1)) : 0;
    q->qmax = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    q->scale = 1.f;
}

size_t lsq_packed_bytes(size_t n, int bits) { return (n * (size_t)bits + 7) / 8; }

void lsq_pack_codes(const int8_t *codes, size_t n, int bits, uint8_t *out)
{
    memset(out, 0, lsq_packed_bytes(n, bits));
    uint32_t mask = (1u << bits) - 1;
    size_t bit = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)(uint8_t)codes[i] & mask;
        for (int j = 0; j < bits; j++, bit++) out[bit >> 3] |= (uint8_t)(((v >> j) & 1u) << (bit & 7));
    }
}

void lsq_unpack_codes(const uint8_t *data, size_t n, int bits, int is_signed, int8_t *out)
{
    size_t bit = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = 0;
        for (int j = 0; j < bits; j++, bit++) v |= (uint32_t)((data[bit >> 3] >> (bit & 7)) & 1u) << j;
        out[i] = (int8_t)(is_signed && v >= (1u << (bits - 1)) ? (int)v - (1 << bits) : (int)v);
    }
}
