/*
 * rt_internal.h - what the runtime's files share with one another (rt__*).
 * Not installed, not for users of the library.
 *
 * The contract every blocking primitive builds on is Go's gopark/goready:
 *
 *   rt__park(unlockf, arg, reason)
 *       switches the calling goroutine G out to its M's scheduler stack
 *       (g0). Only once G's registers are saved does g0 call
 *       unlockf(G, arg); that is where the caller releases the lock that
 *       protects the wait queue it put G on. A waker that takes the lock,
 *       finds G and calls rt__ready(G) can therefore never resume a G that
 *       is still running on its own stack. If unlockf returns false G is
 *       resumed at once (the wait was abandoned).
 *
 *   rt__ready(G)
 *       makes a parked G runnable: it goes to the runnext slot of the
 *       calling M's P (so a sender/receiver pair stays on one P) and an
 *       idle M is woken if there is one. Callable from a goroutine or from
 *       scheduler context (a timer callback).
 *
 * Anything that parks must save errno before and never keep a thread-local
 * address across the park: a goroutine may resume on another thread.
 *
 * Lock order (outer first): context locks (parent before child) and the
 * signal lock (signal.c) > rt_chan locks (address order; a context closes
 * its done channel under its own lock) > sync object locks > timer heap
 * lock (per P) > scheduler lock.
 * The scheduler and timer locks are never held while calling out. Code
 * that owns an rt__timer must rt__timer_stop() it before reusing its
 * memory: the callback may still be returning on another M.
 */
#ifndef FANFOLD_RT_INTERNAL_H
#define FANFOLD_RT_INTERNAL_H

#include "rt.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define RT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RT_TSAN 1
#endif
#endif

#define RT__NOINLINE __attribute__((noinline))
#define RT__LIKELY(x) __builtin_expect(!!(x), 1)
#define RT__UNLIKELY(x) __builtin_expect(!!(x), 0)

/*
 * The calling thread's errno, negated, read fresh: call it right after the
 * failing syscall. glibc declares __errno_location() const, so a compiler
 * may reuse its result across a call that parks, and a goroutine may
 * resume on another thread; this function is never inlined and never
 * merged with another call (lock.c), so the errno it reads is the one of
 * the thread that made the syscall. STYLE: "errno only inside the syscall
 * wrapper, before any park".
 */
int rt__errno(void) RT__NOINLINE;

/* Abort with a message, like a Go panic. Never returns. */
_Noreturn void rt__panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------ spinning */

/*
 * Bounded busy-waiting, by elapsed time (lock.c): a PAUSE takes ~20 ns on
 * the AMD EPYC these figures were measured on and ~45 ns (140 cycles) on
 * Intel since Skylake, so a count of PAUSEs tuned on one spins twice as
 * long on the other. rt__spin_more() does one PAUSE and says whether the budget
 * is left; the clock is read only every RT__SPIN_CHECK calls, so a short
 * wait costs no clock read at all, and starts counting at the first read.
 *
 *     rt__spin sp = RT__SPIN(2 * RT_USEC);
 *     while (rt__spin_more(&sp))
 *         if (the thing we wait for happened) return;
 */
typedef struct rt__spin {
    int64_t budget, end; /* end: 0 until the first clock read */
    uint32_t n;
} rt__spin;
#define RT__SPIN(ns) ((rt__spin){.budget = (ns), .end = 0, .n = 0})
#define RT__SPIN_CHECK 8
bool rt__spin_more(rt__spin *s);
/* Spin about ns more (PAUSEs, the clock read every RT__SPIN_CHECK of them)
 * or until the budget ends; says whether budget is left. For waits that
 * look at a shared word only now and then (see rt__lock_acquire_hot). */
bool rt__spin_for(rt__spin *s, int64_t ns);

/* ---------------------------------------------------- thread-level lock */

/*
 * rt__lock is a short-hold mutex for the runtime's own data (channels,
 * wait queues, timer heaps): spins briefly, then sleeps on a futex. It
 * blocks the thread, so hold it only for a few instructions and never
 * across a park (rt__park's unlockf is how you release it "after" one).
 * Zero-initialised = unlocked. rt__lock_acquire_hot is the same lock
 * taken by a waiter that looks at it less often while it spins: for locks
 * that two Ps may take in a tight loop (channel locks; see lock.c).
 */
void rt__lock_acquire(rt__lock *l);
void rt__lock_acquire_hot(rt__lock *l);
bool rt__lock_tryacquire(rt__lock *l);
void rt__lock_release(rt__lock *l);

/* ----------------------------------------------------------- goroutines */

/* Saved registers of a switched-out context; layout known to switch_*.S. */
typedef struct rt__regs {
    void *sp;
} rt__regs;

typedef struct rt_g rt_g;
struct rt_g {
    rt__regs regs; /* saved stack pointer (switch_*.S) */
    /* Scheduling state: rt_gstate values plus sched.c's private
     * "parking" states. Atomic: rt__ready races with the park hand-off. */
    _Atomic int state;

    /* What goroutine dumps read while the G runs elsewhere: relaxed
     * atomics, written by the G itself or by its spawner. */
    _Atomic uint64_t id; /* > 0 while live */
    /* Set by sysmon when this G has held its P for RT_LONG_RUN without
     * switching out: when sysmon first saw it running (dumps show it);
     * cleared when it switches out. */
    _Atomic int64_t long_run_since;
    _Atomic(const char *) waitreason;    /* why it is waiting */
    _Atomic(const char *) fn_name, file; /* spawn site */
    _Atomic int line;

    /* Entry point. */
    rt_fn fn;
    void *arg;

    /* Stack: [stack_lo, stack_hi); the G itself lives just above
     * stack_hi, in the same mapping. */
    char *stack_lo, *stack_hi;
    size_t stack_size;
    bool guarded; /* a guard below the stack (stack.c) */

    /* Scheduler links: global run queue, free lists. */
    rt_g *schednext;
    rt_g *allnext; /* every G ever made, for dumps; never unlinked */

    /*
     * For channels/select (Go's g.param and g.selectDone):
     *   param       - set by the waker before rt__ready (the waker's
     *                 sudog, or NULL when woken by close);
     *   select_done - 0 while a select is waiting; the first waker to
     *                 CAS it 0 -> 1 wins the select.
     */
    void *param;
    _Atomic uint32_t select_done;

    /* Park hand-off to g0 (sched.c). */
    bool (*park_unlockf)(rt_g *g, void *arg);
    void *park_arg;
    int switch_action;

    /* rt_blocking() result hand-off (blocking.c). */
    intptr_t blocking_ret;

#ifdef RT_TSAN
    void *tsan_fiber;
#endif
#ifdef RT_ASAN
    void *asan_fake_stack;
#endif
};

/* The goroutine running on this thread, or NULL in scheduler context. */
rt_g *rt__curg(void) RT__NOINLINE;

/* See the top of this file. reason is a static string such as
 * "chan receive". */
void rt__park(bool (*unlockf)(rt_g *g, void *arg), void *arg,
              const char *reason);
void rt__ready(rt_g *g);

/*
 * For tests only (NULL otherwise): called by an M about to sleep, in
 * scheduler context, between its first look at the timers and the
 * publication of its wake-up time: the window where a timer started by
 * someone else must not be lost (tests/runtime/test_sched.c).
 */
extern void (*rt__test_hook_m_sleep)(void);

/* May a goroutine busy-wait for a lock held on another P (sched.c)? */
bool rt__can_spin(void);

/* Fast random numbers (per thread, no locking). */
uint32_t rt__rand32(void);
/* Uniform in [0, n). */
uint32_t rt__randn(uint32_t n);

/* ---------------------------------------------------------------- timers */

/*
 * rt__timer: one entry of a per-P timer heap. fn runs in scheduler context
 * on some M (not on a goroutine stack): it must not block or park; it may
 * take rt__locks, call rt__ready and the non-blocking channel functions.
 * The struct may live on a goroutine's stack: rt__timer_stop() waits for a
 * callback that is running concurrently to return, so after stop the
 * memory can be reused.
 */
typedef struct rt__timer rt__timer;
struct rt__timer {
    int64_t when;
    void (*fn)(rt__timer *t);
    void *arg;
    /* private to timer.c */
    void *_Atomic heap; /* the heap holding it, or NULL */
    int32_t idx;        /* index in heap */
    _Atomic int status;
};

void rt__timer_init(rt__timer *t, void (*fn)(rt__timer *t), void *arg);
/* rt_now() + d, saturated: d <= 0 is now, and a d that would overflow is
 * RT_FOREVER. */
static inline int64_t rt__deadline_after(int64_t d)
{
    int64_t now = rt_now();
    if (d <= 0)
        return now;
    return d >= RT_FOREVER - now ? RT_FOREVER : now + d;
}
/* Arm at absolute time when; t must not be armed. */
void rt__timer_start(rt__timer *t, int64_t when);
/* Disarm: true when t was pending and will now not fire. */
bool rt__timer_stop(rt__timer *t);

/* --------------------------------------------------------- ctx watchers */

/*
 * A callback for when a context is done (context.c). fn runs once, in the
 * cancelling goroutine or a timer callback, with the context's lock held:
 * it must not park or touch contexts; it may take rt__locks below context
 * locks in the lock order and call rt__ready.
 */
typedef struct rt__ctx_watch rt__ctx_watch;
struct rt__ctx_watch {
    void (*fn)(rt__ctx_watch *w, int err);
    void *arg;
    /* private to context.c */
    rt__ctx_watch *next, *prev;
    rt_ctx *node;
    bool linked;
};
/* Register w on ctx (NULL: nothing). Returns 0, or ctx's error when it is
 * done already (fn is then not called). The caller holds a reference on
 * ctx until rt__ctx_watch_del(). */
int rt__ctx_watch_add(rt_ctx *ctx, rt__ctx_watch *w);
/* Unregister; afterwards fn is neither running nor going to run. */
void rt__ctx_watch_del(rt__ctx_watch *w);

#endif /* FANFOLD_RT_INTERNAL_H */
