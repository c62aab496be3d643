/* metrics.c - counters and histograms behind GET /metrics, and the live latency window behind
 * /v1/report. One mutex: updates are a handful of increments per request. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE_WINDOW 1024
#define N_BUCKETS 15
static const double buckets_s[N_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,   0.5,   1,      2.5,    5,     10,   30};
static const int codes[] = {200, 400, 401, 404, 405, 413, 415, 500, 503, 504, 0 /* other */};
#define N_CODES (int)(sizeof codes / sizeof codes[0])

typedef struct {
    unsigned long long count[N_BUCKETS + 1]; /* last: +Inf only */
    unsigned long long n;
    double sum_s;
} histogram;

typedef struct {
    unsigned long long by_code[N_CODES];
    histogram queue, infer, total;
    float live_infer[LIVE_WINDOW], live_total[LIVE_WINDOW]; /* ms, ring */
    int live_n, live_at;
} entry_metrics;

struct metrics {
    const model_registry *reg;
    pthread_mutex_t mu;
    entry_metrics *e; /* [reg->n + 1]; the last one: requests that named no served model */
};

metrics *metrics_create(const model_registry *reg)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m || !(m->e = calloc((size_t)reg->n + 1, sizeof *m->e))) {
        free(m);
        return NULL;
    }
    m->reg = reg;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m->e);
    free(m);
}

static int code_index(int status)
{
    for (int i = 0; i < N_CODES - 1; i++)
        if (codes[i] == status) return i;
    return N_CODES - 1;
}

void metrics_request(metrics *m, const model_entry *e, int status)
{
    pthread_mutex_lock(&m->mu);
    m->e[e ? e->id : m->reg->n].by_code[code_index(status)]++;
    pthread_mutex_unlock(&m->mu);
}

static void observe(histogram *h, double ms)
{
    double s = ms / 1e3;
    int b = 0;
    while (b < N_BUCKETS && s > buckets_s[b]) b++;
    h->count[b]++;
    h->n++;
    h->sum_s += s;
}

void metrics_timing(metrics *m, const model_entry *e, double queue_ms, double infer_ms, double total_ms)
{
    pthread_mutex_lock(&m->mu);
    entry_metrics *x = &m->e[e->id];
    observe(&x->queue, queue_ms);
    observe(&x->infer, infer_ms);
    observe(&x->total, total_ms);
    x->live_infer[x->live_at] = (float)infer_ms;
    x->live_total[x->live_at] = (float)total_ms;
    x->live_at = (x->live_at + 1) % LIVE_WINDOW;
    if (x->live_n < LIVE_WINDOW) x->live_n++;
    pthread_mutex_unlock(&m->mu);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double pct(const float *sorted, int n, double q) /* nearest rank */
{
    int i = (int)(q * n + 0.999999) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

void metrics_live(metrics *m, const model_entry *e, double *ip50, double *ip99, double *tp50, double *tp99, int *n)
{
    float a[LIVE_WINDOW], b[LIVE_WINDOW];
    pthread_mutex_lock(&m->mu);
    entry_metrics *x = &m->e[e->id];
    *n = x->live_n;
    memcpy(a, x->live_infer, sizeof a);
    memcpy(b, x->live_total, sizeof b);
    pthread_mutex_unlock(&m->mu);
    *ip50 = *ip99 = *tp50 = *tp99 = 0;
    if (!*n) return;
    qsort(a, (size_t)*n, sizeof(float), cmp_float);
    qsort(b, (size_t)*n, sizeof(float), cmp_float);
    *ip50 = pct(a, *n, 0.5);
    *ip99 = pct(a, *n, 0.99);
    *tp50 = pct(b, *n, 0.5);
    *tp99 = pct(b, *n, 0.99);
}

/* ==== rendering ================================================================================ */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t c = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 1024;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = c;
    }
}

static void put_hist(sbuf *b, const char *name, const char *labels, const histogram *h)
{
    unsigned long long cum = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        cum += h->count[i];
        put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, buckets_s[i], cum);
    }
    put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, h->n);
    put(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, h->sum_s, name, labels, h->n);
}

char *metrics_render(metrics *m, const metrics_gauges *g, size_t *len)
{
    sbuf b = {0};
    b.p = malloc(b.cap = 16384);
    if (!b.p) return NULL;
    b.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    put(&b, "# HELP lsq_requests_total Finished HTTP requests by model, configuration and status.\n"
            "# TYPE lsq_requests_total counter\n");
    for (int i = 0; i <= m->reg->n; i++) {
        const char *mn = i < m->reg->n ? m->reg->entries[i].mm->name : "";
        const char *cn = i < m->reg->n ? m->reg->entries[i].mc->config : "";
        for (int c = 0; c < N_CODES; c++)
            if (m->e[i].by_code[c] || (i < m->reg->n && codes[c] == 200))
                put(&b, "lsq_requests_total{model=\"%s\",config=\"%s\",code=\"%s%.0d\"} %llu\n", mn, cn,
                    codes[c] ? "" : "other", codes[c], m->e[i].by_code[c]);
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"lsq_queue_seconds", "Time from enqueue to a worker taking the request.", offsetof(entry_metrics, queue)},
        {"lsq_inference_seconds", "Engine inference time of a request (all its images).", offsetof(entry_metrics, infer)},
        {"lsq_request_seconds", "Time from the request's arrival to its response.", offsetof(entry_metrics, total)},
    };
    for (size_t h = 0; h < sizeof hists / sizeof hists[0]; h++) {
        put(&b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name, hists[h].help, hists[h].name);
        for (int i = 0; i < m->reg->n; i++) {
            char labels[200];
            snprintf(labels, sizeof labels, "model=\"%s\",config=\"%s\"", m->reg->entries[i].mm->name,
                     m->reg->entries[i].mc->config);
            put_hist(&b, hists[h].name, labels, (const histogram *)((const char *)&m->e[i] + hists[h].off));
        }
    }
    pthread_mutex_unlock(&m->mu);
    put(&b,
        "# HELP lsq_queue_depth Requests waiting for a worker.\n# TYPE lsq_queue_depth gauge\nlsq_queue_depth %d\n"
        "# HELP lsq_queue_capacity Queue bound; beyond it requests get 503.\n# TYPE lsq_queue_capacity gauge\n"
        "lsq_queue_capacity %d\n"
        "# HELP lsq_inflight_requests Requests running on a worker.\n# TYPE lsq_inflight_requests gauge\n"
        "lsq_inflight_requests %d\n"
        "# HELP lsq_active_requests HTTP requests between arrival and response.\n# TYPE lsq_active_requests gauge\n"
        "lsq_active_requests %d\n"
        "# HELP lsq_workers Inference worker threads.\n# TYPE lsq_workers gauge\nlsq_workers %d\n"
        "# HELP lsq_ready 1 when the server accepts inference requests.\n# TYPE lsq_ready gauge\nlsq_ready %d\n",
        g->queue_depth, g->queue_capacity, g->inflight, g->active_requests, g->workers, g->ready);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
