/*
 * chan.c - channels, after Go's src/runtime/chan.go.
 *
 * Data structures (chan_internal.h):
 *   rt_chan    one allocation: the header, then a ring buffer of cap
 *              elements of elem_size bytes. count elements are buffered,
 *              read at recvx, written at sendx. closed goes 0 -> 1 once.
 *   recvq,     FIFO queues of sudogs, one per blocked goroutine (a
 *   sendq      blocked select has one per case, in several queues). A
 *              sudog lives on its goroutine's stack: the goroutine is
 *              parked for as long as the sudog is queued.
 *
 * Invariants, all under c->lock (select sudogs are the exception: a
 * select may wait to send and to receive on one channel, and the sudogs
 * of a select that another channel already won linger until their
 * goroutine runs and unlinks them; every dequeue skips them):
 *   - at least one of sendq and recvq is empty;
 *   - cap > 0: sendq non-empty implies count == cap (the buffer is full),
 *     recvq non-empty implies count == 0 (it is empty);
 *   - closed: sendq and recvq are empty (close woke everyone, and nobody
 *     enqueues on a closed channel);
 *   - count, closed, recvq.first and sendq.first are also read without the
 *     lock by the non-blocking fast paths and rt_chan_len, so they are
 *     written with atomic stores (chan_internal.h).
 *
 * Wake-up protocol (Go's gopark/goready, see rt_internal.h): a blocking
 * goroutine enqueues its sudog with c->lock held and parks with an unlockf
 * that releases the lock only after its registers are saved. A waker
 * dequeues the sudog under the lock, copies the value straight into or out
 * of the parked goroutine's memory (sg->elem), sets sg->success and
 * g->param = sg, drops the lock and calls rt__ready(). Close sets
 * success = false instead: receivers then get a zero value and ok = false,
 * senders abort ("send on closed channel").
 *
 * Lock order: channel locks are outermost (rt_internal.h). Several are
 * held only by select, in address order (select.c). A channel lock is
 * never held across a park or while calling rt__ready().
 *
 * Who may close: by convention only the sending side, exactly once, after
 * its last send; closing twice or a NULL channel aborts, as in Go. Freeing
 * is the creator's job, once no goroutine can touch the channel.
 *
 * rt_chan_trysend / rt_chan_tryrecv never park, so they also work from
 * scheduler context (timer callbacks): they take only c->lock and may
 * call rt__ready().
 */
#include "chan_internal.h"

#include <errno.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static bool unlock_chan(rt_g *g, void *arg)
{
    (void)g;
    rt__lock_release(arg);
    return true;
}

static bool unlock_nothing(rt_g *g, void *arg)
{
    (void)g;
    (void)arg;
    return true;
}

_Noreturn void rt__chan_block_forever(const char *reason)
{
    if (rt__curg() == NULL)
        rt__panic("%s: blocking outside a goroutine", reason);
    rt__park(unlock_nothing, NULL, reason);
    rt__panic("%s: goroutine resumed", reason);
}

void rt__chan_buf_put(rt_chan *c, const void *ep)
{
    rt__chan_copy(rt__chan_slot(c, c->sendx), ep, c->elem_size);
    if (++c->sendx == c->cap)
        c->sendx = 0;
    rt__chan_store(&c->count, c->count + 1);
}

void rt__chan_buf_take(rt_chan *c, void *ep)
{
    if (ep != NULL)
        rt__chan_copy(ep, rt__chan_slot(c, c->recvx), c->elem_size);
    if (++c->recvx == c->cap)
        c->recvx = 0;
    rt__chan_store(&c->count, c->count - 1);
}

rt_g *rt__chan_send_to(rt_chan *c, rt__sudog *sg, const void *ep)
{
    if (sg->elem != NULL)
        rt__chan_copy(sg->elem, ep, c->elem_size);
    sg->success = true;
    rt_g *g = sg->g;
    g->param = sg;
    return g;
}

rt_g *rt__chan_recv_from(rt_chan *c, rt__sudog *sg, void *ep)
{
    if (c->cap == 0) {
        if (ep != NULL)
            rt__chan_copy(ep, sg->elem, c->elem_size);
    } else {
        /* The buffer is full: take its head, put the sender's value in
         * the slot just freed, which is now the tail. */
        void *slot = rt__chan_slot(c, c->recvx);
        if (ep != NULL)
            rt__chan_copy(ep, slot, c->elem_size);
        rt__chan_copy(slot, sg->elem, c->elem_size);
        if (++c->recvx == c->cap)
            c->recvx = 0;
        c->sendx = c->recvx;
    }
    sg->success = true;
    rt_g *g = sg->g;
    g->param = sg;
    return g;
}

static rt_g *curg_or_panic(const char *what)
{
    rt_g *g = rt__curg();
    if (RT__UNLIKELY(g == NULL))
        rt__panic("%s outside a goroutine would block", what);
    return g;
}

/* ---------------------------------------------------------- make / free */

/*
 * Make a channel. Caller owns the result and frees it with rt_chan_free()
 * once no goroutine uses it. NULL when elem_size * cap overflows or memory
 * is short.
 */
rt_chan *rt_chan_make(size_t elem_size, size_t cap)
{
    size_t bufsize;
    if (__builtin_mul_overflow(elem_size, cap, &bufsize))
        return NULL;
    size_t hdr = (sizeof(rt_chan) + alignof(max_align_t) - 1) &
                 ~(alignof(max_align_t) - 1);
    if (bufsize > SIZE_MAX - hdr)
        return NULL;
    rt_chan *c = malloc(hdr + bufsize);
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->elem_size = elem_size;
    c->cap = cap;
    c->buf = (char *)c + hdr;
    return c;
}

/* Free c and its buffer. The caller guarantees no goroutine uses it. */
void rt_chan_free(rt_chan *c)
{
    free(c);
}

size_t rt_chan_len(rt_chan *c)
{
    return c == NULL ? 0 : rt__chan_load(&c->count);
}

size_t rt_chan_cap(rt_chan *c)
{
    return c == NULL ? 0 : c->cap;
}

/* ------------------------------------------------------------------ send */

/* Without the lock: would a send block right now? (Go's full()) */
static inline bool chan_full(rt_chan *c)
{
    if (c->cap == 0)
        return rt__chan_load(&c->recvq.first) == NULL;
    return rt__chan_load(&c->count) == c->cap;
}

/* Without the lock: would a receive block right now? (Go's empty()) */
static inline bool chan_empty(rt_chan *c)
{
    if (c->cap == 0)
        return rt__chan_load(&c->sendq.first) == NULL;
    return rt__chan_load(&c->count) == 0;
}

/*
 * Go's chansend. With block false it never parks and returns whether the
 * value was sent. Aborts on a closed channel either way.
 */
static bool chan_send(rt_chan *c, const void *ep, bool block)
{
    if (c == NULL) {
        if (!block)
            return false;
        rt__chan_block_forever("chan send (nil chan)");
    }

    /* Fast path for a failed non-blocking send: not closed and full. As
     * in Go, reading closed after full is what makes the answer
     * linearizable (closed never goes back to 0). */
    if (!block && rt__chan_load(&c->closed) == 0 && chan_full(c))
        return false;

    rt__lock_acquire_hot(&c->lock);
    if (RT__UNLIKELY(c->closed)) {
        rt__lock_release(&c->lock);
        rt__panic("send on closed channel");
    }
    rt__sudog *sg = rt__sudogq_dequeue(&c->recvq);
    if (sg != NULL) {
        rt_g *g = rt__chan_send_to(c, sg, ep);
        rt__lock_release(&c->lock);
        rt__ready(g);
        return true;
    }
    if (c->count < c->cap) {
        rt__chan_buf_put(c, ep);
        rt__lock_release(&c->lock);
        return true;
    }
    if (!block) {
        rt__lock_release(&c->lock);
        return false;
    }

    rt__sudog me = {
        .g = curg_or_panic("chan send"),
        .elem = (void *)ep,
    };
    rt__sudogq_enqueue(&c->sendq, &me);
    rt__park(unlock_chan, &c->lock, "chan send");
    /* Woken by a receiver (success) or by close. */
    if (RT__UNLIKELY(!me.success))
        rt__panic("send on closed channel");
    return true;
}

void rt_chan_send(rt_chan *c, const void *elem)
{
    chan_send(c, elem, true);
}

bool rt_chan_trysend(rt_chan *c, const void *elem)
{
    return chan_send(c, elem, false);
}

/* --------------------------------------------------------------- receive */

static inline void set_ok(bool *ok, bool v)
{
    if (ok != NULL)
        *ok = v;
}

static inline void zero_elem(rt_chan *c, void *ep)
{
    if (ep != NULL && c->elem_size != 0)
        memset(ep, 0, c->elem_size);
}

/*
 * Go's chanrecv. With block false it never parks and returns whether it
 * received (a closed, drained channel counts: *ok = false, zero value).
 */
static bool chan_recv(rt_chan *c, void *ep, bool *ok, bool block)
{
    if (c == NULL) {
        if (!block)
            return false;
        rt__chan_block_forever("chan receive (nil chan)");
    }

    /* Fast path for a failed non-blocking receive. Observing "empty"
     * first and "not closed" second means it was empty and open at once;
     * if closed, look again: a closed channel stays empty once empty. */
    if (!block && chan_empty(c)) {
        if (rt__chan_load(&c->closed) == 0)
            return false;
        if (chan_empty(c)) {
            rt__chan_close_settled(c);
            zero_elem(c, ep);
            set_ok(ok, false);
            return true;
        }
    }

    rt__lock_acquire_hot(&c->lock);
    if (c->closed) {
        if (c->count == 0) {
            rt__lock_release(&c->lock);
            zero_elem(c, ep);
            set_ok(ok, false);
            return true;
        }
        /* Closed but with values left: drain the buffer below. */
    } else {
        rt__sudog *sg = rt__sudogq_dequeue(&c->sendq);
        if (sg != NULL) {
            rt_g *g = rt__chan_recv_from(c, sg, ep);
            rt__lock_release(&c->lock);
            rt__ready(g);
            set_ok(ok, true);
            return true;
        }
    }
    if (c->count > 0) {
        rt__chan_buf_take(c, ep);
        rt__lock_release(&c->lock);
        set_ok(ok, true);
        return true;
    }
    if (!block) {
        rt__lock_release(&c->lock);
        return false;
    }

    rt__sudog me = {
        .g = curg_or_panic("chan receive"),
        .elem = ep,
    };
    rt__sudogq_enqueue(&c->recvq, &me);
    rt__park(unlock_chan, &c->lock, "chan receive");
    /* Woken by a sender (value in *ep) or by close (*ep zeroed). */
    set_ok(ok, me.success);
    return true;
}

void rt_chan_recv(rt_chan *c, void *elem, bool *ok)
{
    chan_recv(c, elem, ok, true);
}

bool rt_chan_tryrecv(rt_chan *c, void *elem, bool *ok)
{
    return chan_recv(c, elem, ok, false);
}

/* ----------------------------------------------------------------- close */

/*
 * Go's closechan. Every waiter is dequeued under the lock (select waiters
 * only when we win their select_done CAS) and chained through its sudog's
 * next link; they are readied after the lock is dropped. The chain is
 * read before each rt__ready(): once readied, a goroutine may run and
 * its stack, which holds its sudog, may change.
 */
void rt_chan_close(rt_chan *c)
{
    if (c == NULL)
        rt__panic("close of nil channel");

    rt__lock_acquire_hot(&c->lock);
    if (c->closed) {
        rt__lock_release(&c->lock);
        rt__panic("close of closed channel");
    }
    rt__chan_store(&c->closed, 1);

    rt__sudog *wake = NULL, *tail = NULL, *sg;
    while ((sg = rt__sudogq_dequeue(&c->recvq)) != NULL) {
        if (sg->elem != NULL && c->elem_size != 0)
            memset(sg->elem, 0, c->elem_size);
        sg->success = false;
        sg->g->param = sg;
        if (tail != NULL)
            tail->next = sg;
        else
            wake = sg;
        tail = sg;
    }
    while ((sg = rt__sudogq_dequeue(&c->sendq)) != NULL) {
        sg->success = false;
        sg->g->param = sg;
        if (tail != NULL)
            tail->next = sg;
        else
            wake = sg;
        tail = sg;
    }
    rt__lock_release(&c->lock);

    while (wake != NULL) {
        sg = wake;
        wake = sg->next;
        rt_g *g = sg->g;
        sg->next = NULL;
        rt__ready(g);
    }
}
