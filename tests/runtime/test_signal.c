/*
 * test_signal.c - signals as channels: delivery to one and to several
 * channels, stop, a full channel dropping the signal, the errors, a
 * signal reaching an idle process and a busy one promptly, SIGPIPE
 * ignored, a program's own handler left alone, a signal ignored at start,
 * and the caller's mask and SIGPIPE restored after rt_run(). What happens
 * to a signal nobody watches (the process dies of it; SIGQUIT dumps the
 * goroutines first; SIGWINCH is discarded) is checked in child processes:
 * run with "--crash NAME" the binary plays one such scenario.
 *
 * Signals are sent with kill(getpid(), ...): process-directed, as a
 * shell or a supervisor sends them. Checks inside goroutines use CHECK()
 * (rt_check.h). Where a test must know that a signal has been dealt with,
 * rt_signal_stop() is the barrier: it waits for a delivery in progress.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt.h"

#include "../rt_check.h"

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

/* How long a test waits for a signal that must come: a generous bound
 * for a loaded machine and sanitizers, not the expected latency. */
#define SIGNAL_WAIT (10 * RT_SEC)

static rt_chan *sigchan(size_t cap)
{
    rt_chan *c = rt_chan_make(sizeof(int), cap);
    CHECK(c != NULL);
    return c;
}

/* Receive one signal number from c, or -1 after SIGNAL_WAIT. */
static int recv_sig(rt_chan *c)
{
    int signo = -1;
    rt_case cs[] = {RT_RECV_CASE(c, &signo)};
    if (rt_select_timeout(cs, 1, SIGNAL_WAIT) != 0)
        return -1;
    return signo;
}

static void send_self(int signo)
{
    CHECK(kill(getpid(), signo) == 0);
}

static bool sigaction_is(int signo, void (*handler)(int))
{
    struct sigaction sa;
    return sigaction(signo, NULL, &sa) == 0 && sa.sa_handler == handler;
}

/* ------------------------------------------------------------ delivery */

static void notify_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(4);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0); /* a no-op */
    send_self(SIGUSR1);
    CHECK(recv_sig(c) == SIGUSR1);
    rt_signal_stop(c);          /* barrier: any delivery in progress is done */
    CHECK(rt_chan_len(c) == 0); /* registered once, sent once */
    rt_chan_free(c);
}

static void test_notify_delivers(void **state)
{
    (void)state;
    run(2, notify_main, NULL);
}

static void two_channels_main(void *arg)
{
    (void)arg;
    rt_chan *a = sigchan(1), *b = sigchan(1);
    CHECK(rt_signal_notify(a, SIGUSR2) == 0);
    CHECK(rt_signal_notify(b, SIGUSR2) == 0);
    send_self(SIGUSR2);
    CHECK(recv_sig(a) == SIGUSR2);
    CHECK(recv_sig(b) == SIGUSR2);
    rt_signal_stop(a);
    rt_signal_stop(b);
    rt_chan_free(a);
    rt_chan_free(b);
}

static void test_two_channels_one_signal(void **state)
{
    (void)state;
    run(2, two_channels_main, NULL);
}

static void two_signals_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(2);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    CHECK(rt_signal_notify(c, SIGHUP) == 0);
    send_self(SIGUSR1);
    send_self(SIGHUP);
    int x = recv_sig(c), y = recv_sig(c);
    CHECK((x == SIGUSR1 && y == SIGHUP) || (x == SIGHUP && y == SIGUSR1));
    rt_signal_stop(c);
    rt_chan_free(c);
}

static void test_one_channel_two_signals(void **state)
{
    (void)state;
    run(2, two_signals_main, NULL);
}

/* One signal at a time, each sent after the last was received: every one
 * arrives (the edge-triggered signalfd is drained each time). */
#define ROUNDS 200

static void many_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    int got = 0;
    for (int i = 0; i < ROUNDS; i++) {
        send_self(SIGUSR1);
        if (recv_sig(c) == SIGUSR1)
            got++;
    }
    CHECK(got == ROUNDS);
    rt_signal_stop(c);
    rt_chan_free(c);
}

static void test_every_signal_arrives(void **state)
{
    (void)state;
    run(2, many_main, NULL);
}

/* ---------------------------------------------------------------- stop */

static void stop_main(void *arg)
{
    (void)arg;
    rt_chan *stopped = sigchan(1), *live = sigchan(1);
    CHECK(rt_signal_notify(stopped, SIGUSR2) == 0);
    CHECK(rt_signal_notify(live, SIGUSR2) == 0);
    rt_signal_stop(stopped);
    rt_signal_stop(stopped); /* twice: nothing */
    send_self(SIGUSR2);
    CHECK(recv_sig(live) == SIGUSR2);
    rt_signal_stop(live); /* barrier */
    CHECK(rt_chan_len(stopped) == 0);
    rt_signal_stop(NULL);
    rt_chan_free(stopped);
    rt_chan_free(live);
}

static void test_stop(void **state)
{
    (void)state;
    run(2, stop_main, NULL);
}

/* --------------------------------------------------------- full channel */

static void full_main(void *arg)
{
    (void)arg;
    rt_chan *full = sigchan(1), *probe = sigchan(1);
    CHECK(rt_chan_trysend(full, &(int){0}));
    CHECK(rt_signal_notify(full, SIGUSR1) == 0);
    CHECK(rt_signal_notify(probe, SIGUSR1) == 0);
    send_self(SIGUSR1);
    /* The probe got it, so the runtime went on past the full channel. */
    CHECK(recv_sig(probe) == SIGUSR1);
    rt_signal_stop(full); /* barrier */
    rt_signal_stop(probe);
    int v = -1;
    CHECK(rt_chan_len(full) == 1);
    CHECK(rt_chan_tryrecv(full, &v, NULL) && v == 0); /* dropped */
    rt_chan_free(full);
    rt_chan_free(probe);
}

static void test_full_channel_drops(void **state)
{
    (void)state;
    run(2, full_main, NULL);
}

/* -------------------------------------------------------------- errors */

static void errors_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    static const int bad[] = {SIGKILL, SIGSTOP, SIGSEGV, SIGBUS,  SIGFPE,
                              SIGILL,  SIGTRAP, SIGABRT, SIGPIPE, SIGALRM,
                              SIGCHLD, 0,       -1,      65,      1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(rt_signal_notify(c, bad[i]) == -EINVAL);
    CHECK(rt_signal_notify(c, SIGRTMIN) == -EINVAL);
    CHECK(rt_signal_notify(NULL, SIGUSR1) == -EINVAL);
    rt_chan *wide = rt_chan_make(sizeof(int64_t), 1);
    CHECK(rt_signal_notify(wide, SIGUSR1) == -EINVAL);
    rt_signal_stop(c); /* never registered: nothing */
    rt_chan_free(wide);
    rt_chan_free(c);
}

static void test_errors(void **state)
{
    (void)state;
    run(2, errors_main, NULL);
    /* Outside rt_run. */
    rt_chan *c = rt_chan_make(sizeof(int), 1);
    assert_non_null(c);
    assert_int_equal(rt_signal_notify(c, SIGUSR1), -EINVAL);
    rt_signal_stop(c);
    rt_chan_free(c);
}

/* ------------------------------------------------------- idle process */

/* Are all the process's threads but the caller asleep (state S)? */
static bool others_asleep(void)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return false;
    pid_t self = gettid();
    bool all = true;
    struct dirent *e;
    while (all && (e = readdir(d)) != NULL) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid <= 0 || tid == self)
            continue;
        char path[64], line[512];
        snprintf(path, sizeof path, "/proc/self/task/%ld/stat", tid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* the thread is gone */
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = '\0';
        const char *p = strrchr(line, ')'); /* the name may hold spaces */
        all = p != NULL && p[1] == ' ' && p[2] == 'S';
    }
    closedir(d);
    return all;
}

/* On an rt_blocking thread, while every goroutine is parked: wait until
 * every other thread sleeps (the Ms in epoll or on their futex), then
 * send the signal. Returns when it was sent. */
static intptr_t kill_when_idle(void *arg)
{
    (void)arg;
    int64_t end = rt_now() + SIGNAL_WAIT;
    while (!others_asleep() && rt_now() < end)
        sched_yield();
    int64_t t = rt_now();
    kill(getpid(), SIGUSR2);
    return (intptr_t)t;
}

typedef struct {
    rt_chan *c;
    _Atomic int64_t got_at;
    rt_waitgroup wg;
} idle_state;

static void idle_receiver(void *arg)
{
    idle_state *s = arg;
    if (recv_sig(s->c) == SIGUSR2)
        atomic_store(&s->got_at, rt_now());
    rt_waitgroup_done(&s->wg);
}

static void idle_main(void *arg)
{
    (void)arg;
    idle_state s = {.c = sigchan(1), .wg = RT_WAITGROUP_INIT};
    CHECK(rt_signal_notify(s.c, SIGUSR2) == 0);
    rt_waitgroup_add(&s.wg, 1);
    rt_go(idle_receiver, &s);
    rt_check_wait_parked(1);
    /* Park this goroutine too: the process is idle while the pool thread
     * waits for the Ms to fall asleep. */
    int64_t sent_at = (int64_t)rt_blocking(kill_when_idle, NULL);
    rt_waitgroup_wait(&s.wg);
    int64_t got_at = atomic_load(&s.got_at);
    CHECK(got_at != 0);
    /* Expected: well under a millisecond (the poller wakes on the
     * signalfd); allowed: 1 s, for a loaded 2-core machine. */
    CHECK(got_at - sent_at < RT_SEC);
    rt_signal_stop(s.c);
    rt_chan_free(s.c);
}

static void test_idle_process_gets_signal(void **state)
{
    (void)state;
    run(2, idle_main, NULL);
    run(1, idle_main, NULL);
}

/* ------------------------------------------------------- busy process */

/* Every M busy with goroutines that never park and no fd registered:
 * sysmon still looks at the signalfd (every 10 ms at least) for them. */
#define SPINNERS 4

static _Atomic bool spin_stop;

static void spinner(void *arg)
{
    rt_waitgroup *wg = arg;
    while (!atomic_load(&spin_stop))
        rt_yield();
    rt_waitgroup_done(wg);
}

static void busy_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    atomic_store(&spin_stop, false);
    for (int i = 0; i < SPINNERS; i++) {
        rt_waitgroup_add(&wg, 1);
        rt_go(spinner, &wg);
    }
    int64_t t0 = rt_now();
    send_self(SIGUSR1);
    CHECK(recv_sig(c) == SIGUSR1);
    /* Expected: within ~10-20 ms (sysmon's poll); allowed: 1 s,
     * for a loaded machine and sanitizers. */
    CHECK(rt_now() - t0 < RT_SEC);
    atomic_store(&spin_stop, true);
    rt_waitgroup_wait(&wg);
    rt_signal_stop(c);
    rt_chan_free(c);
}

static void test_busy_process_gets_signal(void **state)
{
    (void)state;
    run(2, busy_main, NULL);
    run(1, busy_main, NULL);
}

/* ------------------------------------------------------------ SIGPIPE */

static void sigpipe_main(void *arg)
{
    (void)arg;
    CHECK(sigaction_is(SIGPIPE, SIG_IGN));
    int p[2];
    CHECK(pipe(p) == 0);
    close(p[0]);
    errno = 0;
    CHECK(write(p[1], "x", 1) == -1 && errno == EPIPE); /* and alive */
    close(p[1]);
}

static void test_sigpipe_ignored(void **state)
{
    (void)state;
    struct sigaction old;
    assert_int_equal(sigaction(SIGPIPE, NULL, &old), 0);
    signal(SIGPIPE, SIG_DFL);
    run(2, sigpipe_main, NULL);
    assert_true(sigaction_is(SIGPIPE, SIG_DFL));
    /* A program that ignores SIGPIPE itself keeps it ignored. */
    signal(SIGPIPE, SIG_IGN);
    run(2, sigpipe_main, NULL);
    assert_true(sigaction_is(SIGPIPE, SIG_IGN));
    sigaction(SIGPIPE, &old, NULL);
}

/* ------------------------------------------- the program's own handler */

static _Atomic int hup_handled;

static void on_hup(int signo)
{
    (void)signo;
    atomic_store(&hup_handled, 1);
}

static void handler_main(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGHUP) == -EBUSY);
    /* Not blocked: the handler runs, on whichever thread the kernel
     * picks. */
    send_self(SIGHUP);
    int64_t end = rt_now() + SIGNAL_WAIT;
    while (atomic_load(&hup_handled) == 0 && rt_now() < end)
        rt_yield();
    CHECK(atomic_load(&hup_handled) == 1);
    rt_chan_free(c);
}

static void test_program_handler_left_alone(void **state)
{
    (void)state;
    struct sigaction sa = {.sa_handler = on_hup}, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGHUP, &sa, &old), 0);
    run(2, handler_main, NULL);
    assert_true(sigaction_is(SIGHUP, on_hup));
    sigaction(SIGHUP, &old, NULL);
}

/* ------------------------------------------------- ignored at start */

static void ignored_main(void *arg)
{
    (void)arg;
    send_self(SIGUSR1); /* ignored and unwatched: discarded */
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    send_self(SIGUSR1); /* watched: delivered, as Go's Notify does */
    CHECK(recv_sig(c) == SIGUSR1);
    rt_signal_stop(c);
    send_self(SIGUSR1); /* unwatched again: discarded */
    rt_chan_free(c);
}

static void test_ignored_at_start(void **state)
{
    (void)state;
    struct sigaction old;
    assert_int_equal(sigaction(SIGUSR1, NULL, &old), 0);
    signal(SIGUSR1, SIG_IGN);
    run(2, ignored_main, NULL);
    assert_true(sigaction_is(SIGUSR1, SIG_IGN));
    sigaction(SIGUSR1, &old, NULL);
}

/* -------------------------------------------------- the caller's mask */

static void blocked_main(void *arg)
{
    (void)arg;
    /* Blocked by the caller before rt_run: taken over all the same (a
     * blocked mask is usually inherited by accident), as Go does. */
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGUSR2) == 0);
    send_self(SIGUSR2);
    CHECK(recv_sig(c) == SIGUSR2);
    rt_signal_stop(c);
    rt_chan_free(c);
}

static void test_mask_restored(void **state)
{
    (void)state;
    sigset_t before, mine, after;
    sigemptyset(&mine);
    sigaddset(&mine, SIGUSR2);
    sigaddset(&mine, SIGCHLD);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &mine, &before), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &mine), 0);
    run(2, blocked_main, NULL);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &after), 0);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&mine, s) != sigismember(&after, s))
            fail_msg("signal %d: blocked %d before rt_run, %d after", s,
                     sigismember(&mine, s), sigismember(&after, s));
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, NULL), 0);
}

/* -------------------------------------- unwatched signals, in children */

static void crash_term(void *arg)
{
    (void)arg;
    send_self(SIGTERM);
    rt_sleep(30 * RT_SEC); /* killed before this ends */
}

static void crash_int(void *arg)
{
    (void)arg;
    send_self(SIGINT);
    rt_sleep(30 * RT_SEC);
}

static void crash_hup(void *arg)
{
    (void)arg;
    send_self(SIGHUP);
    rt_sleep(30 * RT_SEC);
}

static void quit_sleeper(void *arg)
{
    (void)arg;
    rt_sleep(30 * RT_SEC);
}

static void crash_quit(void *arg)
{
    (void)arg;
    rt_go(quit_sleeper, NULL);
    send_self(SIGQUIT);
    rt_sleep(30 * RT_SEC);
}

static void crash_stopped(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    rt_signal_stop(c);
    send_self(SIGUSR1); /* nobody watches it any more */
    rt_sleep(30 * RT_SEC);
}

/* SIGWINCH unwatched is discarded: the child lives on and exits 0. */
static void crash_winch(void *arg)
{
    (void)arg;
    rt_chan *c = sigchan(1);
    CHECK(rt_signal_notify(c, SIGUSR1) == 0);
    send_self(SIGWINCH);
    send_self(SIGUSR1);
    CHECK(recv_sig(c) == SIGUSR1);
    rt_signal_stop(c);
    rt_chan_free(c);
}

/* A watched SIGTERM never kills, not even when it is still pending as
 * rt_run returns. The channel stays registered until rt_run ends, and is
 * freed after that (crash_main). */
static rt_chan *crash_chan;

static void crash_watched_term_at_exit(void *arg)
{
    (void)arg;
    crash_chan = sigchan(1);
    CHECK(rt_signal_notify(crash_chan, SIGTERM) == 0);
    send_self(SIGTERM);
    /* Return at once: the signal is delivered or dropped at teardown. */
}

static const struct {
    const char *name;
    void (*fn)(void *);
} crashes[] = {
    {"term", crash_term},
    {"int", crash_int},
    {"hup", crash_hup},
    {"quit", crash_quit},
    {"stopped", crash_stopped},
    {"winch", crash_winch},
    {"watched-term-at-exit", crash_watched_term_at_exit},
};

static int crash_main(const char *name)
{
    for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++)
        if (strcmp(crashes[i].name, name) == 0) {
            rt_check_reset();
            int err = rt_run(crashes[i].fn, NULL);
            rt_chan_free(crash_chan);
            if (err != 0 || atomic_load(&rt_check_failures) != 0) {
                fprintf(stderr, "rt_run: %d; %s\n", err, rt_check_msg);
                return 1;
            }
            return 0;
        }
    return 2;
}

#define expect_signal rt_check_expect_signal

static void test_unwatched_terminates(void **state)
{
    (void)state;
    expect_signal("term", SIGTERM, NULL);
    expect_signal("int", SIGINT, NULL);
    expect_signal("hup", SIGHUP, NULL);
    expect_signal("stopped", SIGUSR1, NULL);
}

static void test_unwatched_quit_dumps(void **state)
{
    (void)state;
    expect_signal("quit", SIGQUIT, "goroutines: ");
    expect_signal("quit", SIGQUIT, "quit_sleeper");
}

static void test_unwatched_winch_discarded(void **state)
{
    (void)state;
    expect_signal("winch", 0, NULL);
}

static void test_watched_never_kills(void **state)
{
    (void)state;
    expect_signal("watched-term-at-exit", 0, NULL);
}

/* -------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--crash") == 0)
        return crash_main(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_delivers),
        cmocka_unit_test(test_two_channels_one_signal),
        cmocka_unit_test(test_one_channel_two_signals),
        cmocka_unit_test(test_every_signal_arrives),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_full_channel_drops),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_idle_process_gets_signal),
        cmocka_unit_test(test_busy_process_gets_signal),
        cmocka_unit_test(test_sigpipe_ignored),
        cmocka_unit_test(test_program_handler_left_alone),
        cmocka_unit_test(test_ignored_at_start),
        cmocka_unit_test(test_mask_restored),
        cmocka_unit_test(test_unwatched_terminates),
        cmocka_unit_test(test_unwatched_quit_dumps),
        cmocka_unit_test(test_unwatched_winch_discarded),
        cmocka_unit_test(test_watched_never_kills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
