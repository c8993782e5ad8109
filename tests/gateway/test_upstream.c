/*
 * test_upstream.c — the upstream clients (gateway/upstream.c and the two
 * behind it) against a small HTTP/1.1 backend written here on the
 * runtime's sockets. The whole suite runs twice, once per client (two
 * cmocka groups, "curl" and "native"; g_client says which): success
 * (status, body, Content-Type, a forwarded header), non-2xx as a status,
 * refused, reset, timeout, cancellation (the backend sees the close),
 * keep-alive reuse, one pool per connect_to address, the body cap (known
 * and unknown length, a Content-Length over it refused unread), the
 * header cap, chunked and close-delimited bodies, HEAD, a 1xx interim
 * answer, a non-HTTP answer, Connection: close and HTTP/1.0, a stale
 * kept-alive connection (closed while idle, or dropped at its next
 * request), a deadline in the middle of the body, 100 concurrent calls,
 * freeing a client with calls in flight, bad arguments, the resolver's
 * round-robin. Native only: the idle pool's caps (per address, idle time,
 * age), no second try for a POST, http:// only, header injection.
 *
 * The backend listens on 127.0.0.1:0, serves each connection in its own
 * goroutine with keep-alive, and understands these query parameters:
 * delay_ms=N (answer after N ms, noticing meanwhile when the client
 * closes), status=N, size=N (a body of N bytes), chunked=1 (no
 * Content-Length; chunks of at most 1000 bytes), close=1 (close without
 * answering), eof=1 (no length: the body ends with the close), bye=1
 * (answer, then close), drop_next=1 (answer; at the next request on that
 * connection close without answering), connclose=1 (answer with
 * Connection: close, then close), v10=1 (an HTTP/1.0 answer without
 * keep-alive; the backend itself keeps the connection), lie_cl=N (a head
 * with Content-Length N, then nothing until the client closes), stall=1
 * (half the body, then nothing until the client closes), interim=1 (a
 * 103 Early Hints first), garbage=1 (a line that is not HTTP, then close),
 * hdrbytes=N (about N bytes of X-Pad header fields). A HEAD gets the
 * head alone. It counts accepted connections and requests, and records
 * when it saw a client close a connection.
 *
 * Checks inside goroutines use CHECK(), which records the first failure;
 * the test asserts after rt_run() returns (a failing cmocka assertion
 * longjmps, which must not happen from a goroutine's stack).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "rt.h"

#include "../rt_check.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

#define run rt_check_run

static int64_t ms_since(int64_t t)
{
    return (rt_now() - t) / RT_MSEC;
}

/* ------------------------------------------------------- test backend */

#define REQ_MAX 8192

typedef struct backend {
    rt_conn *ln;
    int port;
    char addr[32];   /* "127.0.0.1:PORT" for connect_to */
    char base[64];   /* "http://127.0.0.1:PORT" */
    rt_ctx *ctx;     /* cancelled by backend_stop */
    rt_waitgroup wg; /* the accept loop and every connection */
    _Atomic int accepted;
    _Atomic int closes;        /* connections the client closed */
    _Atomic int64_t closed_at; /* rt_now() of the latest such close */
    _Atomic int requests;
} backend;

typedef struct bconn {
    backend *b;
    rt_conn *c;
    bool drop_next; /* close at the next request without answering */
} bconn;

/* The value of query parameter key in target, or def. */
static long query_long(const char *target, const char *key, long def)
{
    const char *q = strchr(target, '?');
    size_t klen = strlen(key);
    while (q != NULL) {
        q++;
        if (strncmp(q, key, klen) == 0 && q[klen] == '=')
            return strtol(q + klen + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return def;
}

/* The value of header name in the head (NUL-terminated), copied to out. */
static bool header_value(const char *head, const char *name, char *out,
                         size_t outlen)
{
    size_t nlen = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p != NULL;
         p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t len = end != NULL ? (size_t)(end - v) : strlen(v);
            if (len >= outlen)
                len = outlen - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

static void client_closed(backend *b)
{
    atomic_store(&b->closed_at, rt_now());
    atomic_fetch_add(&b->closes, 1);
}

static bool send_all(bconn *bc, const char *s, size_t len)
{
    return rt_conn_write(bc->c, s, len, rt_now() + 5 * RT_SEC, bc->b->ctx) ==
           (ssize_t)len;
}

/* Wait (bounded) until the client closes the connection, recording it. */
static void wait_client_close(bconn *bc)
{
    char tmp[256];
    for (;;) {
        ssize_t n = rt_conn_read(bc->c, tmp, sizeof tmp, rt_now() + 5 * RT_SEC,
                                 bc->b->ctx);
        if (n > 0)
            continue;
        if (n == 0 || n == -ECONNRESET)
            client_closed(bc->b);
        return;
    }
}

/* About n bytes of "X-Pad-i: xxx...\r\n" lines; caller frees. */
static char *pad_headers(long n, size_t *len)
{
    char *s = malloc((size_t)n + 128);
    CHECK(s != NULL);
    if (s == NULL)
        return NULL;
    size_t l = 0;
    for (int i = 0; (long)l < n; i++) {
        int k = snprintf(s + l, 40, "X-Pad-%d: ", i);
        l += (size_t)k;
        memset(s + l, 'p', 100);
        l += 100;
        memcpy(s + l, "\r\n", 2);
        l += 2;
    }
    *len = l;
    return s;
}

/* Answer one request (head is NUL-terminated). false: close the conn. */
static bool serve(bconn *bc, const char *head)
{
    char method[16] = "", target[1024] = "";
    sscanf(head, "%15s %1023s", method, target);
    if (bc->drop_next)
        return false;
    long delay = query_long(target, "delay_ms", 0);
    long status = query_long(target, "status", 200);
    long size = query_long(target, "size", -1);
    long hdrbytes = query_long(target, "hdrbytes", 0);
    long lie_cl = query_long(target, "lie_cl", -1);
    bool chunked = query_long(target, "chunked", 0) == 1;
    bool eof = query_long(target, "eof", 0) == 1;
    bool bye = query_long(target, "bye", 0) == 1;
    bool connclose = query_long(target, "connclose", 0) == 1;
    bool v10 = query_long(target, "v10", 0) == 1;
    bool stall = query_long(target, "stall", 0) == 1;
    bool is_head = strcmp(method, "HEAD") == 0;
    if (query_long(target, "close", 0) == 1)
        return false;
    if (query_long(target, "drop_next", 0) == 1)
        bc->drop_next = true;
    if (delay > 0) {
        /* Wait, but notice a client that goes away meanwhile. */
        char tmp[64];
        ssize_t n = rt_conn_read(bc->c, tmp, sizeof tmp,
                                 rt_now() + delay * RT_MSEC, bc->b->ctx);
        if (n != -ETIMEDOUT) {
            if (n == 0 || n == -ECONNRESET)
                client_closed(bc->b);
            return false;
        }
    }
    atomic_fetch_add(&bc->b->requests, 1);
    if (query_long(target, "garbage", 0) == 1) {
        send_all(bc, "SSH-2.0-OpenSSH_9.2\r\n", 21);
        return false;
    }
    if (query_long(target, "interim", 0) == 1 &&
        !send_all(bc, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", 44))
        return false;
    char id[128] = "-";
    header_value(head, "X-Request-Id", id, sizeof id);
    char *body;
    if (size >= 0) {
        body = malloc((size_t)size + 1);
        CHECK(body != NULL);
        if (body == NULL)
            return false;
        memset(body, 'x', (size_t)size);
        body[size] = '\0';
    } else {
        body = strdup("{\"ok\":true}");
        CHECK(body != NULL);
        if (body == NULL)
            return false;
    }
    size_t blen = strlen(body);
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.%d %ld X\r\nContent-Type: application/json\r\n"
                      "X-Echo-Id: %s\r\n%s",
                      v10 ? 0 : 1, status, id,
                      connclose ? "Connection: close\r\n" : "");
    if (chunked)
        hl += snprintf(hdr + hl, sizeof hdr - (size_t)hl,
                       "Transfer-Encoding: chunked\r\n");
    else if (lie_cl >= 0)
        hl += snprintf(hdr + hl, sizeof hdr - (size_t)hl,
                       "Content-Length: %ld\r\n", lie_cl);
    else if (!eof)
        hl += snprintf(hdr + hl, sizeof hdr - (size_t)hl,
                       "Content-Length: %zu\r\n", blen);
    size_t plen = 0;
    char *pad = hdrbytes > 0 ? pad_headers(hdrbytes, &plen) : NULL;
    bool ok = send_all(bc, hdr, (size_t)hl) &&
              (pad == NULL || send_all(bc, pad, plen)) &&
              send_all(bc, "\r\n", 2);
    free(pad);
    if (ok && (lie_cl >= 0 || stall)) {
        if (stall)
            send_all(bc, body, blen / 2);
        wait_client_close(bc);
        free(body);
        return false;
    }
    if (ok && !is_head && chunked) {
        for (size_t off = 0; ok && off < blen; off += 1000) {
            size_t n = blen - off < 1000 ? blen - off : 1000;
            char ch[32];
            int cl = snprintf(ch, sizeof ch, "%zx\r\n", n);
            ok = send_all(bc, ch, (size_t)cl) && send_all(bc, body + off, n) &&
                 send_all(bc, "\r\n", 2);
        }
        ok = ok && send_all(bc, "0\r\n\r\n", 5);
    } else if (ok && !is_head) {
        ok = send_all(bc, body, blen);
    }
    free(body);
    return ok && !eof && !bye && !connclose;
}

static void backend_conn(void *arg)
{
    bconn *bc = arg;
    backend *b = bc->b;
    char buf[REQ_MAX + 1];
    size_t len = 0;
    for (int round = 0; round < 100000; round++) {
        char *end = NULL;
        buf[len] = '\0';
        while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
            if (len == REQ_MAX)
                goto out;
            ssize_t n = rt_conn_read(bc->c, buf + len, REQ_MAX - len,
                                     RT_FOREVER, b->ctx);
            if (n <= 0) {
                if (n == 0 || n == -ECONNRESET)
                    client_closed(b);
                goto out;
            }
            len += (size_t)n;
            buf[len] = '\0';
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char cl[32];
        size_t body_len = 0;
        if (header_value(buf, "Content-Length", cl, sizeof cl))
            body_len = (size_t)strtoul(cl, NULL, 10);
        while (len < head_len + body_len && len < REQ_MAX) {
            ssize_t n = rt_conn_read(bc->c, buf + len, REQ_MAX - len,
                                     RT_FOREVER, b->ctx);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        if (head_len + body_len > len)
            goto out;
        char head[REQ_MAX + 1];
        memcpy(head, buf, head_len);
        head[head_len] = '\0';
        memmove(buf, buf + head_len + body_len, len - head_len - body_len);
        len -= head_len + body_len;
        if (!serve(bc, head))
            break;
    }
out:
    rt_conn_release(bc->c);
    free(bc);
    rt_waitgroup_done(&b->wg);
}

static void backend_accept(void *arg)
{
    backend *b = arg;
    for (;;) {
        rt_conn *c;
        if (rt_accept(b->ln, &c, RT_FOREVER, b->ctx) != 0)
            break;
        atomic_fetch_add(&b->accepted, 1);
        bconn *bc = malloc(sizeof *bc);
        CHECK(bc != NULL);
        if (bc == NULL) {
            rt_conn_release(c);
            continue;
        }
        bc->b = b;
        bc->c = c;
        bc->drop_next = false;
        rt_waitgroup_add(&b->wg, 1);
        rt_go(backend_conn, bc);
    }
    rt_waitgroup_done(&b->wg);
}

static backend *backend_listen(const char *addr)
{
    backend *b = calloc(1, sizeof *b);
    CHECK(b != NULL);
    CHECK(rt_listen(addr, 512, &b->ln) == 0);
    b->port = rt_conn_port(b->ln);
    snprintf(b->addr, sizeof b->addr, "127.0.0.1:%d", b->port);
    snprintf(b->base, sizeof b->base, "http://127.0.0.1:%d", b->port);
    b->ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_waitgroup_add(&b->wg, 1);
    rt_go(backend_accept, b);
    return b;
}

static backend *backend_start(void)
{
    return backend_listen("127.0.0.1:0");
}

static void backend_stop(backend *b)
{
    rt_ctx_cancel(b->ctx);
    rt_waitgroup_wait(&b->wg);
    rt_conn_release(b->ln);
    rt_ctx_release(b->ctx);
    free(b);
}

/* A port of 127.0.0.1 that refuses connections for the rest of this
 * process: bound, never listening. The socket is kept open on purpose (one
 * per call, closed at exit), so that nothing else can take the port: a
 * port bound and closed again is free for anyone, such as a backend of a
 * test running beside this one. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    return ntohs(a.sin_port);
}

/* The client kind the running group tests (its setup sets it). */
static gw_upstream_client g_client;

static gw_upstream *client(size_t max_body, int max_conns)
{
    gw_upstream_opts o = {.client = g_client,
                          .max_response_bytes = max_body,
                          .max_host_connections = max_conns};
    gw_upstream *up = NULL;
    CHECK(gw_upstream_new(&o, &up) == 0);
    return up;
}

/* GET base+path, connecting to b's address; ctx may be NULL. */
static int get(gw_upstream *up, backend *b, const char *path, rt_ctx *ctx,
               gw_upstream_resp *resp)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", b->base, path);
    gw_upstream_req req = {.url = url, .connect_to = b->addr};
    return gw_upstream_do(up, &req, ctx, resp);
}

/* ------------------------------------------------------------ success */

static void success_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    /* The URL names a host that does not resolve: connect_to decides. */
    char url[128];
    snprintf(url, sizeof url, "http://backend.invalid:%d/items/7", b->port);
    const char *hdrs[] = {"X-Request-Id: req-42"};
    gw_upstream_req req = {
        .url = url, .headers = hdrs, .nheaders = 1, .connect_to = b->addr};
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 5 * RT_SEC);
    int rc = gw_upstream_do(up, &req, ctx, &resp);
    CHECK(rc == 0);
    CHECK(resp.status == 200);
    CHECK(resp.body != NULL && strcmp(resp.body, "{\"ok\":true}") == 0);
    CHECK(resp.body_len == strlen("{\"ok\":true}"));
    const char *ct = gw_upstream_resp_header(&resp, "content-type");
    CHECK(ct != NULL && strcmp(ct, "application/json") == 0);
    const char *echo = gw_upstream_resp_header(&resp, "X-Echo-Id");
    CHECK(echo != NULL && strcmp(echo, "req-42") == 0);
    CHECK(gw_upstream_resp_header(&resp, "X-Missing") == NULL);
    gw_upstream_resp_free(&resp);
    CHECK(resp.body == NULL && resp.headers == NULL);

    /* A POST with a body, no ctx at all. */
    req.method = "POST";
    req.body = "{\"q\":1}";
    req.body_len = 7;
    rc = gw_upstream_do(up, &req, NULL, &resp);
    CHECK(rc == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);

    rt_ctx_release(ctx);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_success(void **state)
{
    (void)state;
    run(2, success_main, NULL);
}

/* A non-2xx answer is a status, not an error. */
static void status_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    gw_upstream_resp resp;
    CHECK(get(up, b, "/x?status=503", NULL, &resp) == 0);
    CHECK(resp.status == 503);
    CHECK(strcmp(resp.body, "{\"ok\":true}") == 0);
    gw_upstream_resp_free(&resp);
    CHECK(get(up, b, "/x?status=404&size=0", NULL, &resp) == 0);
    CHECK(resp.status == 404 && resp.body_len == 0 && resp.body != NULL);
    gw_upstream_resp_free(&resp);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_non_2xx_status(void **state)
{
    (void)state;
    run(2, status_main, NULL);
}

/* ------------------------------------------------------------- errors */

static void refused_main(void *arg)
{
    (void)arg;
    gw_upstream *up = client(0, 4);
    char addr[32], url[64];
    int port = closed_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    gw_upstream_req req = {.url = url, .connect_to = addr};
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 5 * RT_SEC);
    int64_t t0 = rt_now();
    int rc = gw_upstream_do(up, &req, ctx, &resp);
    CHECK(rc == -ECONNREFUSED);
    CHECK(ms_since(t0) < 500);
    CHECK(resp.body == NULL && resp.status == 0);
    /* Without connect_to, libcurl connects to the numeric URL host. */
    req.connect_to = NULL;
    CHECK(gw_upstream_do(up, &req, ctx, &resp) == -ECONNREFUSED);
    rt_ctx_release(ctx);
    gw_upstream_free(up);
}

static void test_refused(void **state)
{
    (void)state;
    run(2, refused_main, NULL);
}

/* The backend closes without answering: "unavailable" as a reset. */
static void reset_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    gw_upstream_resp resp;
    CHECK(get(up, b, "/x?close=1", NULL, &resp) == -ECONNRESET);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_reset(void **state)
{
    (void)state;
    run(2, reset_main, NULL);
}

static void timeout_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 100 * RT_MSEC);
    int64_t t0 = rt_now();
    int rc = get(up, b, "/slow?delay_ms=500", ctx, &resp);
    int64_t ms = ms_since(t0);
    CHECK(rc == -ETIMEDOUT);
    CHECK(ms >= 95 && ms < 300);
    rt_ctx_release(ctx);
    /* The backend sees that connection go away (within its delay). */
    for (int i = 0; i < 100 && atomic_load(&b->closes) == 0; i++)
        rt_sleep(10 * RT_MSEC);
    CHECK(atomic_load(&b->closes) == 1);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_timeout(void **state)
{
    (void)state;
    run(2, timeout_main, NULL);
}

static void too_large_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(1000, 4);
    gw_upstream_resp resp;
    /* Exactly the cap is fine, with and without Content-Length. */
    CHECK(get(up, b, "/x?size=1000", NULL, &resp) == 0);
    CHECK(resp.body_len == 1000);
    gw_upstream_resp_free(&resp);
    CHECK(get(up, b, "/x?size=1000&chunked=1", NULL, &resp) == 0);
    CHECK(resp.body_len == 1000 && resp.body[999] == 'x');
    gw_upstream_resp_free(&resp);
    /* One byte more is "too large": known length, then streamed. */
    CHECK(get(up, b, "/x?size=1001", NULL, &resp) == -EFBIG);
    CHECK(resp.body == NULL);
    CHECK(get(up, b, "/x?size=50000&chunked=1", NULL, &resp) == -EFBIG);
    /* The client still works afterwards. */
    CHECK(get(up, b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_too_large(void **state)
{
    (void)state;
    run(2, too_large_main, NULL);
}

static void bad_args_main(void *arg)
{
    (void)arg;
    gw_upstream *up = client(0, 4);
    gw_upstream_resp resp;
    const char *bad[] = {"localhost:80",    "127.0.0.1", "127.0.0.1:0",
                         "127.0.0.1:99999", "[::1:80",   "1.2.3.4:80x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_upstream_req req = {.url = "http://x/", .connect_to = bad[i]};
        CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    }
    gw_upstream_req req = {.url = "ftp://127.0.0.1/"};
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.url = NULL;
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    /* A context that is already done: its error, at once. */
    rt_ctx *ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_ctx_cancel(ctx);
    req.url = "http://127.0.0.1:1/";
    CHECK(gw_upstream_do(up, &req, ctx, &resp) == -ECANCELED);
    rt_ctx_release(ctx);
    CHECK(strcmp(gw_upstream_strerror(-EFBIG), "response too large") == 0);
    gw_upstream_free(up);
}

static void test_bad_args(void **state)
{
    (void)state;
    run(1, bad_args_main, NULL);
}

/* ------------------------------------------------------- cancellation */

typedef struct canceller {
    rt_ctx *ctx;
    int64_t after;
    _Atomic int64_t at; /* when it cancelled */
    rt_waitgroup wg;
} canceller;

static void cancel_later(void *arg)
{
    canceller *k = arg;
    rt_sleep(k->after);
    atomic_store(&k->at, rt_now());
    rt_ctx_cancel(k->ctx);
    rt_waitgroup_done(&k->wg);
}

/* One attempt; returns true when the timing held. */
static bool cancel_attempt(gw_upstream *up, backend *b, int *rc_out)
{
    int closes_before = atomic_load(&b->closes);
    canceller k = {.ctx = rt_ctx_with_cancel(rt_ctx_background()),
                   .after = 50 * RT_MSEC};
    rt_waitgroup_add(&k.wg, 1);
    rt_go(cancel_later, &k);
    gw_upstream_resp resp;
    *rc_out = get(up, b, "/slow?delay_ms=1000", k.ctx, &resp);
    int64_t returned = rt_now();
    /* Wait (bounded) for the backend to notice the close. */
    for (int i = 0; i < 200 && atomic_load(&b->closes) == closes_before; i++)
        rt_sleep(5 * RT_MSEC);
    rt_waitgroup_wait(&k.wg);
    int64_t at = atomic_load(&k.at);
    bool seen = atomic_load(&b->closes) == closes_before + 1;
    int64_t close_lag = (atomic_load(&b->closed_at) - at) / RT_MSEC;
    int64_t return_lag = (returned - at) / RT_MSEC;
    rt_ctx_release(k.ctx);
    if (!(seen && close_lag < 50 && return_lag < 50))
        fprintf(stderr,
                "cancel: seen %d close_lag %lld ms return_lag %lld "
                "ms\n",
                seen, (long long)close_lag, (long long)return_lag);
    return seen && close_lag < 50 && return_lag < 50;
}

static void cancel_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    int rc;
    bool ok = cancel_attempt(up, b, &rc);
    CHECK(rc == -ECANCELED);
    if (!ok) /* timing on a loaded machine: once more */
        ok = cancel_attempt(up, b, &rc);
    CHECK(ok);
    CHECK(rc == -ECANCELED);
    /* The cancelled connection is gone: the next call opens a new one. */
    int before = atomic_load(&b->accepted);
    gw_upstream_resp resp;
    CHECK(get(up, b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&b->accepted) == before + 1);
    gw_upstream_stats st;
    gw_upstream_stats_get(up, &st);
    CHECK(st.cancelled >= 1);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_cancel(void **state)
{
    (void)state;
    run(2, cancel_main, NULL);
}

/* Freeing the client fails the calls in flight with -ECANCELED. */
typedef struct inflight {
    gw_upstream *up;
    backend *b;
    rt_waitgroup wg;
    _Atomic int cancelled;
} inflight;

static void inflight_call(void *arg)
{
    inflight *f = arg;
    gw_upstream_resp resp;
    int rc = get(f->up, f->b, "/slow?delay_ms=2000", NULL, &resp);
    if (rc == -ECANCELED)
        atomic_fetch_add(&f->cancelled, 1);
    rt_waitgroup_done(&f->wg);
}

static void free_inflight_main(void *arg)
{
    (void)arg;
    inflight f = {.b = backend_start(), .up = client(0, 8)};
    for (int i = 0; i < 4; i++) {
        rt_waitgroup_add(&f.wg, 1);
        rt_go(inflight_call, &f);
    }
    for (int i = 0; i < 200 && atomic_load(&f.b->accepted) < 4; i++)
        rt_sleep(5 * RT_MSEC);
    int64_t t0 = rt_now();
    gw_upstream_free(f.up);
    CHECK(ms_since(t0) < 500);
    rt_waitgroup_wait(&f.wg);
    CHECK(atomic_load(&f.cancelled) == 4);
    backend_stop(f.b);
}

static void test_free_inflight(void **state)
{
    (void)state;
    run(2, free_inflight_main, NULL);
}

/* ----------------------------------------------------- reuse, concurrency */

static void reuse_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = client(0, 4);
    for (int i = 0; i < 20; i++) {
        gw_upstream_resp resp;
        CHECK(get(up, b, "/x", NULL, &resp) == 0 && resp.status == 200);
        gw_upstream_resp_free(&resp);
    }
    CHECK(atomic_load(&b->accepted) == 1);
    CHECK(atomic_load(&b->requests) == 20);
    gw_upstream_stats st;
    gw_upstream_stats_get(up, &st);
    CHECK(st.calls == 20 && st.connects == 1);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_reuse(void **state)
{
    (void)state;
    run(2, reuse_main, NULL);
}

/* connect_to picks the address; libcurl pools per address, so rotating
 * between two addresses of one URL host keeps one connection each. */
static void addresses_main(void *arg)
{
    (void)arg;
    backend *b = backend_listen(":0"); /* all interfaces */
    gw_upstream *up = client(0, 4);
    char url[64], addr[2][32];
    snprintf(url, sizeof url, "http://backend.test:%d/x", b->port);
    for (int i = 0; i < 2; i++)
        snprintf(addr[i], sizeof addr[i], "127.0.0.%d:%d", i + 1, b->port);
    for (int i = 0; i < 10; i++) {
        gw_upstream_req req = {.url = url, .connect_to = addr[i % 2]};
        gw_upstream_resp resp;
        CHECK(gw_upstream_do(up, &req, NULL, &resp) == 0);
        CHECK(resp.status == 200);
        gw_upstream_resp_free(&resp);
    }
    CHECK(atomic_load(&b->accepted) == 2);
    CHECK(atomic_load(&b->requests) == 10);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_addresses(void **state)
{
    (void)state;
    run(2, addresses_main, NULL);
}

#define NCONC 100

typedef struct conc {
    gw_upstream *up;
    backend *b;
    rt_waitgroup wg;
    _Atomic int ok;
} conc;

static void conc_call(void *arg)
{
    conc *k = arg;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 10 * RT_SEC);
    gw_upstream_resp resp;
    int rc = get(k->up, k->b, "/x?delay_ms=20", ctx, &resp);
    if (rc == 0 && resp.status == 200 &&
        strcmp(resp.body, "{\"ok\":true}") == 0)
        atomic_fetch_add(&k->ok, 1);
    else
        fprintf(stderr, "concurrent call: rc %d status %d\n", rc, resp.status);
    gw_upstream_resp_free(&resp);
    rt_ctx_release(ctx);
    rt_waitgroup_done(&k->wg);
}

static void concurrent_main(void *arg)
{
    (void)arg;
    conc k = {.b = backend_start(), .up = client(0, 256)};
    for (int i = 0; i < NCONC; i++) {
        rt_waitgroup_add(&k.wg, 1);
        rt_go(conc_call, &k);
    }
    rt_waitgroup_wait(&k.wg);
    CHECK(atomic_load(&k.ok) == NCONC);
    CHECK(atomic_load(&k.b->accepted) <= NCONC);
    gw_upstream_free(k.up);
    backend_stop(k.b);
}

static void test_concurrent(void **state)
{
    (void)state;
    run(2, concurrent_main, NULL);
}

/* ---------------------------------------------- addresses from c-ares */

/*
 * A one-name DNS server on loopback UDP: an A query for backend.test is
 * answered with 127.0.0.2 and 127.0.0.1 (in that order, TTL 60 s), its
 * other types with no answers, any other name with NXDOMAIN. Enough for c-ares;
 * the DNS adapter's own tests cover the rest.
 */
typedef struct tiny_dns {
    int fd;
    int port;
    rt_ctx *ctx; /* cancelled to stop */
    rt_waitgroup wg;
    _Atomic int queries;
} tiny_dns;

static void tiny_dns_loop(void *arg)
{
    tiny_dns *d = arg;
    uint8_t q[512], a[600];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n =
            recvfrom(d->fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) {
            if (errno == EAGAIN &&
                rt_fd_wait(d->fd, RT_READ, RT_FOREVER, d->ctx) == 0)
                continue;
            break;
        }
        if (n < 17)
            continue;
        size_t i = 12; /* the question: labels, then type and class */
        while (i < (size_t)n && q[i] != 0)
            i += (size_t)q[i] + 1;
        if (i + 5 > (size_t)n)
            continue;
        size_t qend = i + 5;
        int qtype = q[i + 1] << 8 | q[i + 2];
        static const char ours[] = "\x07"
                                   "backend"
                                   "\x04"
                                   "test";
        bool known = i - 12 == sizeof ours - 1 &&
                     strncasecmp((const char *)q + 12, ours, i - 12) == 0;
        atomic_fetch_add(&d->queries, 1);
        memcpy(a, q, qend);
        a[2] = 0x81;                /* QR, RD */
        a[3] = known ? 0x80 : 0x83; /* RA, NOERROR or NXDOMAIN */
        a[4] = 0, a[5] = 1;
        a[6] = 0, a[7] = known && qtype == 1 ? 2 : 0;
        memset(a + 8, 0, 4); /* no authority, no additional (EDNS) */
        size_t len = qend;
        for (int k = 0; known && qtype == 1 && k < 2; k++) {
            const uint8_t rr[] = {
                0xc0, 0x0c, 0, 1, 0,   1, 0, 0,
                0,    60,   0, 4, 127, 0, 0, (uint8_t)(k == 0 ? 2 : 1)};
            memcpy(a + len, rr, sizeof rr);
            len += sizeof rr;
        }
        sendto(d->fd, a, len, 0, (struct sockaddr *)&from, fl);
    }
    rt_waitgroup_done(&d->wg);
}

static void tiny_dns_start(tiny_dns *d)
{
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(d->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    CHECK(bind(d->fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(getsockname(d->fd, (struct sockaddr *)&sa, &sl) == 0);
    d->port = ntohs(sa.sin_port);
    CHECK(rt_fd_register(d->fd) == 0);
    d->ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_waitgroup_add(&d->wg, 1);
    rt_go(tiny_dns_loop, d);
}

static void tiny_dns_stop(tiny_dns *d)
{
    rt_ctx_cancel(d->ctx);
    rt_waitgroup_wait(&d->wg);
    rt_fd_unregister(d->fd);
    close(d->fd);
    rt_ctx_release(d->ctx);
}

typedef struct resolved {
    bool all_interfaces; /* backend on 0.0.0.0: both addresses answer */
} resolved;

/*
 * "backend.test" has two addresses. With the backend on every interface
 * the calls alternate between them (two connections); with the backend on
 * 127.0.0.1 alone, 127.0.0.2 refuses and each such call retries on the
 * next address, so every call still succeeds.
 */
static void resolver_main(void *arg)
{
    resolved *rs = arg;
    tiny_dns d = {0};
    tiny_dns_start(&d);
    char server[32];
    snprintf(server, sizeof server, "127.0.0.1:%d", d.port);
    const char *servers[] = {server};
    gw_dns_config cfg = {.servers = servers, .nservers = 1};
    gw_resolver *r = NULL;
    CHECK(gw_resolver_new(&cfg, &r) == 0);
    backend *b = backend_listen(rs->all_interfaces ? ":0" : "127.0.0.1:0");
    gw_upstream_opts o = {
        .client = g_client, .max_host_connections = 4, .resolver = r};
    gw_upstream *up = NULL;
    CHECK(gw_upstream_new(&o, &up) == 0);
    char url[64];
    snprintf(url, sizeof url, "http://backend.test:%d/x", b->port);
    for (int i = 0; i < 10; i++) {
        gw_upstream_req req = {.url = url};
        gw_upstream_resp resp;
        rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 2 * RT_SEC);
        CHECK(gw_upstream_do(up, &req, ctx, &resp) == 0);
        CHECK(resp.status == 200);
        gw_upstream_resp_free(&resp);
        rt_ctx_release(ctx);
    }
    CHECK(atomic_load(&b->requests) == 10);
    if (rs->all_interfaces)
        CHECK(atomic_load(&b->accepted) == 2);
    else
        CHECK(atomic_load(&b->accepted) == 1);
    /* The TTL cache: one lookup (A + AAAA) for the ten calls. */
    int queries = atomic_load(&d.queries);
    CHECK(queries <= 2);

    /* A name the server cannot give an address for is "unavailable". */
    gw_upstream_req bad = {.url = "http://no-such.invalid/x"};
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 2 * RT_SEC);
    CHECK(gw_upstream_do(up, &bad, ctx, &resp) == -EHOSTUNREACH);
    rt_ctx_release(ctx);

    gw_upstream_free(up);
    backend_stop(b);
    gw_resolver_free(r);
    tiny_dns_stop(&d);
}

static void test_resolver_round_robin(void **state)
{
    (void)state;
    resolved rs = {.all_interfaces = true};
    run(2, resolver_main, &rs);
}

static void test_resolver_refused_tries_next(void **state)
{
    (void)state;
    resolved rs = {.all_interfaces = false};
    run(2, resolver_main, &rs);
}

/* ------------------------------------------------ framing and caps */

/* A fresh client against a fresh backend for the tests below. */
typedef struct fixture {
    backend *b;
    gw_upstream *up;
} fixture;

static fixture fixture_start(size_t max_body)
{
    fixture f = {.b = backend_start(), .up = client(max_body, 4)};
    return f;
}

static void fixture_stop(fixture *f)
{
    gw_upstream_free(f->up);
    backend_stop(f->b);
}

/* Wait (bounded) until the backend has seen n closes. */
static bool wait_closes(backend *b, int n)
{
    for (int i = 0; i < 200 && atomic_load(&b->closes) < n; i++)
        rt_sleep(5 * RT_MSEC);
    return atomic_load(&b->closes) >= n;
}

/* Chunked (several chunks) and close-delimited bodies. */
static void bodies_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?size=5500&chunked=1", NULL, &resp) == 0);
    CHECK(resp.status == 200 && resp.body_len == 5500);
    CHECK(resp.body[0] == 'x' && resp.body[5499] == 'x' &&
          resp.body[5500] == '\0');
    CHECK(gw_upstream_resp_header(&resp, "Content-Length") == NULL);
    gw_upstream_resp_free(&resp);
    /* The chunked answer leaves the connection reusable. */
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 1);
    /* A body delimited by the close: whole, and the next call dials. */
    CHECK(get(f.up, f.b, "/x?size=3000&eof=1", NULL, &resp) == 0);
    CHECK(resp.body_len == 3000 && resp.body[2999] == 'x');
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x?eof=1", NULL, &resp) == 0);
    CHECK(strcmp(resp.body, "{\"ok\":true}") == 0);
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 3);
    /* A large body with a length, read in many pieces. */
    CHECK(get(f.up, f.b, "/x?size=200000", NULL, &resp) == 0);
    CHECK(resp.body_len == 200000 && resp.body[199999] == 'x');
    gw_upstream_resp_free(&resp);
    fixture_stop(&f);
}

static void test_bodies(void **state)
{
    (void)state;
    run(2, bodies_main, NULL);
}

/* A Content-Length over the cap fails at the head: the body (which never
 * comes) is not waited for. The client closes that connection. */
static void length_over_cap_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(1000);
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 5 * RT_SEC);
    int64_t t0 = rt_now();
    CHECK(get(f.up, f.b, "/x?lie_cl=100000000", ctx, &resp) == -EFBIG);
    CHECK(ms_since(t0) < 1000);
    CHECK(resp.body == NULL);
    CHECK(wait_closes(f.b, 1));
    CHECK(get(f.up, f.b, "/x?lie_cl=1001", ctx, &resp) == -EFBIG);
    CHECK(get(f.up, f.b, "/x", ctx, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    rt_ctx_release(ctx);
    fixture_stop(&f);
}

static void test_length_over_cap(void **state)
{
    (void)state;
    run(2, length_over_cap_main, NULL);
}

/* The header section's cap (64 KiB). */
static void header_cap_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?hdrbytes=30000", NULL, &resp) == 0);
    CHECK(resp.status == 200 && resp.nheaders > 250);
    const char *pad = gw_upstream_resp_header(&resp, "X-Pad-7");
    CHECK(pad != NULL && strlen(pad) == 100 && pad[99] == 'p');
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x?hdrbytes=70000", NULL, &resp) == -EFBIG);
    CHECK(resp.headers == NULL && resp.body == NULL);
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    fixture_stop(&f);
}

static void test_header_cap(void **state)
{
    (void)state;
    run(2, header_cap_main, NULL);
}

/* An answer that is not HTTP. */
static void not_http_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?garbage=1", NULL, &resp) == -EPROTO);
    CHECK(resp.body == NULL && resp.status == 0);
    fixture_stop(&f);
}

static void test_not_http(void **state)
{
    (void)state;
    run(2, not_http_main, NULL);
}

/* HEAD: the head alone, Content-Length as for GET; the connection stays. */
static void head_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    char url[128];
    snprintf(url, sizeof url, "%s/x?size=500", f.b->base);
    gw_upstream_req req = {
        .method = "HEAD", .url = url, .connect_to = f.b->addr};
    gw_upstream_resp resp;
    CHECK(gw_upstream_do(f.up, &req, NULL, &resp) == 0);
    CHECK(resp.status == 200 && resp.body_len == 0 && resp.body != NULL);
    const char *cl = gw_upstream_resp_header(&resp, "content-length");
    CHECK(cl != NULL && strcmp(cl, "500") == 0);
    gw_upstream_resp_free(&resp);
    /* A HEAD of an answer larger than the cap is fine: no body comes. */
    gw_upstream *small = client(100, 4);
    CHECK(gw_upstream_do(small, &req, NULL, &resp) == 0);
    CHECK(resp.status == 200 && resp.body_len == 0);
    gw_upstream_resp_free(&resp);
    gw_upstream_free(small);
    CHECK(get(f.up, f.b, "/x?size=500", NULL, &resp) == 0);
    CHECK(resp.body_len == 500);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->requests) == 3);
    fixture_stop(&f);
}

static void test_head(void **state)
{
    (void)state;
    run(2, head_main, NULL);
}

/* A 1xx interim answer is skipped; only the final answer's fields stay. */
static void interim_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?interim=1&status=201", NULL, &resp) == 0);
    CHECK(resp.status == 201);
    CHECK(strcmp(resp.body, "{\"ok\":true}") == 0);
    CHECK(gw_upstream_resp_header(&resp, "Link") == NULL);
    CHECK(gw_upstream_resp_header(&resp, "Content-Type") != NULL);
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 1);
    fixture_stop(&f);
}

static void test_interim(void **state)
{
    (void)state;
    run(2, interim_main, NULL);
}

/* Connection: close, and HTTP/1.0 without keep-alive: not reused. */
static void no_keepalive_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?connclose=1", NULL, &resp) == 0);
    CHECK(resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x?v10=1", NULL, &resp) == 0);
    CHECK(resp.status == 200 && strcmp(resp.body, "{\"ok\":true}") == 0);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 2);
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 3);
    /* The client closed the HTTP/1.0 connection the backend kept. */
    CHECK(wait_closes(f.b, 1));
    fixture_stop(&f);
}

static void test_no_keepalive(void **state)
{
    (void)state;
    run(2, no_keepalive_main, NULL);
}

/*
 * A kept-alive connection the backend closed while it was idle: noticed
 * before use (the poller saw the hang-up), so the call dials a new one.
 */
static void stale_closed_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?bye=1", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    rt_sleep(50 * RT_MSEC); /* the FIN arrives, the poller sees it */
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 2);
    CHECK(atomic_load(&f.b->requests) == 2);
    /* The same without the pause: noticed, or retried once. */
    CHECK(get(f.up, f.b, "/x?bye=1", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    CHECK(get(f.up, f.b, "/x", NULL, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 3);
    CHECK(atomic_load(&f.b->requests) == 4);
    gw_upstream_stats st;
    gw_upstream_stats_get(f.up, &st);
    CHECK(st.connects == 3);
    fixture_stop(&f);
}

static void test_stale_closed(void **state)
{
    (void)state;
    run(2, stale_closed_main, NULL);
}

/* A kept-alive connection that dies at its next request (the backend
 * closes without answering): a GET is sent again on a fresh connection. */
static void stale_dropped_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 5 * RT_SEC);
    for (int i = 0; i < 3; i++) {
        CHECK(get(f.up, f.b, "/x?drop_next=1", ctx, &resp) == 0);
        gw_upstream_resp_free(&resp);
    }
    CHECK(atomic_load(&f.b->accepted) == 3);
    CHECK(atomic_load(&f.b->requests) == 3);
    CHECK(get(f.up, f.b, "/x", ctx, &resp) == 0 && resp.status == 200);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&f.b->accepted) == 4);
    rt_ctx_release(ctx);
    fixture_stop(&f);
}

static void test_stale_dropped(void **state)
{
    (void)state;
    run(2, stale_dropped_main, NULL);
}

/* The deadline passes in the middle of the body: -ETIMEDOUT at the
 * deadline, and the backend sees the connection close. */
static void deadline_mid_body_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    rt_ctx *ctx = rt_ctx_with_timeout(rt_ctx_background(), 150 * RT_MSEC);
    int64_t t0 = rt_now();
    CHECK(get(f.up, f.b, "/x?size=10000&stall=1", ctx, &resp) == -ETIMEDOUT);
    int64_t ms = ms_since(t0);
    CHECK(ms >= 145 && ms < 400);
    CHECK(resp.body == NULL);
    rt_ctx_release(ctx);
    CHECK(wait_closes(f.b, 1));
    int64_t lag = (atomic_load(&f.b->closed_at) - t0) / RT_MSEC - ms;
    CHECK(lag < 100);
    fixture_stop(&f);
}

static void test_deadline_mid_body(void **state)
{
    (void)state;
    run(2, deadline_mid_body_main, NULL);
}

/* --------------------------------------------------------- native only */

static gw_upstream *native_client(gw_upstream_opts o)
{
    o.client = GW_UPSTREAM_NATIVE;
    gw_upstream *up = NULL;
    CHECK(gw_upstream_new(&o, &up) == 0);
    return up;
}

typedef struct par {
    gw_upstream *up;
    backend *b;
    const char *path;
    rt_waitgroup wg;
    _Atomic int ok;
} par;

static void par_call(void *arg)
{
    par *k = arg;
    gw_upstream_resp resp;
    if (get(k->up, k->b, k->path, NULL, &resp) == 0 && resp.status == 200)
        atomic_fetch_add(&k->ok, 1);
    gw_upstream_resp_free(&resp);
    rt_waitgroup_done(&k->wg);
}

/* At most max_idle_connections idle per address; the rest are closed. */
static void idle_cap_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    par k = {.b = b,
             .path = "/x?delay_ms=50",
             .up = native_client((gw_upstream_opts){
                 .max_idle_connections = 2, .max_host_connections = 8})};
    for (int i = 0; i < 5; i++) {
        rt_waitgroup_add(&k.wg, 1);
        rt_go(par_call, &k);
    }
    rt_waitgroup_wait(&k.wg);
    CHECK(atomic_load(&k.ok) == 5);
    CHECK(atomic_load(&b->accepted) == 5);
    CHECK(wait_closes(b, 3));
    rt_sleep(20 * RT_MSEC);
    CHECK(atomic_load(&b->closes) == 3);
    /* Two calls now reuse the two idle connections. */
    for (int i = 0; i < 2; i++) {
        gw_upstream_resp resp;
        CHECK(get(k.up, b, "/x", NULL, &resp) == 0);
        gw_upstream_resp_free(&resp);
    }
    CHECK(atomic_load(&b->accepted) == 5);
    gw_upstream_free(k.up);
    backend_stop(b);
}

static void test_native_idle_cap(void **state)
{
    (void)state;
    run(2, idle_cap_main, NULL);
}

/* Idle longer than idle_timeout_ms, or older than max_connection_age_ms:
 * closed instead of reused. */
static void idle_time_main(void *arg)
{
    (void)arg;
    backend *b = backend_start();
    gw_upstream *up = native_client((gw_upstream_opts){.idle_timeout_ms = 60});
    gw_upstream_resp resp;
    CHECK(get(up, b, "/x", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    rt_sleep(20 * RT_MSEC);
    CHECK(get(up, b, "/x", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&b->accepted) == 1);
    rt_sleep(100 * RT_MSEC);
    CHECK(get(up, b, "/x", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    CHECK(atomic_load(&b->accepted) == 2);
    CHECK(wait_closes(b, 1));
    gw_upstream_free(up);

    int before = atomic_load(&b->accepted);
    up = native_client((gw_upstream_opts){.max_connection_age_ms = 100});
    int64_t t0 = rt_now();
    while (ms_since(t0) < 350) {
        CHECK(get(up, b, "/x", NULL, &resp) == 0);
        gw_upstream_resp_free(&resp);
        rt_sleep(10 * RT_MSEC);
    }
    int made = atomic_load(&b->accepted) - before;
    CHECK(made >= 3 && made <= 5);
    gw_upstream_free(up);
    backend_stop(b);
}

static void test_native_idle_time(void **state)
{
    (void)state;
    run(2, idle_time_main, NULL);
}

/* A POST on a connection that dies is not sent twice. */
static void no_retry_post_main(void *arg)
{
    (void)arg;
    fixture f = fixture_start(0);
    gw_upstream_resp resp;
    CHECK(get(f.up, f.b, "/x?drop_next=1", NULL, &resp) == 0);
    gw_upstream_resp_free(&resp);
    char url[128];
    snprintf(url, sizeof url, "%s/x", f.b->base);
    gw_upstream_req req = {.method = "POST",
                           .url = url,
                           .connect_to = f.b->addr,
                           .body = "{}",
                           .body_len = 2};
    CHECK(gw_upstream_do(f.up, &req, NULL, &resp) == -ECONNRESET);
    CHECK(atomic_load(&f.b->accepted) == 1);
    CHECK(gw_upstream_do(f.up, &req, NULL, &resp) == 0);
    CHECK(resp.status == 200);
    gw_upstream_resp_free(&resp);
    fixture_stop(&f);
}

static void test_native_no_retry_post(void **state)
{
    (void)state;
    run(2, no_retry_post_main, NULL);
}

/* What the native client refuses: https, bad header lines and methods,
 * a name without a resolver. */
static void native_refuses_main(void *arg)
{
    (void)arg;
    gw_upstream *up = native_client((gw_upstream_opts){0});
    gw_upstream_resp resp;
    gw_upstream_req req = {.url = "https://127.0.0.1:1/"};
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.url = "http://127.0.0.1:1/a b";
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.url = "http://user@127.0.0.1:1/";
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.url = "http://127.0.0.1:0/";
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.url = "http://127.0.0.1:1/";
    const char *inject[] = {"X-A: 1\r\nX-B: 2"};
    req.headers = inject;
    req.nheaders = 1;
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    const char *noname[] = {": v"};
    req.headers = noname;
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.headers = NULL;
    req.nheaders = 0;
    req.method = "G T";
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EINVAL);
    req.method = NULL;
    req.url = "http://backend.invalid/";
    CHECK(gw_upstream_do(up, &req, NULL, &resp) == -EHOSTUNREACH);
    gw_upstream_free(up);
}

static void test_native_refuses(void **state)
{
    (void)state;
    run(1, native_refuses_main, NULL);
}

/* -------------------------------------------------------------- main */

static int use_curl(void **state)
{
    (void)state;
    g_client = GW_UPSTREAM_CURL;
    return 0;
}

static int use_native(void **state)
{
    (void)state;
    g_client = GW_UPSTREAM_NATIVE;
    return 0;
}

int main(void)
{
    /* Every client passes these. */
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_non_2xx_status),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_free_inflight),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_resolver_round_robin),
        cmocka_unit_test(test_resolver_refused_tries_next),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_length_over_cap),
        cmocka_unit_test(test_header_cap),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_interim),
        cmocka_unit_test(test_no_keepalive),
        cmocka_unit_test(test_stale_closed),
        cmocka_unit_test(test_stale_dropped),
        cmocka_unit_test(test_deadline_mid_body),
    };
    const struct CMUnitTest native_only[] = {
        cmocka_unit_test(test_native_idle_cap),
        cmocka_unit_test(test_native_idle_time),
        cmocka_unit_test(test_native_no_retry_post),
        cmocka_unit_test(test_native_refuses),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("curl", common, use_curl, NULL);
    failed += cmocka_run_group_tests_name("native", common, use_native, NULL);
    failed += cmocka_run_group_tests_name("native only", native_only,
                                          use_native, NULL);
    return failed;
}
