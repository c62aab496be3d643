/* job.h - one inference request as it travels from an HTTP thread through the queue to a worker. */
#ifndef LSQ_SERVER_JOB_H
#define LSQ_SERVER_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "models.h"

typedef enum {
    JOB_CLASSIFY,  /* body: one encoded image; answer: top-k JSON */
    JOB_V2_INFER,  /* body: Open Inference Protocol request (JSON, or JSON + binary tensors) */
} job_kind;

typedef struct job {
    /* request, owned by the HTTP side, read-only for the worker */
    job_kind kind;
    const model_entry *entry;
    int topk;                   /* JOB_CLASSIFY */
    const uint8_t *body;        /* the request body (the image for JOB_CLASSIFY) */
    size_t body_len;
    size_t json_len;            /* JOB_V2_INFER: Inference-Header-Content-Length, or body_len */
    const char *request_id;
    double t_arrival, t_enqueue, deadline; /* monotonic ms */

    /* answer, written by exactly one of a worker or the queue's reaper, then complete() */
    int status;                 /* HTTP status */
    char *resp;                 /* malloc'd body */
    size_t resp_len;
    const char *content_type;
    size_t resp_json_len;       /* > 0: send Inference-Header-Content-Length (binary extension) */
    double queue_ms, decode_ms, preprocess_ms, infer_ms;
    int n_preds;                /* JOB_CLASSIFY success: top-k, best first (malloc'd) */
    int *pred_index;
    float *pred_score;          /* softmax probabilities */

    /* Called under the queue's lock just before the job is queued (the HTTP side suspends its
     * connection there, so that a fast worker can never resume it first). */
    void (*on_enqueue)(struct job *j);
    /* Called once the answer is in place; the job belongs to the HTTP side again from then on. */
    void (*complete)(struct job *j);
    void *owner;

    struct job *next;           /* queue link */
} job;

#endif
