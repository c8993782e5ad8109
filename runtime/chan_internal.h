/*
 * chan_internal.h - what chan.c and select.c share: the channel struct,
 * the sudog (a goroutine waiting on a channel) and the wait queue code.
 * See the top of chan.c for the design; this header only holds what both
 * files need.
 *
 * Fields that are read without the channel lock (the non-blocking fast
 * paths and rt_chan_len) are written with rt__chan_store() and read with
 * rt__chan_load(): plain moves on x86-64, but they keep the fast paths
 * well defined and ThreadSanitizer-clean. Under c->lock plain reads are
 * fine, since every write happens under the lock.
 */
#ifndef FANFOLD_CHAN_INTERNAL_H
#define FANFOLD_CHAN_INTERNAL_H

#include "rt_internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define rt__chan_load(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define rt__chan_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/*
 * A sudog is one goroutine waiting in one channel queue (Go's sudog). It
 * lives on the waiting goroutine's stack, which is safe because that
 * goroutine stays parked while the sudog is queued: whoever dequeues it
 * is the only one allowed to wake the goroutine, and does so last.
 *
 * A goroutine blocked in a select has one sudog per case, all with
 * is_select set; the first waker to CAS g->select_done 0 -> 1 owns the
 * wake-up, every other waker that dequeues one of its sudogs drops it.
 */
typedef struct rt__sudog rt__sudog;
struct rt__sudog {
    rt_g *g;
    rt__sudog *next, *prev; /* queue links; both NULL when not queued */
    void *elem;             /* data to send or where to receive; may be
                               NULL for a receive that discards */
    uint32_t case_idx;      /* select: the index of its case */
    bool is_select;
    bool success; /* set by the waker: true for a completed transfer,
                     false when woken by close */
};

/* FIFO of sudogs. first is also read without the lock (rt__chan_load). */
typedef struct rt__sudogq {
    rt__sudog *first, *last;
} rt__sudogq;

/*
 * The channel. lock protects every field except elem_size, cap and buf
 * (immutable after rt_chan_make). count, closed and the two queues' first
 * pointers are also read without the lock by the non-blocking fast paths.
 */
struct rt_chan {
    rt__lock lock;
    uint32_t closed;  /* 0 or 1; never goes back to 0 */
    size_t count;     /* elements in buf */
    size_t sendx;     /* next slot to write in buf */
    size_t recvx;     /* next slot to read from buf */
    rt__sudogq recvq; /* blocked receivers */
    rt__sudogq sendq; /* blocked senders */
    size_t elem_size;
    size_t cap;
    char *buf; /* cap * elem_size bytes, right after the struct */
};

/*
 * A lock-free path saw c closed (and drained) and is about to say so. The
 * closer stores closed under c->lock and goes on touching c until it
 * releases it; a goroutine told "closed" may free c at once (the owner
 * rule: the receiver of a close frees the channel). So wait for that
 * release: one acquire and release of the lock, which also orders the
 * closer's writes before ours. Only paths that report a close pay it.
 */
static inline void rt__chan_close_settled(rt_chan *c)
{
    rt__lock_acquire_hot(&c->lock);
    rt__lock_release(&c->lock);
}

/* Copy one element; elem sizes of 4, 8 and 16 bytes get inline moves. */
static inline void rt__chan_copy(void *dst, const void *src, size_t size)
{
    switch (size) {
    case 0:
        return;
    case 4:
        memcpy(dst, src, 4);
        return;
    case 8:
        memcpy(dst, src, 8);
        return;
    case 16:
        memcpy(dst, src, 16);
        return;
    default:
        memcpy(dst, src, size);
    }
}

static inline void *rt__chan_slot(rt_chan *c, size_t i)
{
    return c->buf + i * c->elem_size;
}

static inline void rt__sudogq_enqueue(rt__sudogq *q, rt__sudog *sg)
{
    sg->next = NULL;
    sg->prev = q->last;
    if (q->last != NULL)
        q->last->next = sg;
    else
        rt__chan_store(&q->first, sg);
    q->last = sg;
}

/*
 * Remove and return the first sudog whose goroutine we may wake, or NULL.
 * A sudog of a select that another waker already won (the select_done CAS
 * fails) is unlinked and skipped: its goroutine removes its other sudogs
 * itself once it runs (rt__sudogq_remove).
 */
static inline rt__sudog *rt__sudogq_dequeue(rt__sudogq *q)
{
    for (;;) {
        rt__sudog *sg = q->first;
        if (sg == NULL)
            return NULL;
        rt__sudog *y = sg->next;
        if (y == NULL) {
            rt__chan_store(&q->first, (rt__sudog *)NULL);
            q->last = NULL;
        } else {
            y->prev = NULL;
            rt__chan_store(&q->first, y);
            sg->next = NULL;
        }
        if (sg->is_select) {
            uint32_t zero = 0;
            if (!atomic_compare_exchange_strong(&sg->g->select_done, &zero, 1))
                continue;
        }
        return sg;
    }
}

/*
 * Unlink sg if it is still queued in q (Go's dequeueSudoG). A sudog that
 * a waker already dequeued has next == prev == NULL and is not q->first.
 */
static inline void rt__sudogq_remove(rt__sudogq *q, rt__sudog *sg)
{
    rt__sudog *x = sg->prev, *y = sg->next;
    if (x != NULL) {
        if (y != NULL) {
            x->next = y;
            y->prev = x;
            sg->next = NULL;
        } else {
            x->next = NULL;
            q->last = x;
        }
        sg->prev = NULL;
        return;
    }
    if (y != NULL) {
        y->prev = NULL;
        rt__chan_store(&q->first, y);
        sg->next = NULL;
        return;
    }
    if (q->first == sg) {
        rt__chan_store(&q->first, (rt__sudog *)NULL);
        q->last = NULL;
    }
}

/*
 * The transfers both files perform with c->lock held (and, in select,
 * every other case's lock too). Each returns the goroutine to wake; the
 * caller drops its locks first and then calls rt__ready() on it.
 *
 * rt__chan_send_to: hand *ep to the receiver sg (dequeued from recvq).
 * rt__chan_recv_from: take a value from the sender sg (dequeued from
 * sendq) into ep (may be NULL): straight from the sender when unbuffered,
 * else from the head of the full buffer, the sender's value taking the
 * freed tail slot so the order stays FIFO.
 */
rt_g *rt__chan_send_to(rt_chan *c, rt__sudog *sg, const void *ep);
rt_g *rt__chan_recv_from(rt_chan *c, rt__sudog *sg, void *ep);

/* Buffer operations; c->lock held, the buffer not full / not empty. */
void rt__chan_buf_put(rt_chan *c, const void *ep);
void rt__chan_buf_take(rt_chan *c, void *ep);

/* Park the calling goroutine for good (nil channel, empty select). */
_Noreturn void rt__chan_block_forever(const char *reason);

#endif /* FANFOLD_CHAN_INTERNAL_H */
