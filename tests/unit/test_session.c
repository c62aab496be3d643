/* test_session.c - what a forward pass leaves behind in its caller's thread.
 *
 * lsq_session_run flushes denormals to zero while it runs (MXCSR FTZ and DAZ: util.h) and must hand
 * the caller's floating-point mode back unchanged, whatever it was, at 1 thread and with the pool. */
#include <stdlib.h>
#include <unistd.h>
#include <xmmintrin.h>

#include "lsq.h"
#include "unit.h"

static char path[64];

static void run_keeps_mode(int threads, unsigned mode)
{
    lsq_model *m = NULL;
    lsq_session *s = NULL;
    CHECK(lsq_model_load(path, NULL, &m, NULL) == LSQ_OK);
    if (!m) return;
    lsq_session_options o = {.height = 32, .width = 32, .threads = threads};
    CHECK(lsq_session_create(m, &o, &s, NULL) == LSQ_OK);
    if (s) {
        float *in = calloc(3 * 32 * 32, sizeof(float)), logits[10];
        for (int i = 0; i < 3 * 32 * 32; i++) in[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        unsigned saved = _mm_getcsr();
        _mm_setcsr(mode);
        lsq_status st = lsq_session_run(s, in, logits);
        unsigned after = _mm_getcsr();
        _mm_setcsr(saved);
        CHECK(st == LSQ_OK);
        CHECK((after & ~0x3Fu) == (mode & ~0x3Fu)); /* the low 6 bits are sticky exception flags */
        free(in);
        lsq_session_free(s);
    }
    lsq_model_free(m);
}

static void test_default_mode_restored(void) { run_keeps_mode(1, 0x1F80); }
static void test_default_mode_restored_2_threads(void) { run_keeps_mode(2, 0x1F80); }
static void test_flush_mode_kept(void) { run_keeps_mode(2, 0x1F80 | 0x8040); }

int main(void)
{
    snprintf(path, sizeof path, "/tmp/lsq_test_session_%d.safetensors", (int)getpid());
    if (lsq_model_init_random("mixnet_s", 10, 7, path, NULL) != LSQ_OK) {
        printf("not ok init_random\n");
        return 1;
    }
    RUN(test_default_mode_restored);
    RUN(test_default_mode_restored_2_threads);
    RUN(test_flush_mode_kept);
    unlink(path);
    return unit_done();
}
