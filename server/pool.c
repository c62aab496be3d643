/* pool.c - the bounded request queue, its worker threads and the deadline reaper. */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pool {
    pool_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t nonempty, ready_cv, reaper_cv;
    job *head, *tail;
    int depth, inflight, stopping;
    int inited, init_failed;
    char init_err[300];
    pthread_t *threads, reaper;
    int started;
};

double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char timeout_body[] = "{\"error\":\"timed out waiting in the queue\"}";

static void answer_timeout(job *j)
{
    j->status = 504;
    j->resp = strdup(timeout_body);
    j->resp_len = j->resp ? strlen(j->resp) : 0;
    j->content_type = "application/json";
    j->queue_ms = now_ms() - j->t_enqueue;
}

typedef struct {
    pool *p;
    int index;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    pool *p = wa.p;
    char err[256] = "";
    void *ctx = p->cfg.worker_init(wa.index, p->cfg.arg, err, sizeof err);
    pthread_mutex_lock(&p->mu);
    p->inited++;
    if (!ctx && !p->init_failed) {
        p->init_failed = 1;
        snprintf(p->init_err, sizeof p->init_err, "worker %d: %s", wa.index, err);
    }
    pthread_cond_broadcast(&p->ready_cv);
    if (!ctx) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->nonempty, &p->mu);
        job *j = p->head;
        if (!j) break; /* stopping and drained */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->depth--;
        p->inflight++;
        pthread_mutex_unlock(&p->mu);
        double t = now_ms();
        if (t > j->deadline) {
            answer_timeout(j);
        } else {
            j->queue_ms = t - j->t_enqueue;
            p->cfg.worker_run(ctx, j);
        }
        pthread_mutex_lock(&p->mu);
        p->inflight--;
        pthread_mutex_unlock(&p->mu);
        j->complete(j); /* hands the job back; not touched again */
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    p->cfg.worker_free(ctx);
    return NULL;
}

/* Answers 504 for queued jobs whose deadline passed, every 20 ms, so that a client waiting behind
 * slow inferences hears back at its deadline rather than when a worker frees up. */
static void *reaper_main(void *arg)
{
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&p->reaper_cv, &p->mu, &ts);
        double t = now_ms();
        job *expired = NULL, **pp = &p->head, *prev = NULL;
        while (*pp) {
            job *j = *pp;
            if (t > j->deadline) {
                *pp = j->next;
                p->depth--;
                j->next = expired;
                expired = j;
            } else {
                prev = j;
                pp = &j->next;
            }
        }
        p->tail = prev;
        if (expired) {
            pthread_mutex_unlock(&p->mu);
            while (expired) {
                job *j = expired;
                expired = j->next;
                answer_timeout(j);
                j->complete(j);
            }
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pool *pool_create(const pool_config *cfg, char *err, size_t errlen)
{
    pool *p = calloc(1, sizeof *p);
    if (!p || !(p->threads = calloc((size_t)cfg->workers, sizeof *p->threads))) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = *cfg;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->nonempty, NULL);
    pthread_cond_init(&p->ready_cv, NULL);
    pthread_cond_init(&p->reaper_cv, NULL);
    for (int i = 0; i < cfg->workers; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, i};
        if (!wa || pthread_create(&p->threads[i], NULL, worker_main, wa)) {
            free(wa);
            snprintf(err, errlen, "cannot start worker thread %d", i);
            pthread_mutex_lock(&p->mu);
            p->init_failed = 1;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->started++;
    }
    pthread_mutex_lock(&p->mu);
    while (p->inited < p->started) pthread_cond_wait(&p->ready_cv, &p->mu);
    int failed = p->init_failed;
    if (failed && p->init_err[0]) snprintf(err, errlen, "%s", p->init_err);
    pthread_mutex_unlock(&p->mu);
    if (!failed && pthread_create(&p->reaper, NULL, reaper_main, p)) {
        snprintf(err, errlen, "cannot start the reaper thread");
        failed = 1;
    }
    if (failed) {
        pthread_mutex_lock(&p->mu);
        p->stopping = 1;
        pthread_cond_broadcast(&p->nonempty);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
        free(p->threads);
        free(p);
        return NULL;
    }
    return p;
}

int pool_submit(pool *p, job *j)
{
    pthread_mutex_lock(&p->mu);
    int rc = p->stopping ? -2 : p->depth >= p->cfg.capacity ? -1 : 0;
    if (!rc) {
        j->next = NULL;
        j->t_enqueue = now_ms();
        if (j->on_enqueue) j->on_enqueue(j);
        if (p->tail) p->tail->next = j;
        else p->head = j;
        p->tail = j;
        p->depth++;
        pthread_cond_signal(&p->nonempty);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int pool_depth(pool *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

int pool_inflight(pool *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->inflight;
    pthread_mutex_unlock(&p->mu);
    return d;
}

void pool_destroy(pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->nonempty);
    pthread_cond_broadcast(&p->reaper_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->reaper, NULL);
    for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->nonempty);
    pthread_cond_destroy(&p->ready_cv);
    pthread_cond_destroy(&p->reaper_cv);
    free(p->threads);
    free(p);
}
