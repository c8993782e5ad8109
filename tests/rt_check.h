/*
 * rt_check.h - assertions for code that runs inside goroutines, shared by
 * the cmocka test binaries (include it after <cmocka.h> and "rt.h").
 *
 * cmocka's assert_* longjmp out of the test, which must not happen on a
 * goroutine's stack or on another thread. CHECK(cond) instead records the
 * first failure (file, line, expression; later ones are counted and
 * printed) and the test carries on; rt_check_run() runs a scheduler and
 * fails the cmocka test afterwards, on the test's own thread, if any CHECK
 * failed. Each binary includes this once: the state is per binary.
 */
#ifndef FANFOLD_TESTS_RT_CHECK_H
#define FANFOLD_TESTS_RT_CHECK_H

#include <stdatomic.h>
#include <stdio.h>

static _Atomic int rt_check_failures;
static char rt_check_msg[512]; /* written by the first failure only */

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            rt_check_fail(#cond, __FILE__, __LINE__);                          \
    } while (0)

static void rt_check_fail(const char *expr, const char *file, int line)
{
    if (atomic_fetch_add(&rt_check_failures, 1) == 0)
        snprintf(rt_check_msg, sizeof rt_check_msg, "%s:%d: CHECK(%s)", file,
                 line, expr);
    fprintf(stderr, "CHECK failed at %s:%d: %s\n", file, line, expr);
}

/* Forget earlier failures (before a scheduler run). */
static inline void rt_check_reset(void)
{
    atomic_store(&rt_check_failures, 0);
    rt_check_msg[0] = '\0';
}

/* Fail the current cmocka test if a CHECK failed since the reset. */
static inline void rt_check_report(void)
{
    int n = atomic_load(&rt_check_failures);
    if (n != 0)
        fail_msg("%d check(s) failed; first: %s", n, rt_check_msg);
}

/* rt_run(fn, arg) on procs Ps (0: the default), then rt_check_report(). */
static inline void rt_check_run(int procs, void (*fn)(void *), void *arg)
{
    rt_check_reset();
    rt_set_procs(procs);
    assert_int_equal(rt_run(fn, arg), 0);
    rt_set_procs(0);
    rt_check_report();
}

#endif /* FANFOLD_TESTS_RT_CHECK_H */
