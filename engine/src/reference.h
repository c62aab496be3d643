/* reference.h - the quantized reference path (private): float math reproducing the trainer's
 * fake quantization layer by layer. See reference.c. */
#ifndef LSQ_REFERENCE_H
#define LSQ_REFERENCE_H

#include "model.h"

typedef struct lsq_ref lsq_ref;

/* Plans the buffers for one input size (the run never allocates). */
lsq_status lsq_ref_create(const lsq_model *m, int H, int W, lsq_ref **out, lsq_error *err);
void lsq_ref_run(lsq_ref *r, const float *input_nchw, float *logits);
void lsq_ref_free(lsq_ref *r);
void lsq_ref_set_trace(lsq_ref *r, lsq_trace_fn fn, void *user);

/* Calibration mode: quantizers off (the model may be FP32), and fn gets every conv/linear input
 * before the layer reads it, in network order: x is NHWC with c->cin channels, n values (SE and
 * classifier inputs: n = c->cin). fn NULL restores quantization. */
typedef void (*lsq_ref_observe_fn)(void *user, const lsq_conv_def *c, const float *x, size_t n);
void lsq_ref_set_observer(lsq_ref *r, lsq_ref_observe_fn fn, void *user);

#endif
