/*
 * bench_upstream.c - upstream calls per second through the upstream
 * clients (gateway/upstream.h: libcurl, upstream_curl.c, and the native
 * one, upstream_native.c) against a fast local backend (mini_backend): C
 * goroutines call gw_upstream_do in a loop for the duration, after a
 * half-second warm-up. Each client gets a client of its own, made fresh
 * for each concurrency. Prints, per client and concurrency:
 *
 *   UPSTREAM client=K procs=P conc=C rps=X err=E p50_us=.. p99_us=..
 *   cpu_us_per_req=..
 *
 * cpu_us_per_req is the whole process's CPU (user + system, getrusage)
 * over the measured seconds divided by the calls: the client's own work,
 * the runtime's and the kernel's on its side of the sockets.
 *
 * Usage: bench_upstream PORT [SECONDS [CONC[,CONC...] [CLIENT[,CLIENT]]]]
 * CLIENT is curl or native (default: both, curl first).
 */
#include "rt.h"
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAXS 4000000

/* Shared by the workers of one run; set before they start. */
static struct {
    int port;
    int64_t end_at;
    gw_upstream *up;
    _Atomic long ok, err, nlat;
    int64_t *lat;
    rt_waitgroup wg;
} B;

static void worker(void *arg)
{
    (void)arg;
    char url[64], addr[32];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/inventory/7", B.port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", B.port);
    const char *h[] = {"X-Request-Id: bench"};
    gw_upstream_req req = {
        .url = url, .connect_to = addr, .headers = h, .nheaders = 1};
    while (rt_now() < B.end_at) {
        rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 2 * RT_SEC);
        gw_upstream_resp r;
        int64_t t0 = rt_now();
        int rc = gw_upstream_do(B.up, &req, ctx, &r);
        int64_t dt = rt_now() - t0;
        rt_ctx_release(ctx);
        if (rc == 0 && r.status == 200) {
            atomic_fetch_add(&B.ok, 1);
            long i = atomic_fetch_add(&B.nlat, 1);
            if (i < MAXS)
                B.lat[i] = dt;
        } else {
            atomic_fetch_add(&B.err, 1);
        }
        if (rc == 0)
            gw_upstream_resp_free(&r);
    }
    rt_waitgroup_done(&B.wg);
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static void run_one(const char *name, int conc, int seconds)
{
    for (int phase = 0; phase < 2; phase++) { /* warm-up, then measure */
        atomic_store(&B.ok, 0);
        atomic_store(&B.err, 0);
        atomic_store(&B.nlat, 0);
        double c0 = cpu_seconds();
        int64_t t0 = rt_now();
        B.end_at = t0 + (phase == 0 ? RT_SEC / 2 : seconds * RT_SEC);
        for (int i = 0; i < conc; i++) {
            rt_waitgroup_add(&B.wg, 1);
            rt_go(worker, NULL);
        }
        rt_waitgroup_wait(&B.wg);
        if (phase == 0)
            continue;
        double el = (double)(rt_now() - t0) / 1e9;
        double cpu = cpu_seconds() - c0;
        long n = atomic_load(&B.nlat);
        if (n > MAXS)
            n = MAXS;
        qsort(B.lat, (size_t)n, sizeof *B.lat, cmp);
        long ok = atomic_load(&B.ok);
        printf("UPSTREAM client=%s procs=%d conc=%d rps=%.0f err=%ld "
               "p50_us=%.0f p99_us=%.0f cpu_us_per_req=%.1f\n",
               name, rt_procs(), conc, (double)ok / el, atomic_load(&B.err),
               n ? (double)B.lat[n / 2] / 1e3 : 0,
               n ? (double)B.lat[n * 99 / 100] / 1e3 : 0,
               ok ? cpu * 1e6 / (double)ok : 0);
        fflush(stdout);
    }
}

typedef struct {
    int seconds;
    int conc[16], nconc;
    gw_upstream_client clients[2];
    int nclients;
} opts;

static void bench_main(void *arg)
{
    opts *o = arg;
    for (int k = 0; k < o->nclients; k++) {
        const char *name =
            o->clients[k] == GW_UPSTREAM_NATIVE ? "native" : "curl";
        for (int i = 0; i < o->nconc; i++) {
            gw_upstream_opts uo = {.client = o->clients[k],
                                   .max_host_connections = 256};
            if (gw_upstream_new(&uo, &B.up) != 0) {
                fprintf(stderr, "bench_upstream: gw_upstream_new failed\n");
                exit(1);
            }
            run_one(name, o->conc[i], o->seconds);
            gw_upstream_free(B.up);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_upstream PORT [SECONDS "
                        "[CONC[,CONC...] [curl|native[,...]]]]\n");
        return 2;
    }
    opts o = {.seconds = 3,
              .conc = {1, 16, 64, 256},
              .nconc = 4,
              .clients = {GW_UPSTREAM_CURL, GW_UPSTREAM_NATIVE},
              .nclients = 2};
    B.port = (int)strtol(argv[1], NULL, 10);
    if (argc > 2)
        o.seconds = (int)strtol(argv[2], NULL, 10);
    if (argc > 3) {
        o.nconc = 0;
        for (char *t = strtok(argv[3], ","); t && o.nconc < 16;
             t = strtok(NULL, ","))
            o.conc[o.nconc++] = (int)strtol(t, NULL, 10);
    }
    if (argc > 4) {
        o.nclients = 0;
        for (char *t = strtok(argv[4], ","); t && o.nclients < 2;
             t = strtok(NULL, ",")) {
            if (strcmp(t, "curl") != 0 && strcmp(t, "native") != 0) {
                fprintf(stderr, "bench_upstream: client %s: curl or native\n",
                        t);
                return 2;
            }
            o.clients[o.nclients++] = strcmp(t, "native") == 0
                                          ? GW_UPSTREAM_NATIVE
                                          : GW_UPSTREAM_CURL;
        }
    }
    B.lat = malloc(sizeof *B.lat * MAXS);
    if (B.lat == NULL)
        return 1;
    int rc = rt_run(bench_main, &o);
    free(B.lat);
    return rc == 0 ? 0 : 1;
}
