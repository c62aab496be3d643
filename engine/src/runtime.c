/* runtime.c - what the process runs on: kernel level, BLAS core, and the OpenBLAS core fix-up.
 *
 * Debian's OpenBLAS 0.3.21 does not recognise recent CPUs (Emerald Rapids, Zen 4/5) and falls back
 * to older kernels (Prescott or Haswell): 4.7x slower sgemm. The library reads OPENBLAS_CORETYPE
 * in its constructor, before main(), so the fix-up re-executes the program with the variable set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "kernels/q8.h"
#include "lsq.h"

char *openblas_get_corename(void);

static const char *blas_target(void)
{
    lsq_isa isa = lsq_cpu_isa();
    return isa == LSQ_ISA_AVX512 ? "SkylakeX" : isa == LSQ_ISA_AVX2 ? "Haswell" : NULL;
}

/* Cores at least as capable as the target, as OpenBLAS names them (lower case). */
static int core_good_enough(const char *core, const char *target)
{
    static const char *avx512[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};
    static const char *avx2[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", NULL};
    const char **ok = !strcmp(target, "SkylakeX") ? avx512 : avx2;
    for (int i = 0; ok[i]; i++)
        if (!strcasecmp(core, ok[i])) return 1;
    return 0;
}

void lsq_blas_fixup(int argc, char **argv)
{
    (void)argc;
    if (getenv("OPENBLAS_CORETYPE") || getenv("LSQ_BLAS_FIXUP_DONE")) return;
    const char *target = blas_target();
    const char *core = openblas_get_corename();
    if (!target || !core || core_good_enough(core, target)) return;
    setenv("OPENBLAS_CORETYPE", target, 1);
    setenv("LSQ_BLAS_FIXUP_DONE", core, 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow core */
    unsetenv("OPENBLAS_CORETYPE");
}

const char *lsq_runtime_describe(void)
{
    static char line[256];
    const lsq_kernels *k = lsq_kernels_best();
    const char *forced = getenv("LSQ_ISA");
    const char *was = getenv("LSQ_BLAS_FIXUP_DONE");
    snprintf(line, sizeof line, "kernels: %s, integer %s (cpu supports %s%s%s%s); blas: OpenBLAS core %s%s%s%s", k->name,
             lsq_q8_kernels_best()->name, lsq_isa_name(lsq_cpu_isa()), lsq_cpu_has_avx512vnni() ? " + vnni" : "",
             forced && *forced ? ", capped by LSQ_ISA=" : "", forced && *forced ? forced : "", openblas_get_corename(),
             was ? " (fixed up from " : "", was ? was : "", was ? ")" : "");
    return line;
}
