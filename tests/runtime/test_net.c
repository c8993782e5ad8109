/*
 * test_net.c - the netpoller and sockets: deadlines, contexts, close
 * waking a parked reader, peer-gone detection, refused dials, large and
 * vectored writes, and 10,000 concurrent echo connections on 2 Ps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt.h"

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
        *a = (conn_arg){s, c};
        rt_waitgroup_add(&s->wg, 1);
        rt_go(echo_conn_wg, a);
    }
    rt_waitgroup_done(&s->wg);
}

static void echo_start(echo_server *s)
{
    assert_int_equal(rt_listen("127.0.0.1:0", 4096, &s->ln), 0);
    s->port = rt_conn_port(s->ln);
    assert_true(s->port > 0);
    rt_waitgroup_add(&s->wg, 1);
    rt_go(accept_loop, s);
}

/* Closing the listener wakes the accept loop; connections end when their
 * clients close. */
static void echo_stop(echo_server *s)
{
    rt_conn_close(s->ln);
    rt_waitgroup_wait(&s->wg);
    rt_conn_release(s->ln);
}

static void dial_port(int port, rt_conn **c)
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(rt_dial(addr, c, rt_now() + 5 * RT_SEC, NULL), 0);
}

/* ------------------------------------------------------------ basics */

static void basic_main(void *arg)
{
    (void)arg;
    echo_server s = {0};
    echo_start(&s);
    rt_conn *c;
    dial_port(s.port, &c);
    assert_int_equal(rt_conn_write(c, "hello", 5, RT_FOREVER, NULL), 5);
    char buf[16] = {0};
    size_t got = 0;
    while (got < 5) {
        ssize_t n = rt_conn_read(c, buf + got, sizeof buf - got,
                                 rt_now() + RT_SEC, NULL);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(buf, "hello", 5);

    /* writev, several buffers */
    struct iovec iov[3] = {{"ab", 2}, {"", 0}, {"cdef", 4}};
    assert_int_equal(rt_conn_writev(c, iov, 3, RT_FOREVER, NULL), 6);
    got = 0;
    while (got < 6) {
        ssize_t n = rt_conn_read(c, buf + got, sizeof buf - got,
                                 rt_now() + RT_SEC, NULL);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(buf, "abcdef", 6);

    /* Half close: the server sees EOF, closes, we see EOF. */
    assert_int_equal(rt_conn_shutdown(c, SHUT_WR), 0);
    assert_int_equal(rt_conn_read(c, buf, sizeof buf, rt_now() + RT_SEC, NULL),
                     0);
    rt_conn_release(c);
    echo_stop(&s);
    assert_int_equal(atomic_load(&s.accepted), 1);
}

static void test_echo_basic(void **state)
{
    (void)state;
    assert_int_equal(rt_run(basic_main, NULL), 0);
}

/* A 4 MiB write against a reader that starts late: the writer parks on a
 * full socket buffer and resumes. */
typedef struct {
    rt_conn *c;
    size_t got;
    rt_waitgroup wg;
} big_state;

static void big_reader(void *arg)
{
    big_state *b = arg;
    rt_sleep(20 * RT_MSEC);
    char *buf = malloc(65536);
    for (;;) {
        ssize_t n = rt_conn_read(b->c, buf, 65536, rt_now() + 5 * RT_SEC, NULL);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal((unsigned char)buf[i],
                             (unsigned char)((b->got + (size_t)i) * 7));
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
    dial_port(s.port, &b.c);
    size_t len = 4u << 20;
    unsigned char *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 7);
    rt_waitgroup_add(&b.wg, 1);
    rt_go(big_reader, &b);
    assert_int_equal(
        rt_conn_write(b.c, data, len, rt_now() + 10 * RT_SEC, NULL),
        (ssize_t)len);
    rt_waitgroup_wait(&b.wg);
    assert_int_equal(b.got, len);
    free(data);
    rt_conn_release(b.c);
    echo_stop(&s);
}

static void test_large_write(void **state)
{
    (void)state;
    rt_set_procs(2);
    assert_int_equal(rt_run(big_main, NULL), 0);
    rt_set_procs(0);
}

/* --------------------------------------------------- deadlines, ctx, close */

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
    dial_port(s.port, &c);
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
    assert_int_equal(rt_conn_read(c, buf, sizeof buf, RT_FOREVER, ctx),
                     -ECANCELED);
    rt_ctx_release(ctx);
    /* The connection still works after timeouts. */
    assert_int_equal(rt_conn_write(c, "x", 1, RT_FOREVER, NULL), 1);
    assert_int_equal(rt_conn_read(c, buf, sizeof buf, rt_now() + RT_SEC, NULL),
                     1);
    rt_conn_release(c);

    echo_stop(&s);

    rt_conn *ln, *nc;
    assert_int_equal(rt_listen("127.0.0.1:0", 16, &ln), 0);
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
        assert_int_equal(rt_run(deadline_main, &d), 0);
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
    rt_waitgroup_done(&p->wg);
}

static void close_wakes_main(void *arg)
{
    int64_t *elapsed = arg;
    echo_server s = {0};
    echo_start(&s);
    parked_reader p = {0};
    dial_port(s.port, &p.c);
    rt_waitgroup_add(&p.wg, 1);
    rt_go(park_read, &p);
    rt_sleep(20 * RT_MSEC); /* let it park */
    int64_t t0 = rt_now();
    rt_conn_close(p.c); /* returns once the reader has left */
    rt_waitgroup_wait(&p.wg);
    rt_conn_release(p.c);
    *elapsed = rt_now() - t0;
    assert_int_equal(p.ret, -EBADF);
    echo_stop(&s);
}

static void test_close_wakes_reader(void **state)
{
    (void)state;
    int64_t elapsed = 0;
    rt_set_procs(2);
    assert_int_equal(rt_run(close_wakes_main, &elapsed), 0);
    rt_set_procs(0);
    assert_true(elapsed < 100 * RT_MSEC);
}

/* ------------------------------------------------------------ peer gone */

typedef struct {
    rt_conn *ln;
    rt_conn *server_side;
    bool gone_before, gone_after_fin, gone_with_data;
    ssize_t rst_read;
} gone_state;

static void gone_main(void *arg)
{
    gone_state *g = arg;
    assert_int_equal(rt_listen("127.0.0.1:0", 16, &g->ln), 0);
    int port = rt_conn_port(g->ln);
    rt_conn *c, *srv;

    /* FIN with nothing buffered: gone. */
    dial_port(port, &c);
    assert_int_equal(rt_accept(g->ln, &srv, rt_now() + RT_SEC, NULL), 0);
    rt_sleep(5 * RT_MSEC);
    g->gone_before = rt_conn_peer_gone(srv);
    rt_conn_release(c);
    for (int i = 0; i < 100 && !rt_conn_peer_gone(srv); i++)
        rt_sleep(RT_MSEC);
    g->gone_after_fin = rt_conn_peer_gone(srv);
    rt_conn_release(srv);

    /* Data then FIN: the data is still there to read, not "gone". */
    dial_port(port, &c);
    assert_int_equal(rt_accept(g->ln, &srv, rt_now() + RT_SEC, NULL), 0);
    assert_int_equal(rt_conn_write(c, "GET", 3, RT_FOREVER, NULL), 3);
    rt_conn_release(c);
    rt_sleep(20 * RT_MSEC);
    g->gone_with_data = rt_conn_peer_gone(srv);
    rt_conn_release(srv);

    /* RST (SO_LINGER 0): a read fails with -ECONNRESET. */
    dial_port(port, &c);
    assert_int_equal(rt_accept(g->ln, &srv, rt_now() + RT_SEC, NULL), 0);
    struct linger lg = {1, 0};
    rt_conn_setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    rt_conn_release(c);
    char b;
    g->rst_read = rt_conn_read(srv, &b, 1, rt_now() + RT_SEC, NULL);
    rt_conn_release(srv);
    rt_conn_release(g->ln);
}

static void test_peer_gone(void **state)
{
    (void)state;
    gone_state g = {0};
    assert_int_equal(rt_run(gone_main, &g), 0);
    assert_false(g.gone_before);
    assert_true(g.gone_after_fin);
    assert_false(g.gone_with_data);
    assert_int_equal(g.rst_read, -ECONNRESET);
}

/* --------------------------------------------------------------- dialing */

static void refused_main(void *arg)
{
    int *ret = arg;
    /* A port that was just free: bind, learn it, close. */
    rt_conn *ln;
    assert_int_equal(rt_listen("127.0.0.1:0", 1, &ln), 0);
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
    assert_int_equal(rt_run(refused_main, ret), 0);
    assert_int_equal(ret[0], -ECONNREFUSED);
    assert_int_equal(ret[1], -EINVAL);
    assert_int_equal(ret[2], -EINVAL);
}

/* ------------------------------------------------ 10,000 echo connections */

#define NCONN 10000

typedef struct {
    int port;
    rt_waitgroup wg;
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
            rt_sleep(10 * RT_MSEC);
    }
    if (err == 0) {
        char msg[32], buf[32];
        int len = snprintf(msg, sizeof msg, "conn %llu",
                           (unsigned long long)rt_goid());
        /* Everyone connected first, then talks: all 10,000 open at once. */
        rt_sleep(200 * RT_MSEC);
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
    for (int i = 0; i < NCONN; i++) {
        rt_waitgroup_add(&m->wg, 1);
        rt_go(many_client, m);
    }
    rt_waitgroup_wait(&m->wg);
}

static void server_main(void *arg)
{
    int *pipefd = arg;
    echo_server s = {0};
    echo_start(&s);
    assert_int_equal(write(pipefd[1], &s.port, sizeof s.port),
                     (ssize_t)sizeof s.port);
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
    rt_set_procs(2);
    int64_t t0 = rt_now();
    assert_int_equal(rt_run(many_main, &m), 0);
    int64_t elapsed = rt_now() - t0;
    rt_set_procs(0);
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
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_dial_errors),
        cmocka_unit_test(test_10k_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
