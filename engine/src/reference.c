/* reference.c - the quantized reference path: float math reproducing the trainer's quantizers.
 *
 * Every conv/linear input goes through its LSQ+ quantizer, x_hat = s * clamp(round((x - beta) / s))
 * + beta, computed as models/lsqnet/quant.py computes it; weights are s_w * w_q (model.c), with
 * BatchNorm folded after quantization. The quantized tensor is zero-padded by the convolution, as
 * PyTorch pads the fake-quantized tensor with real 0.0. Straightforward on purpose: one thread,
 * no fusion, every intermediate tensor materialised. It is what the integer path is checked
 * against, and it serves quantized checkpoints until the integer path exists.
 *
 * With an observer set (lsq_ref_set_observer) the quantizers are switched off and every
 * conv/linear input is handed to the observer instead: the float forward pass LSQ+ calibration
 * needs (calib.c), which also runs on an FP32 model.
 */
#include "reference.h"

#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "util.h"

struct lsq_ref {
    const lsq_model *m;
    const lsq_kernels *k;
    int H, W;
    float *x, *e, *d, *q; /* stream, expanded, depthwise out, quantized copy: NHWC */
    float *col;           /* stem im2col */
    float *pooled, *hidden, *gate, *feat;
    size_t maxact;
    lsq_trace_fn trace;
    void *trace_user;
    lsq_ref_observe_fn observe; /* set: run the float network, quantizers off (calibration) */
    void *observe_user;
};

/* x_hat = s * code + offset of the input of conv c (and the trace's codes and pre-rounding values). */
static void fake_quant(const lsq_ref *r, const lsq_conv *c, const float *in, float *out, size_t n)
{
    const lsq_act_quant *q = &c->in;
    if (r->observe) { /* calibration: the float network, each quantizer's input handed over as it is */
        r->observe(r->observe_user, c->def, in, n);
        if (out != in) memcpy(out, in, n * sizeof(float));
        return;
    }
    int32_t *codes = NULL;
    float *u = NULL;
    if (r->trace && (codes = malloc((n ? n : 1) * sizeof(int32_t))) && (u = malloc((n ? n : 1) * sizeof(float))))
        for (size_t i = 0; i < n; i++) {
            u[i] = (in[i] - q->offset) / q->scale;
            codes[i] = (int32_t)lsq_act_quant_code(q, in[i]);
        }
    for (size_t i = 0; i < n; i++) out[i] = q->scale * lsq_act_quant_code(q, in[i]) + q->offset;
    if (codes && u) r->trace(r->trace_user, c->def->name, codes, u, n);
    free(codes);
    free(u);
}

void lsq_ref_set_trace(lsq_ref *r, lsq_trace_fn fn, void *user)
{
    r->trace = fn;
    r->trace_user = user;
}

void lsq_ref_set_observer(lsq_ref *r, lsq_ref_observe_fn fn, void *user)
{
    r->observe = fn;
    r->observe_user = user;
}

lsq_status lsq_ref_create(const lsq_model *m, int H, int W, lsq_ref **out, lsq_error *err)
{
    const lsq_net_def *d = &m->def;
    lsq_ref *r = calloc(1, sizeof *r);
    if (!r) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    r->m = m;
    r->k = lsq_kernels_best();
    r->H = H;
    r->W = W;
    int k = d->stem.part[0].k, h, w, pad;
    arch_conv_geometry(d->tf_same, H, k, d->stem.stride, &h, &pad);
    arch_conv_geometry(d->tf_same, W, k, d->stem.stride, &w, &pad);
    size_t maxact = LSQ_MAX((size_t)H * W * 3, (size_t)h * w * d->stem.cout);
    size_t col = (size_t)h * w * 3 * k * k;
    int cmax = d->num_features;
    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *b = &d->blocks[i];
        maxact = LSQ_MAX(maxact, (size_t)h * w * b->dw.cin);
        int oh, ow;
        arch_conv_geometry(d->tf_same, h, b->dw.part[0].k, b->dw.stride, &oh, &pad);
        arch_conv_geometry(d->tf_same, w, b->dw.part[0].k, b->dw.stride, &ow, &pad);
        h = oh, w = ow;
        maxact = LSQ_MAX(maxact, (size_t)h * w * LSQ_MAX(b->dw.cout, b->project.cout));
        cmax = LSQ_MAX(cmax, b->dw.cin);
    }
    maxact = LSQ_MAX(maxact, (size_t)h * w * d->num_features);
    r->maxact = maxact;
    r->x = lsq_alloc(maxact * sizeof(float));
    r->e = lsq_alloc(maxact * sizeof(float));
    r->d = lsq_alloc(maxact * sizeof(float));
    r->q = lsq_alloc(LSQ_MAX(maxact, col) * sizeof(float));
    r->col = lsq_alloc(col * sizeof(float));
    r->pooled = lsq_alloc((size_t)cmax * sizeof(float));
    r->hidden = lsq_alloc((size_t)cmax * sizeof(float));
    r->gate = lsq_alloc((size_t)cmax * sizeof(float));
    r->feat = lsq_alloc((size_t)cmax * sizeof(float));
    if (!r->x || !r->e || !r->d || !r->q || !r->col || !r->pooled || !r->hidden || !r->gate || !r->feat) {
        lsq_ref_free(r);
        return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory planning the reference path");
    }
    *out = r;
    return LSQ_OK;
}

void lsq_ref_free(lsq_ref *r)
{
    if (!r) return;
    lsq_free(r->x), lsq_free(r->e), lsq_free(r->d), lsq_free(r->q), lsq_free(r->col);
    lsq_free(r->pooled), lsq_free(r->hidden), lsq_free(r->gate), lsq_free(r->feat);
    free(r);
}

/* A pointwise conv (or the linear classifier with M = 1) of an already quantized NHWC input. */
static void pointwise(const lsq_ref *r, const lsq_conv *c, const float *in, int M, float *out, const float *res)
{
    const lsq_conv_def *d = c->def;
    for (int p = 0; p < d->nparts; p++) {
        const lsq_conv_part *pt = &d->part[p];
        lsq_gemm_args g = {.M = M, .N = pt->cout, .K = pt->cin, .A = in + pt->in_off, .lda = d->cin, .B = c->w[p],
                           .bias = c->bias + pt->out_off, .C = out + pt->out_off, .ldc = d->cout,
                           .R = res ? res + pt->out_off : NULL, .ldr = d->cout, .act = d->act};
        r->k->f32_gemm(&g, 0, M);
    }
}

void lsq_ref_run(lsq_ref *r, const float *input, float *logits)
{
    const lsq_model *m = r->m;
    const lsq_net_def *d = &m->def;
    int H = r->H, W = r->W;

    /* the network input: quantize (signed 8-bit), then the stem conv pads with real zeros */
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < H * W; i++) r->q[(size_t)i * 3 + c] = input[(size_t)c * H * W + i];
    fake_quant(r, &m->stem, r->q, r->q, (size_t)H * W * 3);
    int k = d->stem.part[0].k, S = d->stem.stride, OH, OW, pt, pl;
    arch_conv_geometry(d->tf_same, H, k, S, &OH, &pt);
    arch_conv_geometry(d->tf_same, W, k, S, &OW, &pl);
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    int iy = oy * S - pt + ky, ix = ox * S - pl + kx;
                    int in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                    for (int c = 0; c < 3; c++)
                        r->col[((size_t)oy * OW + ox) * 3 * k * k + (ky * k + kx) * 3 + c] =
                            in ? r->q[((size_t)iy * W + ix) * 3 + c] : 0.f;
                }
    lsq_gemm_args g = {.M = OH * OW, .N = d->stem.cout, .K = 3 * k * k, .A = r->col, .lda = 3 * k * k,
                       .B = m->stem.w[0], .bias = m->stem.bias, .C = r->x, .ldc = d->stem.cout, .act = d->stem.act};
    r->k->f32_gemm(&g, 0, g.M);
    H = OH, W = OW;

    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *bd = &d->blocks[i];
        const lsq_block *b = &m->blocks[i];
        size_t n_in = (size_t)H * W * bd->dw.cin;
        const float *dw_src = r->x;
        if (bd->has_expand) {
            fake_quant(r, &b->expand, r->x, r->q, (size_t)H * W * bd->expand.cin);
            pointwise(r, &b->expand, r->q, H * W, r->e, NULL);
            dw_src = r->e;
        }
        fake_quant(r, &b->dw, dw_src, r->q, n_in);
        int oh = 0, ow = 0;
        for (int p = 0; p < bd->dw.nparts; p++) {
            const lsq_conv_part *part = &bd->dw.part[p];
            int ptop, pleft;
            arch_conv_geometry(d->tf_same, H, part->k, bd->dw.stride, &oh, &ptop);
            arch_conv_geometry(d->tf_same, W, part->k, bd->dw.stride, &ow, &pleft);
            lsq_dw_args a = {.in = r->q, .H = H, .W = W, .C = bd->dw.cin, .c0 = part->in_off, .nc = part->cin,
                             .k = part->k, .stride = bd->dw.stride, .pad_t = ptop, .pad_l = pleft, .w = b->dw.w[p],
                             .bias = b->dw.bias + part->out_off, .out = r->d, .OH = oh, .OW = ow, .act = bd->dw.act};
            r->k->f32_dwconv(&a, 0, oh, NULL);
        }
        int M = oh * ow, C = bd->dw.cout;
        if (bd->has_se) {
            memset(r->pooled, 0, (size_t)C * sizeof(float));
            for (int px = 0; px < M; px++)
                for (int c = 0; c < C; c++) r->pooled[c] += r->d[(size_t)px * C + c];
            for (int c = 0; c < C; c++) r->pooled[c] /= (float)M;
            fake_quant(r, &b->se_reduce, r->pooled, r->pooled, (size_t)C);
            pointwise(r, &b->se_reduce, r->pooled, 1, r->hidden, NULL);
            fake_quant(r, &b->se_expand, r->hidden, r->hidden, (size_t)bd->se_reduce.cout);
            pointwise(r, &b->se_expand, r->hidden, 1, r->gate, NULL);
            for (int px = 0; px < M; px++)
                for (int c = 0; c < C; c++) r->d[(size_t)px * C + c] *= r->gate[c];
        }
        fake_quant(r, &b->project, r->d, r->q, (size_t)M * C);
        /* residual add in float, onto the block input */
        pointwise(r, &b->project, r->q, M, r->e, bd->skip ? r->x : NULL);
        float *t = r->x;
        r->x = r->e;
        r->e = t;
        H = oh, W = ow;
    }

    int M = H * W, F = d->num_features;
    fake_quant(r, &m->head, r->x, r->q, (size_t)M * d->head.cin);
    pointwise(r, &m->head, r->q, M, r->e, NULL);
    memset(r->feat, 0, (size_t)F * sizeof(float));
    for (int px = 0; px < M; px++)
        for (int c = 0; c < F; c++) r->feat[c] += r->e[(size_t)px * F + c];
    for (int c = 0; c < F; c++) r->feat[c] /= (float)M;
    fake_quant(r, &m->classifier, r->feat, r->feat, (size_t)F);
    lsq_gemm_args cl = {.M = 1, .N = d->num_classes, .K = F, .A = r->feat, .lda = F, .B = m->classifier.w[0],
                        .bias = m->classifier.bias, .C = logits, .ldc = d->num_classes, .act = LSQ_ACT_NONE};
    r->k->f32_gemm(&cl, 0, 1);
}
