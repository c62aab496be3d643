/* model.h - the loaded model: architecture plus folded, packed weights (private to the engine).
 *
 * Weights are converted at load into the layouts the kernels read:
 *   dense 1x1 conv   packed GEMM panels [K=cin][N=cout] per part (kernels.h)
 *   stem (k x k)     packed GEMM panels with K = k*k*cin in (ky, kx, c) order (im2col order)
 *   depthwise        [k*k][channels] per part, channels contiguous
 *   SE reduce/expand packed GEMM panels [K][N], run as 1-row GEMMs
 *   classifier       packed GEMM panels [K=features][N=classes]
 * BatchNorm is folded into weights and bias (w * gamma / sqrt(var + eps)).
 */
#ifndef LSQ_MODEL_H
#define LSQ_MODEL_H

#include "arch.h"
#include "quant.h"
#include "safetensors.h"

typedef struct {
    const lsq_conv_def *def;
    float *w[LSQ_MAX_PARTS]; /* per part, layout above; owned. Quantized models: s_w * w_q, folded */
    float *bias;             /* cout floats; owned */
    lsq_act_quant in;        /* quantizer of the input (quantized models; bits 0 otherwise) */
    int w_bits;              /* weight bits (quantized models; lsq_conv_qlayer) */
    int w_per_channel;       /* weight scales per output channel, else one per tensor */
    int in_offset;           /* the input quantizer has a learned offset (else it must be 0) */
    /* The integer path (quantized models; kernels/q8.h): y = mult * (sum w_q x_q + ibias) + add,
     * with x_q the input's codes shifted to uint8 (code - qmin) and BatchNorm after the sum:
     *   mult = s_a s_w bn_scale,  coef = offset s_w bn_scale,  add = bias + coef * sum(w_q),
     *   ibias = qmin * sum(w_q) (undoes the shift of a signed input; NULL when qmin = 0). */
    int8_t *qw[LSQ_MAX_PARTS]; /* dense: lsq_q8_pack panels, K in (ky, kx, c) order; depthwise: [k*k][ch] */
    float *qmult, *qadd, *qcoef; /* cout each */
    int32_t *qibias;
} lsq_conv;

typedef struct {
    lsq_conv expand, dw, se_reduce, se_expand, project;
} lsq_block;

struct lsq_model {
    lsq_net_def def;
    lsq_conv stem, head, classifier;
    lsq_block *blocks; /* def.nblocks */
    char path[256];
    char config[LSQ_QCONFIG_NAME_LEN]; /* canonical (qc.name) */
    lsq_qconfig qc;    /* parsed config: qc.quantized selects quantized execution */
    char **labels;     /* num_classes strings, or NULL */
    lsq_preprocess preprocess;
    int64_t num_params;
    int64_t file_bytes;
    char *metadata_json; /* the file's __metadata__ as a JSON object string (for inspect) */
    char *tensors_desc;  /* "name dtype [shape]\n" lines (for inspect) */
};

/* The quantizers of conv c of network d under qc: its role (stem, classifier, inner) and name go
 * through lsq_qconfig_layer. Loader, calibration and writer all ask here. */
lsq_qlayer lsq_conv_qlayer(const lsq_qconfig *qc, const lsq_net_def *d, const lsq_conv_def *c);

/* Every layer override of qc must match a conv or linear of d: a misspelt pattern is an error, not a
 * silent no-op. path names the file in the message. */
lsq_status lsq_qconfig_check(const lsq_qconfig *qc, const lsq_net_def *d, const char *path, lsq_error *err);

#endif
