/*
 * test_admin.c - the admin listener, spoken to over plain blocking TCP
 * sockets: /healthz (ok, draining), /metrics (the content type of the
 * 0.0.4 exposition, a body that passes prom_check.h's validator, admin
 * requests not counted), /debug/goroutines (the runtime's dump: the count
 * line, a header and a spawn-site line per goroutine, the test's own
 * parked goroutines found by id, state and spawn site, a dump larger than
 * the first buffer), HEAD, 404 and 405, keep-alive and pipelining,
 * HTTP/1.0 and Connection: close, malformed requests (400, 431, 413, and
 * the listener serving on), gw_admin_stop with idle, silent and
 * half-sent connections (bounded in time, every client sees the close,
 * the port refuses after), and start errors.
 *
 * The listener runs in goroutines; the client runs in rt_blocking, on a
 * pool thread, with blocking sockets and 5 s receive and send timeouts,
 * so no step can hang. Checks go through CHECK (tests/rt_check.h): they
 * are safe on any thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "admin.h"
#include "metrics.h"
#include "rt.h"

#include "../rt_check.h"
#include "prom_check.h"

/* ------------------------------------------------------------- client */

typedef struct conn {
    int fd;
    char *buf; /* bytes read and not yet used */
    size_t len, cap;
} conn;

typedef struct response {
    int status;
    char head[4096]; /* status line and headers, NUL-terminated */
    char content_type[128];
    long content_length; /* -1: none */
    bool close;          /* Connection: close */
    char allow[64];
    char *body; /* NUL-terminated; caller frees (resp_free) */
    size_t body_len;
} response;

static void resp_free(response *r)
{
    free(r->body);
    r->body = NULL;
}

/* Connect to 127.0.0.1:port; false (and fd -1) on failure, errno kept. */
static bool cl_connect(conn *c, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return false;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return false;
    }
    return true;
}

static void cl_close(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

static bool cl_send(conn *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

static bool cl_sends(conn *c, const char *s)
{
    return cl_send(c, s, strlen(s));
}

/* Read more into c->buf: >0 bytes, 0 at the end, <0 error or timeout. */
static ssize_t cl_fill(conn *c)
{
    if (c->cap - c->len < 16384) {
        size_t cap = c->cap ? 2 * c->cap : 65536;
        char *b = realloc(c->buf, cap);
        if (b == NULL)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            c->len += (size_t)r;
        return r;
    }
}

/* The value of header name in head (case-insensitive), into out. */
static bool header(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL;
         p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            v += strspn(v, " \t");
            size_t vl = strcspn(v, "\r");
            snprintf(out, n, "%.*s", (int)vl, v);
            return true;
        }
    }
    return false;
}

/* Read one response (the body unless it answers a HEAD). */
static bool cl_response(conn *c, bool head_only, response *r)
{
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    char *end;
    for (;;) {
        if (c->len > 0) {
            c->buf[c->len] = '\0';
            end = strstr(c->buf, "\r\n\r\n");
            if (end != NULL)
                break;
        }
        if (cl_fill(c) <= 0)
            return false;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    if (hl >= sizeof r->head)
        return false;
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
        return false;
    char v[128];
    if (header(r->head, "Content-Length", v, sizeof v))
        r->content_length = strtol(v, NULL, 10);
    header(r->head, "Content-Type", r->content_type, sizeof r->content_type);
    header(r->head, "Allow", r->allow, sizeof r->allow);
    r->close = header(r->head, "Connection", v, sizeof v) &&
               strcasecmp(v, "close") == 0;
    size_t bl =
        head_only || r->content_length < 0 ? 0 : (size_t)r->content_length;
    while (c->len < hl + bl)
        if (cl_fill(c) <= 0)
            return false;
    r->body = malloc(bl + 1);
    if (r->body == NULL)
        return false;
    memcpy(r->body, c->buf + hl, bl);
    r->body[bl] = '\0';
    r->body_len = bl;
    memmove(c->buf, c->buf + hl + bl, c->len - hl - bl);
    c->len -= hl + bl;
    return true;
}

/* Send req on c and read the response. */
static bool cl_do(conn *c, const char *req, response *r)
{
    return cl_sends(c, req) && cl_response(c, strncmp(req, "HEAD ", 5) == 0, r);
}

/* One request on a connection of its own. */
static bool cl_get(int port, const char *req, response *r)
{
    conn c;
    if (!cl_connect(&c, port))
        return false;
    bool ok = cl_do(&c, req, r);
    cl_close(&c);
    return ok;
}

/* Has the server closed c (end of stream or reset), with nothing more
 * sent? Waits up to the receive timeout. */
static bool cl_closed(conn *c)
{
    if (c->len > 0)
        return false;
    ssize_t r = cl_fill(c);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: admin\r\n\r\n"

/* ---------------------------------------------------------- fixtures */

typedef struct fx {
    gw_admin *admin;
    gw_metrics *metrics;
    int port;
    _Atomic bool draining;
    _Atomic int draining_calls;
} fx;

static bool draining_cb(void *arg)
{
    fx *f = arg;
    atomic_fetch_add(&f->draining_calls, 1);
    return atomic_load(&f->draining);
}

static bool fx_start(fx *f)
{
    CHECK(gw_metrics_new(&f->metrics) == 0);
    gw_admin_opts o = {.listen = "127.0.0.1:0",
                       .metrics = f->metrics,
                       .draining = draining_cb,
                       .draining_arg = f};
    char err[256] = "";
    int rc = gw_admin_start(&o, &f->admin, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "gw_admin_start: %d %s\n", rc, err);
    CHECK(rc == 0 && f->admin != NULL);
    if (f->admin == NULL)
        return false;
    f->port = gw_admin_port(f->admin);
    CHECK(f->port > 0);
    return true;
}

static void fx_stop(fx *f)
{
    int64_t t = rt_now();
    gw_admin_stop(f->admin);
    CHECK(rt_now() - t < 3 * RT_SEC);
    gw_admin_free(f->admin);
    f->admin = NULL;
    gw_metrics_free(f->metrics);
    f->metrics = NULL;
}

/* Run a client script on a pool thread. */
typedef intptr_t (*script_fn)(void *);
static void client(script_fn fn, void *arg)
{
    rt_blocking(fn, arg);
}

/* A test: start, run the script with the fixture, stop. */
static void with_admin_main(void *arg)
{
    script_fn fn = (script_fn)arg;
    fx f = {0};
    if (fx_start(&f))
        client(fn, &f);
    if (f.admin != NULL)
        fx_stop(&f);
}

static void run_script(script_fn fn)
{
    rt_check_run(0, with_admin_main, (void *)fn);
}

/* ------------------------------------------------------------ healthz */

static intptr_t healthz_script(void *arg)
{
    fx *f = arg;
    response r;
    CHECK(cl_get(f->port, GET("/healthz"), &r));
    CHECK(r.status == 200);
    CHECK(strcmp(r.content_type, "application/json") == 0);
    CHECK(r.body && strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    CHECK(r.content_length == 15);
    CHECK(strstr(r.head, "\r\nDate: ") != NULL);
    resp_free(&r);

    atomic_store(&f->draining, true);
    CHECK(cl_get(f->port, GET("/healthz"), &r));
    CHECK(r.status == 503);
    CHECK(strcmp(r.content_type, "application/json") == 0);
    CHECK(r.body && strcmp(r.body, "{\"status\":\"draining\"}") == 0);
    resp_free(&r);
    /* Only /healthz asks. */
    int calls = atomic_load(&f->draining_calls);
    CHECK(cl_get(f->port, GET("/metrics"), &r));
    CHECK(r.status == 200);
    resp_free(&r);
    CHECK(atomic_load(&f->draining_calls) == calls);

    atomic_store(&f->draining, false);
    CHECK(cl_get(f->port, GET("/healthz?verbose=1"), &r));
    CHECK(r.status == 200);
    CHECK(r.body && strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    resp_free(&r);
    return 0;
}

static void test_healthz(void **state)
{
    (void)state;
    run_script(healthz_script);
}

/* No draining callback: always ok. */
static intptr_t no_cb_script(void *arg)
{
    int port = *(int *)arg;
    response r;
    CHECK(cl_get(port, GET("/healthz"), &r));
    CHECK(r.status == 200);
    resp_free(&r);
    return 0;
}

static void no_cb_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    gw_admin_opts o = {.listen = "127.0.0.1:0", .metrics = m};
    gw_admin *a = NULL;
    char err[128];
    CHECK(gw_admin_start(&o, &a, err, sizeof err) == 0);
    if (a != NULL) {
        int port = gw_admin_port(a);
        client(no_cb_script, &port);
        gw_admin_stop(a);
        gw_admin_free(a);
    }
    gw_metrics_free(m);
}

static void test_healthz_no_callback(void **state)
{
    (void)state;
    rt_check_run(0, no_cb_main, NULL);
}

/* ------------------------------------------------------------ metrics */

static intptr_t metrics_script(void *arg)
{
    fx *f = arg;
    response r;
    for (int i = 0; i < 3; i++) {
        CHECK(cl_get(f->port, GET("/metrics"), &r));
        CHECK(r.status == 200);
        CHECK(strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0);
        CHECK(r.content_length >= 0 && (size_t)r.content_length == r.body_len);
        char err[512];
        bool valid =
            r.body && prom_validate(r.body, r.body_len, err, sizeof err);
        if (!valid)
            fprintf(stderr, "invalid exposition: %s\n", err);
        CHECK(valid);
        double v = -1;
        CHECK(r.body &&
              prom_value(
                  r.body,
                  "fanfold_requests_total{route=\"GET /x\",status=\"200\"}",
                  &v) == 1 &&
              v == 1);
        /* Admin connections and requests are not the gateway's. */
        CHECK(r.body &&
              prom_value(r.body, "fanfold_connections_total", &v) == 1 &&
              v == 0);
        CHECK(r.body &&
              prom_value(r.body, "fanfold_inflight_requests", &v) == 1 &&
              v == 0);
        CHECK(r.body && prom_value(r.body, "fanfold_goroutines", &v) == 1 &&
              v >= 2);
        resp_free(&r);
    }
    /* HEAD: the length of what GET would send, no body. */
    conn c;
    CHECK(cl_connect(&c, f->port));
    CHECK(cl_do(&c, "HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &r));
    CHECK(r.status == 200 && r.content_length > 100 && r.body_len == 0);
    CHECK(strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0);
    resp_free(&r);
    CHECK(cl_do(&c, GET("/healthz"), &r)); /* no body bytes came between */
    CHECK(r.status == 200);
    resp_free(&r);
    cl_close(&c);
    return 0;
}

static void metrics_main(void *arg)
{
    (void)arg;
    fx f = {0};
    if (!fx_start(&f))
        return;
    gw_route_metrics *rm = gw_metrics_route(f.metrics, "GET /x");
    gw_metrics_backend(f.metrics, "inventory");
    gw_metrics_request(rm, 200, RT_MSEC);
    client(metrics_script, &f);
    fx_stop(&f);
}

static void test_metrics(void **state)
{
    (void)state;
    rt_check_run(0, metrics_main, NULL);
}

/* --------------------------------------------------------- goroutines */

#define PARKED 500

typedef struct parked {
    rt_chan *ch;
    uint64_t ids[PARKED];
    int line; /* of the rt_go that spawned them */
    rt_waitgroup wg;
    fx f;
} parked;

static void parked_main(void *arg)
{
    parked *p = arg;
    rt_chan_recv(p->ch, NULL, NULL);
    rt_waitgroup_done(&p->wg);
}

/* One block of the dump. */
typedef struct gblock {
    unsigned long long id;
    char state[96];
    char fn[96], file[256];
    int line;
} gblock;

/* Parse a dump strictly: "goroutines: N", then N blocks of
 * "\ngoroutine ID [STATE]:\n\tspawned at FN (FILE:LINE)\n". Returns the
 * number of blocks (they go to out[max]), or -1 where the shape breaks. */
static long parse_dump(const char *s, gblock *out, size_t max, long *n)
{
    char *e;
    if (strncmp(s, "goroutines: ", 12) != 0)
        return -1;
    *n = strtol(s + 12, &e, 10);
    if (e == s + 12 || *e != '\n')
        return -1;
    s = e + 1;
    long k = 0;
    while (*s != '\0') {
        gblock b = {0};
        if (strncmp(s, "\ngoroutine ", 11) != 0)
            return -1;
        s += 11;
        b.id = strtoull(s, &e, 10);
        if (e == s || strncmp(e, " [", 2) != 0)
            return -1;
        s = e + 2;
        const char *close = strstr(s, "]:\n");
        if (close == NULL || memchr(s, '\n', (size_t)(close - s)) != NULL ||
            (size_t)(close - s) >= sizeof b.state)
            return -1;
        memcpy(b.state, s, (size_t)(close - s));
        s = close + 3;
        if (strncmp(s, "\tspawned at ", 12) != 0)
            return -1;
        s += 12;
        const char *eol = strchr(s, '\n');
        if (eol == NULL)
            return -1;
        /* FN (FILE:LINE) */
        const char *lp = strstr(s, " (");
        const char *colon = eol;
        while (colon > s && *colon != ':')
            colon--;
        if (lp == NULL || lp > eol || colon <= lp || eol[-1] != ')' ||
            (size_t)(lp - s) >= sizeof b.fn ||
            (size_t)(colon - lp - 2) >= sizeof b.file)
            return -1;
        memcpy(b.fn, s, (size_t)(lp - s));
        memcpy(b.file, lp + 2, (size_t)(colon - lp - 2));
        b.line = (int)strtol(colon + 1, &e, 10);
        if (e == colon + 1 || e != eol - 1)
            return -1;
        s = eol + 1;
        if ((size_t)k < max)
            out[k] = b;
        k++;
    }
    return k;
}

static gblock blocks[PARKED + 64];

static intptr_t goroutines_script(void *arg)
{
    parked *p = arg;
    response r;
    CHECK(cl_get(p->f.port, GET("/debug/goroutines"), &r));
    CHECK(r.status == 200);
    /* Plain text, not the metrics' exposition format. */
    CHECK(strncmp(r.content_type, "text/plain", 10) == 0);
    CHECK(strstr(r.content_type, "version=0.0.4") == NULL);
    CHECK(r.body_len > 16384); /* more than the first buffer */
    long n = -1;
    long k = r.body ? parse_dump(r.body, blocks,
                                 sizeof blocks / sizeof blocks[0], &n)
                    : -1;
    if (k < 0)
        fprintf(stderr, "not a dump: %.400s\n", r.body ? r.body : "");
    CHECK(k >= 0);
    /* One block per goroutine counted: the test's main, the parked ones,
     * the admin's accept and connection goroutines. */
    CHECK(n == k && n >= PARKED + 3);
    size_t mine = 0, acc = 0, conns = 0;
    for (long i = 0; i < k && (size_t)i < sizeof blocks / sizeof blocks[0];
         i++) {
        gblock *b = &blocks[i];
        for (long j = 0; j < i; j++)
            CHECK(blocks[j].id != b->id);
        if (strcmp(b->fn, "parked_main") == 0) {
            bool known = false;
            for (size_t x = 0; x < PARKED && !known; x++)
                known = p->ids[x] == b->id;
            CHECK(known);
            size_t fl = strlen(b->file);
            CHECK(fl >= 12 && strcmp(b->file + fl - 12, "test_admin.c") == 0);
            CHECK(b->line == p->line);
            CHECK(strcmp(b->state, "waiting, chan receive") == 0);
            mine++;
        } else if (strcmp(b->fn, "accept_main") == 0) {
            acc++;
        } else if (strcmp(b->fn, "conn_main") == 0) {
            conns++;
            CHECK(strncmp(b->state, "running", 7) == 0);
        }
    }
    CHECK(mine == PARKED);
    CHECK(acc == 1);
    CHECK(conns >= 1);
    resp_free(&r);

    /* HEAD: a length, no body. */
    conn c;
    CHECK(cl_connect(&c, p->f.port));
    CHECK(cl_do(&c, "HEAD /debug/goroutines HTTP/1.1\r\nHost: a\r\n\r\n", &r));
    CHECK(r.status == 200 && r.content_length > 16384 && r.body_len == 0);
    resp_free(&r);
    CHECK(cl_do(&c, GET("/healthz"), &r));
    CHECK(r.status == 200);
    resp_free(&r);
    cl_close(&c);
    return 0;
}

static void goroutines_main(void *arg)
{
    (void)arg;
    static parked p;
    memset(&p, 0, sizeof p);
    p.ch = rt_chan_make(sizeof(int), 0);
    CHECK(p.ch != NULL);
    uint64_t before = rt_check_parked();
    rt_waitgroup_add(&p.wg, PARKED);
    for (int i = 0; i < PARKED; i++) {
        p.ids[i] = rt_go(parked_main, &p);
        p.line = __LINE__ - 1;
        CHECK(p.ids[i] != 0);
    }
    rt_check_wait_parked(before + PARKED);
    if (fx_start(&p.f)) {
        client(goroutines_script, &p);
        fx_stop(&p.f);
    }
    rt_chan_close(p.ch);
    rt_waitgroup_wait(&p.wg);
    rt_chan_free(p.ch);
}

static void test_goroutines(void **state)
{
    (void)state;
    rt_check_run(0, goroutines_main, NULL);
}

/* --------------------------------------------------- methods and paths */

static intptr_t methods_script(void *arg)
{
    fx *f = arg;
    response r;
    static const char *const missing[] = {
        GET("/"),
        GET("/nope"),
        GET("/healthz/"),
        GET("/metricsx"),
        GET("/debug/goroutines/x"),
        GET("/HEALTHZ"),
        GET("/debug"),
        "POST /nope HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        CHECK(cl_get(f->port, missing[i], &r));
        if (r.status != 404)
            fprintf(stderr, "%s: %d\n", missing[i], r.status);
        CHECK(r.status == 404);
        CHECK(strcmp(r.content_type, "application/json") == 0);
        CHECK(r.body && strcmp(r.body, "{\"error\":\"not found\"}") == 0);
        resp_free(&r);
    }
    /* 405 with Allow; the body is read, so the connection goes on. */
    conn c;
    CHECK(cl_connect(&c, f->port));
    static const char *const wrong[] = {
        "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        "PUT /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "DELETE /debug/goroutines HTTP/1.1\r\nHost: a\r\n\r\n",
        ("POST /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "\r\n3\r\nabc\r\n0\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        CHECK(cl_do(&c, wrong[i], &r));
        CHECK(r.status == 405);
        CHECK(strcmp(r.allow, "GET, HEAD") == 0);
        CHECK(r.body &&
              strcmp(r.body, "{\"error\":\"method not allowed\"}") == 0);
        CHECK(!r.close);
        resp_free(&r);
    }
    CHECK(cl_do(&c, GET("/healthz"), &r));
    CHECK(r.status == 200);
    resp_free(&r);
    /* HEAD of /healthz: its length, no body, and the next answer right
     * behind it. */
    CHECK(cl_do(&c, "HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n", &r));
    CHECK(r.status == 200 && r.content_length == 15 && r.body_len == 0);
    resp_free(&r);
    CHECK(cl_do(&c, "HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n", &r));
    CHECK(r.status == 404 && r.content_length > 0 && r.body_len == 0);
    resp_free(&r);
    CHECK(cl_do(&c, GET("/healthz"), &r));
    CHECK(r.status == 200 && r.body &&
          strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    resp_free(&r);
    cl_close(&c);
    return 0;
}

static void test_methods_and_paths(void **state)
{
    (void)state;
    run_script(methods_script);
}

/* --------------------------------------------------------- keep-alive */

static intptr_t keepalive_script(void *arg)
{
    fx *f = arg;
    response r;
    conn c;
    /* Two requests, one after the other, on one connection. */
    CHECK(cl_connect(&c, f->port));
    for (int i = 0; i < 2; i++) {
        CHECK(cl_do(&c, i == 0 ? GET("/healthz") : GET("/metrics"), &r));
        CHECK(r.status == 200 && !r.close);
        resp_free(&r);
    }
    /* Three pipelined in one write: three answers, in order. */
    CHECK(cl_sends(&c, GET("/metrics") "HEAD /healthz HTTP/1.1\r\nHost: "
                                       "a\r\n\r\n" GET("/nope")));
    CHECK(cl_response(&c, false, &r));
    CHECK(r.status == 200 && r.body &&
          strncmp(r.body, "# HELP fanfold_", 15) == 0);
    resp_free(&r);
    CHECK(cl_response(&c, true, &r));
    CHECK(r.status == 200 && r.content_length == 15);
    resp_free(&r);
    CHECK(cl_response(&c, false, &r));
    CHECK(r.status == 404);
    resp_free(&r);
    /* Connection: close is honoured: the answer says so, then the end. */
    CHECK(cl_do(&c,
                "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                &r));
    CHECK(r.status == 200 && r.close);
    resp_free(&r);
    CHECK(cl_closed(&c));
    cl_close(&c);
    /* HTTP/1.0 without keep-alive: closed after the answer. */
    CHECK(cl_connect(&c, f->port));
    CHECK(cl_do(&c, "GET /healthz HTTP/1.0\r\n\r\n", &r));
    CHECK(r.status == 200 && r.close);
    resp_free(&r);
    CHECK(cl_closed(&c));
    cl_close(&c);
    return 0;
}

static void test_keepalive(void **state)
{
    (void)state;
    run_script(keepalive_script);
}

/* ---------------------------------------------------------- malformed */

static intptr_t malformed_script(void *arg)
{
    fx *f = arg;
    /* A head of 10000 bytes: the admin's cap is 8 KiB. */
    static char big_header[10001];
    static const char start[] = "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ";
    memcpy(big_header, start, sizeof start - 1);
    memset(big_header + sizeof start - 1, 'x',
           sizeof big_header - sizeof start - 4);
    memcpy(big_header + sizeof big_header - 5, "\r\n\r\n", 5);
    static const struct {
        const char *req;
        int status;
    } bad[] = {
        {"GARBAGE\r\n\r\n", 400},
        {"GET /healthz HTTP/1.1\r\n\r\n", 400}, /* no Host */
        {"GET /healthz HTTP/1.1\nHost: a\n\n", 400},
        {"GET /healthz HTTP/9.9\r\nHost: a\r\n\r\n", 505},
        {big_header, 431},
        {"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
         413},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        conn c;
        response r;
        CHECK(cl_connect(&c, f->port));
        CHECK(cl_sends(&c, bad[i].req));
        CHECK(cl_response(&c, false, &r));
        if (r.status != bad[i].status)
            fprintf(stderr, "bad request %zu: %d, want %d\n", i, r.status,
                    bad[i].status);
        CHECK(r.status == bad[i].status);
        CHECK(r.close);
        CHECK(strcmp(r.content_type, "application/json") == 0);
        resp_free(&r);
        CHECK(cl_closed(&c));
        cl_close(&c);
        /* And the listener serves on. */
        CHECK(cl_get(f->port, GET("/healthz"), &r));
        CHECK(r.status == 200);
        resp_free(&r);
    }
    /* A head far over the cap, sent whole before the answer is read (as
     * a simple client does): the rest is read and dropped, so the client
     * neither fails its send nor loses the 431 to a reset. */
    {
        size_t huge = 512 * 1024; /* under the admin's 1 MiB of lingering */
        char *h = malloc(huge);
        CHECK(h != NULL);
        if (h != NULL) {
            memcpy(h, start, sizeof start - 1);
            memset(h + sizeof start - 1, 'x', huge - (sizeof start - 1));
            conn c;
            response r;
            CHECK(cl_connect(&c, f->port));
            bool sent = cl_send(&c, h, huge);
            if (!sent)
                fprintf(stderr, "huge head: send: %s\n", strerror(errno));
            CHECK(sent);
            bool got = cl_response(&c, false, &r);
            if (!got)
                fprintf(stderr, "huge head: no answer: %s\n", strerror(errno));
            CHECK(got && r.status == 431);
            resp_free(&r);
            cl_close(&c);
            free(h);
        }
    }
    /* A good request, then a bad one on the same connection. */
    conn c;
    response r;
    CHECK(cl_connect(&c, f->port));
    CHECK(cl_do(&c, GET("/healthz"), &r));
    CHECK(r.status == 200);
    resp_free(&r);
    CHECK(cl_do(&c, "BLAH\r\n\r\n", &r));
    CHECK(r.status == 400 && r.close);
    resp_free(&r);
    CHECK(cl_closed(&c));
    cl_close(&c);
    return 0;
}

static void test_malformed(void **state)
{
    (void)state;
    run_script(malformed_script);
}

/* --------------------------------------------------------------- stop */

typedef struct stop_ctx {
    int port;
    conn idle, silent, half;
} stop_ctx;

static intptr_t stop_open_script(void *arg)
{
    stop_ctx *s = arg;
    response r;
    /* Idle after one answer (keep-alive), connected without a byte, and
     * half a request. */
    CHECK(cl_connect(&s->idle, s->port));
    CHECK(cl_do(&s->idle, GET("/healthz"), &r));
    CHECK(r.status == 200 && !r.close);
    resp_free(&r);
    CHECK(cl_connect(&s->silent, s->port));
    CHECK(cl_connect(&s->half, s->port));
    CHECK(cl_sends(&s->half, "GET /heal"));
    /* Each is being served (its goroutine is reading) before the stop:
     * a request on another connection is answered after they were
     * accepted, which the listener does in order. */
    CHECK(cl_get(s->port, GET("/healthz"), &r));
    resp_free(&r);
    return 0;
}

static intptr_t stop_check_script(void *arg)
{
    stop_ctx *s = arg;
    CHECK(cl_closed(&s->idle));
    CHECK(cl_closed(&s->silent));
    CHECK(cl_closed(&s->half));
    cl_close(&s->idle);
    cl_close(&s->silent);
    cl_close(&s->half);
    conn c;
    CHECK(!cl_connect(&c, s->port) && errno == ECONNREFUSED);
    return 0;
}

static void stop_main(void *arg)
{
    (void)arg;
    fx f = {0};
    if (!fx_start(&f))
        return;
    stop_ctx s = {.port = f.port};
    client(stop_open_script, &s);
    int64_t t = rt_now();
    gw_admin_stop(f.admin);
    int64_t took = rt_now() - t;
    CHECK(took < RT_SEC);
    gw_admin_stop(f.admin); /* again: nothing */
    client(stop_check_script, &s);
    gw_admin_free(f.admin);
    gw_admin_free(NULL);
    gw_metrics_free(f.metrics);
}

static void test_stop(void **state)
{
    (void)state;
    rt_check_run(0, stop_main, NULL);
}

/* A connection arriving as the listener stops: the stop stays prompt
 * whichever side of the accept it lands on. */
#define STOP_ROUNDS 100

typedef struct dial {
    int port;
    conn c;
} dial;

static intptr_t connect_script(void *arg)
{
    dial *d = arg;
    if (!cl_connect(&d->c, d->port))
        d->c.fd = -1;
    return 0;
}

static void stop_race_main(void *arg)
{
    (void)arg;
    int64_t worst = 0;
    for (int i = 0; i < STOP_ROUNDS; i++) {
        fx f = {0};
        if (!fx_start(&f))
            return;
        dial d = {.port = f.port};
        client(connect_script, &d);
        if (i % 2 == 1)
            rt_yield(); /* let the accept goroutine run, sometimes */
        int64_t t = rt_now();
        gw_admin_stop(f.admin);
        t = rt_now() - t;
        worst = t > worst ? t : worst;
        gw_admin_free(f.admin);
        gw_metrics_free(f.metrics);
        if (d.c.fd >= 0)
            cl_close(&d.c);
    }
    fprintf(stderr, "stop race: worst stop %lld ms over %d rounds\n",
            (long long)(worst / RT_MSEC), STOP_ROUNDS);
    CHECK(worst < RT_SEC);
}

static void test_stop_race(void **state)
{
    (void)state;
    rt_check_run(0, stop_race_main, NULL);
}

/* ------------------------------------------------------- start errors */

static void start_errors_main(void *arg)
{
    (void)arg;
    gw_metrics *m = NULL;
    CHECK(gw_metrics_new(&m) == 0);
    char err[256] = "";
    gw_admin *a = (gw_admin *)1;
    gw_admin_opts o = {.listen = "not an address", .metrics = m};
    CHECK(gw_admin_start(&o, &a, err, sizeof err) < 0);
    CHECK(a == NULL);
    CHECK(strstr(err, "admin listen not an address") != NULL);

    gw_admin *first = NULL;
    o.listen = "127.0.0.1:0";
    CHECK(gw_admin_start(&o, &first, err, sizeof err) == 0);
    if (first != NULL) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", gw_admin_port(first));
        o.listen = addr;
        a = (gw_admin *)1;
        CHECK(gw_admin_start(&o, &a, err, sizeof err) == -EADDRINUSE);
        CHECK(a == NULL);
        CHECK(strstr(err, addr) != NULL);
        gw_admin_stop(first);
        gw_admin_free(first);
    }
    gw_metrics_free(m);
}

static void test_start_errors(void **state)
{
    (void)state;
    rt_check_run(0, start_errors_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_healthz_no_callback),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_goroutines),
        cmocka_unit_test(test_methods_and_paths),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_stop_race),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
