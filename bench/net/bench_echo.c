/*
 * bench_echo.c - loopback TCP echo round trips per second through the
 * runtime's netpoller and sockets: an echo server and N client
 * goroutines in one process, each client doing write(64 B) + read(64 B)
 * round trips for the duration. Prints one line per concurrency:
 *
 *   ECHO procs=P conns=N seconds=S round_trips=R rt_per_sec=X
 *
 * Usage: bench_echo [--procs P] [--seconds S] [--conns N[,N...]]
 */
#include "rt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG 64

typedef struct {
    rt_conn *ln;
    int port;
} server;

static void echo_conn(void *arg)
{
    rt_conn *c = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = rt_conn_read(c, buf, sizeof buf, RT_FOREVER, NULL);
        if (n <= 0 || rt_conn_write(c, buf, (size_t)n, RT_FOREVER, NULL) != n)
            break;
    }
    rt_conn_release(c);
}

static void accept_loop(void *arg)
{
    server *s = arg;
    rt_conn *c;
    while (rt_accept(s->ln, &c, RT_FOREVER, NULL) == 0)
        rt_go(echo_conn, c);
}

typedef struct {
    int port;
    int64_t until;
    _Atomic long total;
    rt_waitgroup wg;
} run;

static void client(void *arg)
{
    run *r = arg;
    char addr[32], buf[MSG];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", r->port);
    rt_conn *c;
    if (rt_dial(addr, &c, rt_now() + 5 * RT_SEC, NULL) != 0) {
        fprintf(stderr, "bench_echo: dial failed\n");
        exit(1);
    }
    memset(buf, 'x', sizeof buf);
    long n = 0;
    while (rt_now() < r->until) {
        for (int k = 0; k < 64; k++) {
            if (rt_conn_write(c, buf, MSG, RT_FOREVER, NULL) != MSG)
                goto out;
            size_t got = 0;
            while (got < MSG) {
                ssize_t m =
                    rt_conn_read(c, buf + got, MSG - got, RT_FOREVER, NULL);
                if (m <= 0)
                    goto out;
                got += (size_t)m;
            }
            n++;
        }
    }
out:
    atomic_fetch_add(&r->total, n);
    rt_conn_release(c);
    rt_waitgroup_done(&r->wg);
}

typedef struct {
    double seconds;
    int conns[16];
    int nconns;
} opts;

static void bench_main(void *arg)
{
    opts *o = arg;
    server s;
    if (rt_listen("127.0.0.1:0", 4096, &s.ln) != 0) {
        fprintf(stderr, "bench_echo: listen failed\n");
        exit(1);
    }
    s.port = rt_conn_port(s.ln);
    rt_go(accept_loop, &s);
    for (int i = 0; i < o->nconns; i++) {
        run r = {.port = s.port};
        r.until = rt_now() + (int64_t)(o->seconds * 1e9);
        int64_t t0 = rt_now();
        for (int k = 0; k < o->conns[i]; k++) {
            rt_waitgroup_add(&r.wg, 1);
            rt_go(client, &r);
        }
        rt_waitgroup_wait(&r.wg);
        double el = (double)(rt_now() - t0) / 1e9;
        long total = atomic_load(&r.total);
        printf("ECHO procs=%d conns=%d seconds=%.2f round_trips=%ld "
               "rt_per_sec=%.0f\n",
               rt_procs(), o->conns[i], el, total, (double)total / el);
        fflush(stdout);
    }
    rt_conn_release(s.ln);
}

int main(int argc, char **argv)
{
    opts o = {.seconds = 3, .conns = {1, 64}, .nconns = 2};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc) {
            rt_set_procs((int)strtol(argv[++i], NULL, 10));
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            o.seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
            o.nconns = 0;
            for (char *t = strtok(argv[++i], ","); t && o.nconns < 16;
                 t = strtok(NULL, ","))
                o.conns[o.nconns++] = (int)strtol(t, NULL, 10);
        } else {
            fprintf(stderr, "usage: bench_echo [--procs P] [--seconds S] "
                            "[--conns N[,N...]]\n");
            return 2;
        }
    }
    return rt_run(bench_main, &o) == 0 ? 0 : 1;
}
