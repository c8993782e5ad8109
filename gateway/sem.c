/*
 * sem.c - the backend semaphore (see sem.h).
 *
 * State under `mu`: held (slots taken), limit, and the FIFO of waiters.
 * A waiter lives on the stack of the goroutine that waits; it is linked
 * only while that goroutine is parked in gw_sem_acquire, and everything
 * that touches it (grant, cancel) holds `mu`.
 *
 * Handing over. A release (or a larger limit) pops the first waiter,
 * counts the slot as held on its behalf, marks it granted and puts a
 * byte in its `ready` channel (capacity 1: the send never blocks) — all
 * under mu. The waiter wakes from its select on ready or its context:
 *   - ready: it owns the slot.
 *   - its context first: under mu, either it is still queued (it unlinks
 *     itself and fails without a slot) or it was granted in the meantime
 *     (it gives the slot straight back with gw_sem_release and fails).
 * Either way the waiter takes mu once before freeing its channel, so a
 * granter still inside rt_chan_trysend (under mu) is done with it.
 */
#include "sem.h"

#include <errno.h>
#include <stdlib.h>

typedef struct waiter {
    struct waiter *next;
    rt_chan *ready; /* capacity 1; one byte when granted */
    bool granted;
} waiter;

struct gw_sem {
    _Atomic long refs;
    rt_mutex mu; /* protects held, limit, head, tail and the waiters */
    long held, limit;
    waiter *head, *tail;
};

gw_sem *gw_sem_new(long limit)
{
    gw_sem *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->limit = limit > 0 ? limit : 1;
    return s;
}

gw_sem *gw_sem_ref(gw_sem *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void gw_sem_unref(gw_sem *s)
{
    if (s == NULL ||
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(s);
}

/* Under mu: give free slots to waiters, first come first served. */
static void grant(gw_sem *s)
{
    while (s->head != NULL && s->held < s->limit) {
        waiter *w = s->head;
        s->head = w->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->held++;
        w->granted = true;
        char b = 1;
        rt_chan_trysend(w->ready, &b);
    }
}

/* Under mu: take w out of the queue (it is in it). */
static void unlink_waiter(gw_sem *s, waiter *w)
{
    waiter **pp = &s->head, *prev = NULL;
    while (*pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = w->next;
    if (s->tail == w)
        s->tail = prev;
}

int gw_sem_acquire(gw_sem *s, rt_ctx *ctx, bool *waited)
{
    *waited = false;
    rt_mutex_lock(&s->mu);
    if (s->held < s->limit && s->head == NULL) {
        s->held++;
        rt_mutex_unlock(&s->mu);
        return 0;
    }
    *waited = true;
    waiter w = {.ready = rt_chan_make(1, 1)};
    if (w.ready == NULL) {
        rt_mutex_unlock(&s->mu);
        return -ENOMEM;
    }
    if (s->tail != NULL)
        s->tail->next = &w;
    else
        s->head = &w;
    s->tail = &w;
    rt_mutex_unlock(&s->mu);

    rt_case cs[2] = {RT_RECV_CASE(w.ready, NULL),
                     RT_RECV_CASE(rt_ctx_done(ctx), NULL)};
    int which = rt_select(cs, 2);

    rt_mutex_lock(&s->mu);
    bool granted = w.granted;
    if (!granted)
        unlink_waiter(s, &w);
    rt_mutex_unlock(&s->mu);
    rt_chan_free(w.ready);
    /* ready fires only once granted. A slot handed over while (or after)
     * the context ended is of no use to the caller: it goes back to the
     * next waiter, and the caller fails as if still waiting. Keeping it
     * would start a call past its deadline (reported "timeout", not
     * "overloaded"), and at a deadline shared by a queue of waiters each
     * would take it in turn: 24 calls to a backend whose limit is 4. */
    int err = rt_ctx_err(ctx);
    if (which == 0 && err == 0)
        return 0;
    if (granted)
        gw_sem_release(s);
    return err != 0 ? err : -ECANCELED;
}

void gw_sem_release(gw_sem *s)
{
    rt_mutex_lock(&s->mu);
    s->held--;
    grant(s);
    rt_mutex_unlock(&s->mu);
}

void gw_sem_set_limit(gw_sem *s, long limit)
{
    rt_mutex_lock(&s->mu);
    s->limit = limit > 0 ? limit : 1;
    grant(s);
    rt_mutex_unlock(&s->mu);
}

long gw_sem_held(gw_sem *s)
{
    rt_mutex_lock(&s->mu);
    long n = s->held;
    rt_mutex_unlock(&s->mu);
    return n;
}

long gw_sem_limit(gw_sem *s)
{
    rt_mutex_lock(&s->mu);
    long n = s->limit;
    rt_mutex_unlock(&s->mu);
    return n;
}
