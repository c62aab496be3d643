/* eval.c - accuracy and batch-1 inference latency of a model on a labelled dataset.
 *
 * Shared by `lsq eval` and the HTTP server's report, so that both measure the same thing: each item
 * goes through the model's own preprocessing and one lsq_session_run, timed alone. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lsq.h"
#include "util.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(const double *sorted, int n, double q) /* nearest rank */
{
    int i = (int)ceil(q * n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* dataset class c -> model class index: by name when every folder name is a model label */
static int *class_map(const lsq_dataset *ds, const lsq_model *m)
{
    int nc = lsq_dataset_num_classes(ds), nm = lsq_model_num_classes(m);
    int *map = malloc((size_t)(nc > 0 ? nc : 1) * sizeof(int));
    if (!map) return NULL;
    int by_name = nc > 0 && lsq_dataset_class_name(ds, 0) != NULL;
    for (int c = 0; c < nc; c++) {
        map[c] = c;
        if (!by_name) continue;
        int found = -1;
        for (int k = 0; k < nm && found < 0; k++)
            if (!strcmp(lsq_model_label(m, k), lsq_dataset_class_name(ds, c))) found = k;
        if (found < 0) by_name = 0;
        else map[c] = found;
    }
    if (!by_name)
        for (int c = 0; c < nc; c++) map[c] = c;
    return map;
}

lsq_status lsq_eval(const lsq_model *m, const lsq_dataset *ds, const lsq_eval_options *opt, lsq_eval_result *out,
                    lsq_error *err)
{
    if (!m || !ds || !out) return lsq_fail(err, LSQ_ERR_ARG, "lsq_eval: NULL argument");
    lsq_eval_options o = {0};
    if (opt) o = *opt;
    memset(out, 0, sizeof *out);
    const lsq_preprocess *pp = lsq_model_preprocess(m);
    int S = pp->input_size, nm = lsq_model_num_classes(m), n = lsq_dataset_size(ds);
    if (o.limit > 0 && o.limit < n) n = o.limit;
    if (n <= 0) return lsq_fail(err, LSQ_ERR_ARG, "eval: the dataset %s is empty", lsq_dataset_describe(ds));
    lsq_status st = LSQ_ERR_NOMEM;
    lsq_session *s = NULL;
    lsq_session_options so = {.height = S, .width = S, .threads = o.threads};
    float *x = malloc((size_t)3 * S * S * sizeof(float)), *logits = malloc((size_t)nm * sizeof(float));
    double *t = malloc((size_t)n * sizeof(double));
    int *map = class_map(ds, m);
    if (!x || !logits || !t || !map) {
        lsq_fail(err, st, "eval: out of memory");
        goto fail;
    }
    if ((st = lsq_session_create(m, &so, &s, err))) goto fail;
    for (int i = 0; i < n; i++) {
        lsq_image img = {0};
        lsq_error e2;
        if ((st = lsq_dataset_get(ds, i, &img, &e2)) || (st = lsq_image_preprocess(&img, pp, x, &e2))) {
            lsq_image_free(&img);
            lsq_fail(err, st, "eval: item %d: %s", i, e2.msg);
            goto fail;
        }
        lsq_image_free(&img);
        double t0 = now_ms();
        lsq_session_run(s, x, logits);
        t[i] = now_ms() - t0;
        out->infer_total_ms += t[i];
        int label = lsq_dataset_label(ds, i);
        label = label >= 0 && label < lsq_dataset_num_classes(ds) ? map[label] : label;
        if (label < 0 || label >= nm) {
            st = lsq_fail(err, LSQ_ERR_ARG, "eval: item %d: class %d but the model has %d classes", i, label, nm);
            goto fail;
        }
        int rank = 0; /* classes scoring higher than the true one (ties: lower index first) */
        for (int k = 0; k < nm; k++) rank += logits[k] > logits[label] || (logits[k] == logits[label] && k < label);
        out->top1 += rank == 0;
        out->top5 += rank < 5;
        if (o.class_total) o.class_total[label]++;
        if (o.class_correct) o.class_correct[label] += rank == 0;
        out->images++;
        if (o.progress && o.progress(o.user, i + 1, n, out->top1)) {
            st = lsq_fail(err, LSQ_ERR_ARG, "eval: cancelled after %d of %d items", i + 1, n);
            goto fail;
        }
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    out->p50_ms = percentile(t, n, 0.5);
    out->p90_ms = percentile(t, n, 0.9);
    out->p99_ms = percentile(t, n, 0.99);
    st = LSQ_OK;
fail:
    lsq_session_free(s);
    free(x);
    free(logits);
    free(t);
    free(map);
    return st;
}
