/*
 * smoke.c - a self-checking runtime smoke test without cmocka, for other
 * architectures (make check-aarch64 cross-compiles it statically and runs
 * it under qemu-aarch64). It exercises what the context switch carries:
 * spawning, parking and waking across Ps, channel hand-offs, select with a
 * timeout, context deadlines, sleeps and a mutex, and checks each result.
 */
#include "rt.h"

#include <errno.h>
#include <stdio.h>

static int passed, failed;

#define EXPECT(cond)                                                           \
    do {                                                                       \
        if (cond) {                                                            \
            passed++;                                                          \
        } else {                                                               \
            failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
        }                                                                      \
    } while (0)

typedef struct {
    rt_waitgroup wg;
    rt_mutex mu;
    long count;
    double fp; /* floating point survives switches */
} shared;

static void worker(void *arg)
{
    shared *s = arg;
    double x = 1.0;
    for (int i = 0; i < 100; i++) {
        x *= 1.0001;
        if (i % 10 == 0)
            rt_yield();
        rt_mutex_lock(&s->mu);
        s->count++;
        rt_mutex_unlock(&s->mu);
    }
    rt_mutex_lock(&s->mu);
    s->fp += x;
    rt_mutex_unlock(&s->mu);
    rt_waitgroup_done(&s->wg);
}

static void echo(void *arg)
{
    rt_chan **ch = arg;
    long v;
    bool ok;
    for (;;) {
        rt_chan_recv(ch[0], &v, &ok);
        if (!ok)
            break;
        v++;
        rt_chan_send(ch[1], &v);
    }
}

static void smoke(void *arg)
{
    (void)arg;
    shared s = {.mu = RT_MUTEX_INIT};
    for (int i = 0; i < 1000; i++) {
        rt_waitgroup_add(&s.wg, 1);
        rt_go(worker, &s);
    }
    rt_waitgroup_wait(&s.wg);
    EXPECT(s.count == 100000);
    EXPECT(s.fp > 1000 * 1.0099 && s.fp < 1000 * 1.0101);

    rt_chan *ch[2] = {rt_chan_make(sizeof(long), 0),
                      rt_chan_make(sizeof(long), 0)};
    rt_go(echo, ch);
    long v = 0;
    for (int i = 0; i < 10000; i++) {
        rt_chan_send(ch[0], &v);
        rt_chan_recv(ch[1], &v, NULL);
    }
    EXPECT(v == 10000);
    rt_chan_close(ch[0]);

    long got;
    rt_case c[1] = {RT_RECV_CASE(ch[1], &got)};
    int64_t t0 = rt_now();
    EXPECT(rt_select_timeout(c, 1, 20 * RT_MSEC) == -ETIMEDOUT);
    EXPECT(rt_now() - t0 >= 20 * RT_MSEC);

    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 10 * RT_MSEC);
    rt_chan_recv(rt_ctx_done(ctx), NULL, NULL);
    EXPECT(rt_ctx_err(ctx) == -ETIMEDOUT);
    rt_ctx_release(ctx);

    t0 = rt_now();
    rt_sleep(5 * RT_MSEC);
    EXPECT(rt_now() - t0 >= 5 * RT_MSEC);
    rt_sleep(5 * RT_MSEC); /* let echo see the close and exit */
    rt_chan_free(ch[0]);
    rt_chan_free(ch[1]);
}

int main(void)
{
    for (int procs = 1; procs <= 2; procs++) {
        rt_set_procs(procs);
        EXPECT(rt_run(smoke, NULL) == 0);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
