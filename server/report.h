/* report.h - per-configuration benchmark latency and dataset accuracy, measured at start-up (or
 * read from the accuracy cache) and rendered with the live latencies as GET /v1/report. */
#ifndef LSQ_SERVER_REPORT_H
#define LSQ_SERVER_REPORT_H

#include <stddef.h>

#include "metrics.h"
#include "models.h"
#include "options.h"

typedef struct report report;

report *report_create(const model_registry *reg, const server_options *opt, metrics *m);
/* Measure everything now, on the calling thread (--eval startup, and the benchmark always). */
void report_measure_benchmarks(report *r);
void report_measure_accuracy(report *r);
/* Measure accuracy on a background thread (--eval background). */
int report_start_background(report *r);
/* Cancel a running measurement and join its thread. */
void report_stop(report *r);
void report_free(report *r);

/* The JSON document of GET /v1/report; malloc'd. */
char *report_render(report *r, size_t *len);

#endif
