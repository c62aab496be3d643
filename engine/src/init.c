/* init.c - checkpoints with seeded random weights (`lsq init`), for benchmarks and tests.
 *
 * Weights follow He initialisation (normal, std sqrt(2 / fan_in)). BatchNorm statistics are not
 * arbitrary: each BN's running variance is the variance its convolution's output would have for
 * inputs of the second moment that flows there (tracked through the network: 1 for the image,
 * E[swish(z)^2] = 0.356 or E[relu(z)^2] = 0.5 after an activation, a quarter of that after an SE
 * gate near 0.5), randomised by +-50% per channel, so that every layer stays normalised and the
 * logits depend on the input. Affine parameters and means are randomised too, so BN folding is
 * exercised. The last BN of each block gets a small gamma (as zero-init-residual practice does).
 * Deterministic for a given seed on every machine (own PRNG, no libc rand).
 * FIXME: the moment tracking underestimates real activations by ~1.3x per block at 224x224 (the
 * logits of efficientnet_b0 span ~300 instead of ~10; at 32x32 they span ~1). A calibration pass
 * through the engine (observing each layer, as LSQ+ calibration will) would make it exact. */
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

/* Moments of a tensor flowing through the network, assumed i.i.d. per element. */
typedef struct {
    double mean, m2; /* E[x], E[x^2] */
} moments;

/* act(z) for z ~ N(0, 1): E and E[^2] (numerically integrated) */
static moments act_moments(lsq_act a)
{
    if (a == LSQ_ACT_RELU) return (moments){0.3989, 0.5};
    if (a == LSQ_ACT_SWISH) return (moments){0.2066, 0.3557};
    return (moments){0.0, 1.0};
}

/* Weights of one conv, then its BN (or bias). m2_in: second moment of the conv's input. Returns
 * the second moment of the output after BN and activation through *m2_out. */
static lsq_status init_conv(init_ctx *c, const lsq_conv_def *cd, moments in, moments *out)
{
    lsq_status s;
    /* per output channel: sum of w^2 and sum of w */
    double *ssq = calloc(2 * (size_t)cd->cout, sizeof(double));
    if (!ssq) return lsq_fail(c->err, LSQ_ERR_NOMEM, "out of memory");
    double *sw = ssq + cd->cout;
    for (int p = 0; p < cd->nparts; p++) {
        const lsq_conv_part *pt = &cd->part[p];
        int cin = cd->depthwise ? 1 : pt->cin;
        char module[LSQ_NAME_LEN + 8];
        if (cd->mixed) snprintf(module, sizeof module, "%s.%d", cd->name, p);
        else snprintf(module, sizeof module, "%s", cd->name);
        int64_t shape[4] = {pt->cout, cin, pt->k, pt->k};
        size_t per = (size_t)cin * pt->k * pt->k, n = per * (size_t)pt->cout;
        double std = cd->linear ? 0.01 : sqrt(2.0 / (double)per);
        float *w = malloc(n * sizeof(float));
        if (!w) {
            free(ssq);
            return lsq_fail(c->err, LSQ_ERR_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            w[i] = (float)(std * rng_normal(&c->r));
            ssq[pt->out_off + i / per] += (double)w[i] * w[i];
            sw[pt->out_off + i / per] += w[i];
        }
        char name[128];
        snprintf(name, sizeof name, "%s.weight", module);
        s = lsq_st_writer_add(c->w, name, LSQ_ST_F32, cd->linear ? 2 : 4, shape, w, c->err);
        free(w);
        if (s) goto done;
    }
    int64_t vec[1] = {cd->cout};
    *out = act_moments(cd->act);
    if (cd->has_bias) {
        s = add(c, cd->name, "bias", 1, vec, 0.0, 0.1, 1);
        goto done;
    }
    if (!cd->bn[0]) {
        s = LSQ_OK;
        goto done;
    }
    int last_bn = cd->act == LSQ_ACT_NONE; /* the projection BN, feeding the residual stream */
    double glo = last_bn ? 0.1 : 0.8, ghi = last_bn ? 0.4 : 1.2;
    if ((s = add(c, cd->bn, "weight", 1, vec, glo, ghi, 0)) || (s = add(c, cd->bn, "bias", 1, vec, 0.0, 0.1, 1)))
        goto done;
    float *mean = malloc(2 * (size_t)cd->cout * sizeof(float));
    if (!mean) {
        s = lsq_fail(c->err, LSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    float *var = mean + cd->cout;
    /* the conv output's mean is sum(w) E[x], its variance sum(w^2) Var[x]; the running variance
     * is off by a factor u in [0.5, 1.5] per channel, scaled so that E[1/u] = 1 (no drift) */
    for (int o = 0; o < cd->cout; o++) {
        double v = ssq[o] * (in.m2 - in.mean * in.mean) + 1e-6;
        var[o] = (float)(v * (0.5 + rng_uniform(&c->r)) * 1.0986);
        mean[o] = (float)(sw[o] * in.mean + 0.1 * sqrt(v) * rng_normal(&c->r));
    }
    char name[128];
    snprintf(name, sizeof name, "%s.running_mean", cd->bn);
    if (!(s = lsq_st_writer_add(c->w, name, LSQ_ST_F32, 1, vec, mean, c->err))) {
        snprintf(name, sizeof name, "%s.running_var", cd->bn);
        s = lsq_st_writer_add(c->w, name, LSQ_ST_F32, 1, vec, var, c->err);
    }
    free(mean);
    if (last_bn) *out = (moments){0.0, (glo * glo + glo * ghi + ghi * ghi) / 3.0}; /* E[gamma^2] */
done:
    free(ssq);
    return s;
}

static lsq_status init_net(init_ctx *c, const lsq_net_def *def)
{
    lsq_status s;
    moments x = {0.0, 1.0}, t; /* the normalised image */
    if ((s = init_conv(c, &def->stem, x, &x))) return s;
    for (int i = 0; i < def->nblocks; i++) {
        const lsq_block_def *b = &def->blocks[i];
        moments h = x, proj;
        if (b->has_expand && (s = init_conv(c, &b->expand, x, &h))) return s;
        if ((s = init_conv(c, &b->dw, h, &h))) return s;
        if (b->has_se) {
            moments pooled = {h.mean, h.mean * h.mean + 0.05}; /* a spatial mean varies little */
            if ((s = init_conv(c, &b->se_reduce, pooled, &t)) || (s = init_conv(c, &b->se_expand, t, &t))) return s;
            h.mean *= 0.5; /* gate ~ 0.5 */
            h.m2 *= 0.25;
        }
        if ((s = init_conv(c, &b->project, h, &proj))) return s;
        x = b->skip ? (moments){x.mean, x.m2 + proj.m2} : proj;
    }
    if ((s = init_conv(c, &def->head, x, &x))) return s;
    return init_conv(c, &def->classifier, x, &t);
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
    if (!(s = init_net(&c, &def)) && !(s = lsq_st_writer_set_metadata(c.w, "format_version", fv, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "arch", def.arch, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "num_classes", classes, err)) &&
        !(s = lsq_st_writer_set_metadata(c.w, "weights", "random (lsq init)", err)))
        s = lsq_st_writer_save(c.w, out_path, err);
    lsq_st_writer_free(c.w);
    arch_free(&def);
    return s;
}
