/*
 * sync.c - Mutex, RWMutex, WaitGroup and Once for goroutines (Go's sync).
 *
 * Every blocking path parks the goroutine with rt__park(); none blocks the
 * thread except for the few instructions an rt__lock is held. The struct
 * layouts are fixed by rt.h; here is how the fields are used.
 *
 * Wait queues. rt__waitq {head, tail} is a singly linked FIFO of struct
 * waiter records. A record lives on the stack of the goroutine it describes
 * and is valid only while that goroutine is parked: a waker unlinks it under
 * the object's lock, reads what it needs, publishes its verdict in
 * w->granted (release) and only then calls rt__ready(); after that the
 * record must not be touched. The parked goroutine re-reads w->granted
 * (acquire) when it resumes, which also orders the waker's writes before
 * the waiter's reads for ThreadSanitizer.
 *
 * Mutex. m->state packs, as in Go's sync.Mutex:
 *   bit 0  LOCKED    the mutex is held;
 *   bit 1  WOKEN     a goroutine is awake and trying to take the lock (a
 *                    spinner or a waiter just woken), so Unlock need not
 *                    wake another;
 *   bit 2  STARVING  starvation mode: ownership is handed directly to the
 *                    head of the queue; newcomers neither barge nor spin;
 *   bits 3..       number of queued waiters.
 * Invariants:
 *   - the waiter count changes only under m->lk, together with the queue,
 *     so under m->lk it equals the queue length;
 *   - STARVING implies LOCKED and at least one waiter (the handoff keeps
 *     LOCKED set and clears STARVING when it takes the last waiter).
 * Fast paths are a single CAS each: Lock 0 -> LOCKED, Unlock LOCKED -> 0.
 * Normal mode is Go's: a woken waiter competes with newcomers (barging),
 * which is fast but unfair; a waiter that has waited more than 1 ms and
 * still loses switches the mutex to starvation mode, where Unlock hands the
 * lock to the queue head without ever clearing LOCKED. The mode ends when
 * the handed-off waiter waited less than 1 ms or was the last one.
 * Lost wakeups are impossible: a waiter adds itself to the count with a CAS
 * that requires LOCKED (or STARVING) set, under m->lk; the Unlock that
 * clears LOCKED later sees the count and takes m->lk first, which the
 * waiter only releases once parked (rt__park's unlockf).
 * Unlock touches *m last with the atomic that clears LOCKED (or, in
 * starvation mode, never clears it): it picks the waiter to wake while it
 * still owns the mutex. So, as with pthread mutexes, a goroutine that takes
 * the mutex after us may free it as soon as it unlocked it.
 *
 * RWMutex. Every field is under m->lk (Go packs them into atomics; our
 * layout is fixed and simpler), so releasing m->lk is each call's last
 * access to *m. A reader enters when no writer holds the lock and no
 * writer waits (wwait == 0), so a stream of readers cannot starve a writer.
 * When the last reader leaves, the first queued writer gets the lock. When
 * a writer leaves, every queued reader is admitted at once, else the next
 * writer: readers and writers alternate under contention. Granted waiters
 * are counted in before they are woken (readers += n, writer = true), so
 * they return from the park owning the lock.
 *
 * WaitGroup. wg->count packs the counter (high 32 bits) and the number of
 * parked waiters (low 32 bits), like Go's state word. A waiter, under
 * wg->lk, CASes the waiter count up only while the counter is not zero,
 * queues and parks; the Add that brings the counter to zero sees the
 * waiter count in the same atomic and, only if it is not zero, takes
 * wg->lk and wakes everyone queued. So a waiter either sees zero or is on
 * the queue in time, and an Add with no waiter never touches the
 * WaitGroup after its atomic add (the object may be freed by then). As in
 * Go, reusing a WaitGroup (a new Add from zero) must happen after every
 * previous Wait returned; the counter is limited to 2^31 - 1.
 *
 * Once: o->done is read with one acquire load on the fast path; the slow
 * path serialises callers on o->m and sets done (release) after fn returns,
 * so every caller returns only after fn has finished.
 *
 * Lock order: rt_mutex.lk, rt_rwmutex.lk, rt_waitgroup.lk are leaves among
 * sync locks; each is held only for queue manipulation, and released by
 * rt__park's unlockf when parking. rt__ready() (scheduler lock) may be
 * called with it held or not; we call it after releasing.
 */
#include "rt_internal.h"

#include <errno.h>
#include <stdint.h>

/* ------------------------------------------------------------ wait queues */

struct waiter {
    struct waiter *next;
    rt_g *g;
    int64_t start;            /* Mutex: when it first queued (rt_now) */
    _Atomic uint32_t granted; /* set by the waker before rt__ready */
};

static void waiter_init(struct waiter *w)
{
    w->next = NULL;
    w->g = rt__curg();
    w->start = 0;
    atomic_init(&w->granted, 0);
}

static void wq_push_back(rt__waitq *q, struct waiter *w)
{
    w->next = NULL;
    if (q->tail)
        ((struct waiter *)q->tail)->next = w;
    else
        q->head = w;
    q->tail = w;
}

static void wq_push_front(rt__waitq *q, struct waiter *w)
{
    w->next = q->head;
    q->head = w;
    if (!q->tail)
        q->tail = w;
}

static struct waiter *wq_pop(rt__waitq *q)
{
    struct waiter *w = q->head;
    if (w) {
        q->head = w->next;
        if (!q->head)
            q->tail = NULL;
        w->next = NULL;
    }
    return w;
}

/* Detach the whole queue; the caller wakes the list with wake_list(). */
static struct waiter *wq_take_all(rt__waitq *q)
{
    struct waiter *w = q->head;
    q->head = q->tail = NULL;
    return w;
}

/* Grant and wake one waiter. Its record is dead once rt__ready is called. */
static void wake(struct waiter *w)
{
    rt_g *g = w->g;
    atomic_store_explicit(&w->granted, 1, memory_order_release);
    rt__ready(g);
}

static void wake_list(struct waiter *w)
{
    while (w) {
        struct waiter *next = w->next;
        wake(w);
        w = next;
    }
}

/* unlockf for rt__park: release the object's lock once G is switched out. */
static bool unlock_lk(rt_g *g, void *arg)
{
    (void)g;
    rt__lock_release(arg);
    return true;
}

/* Park on a queue the caller has already joined; lk is released by g0. */
static void park_on(rt__lock *lk, struct waiter *w, const char *reason)
{
    rt__park(unlock_lk, lk, reason);
    if (!atomic_load_explicit(&w->granted, memory_order_acquire))
        rt__panic("sync: %s: goroutine resumed without a wakeup", reason);
}

/* ------------------------------------------------------------------ Mutex */

enum {
    MUTEX_LOCKED = RT__MUTEX_LOCKED, /* rt.h's inline fast paths */
    MUTEX_WOKEN = 2u,
    MUTEX_STARVING = 4u,
    MUTEX_WAITER_SHIFT = 3,
    MUTEX_WAITER = 1u << MUTEX_WAITER_SHIFT,
};

/* Go's starvationThresholdNs. */
#define MUTEX_STARVE_NS (1 * RT_MSEC)
/* How long Lock spins before queueing, in all: ~10 us lets a contended
 * mutex change hands between two Ps without parking, on any CPU: the
 * budget is time, not a count of PAUSEs (see rt__spin). While spinning,
 * the state word is looked at only every MUTEX_CHECK_NS: each look pulls
 * the cache line away from the holder, whose next Lock and Unlock then
 * miss. Looking every ~300 ns (16 PAUSEs here) cost mutex_contended_2g
 * 30 ns/op against Go's 16; every 1 us, 15-18 ns (Go looks every 30
 * PAUSEs, 4 times). Spinning stops early when this P has other work
 * (rt__can_spin). */
#define MUTEX_SPIN_NS (10 * RT_USEC)
#define MUTEX_CHECK_NS (1 * RT_USEC)

static inline uint32_t nwaiters(uint32_t s)
{
    return s >> MUTEX_WAITER_SHIFT;
}

static bool mutex_can_spin(bool budget_left)
{
    /* Spinning only helps when the holder runs on another P, and must not
     * keep runnable goroutines of this P waiting (Go's canSpin). */
    return budget_left && rt__can_spin();
}

/*
 * Slow path of Lock, after rt.h's rt_mutex_lock failed its CAS: spin a
 * little while the holder may be about to leave, else queue (FIFO on the
 * first wait, at the front after a wakeup, as Go) and park. Returns
 * owning the lock.
 */
void rt__mutex_lock_slow(rt_mutex *m)
{
    struct waiter w;
    bool starving = false, awoke = false, spin_left = true;
    rt__spin sp = RT__SPIN(MUTEX_SPIN_NS);
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);

    waiter_init(&w);
    for (;;) {
        /* Locked in normal mode: spin, and tell Unlock not to wake anyone
         * since we are awake and will take the lock. */
        if ((old & (MUTEX_LOCKED | MUTEX_STARVING)) == MUTEX_LOCKED &&
            mutex_can_spin(spin_left)) {
            if (!awoke && !(old & MUTEX_WOKEN) && nwaiters(old) != 0 &&
                atomic_compare_exchange_weak_explicit(
                    &m->state, &old, old | MUTEX_WOKEN, memory_order_relaxed,
                    memory_order_relaxed))
                awoke = true;
            spin_left = rt__spin_for(&sp, MUTEX_CHECK_NS);
            old = atomic_load_explicit(&m->state, memory_order_relaxed);
            continue;
        }
        if (!(old & (MUTEX_LOCKED | MUTEX_STARVING))) {
            uint32_t new = old | MUTEX_LOCKED;
            if (awoke)
                new &= ~MUTEX_WOKEN;
            if (atomic_compare_exchange_weak_explicit(&m->state, &old, new,
                                                      memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }

        /* Queue. Re-check under lk: the count may only change under it. */
        rt__lock_acquire(&m->lk);
        old = atomic_load_explicit(&m->state, memory_order_relaxed);
        if (!(old & (MUTEX_LOCKED | MUTEX_STARVING))) {
            rt__lock_release(&m->lk);
            continue;
        }
        uint32_t new = old + MUTEX_WAITER;
        if (awoke)
            new &= ~MUTEX_WOKEN;
        if (starving)
            new |= MUTEX_STARVING; /* old has LOCKED here */
        if (!atomic_compare_exchange_strong_explicit(&m->state, &old, new,
                                                     memory_order_relaxed,
                                                     memory_order_relaxed)) {
            rt__lock_release(&m->lk);
            continue;
        }
        awoke = false;
        atomic_store_explicit(&w.granted, 0, memory_order_relaxed);
        if (w.start == 0) {
            w.start = rt_now();
            wq_push_back(&m->wq, &w);
        } else {
            wq_push_front(&m->wq, &w);
        }
        park_on(&m->lk, &w, "sync.Mutex.Lock");

        /* Woken. In starvation mode the lock was handed to us. */
        if (w.g == NULL)
            return;
        starving = starving || rt_now() - w.start > MUTEX_STARVE_NS;
        awoke = true; /* the waker set WOKEN for us */
        sp = RT__SPIN(MUTEX_SPIN_NS);
        spin_left = true;
        old = atomic_load_explicit(&m->state, memory_order_relaxed);
    }
}

bool rt_mutex_trylock(rt_mutex *m)
{
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);
    if (old & (MUTEX_LOCKED | MUTEX_STARVING))
        return false;
    return atomic_compare_exchange_strong_explicit(
        &m->state, &old, old | MUTEX_LOCKED, memory_order_acquire,
        memory_order_relaxed);
}

/* Starvation mode: pass ownership to the queue head; LOCKED stays set. */
static void mutex_handoff(rt_mutex *m)
{
    rt__lock_acquire(&m->lk);
    struct waiter *w = wq_pop(&m->wq);
    if (!w)
        rt__panic("sync: mutex in starvation mode without waiters");
    bool short_wait = rt_now() - w->start < MUTEX_STARVE_NS;
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);
    uint32_t new;
    do {
        new = old - MUTEX_WAITER;
        if (short_wait || nwaiters(new) == 0)
            new &= ~MUTEX_STARVING;
    } while (!atomic_compare_exchange_weak_explicit(
        &m->state, &old, new, memory_order_release, memory_order_relaxed));
    rt__lock_release(&m->lk);
    /* w->g == NULL tells the waiter it owns the lock; wake() reads g
     * first. */
    rt_g *g = w->g;
    w->g = NULL;
    atomic_store_explicit(&w->granted, 1, memory_order_release);
    rt__ready(g);
}

/*
 * Unlock with waiters or flags set (rt.h's rt_mutex_unlock failed its
 * CAS). While waiters need a wakeup we pick one
 * (count - 1, WOKEN) still holding LOCKED, and clear LOCKED as the very
 * last access to *m: from then on another goroutine may take the mutex,
 * release it and free it (the pattern "lock; last = --refs == 0; unlock;
 * if (last) free" must work, as it does with pthread mutexes).
 */
void rt__mutex_unlock_slow(rt_mutex *m)
{
    struct waiter *w = NULL;
    rt_g *g = NULL;
    uint32_t old = atomic_load_explicit(&m->state, memory_order_relaxed);
    for (;;) {
        if (!(old & MUTEX_LOCKED))
            rt__panic("sync: unlock of unlocked mutex %p", (void *)m);
        if (old & MUTEX_STARVING) {
            mutex_handoff(m); /* LOCKED stays set: ends our access */
            break;
        }
        if (!w && nwaiters(old) != 0 && !(old & MUTEX_WOKEN)) {
            rt__lock_acquire(&m->lk);
            old = atomic_load_explicit(&m->state, memory_order_relaxed);
            while (nwaiters(old) != 0 &&
                   !(old & (MUTEX_WOKEN | MUTEX_STARVING))) {
                if (atomic_compare_exchange_weak_explicit(
                        &m->state, &old, (old - MUTEX_WAITER) | MUTEX_WOKEN,
                        memory_order_relaxed, memory_order_relaxed)) {
                    w = wq_pop(&m->wq);
                    g = w->g;
                    break;
                }
            }
            rt__lock_release(&m->lk);
            old = atomic_load_explicit(&m->state, memory_order_relaxed);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(
                &m->state, &old, old & ~MUTEX_LOCKED, memory_order_release,
                memory_order_relaxed))
            break;
    }
    if (w) {
        /* w is parked until rt__ready, so its record is still valid. */
        atomic_store_explicit(&w->granted, 1, memory_order_release);
        rt__ready(g);
    }
}

/* ---------------------------------------------------------------- RWMutex */

void rt_rwmutex_rlock(rt_rwmutex *m)
{
    rt__lock_acquire(&m->lk);
    if (!m->writer && m->wwait == 0) {
        m->readers++;
        rt__lock_release(&m->lk);
        return;
    }
    struct waiter w;
    waiter_init(&w);
    wq_push_back(&m->rq, &w);
    park_on(&m->lk, &w, "sync.RWMutex.RLock");
}

/* Give the lock to the first queued writer; m->lk held, lock free. */
static struct waiter *rw_grant_writer(rt_rwmutex *m)
{
    struct waiter *w = wq_pop(&m->wq);
    if (w) {
        m->wwait--;
        m->writer = true;
    }
    return w;
}

void rt_rwmutex_runlock(rt_rwmutex *m)
{
    struct waiter *w = NULL;

    rt__lock_acquire(&m->lk);
    if (m->readers <= 0) {
        rt__lock_release(&m->lk);
        rt__panic("sync: RUnlock of unlocked RWMutex %p", (void *)m);
    }
    if (--m->readers == 0)
        w = rw_grant_writer(m);
    rt__lock_release(&m->lk);
    if (w)
        wake(w);
}

void rt_rwmutex_lock(rt_rwmutex *m)
{
    rt__lock_acquire(&m->lk);
    if (!m->writer && m->readers == 0) {
        m->writer = true;
        rt__lock_release(&m->lk);
        return;
    }
    struct waiter w;
    waiter_init(&w);
    m->wwait++;
    wq_push_back(&m->wq, &w);
    park_on(&m->lk, &w, "sync.RWMutex.Lock");
}

void rt_rwmutex_unlock(rt_rwmutex *m)
{
    struct waiter *readers, *w = NULL;

    rt__lock_acquire(&m->lk);
    if (!m->writer) {
        rt__lock_release(&m->lk);
        rt__panic("sync: Unlock of unlocked RWMutex %p", (void *)m);
    }
    m->writer = false;
    readers = wq_take_all(&m->rq);
    for (w = readers; w; w = w->next)
        m->readers++;
    if (!readers)
        w = rw_grant_writer(m);
    rt__lock_release(&m->lk);
    wake_list(readers);
    if (w)
        wake(w);
}

/* -------------------------------------------------------------- WaitGroup */

/*
 * wg->count packs, as Go's WaitGroup.state: the counter in the high 32
 * bits (signed), the number of parked waiters in the low 32 bits. An Add
 * that brings the counter to zero with no waiter touches nothing else, so
 * a Wait that returned at once may free the WaitGroup right away; with
 * waiters it is safe to use wg->lk, since they cannot return before we
 * wake them.
 */
#define WG_COUNTER(s) ((int32_t)((uint64_t)(s) >> 32))
#define WG_WAITERS(s) ((uint32_t)(uint64_t)(s))

void rt_waitgroup_add(rt_waitgroup *wg, int64_t delta)
{
    if (RT__UNLIKELY(delta > INT32_MAX || delta < -INT32_MAX))
        rt__panic("sync: WaitGroup delta %lld out of range", (long long)delta);
    int64_t d = (int64_t)((uint64_t)delta << 32);
    int64_t s =
        atomic_fetch_add_explicit(&wg->count, d, memory_order_acq_rel) + d;
    int64_t v = (int64_t)WG_COUNTER(s - d) + delta;
    if (RT__UNLIKELY(v < 0))
        rt__panic("sync: negative WaitGroup counter (%lld)", (long long)v);
    if (RT__UNLIKELY(v > INT32_MAX))
        rt__panic("sync: WaitGroup counter overflow");
    if (v != 0 || WG_WAITERS(s) == 0)
        return;

    /* Counter zero, waiters parked (or about to, under lk): wake them. */
    rt__lock_acquire(&wg->lk);
    struct waiter *all = wq_take_all(&wg->wq);
    int64_t n = 0;
    for (struct waiter *w = all; w; w = w->next)
        n++;
    atomic_fetch_sub_explicit(&wg->count, n, memory_order_relaxed);
    rt__lock_release(&wg->lk);
    wake_list(all);
}

void rt_waitgroup_done(rt_waitgroup *wg)
{
    rt_waitgroup_add(wg, -1);
}

void rt_waitgroup_wait(rt_waitgroup *wg)
{
    int64_t s = atomic_load_explicit(&wg->count, memory_order_acquire);
    if (WG_COUNTER(s) == 0)
        return;
    rt__lock_acquire(&wg->lk);
    s = atomic_load_explicit(&wg->count, memory_order_acquire);
    do {
        if (WG_COUNTER(s) == 0) {
            rt__lock_release(&wg->lk);
            return;
        }
    } while (!atomic_compare_exchange_weak_explicit(
        &wg->count, &s, s + 1, memory_order_acquire, memory_order_acquire));
    struct waiter w;
    waiter_init(&w);
    wq_push_back(&wg->wq, &w);
    park_on(&wg->lk, &w, "sync.WaitGroup.Wait");
}

/* ------------------------------------------------------------------- Once */

static RT__NOINLINE void once_slow(rt_once *o, void (*fn)(void *), void *arg)
{
    rt_mutex_lock(&o->m);
    if (!atomic_load_explicit(&o->done, memory_order_relaxed)) {
        fn(arg);
        atomic_store_explicit(&o->done, 1, memory_order_release);
    }
    rt_mutex_unlock(&o->m);
}

void rt_once_do(rt_once *o, void (*fn)(void *arg), void *arg)
{
    if (RT__LIKELY(atomic_load_explicit(&o->done, memory_order_acquire)))
        return;
    once_slow(o, fn, arg);
}
