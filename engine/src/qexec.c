/* qexec.c - the integer path: LSQ+ networks executed on codes, not on simulated floats.
 *
 * Every conv and linear layer reads its input as uint8 codes (the code minus the quantizer's qmin:
 * the signed network input is shifted by 128 and the shift undone by an integer bias), multiplies
 * them by int8 weight codes (unpacked from 2..8-bit storage at load) with int32 sums, and folds the
 * scales, the activation offset and BatchNorm into one multiply-add per output channel after the
 * sum (model.h, lsqplus.md "Integer inference"). Each layer's epilogue applies the activation and
 * writes the next layer's codes directly (requantization fused), and floats only where the network
 * needs them: the residual stream (only when a skip connection will read it), the depthwise output
 * of an SE block (the squeeze and the gate are float, as in the trained model) and the head's
 * output before pooling. Padding: the float model pads the fake-quantized tensor with the real
 * 0.0, so the offset's share is summed over the valid taps only; depthwise kernels do this
 * exactly per border pixel, and the stem's border pixels are recomputed exactly after its GEMM.
 *
 * The reference path (reference.c) computes the same network in float; tests compare the two
 * code by code.
 */
#include "qexec.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/q8.h"
#include "threadpool.h"
#include "util.h"

typedef struct {
    int H, W, OH, OW;
    int pad_t[LSQ_MAX_PARTS], pad_l[LSQ_MAX_PARTS];
    int out_float; /* the block output is read as a residual by the next block */
} qblock;

/* Pixels of the stem whose taps are not all inside the image, in rectangles with the same valid
 * taps; add = the epilogue's constant with the activation offset summed over those taps only. */
typedef struct {
    int oy0, oy1, ox0, ox1;
    float *add; /* [cout] */
} stem_border;

struct lsq_qexec {
    const lsq_model *m;
    const lsq_q8_kernels *k;
    lsq_pool *pool;
    int nthreads;
    int H, W, SH, SW, stem_pt, stem_pl, stem_K, stem_lda, stem_float;
    qblock *qb;
    int FH, FW;
    float *xf[2];             /* block outputs (the residual stream), NHWC float */
    uint8_t *xq, *eq, *pq;    /* codes: block input, expanded tensor, projection input */
    float *df;                /* depthwise output of SE blocks; the head's output */
    size_t mid;               /* > 1 thread: elements into each of the above where the threads' halves meet */
    uint8_t *inq, *inhwc, *col; /* network input codes (planar, then HWC), stem im2col codes */
    stem_border *border;      /* the stem's border rectangles */
    int nborder;
    float *chsum;             /* [OH][C]: depthwise channel sums per output row (the SE squeeze) */
    float *pooled, *hidden, *gate, *feat;
    uint8_t *sq;              /* codes of 1-row inputs: SE and classifier */
    uint8_t *ablk;            /* per thread: QBLK rows of gated projection-input codes (gemm_rows) */
    size_t ablk_stride;
    int cmax;
    lsq_trace_fn trace;
    void *trace_user;
    lsq_prof *prof;
};

static lsq_q8_requant requant_of(const lsq_conv *c)
{
    return (lsq_q8_requant){.scale = c->in.scale, .offset = c->in.offset, .qmin = c->in.qmin, .qmax = c->in.qmax};
}

/* The conv that reads block i's input (the head after the last block). */
static const lsq_conv *first_conv(const lsq_model *m, int i)
{
    if (i == m->def.nblocks) return &m->head;
    return m->def.blocks[i].has_expand ? &m->blocks[i].expand : &m->blocks[i].dw;
}

static void trace_codes(const lsq_qexec *q, const lsq_conv *c, const uint8_t *codes, size_t n)
{
    if (!q->trace) return;
    int32_t *v = malloc((n ? n : 1) * sizeof(int32_t));
    if (!v) return;
    for (size_t i = 0; i < n; i++) v[i] = (int32_t)codes[i] + c->in.qmin;
    q->trace(q->trace_user, c->def->name, v, NULL, n);
    free(v);
}

/* ==== parallel drivers ========================================================================= */

/* GEMMs over the same rows (the groups of a grouped 1x1 conv) in one fork-join, split by rows.
 * With `pre` (the SE-gated projection input), each thread first quantizes its rows of pre's floats,
 * QBLK at a time, into its own scratch, and the GEMMs read the codes from there while they are in
 * L1/L2: the same codes as quantizing the whole tensor first (same kernel, same values), without
 * writing them out and reading them back, and with one fork-join instead of two. The GEMMs' A then
 * points into `a0` only to give each group's column offset. */
#define QBLK 96
#define GEMM_ALIGN 12 /* rows per unit of a thread's part: Q8_MR of the AVX-512 kernel */

/* Too few rows to split: one thread runs the GEMM (and placement follows it). */
static int gemm_serial(const lsq_qexec *q, int M) { return q->nthreads == 1 || M < 2 * GEMM_ALIGN * q->nthreads; }

typedef struct {
    const lsq_qexec *q;
    const lsq_q8_gemm_args *g;
    int n;
    const lsq_q8_quant_args *pre;
    const uint8_t *a0;
} gemm_job;

static void gemm_rows(const gemm_job *j, int tid, int b, int e)
{
    if (!j->pre) {
        for (int i = 0; i < j->n && b < e; i++) j->q->k->q8_gemm(&j->g[i], b, e);
        return;
    }
    const lsq_q8_quant_args *pre = j->pre;
    uint8_t *scratch = j->q->ablk + (size_t)tid * j->q->ablk_stride;
    for (int m = b; m < e; m += QBLK) {
        const int rows = LSQ_MIN(QBLK, e - m);
        lsq_q8_quant_args qa = *pre;
        qa.x = pre->x + (size_t)m * pre->C, qa.M = rows, qa.Q = scratch;
        j->q->k->q8_quantize(&qa, 0, rows);
        for (int i = 0; i < j->n; i++) {
            lsq_q8_gemm_args g = j->g[i];
            g.A = scratch + (j->g[i].A - j->a0), g.lda = pre->C, g.M = rows;
            if (g.C) g.C += (size_t)m * g.ldc;
            if (g.R) g.R += (size_t)m * g.ldr;
            if (g.Q) g.Q += (size_t)m * g.ldq;
            j->q->k->q8_gemm(&g, 0, rows);
        }
    }
}

static void gemm_task(void *ctx, int tid, int n)
{
    const gemm_job *j = ctx;
    int b, e;
    lsq_pool_range(j->g[0].M, GEMM_ALIGN, tid, n, &b, &e);
    gemm_rows(j, tid, b, e);
}

static void run_gemm_pre(const lsq_qexec *q, const lsq_q8_gemm_args *g, int n, const lsq_q8_quant_args *pre,
                         const uint8_t *a0)
{
    gemm_job j = {q, g, n, pre, a0};
    if (gemm_serial(q, g[0].M))
        gemm_rows(&j, 0, 0, g[0].M);
    else
        lsq_pool_run(q->pool, gemm_task, &j);
}

static void run_gemm(const lsq_qexec *q, const lsq_q8_gemm_args *g, int n) { run_gemm_pre(q, g, n, NULL, NULL); }

/* A 1x1 conv (all its groups) or the classifier: codes A [M][cin] -> C floats and/or Q codes. */
static void run_pointwise_pre(const lsq_qexec *q, const lsq_conv *c, const uint8_t *A, int M, float *C,
                              const float *R, uint8_t *Q, const lsq_conv *next, const lsq_q8_quant_args *pre)
{
    const lsq_conv_def *d = c->def;
    lsq_q8_gemm_args g[LSQ_MAX_PARTS];
    for (int p = 0; p < d->nparts; p++) {
        const lsq_conv_part *pt = &d->part[p];
        g[p] = (lsq_q8_gemm_args){
            .M = M, .N = pt->cout, .K = pt->cin, .A = A + pt->in_off, .lda = d->cin, .B = c->qw[p],
            .ibias = c->qibias ? c->qibias + pt->out_off : NULL, .mult = c->qmult + pt->out_off,
            .add = c->qadd + pt->out_off, .C = C ? C + pt->out_off : NULL, .ldc = d->cout,
            .R = R ? R + pt->out_off : NULL, .ldr = d->cout, .Q = Q ? Q + pt->out_off : NULL, .ldq = d->cout,
            .q = next ? requant_of(next) : (lsq_q8_requant){.scale = 1.f}, .act = d->act,
        };
    }
    run_gemm_pre(q, g, d->nparts, pre, A);
}

static void run_pointwise(const lsq_qexec *q, const lsq_conv *c, const uint8_t *A, int M, float *C, const float *R,
                          uint8_t *Q, const lsq_conv *next)
{
    run_pointwise_pre(q, c, A, M, C, R, Q, next, NULL);
}

/* All parts of a (mixed) depthwise conv in one fork-join: each thread runs its rows of every part
 * (MixNet's layers have up to four kernel sizes: one barrier, not four). */
typedef struct {
    const lsq_qexec *q;
    lsq_q8_dw_args a[LSQ_MAX_PARTS];
    int nparts;
    float *chsum; /* [OH][C] row sums, or NULL */
} dw_job;

static void dw_task(void *ctx, int tid, int n)
{
    const dw_job *j = ctx;
    int b, e;
    lsq_pool_range(j->a[0].OH, 1, tid, n, &b, &e);
    for (int p = 0; p < j->nparts && b < e; p++)
        j->q->k->q8_dwconv(&j->a[p], b, e, j->chsum ? j->chsum + j->a[p].c0 : NULL);
}

typedef struct {
    const lsq_qexec *q;
    const lsq_q8_quant_args *a;
} quant_job;

static void quant_task(void *ctx, int tid, int n)
{
    const quant_job *j = ctx;
    int b, e;
    lsq_pool_range(j->a->M, 1, tid, n, &b, &e);
    if (b < e) j->q->k->q8_quantize(j->a, b, e);
}

static int quantize_serial(const lsq_qexec *q, int M) { return q->nthreads == 1 || M < 4 * q->nthreads; }

static void run_quantize(const lsq_qexec *q, const lsq_q8_quant_args *a)
{
    if (quantize_serial(q, a->M)) {
        q->k->q8_quantize(a, 0, a->M);
        return;
    }
    quant_job j = {q, a};
    lsq_pool_run(q->pool, quant_task, &j);
}

/* ==== stem ===================================================================================== */

/* Weight code (n, k) of a dense conv part from its lsq_q8_pack panels. */
static int packed_code(const int8_t *B, int K, int n, int k)
{
    int K4 = (K + 3) / 4;
    return B[(size_t)(n / LSQ_Q8_NR) * K4 * LSQ_Q8_NR * 4 + (size_t)(k / 4) * LSQ_Q8_NR * 4 + (n % LSQ_Q8_NR) * 4 + k % 4];
}

/* The network input: signed 8-bit codes, NCHW float -> planar uint8 (code - qmin), rounded exactly
 * as the reference's quantizer, then interleaved to HWC so that each kernel row of a stem window
 * is k * 3 contiguous bytes. */
static void stem_input(lsq_qexec *q, const float *input)
{
    const size_t hw = (size_t)q->H * q->W;
    const lsq_q8_requant rq = requant_of(&q->m->stem);
    if (q->k->q8_quantize_hwc3) { /* in one pass (two, a byte at a time, took 125 us at 224) */
        q->k->q8_quantize_hwc3(input, (int)hw, &rq, q->inhwc, 0, (int)hw);
        return;
    }
    lsq_q8_quant_args a = {.x = input, .M = 3, .C = (int)hw, .Q = q->inq, .q = rq};
    q->k->q8_quantize(&a, 0, 3);
    const uint8_t *r = q->inq, *g = r + hw, *b = g + hw;
    for (size_t i = 0; i < hw; i++) {
        q->inhwc[3 * i] = r[i];
        q->inhwc[3 * i + 1] = g[i];
        q->inhwc[3 * i + 2] = b[i];
    }
}

/* im2col rows of (ky, kx, c) taps for stem output rows [oy0, oy1), padding with the code of 0. */
static void stem_im2col(const lsq_qexec *q, int oy0, int oy1)
{
    const lsq_net_def *d = &q->m->def;
    const int k = d->stem.part[0].k, S = d->stem.stride, H = q->H, W = q->W;
    const uint8_t zero = (uint8_t)-q->m->stem.in.qmin;
    const uint8_t *in = q->inhwc;
    for (int oy = oy0; oy < oy1; oy++) {
        const int iy0 = oy * S - q->stem_pt;
        for (int ox = 0; ox < q->SW; ox++) {
            uint8_t *row = q->col + ((size_t)oy * q->SW + ox) * q->stem_lda;
            const int ix0 = ox * S - q->stem_pl;
            if (iy0 >= 0 && iy0 + k <= H && ix0 >= 0 && ix0 + k <= W) { /* a kernel row is k * 3 bytes */
                const uint8_t *src = in + ((size_t)iy0 * W + ix0) * 3;
                if (k == 3) /* every stem here: fixed-size copies the compiler inlines (a memcpy call per
                             * 9 bytes was 90 us of efficientnet_b0's 4 ms at 224) */
                    for (int ky = 0; ky < 3; ky++) memcpy(row + ky * 9, src + (size_t)ky * W * 3, 9);
                else
                    for (int ky = 0; ky < k; ky++) memcpy(row + ky * k * 3, src + (size_t)ky * W * 3, (size_t)k * 3);
                row += q->stem_K;
            } else {
                for (int ky = 0; ky < k; ky++) {
                    const int iy = iy0 + ky;
                    for (int kx = 0; kx < k; kx++, row += 3) {
                        const int ix = ix0 + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) memcpy(row, in + ((size_t)iy * W + ix) * 3, 3);
                        else row[0] = row[1] = row[2] = zero;
                    }
                }
            }
            for (int t = q->stem_K; t < q->stem_lda; t++) *row++ = 0;
        }
    }
}

static void im2col_task(void *ctx, int tid, int n)
{
    const lsq_qexec *q = ctx;
    int b, e;
    lsq_pool_range(q->SH, 1, tid, n, &b, &e);
    if (b < e) stem_im2col(q, b, e);
}

/* Border pixels of the stem: the GEMM summed the offset over all taps; redo each border rectangle
 * with its own constant. Its padded taps hold the code of 0, which contributes nothing to the
 * integer sums, so the same kernel with the rectangle's `add` gives exactly
 * act(mult * acc + bias + coef * (weights of the valid taps)). A rectangle one pixel wide (a side
 * column) is one call with rows SW apart; wider ones are one call per image row. */
static void stem_borders(lsq_qexec *q, const lsq_q8_gemm_args *all)
{
    const int N = all->N;
    for (int b = 0; b < q->nborder; b++) {
        const stem_border *r = &q->border[b];
        const int column = r->ox1 - r->ox0 == 1;
        for (int oy = r->oy0; oy < r->oy1; oy += column ? r->oy1 - r->oy0 : 1) {
            const size_t px = (size_t)oy * q->SW + r->ox0;
            lsq_q8_gemm_args g = *all;
            g.M = column ? r->oy1 - r->oy0 : r->ox1 - r->ox0;
            g.A = all->A + px * all->lda;
            g.add = r->add;
            if (column) g.lda = all->lda * q->SW, g.ldc = g.ldq = N * q->SW;
            if (g.C) g.C = all->C + px * N;
            g.Q = all->Q + px * N;
            q->k->q8_gemm(&g, 0, g.M);
        }
    }
}

/* Runs of output rows (or columns) whose valid taps [t0, t1) are the same; returns their count. */
static int tap_runs(int n_out, int stride, int pad, int k, int in, int (*run)[4])
{
    int nr = 0;
    for (int o = 0; o < n_out; o++) {
        int i0 = o * stride - pad, t0 = i0 < 0 ? -i0 : 0, t1 = i0 + k > in ? in - i0 : k;
        if (nr && run[nr - 1][2] == t0 && run[nr - 1][3] == t1) run[nr - 1][1] = o + 1;
        else run[nr][0] = o, run[nr][1] = o + 1, run[nr][2] = t0, run[nr][3] = t1, nr++;
    }
    return nr;
}

/* The border rectangles and their constants (see stem_borders). */
static int plan_stem_borders(lsq_qexec *q)
{
    const lsq_model *m = q->m;
    const lsq_conv *c = &m->stem;
    const int k = m->def.stem.part[0].k, S = m->def.stem.stride, N = m->def.stem.cout;
    int(*ry)[4] = malloc((size_t)q->SH * sizeof *ry), (*rx)[4] = malloc((size_t)q->SW * sizeof *rx);
    int ok = ry && rx;
    int ny = ok ? tap_runs(q->SH, S, q->stem_pt, k, q->H, ry) : 0, nx = ok ? tap_runs(q->SW, S, q->stem_pl, k, q->W, rx) : 0;
    if (ok && !(q->border = calloc((size_t)ny * nx, sizeof *q->border))) ok = 0;
    for (int a = 0; ok && a < ny; a++)
        for (int b = 0; ok && b < nx; b++) {
            if (ry[a][2] == 0 && ry[a][3] == k && rx[b][2] == 0 && rx[b][3] == k) continue; /* interior */
            stem_border *r = &q->border[q->nborder];
            *r = (stem_border){.oy0 = ry[a][0], .oy1 = ry[a][1], .ox0 = rx[b][0], .ox1 = rx[b][1]};
            if (!(r->add = lsq_alloc((size_t)N * sizeof(float)))) {
                ok = 0;
                break;
            }
            q->nborder++;
            for (int n = 0; n < N; n++) {
                int32_t ws = 0;
                for (int ky = ry[a][2]; ky < ry[a][3]; ky++)
                    for (int kx = rx[b][2]; kx < rx[b][3]; kx++)
                        for (int ch = 0; ch < 3; ch++) ws += packed_code(c->qw[0], q->stem_K, n, (ky * k + kx) * 3 + ch);
                r->add[n] = fmaf(c->qcoef[n], (float)ws, c->bias[n]);
            }
        }
    free(ry);
    free(rx);
    return ok;
}

/* ==== tensor placement =========================================================================
 * As in session.c (place()): with several threads, a job's output goes where the upper half of the
 * threads' part starts q->mid elements into its buffer, so that each thread keeps writing its own
 * side of every buffer instead of lines the other core wrote last. Returns the element offset
 * (rounded to 64: a line of codes). A job too small to split (one thread runs it) may go anywhere:
 * its middle. */
static size_t place(const lsq_qexec *q, int items, int align, size_t item_elems)
{
    return lsq_pool_meet_offset(q->pool, items, align, item_elems, q->mid, 64);
}

/* The output of run_gemm: M rows of N, split as gemm_task splits them. */
static size_t place_gemm(const lsq_qexec *q, int M, int N)
{
    return gemm_serial(q, M) ? place(q, 2, 1, (size_t)M * N / 2) : place(q, M, GEMM_ALIGN, (size_t)N);
}

/* The codes of run_quantize: M rows of C, split as quant_task splits them. */
static size_t place_quantize(const lsq_qexec *q, int M, int C)
{
    return quantize_serial(q, M) ? place(q, 2, 1, (size_t)M * C / 2) : place(q, M, 1, (size_t)C);
}

/* Returns the offset of its outputs in q->xq (and q->xf[0]). */
static size_t run_stem(lsq_qexec *q, const float *input)
{
    const lsq_model *m = q->m;
    const lsq_conv *next = first_conv(m, 0);
    stem_input(q, input);
    trace_codes(q, &m->stem, q->inhwc, (size_t)q->H * q->W * 3); /* the reference traces NHWC */
    lsq_pool_run(q->pool, im2col_task, q); /* one thread: a direct call */
    const size_t o = place_gemm(q, q->SH * q->SW, m->def.stem.cout);
    float *C = q->stem_float ? q->xf[0] + o : NULL;
    lsq_q8_gemm_args g = {
        .M = q->SH * q->SW, .N = m->def.stem.cout, .K = q->stem_K, .A = q->col, .lda = q->stem_lda,
        .B = m->stem.qw[0], .ibias = m->stem.qibias, .mult = m->stem.qmult, .add = m->stem.qadd, .C = C,
        .ldc = m->def.stem.cout, .Q = q->xq + o, .ldq = m->def.stem.cout, .q = requant_of(next), .act = m->def.stem.act,
    };
    run_gemm(q, &g, 1);
    stem_borders(q, &g);
    return o;
}

/* ==== blocks =================================================================================== */

static void run_depthwise(lsq_qexec *q, const lsq_conv *c, const qblock *b, const uint8_t *in, float *out,
                          uint8_t *Q, const lsq_conv *next, int squeeze)
{
    const lsq_conv_def *d = c->def;
    if (squeeze) memset(q->chsum, 0, (size_t)b->OH * d->cout * sizeof(float));
    dw_job j = {.q = q, .nparts = d->nparts, .chsum = squeeze ? q->chsum : NULL};
    for (int p = 0; p < d->nparts; p++) {
        const lsq_conv_part *pt = &d->part[p];
        int o = pt->out_off;
        j.a[p] = (lsq_q8_dw_args){
            .in = in, .H = b->H, .W = b->W, .C = d->cin, .c0 = pt->in_off, .nc = pt->cin, .k = pt->k,
            .stride = d->stride, .pad_t = b->pad_t[p], .pad_l = b->pad_l[p], .w = c->qw[p], .mult = c->qmult + o,
            .add = c->qadd + o, .bias = c->bias + o, .coef = c->qcoef + o, .out = out, .Q = Q,
            .q = next ? requant_of(next) : (lsq_q8_requant){.scale = 1.f}, .OH = b->OH, .OW = b->OW, .act = d->act,
        };
    }
    lsq_pool_run(q->pool, dw_task, &j);
    if (squeeze) lsq_dw_rowsum_mean(q->chsum, b->OH, b->OW, d->cout, q->pooled);
}

/* Squeeze-and-excitation on the pooled depthwise output: two 1-row integer GEMMs, float gate. */
static void run_se(lsq_qexec *q, const lsq_block *b, int C)
{
    const lsq_conv *red = &b->se_reduce, *exp_ = &b->se_expand;
    lsq_q8_quant_args qa = {.x = q->pooled, .M = 1, .C = C, .Q = q->sq, .q = requant_of(red)};
    q->k->q8_quantize(&qa, 0, 1);
    trace_codes(q, red, q->sq, (size_t)C);
    run_pointwise(q, red, q->sq, 1, q->hidden, NULL, NULL, NULL);
    int R = red->def->cout;
    lsq_q8_quant_args qh = {.x = q->hidden, .M = 1, .C = R, .Q = q->sq, .q = requant_of(exp_)};
    q->k->q8_quantize(&qh, 0, 1);
    trace_codes(q, exp_, q->sq, (size_t)R);
    run_pointwise(q, exp_, q->sq, 1, q->gate, NULL, NULL, NULL);
}

void lsq_qexec_run(lsq_qexec *q, const float *input, float *logits)
{
    const lsq_model *m = q->m;
    const lsq_net_def *d = &m->def;
    lsq_prof_begin(q->prof);
    size_t xo = run_stem(q, input); /* where the block input is, in q->xq and q->xf[x] */
    lsq_prof_mark(q->prof, 0, LSQ_PROF_STEM);
    int x = 0; /* xf[x] holds the block input's floats (when a skip needs them) */
    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *bd = &d->blocks[i];
        const lsq_block *b = &m->blocks[i];
        const qblock *qb = &q->qb[i];
        const uint8_t *xq = q->xq + xo, *dw_in = xq;
        if (bd->has_expand) {
            uint8_t *eq = q->eq + place_gemm(q, qb->H * qb->W, bd->dw.cin);
            trace_codes(q, &b->expand, xq, (size_t)qb->H * qb->W * bd->expand.cin);
            run_pointwise(q, &b->expand, xq, qb->H * qb->W, NULL, NULL, eq, &b->dw);
            dw_in = eq;
            lsq_prof_mark(q->prof, i + 1, LSQ_PROF_EXPAND);
        }
        trace_codes(q, &b->dw, dw_in, (size_t)qb->H * qb->W * bd->dw.cin);
        int M = qb->OH * qb->OW, C = bd->dw.cout;
        uint8_t *pq;
        lsq_q8_quant_args ga, *pre = NULL;
        if (bd->has_se) {
            float *df = q->df + place(q, qb->OH, 1, (size_t)qb->OW * C);
            run_depthwise(q, &b->dw, qb, dw_in, df, NULL, NULL, 1);
            lsq_prof_mark(q->prof, i + 1, LSQ_PROF_DW);
            run_se(q, b, C);
            pq = q->pq + place_quantize(q, M, C);
            ga = (lsq_q8_quant_args){.x = df, .gate = q->gate, .M = M, .C = C, .Q = pq, .q = requant_of(&b->project)};
            if (q->trace) /* the codes as a whole tensor, for the trace */
                run_quantize(q, &ga);
            else /* quantized by the projection's GEMM job, row block by row block */
                pre = &ga;
            lsq_prof_mark(q->prof, i + 1, LSQ_PROF_SE);
        } else {
            pq = q->pq + place(q, qb->OH, 1, (size_t)qb->OW * C);
            run_depthwise(q, &b->dw, qb, dw_in, NULL, pq, &b->project, 0);
            lsq_prof_mark(q->prof, i + 1, LSQ_PROF_DW);
        }
        if (!pre) trace_codes(q, &b->project, pq, (size_t)M * C);
        /* the projection writes the next layer's codes over the block input's (dead by now) */
        const size_t po = place_gemm(q, M, bd->project.cout);
        run_pointwise_pre(q, &b->project, pq, M, qb->out_float ? q->xf[x ^ 1] + po : NULL,
                          bd->skip ? q->xf[x] + xo : NULL, q->xq + po, first_conv(m, i + 1), pre);
        lsq_prof_mark(q->prof, i + 1, LSQ_PROF_PROJECT);
        x ^= 1;
        xo = po;
    }
    int M = q->FH * q->FW, F = d->num_features;
    float *head = q->df + place_gemm(q, M, F);
    trace_codes(q, &m->head, q->xq + xo, (size_t)M * d->head.cin);
    run_pointwise(q, &m->head, q->xq + xo, M, head, NULL, NULL, NULL);
    memset(q->feat, 0, (size_t)F * sizeof(float));
    for (int p = 0; p < M; p++)
        for (int c = 0; c < F; c++) q->feat[c] += head[(size_t)p * F + c];
    for (int c = 0; c < F; c++) q->feat[c] /= (float)M;
    lsq_q8_quant_args fa = {.x = q->feat, .M = 1, .C = F, .Q = q->sq, .q = requant_of(&m->classifier)};
    q->k->q8_quantize(&fa, 0, 1);
    trace_codes(q, &m->classifier, q->sq, (size_t)F);
    run_pointwise(q, &m->classifier, q->sq, 1, logits, NULL, NULL, NULL);
    lsq_prof_mark(q->prof, d->nblocks + 1, LSQ_PROF_HEAD);
}

/* ==== planning ================================================================================= */

lsq_status lsq_qexec_create(const lsq_model *m, int H, int W, int nthreads, lsq_qexec **out, lsq_error *err)
{
    const lsq_net_def *d = &m->def;
    lsq_qexec *q = calloc(1, sizeof *q);
    if (!q || !(q->qb = calloc((size_t)d->nblocks, sizeof *q->qb))) {
        free(q);
        return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory");
    }
    q->m = m;
    q->k = lsq_q8_kernels_best();
    q->nthreads = nthreads > 0 ? nthreads : 1;
    q->H = H;
    q->W = W;
    int k = d->stem.part[0].k;
    arch_conv_geometry(d->tf_same, H, k, d->stem.stride, &q->SH, &q->stem_pt);
    arch_conv_geometry(d->tf_same, W, k, d->stem.stride, &q->SW, &q->stem_pl);
    q->stem_K = 3 * k * k;
    q->stem_lda = (q->stem_K + 3) & ~3;
    q->stem_float = d->nblocks > 0 && d->blocks[0].skip;
    size_t maxact = (size_t)q->SH * q->SW * d->stem.cout;
    int h = q->SH, w = q->SW, cmax = d->num_features;
    size_t sums = 1;
    for (int i = 0; i < d->nblocks; i++) {
        const lsq_block_def *b = &d->blocks[i];
        qblock *qb = &q->qb[i];
        qb->H = h;
        qb->W = w;
        for (int p = 0; p < b->dw.nparts; p++) {
            arch_conv_geometry(d->tf_same, h, b->dw.part[p].k, b->dw.stride, &qb->OH, &qb->pad_t[p]);
            arch_conv_geometry(d->tf_same, w, b->dw.part[p].k, b->dw.stride, &qb->OW, &qb->pad_l[p]);
        }
        qb->out_float = i + 1 < d->nblocks && d->blocks[i + 1].skip;
        maxact = LSQ_MAX(maxact, (size_t)h * w * b->dw.cin);
        h = qb->OH;
        w = qb->OW;
        maxact = LSQ_MAX(maxact, (size_t)h * w * LSQ_MAX(b->dw.cout, b->project.cout));
        cmax = LSQ_MAX(cmax, b->dw.cin);
        sums = LSQ_MAX(sums, (size_t)h * b->dw.cout);
    }
    q->FH = h;
    q->FW = w;
    maxact = LSQ_MAX(maxact, (size_t)h * w * d->num_features);
    q->cmax = cmax;
    q->mid = q->nthreads > 1 ? (maxact + 63) & ~(size_t)63 : 0; /* place() */
    size_t codes = q->mid + maxact + LSQ_Q8_AREAD_PAD + 64;
    q->xf[0] = lsq_alloc((q->mid + maxact) * sizeof(float));
    q->xf[1] = lsq_alloc((q->mid + maxact) * sizeof(float));
    q->df = lsq_alloc((q->mid + maxact) * sizeof(float));
    q->xq = lsq_alloc(codes);
    q->eq = lsq_alloc(codes);
    q->pq = lsq_alloc(codes);
    q->inq = lsq_alloc((size_t)H * W * 3 + 64);
    q->inhwc = lsq_alloc((size_t)H * W * 3 + 64);
    q->col = lsq_alloc((size_t)q->SH * q->SW * q->stem_lda + LSQ_Q8_AREAD_PAD + 64);
    q->chsum = lsq_alloc(sums * sizeof(float));
    q->pooled = lsq_alloc((size_t)cmax * sizeof(float));
    q->hidden = lsq_alloc((size_t)cmax * sizeof(float));
    q->gate = lsq_alloc((size_t)cmax * sizeof(float));
    q->feat = lsq_alloc((size_t)cmax * sizeof(float));
    q->sq = lsq_alloc((size_t)cmax + LSQ_Q8_AREAD_PAD + 64);
    q->ablk_stride = ((size_t)QBLK * cmax + LSQ_Q8_AREAD_PAD + 63) & ~(size_t)63;
    q->ablk = lsq_alloc((size_t)q->nthreads * q->ablk_stride);
    if (!plan_stem_borders(q) || !q->xf[0] || !q->xf[1] || !q->df || !q->xq || !q->eq || !q->pq || !q->inq || !q->inhwc || !q->col || !q->chsum ||
        !q->pooled || !q->hidden || !q->gate || !q->feat || !q->sq || !q->ablk)
        goto nomem;
    /* codes past a row's end are read (times zero weights) by the GEMM: keep them initialised */
    memset(q->xq, 0, codes), memset(q->eq, 0, codes), memset(q->pq, 0, codes), memset(q->sq, 0, (size_t)cmax + 68);
    memset(q->ablk, 0, (size_t)q->nthreads * q->ablk_stride);
    if (!(q->pool = lsq_pool_create(q->nthreads))) {
        lsq_qexec_free(q);
        return lsq_fail(err, LSQ_ERR_NOMEM, "cannot start %d threads", nthreads);
    }
    *out = q;
    return LSQ_OK;
nomem:
    lsq_qexec_free(q);
    return lsq_fail(err, LSQ_ERR_NOMEM, "out of memory planning the integer path of %s at %dx%d", d->arch, H, W);
}

void lsq_qexec_set_prof(lsq_qexec *q, lsq_prof *p) { q->prof = p; }

void lsq_qexec_set_trace(lsq_qexec *q, lsq_trace_fn fn, void *user)
{
    q->trace = fn;
    q->trace_user = user;
}

const char *lsq_qexec_kernels(const lsq_qexec *q) { return q->k->name; }

void lsq_qexec_free(lsq_qexec *q)
{
    if (!q) return;
    lsq_pool_free(q->pool);
    lsq_free(q->xf[0]), lsq_free(q->xf[1]), lsq_free(q->df);
    for (int b = 0; b < q->nborder; b++) lsq_free(q->border[b].add);
    free(q->border);
    lsq_free(q->ablk), lsq_free(q->xq), lsq_free(q->eq), lsq_free(q->pq), lsq_free(q->inq), lsq_free(q->inhwc), lsq_free(q->col);
    lsq_free(q->chsum), lsq_free(q->pooled), lsq_free(q->hidden), lsq_free(q->gate), lsq_free(q->feat), lsq_free(q->sq);
    free(q->qb);
    free(q);
}
