/*
 * sem.h - a backend's semaphore: at most `limit` calls at once, a limit
 * that a reload may change while calls hold slots (design: sem.c).
 *
 * The shape is Go's golang.org/x/sync/semaphore.Weighted: a count under a
 * mutex and a FIFO of waiters, each parked on a channel of its own that
 * it selects against its context's done channel. A buffered channel used
 * as a semaphore (`sem := make(chan struct{}, n)`) cannot change its
 * capacity; this one can, which is what lets max_inflight hold across a
 * reload (the semaphore belongs to the backend's name, not to one
 * configuration).
 */
#ifndef GW_SEM_H
#define GW_SEM_H

#include <stdbool.h>

#include "rt.h"

typedef struct gw_sem gw_sem;

/* A semaphore of `limit` slots (≥ 1), with one reference. Caller owns it:
 * gw_sem_unref. NULL when out of memory. */
gw_sem *gw_sem_new(long limit);
gw_sem *gw_sem_ref(gw_sem *s);
/* Drop a reference; the last frees s (no slot may be held then). */
void gw_sem_unref(gw_sem *s);

/*
 * Take a slot: at once when one is free and nobody waits (returns 0,
 * *waited false), else wait in FIFO order until one is handed over
 * (0, *waited true) or ctx ends (-ETIMEDOUT or -ECANCELED: rt_ctx_err,
 * no slot taken; also when a slot was handed over as ctx ended: it goes
 * to the next waiter). Parks; call from a goroutine.
 */
int gw_sem_acquire(gw_sem *s, rt_ctx *ctx, bool *waited);

/* Give a slot back; hands it to the first waiter when the limit allows. */
void gw_sem_release(gw_sem *s);

/*
 * A new limit (≥ 1) for acquisitions from now on: slots already held stay
 * held, so after a decrease nobody new gets one until the count is below
 * the new limit; after an increase waiters get the new slots at once.
 */
void gw_sem_set_limit(gw_sem *s, long limit);

/* Slots held now, and the limit (for tests and metrics). */
long gw_sem_held(gw_sem *s);
long gw_sem_limit(gw_sem *s);

#endif /* GW_SEM_H */
