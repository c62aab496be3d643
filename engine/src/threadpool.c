/* threadpool.c - fork-join thread pool: a generation counter the workers spin on, then futex. */
#include "threadpool.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SPIN_ITERS 20000

struct lsq_pool {
    int n;
    pthread_t *threads;
    lsq_pool_fn fn;
    void *ctx;
    _Atomic uint32_t generation; /* bumped per job; futex word */
    _Atomic int pending;         /* workers still running the current job */
    _Atomic int sleepers;        /* workers in (or about to enter) futex_wait */
    _Atomic int stop;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

typedef struct {
    lsq_pool *pool;
    int tid;
} worker_arg;

static void *worker(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    lsq_pool *p = wa.pool;
    uint32_t seen = 0; /* jobs bump the generation from 0: a job posted before this thread ran is not missed */
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                _mm_pause();
            } else {
                /* announce the sleep before re-checking the word in the kernel: lsq_pool_run bumps
                 * the generation and then reads sleepers (both seq_cst), so either it sees us and
                 * wakes us or futex_wait sees the new generation and returns at once */
                atomic_fetch_add(&p->sleepers, 1);
                futex_wait(&p->generation, seen);
                atomic_fetch_sub(&p->sleepers, 1);
            }
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        p->fn(p->ctx, wa.tid, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

lsq_pool *lsq_pool_create(int nthreads)
{
    lsq_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads < 1 ? 1 : nthreads;
    if (p->n == 1) return p;
    p->threads = calloc((size_t)p->n, sizeof *p->threads);
    if (!p->threads) goto fail;
    for (int i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) goto fail_threads;
        wa->pool = p;
        wa->tid = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            goto fail_threads;
        }
        continue;
    fail_threads:
        p->n = i; /* join the ones that started */
        lsq_pool_free(p);
        return NULL;
    }
    return p;
fail:
    free(p);
    return NULL;
}

void lsq_pool_run(lsq_pool *p, lsq_pool_fn fn, void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->generation, 1);
    /* a futex wake is a system call (~1-2 us) and a pool runs ~70 jobs per inference; while the
     * workers are still spinning from the last job, skip it */
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(&p->generation);
    fn(ctx, 0, p->n);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) _mm_pause();
}

int lsq_pool_size(const lsq_pool *p) { return p ? p->n : 1; }

void lsq_pool_free(lsq_pool *p)
{
    if (!p) return;
    if (p->n > 1) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->generation, 1);
        futex_wake_all(&p->generation);
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    free(p);
}

void lsq_pool_range(int n, int align, int tid, int nthreads, int *b, int *e)
{
    if (align < 1) align = 1;
    int units = (n + align - 1) / align;
    int per = units / nthreads, rem = units % nthreads;
    int ub = tid * per + (tid < rem ? tid : rem);
    int ue = ub + per + (tid < rem ? 1 : 0);
    *b = ub * align < n ? ub * align : n;
    *e = ue * align < n ? ue * align : n;
}
