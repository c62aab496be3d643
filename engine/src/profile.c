/* profile.c - see profile.h. Rows: 0 the stem, 1..nblocks the blocks, nblocks + 1 the head. */
#include "profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lsq_prof {
    const lsq_net_def *d;
    int H, W, nthreads, runs;
    const char *path;
    double last;
    double t[]; /* seconds per (row, kind) */
};

static const char *const kind_names[LSQ_PROF_KINDS] = {"stem", "expand", "dw", "exp+dw", "se", "project", "head+fc"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

lsq_prof *lsq_prof_from_env(const lsq_net_def *d, int H, int W, int nthreads, const char *path)
{
    const char *v = getenv("LSQ_PROFILE");
    if (!v || !*v || !strcmp(v, "0")) return NULL;
    size_t n = (size_t)(d->nblocks + 2) * LSQ_PROF_KINDS;
    lsq_prof *p = calloc(1, sizeof *p + n * sizeof(double));
    if (!p) return NULL;
    *p = (lsq_prof){.d = d, .H = H, .W = W, .nthreads = nthreads, .path = path};
    return p;
}

void lsq_prof_begin(lsq_prof *p)
{
    if (!p) return;
    p->runs++;
    p->last = now_s();
}

void lsq_prof_mark(lsq_prof *p, int row, int kind)
{
    if (!p) return;
    double n = now_s();
    p->t[row * LSQ_PROF_KINDS + kind] += n - p->last;
    p->last = n;
}

void lsq_prof_free(lsq_prof *p)
{
    if (!p) return;
    const lsq_net_def *d = p->d;
    if (p->runs) {
        double tot[LSQ_PROF_KINDS] = {0}, all = 0;
        fprintf(stderr, "lsq profile: %s %dx%d, %s path, %d thread(s), %d run(s), ms per run\n%-14s", d->arch, p->H,
                p->W, p->path, p->nthreads, p->runs, "block");
        for (int k = 0; k < LSQ_PROF_KINDS; k++) fprintf(stderr, "%9s", kind_names[k]);
        fputc('\n', stderr);
        for (int r = 0; r < d->nblocks + 2; r++) {
            fprintf(stderr, "%-14s", r == 0 ? "stem" : r == d->nblocks + 1 ? "head" : d->blocks[r - 1].dw.name);
            for (int k = 0; k < LSQ_PROF_KINDS; k++) {
                double v = p->t[r * LSQ_PROF_KINDS + k] * 1e3 / p->runs;
                tot[k] += v;
                all += v;
                fprintf(stderr, "%9.3f", v);
            }
            fputc('\n', stderr);
        }
        fprintf(stderr, "%-14s", "total");
        for (int k = 0; k < LSQ_PROF_KINDS; k++) fprintf(stderr, "%9.3f", tot[k]);
        fprintf(stderr, "   = %.3f ms\n", all);
    }
    free(p);
}
