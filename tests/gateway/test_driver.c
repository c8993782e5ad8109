/*
 * test_driver.c - gateway/driver.c on its own, with a fake "library": a
 * socketpair watched through the driver, a deadline, and commands pushed
 * on the driver's queue and carried out by its queued callback on the
 * driver goroutine (as dns.c and upstream_curl.c start lookups and transfers).
 *
 * Each test runs its body as the main goroutine of rt_run(); bodies check
 * with CHECK() (tests/rt_check.h), never with cmocka's assert_*, and wait
 * on state (channels, WaitGroups, rt_check_wait_parked), never on sleeps.
 * Timing checks carry explicit tolerances and retry once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "driver.h"
#include "rt.h"

#include "../rt_check.h"

#define STACK (128 * 1024)
#define WAIT (10 * RT_SEC) /* bound on every wait for the driver */

/* ------------------------------------------------------ the fake library */

enum {
    CMD_WATCH,    /* gw_driver_watch(fd, interest); f->read_max = read_max */
    CMD_DEADLINE, /* gw_driver_set_deadline(deadline), then (deadline2) */
    CMD_SEQ,      /* a numbered item of one pusher */
    CMD_BLOCK,    /* park in the callback until released */
    CMD_STOP,     /* gw_driver_stop from the driver (misuse) */
};

typedef struct cmd {
    gw_driver_node node;
    int op;
    int fd;
    unsigned interest;
    int read_max;
    int64_t deadline, deadline2; /* deadline2 0: none */
    int pusher, seq;
    rt_chan *done; /* int result, capacity 1; NULL: no answer */
    /* set by the driver */
    int handled; /* times ops.queued saw it */
    bool closing;
} cmd;

/* A readiness report of the ready callback. */
typedef struct ready_ev {
    int fd;
    unsigned events;
    int nread;
} ready_ev;

#define NPUSHERS 8
#define PER_PUSHER 3000

typedef struct fake {
    gw_driver *d;
    rt_chan *events;   /* ready_ev, from ops.ready */
    rt_chan *timeouts; /* int64_t fire time, from ops.timeout */
    rt_chan *blocked;  /* int: CMD_BLOCK is parked in the callback */
    rt_chan *release;  /* int: let CMD_BLOCK go */
    rt_chan *all_seq;  /* int: every CMD_SEQ item was handled */
    _Atomic uint64_t rounds;
    /* driver only (read by the test after gw_driver_stop) */
    int read_max; /* bytes one READ event consumes; 0: none */
    int last_seq[NPUSHERS];
    int nseq, nseq_want;
    int nclosing;
    int nstopped;
    bool order_ok;
} fake;

static void answer(cmd *c, int result)
{
    if (c->done != NULL)
        CHECK(rt_chan_trysend(c->done, &result));
}

static void on_queued(void *arg, gw_driver_node *node, bool closing)
{
    fake *f = arg;
    cmd *c = (cmd *)((char *)node - offsetof(cmd, node));

    c->handled++;
    c->closing = closing;
    if (closing)
        f->nclosing++;
    switch (c->op) {
    case CMD_WATCH:
        f->read_max = c->read_max;
        answer(c, closing ? -ESHUTDOWN
                          : gw_driver_watch(f->d, c->fd, c->interest));
        break;
    case CMD_DEADLINE: {
        int rc =
            closing ? -ESHUTDOWN : gw_driver_set_deadline(f->d, c->deadline);
        if (rc == 0 && c->deadline2 != 0)
            rc = gw_driver_set_deadline(f->d, c->deadline2);
        answer(c, rc);
        break;
    }
    case CMD_SEQ:
        if (c->seq != f->last_seq[c->pusher] + 1)
            f->order_ok = false;
        f->last_seq[c->pusher] = c->seq;
        if (++f->nseq == f->nseq_want) {
            int one = 1;
            CHECK(rt_chan_trysend(f->all_seq, &one));
        }
        break;
    case CMD_BLOCK: {
        int one = 1;
        rt_chan_send(f->blocked, &one);
        rt_chan_recv(f->release, NULL, NULL);
        break;
    }
    case CMD_STOP:
        answer(c, gw_driver_stop(f->d));
        break;
    }
}

static void on_ready(void *arg, int fd, unsigned events)
{
    fake *f = arg;
    ready_ev ev = {.fd = fd, .events = events};

    if ((events & GW_DRIVER_READ) && f->read_max > 0) {
        char buf[64];
        size_t want =
            (size_t)f->read_max < sizeof buf ? (size_t)f->read_max : sizeof buf;
        ssize_t n = read(fd, buf, want);
        ev.nread = n > 0 ? (int)n : 0;
    }
    /* As a library would: a write interest is one-shot (back to reading
     * only), a hung-up socket is dropped. Both from inside the callback. */
    if (events & GW_DRIVER_HUP)
        CHECK(gw_driver_watch(f->d, fd, 0) == 0);
    else if (events & GW_DRIVER_WRITE)
        CHECK(gw_driver_watch(f->d, fd, GW_DRIVER_READ) == 0);
    CHECK(rt_chan_trysend(f->events, &ev));
}

static void on_timeout(void *arg)
{
    fake *f = arg;
    int64_t now = rt_now();
    CHECK(rt_chan_trysend(f->timeouts, &now));
}

static void on_round(void *arg)
{
    fake *f = arg;
    atomic_fetch_add(&f->rounds, 1);
}

static void on_stopped(void *arg)
{
    fake *f = arg;
    f->nstopped++;
}

static const gw_driver_ops fake_ops = {
    .queued = on_queued,
    .ready = on_ready,
    .timeout = on_timeout,
    .round = on_round,
    .stopped = on_stopped,
};

static void fake_start(fake *f)
{
    memset(f, 0, sizeof *f);
    f->events = rt_chan_make(sizeof(ready_ev), 256);
    f->timeouts = rt_chan_make(sizeof(int64_t), 16);
    f->blocked = rt_chan_make(sizeof(int), 1);
    f->release = rt_chan_make(sizeof(int), 1);
    f->all_seq = rt_chan_make(sizeof(int), 1);
    f->order_ok = true;
    CHECK(gw_driver_start(&fake_ops, f, STACK, &f->d) == 0);
    CHECK(f->d != NULL);
}

static void fake_free(fake *f)
{
    gw_driver_free(f->d);
    rt_chan_free(f->events);
    rt_chan_free(f->timeouts);
    rt_chan_free(f->blocked);
    rt_chan_free(f->release);
    rt_chan_free(f->all_seq);
}

/* Receive from c within WAIT; false (and a failed CHECK) if nothing came. */
static bool recv_within(rt_chan *c, void *elem, int64_t timeout)
{
    rt_case cs[] = {RT_RECV_CASE(c, elem)};
    return rt_select_timeout(cs, 1, timeout) == 0;
}

/* Push c on the driver and wait for its answer; -ETIME if none came. */
static int run_cmd(fake *f, cmd *c)
{
    int result = -ETIME;
    c->done = rt_chan_make(sizeof(int), 1);
    if (!gw_driver_push(f->d, &c->node)) {
        rt_chan_free(c->done);
        return -EPIPE;
    }
    CHECK(recv_within(c->done, &result, WAIT));
    rt_chan_free(c->done);
    c->done = NULL;
    return result;
}

/* Watch fd; a READ event then reads up to read_max bytes (0: none). */
static int watch(fake *f, int fd, unsigned interest, int read_max)
{
    cmd c = {
        .op = CMD_WATCH, .fd = fd, .interest = interest, .read_max = read_max};
    return run_cmd(f, &c);
}

/* Set the deadline, then (deadline2 != 0) set it again in the same
 * callback. */
static int set_deadline2(fake *f, int64_t deadline, int64_t deadline2)
{
    cmd c = {.op = CMD_DEADLINE, .deadline = deadline, .deadline2 = deadline2};
    return run_cmd(f, &c);
}

static int set_deadline(fake *f, int64_t deadline)
{
    return set_deadline2(f, deadline, 0);
}

static void socketpair_nb(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    for (int i = 0; i < 2; i++)
        CHECK(fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK) == 0);
}

/* ------------------------------------------------------------- sockets */

static void sockets_main(void *arg)
{
    (void)arg;
    fake f;
    int sv[2];
    ready_ev ev;

    fake_start(&f);
    socketpair_nb(sv);

    /* Readiness is delivered, with what the socket is ready for. */
    CHECK(watch(&f, sv[0], GW_DRIVER_READ, 64) == 0);
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(recv_within(f.events, &ev, WAIT));
    CHECK(ev.fd == sv[0] && ev.events == GW_DRIVER_READ && ev.nread == 1);

    /* An interest change: writable at once; the callback itself goes
     * back to READ (gw_driver_watch from inside a callback). */
    CHECK(watch(&f, sv[0], GW_DRIVER_READ | GW_DRIVER_WRITE, 64) == 0);
    CHECK(recv_within(f.events, &ev, WAIT));
    CHECK(ev.fd == sv[0] && ev.events == GW_DRIVER_WRITE);
    CHECK(write(sv[1], "yz", 2) == 2);
    CHECK(recv_within(f.events, &ev, WAIT));
    CHECK(ev.fd == sv[0] && ev.events == GW_DRIVER_READ && ev.nread == 2);

    /* Level-triggered and drained before parking: ten bytes read one per
     * event make ten events, and none is left behind. */
    CHECK(watch(&f, sv[0], GW_DRIVER_READ, 1) == 0);
    CHECK(write(sv[1], "0123456789", 10) == 10);
    int got = 0;
    for (int i = 0; i < 10 && recv_within(f.events, &ev, WAIT); i++)
        got += ev.nread;
    CHECK(got == 10);

    /* Removal: data written after it is not reported. The deadline bounds
     * the observation: had sv[0] still been watched, its event would have
     * come long before. */
    CHECK(watch(&f, sv[0], 0, 64) == 0);
    CHECK(write(sv[1], "w", 1) == 1);
    CHECK(set_deadline(&f, rt_now() + 50 * RT_MSEC) == 0);
    int64_t fired;
    CHECK(recv_within(f.timeouts, &fired, WAIT));
    CHECK(rt_chan_len(f.events) == 0);

    /* Watched again: the pending byte, then the hang-up (after which the
     * callback drops the socket). */
    CHECK(watch(&f, sv[0], GW_DRIVER_READ, 64) == 0);
    CHECK(recv_within(f.events, &ev, WAIT));
    CHECK(ev.fd == sv[0] && (ev.events & GW_DRIVER_READ) && ev.nread == 1);
    close(sv[1]);
    bool hup = false;
    while (!hup && recv_within(f.events, &ev, WAIT))
        hup = (ev.events & GW_DRIVER_HUP) != 0;
    CHECK(hup && ev.fd == sv[0] && ev.nread == 0);

    /* Misuse: the epoll set and the deadline are the driver's. */
    CHECK(gw_driver_watch(f.d, sv[0], GW_DRIVER_READ) == -EPERM);
    CHECK(gw_driver_set_deadline(f.d, RT_FOREVER) == -EPERM);
    CHECK(watch(&f, sv[0], GW_DRIVER_ERR, 0) == -EINVAL);
    CHECK(watch(&f, -1, GW_DRIVER_READ, 0) == -EBADF);
    CHECK(watch(&f, sv[0], 0, 0) == -ENOENT); /* dropped at the hang-up */
    CHECK(gw_driver_watch(NULL, sv[0], GW_DRIVER_READ) == -EINVAL);

    fake_free(&f);
    close(sv[0]);
}

static void test_sockets(void **state)
{
    (void)state;
    rt_check_run(2, sockets_main, NULL);
}

/* ------------------------------------------------------------ deadline */

#define DEADLINE_IN (100 * RT_MSEC)
#define DEADLINE_LATE (250 * RT_MSEC) /* tolerance: a loaded 2-core host */

static void deadline_main(void *arg)
{
    (void)arg;
    fake f;
    int64_t fired = 0;

    fake_start(&f);
    /* Fires once, not before its time and not much after; retry once. */
    bool in_time = false;
    for (int attempt = 0; attempt < 2 && !in_time; attempt++) {
        int64_t deadline = rt_now() + DEADLINE_IN;
        CHECK(set_deadline(&f, deadline) == 0);
        CHECK(recv_within(f.timeouts, &fired, WAIT));
        CHECK(fired >= deadline);
        in_time = fired - deadline < DEADLINE_LATE;
        if (!in_time)
            fprintf(stderr, "deadline fired %lld ms late\n",
                    (long long)((fired - deadline) / RT_MSEC));
    }
    CHECK(in_time);
    /* Reset to RT_FOREVER before the callback: no second firing. */
    CHECK(!recv_within(f.timeouts, &fired, 2 * DEADLINE_IN));

    /* RT_FOREVER cancels, and a later deadline replaces an earlier one
     * (both set in one callback, so no round comes in between). */
    CHECK(set_deadline2(&f, rt_now() + 10 * RT_MSEC, RT_FOREVER) == 0);
    CHECK(!recv_within(f.timeouts, &fired, 2 * DEADLINE_IN));
    int64_t later = rt_now() + DEADLINE_IN;
    CHECK(set_deadline2(&f, rt_now() + 10 * RT_MSEC, later) == 0);
    CHECK(recv_within(f.timeouts, &fired, WAIT));
    CHECK(fired >= later);

    /* A deadline already past fires at once. */
    CHECK(set_deadline(&f, rt_now() - RT_SEC) == 0);
    CHECK(recv_within(f.timeouts, &fired, WAIT));

    fake_free(&f);
}

static void test_deadline(void **state)
{
    (void)state;
    rt_check_run(2, deadline_main, NULL);
}

/* ----------------------------------------------------- many pushers */

typedef struct pusher {
    fake *f;
    cmd *cmds; /* PER_PUSHER of them */
    rt_waitgroup *wg;
} pusher;

static void pusher_main(void *arg)
{
    pusher *p = arg;
    for (int i = 0; i < PER_PUSHER; i++) {
        CHECK(gw_driver_push(p->f->d, &p->cmds[i].node));
        if (i % 64 == 63)
            rt_yield(); /* interleave with the other pushers */
    }
    rt_waitgroup_done(p->wg);
}

static void pushers_main(void *arg)
{
    (void)arg;
    fake f;
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    pusher ps[NPUSHERS];
    cmd *cmds = calloc(NPUSHERS * PER_PUSHER, sizeof *cmds);

    CHECK(cmds != NULL);
    fake_start(&f);
    f.nseq_want = NPUSHERS * PER_PUSHER;
    for (int p = 0; p < NPUSHERS; p++) {
        f.last_seq[p] = -1;
        ps[p] = (pusher){.f = &f, .cmds = &cmds[p * PER_PUSHER], .wg = &wg};
        for (int i = 0; i < PER_PUSHER; i++)
            ps[p].cmds[i] = (cmd){.op = CMD_SEQ, .pusher = p, .seq = i};
    }
    rt_waitgroup_add(&wg, NPUSHERS);
    for (int p = 0; p < NPUSHERS; p++)
        rt_go(pusher_main, &ps[p]);
    rt_waitgroup_wait(&wg);
    int one;
    CHECK(recv_within(f.all_seq, &one, WAIT));
    CHECK(gw_driver_stop(f.d) == 0);

    /* The driver has ended: its fields are ours to read. */
    CHECK(f.order_ok);
    CHECK(f.nseq == NPUSHERS * PER_PUSHER);
    CHECK(f.nclosing == 0);
    CHECK(f.nstopped == 1);
    int wrong = 0;
    for (int i = 0; i < NPUSHERS * PER_PUSHER; i++)
        wrong += cmds[i].handled != 1;
    CHECK(wrong == 0);
    fake_free(&f);
    free(cmds);
}

static void test_many_pushers_fifo(void **state)
{
    (void)state;
    rt_check_run(2, pushers_main, NULL);
}

/* -------------------------------------------------------------- stop */

static void stop_main(void *arg)
{
    (void)arg;
    fake f;

    fake_start(&f);
    /* Misuse: the driver cannot stop itself. */
    cmd self = {.op = CMD_STOP};
    CHECK(run_cmd(&f, &self) == -EDEADLK);

    CHECK(gw_driver_stop(f.d) == 0);
    CHECK(f.nstopped == 1);
    cmd late = {.op = CMD_SEQ};
    CHECK(!gw_driver_push(f.d, &late.node));
    CHECK(gw_driver_stop(f.d) == 0); /* again: harmless */
    CHECK(f.nstopped == 1);
    CHECK(late.handled == 0);
    fake_free(&f);

    /* Bad ops. */
    gw_driver *d = (gw_driver *)(uintptr_t)0x10;
    gw_driver_ops none = {0};
    CHECK(gw_driver_start(&none, NULL, 0, &d) == -EINVAL);
    CHECK(d == NULL);
    gw_driver_free(NULL);
}

static void test_stop_and_push_after(void **state)
{
    (void)state;
    rt_check_run(2, stop_main, NULL);
}

typedef struct stopper {
    gw_driver *d;
    rt_waitgroup wg;
    int rc;
} stopper;

static void stopper_main(void *arg)
{
    stopper *s = arg;
    s->rc = gw_driver_stop(s->d);
    rt_waitgroup_done(&s->wg);
}

#define QUEUED 50

static void stop_queued_main(void *arg)
{
    (void)arg;
    fake f;
    cmd block = {.op = CMD_BLOCK};
    cmd items[QUEUED];
    int one = 1;

    fake_start(&f);
    f.last_seq[0] = -1; /* before the first push: the driver reads it after */
    /* Hold the driver inside a callback, queue items behind it, and stop
     * meanwhile: the items were pushed before the close, so the driver
     * must still hand each over once, with closing set. */
    CHECK(gw_driver_push(f.d, &block.node));
    CHECK(recv_within(f.blocked, &one, WAIT));
    for (int i = 0; i < QUEUED; i++) {
        items[i] = (cmd){.op = CMD_SEQ, .seq = i};
        CHECK(gw_driver_push(f.d, &items[i].node));
    }
    stopper s = {.d = f.d, .wg = RT_WAITGROUP_INIT};
    rt_waitgroup_add(&s.wg, 1);
    rt_go(stopper_main, &s);
    /* The driver (in CMD_BLOCK) and the stopper (waiting for it) parked:
     * the stopper closed the queue before it parked. */
    rt_check_wait_parked(2);
    cmd late = {.op = CMD_SEQ};
    CHECK(!gw_driver_push(f.d, &late.node));
    rt_chan_send(f.release, &one);
    rt_waitgroup_wait(&s.wg);

    CHECK(s.rc == 0);
    CHECK(block.handled == 1 && !block.closing);
    int wrong = 0;
    for (int i = 0; i < QUEUED; i++)
        wrong += items[i].handled != 1 || !items[i].closing;
    CHECK(wrong == 0);
    CHECK(f.nclosing == QUEUED);
    CHECK(f.order_ok);
    CHECK(f.nstopped == 1);
    CHECK(late.handled == 0);
    fake_free(&f);
}

static void test_stop_with_queued(void **state)
{
    (void)state;
    rt_check_run(2, stop_queued_main, NULL);
}

/* --------------------------------------------------------------- idle */

#define IDLE_WINDOW (200 * RT_MSEC)
#define IDLE_CPU_MAX (40 * RT_MSEC) /* tolerance: process CPU in the window */
#define IDLE_ROUNDS_MAX 3           /* stray wake-ups allowed */

static int64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * RT_SEC +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * RT_USEC;
}

/* Is the driver goroutine parked on its epoll fd? */
static bool driver_parked(void)
{
    static char dump[16384];
    rt_dump_buf(dump, sizeof dump);
    return strstr(dump, "[waiting, IO wait (read)]:\n"
                        "\tspawned at driver_main (") != NULL;
}

static void idle_main(void *arg)
{
    (void)arg;
    fake f;
    int sv[2];

    fake_start(&f);
    socketpair_nb(sv);
    /* Something to watch and a far deadline, as a real library has. */
    CHECK(watch(&f, sv[0], GW_DRIVER_READ, 64) == 0);
    CHECK(set_deadline(&f, rt_now() + 60 * RT_SEC) == 0);
    rt_check_wait_parked(1);

    bool idle = false;
    for (int attempt = 0; attempt < 2 && !idle; attempt++) {
        uint64_t r0 = atomic_load(&f.rounds);
        int64_t c0 = cpu_ns();
        rt_sleep(IDLE_WINDOW); /* the observation window, not a sync */
        uint64_t rounds = atomic_load(&f.rounds) - r0;
        int64_t cpu = cpu_ns() - c0;
        bool parked = driver_parked();
        idle = rounds <= IDLE_ROUNDS_MAX && cpu <= IDLE_CPU_MAX && parked;
        if (!idle)
            fprintf(
                stderr, "idle driver: %llu rounds, %lld us CPU, parked %d\n",
                (unsigned long long)rounds, (long long)(cpu / RT_USEC), parked);
    }
    CHECK(idle);

    /* And it still wakes up for work. */
    ready_ev ev;
    CHECK(write(sv[1], "x", 1) == 1);
    CHECK(recv_within(f.events, &ev, WAIT));
    CHECK(ev.fd == sv[0] && ev.events == GW_DRIVER_READ && ev.nread == 1);

    fake_free(&f);
    close(sv[0]);
    close(sv[1]);
}

static void test_idle_driver_parks(void **state)
{
    (void)state;
    rt_check_run(2, idle_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sockets),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_many_pushers_fifo),
        cmocka_unit_test(test_stop_and_push_after),
        cmocka_unit_test(test_stop_with_queued),
        cmocka_unit_test(test_idle_driver_parks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
