/* test_quant.c - configuration names, quantizer rounding (half to even, x / s form) and the
 * packing format shared with models/lsqnet/quant.py (the examples of models/README.md). */
#include <string.h>

#include "quant.h"
#include "unit.h"

static void test_config_names(void)
{
    lsq_qconfig c;
    CHECK(lsq_qconfig_parse("fp32", &c, NULL) == LSQ_OK && !c.quantized);
    CHECK(lsq_qconfig_parse("w4a4", &c, NULL) == LSQ_OK && c.quantized && c.w_bits == 4 && c.a_bits == 4 && c.lsq_plus);
    CHECK(lsq_qconfig_parse("w2a2-lsq", &c, NULL) == LSQ_OK && c.w_bits == 2 && !c.lsq_plus);
    CHECK(lsq_qconfig_parse("w8a3", &c, NULL) == LSQ_OK && c.w_bits == 8 && c.a_bits == 3);
    lsq_error err;
    const char *bad[] = {"w1a4", "w9a9", "w4", "w4a4-lsqx", "w4a4x", "W4A4", "", "w44a4", "w4a10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(lsq_qconfig_parse(bad[i], &c, &err) == LSQ_ERR_ARG);
        CHECK(strstr(err.msg, "unknown configuration") != NULL);
    }
}

/* Suffixes: accepted spellings and the canonical name each prints back to. tests/torch/test_quant.py
 * holds the same table for models/lsqnet/quant.py's parse_config. */
static void test_config_canonical(void)
{
    static const char *const cases[][2] = {
        {"w4a4", "w4a4"},
        {"w2a2-lsq", "w2a2-lsq"},
        {"w4a4+pt", "w4a4+pt"},
        {"w4a4+fl6", "w4a4+fl6"},
        {"w4a4+fl8", "w4a4"},
        {"w3a3+fl4+pt", "w3a3+pt+fl4"},
        {"w2a2+dw8", "w2a2+dw8"},
        {"w2a2+blocks.*.conv_dw=8", "w2a2+dw8"},
        {"w2a2-lsq+pt+blocks.*.se.*=8", "w2a2-lsq+pt+se8"},
        {"w2a2+se8+dw8", "w2a2+se8+dw8"}, /* overrides keep their order: the last match wins */
        {"w4a4+conv_head=8+fl6", "w4a4+fl6+conv_head=8"},
        {"w2a2+blocks.1.*=4+blocks.1.0.conv_dw=8", "w2a2+blocks.1.*=4+blocks.1.0.conv_dw=8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lsq_qconfig c, again;
        lsq_error err = {{0}};
        int ok = lsq_qconfig_parse(cases[i][0], &c, &err) == LSQ_OK && !strcmp(c.name, cases[i][1]);
        if (!ok) printf("#   '%s' -> '%s' (%s), expected '%s'\n", cases[i][0], c.name, err.msg, cases[i][1]);
        CHECK(ok);
        /* the canonical name parses to the same settings and prints back to itself */
        CHECK(lsq_qconfig_parse(c.name, &again, NULL) == LSQ_OK && !strcmp(again.name, c.name));
        CHECK(again.per_tensor == c.per_tensor && again.first_last_bits == c.first_last_bits &&
              again.nrules == c.nrules && again.lsq_plus == c.lsq_plus);
    }
    lsq_qconfig c;
    CHECK(lsq_qconfig_parse("w2a2-lsq+pt+fl6+se8", &c, NULL) == LSQ_OK && c.quantized && c.w_bits == 2 &&
          c.a_bits == 2 && !c.lsq_plus && c.per_tensor && c.first_last_bits == 6 && c.input_bits == 8 &&
          c.nrules == 1 && !strcmp(c.rule[0].pattern, "blocks.*.se.*") && c.rule[0].bits == 8);
    CHECK(lsq_qconfig_parse("fp32", &c, NULL) == LSQ_OK && !strcmp(c.name, "fp32"));
    CHECK(lsq_qconfig_parse(NULL, &c, NULL) == LSQ_OK && !c.quantized && !strcmp(c.name, "fp32"));
}

/* Malformed names: refused with a message that says what is wrong. */
static void test_config_rejects(void)
{
    static const char *const cases[][2] = {
        {"w4a4+", "empty '+' clause"},
        {"w4a4++pt", "empty '+' clause"},
        {"w4a4+pt+pt", "'+pt' given twice"},
        {"w4a4+fl6+fl4", "'+fl' given twice"},
        {"w4a4+fl9", "unknown clause '+fl9'"},
        {"w4a4+fl", "unknown clause '+fl'"},
        {"w4a4+dw1", "unknown clause '+dw1'"},
        {"w4a4+xx8", "unknown clause '+xx8'"},
        {"w4a4+PT", "unknown clause '+PT'"},
        {"w4a4+blocks/1=8", "layer pattern 'blocks/1' must be"},
        {"w4a4+blocks.?.conv_dw=8", "layer pattern"},
        {"w4a4+=8", "layer pattern '' must be"},
        {"w4a4+conv_head=10", "bits must be one digit 2..8"},
        {"w4a4+conv_head=", "bits must be one digit 2..8"},
        {"w4a4+dw8+blocks.*.conv_dw=4", "'blocks.*.conv_dw' given twice"},
        {"w4a4+a=8+b=8+c=8+d=8+e=8+f=8+g=8+h=8+i=8", "more than 8 layer overrides"},
        {"w4a4+blocks.0.0.conv_dw=8+blocks.1.0.conv_dw=8+blocks.2.0.conv_dw=8", "longer than 63 characters"},
        {"w4a4-lsq-lsq", "unknown configuration"},
        {"fp32+pt", "unknown configuration"},
        {"w4a4 +pt", "unknown configuration"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lsq_qconfig c;
        lsq_error err = {{0}};
        int ok = lsq_qconfig_parse(cases[i][0], &c, &err) == LSQ_ERR_ARG && strstr(err.msg, cases[i][1]) &&
                 strstr(err.msg, cases[i][0]);
        if (!ok) printf("#   '%s': message '%s', expected it to contain '%s'\n", cases[i][0], err.msg, cases[i][1]);
        CHECK(ok);
    }
}

/* lsq_qconfig_layer: roles, +fl, overrides (last match wins, over +fl), the network input's quantizer. */
static void test_config_layer(void)
{
    lsq_qconfig c;
    CHECK(lsq_qconfig_parse("w2a3-lsq+pt+fl6+blocks.*=4+dw8", &c, NULL) == LSQ_OK);
    lsq_qlayer l = lsq_qconfig_layer(&c, "blocks.1.0.conv_pw", LSQ_QROLE_INNER);
    CHECK(l.w_bits == 4 && l.a_bits == 4 && !l.a_signed && !l.a_offset && !l.per_channel);
    l = lsq_qconfig_layer(&c, "blocks.1.0.conv_dw", LSQ_QROLE_INNER);
    CHECK(l.w_bits == 8 && l.a_bits == 8);
    l = lsq_qconfig_layer(&c, "conv_head", LSQ_QROLE_INNER);
    CHECK(l.w_bits == 2 && l.a_bits == 3 && !l.a_offset);
    l = lsq_qconfig_layer(&c, "classifier", LSQ_QROLE_LAST);
    CHECK(l.w_bits == 6 && l.a_bits == 6 && !l.a_signed);
    l = lsq_qconfig_layer(&c, "conv_stem", LSQ_QROLE_FIRST);
    CHECK(l.w_bits == 6 && l.a_bits == 8 && l.a_signed && l.a_offset);
    /* an override on the stem sets its weights; its input stays signed 8-bit */
    CHECK(lsq_qconfig_parse("w4a4+conv_stem=3+classifier=5", &c, NULL) == LSQ_OK);
    l = lsq_qconfig_layer(&c, "conv_stem", LSQ_QROLE_FIRST);
    CHECK(l.w_bits == 3 && l.a_bits == 8 && l.a_signed && l.a_offset && l.per_channel);
    l = lsq_qconfig_layer(&c, "classifier", LSQ_QROLE_LAST);
    CHECK(l.w_bits == 5 && l.a_bits == 5 && l.a_offset);
    /* the se group matches reduce and expand, not the block's other convs */
    CHECK(lsq_qconfig_parse("w2a2+se8", &c, NULL) == LSQ_OK);
    CHECK(lsq_qconfig_layer(&c, "blocks.3.2.se.conv_reduce", LSQ_QROLE_INNER).w_bits == 8);
    CHECK(lsq_qconfig_layer(&c, "blocks.3.2.se.conv_expand", LSQ_QROLE_INNER).a_bits == 8);
    CHECK(lsq_qconfig_layer(&c, "blocks.3.2.conv_pwl", LSQ_QROLE_INNER).w_bits == 2);
}

static void test_rounding(void)
{
    lsq_act_quant q;
    lsq_act_quant_init(&q, 2, 0);
    q.scale = 1.f;
    q.offset = 0.f;
    CHECK(lsq_act_quant_code(&q, 0.5f) == 0.f); /* ties to even */
    CHECK(lsq_act_quant_code(&q, 1.5f) == 2.f);
    CHECK(lsq_act_quant_code(&q, 2.5f) == 2.f);
    CHECK(lsq_act_quant_code(&q, 9.f) == 3.f);  /* clamp to 2^b - 1 */
    CHECK(lsq_act_quant_code(&q, -4.f) == 0.f);
    q.offset = -0.278f; /* LSQ+: the offset lets the grid cover Swish's negative tail */
    q.scale = 0.1f;
    CHECK(lsq_act_quant_code(&q, -0.278f) == 0.f);
    lsq_act_quant_init(&q, 8, 1);
    CHECK(q.qmin == -128 && q.qmax == 127);
    CHECK(lsq_weight_code(-0.25f, 0.1f, 4) == -2.f); /* -2.5 -> -2 */
    CHECK(lsq_weight_code(-9.f, 1.f, 4) == -8.f && lsq_weight_code(9.f, 1.f, 4) == 7.f);
}

static void test_pack_examples(void)
{
    /* models/README.md: 3 bits [1,2,3] -> D1 00; 4 bits [-1,2] -> 2F; 2 bits [1,0,3,2,1] -> B1 01 */
    uint8_t out[4];
    int8_t a[] = {1, 2, 3}, b[] = {-1, 2}, c[] = {1, 0, 3, 2, 1};
    lsq_pack_codes(a, 3, 3, out);
    CHECK(lsq_packed_bytes(3, 3) == 2 && out[0] == 0xD1 && out[1] == 0x00);
    lsq_pack_codes(b, 2, 4, out);
    CHECK(lsq_packed_bytes(2, 4) == 1 && out[0] == 0x2F);
    lsq_pack_codes(c, 5, 2, out);
    CHECK(lsq_packed_bytes(5, 2) == 2 && out[0] == 0xB1 && out[1] == 0x01);
}

static void test_pack_round_trip(void)
{
    int8_t codes[1001], back[1001];
    uint8_t buf[1001];
    for (int bits = 2; bits <= 8; bits++)
        for (int sgn = 0; sgn <= 1; sgn++)
            for (size_t n = 0; n <= 1001; n += (n < 20 ? 1 : 97)) {
                int lo = sgn ? -(1 << (bits - 1)) : 0, span = 1 << bits;
                for (size_t i = 0; i < n; i++) codes[i] = (int8_t)(lo + (int)((i * 2654435761u) % (unsigned)span));
                lsq_pack_codes(codes, n, bits, buf);
                lsq_unpack_codes(buf, n, bits, sgn, back);
                CHECK(memcmp(codes, back, n) == 0);
            }
}

int main(void)
{
    RUN(test_config_names);
    RUN(test_config_canonical);
    RUN(test_config_rejects);
    RUN(test_config_layer);
    RUN(test_rounding);
    RUN(test_pack_examples);
    RUN(test_pack_round_trip);
    return unit_done();
}
