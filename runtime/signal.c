/*
 * signal.c - signals as channels (Go's os/signal.Notify and Stop).
 *
 * The runtime never runs a signal handler. For the supported set S
 * (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH: the
 * asynchronous signals a server is sent), rt__signal_init(), called by
 * rt_run() on its own thread before the Ms and the rt_blocking pool exist,
 * blocks every signal of S that has no handler of the program's, so every
 * runtime thread, created from that one or from each other, inherits the
 * mask. A process-directed signal (kill(2), a terminal's ^C) then stays
 * pending for the process until someone reads it from the signalfd
 * opened over the same set. The signalfd sits in the netpoller's epoll
 * with the event data RT__SIGNAL_TAG, and rt__netpoll() calls
 * rt__signal_poll() for it. SIGPIPE, which a write to a broken pipe sends
 * to the writing thread, is set to SIG_IGN: such a write fails with EPIPE.
 *
 * Data structures, all in `sig` below:
 *   set      the signals blocked and read: S minus those the program had
 *            a handler for at rt_run() (rt_signal_notify says -EBUSY for
 *            those; they keep working as the program set them up);
 *   subs     the subscriptions: one entry per channel, with the mask of
 *            the signals it watches (a channel is in subs once);
 *   fd       the signalfd, -1 outside rt_run().
 *
 * Invariants:
 *   - subs, nsubs and cap change only under lock, and a channel is sent to
 *     only under lock: once rt_signal_stop(c) has taken the lock and
 *     removed c, nothing can touch c, so the caller may free it;
 *   - fd and set are written by rt__signal_init/fini only, while no other
 *     runtime thread exists; everyone else only reads them;
 *   - rt__signal_poll runs in scheduler context (an M in rt__netpoll, one M
 *     at a time) and never parks: it reads with a non-blocking fd and sends
 *     with rt_chan_trysend, which drops the signal for a full channel, as
 *     Go does.
 *
 * A signal nobody watches gets the action the process would have had
 * without the runtime. The disposition is read when the signal arrives:
 * SIG_IGN (from the start, or set since) and SIGWINCH's default discard
 * it; otherwise the default action is to die, so rt__signal_poll
 * unblocks the signal in its own thread and raises it (SIGQUIT writes a
 * goroutine dump first, as Go does), and the process dies of that signal.
 * A signal that was ignored at start is blocked too: Linux never discards
 * a signal blocked in the target thread, whatever its disposition ("the
 * handler may change by the time it is unblocked", kernel/signal.c), so it
 * reaches the signalfd and rt_signal_notify needs no disposition change to
 * deliver it.
 *
 * The signalfd is flagged in rt__s.signalfd_on, so sysmon polls it at
 * least every 10 ms while the Ms are all busy: such a process still sees
 * SIGTERM. (It is not counted in rt__s.npolled: Ms that run out of work
 * poll only for sockets; see sched_internal.h.)
 *
 * Lock order: lock (this file) > rt_chan locks (rt_internal.h): the
 * channel sends happen under lock. Nothing here takes lock while holding
 * another runtime lock. lock is an rt__lock: short holds, never across a
 * park; the one long step, the goroutine dump, runs after releasing it.
 */
#include "chan_internal.h"
#include "rt_internal.h"
#include "sched_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

typedef struct sig_sub {
    rt_chan *c;
    uint64_t mask; /* bit n: signal n */
} sig_sub;

/* The one scheduler's signal state (see rt__s). */
static struct {
    rt__lock lock; /* protects subs, nsubs, cap */
    sig_sub *subs;
    size_t nsubs, cap;

    int fd;
    sigset_t set;
    sigset_t caller_mask;      /* the rt_run caller's mask, restored */
    struct sigaction old_pipe; /* SIGPIPE before rt_run, when changed */
    bool pipe_changed;
} sig = {.fd = -1};

static const int supported[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,
                                SIGUSR1, SIGUSR2, SIGWINCH};

static bool is_supported(int signo)
{
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        if (supported[i] == signo)
            return true;
    return false;
}

static uint64_t sig_bit(int signo)
{
    return (uint64_t)1 << signo;
}

/* ------------------------------------------------------------ set-up */

/*
 * On rt_run's thread, before any other runtime thread exists: block S
 * (minus the program's handlers), open the signalfd, add it to the
 * netpoller, ignore SIGPIPE. Returns 0 or a negative errno, with nothing
 * changed.
 */
int rt__signal_init(void)
{
    sigemptyset(&sig.set);
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++) {
        struct sigaction sa;
        if (sigaction(supported[i], NULL, &sa) == 0 &&
            (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            sigaddset(&sig.set, supported[i]);
    }
    int err = pthread_sigmask(SIG_BLOCK, &sig.set, &sig.caller_mask);
    if (err != 0)
        return -err;
    sig.fd = signalfd(-1, &sig.set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig.fd < 0) {
        err = -errno;
        goto fail_mask;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET,
                             .data.u64 = RT__SIGNAL_TAG};
    if (epoll_ctl(rt__s.epfd, EPOLL_CTL_ADD, sig.fd, &ev) != 0) {
        err = -errno;
        goto fail_fd;
    }

    sig.pipe_changed = false;
    if (sigaction(SIGPIPE, NULL, &sig.old_pipe) == 0 &&
        sig.old_pipe.sa_handler == SIG_DFL) {
        struct sigaction ign = {.sa_handler = SIG_IGN};
        sigemptyset(&ign.sa_mask);
        sig.pipe_changed = sigaction(SIGPIPE, &ign, NULL) == 0;
    }
    atomic_store(&rt__s.signalfd_on, true);
    return 0;

fail_fd:
    close(sig.fd);
    sig.fd = -1;
fail_mask:
    pthread_sigmask(SIG_SETMASK, &sig.caller_mask, NULL);
    return err;
}

/* ---------------------------------------------------------- delivery */

/* Die of signo, as its default action would have made the process. */
static _Noreturn void die_of(int signo)
{
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise(signo);
    /* The default action of every signal that gets here ends the
     * process before raise() returns. */
    rt__panic("signal %d: raise() returned", signo);
}

/* signo arrived and no channel watches it: what the process would have
 * done without the runtime. */
static void default_action(int signo)
{
    struct sigaction cur;
    if (sigaction(signo, NULL, &cur) != 0 || cur.sa_handler != SIG_DFL)
        return; /* ignored, or a handler installed since rt_run: it can
                   never run (documented in rt.h) */
    if (signo == SIGWINCH)
        return; /* default action: ignore */
    if (signo == SIGQUIT) {
        fputs("SIGQUIT: quit\n", stderr);
        rt_dump(stderr);
    }
    die_of(signo);
}

/* Send signo to every channel watching it (deliver false: only look);
 * false when none does. */
static bool dispatch(int signo, bool deliver)
{
    bool watched = false;
    rt__lock_acquire(&sig.lock);
    for (size_t i = 0; i < sig.nsubs; i++) {
        if (!(sig.subs[i].mask & sig_bit(signo)))
            continue;
        watched = true;
        if (deliver)
            rt_chan_trysend(sig.subs[i].c, &signo); /* full: dropped */
    }
    rt__lock_release(&sig.lock);
    return watched;
}

/* Read every pending signal; deliver or drop the watched ones, give the
 * others their default action. */
static void drain(bool deliver)
{
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t n = read(sig.fd, si, sizeof si);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* EAGAIN: nothing left (edge-triggered: all read) */
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            int signo = (int)si[i].ssi_signo;
            if (!dispatch(signo, deliver))
                default_action(signo);
        }
    }
}

/* The netpoller saw the signalfd readable (scheduler context). */
void rt__signal_poll(void)
{
    drain(true);
}

/*
 * rt_run teardown, on its thread, the other runtime threads gone. A signal
 * that arrived since the last poll is read once more: a watched one is
 * dropped (the program said it handles it, and no goroutine runs any
 * more), the others get their default action. Then the caller's mask and
 * SIGPIPE come back; the subscriptions are forgotten.
 */
void rt__signal_fini(void)
{
    if (sig.fd < 0)
        return;
    drain(false);
    atomic_store(&rt__s.signalfd_on, false);
    close(sig.fd); /* also leaves the epoll set */
    sig.fd = -1;
    struct sigaction cur;
    if (sig.pipe_changed && sigaction(SIGPIPE, NULL, &cur) == 0 &&
        cur.sa_handler == SIG_IGN) /* unless the program changed it since */
        sigaction(SIGPIPE, &sig.old_pipe, NULL);
    sig.pipe_changed = false;
    pthread_sigmask(SIG_SETMASK, &sig.caller_mask, NULL);
    free(sig.subs);
    sig.subs = NULL;
    sig.nsubs = sig.cap = 0;
}

/* ------------------------------------------------------------ public */

int rt_signal_notify(rt_chan *c, int signo)
{
    if (c == NULL || c->elem_size != sizeof(int) || !is_supported(signo) ||
        sig.fd < 0)
        return -EINVAL;
    if (!sigismember(&sig.set, signo))
        return -EBUSY; /* the program's own handler: left alone */
    int err = 0;
    rt__lock_acquire(&sig.lock);
    size_t i = 0;
    while (i < sig.nsubs && sig.subs[i].c != c)
        i++;
    if (i == sig.nsubs) {
        if (sig.nsubs == sig.cap) {
            /* Rare and small: the allocation is made under the lock. */
            size_t cap = sig.cap != 0 ? 2 * sig.cap : 4;
            sig_sub *subs = realloc(sig.subs, cap * sizeof *subs);
            if (subs == NULL) {
                err = -ENOMEM;
                goto out;
            }
            sig.subs = subs;
            sig.cap = cap;
        }
        sig.subs[sig.nsubs++] = (sig_sub){.c = c, .mask = 0};
    }
    sig.subs[i].mask |= sig_bit(signo);
out:
    rt__lock_release(&sig.lock);
    return err;
}

void rt_signal_stop(rt_chan *c)
{
    if (c == NULL)
        return;
    rt__lock_acquire(&sig.lock);
    for (size_t i = 0; i < sig.nsubs; i++) {
        if (sig.subs[i].c == c) {
            sig.subs[i] = sig.subs[--sig.nsubs];
            break;
        }
    }
    rt__lock_release(&sig.lock);
}
