/* init.c - checkpoints with seeded random weights (`lsq init`), for benchmarks and tests.
 *
 * Weights follow He initialisation (normal, std sqrt(2 / fan_in)); BatchNorm gets randomised
 * statistics and affine parameters so that folding is exercised. The last BN of each block gets a
 * small gamma (as zero-init-residual practice does) so that activations stay in range through the
 * deep residual stack. Deterministic for a given seed on every machine (own PRNG, no libc rand). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "safetensors.h"
#include "util.h"

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static double rng_normal(rng *r)
{
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct {
    lsq_st_writer *w;
    rng r;
    lsq_error *err;
} init_ctx;

static lsq_status add(init_ctx *c, const char *module, const char *field, int ndim, const int64_t *shape,
                      double lo_or_mean, double hi_or_std, int normal)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) return lsq_fail(c->err, LSQ_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(normal ? lo_or_mean + hi_or_std * rng_normal(&c->r)
                              : lo_or_mean + (hi_or_std - lo_or_mean) * rng_uniform(&c->r));
    char name[128];
    snprintf(name, sizeof name, "%s.%s", module, field);
    lsq_status s = lsq_st_writer_add(c->w, name, LSQ_ST_F32, ndim, shape, v, c->err);
    free(v);
    return s;
}

static lsq_status init_conv(void *ctx, lsq_conv_def *cd)
{
    init_ctx *c = ctx;
    lsq_status s;
    for (int p = 0; p < cd->nparts; p++) {
        const lsq_conv_part *pt = &cd->part[p];
        int cin = cd->depthwise ? 1 : pt->cin;
        char module[LSQ_NAME_LEN + 8];
        if (cd->mixed) snprintf(module, sizeof module, "%s.%d", cd->name, p);
        else snprintf(module, sizeof module, "%s", cd->name);
        int64_t shape[4] = {pt->cout, cin, pt->k, pt->k};
        double std = cd->linear ? 0.01 : sqrt(2.0 / (cin * pt->k * pt->k));
        if ((s = add(c, module, "weight", cd->linear ? 2 : 4, shape, 0.0, std, 1))) return s;
    }
    int64_t vec[1] = {cd->cout};
    if (cd->has_bias) return add(c, cd->name, "bias", 1, vec, 0.0, 0.1, 1);
    if (!cd->bn[0]) return LSQ_OK;
    int last_bn = cd->act == LSQ_ACT_NONE; /* the projection BN, feeding the residual stream */
    if ((s = add(c, cd->bn, "weight", 1, vec, last_bn ? 0.1 : 0.8, last_bn ? 0.4 : 1.2, 0)) ||
        (s = add(c, cd->bn, "bias", 1, vec, 0.0, 0.1, 1)) || (s = add(c, cd->bn, "running_mean", 1, vec, 0.0, 0.1, 1)) ||
        (s = add(c, cd->bn, "running_var", 1, vec, 0.5, 1.5, 0)))
        return s;
    return LSQ_OK;
}

lsq_status lsq_model_init_random(const char *arch, int num_classes, uint64_t seed, const char *out_path, lsq_error *err)
{
    lsq_net_def def;
    lsq_status s = arch_build(arch, num_classes, &def, err);
    if (s) return s;
    init_ctx c = {.w = lsq_st_writer_create(), .r = {seed * 0x2545F4914F6CDD1Dull + 1}, .err = err};
    if (!c.w) {
        arch_free(&def);
        return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    }
    char classes[16], fv[8];
    snprintf(classes, sizeof classes, "%d", def.num_classes);
    snprintf(fv, sizeof fv, "%d", LSQ_FORMAT_VERSION);
    if (!(s = arch_foreach_conv(&def, init_conv, &c)) && !(s = lsq_st_writer_set_metadata(c.w, "format_version", fv, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "arch", def.arch, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "num_classes", classes, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "weights", "random (lsq init)", err)))
        s = lsq_st_writer_save(c.w, out_path, err);
    lsq_st_writer_free(c.w);
    arch_free(&def);
    return s;
}
