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

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Goroutines parked (waiting) right now. */
static inline uint64_t rt_check_parked(void)
{
    rt_gstats st;
    rt_gstats_get(&st);
    return st.by_state[RT_G_WAITING];
}

/* Yield until at least n goroutines are parked (a test's way to know its
 * waiters are queued); CHECK-fails after 10 s. */
static inline void rt_check_wait_parked(uint64_t n)
{
    int64_t end = rt_now() + 10 * RT_SEC;
    for (;;) {
        if (rt_check_parked() >= n)
            return;
        if (rt_now() > end) {
            CHECK(!"goroutines never parked");
            return;
        }
        rt_yield();
    }
}

/*
 * Run this test binary again as "--crash NAME" in a child (fork, then exec,
 * so the child starts with no runtime threads), capture its stderr and
 * check that it died of SIGABRT with expect in the message: how the tests
 * check that a programmer error panics. The binary's main() must hand
 * "--crash NAME" to the code that commits the error.
 */
static inline void rt_check_expect_abort(const char *name, const char *expect)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        alarm(60); /* a hang dies of SIGALRM, not SIGABRT */
        execl("/proc/self/exe", "test", "--crash", name, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("%s: child did not die of SIGABRT (status 0x%x); "
                 "stderr: %s",
                 name, status, buf);
    if (strstr(buf, expect) == NULL)
        fail_msg("%s: stderr lacks \"%s\": %s", name, expect, buf);
}

/* ------------------------------------------------ children with a setup */

#include <stdlib.h>

/*
 * Run this test binary again as "--crash NAME" in a child, like
 * rt_check_expect_abort(), with envs applied to the child's environment
 * ("VAR=value" sets VAR, a bare "VAR" removes it; a NULL-terminated list,
 * or NULL) for what a process decides once (FANFOLD_STACK_GUARD). The
 * child is killed by SIGALRM after timeout_s seconds. Returns the child's
 * wait status; its stderr goes to buf, NUL-terminated (what does not fit
 * is read and dropped, so a chatty child never blocks).
 */
static inline int rt_check_child(const char *name, const char *const *envs,
                                 int timeout_s, char *buf, size_t size)
{
    extern char **environ;
    size_t n = 0, m = 0;
    while (environ[n] != NULL)
        n++;
    while (envs != NULL && envs[m] != NULL)
        m++;
    /* Built before fork: the child only execs. */
    char **envp = calloc(n + m + 1, sizeof *envp);
    assert_non_null(envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < m && !replaced; j++) {
            size_t len = strcspn(envs[j], "=");
            replaced = strncmp(environ[i], envs[j], len) == 0 &&
                       environ[i][len] == '=';
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        if (strchr(envs[j], '=') != NULL)
            envp[k++] = (char *)envs[j];
    envp[k] = NULL;

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        alarm((unsigned)timeout_s); /* survives exec */
        char *argv[] = {"test", "--crash", (char *)name, NULL};
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    free(envp);
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        char scratch[4096];
        bool room = len + 1 < size;
        ssize_t r = room ? read(fds[0], buf + len, size - 1 - len)
                         : read(fds[0], scratch, sizeof scratch);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (room)
            len += (size_t)r;
    }
    if (size > 0)
        buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        assert_int_equal(errno, EINTR);
    return status;
}

/* Yield until at most n goroutines are alive (rt_goroutines(): those that
 * have not switched out for the last time yet count); CHECK-fails after
 * 10 s. */
static inline void rt_check_wait_goroutines(uint64_t n)
{
    int64_t end = rt_now() + 10 * RT_SEC;
    while (rt_goroutines() > n) {
        if (rt_now() > end) {
            CHECK(!"goroutines never exited");
            return;
        }
        rt_yield();
    }
}

/*
 * rt_check_expect_abort's generic sibling: run this test binary again as
 * "--crash NAME" in a child and check how it ended: killed by signal
 * signo, or, with signo 0, exited with status 0; and, when expect is not
 * NULL, that its stderr holds expect. The child starts with no signal
 * blocked and signo's disposition back to SIG_DFL (a shell starts
 * background jobs with SIGINT and SIGQUIT ignored, and both masks and
 * ignored signals survive exec). A hang dies of SIGALRM after 60 s.
 */
static inline void rt_check_expect_signal(const char *name, int signo,
                                          const char *expect)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (signo > 0)
            signal(signo, SIG_DFL);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        alarm(60);
        execl("/proc/self/exe", "test", "--crash", name, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break;
    }
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (signo > 0 && (!WIFSIGNALED(status) || WTERMSIG(status) != signo))
        fail_msg("%s: child did not die of signal %d (status 0x%x); "
                 "stderr: %s",
                 name, signo, status, buf);
    if (signo == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
        fail_msg("%s: child did not exit 0 (status 0x%x); stderr: %s", name,
                 status, buf);
    if (expect != NULL && strstr(buf, expect) == NULL)
        fail_msg("%s: stderr lacks \"%s\": %s", name, expect, buf);
}

#endif /* FANFOLD_TESTS_RT_CHECK_H */
