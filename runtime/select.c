/*
 * select.c - select over channel cases, after Go's src/runtime/select.go.
 *
 * One function, selectgo(), serves rt_select, rt_select_default,
 * rt_select_deadline and rt_select_timeout:
 *
 *   1. Poll order: the non-NULL cases in a uniformly random order
 *      (Fisher-Yates with rt__randn). Taking the first ready case in that
 *      order picks uniformly among the ready ones. Cases with a NULL
 *      channel are never ready and are left out altogether.
 *   2. Lock order: the distinct channels sorted by address. A channel
 *      that appears in several cases is locked once. Every select locks
 *      in this order, so two selects can never deadlock on each other.
 *   3. Pass 1, all channels locked: the first ready case in poll order
 *      (a waiting partner, buffer room or data, or a closed channel) is
 *      done and returned. A send case on a closed channel aborts.
 *   4. Nothing ready: a non-blocking select returns -EAGAIN, one whose
 *      deadline passed -ETIMEDOUT. Otherwise pass 2 enqueues one sudog
 *      per case (chan_internal.h), all pointing at this goroutine, and
 *      parks; the unlockf drops the locks in reverse order.
 *   5. Wake-up: the first waker to CAS g->select_done 0 -> 1 wins and
 *      sets g->param to the sudog it completed (rt_chan_close does the
 *      same with success = false); wakers that lose the CAS drop the
 *      sudog and move on to the next waiter. After waking we lock all
 *      channels again, unlink every sudog still queued, and report the
 *      case of g->param.
 *
 * Deadlines use an rt__timer whose callback competes for select_done like
 * any waker, and on winning sets g->param = NULL (the timeout marker) and
 * readies the goroutine. The timer takes no channel lock, so it must not
 * be able to fire while the goroutine still runs on its own stack: it is
 * armed by the unlockf, on the scheduler stack once the goroutine is
 * switched out (as rt_sleep does), before any channel lock is dropped.
 * After waking, the select always stops the timer, which waits for a
 * callback in progress, so the timer on our stack stays valid as long as
 * the callback may use it.
 *
 * Lock order: channel locks (address order) > the timer heap's lock.
 * The select's state (sudogs, poll and lock orders) lives on its stack,
 * or on the heap for more than SELECT_STACK_CASES cases.
 *
 * The unlockf runs on the scheduler stack while the goroutine is parked.
 * Once it drops the first lock a waker may ready the goroutine, so it
 * reads what it needs from the goroutine's stack before that; the lock
 * array itself stays put, because the woken goroutine cannot get past
 * re-locking the first channel until the unlockf has released the last.
 */
#include "chan_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Selects with up to this many cases use only stack memory. */
#define SELECT_STACK_CASES 16

typedef struct sel_park {
    rt_chan **locks; /* distinct channels, address order */
    size_t nlocks;
    rt__timer *timer; /* armed by the unlockf; NULL without a deadline */
    int64_t deadline;
} sel_park;

static void sellock(rt_chan **locks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rt__lock_acquire_hot(&locks[i]->lock);
}

static void selunlock(rt_chan **locks, size_t n)
{
    for (size_t i = n; i-- > 0;)
        rt__lock_release(&locks[i]->lock);
}

/* Runs on g0 after the goroutine is switched out; see the top comment. */
static bool sel_unlockf(rt_g *g, void *arg)
{
    (void)g;
    const sel_park *p = arg;
    rt_chan **locks = p->locks;
    size_t n = p->nlocks;
    if (p->timer != NULL)
        rt__timer_start(p->timer, p->deadline);
    for (size_t i = n; i-- > 0;)
        rt__lock_release(&locks[i]->lock);
    return true;
}

/* Timer callback, scheduler context: time out the select unless a channel
 * won it first. The goroutine is switched out (see sel_unlockf). */
static void sel_timer_fire(rt__timer *t)
{
    rt_g *g = t->arg;
    uint32_t zero = 0;
    if (atomic_compare_exchange_strong(&g->select_done, &zero, 1)) {
        g->param = NULL;
        rt__ready(g);
    }
}

static int cmp_chan(const void *a, const void *b)
{
    rt_chan *const *pa = a, *const *pb = b;
    uintptr_t x = (uintptr_t)*pa, y = (uintptr_t)*pb;
    return (x > y) - (x < y);
}

/* Sort channels by address and drop duplicates; returns the new count. */
static size_t sort_locks(rt_chan **locks, size_t n)
{
    if (n <= SELECT_STACK_CASES) {
        for (size_t i = 1; i < n; i++) {
            rt_chan *c = locks[i];
            size_t j = i;
            for (; j > 0 && (uintptr_t)locks[j - 1] > (uintptr_t)c; j--)
                locks[j] = locks[j - 1];
            locks[j] = c;
        }
    } else {
        qsort(locks, n, sizeof(*locks), cmp_chan);
    }
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || locks[u - 1] != locks[i])
            locks[u++] = locks[i];
    return u;
}

/*
 * Pass 1 on case i, every channel locked. Returns true when the case was
 * done, in which case every lock has been released.
 */
static bool try_case(rt_case *cas, rt_chan **locks, size_t nlocks)
{
    rt_chan *c = cas->chan;
    rt__sudog *sg;

    if (cas->dir == RT_SEND) {
        if (RT__UNLIKELY(c->closed)) {
            selunlock(locks, nlocks);
            rt__panic("send on closed channel");
        }
        if ((sg = rt__sudogq_dequeue(&c->recvq)) != NULL) {
            rt_g *g = rt__chan_send_to(c, sg, cas->elem);
            selunlock(locks, nlocks);
            rt__ready(g);
            return true;
        }
        if (c->count < c->cap) {
            rt__chan_buf_put(c, cas->elem);
            selunlock(locks, nlocks);
            return true;
        }
        return false;
    }

    if ((sg = rt__sudogq_dequeue(&c->sendq)) != NULL) {
        rt_g *g = rt__chan_recv_from(c, sg, cas->elem);
        selunlock(locks, nlocks);
        rt__ready(g);
        cas->ok = true;
        return true;
    }
    if (c->count > 0) {
        rt__chan_buf_take(c, cas->elem);
        selunlock(locks, nlocks);
        cas->ok = true;
        return true;
    }
    if (c->closed) {
        selunlock(locks, nlocks);
        if (cas->elem != NULL && c->elem_size != 0)
            memset(cas->elem, 0, c->elem_size);
        cas->ok = false;
        return true;
    }
    return false;
}

/*
 * The whole select. block false: rt_select_default. Otherwise when is a
 * deadline (RT_FOREVER: none) or, with relative, a timeout; the clock is
 * read only once it is known that no case is ready.
 */
static int selectgo(rt_case *cases, size_t n, bool block, int64_t when,
                    bool relative)
{
    uint32_t poll_stack[SELECT_STACK_CASES];
    rt_chan *locks_stack[SELECT_STACK_CASES];
    rt__sudog sgs_stack[SELECT_STACK_CASES];
    uint32_t *poll = poll_stack;
    rt_chan **locks = locks_stack;
    rt__sudog *sgs = sgs_stack;
    void *heap = NULL;

    if (RT__UNLIKELY(n > SELECT_STACK_CASES)) {
        if (n > INT_MAX)
            rt__panic("select: %zu cases is too many", n);
        heap = malloc(n * (sizeof(*sgs) + sizeof(*locks) + sizeof(*poll)));
        if (heap == NULL)
            rt__panic("select: out of memory for %zu cases", n);
        sgs = heap;
        locks = (rt_chan **)(sgs + n);
        poll = (uint32_t *)(locks + n);
    }

    /* Poll order (inside-out Fisher-Yates) and the channels to lock. */
    size_t npoll = 0;
    for (size_t i = 0; i < n; i++) {
        if (cases[i].chan == NULL)
            continue;
        uint32_t j = npoll == 0 ? 0 : rt__randn((uint32_t)npoll + 1);
        poll[npoll] = poll[j];
        poll[j] = (uint32_t)i;
        locks[npoll] = cases[i].chan;
        npoll++;
    }

    /* Lock-free shortcut, exactly what pass 1 would do: when the first
     * case in poll order receives from a closed, drained channel (a state
     * that never changes again), pass 1 would take it. This is the common
     * "<-ctx.done" case. */
    if (npoll > 0) {
        uint32_t i = poll[0];
        rt_chan *c = cases[i].chan;
        if (cases[i].dir == RT_RECV && rt__chan_load(&c->closed) != 0 &&
            rt__chan_load(&c->count) == 0) {
            rt__chan_close_settled(c);
            if (cases[i].elem != NULL && c->elem_size != 0)
                memset(cases[i].elem, 0, c->elem_size);
            cases[i].ok = false;
            if (heap != NULL)
                free(heap);
            return (int)i;
        }
    }

    size_t nlocks = sort_locks(locks, npoll);

    /* Pass 1: the first ready case in poll order. */
    sellock(locks, nlocks);
    for (size_t k = 0; k < npoll; k++) {
        uint32_t i = poll[k];
        if (try_case(&cases[i], locks, nlocks)) {
            if (heap != NULL)
                free(heap);
            return (int)i;
        }
    }

    int64_t deadline = when, now = 0;
    if (block && deadline != RT_FOREVER) {
        now = rt_now();
        if (relative)
            deadline = when >= RT_FOREVER - now ? RT_FOREVER : now + when;
    }
    if (!block || (deadline != RT_FOREVER && now >= deadline)) {
        selunlock(locks, nlocks);
        free(heap);
        return block ? -ETIMEDOUT : -EAGAIN;
    }
    if (npoll == 0 && deadline == RT_FOREVER)
        rt__chan_block_forever(n == 0 ? "select (no cases)" : "select");

    /* Pass 2: wait on every case. */
    rt_g *g = rt__curg();
    if (RT__UNLIKELY(g == NULL))
        rt__panic("select outside a goroutine would block");
    atomic_store_explicit(&g->select_done, 0, memory_order_relaxed);
    g->param = NULL;
    for (size_t k = 0; k < npoll; k++) {
        rt_case *cas = &cases[poll[k]];
        rt__sudog *sg = &sgs[k];
        *sg = (rt__sudog){
            .g = g,
            .elem = cas->elem,
            .case_idx = poll[k],
            .is_select = true,
        };
        if (cas->dir == RT_SEND)
            rt__sudogq_enqueue(&cas->chan->sendq, sg);
        else
            rt__sudogq_enqueue(&cas->chan->recvq, sg);
    }

    rt__timer timer;
    sel_park park = {
        .locks = locks,
        .nlocks = nlocks,
        .timer = NULL,
        .deadline = deadline,
    };
    if (deadline != RT_FOREVER) {
        rt__timer_init(&timer, sel_timer_fire, g);
        park.timer = &timer;
    }
    rt__park(sel_unlockf, &park, n == 0 ? "select (no cases)" : "select");

    /* Woken: by a channel (g->param = its sudog) or the timer (NULL). */
    sellock(locks, nlocks);
    rt__sudog *won = g->param;
    g->param = NULL;
    int casi = -1;
    bool success = false;
    for (size_t k = 0; k < npoll; k++) {
        rt__sudog *sg = &sgs[k];
        if (sg == won) {
            casi = (int)sg->case_idx;
            success = sg->success;
            continue;
        }
        rt_case *cas = &cases[sg->case_idx];
        if (cas->dir == RT_SEND)
            rt__sudogq_remove(&cas->chan->sendq, sg);
        else
            rt__sudogq_remove(&cas->chan->recvq, sg);
    }
    selunlock(locks, nlocks);
    if (deadline != RT_FOREVER)
        rt__timer_stop(&timer); /* waits for a callback in progress */
    free(heap);

    if (casi < 0) {
        if (won != NULL || deadline == RT_FOREVER)
            rt__panic("select: woken without a case");
        return -ETIMEDOUT;
    }
    rt_case *cas = &cases[casi];
    if (cas->dir == RT_SEND) {
        if (RT__UNLIKELY(!success))
            rt__panic("send on closed channel");
    } else {
        cas->ok = success;
    }
    return casi;
}

int rt_select(rt_case *cases, size_t ncases)
{
    if (ncases == 1) {
        /* Like Go's compiler: a one-case select is a channel operation. */
        if (cases[0].dir == RT_SEND)
            rt_chan_send(cases[0].chan, cases[0].elem);
        else
            rt_chan_recv(cases[0].chan, cases[0].elem, &cases[0].ok);
        return 0;
    }
    return selectgo(cases, ncases, true, RT_FOREVER, false);
}

int rt_select_default(rt_case *cases, size_t ncases)
{
    if (ncases == 1) {
        bool done;
        if (cases[0].dir == RT_SEND)
            done = rt_chan_trysend(cases[0].chan, cases[0].elem);
        else
            done = rt_chan_tryrecv(cases[0].chan, cases[0].elem, &cases[0].ok);
        return done ? 0 : -EAGAIN;
    }
    return selectgo(cases, ncases, false, 0, false);
}

int rt_select_deadline(rt_case *cases, size_t ncases, int64_t deadline)
{
    return selectgo(cases, ncases, true, deadline, false);
}

int rt_select_timeout(rt_case *cases, size_t ncases, int64_t timeout)
{
    if (timeout == RT_FOREVER)
        return rt_select(cases, ncases);
    return selectgo(cases, ncases, true, timeout, true);
}
