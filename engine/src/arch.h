/* arch.h - network definitions decoded from timm-style block strings (private to the engine).
 *
 * An architecture is a row of the table in arch.c: stage strings such as
 * "ir_r2_k3_s2_e6_c24_se0.25", a channel and depth multiplier, stem and head widths. arch_build()
 * decodes them into an lsq_net_def: every convolution with its tensor names, channel splits,
 * kernel sizes, strides and activation. No per-model layer lists exist anywhere else.
 */
#ifndef LSQ_ARCH_H
#define LSQ_ARCH_H

#include "lsq.h"

typedef enum {
    LSQ_ACT_NONE = 0,
    LSQ_ACT_RELU,
    LSQ_ACT_SWISH,
    LSQ_ACT_SIGMOID, /* the SE gate */
} lsq_act;

#define LSQ_MAX_PARTS 8   /* channel splits of a MixNet mixed conv (kernels 3..11 -> 5) */
#define LSQ_NAME_LEN 48

/* One convolution (or the linear classifier: k = 1 on a 1x1 input). A mixed convolution splits its
 * input and output channels into parts, each with its own kernel size; part i's weight tensor is
 * "<name>.<i>.weight" when `mixed`, else "<name>.weight". */
typedef struct {
    int k;                 /* kernel size (square) */
    int cin, cout;         /* channels of this part */
    int in_off, out_off;   /* channel offsets inside the full input / output tensors */
} lsq_conv_part;

typedef struct {
    char name[LSQ_NAME_LEN];    /* module name, e.g. "blocks.2.0.conv_dw" */
    char bn[LSQ_NAME_LEN];      /* BatchNorm module after it, e.g. "blocks.2.0.bn2"; "" if none */
    int depthwise;              /* groups == channels (per part) */
    int linear;                 /* nn.Linear: weight [cout, cin] instead of [cout, cin, k, k] */
    int has_bias;               /* conv/linear bias tensor (SE convs, classifier) */
    int cin, cout, stride;
    int mixed, nparts;
    lsq_conv_part part[LSQ_MAX_PARTS];
    lsq_act act;                /* after BN (or bias) */
} lsq_conv_def;

typedef enum {
    LSQ_BLOCK_DS = 0, /* depthwise separable: dw -> (se) -> pw */
    LSQ_BLOCK_IR,     /* inverted residual: pw expand -> dw -> (se) -> pwl project */
} lsq_block_type;

typedef struct {
    lsq_block_type type;
    int has_expand; /* IR only */
    int has_se;
    int skip;       /* residual add: stride 1, in == out, not noskip */
    lsq_conv_def expand, dw, se_reduce, se_expand, project;
} lsq_block_def;

typedef struct {
    char arch[32];
    int tf_same;           /* TF "SAME" padding (tf_ variants) */
    float bn_eps;
    int num_classes;
    int num_features;
    lsq_conv_def stem, head, classifier;
    int nblocks;
    lsq_block_def *blocks; /* owned */
    lsq_preprocess preprocess; /* timm's defaults for this architecture */
} lsq_net_def;

/* Decode the named architecture. Returns LSQ_ERR_ARCH with a message listing the known ones. */
lsq_status arch_build(const char *arch, int num_classes, lsq_net_def *out, lsq_error *err);
void arch_free(lsq_net_def *def);

/* Call fn for every conv of the network in execution order (stem, blocks, head, classifier). */
typedef lsq_status (*arch_conv_fn)(void *ctx, lsq_conv_def *c);
lsq_status arch_foreach_conv(lsq_net_def *def, arch_conv_fn fn, void *ctx);

/* Output size of a convolution along one axis, and its leading padding.
 * PyTorch: pad = ((stride - 1) + (k - 1)) / 2 symmetric; TF SAME: ceil(in / stride) outputs and
 * the total padding split with the extra pixel after. */
void arch_conv_geometry(int tf_same, int in, int k, int stride, int *out, int *pad_before);

#endif
