/*
 * main.c - the gateway binary: flags, configuration, the open-file limit,
 * the number of workers (Ps), wiring, signals.
 *
 *   build/gateway [-c FILE] [--check] [--workers N] [--listen ADDR]
 *                 [--log-level LEVEL]
 *   build/gateway --probe URL    (a health check: probe.c)
 *
 * The configuration and the TLS certificate and key are read before
 * rt_run, on the process's main thread; from then on the gateway is
 * goroutines: the resolver's and the upstream clients' drivers, the
 * server's accept, connection and request goroutines, the admin
 * listener's, the log writer, and this file's main goroutine, which
 * waits for signals (delivered on a channel by the runtime's signal
 * goroutine: no handler here touches anything) and acts on them:
 *   SIGHUP           reload: a goroutine with a big stack reads and
 *                    checks the file, reads the TLS files again, builds a
 *                    new state on the old one (what carries over: state.h)
 *                    and swaps it in; any problem keeps the old one.
 *   SIGTERM, SIGINT  drain (gw_server_drain), then stop everything and
 *                    exit 0, or 1 when the drain ran out of time.
 */
#include "admin.h"
#include "config.h"
#include "dns.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
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
    gw_config *cfg;  /* until the state takes it */
    gw_tls_ctx *tls; /* the one new handshakes use */
    int procs;
    int status; /* the exit status */

    /* What a reload needs: the file and the command line's overrides,
     * and what was in force at start (changes need a restart). */
    const char *file; /* NULL: the embedded configuration */
    const char *listen_flag;
    long workers_flag;                 /* -1: none */
    char *listen, *admin, *tls_listen; /* copies, as started */
    long workers;
    gw_metrics *metrics;
    gw_server *srv;
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

/* ----------------------------------------------------------- reload */

/* A change that needs a restart: say so. */
static void restart_notice(const char *key, const char *was, const char *now)
{
    if (was == now || (was != NULL && now != NULL && strcmp(was, now) == 0))
        return;
    gw_logf(GW_LOG_WARN,
            "reload: \"%s\" changed from %s to %s: it needs a restart and "
            "was not applied",
            key, was != NULL ? was : "(none)", now != NULL ? now : "(none)");
}

/*
 * SIGHUP. Reads files (the configuration, the TLS certificate and key),
 * which OpenSSL does with deep stacks: runs on a goroutine of its own
 * with GW_TLS_STACK_SIZE of stack.
 */
static void reload_main(void *arg)
{
    app *a = arg;
    char err[256];
    gw_config *cfg = NULL;
    gw_tls_ctx *tls = NULL;
    gw_state *prev = NULL, *st = NULL;
    gw_config_errors errs = {0};

    if (a->file == NULL) {
        gw_logf(GW_LOG_WARN, "reload: the gateway runs on the embedded "
                             "configuration (no -c FILE): nothing to read");
        return;
    }
    int rc = gw_config_load(a->file, &cfg, &errs);
    if (rc != 0) {
        /* The --check messages, in order with the log's other lines. */
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (f != NULL) {
            gw_config_errors_print(&errs, f);
            fclose(f);
            if (text != NULL)
                gw_log_text(GW_LOG_ERROR, text);
            free(text);
        }
        if (errs.n == 0)
            gw_logf(GW_LOG_ERROR, "reload: %s: %s", a->file, strerror(-rc));
        gw_logf(GW_LOG_ERROR,
                "reload: %s refused; still serving the previous "
                "configuration",
                a->file);
        goto out;
    }
    if (a->listen_flag != NULL)
        cfg->listen = (char *)a->listen_flag; /* argv's; see main */
    if (a->workers_flag >= 0)
        cfg->workers = a->workers_flag;
    restart_notice("listen", a->listen, cfg->listen);
    restart_notice("admin", a->admin, cfg->admin);
    restart_notice("tls.listen", a->tls_listen,
                   cfg->has_tls ? cfg->tls_listen : NULL);
    if (cfg->workers != a->workers) {
        char was[24], now[24];
        snprintf(was, sizeof was, "%ld", a->workers);
        snprintf(now, sizeof now, "%ld", (long)cfg->workers);
        restart_notice("workers", was, now);
    }
    /* The certificate and key, read again for new handshakes. */
    if (a->tls != NULL && cfg->has_tls) {
        rc = gw_tls_ctx_new(cfg->tls_cert, cfg->tls_key, &tls, err, sizeof err);
        if (rc != 0) {
            gw_logf(GW_LOG_ERROR,
                    "reload: tls: %s; still serving the previous "
                    "configuration",
                    err);
            goto out;
        }
    }
    prev = gw_server_state(a->srv);
    rc = gw_state_new(cfg, prev, a->metrics, &st, err, sizeof err);
    if (rc != 0) {
        gw_logf(GW_LOG_ERROR,
                "reload: %s; still serving the previous configuration", err);
        goto out;
    }
    size_t carried = 0;
    for (size_t i = 0; i < st->cfg->nbackends; i++)
        carried += st->backends[i].carried;
    gw_server_set_state(a->srv, st);
    if (tls != NULL) {
        gw_tls_ctx_free(gw_server_set_tls(a->srv, tls));
        a->tls = tls;
        tls = NULL;
    }
    gw_logf(GW_LOG_INFO,
            "reload: %s applied: %zu routes, %zu backends (%zu kept their "
            "connections, %zu got new clients)",
            st->cfg->source, st->cfg->nroutes, st->cfg->nbackends, carried,
            st->cfg->nbackends - carried);
    cfg = NULL; /* the state owns it */
out:
    gw_state_unref(st);
    gw_state_unref(prev);
    gw_tls_ctx_free(tls);
    gw_config_free(cfg);
    gw_config_errors_free(&errs);
}

typedef struct reload_job {
    app *a;
    rt_chan *done; /* closed when the reload is over */
} reload_job;

static void reload_run(void *arg)
{
    reload_job *j = arg;
    reload_main(j->a);
    rt_chan_close(j->done);
}

/* Run reload_main on a big stack and wait for it. */
static void reload(app *a)
{
    reload_job j = {a, rt_chan_make(1, 0)};
    if (j.done == NULL) {
        gw_logf(GW_LOG_ERROR, "reload: out of memory");
        return;
    }
    rt_go_opts o = {.stack_size = GW_TLS_STACK_SIZE};
    if (rt_go_opts(reload_run, &j, &o) == 0)
        gw_logf(GW_LOG_ERROR, "reload: no stack for the reload goroutine");
    else
        rt_chan_recv(j.done, NULL, NULL);
    rt_chan_free(j.done);
}

/* ------------------------------------------------------------- run */

static bool draining(void *arg)
{
    return gw_server_draining(arg);
}

/* During a drain: a second SIGTERM or SIGINT (Ctrl-C twice) stops the
 * waiting. Ends when the drain is over (done closed). */
typedef struct watcher {
    rt_chan *sig, *done;
    gw_server *srv;
    rt_waitgroup wg;
} watcher;

static void watch_main(void *arg)
{
    watcher *w = arg;
    for (;;) {
        int signo = 0;
        rt_case cs[2] = {RT_RECV_CASE(w->sig, &signo),
                         RT_RECV_CASE(w->done, NULL)};
        if (rt_select(cs, 2) == 1)
            break;
        if (signo == SIGHUP)
            continue; /* no reload while draining */
        gw_logf(GW_LOG_WARN,
                "%s again: not waiting for the requests in "
                "flight any more",
                signo == SIGINT ? "SIGINT" : "SIGTERM");
        gw_server_force(w->srv);
    }
    rt_waitgroup_done(&w->wg);
}

static void gateway_main(void *arg)
{
    app *a = arg;
    char err[256];
    gw_config *cfg = a->cfg;
    gw_state *st = NULL;
    gw_server *srv = NULL;
    gw_admin *adm = NULL;
    rt_chan *sig = NULL;
    bool logging = false;

    int rc = gw_metrics_new(&a->metrics);
    if (rc != 0) {
        fprintf(stderr, "fanfold: metrics: %s\n", strerror(-rc));
        goto fail;
    }
    if ((rc = gw_log_start(a->metrics)) != 0) {
        fprintf(stderr, "fanfold: log writer: %s\n", strerror(-rc));
        goto fail;
    }
    logging = true;
    rc = gw_state_new(cfg, NULL, a->metrics, &st, err, sizeof err);
    if (rc != 0) {
        gw_logf(GW_LOG_ERROR, "%s", err);
        goto fail;
    }
    a->cfg = NULL; /* the state owns it */
    rc = gw_server_start(st, a->tls, &srv, err, sizeof err);
    if (rc != 0) {
        gw_logf(GW_LOG_ERROR, "%s", err);
        goto fail;
    }
    a->srv = srv;
    if (st->cfg->admin != NULL) {
        gw_admin_opts ao = {.listen = st->cfg->admin,
                            .metrics = a->metrics,
                            .draining = draining,
                            .draining_arg = srv};
        rc = gw_admin_start(&ao, &adm, err, sizeof err);
        if (rc != 0) {
            gw_logf(GW_LOG_ERROR, "admin: %s", err);
            goto fail;
        }
    }
    sig = rt_chan_make(sizeof(int), 8);
    if (sig == NULL || rt_signal_notify(sig, SIGTERM) != 0 ||
        rt_signal_notify(sig, SIGINT) != 0 ||
        rt_signal_notify(sig, SIGHUP) != 0) {
        gw_logf(GW_LOG_ERROR, "cannot watch signals");
        goto fail;
    }
    fprintf(stderr, "fanfold: listening on http://%s", st->cfg->listen);
    if (gw_server_tls_port(srv) != 0)
        fprintf(stderr, " and https://%s", st->cfg->tls_listen);
    if (adm != NULL)
        fprintf(stderr, ", admin on http://%s", st->cfg->admin);
    fprintf(stderr, " (%d workers, config %s)\n", a->procs, st->cfg->source);

    int signo = 0;
    for (;;) {
        rt_chan_recv(sig, &signo, NULL);
        if (signo != SIGHUP)
            break;
        gw_logf(GW_LOG_INFO, "SIGHUP: reloading %s",
                a->file != NULL ? a->file : "(embedded configuration)");
        reload(a);
    }
    gw_state *cur = gw_server_state(srv);
    int64_t timeout = cur->cfg->limits.drain_timeout_ms * RT_MSEC;
    gw_state_unref(cur);
    gw_logf(GW_LOG_INFO,
            "%s: draining (up to %lld ms): listeners closed, finishing "
            "requests in flight",
            signo == SIGINT ? "SIGINT" : "SIGTERM",
            (long long)(timeout / RT_MSEC));
    watcher w = {.sig = sig, .done = rt_chan_make(1, 0), .srv = srv};
    rt_waitgroup_add(&w.wg, 1);
    if (w.done == NULL || rt_go(watch_main, &w) == 0)
        rt_waitgroup_done(&w.wg); /* no watcher: one signal is enough */
    rc = gw_server_drain(srv, timeout);
    if (w.done != NULL) {
        rt_chan_close(w.done);
        rt_waitgroup_wait(&w.wg);
        rt_chan_free(w.done);
    }
    if (rc == 0)
        gw_logf(GW_LOG_INFO, "drained: every request answered; exiting");
    else
        gw_logf(GW_LOG_WARN,
                "drain timeout: requests still in flight were answered 503; "
                "exiting with status 1");
    a->status = rc == 0 ? 0 : 1;
    goto stop;

fail:
    a->status = 1;
stop:
    if (sig != NULL) {
        rt_signal_stop(sig);
        rt_chan_free(sig);
    }
    /* The server stops first (no request left), then the admin
     * listener, whose /healthz asks the server; then the server goes. */
    gw_server_stop(srv);
    if (adm != NULL) {
        gw_admin_stop(adm);
        gw_admin_free(adm);
    }
    gw_server_free(srv);
    a->srv = NULL;
    gw_state_unref(st);
    if (logging)
        gw_log_stop();
    gw_metrics_free(a->metrics);
    a->metrics = NULL;
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

    gw_log_set_level((gw_log_level)gw_log_parse_level(level));
    app a = {
        .cfg = cfg,
        .status = 1,
        .file = file,
        .listen_flag = listen,
        .workers_flag = workers,
        .workers = (long)cfg->workers,
        .listen = strdup(cfg->listen),
        .admin = cfg->admin != NULL ? strdup(cfg->admin) : NULL,
        .tls_listen = cfg->has_tls ? strdup(cfg->tls_listen) : NULL,
    };
    if (a.listen == NULL || (cfg->admin != NULL && a.admin == NULL) ||
        (cfg->has_tls && a.tls_listen == NULL)) {
        fprintf(stderr, "fanfold: out of memory\n");
        return 1;
    }
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
    free(a.listen);
    free(a.admin);
    free(a.tls_listen);
    return a.status;
}
