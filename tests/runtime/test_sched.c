/*
 * test_sched.c - goroutines, the scheduler, sleep, timers, rt_blocking,
 * introspection and stack overflow detection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rt.h"

/* ---------------------------------------------------------------- spawn */

typedef struct {
    rt_waitgroup wg;
    _Atomic long sum;
    _Atomic int ran;
} spawn_state;

static void add_one(void *arg)
{
    spawn_state *s = arg;
    atomic_fetch_add(&s->sum, 1);
    rt_waitgroup_done(&s->wg);
}

static void spawn_main(void *arg)
{
    spawn_state *s = arg;
    for (int i = 0; i < 10000; i++) {
        rt_waitgroup_add(&s->wg, 1);
        rt_go(add_one, s);
    }
    rt_waitgroup_wait(&s->wg);
    atomic_store(&s->ran, 1);
}

static void test_spawn_many(void **state)
{
    (void)state;
    for (int procs = 1; procs <= 4; procs++) {
        spawn_state s = {0};
        rt_set_procs(procs);
        assert_int_equal(rt_run(spawn_main, &s), 0);
        assert_int_equal(atomic_load(&s.sum), 10000);
        assert_int_equal(atomic_load(&s.ran), 1);
    }
    rt_set_procs(0);
}

/* ---------------------------------------------------------------- procs */

static void procs_main(void *arg)
{
    *(int *)arg = rt_procs();
}

static void test_procs_env(void **state)
{
    (void)state;
    int got = 0;
    setenv("FANFOLD_PROCS", "3", 1);
    rt_set_procs(0);
    assert_int_equal(rt_run(procs_main, &got), 0);
    assert_int_equal(got, 3);
    rt_set_procs(2); /* the API wins over the environment */
    assert_int_equal(rt_run(procs_main, &got), 0);
    assert_int_equal(got, 2);
    unsetenv("FANFOLD_PROCS");
    rt_set_procs(0);
    assert_int_equal(rt_run(procs_main, &got), 0);
    assert_int_equal(got, (int)sysconf(_SC_NPROCESSORS_ONLN));
}

/* ---------------------------------------------------------------- yield */

typedef struct {
    _Atomic int turn;
    int order[8];
    _Atomic int n;
    rt_waitgroup wg;
} yield_state;

static void yielder(void *arg)
{
    yield_state *s = arg;
    for (int i = 0; i < 4; i++) {
        s->order[atomic_fetch_add(&s->n, 1)] = (int)rt_goid();
        rt_yield();
    }
    rt_waitgroup_done(&s->wg);
}

static void yield_main(void *arg)
{
    yield_state *s = arg;
    rt_waitgroup_add(&s->wg, 2);
    rt_go(yielder, s);
    rt_go(yielder, s);
    rt_waitgroup_wait(&s->wg);
}

static void test_yield_interleaves(void **state)
{
    (void)state;
    yield_state s = {0};
    rt_set_procs(1);
    assert_int_equal(rt_run(yield_main, &s), 0);
    rt_set_procs(0);
    assert_int_equal(atomic_load(&s.n), 8);
    /* With one P, two yielding goroutines alternate. */
    int switches = 0;
    for (int i = 1; i < 8; i++)
        switches += s.order[i] != s.order[i - 1];
    assert_true(switches >= 6);
}

/* ---------------------------------------------------------------- sleep */

typedef struct {
    int64_t elapsed[16];
    rt_waitgroup wg;
} sleep_state;

typedef struct {
    sleep_state *s;
    int i;
} sleeper_arg;

static void sleeper(void *arg)
{
    sleeper_arg *a = arg;
    int64_t t0 = rt_now();
    rt_sleep((a->i + 1) * 5 * RT_MSEC);
    a->s->elapsed[a->i] = rt_now() - t0;
    rt_waitgroup_done(&a->s->wg);
}

static void sleep_main(void *arg)
{
    sleep_state *s = arg;
    sleeper_arg args[16];
    for (int i = 0; i < 16; i++) {
        args[i] = (sleeper_arg){s, i};
        rt_waitgroup_add(&s->wg, 1);
        rt_go(sleeper, &args[i]);
    }
    rt_waitgroup_wait(&s->wg);
}

static void test_sleep(void **state)
{
    (void)state;
    /* Timing checks carry a tolerance and may retry once. */
    for (int attempt = 0; attempt < 2; attempt++) {
        sleep_state s = {0};
        rt_set_procs(2);
        assert_int_equal(rt_run(sleep_main, &s), 0);
        rt_set_procs(0);
        bool ok = true;
        for (int i = 0; i < 16; i++) {
            int64_t want = (i + 1) * 5 * RT_MSEC;
            assert_true(s.elapsed[i] >= want); /* never early */
            if (s.elapsed[i] > want + 50 * RT_MSEC)
                ok = false;
        }
        if (ok)
            return;
    }
    fail_msg("sleep overshot by more than 50 ms twice");
}

/* An idle scheduler sleeps: a 200 ms sleep costs (almost) no CPU. */
static void idle_main(void *arg)
{
    (void)arg;
    rt_sleep(200 * RT_MSEC);
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_idle_uses_no_cpu(void **state)
{
    (void)state;
    for (int attempt = 0; attempt < 2; attempt++) {
        rt_set_procs(2);
        double c0 = cpu_seconds();
        assert_int_equal(rt_run(idle_main, NULL), 0);
        double used = cpu_seconds() - c0;
        rt_set_procs(0);
        if (used < 0.02) /* 10% of the 200 ms sleep would be 0.02 s */
            return;
    }
    fail_msg("an idle scheduler burned CPU");
}

/* ---------------------------------------------------------------- timers */

static void timer_main(void *arg)
{
    int *res = arg;
    rt_timer *t = rt_timer_new(10 * RT_MSEC);
    int64_t fired = 0;
    int64_t t0 = rt_now();
    rt_chan_recv(rt_timer_chan(t), &fired, NULL);
    res[0] = fired - t0 >= 10 * RT_MSEC;
    /* Stop before firing: nothing arrives. */
    res[1] = rt_timer_reset(t, 50 * RT_MSEC) == false;
    res[2] = rt_timer_stop(t) == true;
    rt_sleep(60 * RT_MSEC);
    res[3] = !rt_chan_tryrecv(rt_timer_chan(t), &fired, NULL);
    /* Reset re-arms. */
    rt_timer_reset(t, 1 * RT_MSEC);
    rt_chan_recv(rt_timer_chan(t), &fired, NULL);
    res[4] = 1;
    rt_timer_free(t);
}

static void test_timer(void **state)
{
    (void)state;
    int res[5] = {0};
    assert_int_equal(rt_run(timer_main, res), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(res[i], 1);
}

/* Many timers started and stopped out of order across Ps. */
static void timer_churn(void *arg)
{
    rt_waitgroup *wg = arg;
    rt_timer *ts[64];
    for (int i = 0; i < 64; i++)
        ts[i] = rt_timer_new((int64_t)(rt_goid() * 7919 + i * 104729) %
                             (50 * RT_MSEC));
    for (int i = 0; i < 64; i += 2)
        rt_timer_stop(ts[i]);
    for (int i = 1; i < 64; i += 2) {
        int64_t v;
        rt_chan_recv(rt_timer_chan(ts[i]), &v, NULL);
    }
    for (int i = 0; i < 64; i++)
        rt_timer_free(ts[i]);
    rt_waitgroup_done(wg);
}

static void timer_churn_main(void *arg)
{
    (void)arg;
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    for (int i = 0; i < 32; i++) {
        rt_waitgroup_add(&wg, 1);
        rt_go(timer_churn, &wg);
    }
    rt_waitgroup_wait(&wg);
}

static void test_timer_churn(void **state)
{
    (void)state;
    rt_set_procs(2);
    assert_int_equal(rt_run(timer_churn_main, NULL), 0);
    rt_set_procs(0);
}

/* -------------------------------------------------------------- blocking */

static intptr_t slow_call(void *arg)
{
    usleep(50000);
    return (intptr_t)arg * 2;
}

typedef struct {
    _Atomic long ticks;
    intptr_t ret;
    _Atomic int done;
} blocking_state;

static void ticker(void *arg)
{
    blocking_state *s = arg;
    while (!atomic_load(&s->done)) {
        atomic_fetch_add(&s->ticks, 1);
        rt_sleep(RT_MSEC);
    }
}

static void blocking_main(void *arg)
{
    blocking_state *s = arg;
    rt_go(ticker, s);
    s->ret = rt_blocking(slow_call, (void *)21);
    atomic_store(&s->done, 1);
    rt_sleep(5 * RT_MSEC);
}

static void test_blocking_keeps_p(void **state)
{
    (void)state;
    blocking_state s = {0};
    rt_set_procs(1); /* one P: the ticker runs only if the call frees it */
    assert_int_equal(rt_run(blocking_main, &s), 0);
    rt_set_procs(0);
    assert_int_equal(s.ret, 42);
    assert_true(atomic_load(&s.ticks) >= 10);
}

/* --------------------------------------------------------- introspection */

typedef struct {
    rt_chan *c;
    char dump[8192];
    uint64_t live;
    rt_gstats st;
} intro_state;

static void parked(void *arg)
{
    intro_state *s = arg;
    rt_chan_recv(s->c, NULL, NULL);
}

static void intro_main(void *arg)
{
    intro_state *s = arg;
    s->c = rt_chan_make(sizeof(int), 0);
    for (int i = 0; i < 5; i++)
        rt_go(parked, s);
    rt_sleep(10 * RT_MSEC);
    s->live = rt_goroutines();
    rt_gstats_get(&s->st);
    size_t need = rt_dump_buf(s->dump, sizeof s->dump);
    assert_true(need < sizeof s->dump);
    rt_chan_close(s->c);
    rt_sleep(5 * RT_MSEC);
    assert_int_equal(rt_goroutines(), 1);
    rt_chan_free(s->c);
}

static void test_introspection(void **state)
{
    (void)state;
    intro_state *s = calloc(1, sizeof *s);
    assert_int_equal(rt_run(intro_main, s), 0);
    assert_int_equal(s->live, 6);
    assert_int_equal(s->st.live, 6);
    assert_int_equal(s->st.by_state[RT_G_WAITING], 5);
    assert_int_equal(s->st.by_state[RT_G_RUNNING], 1);
    assert_non_null(strstr(s->dump, "goroutines: 6\n"));
    assert_non_null(strstr(s->dump, "[waiting, chan receive]:\n"));
    assert_non_null(strstr(s->dump, "\tspawned at parked ("));
    assert_non_null(strstr(s->dump, "test_sched.c:"));
    assert_non_null(strstr(s->dump, "[running]:\n"));
    free(s);
}

/* ------------------------------------------------------ stack overflow */

static int deep(int n)
{
    char pad[1024];
    memset(pad, n, sizeof pad);
    __asm__ __volatile__("" : : "r"(pad) : "memory"); /* keep the frame */
    if (n == 0)
        return 0;
    int r = deep(n - 1) + (pad[7] == (char)n);
    rt_yield(); /* switch out with the overflowed stack */
    __asm__ __volatile__("" : : "r"(pad) : "memory");
    return r;
}

static void overflow_g(void *arg)
{
    (void)arg;
    deep(40);  /* 40 KiB of frames... */
    deep(200); /* ...then 200 KiB on a 64 KiB stack */
}

static void parked_forever(void *arg)
{
    rt_chan_recv((rt_chan *)arg, NULL, NULL);
}

static void overflow_main(void *arg)
{
    (void)arg;
    /* Neighbours in the slab, so the overflow lands in mapped memory and
     * only the canary check can catch it. */
    rt_chan *c = rt_chan_make(1, 0);
    for (int i = 0; i < 8; i++)
        rt_go(parked_forever, c);
    rt_yield();
    rt_go(overflow_g, NULL);
    rt_sleep(RT_SEC);
}

static void big_stack(void *arg)
{
    *(int *)arg = deep(200);
}

static void big_main(void *arg)
{
    rt_go_opts o = {.stack_size = 512 * 1024};
    rt_go_opts(big_stack, arg, &o);
    rt_sleep(20 * RT_MSEC);
}

static void test_stack_overflow_detected(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        dup2(pfd[1], 2);
        rt_set_procs(1);
        rt_run(overflow_main, NULL);
        _exit(0);
    }
    close(pfd[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 &&
           (n = read(pfd[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(pfd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    /* Never a silent, successful exit. Without sanitizers it is the
     * runtime's own panic, naming the goroutine's spawn site; ASan reports
     * the overflow itself. */
    assert_true(WIFSIGNALED(status) ||
                (WIFEXITED(status) && WEXITSTATUS(status) != 0));
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if !defined(__has_feature)
#define __has_feature(x) 0
#endif
#if !__has_feature(address_sanitizer) && !__has_feature(thread_sanitizer)
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    assert_non_null(strstr(buf, "stack overflow in goroutine"));
    assert_non_null(strstr(buf, "overflow_g"));
#endif
#endif
}

static void test_big_stack(void **state)
{
    (void)state;
    int r = -1;
    assert_int_equal(rt_run(big_main, &r), 0);
    assert_int_equal(r, 200);
}

/* ---------------------------------------------------- spawn back-pressure */

typedef struct {
    rt_waitgroup wg;
    uint64_t max_live;
} storm_state;

static void nothing(void *arg)
{
    rt_waitgroup_done(&((storm_state *)arg)->wg);
}

static void storm_main(void *arg)
{
    storm_state *s = arg;
    for (int i = 0; i < 200000; i++) {
        rt_waitgroup_add(&s->wg, 1);
        rt_go(nothing, s);
        uint64_t live = rt_goroutines();
        if (live > s->max_live)
            s->max_live = live;
    }
    rt_waitgroup_wait(&s->wg);
}

/* A spawn storm holds about one run queue of goroutines per P, not one
 * per goroutine ever spawned. */
static void test_spawn_backpressure(void **state)
{
    (void)state;
    for (int procs = 1; procs <= 2; procs++) {
        storm_state s = {0};
        rt_set_procs(procs);
        assert_int_equal(rt_run(storm_main, &s), 0);
        assert_true(s.max_live <= 256 * (uint64_t)procs + 64);
    }
    rt_set_procs(0);
}

/* ---------------------------------------------------------------- stress */

/*
 * Every P busy with a mix of everything the scheduler does: spawning,
 * yielding, sleeping, blocking calls, channel hand-offs. Invariant: every
 * token sent is received exactly once, and every goroutine ends.
 */
typedef struct {
    rt_chan *tokens;
    rt_waitgroup wg;
    _Atomic long sum_in, sum_out;
} stress_state;

static intptr_t tiny_block(void *arg)
{
    (void)arg;
    usleep(100);
    return 1;
}

static void stress_leaf(void *arg)
{
    stress_state *s = arg;
    long v;
    rt_chan_recv(s->tokens, &v, NULL);
    atomic_fetch_add(&s->sum_out, v);
    rt_waitgroup_done(&s->wg);
}

static void stress_worker(void *arg)
{
    stress_state *s = arg;
    uint64_t id = rt_goid();
    for (long i = 0; i < 1500; i++) {
        long v = (long)(id * 1000 + (uint64_t)i);
        rt_waitgroup_add(&s->wg, 1);
        rt_go(stress_leaf, s);
        switch (i % 4) {
        case 0:
            rt_yield();
            break;
        case 1:
            rt_sleep(RT_USEC * (int64_t)(i % 50));
            break;
        case 2:
            if (i % 20 == 2)
                rt_blocking(tiny_block, NULL);
            break;
        default:
            break;
        }
        atomic_fetch_add(&s->sum_in, v);
        rt_chan_send(s->tokens, &v);
    }
    rt_waitgroup_done(&s->wg);
}

static void stress_main(void *arg)
{
    stress_state *s = arg;
    s->tokens = rt_chan_make(sizeof(long), 0);
    for (int i = 0; i < 16; i++) {
        rt_waitgroup_add(&s->wg, 1);
        rt_go(stress_worker, s);
    }
    rt_waitgroup_wait(&s->wg);
    rt_chan_free(s->tokens);
}

static void test_stress_all_ps(void **state)
{
    (void)state;
    for (int procs = 2; procs <= 4; procs++) {
        stress_state s = {0};
        rt_set_procs(procs); /* 3 and 4 Ps on 2 CPUs: more interleavings */
        int64_t t0 = rt_now();
        assert_int_equal(rt_run(stress_main, &s), 0);
        assert_true(rt_now() - t0 < 60 * RT_SEC);
        assert_int_equal(atomic_load(&s.sum_in), atomic_load(&s.sum_out));
    }
    rt_set_procs(0);
}

/* ------------------------------------------------ timers firing in a herd */

/*
 * 20,000 goroutines sleep until the same instant. An idle M that runs
 * another P's due timers while looking for work readies hundreds of
 * goroutines onto its own queue; stealing on top of that once overran the
 * ring and ran a goroutine twice. Every goroutine must run exactly once
 * after its sleep.
 */
typedef struct {
    int64_t wake_at;
    _Atomic long woke;
    rt_waitgroup wg;
} herd_state;

static void herd_sleeper(void *arg)
{
    herd_state *h = arg;
    rt_sleep_until(h->wake_at);
    atomic_fetch_add(&h->woke, 1);
    rt_waitgroup_done(&h->wg);
}

static void herd_main(void *arg)
{
    herd_state *h = arg;
    for (int round = 0; round < 5; round++) {
        h->wake_at = rt_now() + 30 * RT_MSEC;
        for (int i = 0; i < 20000; i++) {
            rt_waitgroup_add(&h->wg, 1);
            rt_go(herd_sleeper, h);
        }
        rt_waitgroup_wait(&h->wg);
    }
}

static void test_timer_herd(void **state)
{
    (void)state;
    herd_state h = {0};
    rt_set_procs(2);
    assert_int_equal(rt_run(herd_main, &h), 0);
    rt_set_procs(0);
    assert_int_equal(atomic_load(&h.woke), 5 * 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_many),
        cmocka_unit_test(test_procs_env),
        cmocka_unit_test(test_yield_interleaves),
        cmocka_unit_test(test_sleep),
        cmocka_unit_test(test_idle_uses_no_cpu),
        cmocka_unit_test(test_timer),
        cmocka_unit_test(test_timer_churn),
        cmocka_unit_test(test_blocking_keeps_p),
        cmocka_unit_test(test_introspection),
        cmocka_unit_test(test_big_stack),
        cmocka_unit_test(test_stack_overflow_detected),
        cmocka_unit_test(test_spawn_backpressure),
        cmocka_unit_test(test_stress_all_ps),
        cmocka_unit_test(test_timer_herd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
