/* pool.h - bounded FIFO queue feeding a fixed pool of inference worker threads. HTTP threads only
 * submit; workers run the jobs; a reaper answers 504 for jobs whose deadline passes in the queue. */
#ifndef LSQ_SERVER_POOL_H
#define LSQ_SERVER_POOL_H

#include "job.h"

typedef struct pool pool;

typedef struct {
    int workers, capacity;
    /* Runs on each worker thread before it takes jobs (sessions, warm-up); NULL = failure, with a
     * message in err. */
    void *(*worker_init)(int index, void *arg, char *err, size_t errlen);
    void (*worker_run)(void *wctx, job *j); /* fills j's answer; the pool calls j->complete */
    void (*worker_free)(void *wctx);
    void *arg;
} pool_config;

/* Starts the workers and waits for every worker_init. NULL with a message on failure. */
pool *pool_create(const pool_config *cfg, char *err, size_t errlen);
/* 0: queued; -1: queue full (answer 503); -2: pool stopping. */
int pool_submit(pool *p, job *j);
int pool_depth(pool *p);    /* queued, not yet started */
int pool_inflight(pool *p); /* running on a worker now */
/* Finishes queued jobs, then joins the workers. */
void pool_destroy(pool *p);

double now_ms(void); /* CLOCK_MONOTONIC, milliseconds */

#endif
