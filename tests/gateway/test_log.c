/*
 * test_log.c - messages and the access log: level names, which level
 * lets what through, the message format, the access line (one JSON
 * object, read back with jansson: every field, null route, absent
 * completed and parts, escaping of a raw path, long paths), the queue
 * (FIFO, everything queued written by gw_log_stop, restart) and the
 * bound: with stderr a full pipe that nobody reads, 10000 calls return at
 * once and every line is either written once the pipe drains or counted
 * in fanfold_log_dropped_total, never both, never neither.
 *
 * stderr (fd 2) is swapped for a temporary file or a pipe with dup2 and
 * put back before the test returns; CHECK failures printed meanwhile land
 * in the capture, but still fail the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "rt.h"

#include "../rt_check.h"
#include "prom_check.h"

/* ------------------------------------------------------- stderr capture */

typedef struct capture {
    int saved; /* the real fd 2 */
    int fd;    /* the temporary file */
} capture;

static bool capture_start(capture *c)
{
    char path[] = "/tmp/fanfold-log-XXXXXX";
    fflush(stderr);
    c->fd = mkstemp(path);
    if (c->fd < 0)
        return false;
    unlink(path);
    c->saved = dup(2);
    if (c->saved < 0 || dup2(c->fd, 2) != 2) {
        close(c->fd);
        return false;
    }
    return true;
}

/* Put stderr back; what was written meanwhile, NUL-terminated (caller
 * frees), or NULL. */
static char *capture_end(capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    off_t len = lseek(c->fd, 0, SEEK_END);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf != NULL) {
        ssize_t n = pread(c->fd, buf, (size_t)len, 0);
        buf[n > 0 ? n : 0] = '\0';
    }
    close(c->fd);
    return buf;
}

/* How many lines of text start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return n;
}

/* ----------------------------------------------------------- a request */

static const gw_access_part two_parts[] = {
    {.name = "inventory", .outcome = "ok", .ns = 1500000},
    {.name = "pricing", .outcome = "timeout", .ns = -1},
};

/* The path is raw and not NUL-terminated: what follows path_len must not
 * be logged. */
static const char raw_path[] = "/api/products/7\"q\\\x01\n\t\x7f|GARBAGE";
#define RAW_PATH_LEN (sizeof raw_path - 1 - strlen("|GARBAGE"))

static gw_access sample(void)
{
    return (gw_access){
        .start = 0,
        .id = "req-1",
        .client = "127.0.0.1:5555",
        .method = "GET",
        .path = raw_path,
        .path_len = RAW_PATH_LEN,
        .route = "GET /api/products/{id}",
        .status = 200,
        .ns = 12345678,
        .bytes = 512,
        .completed = 1,
        .client_gone = false,
        .parts = two_parts,
        .nparts = 2,
    };
}

/* ------------------------------------------------------ levels, format */

static void test_parse_level(void **state)
{
    (void)state;
    assert_int_equal(gw_log_parse_level("error"), GW_LOG_ERROR);
    assert_int_equal(gw_log_parse_level("warn"), GW_LOG_WARN);
    assert_int_equal(gw_log_parse_level("info"), GW_LOG_INFO);
    assert_int_equal(gw_log_parse_level("debug"), GW_LOG_DEBUG);
    static const char *const bad[] = {"",      "INFO",  "Info",  "warning",
                                      "inf",   "info ", " info", "debugx",
                                      "trace", "fatal", "0",     "2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (gw_log_parse_level(bad[i]) != -1)
            fail_msg("\"%s\" parsed as a level", bad[i]);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void test_levels(void **state)
{
    (void)state;
    /* The default, before anything sets it. */
    assert_true(gw_log_enabled(GW_LOG_INFO));
    assert_false(gw_log_enabled(GW_LOG_DEBUG));
    for (int lv = GW_LOG_ERROR; lv <= GW_LOG_DEBUG; lv++) {
        gw_log_set_level((gw_log_level)lv);
        for (int l = GW_LOG_ERROR; l <= GW_LOG_DEBUG; l++)
            assert_int_equal(gw_log_enabled((gw_log_level)l), l <= lv);
        capture c;
        assert_true(capture_start(&c));
        for (int l = GW_LOG_ERROR; l <= GW_LOG_DEBUG; l++)
            gw_logf((gw_log_level)l, "message at %s", level_names[l]);
        gw_access a = sample();
        gw_log_access(&a);
        char *out = capture_end(&c);
        assert_non_null(out);
        for (int l = GW_LOG_ERROR; l <= GW_LOG_DEBUG; l++) {
            char line[64];
            snprintf(line, sizeof line, "fanfold: %s: message at %s\n",
                     level_names[l], level_names[l]);
            if ((strstr(out, line) != NULL) != (l <= lv))
                fail_msg("level %s: message at %s %s: %s", level_names[lv],
                         level_names[l], l <= lv ? "missing" : "written", out);
        }
        /* The access log is at info: none at error or warn. */
        assert_int_equal(count_lines(out, "{"), lv >= GW_LOG_INFO ? 1 : 0);
        assert_int_equal(count_lines(out, ""), (lv + 1) + (lv >= GW_LOG_INFO));
        free(out);
    }
    gw_log_set_level(GW_LOG_INFO);
}

static void test_message_format(void **state)
{
    (void)state;
    gw_log_set_level(GW_LOG_DEBUG);
    capture c;
    assert_true(capture_start(&c));
    gw_logf(GW_LOG_WARN, "the open-file limit is %d, below %s", 1024, "2048");
    gw_logf(GW_LOG_ERROR, "x");
    gw_logf(GW_LOG_DEBUG, "%s", "");
    char big[3000];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gw_logf(GW_LOG_INFO, "%s", big); /* cut, still one whole line */
    char *out = capture_end(&c);
    gw_log_set_level(GW_LOG_INFO);
    assert_non_null(out);
    const char *want =
        "fanfold: warn: the open-file limit is 1024, below 2048\n"
        "fanfold: error: x\n"
        "fanfold: debug: \n"
        "fanfold: info: mmm";
    assert_memory_equal(out, want, strlen(want));
    const char *last = out + strlen(want) - 3;
    assert_int_equal(strspn(last, "m") + 1, strlen(last));
    assert_int_equal(last[strlen(last) - 1], '\n');
    assert_true(strspn(last, "m") >= 1000);
    assert_int_equal(count_lines(out, "fanfold: "), 4);
    free(out);
}

/* ------------------------------------------------------ the access line */

/* The fields of one access line, parsed; NULL (with a failed CHECK) when
 * it is not one line of one JSON object. */
static json_t *parse_line(const char *line, size_t len)
{
    if (len == 0 || line[len - 1] != '\n' ||
        memchr(line, '\n', len - 1) != NULL) {
        fprintf(stderr, "not one line: %.*s\n", (int)len, line);
        CHECK(!"an access log entry is one line");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    if (j == NULL || !json_is_object(j)) {
        fprintf(stderr, "not a JSON object (%s): %.*s\n", je.text, (int)len,
                line);
        CHECK(!"an access log line is a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* "2026-12-01T01:03:13.123Z", within a second of [lo, hi]. */
static bool good_time(const char *s, time_t lo, time_t hi)
{
    int y, mo, d, h, mi, se, ms, n = 0;
    if (strlen(s) != 24 ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &y, &mo, &d, &h, &mi, &se,
               &ms, &n) != 7 ||
        n != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != '.')
        return false;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    time_t t = timegm(&tm);
    return ms >= 0 && ms <= 999 && t >= lo - 1 && t <= hi + 1;
}

static const char *str_of(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The object has exactly these keys. */
static bool keys_are(json_t *o, const char *const *keys, size_t n)
{
    if (json_object_size(o) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (json_object_get(o, keys[i]) == NULL)
            return false;
    return true;
}

/* The sample's line (full, with parts). */
static void check_sample(json_t *j, time_t lo, time_t hi)
{
    static const char *const keys[] = {
        "time",   "id",          "client", "method",    "path",  "route",
        "status", "duration_ms", "bytes",  "completed", "parts",
    };
    CHECK(keys_are(j, keys, sizeof keys / sizeof keys[0]));
    CHECK(str_of(j, "time") != NULL && good_time(str_of(j, "time"), lo, hi));
    CHECK(str_of(j, "id") && strcmp(str_of(j, "id"), "req-1") == 0);
    CHECK(str_of(j, "client") &&
          strcmp(str_of(j, "client"), "127.0.0.1:5555") == 0);
    CHECK(str_of(j, "method") && strcmp(str_of(j, "method"), "GET") == 0);
    json_t *path = json_object_get(j, "path");
    CHECK(json_is_string(path) && json_string_length(path) == RAW_PATH_LEN &&
          memcmp(json_string_value(path), raw_path, RAW_PATH_LEN) == 0);
    CHECK(str_of(j, "route") &&
          strcmp(str_of(j, "route"), "GET /api/products/{id}") == 0);
    CHECK(json_integer_value(json_object_get(j, "status")) == 200);
    json_t *d = json_object_get(j, "duration_ms");
    CHECK(json_is_number(d) && fabs(json_number_value(d) - 12.346) < 1e-9);
    CHECK(json_is_integer(json_object_get(j, "bytes")) &&
          json_integer_value(json_object_get(j, "bytes")) == 512);
    CHECK(json_is_true(json_object_get(j, "completed")));
    json_t *parts = json_object_get(j, "parts");
    CHECK(json_is_object(parts) && json_object_size(parts) == 2);
    json_t *inv = json_object_get(parts, "inventory");
    json_t *pri = json_object_get(parts, "pricing");
    static const char *const ran[] = {"outcome", "ms"};
    static const char *const never[] = {"outcome"};
    CHECK(json_is_object(inv) && keys_are(inv, ran, 2));
    CHECK(str_of(inv, "outcome") && strcmp(str_of(inv, "outcome"), "ok") == 0);
    CHECK(fabs(json_number_value(json_object_get(inv, "ms")) - 1.5) < 1e-9);
    CHECK(json_is_object(pri) && keys_are(pri, never, 1)); /* never ran */
    CHECK(str_of(pri, "outcome") &&
          strcmp(str_of(pri, "outcome"), "timeout") == 0);
}

/* The variants: no route, no answer (the client left), no parts. */
static void log_variants(void)
{
    gw_access a = sample();
    a.route = NULL;
    a.status = 404;
    a.completed = -1;
    a.parts = NULL;
    a.nparts = 0;
    a.ns = 0;
    a.bytes = 0;
    gw_log_access(&a);
    a = sample();
    a.completed = 0;
    a.client_gone = true;
    a.status = 0;
    a.nparts = 1;
    gw_log_access(&a);
}

static void check_variants(json_t *a, json_t *b)
{
    static const char *const keys_a[] = {"time",   "id",          "client",
                                         "method", "path",        "route",
                                         "status", "duration_ms", "bytes"};
    CHECK(keys_are(a, keys_a, sizeof keys_a / sizeof keys_a[0]));
    CHECK(json_is_null(json_object_get(a, "route")));
    CHECK(json_integer_value(json_object_get(a, "status")) == 404);
    CHECK(json_number_value(json_object_get(a, "duration_ms")) == 0);
    CHECK(json_integer_value(json_object_get(a, "bytes")) == 0);

    CHECK(json_is_false(json_object_get(b, "completed")));
    CHECK(json_is_true(json_object_get(b, "client_gone")));
    CHECK(json_integer_value(json_object_get(b, "status")) == 0);
    json_t *parts = json_object_get(b, "parts");
    CHECK(json_is_object(parts) && json_object_size(parts) == 1 &&
          json_object_get(parts, "inventory") != NULL);
}

/* Every line of out parsed; *n set to how many. Caller frees each. */
static size_t parse_all(const char *out, json_t **js, size_t max)
{
    size_t n = 0;
    for (const char *p = out; *p != '\0' && n < max;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
        js[n++] = parse_line(p, len);
        p += len;
    }
    return n;
}

static void access_checks(const char *out, time_t lo, time_t hi)
{
    json_t *js[4] = {0};
    size_t n = parse_all(out, js, 4);
    CHECK(n == 3);
    if (n == 3 && js[0] && js[1] && js[2]) {
        check_sample(js[0], lo, hi);
        check_variants(js[1], js[2]);
    }
    for (size_t i = 0; i < n; i++)
        json_decref(js[i]);
}

/* Before gw_log_start: written at once. */
static void test_access_line_direct(void **state)
{
    (void)state;
    rt_check_reset();
    capture c;
    assert_true(capture_start(&c));
    time_t lo = time(NULL);
    gw_access a = sample();
    gw_log_access(&a);
    log_variants();
    time_t hi = time(NULL);
    char *out = capture_end(&c);
    assert_non_null(out);
    access_checks(out, lo, hi);
    free(out);
    rt_check_report();
}

/* Through the queue and the writer goroutine: the same lines. */
static void queued_main(void *arg)
{
    char **out = arg;
    capture c;
    CHECK(capture_start(&c));
    CHECK(gw_log_start(NULL) == 0);
    gw_access a = sample();
    gw_log_access(&a);
    log_variants();
    gw_log_stop();
    *out = capture_end(&c);
}

static void test_access_line_queued(void **state)
{
    (void)state;
    char *out = NULL;
    time_t lo = time(NULL);
    rt_check_run(0, queued_main, &out);
    time_t hi = time(NULL);
    assert_non_null(out);
    rt_check_reset();
    access_checks(out, lo, hi);
    free(out);
    rt_check_report();
}

/* A path as long as a request target may be (8 KiB), or one that
 * escaping makes six times longer, is logged whole with its request. */
static void test_access_line_long(void **state)
{
    (void)state;
    rt_check_reset();
    static char path[8190];
    memset(path, 'a', sizeof path);
    path[0] = '/';
    static char ctl[2000];
    memset(ctl, '\x01', sizeof ctl);
    ctl[0] = '/';
    capture c;
    assert_true(capture_start(&c));
    gw_access a = sample();
    a.path = path;
    a.path_len = sizeof path;
    gw_log_access(&a);
    a.path = ctl;
    a.path_len = sizeof ctl;
    gw_log_access(&a);
    char *out = capture_end(&c);
    assert_non_null(out);
    json_t *js[3] = {0};
    size_t n = parse_all(out, js, 3);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(js[i]);
        json_t *p = json_object_get(js[i], "path");
        size_t want = i == 0 ? sizeof path : sizeof ctl;
        if (!json_is_string(p) || json_string_length(p) != want ||
            memcmp(json_string_value(p), i == 0 ? path : ctl, want) != 0)
            fail_msg("line %zu: the path is not there whole: %.200s", i, out);
        assert_int_equal(json_integer_value(json_object_get(js[i], "status")),
                         200);
        assert_string_equal(str_of(js[i], "id"), "req-1");
        json_decref(js[i]);
    }
    free(out);
    rt_check_report();
}

/* NULL strings are logged as null; a line past any sane size (parts
 * with huge names: 1.6 MB) becomes an error line, still JSON. */
static void test_access_line_edges(void **state)
{
    (void)state;
    rt_check_reset();
    enum { NPARTS = 200, NAME = 8000 };
    gw_access_part *parts = calloc(NPARTS, sizeof *parts);
    char *names = malloc((size_t)NPARTS * (NAME + 1));
    assert_non_null(parts);
    assert_non_null(names);
    for (int i = 0; i < NPARTS; i++) {
        char *nm = names + (size_t)i * (NAME + 1);
        memset(nm, 'p', NAME);
        snprintf(nm, 12, "%d", i); /* distinct */
        nm[strlen(nm)] = 'p';
        nm[NAME] = '\0';
        parts[i] = (gw_access_part){.name = nm, .outcome = "ok", .ns = 1};
    }
    capture c;
    assert_true(capture_start(&c));
    gw_access a = sample();
    a.id = NULL;
    a.client = NULL;
    a.parts = (const gw_access_part[]){{.name = "x", .outcome = NULL}};
    a.nparts = 1;
    gw_log_access(&a);
    a = sample();
    a.parts = parts;
    a.nparts = NPARTS;
    gw_log_access(&a);
    char *out = capture_end(&c);
    free(names);
    free(parts);
    assert_non_null(out);
    json_t *js[3] = {0};
    size_t n = parse_all(out, js, 3);
    assert_int_equal(n, 2);
    assert_non_null(js[0]);
    assert_non_null(js[1]);
    assert_true(json_is_null(json_object_get(js[0], "id")));
    assert_true(json_is_null(json_object_get(js[0], "client")));
    assert_string_equal(str_of(js[0], "method"), "GET");
    json_t *x = json_object_get(json_object_get(js[0], "parts"), "x");
    assert_true(json_is_null(json_object_get(x, "outcome")));
    assert_string_equal(str_of(js[1], "error"), "access log line too long");
    assert_non_null(str_of(js[1], "time"));
    assert_true(strlen(out) < 4096);
    json_decref(js[0]);
    json_decref(js[1]);
    free(out);
    rt_check_report();
}

/* ---------------------------------------------------------- the queue */

#define FLUSH_LINES 3000

static void flush_main(void *arg)
{
    (void)arg;
    capture c;
    CHECK(capture_start(&c));
    gw_log_stop(); /* not started: nothing */
    CHECK(gw_log_start(NULL) == 0);
    CHECK(gw_log_start(NULL) == -EBUSY);
    for (int i = 0; i < FLUSH_LINES; i++) {
        char id[32];
        snprintf(id, sizeof id, "req-%d", i);
        gw_access a = sample();
        a.id = id;
        gw_log_access(&a);
        if (i % 1000 == 0)
            gw_logf(GW_LOG_WARN, "after %d", i);
    }
    gw_log_stop(); /* writes it all before it returns */
    gw_log_stop();
    off_t len = lseek(2, 0, SEEK_END);
    gw_logf(GW_LOG_WARN, "direct"); /* after the stop: at once */
    CHECK(lseek(2, 0, SEEK_END) > len);
    /* And it starts again. */
    CHECK(gw_log_start(NULL) == 0);
    gw_logf(GW_LOG_WARN, "restarted");
    gw_log_stop();
    char *out = capture_end(&c);
    CHECK(out != NULL);
    if (out == NULL)
        return;
    /* In order, all of them, each line whole. */
    const char *p = out;
    int next = 0, msgs = 0;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        CHECK(nl != NULL);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - p) + 1;
        if (*p == '{') {
            json_t *j = parse_line(p, len);
            char id[32];
            snprintf(id, sizeof id, "req-%d", next++);
            CHECK(j != NULL && str_of(j, "id") != NULL &&
                  strcmp(str_of(j, "id"), id) == 0);
            json_decref(j);
        } else {
            CHECK(strncmp(p, "fanfold: warn: ", 15) == 0);
            msgs++;
        }
        p += len;
    }
    CHECK(next == FLUSH_LINES);
    CHECK(msgs == FLUSH_LINES / 1000 + 2);
    CHECK(strstr(out, "fanfold: warn: direct\nfanfold: warn: restarted\n") !=
          NULL);
    free(out);
}

static void test_stop_flushes(void **state)
{
    (void)state;
    rt_check_run(0, flush_main, NULL);
}

/* stderr a pipe that is full and that nobody reads. */

#define FLOOD 10000
#define FLOOD_MSGS 100

typedef struct reader {
    int fd;
    int access, msgs, bad;
    size_t bytes;
} reader;

/* Read the pipe to its end, counting whole lines by kind (the filler
 * is empty lines). */
static void *reader_main(void *arg)
{
    reader *r = arg;
    char buf[65536], line[16384];
    size_t ll = 0;
    for (;;) {
        ssize_t n = read(r->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->bytes += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (ll < sizeof line)
                    line[ll++] = buf[i];
                continue;
            }
            if (ll == 0)
                continue;
            if (line[0] == '{') {
                json_error_t je;
                json_t *j = json_loadb(line, ll, 0, &je);
                if (j != NULL)
                    r->access++;
                else
                    r->bad++;
                json_decref(j);
            } else if (ll > 15 && memcmp(line, "fanfold: info: ", 15) == 0) {
                r->msgs++;
            } else {
                r->bad++;
            }
            ll = 0;
        }
    }
    if (ll != 0)
        r->bad++; /* a cut line */
    return NULL;
}

static intptr_t join_reader(void *arg)
{
    return pthread_join(*(pthread_t *)arg, NULL);
}

static void flood_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    int p[2];
    CHECK(pipe(p) == 0);
    /* Fill the pipe, then make its write end blocking again: the writer
     * goroutine's write blocks (in its rt_blocking thread) as on a stuck
     * terminal. */
    int fl = fcntl(p[1], F_GETFL);
    CHECK(fcntl(p[1], F_SETFL, fl | O_NONBLOCK) == 0);
    static char filler[65536];
    memset(filler, '\n', sizeof filler);
    size_t filled = 0;
    for (int i = 0; i < 1024; i++) {
        ssize_t n = write(p[1], filler, sizeof filler);
        if (n < 0)
            break;
        filled += (size_t)n;
    }
    CHECK(errno == EAGAIN && filled > 0);
    CHECK(fcntl(p[1], F_SETFL, fl) == 0);
    fflush(stderr);
    int saved = dup(2);
    CHECK(saved >= 0 && dup2(p[1], 2) == 2);

    CHECK(gw_log_start(m) == 0);
    gw_access a = sample();
    int64_t worst = 0, t0 = rt_now();
    for (int i = 0; i < FLOOD; i++) {
        int64_t t = rt_now();
        gw_log_access(&a);
        t = rt_now() - t;
        worst = t > worst ? t : worst;
    }
    for (int i = 0; i < FLOOD_MSGS; i++)
        gw_logf(GW_LOG_INFO, "message %d", i);
    int64_t took = rt_now() - t0;

    char *text = NULL;
    size_t tlen = 0;
    double dropped = -1;
    CHECK(gw_metrics_render(m, &text, &tlen) == 0);
    if (text != NULL)
        CHECK(prom_value(text, "fanfold_log_dropped_total", &dropped) == 1);
    free(text);

    /* Drain: now gw_log_stop can write what it holds. */
    reader r = {.fd = p[0]};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, reader_main, &r) == 0);
    int64_t s0 = rt_now();
    gw_log_stop();
    int64_t stop_took = rt_now() - s0;
    dup2(saved, 2);
    close(saved);
    close(p[1]); /* the reader sees the end */
    rt_blocking(join_reader, &th);
    close(p[0]);
    gw_metrics_free(m);

    fprintf(stderr,
            "flood: %d calls in %lld ms (worst %lld us), %.0f dropped, "
            "%d access lines and %d messages written, stop %lld ms\n",
            FLOOD + FLOOD_MSGS, (long long)(took / RT_MSEC),
            (long long)(worst / RT_USEC), dropped, r.access, r.msgs,
            (long long)(stop_took / RT_MSEC));
    CHECK(took < 2 * RT_SEC);
    CHECK(worst < RT_SEC);
    CHECK(dropped > 0);
    CHECK(r.bad == 0);
    CHECK(r.bytes >= filled);
    /* Each line written or counted as dropped: not both, not neither. */
    CHECK(r.access + r.msgs + (int)dropped == FLOOD + FLOOD_MSGS);
    CHECK(r.access > 0);
    CHECK(stop_took < 10 * RT_SEC);
}

static void test_full_pipe_never_blocks(void **state)
{
    (void)state;
    rt_check_run(0, flood_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_message_format),
        cmocka_unit_test(test_access_line_direct),
        cmocka_unit_test(test_access_line_queued),
        cmocka_unit_test(test_access_line_long),
        cmocka_unit_test(test_access_line_edges),
        cmocka_unit_test(test_stop_flushes),
        cmocka_unit_test(test_full_pipe_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
