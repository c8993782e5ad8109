/*
 * sched.c - goroutines and the G/M/P scheduler.
 *
 * G  a goroutine: a stackful coroutine (stack.c) switched by switch_*.S.
 * P  a processor: the right to run Gs, with a local run queue. There are
 *    rt_procs() of them (GOMAXPROCS): $FANFOLD_PROCS, rt_set_procs(), or
 *    the online CPUs.
 * M  an OS thread. Each P has one dedicated M for the life of rt_run();
 *    blocking C calls run on a separate thread pool (blocking.c) instead
 *    of handing the P to a fresh M as Go does, so an M never loses its P.
 *
 * Every M runs schedule() on its own thread stack ("g0"). Running a G is a
 * switch from g0 to the G; a G that parks, yields or exits switches back to
 * g0 with an action (g->switch_action), and g0 carries it out *after* the
 * G's registers are saved. That ordering is what makes park race-free:
 *
 *   rt__park(unlockf): G sets state PARKING and switches to g0; g0 calls
 *   unlockf (which releases the wait-queue lock), then CASes the state
 *   PARKING -> WAITING. A waker calling rt__ready() sees WAITING and
 *   queues the G, or sees PARKING (it won the race with the CAS) and
 *   marks it PARKING_READY, in which case g0 keeps running the G. A ready
 *   of a G in any other state is a bug and panics, as in Go.
 *
 * Run queues (Go's runqput/runqget/runqsteal): per P a 256-slot ring,
 * written at the tail by the owner only, consumed at the head by CAS by
 * the owner and by thieves; plus runnext, a slot for the G readied last,
 * so a sender and its receiver stay on one P and hand off in a few
 * nanoseconds. A full ring spills half of itself to the global queue
 * (a list under sched.lock). To stop a ping-pong pair from starving the
 * ring, runnext loses to the ring after 32 picks in a row; the global
 * queue is polled every 61 schedule ticks. A thief takes another P's
 * runnext only when that P's M has not switched for a while (it is stuck
 * in one G); otherwise the pair would be split across two Ps, where every
 * hand-off moves cache lines between cores.
 *
 * Idle Ms: an M that finds no work becomes "spinning" (at most half the
 * busy Ms spin at once) and tries to steal half of another P's ring for a
 * few microseconds; then it puts itself on the idle list and sleeps until
 * woken or until the earliest timer of any P: the first such M blocks in
 * epoll as the netpoller (see netpoll.c), the others on their futex word.
 * Wake-up uses Dekker-style ordering with sequentially consistent atomics: a
 * producer publishes work then reads nidle; an M going idle publishes
 * nidle then re-reads every queue; one of them sees the other, so no
 * wake-up is lost. rt__wakep() wakes one idle M unless one is spinning
 * already (it will find the work), which keeps futex calls off the
 * ping-pong path. An idle process has every M asleep: no CPU.
 *
 * Spawn back-pressure: a goroutine that fills its P's ring with new
 * goroutines parks until the ring drains to a quarter (p->spawn_waiters).
 * Go would spill to the global queue and go on, which is cheap with 2 KiB
 * stacks; here every live goroutine holds a stack page, so a loop that
 * spawns a million short goroutines would otherwise hold a million pages.
 *
 * No preemption: a goroutine runs until it blocks, yields or exits.
 *
 * Lock order: sched.lock and glock are leaves; neither is held while
 * calling out. Timer heap locks (timer.c) are never held while taking
 * sched.lock.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef RT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef RT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

rt__sched rt__s;

/* The M running on this thread (NULL outside the scheduler). Read only
 * through the noinline accessors so that no caller caches it across a
 * park: a goroutine may resume on another thread. */
static __thread rt_m *tls_m;

void (*rt__test_hook_m_sleep)(void);

/* Procs requested by rt_set_procs(); read by rt_run(). */
static int requested_procs;

RT__NOINLINE rt_m *rt__getm(void)
{
    return tls_m;
}

RT__NOINLINE rt_g *rt__curg(void)
{
    rt_m *m = tls_m;
    return m != NULL ? atomic_load_explicit(&m->curg, memory_order_relaxed)
                     : NULL;
}

void rt_set_procs(int procs)
{
    requested_procs = procs > 0 ? procs : 0;
}

int rt_procs(void)
{
    return rt__s.nprocs;
}

int rt_proc_id(void)
{
    rt_m *m = rt__getm();
    return m != NULL ? m->p->id : 0;
}

static int default_procs(void)
{
    if (requested_procs > 0)
        return requested_procs;
    const char *env = getenv("FANFOLD_PROCS");
    if (env != NULL && *env != '\0') {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n > 0 && n <= 1024)
            return (int)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ------------------------------------------------------ context switch */

/* g0 -> g. Sanitizer fiber annotations around the raw switch. */
static void switch_to_g(rt_m *m, rt_g *g)
{
#ifdef RT_ASAN
    __sanitizer_start_switch_fiber(&m->asan_fake_stack, g->stack_lo,
                                   g->stack_size);
#endif
#ifdef RT_TSAN
    __tsan_switch_to_fiber(g->tsan_fiber, 0);
#endif
    if (g->regs.sp != NULL)
        rt__switch(&m->g0regs, &g->regs);
    else
        rt__switch_start(&m->g0regs, rt__stack_top(g));
#ifdef RT_ASAN
    __sanitizer_finish_switch_fiber(m->asan_fake_stack, NULL, NULL);
#endif
}

/* g -> g0, with an action for g0 to carry out. */
static void switch_to_g0(rt_g *g, int action)
{
    rt_m *m = rt__getm();
    g->switch_action = action;
#ifdef RT_ASAN
    /* An exiting goroutine's fake stack is destroyed (NULL save slot). */
    __sanitizer_start_switch_fiber(action == RT__ACT_EXIT ? NULL
                                                          : &g->asan_fake_stack,
                                   m->g0_stack_lo, m->g0_stack_size);
#endif
#ifdef RT_TSAN
    __tsan_switch_to_fiber(m->tsan_fiber, 0);
#endif
    rt__switch(&g->regs, &m->g0regs);
#ifdef RT_ASAN
    __sanitizer_finish_switch_fiber(g->asan_fake_stack, NULL, NULL);
#endif
}

/* ------------------------------------------------------------ run queues */

static void globrunqput_batch(rt_g *head, rt_g *tail, int n)
{
    rt__lock_acquire(&rt__s.lock);
    tail->schednext = NULL;
    if (rt__s.gq_tail != NULL)
        rt__s.gq_tail->schednext = head;
    else
        rt__s.gq_head = head;
    rt__s.gq_tail = tail;
    atomic_fetch_add(&rt__s.gq_size, n);
    rt__lock_release(&rt__s.lock);
}

void rt__globrunqput(rt_g *g)
{
    globrunqput_batch(g, g, 1);
}

/* Take a batch from the global queue into p; returns one G to run. */
static rt_g *globrunqget(rt_p *p, int max)
{
    if (atomic_load(&rt__s.gq_size) == 0)
        return NULL;
    rt__lock_acquire(&rt__s.lock);
    int size = atomic_load(&rt__s.gq_size);
    if (size == 0) {
        rt__lock_release(&rt__s.lock);
        return NULL;
    }
    int n = size / rt__s.nprocs + 1;
    if (n > size)
        n = size;
    if (max > 0 && n > max)
        n = max;
    if (n > RT__RUNQ_SIZE / 2)
        n = RT__RUNQ_SIZE / 2;
    rt_g *first = rt__s.gq_head;
    rt__s.gq_head = first->schednext;
    rt_g *batch = rt__s.gq_head;
    for (int i = 1; i < n; i++)
        rt__s.gq_head = rt__s.gq_head->schednext;
    if (rt__s.gq_head == NULL)
        rt__s.gq_tail = NULL;
    atomic_fetch_sub(&rt__s.gq_size, n);
    rt__lock_release(&rt__s.lock);

    /* Owner-only tail: the ring has room for RUNQ_SIZE/2 at least?  Not
     * necessarily; put what fits, the rest back to the global queue. */
    uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
    for (int i = 1; i < n; i++) {
        rt_g *g = batch;
        batch = batch->schednext;
        uint32_t h = atomic_load_explicit(&p->runqhead, memory_order_acquire);
        if (t - h < RT__RUNQ_SIZE) {
            atomic_store_explicit(&p->runq[t % RT__RUNQ_SIZE], g,
                                  memory_order_relaxed);
            t++;
        } else {
            rt__globrunqput(g);
        }
    }
    atomic_store_explicit(&p->runqtail, t, memory_order_release);
    first->schednext = NULL;
    return first;
}

/* Ring full: move half of it plus g to the global queue. */
static bool runqputslow(rt_p *p, rt_g *g, uint32_t h, uint32_t t)
{
    enum { N = RT__RUNQ_SIZE / 2 };
    rt_g *batch[N + 1];
    uint32_t n = (t - h) / 2;
    if (n != N)
        rt__panic("runqputslow: queue is not full");
    for (uint32_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&p->runq[(h + i) % RT__RUNQ_SIZE],
                                        memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&p->runqhead, &h, h + n,
                                                 memory_order_release,
                                                 memory_order_relaxed))
        return false;
    batch[n] = g;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->schednext = batch[i + 1];
    globrunqput_batch(batch[0], batch[n], (int)n + 1);
    return true;
}

/* Put g on p's queue (owner only); next = into runnext. */
static void runqput(rt_p *p, rt_g *g, bool next)
{
    if (next) {
        /* An exchange, not a plain store even when the slot is empty:
         * on x86 the locked instruction also orders this store before
         * rt__wakep's read of nidle, the producer's half of the Dekker pair
         * with an M going idle (see the top of the file). With a plain
         * store both could miss the other: the M sleeps and the G waits
         * for its busy P. */
        rt_g *old =
            atomic_exchange_explicit(&p->runnext, g, memory_order_acq_rel);
        if (old == NULL)
            return;
        g = old; /* the displaced one goes to the ring */
    }
    for (;;) {
        uint32_t h = atomic_load_explicit(&p->runqhead, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
        if (t - h < RT__RUNQ_SIZE) {
            atomic_store_explicit(&p->runq[t % RT__RUNQ_SIZE], g,
                                  memory_order_relaxed);
            atomic_store_explicit(&p->runqtail, t + 1, memory_order_release);
            return;
        }
        if (runqputslow(p, g, h, t))
            return;
    }
}

static rt_g *runqget_ring(rt_p *p)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&p->runqhead, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
        if (t == h)
            return NULL;
        rt_g *g = atomic_load_explicit(&p->runq[h % RT__RUNQ_SIZE],
                                       memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&p->runqhead, &h, h + 1,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return g;
    }
}

/* Owner: runnext first (but not forever), then the ring. */
static rt_g *runqget(rt_p *p)
{
    if (p->runnext_streak < 32 ||
        atomic_load_explicit(&p->runqtail, memory_order_relaxed) ==
            atomic_load_explicit(&p->runqhead, memory_order_relaxed)) {
        rt_g *next = atomic_load_explicit(&p->runnext, memory_order_relaxed);
        if (next != NULL && atomic_compare_exchange_strong_explicit(
                                &p->runnext, &next, NULL, memory_order_acquire,
                                memory_order_relaxed)) {
            p->runnext_streak++;
            return next;
        }
    }
    p->runnext_streak = 0;
    return runqget_ring(p);
}

static uint32_t runq_len(rt_p *p)
{
    return atomic_load_explicit(&p->runqtail, memory_order_relaxed) -
           atomic_load_explicit(&p->runqhead, memory_order_relaxed);
}

static bool runq_empty(rt_p *p)
{
    return atomic_load(&p->runqhead) == atomic_load(&p->runqtail) &&
           atomic_load(&p->runnext) == NULL;
}

/*
 * Take victim's runnext, but only from a P that is not about to run it:
 * its M has not switched for NEXT_STALL_NS (it is stuck in one G), as
 * seen by spinning Ms looking now and then (stall_since is when a thief
 * first saw the current count, so the stall is never overestimated). Go
 * sleeps 3 us before it takes a runnext; going by the victim's switches
 * instead leaves two goroutines that hand work to each other (a
 * producer and its consumer, a ping-pong) on one P, where the hand-off
 * costs no cache-line transfers, and still takes a G from behind one
 * that computes for a while.
 */
#define NEXT_STALL_NS (20 * RT_USEC)

static rt_g *runqsteal_next(rt_p *victim)
{
    if (atomic_load_explicit(&victim->runnext, memory_order_relaxed) == NULL)
        return NULL;
    uint32_t sw =
        atomic_load_explicit(&victim->m->switches, memory_order_relaxed);
    int64_t now = rt_now();
    if (sw !=
        atomic_load_explicit(&victim->stall_switches, memory_order_relaxed)) {
        atomic_store_explicit(&victim->stall_switches, sw,
                              memory_order_relaxed);
        atomic_store_explicit(&victim->stall_since, now, memory_order_relaxed);
        return NULL;
    }
    if (now - atomic_load_explicit(&victim->stall_since, memory_order_relaxed) <
        NEXT_STALL_NS)
        return NULL;
    rt_g *next = atomic_load(&victim->runnext);
    if (next != NULL &&
        atomic_compare_exchange_strong(&victim->runnext, &next, NULL))
        return next;
    return NULL;
}

/* Steal half of victim's ring into p's ring, which must be empty (the
 * stolen batch is written at p's tail without a capacity check, as in
 * Go); returns one G. */
static rt_g *runqsteal(rt_p *p, rt_p *victim, bool take_next)
{
    uint32_t t = atomic_load_explicit(&p->runqtail, memory_order_relaxed);
    if (t != atomic_load_explicit(&p->runqhead, memory_order_acquire))
        return NULL; /* not empty: the caller takes from its own ring */
    for (;;) {
        uint32_t h =
            atomic_load_explicit(&victim->runqhead, memory_order_acquire);
        uint32_t vt =
            atomic_load_explicit(&victim->runqtail, memory_order_acquire);
        uint32_t n = vt - h;
        n = n - n / 2;
        if (n == 0)
            return take_next ? runqsteal_next(victim) : NULL;
        if (n > RT__RUNQ_SIZE / 2) /* torn read of head/tail; retry */
            continue;
        for (uint32_t i = 0; i < n; i++) {
            rt_g *g = atomic_load_explicit(
                &victim->runq[(h + i) % RT__RUNQ_SIZE], memory_order_relaxed);
            atomic_store_explicit(&p->runq[(t + i) % RT__RUNQ_SIZE], g,
                                  memory_order_relaxed);
        }
        if (!atomic_compare_exchange_strong_explicit(
                &victim->runqhead, &h, h + n, memory_order_acq_rel,
                memory_order_relaxed))
            continue;
        n--;
        rt_g *g = atomic_load_explicit(&p->runq[(t + n) % RT__RUNQ_SIZE],
                                       memory_order_relaxed);
        if (n > 0)
            atomic_store_explicit(&p->runqtail, t + n, memory_order_release);
        return g;
    }
}

/* ----------------------------------------------------------- idle Ms */

static void m_wake(rt_m *m)
{
    atomic_store(&m->wake, 1);
    if (atomic_load(&m->in_poll))
        rt__netpoll_break();
    else
        rt__futex_wake(&m->wake, 1);
}

/*
 * Give up rt__s.polling after a poll that did not block (an M's, or
 * sysmon's). An idle M that meanwhile found the role taken went to sleep
 * on its futex, not in epoll; if every M is asleep that way, nobody
 * watches the network until a timer or a goroutine wakes one. Seen: a
 * mock backend whose two Ms slept on their futexes, sysmon parked (all
 * idle), and two connections waited in its accept queue for good, after
 * sysmon's poll had overlapped the Ms' m_sleep. So wake an idle M, which
 * takes the role. A Dekker pair with m_sleep: it stores poll_wanted, then
 * tries for polling again; we clear polling, then read poll_wanted; one
 * of the two sees the other.
 */
void rt__poll_release(void)
{
    atomic_store(&rt__s.polling, false);
    if (atomic_load(&rt__s.poll_wanted) &&
        atomic_exchange(&rt__s.poll_wanted, false))
        rt__wakep();
}

/* Poll the network without blocking, unless another M is polling. */
static void poll_nonblocking(void)
{
    if (atomic_load_explicit(&rt__s.npolled, memory_order_relaxed) == 0 ||
        atomic_load_explicit(&rt__s.polling, memory_order_relaxed))
        return;
    if (atomic_exchange(&rt__s.polling, true))
        return;
    rt__netpoll(0);
    rt__poll_release();
}

/*
 * Wake an idle M to look for work, unless an M is spinning already. The
 * woken M starts spinning (nspinning is handed over to it).
 */
void rt__wakep(void)
{
    if (atomic_load(&rt__s.nidle) == 0 || atomic_load(&rt__s.nspinning) != 0)
        return;
    int32_t zero = 0;
    if (!atomic_compare_exchange_strong(&rt__s.nspinning, &zero, 1))
        return;
    rt__lock_acquire(&rt__s.lock);
    rt_m *m = rt__s.idle;
    if (m != NULL) {
        rt__s.idle = m->idlenext;
        m->idle = false;
        m->spinning = true;
        atomic_fetch_sub(&rt__s.nidle, 1);
    }
    rt__lock_release(&rt__s.lock);
    if (m == NULL) {
        atomic_fetch_sub(&rt__s.nspinning, 1);
        return;
    }
    m_wake(m);
}

/* A spinning M found work: stop spinning, and if it was the last spinner
 * wake another M, since there may be more work. */
static void reset_spinning(rt_m *m)
{
    if (!m->spinning)
        return;
    m->spinning = false;
    if (atomic_fetch_sub(&rt__s.nspinning, 1) == 1)
        rt__wakep();
}

static bool any_work(void)
{
    if (atomic_load(&rt__s.gq_size) > 0)
        return true;
    for (int i = 0; i < rt__s.nprocs; i++)
        if (!runq_empty(&rt__s.ps[i]))
            return true;
    return false;
}

static void run_timers(rt_m *m, rt_p *p, int64_t now)
{
    (void)m;
    rt__timers_run(&p->timers, now);
}

/* Try to steal from every other P, in random order. */
static rt_g *steal_work(rt_m *m, bool take_next)
{
    rt_p *p = m->p;
    int n = rt__s.nprocs;
    int start = (int)rt__randn((uint32_t)n);
    for (int i = 0; i < n; i++) {
        rt_p *v = &rt__s.ps[(start + i) % n];
        if (v == p)
            continue;
        /* Run the victim's due timers too: its M may be busy. Their
         * callbacks ready goroutines onto our own P: take those first. */
        if (atomic_load_explicit(&v->timers.next, memory_order_relaxed) <=
            rt_now()) {
            rt__timers_run(&v->timers, rt_now());
            rt_g *g = runqget(p);
            if (g != NULL)
                return g;
        }
        rt_g *g = runqsteal(p, v, take_next);
        if (g != NULL)
            return g;
    }
    return NULL;
}

/*
 * Sleep until woken or until the earliest timer. An M that stays idle for
 * SCAVENGE_DELAY with many free stacks resident gives their pages back
 * (rt__stacks_scavenge); a busy process never pays for that.
 */
#define SCAVENGE_DELAY (200 * RT_MSEC)

static void m_sleep(rt_m *m)
{
    atomic_store(&m->wake, 0);
    rt__lock_acquire(&rt__s.lock);
    m->idle = true;
    m->idlenext = rt__s.idle;
    rt__s.idle = m;
    atomic_fetch_add(&rt__s.nidle, 1);
    rt__lock_release(&rt__s.lock);

    /* Re-check after publishing nidle (see the top of the file). */
    int64_t now = rt_now();
    int64_t next = rt__timers_next();
    if (RT__UNLIKELY(rt__test_hook_m_sleep != NULL))
        rt__test_hook_m_sleep();
    bool scavenge = false;
    int64_t until = next;
    if (rt__stacks_scavenge_wanted() && until - now > SCAVENGE_DELAY) {
        until = now + SCAVENGE_DELAY;
        scavenge = true;
    }
    /* Publish the wake-up time before looking at the timers again: a
     * timer started after our first look either sees sleep_until (and
     * wakes us, rt__timer_added) or is seen by the second look (a Dekker
     * pair with the fence in rt__timer_added). */
    atomic_store(&m->sleep_until, until);
    atomic_thread_fence(memory_order_seq_cst);
    next = rt__timers_next();
    if (next < until) {
        until = next;
        scavenge = false;
        atomic_store(&m->sleep_until, until);
    }
    if (!any_work() && until > now && !atomic_load(&rt__s.stopping)) {
        int64_t timeout = until == RT_FOREVER ? -1 : until - now;
        int r;
        bool poller = !atomic_exchange(&rt__s.polling, true);
        if (!poller) {
            /* Taken for a moment by a poll that does not block: say we
             * want it, then try again (rt__poll_release). */
            atomic_store(&rt__s.poll_wanted, true);
            poller = !atomic_exchange(&rt__s.polling, true);
        }
        if (poller) {
            /* The poller: block in epoll instead of on the futex. The
             * wake word is re-checked after in_poll is published (see
             * m_wake: one of the two sees the other). */
            atomic_store(&rt__s.poll_wanted, false);
            atomic_store(&m->in_poll, true);
            if (atomic_load(&m->wake) == 0) {
                int n = rt__netpoll(timeout);
                r = n == 0 && atomic_load(&m->wake) == 0 ? -ETIMEDOUT : 0;
            } else {
                r = 0;
            }
            atomic_store(&m->in_poll, false);
            atomic_store(&rt__s.polling, false);
        } else {
            r = rt__futex_wait(&m->wake, 0, timeout);
        }
        scavenge = scavenge && r == -ETIMEDOUT && atomic_load(&m->wake) == 0;
    } else {
        scavenge = false;
    }
    atomic_store(&m->sleep_until, 0);

    rt__lock_acquire(&rt__s.lock);
    if (m->idle) { /* nobody took us off the list: remove ourselves */
        rt_m **pp = &rt__s.idle;
        while (*pp != m)
            pp = &(*pp)->idlenext;
        *pp = m->idlenext;
        m->idle = false;
        atomic_fetch_sub(&rt__s.nidle, 1);
    }
    rt__lock_release(&rt__s.lock);
    rt__sysmon_kick(); /* the process is not idle any more */
    if (scavenge)
        rt__stacks_scavenge();
}

/* Wake an M sleeping past `when` (a new earliest timer). The timer is
 * in its heap already; the fence pairs with m_sleep's. */
void rt__timer_added(int64_t when)
{
    atomic_thread_fence(memory_order_seq_cst);
    for (int i = 0; i < rt__s.nprocs; i++) {
        rt_m *m = &rt__s.ms[i];
        int64_t until = atomic_load(&m->sleep_until);
        if (until != 0 && until > when) {
            /* Lower it so that others adding later timers don't wake it. */
            if (atomic_compare_exchange_strong(&m->sleep_until, &until, when)) {
                m_wake(m);
                return;
            }
        }
        if (until != 0 && until <= when)
            return; /* someone will be up in time */
    }
}

/* A spawner parked on p's full ring, once the ring has drained to a
 * quarter (see rt__go). Several may be parked (a goroutine the ring ran
 * while the first waited may fill it again): they wait on a list, linked
 * through schednext (a parked G is on no run queue or free list), and
 * leave it one at a time, last in first out. */
static rt_g *take_spawn_waiter(rt_p *p)
{
    rt_g *g = p->spawn_waiters;
    if (g == NULL || runq_len(p) > RT__RUNQ_SIZE / 4)
        return NULL;
    p->spawn_waiters = g->schednext;
    g->schednext = NULL;
    atomic_store(&g->state, RT_G_RUNNABLE);
    return g;
}

/* An M with nothing to run spins (steals) this long before it sleeps. */
#define SPIN_NS (80 * RT_USEC)
#define SPIN_STEP 64

/*
 * Find a G to run: local queue, global queue, timers, stealing; sleep
 * when there is nothing. NULL when the scheduler is stopping.
 */
static rt_g *find_runnable(rt_m *m)
{
    rt_p *p = m->p;
    for (;;) {
        if (atomic_load_explicit(&rt__s.stopping, memory_order_relaxed))
            return NULL;
        int64_t tnext =
            atomic_load_explicit(&p->timers.next, memory_order_relaxed);
        if (tnext != RT_FOREVER) {
            int64_t now = rt_now();
            if (tnext <= now)
                run_timers(m, p, now);
        }
        rt_g *g;
        if ((g = take_spawn_waiter(p)) != NULL)
            return g;
        /* Work sysmon found while every M was busy: first, so it runs
         * at the next switch (see sysmon.c). */
        if (RT__UNLIKELY(
                atomic_load_explicit(&rt__s.gq_urgent, memory_order_relaxed))) {
            if ((g = globrunqget(p, 0)) != NULL)
                return g;
            atomic_store_explicit(&rt__s.gq_urgent, false,
                                  memory_order_relaxed);
        }
        if (++p->schedtick % 61 == 0) {
            /* Fairness: the global queue, and fds that nobody polled for
             * 10 ms while everyone was busy. */
            if ((g = globrunqget(p, 1)) != NULL)
                return g;
            if (rt_now() - atomic_load_explicit(&rt__s.last_poll,
                                                memory_order_relaxed) >
                10 * RT_MSEC)
                poll_nonblocking();
        }
        if ((g = runqget(p)) != NULL)
            return g;
        /* Thieves may have emptied the ring since the check above: a
         * spawner waiting for room must not be left behind when we
         * sleep. */
        if ((g = take_spawn_waiter(p)) != NULL)
            return g;
        if ((g = globrunqget(p, 0)) != NULL)
            return g;

        /* Ready fds before stealing (Go's findrunnable does the same). */
        poll_nonblocking();
        if ((g = runqget(p)) != NULL)
            return g;

        /* Spin: limit spinners to half the busy Ms. */
        int busy = rt__s.nprocs - atomic_load(&rt__s.nidle);
        if (!m->spinning && 2 * atomic_load(&rt__s.nspinning) < busy) {
            m->spinning = true;
            atomic_fetch_add(&rt__s.nspinning, 1);
        }
        if (m->spinning) {
            /* For SPIN_NS in all (by time, see rt__spin), stealing every
             * SPIN_STEP PAUSEs; another P's runnext only in the last
             * quarter, and only from a P stuck in one G (runqsteal_next):
             * it is the G its P is about to run. Looking at runnext (a
             * line its owner writes at every hand-off) all the time cost
             * ping-pong at P = 2 about 10 ns per round trip. */
            rt__spin sp = RT__SPIN(SPIN_NS);
            bool take_next = false;
            for (;;) {
                g = steal_work(m, take_next);
                if (g == NULL && atomic_load(&rt__s.gq_size) > 0)
                    g = globrunqget(p, 0);
                if (g != NULL)
                    return g;
                if (atomic_load_explicit(&rt__s.stopping, memory_order_relaxed))
                    return NULL;
                if (!runq_empty(p))
                    break;
                bool left = true;
                for (int i = 0; i < SPIN_STEP && left; i++)
                    left = rt__spin_more(&sp);
                if (!left)
                    break;
                take_next = sp.end != 0 && rt_now() >= sp.end - SPIN_NS / 4;
            }
            m->spinning = false;
            atomic_fetch_sub(&rt__s.nspinning, 1);
            if (!runq_empty(p))
                continue;
        }
        int64_t now = rt_now();
        if (rt__timers_next() <= now) {
            /* Due timers anywhere: run them, they may ready work. */
            for (int i = 0; i < rt__s.nprocs; i++)
                rt__timers_run(&rt__s.ps[i].timers, now);
            continue;
        }
        m_sleep(m);
        /* Woken by rt__wakep: we may have been made a spinner. */
    }
}

/* ------------------------------------------------------------ goroutines */

static void g_exit_account(rt_m *m)
{
    rt_p *p = m->p;
    atomic_store_explicit(
        &p->nexited,
        atomic_load_explicit(&p->nexited, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

/* Per-P free Gs (Go's gfput/gfget): a dead G stays on its P; beyond 64
 * half of them move to the global list in one batch, and an empty cache
 * refills with a batch. */
static void gfput(rt_p *p, rt_g *g)
{
#ifdef RT_ASAN
    /* Frames of the dead goroutine left poisoned shadow behind. */
    __asan_unpoison_memory_region(g->stack_lo, g->stack_size);
#endif
    if (g->stack_size > rt__stack_default()) {
        rt__g_free_big(g);
        return;
    }
    g->schednext = p->gfree;
    p->gfree = g;
    if (++p->ngfree < 64)
        return;
    rt_g *head = p->gfree, *tail = head;
    for (int i = 1; i < 32; i++)
        tail = tail->schednext;
    p->gfree = tail->schednext;
    p->ngfree -= 32;
    rt__gfree_put(head, tail, 32);
}

static rt_g *gfget(rt_p *p)
{
    if (p->gfree == NULL)
        p->ngfree = rt__gfree_take(&p->gfree, 32);
    rt_g *g = p->gfree;
    if (g != NULL) {
        p->gfree = g->schednext;
        p->ngfree--;
        g->schednext = NULL;
    }
    return g;
}

/* g0: carry out what the G that just switched out asked for. Returns a G
 * to run at once (the same one), or NULL. */
static rt_g *after_switch(rt_m *m, rt_g *g)
{
    rt__stack_check(g, g->regs.sp);
    switch (g->switch_action) {
    case RT__ACT_PARK: {
        bool keep = g->park_unlockf == NULL || g->park_unlockf(g, g->park_arg);
        int s = RT__G_PARKING;
        if (!keep) {
            /* Wait abandoned; a racing rt__ready is absorbed too. */
            atomic_store(&g->state, RT_G_RUNNING);
            return g;
        }
        if (atomic_compare_exchange_strong(&g->state, &s, RT_G_WAITING))
            return NULL;
        /* Readied while switching out: keep running it. */
        atomic_store(&g->state, RT_G_RUNNING);
        return g;
    }
    case RT__ACT_YIELD:
        atomic_store(&g->state, RT_G_RUNNABLE);
        runqput(m->p, g, false);
        return NULL;
    case RT__ACT_EXIT: {
        bool is_main = g == rt__s.main_g;
        atomic_store_explicit(&g->id, 0, memory_order_relaxed);
        atomic_store(&g->state, RT_G_IDLE);
        g_exit_account(m);
        if (is_main) {
            atomic_store(&rt__s.stopping, true);
            for (int i = 0; i < rt__s.nprocs; i++)
                m_wake(&rt__s.ms[i]);
            /* The main G is freed at teardown with everything else. */
            return NULL;
        }
        gfput(m->p, g);
        return NULL;
    }
    default:
        rt__panic("bad switch action %d", g->switch_action);
    }
}

/* One more switch into or out of a G, for sysmon (see sysmon.c). */
static inline void count_switch(rt_m *m)
{
    atomic_store_explicit(
        &m->switches,
        atomic_load_explicit(&m->switches, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

static void execute(rt_m *m, rt_g *g)
{
    while (g != NULL) {
        atomic_store_explicit(&g->state, RT_G_RUNNING, memory_order_relaxed);
        /* Release: sysmon reads g through m->curg (acquire) and must see
         * the G as set up by its spawner (on x86 both are plain moves). */
        atomic_store_explicit(&m->curg, g, memory_order_release);
        count_switch(m);
        switch_to_g(m, g);
        count_switch(m);
        atomic_store_explicit(&m->curg, NULL, memory_order_relaxed);
        if (RT__UNLIKELY(atomic_load_explicit(&g->long_run_since,
                                              memory_order_relaxed) != 0))
            atomic_store_explicit(&g->long_run_since, 0, memory_order_relaxed);
        g = after_switch(m, g);
    }
}

static void schedule_loop(rt_m *m)
{
    for (;;) {
        rt_g *g = find_runnable(m);
        if (g == NULL)
            return;
        /* Whatever path found g: an M made a spinner by rt__wakep (even
         * one that then found work in its own queue) stops spinning now,
         * or nspinning would stay up and block every later wake-up. */
        reset_spinning(m);
        execute(m, g);
    }
}

/* First C function of every goroutine, called from rt__gstart. */
_Noreturn void rt__gmain(void);
_Noreturn void rt__gmain(void)
{
#ifdef RT_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    rt_g *g = rt__curg();
    g->fn(g->arg);
    rt_exit();
}

_Noreturn void rt_exit(void)
{
    rt_g *g = rt__curg();
    if (g == NULL)
        rt__panic("rt_exit called outside a goroutine");
    switch_to_g0(g, RT__ACT_EXIT);
    rt__panic("dead goroutine resumed");
}

static uint64_t next_goid(rt_p *p)
{
    if (p == NULL)
        return atomic_fetch_add(&rt__s.goidgen, 1) + 1;
    if (p->goid_next == p->goid_end) {
        /* Batches keep the shared counter off the spawn path (Go: 16). */
        p->goid_next = atomic_fetch_add(&rt__s.goidgen, 16) + 1;
        p->goid_end = p->goid_next + 16;
    }
    return p->goid_next++;
}

static rt_g *g_new(rt_p *p, rt_fn fn, void *arg, const rt_go_opts *opts,
                   const char *fn_name, const char *file, int line)
{
    size_t stack = opts != NULL ? opts->stack_size : 0;
    rt_g *g = NULL;
    if (p != NULL && stack <= rt__stack_default())
        g = gfget(p);
    if (g == NULL)
        g = rt__g_alloc(stack);
    if (g == NULL)
        return NULL;
#ifdef RT_TSAN
    if (g->tsan_fiber == NULL)
        g->tsan_fiber = __tsan_create_fiber(0);
#endif
    g->fn = fn;
    g->arg = arg;
    g->param = NULL;
    g->switch_action = RT__ACT_NONE;
    atomic_store_explicit(&g->id, next_goid(p), memory_order_relaxed);
    atomic_store_explicit(&g->fn_name, fn_name, memory_order_relaxed);
    atomic_store_explicit(&g->file, file, memory_order_relaxed);
    atomic_store_explicit(&g->line, line, memory_order_relaxed);
    atomic_store_explicit(&g->waitreason, NULL, memory_order_relaxed);
    rt__stack_prepare(g);
    atomic_store_explicit(&g->state, RT_G_RUNNABLE, memory_order_release);
    return g;
}

static bool spawn_wait(rt_g *g, void *arg)
{
    rt_p *p = arg; /* g0 of the M that owns p: p's owner */
    g->schednext = p->spawn_waiters;
    p->spawn_waiters = g;
    return true;
}

uint64_t rt__go(rt_fn fn, void *arg, const rt_go_opts *opts,
                const char *fn_name, const char *file, int line)
{
    rt_m *m = rt__getm();
    if (m == NULL ||
        atomic_load_explicit(&m->curg, memory_order_relaxed) == NULL)
        rt__panic("rt_go called outside a goroutine");
    rt_p *p = m->p;
    rt_g *g = g_new(p, fn, arg, opts, fn_name, file, line);
    if (RT__UNLIKELY(g == NULL))
        return 0; /* no stack: the caller decides (see rt.h) */
    uint64_t id = atomic_load_explicit(&g->id, memory_order_relaxed);
    atomic_store_explicit(
        &p->nspawned,
        atomic_load_explicit(&p->nspawned, memory_order_relaxed) + 1,
        memory_order_relaxed);
    runqput(p, g, true);
    rt__wakep();
    if (RT__UNLIKELY(runq_len(p) >= RT__RUNQ_SIZE - 1)) {
        /* Back-pressure: the spawner outruns the Ps. Let the queue drain
         * to a quarter before spawning more, so a spawn storm holds ~256
         * stacks per P instead of one per goroutine ever spawned. */
        rt__park(spawn_wait, p, "run queue full");
    }
    return id;
}

void rt__park(bool (*unlockf)(rt_g *g, void *arg), void *arg,
              const char *reason)
{
    rt_g *g = rt__curg();
    if (g == NULL)
        rt__panic("rt__park called outside a goroutine");
    g->park_unlockf = unlockf;
    g->park_arg = arg;
    atomic_store_explicit(&g->waitreason, reason, memory_order_relaxed);
    /* Release is enough: a waker can only find g after unlockf releases
     * the wait-queue lock, which orders this store before it. */
    atomic_store_explicit(&g->state, RT__G_PARKING, memory_order_release);
    switch_to_g0(g, RT__ACT_PARK);
    atomic_store_explicit(&g->waitreason, NULL, memory_order_relaxed);
}

void rt__ready(rt_g *g)
{
    for (;;) {
        int s = atomic_load(&g->state);
        if (s == RT_G_WAITING) {
            if (!atomic_compare_exchange_weak(&g->state, &s, RT_G_RUNNABLE))
                continue;
            break;
        }
        if (s == RT__G_PARKING) {
            if (atomic_compare_exchange_weak(&g->state, &s,
                                             RT__G_PARKING_READY))
                return;
            continue;
        }
        rt__panic("rt__ready: goroutine %llu is not waiting (state %d)",
                  (unsigned long long)atomic_load(&g->id), s);
    }
    rt_m *m = rt__getm();
    if (m != NULL)
        runqput(m->p, g, true);
    else
        rt__globrunqput(g); /* from a thread outside the scheduler */
    rt__wakep();
}

void rt_yield(void)
{
    rt_g *g = rt__curg();
    if (g == NULL)
        rt__panic("rt_yield called outside a goroutine");
    switch_to_g0(g, RT__ACT_YIELD);
}

/* May the calling goroutine busy-wait for a lock held on another P? Only
 * with several Ps, another one running, and nothing else runnable here. */
bool rt__can_spin(void)
{
    rt_m *m = rt__getm();
    if (m == NULL || rt__s.nprocs < 2 ||
        atomic_load_explicit(&rt__s.nidle, memory_order_relaxed) >=
            rt__s.nprocs - 1)
        return false;
    return runq_empty(m->p);
}

uint64_t rt_goid(void)
{
    rt_g *g = rt__curg();
    return g != NULL ? atomic_load_explicit(&g->id, memory_order_relaxed) : 0;
}

/* ------------------------------------------------------------ sleeping */

static void sleep_fire(rt__timer *t)
{
    rt__ready((rt_g *)t->arg);
}

static bool sleep_arm(rt_g *g, void *arg)
{
    (void)g;
    rt__timer *t = arg;
    rt__timer_start(t, t->when);
    return true;
}

static bool sleep_forever(rt_g *g, void *arg)
{
    (void)g;
    (void)arg;
    return true;
}

void rt_sleep_until(int64_t deadline)
{
    rt_g *g = rt__curg();
    if (g == NULL)
        rt__panic("rt_sleep called outside a goroutine");
    if (deadline <= rt_now()) {
        rt_yield();
        return;
    }
    if (deadline == RT_FOREVER) {
        rt__park(sleep_forever, NULL, "sleep (forever)");
        rt__panic("a goroutine sleeping forever was woken");
    }
    rt__timer t;
    rt__timer_init(&t, sleep_fire, g);
    t.when = deadline;
    /* Armed by g0 once we are switched out: the callback may run on
     * another M at once. */
    rt__park(sleep_arm, &t, "sleep");
    /* The callback that woke us may still be returning on another M:
     * wait for it before t (on this stack) goes out of scope. */
    rt__timer_stop(&t);
}

void rt_sleep(int64_t ns)
{
    rt_sleep_until(rt__deadline_after(ns));
}

/* ------------------------------------------------------------- rt_run */

static void m_init_thread(rt_m *m)
{
    tls_m = m;
    rt__altstack_init(m);
#ifdef RT_TSAN
    m->tsan_fiber = __tsan_get_current_fiber();
#endif
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&attr, &lo, &size) == 0) {
            m->g0_stack_lo = lo;
            m->g0_stack_size = size;
        }
        pthread_attr_destroy(&attr);
    }
}

static void *m_thread(void *arg)
{
    rt_m *m = arg;
    m_init_thread(m);
    schedule_loop(m);
    rt__altstack_fini(m);
    tls_m = NULL;
    return NULL;
}

static void teardown(void)
{
    rt__sysmon_stop();
    rt__blocking_shutdown();
    rt__signal_fini();
#ifdef RT_TSAN
    for (rt_g *g = rt__s.allgs; g != NULL; g = g->allnext)
        if (g->tsan_fiber != NULL)
            __tsan_destroy_fiber(g->tsan_fiber);
#endif
    for (int i = 0; i < rt__s.nprocs; i++)
        rt__theap_destroy(&rt__s.ps[i].timers);
    rt__stacks_release_all();
    rt__stacks_fini();
    rt__netpoll_destroy();
    free(rt__s.ps);
    free(rt__s.ms);
    memset(&rt__s, 0, sizeof rt__s);
}

int rt_run(void (*main_fn)(void *arg), void *arg)
{
    if (tls_m != NULL || rt__s.nprocs != 0)
        return -EBUSY;
    int n = default_procs();
    memset(&rt__s, 0, sizeof rt__s);
    rt__s.ps = aligned_alloc(64, sizeof(rt_p) * (size_t)n);
    rt__s.ms = aligned_alloc(64, sizeof(rt_m) * (size_t)n);
    if (rt__s.ps == NULL || rt__s.ms == NULL) {
        free(rt__s.ps);
        free(rt__s.ms);
        return -ENOMEM;
    }
    memset(rt__s.ps, 0, sizeof(rt_p) * (size_t)n);
    memset(rt__s.ms, 0, sizeof(rt_m) * (size_t)n);
    rt__s.nprocs = n;
    int perr = rt__netpoll_init();
    if (perr == 0 && (perr = rt__signal_init()) != 0)
        rt__netpoll_destroy();
    if (perr != 0) {
        free(rt__s.ps);
        free(rt__s.ms);
        memset(&rt__s, 0, sizeof rt__s);
        return perr;
    }
    for (int i = 0; i < n; i++) {
        rt_p *p = &rt__s.ps[i];
        rt_m *m = &rt__s.ms[i];
        p->id = i;
        p->m = m;
        rt__theap_init(&p->timers);
        m->id = i;
        m->p = p;
    }

    rt__stacks_init();
    rt_m *m0 = &rt__s.ms[0];
    m0->thread = pthread_self(); /* the others' come from pthread_create */
    m_init_thread(m0);
    rt_g *g = g_new(NULL, main_fn, arg, NULL, "main", __FILE__, __LINE__);
    if (g == NULL) {
        rt__altstack_fini(m0);
        tls_m = NULL;
        teardown();
        return -ENOMEM;
    }
    rt__s.main_g = g;
    atomic_store(&rt__s.nspawned_x, 1);
    runqput(m0->p, g, false);

    int started = 1;
    int err = 0;
    for (; started < n; started++) {
        rt_m *m = &rt__s.ms[started];
        err = pthread_create(&m->thread, NULL, m_thread, m);
        if (err != 0)
            break;
    }
    if (err != 0) {
        /* Run with the Ms we have: the scheduler works with any count of
         * running Ms, the extra Ps are simply drained by stealing. */
        rt__s.nprocs = started;
        err = 0;
    }
    if ((err = rt__sysmon_start()) != 0) {
        /* Without sysmon the scheduler still works; only its watch is
         * missing. Not worth failing rt_run for. */
        err = 0;
    }
    schedule_loop(m0);
    for (int i = 1; i < started; i++)
        pthread_join(rt__s.ms[i].thread, NULL);
    rt__altstack_fini(m0);
    tls_m = NULL;
    teardown();
    return err;
}
