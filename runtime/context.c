/*
 * context.c - cancellation trees with deadlines and values (Go's context).
 *
 * Node kinds:
 *   BACKGROUND  the static root: never done, no done channel, not counted;
 *   CANCEL      can be cancelled; has an err, a lazily made done channel, a
 *               list of registered children and, for a deadline, a timer;
 *   VALUE       a key/value pair; not cancellable itself: err and done are
 *               those of its nearest CANCEL ancestor (n->anc), as in Go.
 *
 * Fields are immutable after creation except:
 *   refs                         atomic;
 *   err                          written once (0 -> error) under n->lk,
 *                                read with an acquire load anywhere;
 *   done                         made once under n->lk, read with an
 *                                acquire load anywhere;
 *   children                     under n->lk;
 *   sib_prev, sib_next, in_list  under n->anc->lk (the list they are in);
 *   stack_next                   only by the canceller that holds n->lk.
 *
 * Registration. A CANCEL node whose path to the root has a CANCEL ancestor
 * is linked into the children list of the nearest one, n->anc (for a child
 * of a VALUE node that is the value node's anc, not its parent; a child of
 * the background or a VALUE chain under it registers nowhere). Being in a
 * list holds no reference. Each node holds one reference on its parent
 * (n->parent, which may differ from n->anc), so n->anc outlives n.
 *
 * Cancellation (cancel_tree). Under n->lk: if err is set, someone else
 * owns the job and we return; else set err, close the done channel if it
 * exists (each close happens in the critical section that set err, so it
 * happens exactly once), and walk the subtree. The walk is an iterative
 * depth-first search whose stack is linked through the nodes (stack_next):
 * a node stays locked while it is on the stack; the walk pops its first
 * child off its list (in_list = false), locks the child, marks it done the
 * same way and pushes it; a node whose list is empty is unlocked and
 * popped. No recursion, so a 10,000-deep chain costs no stack. Finally the
 * node is unlinked from its own anc's list, after every lock was released.
 * Nothing is freed during the walk and no reference changes hands, so the
 * walk may run in a timer callback (scheduler context): it only takes
 * rt__locks and closes channels, which never parks.
 *
 * Lifetime. Every caller of an rt_ctx_* function must hold a reference for
 * the duration of the call (a goroutine that cancels a context it did not
 * create takes its own with rt_ctx_ref). A VALUE node cannot be cancelled:
 * rt_ctx_cancel on it does nothing and rt_ctx_release just drops the
 * reference, as Go's WithValue has no cancel function.
 * A node is freed when its last reference goes (ctx_destroy):
 * first it takes n->anc->lk and unlinks itself if still listed, then it
 * stops its timer (rt__timer_stop waits for a running callback), frees the
 * done channel and the node, and drops its reference on the parent (in a
 * loop, not recursively). A walk can only reach a node through its anc's
 * list while holding anc->lk, and it releases anc->lk only after it is done
 * with the node, so ctx_destroy cannot free a node a walk is touching.
 * The timer callback can touch a node until rt__timer_stop returns, and
 * since it never drops a reference, no node is ever freed in a callback.
 *
 * Lock order: parent's lock before child's lock (the walk holds the locks
 * of the path from its root to the current node, top down); everything
 * else holds a single context lock at a time. A done channel is closed with
 * its node's lock held (Go does the same): chan.c never calls into this
 * file, so the context lock -> channel lock edge cannot close a cycle.
 * The timer heap lock is never taken with a context lock held.
 */
#include "rt_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum ctx_kind { CTX_BACKGROUND, CTX_CANCEL, CTX_VALUE };

struct rt_ctx {
    enum ctx_kind kind;
    _Atomic long refs;
    rt_ctx *parent;   /* holds a reference; NULL for the background */
    rt_ctx *anc;      /* nearest CANCEL ancestor, or NULL */
    int64_t deadline; /* earliest on the path to the root */

    /* VALUE */
    const void *key;
    void *value;

    /* CANCEL */
    rt__lock lk;
    _Atomic int err;
    rt_chan *_Atomic done;
    rt_ctx *children;            /* first registered child */
    rt_ctx *sib_prev, *sib_next; /* in anc's children list */
    bool in_list;                /* linked in anc's children list */
    rt_ctx *stack_next;          /* cancel_tree's stack */
    bool has_timer;
    rt__timer timer;
    rt__ctx_watch *watchers; /* under lk; called once by mark_done */
};

static rt_ctx background = {
    .kind = CTX_BACKGROUND,
    .deadline = RT_FOREVER,
};

rt_ctx *rt_ctx_background(void)
{
    return &background;
}

/* ------------------------------------------------------------ done, err */

/* Set err and close the done channel if any; n->lk held, err was 0. */
static void mark_done(rt_ctx *n, int err)
{
    atomic_store_explicit(&n->err, err, memory_order_release);
    rt_chan *d = atomic_load_explicit(&n->done, memory_order_relaxed);
    if (d)
        rt_chan_close(d);
    while (n->watchers != NULL) {
        rt__ctx_watch *w = n->watchers;
        n->watchers = w->next;
        w->linked = false;
        w->fn(w, err);
    }
}

/* ------------------------------------------------------------- watchers */

static rt_ctx *canceller_of(rt_ctx *ctx);

/*
 * Watchers are how a goroutine parked on something other than a channel
 * (an fd in the netpoller) learns that its context is done: Go's
 * context.AfterFunc, minus the goroutine. fn runs under the canceller
 * node's lock, so rt__ctx_watch_del() taking that lock knows fn is not
 * running afterwards.
 */
int rt__ctx_watch_add(rt_ctx *ctx, rt__ctx_watch *w)
{
    rt_ctx *n = ctx != NULL ? canceller_of(ctx) : NULL;
    w->node = n;
    w->linked = false;
    if (n == NULL)
        return 0;
    rt__lock_acquire(&n->lk);
    int err = atomic_load_explicit(&n->err, memory_order_relaxed);
    if (err == 0) {
        w->next = n->watchers;
        w->prev = NULL;
        if (n->watchers != NULL)
            n->watchers->prev = w;
        n->watchers = w;
        w->linked = true;
    }
    rt__lock_release(&n->lk);
    return err;
}

void rt__ctx_watch_del(rt__ctx_watch *w)
{
    rt_ctx *n = w->node;
    if (n == NULL)
        return;
    rt__lock_acquire(&n->lk);
    if (w->linked) {
        if (w->prev != NULL)
            w->prev->next = w->next;
        else
            n->watchers = w->next;
        if (w->next != NULL)
            w->next->prev = w->prev;
        w->linked = false;
    }
    rt__lock_release(&n->lk);
}

/* Make the done channel, closed already when n is done. n->lk held. */
static rt_chan *make_done(rt_ctx *n)
{
    rt_chan *d = rt_chan_make(1, 0);
    if (!d)
        rt__panic("context: out of memory for a done channel");
    if (atomic_load_explicit(&n->err, memory_order_relaxed))
        rt_chan_close(d);
    atomic_store_explicit(&n->done, d, memory_order_release);
    return d;
}

/* The CANCEL node that decides err and done for ctx, or NULL. */
static rt_ctx *canceller_of(rt_ctx *ctx)
{
    return ctx->kind == CTX_CANCEL ? ctx : ctx->anc;
}

rt_chan *rt_ctx_done(rt_ctx *ctx)
{
    rt_ctx *n = canceller_of(ctx);
    if (!n)
        return NULL;
    rt_chan *d = atomic_load_explicit(&n->done, memory_order_acquire);
    if (RT__LIKELY(d != NULL))
        return d;
    rt__lock_acquire(&n->lk);
    d = atomic_load_explicit(&n->done, memory_order_relaxed);
    if (!d)
        d = make_done(n);
    rt__lock_release(&n->lk);
    return d;
}

int rt_ctx_err(rt_ctx *ctx)
{
    rt_ctx *n = canceller_of(ctx);
    return n ? atomic_load_explicit(&n->err, memory_order_acquire) : 0;
}

int64_t rt_ctx_deadline(rt_ctx *ctx)
{
    return ctx->deadline;
}

void *rt_ctx_value(rt_ctx *ctx, const void *key)
{
    for (; ctx; ctx = ctx->parent)
        if (ctx->kind == CTX_VALUE && ctx->key == key)
            return ctx->value;
    return NULL;
}

/* --------------------------------------------------------- children list */

/* Link n into anc's list; anc->lk held. */
static void list_add(rt_ctx *anc, rt_ctx *n)
{
    n->sib_prev = NULL;
    n->sib_next = anc->children;
    if (anc->children)
        anc->children->sib_prev = n;
    anc->children = n;
    n->in_list = true;
}

/* Unlink n from anc's list; anc->lk held, n->in_list. */
static void list_del(rt_ctx *anc, rt_ctx *n)
{
    if (n->sib_prev)
        n->sib_prev->sib_next = n->sib_next;
    else
        anc->children = n->sib_next;
    if (n->sib_next)
        n->sib_next->sib_prev = n->sib_prev;
    n->sib_prev = n->sib_next = NULL;
    n->in_list = false;
}

static void detach(rt_ctx *n)
{
    rt_ctx *anc = n->anc;
    if (!anc)
        return;
    rt__lock_acquire(&anc->lk);
    if (n->in_list)
        list_del(anc, n);
    rt__lock_release(&anc->lk);
}

/* ------------------------------------------------------------ cancelling */

/*
 * Cancel n and its subtree with err, then unlink n from its anc. n must be
 * kept alive by the caller (a reference, or being n's running timer
 * callback). Never parks. See the top of the file.
 */
static void cancel_tree(rt_ctx *n, int err)
{
    rt__lock_acquire(&n->lk);
    if (atomic_load_explicit(&n->err, memory_order_relaxed)) {
        rt__lock_release(&n->lk);
        return;
    }
    mark_done(n, err);
    n->stack_next = NULL;

    rt_ctx *top = n;
    while (top) {
        rt_ctx *c = top->children;
        if (!c) {
            rt_ctx *below = top->stack_next;
            rt__lock_release(&top->lk);
            top = below;
            continue;
        }
        list_del(top, c);
        rt__lock_acquire(&c->lk);
        if (atomic_load_explicit(&c->err, memory_order_relaxed)) {
            /* Already done: whoever set err emptied c's list before
             * releasing c->lk, and nothing registers under a done node. */
            rt__lock_release(&c->lk);
            continue;
        }
        mark_done(c, err);
        c->stack_next = top;
        top = c;
    }
    detach(n);
}

void rt_ctx_cancel(rt_ctx *ctx)
{
    if (ctx->kind == CTX_CANCEL)
        cancel_tree(ctx, -ECANCELED);
}

static void deadline_fired(rt__timer *t)
{
    cancel_tree(t->arg, -ETIMEDOUT);
}

/* ----------------------------------------------------- references, freeing */

rt_ctx *rt_ctx_ref(rt_ctx *ctx)
{
    if (ctx->kind != CTX_BACKGROUND)
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

/* Free n, whose last reference is gone; returns its parent to unref. */
static rt_ctx *ctx_destroy(rt_ctx *n)
{
    rt_ctx *parent = n->parent;
    if (n->kind == CTX_CANCEL) {
        detach(n);
        if (n->has_timer)
            rt__timer_stop(&n->timer);
        rt_chan *d = atomic_load_explicit(&n->done, memory_order_acquire);
        if (d)
            rt_chan_free(d);
    }
    free(n);
    return parent;
}

void rt_ctx_unref(rt_ctx *ctx)
{
    while (ctx && ctx->kind != CTX_BACKGROUND) {
        long was =
            atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel);
        if (was > 1)
            return;
        if (RT__UNLIKELY(was < 1))
            rt__panic("context: unref of a released context %p", (void *)ctx);
        ctx = ctx_destroy(ctx);
    }
}

void rt_ctx_release(rt_ctx *ctx)
{
    rt_ctx_cancel(ctx);
    rt_ctx_unref(ctx);
}

/* ------------------------------------------------------------- creating */

static rt_ctx *ctx_alloc(rt_ctx *parent, enum ctx_kind kind)
{
    if (!parent)
        rt__panic("context: cannot create a context from a NULL parent");
    rt_ctx *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    atomic_init(&n->refs, 1);
    n->parent = rt_ctx_ref(parent);
    n->anc = canceller_of(parent);
    n->deadline = parent->deadline;
    return n;
}

/*
 * Make a CANCEL node under parent. deadline < parent's deadline arms a
 * timer; a later one is the parent's (Go's WithDeadline does the same).
 * Caller owns the result.
 */
static rt_ctx *new_cancel(rt_ctx *parent, int64_t deadline)
{
    rt_ctx *n = ctx_alloc(parent, CTX_CANCEL);
    if (!n)
        return NULL;
    atomic_init(&n->err, 0);
    atomic_init(&n->done, NULL);
    bool timed = deadline < n->deadline;
    if (timed)
        n->deadline = deadline;

    /* Register, or inherit the err of a parent that is done already. */
    rt_ctx *anc = n->anc;
    int err = 0;
    if (anc) {
        rt__lock_acquire(&anc->lk);
        err = atomic_load_explicit(&anc->err, memory_order_relaxed);
        if (!err)
            list_add(anc, n);
        rt__lock_release(&anc->lk);
    }
    if (err) {
        atomic_store_explicit(&n->err, err, memory_order_relaxed);
        return n;
    }
    if (timed) {
        if (deadline <= rt_now())
            cancel_tree(n, -ETIMEDOUT);
        else {
            rt__timer_init(&n->timer, deadline_fired, n);
            rt__timer_start(&n->timer, deadline);
            n->has_timer = true;
        }
    }
    return n;
}

rt_ctx *rt_ctx_with_cancel(rt_ctx *parent)
{
    return new_cancel(parent, RT_FOREVER);
}

rt_ctx *rt_ctx_with_deadline(rt_ctx *parent, int64_t deadline)
{
    return new_cancel(parent, deadline);
}

rt_ctx *rt_ctx_with_timeout(rt_ctx *parent, int64_t timeout)
{
    int64_t now = rt_now();
    int64_t deadline = timeout > RT_FOREVER - now ? RT_FOREVER : now + timeout;
    return new_cancel(parent, deadline);
}

rt_ctx *rt_ctx_with_value(rt_ctx *parent, const void *key, void *value)
{
    rt_ctx *n = ctx_alloc(parent, CTX_VALUE);
    if (!n)
        return NULL;
    n->key = key;
    n->value = value;
    return n;
}

/* ---------------------------------------------------------------- errors */

const char *rt_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case -ETIMEDOUT:
        return "deadline exceeded";
    case -ECANCELED:
        return "context canceled";
    case -EAGAIN:
        return "operation would block";
    case -EBADF:
        return "use of closed connection";
    case -EBUSY:
        return "another goroutine is already waiting on it";
    default:
        return strerror(err < 0 ? -err : err);
    }
}
