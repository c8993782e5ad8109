/*
 * test_sem.c - the backend semaphore: the limit, FIFO hand-over, a
 * context that ends while waiting (deadline and cancel, and the race with
 * a hand-over), limit changes with slots held (the reload case), and many
 * goroutines on several Ps never holding more than the limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "rt.h"
#include "../rt_check.h"
#include "sem.h"

/* ---------------------------------------------------------- basics */

static void basics_main(void *arg)
{
    (void)arg;
    gw_sem *s = gw_sem_new(2);
    CHECK(s != NULL);
    bool waited = true;
    rt_ctx *bg = rt_ctx_background();
    CHECK(gw_sem_acquire(s, bg, &waited) == 0 && !waited);
    CHECK(gw_sem_acquire(s, bg, &waited) == 0 && !waited);
    CHECK(gw_sem_held(s) == 2 && gw_sem_limit(s) == 2);

    /* Full: a third waits until its deadline and takes nothing. t0 is
     * read before the context starts its clock: read after, a deadline
     * met on time looks early by the time between the two (seen under
     * TSan). */
    int64_t t0 = rt_now();
    rt_ctx *ctx = rt_ctx_with_timeout(bg, 20 * RT_MSEC);
    CHECK(gw_sem_acquire(s, ctx, &waited) == -ETIMEDOUT && waited);
    CHECK(rt_now() - t0 >= 20 * RT_MSEC);
    CHECK(gw_sem_held(s) == 2);
    rt_ctx_release(ctx);

    /* Cancelled: -ECANCELED. */
    ctx = rt_ctx_with_cancel(bg);
    rt_ctx_cancel(ctx);
    CHECK(gw_sem_acquire(s, ctx, &waited) == -ECANCELED);
    rt_ctx_release(ctx);

    gw_sem_release(s);
    gw_sem_release(s);
    CHECK(gw_sem_held(s) == 0);
    /* A limit below 1 is 1. */
    gw_sem_set_limit(s, 0);
    CHECK(gw_sem_limit(s) == 1);
    gw_sem_ref(s);
    gw_sem_unref(s);
    gw_sem_unref(s);
    gw_sem_unref(NULL);
}

static void test_basics(void **state)
{
    (void)state;
    rt_check_run(2, basics_main, NULL);
}

/* ------------------------------------------------------------- FIFO */

typedef struct fifo {
    gw_sem *s;
    rt_chan *order; /* ints: who got the slot, in order */
    int id;
} fifo;

static void fifo_waiter(void *arg)
{
    fifo *f = arg;
    bool waited;
    CHECK(gw_sem_acquire(f->s, rt_ctx_background(), &waited) == 0 && waited);
    rt_chan_send(f->order, &f->id);
    gw_sem_release(f->s);
}

static void fifo_main(void *arg)
{
    (void)arg;
    gw_sem *s = gw_sem_new(1);
    rt_chan *order = rt_chan_make(sizeof(int), 8);
    bool waited;
    CHECK(gw_sem_acquire(s, rt_ctx_background(), &waited) == 0);
    fifo f[5];
    for (int i = 0; i < 5; i++) {
        f[i] = (fifo){s, order, i};
        uint64_t parked = rt_check_parked();
        rt_go(fifo_waiter, &f[i]);
        rt_check_wait_parked(parked + 1); /* queued before the next */
    }
    gw_sem_release(s);
    for (int i = 0; i < 5; i++) {
        int got = -1;
        rt_chan_recv(order, &got, NULL);
        CHECK(got == i);
    }
    CHECK(gw_sem_held(s) == 0);
    rt_chan_free(order);
    gw_sem_unref(s);
}

static void test_fifo(void **state)
{
    (void)state;
    rt_check_run(1, fifo_main, NULL);
}

/* ------------------------------------------------------ limit changes */

typedef struct lim {
    gw_sem *s;
    rt_ctx *ctx;
    _Atomic int got;
    rt_waitgroup wg;
} lim;

static void lim_waiter(void *arg)
{
    lim *l = arg;
    bool waited;
    if (gw_sem_acquire(l->s, l->ctx, &waited) == 0)
        atomic_fetch_add(&l->got, 1);
    rt_waitgroup_done(&l->wg);
}

static void limit_main(void *arg)
{
    (void)arg;
    rt_ctx *bg = rt_ctx_background();
    gw_sem *s = gw_sem_new(3);
    bool waited;
    for (int i = 0; i < 3; i++)
        CHECK(gw_sem_acquire(s, bg, &waited) == 0);
    /* Down to 1 with 3 held: nobody gets one until fewer than 1 are. */
    gw_sem_set_limit(s, 1);
    lim l = {.s = s, .ctx = bg};
    rt_waitgroup_add(&l.wg, 2);
    uint64_t parked = rt_check_parked();
    rt_go(lim_waiter, &l);
    rt_go(lim_waiter, &l);
    rt_check_wait_parked(parked + 2);
    gw_sem_release(s);
    gw_sem_release(s);
    rt_sleep(5 * RT_MSEC);
    CHECK(atomic_load(&l.got) == 0 && gw_sem_held(s) == 1);
    gw_sem_release(s); /* 0 held: the first waiter */
    for (int i = 0; i < 200 && atomic_load(&l.got) < 1; i++)
        rt_sleep(RT_MSEC);
    CHECK(atomic_load(&l.got) == 1 && gw_sem_held(s) == 1);
    /* Up to 2: the second waiter gets a slot at once. */
    gw_sem_set_limit(s, 2);
    rt_waitgroup_wait(&l.wg);
    CHECK(atomic_load(&l.got) == 2 && gw_sem_held(s) == 2);
    gw_sem_release(s);
    gw_sem_release(s);
    CHECK(gw_sem_held(s) == 0);
    gw_sem_unref(s);
}

static void test_limit_changes(void **state)
{
    (void)state;
    rt_check_run(2, limit_main, NULL);
}

/* ------------------------------- a hand-over as the context ends */

typedef struct late {
    gw_sem *s;
    rt_ctx *ctx;
    int rc;
    rt_waitgroup wg;
} late;

static void late_waiter(void *arg)
{
    late *l = arg;
    bool waited;
    l->rc = gw_sem_acquire(l->s, l->ctx, &waited);
    rt_waitgroup_done(&l->wg);
}

/* One P, so nothing runs between the release and the cancel: the waiter
 * wakes granted with its context ended. It must fail and give the slot
 * back (a part queued at its deadline is "overloaded"; it must not start
 * a call then). The gateway saw a queue of 24 such waiters take a slot of
 * 4 in turn at one deadline, each starting a call, all "timeout". */
static void late_main(void *arg)
{
    (void)arg;
    gw_sem *s = gw_sem_new(1);
    bool waited;
    CHECK(gw_sem_acquire(s, rt_ctx_background(), &waited) == 0);
    late l = {.s = s, .ctx = rt_ctx_with_cancel(rt_ctx_background()), .rc = 1};
    rt_waitgroup_add(&l.wg, 1);
    uint64_t parked = rt_check_parked();
    rt_go(late_waiter, &l);
    rt_check_wait_parked(parked + 1);
    gw_sem_release(s); /* handed to the waiter, which has not run yet */
    rt_ctx_cancel(l.ctx);
    rt_waitgroup_wait(&l.wg);
    CHECK(l.rc == -ECANCELED);
    CHECK(gw_sem_held(s) == 0);
    if (l.rc == 0)
        gw_sem_release(s); /* (failed above) so that the test can end */
    /* The slot is free for the next one. */
    CHECK(gw_sem_acquire(s, rt_ctx_background(), &waited) == 0 && !waited);
    gw_sem_release(s);
    rt_ctx_release(l.ctx);
    gw_sem_unref(s);
}

static void test_grant_as_context_ends(void **state)
{
    (void)state;
    rt_check_run(1, late_main, NULL);
}

/* ---------------------------------------- contexts racing hand-overs */

typedef struct race {
    gw_sem *s;
    _Atomic long now, max;
    _Atomic long ok, timedout;
    rt_waitgroup wg;
} race;

static void racer(void *arg)
{
    race *r = arg;
    for (int i = 0; i < 300; i++) {
        /* Deadlines of 0-200 µs: many end right as a slot is handed
         * over, which must then go back rather than leak. */
        rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(),
                                          (int64_t)(i % 5) * 50 * RT_USEC);
        bool waited;
        if (gw_sem_acquire(r->s, ctx, &waited) == 0) {
            long n = atomic_fetch_add(&r->now, 1) + 1;
            long m = atomic_load(&r->max);
            while (n > m && !atomic_compare_exchange_weak(&r->max, &m, n))
                ;
            if (i % 3 == 0)
                rt_yield();
            atomic_fetch_sub(&r->now, 1);
            gw_sem_release(r->s);
            atomic_fetch_add(&r->ok, 1);
        } else {
            atomic_fetch_add(&r->timedout, 1);
        }
        rt_ctx_release(ctx);
    }
    rt_waitgroup_done(&r->wg);
}

static void race_main(void *arg)
{
    (void)arg;
    race r = {.s = gw_sem_new(3)};
    rt_waitgroup_add(&r.wg, 16);
    for (int i = 0; i < 16; i++)
        rt_go(racer, &r);
    /* Change the limit meanwhile, as reloads do. */
    for (int i = 0; i < 20; i++) {
        gw_sem_set_limit(r.s, i % 2 ? 2 : 3);
        rt_sleep(100 * RT_USEC);
    }
    gw_sem_set_limit(r.s, 3);
    rt_waitgroup_wait(&r.wg);
    CHECK(atomic_load(&r.max) <= 3);
    CHECK(atomic_load(&r.ok) + atomic_load(&r.timedout) == 16 * 300);
    CHECK(atomic_load(&r.ok) > 0);
    CHECK(gw_sem_held(r.s) == 0); /* no slot leaked */
    gw_sem_unref(r.s);
}

static void test_race(void **state)
{
    (void)state;
    rt_check_run(4, race_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_limit_changes),
        cmocka_unit_test(test_grant_as_context_ends),
        cmocka_unit_test(test_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
