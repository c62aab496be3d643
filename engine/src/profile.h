/* profile.h - LSQ_PROFILE=1: wall time per block and layer kind, accumulated over runs and printed
 * to stderr when the session ends. Shared by the float path (session.c) and the integer path
 * (qexec.c), so both report in the same table. Private to the engine. */
#ifndef LSQ_PROFILE_H
#define LSQ_PROFILE_H

#include "arch.h"

enum { LSQ_PROF_STEM, LSQ_PROF_EXPAND, LSQ_PROF_DW, LSQ_PROF_EXPDW, LSQ_PROF_SE, LSQ_PROF_PROJECT, LSQ_PROF_HEAD,
       LSQ_PROF_KINDS };

typedef struct lsq_prof lsq_prof;

/* NULL unless LSQ_PROFILE is set to something other than "" or "0" (or on out of memory): every
 * other call accepts NULL and does nothing, so an unprofiled run costs one branch per layer. */
lsq_prof *lsq_prof_from_env(const lsq_net_def *d, int H, int W, int nthreads, const char *path);
void lsq_prof_begin(lsq_prof *p);                 /* a run starts */
void lsq_prof_mark(lsq_prof *p, int row, int kind); /* time since the last mark goes to (row, kind) */
void lsq_prof_free(lsq_prof *p);                  /* prints the table (when a run was timed), frees */

#endif
