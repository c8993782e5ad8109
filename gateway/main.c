/*
 * main.c - the gateway binary: flags, configuration, the open-file limit,
 * the number of workers (Ps), wiring, signals.
 *
 *   build/gateway [-c FILE] [--check] [--workers N] [--listen ADDR]
 *                 [--log-level LEVEL]
 *   build/gateway --probe URL    (a health check: probe.c)
 *
 * Everything that reads files (the configuration, the TLS certificate
 * and key) happens before rt_run, on the process's main thread; from
 * then on the gateway is goroutines: the resolver's and the upstream
 * clients' drivers, the server's accept, connection and request
 * goroutines, and this file's main goroutine, which waits for signals.
 */
#include "config.h"
#include "dns.h"
#include "http_server.h"
#include "probe.h"
#include "rt.h"
#include "state.h"
#include "tls.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct app {
    gw_config *cfg; /* until the state takes it */
    gw_tls_ctx *tls;
    int procs;
    int status; /* the exit status */
} app;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gateway [-c FILE] [--check] [--workers N] [--listen ADDR]"
            " [--log-level LEVEL]\n"
            "  -c FILE            configuration (default: the embedded "
            "routes/demo.json)\n"
            "  --check            validate the configuration and exit (0 "
            "valid, 1 not)\n"
            "  --workers N        Ps (OS threads running goroutines); 0 = "
            "the CPUs this\n"
            "                     process may use (affinity, cgroup quota)\n"
            "  --listen ADDR      listen on ADDR (host:port) instead of the "
            "config's\n"
            "  --log-level LEVEL  error, warn, info (default) or debug\n"
            "  --probe URL        GET http://HOST:PORT/PATH and exit: 0 for a "
            "2xx, else 1\n");
}

/* ------------------------------------------------------------- CPUs */

/* A cgroup CPU quota as whole CPUs (rounded up), or 0 for none. v2
 * (cpu.max of this process's cgroup, else the root's) then v1. */
static int cgroup_cpus(void)
{
    char path[1024] = "/sys/fs/cgroup/cpu.max";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f != NULL) {
        char line[512];
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max",
                         strcmp(line + 3, "/") == 0 ? "" : line + 3);
                break;
            }
        }
        fclose(f);
    }
    long quota = -1, period = 0;
    if ((f = fopen(path, "r")) != NULL ||
        (f = fopen("/sys/fs/cgroup/cpu.max", "r")) != NULL) {
        char q[32];
        if (fscanf(f, "%31s %ld", q, &period) == 2 && strcmp(q, "max") != 0)
            quota = strtol(q, NULL, 10);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r")) !=
               NULL) {
        if (fscanf(f, "%ld", &quota) != 1)
            quota = -1;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r")) != NULL) {
            if (fscanf(f, "%ld", &period) != 1)
                period = 0;
            fclose(f);
        }
    }
    if (quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

/* The CPUs this process may use: online CPUs, capped by the affinity
 * mask and a cgroup quota (rounded up), as Go's automaxprocs does. */
static int usable_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set) < n ? CPU_COUNT(&set) : n;
    int q = cgroup_cpus();
    if (q > 0 && q < n)
        n = q;
    return n > 0 ? (int)n : 1;
}

/* ---------------------------------------------------- open-file limit */

/* Raise the soft limit to the hard one; warn when that is still below
 * what max_connections and the backends' max_inflight need. */
static void raise_nofile(const gw_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    unsigned long long need = (unsigned long long)cfg->limits.max_connections;
    for (size_t i = 0; i < cfg->nbackends; i++)
        need += (unsigned long long)cfg->backends[i].max_inflight;
    need += 64; /* listeners, resolver, epoll, logs */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        fprintf(stderr,
                "fanfold: warning: the open-file limit is %llu, below the "
                "%llu that max_connections and the backends' max_inflight "
                "need; raise it (ulimit -n, LimitNOFILE=) or lower them\n",
                (unsigned long long)rl.rlim_cur, need);
}

/* ------------------------------------------------------------- run */

static void gateway_main(void *arg)
{
    app *a = arg;
    char err[256];
    gw_config *cfg = a->cfg;
    gw_resolver *res = NULL;
    gw_state *st = NULL;
    gw_server *srv = NULL;

    const char *const *servers = NULL;
    gw_dns_config dc = {0};
    if (cfg->has_dns) {
        servers = (const char *const *)cfg->dns_servers;
        dc.servers = servers;
        dc.nservers = cfg->ndns_servers;
        dc.min_ttl_ms = cfg->dns_min_ttl_ms;
        dc.max_ttl_ms = cfg->dns_max_ttl_ms;
    }
    int rc = gw_resolver_new(&dc, &res);
    if (rc != 0) {
        fprintf(stderr, "fanfold: DNS resolver: %s\n", strerror(-rc));
        goto fail;
    }
    rc = gw_state_new(cfg, res, &st, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "fanfold: %s\n", err);
        goto fail;
    }
    a->cfg = NULL; /* the state owns it */
    rc = gw_server_start(st, a->tls, &srv, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "fanfold: %s\n", err);
        goto fail;
    }
    fprintf(stderr, "fanfold: listening on http://%s", st->cfg->listen);
    if (gw_server_tls_port(srv) != 0)
        fprintf(stderr, " and https://%s", st->cfg->tls_listen);
    fprintf(stderr, " (%d workers, config %s)\n", a->procs, st->cfg->source);

    rt_chan *sig = rt_chan_make(sizeof(int), 8);
    if (sig == NULL || rt_signal_notify(sig, SIGTERM) != 0 ||
        rt_signal_notify(sig, SIGINT) != 0 ||
        rt_signal_notify(sig, SIGHUP) != 0) {
        fprintf(stderr, "fanfold: cannot watch signals\n");
        goto fail;
    }
    for (;;) {
        int signo = 0;
        rt_chan_recv(sig, &signo, NULL);
        if (signo == SIGHUP) {
            fprintf(stderr, "fanfold: SIGHUP: reloading the configuration "
                            "is not implemented yet; still serving the "
                            "current one\n");
            continue;
        }
        fprintf(stderr, "fanfold: %s: stopping\n",
                signo == SIGINT ? "SIGINT" : "SIGTERM");
        break;
    }
    rt_signal_stop(sig);
    rt_chan_free(sig);
    gw_server_stop(srv);
    gw_server_free(srv);
    gw_state_unref(st);
    gw_resolver_free(res);
    a->status = 0;
    return;

fail:
    gw_server_free(srv);
    gw_state_unref(st);
    gw_resolver_free(res);
    a->status = 1;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"check", no_argument, NULL, 'k'},
        {"workers", required_argument, NULL, 'w'},
        {"listen", required_argument, NULL, 'l'},
        {"log-level", required_argument, NULL, 'L'},
        {"probe", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL, *level = "info", *probe = NULL;
    char *listen = NULL; /* argv's: lives as long as the process */
    bool check = false;
    long workers = -1;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", longs, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'c':
            file = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'w':
            workers = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || workers < 0 ||
                workers > 1024) {
                fprintf(stderr,
                        "gateway: --workers: want 0..1024, got "
                        "\"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'l': {
            const char *why = NULL;
            if (gw_config_check_listen(optarg, &why) != 0) {
                fprintf(stderr, "gateway: --listen: \"%s\": %s\n", optarg, why);
                return 2;
            }
            listen = optarg;
            break;
        }
        case 'L':
            level = optarg;
            if (strcmp(level, "error") != 0 && strcmp(level, "warn") != 0 &&
                strcmp(level, "info") != 0 && strcmp(level, "debug") != 0) {
                fprintf(stderr,
                        "gateway: --log-level: want error, warn, "
                        "info or debug, got \"%s\"\n",
                        level);
                return 2;
            }
            break;
        case 'P':
            probe = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "gateway: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (probe != NULL)
        return gw_probe_main(probe);

    gw_config *cfg = NULL;
    gw_config_errors errs = {0};
    int rc = file != NULL ? gw_config_load(file, &cfg, &errs)
                          : gw_config_load_default(&cfg, &errs);
    if (rc != 0) {
        gw_config_errors_print(&errs, stderr);
        if (errs.n == 0)
            fprintf(stderr, "config: %s\n", strerror(-rc));
        gw_config_errors_free(&errs);
        return 1;
    }
    gw_config_errors_free(&errs);
    /* The config's strings live in its arena and are never freed one by
     * one: the override points into argv instead. */
    if (listen != NULL)
        cfg->listen = listen;
    if (check) {
        gw_config_free(cfg);
        return 0;
    }
    if (workers >= 0)
        cfg->workers = workers;

    app a = {.cfg = cfg, .status = 1};
    if (cfg->has_tls) {
        char err[GW_TLS_ERR_LEN];
        rc = gw_tls_ctx_new(cfg->tls_cert, cfg->tls_key, &a.tls, err,
                            sizeof err);
        if (rc != 0) {
            fprintf(stderr, "fanfold: tls: %s\n", err);
            gw_config_free(cfg);
            return 1;
        }
    }
    raise_nofile(cfg);
    a.procs = cfg->workers > 0 ? (int)cfg->workers : usable_cpus();
    rt_set_procs(a.procs);
    rc = rt_run(gateway_main, &a);
    if (rc != 0) {
        fprintf(stderr, "fanfold: runtime: %s\n", strerror(-rc));
        a.status = 1;
    }
    gw_config_free(a.cfg); /* set only when the state never took it */
    gw_tls_ctx_free(a.tls);
    return a.status;
}
