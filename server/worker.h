/* worker.h - an inference worker: its own engine sessions and buffers (private to infer.c, v2.c). */
#ifndef LSQ_SERVER_WORKER_H
#define LSQ_SERVER_WORKER_H

#include "job.h"
#include "lsq.h"
#include "models.h"
#include "options.h"

typedef struct {
    const model_registry *reg;
    const server_options *opt;
    lsq_session **sessions; /* [reg->n], one per (model, config), created at start-up */
    float *x;               /* [3, S, S] input of the largest S */
    float *logits;          /* [max classes] */
    int debug_delay_ms;     /* LSQ_DEBUG_INFER_DELAY_MS: tests make inference slow to fill the queue */
} worker;

typedef struct {
    const model_registry *reg;
    const server_options *opt;
} worker_shared;

/* pool_config hooks */
void *worker_create(int index, void *arg, char *err, size_t errlen);
void worker_run(void *w, job *j);
void worker_destroy(void *w);

/* Decode, preprocess and run one encoded image; logits into out [classes]. Adds the stage times
 * to j. Returns 0, or -1 with a message (the image is at fault: 400). */
int worker_classify_image(worker *w, const model_entry *e, const uint8_t *img, size_t len, float *out, job *j,
                          char *err, size_t errlen);
/* Run one preprocessed [3, S, S] tensor; logits into out. */
void worker_run_tensor(worker *w, const model_entry *e, const float *x, float *out, job *j);

void softmax(const float *x, float *p, int n);

/* Open Inference Protocol request execution (v2.c) */
void v2_run(worker *w, job *j);

/* Put a JSON error body {"error": msg} and status into j. */
void job_fail(job *j, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
