/*
 * timer.c - timers: per-P heaps, rt_sleep's and select's timeouts, context
 * deadlines, and the public rt_timer (Go's time.Timer).
 *
 * Each P owns a binary min-heap of rt__timer pointers ordered by `when`,
 * guarded by the heap's rt__lock; th->next mirrors the root's `when` so
 * that schedulers can check "anything due?" with one relaxed load. A timer
 * is started on the heap of the P that starts it. Schedulers run the due
 * timers of their own P every time they look for work, and idle Ms run the
 * due timers of every P while stealing, so a P stuck in a long goroutine
 * does not hold its timers back. An M with nothing to do sleeps until the
 * earliest timer of any P; starting a timer earlier than a sleeping M's
 * timeout wakes it (rt__timer_added in sched.c).
 *
 * Timer states (t->status): IDLE -> PENDING (in a heap) -> RUNNING (its
 * callback runs, heap lock released) -> IDLE. Stopping a PENDING timer
 * removes it from its heap in O(log n). Stopping a RUNNING timer waits for
 * the callback to return, unless the callback itself is the one stopping
 * it, so the caller may free or reuse the timer's memory right after
 * rt__timer_stop() returns. t->heap changes only under the heap's lock.
 *
 * Callbacks run in scheduler context (no goroutine): they must not park.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <sched.h>
#include <stdlib.h>

enum { T_IDLE, T_PENDING, T_RUNNING };

/* The timer whose callback this thread is running (an M or sysmon), so
 * that a callback stopping its own timer does not wait for itself. A
 * value, never an address kept across a park: callbacks never park. */
static __thread rt__timer *tls_running;

void rt__timer_added(int64_t when); /* sched.c */

void rt__theap_init(rt__theap *th)
{
    th->h = NULL;
    th->len = th->cap = 0;
    atomic_store(&th->next, RT_FOREVER);
}

void rt__theap_destroy(rt__theap *th)
{
    for (int32_t i = 0; i < th->len; i++)
        atomic_store(&th->h[i]->heap, NULL);
    free(th->h);
    th->h = NULL;
    th->len = th->cap = 0;
}

void rt__timer_init(rt__timer *t, void (*fn)(rt__timer *t), void *arg)
{
    t->when = 0;
    t->fn = fn;
    t->arg = arg;
    atomic_init(&t->heap, NULL);
    t->idx = -1;
    atomic_init(&t->status, T_IDLE);
}

static void heap_set(rt__theap *th, int32_t i, rt__timer *t)
{
    th->h[i] = t;
    t->idx = i;
}

static void sift_up(rt__theap *th, int32_t i)
{
    rt__timer *t = th->h[i];
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (th->h[parent]->when <= t->when)
            break;
        heap_set(th, i, th->h[parent]);
        i = parent;
    }
    heap_set(th, i, t);
}

static void sift_down(rt__theap *th, int32_t i)
{
    rt__timer *t = th->h[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= th->len)
            break;
        if (c + 1 < th->len && th->h[c + 1]->when < th->h[c]->when)
            c++;
        if (t->when <= th->h[c]->when)
            break;
        heap_set(th, i, th->h[c]);
        i = c;
    }
    heap_set(th, i, t);
}

static void heap_update_next(rt__theap *th)
{
    atomic_store_explicit(&th->next, th->len ? th->h[0]->when : RT_FOREVER,
                          memory_order_relaxed);
}

/* Remove h[i]; heap lock held. */
static void heap_remove(rt__theap *th, int32_t i)
{
    rt__timer *t = th->h[i];
    th->len--;
    if (i != th->len) {
        rt__timer *moved = th->h[th->len];
        heap_set(th, i, moved);
        sift_down(th, i);
        sift_up(th, moved->idx);
    }
    t->idx = -1;
    atomic_store_explicit(&t->heap, NULL, memory_order_relaxed);
    heap_update_next(th);
}

void rt__timer_start(rt__timer *t, int64_t when)
{
    rt_m *m = rt__getm();
    if (m == NULL)
        rt__panic("rt__timer_start outside the scheduler");
    int st = atomic_load(&t->status);
    if (st == T_PENDING)
        rt__panic("rt__timer_start: timer already started");
    rt__theap *th = &m->p->timers;
    t->when = when;
    rt__lock_acquire(&th->lock);
    if (th->len == th->cap) {
        int32_t cap = th->cap ? th->cap * 2 : 64;
        rt__timer **h = realloc(th->h, sizeof *h * (size_t)cap);
        if (h == NULL)
            rt__panic("out of memory for the timer heap");
        th->h = h;
        th->cap = cap;
    }
    heap_set(th, th->len++, t);
    sift_up(th, th->len - 1);
    atomic_store_explicit(&t->heap, th, memory_order_relaxed);
    atomic_store(&t->status, T_PENDING);
    bool first = th->h[0] == t;
    heap_update_next(th);
    rt__lock_release(&th->lock);
    if (first)
        rt__timer_added(when);
}

bool rt__timer_stop(rt__timer *t)
{
    for (;;) {
        int st = atomic_load(&t->status);
        if (st == T_IDLE)
            return false;
        if (st == T_RUNNING) {
            if (tls_running == t)
                return false; /* stopped from its own callback */
            sched_yield();
            continue;
        }
        rt__theap *th = atomic_load_explicit(&t->heap, memory_order_relaxed);
        if (th == NULL)
            continue; /* being fired: status moves to RUNNING */
        rt__lock_acquire(&th->lock);
        if (atomic_load_explicit(&t->heap, memory_order_relaxed) != th) {
            rt__lock_release(&th->lock);
            continue;
        }
        heap_remove(th, t->idx);
        atomic_store(&t->status, T_IDLE);
        rt__lock_release(&th->lock);
        return true;
    }
}

int64_t rt__timers_run(rt__theap *th, int64_t now)
{
    for (;;) {
        rt__lock_acquire(&th->lock);
        if (th->len == 0 || th->h[0]->when > now) {
            int64_t next = th->len ? th->h[0]->when : RT_FOREVER;
            rt__lock_release(&th->lock);
            return next;
        }
        rt__timer *t = th->h[0];
        /* status before heap: a stopper that sees heap == NULL spins
         * until status says RUNNING, then waits for the callback. */
        atomic_store(&t->status, T_RUNNING);
        heap_remove(th, 0);
        rt__lock_release(&th->lock);
        rt__timer *outer = tls_running;
        tls_running = t;
        t->fn(t);
        tls_running = outer;
        int running = T_RUNNING;
        atomic_compare_exchange_strong(&t->status, &running, T_IDLE);
    }
}

int64_t rt__timers_next(void)
{
    int64_t next = RT_FOREVER;
    for (int i = 0; i < rt__s.nprocs; i++) {
        int64_t w = atomic_load_explicit(&rt__s.ps[i].timers.next,
                                         memory_order_relaxed);
        if (w < next)
            next = w;
    }
    return next;
}

/* ------------------------------------------------------ public rt_timer */

struct rt_timer {
    rt__timer t;
    rt_chan *c; /* capacity 1: the fire time */
};

static void timer_fire(rt__timer *t)
{
    rt_timer *tm = t->arg;
    int64_t now = rt_now();
    /* Never blocks: a value not yet received is simply kept. */
    (void)rt_chan_trysend(tm->c, &now);
}

/* Caller owns the result: rt_timer_free(). NULL when out of memory. */
rt_timer *rt_timer_new(int64_t d)
{
    rt_timer *tm = malloc(sizeof *tm);
    if (tm == NULL)
        return NULL;
    tm->c = rt_chan_make(sizeof(int64_t), 1);
    if (tm->c == NULL) {
        free(tm);
        return NULL;
    }
    rt__timer_init(&tm->t, timer_fire, tm);
    rt__timer_start(&tm->t, rt__deadline_after(d));
    return tm;
}

rt_chan *rt_timer_chan(rt_timer *tm)
{
    return tm->c;
}

/* Like Go 1.23: after stop or reset no stale fire time is left in the
 * channel. */
static void drain(rt_timer *tm)
{
    int64_t v;
    while (rt_chan_tryrecv(tm->c, &v, NULL))
        ;
}

bool rt_timer_stop(rt_timer *tm)
{
    bool was = rt__timer_stop(&tm->t);
    drain(tm);
    return was;
}

bool rt_timer_reset(rt_timer *tm, int64_t d)
{
    bool was = rt__timer_stop(&tm->t);
    drain(tm);
    rt__timer_start(&tm->t, rt__deadline_after(d));
    return was;
}

void rt_timer_free(rt_timer *tm)
{
    if (tm == NULL)
        return;
    rt__timer_stop(&tm->t);
    rt_chan_free(tm->c);
    free(tm);
}
