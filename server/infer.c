/* infer.c - worker side of a request: decode, preprocess, infer, top-k. Runs only on worker
 * threads; each worker owns one engine session per served (model, configuration). */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool.h"
#include "worker.h"

void job_fail(job *j, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    free(j->resp);
    j->resp = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    j->resp_len = j->resp ? strlen(j->resp) : 0;
    j->content_type = "application/json";
    j->status = status;
}

void softmax(const float *x, float *p, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += p[i] = expf(x[i] - mx);
    for (int i = 0; i < n; i++) p[i] = (float)(p[i] / sum);
}

void *worker_create(int index, void *arg, char *err, size_t errlen)
{
    const worker_shared *sh = arg;
    worker *w = calloc(1, sizeof *w);
    int max_s = 0, max_c = 0;
    for (int i = 0; i < sh->reg->n; i++) {
        if (sh->reg->entries[i].input_size > max_s) max_s = sh->reg->entries[i].input_size;
        if (sh->reg->entries[i].classes > max_c) max_c = sh->reg->entries[i].classes;
    }
    if (!w || !(w->sessions = calloc((size_t)sh->reg->n, sizeof *w->sessions)) ||
        !(w->x = calloc((size_t)3 * max_s * max_s, sizeof(float))) ||
        !(w->logits = calloc((size_t)max_c, sizeof(float)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    w->reg = sh->reg;
    w->opt = sh->opt;
    const char *d = getenv("LSQ_DEBUG_INFER_DELAY_MS");
    w->debug_delay_ms = d ? atoi(d) : 0;
    for (int i = 0; i < sh->reg->n; i++) {
        const model_entry *e = &sh->reg->entries[i];
        lsq_error le = {{0}};
        lsq_session_options so = {.height = e->input_size, .width = e->input_size, .threads = sh->opt->threads};
        if (lsq_session_create(e->model, &so, &w->sessions[i], &le)) {
            snprintf(err, errlen, "%s/%s: %s", e->mm->name, e->mc->config, le.msg);
            goto fail;
        }
        /* warm-up: first-touch the planned memory and the code paths */
        memset(w->x, 0, (size_t)3 * e->input_size * e->input_size * sizeof(float));
        lsq_session_run(w->sessions[i], w->x, w->logits);
    }
    (void)index;
    return w;
fail:
    worker_destroy(w);
    return NULL;
}

void worker_destroy(void *arg)
{
    worker *w = arg;
    if (!w) return;
    for (int i = 0; w->sessions && i < w->reg->n; i++) lsq_session_free(w->sessions[i]);
    free(w->sessions);
    free(w->x);
    free(w->logits);
    free(w);
}

void worker_run_tensor(worker *w, const model_entry *e, const float *x, float *out, job *j)
{
    double t0 = now_ms();
    lsq_session_run(w->sessions[e->id], x, out);
    j->infer_ms += now_ms() - t0;
}

int worker_classify_image(worker *w, const model_entry *e, const uint8_t *img, size_t len, float *out, job *j,
                          char *err, size_t errlen)
{
    lsq_image im = {0};
    lsq_error le = {{0}};
    lsq_image_options io = {.max_pixels = w->opt->max_pixels, .apply_exif = 1};
    const lsq_preprocess *pre = lsq_model_preprocess(e->model);
    double t0 = now_ms();
    if (lsq_image_decode_scaled(img, len, &io, w->opt->dct_scale ? lsq_preprocess_resize_size(pre) : 0, &im, &le)) {
        snprintf(err, errlen, "cannot decode the image: %s", le.msg);
        return -1;
    }
    double t1 = now_ms();
    j->decode_ms += t1 - t0;
    int bad = lsq_image_preprocess(&im, pre, w->x, &le) != LSQ_OK;
    lsq_image_free(&im);
    j->preprocess_ms += now_ms() - t1;
    if (bad) {
        snprintf(err, errlen, "cannot preprocess the image: %s", le.msg);
        return -1;
    }
    worker_run_tensor(w, e, w->x, out, j);
    return 0;
}

static void classify(worker *w, job *j)
{
    const model_entry *e = j->entry;
    char err[600];
    if (worker_classify_image(w, e, j->body, j->body_len, w->logits, j, err, sizeof err)) {
        job_fail(j, 400, "%s", err);
        return;
    }
    int n = e->classes, k = j->topk < n ? j->topk : n;
    float *p = malloc((size_t)n * sizeof(float));
    j->pred_index = malloc((size_t)k * sizeof(int));
    j->pred_score = malloc((size_t)k * sizeof(float));
    if (!p || !j->pred_index || !j->pred_score) {
        free(p);
        job_fail(j, 500, "out of memory");
        return;
    }
    softmax(w->logits, p, n);
    /* partial selection: k passes, ties to the lower index (as lsq classify) */
    for (int q = 0; q < k; q++) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (p[i] < 0) continue; /* taken */
            if (best < 0 || p[i] > p[best]) best = i;
        }
        j->pred_index[q] = best;
        j->pred_score[q] = p[best];
        p[best] = -1;
    }
    free(p);
    j->n_preds = k;
    j->status = 200;
}

void worker_run(void *arg, job *j)
{
    worker *w = arg;
    if (w->debug_delay_ms > 0) {
        struct timespec ts = {w->debug_delay_ms / 1000, (long)(w->debug_delay_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    if (j->kind == JOB_CLASSIFY) classify(w, j);
    else v2_run(w, j);
}
