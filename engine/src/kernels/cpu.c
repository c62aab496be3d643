/* cpu.c - CPU feature detection and the choice of kernel table, made once per process.
 *
 * CPUID says what the processor implements; XGETBV says whether the OS saves the wider registers
 * (a kernel without AVX-512 state support would fault on the first zmm instruction). The
 * environment variable LSQ_ISA=scalar|avx2|avx512 caps the level, for tests and comparisons. */
#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

lsq_isa lsq_cpu_isa(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LSQ_ISA_SCALAR;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return LSQ_ISA_SCALAR;
    uint64_t xcr0 = xgetbv0();
    int ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xE6) == 0xE6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return LSQ_ISA_SCALAR;
    int avx2 = (b >> 5) & 1;
    int avx512 = ((b >> 16) & 1) /* F */ && ((b >> 17) & 1) /* DQ */ && ((b >> 30) & 1) /* BW */ &&
                 ((b >> 31) & 1) /* VL */;
    if (avx512 && zmm_os && fma) return LSQ_ISA_AVX512;
    if (avx2 && fma && ymm_os) return LSQ_ISA_AVX2;
    return LSQ_ISA_SCALAR;
}

const char *lsq_isa_name(lsq_isa isa)
{
    switch (isa) {
    case LSQ_ISA_AVX512: return "avx512";
    case LSQ_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

const lsq_kernels *lsq_kernels_for(lsq_isa isa)
{
    if (isa > lsq_cpu_isa()) return NULL;
    switch (isa) {
    case LSQ_ISA_AVX512: return &lsq_kernels_avx512;
    case LSQ_ISA_AVX2: return &lsq_kernels_avx2;
    default: return &lsq_kernels_scalar;
    }
}

/* The CPU's level capped by LSQ_ISA. */
static lsq_isa capped_isa(void)
{
    lsq_isa isa = lsq_cpu_isa();
    const char *env = getenv("LSQ_ISA");
    if (env && *env) {
        lsq_isa cap = !strcmp(env, "avx512") ? LSQ_ISA_AVX512 : !strcmp(env, "avx2") ? LSQ_ISA_AVX2 : LSQ_ISA_SCALAR;
        if (cap < isa) isa = cap;
    }
    return isa;
}

static const lsq_kernels *best;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void choose_best(void)
{
    for (lsq_isa isa = capped_isa(); !best; isa--) {
        best = lsq_kernels_for(isa);
        if (isa == LSQ_ISA_SCALAR) break;
    }
    if (!best) best = &lsq_kernels_scalar;
}

const lsq_kernels *lsq_kernels_best(void)
{
    pthread_once(&best_once, choose_best);
    return best;
}

/* ---- integer kernels ---------------------------------------------------------------------- */

#include "q8.h"

int lsq_cpu_has_avx512vnni(void)
{
    unsigned a, b, c, d;
    if (lsq_cpu_isa() < LSQ_ISA_AVX512 || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (c >> 11) & 1;
}

/* AVX-VNNI (CPUID.(EAX=7,ECX=1):EAX[4]): the VEX-encoded 256-bit vpdpbusd/vpdpwssd. */
int lsq_cpu_has_avxvnni(void)
{
    unsigned a, b, c, d;
    if (lsq_cpu_isa() < LSQ_ISA_AVX2 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 4) & 1;
}

static const lsq_q8_kernels *q8_best;
static pthread_once_t q8_once = PTHREAD_ONCE_INIT;

const lsq_q8_kernels *lsq_q8_kernels_for(lsq_isa isa)
{
    if (isa > lsq_cpu_isa()) return NULL;
    switch (isa) {
    case LSQ_ISA_AVX512: return lsq_cpu_has_avx512vnni() ? &lsq_q8_kernels_avx512vnni : NULL;
    case LSQ_ISA_AVX2: return lsq_cpu_has_avxvnni() ? &lsq_q8_kernels_avxvnni : &lsq_q8_kernels_avx2;
    default: return &lsq_q8_kernels_scalar;
    }
}

/* LSQ_ISA caps the level as for the float kernels; an AVX-512 CPU without VNNI (Skylake-X) runs
 * the AVX2 integer kernels under its AVX-512 float ones. */
static void choose_q8(void)
{
    for (lsq_isa isa = capped_isa(); !q8_best; isa--) {
        q8_best = lsq_q8_kernels_for(isa);
        if (isa == LSQ_ISA_SCALAR) break;
    }
    if (!q8_best) q8_best = &lsq_q8_kernels_scalar;
}

const lsq_q8_kernels *lsq_q8_kernels_best(void)
{
    pthread_once(&q8_once, choose_q8);
    return q8_best;
}
