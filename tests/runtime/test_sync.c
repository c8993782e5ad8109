/*
 * test_sync.c - rt_mutex, rt_rwmutex, rt_waitgroup, rt_once.
 *
 * Each test runs its body as the main goroutine of rt_run(). cmocka's
 * assertions longjmp, which must not happen on a goroutine stack, so
 * goroutines record failures with CHECK() and the test asserts after
 * rt_run() returned. Misuse that must abort (a Go panic) is run in a child
 * process: the test binary re-executes itself with --child=NAME, and the
 * parent asserts SIGABRT and the panic message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt.h"

#include "../rt_check.h"

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

/*
 * Hold the CPU-side of a wait for ns without a timer: yield until then.
 * (Loops of rt_sleep are left to the scheduler's own tests.)
 */
static void yield_for(int64_t ns)
{
    int64_t end = rt_now() + ns;
    while (rt_now() < end)
        rt_yield();
}

/* Yield until *v >= min; CHECK-fails after 10 s. */
static void wait_atleast(_Atomic long *v, long min)
{
    int64_t end = rt_now() + 10 * RT_SEC;
    while (atomic_load(v) < min) {
        if (rt_now() > end) {
            CHECK(!"counter never reached its minimum");
            return;
        }
        rt_yield();
    }
}

/* ------------------------------------------------------ mutex: counter */

#define COUNTER_G 8
#define COUNTER_N 125000

struct counter {
    rt_mutex mu;
    rt_waitgroup wg;
    long n; /* protected by mu */
};

static void counter_worker(void *arg)
{
    struct counter *c = arg;
    for (int i = 0; i < COUNTER_N; i++) {
        rt_mutex_lock(&c->mu);
        c->n++;
        rt_mutex_unlock(&c->mu);
    }
    rt_waitgroup_done(&c->wg);
}

static void counter_main(void *arg)
{
    struct counter *c = arg;
    rt_waitgroup_add(&c->wg, COUNTER_G);
    for (int i = 0; i < COUNTER_G; i++)
        rt_go(counter_worker, c);
    rt_waitgroup_wait(&c->wg);
    rt_mutex_lock(&c->mu);
    CHECK(c->n == (long)COUNTER_G * COUNTER_N);
    rt_mutex_unlock(&c->mu);
}

static void test_mutex_counter(void **state)
{
    (void)state;
    struct counter c = {.mu = RT_MUTEX_INIT, .wg = RT_WAITGROUP_INIT};
    run(2, counter_main, &c);
    assert_int_equal(c.n, (long)COUNTER_G * COUNTER_N);
}

/* ------------------------------------------------------ mutex: trylock */

struct trylock {
    rt_mutex mu;
    rt_chan *done;
    bool other_got;
};

static void trylock_other(void *arg)
{
    struct trylock *t = arg;
    t->other_got = rt_mutex_trylock(&t->mu);
    if (t->other_got)
        rt_mutex_unlock(&t->mu);
    rt_chan_send(t->done, &(char){0});
}

static void trylock_main(void *arg)
{
    struct trylock *t = arg;
    CHECK(rt_mutex_trylock(&t->mu));
    CHECK(!rt_mutex_trylock(&t->mu));
    t->done = rt_chan_make(1, 0);
    rt_go(trylock_other, t);
    rt_chan_recv(t->done, NULL, NULL);
    CHECK(!t->other_got);
    rt_mutex_unlock(&t->mu);

    /* Free again: trylock succeeds, and so does a blocking lock after. */
    rt_go(trylock_other, t);
    rt_chan_recv(t->done, NULL, NULL);
    CHECK(t->other_got);
    rt_mutex_lock(&t->mu);
    CHECK(!rt_mutex_trylock(&t->mu));
    rt_mutex_unlock(&t->mu);
    rt_chan_free(t->done);
}

static void test_mutex_trylock(void **state)
{
    (void)state;
    struct trylock t = {.mu = RT_MUTEX_INIT};
    run(2, trylock_main, &t);
}

/* ------------------------------------------------- mutex: starvation mode */

/*
 * A hog re-takes the mutex the moment it released it; without starvation
 * mode a woken waiter would keep losing that race. The hog yields now and
 * then outside the lock so the waiter, readied onto the hog's P, gets to
 * run at all (scheduling is cooperative).
 */
struct starve {
    rt_mutex mu;
    rt_waitgroup wg;
    _Atomic bool stop;
    _Atomic long started; /* a hog has held the mutex */
    int64_t waited;
};

static void starve_hog(void *arg)
{
    struct starve *s = arg;
    int64_t end = rt_now() + 2 * RT_SEC;
    for (unsigned i = 0; !atomic_load(&s->stop) && rt_now() < end; i++) {
        rt_mutex_lock(&s->mu);
        atomic_store(&s->started, 1);
        int64_t t = rt_now() + 20 * RT_USEC;
        while (rt_now() < t) {
        }
        rt_mutex_unlock(&s->mu);
        if (i % 16 == 15)
            rt_yield();
    }
    rt_waitgroup_done(&s->wg);
}

static void starve_main(void *arg)
{
    struct starve *s = arg;
    rt_waitgroup_add(&s->wg, 2);
    rt_go(starve_hog, s);
    rt_go(starve_hog, s);
    wait_atleast(&s->started, 1);
    int64_t t0 = rt_now();
    rt_mutex_lock(&s->mu);
    s->waited = rt_now() - t0;
    rt_mutex_unlock(&s->mu);
    atomic_store(&s->stop, true);
    rt_waitgroup_wait(&s->wg);
}

static void test_mutex_starvation(void **state)
{
    (void)state;
    /* Starvation mode kicks in after 1 ms; 500 ms leaves room for slow
     * sanitizer builds while 2 s (the hogs' lifetime) would mean it
     * never helped. A late run is retried once: on a loaded machine the
     * waiter's thread itself can be kept off the CPU. */
    int64_t waited = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct starve s = {.mu = RT_MUTEX_INIT};
        run(2, starve_main, &s);
        waited = s.waited;
        if (waited < 500 * RT_MSEC)
            return;
        print_message("waiter starved for %lld ms\n",
                      (long long)(waited / RT_MSEC));
    }
    fail_msg("waiter starved for %lld ms, twice",
             (long long)(waited / RT_MSEC));
}

/* ----------------------------------------- freeing right after unlock */

/*
 * The pthread guarantee: once unlocked, a mutex may be freed by whoever
 * takes it next. Objects with an embedded mutex and a reference count are
 * freed by the last unlocker while others may still be inside
 * rt_mutex_unlock(); likewise a WaitGroup freed as soon as Wait returns.
 * AddressSanitizer reports any access after the free.
 */
struct refobj {
    rt_mutex mu;
    int refs; /* under mu */
};

struct freeafter {
    struct refobj *_Atomic objs[64];
    rt_waitgroup wg;
};

static void freeafter_worker(void *arg)
{
    struct freeafter *f = arg;
    for (int i = 0; i < 64; i++) {
        struct refobj *o = atomic_load(&f->objs[i]);
        rt_mutex_lock(&o->mu);
        bool last = --o->refs == 0;
        if (i % 4 == 0)
            rt_yield(); /* let the others queue up behind us */
        rt_mutex_unlock(&o->mu);
        if (last)
            free(o);
    }
    rt_waitgroup_done(&f->wg);
}

static void wgfree_worker(void *arg)
{
    rt_waitgroup_done(arg);
}

static void freeafter_main(void *arg)
{
    struct freeafter *f = arg;
    enum { WORKERS = 6 };
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 64; i++) {
            struct refobj *o = calloc(1, sizeof *o);
            CHECK(o != NULL);
            o->refs = WORKERS;
            atomic_store(&f->objs[i], o);
        }
        rt_waitgroup_add(&f->wg, WORKERS);
        for (int i = 0; i < WORKERS; i++)
            rt_go(freeafter_worker, f);
        rt_waitgroup_wait(&f->wg);
    }
    for (int i = 0; i < 2000; i++) {
        rt_waitgroup *wg = calloc(1, sizeof *wg);
        CHECK(wg != NULL);
        rt_waitgroup_add(wg, 2);
        rt_go(wgfree_worker, wg);
        rt_go(wgfree_worker, wg);
        rt_waitgroup_wait(wg);
        free(wg);
    }
}

static void test_free_after_unlock(void **state)
{
    (void)state;
    struct freeafter f = {.wg = RT_WAITGROUP_INIT};
    run(2, freeafter_main, &f);
}

/* -------------------------------------------------- rwmutex: concurrency */

#define RW_READERS 6

struct rwconc {
    rt_rwmutex rw;
    rt_waitgroup wg;
    _Atomic int inside;
    _Atomic int max_inside;
};

static void rwconc_reader(void *arg)
{
    struct rwconc *r = arg;
    rt_rwmutex_rlock(&r->rw);
    int n = atomic_fetch_add(&r->inside, 1) + 1;
    int m = atomic_load(&r->max_inside);
    while (n > m && !atomic_compare_exchange_weak(&r->max_inside, &m, n)) {
    }
    /* Stay inside until every reader is in (bounded). */
    int64_t end = rt_now() + 2 * RT_SEC;
    while (atomic_load(&r->max_inside) < RW_READERS && rt_now() < end)
        rt_yield();
    atomic_fetch_sub(&r->inside, 1);
    rt_rwmutex_runlock(&r->rw);
    rt_waitgroup_done(&r->wg);
}

static void rwconc_main(void *arg)
{
    struct rwconc *r = arg;
    rt_waitgroup_add(&r->wg, RW_READERS);
    for (int i = 0; i < RW_READERS; i++)
        rt_go(rwconc_reader, r);
    rt_waitgroup_wait(&r->wg);
    CHECK(atomic_load(&r->max_inside) == RW_READERS);
    /* Everyone left: a writer gets in at once. */
    rt_rwmutex_lock(&r->rw);
    rt_rwmutex_unlock(&r->rw);
}

static void test_rwmutex_readers_concurrent(void **state)
{
    (void)state;
    struct rwconc r = {0}; /* rw: the zero value is unlocked */
    run(2, rwconc_main, &r);
}

/* ---------------------------------------------------- rwmutex: exclusion */

struct rwex {
    rt_rwmutex rw;
    rt_waitgroup wg;
    _Atomic int readers, writers;
    long value; /* written under the write lock */
    long writes;
};

static void rwex_writer(void *arg)
{
    struct rwex *x = arg;
    for (int i = 0; i < 2000; i++) {
        rt_rwmutex_lock(&x->rw);
        CHECK(atomic_fetch_add(&x->writers, 1) == 0);
        CHECK(atomic_load(&x->readers) == 0);
        x->value++;
        if (i % 8 == 0)
            rt_yield(); /* hold it across a reschedule */
        x->writes++;
        CHECK(x->value == x->writes);
        atomic_fetch_sub(&x->writers, 1);
        rt_rwmutex_unlock(&x->rw);
    }
    rt_waitgroup_done(&x->wg);
}

static void rwex_reader(void *arg)
{
    struct rwex *x = arg;
    for (int i = 0; i < 2000; i++) {
        rt_rwmutex_rlock(&x->rw);
        atomic_fetch_add(&x->readers, 1);
        CHECK(atomic_load(&x->writers) == 0);
        CHECK(x->value == x->writes);
        if (i % 8 == 0)
            rt_yield();
        atomic_fetch_sub(&x->readers, 1);
        rt_rwmutex_runlock(&x->rw);
    }
    rt_waitgroup_done(&x->wg);
}

static void rwex_main(void *arg)
{
    struct rwex *x = arg;
    rt_waitgroup_add(&x->wg, 6);
    for (int i = 0; i < 2; i++)
        rt_go(rwex_writer, x);
    for (int i = 0; i < 4; i++)
        rt_go(rwex_reader, x);
    rt_waitgroup_wait(&x->wg);
    CHECK(x->writes == 4000);
}

static void test_rwmutex_writer_exclusive(void **state)
{
    (void)state;
    struct rwex x = {0}; /* rw: the zero value is unlocked */
    run(2, rwex_main, &x);
}

/* ------------------------------------------- rwmutex: writer not starved */

/*
 * Readers overlap so that, without writer preference, the reader count
 * would never drop to zero. The writer must still get in soon.
 */
struct rwstarve {
    rt_rwmutex rw;
    rt_waitgroup wg;
    _Atomic bool stop;
    _Atomic long reads;
    int64_t waited;
};

static void rwstarve_reader(void *arg)
{
    struct rwstarve *s = arg;
    int64_t end = rt_now() + 3 * RT_SEC;
    while (!atomic_load(&s->stop) && rt_now() < end) {
        rt_rwmutex_rlock(&s->rw);
        atomic_fetch_add(&s->reads, 1);
        yield_for(500 * RT_USEC);
        rt_rwmutex_runlock(&s->rw);
    }
    rt_waitgroup_done(&s->wg);
}

static void rwstarve_main(void *arg)
{
    struct rwstarve *s = arg;
    enum { READERS = 8 };
    rt_waitgroup_add(&s->wg, READERS);
    for (int i = 0; i < READERS; i++) {
        rt_go(rwstarve_reader, s);
        yield_for(100 * RT_USEC); /* stagger them */
    }
    /* Every reader is in its loop: the read lock is held continuously. */
    wait_atleast(&s->reads, READERS);
    CHECK(atomic_load(&s->reads) > 0);
    int64_t t0 = rt_now();
    rt_rwmutex_lock(&s->rw);
    s->waited = rt_now() - t0;
    rt_rwmutex_unlock(&s->rw);
    atomic_store(&s->stop, true);
    rt_waitgroup_wait(&s->wg);
}

static void test_rwmutex_writer_not_starved(void **state)
{
    (void)state;
    /* Readers hold it 0.5 ms each; the writer waits for those inside.
     * A late run is retried once (a loaded machine). */
    int64_t waited = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct rwstarve s = {0}; /* rw: the zero value is unlocked */
        run(2, rwstarve_main, &s);
        waited = s.waited;
        if (waited < 500 * RT_MSEC)
            return;
        print_message("writer waited %lld ms\n", (long long)(waited / RT_MSEC));
    }
    fail_msg("writer waited %lld ms, twice", (long long)(waited / RT_MSEC));
}

/* ------------------------------------------------------------ WaitGroup */

#define WG_N 100000

struct wgbig {
    rt_waitgroup wg;
    _Atomic long ran;
};

static void wgbig_worker(void *arg)
{
    struct wgbig *w = arg;
    atomic_fetch_add(&w->ran, 1);
    rt_waitgroup_done(&w->wg);
}

static void wgbig_main(void *arg)
{
    struct wgbig *w = arg;
    rt_waitgroup_add(&w->wg, WG_N);
    for (int i = 0; i < WG_N; i++)
        rt_go(wgbig_worker, w);
    rt_waitgroup_wait(&w->wg);
    CHECK(atomic_load(&w->ran) == WG_N);
}

static void test_waitgroup_100k(void **state)
{
    (void)state;
    struct wgbig w = {.wg = RT_WAITGROUP_INIT};
    run(2, wgbig_main, &w);
    assert_int_equal(atomic_load(&w.ran), WG_N);
}

/* Several waiters, all woken when the counter reaches zero. */
struct wgmulti {
    rt_waitgroup work, waiters;
    _Atomic int released, woke;
};

static void wgmulti_waiter(void *arg)
{
    struct wgmulti *m = arg;
    rt_waitgroup_wait(&m->work);
    CHECK(atomic_load(&m->released) == 1);
    atomic_fetch_add(&m->woke, 1);
    rt_waitgroup_done(&m->waiters);
}

static void wgmulti_main(void *arg)
{
    struct wgmulti *m = arg;
    enum { WAITERS = 50 };
    rt_waitgroup_add(&m->work, 3);
    rt_waitgroup_add(&m->waiters, WAITERS);
    uint64_t base = rt_check_parked();
    for (int i = 0; i < WAITERS; i++)
        rt_go(wgmulti_waiter, m);
    rt_check_wait_parked(base + WAITERS); /* all queued in Wait */
    CHECK(atomic_load(&m->woke) == 0);
    rt_waitgroup_done(&m->work);
    rt_waitgroup_add(&m->work, -1);
    /* The behaviour under test: a counter still above zero wakes nobody
     * in 2 ms. */
    rt_sleep(2 * RT_MSEC);
    CHECK(atomic_load(&m->woke) == 0);
    atomic_store(&m->released, 1);
    rt_waitgroup_done(&m->work);
    rt_waitgroup_wait(&m->waiters);
    CHECK(atomic_load(&m->woke) == WAITERS);
}

static void test_waitgroup_many_waiters(void **state)
{
    (void)state;
    struct wgmulti m = {.work = RT_WAITGROUP_INIT,
                        .waiters = RT_WAITGROUP_INIT};
    run(2, wgmulti_main, &m);
}

static void wgzero_main(void *arg)
{
    (void)arg;
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    int64_t t0 = rt_now();
    rt_waitgroup_wait(&wg); /* counter 0: returns at once */
    rt_waitgroup_add(&wg, 2);
    rt_waitgroup_add(&wg, -2);
    rt_waitgroup_wait(&wg);
    CHECK(rt_now() - t0 < 100 * RT_MSEC);
}

static void test_waitgroup_zero(void **state)
{
    (void)state;
    run(2, wgzero_main, NULL);
}

/* ------------------------------------------------------------------ Once */

struct once {
    rt_once once;
    rt_waitgroup wg;
    uint64_t parked_base; /* parked goroutines before the callers start */
    _Atomic int calls;
    _Atomic int finished;
    _Atomic int early; /* callers that returned before fn finished */
};

static void once_fn(void *arg)
{
    struct once *o = arg;
    atomic_fetch_add(&o->calls, 1);
    /* The other 99 callers queue up in rt_once_do and main in its Wait
     * while fn runs; fn then parks too (behaviour: it may block). */
    rt_check_wait_parked(o->parked_base + 100);
    rt_sleep(10 * RT_MSEC);
    atomic_store(&o->finished, 1);
}

static void once_caller(void *arg)
{
    struct once *o = arg;
    rt_once_do(&o->once, once_fn, o);
    if (!atomic_load(&o->finished))
        atomic_fetch_add(&o->early, 1);
    rt_waitgroup_done(&o->wg);
}

static void once_main(void *arg)
{
    struct once *o = arg;
    rt_waitgroup_add(&o->wg, 100);
    o->parked_base = rt_check_parked();
    for (int i = 0; i < 100; i++)
        rt_go(once_caller, o);
    rt_waitgroup_wait(&o->wg);
    rt_once_do(&o->once, once_fn, o); /* fast path: no call */
    CHECK(atomic_load(&o->calls) == 1);
    CHECK(atomic_load(&o->early) == 0);
}

static void test_once(void **state)
{
    (void)state;
    struct once o = {.once = RT_ONCE_INIT, .wg = RT_WAITGROUP_INIT};
    run(2, once_main, &o);
    assert_int_equal(atomic_load(&o.calls), 1);
}

/* ----------------------------------------------------- stress, all Ps */

/*
 * Every P hammers one mutex guarding two counters that must always be
 * equal, holds it across reschedules now and then, mixes in trylock, and
 * readers of an rwmutex check a second invariant. Bounded by time.
 */
struct stress {
    rt_mutex mu;
    long a, b; /* under mu, always equal outside it */
    rt_rwmutex rw;
    long x, y; /* under rw (write), always equal outside it */
    rt_waitgroup wg;
    int64_t end;
    _Atomic long ops;
};

static void stress_worker(void *arg)
{
    struct stress *s = arg;
    uint32_t r = (uint32_t)rt_goid() * 2654435761u;
    long ops = 0;
    while (rt_now() < s->end) {
        r = r * 1103515245u + 12345u;
        switch ((r >> 16) % 8) {
        case 0:
            if (!rt_mutex_trylock(&s->mu))
                break;
            /* fallthrough */
        case 1:
        case 2:
        case 3:
            if ((r >> 16) % 8 != 0)
                rt_mutex_lock(&s->mu);
            CHECK(s->a == s->b);
            s->a++;
            if ((r >> 20) % 16 == 0)
                rt_yield();
            s->b++;
            rt_mutex_unlock(&s->mu);
            break;
        case 4:
            rt_rwmutex_lock(&s->rw);
            s->x++;
            if ((r >> 20) % 16 == 0)
                rt_yield();
            s->y++;
            rt_rwmutex_unlock(&s->rw);
            break;
        default:
            rt_rwmutex_rlock(&s->rw);
            CHECK(s->x == s->y);
            if ((r >> 20) % 16 == 0)
                rt_yield();
            rt_rwmutex_runlock(&s->rw);
            break;
        }
        ops++;
    }
    atomic_fetch_add(&s->ops, ops);
    rt_waitgroup_done(&s->wg);
}

static void stress_main(void *arg)
{
    struct stress *s = arg;
    int n = 4 * rt_procs();
    s->end = rt_now() + 300 * RT_MSEC;
    rt_waitgroup_add(&s->wg, n);
    for (int i = 0; i < n; i++)
        rt_go(stress_worker, s);
    rt_waitgroup_wait(&s->wg);
    rt_mutex_lock(&s->mu);
    CHECK(s->a == s->b);
    rt_mutex_unlock(&s->mu);
    CHECK(s->x == s->y);
    CHECK(atomic_load(&s->ops) > 0);
}

static void test_stress_all_procs(void **state)
{
    (void)state;
    struct stress s = {.mu = RT_MUTEX_INIT}; /* rw: zero value */
    run(0, stress_main, &s);
    assert_true(s.a == s.b && s.x == s.y);
}

/* --------------------------------------------- panics, in a child process */

static void bad_mutex_unlock(void *arg)
{
    (void)arg;
    rt_mutex mu = RT_MUTEX_INIT;
    rt_mutex_lock(&mu);
    rt_mutex_unlock(&mu);
    rt_mutex_unlock(&mu);
}

static void bad_waitgroup(void *arg)
{
    (void)arg;
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    rt_waitgroup_add(&wg, 1);
    rt_waitgroup_done(&wg);
    rt_waitgroup_done(&wg);
}

static void bad_rwmutex_unlock(void *arg)
{
    (void)arg;
    rt_rwmutex rw = RT_RWMUTEX_INIT;
    rt_rwmutex_rlock(&rw);
    rt_rwmutex_unlock(&rw); /* a read lock is not a write lock */
}

static const struct child_case {
    const char *name;
    void (*fn)(void *);
} child_cases[] = {
    {"mutex_unlock", bad_mutex_unlock},
    {"waitgroup_negative", bad_waitgroup},
    {"rwmutex_unlock", bad_rwmutex_unlock},
};

static int child_main(const char *name)
{
    for (size_t i = 0; i < sizeof child_cases / sizeof child_cases[0]; i++) {
        if (strcmp(child_cases[i].name, name) == 0) {
            rt_set_procs(2);
            rt_run(child_cases[i].fn, NULL);
            return 0; /* the bad call did not abort */
        }
    }
    return 2;
}

/* Run ourselves with --child=name; assert SIGABRT and want in stderr. */
static void expect_abort(const char *name, const char *want)
{
    int fds[2];
    char arg[64];
    assert_int_equal(pipe(fds), 0);
    snprintf(arg, sizeof arg, "--child=%s", name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl("/proc/self/exe", "test_sync", arg, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);

    char out[8192];
    size_t len = 0;
    int64_t end = rt_now() + 60 * RT_SEC;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int64_t left = (end - rt_now()) / RT_MSEC;
        if (left <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t n = read(fds[0], out + len, sizeof out - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof out - 1)
            len = 0; /* keep reading; only the tail matters */
    }
    out[len] = '\0';
    close(fds[0]);

    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("child %s: status %#x, want SIGABRT; stderr:\n%s", name,
                 status, out);
    if (!strstr(out, want))
        fail_msg("child %s: stderr lacks \"%s\":\n%s", name, want, out);
}

static void test_panic_mutex_unlock_unlocked(void **state)
{
    (void)state;
    expect_abort("mutex_unlock", "unlock of unlocked mutex");
}

static void test_panic_waitgroup_negative(void **state)
{
    (void)state;
    expect_abort("waitgroup_negative", "negative WaitGroup counter");
}

static void test_panic_rwmutex_unlock(void **state)
{
    (void)state;
    expect_abort("rwmutex_unlock", "Unlock of unlocked RWMutex");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strncmp(argv[1], "--child=", 8) == 0)
        return child_main(argv[1] + 8);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutex_counter),
        cmocka_unit_test(test_mutex_trylock),
        cmocka_unit_test(test_mutex_starvation),
        cmocka_unit_test(test_free_after_unlock),
        cmocka_unit_test(test_rwmutex_readers_concurrent),
        cmocka_unit_test(test_rwmutex_writer_exclusive),
        cmocka_unit_test(test_rwmutex_writer_not_starved),
        cmocka_unit_test(test_waitgroup_100k),
        cmocka_unit_test(test_waitgroup_many_waiters),
        cmocka_unit_test(test_waitgroup_zero),
        cmocka_unit_test(test_once),
        cmocka_unit_test(test_stress_all_procs),
        cmocka_unit_test(test_panic_mutex_unlock_unlocked),
        cmocka_unit_test(test_panic_waitgroup_negative),
        cmocka_unit_test(test_panic_rwmutex_unlock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
