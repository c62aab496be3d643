/* qexec.h - the integer path (private): quantized networks executed on uint8 activation codes and
 * int8 weight codes with int32 sums. See qexec.c. */
#ifndef LSQ_QEXEC_H
#define LSQ_QEXEC_H

#include "model.h"
#include "profile.h"

typedef struct lsq_qexec lsq_qexec;

/* Plans the buffers for one input size (the run never allocates); nthreads intra-op threads. */
lsq_status lsq_qexec_create(const lsq_model *m, int H, int W, int nthreads, lsq_qexec **out, lsq_error *err);
void lsq_qexec_run(lsq_qexec *q, const float *input_nchw, float *logits);
void lsq_qexec_set_trace(lsq_qexec *q, lsq_trace_fn fn, void *user);
void lsq_qexec_set_prof(lsq_qexec *q, lsq_prof *p); /* the caller keeps ownership */
const char *lsq_qexec_kernels(const lsq_qexec *q);
void lsq_qexec_free(lsq_qexec *q);

#endif
