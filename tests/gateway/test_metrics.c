/*
 * test_metrics.c - the metrics registry and its Prometheus text
 * exposition: every family of metrics.h with HELP and TYPE, the series of
 * registered routes and backends present at 0 from the start, each
 * update moving exactly its series by exactly its amount, histogram
 * buckets (the boundaries 1 ms .. 10 s, a value on a boundary in that
 * boundary's bucket, cumulative counts, _sum and _count), label escaping
 * (long labels too), counts from 8 goroutines on 2 to 4 Ps while a
 * scraper renders, and a cross-check with prometheus_client's parser when
 * a python3 has it. Every render goes through the validator of
 * prom_check.h, which has a test of its own (what it refuses).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "rt.h"

#include "../rt_check.h"
#include "prom_check.h"

#define ROUTE "GET /api/products/{id}"
#define BACKEND "inventory"

/* Every family metrics.h lists, with its type. */
static const struct {
    const char *name, *type;
} families[] = {
    {"fanfold_requests_total", "counter"},
    {"fanfold_request_duration_seconds", "histogram"},
    {"fanfold_backend_requests_total", "counter"},
    {"fanfold_backend_duration_seconds", "histogram"},
    {"fanfold_inflight_requests", "gauge"},
    {"fanfold_connections_open", "gauge"},
    {"fanfold_connections_total", "counter"},
    {"fanfold_semaphore_inflight", "gauge"},
    {"fanfold_semaphore_waits_total", "counter"},
    {"fanfold_cancellations_total", "counter"},
    {"fanfold_goroutines", "gauge"},
    {"fanfold_log_dropped_total", "counter"},
    {"fanfold_goroutine_long_runs_total", "counter"},
};
#define NFAMILIES (sizeof families / sizeof families[0])

static const char *const outcomes[GW_NOUTCOMES] = {
    "ok",           "timeout",   "unavailable", "status",
    "invalid_json", "too_large", "overloaded",  "cancelled"};

/* The bucket bounds, as the render writes them, and in nanoseconds. */
static const char *const le_text[] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",   "+Inf"};
#define NLE (sizeof le_text / sizeof le_text[0])
static const int64_t le_ns[NLE - 1] = {
    1000000,    2500000,    5000000,    10000000,  25000000,
    50000000,   100000000,  250000000,  500000000, 1000000000,
    2500000000, 5000000000, 10000000000};

/* ------------------------------------------------------------ helpers */

/* Render m and run the validator on it; the text (caller frees) or
 * NULL, with a failed CHECK. */
static char *render_ok(gw_metrics *m)
{
    char *out = NULL;
    size_t len = 0;
    int rc = gw_metrics_render(m, &out, &len);
    CHECK(rc == 0);
    if (rc != 0)
        return NULL;
    CHECK(out != NULL && strlen(out) == len);
    char err[1024];
    if (!prom_validate(out, len, err, sizeof err)) {
        fprintf(stderr, "invalid exposition: %.600s\n--- render:\n%.3000s---\n",
                err, out);
        CHECK(!"the render passes the validator");
    }
    return out;
}

/* CHECK that the series (printf-style) has exactly one line, of value
 * want; says which one on stderr when not. */
static bool expect_at(int line, const char *text, double want, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static bool expect_at(int line, const char *text, double want, const char *fmt,
                      ...)
{
    char series[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(series, sizeof series, fmt, ap);
    va_end(ap);
    double v = NAN;
    int n = text != NULL ? prom_value(text, series, &v) : -1;
    if (n == 1 && v == want)
        return true;
    fprintf(stderr, "line %d: %.300s: %d line(s), value %.17g, want %.17g\n",
            line, series, n, v, want);
    CHECK(!"a series has the expected value (see above)");
    return false;
}
#define EXPECT(text, want, ...) expect_at(__LINE__, (text), (want), __VA_ARGS__)

/* The series' value, NAN when it is not there exactly once. */
static double value_of(const char *text, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static double value_of(const char *text, const char *fmt, ...)
{
    char series[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(series, sizeof series, fmt, ap);
    va_end(ap);
    double v = NAN;
    return prom_value(text, series, &v) == 1 ? v : NAN;
}

/* How many lines start with prefix. */
static int lines_with(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; *p != '\0';) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return n;
}

/* Every family with its HELP (some text) and TYPE lines. */
static void check_families(const char *text)
{
    for (size_t i = 0; i < NFAMILIES; i++) {
        char line[256];
        snprintf(line, sizeof line, "# TYPE %s %s", families[i].name,
                 families[i].type);
        if (!prom_has_line(text, line)) {
            fprintf(stderr, "missing: %s\n", line);
            CHECK(!"every family has its TYPE line");
        }
        snprintf(line, sizeof line, "# HELP %s ", families[i].name);
        if (lines_with(text, line) != 1) {
            fprintf(stderr, "missing: %s...\n", line);
            CHECK(!"every family has one HELP line");
        }
    }
}

/* A histogram series (family fam, label lname="lvalue", escaped as
 * written) with the cumulative bucket counts cum[NLE], _count and _sum
 * (seconds; compared to within 2 ns). */
static void expect_histo(int line, const char *text, const char *fam,
                         const char *lname, const char *lvalue,
                         const uint64_t cum[NLE], double sum_s)
{
    for (size_t i = 0; i < NLE; i++)
        expect_at(line, text, (double)cum[i], "%s_bucket{%s=\"%s\",le=\"%s\"}",
                  fam, lname, lvalue, le_text[i]);
    expect_at(line, text, (double)cum[NLE - 1], "%s_count{%s=\"%s\"}", fam,
              lname, lvalue);
    double sum = value_of(text, "%s_sum{%s=\"%s\"}", fam, lname, lvalue);
    if (!(fabs(sum - sum_s) <= 2e-9 + sum_s * 1e-12)) {
        fprintf(stderr, "line %d: %s_sum{%s=\"%s\"} = %.17g, want %.17g\n",
                line, fam, lname, lvalue, sum, sum_s);
        CHECK(!"a histogram's _sum is the sum of what it observed");
    }
}

/* ------------------------------------------------ the validator itself */

static void test_validator(void **state)
{
    (void)state;
    char err[512];
    static const char good[] = "# HELP a_total Some help with \\\\ and \\n.\n"
                               "# TYPE a_total counter\n"
                               "a_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\n"
                               "a_total{y=\"2\",x=\"1\",} 0 1700000000000\n"
                               "# TYPE g gauge\n"
                               "g -1.5e3\n"
                               "# TYPE h histogram\n"
                               "h_bucket{le=\"0.5\"} 1\n"
                               "h_bucket{le=\"+Inf\"} 2\n"
                               "h_sum 0.7\n"
                               "h_count 2\n";
    if (!prom_validate(good, strlen(good), err, sizeof err))
        fail_msg("refused a valid exposition: %s", err);

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "empty"},
        {"# TYPE a counter\na 1", "no newline"},
        {"# TYPE a counter\n\na 1\n", "empty line"},
        {"# just a comment\n", "other than HELP"},
        {"a 1\n", "before (or without) its TYPE"},
        {"a 1\n# TYPE a counter\n", "before (or without) its TYPE"},
        {"# TYPE a counter\n# TYPE a counter\n", "second TYPE"},
        {"# HELP a x\n# HELP a y\n", "second HELP"},
        {"# TYPE a counters\n", "unknown type"},
        {"# TYPE 1a counter\n", "no valid metric name"},
        {"# TYPE a counter\na{1x=\"1\"} 1\n", "bad label name"},
        {"# TYPE a counter\na{__x=\"1\"} 1\n", "reserved"},
        {"# TYPE a counter\na{x=1} 1\n", "label without"},
        {"# TYPE a counter\na{x=\"\\t\"} 1\n", "bad escape"},
        {"# TYPE a counter\na{x=\"1} 1\n", "unterminated"},
        {"# TYPE a counter\na{x=\"1\" y=\"2\"} 1\n", "expected , or }"},
        {"# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n", "twice"},
        {"# TYPE a counter\na 1x\n", "bad value"},
        {"# TYPE a counter\na\n", "no space"},
        {"# TYPE a counter\na 1 2 3\n", "junk after"},
        {"# TYPE a counter\na -1\n", "negative"},
        {"# TYPE a counter\na{x=\"1\"} 1\na{x=\"1\"} 2\n", "twice"},
        {"# TYPE a counter\na{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",
         "twice"},
        {"# TYPE a counter\n# TYPE b counter\na 1\n", "one group"},
        {"# TYPE h histogram\nh 1\n", "without a suffix"},
        {"# TYPE h histogram\nh_bucket 1\n", "bucket without le"},
        {"# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", "bad le"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"0.5\"} 1\n",
         "le not increasing"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
         "h_sum 1\nh_count 1\n",
         "decrease"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
         "no +Inf"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n", "no _count"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
         "_count 2 but +Inf bucket 1"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\n", "not an integer"},
        {"# TYPE h histogram\nh_count{le=\"1\"} 1\n", "le on a"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (prom_validate(bad[i].text, strlen(bad[i].text), err, sizeof err))
            fail_msg("accepted bad exposition %zu: %s", i, bad[i].text);
        if (strstr(err, bad[i].why) == NULL)
            fail_msg("exposition %zu: \"%s\" does not say \"%s\"", i, err,
                     bad[i].why);
    }
}

/* --------------------------------------------- a fresh registry at 0 */

static void fresh_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0 && m != NULL);
    if (m == NULL)
        return;

    /* No route, no backend yet: every family is there all the same. */
    char *t = render_ok(m);
    if (t != NULL) {
        check_families(t);
        CHECK(lines_with(t, "fanfold_requests_total{") == 0);
        CHECK(lines_with(t, "fanfold_backend_requests_total{") == 0);
        EXPECT(t, 0, "fanfold_inflight_requests");
    }
    free(t);

    gw_route_metrics *r = gw_metrics_route(m, ROUTE);
    gw_backend_metrics *b = gw_metrics_backend(m, BACKEND);
    CHECK(r != NULL && b != NULL);
    /* Made once: the same label gives the same series. */
    CHECK(gw_metrics_route(m, ROUTE) == r);
    CHECK(gw_metrics_backend(m, BACKEND) == b);
    CHECK(gw_metrics_route(m, "none") != r);

    t = render_ok(m);
    if (t == NULL) {
        gw_metrics_free(m);
        return;
    }
    check_families(t);
    /* The route's: requests_total at status 200 (the one status written
     * before it is used), its duration histogram. */
    EXPECT(t, 0, "fanfold_requests_total{route=\"" ROUTE "\",status=\"200\"}");
    EXPECT(t, 0, "fanfold_requests_total{route=\"none\",status=\"200\"}");
    CHECK(lines_with(t, "fanfold_requests_total{route=\"" ROUTE "\"") == 1);
    uint64_t zero[NLE] = {0};
    expect_histo(__LINE__, t, "fanfold_request_duration_seconds", "route",
                 ROUTE, zero, 0);
    /* The backend's: every outcome, the histogram, the semaphore. */
    for (int o = 0; o < GW_NOUTCOMES; o++)
        EXPECT(t, 0,
               "fanfold_backend_requests_total{backend=\"" BACKEND
               "\",outcome=\"%s\"}",
               outcomes[o]);
    CHECK(lines_with(t, "fanfold_backend_requests_total{") == GW_NOUTCOMES);
    expect_histo(__LINE__, t, "fanfold_backend_duration_seconds", "backend",
                 BACKEND, zero, 0);
    EXPECT(t, 0, "fanfold_semaphore_inflight{backend=\"" BACKEND "\"}");
    EXPECT(t, 0, "fanfold_semaphore_waits_total{backend=\"" BACKEND "\"}");
    /* The process-wide ones. */
    EXPECT(t, 0, "fanfold_inflight_requests");
    EXPECT(t, 0, "fanfold_connections_open");
    EXPECT(t, 0, "fanfold_connections_total");
    EXPECT(t, 0, "fanfold_cancellations_total{reason=\"client_gone\"}");
    EXPECT(t, 0, "fanfold_cancellations_total{reason=\"deadline\"}");
    EXPECT(t, 0, "fanfold_log_dropped_total");
    double g = value_of(t, "fanfold_goroutines");
    CHECK(g >= 1 && g < 1000);
    CHECK(value_of(t, "fanfold_goroutine_long_runs_total") >= 0);

    /* The bucket bounds, in order: 1 ms to 10 s, then +Inf. */
    const char *pfx =
        "fanfold_request_duration_seconds_bucket{route=\"" ROUTE "\",le=\"";
    size_t k = 0;
    for (const char *p = strstr(t, pfx); p != NULL; p = strstr(p + 1, pfx)) {
        p += strlen(pfx);
        size_t n = strcspn(p, "\"");
        CHECK(k < NLE && strlen(le_text[k]) == n &&
              memcmp(p, le_text[k], n) == 0);
        k++;
    }
    CHECK(k == NLE);
    free(t);
    gw_metrics_free(m);
}

static void test_fresh(void **state)
{
    (void)state;
    rt_check_run(0, fresh_main, NULL);
}

/* --------------------------------------------------- exact increments */

static void counts_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    if (m == NULL)
        return;
    gw_route_metrics *r = gw_metrics_route(m, ROUTE);
    gw_route_metrics *other_r = gw_metrics_route(m, "GET /other");
    gw_backend_metrics *b = gw_metrics_backend(m, BACKEND);
    gw_backend_metrics *other_b = gw_metrics_backend(m, "pricing");
    CHECK(r != NULL && other_r != NULL && b != NULL && other_b != NULL);

    /* Requests: 200 x3, 404 x2, 502 x1, and 299 (not a status the
     * gateway answers with: "other"). */
    int64_t sum_ns = 0;
    static const int st[] = {200, 200, 200, 404, 404, 502, 299};
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        int64_t ns = (int64_t)(i + 1) * 3 * RT_MSEC;
        gw_metrics_request(r, st[i], ns);
        sum_ns += ns;
    }
    /* Parts: outcome o counted o + 1 times; an out-of-range one never. */
    int64_t part_ns = 0;
    uint64_t nparts = 0;
    for (int o = 0; o < GW_NOUTCOMES; o++)
        for (int k = 0; k <= o; k++) {
            gw_metrics_part(b, (gw_outcome)o, 7 * RT_MSEC);
            part_ns += 7 * RT_MSEC;
            nparts++;
        }
    gw_metrics_part(b, GW_NOUTCOMES, RT_MSEC);
    for (int i = 0; i < 4; i++)
        gw_metrics_sem_wait(b);
    gw_metrics_sem_add(b, 3);
    gw_metrics_sem_add(b, -1);
    gw_metrics_inflight_add(m, 5);
    gw_metrics_inflight_add(m, -2);
    for (int i = 0; i < 4; i++)
        gw_metrics_conn_opened(m);
    gw_metrics_conn_closed(m);
    gw_metrics_cancelled(m, GW_CANCEL_CLIENT_GONE);
    gw_metrics_cancelled(m, GW_CANCEL_CLIENT_GONE);
    gw_metrics_cancelled(m, GW_CANCEL_DEADLINE);
    gw_metrics_cancelled(m, GW_NCANCEL); /* ignored */
    for (int i = 0; i < 3; i++)
        gw_metrics_log_dropped(m);
    /* NULL series are ignored. */
    gw_metrics_request(NULL, 200, 1);
    gw_metrics_part(NULL, GW_OK, 1);
    gw_metrics_sem_wait(NULL);
    gw_metrics_sem_add(NULL, 1);
    gw_metrics_inflight_add(NULL, 1);
    gw_metrics_conn_opened(NULL);
    gw_metrics_conn_closed(NULL);
    gw_metrics_cancelled(NULL, GW_CANCEL_DEADLINE);
    gw_metrics_log_dropped(NULL);

    char *t = render_ok(m);
    if (t == NULL) {
        gw_metrics_free(m);
        return;
    }
    const char *rs = "fanfold_requests_total{route=\"" ROUTE "\",status=";
    EXPECT(t, 3, "%s\"200\"}", rs);
    EXPECT(t, 2, "%s\"404\"}", rs);
    EXPECT(t, 1, "%s\"502\"}", rs);
    EXPECT(t, 1, "%s\"other\"}", rs);
    CHECK(lines_with(t, rs) == 4); /* no other status of this route */
    EXPECT(t, 0, "fanfold_requests_total{route=\"GET /other\",status=\"200\"}");
    CHECK(lines_with(t, "fanfold_requests_total{route=\"GET /other\"") == 1);
    EXPECT(t, 7, "fanfold_request_duration_seconds_count{route=\"" ROUTE "\"}");
    double s = value_of(t, "fanfold_request_duration_seconds_sum{route=\"" ROUTE
                           "\"}");
    CHECK(fabs(s - (double)sum_ns / 1e9) < 2e-9);
    EXPECT(t, 0,
           "fanfold_request_duration_seconds_count{route=\"GET /other\"}");

    for (int o = 0; o < GW_NOUTCOMES; o++) {
        EXPECT(t, o + 1,
               "fanfold_backend_requests_total{backend=\"" BACKEND
               "\",outcome=\"%s\"}",
               outcomes[o]);
        EXPECT(t, 0,
               "fanfold_backend_requests_total{backend=\"pricing\","
               "outcome=\"%s\"}",
               outcomes[o]);
    }
    EXPECT(t, (double)nparts,
           "fanfold_backend_duration_seconds_count{backend=\"" BACKEND "\"}");
    s = value_of(t, "fanfold_backend_duration_seconds_sum{backend=\"" BACKEND
                    "\"}");
    CHECK(fabs(s - (double)part_ns / 1e9) < 2e-9);
    EXPECT(t, 0, "fanfold_backend_duration_seconds_count{backend=\"pricing\"}");
    EXPECT(t, 4, "fanfold_semaphore_waits_total{backend=\"" BACKEND "\"}");
    EXPECT(t, 0, "fanfold_semaphore_waits_total{backend=\"pricing\"}");
    EXPECT(t, 2, "fanfold_semaphore_inflight{backend=\"" BACKEND "\"}");
    EXPECT(t, 0, "fanfold_semaphore_inflight{backend=\"pricing\"}");
    EXPECT(t, 3, "fanfold_inflight_requests");
    EXPECT(t, 3, "fanfold_connections_open");
    EXPECT(t, 4, "fanfold_connections_total");
    EXPECT(t, 2, "fanfold_cancellations_total{reason=\"client_gone\"}");
    EXPECT(t, 1, "fanfold_cancellations_total{reason=\"deadline\"}");
    CHECK(lines_with(t, "fanfold_cancellations_total{") == 2);
    EXPECT(t, 3, "fanfold_log_dropped_total");
    free(t);

    /* Gauges go back down; counters never do. */
    gw_metrics_sem_add(b, -2);
    gw_metrics_inflight_add(m, -3);
    gw_metrics_conn_closed(m);
    gw_metrics_conn_closed(m);
    gw_metrics_conn_closed(m);
    t = render_ok(m);
    if (t != NULL) {
        EXPECT(t, 0, "fanfold_semaphore_inflight{backend=\"" BACKEND "\"}");
        EXPECT(t, 0, "fanfold_inflight_requests");
        EXPECT(t, 0, "fanfold_connections_open");
        EXPECT(t, 4, "fanfold_connections_total");
        EXPECT(t, 3, "%s\"200\"}", rs);
    }
    free(t);

    /* A route registered later (a reload) appears, at 0, after the
     * others, without touching them. */
    gw_route_metrics *late = gw_metrics_route(m, "POST /late");
    CHECK(late != NULL);
    t = render_ok(m);
    if (t != NULL) {
        EXPECT(t, 0,
               "fanfold_requests_total{route=\"POST /late\",status="
               "\"200\"}");
        EXPECT(t, 3, "%s\"200\"}", rs);
        const char *a = strstr(t, "fanfold_requests_total{route=\"" ROUTE);
        const char *z = strstr(t, "fanfold_requests_total{route=\"POST /late");
        CHECK(a != NULL && z != NULL && a < z);
    }
    free(t);
    gw_metrics_free(m);
}

static void test_counts(void **state)
{
    (void)state;
    rt_check_run(0, counts_main, NULL);
}

/* ------------------------------------------------------------ buckets */

static void buckets_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    if (m == NULL)
        return;
    gw_route_metrics *r = gw_metrics_route(m, ROUTE);
    gw_backend_metrics *b = gw_metrics_backend(m, BACKEND);
    CHECK(r != NULL && b != NULL);

    /* On every bound and 1 ns past it, plus 0, a negative duration (read
     * as 0), 1 ns and an hour. */
    int64_t obs[2 * (NLE - 1) + 4];
    size_t nobs = 0;
    for (size_t i = 0; i < NLE - 1; i++) {
        obs[nobs++] = le_ns[i];
        obs[nobs++] = le_ns[i] + 1;
    }
    obs[nobs++] = 0;
    obs[nobs++] = -5;
    obs[nobs++] = 1;
    obs[nobs++] = 3600 * RT_SEC;
    uint64_t cum[NLE] = {0};
    int64_t sum = 0;
    for (size_t k = 0; k < nobs; k++) {
        gw_metrics_request(r, 200, obs[k]);
        gw_metrics_part(b, GW_OK, obs[k]);
        int64_t v = obs[k] > 0 ? obs[k] : 0;
        sum += v;
        for (size_t i = 0; i < NLE; i++)
            if (i == NLE - 1 || v <= le_ns[i])
                cum[i]++;
    }
    char *t = render_ok(m);
    if (t != NULL) {
        expect_histo(__LINE__, t, "fanfold_request_duration_seconds", "route",
                     ROUTE, cum, (double)sum / 1e9);
        expect_histo(__LINE__, t, "fanfold_backend_duration_seconds", "backend",
                     BACKEND, cum, (double)sum / 1e9);
    }
    free(t);
    gw_metrics_free(m);
}

static void test_buckets(void **state)
{
    (void)state;
    rt_check_run(0, buckets_main, NULL);
}

/* ------------------------------------------------------------- labels */

/* The exposition's escaping of a label value. */
static char *escape(const char *v)
{
    char *e = malloc(2 * strlen(v) + 1), *p = e;
    if (e == NULL)
        return NULL;
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"')
            *p++ = '\\', *p++ = *v;
        else if (*v == '\n')
            *p++ = '\\', *p++ = 'n';
        else
            *p++ = *v;
    }
    *p = '\0';
    return e;
}

static void labels_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    if (m == NULL)
        return;
    /* Quote, backslash and newline; then long labels: two sharing their
     * first 600 bytes, one of 700 quotes (1400 bytes escaped). */
    char *labels[4];
    labels[0] = strdup("GET /a\"b\\c\nd");
    labels[1] = malloc(1001);
    labels[2] = malloc(1001);
    labels[3] = malloc(701);
    CHECK(labels[0] && labels[1] && labels[2] && labels[3]);
    if (!labels[0] || !labels[1] || !labels[2] || !labels[3])
        return;
    memset(labels[1], 'a', 1000);
    labels[1][1000] = '\0';
    memcpy(labels[2], labels[1], 1001);
    labels[2][999] = 'b';
    memset(labels[3], '"', 700);
    labels[3][700] = '\0';
    for (size_t i = 0; i < 4; i++) {
        gw_metrics_request(gw_metrics_route(m, labels[i]), 200, RT_MSEC);
        gw_backend_metrics *b = gw_metrics_backend(m, labels[i]);
        gw_metrics_part(b, GW_TIMEOUT, RT_MSEC);
        gw_metrics_sem_wait(b);
    }
    char *t = render_ok(m);
    if (t != NULL) {
        CHECK(strstr(t, "fanfold_requests_total{route=\"GET "
                        "/a\\\"b\\\\c\\nd\",status=\"200\"} 1\n") != NULL);
        for (size_t i = 0; i < 4; i++) {
            char *e = escape(labels[i]);
            CHECK(e != NULL);
            if (e == NULL)
                continue;
            EXPECT(t, 1, "fanfold_requests_total{route=\"%s\",status=\"200\"}",
                   e);
            EXPECT(t, 1, "fanfold_request_duration_seconds_count{route=\"%s\"}",
                   e);
            EXPECT(t, 1,
                   "fanfold_request_duration_seconds_bucket{route=\"%s\","
                   "le=\"0.001\"}",
                   e);
            EXPECT(t, 1,
                   "fanfold_backend_requests_total{backend=\"%s\",outcome="
                   "\"timeout\"}",
                   e);
            EXPECT(t, 1, "fanfold_semaphore_waits_total{backend=\"%s\"}", e);
            EXPECT(t, 0, "fanfold_semaphore_inflight{backend=\"%s\"}", e);
            free(e);
        }
    }
    free(t);
    for (size_t i = 0; i < 4; i++)
        free(labels[i]);
    gw_metrics_free(m);
}

static void test_label_escaping(void **state)
{
    (void)state;
    rt_check_run(0, labels_main, NULL);
}

/* ------------------------------------------------------- concurrency */

#define WORKERS 8
#define ROUNDS 10000

typedef struct conc {
    gw_metrics *m;
    gw_route_metrics *r;
    gw_backend_metrics *b;
    rt_waitgroup wg;  /* the workers */
    rt_waitgroup swg; /* the scraper */
    _Atomic bool done;
    _Atomic unsigned ps_seen; /* bit per P a worker ran on */
    _Atomic int renders;
} conc;

/* The duration of round i: spread over the buckets, 0 to 20 s. */
static int64_t round_ns(int i)
{
    return (int64_t)(i % 21) * RT_SEC / 2 + (i % 7) * RT_MSEC;
}

static void conc_worker(void *arg)
{
    conc *c = arg;
    for (int i = 0; i < ROUNDS; i++) {
        gw_metrics_request(c->r, 200, round_ns(i));
        gw_metrics_part(c->b, GW_OK, round_ns(i));
        gw_metrics_sem_wait(c->b);
        gw_metrics_sem_add(c->b, 1);
        gw_metrics_inflight_add(c->m, 1);
        gw_metrics_conn_opened(c->m);
        gw_metrics_cancelled(c->m, GW_CANCEL_DEADLINE);
        gw_metrics_log_dropped(c->m);
        if (i % 64 == 0) {
            atomic_fetch_or(&c->ps_seen, 1u << (rt_proc_id() & 31));
            rt_yield(); /* may move to another P */
        }
        gw_metrics_sem_add(c->b, -1);
        gw_metrics_inflight_add(c->m, -1);
        gw_metrics_conn_closed(c->m);
    }
    rt_waitgroup_done(&c->wg);
}

/* Renders while the workers count: every render valid (the validator
 * holds +Inf == _count, which a render must keep while observations
 * land), counters never going back. */
static void conc_scraper(void *arg)
{
    conc *c = arg;
    double last[5] = {0};
    int64_t end = rt_now() + 30 * RT_SEC;
    while (!atomic_load(&c->done) && rt_now() < end) {
        char *t = render_ok(c->m);
        if (t == NULL)
            break;
        double now[5] = {
            value_of(t, "fanfold_requests_total{route=\"" ROUTE
                        "\",status=\"200\"}"),
            value_of(t, "fanfold_backend_requests_total{backend=\"" BACKEND
                        "\",outcome=\"ok\"}"),
            value_of(t, "fanfold_connections_total"),
            value_of(t, "fanfold_log_dropped_total"),
            value_of(t, "fanfold_request_duration_seconds_count{route=\"" ROUTE
                        "\"}"),
        };
        for (int i = 0; i < 5; i++) {
            CHECK(now[i] >= last[i]);
            CHECK(now[i] <= WORKERS * ROUNDS);
            last[i] = now[i];
        }
        free(t);
        atomic_fetch_add(&c->renders, 1);
        rt_yield();
    }
    rt_waitgroup_done(&c->swg);
}

static void conc_main(void *arg)
{
    int procs = *(int *)arg;
    conc c = {0};
    CHECK(rt_procs() == procs);
    CHECK(gw_metrics_new(&c.m) == 0);
    if (c.m == NULL)
        return;
    c.r = gw_metrics_route(c.m, ROUTE);
    c.b = gw_metrics_backend(c.m, BACKEND);
    rt_waitgroup_add(&c.wg, WORKERS);
    for (int i = 0; i < WORKERS; i++)
        CHECK(rt_go(conc_worker, &c) != 0);
    rt_waitgroup_add(&c.swg, 1);
    CHECK(rt_go(conc_scraper, &c) != 0);
    rt_waitgroup_wait(&c.wg);
    atomic_store(&c.done, true);
    rt_waitgroup_wait(&c.swg);
    print_message("procs %d: %d renders while counting, Ps used 0x%x\n", procs,
                  atomic_load(&c.renders), atomic_load(&c.ps_seen));

    uint64_t cum[NLE] = {0};
    double sum = 0;
    int64_t sum_ns = 0;
    for (int i = 0; i < ROUNDS; i++) {
        int64_t v = round_ns(i);
        sum_ns += v;
        for (size_t k = 0; k < NLE; k++)
            if (k == NLE - 1 || v <= le_ns[k])
                cum[k] += WORKERS;
    }
    sum = (double)sum_ns * WORKERS / 1e9;
    char *t = render_ok(c.m);
    if (t != NULL) {
        double n = WORKERS * ROUNDS;
        EXPECT(t, n,
               "fanfold_requests_total{route=\"" ROUTE "\",status=\"200\"}");
        expect_histo(__LINE__, t, "fanfold_request_duration_seconds", "route",
                     ROUTE, cum, sum);
        EXPECT(t, n,
               "fanfold_backend_requests_total{backend=\"" BACKEND
               "\",outcome=\"ok\"}");
        expect_histo(__LINE__, t, "fanfold_backend_duration_seconds", "backend",
                     BACKEND, cum, sum);
        EXPECT(t, n, "fanfold_semaphore_waits_total{backend=\"" BACKEND "\"}");
        EXPECT(t, 0, "fanfold_semaphore_inflight{backend=\"" BACKEND "\"}");
        EXPECT(t, 0, "fanfold_inflight_requests");
        EXPECT(t, 0, "fanfold_connections_open");
        EXPECT(t, n, "fanfold_connections_total");
        EXPECT(t, n, "fanfold_cancellations_total{reason=\"deadline\"}");
        EXPECT(t, 0, "fanfold_cancellations_total{reason=\"client_gone\"}");
        EXPECT(t, n, "fanfold_log_dropped_total");
    }
    free(t);
    gw_metrics_free(c.m);
}

static void test_concurrent(void **state)
{
    (void)state;
    for (int procs = 2; procs <= 4; procs++)
        rt_check_run(procs, conc_main, &procs);
}

/* -------------------------------------------- prometheus_client's view */

static char *pyclient_text;

static void pyclient_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    if (m == NULL)
        return;
    gw_route_metrics *r = gw_metrics_route(m, ROUTE);
    gw_route_metrics *odd = gw_metrics_route(m, "GET /a\"b\\c\nd");
    gw_backend_metrics *b = gw_metrics_backend(m, BACKEND);
    gw_metrics_backend(m, "pricing");
    gw_metrics_request(r, 200, 2 * RT_MSEC);
    gw_metrics_request(r, 200, 20 * RT_MSEC);
    gw_metrics_request(r, 502, 20 * RT_SEC);
    gw_metrics_request(odd, 404, RT_MSEC);
    gw_metrics_part(b, GW_TIMEOUT, 3 * RT_SEC);
    gw_metrics_sem_add(b, 2);
    gw_metrics_log_dropped(m);
    gw_metrics_log_dropped(m);
    gw_metrics_conn_opened(m);
    pyclient_text = render_ok(m);
    gw_metrics_free(m);
}

/* Reads the exposition from the file argv[1]; exits non-zero with the
 * reason on a parse error or a value that is not the expected one. */
static const char pyclient_script[] =
    "import math, sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "fams = list(text_string_to_metric_families(open(sys.argv[1]).read()))\n"
    "got = {}\n"
    "types = {}\n"
    "for f in fams:\n"
    "    types[f.name] = f.type\n"
    "    for s in f.samples:\n"
    "        k = (s.name, tuple(sorted(s.labels.items())))\n"
    "        assert k not in got, 'duplicate %r' % (k,)\n"
    "        got[k] = s.value\n"
    "def v(name, **labels):\n"
    "    return got.get((name, tuple(sorted(labels.items()))))\n"
    "R = 'GET /api/products/{id}'\n"
    "ODD = 'GET /a\"b\\\\c\\nd'\n"
    "want = [\n"
    "  (v('fanfold_requests_total', route=R, status='200'), 2),\n"
    "  (v('fanfold_requests_total', route=R, status='502'), 1),\n"
    "  (v('fanfold_requests_total', route=ODD, status='404'), 1),\n"
    "  (v('fanfold_request_duration_seconds_bucket', route=R, le='0.001'), "
    "0),\n"
    "  (v('fanfold_request_duration_seconds_bucket', route=R, le='0.0025'), "
    "1),\n"
    "  (v('fanfold_request_duration_seconds_bucket', route=R, le='10'), 2),\n"
    "  (v('fanfold_request_duration_seconds_bucket', route=R, le='+Inf'), "
    "3),\n"
    "  (v('fanfold_request_duration_seconds_count', route=R), 3),\n"
    "  (v('fanfold_backend_requests_total', backend='inventory', "
    "outcome='timeout'), 1),\n"
    "  (v('fanfold_backend_requests_total', backend='pricing', "
    "outcome='ok'), 0),\n"
    "  (v('fanfold_backend_duration_seconds_bucket', backend='inventory', "
    "le='2.5'), 0),\n"
    "  (v('fanfold_backend_duration_seconds_bucket', backend='inventory', "
    "le='5'), 1),\n"
    "  (v('fanfold_semaphore_inflight', backend='inventory'), 2),\n"
    "  (v('fanfold_log_dropped_total'), 2),\n"
    "  (v('fanfold_connections_open'), 1),\n"
    "  (v('fanfold_cancellations_total', reason='deadline'), 0),\n"
    "]\n"
    "for i, (g, w) in enumerate(want):\n"
    "    assert g == w, 'check %d: got %r, want %r' % (i, g, w)\n"
    "s = v('fanfold_request_duration_seconds_sum', route=R)\n"
    "assert math.isclose(s, 20.022, abs_tol=1e-9), s\n"
    "assert len(fams) == 13, [f.name for f in fams]\n"
    "want_types = {'fanfold_requests': 'counter',\n"
    "  'fanfold_request_duration_seconds': 'histogram',\n"
    "  'fanfold_backend_requests': 'counter',\n"
    "  'fanfold_backend_duration_seconds': 'histogram',\n"
    "  'fanfold_inflight_requests': 'gauge',\n"
    "  'fanfold_connections_open': 'gauge',\n"
    "  'fanfold_connections': 'counter',\n"
    "  'fanfold_semaphore_inflight': 'gauge',\n"
    "  'fanfold_semaphore_waits': 'counter',\n"
    "  'fanfold_cancellations': 'counter',\n"
    "  'fanfold_goroutines': 'gauge',\n"
    "  'fanfold_log_dropped': 'counter',\n"
    "  'fanfold_goroutine_long_runs': 'counter'}\n"
    "assert types == want_types, types\n"
    "print('prometheus_client: %d families, %d samples' % (len(fams), "
    "len(got)))\n";

/* Run python with the script on path; its exit status (-1: no run). */
static int run_python(const char *python, const char *path)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm(60);
        execlp(python, python, "-c", pyclient_script, path, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A python3 that has prometheus_client: the one on PATH, else Debian's
 * (a pyenv on PATH may hide the system's packages); NULL when none. */
static const char *python_with_client(void)
{
    static const char *const candidates[] = {"python3", "/usr/bin/python3"};
    for (size_t i = 0; i < 2; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd,
                 "%s -c 'import prometheus_client' >/dev/null 2>&1",
                 candidates[i]);
        if (system(cmd) == 0)
            return candidates[i];
    }
    return NULL;
}

static void test_prometheus_client(void **state)
{
    (void)state;
    const char *python = python_with_client();
    if (python == NULL) {
        print_message("no python3 with prometheus_client: skipped (Debian: "
                      "python3-prometheus-client)\n");
        skip();
    }
    rt_check_run(0, pyclient_main, NULL);
    assert_non_null(pyclient_text);
    char path[] = "/tmp/fanfold-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(pyclient_text);
    assert_int_equal(write(fd, pyclient_text, len), (ssize_t)len);
    close(fd);
    int rc = run_python(python, path);
    unlink(path);
    free(pyclient_text);
    pyclient_text = NULL;
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validator),
        cmocka_unit_test(test_fresh),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_prometheus_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
