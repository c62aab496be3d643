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

#endif
