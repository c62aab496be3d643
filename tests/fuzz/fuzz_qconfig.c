/* fuzz_qconfig.c - libFuzzer target for configuration names (engine/src/quant.c), which arrive from
 * the command line, checkpoint metadata and server manifests. Invariants: no crash; an accepted
 * name has a canonical form of <= 63 characters in the grammar's alphabet that parses to itself;
 * the per-layer helper gives bits in 2..8. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *name = malloc(size + 1);
    if (!name) return 0;
    memcpy(name, data, size);
    name[size] = 0;
    lsq_qconfig c, again;
    lsq_error err;
    if (lsq_qconfig_parse(name, &c, &err) == LSQ_OK) {
        size_t n = strlen(c.name);
        assert(n > 0 && n < LSQ_QCONFIG_NAME_LEN);
        assert(strspn(c.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+=*-") == n);
        assert(lsq_qconfig_parse(c.name, &again, &err) == LSQ_OK && !strcmp(again.name, c.name));
        static const char *const modules[] = {"conv_stem", "blocks.1.0.conv_dw", "blocks.2.1.se.conv_reduce",
                                              "conv_head", "classifier"};
        for (int i = 0; c.quantized && i < 5; i++) {
            lsq_qlayer l = lsq_qconfig_layer(&c, modules[i], i == 0 ? LSQ_QROLE_FIRST : i == 4 ? LSQ_QROLE_LAST
                                                                                              : LSQ_QROLE_INNER);
            assert(l.w_bits >= 2 && l.w_bits <= 8 && l.a_bits >= 2 && l.a_bits <= 8);
        }
    }
    free(name);
    return 0;
}
