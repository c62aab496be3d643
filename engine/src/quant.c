/* quant.c - LSQ+ configuration names (the grammar of quant.h), per-layer quantizer settings, quantizer
 * set-up and integer code packing. */
#include "quant.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ==== configuration names ===================================================================== */

const lsq_qgroup lsq_qgroups[] = {
    {"dw", "blocks.*.conv_dw"}, /* depthwise convs (MixNet's mixed ones as one module) */
    {"se", "blocks.*.se.*"},    /* squeeze-and-excitation reduce and expand */
};
const int lsq_nqgroups = (int)(sizeof lsq_qgroups / sizeof lsq_qgroups[0]);

#define QCONFIG_GRAMMAR                                                                                       \
    "expected fp32 or wXaY[-lsq] followed by +pt, +fl<B>, +dw<B>, +se<B> or +<pattern>=<B> (X, Y, B in 2..8; " \
    "pattern: fnmatch on the module name, [A-Za-z0-9._*])"

static int bits_digit(const char *s, int *bits)
{
    if (s[0] < '2' || s[0] > '8' || s[1]) return 0;
    *bits = s[0] - '0';
    return 1;
}

static int pattern_ok(const char *p, size_t len)
{
    if (!len || len >= LSQ_QPATTERN_LEN) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') ||
              p[i] == '.' || p[i] == '_' || p[i] == '*'))
            return 0;
    return 1;
}

static lsq_status add_rule(lsq_qconfig *c, const char *name, const char *pattern, size_t len, int bits,
                           lsq_error *err)
{
    for (int i = 0; i < c->nrules; i++)
        if (strlen(c->rule[i].pattern) == len && !strncmp(c->rule[i].pattern, pattern, len))
            return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': layer pattern '%.*s' given twice", name, (int)len,
                            pattern);
    if (c->nrules == LSQ_QCONFIG_MAX_RULES)
        return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': more than %d layer overrides", name,
                        LSQ_QCONFIG_MAX_RULES);
    lsq_qrule *r = &c->rule[c->nrules++];
    memcpy(r->pattern, pattern, len);
    r->pattern[len] = 0;
    r->bits = bits;
    return LSQ_OK;
}

/* One clause (the text between two '+'), len characters at s. */
static lsq_status parse_clause(lsq_qconfig *c, const char *name, const char *s, size_t len, int *seen_fl,
                               lsq_error *err)
{
    char cl[LSQ_QCONFIG_NAME_LEN + 1];
    int bits;
    if (!len) return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s': empty '+' clause; " QCONFIG_GRAMMAR, name);
    if (len >= sizeof cl)
        return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': clause '%.*s' is too long", name, (int)len, s);
    memcpy(cl, s, len);
    cl[len] = 0;
    const char *eq = strchr(cl, '=');
    if (eq) {
        size_t plen = (size_t)(eq - cl);
        if (!pattern_ok(cl, plen))
            return lsq_fail(err, LSQ_ERR_ARG,
                            "unknown configuration '%s': layer pattern '%.*s' must be 1..%d of [A-Za-z0-9._*]", name,
                            (int)plen, cl, LSQ_QPATTERN_LEN - 1);
        if (!bits_digit(eq + 1, &bits))
            return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s': '+%s': bits must be one digit 2..8", name, cl);
        return add_rule(c, name, cl, plen, bits, err);
    }
    if (!strcmp(cl, "pt")) {
        if (c->per_tensor) return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': '+pt' given twice", name);
        c->per_tensor = 1;
        return LSQ_OK;
    }
    if (!strncmp(cl, "fl", 2) && bits_digit(cl + 2, &bits)) {
        if ((*seen_fl)++) return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': '+fl' given twice", name);
        c->first_last_bits = bits;
        return LSQ_OK;
    }
    for (int g = 0; g < lsq_nqgroups; g++) {
        size_t n = strlen(lsq_qgroups[g].name);
        if (!strncmp(cl, lsq_qgroups[g].name, n) && bits_digit(cl + n, &bits))
            return add_rule(c, name, lsq_qgroups[g].pattern, strlen(lsq_qgroups[g].pattern), bits, err);
    }
    return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s': unknown clause '+%s'; " QCONFIG_GRAMMAR, name, cl);
}

/* The canonical name: base, +pt, +fl<B> unless 8, overrides in order (groups by their name). */
static int canonical_name(const lsq_qconfig *c, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "w%da%d%s%s", c->w_bits, c->a_bits, c->lsq_plus ? "" : "-lsq",
                                c->per_tensor ? "+pt" : "");
    if (c->first_last_bits != 8 && n < len) n += (size_t)snprintf(out + n, len - n, "+fl%d", c->first_last_bits);
    for (int i = 0; i < c->nrules && n < len; i++) {
        const char *group = NULL;
        for (int g = 0; g < lsq_nqgroups; g++)
            if (!strcmp(c->rule[i].pattern, lsq_qgroups[g].pattern)) group = lsq_qgroups[g].name;
        n += group ? (size_t)snprintf(out + n, len - n, "+%s%d", group, c->rule[i].bits)
                   : (size_t)snprintf(out + n, len - n, "+%s=%d", c->rule[i].pattern, c->rule[i].bits);
    }
    return n < len;
}

lsq_status lsq_qconfig_parse(const char *name, lsq_qconfig *out, lsq_error *err)
{
    memset(out, 0, sizeof *out);
    out->first_last_bits = 8;
    out->input_bits = 8;
    if (!name || !strcmp(name, "fp32")) {
        snprintf(out->name, sizeof out->name, "fp32");
        return LSQ_OK;
    }
    const char *p = name;
    if (p[0] != 'w' || p[1] < '2' || p[1] > '8' || p[2] != 'a' || p[3] < '2' || p[3] > '8')
        return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s' (" QCONFIG_GRAMMAR ")", name);
    out->quantized = 1;
    out->w_bits = p[1] - '0';
    out->a_bits = p[3] - '0';
    p += 4;
    out->lsq_plus = strncmp(p, "-lsq", 4) != 0;
    if (!out->lsq_plus) p += 4;
    if (*p && *p != '+')
        return lsq_fail(err, LSQ_ERR_ARG, "unknown configuration '%s' (" QCONFIG_GRAMMAR ")", name);
    int seen_fl = 0;
    while (*p == '+') {
        p++;
        size_t len = strcspn(p, "+");
        lsq_status s = parse_clause(out, name, p, len, &seen_fl, err);
        if (s) return s;
        p += len;
    }
    if (!canonical_name(out, out->name, sizeof out->name))
        return lsq_fail(err, LSQ_ERR_ARG, "configuration '%s': the canonical name is longer than %d characters", name,
                        LSQ_QCONFIG_NAME_LEN - 1);
    return LSQ_OK;
}

lsq_qlayer lsq_qconfig_layer(const lsq_qconfig *qc, const char *module, lsq_qrole role)
{
    int fl = role != LSQ_QROLE_INNER;
    lsq_qlayer l = {.w_bits = fl ? qc->first_last_bits : qc->w_bits, .a_bits = fl ? qc->first_last_bits : qc->a_bits,
                    .a_offset = qc->lsq_plus, .per_channel = !qc->per_tensor};
    for (int i = qc->nrules - 1; i >= 0; i--)
        if (!fnmatch(qc->rule[i].pattern, module, 0)) {
            l.w_bits = l.a_bits = qc->rule[i].bits;
            break;
        }
    if (role == LSQ_QROLE_FIRST) { /* the network input: always signed 8-bit with an offset (lsqplus.md) */
        l.a_bits = qc->input_bits;
        l.a_signed = 1;
        l.a_offset = 1;
    }
    return l;
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
