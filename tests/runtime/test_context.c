/*
 * test_context.c - rt_ctx: cancel, deadlines, values, trees, references.
 *
 * Each test runs its body as the main goroutine of rt_run(). cmocka's
 * assertions longjmp, which must not happen on a goroutine stack, so
 * goroutines record failures with CHECK() and the test asserts after
 * rt_run() returned. Leaks are left to AddressSanitizer (make test-asan):
 * every test releases every context it made.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#include "../rt_check.h"

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

/* A context key nothing else uses: keys compare by address. */
static const char unused_key;

/* True when ctx's done channel is closed (a receive does not block). */
static bool is_closed(rt_ctx *ctx)
{
    rt_chan *d = rt_ctx_done(ctx);
    bool ok = true;
    if (d == NULL)
        return false;
    if (!rt_chan_tryrecv(d, NULL, &ok))
        return false;
    return !ok;
}

/* Yield until *v >= min; CHECK-fails after 10 s. */
static void wait_atleast(_Atomic long *v, long min)
{
    int64_t end = rt_now() + 10 * RT_SEC;
    while (atomic_load(v) < min) {
        if (rt_now() > end) {
            CHECK(!"counter never reached its minimum");
            return;
        }
        rt_yield();
    }
}

/*
 * Wait (CHECK-failing after 10 s) until ctx's done channel is closed. A
 * cancel closes a node's channel before its walk reaches the node's
 * subtree, so a descendant's err is read only once its own channel closed.
 */
static void wait_done(rt_ctx *ctx)
{
    rt_case c = RT_RECV_CASE(rt_ctx_done(ctx), NULL);
    CHECK(rt_select_timeout(&c, 1, 10 * RT_SEC) == 0);
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint32_t)(rnd_state % n);
}

/* ------------------------------------------------------------ background */

static void background_main(void *arg)
{
    (void)arg;
    rt_ctx *bg = rt_ctx_background();
    CHECK(bg == rt_ctx_background());
    CHECK(rt_ctx_done(bg) == NULL);
    CHECK(rt_ctx_err(bg) == 0);
    CHECK(rt_ctx_deadline(bg) == RT_FOREVER);
    CHECK(rt_ctx_value(bg, &unused_key) == NULL);
    rt_ctx_cancel(bg); /* no effect */
    CHECK(rt_ctx_err(bg) == 0);
    CHECK(rt_ctx_ref(bg) == bg);
    rt_ctx_unref(bg);
    rt_ctx_release(bg);
    CHECK(rt_ctx_err(bg) == 0);
}

static void test_background(void **state)
{
    (void)state;
    run(2, background_main, NULL);
}

/* ---------------------------------------------------------------- cancel */

static void cancel_main(void *arg)
{
    (void)arg;
    rt_ctx *ctx = rt_ctx_with_cancel(rt_ctx_background());
    CHECK(ctx != NULL);
    CHECK(rt_ctx_err(ctx) == 0);
    CHECK(rt_ctx_deadline(ctx) == RT_FOREVER);
    rt_chan *d = rt_ctx_done(ctx);
    CHECK(d != NULL);
    CHECK(rt_ctx_done(ctx) == d); /* one channel, made once */
    CHECK(!is_closed(ctx));

    rt_ctx_cancel(ctx);
    bool ok = true;
    rt_chan_recv(d, NULL, &ok);
    CHECK(!ok);
    CHECK(rt_ctx_err(ctx) == -ECANCELED);

    rt_ctx_cancel(ctx); /* harmless: no second close, err unchanged */
    CHECK(rt_ctx_err(ctx) == -ECANCELED);
    CHECK(rt_ctx_done(ctx) == d);
    ok = true;
    rt_chan_recv(d, NULL, &ok);
    CHECK(!ok);
    rt_ctx_release(ctx);

    /* Done channel asked for only after the cancel: made closed. */
    ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_ctx_cancel(ctx);
    CHECK(is_closed(ctx));
    rt_ctx_release(ctx);

    /* Release without an explicit cancel, never asking for done. */
    rt_ctx_release(rt_ctx_with_cancel(rt_ctx_background()));
}

static void test_cancel(void **state)
{
    (void)state;
    run(2, cancel_main, NULL);
}

/* -------------------------------------------------------------- timeout */

struct timeout_res {
    int64_t elapsed;
    int err;
};

static void timeout_main(void *arg)
{
    struct timeout_res *r = arg;
    int64_t t0 = rt_now();
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 20 * RT_MSEC);
    int64_t dl = rt_ctx_deadline(ctx);
    CHECK(dl >= t0 + 20 * RT_MSEC && dl <= rt_now() + 20 * RT_MSEC);
    CHECK(rt_ctx_err(ctx) == 0);
    bool ok = true;
    rt_chan_recv(rt_ctx_done(ctx), NULL, &ok);
    r->elapsed = rt_now() - t0;
    CHECK(!ok);
    r->err = rt_ctx_err(ctx);
    rt_ctx_cancel(ctx); /* after the deadline: err stays */
    CHECK(rt_ctx_err(ctx) == -ETIMEDOUT);
    rt_ctx_release(ctx);

    /* A deadline already passed: done at once. */
    ctx = rt_ctx_with_deadline(rt_ctx_background(), rt_now() - RT_MSEC);
    CHECK(rt_ctx_err(ctx) == -ETIMEDOUT);
    CHECK(is_closed(ctx));
    rt_ctx_release(ctx);
    ctx = rt_ctx_with_timeout(rt_ctx_background(), 0);
    CHECK(rt_ctx_err(ctx) == -ETIMEDOUT);
    rt_ctx_release(ctx);

    /* A huge timeout does not overflow into the past. */
    ctx = rt_ctx_with_timeout(rt_ctx_background(), RT_FOREVER);
    CHECK(rt_ctx_err(ctx) == 0);
    CHECK(rt_ctx_deadline(ctx) == RT_FOREVER);
    rt_ctx_release(ctx);
}

static void test_timeout(void **state)
{
    (void)state;
    /* Tolerance: never early; late by at most 230 ms (sanitizers, CI). A
     * late run is retried once (a loaded machine); an early one fails. */
    for (int attempt = 0; attempt < 2; attempt++) {
        struct timeout_res r = {0};
        run(2, timeout_main, &r);
        assert_int_equal(r.err, -ETIMEDOUT);
        if (r.elapsed >= 20 * RT_MSEC && r.elapsed < 250 * RT_MSEC)
            return;
        if (r.elapsed < 20 * RT_MSEC || attempt == 1)
            fail_msg("timeout fired after %lld us, want [20, 250) ms",
                     (long long)(r.elapsed / RT_USEC));
        print_message("timeout fired after %lld us, retrying\n",
                      (long long)(r.elapsed / RT_USEC));
    }
}

/* --------------------------------------------- cancel racing a deadline */

struct race {
    rt_ctx *ctx;
    rt_waitgroup wg;
    _Atomic long go;
};

static void race_canceller(void *arg)
{
    struct race *r = arg;
    wait_atleast(&r->go, 1); /* yields: let main run to start the race */
    rt_ctx_cancel(r->ctx);
    rt_waitgroup_done(&r->wg);
}

static void race_waiter(void *arg)
{
    struct race *r = arg;
    rt_case c = RT_RECV_CASE(rt_ctx_done(r->ctx), NULL);
    CHECK(rt_select(&c, 1) == 0);
    CHECK(!c.ok);
    rt_waitgroup_done(&r->wg);
}

static void race_main(void *arg)
{
    int *counts = arg; /* [0] cancelled, [1] timed out */
    for (int i = 0; i < 2000; i++) {
        struct race r = {.wg = RT_WAITGROUP_INIT};
        int64_t timeout = (int64_t)rnd(100) * RT_USEC;
        r.ctx = rt_ctx_with_timeout(rt_ctx_background(), timeout);
        rt_chan *d = rt_ctx_done(r.ctx);
        rt_waitgroup_add(&r.wg, 3);
        rt_go(race_waiter, &r);
        rt_go(race_canceller, &r);
        rt_go(race_canceller, &r);
        /* Release the cancellers at an independent random time in the
         * same 0-100 us window (busy: a sleep would favour the timer). */
        int64_t at = rt_now() + (int64_t)rnd(100) * RT_USEC;
        while (rt_now() < at) {
        }
        atomic_store(&r.go, 1);
        bool ok = true;
        rt_chan_recv(d, NULL, &ok);
        CHECK(!ok);
        int err = rt_ctx_err(r.ctx);
        CHECK(err == -ECANCELED || err == -ETIMEDOUT);
        rt_waitgroup_wait(&r.wg);
        CHECK(rt_ctx_err(r.ctx) == err); /* decided once */
        CHECK(rt_ctx_done(r.ctx) == d);
        counts[err == -ETIMEDOUT]++;
        rt_ctx_release(r.ctx);
    }
}

static void test_cancel_races_deadline(void **state)
{
    (void)state;
    int counts[2] = {0, 0};
    run(2, race_main, counts);
    assert_int_equal(counts[0] + counts[1], 2000);
    print_message("cancelled %d, timed out %d\n", counts[0], counts[1]);
}

/* --------------------------------------------------- child of done parent */

static void done_parent_main(void *arg)
{
    (void)arg;
    static int key;
    rt_ctx *p = rt_ctx_with_cancel(rt_ctx_background());
    rt_ctx_cancel(p);
    rt_ctx *c = rt_ctx_with_cancel(p);
    CHECK(rt_ctx_err(c) == -ECANCELED);
    CHECK(is_closed(c));
    rt_ctx *t = rt_ctx_with_timeout(p, RT_SEC);
    CHECK(rt_ctx_err(t) == -ECANCELED); /* the parent's err, not ours */
    CHECK(is_closed(t));
    rt_ctx *v = rt_ctx_with_value(p, &key, &key);
    CHECK(rt_ctx_err(v) == -ECANCELED);
    CHECK(is_closed(v));
    rt_ctx *vc = rt_ctx_with_cancel(v);
    CHECK(rt_ctx_err(vc) == -ECANCELED);
    rt_ctx_release(vc);
    rt_ctx_release(v);
    rt_ctx_release(t);
    rt_ctx_release(c);
    rt_ctx_release(p);

    /* A timed-out parent passes -ETIMEDOUT down. */
    p = rt_ctx_with_timeout(rt_ctx_background(), 0);
    c = rt_ctx_with_cancel(p);
    CHECK(rt_ctx_err(c) == -ETIMEDOUT);
    rt_ctx_release(p); /* the child keeps it alive */
    CHECK(rt_ctx_err(c) == -ETIMEDOUT);
    rt_ctx_release(c);
}

static void test_child_of_done_parent(void **state)
{
    (void)state;
    run(2, done_parent_main, NULL);
}

/* ------------------------------------------------------- big trees */

#define TREE_N 10000

struct tree {
    rt_ctx *nodes[TREE_N];
    bool deep;  /* a chain instead of random parents */
    bool timed; /* the root has a deadline: the timer callback cancels */
};

/* Owns a reference taken by its spawner: main may release the root
 * before this goroutine's cancel has returned. */
static void tree_cancel_root(void *arg)
{
    rt_ctx *root = arg;
    rt_ctx_cancel(root);
    rt_ctx_unref(root);
}

static void tree_main(void *arg)
{
    struct tree *t = arg;
    static int key;
    rt_ctx *bg = rt_ctx_background();
    /* A timed root fires after the tree is built, even under TSan. */
    t->nodes[0] = t->timed ? rt_ctx_with_timeout(bg, 300 * RT_MSEC)
                           : rt_ctx_with_cancel(bg);
    for (int i = 1; i < TREE_N; i++) {
        rt_ctx *p = t->nodes[t->deep ? i - 1 : (int)rnd((uint32_t)i)];
        switch (rnd(4)) {
        case 0:
            t->nodes[i] = rt_ctx_with_value(p, &key, t->nodes + i);
            break;
        case 1:
            t->nodes[i] = rt_ctx_with_timeout(p, RT_SEC * 3600);
            break;
        default:
            t->nodes[i] = rt_ctx_with_cancel(p);
            break;
        }
        CHECK(t->nodes[i] != NULL);
    }
    /* Ask for some done channels first so that closing them is tested. */
    for (int i = 0; i < TREE_N; i += 3)
        CHECK(t->timed || !is_closed(t->nodes[i]));
    for (int i = 0; i < TREE_N; i++)
        CHECK(rt_ctx_err(t->nodes[i]) == 0 ||
              (t->timed && rt_ctx_err(t->nodes[i]) == -ETIMEDOUT));
    if (t->deep)
        CHECK(rt_ctx_value(t->nodes[TREE_N - 1], &key) != NULL);

    int want = -ECANCELED;
    if (t->timed) {
        /* The deadline's timer cancels the whole tree in scheduler
         * context. */
        rt_chan_recv(rt_ctx_done(t->nodes[TREE_N - 1]), NULL, NULL);
        want = -ETIMEDOUT;
    } else {
        /* Cancel from a goroutine with the default 64 KiB stack. */
        rt_chan *d = rt_ctx_done(t->nodes[TREE_N - 1]);
        rt_go(tree_cancel_root, rt_ctx_ref(t->nodes[0]));
        rt_chan_recv(d, NULL, NULL);
        /* The canceller may still be walking other branches. */
        rt_chan_recv(rt_ctx_done(t->nodes[0]), NULL, NULL);
    }
    for (int i = 0; i < TREE_N; i++) {
        rt_chan *d = rt_ctx_done(t->nodes[i]);
        rt_chan_recv(d, NULL, NULL); /* blocks if not closed */
        CHECK(rt_ctx_err(t->nodes[i]) == want);
        CHECK(is_closed(t->nodes[i]));
    }
    /* Release in random order: references keep parents alive. */
    for (int i = TREE_N - 1; i > 0; i--) {
        int j = (int)rnd((uint32_t)i + 1);
        rt_ctx *x = t->nodes[i];
        t->nodes[i] = t->nodes[j];
        t->nodes[j] = x;
    }
    for (int i = 0; i < TREE_N; i++)
        rt_ctx_release(t->nodes[i]);
}

static void test_tree_random(void **state)
{
    (void)state;
    struct tree *t = calloc(1, sizeof *t);
    assert_non_null(t);
    run(2, tree_main, t);
    free(t);
}

static void test_tree_deep_chain(void **state)
{
    (void)state;
    struct tree *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->deep = true;
    run(2, tree_main, t);
    free(t);
}

static void test_tree_deep_chain_deadline(void **state)
{
    (void)state;
    struct tree *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->deep = true;
    t->timed = true;
    run(2, tree_main, t);
    free(t);
}

/* A 10,000-deep chain freed from the leaf: the unrefs must not recurse. */
static void chain_free_main(void *arg)
{
    (void)arg;
    rt_ctx *c = rt_ctx_background();
    for (int i = 0; i < TREE_N; i++) {
        rt_ctx *n = i % 2 ? rt_ctx_with_cancel(c)
                          : rt_ctx_with_value(c, &unused_key, NULL);
        rt_ctx_unref(c); /* only the child holds it now (no-op for bg) */
        c = n;
    }
    rt_ctx_release(c);
}

static void test_chain_freed_from_leaf(void **state)
{
    (void)state;
    run(2, chain_free_main, NULL);
}

/* ------------------------------------------------------------ subtrees */

static void subtree_main(void *arg)
{
    (void)arg;
    rt_ctx *root = rt_ctx_with_cancel(rt_ctx_background());
    rt_ctx *a = rt_ctx_with_cancel(root);
    rt_ctx *b = rt_ctx_with_timeout(root, RT_SEC * 60);
    rt_ctx *a1 = rt_ctx_with_cancel(a);
    rt_ctx *a2 = rt_ctx_with_value(a, &unused_key, NULL);
    rt_ctx *a21 = rt_ctx_with_cancel(a2);
    rt_ctx *b1 = rt_ctx_with_cancel(b);

    rt_ctx_cancel(a);
    CHECK(rt_ctx_err(a) == -ECANCELED && is_closed(a));
    CHECK(rt_ctx_err(a1) == -ECANCELED && is_closed(a1));
    CHECK(rt_ctx_err(a2) == -ECANCELED && is_closed(a2));
    CHECK(rt_ctx_err(a21) == -ECANCELED && is_closed(a21));
    CHECK(rt_ctx_err(root) == 0 && !is_closed(root));
    CHECK(rt_ctx_err(b) == 0 && !is_closed(b));
    CHECK(rt_ctx_err(b1) == 0 && !is_closed(b1));

    /* a was detached from root: freeing it must not disturb root. */
    rt_ctx_release(a21);
    rt_ctx_release(a2);
    rt_ctx_release(a1);
    rt_ctx_release(a);
    rt_ctx *c = rt_ctx_with_cancel(root); /* root still takes children */
    CHECK(rt_ctx_err(c) == 0);

    rt_ctx_cancel(root);
    CHECK(rt_ctx_err(b) == -ECANCELED && is_closed(b));
    CHECK(rt_ctx_err(b1) == -ECANCELED && is_closed(b1));
    CHECK(rt_ctx_err(c) == -ECANCELED && is_closed(c));
    rt_ctx_release(c);
    rt_ctx_release(b1);
    rt_ctx_release(b);
    rt_ctx_release(root);
}

static void test_subtree_cancel(void **state)
{
    (void)state;
    run(2, subtree_main, NULL);
}

/* ---------------------------------------------------------------- values */

static void values_main(void *arg)
{
    (void)arg;
    static int k1, k2, k3;
    static char va[] = "a", vb[] = "b", vc[] = "c";
    rt_ctx *v1 = rt_ctx_with_value(rt_ctx_background(), &k1, va);
    CHECK(rt_ctx_done(v1) == NULL); /* nothing can cancel it */
    CHECK(rt_ctx_err(v1) == 0);
    rt_ctx *c = rt_ctx_with_cancel(v1);
    rt_ctx *v2 = rt_ctx_with_value(c, &k2, vb);
    rt_ctx *v3 = rt_ctx_with_value(v2, &k1, vc); /* shadows k1 */
    rt_ctx *leaf = rt_ctx_with_timeout(v3, RT_SEC * 60);

    CHECK(rt_ctx_value(leaf, &k1) == vc);
    CHECK(rt_ctx_value(leaf, &k2) == vb);
    CHECK(rt_ctx_value(leaf, &k3) == NULL);
    CHECK(rt_ctx_value(v2, &k1) == va);
    CHECK(rt_ctx_value(c, &k1) == va);
    CHECK(rt_ctx_value(c, &k2) == NULL);
    CHECK(rt_ctx_value(v1, &k1) == va);
    CHECK(rt_ctx_value(rt_ctx_background(), &k1) == NULL);

    /* Value nodes report their nearest cancellable ancestor's state. */
    CHECK(rt_ctx_done(v3) == rt_ctx_done(c));
    rt_ctx_cancel(v3); /* a value node has no cancel of its own */
    CHECK(rt_ctx_err(v3) == 0 && rt_ctx_err(leaf) == 0);
    rt_ctx_cancel(c);
    CHECK(rt_ctx_err(v2) == -ECANCELED && rt_ctx_err(v3) == -ECANCELED);
    CHECK(rt_ctx_err(leaf) == -ECANCELED && is_closed(leaf));
    CHECK(rt_ctx_err(v1) == 0);
    CHECK(rt_ctx_value(leaf, &k1) == vc); /* values survive a cancel */

    rt_ctx_release(v1); /* early: the chain holds references */
    rt_ctx_release(c);
    rt_ctx_release(v2);
    CHECK(rt_ctx_value(leaf, &k1) == vc);
    CHECK(rt_ctx_value(leaf, &k2) == vb);
    rt_ctx_release(v3);
    rt_ctx_release(leaf);
}

static void test_values(void **state)
{
    (void)state;
    run(2, values_main, NULL);
}

/* -------------------------------------------------------------- deadlines */

static void deadline_main(void *arg)
{
    bool *alone = arg;
    int64_t now = rt_now();
    rt_ctx *p = rt_ctx_with_timeout(rt_ctx_background(), 30 * RT_MSEC);
    int64_t pd = rt_ctx_deadline(p);
    CHECK(pd >= now + 30 * RT_MSEC);

    rt_ctx *later = rt_ctx_with_timeout(p, 10 * RT_SEC);
    CHECK(rt_ctx_deadline(later) == pd); /* keeps the parent's */
    rt_ctx *later_abs = rt_ctx_with_deadline(p, pd + RT_SEC);
    CHECK(rt_ctx_deadline(later_abs) == pd);
    rt_ctx *sooner = rt_ctx_with_deadline(p, pd - 20 * RT_MSEC);
    CHECK(rt_ctx_deadline(sooner) == pd - 20 * RT_MSEC);
    rt_ctx *v = rt_ctx_with_value(sooner, &unused_key, NULL);
    CHECK(rt_ctx_deadline(v) == pd - 20 * RT_MSEC);
    rt_ctx *c = rt_ctx_with_cancel(v);
    CHECK(rt_ctx_deadline(c) == pd - 20 * RT_MSEC);

    /* The sooner one fires first, alone: p's deadline is 20 ms later (a
     * timing check: the test retries once). */
    rt_chan_recv(rt_ctx_done(sooner), NULL, NULL);
    *alone = rt_ctx_err(p) == 0 && rt_ctx_err(later) == 0;
    CHECK(rt_now() >= pd - 20 * RT_MSEC);
    CHECK(rt_ctx_err(sooner) == -ETIMEDOUT);
    wait_done(c);
    CHECK(rt_ctx_err(c) == -ETIMEDOUT);

    /* Then the parent's, which the later child inherited (later has no
     * timer of its own: p's cancel set p's err before closing later's
     * channel). */
    rt_chan_recv(rt_ctx_done(later), NULL, NULL);
    CHECK(rt_now() >= pd);
    CHECK(rt_ctx_err(p) == -ETIMEDOUT);
    CHECK(rt_ctx_err(later) == -ETIMEDOUT);
    wait_done(later_abs);
    CHECK(rt_ctx_err(later_abs) == -ETIMEDOUT);

    rt_ctx_release(c);
    rt_ctx_release(v);
    rt_ctx_release(sooner);
    rt_ctx_release(later_abs);
    rt_ctx_release(later);
    rt_ctx_release(p);
}

static void test_deadline_inheritance(void **state)
{
    (void)state;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool alone = false;
        run(2, deadline_main, &alone);
        if (alone)
            return;
        print_message("the parent was done too when the sooner deadline "
                      "was seen%s\n",
                      attempt == 0 ? ", retrying" : "");
    }
    fail_msg("the sooner deadline did not fire alone, twice");
}

/* ------------------------------------------------------------ references */

static void refs_main(void *arg)
{
    (void)arg;
    static int key;
    rt_ctx *p = rt_ctx_with_timeout(rt_ctx_background(), RT_SEC * 60);
    rt_ctx *c = rt_ctx_with_value(p, &key, &key);
    rt_ctx *gc = rt_ctx_with_cancel(c);
    CHECK(rt_ctx_ref(gc) == gc);

    /* Dropping the parents' own references keeps them alive for gc. */
    rt_ctx_unref(p);
    rt_ctx_unref(c);
    CHECK(rt_ctx_value(gc, &key) == &key);
    CHECK(rt_ctx_err(gc) == 0);
    CHECK(rt_ctx_deadline(gc) > rt_now());

    rt_ctx_release(gc); /* cancels gc; one reference left */
    CHECK(rt_ctx_err(gc) == -ECANCELED);
    CHECK(is_closed(gc));
    rt_ctx_unref(gc); /* frees gc, c and p (with p's timer) */

    /* A node dropped with unref alone, never cancelled, is unlinked from
     * its parent and its timer stopped when freed. */
    p = rt_ctx_with_cancel(rt_ctx_background());
    for (int i = 0; i < 100; i++)
        rt_ctx_unref(rt_ctx_with_timeout(p, RT_SEC * 60));
    rt_ctx_release(p);
}

static void test_refcounts(void **state)
{
    (void)state;
    run(2, refs_main, NULL);
}

/* ---------------------------------------------------------------- select */

struct selectst {
    rt_ctx *ctx;
    rt_ctx *canceller_ref; /* owned by select_canceller */
    uint64_t parked_base;  /* parked goroutines before main selects */
    _Atomic int cancelling;
};

/* Cancels once main's select has waited 5 ms on nothing ready. */
static void select_canceller(void *arg)
{
    struct selectst *s = arg;
    rt_ctx *ctx = s->canceller_ref;
    rt_check_wait_parked(s->parked_base + 1);
    rt_sleep(5 * RT_MSEC); /* behaviour: the select stays blocked */
    atomic_store(&s->cancelling, 1);
    rt_ctx_cancel(ctx);
    rt_ctx_unref(ctx);
}

static void select_main(void *arg)
{
    struct selectst *s = arg;
    s->ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_chan *work = rt_chan_make(sizeof(int), 0);

    rt_case none[] = {RT_RECV_CASE(rt_ctx_done(s->ctx), NULL),
                      RT_RECV_CASE(work, NULL)};
    CHECK(rt_select_default(none, 2) == -EAGAIN);
    CHECK(rt_select_timeout(none, 2, RT_MSEC) == -ETIMEDOUT);

    s->canceller_ref = rt_ctx_ref(s->ctx);
    s->parked_base = rt_check_parked();
    int v;
    rt_case cases[] = {RT_RECV_CASE(work, &v),
                       RT_RECV_CASE(rt_ctx_done(s->ctx), NULL)};
    int64_t t0 = rt_now();
    rt_go(select_canceller, s);
    int i = rt_select(cases, 2);
    CHECK(i == 1);
    CHECK(!cases[1].ok);
    CHECK(atomic_load(&s->cancelling) == 1); /* not woken before */
    CHECK(rt_now() - t0 >= 5 * RT_MSEC);
    CHECK(rt_ctx_err(s->ctx) == -ECANCELED);

    /* A deadline context in a select with a timeout. */
    rt_ctx *t = rt_ctx_with_timeout(rt_ctx_background(), 2 * RT_MSEC);
    rt_case tc[] = {RT_RECV_CASE(rt_ctx_done(t), NULL)};
    CHECK(rt_select_timeout(tc, 1, RT_SEC) == 0);
    CHECK(rt_ctx_err(t) == -ETIMEDOUT);
    rt_ctx_release(t);

    /* The background's NULL done channel never fires. */
    rt_case bg[] = {RT_RECV_CASE(rt_ctx_done(rt_ctx_background()), NULL)};
    CHECK(rt_select_timeout(bg, 1, RT_MSEC) == -ETIMEDOUT);

    rt_chan_free(work);
    rt_ctx_release(s->ctx);
}

static void test_select_on_done(void **state)
{
    (void)state;
    struct selectst s = {0};
    run(2, select_main, &s);
}

/* -------------------------------------- concurrent create, release, cancel */

/*
 * Goroutines on every P keep making and releasing children (and
 * grandchildren with short deadlines) of one shared parent while the
 * parent is cancelled: every child is done by the end, and nothing is
 * freed twice or leaked (ASan), nothing races (TSan).
 */
struct churn {
    rt_ctx *parent;
    rt_waitgroup wg;
    _Atomic long made, done_at_birth;
};

static void churn_worker(void *arg)
{
    struct churn *s = arg;
    /* Until well after the parent's cancel (bounded anyway). */
    int after = 0;
    for (int i = 0; i < 1000000 && after < 200; i++) {
        if (rt_ctx_err(s->parent))
            after++;
        rt_ctx *c = rt_ctx_with_cancel(s->parent);
        rt_ctx *g = rt_ctx_with_timeout(c, (int64_t)(i % 50) * RT_USEC);
        if (rt_ctx_err(c))
            atomic_fetch_add(&s->done_at_birth, 1);
        if (i % 3 == 0) {
            rt_chan_recv(rt_ctx_done(g), NULL, NULL); /* deadline or parent */
            CHECK(rt_ctx_err(g) != 0);
        }
        if (i % 2)
            rt_ctx_release(c); /* parent first: g holds it */
        rt_ctx_release(g);
        if (i % 2 == 0)
            rt_ctx_release(c);
        atomic_fetch_add(&s->made, 1);
        if (i % 64 == 0)
            rt_yield();
    }
    rt_waitgroup_done(&s->wg);
}

static void churn_main(void *arg)
{
    struct churn *s = arg;
    int n = 4 * rt_procs();
    s->parent = rt_ctx_with_cancel(rt_ctx_background());
    rt_waitgroup_add(&s->wg, n);
    for (int i = 0; i < n; i++)
        rt_go(churn_worker, s);
    wait_atleast(&s->made, 1000);
    rt_ctx_cancel(s->parent);
    rt_waitgroup_wait(&s->wg);
    CHECK(atomic_load(&s->done_at_birth) > 0);
    rt_ctx_release(s->parent);
}

static void test_concurrent_churn(void **state)
{
    (void)state;
    struct churn s = {.wg = RT_WAITGROUP_INIT};
    run(0, churn_main, &s);
}

/* ---------------------------------------------------------------- errors */

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(rt_strerror(-ETIMEDOUT), "deadline exceeded");
    assert_string_equal(rt_strerror(-ECANCELED), "context canceled");
    assert_non_null(rt_strerror(-EAGAIN));
    assert_string_equal(rt_strerror(-ENOENT), strerror(ENOENT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_background),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_cancel_races_deadline),
        cmocka_unit_test(test_child_of_done_parent),
        cmocka_unit_test(test_tree_random),
        cmocka_unit_test(test_tree_deep_chain),
        cmocka_unit_test(test_tree_deep_chain_deadline),
        cmocka_unit_test(test_chain_freed_from_leaf),
        cmocka_unit_test(test_subtree_cancel),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_deadline_inheritance),
        cmocka_unit_test(test_refcounts),
        cmocka_unit_test(test_select_on_done),
        cmocka_unit_test(test_concurrent_churn),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
