/* threadpool.h - a fork-join pool for intra-op parallelism (private to the engine).
 *
 * lsq_pool_run() runs fn(ctx, tid, n) on all n threads (the caller is thread 0) and returns when
 * every one has finished. Workers spin briefly between jobs (layers follow each other within
 * microseconds), then sleep on a futex so an idle pool costs no CPU. */
#ifndef LSQ_THREADPOOL_H
#define LSQ_THREADPOOL_H

#include <stddef.h>

typedef struct lsq_pool lsq_pool;
typedef void (*lsq_pool_fn)(void *ctx, int tid, int nthreads);

lsq_pool *lsq_pool_create(int nthreads); /* NULL on failure; nthreads <= 1 starts no thread */
void lsq_pool_run(lsq_pool *p, lsq_pool_fn fn, void *ctx);
int lsq_pool_size(const lsq_pool *p);
void lsq_pool_free(lsq_pool *p);

/* Thread tid's part of [0, n), split into nthreads contiguous ranges aligned to `align`. Inside a
 * job of an n-thread pool the ranges follow the pool's current shares (threadpool.c: work split by
 * measured speed), so call it from the job's function once per thread and job: the part it returns
 * is what the thread is timed against. Elsewhere: an even split. */
void lsq_pool_range(int n, int align, int tid, int nthreads, int *b, int *e);

/* The part lsq_pool_range would give thread tid of p's next job (the shares change only after a
 * job), for laying out a job's output before it runs. */
void lsq_pool_next_range(const lsq_pool *p, int n, int align, int tid, int *b, int *e);

/* Tensor placement (session.c, qexec.c: place()): where in its buffer to put the output of p's next
 * job - n items of item_elems elements, split as lsq_pool_range(n, align) will split them - so that
 * the part of the middle thread (size / 2) starts `mid` elements in, its start rounded up to a
 * multiple of `line` elements (a power of two: a cache line). Then every thread writes the same side
 * of the buffer in every layer. Returns the element offset; 0 for a 1-thread pool (mid is 0). */
size_t lsq_pool_meet_offset(const lsq_pool *p, int n, int align, size_t item_elems, size_t mid, size_t line);

#endif
