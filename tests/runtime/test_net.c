/*
 * test_net.c - the netpoller and sockets: echo, large and vectored
 * writes, deadlines, contexts; close from any goroutine at any time
 * (waking every operation, failing later ones, never freeing under a
 * caller: 1,000 racing rounds); hang-up watching (RT_HUP) without
 * consuming readability; the hang-up latch not starving a P; one waiter
 * per fd and mode; double and stale registrations; refused dials; and
 * 10,000 concurrent echo connections on 2 Ps.
 *
 * Everything that runs in a goroutine asserts with CHECK (rt_check.h);
 * cmocka's assert_* run only on the test's own thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt.h"

#include "../rt_check.h"

/* --------------------------------------------------------- echo server */

typedef struct {
    rt_conn *ln;
    int port;
    rt_waitgroup wg; /* the accept loop and every connection */
    _Atomic long accepted;
} echo_server;

static void echo_conn(void *arg)
{
    rt_conn *c = arg;
    char buf[16384];
    for (;;) {
        ssize_t n = rt_conn_read(c, buf, sizeof buf, RT_FOREVER, NULL);
        if (n <= 0)
            break;
        if (rt_conn_write(c, buf, (size_t)n, RT_FOREVER, NULL) != n)
            break;
    }
    rt_conn_release(c);
}

typedef struct {
    echo_server *s;
    rt_conn *c;
} conn_arg;

static void echo_conn_wg(void *arg)
{
    conn_arg *a = arg;
    echo_server *s = a->s;
    echo_conn(a->c);
    free(a);
    rt_waitgroup_done(&s->wg);
}

static void accept_loop(void *arg)
{
    echo_server *s = arg;
    for (;;) {
        rt_conn *c;
        if (rt_accept(s->ln, &c, RT_FOREVER, NULL) != 0)
            break; /* listener closed */
        atomic_fetch_add(&s->accepted, 1);
        conn_arg *a = malloc(sizeof *a);
        CHECK(a != NULL);
        *a = (conn_arg){s, c};
        rt_waitgroup_add(&s->wg, 1);
        rt_go(echo_conn_wg, a);
    }
    rt_waitgroup_done(&s->wg);
}

static void echo_start(echo_server *s)
{
    CHECK(rt_listen("127.0.0.1:0", 4096, &s->ln) == 0);
    s->port = rt_conn_port(s->ln);
    CHECK(s->port > 0);
    rt_waitgroup_add(&s->wg, 1);
    rt_go(accept_loop, s);
}

/* Closing the listener (from this goroutine, while the accept loop waits
 * in rt_accept) wakes the accept loop; connections end when their clients
 * close. The listener's memory goes once the loop has left. */
static void echo_stop(echo_server *s)
{
    rt_conn_close(s->ln);
    rt_waitgroup_wait(&s->wg);
    rt_conn_release(s->ln);
}

static int dial_port(int port, rt_conn **c)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int err = rt_dial(addr, c, rt_now() + 5 * RT_SEC, NULL);
    CHECK(err == 0);
    return err;
}

/* A connected pair on loopback: *cli dialed, *srv accepted. */
static int conn_pair(rt_conn **cli, rt_conn **srv)
{
    rt_conn *ln;
    int err = rt_listen("127.0.0.1:0", 16, &ln);
    CHECK(err == 0);
    if (err != 0)
        return err;
    err = dial_port(rt_conn_port(ln), cli);
    if (err == 0) {
        err = rt_accept(ln, srv, rt_now() + 5 * RT_SEC, NULL);
        CHECK(err == 0);
        if (err != 0)
            rt_conn_release(*cli);
    }
    rt_conn_release(ln);
    return err;
}

/* Read exactly len bytes (or fail). */
static bool read_full(rt_conn *c, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n =
            rt_conn_read(c, buf + got, len - got, rt_now() + 5 * RT_SEC, NULL);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

/* ------------------------------------------------------------ basics */

static void basic_main(void *arg)
{
    echo_server *s = arg;
    echo_start(s);
    rt_conn *c;
    if (dial_port(s->port, &c) != 0)
        return;
    CHECK(rt_conn_write(c, "hello", 5, RT_FOREVER, NULL) == 5);
    char buf[16] = {0};
    CHECK(read_full(c, buf, 5));
    CHECK(memcmp(buf, "hello", 5) == 0);

    /* writev, several buffers */
    struct iovec iov[3] = {{"ab", 2}, {"", 0}, {"cdef", 4}};
    CHECK(rt_conn_writev(c, iov, 3, RT_FOREVER, NULL) == 6);
    CHECK(read_full(c, buf, 6));
    CHECK(memcmp(buf, "abcdef", 6) == 0);

    /* Our address as the server would see it. */
    char addr[RT_ADDR_LEN];
    CHECK(rt_conn_peer_addr(c, addr, sizeof addr) == 0);
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", s->port);
    CHECK(strcmp(addr, want) == 0);
    CHECK(rt_conn_peer_addr(c, addr, 4) == -ENOSPC);

    /* Half close: the server sees EOF, closes, we see EOF. */
    CHECK(rt_conn_shutdown(c, SHUT_WR) == 0);
    CHECK(rt_conn_read(c, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 0);
    rt_conn_release(c);
    echo_stop(s);
}

static void test_echo_basic(void **state)
{
    (void)state;
    echo_server s = {0};
    rt_check_run(0, basic_main, &s);
    assert_int_equal(atomic_load(&s.accepted), 1);
}

/* A 4 MiB write against a reader that starts late: the writer parks on a
 * full socket buffer and resumes. */
typedef struct {
    rt_conn *c;
    size_t got;
    bool same;
    rt_waitgroup wg;
} big_state;

static void big_reader(void *arg)
{
    big_state *b = arg;
    /* Not synchronisation: a late reader makes the writer park. */
    rt_sleep(20 * RT_MSEC);
    char *buf = malloc(65536);
    b->same = true;
    for (;;) {
        ssize_t n = rt_conn_read(b->c, buf, 65536, rt_now() + 5 * RT_SEC, NULL);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            b->same = b->same && (unsigned char)buf[i] ==
                                     (unsigned char)((b->got + (size_t)i) * 7);
        b->got += (size_t)n;
        if (b->got == 4u << 20)
            break;
    }
    free(buf);
    rt_waitgroup_done(&b->wg);
}

static void big_main(void *arg)
{
    (void)arg;
    echo_server s = {0};
    echo_start(&s);
    big_state b = {0};
    if (dial_port(s.port, &b.c) != 0)
        return;
    size_t len = 4u << 20;
    unsigned char *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 7);
    rt_waitgroup_add(&b.wg, 1);
    rt_go(big_reader, &b);
    CHECK(rt_conn_write(b.c, data, len, rt_now() + 10 * RT_SEC, NULL) ==
          (ssize_t)len);
    rt_waitgroup_wait(&b.wg);
    CHECK(b.got == len);
    CHECK(b.same);
    free(data);
    rt_conn_release(b.c);
    echo_stop(&s);
}

static void test_large_write(void **state)
{
    (void)state;
    rt_check_run(2, big_main, NULL);
}

/* --------------------------------------------------- deadlines, ctx */

typedef struct {
    int64_t read_elapsed, accept_elapsed, ctx_elapsed;
    ssize_t read_ret, ctx_ret;
    int accept_ret;
} deadline_state;

static void deadline_main(void *arg)
{
    deadline_state *d = arg;
    echo_server s = {0};
    echo_start(&s);
    rt_conn *c;
    if (dial_port(s.port, &c) != 0)
        return;
    char buf[8];
    int64_t t0 = rt_now();
    d->read_ret = rt_conn_read(c, buf, sizeof buf, t0 + 50 * RT_MSEC, NULL);
    d->read_elapsed = rt_now() - t0;

    /* A context with a 30 ms deadline ends the read with -ETIMEDOUT; a
     * cancelled one with -ECANCELED. */
    t0 = rt_now();
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 30 * RT_MSEC);
    d->ctx_ret = rt_conn_read(c, buf, sizeof buf, RT_FOREVER, ctx);
    d->ctx_elapsed = rt_now() - t0;
    rt_ctx_release(ctx);
    ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_ctx_cancel(ctx);
    CHECK(rt_conn_read(c, buf, sizeof buf, RT_FOREVER, ctx) == -ECANCELED);
    CHECK(rt_conn_wait(c, RT_HUP, RT_FOREVER, ctx) == -ECANCELED);
    rt_ctx_release(ctx);
    /* The connection still works after timeouts. */
    CHECK(rt_conn_write(c, "x", 1, RT_FOREVER, NULL) == 1);
    CHECK(rt_conn_read(c, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 1);
    rt_conn_release(c);

    echo_stop(&s);

    rt_conn *ln, *nc;
    CHECK(rt_listen("127.0.0.1:0", 16, &ln) == 0);
    t0 = rt_now();
    d->accept_ret = rt_accept(ln, &nc, t0 + 30 * RT_MSEC, NULL);
    d->accept_elapsed = rt_now() - t0;
    rt_conn_release(ln);
}

static void test_deadlines(void **state)
{
    (void)state;
    for (int attempt = 0; attempt < 2; attempt++) {
        deadline_state d = {0};
        rt_check_run(0, deadline_main, &d);
        assert_int_equal(d.read_ret, -ETIMEDOUT);
        assert_int_equal(d.ctx_ret, -ETIMEDOUT);
        assert_int_equal(d.accept_ret, -ETIMEDOUT);
        assert_true(d.read_elapsed >= 50 * RT_MSEC);
        assert_true(d.ctx_elapsed >= 30 * RT_MSEC);
        assert_true(d.accept_elapsed >= 30 * RT_MSEC);
        if (d.read_elapsed < 150 * RT_MSEC && d.ctx_elapsed < 130 * RT_MSEC &&
            d.accept_elapsed < 130 * RT_MSEC)
            return;
    }
    fail_msg("deadlines overshot by more than 100 ms twice");
}

/* ------------------------------------------------------------- close */

typedef struct {
    rt_conn *c;
    ssize_t ret;
    rt_waitgroup wg;
} parked_reader;

static void park_read(void *arg)
{
    parked_reader *p = arg;
    char buf[8];
    p->ret = rt_conn_read(p->c, buf, sizeof buf, RT_FOREVER, NULL);
    rt_conn_unref(p->c); /* the reference main took for us */
    rt_waitgroup_done(&p->wg);
}

static void close_wakes_main(void *arg)
{
    int64_t *elapsed = arg;
    rt_conn *cli, *srv;
    if (conn_pair(&cli, &srv) != 0)
        return;
    parked_reader p = {.c = rt_conn_ref(srv)};
    rt_waitgroup_add(&p.wg, 1);
    rt_go(park_read, &p);
    rt_check_wait_parked(1);
    int64_t t0 = rt_now();
    CHECK(rt_conn_close(srv) == 0); /* returns once the reader has left */
    *elapsed = rt_now() - t0;
    rt_waitgroup_wait(&p.wg);
    CHECK(p.ret == -EBADF);
    /* The peer sees the close at once. */
    char b;
    CHECK(rt_conn_read(cli, &b, 1, rt_now() + RT_SEC, NULL) == 0);
    rt_conn_release(srv);
    rt_conn_release(cli);
}

static void test_close_wakes_reader(void **state)
{
    (void)state;
    int64_t elapsed = 0;
    rt_check_run(2, close_wakes_main, &elapsed);
    assert_true(elapsed < 100 * RT_MSEC);
}

/* Every operation on a closed connection fails with -EBADF, and the memory
 * stays valid until the last reference goes (ASan would see otherwise). */
static void closed_ops_main(void *arg)
{
    (void)arg;
    rt_conn *cli, *srv, *ln, *nc;
    if (conn_pair(&cli, &srv) != 0)
        return;
    CHECK(rt_listen("127.0.0.1:0", 4, &ln) == 0);
    rt_conn *extra = rt_conn_ref(srv); /* a second holder */
    CHECK(!rt_conn_closed(srv));
    CHECK(rt_conn_close(srv) == 0);
    CHECK(rt_conn_closed(srv));
    CHECK(rt_conn_close(srv) == -EBADF); /* idempotent */
    char b[4];
    struct iovec iov = {b, 1};
    int one = 1;
    char addr[RT_ADDR_LEN];
    CHECK(rt_conn_read(srv, b, 1, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_write(srv, "x", 1, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_writev(srv, &iov, 1, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_try_read(srv, b, 1) == -EBADF);
    CHECK(rt_conn_try_write(srv, "x", 1) == -EBADF);
    CHECK(rt_conn_wait(srv, RT_READ, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_wait(srv, RT_HUP, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_shutdown(srv, SHUT_WR) == -EBADF);
    CHECK(rt_conn_port(srv) == -EBADF);
    CHECK(rt_conn_peer_addr(srv, addr, sizeof addr) == -EBADF);
    CHECK(rt_conn_setsockopt(srv, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) ==
          -EBADF);
    CHECK(rt_conn_peer_gone(srv));
    rt_conn_release(srv); /* the owner goes; extra still holds it */
    CHECK(rt_conn_read(extra, b, 1, RT_FOREVER, NULL) == -EBADF);
    rt_conn_unref(extra); /* the last reference: freed */

    CHECK(rt_conn_close(ln) == 0);
    CHECK(rt_accept(ln, &nc, RT_FOREVER, NULL) == -EBADF);
    rt_conn_release(ln);
    /* An unref that is the last reference closes a conn nobody closed. */
    rt_conn_unref(cli);
}

static void test_closed_ops(void **state)
{
    (void)state;
    rt_check_run(2, closed_ops_main, NULL);
}

/*
 * 1,000 rounds of closing a listener and a connection at random points
 * from a goroutine that owns neither, while other goroutines accept,
 * dial, read, write, watch for hang-up and ask for addresses. Each
 * goroutine holds its own reference. Every call must end with a result
 * (no hang), an expected error, and nothing touches freed memory (run
 * under ASan and TSan by make test-asan / test-race).
 */
#define RACE_ROUNDS 1000

typedef struct {
    rt_conn *ln, *srv, *cli;
    int port;
    unsigned seed, client_seed; /* one per goroutine that draws */
    rt_waitgroup wg;
    _Atomic int bad; /* unexpected results */
} race_round;

static bool expected_end(ssize_t r)
{
    return r == -EBADF || r == -ECONNRESET || r == -EPIPE || r == 0;
}

static void race_acceptor(void *arg)
{
    race_round *r = arg;
    for (;;) {
        rt_conn *c;
        int err = rt_accept(r->ln, &c, rt_now() + 5 * RT_SEC, NULL);
        if (err != 0) {
            CHECK(err == -EBADF);
            break;
        }
        rt_conn_release(c);
    }
    rt_conn_unref(r->ln);
    rt_waitgroup_done(&r->wg);
}

static void race_dialer(void *arg)
{
    race_round *r = arg;
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", r->port);
    for (int i = 0; i < 4; i++) {
        rt_conn *c;
        if (rt_dial(addr, &c, rt_now() + 5 * RT_SEC, NULL) != 0)
            break; /* refused once the listener is closed */
        rt_conn_release(c);
    }
    rt_waitgroup_done(&r->wg);
}

static void race_reader(void *arg)
{
    race_round *r = arg;
    char buf[512];
    ssize_t n;
    while ((n = rt_conn_read(r->srv, buf, sizeof buf, rt_now() + 5 * RT_SEC,
                             NULL)) > 0)
        ;
    CHECK(expected_end(n));
    rt_conn_unref(r->srv);
    rt_waitgroup_done(&r->wg);
}

static void race_writer(void *arg)
{
    race_round *r = arg;
    static const char block[1024];
    ssize_t n;
    while ((n = rt_conn_write(r->srv, block, sizeof block,
                              rt_now() + 5 * RT_SEC, NULL)) > 0)
        ;
    CHECK(expected_end(n));
    rt_conn_unref(r->srv);
    rt_waitgroup_done(&r->wg);
}

static void race_watcher(void *arg)
{
    race_round *r = arg;
    int err = rt_conn_wait(r->srv, RT_HUP, rt_now() + 5 * RT_SEC, NULL);
    CHECK(err == 0 || err == -EBADF);
    rt_conn_unref(r->srv);
    rt_waitgroup_done(&r->wg);
}

static void race_prober(void *arg)
{
    race_round *r = arg;
    char addr[RT_ADDR_LEN];
    int one = 1;
    while (!rt_conn_closed(r->srv)) {
        int p = rt_conn_port(r->srv);
        CHECK(p > 0 || p == -EBADF);
        int e = rt_conn_peer_addr(r->srv, addr, sizeof addr);
        CHECK(e == 0 || e == -EBADF || e == -ENOTCONN);
        e = rt_conn_setsockopt(r->srv, SOL_SOCKET, SO_KEEPALIVE, &one,
                               sizeof one);
        CHECK(e == 0 || e == -EBADF);
        (void)rt_conn_peer_gone(r->srv);
        rt_yield();
    }
    rt_conn_unref(r->srv);
    rt_waitgroup_done(&r->wg);
}

/* The client end: drains what the server writes, until the end. */
static void race_client(void *arg)
{
    race_round *r = arg;
    char buf[4096];
    ssize_t n;
    if (rand_r(&r->client_seed) % 2) {
        n = rt_conn_write(r->cli, "ping", 4, RT_FOREVER, NULL);
        CHECK(n == 4 || expected_end(n));
    }
    while ((n = rt_conn_read(r->cli, buf, sizeof buf, rt_now() + 5 * RT_SEC,
                             NULL)) > 0)
        ;
    CHECK(expected_end(n));
    rt_conn_unref(r->cli);
    rt_waitgroup_done(&r->wg);
}

static void race_closer(void *arg)
{
    race_round *r = arg;
    int spins = (int)(rand_r(&r->seed) % 64);
    for (int i = 0; i < spins; i++)
        rt_yield();
    if (rand_r(&r->seed) % 2) {
        rt_conn_close(r->srv);
        rt_conn_close(r->ln);
    } else {
        rt_conn_close(r->ln);
        rt_conn_close(r->srv);
    }
    if (rand_r(&r->seed) % 4 == 0)
        rt_conn_close(r->cli); /* sometimes the client side too */
    else
        rt_conn_shutdown(r->cli, SHUT_WR);
    /* Whatever starts now fails at once. */
    rt_conn *c;
    CHECK(rt_accept(r->ln, &c, RT_FOREVER, NULL) == -EBADF);
    CHECK(rt_conn_wait(r->srv, RT_HUP, RT_FOREVER, NULL) == -EBADF);
    rt_conn_unref(r->srv);
    rt_conn_unref(r->ln);
    rt_conn_unref(r->cli);
    rt_waitgroup_done(&r->wg);
}

static void race_spawn(race_round *r, rt_fn fn, rt_conn *ref)
{
    if (ref != NULL)
        rt_conn_ref(ref);
    rt_waitgroup_add(&r->wg, 1);
    CHECK(rt_go(fn, r) != 0);
}

static void close_race_main(void *arg)
{
    int *rounds_done = arg;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        race_round r = {.seed = (unsigned)round * 2654435761u,
                        .client_seed = (unsigned)round};
        if (rt_listen("127.0.0.1:0", 64, &r.ln) != 0) {
            CHECK(!"listen");
            return;
        }
        r.port = rt_conn_port(r.ln);
        if (dial_port(r.port, &r.cli) != 0 ||
            rt_accept(r.ln, &r.srv, rt_now() + 5 * RT_SEC, NULL) != 0) {
            CHECK(!"pair");
            return;
        }
        race_spawn(&r, race_acceptor, r.ln);
        race_spawn(&r, race_dialer, NULL);
        race_spawn(&r, race_reader, r.srv);
        race_spawn(&r, race_writer, r.srv);
        race_spawn(&r, race_watcher, r.srv);
        race_spawn(&r, race_prober, r.srv);
        race_spawn(&r, race_client, r.cli);
        rt_conn_ref(r.ln);
        rt_conn_ref(r.cli);
        race_spawn(&r, race_closer, r.srv);
        /* The owner lets go at once: the goroutines' references keep the
         * memory, and each conn goes with its last holder. */
        rt_conn_release(r.srv);
        rt_conn_release(r.ln);
        rt_conn_release(r.cli);
        rt_waitgroup_wait(&r.wg);
        *rounds_done = round + 1;
    }
}

static void test_close_races(void **state)
{
    (void)state;
    int rounds = 0;
    rt_check_run(2, close_race_main, &rounds);
    assert_int_equal(rounds, RACE_ROUNDS);
}

/* ------------------------------------------------------------ hang-up */

typedef struct {
    bool gone_before, gone_after_fin, gone_with_data, data_then_eof;
    int hup_fin, hup_data, hup_rst;
    ssize_t rst_read;
} gone_state;

static void gone_main(void *arg)
{
    gone_state *g = arg;
    rt_conn *c, *srv;
    char buf[8];

    /* FIN with nothing buffered: gone. */
    if (conn_pair(&c, &srv) != 0)
        return;
    g->gone_before = rt_conn_peer_gone(srv);
    rt_conn_release(c);
    g->hup_fin = rt_conn_wait(srv, RT_HUP, rt_now() + 5 * RT_SEC, NULL);
    g->gone_after_fin = rt_conn_peer_gone(srv);
    rt_conn_release(srv);

    /* Data then FIN: the hang-up is seen, the data is still there to
     * read, and peer_gone (the peek) says not gone yet. */
    if (conn_pair(&c, &srv) != 0)
        return;
    CHECK(rt_conn_write(c, "GET /", 5, RT_FOREVER, NULL) == 5);
    rt_conn_release(c);
    g->hup_data = rt_conn_wait(srv, RT_HUP, rt_now() + 5 * RT_SEC, NULL);
    g->gone_with_data = rt_conn_peer_gone(srv);
    g->data_then_eof =
        read_full(srv, buf, 5) && memcmp(buf, "GET /", 5) == 0 &&
        rt_conn_read(srv, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 0;
    rt_conn_release(srv);

    /* RST (SO_LINGER 0): the watch ends, a read fails -ECONNRESET. */
    if (conn_pair(&c, &srv) != 0)
        return;
    struct linger lg = {1, 0};
    CHECK(rt_conn_setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    rt_conn_release(c);
    g->hup_rst = rt_conn_wait(srv, RT_HUP, rt_now() + 5 * RT_SEC, NULL);
    g->rst_read = rt_conn_read(srv, buf, 1, rt_now() + RT_SEC, NULL);
    rt_conn_release(srv);
}

static void test_peer_gone(void **state)
{
    (void)state;
    gone_state g = {0};
    rt_check_run(0, gone_main, &g);
    assert_false(g.gone_before);
    assert_int_equal(g.hup_fin, 0);
    assert_true(g.gone_after_fin);
    assert_int_equal(g.hup_data, 0);
    assert_false(g.gone_with_data);
    assert_true(g.data_then_eof);
    assert_int_equal(g.hup_rst, 0);
    assert_int_equal(g.rst_read, -ECONNRESET);
}

/*
 * A server watches for its client going away while the client's bytes sit
 * unread, alongside a parked reader: data wakes the reader and not the
 * watcher; the watcher never spins on readability; the hang-up wakes the
 * watcher. And "cancel the request when the client leaves", as the
 * gateway does it.
 */
typedef struct {
    rt_conn *srv;
    rt_ctx *req;
    _Atomic int watch_ret, woke;
    rt_waitgroup wg;
} watch_state;

static void hup_watcher(void *arg)
{
    watch_state *w = arg;
    int err = rt_conn_wait(w->srv, RT_HUP, RT_FOREVER, w->req);
    atomic_store(&w->watch_ret, err);
    atomic_fetch_add(&w->woke, 1);
    if (err == 0)
        rt_ctx_cancel(w->req); /* the client is gone */
    rt_waitgroup_done(&w->wg);
}

static void hup_watch_main(void *arg)
{
    (void)arg;
    rt_conn *cli, *srv;
    if (conn_pair(&cli, &srv) != 0)
        return;
    watch_state w = {.srv = srv,
                     .req = rt_ctx_with_cancel(rt_ctx_background()),
                     .watch_ret = 1};
    rt_waitgroup_add(&w.wg, 1);
    rt_go(hup_watcher, &w);
    rt_check_wait_parked(1);

    /* Bytes arrive: readable, but no hang-up. The watcher stays parked
     * (50 ms, and it never returned: it did not wake and wait again). */
    CHECK(rt_conn_write(cli, "abc", 3, RT_FOREVER, NULL) == 3);
    CHECK(rt_conn_wait(srv, RT_READ, rt_now() + RT_SEC, NULL) == 0);
    CHECK(rt_conn_wait(srv, RT_HUP, rt_now() + 50 * RT_MSEC, NULL) == -EBUSY);
    rt_sleep(50 * RT_MSEC); /* the time it would take to spin */
    CHECK(atomic_load(&w.woke) == 0);
    /* Readability was not consumed by the watch: the read gets it. */
    char buf[8];
    CHECK(rt_conn_read(srv, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 3);

    /* One more byte, left unread. */
    CHECK(rt_conn_write(cli, "d", 1, RT_FOREVER, NULL) == 1);

    /* The client leaves with a byte unread: the watch ends and cancels the
     * request context; the byte is still there to read. */
    int64_t t0 = rt_now();
    rt_conn_release(cli);
    rt_chan_recv(rt_ctx_done(w.req), NULL, NULL);
    int64_t took = rt_now() - t0;
    rt_waitgroup_wait(&w.wg);
    CHECK(atomic_load(&w.watch_ret) == 0);
    CHECK(rt_ctx_err(w.req) == -ECANCELED);
    CHECK(took < RT_SEC);
    CHECK(rt_conn_read(srv, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 1);
    CHECK(rt_conn_read(srv, buf, sizeof buf, rt_now() + RT_SEC, NULL) == 0);
    rt_ctx_release(w.req);
    rt_conn_release(srv);
}

static void test_hup_watch(void **state)
{
    (void)state;
    rt_check_run(2, hup_watch_main, NULL);
}

/*
 * The hang-up latch must not starve a P: with one P, a goroutine loops
 * "wait readable, then look" on a connection whose client sent 5 bytes
 * and left (readable for good); another sleeps 10 ms in a loop. Before
 * the fix the looper never yielded and the sleeper ran 0 times in 300 ms.
 */
typedef struct {
    rt_conn *srv;
    int64_t until;
    _Atomic int ticks;
    long loops;
    rt_waitgroup wg;
} latch_state;

static void latch_looper(void *arg)
{
    latch_state *l = arg;
    while (rt_now() < l->until) {
        if (rt_conn_wait(l->srv, RT_READ, l->until, NULL) != 0)
            break;
        (void)rt_conn_peer_gone(l->srv); /* peeks; consumes nothing */
        l->loops++;
    }
    rt_waitgroup_done(&l->wg);
}

static void latch_ticker(void *arg)
{
    latch_state *l = arg;
    while (rt_now() < l->until) {
        rt_sleep(10 * RT_MSEC);
        atomic_fetch_add(&l->ticks, 1);
    }
    rt_waitgroup_done(&l->wg);
}

static void latch_main(void *arg)
{
    latch_state *l = arg;
    rt_conn *cli;
    if (conn_pair(&cli, &l->srv) != 0)
        return;
    CHECK(rt_conn_write(cli, "hello", 5, RT_FOREVER, NULL) == 5);
    rt_conn_release(cli);
    CHECK(rt_conn_wait(l->srv, RT_HUP, rt_now() + 5 * RT_SEC, NULL) == 0);
    l->until = rt_now() + 300 * RT_MSEC;
    rt_waitgroup_add(&l->wg, 2);
    rt_go(latch_ticker, l);
    rt_go(latch_looper, l);
    rt_waitgroup_wait(&l->wg);
    rt_conn_release(l->srv);
}

static void test_hup_latch_yields(void **state)
{
    (void)state;
    latch_state l = {0};
    rt_check_run(1, latch_main, &l);
    /* ~30 ticks expected; 10 leaves room for a slow machine. */
    if (atomic_load(&l.ticks) < 10)
        fail_msg("sleeper ticked %d times in 300 ms beside a latched "
                 "read loop (%ld loops)",
                 atomic_load(&l.ticks), l.loops);
}

/* ------------------------------------------------ one waiter per mode */

typedef struct {
    rt_conn *ln;
    int ret[2];
    int64_t elapsed[2];
    rt_waitgroup wg;
} two_state;

static void two_acceptor(void *arg)
{
    two_state *t = arg;
    int i = t->ret[0] == 1 ? 0 : 1; /* first to run takes slot 0 */
    t->ret[i] = 2;
    rt_conn *c;
    int64_t t0 = rt_now();
    int err = rt_accept(t->ln, &c, t0 + 500 * RT_MSEC, NULL);
    t->elapsed[i] = rt_now() - t0;
    t->ret[i] = err;
    rt_waitgroup_done(&t->wg);
}

static void two_main(void *arg)
{
    two_state *t = arg;
    CHECK(rt_listen("127.0.0.1:0", 4, &t->ln) == 0);
    t->ret[0] = t->ret[1] = 1;
    rt_waitgroup_add(&t->wg, 2);
    rt_go(two_acceptor, t);
    rt_go(two_acceptor, t);
    rt_waitgroup_wait(&t->wg);

    /* Two readers of one conn, and two hang-up watchers. */
    rt_conn *cli, *srv;
    if (conn_pair(&cli, &srv) == 0) {
        parked_reader p = {.c = rt_conn_ref(srv)};
        rt_waitgroup_add(&p.wg, 1);
        rt_go(park_read, &p);
        rt_check_wait_parked(1);
        char b;
        CHECK(rt_conn_read(srv, &b, 1, rt_now() + RT_SEC, NULL) == -EBUSY);
        CHECK(rt_conn_write(cli, "z", 1, RT_FOREVER, NULL) == 1);
        rt_waitgroup_wait(&p.wg);
        CHECK(p.ret == 1);
        rt_conn_release(cli);
        rt_conn_release(srv);
    }
    rt_conn_release(t->ln);
}

static void test_two_waiters(void **state)
{
    (void)state;
    two_state t = {0};
    rt_check_run(1, two_main, &t);
    /* One waited the 500 ms out; the other was refused at once. */
    int busy = t.ret[0] == -EBUSY ? 0 : 1;
    assert_int_equal(t.ret[busy], -EBUSY);
    assert_int_equal(t.ret[1 - busy], -ETIMEDOUT);
    assert_true(t.elapsed[busy] < 100 * RT_MSEC);
    assert_true(t.elapsed[1 - busy] >= 500 * RT_MSEC);
}

/* ---------------------------------------------------- registration */

typedef struct {
    int fd;
    int ret;
    rt_waitgroup wg;
} fd_waiter;

static void wait_fd(void *arg)
{
    fd_waiter *w = arg;
    w->ret = rt_fd_wait(w->fd, RT_READ, rt_now() + 5 * RT_SEC, NULL);
    rt_waitgroup_done(&w->wg);
}

static void registration_main(void *arg)
{
    (void)arg;
    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);

    /* Registered twice: -EEXIST, and the first registration's waiter is
     * still served. */
    CHECK(rt_fd_register(p[0]) == 0);
    fd_waiter w = {.fd = p[0], .ret = 1};
    rt_waitgroup_add(&w.wg, 1);
    rt_go(wait_fd, &w);
    rt_check_wait_parked(1);
    CHECK(rt_fd_register(p[0]) == -EEXIST);
    CHECK(write(p[1], "x", 1) == 1);
    rt_waitgroup_wait(&w.wg);
    CHECK(w.ret == 0);
    CHECK(rt_fd_wait(p[0], 7, RT_FOREVER, NULL) == -EINVAL);

    /* Stale readiness after fd reuse: p[0] is readable; unregister and
     * close it, make a new pipe (the same numbers come back) and register
     * it: nothing of the old fd's readiness may leak into the new one. */
    int old = p[0];
    rt_fd_unregister(p[0]);
    close(p[0]);
    close(p[1]);
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    CHECK(p[0] == old);
    CHECK(rt_fd_register(p[0]) == 0);
    CHECK(rt_fd_wait(p[0], RT_READ, rt_now() + 30 * RT_MSEC, NULL) ==
          -ETIMEDOUT);

    /* Closed without rt_fd_unregister and its number reused: the new fd
     * registers (the kernel dropped the old one from epoll). */
    close(p[0]);
    close(p[1]);
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    CHECK(rt_fd_register(p[0]) == 0);
    CHECK(write(p[1], "y", 1) == 1);
    CHECK(rt_fd_wait(p[0], RT_READ, rt_now() + RT_SEC, NULL) == 0);
    rt_fd_unregister(p[0]);
    CHECK(rt_fd_wait(p[0], RT_READ, RT_FOREVER, NULL) == -EBADF);
    close(p[0]);
    close(p[1]);
}

static void test_registration(void **state)
{
    (void)state;
    rt_check_run(2, registration_main, NULL);
}

/* --------------------------------------------------------------- dialing */

static void refused_main(void *arg)
{
    int *ret = arg;
    /* A port that was just free: bind, learn it, close. */
    rt_conn *ln;
    CHECK(rt_listen("127.0.0.1:0", 1, &ln) == 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rt_conn_port(ln));
    rt_conn_release(ln);
    rt_conn *c;
    ret[0] = rt_dial(addr, &c, rt_now() + RT_SEC, NULL);
    ret[1] = rt_dial("not-an-address", &c, rt_now() + RT_SEC, NULL);
    ret[2] = rt_listen("127.0.0.1:99999", 1, &c);
}

static void test_dial_errors(void **state)
{
    (void)state;
    int ret[3] = {0};
    rt_check_run(0, refused_main, ret);
    assert_int_equal(ret[0], -ECONNREFUSED);
    assert_int_equal(ret[1], -EINVAL);
    assert_int_equal(ret[2], -EINVAL);
}

/* ------------------------------------------------ 10,000 echo connections */

#define NCONN 10000

typedef struct {
    int port;
    rt_waitgroup wg, connected;
    rt_chan *go; /* closed once every client has connected */
    _Atomic int ok;
} many_state;

static void many_client(void *arg)
{
    many_state *m = arg;
    rt_conn *c;
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", m->port);
    int err = -1;
    for (int tries = 0; tries < 5 && err != 0; tries++) {
        err = rt_dial(addr, &c, rt_now() + 10 * RT_SEC, NULL);
        if (err != 0)
            rt_sleep(10 * RT_MSEC); /* back off, then retry */
    }
    /* Everyone connects first, then talks: all 10,000 open at once. */
    rt_waitgroup_done(&m->connected);
    rt_chan_recv(m->go, NULL, NULL);
    if (err == 0) {
        char msg[32], buf[32];
        int len = snprintf(msg, sizeof msg, "conn %llu",
                           (unsigned long long)rt_goid());
        if (rt_conn_write(c, msg, (size_t)len, RT_FOREVER, NULL) == len) {
            int got = 0;
            while (got < len) {
                ssize_t n = rt_conn_read(c, buf + got, sizeof buf - got,
                                         rt_now() + 20 * RT_SEC, NULL);
                if (n <= 0)
                    break;
                got += (int)n;
            }
            if (got == len && memcmp(msg, buf, (size_t)len) == 0)
                atomic_fetch_add(&m->ok, 1);
        }
        rt_conn_release(c);
    }
    rt_waitgroup_done(&m->wg);
}

static void many_main(void *arg)
{
    many_state *m = arg;
    m->go = rt_chan_make(1, 0);
    for (int i = 0; i < NCONN; i++) {
        rt_waitgroup_add(&m->wg, 1);
        rt_waitgroup_add(&m->connected, 1);
        rt_go(many_client, m);
    }
    rt_waitgroup_wait(&m->connected);
    rt_chan_close(m->go);
    rt_waitgroup_wait(&m->wg);
    rt_chan_free(m->go);
}

static void server_main(void *arg)
{
    int *pipefd = arg;
    echo_server s = {0};
    echo_start(&s);
    CHECK(write(pipefd[1], &s.port, sizeof s.port) == (ssize_t)sizeof s.port);
    char b;
    /* Serve until the parent closes the pipe. */
    rt_fd_register(pipefd[0]);
    while (read(pipefd[0], &b, 1) != 0)
        rt_fd_wait(pipefd[0], RT_READ, RT_FOREVER, NULL);
    rt_fd_unregister(pipefd[0]);
    _exit(0);
}

static void test_10k_connections(void **state)
{
    (void)state;
    /* The server runs in a child process: each side holds 10,000 fds. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < NCONN + 200)
        skip();
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int to_child[2], from_child[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(to_child[1]);
        close(from_child[0]);
        int fds[2] = {to_child[0], from_child[1]};
        rt_set_procs(2);
        rt_run(server_main, fds);
        _exit(1);
    }
    close(to_child[0]);
    close(from_child[1]);
    many_state m = {0};
    assert_int_equal(read(from_child[0], &m.port, sizeof m.port),
                     (ssize_t)sizeof m.port);
    int64_t t0 = rt_now();
    rt_check_run(2, many_main, &m);
    int64_t elapsed = rt_now() - t0;
    close(to_child[1]); /* the server exits */
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(from_child[0]);
    assert_int_equal(atomic_load(&m.ok), NCONN);
    assert_true(elapsed < 60 * RT_SEC);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_basic),
        cmocka_unit_test(test_large_write),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_close_wakes_reader),
        cmocka_unit_test(test_closed_ops),
        cmocka_unit_test(test_close_races),
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_hup_watch),
        cmocka_unit_test(test_hup_latch_yields),
        cmocka_unit_test(test_two_waiters),
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_dial_errors),
        cmocka_unit_test(test_10k_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
