/*
 * admin.c - the admin listener (see admin.h).
 *
 *   GET /healthz           200 {"status":"ok"}, 503 {"status":"draining"}
 *   GET /metrics           text/plain; version=0.0.4 (metrics.c)
 *   GET /debug/goroutines  text/plain: "goroutines: N", then one block per
 *                          goroutine (the runtime's dump, Go's shape)
 * HEAD works wherever GET does; other methods get 405, other paths 404.
 * Admin requests are not counted in the metrics.
 *
 * Structure: an accept goroutine and a goroutine per connection, with
 * keep-alive (a Prometheus scraper keeps its connection) and the strict
 * parser; requests are small, so limits are fixed: 8 KiB of head, no
 * body beyond 64 KiB, 10 s per request, 60 s idle. A rejected request is
 * answered, then the connection lingers (see linger()). Every connection
 * holds a reference taken under `mu`, so gw_admin_stop can close them
 * all; one accepted once the stop has begun is closed by the acceptor.
 */
#include "admin.h"

#include "http_parse.h"
#include "json.h"
#include "response.h"
#include "rt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_MAX 8192
#define BODY_MAX 65536
#define RBUF 4096
#define REQUEST_TIMEOUT (10 * RT_SEC)
#define IDLE_TIMEOUT (60 * RT_SEC)
#define LINGER_TIME (2 * RT_SEC)
#define LINGER_BYTES (1024 * 1024)

typedef struct aconn aconn;

struct gw_admin {
    gw_admin_opts o;
    rt_conn *ln;
    int port;
    rt_waitgroup wg;
    _Atomic bool stopping;
    rt_mutex mu; /* protects conns */
    aconn *conns;
};

struct aconn {
    gw_admin *a;
    rt_conn *c;
    aconn *prev, *next;
};

/* The runtime's goroutine dump, in a buffer that grows to fit.
 * Caller owns *out. */
static int dump(char **out, size_t *len)
{
    size_t cap = 16384;
    for (int tries = 0; tries < 8; tries++) {
        char *b = malloc(cap);
        if (b == NULL)
            return -ENOMEM;
        size_t need = rt_dump_buf(b, cap);
        if (need < cap) {
            *out = b;
            *len = need;
            return 0;
        }
        free(b);
        cap = need + 4096; /* goroutines come and go: some slack */
    }
    return -EAGAIN;
}

typedef struct answer {
    int status;
    const char *type;
    char *owned; /* freed after the write */
    const char *body;
    size_t len;
    const char *allow;
} answer;

static void serve(gw_admin *a, const gw_http_request *r, answer *ans)
{
    bool get = r->method_id == HTTP_GET, head = r->method_id == HTTP_HEAD;
    const char *p = r->path;
    size_t n = r->path_len;
    bool healthz = n == 8 && memcmp(p, "/healthz", 8) == 0;
    bool metrics = n == 8 && memcmp(p, "/metrics", 8) == 0 &&
                   a->o.metrics != NULL; /* none: not served */
    bool goroutines = n == 17 && memcmp(p, "/debug/goroutines", 17) == 0;
    ans->type = "application/json";
    if (!healthz && !metrics && !goroutines) {
        ans->status = 404;
        ans->body = "{\"error\":\"not found\"}";
    } else if (!get && !head) {
        ans->status = 405;
        ans->allow = "GET, HEAD";
        ans->body = "{\"error\":\"method not allowed\"}";
    } else if (healthz) {
        bool draining =
            a->o.draining != NULL && a->o.draining(a->o.draining_arg);
        ans->status = draining ? 503 : 200;
        ans->body =
            draining ? "{\"status\":\"draining\"}" : "{\"status\":\"ok\"}";
    } else {
        int err = metrics
                      ? gw_metrics_render(a->o.metrics, &ans->owned, &ans->len)
                      : dump(&ans->owned, &ans->len);
        if (err != 0) {
            ans->status = 500;
            ans->body = "{\"error\":\"out of memory\"}";
        } else {
            ans->status = 200;
            ans->type = metrics ? "text/plain; version=0.0.4; charset=utf-8"
                                : "text/plain; charset=utf-8";
            ans->body = ans->owned;
        }
    }
    if (ans->owned == NULL || ans->body != ans->owned)
        ans->len = strlen(ans->body);
}

static int reply(rt_conn *c, const answer *ans, bool head_only, bool close)
{
    char date[30], h[512];
    gw_http_date(date);
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nDate: %s\r\n%s%s%s%s\r\n",
                     ans->status, gw_status_reason(ans->status), ans->type,
                     ans->len, date, ans->allow ? "Allow: " : "",
                     ans->allow ? ans->allow : "", ans->allow ? "\r\n" : "",
                     close ? "Connection: close\r\n" : "");
    struct iovec iov[2] = {{h, (size_t)n}, {(void *)ans->body, ans->len}};
    ssize_t w = rt_conn_writev(c, iov, head_only ? 1 : 2,
                               rt_now() + REQUEST_TIMEOUT, NULL);
    return w < 0 ? (int)w : 0;
}

/*
 * After the answer to a rejected request: send our FIN, then read and
 * drop what the client still sends (the rest of an oversized head, a
 * body) until it closes, for LINGER_TIME and LINGER_BYTES at most.
 * Closing with unread bytes would make the kernel answer them with a
 * reset, which can reach the client before it has read the answer and
 * discard it there (nginx's lingering close).
 */
static void linger(rt_conn *c, char *buf)
{
    if (rt_conn_shutdown(c, SHUT_WR) != 0)
        return;
    int64_t deadline = rt_now() + LINGER_TIME;
    for (size_t n = 0; n < LINGER_BYTES;) {
        ssize_t r = rt_conn_read(c, buf, RBUF, deadline, NULL);
        if (r <= 0)
            return;
        n += (size_t)r;
    }
}

static void conn_main(void *arg)
{
    aconn *ac = arg;
    gw_admin *a = ac->a;
    gw_http_parser p;
    gw_http_limits lim = {.max_header_bytes = HEAD_MAX,
                          .max_body_bytes = BODY_MAX};
    char *buf = malloc(RBUF);
    size_t len = 0;
    if (buf == NULL || gw_http_parser_init(&p, &lim, NULL, NULL) != 0)
        goto out_buf;
    for (bool first = true;; first = false) {
        int64_t deadline = rt_now() + (first ? REQUEST_TIMEOUT : IDLE_TIMEOUT);
        int rc;
        for (;;) {
            size_t used;
            rc = gw_http_parser_feed(&p, buf, len, &used);
            memmove(buf, buf + used, len - used);
            len -= used;
            if (rc != -EAGAIN)
                break;
            ssize_t r =
                rt_conn_read(ac->c, buf + len, RBUF - len, deadline, NULL);
            if (r <= 0)
                goto out;
            len += (size_t)r;
            deadline = rt_now() + REQUEST_TIMEOUT;
        }
        const gw_http_request *req = gw_http_parser_request(&p);
        if (rc != 0 || req == NULL) {
            int st = gw_http_parser_status(&p);
            answer bad = {.status = st != 0 ? st : 400,
                          .type = "application/json",
                          .body = "{\"error\":\"malformed request\"}"};
            bad.len = strlen(bad.body);
            if (reply(ac->c, &bad, false, true) == 0)
                linger(ac->c, buf);
            break;
        }
        answer ans = {0};
        serve(a, req, &ans);
        bool close = !req->keep_alive || atomic_load(&a->stopping);
        int err = reply(ac->c, &ans, req->method_id == HTTP_HEAD, close);
        free(ans.owned);
        gw_http_parser_next(&p);
        if (err != 0 || close)
            break;
    }
out:
    gw_http_parser_free(&p);
out_buf:
    free(buf);
    rt_mutex_lock(&a->mu);
    if (ac->prev != NULL)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next != NULL)
        ac->next->prev = ac->prev;
    rt_mutex_unlock(&a->mu);
    rt_conn_release(ac->c);
    free(ac);
    rt_waitgroup_done(&a->wg);
}

static void accept_main(void *arg)
{
    gw_admin *a = arg;
    for (;;) {
        rt_conn *c;
        int err = rt_accept(a->ln, &c, RT_FOREVER, NULL);
        if (err == -EBADF)
            break;
        if (err != 0) {
            rt_sleep(10 * RT_MSEC); /* out of fds: back off */
            continue;
        }
        aconn *ac = calloc(1, sizeof *ac);
        if (ac == NULL) {
            rt_conn_release(c);
            continue;
        }
        ac->a = a;
        ac->c = c;
        rt_mutex_lock(&a->mu);
        /* Accepted while gw_admin_stop ran: it has walked (or will not
         * see) the list, so this connection is closed here, not left to
         * its request timeout while the stop waits. stopping is set
         * before the stop takes mu. */
        if (atomic_load(&a->stopping)) {
            rt_mutex_unlock(&a->mu);
            rt_conn_release(c);
            free(ac);
            break;
        }
        ac->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = ac;
        a->conns = ac;
        rt_mutex_unlock(&a->mu);
        rt_waitgroup_add(&a->wg, 1);
        if (rt_go(conn_main, ac) == 0) {
            rt_waitgroup_done(&a->wg);
            rt_mutex_lock(&a->mu);
            a->conns = ac->next;
            if (ac->next != NULL)
                ac->next->prev = NULL;
            rt_mutex_unlock(&a->mu);
            rt_conn_release(c);
            free(ac);
        }
    }
    rt_waitgroup_done(&a->wg);
}

int gw_admin_start(const gw_admin_opts *o, gw_admin **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    gw_admin *a = calloc(1, sizeof *a);
    if (a == NULL)
        return -ENOMEM;
    a->o = *o;
    int rc = rt_listen(o->listen, 128, &a->ln);
    if (rc != 0) {
        snprintf(err, errlen, "admin listen %s: %s", o->listen, strerror(-rc));
        free(a);
        return rc;
    }
    a->port = rt_conn_port(a->ln);
    rt_waitgroup_add(&a->wg, 1);
    if (rt_go(accept_main, a) == 0) {
        snprintf(err, errlen, "admin listen %s: no goroutine for the listener",
                 o->listen);
        rt_conn_release(a->ln);
        free(a);
        return -ENOMEM;
    }
    *out = a;
    return 0;
}

int gw_admin_port(const gw_admin *a)
{
    return a->port;
}

void gw_admin_stop(gw_admin *a)
{
    if (a == NULL || atomic_exchange(&a->stopping, true))
        return;
    rt_conn_close(a->ln);
    rt_mutex_lock(&a->mu);
    size_t n = 0;
    for (aconn *ac = a->conns; ac != NULL; ac = ac->next)
        n++;
    rt_conn **cs = calloc(n ? n : 1, sizeof *cs);
    size_t k = 0;
    for (aconn *ac = a->conns; cs != NULL && ac != NULL; ac = ac->next)
        cs[k++] = rt_conn_ref(ac->c);
    rt_mutex_unlock(&a->mu);
    for (size_t i = 0; i < k; i++) {
        rt_conn_close(cs[i]);
        rt_conn_unref(cs[i]);
    }
    free(cs);
    rt_waitgroup_wait(&a->wg);
}

void gw_admin_free(gw_admin *a)
{
    if (a == NULL)
        return;
    gw_admin_stop(a);
    rt_conn_release(a->ln);
    free(a);
}
