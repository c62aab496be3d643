/* session.c - a model planned for one input size, and the forward pass.
 *
 * Planning computes every layer's output size once and allocates all activation memory up front:
 * three rotating NHWC buffers of the largest activation, the stem's im2col matrix, and small SE
 * scratch. lsq_session_run() never allocates. Each layer runs on the session's thread pool: GEMMs
 * split by rows (or by column panels when there are few rows), depthwise convs by output rows.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model.h"
#include "profile.h"
#include "qexec.h"
#include "reference.h"
#include "threadpool.h"
#include "util.h"

/* Fuse expand and depthwise when the expanded tensor is larger than this (it would not stay in
 * L2 between the two), in bands whose expanded rows take about FUSE_BAND_BYTES. */
#define FUSE_MIN_BYTES ((size_t)1 << 20)
#define FUSE_BAND_BYTES ((size_t)128 << 10)

typedef struct {
    int H, W;   /* block input */
    int OH, OW; /* after the depthwise conv */
    int pad_t[LSQ_MAX_PARTS], pad_l[LSQ_MAX_PARTS];
    int band;   /* > 0: expand and depthwise fused, this many output rows per band */
} block_plan;

struct lsq_session {
    const lsq_model *m;
    lsq_qexec *qx;          /* quantized models: the integer path (qexec.c) ... */
    lsq_ref *ref;           /* ... or the float reference path (reference.c), on request */
    char desc[64];
    const lsq_kernels *k;
    lsq_pool *pool;
    int nthreads;
    int H, W;               /* input */
    int SH, SW, stem_pt, stem_pl; /* stem output and padding */
    block_plan *bp;
    int FH, FW;             /* head input size */
    float *buf[3];          /* activations, NHWC */
    float *col;             /* stem im2col [SH*SW][K] */
    float *chsum;           /* [OH][C] depthwise channel sums per output row (the SE squeeze) */
    float *pooled, *hidden, *gate, *feat;
    size_t mid;             /* > 1 thread: floats into each buffer where the threads' halves meet */
    float *bscaled;         /* projection weights scaled by the SE gate: a copy per thread */
    size_t bscaled_floats;  /* floats per copy */
    float *band;            /* [nthreads][band_floats] expanded rows of a fused block */
    size_t band_floats;
    lsq_prof *prof;         /* LSQ_PROFILE=1, else NULL */
    int cmax;
};

/* ==== parallel helpers ========================================================================= */

/* A GEMM split over the threads by rows or, when there are few, by column panels. With `gate`
 * (the SE excitation, K floats), B is first scaled per input channel, by each thread for itself:
 * a thread splitting by rows scales all of B into its own copy, one splitting by panels just its
 * panels. A copy shared by the threads (each scaling a part, every one then reading all of it)
 * costs more: on the 2-vCPU VMs here a cache line written by the other core takes ~10 ns to
 * arrive, so reading 115 KB of weights the other thread scaled took longer than scaling all 230
 * KB locally. Each thread's B then has the same values as a shared copy would: results do not
 * depend on the split. */
typedef struct {
    const lsq_session *s;
    const lsq_gemm_args *g;
    int by_panels;
    const float *gate;
    float *bbuf;    /* by rows: nthreads copies of B, bstride floats apart; by panels: one */
    size_t bstride;
} gemm_job;

/* dst panels [p0, p1) of packed B (panels of K x LSQ_GEMM_NR floats) = src's times gate[k] */
static void scale_panels(const float *src, const float *gate, float *dst, int K, int p0, int p1)
{
    for (size_t r = (size_t)p0 * K; r < (size_t)p1 * K; r++) {
        const float gk = gate[r % (size_t)K];
        for (int c = 0; c < LSQ_GEMM_NR; c++) dst[r * LSQ_GEMM_NR + c] = src[r * LSQ_GEMM_NR + c] * gk;
    }
}

static void gemm_task(void *ctx, int tid, int n)
{
    const gemm_job *j = ctx;
    const lsq_gemm_args *g = j->g;
    int b, e, npanels = (g->N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR;
    if (!j->by_panels) {
        lsq_pool_range(g->M, 4, tid, n, &b, &e);
        if (b >= e) return;
        lsq_gemm_args sub = *g;
        if (j->gate) {
            sub.B = j->bbuf + (size_t)tid * j->bstride;
            scale_panels(g->B, j->gate, (float *)sub.B, g->K, 0, npanels);
        }
        j->s->k->f32_gemm(&sub, b, e);
        return;
    }
    lsq_pool_range(npanels, 1, tid, n, &b, &e);
    if (b >= e) return;
    lsq_gemm_args sub = *g;
    if (j->gate) {
        scale_panels(g->B, j->gate, j->bbuf, g->K, b, e);
        sub.B = j->bbuf;
    }
    int n0 = b * LSQ_GEMM_NR, n1 = LSQ_MIN(e * LSQ_GEMM_NR, g->N);
    sub.N = n1 - n0;
    sub.B += (size_t)b * g->K * LSQ_GEMM_NR;
    sub.bias = g->bias + n0;
    sub.C = g->C + n0;
    if (g->R) sub.R = g->R + n0;
    j->s->k->f32_gemm(&sub, 0, g->M);
}

/* Few rows (7x7 layers at 224, the classifier): GEMMs split the columns instead. 40 rows per
 * thread was the best threshold on efficientnet_b0 at 2 threads (24: 0.02-0.5 ms slower per run);
 * with place() it still is (12, i.e. 7x7 layers by rows: 0.05-0.25 ms slower, 2026-11-27). */
static int few_rows(const lsq_session *s, int M) { return M < 40 * s->nthreads; }

/* g->B times gate (NULL: none; else scaled into s->bscaled first) */
static void run_gemm(lsq_session *s, const lsq_gemm_args *g, const float *gate)
{
    int npanels = (g->N + LSQ_GEMM_NR - 1) / LSQ_GEMM_NR;
    gemm_job j = {s, g, 0, gate, s->bscaled, s->bscaled_floats};
    j.by_panels = s->nthreads > 1 && few_rows(s, g->M) && npanels >= s->nthreads;
    if (s->nthreads == 1)
        gemm_task(&j, 0, 1);
    else
        lsq_pool_run(s->pool, gemm_task, &j);
}

/* A pointwise (1x1) conv of an NHWC tensor, part by part (MixNet grouped pointwise convs).
 * `gate` (may be NULL) scales the input channels first: the SE excitation. Scaling the packed
 * weights (K x N) instead of the activations (M x K) gives the same product with less work when
 * N < M, which holds in all but the last, smallest layers. */

typedef struct {
    float *x;
    const float *gate;
    int M, C;
} scale_job;

static void scale_task(void *ctx, int tid, int n)
{
    scale_job *j = ctx;
    int b, e;
    lsq_pool_range(j->M, 4, tid, n, &b, &e); /* the rows gemm_task gives this thread */
    for (int m = b; m < e; m++) {
        float *row = j->x + (size_t)m * j->C;
        for (int c = 0; c < j->C; c++) row[c] *= j->gate[c];
    }
}

static size_t max_part_packed(const lsq_conv_def *d)
{
    size_t n = 0;
    for (int p = 0; p < d->nparts; p++) n = LSQ_MAX(n, lsq_gemm_packed_floats(d->part[p].cin, d->part[p].cout));
    return n;
}

static size_t packed_total(const lsq_conv_def *d)
{
    size_t n = 0;
    for (int p = 0; p < d->nparts; p++) n += lsq_gemm_packed_floats(d->part[p].cin, d->part[p].cout);
    return n;
}

static void run_pointwise(lsq_session *s, const lsq_conv *c, float *in, int M, float *out, const float *res,
                          const float *gate)
{
    const lsq_conv_def *d = c->def;
    int fold = gate && packed_total(d) / (size_t)d->cin < (size_t)M;
    if (gate && !fold) {
        scale_job j = {in, gate, M, d->cin};
        lsq_pool_run(s->pool, scale_task, &j);
    }
    for (int p = 0; p < d->nparts; p++) {
        const lsq_conv_part *pt = &d->part[p];
        lsq_gemm_args g = {
            .M = M, .N = pt->cout, .K = pt->cin,
            .A = in + pt->in_off, .lda = d->cin,
            .B = c->w[p], .bias = c->bias + pt->out_off,
            .C = out + pt->out_off, .ldc = d->cout,
            .R = res ? res + pt->out_off : NULL, .ldr = d->cout,
            .act = d->act,
        };
        run_gemm(s, &g, fold ? gate + pt->in_off : NULL);
    }
}

/* All parts of a (mixed) depthwise conv in one fork-join: each thread runs its rows of every part,
 * so a MixNet layer with five kernel sizes costs one barrier, not five.
 * FIXME(2 threads): mixnet_s's 14x14 and 7x7 stages scale worst (expand + depthwise at 2 threads:
 * 0.71x, 0.91x and 0.67x the 1-thread time for stages 3, 4, 5; 2026-11-27). Timing each thread's
 * part of these depthwise jobs (2026-11-27): a thread with 7 of 14 rows took as long as one thread
 * with all 14 (38 vs 44 us, 53-75 vs 70 us), and reading its input rows beforehand took 12-16 us
 * at 2 threads against 3 us at 1, as did touching its output rows: lines last written by the other
 * core. On these VMs that costs ~10 ns a line (in isolation, a 14x14x480 k5 depthwise whose input
 * the other core had just written ran in 123 us instead of 50), and which lines cross depends on
 * how the layers before split the same buffers (row splits of tensors of other sizes, the 7x7
 * layers' column splits). How much it costs also varies from minute to minute (in one run the
 * same layers scaled perfectly: 22 us for 7 rows), as the two vCPUs move on the host. Tried: split
 * by channels instead (each thread expands whole column panels and convolves exactly those
 * channels): the same per stage; the depthwise alone by channels, or rows shared out dynamically:
 * the same; a separate output buffer for every layer, so that no line changes owner between
 * inferences: slower (3.51-4.64 vs 3.39-4.17 ms, 6 rounds), the larger footprint costs more.
 * 7x7 depthwise split by channels, the ones its column-split expansion wrote (efficientnet_b0
 * blocks 5-6: depthwise 0.42-0.45 -> 0.38-0.39 ms), but the projection after it got slower by more
 * (0.65-0.71 -> 0.85 ms; its in-place SE scaling by channels too), 2026-11-27: dropped.
 * Kept: placing every tensor so that the split between the threads falls at the same address of
 * its buffer in every layer (place(), below). What still crosses: the depthwise halo rows, the
 * 7x7 layers split by columns, the SE squeeze and the head's pooling. */
typedef struct {
    lsq_session *s;
    lsq_dw_args a[LSQ_MAX_PARTS];
    int nparts;
    int with_sum;
} dw_job;

static void dw_task(void *ctx, int tid, int n)
{
    dw_job *j = ctx;
    int b, e;
    lsq_pool_range(j->a[0].OH, 1, tid, n, &b, &e);
    if (b >= e) return;
    for (int p = 0; p < j->nparts; p++) {
        float *sum = j->with_sum ? j->s->chsum + j->a[p].c0 : NULL;
        j->s->k->f32_dwconv(&j->a[p], b, e, sum);
    }
}

/* Depthwise conv; when `pooled` is not NULL it receives the per-channel mean of the output. */
static void run_depthwise(lsq_session *s, const lsq_conv *c, const float *in, int H, int W, const block_plan *bp,
                          float *out, float *pooled)
{
    const lsq_conv_def *d = c->def;
    if (pooled) memset(s->chsum, 0, (size_t)bp->OH * d->cout * sizeof(float));
    dw_job j = {.s = s, .nparts = d->nparts, .with_sum = pooled != NULL};
    for (int p = 0; p < d->nparts; p++) {
        const lsq_conv_part *pt = &d->part[p];
        j.a[p] = (lsq_dw_args){.in = in, .H = H, .W = W, .C = d->cin, .c0 = pt->in_off, .nc = pt->cin,
                               .k = pt->k, .stride = d->stride, .pad_t = bp->pad_t[p], .pad_l = bp->pad_l[p],
                               .w = c->w[p], .bias = c->bias + pt->out_off, .out = out, .OH = bp->OH,
                               .OW = bp->OW, .act = d->act};
    }
    lsq_pool_run(s->pool, dw_task, &j);
    if (pooled) lsq_dw_rowsum_mean(s->chsum, bp->OH, bp->OW, d->cout, pooled);
}

/* ==== fused expand + depthwise ==================================================================
 * In early layers the expanded tensor (112x112x96 floats = 4.8 MB in B0's second block) does not
 * fit in L2: writing it out and reading it back for the depthwise conv cost more than the math.
 * Instead each thread walks its output rows in bands and expands only the input rows a band needs
 * into a private buffer that stays in L2 (rows shared with the previous band are kept, moved to
 * the front), then convolves them. Threads recompute the few rows where their ranges meet. */

/* Input rows [*lo, *hi) that output rows [o0, o1) read, over all kernel parts. */
static void band_rows(const lsq_conv_def *dw, const block_plan *bp, int o0, int o1, int *lo, int *hi)
{
    int l = bp->H, h = 0;
    for (int p = 0; p < dw->nparts; p++) {
        l = LSQ_MIN(l, o0 * dw->stride - bp->pad_t[p]);
        h = LSQ_MAX(h, (o1 - 1) * dw->stride - bp->pad_t[p] + dw->part[p].k);
    }
    *lo = LSQ_MAX(l, 0);
    *hi = LSQ_MIN(h, bp->H);
}

/* Most input rows a band of R output rows can need (a bound, for sizing the buffer). */
static int band_rows_max(const lsq_conv_def *dw, const block_plan *bp, int R)
{
    int reach = 0, pad = 0;
    for (int p = 0; p < dw->nparts; p++) {
        reach = LSQ_MAX(reach, dw->part[p].k - bp->pad_t[p]);
        pad = LSQ_MAX(pad, bp->pad_t[p]);
    }
    return LSQ_MIN((R - 1) * dw->stride + reach + pad, bp->H);
}

typedef struct {
    lsq_session *s;
    const lsq_block *b;
    const block_plan *bp;
    const float *in; /* block input, H x W x cin */
    float *out;      /* depthwise output, OH x OW x cexp */
    int with_sum;
} fused_job;

static void fused_task(void *ctx, int tid, int n)
{
    const fused_job *j = ctx;
    lsq_session *s = j->s;
    const lsq_conv_def *ex = j->b->expand.def, *dw = j->b->dw.def;
    const block_plan *bp = j->bp;
    int b, e;
    lsq_pool_range(bp->OH, 1, tid, n, &b, &e);
    float *buf = s->band + (size_t)tid * s->band_floats;
    const size_t rowf = (size_t)bp->W * ex->cout;
    int have_lo = 0, have_hi = 0; /* input rows now in buf */
    for (int o0 = b; o0 < e; o0 += bp->band) {
        int o1 = LSQ_MIN(o0 + bp->band, e), lo, hi;
        band_rows(dw, bp, o0, o1, &lo, &hi);
        int start = lo;
        if (have_hi > lo && have_lo <= lo) {
            memmove(buf, buf + (size_t)(lo - have_lo) * rowf, (size_t)(have_hi - lo) * rowf * sizeof(float));
            start = have_hi;
        }
        for (int p = 0; p < ex->nparts && start < hi; p++) {
            const lsq_conv_part *pt = &ex->part[p];
            lsq_gemm_args g = {
                .M = (hi - start) * bp->W, .N = pt->cout, .K = pt->cin,
                .A = j->in + (size_t)start * bp->W * ex->cin + pt->in_off, .lda = ex->cin,
                .B = j->b->expand.w[p], .bias = j->b->expand.bias + pt->out_off,
                .C = buf + (size_t)(start - lo) * rowf + pt->out_off, .ldc = ex->cout,
                .act = ex->act,
            };
            s->k->f32_gemm(&g, 0, g.M);
        }
        have_lo = lo;
        have_hi = hi;
        for (int p = 0; p < dw->nparts; p++) {
            const lsq_conv_part *pt = &dw->part[p];
            lsq_dw_args a = {.in = buf, .row0 = lo, .H = bp->H, .W = bp->W, .C = dw->cin, .c0 = pt->in_off,
                             .nc = pt->cin, .k = pt->k, .stride = dw->stride, .pad_t = bp->pad_t[p],
                             .pad_l = bp->pad_l[p], .w = j->b->dw.w[p], .bias = j->b->dw.bias + pt->out_off,
                             .out = j->out, .OH = bp->OH, .OW = bp->OW, .act = dw->act};
            s->k->f32_dwconv(&a, o0, o1, j->with_sum ? s->chsum + pt->in_off : NULL);
        }
    }
}

static void run_expand_depthwise(lsq_session *s, const lsq_block *b, const block_plan *bp, const float *in,
                                 float *out, float *pooled)
{
    if (pooled) memset(s->chsum, 0, (size_t)bp->OH * b->dw.def->cout * sizeof(float));
    fused_job j = {s, b, bp, in, out, pooled != NULL};
    lsq_pool_run(s->pool, fused_task, &j);
    if (pooled) lsq_dw_rowsum_mean(s->chsum, bp->OH, bp->OW, b->dw.def->cout, pooled);
}

/* Squeeze-excite gate from the pooled vector: gate = sigmoid(We act(Wr p + br) + be), as two
 * one-row GEMMs on the calling thread (a few thousand MACs: not worth waking the pool). */
static void se_gate(const lsq_session *s, const lsq_conv *red, const lsq_conv *exp_, const float *pooled,
                    float *hidden, float *gate)
{
    const lsq_conv_def *r = red->def, *e = exp_->def;
    lsq_gemm_args g1 = {.M = 1, .N = r->cout, .K = r->cin, .A = pooled, .lda = r->cin, .B = red->w[0],
                        .bias = red->bias, .C = hidden, .ldc = r->cout, .act = r->act};
    s->k->f32_gemm(&g1, 0, 1);
    lsq_gemm_args g2 = {.M = 1, .N = e->cout, .K = e->cin, .A = hidden, .lda = e->cin, .B = exp_->w[0],
                        .bias = exp_->bias, .C = gate, .ldc = e->cout, .act = e->act};
    s->k->f32_gemm(&g2, 0, 1);
}

/* ==== planning ================================================================================= */

lsq_status lsq_session_create(const lsq_model *m, const lsq_session_options *opt, lsq_session **out, lsq_error *err)
{
    *out = NULL;
    if (!m || !opt) return lsq_fail(err, LSQ_ERR_ARG, "lsq_session_create: model and options are required");
    if (opt->height < 32 || opt->width < 32 || opt->height > 4096 || opt->width > 4096)
        return lsq_fail(err, LSQ_ERR_ARG, "input size %dx%d outside 32..4096", opt->height, opt->width);
    lsq_session *s = calloc(1, sizeof *s);
    if (!s) return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    const lsq_net_def *d = &m->def;
    s->m = m;
    s->k = lsq_kernels_best();
    s->nthreads = opt->threads > 0 ? opt->threads : 1;
    s->H = opt->height;
    s->W = opt->width;
    if (m->qc.quantized) {
        lsq_status st = opt->reference ? lsq_ref_create(m, s->H, s->W, &s->ref, err)
                                       : lsq_qexec_create(m, s->H, s->W, s->nthreads, &s->qx, err);
        if (st) {
            free(s);
            return st;
        }
        if (s->ref) snprintf(s->desc, sizeof s->desc, "reference (fake quantization, 1 thread)");
        else snprintf(s->desc, sizeof s->desc, "integer (q8 %s)", lsq_qexec_kernels(s->qx));
        if (s->qx) lsq_qexec_set_prof(s->qx, s->prof = lsq_prof_from_env(d, s->H, s->W, s->nthreads, "integer"));
        *out = s;
        return LSQ_OK;
    }
    snprintf(s->desc, sizeof s->desc, "fp32 (%s)", s->k->name);
    s->bp = calloc((size_t)d->nblocks, sizeof *s->bp);
    if (!s->bp) goto nomem;

    int k = d->stem.part[0].k;
    arch_conv_geometry(d->tf_same, s->H, k, d->stem.stride, &s->SH, &s->stem_pt);
    arch_conv_geometry(d->tf_same, s->W, k, d->stem.stride, &s->SW, &s->stem_pl);
    size_t maxact = (size_t)s->SH * s->SW * d->stem.cout;
    int cmax = d->num_features, H = s->SH, W = s->SW;
    size_t bscaled = 0, band = 0, sums = 0;
    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *b = &d->blocks[i];
        block_plan *bp = &s->bp[i];
        bp->H = H;
        bp->W = W;
        for (int p = 0; p < b->dw.nparts; p++) {
            int oh, ow;
            arch_conv_geometry(d->tf_same, H, b->dw.part[p].k, b->dw.stride, &oh, &bp->pad_t[p]);
            arch_conv_geometry(d->tf_same, W, b->dw.part[p].k, b->dw.stride, &ow, &bp->pad_l[p]);
            LSQ_ASSERT(p == 0 || (oh == bp->OH && ow == bp->OW));
            bp->OH = oh;
            bp->OW = ow;
        }
        maxact = LSQ_MAX(maxact, (size_t)H * W * b->dw.cin);
        /* fuse where the expanded tensor would spill out of L2; bands of about FUSE_BAND_BYTES */
        size_t rowbytes = (size_t)W * b->dw.cin * sizeof(float);
        if (b->has_expand && (size_t)H * rowbytes > FUSE_MIN_BYTES) {
            int R = 1;
            while (R < bp->OH && (size_t)band_rows_max(&b->dw, bp, R + 1) * rowbytes <= FUSE_BAND_BYTES) R++;
            bp->band = R;
            band = LSQ_MAX(band, (size_t)band_rows_max(&b->dw, bp, R) * W * b->dw.cin);
        }
        maxact = LSQ_MAX(maxact, (size_t)bp->OH * bp->OW * b->project.cout);
        cmax = LSQ_MAX(cmax, b->dw.cin);
        sums = LSQ_MAX(sums, (size_t)bp->OH * b->dw.cout);
        bscaled = LSQ_MAX(bscaled, max_part_packed(&b->project));
        H = bp->OH;
        W = bp->OW;
    }
    s->FH = H;
    s->FW = W;
    maxact = LSQ_MAX(maxact, (size_t)H * W * d->num_features);
    s->cmax = cmax;
    s->mid = s->nthreads > 1 ? (maxact + 15) & ~(size_t)15 : 0; /* place() */
    for (int i = 0; i < 3; i++)
        if (!(s->buf[i] = lsq_alloc((s->mid + maxact + 16) * sizeof(float)))) goto nomem;
    s->col = lsq_alloc((size_t)s->SH * s->SW * 3 * k * k * sizeof(float));
    s->chsum = lsq_alloc(LSQ_MAX(sums, 1) * sizeof(float));
    s->pooled = lsq_alloc((size_t)cmax * sizeof(float));
    s->hidden = lsq_alloc((size_t)cmax * sizeof(float));
    s->gate = lsq_alloc((size_t)cmax * sizeof(float));
    s->feat = lsq_alloc((size_t)d->num_features * sizeof(float));
    s->bscaled_floats = (bscaled + 15) & ~(size_t)15;
    s->bscaled = lsq_alloc((size_t)s->nthreads * s->bscaled_floats * sizeof(float));
    s->band_floats = (band + 15) & ~(size_t)15;
    s->band = lsq_alloc(LSQ_MAX((size_t)s->nthreads * s->band_floats, 1) * sizeof(float));
    if (!s->bscaled || !s->band || !s->col || !s->chsum || !s->pooled || !s->hidden || !s->gate || !s->feat) goto nomem;
    s->prof = lsq_prof_from_env(d, s->H, s->W, s->nthreads, "float");
    if (!(s->pool = lsq_pool_create(s->nthreads))) {
        int n = s->nthreads;
        lsq_session_free(s);
        return lsq_fail(err, LSQ_ERR_NOMEM, "cannot start %d threads", n);
    }
    *out = s;
    return LSQ_OK;
nomem:
    lsq_session_free(s);
    return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory planning %s at %dx%d", d->arch, opt->height, opt->width);
}

void lsq_session_free(lsq_session *s)
{
    if (!s) return;
    lsq_ref_free(s->ref);
    lsq_qexec_free(s->qx);
    lsq_pool_free(s->pool);
    for (int i = 0; i < 3; i++) lsq_free(s->buf[i]);
    lsq_free(s->col);
    lsq_free(s->chsum);
    lsq_free(s->pooled);
    lsq_free(s->hidden);
    lsq_free(s->gate);
    lsq_free(s->feat);
    lsq_free(s->bscaled);
    lsq_free(s->band);
    lsq_prof_free(s->prof);
    free(s->bp);
    free(s);
}

/* ==== forward ================================================================================== */

/* im2col of the NCHW input for the stem: col[oy*SW + ox][(ky*k + kx)*3 + c], zeros outside.
 * Loops are ordered so that the innermost one runs over output columns with no bounds tests. */
static void stem_im2col(const lsq_session *s, const float *in, int k, int oy0, int oy1)
{
    const int K = 3 * k * k, S = s->m->def.stem.stride;
    for (int oy = oy0; oy < oy1; oy++) {
        float *rowcol = s->col + (size_t)oy * s->SW * K;
        for (int ky = 0; ky < k; ky++) {
            int iy = oy * S - s->stem_pt + ky;
            for (int kx = 0; kx < k; kx++) {
                /* output columns whose tap (ky, kx) lands inside: 0 <= ox*S - pl + kx < W */
                int lo = 0, hi = s->SW;
                while (lo < hi && lo * S - s->stem_pl + kx < 0) lo++;
                while (hi > lo && (hi - 1) * S - s->stem_pl + kx >= s->W) hi--;
                if (iy < 0 || iy >= s->H) lo = hi = s->SW;
                for (int c = 0; c < 3; c++) {
                    float *dst = rowcol + (ky * k + kx) * 3 + c;
                    const float *src = in + ((size_t)c * s->H + (iy < 0 ? 0 : iy)) * s->W - s->stem_pl + kx;
                    for (int ox = 0; ox < lo; ox++) dst[(size_t)ox * K] = 0.f;
                    for (int ox = lo; ox < hi; ox++) dst[(size_t)ox * K] = src[ox * S];
                    for (int ox = hi; ox < s->SW; ox++) dst[(size_t)ox * K] = 0.f;
                }
            }
        }
    }
}

/* The stem, im2col and GEMM together, in bands of STEM_BAND output rows per thread: each band's
 * columns are still in L1/L2 when the GEMM reads them, and no thread waits for a serial im2col. */
#define STEM_BAND 4

typedef struct {
    lsq_session *s;
    const float *input;
    float *out;
} stem_job;

static void stem_task(void *ctx, int tid, int n)
{
    const stem_job *j = ctx;
    lsq_session *s = j->s;
    const lsq_net_def *d = &s->m->def;
    const int k = d->stem.part[0].k, K = 3 * k * k;
    int b, e;
    lsq_pool_range(s->SH, 1, tid, n, &b, &e);
    for (int o0 = b; o0 < e; o0 += STEM_BAND) {
        int o1 = LSQ_MIN(o0 + STEM_BAND, e);
        stem_im2col(s, j->input, k, o0, o1);
        lsq_gemm_args g = {
            .M = (o1 - o0) * s->SW, .N = d->stem.cout, .K = K, .A = s->col + (size_t)o0 * s->SW * K, .lda = K,
            .B = s->m->stem.w[0], .bias = s->m->stem.bias, .C = j->out + (size_t)o0 * s->SW * d->stem.cout,
            .ldc = d->stem.cout, .act = d->stem.act,
        };
        s->k->f32_gemm(&g, 0, g.M);
    }
}

/* Global average pool of the head's output, channels split over the threads. */
typedef struct {
    const float *x;
    float *feat;
    int M, F;
} pool_job;

static void avgpool_task(void *ctx, int tid, int n)
{
    const pool_job *j = ctx;
    int b, e;
    lsq_pool_range(j->F, 16, tid, n, &b, &e);
    if (b >= e) return;
    memset(j->feat + b, 0, (size_t)(e - b) * sizeof(float));
    for (int p = 0; p < j->M; p++) {
        const float *row = j->x + (size_t)p * j->F;
        for (int c = b; c < e; c++) j->feat[c] += row[c];
    }
    float inv = 1.f / (float)j->M;
    for (int c = b; c < e; c++) j->feat[c] *= inv;
}

/* ==== tensor placement =========================================================================
 * With several threads, each job's output goes where the upper half of the threads' part starts at
 * the same address in every layer: s->mid floats into its buffer (rounded to a cache line). So a
 * thread writes the same side of each buffer in every layer and the lines stay in its core's cache;
 * otherwise a tensor of another size, split at another byte, makes a thread write lines the other
 * core wrote last, and on these VMs each such line costs ~10 ns to fetch (session.c's depthwise
 * FIXME). Measured on mixnet_s / efficientnet_b0 at 2 threads, even split, 6 rounds interleaved:
 * 3.21 -> 3.04 ms and 4.09 -> 3.95 ms (p50 medians), every round faster. The buffers are twice the
 * size for it. The split is the one the next job will use (lsq_pool_next_range); a job that moves
 * the shares before a later part of the same layer shifts it a little, which costs a few lines. */
static float *place(const lsq_session *s, int k, int items, int align, size_t item_floats)
{
    return s->buf[k] + lsq_pool_meet_offset(s->pool, items, align, item_floats, s->mid, 16);
}

/* The output of a pointwise conv: M rows of N floats, split as gemm_task splits them (rows in
 * groups of 4; with few rows, by columns: then any place will do). */
static float *place_gemm(const lsq_session *s, int k, int M, int N)
{
    return few_rows(s, M) ? place(s, k, 2, 1, (size_t)M * N / 2) : place(s, k, M, 4, (size_t)N);
}

static void float_run(lsq_session *s, const float *input, float *logits);

lsq_status lsq_session_run(lsq_session *s, const float *input, float *logits)
{
    /* every path runs with denormals flushed (util.h; the pool's threads always do), and the
     * caller's floating-point mode is left as it was */
    unsigned fp = lsq_fp_flush_denormals();
    if (s->qx)
        lsq_qexec_run(s->qx, input, logits);
    else if (s->ref)
        lsq_ref_run(s->ref, input, logits);
    else
        float_run(s, input, logits);
    lsq_fp_restore(fp);
    return LSQ_OK;
}

static void float_run(lsq_session *s, const float *input, float *logits)
{
    const lsq_model *m = s->m;
    const lsq_net_def *d = &m->def;
    lsq_prof_begin(s->prof);

    stem_job sj = {s, input, place(s, 0, s->SH, 1, (size_t)s->SW * d->stem.cout)};
    lsq_pool_run(s->pool, stem_task, &sj);
    lsq_prof_mark(s->prof, 0, LSQ_PROF_STEM);

    int x = 0;           /* index of the buffer holding the block input */
    float *xp = sj.out; /* the block input */
    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *bd = &d->blocks[i];
        const lsq_block *b = &m->blocks[i];
        const block_plan *bp = &s->bp[i];
        int e = (x + 1) % 3, tb = (x + 2) % 3, M = bp->OH * bp->OW;
        const float *dw_in = xp;
        float *dw_out = place(s, tb, bp->OH, 1, (size_t)bp->OW * bd->dw.cout);
        if (bp->band) {
            run_expand_depthwise(s, b, bp, xp, dw_out, bd->has_se ? s->pooled : NULL);
            lsq_prof_mark(s->prof, i + 1, LSQ_PROF_EXPDW);
        } else if (bd->has_expand) {
            float *ex = place_gemm(s, e, bp->H * bp->W, bd->dw.cin);
            run_pointwise(s, &b->expand, xp, bp->H * bp->W, ex, NULL, NULL);
            dw_in = ex;
            lsq_prof_mark(s->prof, i + 1, LSQ_PROF_EXPAND);
            dw_out = place(s, tb, bp->OH, 1, (size_t)bp->OW * bd->dw.cout); /* the expansion moved the shares */
        }
        if (!bp->band) {
            run_depthwise(s, &b->dw, dw_in, bp->H, bp->W, bp, dw_out, bd->has_se ? s->pooled : NULL);
            lsq_prof_mark(s->prof, i + 1, LSQ_PROF_DW);
        }
        if (bd->has_se) se_gate(s, &b->se_reduce, &b->se_expand, s->pooled, s->hidden, s->gate);
        lsq_prof_mark(s->prof, i + 1, LSQ_PROF_SE);
        /* the projection writes over the expanded tensor, which is dead by now */
        float *out = place_gemm(s, e, M, bd->project.cout);
        run_pointwise(s, &b->project, dw_out, M, out, bd->skip ? xp : NULL, bd->has_se ? s->gate : NULL);
        lsq_prof_mark(s->prof, i + 1, LSQ_PROF_PROJECT);
        x = e;
        xp = out;
    }

    int M = s->FH * s->FW, F = d->num_features;
    float *head = place_gemm(s, (x + 1) % 3, M, F);
    run_pointwise(s, &m->head, xp, M, head, NULL, NULL);
    pool_job pj = {head, s->feat, M, F};
    lsq_pool_run(s->pool, avgpool_task, &pj);
    lsq_gemm_args cl = {
        .M = 1, .N = d->num_classes, .K = F, .A = s->feat, .lda = F, .B = m->classifier.w[0],
        .bias = m->classifier.bias, .C = logits, .ldc = d->num_classes, .act = LSQ_ACT_NONE,
    };
    run_gemm(s, &cl, NULL);
    lsq_prof_mark(s->prof, d->nblocks + 1, LSQ_PROF_HEAD);
}

const char *lsq_session_describe(const lsq_session *s) { return s->desc; }

lsq_status lsq_session_set_trace(lsq_session *s, lsq_trace_fn fn, void *user)
{
    if (s->qx) lsq_qexec_set_trace(s->qx, fn, user);
    else if (s->ref) lsq_ref_set_trace(s->ref, fn, user);
    else return LSQ_ERR_ARG;
    return LSQ_OK;
}
