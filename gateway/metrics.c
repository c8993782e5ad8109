/*
 * metrics.c - counters that cost little on the request path.
 *
 * Every series keeps one shard per P (rt_procs() of them), each shard
 * on cache lines of its own; an update is one relaxed atomic add on the
 * shard of the P the caller runs on (rt_proc_id()), which no other P
 * writes in the common case, so updates neither take a lock nor bounce a
 * cache line between CPUs. A goroutine that moves between reading its P
 * and adding still adds atomically: only locality suffers, never a
 * count. A scrape sums the shards; a gauge is the sum of its +1/-1
 * deltas, exact once the adds it raced with have landed.
 *
 * Routes and backends are registered by name under `mu` and never
 * removed (a reload may add some; counters never go back); the request
 * path uses the pointers its state looked up once.
 */
#include "metrics.h"

#include "rt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Histogram upper bounds, seconds: 1 ms to 10 s (and +Inf). */
static const double bounds_s[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                  0.25,  0.5,    1,     2.5,  5,     10};
#define NBOUNDS (sizeof bounds_s / sizeof bounds_s[0])
#define NBUCKETS (NBOUNDS + 1)

/* The statuses the gateway answers with, each its own series. */
static const int statuses[] = {200, 204, 400, 404, 405, 408, 413, 414, 417,
                               431, 499, 500, 501, 502, 503, 504, 505};
#define NSTATUS (sizeof statuses / sizeof statuses[0])
#define STATUS_OTHER NSTATUS

static const char *const outcome_names[GW_NOUTCOMES] = {
    [GW_OK] = "ok",
    [GW_TIMEOUT] = "timeout",
    [GW_UNAVAILABLE] = "unavailable",
    [GW_STATUS] = "status",
    [GW_INVALID_JSON] = "invalid_json",
    [GW_TOO_LARGE] = "too_large",
    [GW_OVERLOADED] = "overloaded",
    [GW_CANCELLED] = "cancelled",
};

static const char *const cancel_names[GW_NCANCEL] = {
    [GW_CANCEL_CLIENT_GONE] = "client_gone",
    [GW_CANCEL_DEADLINE] = "deadline",
};

/* The count is not kept apart: a render takes it from the buckets, so
 * that _count and the +Inf bucket agree even while observations land
 * between the loads of one render. */
typedef struct histo {
    _Atomic uint64_t bucket[NBUCKETS]; /* not cumulative */
    _Atomic uint64_t sum_ns;
} histo;

typedef struct route_shard {
    _Alignas(64) _Atomic uint64_t status[NSTATUS + 1];
    histo h;
} route_shard;

typedef struct backend_shard {
    _Alignas(64) _Atomic uint64_t outcome[GW_NOUTCOMES];
    _Atomic uint64_t sem_waits;
    _Atomic int64_t sem_inflight;
    histo h;
} backend_shard;

typedef struct global_shard {
    _Alignas(64) _Atomic int64_t inflight, conns_open;
    _Atomic uint64_t conns_total, log_dropped;
    _Atomic uint64_t cancel[GW_NCANCEL];
} global_shard;

struct gw_route_metrics {
    gw_route_metrics *next; /* registration order, under mu */
    char *label;
    size_t nshards;
    route_shard *shards;
};

struct gw_backend_metrics {
    gw_backend_metrics *next;
    char *name;
    size_t nshards;
    backend_shard *shards;
};

struct gw_metrics {
    size_t nshards;
    global_shard *global;
    rt_mutex mu; /* protects the lists */
    gw_route_metrics *routes, **routes_tail;
    gw_backend_metrics *backends, **backends_tail;
};

static size_t shard(size_t n)
{
    return (size_t)rt_proc_id() % n;
}

static void *shards_new(size_t n, size_t size)
{
    void *p = aligned_alloc(64, n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

int gw_metrics_new(gw_metrics **out)
{
    gw_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->nshards = rt_procs() > 0 ? (size_t)rt_procs() : 1;
    m->global = shards_new(m->nshards, sizeof *m->global);
    if (m->global == NULL) {
        free(m);
        return -ENOMEM;
    }
    m->routes_tail = &m->routes;
    m->backends_tail = &m->backends;
    *out = m;
    return 0;
}

void gw_metrics_free(gw_metrics *m)
{
    if (m == NULL)
        return;
    while (m->routes != NULL) {
        gw_route_metrics *r = m->routes;
        m->routes = r->next;
        free(r->shards);
        free(r->label);
        free(r);
    }
    while (m->backends != NULL) {
        gw_backend_metrics *b = m->backends;
        m->backends = b->next;
        free(b->shards);
        free(b->name);
        free(b);
    }
    free(m->global);
    free(m);
}

gw_route_metrics *gw_metrics_route(gw_metrics *m, const char *label)
{
    rt_mutex_lock(&m->mu);
    gw_route_metrics *r = m->routes;
    while (r != NULL && strcmp(r->label, label) != 0)
        r = r->next;
    if (r == NULL && (r = calloc(1, sizeof *r)) != NULL) {
        r->label = strdup(label);
        r->nshards = m->nshards;
        r->shards = shards_new(m->nshards, sizeof *r->shards);
        if (r->label == NULL || r->shards == NULL) {
            free(r->label);
            free(r->shards);
            free(r);
            r = NULL;
        } else {
            *m->routes_tail = r;
            m->routes_tail = &r->next;
        }
    }
    rt_mutex_unlock(&m->mu);
    return r;
}

gw_backend_metrics *gw_metrics_backend(gw_metrics *m, const char *name)
{
    rt_mutex_lock(&m->mu);
    gw_backend_metrics *b = m->backends;
    while (b != NULL && strcmp(b->name, name) != 0)
        b = b->next;
    if (b == NULL && (b = calloc(1, sizeof *b)) != NULL) {
        b->name = strdup(name);
        b->nshards = m->nshards;
        b->shards = shards_new(m->nshards, sizeof *b->shards);
        if (b->name == NULL || b->shards == NULL) {
            free(b->name);
            free(b->shards);
            free(b);
            b = NULL;
        } else {
            *m->backends_tail = b;
            m->backends_tail = &b->next;
        }
    }
    rt_mutex_unlock(&m->mu);
    return b;
}

/* ---------------------------------------------------------- updates */

#define ADD(field, n)                                                          \
    atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

static void observe(histo *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    size_t i = 0;
    while (i < NBOUNDS && (double)ns > bounds_s[i] * 1e9)
        i++;
    ADD(h->bucket[i], 1);
    ADD(h->sum_ns, (uint64_t)ns);
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < NSTATUS; i++)
        if (statuses[i] == status)
            return i;
    return STATUS_OTHER;
}

void gw_metrics_request(gw_route_metrics *r, int status, int64_t ns)
{
    if (r == NULL)
        return;
    route_shard *s = &r->shards[shard(r->nshards)];
    ADD(s->status[status_index(status)], 1);
    observe(&s->h, ns);
}

void gw_metrics_part(gw_backend_metrics *b, gw_outcome o, int64_t ns)
{
    if (b == NULL || o >= GW_NOUTCOMES)
        return;
    backend_shard *s = &b->shards[shard(b->nshards)];
    ADD(s->outcome[o], 1);
    observe(&s->h, ns);
}

void gw_metrics_sem_wait(gw_backend_metrics *b)
{
    if (b != NULL)
        ADD(b->shards[shard(b->nshards)].sem_waits, 1);
}

void gw_metrics_sem_add(gw_backend_metrics *b, int delta)
{
    if (b != NULL)
        ADD(b->shards[shard(b->nshards)].sem_inflight, delta);
}

void gw_metrics_inflight_add(gw_metrics *m, int delta)
{
    if (m != NULL)
        ADD(m->global[shard(m->nshards)].inflight, delta);
}

void gw_metrics_conn_opened(gw_metrics *m)
{
    if (m == NULL)
        return;
    global_shard *g = &m->global[shard(m->nshards)];
    ADD(g->conns_open, 1);
    ADD(g->conns_total, 1);
}

void gw_metrics_conn_closed(gw_metrics *m)
{
    if (m != NULL)
        ADD(m->global[shard(m->nshards)].conns_open, -1);
}

void gw_metrics_cancelled(gw_metrics *m, gw_cancel_reason why)
{
    if (m != NULL && why < GW_NCANCEL)
        ADD(m->global[shard(m->nshards)].cancel[why], 1);
}

void gw_metrics_log_dropped(gw_metrics *m)
{
    if (m != NULL)
        ADD(m->global[shard(m->nshards)].log_dropped, 1);
}

/* ---------------------------------------------------------- render */

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* A growing text buffer; err once an allocation failed. */
typedef struct text {
    char *buf;
    size_t len, cap;
    int err;
} text;

static void put(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    if (t->err != 0)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->err = -EINVAL;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n + 1;
        char *b = realloc(t->buf, cap);
        if (b == NULL) {
            t->err = -ENOMEM;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

/* Append n bytes of s. */
static void put_bytes(text *t, const char *s, size_t n)
{
    if (t->err != 0)
        return;
    if (t->cap - t->len < n + 1) {
        size_t cap = t->cap * 2 + n + 1;
        char *b = realloc(t->buf, cap);
        if (b == NULL) {
            t->err = -ENOMEM;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

/* A label value with \, " and newline escaped (the exposition format),
 * whole whatever its length: a cut value could make two series one. */
static void put_label(text *t, const char *v)
{
    while (*v != '\0') {
        size_t run = strcspn(v, "\\\"\n");
        put_bytes(t, v, run);
        v += run;
        if (*v == '\0')
            break;
        put_bytes(t, *v == '\n' ? "\\n" : *v == '"' ? "\\\"" : "\\\\", 2);
        v++;
    }
}

static void put_head(text *t, const char *name, const char *type,
                     const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Sum the histograms of n shards (each `stride` bytes apart). */
static void histo_sum(const char *base, size_t stride, size_t n, size_t off,
                      uint64_t bucket[NBUCKETS], uint64_t *sum_ns)
{
    memset(bucket, 0, sizeof(uint64_t) * NBUCKETS);
    *sum_ns = 0;
    for (size_t i = 0; i < n; i++) {
        histo *h = (histo *)(void *)(base + i * stride + off);
        for (size_t b = 0; b < NBUCKETS; b++)
            bucket[b] += LOAD(h->bucket[b]);
        *sum_ns += LOAD(h->sum_ns);
    }
}

/* _count is the +Inf bucket's cumulative count (see histo). */
static void put_histo(text *t, const char *name, const char *label,
                      const char *value, const uint64_t bucket[NBUCKETS],
                      uint64_t sum_ns)
{
    uint64_t cum = 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        cum += bucket[b];
        put(t, "%s_bucket{%s=\"", name, label);
        put_label(t, value);
        if (b < NBOUNDS)
            put(t, "\",le=\"%g\"} %llu\n", bounds_s[b],
                (unsigned long long)cum);
        else
            put(t, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    put(t, "%s_sum{%s=\"", name, label);
    put_label(t, value);
    put(t, "\"} %.9f\n", (double)sum_ns / 1e9);
    put(t, "%s_count{%s=\"", name, label);
    put_label(t, value);
    put(t, "\"} %llu\n", (unsigned long long)cum);
}

int gw_metrics_render(gw_metrics *m, char **out, size_t *len)
{
    text t = {.cap = 16384};
    if ((t.buf = malloc(t.cap)) == NULL)
        return -ENOMEM;
    rt_mutex_lock(&m->mu);

    put_head(&t, "fanfold_requests_total", "counter",
             "Requests answered, by route and status.");
    for (gw_route_metrics *r = m->routes; r != NULL; r = r->next) {
        for (size_t i = 0; i <= NSTATUS; i++) {
            uint64_t n = 0;
            for (size_t s = 0; s < r->nshards; s++)
                n += LOAD(r->shards[s].status[i]);
            /* 200 always, so a route's series exist from the start. */
            if (n == 0 && (i == STATUS_OTHER || statuses[i] != 200))
                continue;
            put(&t, "fanfold_requests_total{route=\"");
            put_label(&t, r->label);
            if (i == STATUS_OTHER)
                put(&t, "\",status=\"other\"} %llu\n", (unsigned long long)n);
            else
                put(&t, "\",status=\"%d\"} %llu\n", statuses[i],
                    (unsigned long long)n);
        }
    }
    put_head(&t, "fanfold_request_duration_seconds", "histogram",
             "Time from a request's head to its answer, by route.");
    for (gw_route_metrics *r = m->routes; r != NULL; r = r->next) {
        uint64_t bucket[NBUCKETS], sum;
        histo_sum((const char *)r->shards, sizeof *r->shards, r->nshards,
                  offsetof(route_shard, h), bucket, &sum);
        put_histo(&t, "fanfold_request_duration_seconds", "route", r->label,
                  bucket, sum);
    }

    put_head(&t, "fanfold_backend_requests_total", "counter",
             "Calls to backends, by backend and outcome.");
    for (gw_backend_metrics *b = m->backends; b != NULL; b = b->next) {
        for (int o = 0; o < GW_NOUTCOMES; o++) {
            uint64_t n = 0;
            for (size_t s = 0; s < b->nshards; s++)
                n += LOAD(b->shards[s].outcome[o]);
            put(&t, "fanfold_backend_requests_total{backend=\"");
            put_label(&t, b->name);
            put(&t, "\",outcome=\"%s\"} %llu\n", outcome_names[o],
                (unsigned long long)n);
        }
    }
    put_head(&t, "fanfold_backend_duration_seconds", "histogram",
             "Time a part took, slot wait included, by backend.");
    for (gw_backend_metrics *b = m->backends; b != NULL; b = b->next) {
        uint64_t bucket[NBUCKETS], sum;
        histo_sum((const char *)b->shards, sizeof *b->shards, b->nshards,
                  offsetof(backend_shard, h), bucket, &sum);
        put_histo(&t, "fanfold_backend_duration_seconds", "backend", b->name,
                  bucket, sum);
    }
    put_head(&t, "fanfold_semaphore_inflight", "gauge",
             "Calls holding one of a backend's max_inflight slots.");
    for (gw_backend_metrics *b = m->backends; b != NULL; b = b->next) {
        int64_t n = 0;
        for (size_t s = 0; s < b->nshards; s++)
            n += LOAD(b->shards[s].sem_inflight);
        put(&t, "fanfold_semaphore_inflight{backend=\"");
        put_label(&t, b->name);
        put(&t, "\"} %lld\n", (long long)(n > 0 ? n : 0));
    }
    put_head(&t, "fanfold_semaphore_waits_total", "counter",
             "Parts that had to wait for a backend's slot.");
    for (gw_backend_metrics *b = m->backends; b != NULL; b = b->next) {
        uint64_t n = 0;
        for (size_t s = 0; s < b->nshards; s++)
            n += LOAD(b->shards[s].sem_waits);
        put(&t, "fanfold_semaphore_waits_total{backend=\"");
        put_label(&t, b->name);
        put(&t, "\"} %llu\n", (unsigned long long)n);
    }
    rt_mutex_unlock(&m->mu);

    int64_t inflight = 0, open = 0;
    uint64_t total = 0, dropped = 0, cancel[GW_NCANCEL] = {0};
    for (size_t s = 0; s < m->nshards; s++) {
        global_shard *g = &m->global[s];
        inflight += LOAD(g->inflight);
        open += LOAD(g->conns_open);
        total += LOAD(g->conns_total);
        dropped += LOAD(g->log_dropped);
        for (int c = 0; c < GW_NCANCEL; c++)
            cancel[c] += LOAD(g->cancel[c]);
    }
    put_head(&t, "fanfold_inflight_requests", "gauge",
             "Requests being served now.");
    put(&t, "fanfold_inflight_requests %lld\n",
        (long long)(inflight > 0 ? inflight : 0));
    put_head(&t, "fanfold_connections_open", "gauge",
             "Client connections open on the main listeners.");
    put(&t, "fanfold_connections_open %lld\n",
        (long long)(open > 0 ? open : 0));
    put_head(&t, "fanfold_connections_total", "counter",
             "Client connections accepted on the main listeners.");
    put(&t, "fanfold_connections_total %llu\n", (unsigned long long)total);
    put_head(&t, "fanfold_cancellations_total", "counter",
             "Requests cancelled: the client left, or the deadline passed "
             "with parts pending.");
    for (int c = 0; c < GW_NCANCEL; c++)
        put(&t, "fanfold_cancellations_total{reason=\"%s\"} %llu\n",
            cancel_names[c], (unsigned long long)cancel[c]);
    put_head(&t, "fanfold_goroutines", "gauge", "Live goroutines.");
    put(&t, "fanfold_goroutines %llu\n", (unsigned long long)rt_goroutines());
    put_head(&t, "fanfold_log_dropped_total", "counter",
             "Log lines (access log and messages) dropped because stderr could "
             "not keep up.");
    put(&t, "fanfold_log_dropped_total %llu\n", (unsigned long long)dropped);
    rt_sched_stats ss;
    rt_sched_stats_get(&ss);
    put_head(&t, "fanfold_goroutine_long_runs_total", "counter",
             "Times a goroutine held its OS thread 10 ms without yielding.");
    put(&t, "fanfold_goroutine_long_runs_total %llu\n",
        (unsigned long long)ss.long_runs);

    if (t.err != 0) {
        free(t.buf);
        return t.err;
    }
    *out = t.buf;
    *len = t.len;
    return 0;
}
