/* threadpool.c - fork-join thread pool: a generation counter the workers spin on, then futex.
 *
 * Work is split by measured speed, not evenly: on the 2-vCPU VMs this runs on, one vCPU is often
 * 1.3-1.5x slower than the other (which one changes from minute to minute), and an even split then
 * waits for the slow one on every layer. Each thread times its part of every job; after a job
 * long enough to time (>= 20 us), thread 0 moves the shares a step towards each thread's measured
 * rate (parts done per second), so a steady asymmetry is tracked within a few layers. The shares
 * change only between jobs, so all threads of a job see the same split. LSQ_POOL_EVEN=1 keeps the
 * even split (for comparisons). */
#include "threadpool.h"
#include "util.h"

#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SPIN_ITERS 20000
#define MIN_TIMED_S 20e-6 /* shorter jobs do not move the shares: too few rows, too noisy */
#define SHARE_STEP 0.15f  /* how far one job moves the shares towards its measured rates */

/* One cache line per thread: the two vCPUs here pass a shared line back and forth slowly (an
 * unpadded array of these cost 30% of a 2-thread MixNet-S inference). */
typedef struct {
    _Alignas(64) double busy; /* seconds in the last job */
    float got;                /* the fraction of it lsq_pool_range gave this thread */
} lsq_slot;

struct lsq_pool {
    int n;
    pthread_t *threads;
    lsq_pool_fn fn;
    void *ctx;
    _Atomic uint32_t generation; /* bumped per job; futex word */
    _Atomic int pending;         /* workers still running the current job */
    _Atomic int sleepers;        /* workers in (or about to enter) futex_wait */
    _Atomic int stop;
    int adaptive;
    float *share;   /* [n] fractions of each job, summing to 1; written by thread 0 between jobs */
    lsq_slot *slot; /* [n] what each thread measured in the last job */
};

/* The pool whose job this thread is running (lsq_pool_range reads its shares), else NULL. */
static _Thread_local lsq_pool *cur_pool;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* After a job: move the shares towards the rates measured in it. */
static void rebalance(lsq_pool *p)
{
    double tmax = 0, total = 0;
    for (int i = 0; i < p->n; i++) {
        const lsq_slot *t = &p->slot[i];
        if (t->got <= 0.f || t->busy <= 0) return; /* someone had nothing to do: no reading */
        tmax = t->busy > tmax ? t->busy : tmax;
        total += t->got / t->busy;
    }
    if (tmax < MIN_TIMED_S) return;
    float sum = 0.f;
    for (int i = 0; i < p->n; i++) {
        float rate = (float)(p->slot[i].got / p->slot[i].busy / total);
        float s = (1.f - SHARE_STEP) * p->share[i] + SHARE_STEP * rate;
        float floor_ = 0.5f / (float)p->n; /* never starve a thread: it must keep being measured */
        p->share[i] = s < floor_ ? floor_ : s;
        sum += p->share[i];
    }
    for (int i = 0; i < p->n; i++) p->share[i] /= sum;
}

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
    lsq_fp_flush_denormals(); /* as the caller's thread does for each forward pass (util.h) */
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
        double t0 = now_s();
        cur_pool = p;
        p->slot[wa.tid].got = 0.f; /* set by lsq_pool_range if the job calls it */
        p->fn(p->ctx, wa.tid, p->n);
        cur_pool = NULL;
        p->slot[wa.tid].busy = now_s() - t0;
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

lsq_pool *lsq_pool_create(int nthreads)
{
    lsq_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = nthreads < 1 ? 1 : nthreads;
    if (p->n == 1) return p;
    const char *even = getenv("LSQ_POOL_EVEN");
    p->adaptive = !(even && *even && *even != '0');
    p->threads = calloc((size_t)p->n, sizeof *p->threads);
    p->share = calloc((size_t)p->n, sizeof *p->share);
    p->slot = aligned_alloc(64, (size_t)p->n * sizeof *p->slot);
    if (!p->threads || !p->share || !p->slot) goto fail;
    memset(p->slot, 0, (size_t)p->n * sizeof *p->slot);
    for (int i = 0; i < p->n; i++) p->share[i] = 1.f / (float)p->n;
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
    free(p->threads), free(p->share), free(p->slot);
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
    double t0 = now_s();
    cur_pool = p;
    p->slot[0].got = 0.f;
    fn(ctx, 0, p->n);
    cur_pool = NULL;
    p->slot[0].busy = now_s() - t0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) _mm_pause();
    if (p->adaptive) rebalance(p);
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
    free(p->threads), free(p->share), free(p->slot);
    free(p);
}

/* The split of `units` by p's shares (p NULL, or of another size: even); part of thread tid. */
static void split_units(const lsq_pool *p, int units, int tid, int nthreads, int *ub, int *ue)
{
    if (p && p->n == nthreads && nthreads > 1 && p->share) {
        float lo = 0.f;
        for (int i = 0; i < tid; i++) lo += p->share[i]; /* the same sums, in the same order, in every thread */
        int b = (int)((float)units * lo + 0.5f);
        int e = tid == nthreads - 1 ? units : (int)((float)units * (lo + p->share[tid]) + 0.5f);
        b = b > units ? units : b;
        *ub = b;
        *ue = e > units ? units : e < b ? b : e;
    } else {
        int per = units / nthreads, rem = units % nthreads;
        *ub = tid * per + (tid < rem ? tid : rem);
        *ue = *ub + per + (tid < rem ? 1 : 0);
    }
}

void lsq_pool_range(int n, int align, int tid, int nthreads, int *b, int *e)
{
    if (align < 1) align = 1;
    int units = (n + align - 1) / align, ub, ue;
    lsq_pool *p = cur_pool; /* inside a job: the pool's shares */
    split_units(p, units, tid, nthreads, &ub, &ue);
    if (p && p->n == nthreads && nthreads > 1) p->slot[tid].got = units ? (float)(ue - ub) / (float)units : 0.f;
    *b = ub * align < n ? ub * align : n;
    *e = ue * align < n ? ue * align : n;
}

size_t lsq_pool_meet_offset(const lsq_pool *p, int n, int align, size_t item_elems, size_t mid, size_t line)
{
    if (!p || p->n == 1) return 0;
    int b, e;
    lsq_pool_next_range(p, n, align, p->n / 2, &b, &e);
    return mid - (((size_t)b * item_elems + line - 1) & ~(line - 1));
}

void lsq_pool_next_range(const lsq_pool *p, int n, int align, int tid, int *b, int *e)
{
    if (align < 1) align = 1;
    int units = (n + align - 1) / align, ub, ue, nthreads = p ? p->n : 1;
    split_units(p, units, tid, nthreads, &ub, &ue);
    *b = ub * align < n ? ub * align : n;
    *e = ue * align < n ? ue * align : n;
}
