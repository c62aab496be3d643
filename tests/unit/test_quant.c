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
    RUN(test_rounding);
    RUN(test_pack_examples);
    RUN(test_pack_round_trip);
    return unit_done();
}
