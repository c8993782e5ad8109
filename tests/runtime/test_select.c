/*
 * test_select.c - select: a ready case is taken, default, timeouts and
 * deadlines, every case blocked then a channel closed, mixed send and
 * receive cases, fairness among ready cases, one channel in two cases,
 * selects with more cases than fit on the stack, timers racing wakers,
 * and a stress run of selecting goroutines on two Ps.
 *
 * Checks inside goroutines use CHECK(), which records the first failure;
 * the test asserts after rt_run() returns (a failing cmocka assertion
 * longjmps, which must not happen from a goroutine's stack).
 *
 * Run with "--crash NAME" the binary plays one abort scenario instead of
 * the suite; the crash test runs it that way in a child process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt.h"

#include "../rt_check.h"

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

#define nwaiting rt_check_parked
#define wait_waiting rt_check_wait_parked

/* Yield until *flag is set; CHECK-fails after 10 s. */
static void wait_flag(_Atomic int *flag)
{
    int64_t end = rt_now() + 10 * RT_SEC;
    while (!atomic_load(flag)) {
        if (rt_now() > end) {
            CHECK(!"flag never set");
            return;
        }
        rt_yield();
    }
}

static rt_chan *make_chan(size_t elem_size, size_t cap)
{
    rt_chan *c = rt_chan_make(elem_size, cap);
    if (c == NULL) {
        fputs("make_chan: out of memory\n", stderr);
        exit(1);
    }
    return c;
}

/* ---------------------------------------------------------- ready case */

static void ready_main(void *arg)
{
    (void)arg;
    rt_chan *a = make_chan(sizeof(int), 1);
    rt_chan *b = make_chan(sizeof(int), 1);
    int va = -1, vb = -1;

    rt_chan_send(b, &(int){22});
    rt_case cs[] = {RT_RECV_CASE(a, &va), RT_RECV_CASE(b, &vb)};
    CHECK(rt_select(cs, 2) == 1);
    CHECK(vb == 22 && cs[1].ok && va == -1);

    /* A send case with buffer room. */
    int out = 5;
    rt_case cs2[] = {RT_RECV_CASE(a, &va), RT_SEND_CASE(b, &out)};
    CHECK(rt_select(cs2, 2) == 1);
    CHECK(rt_chan_len(b) == 1);
    rt_chan_recv(b, &vb, NULL);
    CHECK(vb == 5);

    /* A closed channel is ready: zero value, ok = false. */
    rt_chan_close(a);
    va = 9;
    cs[0].ok = true;
    CHECK(rt_select(cs, 2) == 0);
    CHECK(va == 0 && !cs[0].ok);

    /* NULL channels are never ready; the other case is. */
    rt_chan_send(b, &(int){7});
    rt_case cs3[] = {RT_RECV_CASE(NULL, &va), RT_RECV_CASE(b, &vb),
                     RT_SEND_CASE(NULL, &out)};
    CHECK(rt_select(cs3, 3) == 1);
    CHECK(vb == 7 && cs3[1].ok);

    /* Receive into NULL discards. */
    rt_chan_send(b, &(int){8});
    rt_case cs4[] = {RT_RECV_CASE(b, NULL), RT_RECV_CASE(NULL, NULL)};
    CHECK(rt_select(cs4, 2) == 0 && cs4[0].ok);
    CHECK(rt_chan_len(b) == 0);

    rt_chan_free(a);
    rt_chan_free(b);
}

static void test_ready_case_picked(void **state)
{
    (void)state;
    run(1, ready_main, NULL);
}

/* ------------------------------------------------------------- default */

static void default_main(void *arg)
{
    (void)arg;
    rt_chan *u = make_chan(sizeof(int), 0);
    rt_chan *full = make_chan(sizeof(int), 1);
    rt_chan_send(full, &(int){1});
    int v = 0, out = 3;

    rt_case cs[] = {RT_RECV_CASE(u, &v), RT_SEND_CASE(u, &out),
                    RT_SEND_CASE(full, &out), RT_RECV_CASE(NULL, &v)};
    for (int i = 0; i < 100; i++)
        CHECK(rt_select_default(cs, 4) == -EAGAIN);
    CHECK(rt_select_default(cs, 1) == -EAGAIN); /* one-case shortcut */
    CHECK(rt_select_default(&cs[2], 1) == -EAGAIN);
    CHECK(rt_select_default(&cs[3], 1) == -EAGAIN);
    CHECK(rt_select_default(NULL, 0) == -EAGAIN);
    CHECK(rt_chan_len(full) == 1);

    /* Once one is ready, default loses. */
    rt_case cs2[] = {RT_RECV_CASE(u, &v), RT_RECV_CASE(full, &v)};
    CHECK(rt_select_default(cs2, 2) == 1);
    CHECK(v == 1 && cs2[1].ok);
    CHECK(rt_select_default(cs2, 2) == -EAGAIN);

    rt_chan_free(u);
    rt_chan_free(full);
}

static void test_default_when_none_ready(void **state)
{
    (void)state;
    run(1, default_main, NULL);
}

/* ------------------------------------------------------------- timeout */

typedef struct late_send {
    rt_chan *c;
    uint64_t parked_base; /* parked goroutines before main selects */
    int v;
} late_send;

/* Sends once main is parked in its select. */
static void late_sender(void *arg)
{
    late_send *ls = arg;
    wait_waiting(ls->parked_base + 1);
    rt_chan_send(ls->c, &ls->v);
}

static void timeout_main(void *arg)
{
    (void)arg;
    rt_chan *a = make_chan(sizeof(int), 0);
    rt_chan *b = make_chan(sizeof(int), 0);
    int v = 0;
    rt_case cs[] = {RT_RECV_CASE(a, &v), RT_RECV_CASE(b, &v)};

    for (int i = 0; i < 3; i++) {
        int64_t t0 = rt_now();
        int r = rt_select_timeout(cs, 2, 20 * RT_MSEC);
        int64_t took = rt_now() - t0;
        CHECK(r == -ETIMEDOUT);
        CHECK(took >= 20 * RT_MSEC);
        CHECK(took < 200 * RT_MSEC);
    }

    /* Deadline form; and a deadline in the past times out at once. */
    int64_t t0 = rt_now();
    CHECK(rt_select_deadline(cs, 2, t0 + 15 * RT_MSEC) == -ETIMEDOUT);
    CHECK(rt_now() >= t0 + 15 * RT_MSEC);
    t0 = rt_now();
    CHECK(rt_select_deadline(cs, 2, t0 - RT_SEC) == -ETIMEDOUT);
    CHECK(rt_select_timeout(cs, 2, 0) == -ETIMEDOUT);
    CHECK(rt_select_timeout(cs, 2, -5) == -ETIMEDOUT);
    CHECK(rt_now() - t0 < 50 * RT_MSEC);

    /* No cases (or only NULL channels) with a timeout: a plain sleep. */
    t0 = rt_now();
    CHECK(rt_select_timeout(NULL, 0, 20 * RT_MSEC) == -ETIMEDOUT);
    CHECK(rt_now() - t0 >= 20 * RT_MSEC);
    rt_case nil_cases[] = {RT_RECV_CASE(NULL, &v), RT_SEND_CASE(NULL, &v)};
    CHECK(rt_select_timeout(nil_cases, 2, 5 * RT_MSEC) == -ETIMEDOUT);

    /* A ready case beats an expired deadline. */
    rt_chan *r = make_chan(sizeof(int), 1);
    rt_chan_send(r, &(int){4});
    rt_case rc[] = {RT_RECV_CASE(a, &v), RT_RECV_CASE(r, &v)};
    CHECK(rt_select_deadline(rc, 2, 0) == 1 && v == 4);

    /* A value that comes while the select waits with its timer armed
     * wins; the timer must not wake us later (the sleep below would be
     * cut short or crash). */
    late_send ls = {.c = b, .parked_base = nwaiting(), .v = 77};
    rt_go(late_sender, &ls);
    t0 = rt_now();
    v = 0;
    CHECK(rt_select_timeout(cs, 2, 1 * RT_SEC) == 1);
    CHECK(v == 77 && cs[1].ok);
    CHECK(rt_now() - t0 < 500 * RT_MSEC);
    t0 = rt_now();
    rt_sleep(30 * RT_MSEC); /* behaviour: not cut short by a stale timer */
    CHECK(rt_now() - t0 >= 30 * RT_MSEC);

    rt_chan_free(a);
    rt_chan_free(b);
    rt_chan_free(r);
}

static void test_timeout(void **state)
{
    (void)state;
    run(1, timeout_main, NULL);
    run(2, timeout_main, NULL);
}

/* Tiny timeouts racing a sender that uses trysend: every value is either
 * received by the select or still pending, never lost or doubled. */
typedef struct race {
    rt_chan *c;        /* unbuffered */
    rt_waitgroup done; /* the sender has stopped */
    _Atomic int stop;
    _Atomic int64_t sent;
} race;

static void race_sender(void *arg)
{
    race *r = arg;
    int64_t v = 1;
    while (!atomic_load(&r->stop)) {
        if (rt_chan_trysend(r->c, &v)) {
            atomic_fetch_add(&r->sent, v);
            v++;
        }
        rt_yield();
    }
    rt_waitgroup_done(&r->done);
}

static void race_main(void *arg)
{
    (void)arg;
    race r = {.c = make_chan(sizeof(int64_t), 0), .done = RT_WAITGROUP_INIT};
    rt_waitgroup_add(&r.done, 1);
    rt_go(race_sender, &r);
    int64_t got = 0, expect = 1, timeouts = 0;
    for (int i = 0; i < 3000; i++) {
        int64_t v = 0;
        rt_case cs[] = {RT_RECV_CASE(r.c, &v), RT_RECV_CASE(NULL, NULL)};
        int k = rt_select_timeout(cs, 2, (i % 7) * 10 * RT_USEC);
        if (k == 0) {
            CHECK(v == expect);
            expect++;
            got += v;
        } else {
            CHECK(k == -ETIMEDOUT);
            timeouts++;
        }
    }
    atomic_store(&r.stop, 1);
    rt_waitgroup_wait(&r.done); /* r.sent is final */
    CHECK(got == atomic_load(&r.sent));
    CHECK(timeouts > 0);
    rt_chan_free(r.c);
}

static void test_timeout_races_sender(void **state)
{
    (void)state;
    run(2, race_main, NULL);
}

/* ----------------------------------------- all blocked, then a close */

typedef struct blocked {
    rt_chan *c[3];
    rt_chan *done;
    int which; /* case that woke the select */
} blocked;

static void blocked_selector(void *arg)
{
    blocked *b = arg;
    int v[3] = {-1, -1, -1};
    rt_case cs[] = {RT_RECV_CASE(b->c[0], &v[0]), RT_RECV_CASE(b->c[1], &v[1]),
                    RT_RECV_CASE(b->c[2], &v[2])};
    cs[1].ok = true;
    int k = rt_select(cs, 3);
    b->which = k;
    CHECK(k == 1);
    CHECK(!cs[1].ok && v[1] == 0);
    CHECK(v[0] == -1 && v[2] == -1);
    rt_chan_send(b->done, &k);
}

static void blocked_close_main(void *arg)
{
    (void)arg;
    blocked b;
    for (int i = 0; i < 3; i++)
        b.c[i] = make_chan(sizeof(int), i); /* caps 0, 1, 2, all empty */
    b.done = make_chan(sizeof(int), 0);
    uint64_t base = nwaiting();
    rt_go(blocked_selector, &b);
    wait_waiting(base + 1);
    rt_chan_close(b.c[1]);
    int k = -1;
    rt_chan_recv(b.done, &k, NULL);
    CHECK(k == 1);
    /* The selector's sudogs are gone from the other channels: a
     * non-blocking send finds no receiver. */
    CHECK(!rt_chan_trysend(b.c[0], &(int){1}));
    for (int i = 0; i < 3; i++)
        rt_chan_free(b.c[i]);
    rt_chan_free(b.done);
}

static void test_all_blocked_then_close(void **state)
{
    (void)state;
    run(1, blocked_close_main, NULL);
    run(2, blocked_close_main, NULL);
}

/* Many selectors blocked on the same channels, one close wakes them all. */
#define NSELECTORS 50

typedef struct many {
    rt_chan *a, *b, *results;
} many;

static void many_selector(void *arg)
{
    many *m = arg;
    int va = 1, vb = 1;
    rt_case cs[] = {RT_RECV_CASE(m->a, &va), RT_RECV_CASE(m->b, &vb)};
    int k = rt_select(cs, 2);
    CHECK(k == 1 && !cs[1].ok && vb == 0);
    rt_chan_send(m->results, &k);
}

static void many_close_main(void *arg)
{
    (void)arg;
    many m = {make_chan(sizeof(int), 0), make_chan(sizeof(int), 0),
              make_chan(sizeof(int), NSELECTORS)};
    uint64_t base = nwaiting();
    for (int i = 0; i < NSELECTORS; i++)
        rt_go(many_selector, &m);
    wait_waiting(base + NSELECTORS);
    rt_chan_close(m.b);
    for (int i = 0; i < NSELECTORS; i++)
        rt_chan_recv(m.results, NULL, NULL);
    CHECK(!rt_chan_trysend(m.a, &(int){1})); /* no stale receivers */
    rt_chan_free(m.a);
    rt_chan_free(m.b);
    rt_chan_free(m.results);
}

static void test_close_wakes_many_selects(void **state)
{
    (void)state;
    run(2, many_close_main, NULL);
}

/* ------------------------------------------------------- send and recv */

typedef struct mixed {
    rt_chan *to_sel;      /* the select receives from it */
    rt_chan *from_sel;    /* the select sends on it */
    uint64_t parked_base; /* parked goroutines before main selects */
    _Atomic int round2;   /* main is past its first select */
} mixed;

static void mixed_partner(void *arg)
{
    mixed *m = arg;
    /* Round 1: take the select's value. Round 2: give it one, once the
     * select waits on both cases. */
    int v = 0;
    rt_chan_recv(m->from_sel, &v, NULL);
    CHECK(v == 100);
    wait_flag(&m->round2);
    wait_waiting(m->parked_base + 1);
    rt_chan_send(m->to_sel, &(int){200});
}

static void mixed_main(void *arg)
{
    (void)arg;
    mixed m = {.to_sel = make_chan(sizeof(int), 0),
               .from_sel = make_chan(sizeof(int), 0),
               .parked_base = nwaiting()};
    rt_go(mixed_partner, &m);
    int in = -1, out = 100;
    rt_case cs[] = {RT_SEND_CASE(m.from_sel, &out),
                    RT_RECV_CASE(m.to_sel, &in)};
    CHECK(rt_select(cs, 2) == 0);
    CHECK(in == -1);
    atomic_store(&m.round2, 1);
    CHECK(rt_select(cs, 2) == 1);
    CHECK(in == 200 && cs[1].ok);
    rt_chan_free(m.to_sel);
    rt_chan_free(m.from_sel);
}

static void test_send_and_recv_mixed(void **state)
{
    (void)state;
    run(1, mixed_main, NULL);
    run(2, mixed_main, NULL);
}

/* Two selects meet on cs[0]; their other cases (cs[1], cs[2]) never
 * have a partner. */
typedef struct meet {
    rt_chan *cs[3];
    rt_waitgroup done; /* the sender's select has returned */
} meet;

static void select_sender(void *arg)
{
    meet *m = arg;
    int v = 41;
    rt_case c[] = {RT_RECV_CASE(m->cs[2], NULL), RT_SEND_CASE(m->cs[0], &v)};
    CHECK(rt_select(c, 2) == 1);
    rt_waitgroup_done(&m->done);
}

static void select_meets_select_main(void *arg)
{
    (void)arg;
    meet m = {.cs = {make_chan(sizeof(int), 0), make_chan(sizeof(int), 0),
                     make_chan(sizeof(int), 0)},
              .done = RT_WAITGROUP_INIT};
    uint64_t base = nwaiting();
    for (int i = 0; i < 200; i++) {
        rt_waitgroup_add(&m.done, 1);
        rt_go(select_sender, &m);
        if (i % 2)
            wait_waiting(base + 1); /* the sender parks first */
        int v = 0;
        rt_case c[] = {RT_RECV_CASE(m.cs[0], &v), RT_SEND_CASE(m.cs[1], &v)};
        CHECK(rt_select(c, 2) == 0);
        CHECK(v == 41 && c[0].ok);
        /* The sender is out of its select (it unlinks its sudogs after
         * waking), so it is not counted parked in the next round, and the
         * channels can be freed after the last. */
        rt_waitgroup_wait(&m.done);
    }
    for (int i = 0; i < 3; i++)
        rt_chan_free(m.cs[i]);
}

static void test_select_meets_select(void **state)
{
    (void)state;
    run(1, select_meets_select_main, NULL);
    run(2, select_meets_select_main, NULL);
}

/* ------------------------------------------------------------ fairness */

#define FAIR_ROUNDS 20000

static void check_fair(int n0, int n1)
{
    CHECK(n0 + n1 == FAIR_ROUNDS);
    CHECK(n0 >= FAIR_ROUNDS * 45 / 100 && n0 <= FAIR_ROUNDS * 55 / 100);
    CHECK(n1 >= FAIR_ROUNDS * 45 / 100 && n1 <= FAIR_ROUNDS * 55 / 100);
}

static void fair_main(void *arg)
{
    (void)arg;
    /* Two closed channels. */
    rt_chan *a = make_chan(sizeof(int), 0), *b = make_chan(sizeof(int), 0);
    rt_chan_close(a);
    rt_chan_close(b);
    int cnt[2] = {0, 0};
    rt_case cs[] = {RT_RECV_CASE(a, NULL), RT_RECV_CASE(b, NULL)};
    for (int i = 0; i < FAIR_ROUNDS; i++) {
        int k = rt_select(cs, 2);
        CHECK(k == 0 || k == 1);
        cnt[k & 1]++;
    }
    check_fair(cnt[0], cnt[1]);
    rt_chan_free(a);
    rt_chan_free(b);

    /* Two buffered channels kept filled. */
    a = make_chan(sizeof(int), 1);
    b = make_chan(sizeof(int), 1);
    rt_chan_send(a, &(int){0});
    rt_chan_send(b, &(int){1});
    cnt[0] = cnt[1] = 0;
    int v = -1;
    rt_case cs2[] = {RT_RECV_CASE(a, &v), RT_RECV_CASE(b, &v)};
    for (int i = 0; i < FAIR_ROUNDS; i++) {
        int k = rt_select(cs2, 2);
        CHECK(k == v);
        cnt[k & 1]++;
        rt_chan_send(k == 0 ? a : b, &k);
    }
    check_fair(cnt[0], cnt[1]);

    /* Two send cases with room, drained after each round. */
    cnt[0] = cnt[1] = 0;
    rt_chan_recv(a, NULL, NULL);
    rt_chan_recv(b, NULL, NULL);
    int out = 1;
    rt_case cs3[] = {RT_SEND_CASE(a, &out), RT_SEND_CASE(b, &out)};
    for (int i = 0; i < FAIR_ROUNDS; i++) {
        int k = rt_select_default(cs3, 2);
        CHECK(k == 0 || k == 1);
        cnt[k & 1]++;
        rt_chan_recv(k == 0 ? a : b, NULL, NULL);
    }
    check_fair(cnt[0], cnt[1]);
    rt_chan_free(a);
    rt_chan_free(b);
}

static void test_fairness(void **state)
{
    (void)state;
    run(1, fair_main, NULL);
}

/* --------------------------------------------- one channel, two cases */

/* A partner of a select blocked on u: it comes once main is parked. */
typedef struct partner {
    rt_chan *u;
    uint64_t parked_base; /* parked goroutines before main selects */
    rt_waitgroup done;    /* partners that have finished with u */
} partner;

static void two_cases_sender(void *arg)
{
    partner *p = arg;
    wait_waiting(p->parked_base + 1);
    rt_chan_send(p->u, &(int){5});
    rt_waitgroup_done(&p->done);
}

static void two_cases_receiver(void *arg)
{
    partner *p = arg;
    wait_waiting(p->parked_base + 1);
    int v = 0;
    rt_chan_recv(p->u, &v, NULL);
    CHECK(v == 6);
    rt_waitgroup_done(&p->done);
}

static void same_chan_main(void *arg)
{
    (void)arg;
    /* Ready: both cases are chosen about equally. */
    rt_chan *c = make_chan(sizeof(int), 1);
    int v0 = -1, v1 = -1, cnt[2] = {0, 0};
    rt_case cs[] = {RT_RECV_CASE(c, &v0), RT_RECV_CASE(c, &v1)};
    for (int i = 0; i < FAIR_ROUNDS; i++) {
        rt_chan_send(c, &i);
        int k = rt_select(cs, 2);
        CHECK(k == 0 || k == 1);
        CHECK((k == 0 ? v0 : v1) == i);
        cnt[k & 1]++;
    }
    check_fair(cnt[0], cnt[1]);
    rt_chan_free(c);

    /* Blocked on both: exactly one case takes the value, and no sudog is
     * left behind in the queue. */
    rt_chan *u = make_chan(sizeof(int), 0);
    partner p = {.u = u, .parked_base = nwaiting(), .done = RT_WAITGROUP_INIT};
    for (int round = 0; round < 20; round++) {
        v0 = v1 = -1;
        rt_case cu[] = {RT_RECV_CASE(u, &v0), RT_RECV_CASE(u, &v1)};
        rt_waitgroup_add(&p.done, 1);
        rt_go(two_cases_sender, &p);
        int k = rt_select(cu, 2);
        CHECK(k == 0 || k == 1);
        CHECK((k == 0 ? v0 : v1) == 5);
        CHECK((k == 0 ? v1 : v0) == -1);
        CHECK(!rt_chan_trysend(u, &(int){1}));
    }

    /* A send case and a receive case on one channel, blocked: whichever
     * partner comes decides. */
    for (int round = 0; round < 20; round++) {
        int in = -1, out = 6;
        rt_case cm[] = {RT_SEND_CASE(u, &out), RT_RECV_CASE(u, &in)};
        bool send = round % 2 == 0;
        rt_waitgroup_add(&p.done, 1);
        if (send)
            rt_go(two_cases_receiver, &p);
        else
            rt_go(two_cases_sender, &p);
        int k = rt_select(cm, 2);
        CHECK(k == (send ? 0 : 1));
        if (!send)
            CHECK(in == 5 && cm[1].ok);
        CHECK(!rt_chan_trysend(u, &(int){1}));
        CHECK(!rt_chan_tryrecv(u, NULL, NULL));
    }
    rt_waitgroup_wait(&p.done); /* every partner is done with u */
    rt_chan_free(u);
}

static void test_same_channel_twice(void **state)
{
    (void)state;
    run(1, same_chan_main, NULL);
    run(2, same_chan_main, NULL);
}

/* -------------------------------------------------- many cases (heap) */

#define NBIG 40

static void big_main(void *arg)
{
    (void)arg;
    rt_chan *cs[NBIG];
    rt_case cases[NBIG];
    int v = -1;
    for (int i = 0; i < NBIG; i++) {
        cs[i] = make_chan(sizeof(int), i % 2);
        cases[i] = RT_RECV_CASE(i % 5 == 4 ? NULL : cs[i], &v);
    }
    CHECK(rt_select_default(cases, NBIG) == -EAGAIN);
    rt_chan_send(cs[17], &(int){17});
    CHECK(rt_select(cases, NBIG) == 17 && v == 17);

    /* Blocked on many, woken by one. */
    late_send ls = {.c = cs[22], .parked_base = nwaiting(), .v = 123};
    rt_go(late_sender, &ls);
    CHECK(rt_select(cases, NBIG) == 22 && v == 123);
    CHECK(rt_select_timeout(cases, NBIG, 2 * RT_MSEC) == -ETIMEDOUT);
    for (int i = 0; i < NBIG; i++) {
        if (i % 2 == 0) /* unbuffered: no receiver may be left queued */
            CHECK(!rt_chan_trysend(cs[i], &v));
        rt_chan_free(cs[i]);
    }
}

static void test_many_cases(void **state)
{
    (void)state;
    run(2, big_main, NULL);
}

/* ------------------------------------------- select send on a closed */

static void crash_select_send_closed(void *arg)
{
    (void)arg;
    rt_chan *a = rt_chan_make(sizeof(int), 0), *b = rt_chan_make(1, 0);
    rt_chan_close(a);
    int v = 1;
    rt_case cs[] = {RT_SEND_CASE(a, &v), RT_RECV_CASE(b, NULL)};
    rt_select(cs, 2);
}

static void crash_select_sender(void *arg)
{
    rt_chan **c = arg;
    int v = 1;
    rt_case cs[] = {RT_SEND_CASE(c[0], &v), RT_RECV_CASE(c[1], NULL)};
    rt_select(cs, 2);
}

/* In a crash child nobody reports CHECKs: a wait that failed ends the
 * child with a status the parent rejects (not SIGABRT). */
static void crash_wait_parked(uint64_t n)
{
    rt_check_wait_parked(n);
    if (atomic_load(&rt_check_failures) != 0)
        _exit(3);
}

static void crash_select_send_closed_while_waiting(void *arg)
{
    (void)arg;
    rt_chan *c[2] = {rt_chan_make(sizeof(int), 0), rt_chan_make(1, 0)};
    uint64_t base = nwaiting();
    rt_go(crash_select_sender, c);
    crash_wait_parked(base + 1); /* the sender is queued on both */
    rt_chan_close(c[0]);
    /* Not an ordering: the abort ends the process. This only bounds the
     * wait, so that a sender that does not abort lets main return and the
     * parent reports it. */
    rt_sleep(5 * RT_SEC);
}

static const struct {
    const char *name;
    void (*fn)(void *);
} crashes[] = {
    {"select-send-closed", crash_select_send_closed},
    {"select-send-closed-while-waiting",
     crash_select_send_closed_while_waiting},
};

static int crash_main(const char *name)
{
    for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++)
        if (strcmp(crashes[i].name, name) == 0) {
            rt_run(crashes[i].fn, NULL);
            return 0; /* not aborted: the parent reports it */
        }
    return 2;
}

#define expect_abort rt_check_expect_abort

static void test_select_send_on_closed_aborts(void **state)
{
    (void)state;
    expect_abort("select-send-closed", "send on closed channel");
    expect_abort("select-send-closed-while-waiting", "send on closed channel");
}

/* -------------------------------------------------------------- stress */

/*
 * Producers send unique values, each choosing by select between two
 * shared channels (one unbuffered, one buffered) with a timeout case
 * retrying; consumers receive by select from both plus a quit channel.
 * Every value must arrive exactly once.
 */
#define S_PRODUCERS 4
#define S_CONSUMERS 4
#define S_PER_PRODUCER 25000
#define S_TOTAL (S_PRODUCERS * S_PER_PRODUCER)

typedef struct stress {
    rt_chan *c[2];
    rt_chan *quit;  /* closed once every producer is done */
    rt_chan *pdone; /* producers report */
    rt_chan *cdone; /* consumers report their count */
    _Atomic uint8_t seen[S_TOTAL];
    _Atomic int next_id;
    _Atomic int64_t timeouts;
} stress;

static void stress_producer(void *arg)
{
    stress *s = arg;
    int id = atomic_fetch_add(&s->next_id, 1);
    for (int i = 0; i < S_PER_PRODUCER; i++) {
        int v = id * S_PER_PRODUCER + i;
        rt_case cs[] = {RT_SEND_CASE(s->c[0], &v), RT_SEND_CASE(s->c[1], &v)};
        for (;;) {
            int k = (i & 7) == 0 ? rt_select_timeout(cs, 2, 50 * RT_USEC)
                                 : rt_select(cs, 2);
            if (k >= 0) {
                CHECK(k == 0 || k == 1);
                break;
            }
            CHECK(k == -ETIMEDOUT);
            atomic_fetch_add(&s->timeouts, 1);
        }
    }
    rt_chan_send(s->pdone, &id);
}

static void stress_consumer(void *arg)
{
    stress *s = arg;
    int64_t n = 0;
    for (;;) {
        int v0 = -1, v1 = -1;
        rt_case cs[] = {RT_RECV_CASE(s->c[0], &v0), RT_RECV_CASE(s->c[1], &v1),
                        RT_RECV_CASE(s->quit, NULL)};
        int k = rt_select(cs, 3);
        if (k == 2) {
            /* Quit: drain what is buffered, then stop. */
            while (rt_chan_tryrecv(s->c[1], &v1, NULL)) {
                CHECK(v1 >= 0 && v1 < S_TOTAL);
                if (v1 >= 0 && v1 < S_TOTAL)
                    CHECK(atomic_fetch_add(&s->seen[v1], 1) == 0);
                n++;
            }
            break;
        }
        int v = k == 0 ? v0 : v1;
        CHECK((k == 0 ? v1 : v0) == -1);
        CHECK(v >= 0 && v < S_TOTAL);
        if (v >= 0 && v < S_TOTAL)
            CHECK(atomic_fetch_add(&s->seen[v], 1) == 0);
        n++;
    }
    rt_chan_send(s->cdone, &n);
}

static void stress_main(void *arg)
{
    stress *s = arg;
    s->c[0] = make_chan(sizeof(int), 0);
    s->c[1] = make_chan(sizeof(int), 16);
    s->quit = make_chan(0, 0);
    s->pdone = make_chan(sizeof(int), 0);
    s->cdone = make_chan(sizeof(int64_t), 0);
    for (int i = 0; i < S_CONSUMERS; i++)
        rt_go(stress_consumer, s);
    for (int i = 0; i < S_PRODUCERS; i++)
        rt_go(stress_producer, s);
    for (int i = 0; i < S_PRODUCERS; i++)
        rt_chan_recv(s->pdone, NULL, NULL);
    rt_chan_close(s->quit);
    int64_t total = 0;
    for (int i = 0; i < S_CONSUMERS; i++) {
        int64_t n = 0;
        rt_chan_recv(s->cdone, &n, NULL);
        total += n;
    }
    CHECK(total == S_TOTAL);
    for (int i = 0; i < S_TOTAL; i++)
        CHECK(atomic_load(&s->seen[i]) == 1);
    CHECK(rt_chan_len(s->c[1]) == 0);
    rt_chan_free(s->c[0]);
    rt_chan_free(s->c[1]);
    rt_chan_free(s->quit);
    rt_chan_free(s->pdone);
    rt_chan_free(s->cdone);
}

static void test_stress(void **state)
{
    (void)state;
    stress *s = calloc(1, sizeof *s);
    assert_non_null(s);
    int64_t t0 = rt_now();
    run(2, stress_main, s);
    int64_t took = rt_now() - t0;
    free(s);
    if (took > 120 * RT_SEC)
        fail_msg("stress took %lld ms", (long long)(took / RT_MSEC));
}

/* -------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--crash") == 0)
        return crash_main(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_case_picked),
        cmocka_unit_test(test_default_when_none_ready),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_timeout_races_sender),
        cmocka_unit_test(test_all_blocked_then_close),
        cmocka_unit_test(test_close_wakes_many_selects),
        cmocka_unit_test(test_send_and_recv_mixed),
        cmocka_unit_test(test_select_meets_select),
        cmocka_unit_test(test_fairness),
        cmocka_unit_test(test_same_channel_twice),
        cmocka_unit_test(test_many_cases),
        cmocka_unit_test(test_select_send_on_closed_aborts),
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
