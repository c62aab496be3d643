/* calib.c - LSQ+ initialisation in C (`lsq quantize`): an FP32 checkpoint plus calibration inputs
 * in, the packed deployable checkpoint out.
 *
 * The algorithm is models/lsqnet/quant.py's calibrate(), step for step, so that the trainer and
 * this tool initialise the same quantizers the same way:
 *   - weights: s_w per output channel (per tensor under +pt) = max(|mu - 3 sd|, |mu + 3 sd|) / 2^(b-1)
 *     (population sd), or 2 mean|w| / sqrt(p) for the LSQ baseline; never below 1e-8. Each layer's
 *     bits and granularity come from lsq_conv_qlayer, as the loader's do.
 *   - activations: one forward pass with the activation quantizers off and the weights already
 *     fake-quantized with those scales - what calibrate() does (it disables only the input
 *     quantizers; its docstring's "every quantizer disabled" overstates it) - through reference.c's
 *     observer mode. Each input is one "batch": it contributes a strided subsample (every k-th
 *     value of the NCHW-flattened tensor, at most 65,536) followed by its exact min and max. The
 *     concatenation over inputs is then subsampled the same way once more and searched (MSE grid
 *     over shrunken ranges, then pattern search; or min-max; or LSQ's 2 mean|x| / sqrt(p)).
 *     Because the inputs' count is known up front, the second subsample is drawn while the first
 *     is produced, and memory stays at 65,536 floats per quantizer whatever the input size.
 * Known difference from PyTorch: the MSE is summed in double here and in float32 (another order)
 * there, so near-ties in the search may resolve differently; the chosen (s, beta) then differ
 * while their MSEs agree to ~1e-6 (tests/torch/test_quantize.py measures it).
 *
 * Output: quant.py export_packed's tensors and metadata (README "Checkpoints"), plus a
 * "calibration" metadata entry saying how the scales were set.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "reference.h"
#include "util.h"

#define CALIB_MAX_SAMPLES 65536 /* quant.py's max_samples */
#define CALIB_SCALE_EPS 1e-8    /* quant.py's SCALE_EPS */

typedef enum { CALIB_MSE = 0, CALIB_MINMAX, CALIB_LSQ } calib_method;
static const char *const method_names[] = {"mse", "minmax", "lsq"};

/* What one activation quantizer keeps of the inputs it sees. */
typedef struct {
    const lsq_conv_def *def;
    int qmin, qmax, learn_offset;
    calib_method method;
    uint64_t step2; /* the second subsample keeps every step2-th observed value */
    uint64_t seen;  /* observed values so far (over all inputs, mins and maxes included) */
    float lo, hi;   /* exact range over everything seen */
    int nonfinite;
    float *keep;    /* the kept values, at most CALIB_MAX_SAMPLES */
    size_t nkeep, cap;
    float scale, offset; /* the result */
} calib_obs;

struct lsq_calib {
    lsq_model *m; /* the FP32 model: folded weights for the forward pass */
    lsq_st_file *src;
    lsq_qconfig qc;
    calib_method act_method; /* inner layers' method */
    int size, expected, added;
    int resized;       /* calibration size differs from the file's preprocessing */
    lsq_preprocess pp;
    lsq_ref *ref;
    float *logits;
    calib_obs *obs; /* one per conv/linear, in network order */
    int nobs, cursor;
    char path[256];
};

/* ==== observing ================================================================================ */

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* Values one input of n contributes: its subsample, then min and max (quant.py _observe). */
static uint64_t observed_per_input(size_t n)
{
    uint64_t step = n > CALIB_MAX_SAMPLES ? ceil_div(n, CALIB_MAX_SAMPLES) : 1;
    return ceil_div(n, step) + 2;
}

static void obs_push(calib_obs *o, float v)
{
    if (o->seen++ % o->step2 == 0 && o->nkeep < o->cap) o->keep[o->nkeep++] = v;
}

static void observe(void *user, const lsq_conv_def *def, const float *x, size_t n)
{
    lsq_calib *c = user;
    calib_obs *o = NULL;
    for (int k = 0; k < c->nobs && !o; k++) { /* calls come in network order: start at the cursor */
        int i = (c->cursor + k) % c->nobs;
        if (c->obs[i].def == def) o = &c->obs[i], c->cursor = i + 1;
    }
    LSQ_ASSERT(o && n % (size_t)def->cin == 0);
    /* x is NHWC; quant.py flattens NCHW: value j is channel j / HW, pixel j % HW */
    size_t C = (size_t)def->cin, HW = n / C;
    size_t step = n > CALIB_MAX_SAMPLES ? (size_t)ceil_div(n, CALIB_MAX_SAMPLES) : 1;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) o->nonfinite = 1;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    for (size_t j = 0; j < n; j += step) obs_push(o, x[(j % HW) * C + j / HW]);
    obs_push(o, lo);
    obs_push(o, hi);
    o->lo = LSQ_MIN(o->lo, lo);
    o->hi = LSQ_MAX(o->hi, hi);
}

/* ==== initialisation (quant.py init_act_params) ================================================= */

/* mean (clamp(round((x - b) / s), n, p) * s + b - x)^2, each term in float32 as torch computes it.
 * Written so that the baseline (SSE2) vectorizer takes it - this is where calibration spends its
 * time (~540 evaluations on 65,536 values per quantizer): u is clamped to [n - 1, p + 1] first, where
 * adding and subtracting 1.5 * 2^23 rounds half to even exactly as rintf does; 16 float partial
 * sums per block of 1024 values, blocks summed in double (deterministic; torch sums in float32). */
static double act_mse(const float *x, size_t m, double s, double b, int n, int p)
{
    const float sf = (float)s, bf = (float)b, lo = (float)n, hi = (float)p, magic = 12582912.f;
    const float ulo = lo - 1, uhi = hi + 1;
    double sum = 0;
    size_t i = 0;
    for (; i + 16 <= m;) {
        float acc[16] = {0};
        size_t end = LSQ_MIN(m, i + 1024) & ~(size_t)15;
        end = end > i ? end : i + 16;
        for (; i < end; i += 16)
            for (int j = 0; j < 16; j++) {
                float u = (x[i + j] - bf) / sf;
                u = u < ulo ? ulo : u > uhi ? uhi : u;
                float q = (u + magic) - magic;
                q = q < lo ? lo : q > hi ? hi : q;
                float e = q * sf + bf - x[i + j];
                acc[j] += e * e;
            }
        for (int j = 0; j < 16; j++) sum += acc[j];
    }
    for (; i < m; i++) {
        float q = rintf((x[i] - bf) / sf);
        q = q < lo ? lo : q > hi ? hi : q;
        float e = q * sf + bf - x[i];
        sum += (double)(e * e);
    }
    return m ? sum / (double)m : 0;
}

/* numpy.linspace(start, stop, num)[k] */
static double linspace(double start, double stop, int num, int k)
{
    return k == num - 1 ? stop : start + k * ((stop - start) / (num - 1));
}

static void act_init(calib_obs *o)
{
    const float *x = o->keep;
    size_t m = o->nkeep;
    int n = o->qmin, p = o->qmax;
    double lo = o->lo, hi = o->hi, s0, b0;
    if (o->learn_offset) {
        s0 = LSQ_MAX((hi - lo) / (p - n), CALIB_SCALE_EPS);
        b0 = lo - n * s0;
    } else { /* the largest |range| the fixed grid [n s, p s] must reach */
        double need = LSQ_MAX(p > 0 ? hi / p : 0.0, n < 0 ? lo / n : 0.0);
        s0 = LSQ_MAX(need, CALIB_SCALE_EPS), b0 = 0;
    }
    double s = s0, b = b0;
    if (o->method == CALIB_LSQ) {
        double a = 0;
        for (size_t i = 0; i < m; i++) a += fabs((double)x[i]);
        s = LSQ_MAX(2 * (m ? a / (double)m : 0) / sqrt((double)p), CALIB_SCALE_EPS), b = 0;
    } else if (o->method == CALIB_MSE) {
        double e = act_mse(x, m, s0, b0, n, p), r = hi - lo;
        if (o->learn_offset && r > 0) {
            for (int ia = 0; ia < 11; ia++) {
                double a = linspace(0.0, 0.5, 11, ia);
                for (int ic = 0; ic < 40; ic++) {
                    double cc = linspace(a + 0.02, 1.0, 40, ic), l = lo + a * r, h = lo + cc * r;
                    double s1 = (h - l) / (p - n), b1 = l - n * s1, e1 = act_mse(x, m, s1, b1, n, p);
                    if (e1 < e) e = e1, s = s1, b = b1;
                }
            }
        } else if (!o->learn_offset) {
            for (int ic = 0; ic < 100; ic++) {
                double s1 = s0 * linspace(0.01, 1.0, 100, ic), e1 = act_mse(x, m, s1, 0.0, n, p);
                if (e1 < e) e = e1, s = s1, b = 0;
            }
        }
        /* pattern search on (s, beta), steps halving from a tenth of the best s */
        double step = s / 10;
        for (int round = 0; round < 24; round++) {
            double moves[4][2] = {{step, 0}, {-step, 0}, {0, step * 4}, {0, -step * 4}};
            int improved = 0;
            for (int k = 0; k < (o->learn_offset ? 4 : 2); k++) {
                double s2 = s + moves[k][0], b2 = b + moves[k][1];
                if (s2 <= CALIB_SCALE_EPS) continue;
                double e2 = act_mse(x, m, s2, b2, n, p);
                if (e2 < e) e = e2, s = s2, b = b2, improved = 1;
            }
            if (!improved) step /= 2;
        }
    }
    o->scale = (float)s;
    o->offset = (float)b;
}

/* One weight scale over `per` weights at w (quant.py WeightQuantizer.init_from): a channel's, or the
 * whole tensor's under per-tensor scales. */
static float weight_scale(const float *w, size_t per, int bits, int lsq_baseline)
{
    double s;
    if (lsq_baseline) {
        double a = 0;
        for (size_t i = 0; i < per; i++) a += fabs((double)w[i]);
        s = 2 * (a / (double)per) / sqrt((double)((1 << (bits - 1)) - 1));
    } else {
        double mu = 0, var = 0;
        for (size_t i = 0; i < per; i++) mu += w[i];
        mu /= (double)per;
        for (size_t i = 0; i < per; i++) var += ((double)w[i] - mu) * ((double)w[i] - mu);
        double sd = sqrt(var / (double)per);
        s = LSQ_MAX(fabs(mu - 3 * sd), fabs(mu + 3 * sd)) / (double)(1 << (bits - 1));
    }
    return (float)LSQ_MAX(s, CALIB_SCALE_EPS);
}

/* The weight scales of a [cout][per] tensor: cout of them per output channel, else one. */
static int weight_scales(const float *w, int cout, size_t per, int bits, int lsq_baseline, int per_channel, float *sw)
{
    if (!per_channel) {
        sw[0] = weight_scale(w, (size_t)cout * per, bits, lsq_baseline);
        return 1;
    }
    for (int o = 0; o < cout; o++) sw[o] = weight_scale(w + (size_t)o * per, per, bits, lsq_baseline);
    return cout;
}

static lsq_status write_file(lsq_calib *c, const char *out_path, int final, lsq_error *err);

/* ==== create / add ============================================================================== */

static lsq_status count_conv(void *ctx, lsq_conv_def *c)
{
    (*(int *)ctx)++;
    return LSQ_OK;
}

typedef struct {
    lsq_calib *c;
    lsq_error *err;
} obs_ctx;

static lsq_status setup_obs(void *ctx, lsq_conv_def *def)
{
    obs_ctx *x = ctx;
    lsq_calib *c = x->c;
    const lsq_net_def *d = &c->m->def;
    calib_obs *o = &c->obs[c->nobs++];
    lsq_qlayer l = lsq_conv_qlayer(&c->qc, d, def);
    lsq_act_quant q;
    lsq_act_quant_init(&q, l.a_bits, l.a_signed);
    o->def = def;
    o->qmin = q.qmin, o->qmax = q.qmax;
    o->learn_offset = l.a_offset; /* the network input has an offset in LSQ and LSQ+ alike */
    o->method = c->act_method;
    if (l.a_signed && o->method == CALIB_LSQ) o->method = CALIB_MSE; /* quant.py: the input quantizer is the same */
    o->lo = INFINITY, o->hi = -INFINITY;
    return LSQ_OK;
}

/* Size of each conv's input at the calibration size, by a dry run with a counting observer. */
static void size_obs(void *user, const lsq_conv_def *def, const float *x, size_t n)
{
    lsq_calib *c = user;
    for (int i = 0; i < c->nobs; i++)
        if (c->obs[i].def == def) {
            uint64_t total = observed_per_input(n) * (uint64_t)c->expected;
            c->obs[i].step2 = total > CALIB_MAX_SAMPLES ? ceil_div(total, CALIB_MAX_SAMPLES) : 1;
            c->obs[i].cap = (size_t)ceil_div(total, c->obs[i].step2);
        }
}

/* The network the observation pass runs, as quant.py calibrate() runs it: weights already
 * fake-quantized with their initial scales (s_w * w_q, BatchNorm after), activations in float.
 * Built by writing the packed file with placeholder activation quantizers to a temporary file and
 * loading it, so the weights take exactly the loader's path; replaces the FP32 model c->m. */
static lsq_status forward_model(lsq_calib *c, lsq_error *err)
{
    const char *dir = getenv("TMPDIR");
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/lsq-calib-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) return lsq_fail(err, LSQ_ERR_IO, "%s: cannot create a temporary file: %s", tmp, strerror(errno));
    close(fd);
    lsq_load_options lo = {.config = c->qc.name};
    lsq_model *q = NULL;
    lsq_status s = write_file(c, tmp, 0, err);
    if (!s) s = lsq_model_load(tmp, &lo, &q, err);
    unlink(tmp);
    if (s) return s;
    lsq_model_free(c->m);
    c->m = q;
    return LSQ_OK;
}

lsq_status lsq_calib_create(const char *fp32_path, const lsq_calib_options *opt, lsq_calib **out, lsq_error *err)
{
    *out = NULL;
    if (!fp32_path || !opt || !opt->config) return lsq_fail(err, LSQ_ERR_ARG, "lsq_calib_create: NULL argument");
    lsq_calib *c = calloc(1, sizeof *c);
    if (!c) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    lsq_status s;
    snprintf(c->path, sizeof c->path, "%s", fp32_path);
    if ((s = lsq_qconfig_parse(opt->config, &c->qc, err))) goto fail;
    if (!c->qc.quantized) {
        s = lsq_fail(err, LSQ_ERR_ARG, "configuration 'fp32' has nothing to quantize (use wXaY or wXaY-lsq, with "
                     "+ suffixes as needed)");
        goto fail;
    }
    c->act_method = c->qc.lsq_plus ? CALIB_MSE : CALIB_LSQ;
    if (opt->act_init) {
        int k = 0;
        while (k < 3 && strcmp(opt->act_init, method_names[k])) k++;
        if (k == 3) {
            s = lsq_fail(err, LSQ_ERR_ARG, "unknown activation init '%s' (expected mse, minmax or lsq)", opt->act_init);
            goto fail;
        }
        c->act_method = (calib_method)k;
    }
    if (opt->num_inputs < 1) {
        s = lsq_fail(err, LSQ_ERR_ARG, "calibration needs at least one input");
        goto fail;
    }
    c->expected = opt->num_inputs;
    if ((s = lsq_st_open(fp32_path, &c->src, err))) goto fail;
    const char *cfg = lsq_st_metadata(c->src, "config");
    if (cfg && strcmp(cfg, "fp32")) {
        s = lsq_fail(err, LSQ_ERR_UNSUPPORTED, "%s: already quantized ('%s'); lsq quantize takes an FP32 checkpoint",
                     fp32_path, cfg);
        goto fail;
    }
    if (lsq_st_find(c->src, "features.0.0.weight")) {
        s = lsq_fail(err, LSQ_ERR_UNSUPPORTED,
                     "%s: torchvision tensor names; lsq quantize writes timm names and needs a timm-named checkpoint",
                     fp32_path);
        goto fail;
    }
    lsq_load_options lo = {.arch = opt->arch, .config = "fp32"};
    if ((s = lsq_model_load(fp32_path, &lo, &c->m, err))) goto fail;
    if ((s = lsq_qconfig_check(&c->qc, &c->m->def, fp32_path, err))) goto fail;
    c->pp = c->m->preprocess;
    if (opt->size > 0 && opt->size != c->pp.input_size) {
        /* the model's preprocessing at another size: a fixed resize that equalled the crop follows it */
        c->pp.resize_size = c->pp.resize_size == c->pp.input_size ? opt->size : 0;
        c->pp.input_size = opt->size;
    }
    c->size = c->pp.input_size;
    c->resized = c->size != c->m->preprocess.input_size;
    if ((s = forward_model(c, err))) goto fail;
    if (c->size < 32 || c->size > 4096) {
        s = lsq_fail(err, LSQ_ERR_ARG, "calibration size %d out of range (32..4096)", c->size);
        goto fail;
    }
    int nconv = 0;
    arch_foreach_conv(&c->m->def, count_conv, &nconv);
    c->obs = calloc((size_t)nconv, sizeof *c->obs);
    c->logits = malloc((size_t)c->m->def.num_classes * sizeof(float));
    if (!c->obs || !c->logits) {
        s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    obs_ctx ox = {c, err};
    arch_foreach_conv(&c->m->def, setup_obs, &ox);
    if ((s = lsq_ref_create(c->m, c->size, c->size, &c->ref, err))) goto fail;
    /* one dry run on zeros sizes every quantizer's buffer */
    float *zero = calloc((size_t)3 * c->size * c->size, sizeof(float));
    if (!zero) {
        s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    lsq_ref_set_observer(c->ref, size_obs, c);
    lsq_ref_run(c->ref, zero, c->logits);
    free(zero);
    for (int i = 0; i < c->nobs; i++) {
        calib_obs *o = &c->obs[i];
        LSQ_ASSERT(o->step2 > 0);
        if (!(o->keep = malloc(o->cap * sizeof(float)))) {
            s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    lsq_ref_set_observer(c->ref, observe, c);
    *out = c;
    return LSQ_OK;
fail:
    lsq_calib_free(c);
    return s;
}

const lsq_preprocess *lsq_calib_preprocess(const lsq_calib *c) { return &c->pp; }

lsq_status lsq_calib_add(lsq_calib *c, const float *input, lsq_error *err)
{
    if (c->added >= c->expected)
        return lsq_fail(err, LSQ_ERR_ARG, "more calibration inputs than the %d announced", c->expected);
    c->cursor = 0;
    lsq_ref_run(c->ref, input, c->logits);
    c->added++;
    return LSQ_OK;
}

void lsq_calib_free(lsq_calib *c)
{
    if (!c) return;
    for (int i = 0; i < c->nobs; i++) free(c->obs[i].keep);
    free(c->obs);
    free(c->logits);
    lsq_ref_free(c->ref);
    lsq_model_free(c->m);
    lsq_st_close(c->src);
    free(c);
}

/* ==== writing the packed checkpoint ============================================================= */

typedef struct {
    lsq_calib *c;
    lsq_st_writer *w;
    lsq_error *err;
    int index; /* into c->obs */
    int final; /* 0: placeholder activation quantizers (scale 1, offset 0) */
} write_ctx;

static lsq_status put_f32(write_ctx *x, const char *module, const char *field, int64_t n, const float *v)
{
    char name[160];
    snprintf(name, sizeof name, "%s.%s", module, field);
    int64_t shape[1] = {n};
    return lsq_st_writer_add(x->w, name, LSQ_ST_F32, 1, shape, v, x->err);
}

static lsq_status read_src(write_ctx *x, const char *module, const char *field, int ndim, const int64_t *shape,
                           float *dst)
{
    char name[160];
    snprintf(name, sizeof name, "%s.%s", module, field);
    return lsq_st_read_f32(x->c->src, name, ndim, shape, dst, x->err);
}

/* One conv/linear: its quantizers, packed weight codes, bias or folded BatchNorm. */
static lsq_status write_conv(void *ctx, lsq_conv_def *def)
{
    write_ctx *x = ctx;
    lsq_calib *c = x->c;
    const lsq_net_def *d = &c->m->def;
    const calib_obs *o = x->final ? &c->obs[x->index++] : NULL;
    LSQ_ASSERT(!o || o->def == def);
    const float one = 1.f, zero = 0.f;
    const lsq_qlayer l = lsq_conv_qlayer(&c->qc, d, def);
    const int bits = l.w_bits;
    lsq_status s;
    if ((s = put_f32(x, def->name, "input_quant.scale", 1, o ? &o->scale : &one)) ||
        (s = put_f32(x, def->name, "input_quant.offset", 1, o ? &o->offset : &zero)))
        return s;
    float *w = NULL, *sw = NULL, *v = NULL;
    int8_t *codes = NULL;
    uint8_t *packed = NULL;
    for (int p = 0; p < def->nparts; p++) {
        const lsq_conv_part *pt = &def->part[p];
        int cin = def->depthwise ? 1 : pt->cin, k = pt->k;
        size_t per = (size_t)cin * k * k, n = per * (size_t)pt->cout;
        char module[LSQ_NAME_LEN + 8];
        if (def->mixed) snprintf(module, sizeof module, "%s.%d", def->name, p);
        else snprintf(module, sizeof module, "%s", def->name);
        int64_t shape[4] = {pt->cout, cin, k, k};
        w = malloc(n * sizeof(float)), sw = malloc((size_t)pt->cout * sizeof(float));
        codes = malloc(n), packed = malloc(lsq_packed_bytes(n, bits) + 1);
        if (!w || !sw || !codes || !packed) {
            s = lsq_fail(x->err, LSQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((s = read_src(x, module, "weight", def->linear ? 2 : 4, shape, w))) goto done;
        int nsw = weight_scales(w, pt->cout, per, bits, !c->qc.lsq_plus, l.per_channel, sw);
        for (int oc = 0; oc < pt->cout; oc++)
            for (size_t i = 0; i < per; i++)
                codes[(size_t)oc * per + i] = (int8_t)lsq_weight_code(w[(size_t)oc * per + i], sw[nsw > 1 ? oc : 0], bits);
        lsq_pack_codes(codes, n, bits, packed);
        char name[160];
        snprintf(name, sizeof name, "%s.weight_codes", module);
        int64_t nb[1] = {(int64_t)lsq_packed_bytes(n, bits)};
        if ((s = lsq_st_writer_add(x->w, name, LSQ_ST_U8, 1, nb, packed, x->err)) ||
            (s = put_f32(x, module, "weight_quant.scale", nsw, sw)))
            goto done;
        free(w), free(sw), free(codes), free(packed);
        w = sw = NULL, codes = NULL, packed = NULL;
    }
    int64_t vec[1] = {def->cout};
    if (!(v = malloc(6 * (size_t)def->cout * sizeof(float)))) {
        s = lsq_fail(x->err, LSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (def->has_bias) {
        if (!(s = read_src(x, def->name, "bias", 1, vec, v))) s = put_f32(x, def->name, "bias", def->cout, v);
    } else if (def->bn[0]) {
        /* quant.py export_packed, in float32 as torch computes it: scale = gamma / sqrt(var + eps) */
        float *g = v, *beta = v + def->cout, *mean = v + 2 * def->cout, *var = v + 3 * def->cout;
        float *fs = v + 4 * def->cout, *fb = v + 5 * def->cout;
        if ((s = read_src(x, def->bn, "weight", 1, vec, g)) || (s = read_src(x, def->bn, "bias", 1, vec, beta)) ||
            (s = read_src(x, def->bn, "running_mean", 1, vec, mean)) ||
            (s = read_src(x, def->bn, "running_var", 1, vec, var)))
            goto done;
        for (int i = 0; i < def->cout; i++) {
            float den = sqrtf(var[i] + d->bn_eps), prod;
            fs[i] = g[i] / den;
            prod = mean[i] * fs[i];
            fb[i] = beta[i] - prod;
        }
        if (!(s = put_f32(x, def->bn, "folded_scale", def->cout, fs))) s = put_f32(x, def->bn, "folded_bias", def->cout, fb);
    }
done:
    free(w), free(sw), free(codes), free(packed), free(v);
    return s;
}

static char *preprocess_json(const lsq_preprocess *p)
{
    static const char *interp[] = {"bilinear", "bicubic", "nearest"};
    json_t *o = json_object(), *mean = json_array(), *std = json_array();
    for (int k = 0; k < 3; k++) {
        json_array_append_new(mean, json_real(p->mean[k]));
        json_array_append_new(std, json_real(p->std[k]));
    }
    json_object_set_new(o, "input_size", json_integer(p->input_size));
    json_object_set_new(o, "resize_size", json_integer(p->resize_size));
    json_object_set_new(o, "crop_pct", json_real(p->crop_pct));
    json_object_set_new(o, "interpolation", json_string(interp[p->interp]));
    json_object_set_new(o, "mean", mean);
    json_object_set_new(o, "std", std);
    json_object_set_new(o, "grayscale", json_boolean(p->grayscale));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The packed checkpoint: final, or with placeholder activation quantizers (the forward model). */
static lsq_status write_file(lsq_calib *c, const char *out_path, int final, lsq_error *err)
{
    lsq_st_writer *w = lsq_st_writer_create();
    if (!w) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    write_ctx x = {c, w, err, 0, final};
    lsq_status s = arch_foreach_conv(&c->m->def, write_conv, &x);
    char fv[8], classes[16], calib[256];
    snprintf(fv, sizeof fv, "%d", LSQ_FORMAT_VERSION);
    snprintf(classes, sizeof classes, "%d", c->m->def.num_classes);
    snprintf(calib, sizeof calib,
             "{\"tool\":\"lsq quantize\",\"act_init\":\"%s\",\"weight_init\":\"%s\",\"inputs\":%d,\"size\":%d}",
             method_names[c->act_method], c->qc.lsq_plus ? "3sigma" : "lsq", c->expected, c->size);
    /* the source's preprocessing, verbatim when calibration used it unchanged */
    const char *src_pp = lsq_st_metadata(c->src, "preprocess"), *labels = lsq_st_metadata(c->src, "labels");
    char *pp = src_pp && !c->resized ? strdup(src_pp) : preprocess_json(&c->pp);
    if (!s && !pp) s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    if (!s && !(s = lsq_st_writer_set_metadata(w, "format_version", fv, err)) &&
        !(s = lsq_st_writer_set_metadata(w, "arch", c->m->def.arch, err)) &&
        !(s = lsq_st_writer_set_metadata(w, "num_classes", classes, err)) &&
        !(s = lsq_st_writer_set_metadata(w, "config", c->qc.name, err)) &&
        !(s = lsq_st_writer_set_metadata(w, "form", "packed", err)) &&
        !(labels && (s = lsq_st_writer_set_metadata(w, "labels", labels, err))) &&
        !(s = lsq_st_writer_set_metadata(w, "preprocess", pp, err)) &&
        !(final && (s = lsq_st_writer_set_metadata(w, "calibration", calib, err))))
        s = lsq_st_writer_save(w, out_path, err);
    free(pp);
    lsq_st_writer_free(w);
    return s;
}

lsq_status lsq_calib_write(lsq_calib *c, const char *out_path, lsq_error *err)
{
    if (c->added != c->expected)
        return lsq_fail(err, LSQ_ERR_ARG, "%d calibration inputs given, %d announced", c->added, c->expected);
    for (int i = 0; i < c->nobs; i++) {
        calib_obs *o = &c->obs[i];
        if (o->nonfinite)
            return lsq_fail(err, LSQ_ERR_TENSOR, "%s: the input of '%s' holds non-finite values in the float forward "
                            "pass; cannot calibrate", c->path, o->def->name);
        act_init(o);
    }
    return write_file(c, out_path, 1, err);
}

lsq_status lsq_model_quantize(const char *fp32_path, const lsq_calib_options *opt, const float *inputs,
                              const char *out_path, lsq_error *err)
{
    lsq_calib *c;
    lsq_status s = lsq_calib_create(fp32_path, opt, &c, err);
    if (s) return s;
    size_t per = (size_t)3 * c->size * c->size;
    for (int i = 0; !s && i < opt->num_inputs; i++) s = lsq_calib_add(c, inputs + per * (size_t)i, err);
    if (!s) s = lsq_calib_write(c, out_path, err);
    lsq_calib_free(c);
    return s;
}
