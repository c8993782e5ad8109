/*
 * test_chan.c - channels: buffered FIFO, unbuffered hand-off, len/cap,
 * close (receivers drain, then get zero + ok = false), the aborts Go calls
 * panics (checked in a child process), the non-blocking forms (also from
 * a timer callback, i.e. scheduler context), nil channels, and a
 * many-producer/many-consumer run across two Ps.
 *
 * Checks inside goroutines use CHECK(), which records the first failure;
 * the test asserts after rt_run() returns (a failing cmocka assertion
 * longjmps, which must not happen from a goroutine's stack).
 *
 * Run with "--crash NAME" the binary plays one abort scenario instead of
 * the suite; the crash tests run it that way in a child process.
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
#include "rt_internal.h"

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

#define nwaiting rt_check_parked
#define wait_waiting rt_check_wait_parked

static rt_chan *make_chan(size_t elem_size, size_t cap)
{
    rt_chan *c = rt_chan_make(elem_size, cap);
    CHECK(c != NULL);
    if (c == NULL) {
        fputs("make_chan: out of memory\n", stderr);
        exit(1);
    }
    return c;
}

/* ------------------------------------------------------ buffered FIFO */

typedef struct big {
    uint64_t a, b, c; /* 24 bytes: the generic copy path */
} big;

static void buffered_fifo_main(void *arg)
{
    (void)arg;
    rt_chan *c = make_chan(sizeof(int), 8);
    /* Several laps around the ring, with the buffer partly full. */
    int next_send = 0, next_recv = 0;
    for (int lap = 0; lap < 50; lap++) {
        int room = 8 - (next_send - next_recv);
        int nsend = 1 + lap % 7 < room ? 1 + lap % 7 : room;
        for (int i = 0; i < nsend; i++)
            rt_chan_send(c, &(int){next_send++});
        int held = next_send - next_recv;
        CHECK(rt_chan_len(c) == (size_t)held);
        int nrecv = 1 + lap * 5 % 7 < held ? 1 + lap * 5 % 7 : held;
        for (int i = 0; i < nrecv; i++) {
            int v = -1;
            bool ok = false;
            rt_chan_recv(c, &v, &ok);
            CHECK(ok);
            CHECK(v == next_recv);
            next_recv++;
        }
    }
    while (next_recv < next_send) {
        int v = -1;
        rt_chan_recv(c, &v, NULL);
        CHECK(v == next_recv);
        next_recv++;
    }
    CHECK(rt_chan_len(c) == 0);
    rt_chan_free(c);

    rt_chan *cb = make_chan(sizeof(big), 3);
    for (uint64_t i = 0; i < 3; i++)
        rt_chan_send(cb, &(big){i, i * 2, i * 3});
    for (uint64_t i = 0; i < 3; i++) {
        big v;
        rt_chan_recv(cb, &v, NULL);
        CHECK(v.a == i && v.b == i * 2 && v.c == i * 3);
    }
    rt_chan_free(cb);
}

static void test_buffered_fifo(void **state)
{
    (void)state;
    run(1, buffered_fifo_main, NULL);
}

/* A full buffer with senders waiting: the receiver takes the head and the
 * first waiting sender's value goes to the tail, so FIFO order holds. */
typedef struct fullbuf {
    rt_chan *c;
    rt_chan *done;
} fullbuf;

static _Atomic int fullbuf_next;

static void fullbuf_sender(void *arg)
{
    fullbuf *fb = arg;
    int v = atomic_fetch_add(&fullbuf_next, 1);
    rt_chan_send(fb->c, &v);
    rt_chan_send(fb->done, &v);
}

static void fullbuf_main(void *arg)
{
    (void)arg;
    fullbuf fb = {make_chan(sizeof(int), 2), make_chan(sizeof(int), 8)};
    atomic_store(&fullbuf_next, 0);
    uint64_t base = nwaiting();
    for (int i = 0; i < 2; i++)
        fullbuf_sender(&fb); /* fills the buffer: values 0 and 1 */
    for (int i = 0; i < 2; i++)
        rt_chan_recv(fb.done, NULL, NULL);
    /* Three blocked senders, queued in a known order: 2, 3, 4. */
    for (int i = 0; i < 3; i++) {
        rt_go(fullbuf_sender, &fb);
        wait_waiting(base + (uint64_t)i + 1);
    }
    CHECK(rt_chan_len(fb.c) == 2);
    for (int i = 0; i < 5; i++) {
        int v = -1;
        rt_chan_recv(fb.c, &v, NULL);
        CHECK(v == i);
    }
    for (int i = 0; i < 3; i++)
        rt_chan_recv(fb.done, NULL, NULL);
    CHECK(rt_chan_len(fb.c) == 0);
    rt_chan_free(fb.c);
    rt_chan_free(fb.done);
}

static void test_full_buffer_waiting_senders(void **state)
{
    (void)state;
    run(1, fullbuf_main, NULL);
}

/* ------------------------------------------------------ unbuffered */

typedef struct pingpong {
    rt_chan *ping, *pong;
    int n;
} pingpong;

static void pong_fn(void *arg)
{
    pingpong *pp = arg;
    for (;;) {
        int v;
        bool ok;
        rt_chan_recv(pp->ping, &v, &ok);
        if (!ok)
            break;
        v = v * 2 + 1;
        rt_chan_send(pp->pong, &v);
    }
    int bye = -1;
    rt_chan_send(pp->pong, &bye);
}

static void pingpong_main(void *arg)
{
    pingpong *pp = arg;
    pp->ping = make_chan(sizeof(int), 0);
    pp->pong = make_chan(sizeof(int), 0);
    rt_go(pong_fn, pp);
    for (int i = 0; i < pp->n; i++) {
        int v = -1;
        rt_chan_send(pp->ping, &i);
        rt_chan_recv(pp->pong, &v, NULL);
        CHECK(v == i * 2 + 1);
    }
    rt_chan_close(pp->ping);
    int bye = 0;
    rt_chan_recv(pp->pong, &bye, NULL);
    CHECK(bye == -1);
    CHECK(rt_chan_len(pp->ping) == 0);
    rt_chan_free(pp->ping);
    rt_chan_free(pp->pong);
}

static void test_unbuffered_handoff(void **state)
{
    (void)state;
    pingpong pp = {.n = 20000};
    run(1, pingpong_main, &pp);
    run(2, pingpong_main, &pp);
}

/* ----------------------------------------------------------- len / cap */

static void lencap_main(void *arg)
{
    (void)arg;
    rt_chan *u = make_chan(sizeof(long), 0);
    CHECK(rt_chan_cap(u) == 0);
    CHECK(rt_chan_len(u) == 0);
    rt_chan *b = make_chan(sizeof(long), 3);
    CHECK(rt_chan_cap(b) == 3);
    for (long i = 0; i < 3; i++) {
        CHECK(rt_chan_len(b) == (size_t)i);
        rt_chan_send(b, &i);
    }
    CHECK(rt_chan_len(b) == 3);
    rt_chan_close(b);
    CHECK(rt_chan_len(b) == 3); /* values survive close */
    CHECK(rt_chan_cap(b) == 3);
    CHECK(rt_chan_len(NULL) == 0);
    CHECK(rt_chan_cap(NULL) == 0);
    rt_chan_free(u);
    rt_chan_free(b);
}

static void test_len_cap(void **state)
{
    (void)state;
    run(1, lencap_main, NULL);
    /* Overflowing sizes are refused. */
    assert_null(rt_chan_make(SIZE_MAX / 2, 3));
    assert_null(rt_chan_make(SIZE_MAX, 1));
    /* Zero-size elements are fine. */
    rt_chan *z = rt_chan_make(0, 5);
    assert_non_null(z);
    rt_chan_free(z);
    rt_chan_free(NULL);
}

/* ------------------------------------------------------- recv on closed */

static void recv_closed_main(void *arg)
{
    (void)arg;
    rt_chan *c = make_chan(sizeof(int), 4);
    for (int i = 1; i <= 3; i++)
        rt_chan_send(c, &i);
    rt_chan_close(c);
    for (int i = 1; i <= 3; i++) {
        int v = -1;
        bool ok = false;
        rt_chan_recv(c, &v, &ok);
        CHECK(ok && v == i);
    }
    for (int k = 0; k < 3; k++) {
        int v = 12345;
        bool ok = true;
        rt_chan_recv(c, &v, &ok);
        CHECK(!ok);
        CHECK(v == 0);
        v = 777;
        ok = true;
        CHECK(rt_chan_tryrecv(c, &v, &ok));
        CHECK(!ok && v == 0);
    }
    rt_chan_recv(c, NULL, NULL); /* discarding receive */
    rt_chan_free(c);

    rt_chan *u = make_chan(sizeof(big), 0);
    rt_chan_close(u);
    big v = {1, 2, 3};
    bool ok = true;
    rt_chan_recv(u, &v, &ok);
    CHECK(!ok && v.a == 0 && v.b == 0 && v.c == 0);
    rt_chan_free(u);
}

static void test_recv_on_closed(void **state)
{
    (void)state;
    run(1, recv_closed_main, NULL);
}

/* ----------------------------------------- close while receivers wait */

#define NRECEIVERS 100

typedef struct closewait {
    rt_chan *c;       /* unbuffered, closed by main */
    rt_chan *results; /* cap NRECEIVERS */
} closewait;

typedef struct recv_result {
    int v;
    bool ok;
} recv_result;

static void closewait_receiver(void *arg)
{
    closewait *cw = arg;
    recv_result r = {.v = 0x5a5a5a5a, .ok = true};
    rt_chan_recv(cw->c, &r.v, &r.ok);
    rt_chan_send(cw->results, &r);
}

static void closewait_main(void *arg)
{
    (void)arg;
    closewait cw = {make_chan(sizeof(int), 0),
                    make_chan(sizeof(recv_result), NRECEIVERS)};
    uint64_t base = nwaiting();
    for (int i = 0; i < NRECEIVERS; i++)
        rt_go(closewait_receiver, &cw);
    wait_waiting(base + NRECEIVERS);
    rt_chan_close(cw.c);
    for (int i = 0; i < NRECEIVERS; i++) {
        recv_result r;
        rt_chan_recv(cw.results, &r, NULL);
        CHECK(!r.ok);
        CHECK(r.v == 0);
    }
    CHECK(rt_chan_len(cw.results) == 0);
    rt_chan_free(cw.c);
    rt_chan_free(cw.results);
}

static void test_close_wakes_receivers(void **state)
{
    (void)state;
    run(1, closewait_main, NULL);
    run(2, closewait_main, NULL);
}

/* ------------------------------------------- aborts, in a child process */

static void crash_send_closed(void *arg)
{
    (void)arg;
    rt_chan *c = rt_chan_make(sizeof(int), 1);
    rt_chan_close(c);
    rt_chan_send(c, &(int){1});
}

static void crash_send_blocked_sender(void *arg)
{
    rt_chan_send(arg, &(int){1});
}

/* In a crash child nobody reports CHECKs: a wait that failed ends the
 * child with a status the parent rejects (not SIGABRT). */
static void crash_wait_parked(uint64_t n)
{
    rt_check_wait_parked(n);
    if (atomic_load(&rt_check_failures) != 0)
        _exit(3);
}

static void crash_send_closed_while_waiting(void *arg)
{
    (void)arg;
    rt_chan *c = rt_chan_make(sizeof(int), 0);
    uint64_t base = nwaiting();
    rt_go(crash_send_blocked_sender, c);
    crash_wait_parked(base + 1); /* the sender is queued on c */
    rt_chan_close(c);            /* the sender wakes and aborts */
    /* Not an ordering: the abort ends the process. This only bounds the
     * wait, so that a sender that does not abort lets main return and the
     * parent reports it. */
    rt_sleep(5 * RT_SEC);
}

static void crash_close_closed(void *arg)
{
    (void)arg;
    rt_chan *c = rt_chan_make(sizeof(int), 0);
    rt_chan_close(c);
    rt_chan_close(c);
}

static void crash_close_nil(void *arg)
{
    (void)arg;
    rt_chan_close(NULL);
}

static void crash_trysend_closed(void *arg)
{
    (void)arg;
    rt_chan *c = rt_chan_make(sizeof(int), 0);
    rt_chan_close(c);
    rt_chan_trysend(c, &(int){1});
}

static const struct {
    const char *name;
    void (*fn)(void *);
} crashes[] = {
    {"send-closed", crash_send_closed},
    {"send-closed-while-waiting", crash_send_closed_while_waiting},
    {"close-closed", crash_close_closed},
    {"close-nil", crash_close_nil},
    {"trysend-closed", crash_trysend_closed},
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

static void test_send_on_closed_aborts(void **state)
{
    (void)state;
    expect_abort("send-closed", "send on closed channel");
    expect_abort("send-closed-while-waiting", "send on closed channel");
    expect_abort("trysend-closed", "send on closed channel");
}

static void test_close_closed_aborts(void **state)
{
    (void)state;
    expect_abort("close-closed", "close of closed channel");
    expect_abort("close-nil", "close of nil channel");
}

/* ------------------------------------------------- trysend / tryrecv */

static void blocked_receiver(void *arg)
{
    rt_chan **cs = arg;
    int v = 0;
    rt_chan_recv(cs[0], &v, NULL);
    rt_chan_send(cs[1], &v);
}

static void blocked_sender(void *arg)
{
    rt_chan **cs = arg;
    rt_chan_send(cs[0], &(int){99});
    rt_chan_send(cs[1], &(int){0});
}

static void try_main(void *arg)
{
    (void)arg;
    int v = 0;
    bool ok = false;

    /* Unbuffered, nobody waiting: both fail. */
    rt_chan *u = make_chan(sizeof(int), 0);
    CHECK(!rt_chan_trysend(u, &(int){1}));
    CHECK(!rt_chan_tryrecv(u, &v, &ok));

    /* Buffered: room then full; data then empty. */
    rt_chan *b = make_chan(sizeof(int), 1);
    CHECK(!rt_chan_tryrecv(b, &v, &ok));
    CHECK(rt_chan_trysend(b, &(int){7}));
    CHECK(!rt_chan_trysend(b, &(int){8}));
    CHECK(rt_chan_tryrecv(b, &v, &ok));
    CHECK(v == 7 && ok);
    CHECK(!rt_chan_tryrecv(b, &v, &ok));

    /* Unbuffered with a parked receiver / sender. */
    rt_chan *done = make_chan(sizeof(int), 1);
    rt_chan *cs[2] = {u, done};
    uint64_t base = nwaiting();
    rt_go(blocked_receiver, cs);
    wait_waiting(base + 1);
    CHECK(rt_chan_trysend(u, &(int){42}));
    rt_chan_recv(done, &v, NULL);
    CHECK(v == 42);

    rt_go(blocked_sender, cs);
    wait_waiting(base + 1);
    v = 0;
    CHECK(rt_chan_tryrecv(u, &v, &ok));
    CHECK(v == 99 && ok);
    rt_chan_recv(done, &v, NULL);

    /* Closed: tryrecv succeeds with ok = false. */
    rt_chan_close(b);
    v = 5;
    ok = true;
    CHECK(rt_chan_tryrecv(b, &v, &ok));
    CHECK(v == 0 && !ok);

    rt_chan_free(u);
    rt_chan_free(b);
    rt_chan_free(done);
}

static void test_trysend_tryrecv(void **state)
{
    (void)state;
    run(1, try_main, NULL);
    run(2, try_main, NULL);
}

/* A timer callback runs in scheduler context (rt__curg() == NULL): the
 * non-blocking forms must work there, waking a parked goroutine. */
typedef struct cbstate {
    rt_chan *in;  /* buffered: the callback takes a value from it */
    rt_chan *out; /* unbuffered: the callback hands the value over */
    rt__timer timer;
    uint64_t parked_base; /* parked goroutines before main parks */
    rt_waitgroup armed;   /* callback_arm has left rt__timer_start */
    _Atomic int sent, got, curg_null;
} cbstate;

static void try_from_callback(rt__timer *t)
{
    cbstate *cs = t->arg;
    atomic_store(&cs->curg_null, rt__curg() == NULL);
    int v = 0;
    bool ok = false;
    if (rt_chan_tryrecv(cs->in, &v, &ok) && ok)
        atomic_store(&cs->got, v);
    /* The main goroutine is parked receiving on out (callback_arm). */
    if (rt_chan_trysend(cs->out, &v))
        atomic_store(&cs->sent, 1);
}

/* Arms the timer once main is parked receiving on out, so that the
 * callback's trysend finds it there. */
static void callback_arm(void *arg)
{
    cbstate *cs = arg;
    wait_waiting(cs->parked_base + 1);
    rt__timer_start(&cs->timer, rt_now());
    rt_waitgroup_done(&cs->armed);
}

static void callback_main(void *arg)
{
    (void)arg;
    cbstate cs = {.in = make_chan(sizeof(int), 1),
                  .out = make_chan(sizeof(int), 0),
                  .armed = RT_WAITGROUP_INIT};
    rt_chan_send(cs.in, &(int){31337});
    rt__timer_init(&cs.timer, try_from_callback, &cs);
    cs.parked_base = nwaiting();
    rt_waitgroup_add(&cs.armed, 1);
    rt_go(callback_arm, &cs);
    int v = 0;
    bool ok = false;
    rt_chan_recv(cs.out, &v, &ok);
    rt_waitgroup_wait(&cs.armed); /* cs outlives callback_arm */
    rt__timer_stop(&cs.timer);    /* waits for the callback to return */
    CHECK(ok && v == 31337);
    CHECK(atomic_load(&cs.curg_null) == 1);
    CHECK(atomic_load(&cs.got) == 31337);
    CHECK(atomic_load(&cs.sent) == 1);
    rt_chan_free(cs.in);
    rt_chan_free(cs.out);
}

static void test_try_from_timer_callback(void **state)
{
    (void)state;
    run(1, callback_main, NULL);
    run(2, callback_main, NULL);
}

/* ------------------------------------------------------------ nil chan */

static _Atomic int nil_returned;

static void nil_receiver(void *arg)
{
    (void)arg;
    int v;
    rt_chan_recv(NULL, &v, NULL);
    atomic_store(&nil_returned, 1);
}

static void nil_sender(void *arg)
{
    (void)arg;
    rt_chan_send(NULL, &(int){1});
    atomic_store(&nil_returned, 1);
}

static void nil_main(void *arg)
{
    (void)arg;
    int v = 3;
    bool ok = true;
    CHECK(!rt_chan_tryrecv(NULL, &v, &ok));
    CHECK(v == 3 && ok); /* untouched */
    CHECK(!rt_chan_trysend(NULL, &v));

    atomic_store(&nil_returned, 0);
    uint64_t base = nwaiting();
    rt_go(nil_receiver, NULL);
    rt_go(nil_sender, NULL);
    wait_waiting(base + 2);
    /* The behaviour under test: nothing wakes them for 20 ms. */
    rt_sleep(20 * RT_MSEC);
    CHECK(atomic_load(&nil_returned) == 0);

    char dump[16384];
    rt_dump_buf(dump, sizeof dump);
    CHECK(strstr(dump, "chan receive (nil chan)") != NULL);
    CHECK(strstr(dump, "chan send (nil chan)") != NULL);
    /* main returns: the two blocked goroutines are abandoned. */
}

static void test_nil_channel(void **state)
{
    (void)state;
    run(2, nil_main, NULL);
}

/* ------------------------------------- many producers, many consumers */

#define MPMC_PRODUCERS 4
#define MPMC_CONSUMERS 4

typedef struct mpmc {
    rt_chan *data;    /* int64 values */
    rt_chan *pdone;   /* producers: one message each */
    rt_chan *results; /* consumers: {sum, count} */
    int64_t per_producer;
    _Atomic int next_id;
} mpmc;

typedef struct mpmc_result {
    int64_t sum, count;
} mpmc_result;

static void mpmc_producer(void *arg)
{
    mpmc *m = arg;
    int id = atomic_fetch_add(&m->next_id, 1);
    int64_t first = (int64_t)id * m->per_producer + 1;
    for (int64_t v = first; v < first + m->per_producer; v++)
        rt_chan_send(m->data, &v);
    rt_chan_send(m->pdone, &id);
}

static void mpmc_consumer(void *arg)
{
    mpmc *m = arg;
    mpmc_result r = {0, 0};
    for (;;) {
        int64_t v;
        bool ok;
        rt_chan_recv(m->data, &v, &ok);
        if (!ok)
            break;
        r.sum += v;
        r.count++;
    }
    rt_chan_send(m->results, &r);
}

static void mpmc_main(void *arg)
{
    mpmc *m = arg;
    m->pdone = make_chan(sizeof(int), 0);
    m->results = make_chan(sizeof(mpmc_result), 0);
    atomic_store(&m->next_id, 0);
    for (int i = 0; i < MPMC_CONSUMERS; i++)
        rt_go(mpmc_consumer, m);
    for (int i = 0; i < MPMC_PRODUCERS; i++)
        rt_go(mpmc_producer, m);
    for (int i = 0; i < MPMC_PRODUCERS; i++)
        rt_chan_recv(m->pdone, NULL, NULL);
    rt_chan_close(m->data); /* the one sender-side close */
    int64_t sum = 0, count = 0;
    for (int i = 0; i < MPMC_CONSUMERS; i++) {
        mpmc_result r;
        rt_chan_recv(m->results, &r, NULL);
        sum += r.sum;
        count += r.count;
    }
    int64_t n = m->per_producer * MPMC_PRODUCERS;
    CHECK(count == n);
    CHECK(sum == n * (n + 1) / 2);
    rt_chan_free(m->pdone);
    rt_chan_free(m->results);
}

static void mpmc_run(size_t cap, int64_t total)
{
    mpmc m = {.per_producer = total / MPMC_PRODUCERS};
    m.data = rt_chan_make(sizeof(int64_t), cap);
    assert_non_null(m.data);
    int64_t t0 = rt_now();
    run(2, mpmc_main, &m);
    int64_t took = rt_now() - t0;
    rt_chan_free(m.data);
    if (took > 120 * RT_SEC)
        fail_msg("%lld items took %lld ms", (long long)total,
                 (long long)(took / RT_MSEC));
}

static void test_mpmc_buffered(void **state)
{
    (void)state;
    mpmc_run(128, 1000000);
}

static void test_mpmc_unbuffered(void **state)
{
    (void)state;
    mpmc_run(0, 200000);
}

/* -------------------------------------------------------------- main */

/* ---------------------------------------- freed by whoever saw it close */

/*
 * The receiver of a close may free the channel at once, even when it saw
 * the close on a lock-free path (select's shortcut for a closed channel,
 * a non-blocking receive) while the closer was still inside rt_chan_close:
 * it released the channel's lock after storing closed. Seen under
 * make test-race in the gateway (gw_log_stop freed the writer's "exited"
 * channel: TSan, free racing rt__lock_release in rt_chan_close). Here a
 * closer on one P and a receiver on the other that polls and frees, many
 * rounds; ASan or TSan report the use after free without the fix (the
 * receiver now waits for the closer's unlock).
 */
typedef struct closefree {
    rt_chan *c;
    rt_waitgroup wg;
} closefree;

static void cf_closer(void *arg)
{
    closefree *cf = arg;
    rt_chan_close(cf->c);
    rt_waitgroup_done(&cf->wg);
}

static void close_free_main(void *arg)
{
    (void)arg;
    for (int round = 0; round < 3000; round++) {
        closefree cf = {.c = rt_chan_make(1, 0)};
        CHECK(cf.c != NULL);
        rt_waitgroup_add(&cf.wg, 1);
        rt_go(cf_closer, &cf);
        bool ok = true;
        if (round % 2 == 0) {
            while (!rt_chan_tryrecv(cf.c, NULL, &ok))
                ;
        } else {
            rt_case cs[1] = {RT_RECV_CASE(cf.c, NULL)};
            CHECK(rt_select(cs, 1) == 0);
            ok = cs[0].ok;
        }
        CHECK(!ok);
        rt_chan_free(cf.c); /* the closer may not touch it any more */
        rt_waitgroup_wait(&cf.wg);
    }
}

static void test_free_after_seeing_close(void **state)
{
    (void)state;
    run(2, close_free_main, NULL);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--crash") == 0)
        return crash_main(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffered_fifo),
        cmocka_unit_test(test_full_buffer_waiting_senders),
        cmocka_unit_test(test_unbuffered_handoff),
        cmocka_unit_test(test_len_cap),
        cmocka_unit_test(test_recv_on_closed),
        cmocka_unit_test(test_close_wakes_receivers),
        cmocka_unit_test(test_send_on_closed_aborts),
        cmocka_unit_test(test_close_closed_aborts),
        cmocka_unit_test(test_trysend_tryrecv),
        cmocka_unit_test(test_try_from_timer_callback),
        cmocka_unit_test(test_nil_channel),
        cmocka_unit_test(test_mpmc_buffered),
        cmocka_unit_test(test_mpmc_unbuffered),
        cmocka_unit_test(test_free_after_seeing_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
