/* metrics.h - request counters, latency histograms and live percentiles; Prometheus text output. */
#ifndef LSQ_SERVER_METRICS_H
#define LSQ_SERVER_METRICS_H

#include <stddef.h>

#include "models.h"

typedef struct metrics metrics;

metrics *metrics_create(const model_registry *reg);
void metrics_free(metrics *m);

/* One finished request; e NULL when it named no served model. */
void metrics_request(metrics *m, const model_entry *e, int status);
/* Stage times of a successful inference request. */
void metrics_timing(metrics *m, const model_entry *e, double queue_ms, double infer_ms, double total_ms);
/* Live percentiles over the last LIVE_WINDOW successful requests of e; n = how many there were. */
void metrics_live(metrics *m, const model_entry *e, double *infer_p50, double *infer_p99, double *total_p50,
                  double *total_p99, int *n);

typedef struct {
    int queue_depth, inflight, active_requests, workers, queue_capacity, ready;
} metrics_gauges;

/* The Prometheus text exposition (format 0.0.4); malloc'd. */
char *metrics_render(metrics *m, const metrics_gauges *g, size_t *len);

#endif
