/*
 * lock.c - the runtime's thread-level lock, futex helpers, panics and
 * per-thread random numbers.
 *
 * rt__lock is Drepper's three-state futex mutex ("Futexes Are Tricky",
 * mutex2): v == 0 unlocked, 1 locked, 2 locked and someone may sleep in
 * futex_wait. Acquire spins briefly before sleeping because every holder
 * in the runtime holds it for a handful of instructions (a queue push, a
 * heap sift). It parks threads, not goroutines, so it protects only the
 * runtime's own short critical sections; goroutine-level locks are
 * rt_mutex and friends in sync.c.
 *
 * Random numbers: a wyrand generator per thread. Only the value is used,
 * never the address, so goroutine migration cannot tear it.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int rt__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns)
{
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / RT_SEC;
        ts.tv_nsec = timeout_ns % RT_SEC;
        tsp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, tsp,
                     NULL, 0);
    return r < 0 ? -errno : 0;
}

void rt__futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

bool rt__spin_more(rt__spin *s)
{
    cpu_relax();
    if (++s->n % RT__SPIN_CHECK != 0)
        return true;
    int64_t now = rt_now();
    if (s->end == 0) {
        s->end = now + s->budget;
        return true;
    }
    return now < s->end;
}

bool rt__spin_for(rt__spin *s, int64_t ns)
{
    int64_t now = rt_now();
    if (s->end == 0)
        s->end = now + s->budget;
    int64_t until = now + ns < s->end ? now + ns : s->end;
    do {
        for (int i = 0; i < RT__SPIN_CHECK; i++)
            cpu_relax();
        now = rt_now();
    } while (now < until);
    return now < s->end;
}

/* How long rt__lock_acquire spins before it sleeps on the futex. */
#define LOCK_SPIN_NS (2 * RT_USEC)
/* rt__lock_acquire_hot: after a ramp of 1, 2 and 4 PAUSEs, the lock word
 * is looked at once per LOCK_HOT_CHECK_NS (see there). */
#define LOCK_HOT_CHECK_NS (1 * RT_USEC)

bool rt__lock_tryacquire(rt__lock *l)
{
    uint32_t c = 0;
    return atomic_compare_exchange_strong_explicit(
        &l->v, &c, 1, memory_order_acquire, memory_order_relaxed);
}

static void lock_slow(rt__lock *l, bool hot);

void rt__lock_acquire(rt__lock *l)
{
    uint32_t c = 0;
    if (RT__LIKELY(atomic_compare_exchange_strong_explicit(
            &l->v, &c, 1, memory_order_acquire, memory_order_relaxed)))
        return;
    lock_slow(l, false);
}

/*
 * For a lock that two Ps may take in a tight loop: a channel between a
 * producer and a consumer on two Ps. Spinning on the word every PAUSE, as
 * rt__lock_acquire does, takes the lock the moment it is released, so it
 * changes hands (and its cache line changes cores) on every operation:
 * chan_buf1024_throughput at P = 2 spent 80 % of its time on the first
 * CAS of the lock, 60-160 ns per item against Go's 45. Looking only once
 * per LOCK_HOT_CHECK_NS after a short ramp lets the holder take it again
 * while the line is still its own, in runs, as Go's lock2 does (it looks
 * every 30 PAUSEs, 4 times, then sleeps): 35-45 ns per item. A lock held
 * for a moment by the other side still costs only the ramp (1, 2, 4
 * PAUSEs) when it is released quickly.
 */
void rt__lock_acquire_hot(rt__lock *l)
{
    uint32_t c = 0;
    if (RT__LIKELY(atomic_compare_exchange_strong_explicit(
            &l->v, &c, 1, memory_order_acquire, memory_order_relaxed)))
        return;
    lock_slow(l, true);
}

static RT__NOINLINE void lock_slow(rt__lock *l, bool hot)
{
    uint32_t c;
    /* Spin: the holder is a few instructions from releasing (2 us; see
     * rt__spin for why by time). */
    rt__spin sp = RT__SPIN(LOCK_SPIN_NS);
    uint32_t step = 1;
    for (;;) {
        c = 0;
        if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(
                &l->v, &c, 1, memory_order_acquire, memory_order_relaxed))
            return;
        bool more = true;
        if (!hot) {
            more = rt__spin_more(&sp);
        } else if (step < RT__SPIN_CHECK) {
            for (uint32_t i = 0; i < step && more; i++)
                more = rt__spin_more(&sp);
            step <<= 1;
        } else {
            more = rt__spin_for(&sp, LOCK_HOT_CHECK_NS);
        }
        if (!more)
            break;
    }
    /* Sleep: mark contended (2) and wait until we take it as 0 -> 2. */
    c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    while (c != 0) {
        rt__futex_wait(&l->v, 2, -1);
        c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
    }
}

void rt__lock_release(rt__lock *l)
{
    if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2)
        rt__futex_wake(&l->v, 1);
}

RT__NOINLINE int rt__errno(void)
{
    int *p = &errno;
    /* Opaque to the optimiser: no call of this function can be merged
     * with another or treated as const, even under LTO. */
    __asm__ volatile("" : "+r"(p));
    return -*p;
}

_Noreturn void rt__panic(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rt_g *g = rt__curg();
    if (g != NULL)
        fprintf(stderr, "fanfold runtime panic: %s\n[goroutine %llu]\n", msg,
                (unsigned long long)atomic_load_explicit(&g->id,
                                                         memory_order_relaxed));
    else
        fprintf(stderr, "fanfold runtime panic: %s\n", msg);
    fflush(stderr);
    abort(); /* panic path */
}

int64_t rt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * RT_SEC + ts.tv_nsec;
}

/* Per-thread generator state; 0 means "not seeded yet". A thread-local
 * value, never an address kept across a park. */
static __thread uint64_t tls_rand;

static uint64_t wyrand(void)
{
    if (RT__UNLIKELY(tls_rand == 0)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        tls_rand = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                   (uint64_t)(uintptr_t)&ts ^ 0x9E3779B97F4A7C15ull;
        tls_rand |= 1;
    }
    tls_rand += 0xa0761d6478bd642full;
    __uint128_t t = (__uint128_t)tls_rand * (tls_rand ^ 0xe7037ed1a0b428dbull);
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

uint32_t rt__rand32(void)
{
    return (uint32_t)wyrand();
}

uint32_t rt__randn(uint32_t n)
{
    /* Lemire's multiply-shift: unbiased enough for scheduling and select
     * (bias < n / 2^32). */
    return (uint32_t)(((uint64_t)(uint32_t)wyrand() * n) >> 32);
}
