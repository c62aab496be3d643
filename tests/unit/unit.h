/* unit.h - a minimal test runner for the C unit tests.
 *
 * Each test binary prints TAP-like lines ("ok <name>" / "not ok <name>: <why>") that tests/run.sh
 * counts, then a closing "N passed, N failed" line. Usage:
 *
 *   static void test_something(void) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { RUN(test_something); return unit_done(); }
 */
#ifndef LSQ_UNIT_H
#define LSQ_UNIT_H
#include <math.h>
#include <stdio.h>

static int unit_passed, unit_failed, unit_cur_failed;

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            printf("#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                  \
            unit_cur_failed = 1;                                                                  \
        }                                                                                         \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                     \
    do {                                                                                          \
        double a_ = (a), b_ = (b);                                                                \
        if (!(fabs(a_ - b_) <= (tol))) {                                                          \
            printf("#   %s:%d: %s = %g, %s = %g, |diff| > %g\n", __FILE__, __LINE__, #a, a_, #b, \
                   b_, (double)(tol));                                                            \
            unit_cur_failed = 1;                                                                  \
        }                                                                                         \
    } while (0)

#define RUN(fn)                                                                                   \
    do {                                                                                          \
        unit_cur_failed = 0;                                                                      \
        fn();                                                                                     \
        if (unit_cur_failed) {                                                                    \
            unit_failed++;                                                                        \
            printf("not ok %s\n", #fn);                                                           \
        } else {                                                                                  \
            unit_passed++;                                                                        \
            printf("ok %s\n", #fn);                                                               \
        }                                                                                         \
        fflush(stdout);                                                                           \
    } while (0)

static inline int unit_done(void)
{
    printf("%d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}
#endif
