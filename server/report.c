/* report.c - what /v1/report says of each (model, configuration): model bytes and bits, accuracy on
 * the manifest's dataset, benchmark latency and the live latency of served requests.
 *
 * Accuracy is measured with lsq_eval (what `lsq eval` prints) on a session of its own, so it
 * never blocks the inference workers, but on a small machine it does compete with them for CPU:
 * --eval startup measures before the server reports ready, and the cache (keyed by a hash of the
 * checkpoint's bytes, the configuration, the engine version and kernels, and the dataset) makes
 * later start-ups instant. A dataset that is missing at run time makes accuracy "unavailable";
 * the server keeps serving. */
#include "report.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "version.h"

typedef enum { ACC_PENDING, ACC_MEASURING, ACC_MEASURED, ACC_CACHED, ACC_UNAVAILABLE, ACC_OFF, ACC_ERROR } acc_state;
static const char *const acc_names[] = {"pending", "measuring", "measured", "cached", "unavailable", "off", "error"};

typedef struct {
    acc_state state;
    char reason[1200];
    int images, top1, top5, dataset_size, done;
    double seconds;
    int bench_done, bench_iters;
    double bench_p50, bench_p99;
} entry_report;

struct report {
    const model_registry *reg;
    const server_options *opt;
    metrics *metrics;
    pthread_mutex_t mu;
    entry_report *e;
    pthread_t thread;
    int thread_started;
    atomic_int cancel;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

report *report_create(const model_registry *reg, const server_options *opt, metrics *m)
{
    report *r = calloc(1, sizeof *r);
    if (!r || !(r->e = calloc((size_t)reg->n, sizeof *r->e))) {
        free(r);
        return NULL;
    }
    r->reg = reg;
    r->opt = opt;
    r->metrics = m;
    pthread_mutex_init(&r->mu, NULL);
    for (int i = 0; i < reg->n; i++) {
        entry_report *x = &r->e[i];
        if (opt->eval == EVAL_MODE_OFF) {
            x->state = ACC_OFF;
            snprintf(x->reason, sizeof x->reason, "accuracy measurement is off (--eval off)");
        } else if (!reg->entries[i].mm->dataset_path) {
            x->state = ACC_UNAVAILABLE;
            snprintf(x->reason, sizeof x->reason, "the manifest names no dataset for this model");
        }
    }
    return r;
}

/* ==== benchmark ================================================================================ */

void report_measure_benchmarks(report *r)
{
    int iters = r->opt->bench_iters;
    double *t = malloc((size_t)iters * sizeof(double));
    for (int i = 0; t && i < r->reg->n && !r->cancel; i++) {
        const model_entry *e = &r->reg->entries[i];
        lsq_session *s = NULL;
        lsq_session_options so = {.height = e->input_size, .width = e->input_size, .threads = r->opt->threads};
        float *x = calloc((size_t)3 * e->input_size * e->input_size, sizeof(float));
        float *y = calloc((size_t)e->classes, sizeof(float));
        if (x && y && !lsq_session_create(e->model, &so, &s, NULL)) {
            lsq_session_run(s, x, y); /* warm-up */
            for (int k = 0; k < iters; k++) {
                double t0 = mono_ms();
                lsq_session_run(s, x, y);
                t[k] = mono_ms() - t0;
            }
            qsort(t, (size_t)iters, sizeof *t, cmp_double);
            pthread_mutex_lock(&r->mu);
            r->e[i].bench_done = 1;
            r->e[i].bench_iters = iters;
            r->e[i].bench_p50 = t[(iters + 1) / 2 - 1];
            int k99 = (int)(0.99 * iters + 0.999999) - 1;
            r->e[i].bench_p99 = t[k99 < 0 ? 0 : k99];
            pthread_mutex_unlock(&r->mu);
        }
        lsq_session_free(s);
        free(x);
        free(y);
    }
    free(t);
}

/* ==== accuracy cache =========================================================================== */

/* Hash of everything the accuracy depends on; 0 when the checkpoint cannot be read (or was
 * calibrated in memory: then there is no file, and no cache either). */
static uint64_t accuracy_key(const model_entry *e, int dataset_size, int limit)
{
    if (!e->file) return 0;
    char extra[1024];
    snprintf(extra, sizeof extra, "|%s|%s|%s|%s|%s|%d|%d", e->mc->config, LSQ_VERSION, LSQ_SERVER_BUILD,
             lsq_runtime_describe(), e->mm->dataset_path, dataset_size, limit);
    return cache_key(e->file, extra);
}

static int accuracy_path(const report *r, uint64_t key, char *out, size_t len, char *dir, size_t dirlen)
{
    char def[1024];
    const char *d = cache_dir(r->opt, def, sizeof def);
    if (!d) return -1;
    snprintf(dir, dirlen, "%s", d);
    int n = snprintf(out, len, "%s/accuracy-%016llx.json", d, (unsigned long long)key);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ==== accuracy ================================================================================= */

typedef struct {
    report *r;
    entry_report *x;
} progress_arg;

static int progress_cb(void *user, int done, int total, int top1)
{
    progress_arg *a = user;
    (void)top1;
    if (done % 16 == 0 || done == total) {
        pthread_mutex_lock(&a->r->mu);
        a->x->done = done;
        pthread_mutex_unlock(&a->r->mu);
    }
    return atomic_load(&a->r->cancel);
}

static void measure_one(report *r, int i)
{
    const model_entry *e = &r->reg->entries[i];
    entry_report *x = &r->e[i];
    lsq_dataset *ds = NULL;
    lsq_error le = {{0}};
    if (lsq_dataset_open(e->mm->dataset_path, e->mm->dataset_split, &ds, &le)) {
        pthread_mutex_lock(&r->mu);
        x->state = ACC_UNAVAILABLE;
        snprintf(x->reason, sizeof x->reason, "dataset unavailable: %s", le.msg);
        pthread_mutex_unlock(&r->mu);
        fprintf(stderr, "lsq-server: %s/%s: accuracy unavailable: %s\n", e->mm->name, e->mc->config, le.msg);
        return;
    }
    int size = lsq_dataset_size(ds), limit = r->opt->eval_limit;
    int n = limit > 0 && limit < size ? limit : size;
    uint64_t key = accuracy_key(e, size, n);
    char path[1100], dir[1024];
    int have_path = key && !accuracy_path(r, key, path, sizeof path, dir, sizeof dir);
    if (have_path) {
        json_t *c = json_load_file(path, 0, NULL);
        json_t *t1 = json_object_get(c, "top1"), *t5 = json_object_get(c, "top5"), *im = json_object_get(c, "images");
        if (json_is_integer(t1) && json_is_integer(t5) && json_is_integer(im) && json_integer_value(im) == n) {
            pthread_mutex_lock(&r->mu);
            x->state = ACC_CACHED;
            x->images = n;
            x->dataset_size = size;
            x->top1 = (int)json_integer_value(t1);
            x->top5 = (int)json_integer_value(t5);
            x->done = n;
            snprintf(x->reason, sizeof x->reason, "read from %s", path);
            pthread_mutex_unlock(&r->mu);
            json_decref(c);
            lsq_dataset_free(ds);
            return;
        }
        json_decref(c);
    }
    pthread_mutex_lock(&r->mu);
    x->state = ACC_MEASURING;
    x->dataset_size = size;
    x->images = n;
    pthread_mutex_unlock(&r->mu);
    progress_arg pa = {r, x};
    lsq_eval_options eo = {.limit = n, .threads = 1, .progress = progress_cb, .user = &pa};
    lsq_eval_result er;
    double t0 = mono_ms();
    lsq_status st = lsq_eval(e->model, ds, &eo, &er, &le);
    pthread_mutex_lock(&r->mu);
    if (st) {
        x->state = r->cancel ? ACC_PENDING : ACC_ERROR;
        snprintf(x->reason, sizeof x->reason, "%s", le.msg);
    } else {
        x->state = ACC_MEASURED;
        x->top1 = er.top1;
        x->top5 = er.top5;
        x->images = er.images;
        x->seconds = (mono_ms() - t0) / 1e3;
        x->reason[0] = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (!st) {
        fprintf(stderr, "lsq-server: %s/%s: top-1 %.2f%% top-5 %.2f%% on %d images of %s (%.1f s)\n", e->mm->name,
                e->mc->config, 100.0 * er.top1 / er.images, 100.0 * er.top5 / er.images, er.images,
                e->mm->dataset_name, x->seconds);
        if (have_path) {
            cache_mkdirs(dir);
            char tmp[1200];
            snprintf(tmp, sizeof tmp, "%s.tmp", path);
            json_t *c = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i}", "model", e->mm->name, "config", e->mc->config,
                                  "file", e->file, "images", er.images, "top1", er.top1, "top5", er.top5);
            if (c && !json_dump_file(c, tmp, JSON_COMPACT | JSON_REAL_PRECISION(9)) && !rename(tmp, path)) {
                /* cached */
            } else {
                fprintf(stderr, "lsq-server: cannot write the accuracy cache %s (%s); going on without\n", path,
                        strerror(errno));
                remove(tmp);
            }
            json_decref(c);
        }
    } else if (!r->cancel) {
        fprintf(stderr, "lsq-server: %s/%s: accuracy: %s\n", e->mm->name, e->mc->config, le.msg);
    }
    lsq_dataset_free(ds);
}

void report_measure_accuracy(report *r)
{
    for (int i = 0; i < r->reg->n && !r->cancel; i++) {
        pthread_mutex_lock(&r->mu);
        int todo = r->e[i].state == ACC_PENDING;
        pthread_mutex_unlock(&r->mu);
        if (todo) measure_one(r, i);
    }
}

static void *background(void *arg)
{
    report_measure_accuracy(arg);
    return NULL;
}

int report_start_background(report *r)
{
    if (pthread_create(&r->thread, NULL, background, r)) return -1;
    r->thread_started = 1;
    return 0;
}

void report_stop(report *r)
{
    atomic_store(&r->cancel, 1);
    if (r->thread_started) pthread_join(r->thread, NULL);
    r->thread_started = 0;
}

void report_free(report *r)
{
    if (!r) return;
    report_stop(r);
    pthread_mutex_destroy(&r->mu);
    free(r->e);
    free(r);
}

/* ==== rendering ================================================================================ */

char *report_render(report *r, size_t *len)
{
    json_t *root = json_pack("{s:{s:s,s:s,s:s},s:{s:i,s:i}}", "engine", "version", LSQ_VERSION, "build",
                             LSQ_SERVER_BUILD, "runtime", lsq_runtime_describe(), "server", "workers",
                             r->opt->workers, "threads", r->opt->threads);
    json_t *arr = json_array();
    json_object_set_new(root, "configurations", arr);
    for (int i = 0; i < r->reg->n; i++) {
        const model_entry *e = &r->reg->entries[i];
        pthread_mutex_lock(&r->mu);
        entry_report x = r->e[i];
        pthread_mutex_unlock(&r->mu);
        json_t *acc = json_pack("{s:s}", "status", acc_names[x.state]);
        if (e->mm->dataset_path)
            json_object_set_new(acc, "dataset", json_pack("{s:s,s:s,s:s}", "name", e->mm->dataset_name, "path",
                                                          e->mm->dataset_path, "split", e->mm->dataset_split));
        if (x.dataset_size) json_object_set_new(json_object_get(acc, "dataset"), "size", json_integer(x.dataset_size));
        if (x.state == ACC_MEASURED || x.state == ACC_CACHED) {
            json_object_set_new(acc, "top1", json_real((double)x.top1 / x.images));
            json_object_set_new(acc, "top5", json_real((double)x.top5 / x.images));
            json_object_set_new(acc, "images", json_integer(x.images));
        } else {
            json_object_set_new(acc, "top1", json_null());
            json_object_set_new(acc, "top5", json_null());
            if (x.state == ACC_MEASURING) {
                json_object_set_new(acc, "images", json_integer(x.images));
                json_object_set_new(acc, "progress", json_integer(x.done));
            }
        }
        if (x.reason[0]) json_object_set_new(acc, "reason", json_string(x.reason));
        double ip50, ip99, tp50, tp99;
        int live_n;
        metrics_live(r->metrics, e, &ip50, &ip99, &tp50, &tp99, &live_n);
        json_t *bench = x.bench_done ? json_pack("{s:f,s:f,s:i,s:i}", "p50", x.bench_p50, "p99", x.bench_p99,
                                                 "iters", x.bench_iters, "threads", r->opt->threads)
                                     : json_null();
        json_t *live = live_n ? json_pack("{s:i,s:f,s:f,s:f,s:f}", "requests", live_n, "infer_p50", ip50, "infer_p99",
                                          ip99, "total_p50", tp50, "total_p99", tp99)
                              : json_pack("{s:i}", "requests", 0);
        json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:s,s:{s:i,s:i},s:I,s:i,s:i,s:o,s:{s:o,s:o}}", "model", e->mm->name,
                              "config", e->mc->config, "arch", lsq_model_arch(e->model), "default", e->is_default,
                              "description", e->mm->description, "bits", "weights", e->wbits, "activations", e->abits,
                              "model_bytes", (json_int_t)e->file_bytes, "input_size", e->input_size, "classes",
                              e->classes, "accuracy", acc, "latency_ms", "benchmark", bench, "live", live);
        json_object_set_new(o, "source", json_string(registry_source(e)));
        if (e->mc->calibrated) {
            const manifest_calibration *c = &e->mm->calib;
            json_t *cal = json_pack("{s:s,s:s,s:s,s:i,s:i,s:s,s:s}", "from", e->mc->file, "path", c->path, "split",
                                    c->split, "images", e->calib.images, "dataset_size", e->calib.total, "init",
                                    c->init ? c->init : "default", "cache", calib_cache_to_string(e->calib.cache));
            if (e->calib.cache != CALIB_CACHE_HIT) json_object_set_new(cal, "seconds", json_real(e->calib.seconds));
            if (e->file) json_object_set_new(cal, "file", json_string(e->file));
            json_object_set_new(o, "calibration", cal);
        }
        json_array_append_new(arr, o);
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (s) *len = strlen(s);
    return s;
}
