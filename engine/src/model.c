/* model.c - loading a checkpoint: architecture resolution, tensor binding (timm or torchvision
 * names), BatchNorm folding and weight packing; metadata (labels, preprocessing); inspect. */
#include "model.h"

#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/q8.h"
#include "util.h"

/* ==== tensor names =============================================================================
 * Modules are named the timm way everywhere in the engine. A file written by torchvision
 * (features.*, classifier.1.*) is read through tv_name(), which maps a timm module name to its
 * torchvision counterpart for EfficientNet. */

typedef struct {
    lsq_model *m;
    const lsq_st_file *f;
    int torchvision;
    int tv_head_stage; /* features.<n> holding conv_head */
    lsq_error *err;
} loader;

/* timm module -> torchvision module; returns 0 if there is no counterpart. */
static int tv_name(const loader *L, const char *timm, char *out, size_t len)
{
    int s, i, n = 0;
    if (!strcmp(timm, "conv_stem")) return snprintf(out, len, "features.0.0"), 1;
    if (!strcmp(timm, "bn1")) return snprintf(out, len, "features.0.1"), 1;
    if (!strcmp(timm, "conv_head")) return snprintf(out, len, "features.%d.0", L->tv_head_stage), 1;
    if (!strcmp(timm, "bn2")) return snprintf(out, len, "features.%d.1", L->tv_head_stage), 1;
    if (!strcmp(timm, "classifier")) return snprintf(out, len, "classifier.1"), 1;
    if (sscanf(timm, "blocks.%d.%d.%n", &s, &i, &n) != 2 || n == 0) return 0;
    const char *rest = timm + n;
    /* the block's type decides the torchvision sub-indices */
    char prefix[32];
    snprintf(prefix, sizeof prefix, "blocks.%d.%d.", s, i);
    int is_ir = 0;
    for (int b = 0; b < L->m->def.nblocks; b++)
        if (!strncmp(L->m->def.blocks[b].dw.name, prefix, strlen(prefix))) is_ir = L->m->def.blocks[b].type == LSQ_BLOCK_IR;
    static const struct {
        const char *timm;
        const char *ds, *ir;
    } map[] = {
        {"conv_pw", "2.0", "0.0"},         {"bn1", "0.1", "0.1"},     {"conv_dw", "0.0", "1.0"},
        {"bn2", "2.1", "1.1"},             {"se.conv_reduce", "1.fc1", "2.fc1"},
        {"se.conv_expand", "1.fc2", "2.fc2"}, {"conv_pwl", NULL, "3.0"}, {"bn3", NULL, "3.1"},
    };
    for (size_t k = 0; k < LSQ_ARRAY_LEN(map); k++) {
        if (strcmp(rest, map[k].timm)) continue;
        const char *sub = is_ir ? map[k].ir : map[k].ds;
        if (!sub) return 0;
        return snprintf(out, len, "features.%d.%d.block.%s", s + 1, i, sub), 1;
    }
    return 0;
}

/* Full tensor name for module + "." + field in the file's naming. */
static void tensor_name(const loader *L, const char *module, const char *field, char *out, size_t len)
{
    char tv[96];
    if (L->torchvision && tv_name(L, module, tv, sizeof tv)) module = tv;
    snprintf(out, len, "%s.%s", module, field);
}

static lsq_status read_tensor(loader *L, const char *module, const char *field, int ndim, const int64_t *shape,
                              float *dst)
{
    char name[160];
    tensor_name(L, module, field, name, sizeof name);
    lsq_status s = lsq_st_read_f32(L->f, name, ndim, shape, dst, L->err);
    if (!s) {
        int64_t n = 1;
        for (int d = 0; d < ndim; d++) n *= shape[d];
        if (strcmp(field, "running_mean") && strcmp(field, "running_var")) L->m->num_params += n;
    }
    return s;
}

/* ==== folding and packing ====================================================================== */

/* Per output channel scale and bias from BatchNorm (or the conv's own bias, or none). */
static lsq_status read_scale_bias(loader *L, const lsq_conv_def *c, float *scale, float *bias)
{
    int64_t shape[1] = {c->cout};
    lsq_status s = LSQ_OK;
    for (int o = 0; o < c->cout; o++) scale[o] = 1.f, bias[o] = 0.f;
    if (c->has_bias) return read_tensor(L, c->name, "bias", 1, shape, bias);
    if (!c->bn[0]) return LSQ_OK;
    char folded[160];
    tensor_name(L, c->bn, "folded_scale", folded, sizeof folded);
    if (lsq_st_find(L->f, folded)) /* the packed form: BN already folded to two floats per channel */
        return (s = read_tensor(L, c->bn, "folded_scale", 1, shape, scale)) ? s
                                                                          : read_tensor(L, c->bn, "folded_bias", 1, shape, bias);
    size_t n = (size_t)c->cout;
    float *g = malloc(4 * n * sizeof(float));
    if (!g) return lsq_fail(L->err, LSQ_ERR_NOMEM, "out of memory");
    float *beta = g + n, *mean = g + 2 * n, *var = g + 3 * n;
    if ((s = read_tensor(L, c->bn, "weight", 1, shape, g)) || (s = read_tensor(L, c->bn, "bias", 1, shape, beta)) ||
        (s = read_tensor(L, c->bn, "running_mean", 1, shape, mean)) ||
        (s = read_tensor(L, c->bn, "running_var", 1, shape, var)))
        goto done;
    for (size_t o = 0; o < n; o++) {
        if (var[o] < 0.f) {
            char name[160];
            tensor_name(L, c->bn, "running_var", name, sizeof name);
            s = lsq_fail(L->err, LSQ_ERR_TENSOR, "%s: tensor '%s': negative variance %g at index %zu", L->m->path,
                         name, var[o], o);
            goto done;
        }
        double inv = (double)g[o] / sqrt((double)var[o] + L->m->def.bn_eps);
        scale[o] = (float)inv;
        bias[o] = (float)((double)beta[o] - (double)mean[o] * inv);
    }
done:
    free(g);
    return s;
}

/* ==== quantizers ==============================================================================
 * A quantized checkpoint (models/lsqnet/quant.py's latent-float form) carries, per conv/linear,
 * <module>.input_quant.scale/offset [1] and per weight <module>[.<split>].weight_quant.scale [Cout]
 * or [1] (only [1] under per-tensor configurations, +pt). Each layer's bits, grid and scale
 * granularity come from lsq_conv_qlayer. Hostile values (zero, negative or non-finite scales,
 * non-finite offsets) are refused. */

static lsq_status read_quant_tensor(loader *L, const char *module, const char *field, int n, float *dst)
{
    char name[160];
    tensor_name(L, module, field, name, sizeof name);
    const lsq_st_tensor *t = lsq_st_find(L->f, name);
    int64_t shape[1] = {n}, one[1] = {1};
    lsq_status s;
    if (t && t->ndim == 1 && t->shape[0] == 1 && n > 1) { /* per-tensor scale: broadcast */
        if ((s = lsq_st_read_f32(L->f, name, 1, one, dst, L->err))) return s;
        for (int i = 1; i < n; i++) dst[i] = dst[0];
    } else if ((s = lsq_st_read_f32(L->f, name, 1, shape, dst, L->err))) {
        return s;
    }
    if (!strcmp(field + strlen(field) - 5, "scale"))
        for (int i = 0; i < n; i++)
            if (!(dst[i] > 0.f))
                return lsq_fail(L->err, LSQ_ERR_TENSOR, "%s: tensor '%s': scale %g at index %d is not positive",
                                L->m->path, name, dst[i], i);
    return LSQ_OK;
}

lsq_qlayer lsq_conv_qlayer(const lsq_qconfig *qc, const lsq_net_def *d, const lsq_conv_def *c)
{
    lsq_qrole role = !strcmp(c->name, d->stem.name)         ? LSQ_QROLE_FIRST
                     : !strcmp(c->name, d->classifier.name) ? LSQ_QROLE_LAST
                                                            : LSQ_QROLE_INNER;
    return lsq_qconfig_layer(qc, c->name, role);
}

/* Bits and grid of a conv's quantizers (lsq_conv_qlayer). */
static void quant_roles(const lsq_qconfig *qc, const lsq_net_def *d, const lsq_conv_def *c, lsq_conv *out)
{
    lsq_qlayer l = lsq_conv_qlayer(qc, d, c);
    out->w_bits = l.w_bits;
    out->w_per_channel = l.per_channel;
    out->in_offset = l.a_offset;
    lsq_act_quant_init(&out->in, l.a_bits, l.a_signed);
}

typedef struct {
    const char *pattern;
    int hits;
} rule_match;

static lsq_status count_match(void *ctx, lsq_conv_def *c)
{
    rule_match *r = ctx;
    r->hits += !fnmatch(r->pattern, c->name, 0);
    return LSQ_OK;
}

lsq_status lsq_qconfig_check(const lsq_qconfig *qc, const lsq_net_def *d, const char *path, lsq_error *err)
{
    for (int i = 0; i < qc->nrules; i++) {
        rule_match r = {qc->rule[i].pattern, 0};
        arch_foreach_conv((lsq_net_def *)d, count_match, &r);
        if (!r.hits)
            return lsq_fail(err, LSQ_ERR_ARG, "%s: configuration '%s': layer pattern '%s' matches no conv or linear "
                            "layer of %s (timm module names, e.g. blocks.1.0.conv_dw)", path, qc->name, r.pattern,
                            d->arch);
    }
    return LSQ_OK;
}

static lsq_status load_input_quant(loader *L, const lsq_conv_def *c, lsq_conv *out)
{
    float v;
    lsq_status s;
    if ((s = read_quant_tensor(L, c->name, "input_quant.scale", 1, &v))) return s;
    out->in.scale = v;
    if ((s = read_quant_tensor(L, c->name, "input_quant.offset", 1, &v))) return s;
    if (!out->in_offset && v != 0.f) {
        char name[160];
        tensor_name(L, c->name, "input_quant.offset", name, sizeof name);
        return lsq_fail(L->err, LSQ_ERR_TENSOR, "%s: tensor '%s': offset %g in an LSQ (-lsq) configuration, must be 0",
                        L->m->path, name, v);
    }
    out->in.offset = v;
    return LSQ_OK;
}

/* The weight codes and per-channel scales of one conv part: unpacked from the deployable form
 * (<module>.weight_codes, exactly ceil(n * bits / 8) bytes in the weight's row-major order, quant.py's
 * pack_codes), or computed from the latent float weights exactly as the trainer's WeightQuantizer
 * does. */
static lsq_status weight_codes(loader *L, const char *module, const lsq_conv *out, int64_t shape[4], int ndim,
                               int8_t *codes, float *sw)
{
    int cout = (int)shape[0];
    size_t per = (size_t)shape[1] * shape[2] * shape[3], n = (size_t)cout * per;
    lsq_status s;
    char name[160];
    if (!out->w_per_channel) { /* +pt: exactly one scale, [1] */
        tensor_name(L, module, "weight_quant.scale", name, sizeof name);
        const lsq_st_tensor *st = lsq_st_find(L->f, name);
        if (st && !(st->ndim == 1 && st->shape[0] == 1))
            return lsq_fail(L->err, LSQ_ERR_TENSOR, "%s: tensor '%s': expected shape [1] (per-tensor weight scales, "
                            "configuration '%s')", L->m->path, name, L->m->qc.name);
    }
    if ((s = read_quant_tensor(L, module, "weight_quant.scale", cout, sw))) return s;
    tensor_name(L, module, "weight_codes", name, sizeof name);
    const lsq_st_tensor *t = lsq_st_find(L->f, name);
    if (t) {
        size_t need = lsq_packed_bytes(n, out->w_bits);
        if (t->dtype != LSQ_ST_U8 || t->ndim != 1 || t->nbytes != need)
            return lsq_fail(L->err, LSQ_ERR_TENSOR,
                            "%s: tensor '%s': expected U8 [%zu] (%zu codes at %d bits), found %s with %zu bytes",
                            L->m->path, name, need, n, out->w_bits, lsq_st_dtype_name(t->dtype), t->nbytes);
        lsq_unpack_codes(t->data, n, out->w_bits, 1, codes);
        L->m->num_params += (int64_t)n;
        return LSQ_OK;
    }
    float *w = malloc(n * sizeof(float));
    if (!w) return lsq_fail(L->err, LSQ_ERR_NOMEM, "out of memory");
    if (!(s = read_tensor(L, module, "weight", ndim, shape, w)))
        for (int o = 0; o < cout; o++)
            for (size_t i = 0; i < per; i++)
                codes[(size_t)o * per + i] = (int8_t)lsq_weight_code(w[(size_t)o * per + i], sw[o], out->w_bits);
    free(w);
    return s;
}

/* The integer path's per-channel constants of one part (model.h). */
static void integer_constants(lsq_conv *out, const lsq_conv_part *pt, const int8_t *codes, size_t per,
                              const float *sw, const float *scale)
{
    for (int j = 0; j < pt->cout; j++) {
        int o = pt->out_off + j;
        int32_t ws = 0;
        for (size_t i = 0; i < per; i++) ws += codes[(size_t)j * per + i];
        double m = (double)sw[j] * scale[o];
        out->qmult[o] = (float)(m * out->in.scale);
        out->qcoef[o] = (float)(m * out->in.offset);
        out->qadd[o] = (float)((double)out->bias[o] + m * out->in.offset * ws);
        if (out->qibias) out->qibias[o] = out->in.qmin * ws;
    }
}

static lsq_status load_conv(loader *L, const lsq_conv_def *c, lsq_conv *out)
{
    lsq_status s = LSQ_OK;
    const int quantized = L->m->qc.quantized;
    out->def = c;
    float *scale = malloc((size_t)c->cout * sizeof(float)), *raw = NULL, *tmp = NULL, *sw = NULL;
    int8_t *codes = NULL, *tmp8 = NULL;
    out->bias = lsq_alloc((size_t)c->cout * sizeof(float));
    if (!scale || !out->bias) goto nomem;
    if ((s = read_scale_bias(L, c, scale, out->bias))) goto done;
    if (quantized) {
        quant_roles(&L->m->qc, &L->m->def, c, out);
        if ((s = load_input_quant(L, c, out))) goto done;
        out->qmult = lsq_alloc((size_t)c->cout * sizeof(float));
        out->qadd = lsq_alloc((size_t)c->cout * sizeof(float));
        out->qcoef = lsq_alloc((size_t)c->cout * sizeof(float));
        if (!out->qmult || !out->qadd || !out->qcoef) goto nomem;
        if (out->in.qmin && !(out->qibias = lsq_alloc((size_t)c->cout * sizeof(int32_t)))) goto nomem;
    }
    for (int p = 0; p < c->nparts; p++) {
        const lsq_conv_part *pt = &c->part[p];
        int k = pt->k, cin = c->depthwise ? 1 : pt->cin, cout = pt->cout;
        size_t n = (size_t)cout * cin * k * k, per = (size_t)cin * k * k;
        free(raw), free(codes), free(sw);
        raw = malloc(n * sizeof(float));
        codes = malloc(n ? n : 1);
        sw = malloc((size_t)cout * sizeof(float));
        if (!raw || !codes || !sw) goto nomem;
        char module[LSQ_NAME_LEN + 8];
        if (c->mixed) snprintf(module, sizeof module, "%s.%d", c->name, p);
        else snprintf(module, sizeof module, "%s", c->name);
        int64_t shape4[4] = {cout, cin, k, k};
        if (quantized) {
            /* the float reference path runs on s_w * w_q; the integer path on w_q */
            if ((s = weight_codes(L, module, out, shape4, c->linear ? 2 : 4, codes, sw))) goto done;
            for (int o = 0; o < cout; o++)
                for (size_t i = 0; i < per; i++) raw[(size_t)o * per + i] = sw[o] * (float)codes[(size_t)o * per + i];
            integer_constants(out, pt, codes, per, sw, scale);
        } else if ((s = read_tensor(L, module, "weight", c->linear ? 2 : 4, shape4, raw))) {
            goto done;
        }
        const float *sc = scale + pt->out_off;
        if (c->depthwise) {
            float *w = out->w[p] = lsq_alloc(n * sizeof(float));
            if (!w) goto nomem;
            for (int ch = 0; ch < cout; ch++)
                for (int t = 0; t < k * k; t++) w[(size_t)t * cout + ch] = raw[(size_t)ch * k * k + t] * sc[ch];
            if (quantized) {
                int8_t *q = out->qw[p] = lsq_alloc(n);
                if (!q) goto nomem;
                for (int ch = 0; ch < cout; ch++)
                    for (int t = 0; t < k * k; t++) q[(size_t)t * cout + ch] = codes[(size_t)ch * k * k + t];
            }
        } else {
            /* dense: GEMM B [K = cin*k*k in (ky, kx, c) order][N = cout] */
            int K = cin * k * k;
            float *grown = realloc(tmp, (size_t)K * cout * sizeof(float));
            if (!grown) goto nomem; /* tmp is still ours: freed at nomem */
            tmp = grown;
            for (int o = 0; o < cout; o++)
                for (int ci = 0; ci < cin; ci++)
                    for (int t = 0; t < k * k; t++)
                        tmp[(size_t)o * K + t * cin + ci] = raw[(((size_t)o * cin + ci) * k * k) + t] * sc[o];
            out->w[p] = lsq_alloc(lsq_gemm_packed_floats(K, cout) * sizeof(float));
            if (!out->w[p]) goto nomem;
            lsq_gemm_pack(tmp, K, K, cout, out->w[p]);
            if (quantized) {
                int8_t *grown8 = realloc(tmp8, (size_t)K * cout);
                if (!grown8) goto nomem;
                tmp8 = grown8;
                out->qw[p] = lsq_alloc(lsq_q8_packed_bytes(K, cout));
                if (!out->qw[p]) goto nomem;
                for (int o = 0; o < cout; o++)
                    for (int ci = 0; ci < cin; ci++)
                        for (int t = 0; t < k * k; t++)
                            tmp8[(size_t)o * K + t * cin + ci] = codes[(((size_t)o * cin + ci) * k * k) + t];
                lsq_q8_pack(tmp8, K, K, cout, out->qw[p]);
            }
        }
    }
    goto done;
nomem:
    s = lsq_fail(L->err, LSQ_ERR_NOMEM, "out of memory loading %s", c->name);
done:
    free(scale);
    free(raw);
    free(tmp);
    free(sw);
    free(codes);
    free(tmp8);
    return s;
}

static void conv_free(lsq_conv *c)
{
    for (int p = 0; p < LSQ_MAX_PARTS; p++) lsq_free(c->w[p]), lsq_free(c->qw[p]);
    lsq_free(c->bias);
    lsq_free(c->qmult), lsq_free(c->qadd), lsq_free(c->qcoef), lsq_free(c->qibias);
    memset(c, 0, sizeof *c);
}

/* ==== metadata ================================================================================= */

static lsq_status parse_labels(lsq_model *m, const char *json, lsq_error *err)
{
    json_error_t je;
    json_t *arr = json_loads(json, 0, &je);
    lsq_status s = LSQ_OK;
    if (!json_is_array(arr) || (int)json_array_size(arr) != m->def.num_classes) {
        s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: metadata 'labels' must be a JSON array of %d strings", m->path,
                     m->def.num_classes);
        goto done;
    }
    m->labels = calloc((size_t)m->def.num_classes, sizeof(char *));
    if (!m->labels) {
        s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < m->def.num_classes; i++) {
        const char *v = json_string_value(json_array_get(arr, (size_t)i));
        if (!v) {
            s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: metadata 'labels'[%d] is not a string", m->path, i);
            goto done;
        }
        if (!(m->labels[i] = strdup(v))) {
            s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
done:
    json_decref(arr);
    return s;
}

static lsq_status parse_preprocess(lsq_model *m, const char *json, lsq_error *err)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    lsq_preprocess *p = &m->preprocess;
    lsq_status s = LSQ_OK;
    if (!json_is_object(o)) {
        s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: metadata 'preprocess' is not a JSON object", m->path);
        goto done;
    }
    json_t *v;
    if ((v = json_object_get(o, "input_size"))) p->input_size = (int)json_integer_value(v);
    if ((v = json_object_get(o, "resize_size"))) p->resize_size = (int)json_integer_value(v);
    if ((v = json_object_get(o, "crop_pct"))) p->crop_pct = (float)json_number_value(v);
    if ((v = json_object_get(o, "grayscale"))) p->grayscale = json_is_true(v);
    if ((v = json_object_get(o, "interpolation"))) {
        const char *i = json_string_value(v);
        if (i && !strcmp(i, "bilinear")) p->interp = LSQ_INTERP_BILINEAR;
        else if (i && !strcmp(i, "bicubic")) p->interp = LSQ_INTERP_BICUBIC;
        else if (i && !strcmp(i, "nearest")) p->interp = LSQ_INTERP_NEAREST;
        else {
            s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: metadata 'preprocess': unknown interpolation", m->path);
            goto done;
        }
    }
    const char *keys[2] = {"mean", "std"};
    float *dst[2] = {p->mean, p->std};
    for (int k = 0; k < 2; k++) {
        if (!(v = json_object_get(o, keys[k]))) continue;
        if (!json_is_array(v) || json_array_size(v) != 3) {
            s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: metadata 'preprocess': '%s' must be 3 numbers", m->path, keys[k]);
            goto done;
        }
        for (int c = 0; c < 3; c++) dst[k][c] = (float)json_number_value(json_array_get(v, (size_t)c));
    }
    if (p->input_size < 32 || p->input_size > 4096 || p->resize_size < 0 || p->resize_size > 8192 ||
        !(p->crop_pct > 0.f && p->crop_pct <= 1.f) || !(p->std[0] > 0 && p->std[1] > 0 && p->std[2] > 0))
        s = lsq_fail(err, LSQ_ERR_FORMAT,
                     "%s: metadata 'preprocess' out of range (input_size 32..4096, crop_pct in (0, 1], std > 0)",
                     m->path);
done:
    json_decref(o);
    return s;
}

static char *describe_tensors(const lsq_st_file *f)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    buf[0] = 0;
    for (int i = 0; i < lsq_st_count(f); i++) {
        const lsq_st_tensor *t = lsq_st_get(f, i);
        char line[256];
        int n = snprintf(line, sizeof line, "  %-56s %-5s [", t->name, lsq_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim && n < (int)sizeof line - 24; d++)
            n += snprintf(line + n, sizeof line - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        n += snprintf(line + n, sizeof line - n, "]\n");
        if (len + (size_t)n + 1 > cap) {
            char *nb = realloc(buf, cap * 2 + (size_t)n);
            if (!nb) return buf;
            buf = nb;
            cap = cap * 2 + (size_t)n;
        }
        memcpy(buf + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    return buf;
}

/* ==== load ===================================================================================== */

static int metadata_int(const lsq_st_file *f, const char *key, int dflt)
{
    const char *v = lsq_st_metadata(f, key);
    return v ? atoi(v) : dflt;
}

lsq_status lsq_model_load(const char *path, const lsq_load_options *opt, lsq_model **out, lsq_error *err)
{
    *out = NULL;
    lsq_st_file *f = NULL;
    lsq_status s = lsq_st_open(path, &f, err);
    if (s) return s;
    lsq_model *m = calloc(1, sizeof *m);
    if (!m) {
        lsq_st_close(f);
        return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    m->file_bytes = lsq_st_file_size(f);
    /* Configuration: the caller's, else the file's. A quantized configuration must be the one the
     * file was trained (or calibrated) for; "fp32" runs any file's latent float weights. */
    const char *file_config = lsq_st_metadata(f, "config");
    const char *config = opt && opt->config ? opt->config : file_config ? file_config : "fp32";
    if ((s = lsq_qconfig_parse(config, &m->qc, err))) goto fail;
    /* the same configuration, compared by canonical name ("w4a4+fl8" is "w4a4") */
    lsq_qconfig fqc;
    lsq_error ferr;
    int same = file_config && !lsq_qconfig_parse(file_config, &fqc, &ferr) && !strcmp(fqc.name, m->qc.name);
    if (m->qc.quantized && !same) {
        s = lsq_fail(err, LSQ_ERR_UNSUPPORTED,
                     "%s: configuration '%s' needs a checkpoint quantized for it; this file is %s%s%s", path, config,
                     file_config ? "quantized for '" : "a float checkpoint", file_config ? file_config : "",
                     file_config ? "'" : "");
        goto fail;
    }
    snprintf(m->config, sizeof m->config, "%s", m->qc.name);

    /* Architecture: the file's metadata, or the caller's; both present must agree. */
    const char *file_arch = lsq_st_metadata(f, "arch");
    const char *want = opt ? opt->arch : NULL;
    if (file_arch && want && strcmp(file_arch, want)) {
        s = lsq_fail(err, LSQ_ERR_ARCH, "%s: the file's metadata says arch '%s', but '%s' was requested", path,
                     file_arch, want);
        goto fail;
    }
    const char *arch = file_arch ? file_arch : want;
    if (!arch) {
        s = lsq_fail(err, LSQ_ERR_ARCH,
                     "%s: no architecture: the file has no __metadata__ 'arch' key; pass one (--arch, e.g. "
                     "efficientnet_b0)",
                     path);
        goto fail;
    }
    const char *fv = lsq_st_metadata(f, "format_version");
    if (fv && atoi(fv) > LSQ_FORMAT_VERSION) {
        s = lsq_fail(err, LSQ_ERR_FORMAT, "%s: format_version %s is newer than this engine's (%d)", path, fv,
                     LSQ_FORMAT_VERSION);
        goto fail;
    }

    loader L = {.m = m, .f = f, .err = err};
    L.torchvision = lsq_st_find(f, "features.0.0.weight") != NULL;
    /* classes: metadata, else the classifier's shape */
    const lsq_st_tensor *cls = lsq_st_find(f, L.torchvision ? "classifier.1.weight" : "classifier.weight");
    int num_classes = metadata_int(f, "num_classes", cls && cls->ndim == 2 ? (int)cls->shape[0] : 0);
    if (num_classes <= 0 || num_classes > 1000000) {
        s = lsq_fail(err, LSQ_ERR_TENSOR, "%s: cannot tell the number of classes (no 'num_classes' metadata and no "
                                          "2-D classifier.weight)", path);
        goto fail;
    }
    if ((s = arch_build(arch, num_classes, &m->def, err))) goto fail;
    if (L.torchvision && (m->def.tf_same || strncmp(m->def.arch, "efficientnet_", 13))) {
        s = lsq_fail(err, LSQ_ERR_ARCH, "%s: torchvision tensor names are only understood for efficientnet_b*",
                     path);
        goto fail;
    }
    if ((s = lsq_qconfig_check(&m->qc, &m->def, path, err))) goto fail;
    L.tv_head_stage = 8;
    m->preprocess = m->def.preprocess;

    m->blocks = calloc((size_t)m->def.nblocks, sizeof *m->blocks);
    if (!m->blocks) {
        s = lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((s = load_conv(&L, &m->def.stem, &m->stem))) goto fail;
    for (int i = 0; i < m->def.nblocks; i++) {
        lsq_block_def *bd = &m->def.blocks[i];
        lsq_block *b = &m->blocks[i];
        if (bd->has_expand && (s = load_conv(&L, &bd->expand, &b->expand))) goto fail;
        if ((s = load_conv(&L, &bd->dw, &b->dw))) goto fail;
        if (bd->has_se && ((s = load_conv(&L, &bd->se_reduce, &b->se_reduce)) ||
                           (s = load_conv(&L, &bd->se_expand, &b->se_expand))))
            goto fail;
        if ((s = load_conv(&L, &bd->project, &b->project))) goto fail;
    }
    if ((s = load_conv(&L, &m->def.head, &m->head))) goto fail;
    if ((s = load_conv(&L, &m->def.classifier, &m->classifier))) goto fail;

    const char *v;
    if ((v = lsq_st_metadata(f, "labels")) && (s = parse_labels(m, v, err))) goto fail;
    if ((v = lsq_st_metadata(f, "preprocess")) && (s = parse_preprocess(m, v, err))) goto fail;

    json_t *meta = json_object();
    for (int i = 0; meta && i < lsq_st_metadata_count(f); i++) {
        const char *k = lsq_st_metadata_key(f, i);
        json_object_set_new(meta, k, json_string(lsq_st_metadata(f, k)));
    }
    m->metadata_json = meta ? json_dumps(meta, JSON_SORT_KEYS | JSON_INDENT(2)) : NULL;
    json_decref(meta);
    m->tensors_desc = describe_tensors(f);
    lsq_st_close(f);
    *out = m;
    return LSQ_OK;
fail:
    lsq_st_close(f);
    lsq_model_free(m);
    return s;
}

void lsq_model_free(lsq_model *m)
{
    if (!m) return;
    conv_free(&m->stem);
    conv_free(&m->head);
    conv_free(&m->classifier);
    if (m->blocks) {
        for (int i = 0; i < m->def.nblocks; i++) {
            lsq_block *b = &m->blocks[i];
            conv_free(&b->expand);
            conv_free(&b->dw);
            conv_free(&b->se_reduce);
            conv_free(&b->se_expand);
            conv_free(&b->project);
        }
    }
    free(m->blocks);
    if (m->labels)
        for (int i = 0; i < m->def.num_classes; i++) free(m->labels[i]);
    free(m->labels);
    free(m->metadata_json);
    free(m->tensors_desc);
    arch_free(&m->def);
    free(m);
}

/* ==== accessors ================================================================================ */

const char *lsq_model_arch(const lsq_model *m) { return m->def.arch; }
const char *lsq_model_config(const lsq_model *m) { return m->config; }
int lsq_model_num_classes(const lsq_model *m) { return m->def.num_classes; }
const lsq_preprocess *lsq_model_preprocess(const lsq_model *m) { return &m->preprocess; }
int64_t lsq_model_num_params(const lsq_model *m) { return m->num_params; }
int64_t lsq_model_file_bytes(const lsq_model *m) { return m->file_bytes; }

const char *lsq_model_label(const lsq_model *m, int index)
{
    static __thread char fallback[32];
    if (m->labels && index >= 0 && index < m->def.num_classes) return m->labels[index];
    snprintf(fallback, sizeof fallback, "class_%d", index);
    return fallback;
}

static const char *act_name(lsq_act a) { return a == LSQ_ACT_RELU ? "relu" : a == LSQ_ACT_SWISH ? "swish" : a == LSQ_ACT_SIGMOID ? "sigmoid" : "-"; }

static size_t conv_line(const lsq_conv_def *c, char *buf, size_t len)
{
    int n = snprintf(buf, len, "  %-26s %s %4d -> %4d  s%d  k", c->name, c->depthwise ? "dw" : c->linear ? "fc" : "pw",
                     c->cin, c->cout, c->stride);
    for (int p = 0; p < c->nparts; p++) n += snprintf(buf + n, len > (size_t)n ? len - n : 0, "%s%d", p ? "." : "", c->part[p].k);
    n += snprintf(buf + n, len > (size_t)n ? len - n : 0, "  %s\n", act_name(c->act));
    return (size_t)n;
}

typedef struct {
    char *buf;
    size_t len, n;
} sbuf;

static lsq_status describe_conv(void *ctx, lsq_conv_def *c)
{
    sbuf *b = ctx;
    char line[256];
    size_t n = conv_line(c, line, sizeof line);
    if (b->n + n < b->len) memcpy(b->buf + b->n, line, n + 1);
    b->n += n;
    return LSQ_OK;
}

size_t lsq_model_describe(const lsq_model *m, char *buf, size_t len)
{
    sbuf b = {buf, len, 0};
    char head[1024];
    const lsq_preprocess *p = &m->preprocess;
    static const char *interp[] = {"bilinear", "bicubic", "nearest"};
    int n = snprintf(head, sizeof head,
                     "file:        %s (%lld bytes)\narch:        %s%s\nconfig:      %s\nclasses:     %d\n"
                     "parameters:  %lld\nblocks:      %d\npreprocess:  input %d, crop_pct %.3f, %s, mean %.3f %.3f "
                     "%.3f, std %.3f %.3f %.3f%s\nlayers:\n",
                     m->path, (long long)m->file_bytes, m->def.arch, m->def.tf_same ? " (TF SAME padding, BN eps 1e-3)" : "",
                     m->config, m->def.num_classes, (long long)m->num_params, m->def.nblocks, p->input_size,
                     p->crop_pct, interp[p->interp], p->mean[0], p->mean[1], p->mean[2], p->std[0], p->std[1], p->std[2],
                     p->grayscale ? ", grayscale" : "");
    if (len) buf[0] = 0;
    if ((size_t)n < len) memcpy(buf, head, (size_t)n + 1);
    b.n = (size_t)n;
    arch_foreach_conv((lsq_net_def *)&m->def, describe_conv, &b);
    const char *parts[4] = {"metadata:\n", m->metadata_json ? m->metadata_json : "{}", "\ntensors:\n",
                            m->tensors_desc ? m->tensors_desc : ""};
    for (int i = 0; i < 4; i++) {
        size_t k = strlen(parts[i]);
        if (b.n + k < len) memcpy(buf + b.n, parts[i], k + 1);
        b.n += k;
    }
    return b.n;
}
