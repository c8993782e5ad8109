/*
 * http_server.c - the gateway's HTTP/1.1 server (API: http_server.h).
 *
 * Goroutines.
 *   accept    one per listener: rt_accept, the max_connections check,
 *             then a connection goroutine. Ends when the listener is
 *             closed (gw_server_stop).
 *   conn      one per connection: reads and parses requests one at a
 *             time (pipelined ones wait in the socket buffer or in rbuf,
 *             so answers go out in request order), routes each at the
 *             end of its head, reads its body, hands it to a request
 *             goroutine, watches the socket meanwhile, writes the answer.
 *   request   one per routed request: gw_fanout_run (fanout.c), which
 *             starts a goroutine per part. It sends the answer on the
 *             connection's done channel, cancels its context and ends
 *             once its parts have.
 *
 * While a request is in flight its connection goroutine waits with
 * rt_conn_wait(c, RT_HUP, ..., request ctx): a FIN or RST from the client
 * (EPOLLRDHUP/HUP/ERR, whatever bytes are still unread) ends the wait at
 * once and the goroutine cancels the request's context, which aborts
 * every backend call in flight; the answer is then dropped and the
 * connection closed. When the request goroutine is done it cancels the
 * context itself, which ends the wait the other way.
 *
 * Contexts: server ctx (cancelled by gw_server_stop) > connection ctx >
 * request ctx (the route deadline) > part ctx (a backend timeout_ms).
 *
 * Timeouts (the contract's limits): the first request's head must be in
 * by accept + header_timeout_ms (the TLS handshake included); a later
 * request may start up to idle_timeout_ms after the previous answer and
 * its head must be in header_timeout_ms after its first byte. Expiry with
 * no byte of a request is a silent close; after some bytes, 408 then
 * close. body_timeout_ms bounds each wait for body bytes (408), and
 * write_timeout_ms each wait for the socket to take more of an answer.
 *
 * Memory of an idle connection: its goroutine's stack (a page or two),
 * the G, the rt_conn and this file's conn struct. The read buffer and the
 * parser's buffers exist only while a request is being read or served
 * (nginx's lingering buffers, the other way round): an idle keep-alive
 * connection holds no buffer.
 *
 * Ownership. The server owns its listeners and the connection list
 * (mu); each conn struct belongs to its goroutine, which unlinks it
 * before freeing it; gw_server_stop closes connections through
 * references it takes under mu. A request struct belongs to its request
 * goroutine; the answer it fills belongs to the connection once sent on
 * done. State references: the connection holds one per request (for the
 * route match), the request goroutine another (its parts use backends).
 */
#include "http_server.h"

#include "fanout.h"
#include "http_parse.h"
#include "log.h"
#include "response.h"
#include "route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define RBUF_SIZE 4096
#define MAX_REQUEST_ID 128
#define HEAD_BUF 1024
#define CONN_STACK ((size_t)64 * 1024)
#define ACCEPT_BACKOFF (10 * RT_MSEC)
#define DRAIN_GRACE (500 * RT_MSEC)
#define LINGER_TIME (2 * RT_SEC)
#define LINGER_BYTES ((size_t)64 << 20)

typedef struct conn conn;

typedef struct listener {
    gw_server *srv;
    rt_conn *ln;
    bool tls;
    int port;
} listener;

struct gw_server {
    listener main, secure;
    bool has_secure;
    rt_ctx *ctx;            /* cancelled by gw_server_stop */
    rt_ctx *idle_ctx;       /* child of ctx; cancelled when the drain starts */
    rt_waitgroup wg;        /* accept, connection and request goroutines */
    rt_waitgroup accepting; /* the accept goroutines */
    _Atomic long nconns;
    _Atomic bool stopping, draining, forced;
    /* Closed once draining and no connection is left (drained_once
     * makes the close happen once, whoever sees it first). */
    rt_chan *drained;
    _Atomic bool drained_once;
    /* Closed by gw_server_force (once): the drain stops waiting. */
    rt_chan *force;
    _Atomic bool force_once;
    gw_metrics *metrics; /* not owned (the first state's) */

    rt_mutex mu; /* protects state, tls, conns */
    gw_state *state;
    gw_tls_ctx *tls; /* not owned */
    conn *conns;
};

struct conn {
    gw_server *srv;
    rt_conn *rc; /* the owner's reference */
    gw_tls_conn *tls;
    bool https;
    char ip[INET6_ADDRSTRLEN];
    int64_t accepted;
    rt_ctx *ctx;
    conn *prev, *next; /* srv->conns, under srv->mu */

    char *rbuf; /* RBUF_SIZE while a request is read, else NULL */
    size_t rlen;
    gw_http_parser parser;
    bool parser_live;
    unsigned long nreq;

    rt_chan *done;    /* gw_response *, capacity 1 */
    gw_response resp; /* filled by the request goroutine */

    /* The request in flight's context, for a forced drain to cancel.
     * Set and cleared by the connection's goroutine, read by
     * gw_server_drain; both under cmu (a lock per connection, so the
     * request path takes no lock other goroutines contend for). */
    rt_mutex cmu;
    rt_ctx *req_ctx;

    /* The last error answer (answer_error), for the metrics and log. */
    int err_status;
    size_t err_bytes;
    char err_id[MAX_REQUEST_ID + 1];
    /* Closing after an answer with client bytes maybe unread (an error,
     * an early answer): linger() before the close. */
    bool linger;
};

/* What a request goroutine owns. */
typedef struct request {
    gw_request r;
    conn *cn;
    gw_route_match match;
    char id[MAX_REQUEST_ID + 1];
    char **paths;
    size_t npaths;
} request;

/* ----------------------------------------------------------- state */

gw_state *gw_server_state(gw_server *s)
{
    rt_mutex_lock(&s->mu);
    gw_state *st = gw_state_ref(s->state);
    rt_mutex_unlock(&s->mu);
    return st;
}

void gw_server_set_state(gw_server *s, gw_state *st)
{
    gw_state_ref(st);
    rt_mutex_lock(&s->mu);
    gw_state *old = s->state;
    s->state = st;
    rt_mutex_unlock(&s->mu);
    gw_state_unref(old);
}

gw_tls_ctx *gw_server_set_tls(gw_server *s, gw_tls_ctx *tls)
{
    rt_mutex_lock(&s->mu);
    gw_tls_ctx *old = s->tls;
    s->tls = tls;
    rt_mutex_unlock(&s->mu);
    return old;
}

bool gw_server_draining(const gw_server *s)
{
    return atomic_load(&s->draining);
}

long gw_server_connections(const gw_server *s)
{
    return atomic_load(&s->nconns);
}

int gw_server_port(const gw_server *s)
{
    return s->main.port;
}

int gw_server_tls_port(const gw_server *s)
{
    return s->has_secure ? s->secure.port : 0;
}

/* ------------------------------------------------------ request ids */

/* 32 hex digits: a per-process random key and a counter, mixed
 * (splitmix64), so ids are unique in the process and not guessable
 * from one another. The key is made by the first caller; callers racing
 * to make it agree on the first one stored. */
static void new_request_id(char out[33])
{
    static _Atomic uint64_t counter, the_key;
    uint64_t key = atomic_load_explicit(&the_key, memory_order_relaxed);
    if (key == 0) {
        uint64_t k = (uint64_t)rt_now() ^ ((uint64_t)(uintptr_t)&k << 17) ^
                     0x9E3779B97F4A7C15ull;
        if (atomic_compare_exchange_strong_explicit(&the_key, &key, k | 1,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed))
            key = k | 1; /* else key is the one stored first */
    }
    uint64_t n = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    uint64_t v[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = key + (n * 2 + (uint64_t)i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        v[i] = z ^ (z >> 31);
    }
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)v[0],
             (unsigned long long)v[1]);
}

/* The client's X-Request-Id when it is 1..128 visible ASCII characters,
 * else a new one. */
static void request_id(const gw_http_request *hr, char out[MAX_REQUEST_ID + 1])
{
    const gw_http_header *h = gw_http_request_header(hr, "x-request-id");
    bool ok = h != NULL && h->value_len >= 1 && h->value_len <= MAX_REQUEST_ID;
    for (size_t i = 0; ok && i < h->value_len; i++)
        ok = h->value[i] >= 0x21 && h->value[i] <= 0x7e;
    if (ok) {
        memcpy(out, h->value, h->value_len);
        out[h->value_len] = '\0';
    } else {
        new_request_id(out);
    }
}

/* ----------------------------------------------------------- I/O */

/* Read what fits into rbuf, waiting under ctx. Returns the count, 0 at
 * end of stream, or a negative errno. */
static ssize_t conn_read_ctx(conn *cn, int64_t deadline, rt_ctx *ctx)
{
    size_t room = RBUF_SIZE - cn->rlen;
    if (room == 0)
        return -ENOBUFS;
    ssize_t n =
        cn->tls != NULL
            ? gw_tls_read(cn->tls, cn->rbuf + cn->rlen, room, deadline, ctx)
            : rt_conn_read(cn->rc, cn->rbuf + cn->rlen, room, deadline, ctx);
    if (n > 0)
        cn->rlen += (size_t)n;
    return n;
}

static ssize_t conn_read(conn *cn, int64_t deadline)
{
    return conn_read_ctx(cn, deadline, cn->ctx);
}

/* Drop the first n bytes of rbuf. */
static void consume(conn *cn, size_t n)
{
    if (n == 0)
        return;
    memmove(cn->rbuf, cn->rbuf + n, cn->rlen - n);
    cn->rlen -= n;
}

/*
 * Write the whole vector; each wait for the socket to take more may last
 * write_timeout (a write that makes no progress for that long fails).
 * TLS: the pieces are gathered into one record-sized write.
 */
static int conn_writev(conn *cn, struct iovec *iov, int n, int64_t timeout)
{
    if (cn->tls != NULL) {
        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        char *buf = malloc(total ? total : 1);
        if (buf == NULL)
            return -ENOMEM;
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        ssize_t w =
            gw_tls_write(cn->tls, buf, total, rt_now() + timeout, cn->ctx);
        free(buf);
        return w < 0 ? (int)w : 0;
    }
    int first = 0;
    while (first < n) {
        ssize_t w = rt_conn_try_writev(cn->rc, iov + first, n - first);
        if (w == -EAGAIN) {
            int err =
                rt_conn_wait(cn->rc, RT_WRITE, rt_now() + timeout, cn->ctx);
            if (err != 0)
                return err;
            continue;
        }
        if (w < 0)
            return (int)w;
        while (first < n && (size_t)w >= iov[first].iov_len) {
            w -= (ssize_t)iov[first].iov_len;
            first++;
        }
        if (first < n) {
            iov[first].iov_base = (char *)iov[first].iov_base + w;
            iov[first].iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Write r (its head, and its body unless head_only). Returns the bytes
 * written, or a negative errno. */
static ssize_t write_response(conn *cn, const gw_response *r, const char *id,
                              bool close, bool ka10, bool head_only,
                              int64_t timeout)
{
    char head[HEAD_BUF];
    size_t hl = gw_response_head(r, id, close, ka10, head, sizeof head);
    if (hl == 0)
        return -ENOSPC;
    int nb = head_only || r->no_body ? 0 : r->niov;
    struct iovec local[16], *iov = local;
    if (nb + 1 > 16 && (iov = malloc(sizeof *iov * (size_t)(nb + 1))) == NULL)
        return -ENOMEM;
    iov[0] = (struct iovec){head, hl};
    size_t total = hl;
    for (int i = 0; i < nb; i++) {
        iov[i + 1] = r->iov[i];
        total += r->iov[i].iov_len;
    }
    int err = conn_writev(cn, iov, nb + 1, timeout);
    if (iov != local)
        free(iov);
    return err != 0 ? err : (ssize_t)total;
}

/* An error answer, then the connection closes. Notes its status and
 * size in cn->err_status and cn->err_bytes for the caller's accounting. */
static void answer_error(conn *cn, const gw_limits *lim, int status,
                         const char *msg, const char *id)
{
    gw_response r;
    gw_response_init(&r);
    gw_response_error(&r, status, msg, NULL, -1);
    char fresh[33];
    if (id == NULL) {
        new_request_id(fresh);
        id = fresh;
    }
    ssize_t w = write_response(cn, &r, id, true, false, false,
                               lim->write_timeout_ms * RT_MSEC);
    cn->err_status = status;
    cn->err_bytes = w > 0 ? (size_t)w : 0;
    cn->linger = true;
    snprintf(cn->err_id, sizeof cn->err_id, "%s", id);
    gw_response_free(&r);
}

/* ------------------------------------------------ buffers, idle */

static int buffers_get(conn *cn, const gw_limits *lim)
{
    if (cn->rbuf == NULL && (cn->rbuf = malloc(RBUF_SIZE)) == NULL)
        return -ENOMEM;
    if (!cn->parser_live) {
        gw_http_limits pl = {.max_header_bytes = (size_t)lim->max_header_bytes,
                             .max_body_bytes = (size_t)lim->max_body_bytes};
        if (gw_http_parser_init(&cn->parser, &pl, NULL, NULL) != 0)
            return -ENOMEM;
        gw_http_parser_stop_at_head(&cn->parser, true);
        cn->parser_live = true;
    }
    return 0;
}

/* Between requests with nothing buffered: give the buffers back. */
static void buffers_put(conn *cn)
{
    if (cn->rlen == 0) {
        free(cn->rbuf);
        cn->rbuf = NULL;
    }
    if (cn->parser_live) {
        gw_http_parser_free(&cn->parser);
        cn->parser_live = false;
    }
}

/* ------------------------------------------------------- requests */

static void request_free(request *rq)
{
    for (size_t i = 0; i < rq->npaths; i++)
        free(rq->paths[i]);
    free(rq->paths);
    free(rq);
}

static void request_main(void *arg)
{
    request *rq = arg;
    gw_server *srv = rq->cn->srv;
    gw_fanout_run(&rq->r, &rq->cn->resp, rq->cn->done);
    /* The connection owns the answer now; rq->cn may be gone. */
    rt_ctx_release(rq->r.ctx);
    gw_state_unref(rq->r.state);
    request_free(rq);
    rt_waitgroup_done(&srv->wg);
}

/*
 * Fill the part paths of a matched route (placeholders from the path and
 * the query). On a missing or bad placeholder, a 400 naming it goes into
 * *msg (static or in buf) and the result is -1.
 */
static int fill_paths(request *rq, const gw_state *st,
                      const gw_http_request *hr, char *buf, size_t buflen,
                      const char **msg)
{
    const gw_route_cfg *rc = rq->match.route;
    rq->paths = calloc(rc->nparts, sizeof *rq->paths);
    if (rq->paths == NULL) {
        *msg = "out of memory";
        return -1;
    }
    char small[512], *big = NULL;
    for (size_t i = 0; i < rc->nparts; i++) {
        char *path = small;
        size_t cap = sizeof small;
        const char *which = NULL;
        int n = gw_route_part_path(st->router, &rq->match, i, hr->query,
                                   hr->query_len, path, cap, &which);
        if (n == -ENOSPC) {
            /* Long values: every byte may become %XX. */
            if (big == NULL && (big = malloc(GW_PART_PATH_LEN)) == NULL) {
                *msg = "out of memory";
                return -1;
            }
            path = big;
            cap = GW_PART_PATH_LEN;
            n = gw_route_part_path(st->router, &rq->match, i, hr->query,
                                   hr->query_len, path, cap, &which);
        }
        if (n == -ENOENT || n == -EINVAL) {
            snprintf(buf, buflen,
                     n == -ENOENT ? "missing value for {%s}"
                                  : "invalid percent-escape in {%s}",
                     which != NULL ? which : "?");
            *msg = buf;
            free(big);
            return -1;
        }
        if (n < 0) {
            free(big);
            *msg = "request target too long for a backend";
            return -1;
        }
        if ((rq->paths[i] = strdup(path)) == NULL) {
            free(big);
            *msg = "out of memory";
            return -1;
        }
        rq->npaths = i + 1;
    }
    free(big);
    return 0;
}

/* ------------------------------------------------------ connection */

typedef enum { NEXT, CLOSE } verdict;

/*
 * Read the next request's head into the parser. Returns 0 with the head
 * ready, or CLOSE (after answering 408/4xx/5xx when that is due). *start
 * becomes the time the request's first byte came in.
 *
 * Waiting for a next request on an idle keep-alive connection is done
 * under the server's idle context, which a drain cancels: idle
 * connections close at once, busy ones finish their request.
 */
static int read_head(conn *cn, const gw_limits *lim, bool first, int64_t *start)
{
    int64_t hdr = lim->header_timeout_ms * RT_MSEC;
    int64_t deadline;
    if (cn->rlen == 0) {
        /* Idle: no byte of the next request yet, no buffer held. */
        buffers_put(cn);
        deadline = first ? cn->accepted + hdr
                         : rt_now() + lim->idle_timeout_ms * RT_MSEC;
        rt_ctx *idle = cn->srv->idle_ctx;
        if (cn->tls == NULL) {
            int err = rt_conn_wait(cn->rc, RT_READ, deadline, idle);
            if (err != 0)
                return CLOSE; /* idle or header timeout: silent close */
        }
        if (buffers_get(cn, lim) != 0)
            return CLOSE;
        ssize_t n =
            conn_read_ctx(cn, deadline, cn->tls != NULL ? idle : cn->ctx);
        if (n <= 0)
            return CLOSE; /* end of stream, timeout, error: silent */
        *start = rt_now();
        if (!first)
            deadline = *start + hdr; /* from the first byte */
    } else {
        if (buffers_get(cn, lim) != 0)
            return CLOSE;
        deadline = first ? cn->accepted + hdr : rt_now() + hdr;
    }
    for (;;) {
        size_t used;
        int rc = gw_http_parser_feed(&cn->parser, cn->rbuf, cn->rlen, &used);
        consume(cn, used);
        if (rc == GW_HTTP_HEAD)
            return 0;
        if (rc == -EAGAIN) {
            ssize_t n = conn_read(cn, deadline);
            if (n > 0)
                continue;
            if (n == -ETIMEDOUT)
                answer_error(cn, lim, 408, "request header timeout", NULL);
            return CLOSE;
        }
        int status = gw_http_parser_status(&cn->parser);
        answer_error(cn, lim, status ? status : 400,
                     gw_http_parser_message(&cn->parser)
                         ? gw_http_parser_message(&cn->parser)
                         : "malformed request",
                     NULL);
        return CLOSE;
    }
}

/* Read the rest of the request (its body, if any) into the parser. 0, or
 * CLOSE after answering. */
static int read_body(conn *cn, const gw_limits *lim, const char *id)
{
    for (;;) {
        size_t used;
        int rc = gw_http_parser_feed(&cn->parser, cn->rbuf, cn->rlen, &used);
        consume(cn, used);
        if (rc == 0)
            return 0;
        if (rc == -EAGAIN) {
            ssize_t n =
                conn_read(cn, rt_now() + lim->body_timeout_ms * RT_MSEC);
            if (n > 0)
                continue;
            if (n == -ETIMEDOUT)
                answer_error(cn, lim, 408, "request body timeout", id);
            return CLOSE;
        }
        int status = gw_http_parser_status(&cn->parser);
        answer_error(cn, lim, status ? status : 400,
                     gw_http_parser_message(&cn->parser)
                         ? gw_http_parser_message(&cn->parser)
                         : "malformed request body",
                     id);
        return CLOSE;
    }
}

/* Whether this answer is the connection's last whatever the request
 * asks: the server is stopping, or the connection has served
 * max_requests_per_connection or outlived max_connection_age_ms. Applies
 * to every answer, routed or not. */
static bool conn_retiring(const conn *cn, const gw_limits *lim)
{
    return atomic_load(&cn->srv->draining) || atomic_load(&cn->srv->stopping) ||
           (lim->max_requests_per_connection > 0 &&
            cn->nreq + 1 >= (unsigned long)lim->max_requests_per_connection) ||
           (lim->max_connection_age_ms > 0 &&
            rt_now() - cn->accepted >= lim->max_connection_age_ms * RT_MSEC);
}

/* ------------------------------------------------------ accounting */

/* What one request leaves in the metrics and the access log. */
typedef struct outcome {
    int64_t start;            /* its first byte, or its head */
    int status;               /* 499: the client left before the answer */
    size_t bytes;             /* written */
    int completed;            /* X-Gateway-Completed: -1 none, 0, 1 */
    bool uncounted;           /* /healthz on the main listener */
    const gw_route_rt *route; /* NULL: "none" */
    const gw_route_cfg *rcfg; /* with parts: their names */
    const gw_part_outcome *parts;
} outcome;

static void account(conn *cn, gw_state *st, const gw_http_request *hr,
                    const char *id, const outcome *o)
{
    int64_t ns = rt_now() - o->start;
    if (!o->uncounted)
        gw_metrics_request(o->route != NULL ? o->route->metrics : st->none,
                           o->status, ns);
    if (!gw_log_enabled(GW_LOG_INFO))
        return;
    gw_access_part ap[GW_CONFIG_MAX_PARTS];
    char why[GW_CONFIG_MAX_PARTS][16];
    size_t np = 0;
    if (o->parts != NULL && o->rcfg != NULL) {
        for (; np < o->rcfg->nparts && np < GW_CONFIG_MAX_PARTS; np++) {
            const gw_part_outcome *po = &o->parts[np];
            ap[np] = (gw_access_part){
                .name = o->rcfg->parts[np].name,
                .outcome = gw_part_reason(po->outcome, po->status, why[np]),
                .ns = po->ns,
            };
        }
    }
    char fresh[33];
    if (id == NULL) {
        new_request_id(fresh);
        id = fresh;
    }
    gw_access a = {
        .start = o->start,
        .id = id,
        .client = cn->ip,
        .method = hr != NULL && hr->method != NULL ? hr->method : "",
        .path = hr != NULL && hr->path != NULL ? hr->path : "",
        .path_len = hr != NULL && hr->path != NULL ? hr->path_len : 0,
        .route = o->route != NULL ? o->route->label : NULL,
        .status = o->status,
        .ns = ns,
        .bytes = o->bytes,
        .completed = o->completed,
        .client_gone = o->status == 499,
        .parts = ap,
        .nparts = np,
    };
    gw_log_access(&a);
}

/* An error answered by read_head or read_body (cn->err_status), counted
 * outside any route. */
static void account_error(conn *cn, gw_state *st, const gw_http_request *hr,
                          const char *id, int64_t start,
                          const gw_route_rt *route)
{
    if (cn->err_status == 0)
        return;
    outcome o = {.start = start,
                 .status = cn->err_status,
                 .bytes = cn->err_bytes,
                 .completed = -1,
                 .route = route};
    account(cn, st, hr, id != NULL ? id : cn->err_id, &o);
    cn->err_status = 0;
}

/* The request in flight (NULL: none), for a forced drain. False when the
 * drain is already forcing: the request is answered 503 instead. */
static bool set_request(conn *cn, rt_ctx *ctx)
{
    rt_mutex_lock(&cn->cmu);
    bool ok = ctx == NULL || !atomic_load(&cn->srv->forced);
    cn->req_ctx = ok ? ctx : NULL;
    rt_mutex_unlock(&cn->cmu);
    return ok;
}

/*
 * One request, from its head (in the parser) to its answer. Returns NEXT
 * to read the next one on this connection, CLOSE to end it.
 */
static verdict serve_request(conn *cn, gw_state *st, int64_t start)
{
    const gw_limits *lim = &st->cfg->limits;
    int64_t wtimeout = lim->write_timeout_ms * RT_MSEC;
    const gw_http_request *hr = gw_http_parser_head(&cn->parser);
    bool head = hr->method_id == HTTP_HEAD;
    bool has_body = gw_http_request_has_body(hr);

    request *rq = calloc(1, sizeof *rq);
    if (rq == NULL)
        return CLOSE;
    request_id(hr, rq->id);
    rq->cn = cn;

    /* Answers decided at the head. */
    gw_response early;
    gw_response_init(&early);
    outcome o = {.start = start, .completed = -1};
    char msg[160];
    const char *err = NULL;
    if (hr->target_form == GW_HTTP_TARGET_ASTERISK) {
        gw_response_options(&early, gw_router_allow_all(st->router));
    } else if (hr->path_len == 8 && memcmp(hr->path, "/healthz", 8) == 0 &&
               (hr->method_id == HTTP_GET || head)) {
        bool drain = atomic_load(&cn->srv->draining);
        gw_response_json(&early, drain ? 503 : 200,
                         drain ? "{\"status\":\"draining\"}"
                               : "{\"status\":\"ok\"}");
        o.uncounted = true;
    } else {
        gw_router_match(st->router, hr->method, hr->path, hr->path_len,
                        &rq->match);
        if (rq->match.status == 405 || rq->match.options ||
            rq->match.status == 0)
            o.route = &st->routes[rq->match.route_index];
        if (rq->match.status != 0) {
            gw_response_error(&early, rq->match.status, rq->match.error, NULL,
                              -1);
            if (rq->match.status == 405)
                early.allow = rq->match.allow;
        } else if (rq->match.options) {
            gw_response_options(&early, rq->match.allow);
        } else if (fill_paths(rq, st, hr, msg, sizeof msg, &err) != 0) {
            gw_response_error(&early, 400, err, NULL, -1);
        }
    }
    if (early.status != 0) {
        /* Answered without reading the body: its bytes must not be
         * parsed as a next request, so the connection closes. */
        bool close = has_body;
        if (!close && read_body(cn, lim, rq->id) != 0) {
            account_error(cn, st, hr, rq->id, start, o.route);
            gw_response_free(&early);
            request_free(rq);
            return CLOSE;
        }
        /* hr, the head, stays valid (and its keep_alive final once the
         * body is read); gw_http_parser_request would be NULL with the
         * body unread. */
        cn->linger = has_body; /* its body is still coming */
        close = close || !hr->keep_alive || conn_retiring(cn, lim);
        ssize_t w =
            write_response(cn, &early, rq->id, close,
                           hr->version_minor == 0 && !close, head, wtimeout);
        o.status = early.status;
        o.bytes = w > 0 ? (size_t)w : 0;
        account(cn, st, hr, rq->id, &o);
        gw_response_free(&early);
        request_free(rq);
        return close || w < 0 ? CLOSE : NEXT;
    }

    /* A route: read the body (100 Continue first when asked). */
    if (has_body && hr->expect_continue) {
        struct iovec iov = {(void *)"HTTP/1.1 100 Continue\r\n\r\n", 25};
        if (conn_writev(cn, &iov, 1, wtimeout) != 0) {
            request_free(rq);
            return CLOSE;
        }
    }
    if (read_body(cn, lim, rq->id) != 0) {
        account_error(cn, st, hr, rq->id, start, o.route);
        request_free(rq);
        return CLOSE;
    }
    hr = gw_http_parser_request(&cn->parser);

    /* Hand it to a request goroutine with the route's deadline. */
    const gw_route_cfg *rcfg = rq->match.route;
    gw_part_outcome *outcomes = calloc(rcfg->nparts, sizeof *outcomes);
    rt_ctx *ctx =
        rt_ctx_with_deadline(cn->ctx, start + rcfg->timeout_ms * RT_MSEC);
    if (ctx == NULL || outcomes == NULL) {
        rt_ctx_release(ctx);
        free(outcomes);
        answer_error(cn, lim, 503, "out of memory", rq->id);
        account_error(cn, st, hr, rq->id, start, o.route);
        request_free(rq);
        return CLOSE;
    }
    o.rcfg = rcfg;
    o.parts = outcomes;
    rq->r = (gw_request){
        .state = gw_state_ref(st),
        .match = &rq->match,
        .http = hr,
        .part_paths = rq->paths,
        .head = head,
        .request_id = rq->id,
        .client_ip = cn->ip,
        .proto = cn->https ? "https" : "http",
        .ctx = rt_ctx_ref(ctx),
        .outcomes = outcomes,
    };
    char id[MAX_REQUEST_ID + 1];
    memcpy(id, rq->id, sizeof id);
    gw_response_init(&cn->resp);
    if (!set_request(cn, ctx)) {
        /* A forced drain: too late to start anything. */
        rt_ctx_release(rq->r.ctx);
        gw_state_unref(rq->r.state);
        request_free(rq);
        rt_ctx_release(ctx);
        answer_error(cn, lim, 503, "shutting down", id);
        o.parts = NULL;
        free(outcomes);
        account_error(cn, st, hr, id, start, o.route);
        return CLOSE;
    }
    rt_waitgroup_add(&cn->srv->wg, 1);
    if (rt_go(request_main, rq) == 0) {
        rt_waitgroup_done(&cn->srv->wg);
        set_request(cn, NULL);
        rt_ctx_release(rq->r.ctx);
        gw_state_unref(rq->r.state);
        request_free(rq);
        rt_ctx_release(ctx);
        answer_error(cn, lim, 503, "overloaded", id);
        free(outcomes);
        account_error(cn, st, hr, id, start, o.route);
        return CLOSE;
    }
    /* rq belongs to the request goroutine now. Watch for the client
     * going away until the request is done (it cancels ctx). */
    int w = rt_conn_wait(cn->rc, RT_HUP, RT_FOREVER, ctx);
    bool gone = w == 0 || w == -EBADF;
    if (gone) {
        rt_ctx_cancel(ctx); /* every backend call in flight is aborted */
        gw_metrics_cancelled(st->metrics, GW_CANCEL_CLIENT_GONE);
    }
    gw_response *resp;
    rt_chan_recv(cn->done, &resp, NULL);
    set_request(cn, NULL);
    rt_ctx_release(ctx);
    if (gone) {
        o.status = 499;
        o.completed = resp->completed;
        account(cn, st, hr, id, &o);
        gw_response_free(resp);
        free(outcomes);
        return CLOSE;
    }
    if (atomic_load(&cn->srv->forced)) {
        /* The drain ran out of time: what is left is answered 503. */
        gw_response_free(resp);
        gw_response_init(resp);
        gw_response_error(resp, 503, "shutting down", NULL, -1);
    }
    bool close = !hr->keep_alive || conn_retiring(cn, lim);
    ssize_t wr = write_response(
        cn, resp, id, close, hr->version_minor == 0 && !close, head, wtimeout);
    o.status = resp->status;
    o.completed = resp->completed;
    o.bytes = wr > 0 ? (size_t)wr : 0;
    account(cn, st, hr, id, &o);
    gw_response_free(resp);
    free(outcomes);
    return close || wr < 0 ? CLOSE : NEXT;
}

/* Once draining with no connection left: close s->drained (once). */
static void maybe_drained(gw_server *s)
{
    if (atomic_load(&s->draining) && atomic_load(&s->nconns) == 0 &&
        !atomic_exchange(&s->drained_once, true))
        rt_chan_close(s->drained);
}

/* The next request on cn: NEXT or CLOSE. */
static verdict serve_one(conn *cn, gw_state *st, bool first)
{
    int64_t start = rt_now();
    cn->err_status = 0;
    if (read_head(cn, &st->cfg->limits, first, &start) != 0) {
        account_error(cn, st, NULL, NULL, start, NULL);
        return CLOSE;
    }
    gw_metrics_inflight_add(st->metrics, 1);
    verdict v = serve_request(cn, st, start);
    gw_metrics_inflight_add(st->metrics, -1);
    return v;
}

static void conn_unlink(conn *cn)
{
    gw_server *s = cn->srv;
    rt_mutex_lock(&s->mu);
    if (cn->prev != NULL)
        cn->prev->next = cn->next;
    else
        s->conns = cn->next;
    if (cn->next != NULL)
        cn->next->prev = cn->prev;
    rt_mutex_unlock(&s->mu);
}

/*
 * nginx's lingering close: after answering a request whose bytes were not
 * all read (an error, an early answer), send our FIN and read and drop
 * what the client still sends until it closes, for LINGER_TIME and
 * LINGER_BYTES at most (a drain or a stop ends it at once). Closing with
 * unread bytes would make the kernel answer them with a reset, which can
 * reach the client before it has read the answer and discard it there.
 * Plain connections only: TLS ends with its close_notify.
 */
static void linger(conn *cn)
{
    if (cn->tls != NULL || rt_conn_shutdown(cn->rc, SHUT_WR) != 0)
        return;
    char buf[2048];
    int64_t deadline = rt_now() + LINGER_TIME;
    for (size_t n = 0; n < LINGER_BYTES;) {
        ssize_t r =
            rt_conn_read(cn->rc, buf, sizeof buf, deadline, cn->srv->idle_ctx);
        if (r <= 0)
            return;
        n += (size_t)r;
    }
}

static void conn_main(void *arg)
{
    conn *cn = arg;
    gw_server *s = cn->srv;
    if (cn->tls != NULL) {
        gw_state *st = gw_server_state(s);
        int64_t dl = cn->accepted + st->cfg->limits.header_timeout_ms * RT_MSEC;
        gw_state_unref(st);
        if (gw_tls_accept(cn->tls, dl, cn->ctx) != 0)
            goto out;
    }
    for (;;) {
        gw_state *st = gw_server_state(s);
        verdict v = serve_one(cn, st, cn->nreq == 0);
        if (cn->parser_live)
            gw_http_parser_next(&cn->parser);
        gw_state_unref(st);
        if (v == CLOSE)
            break;
        cn->nreq++;
    }
    if (cn->linger)
        linger(cn);
out:
    conn_unlink(cn);
    if (cn->parser_live)
        gw_http_parser_free(&cn->parser);
    free(cn->rbuf);
    if (cn->tls != NULL)
        gw_tls_release(cn->tls); /* releases rc too */
    else
        rt_conn_release(cn->rc);
    rt_ctx_release(cn->ctx);
    rt_chan_free(cn->done);
    free(cn);
    gw_metrics_conn_closed(s->metrics);
    atomic_fetch_sub(&s->nconns, 1);
    maybe_drained(s);
    rt_waitgroup_done(&s->wg);
}

/* ---------------------------------------------------------- accept */

/* Over max_connections: 503 for a plain connection (one non-blocking
 * write: it fits in any socket buffer), nothing for TLS (before any
 * handshake, as the contract says). */
static void refuse(rt_conn *c, bool tls)
{
    if (!tls) {
        gw_response r;
        gw_response_init(&r);
        gw_response_error(&r, 503, "too many connections", NULL, -1);
        char id[33], head[HEAD_BUF];
        new_request_id(id);
        size_t hl = gw_response_head(&r, id, true, false, head, sizeof head);
        struct iovec iov[2] = {{head, hl}, r.one};
        rt_conn_try_writev(c, iov, 2);
        gw_response_free(&r);
    }
    rt_conn_release(c);
}

static conn *conn_new(gw_server *s, rt_conn *c, bool tls)
{
    conn *cn = calloc(1, sizeof *cn);
    if (cn == NULL)
        return NULL;
    cn->srv = s;
    cn->rc = c;
    cn->https = tls;
    cn->accepted = rt_now();
    cn->ctx = rt_ctx_with_cancel(s->ctx);
    cn->done = rt_chan_make(sizeof(gw_response *), 1);
    char addr[RT_ADDR_LEN];
    if (rt_conn_peer_addr(c, addr, sizeof addr) == 0) {
        /* "1.2.3.4:5" or "[::1]:5": the address without the port. */
        char *colon = strrchr(addr, ':');
        if (colon != NULL)
            *colon = '\0';
        const char *a = addr;
        size_t n = strlen(a);
        if (n >= 2 && a[0] == '[' && a[n - 1] == ']') {
            a++;
            n -= 2;
        }
        if (n < sizeof cn->ip) {
            memcpy(cn->ip, a, n);
            cn->ip[n] = '\0';
        }
    }
    int terr = 0;
    if (tls) {
        /* Under mu: a reload may swap the TLS context (new handshakes
         * use the new one; sessions made from the old one outlive it). */
        rt_mutex_lock(&s->mu);
        terr = gw_tls_conn_new(s->tls, c, &cn->tls);
        rt_mutex_unlock(&s->mu);
    }
    if (cn->ctx == NULL || cn->done == NULL || terr != 0) {
        rt_ctx_release(cn->ctx);
        rt_chan_free(cn->done);
        free(cn);
        return NULL;
    }
    return cn;
}

static void accept_main(void *arg)
{
    listener *l = arg;
    gw_server *s = l->srv;
    int64_t last_warn = 0;
    for (;;) {
        rt_conn *c;
        int err = rt_accept(l->ln, &c, RT_FOREVER, s->ctx);
        if (err == -EBADF || err == -ECANCELED)
            break; /* closed: the server stops */
        if (err != 0) {
            /* Out of fds or memory: say so (once a second), back off. */
            if (rt_now() - last_warn > RT_SEC) {
                fprintf(stderr, "fanfold: accept: %s\n", strerror(-err));
                last_warn = rt_now();
            }
            rt_sleep(ACCEPT_BACKOFF);
            continue;
        }
        gw_state *st = gw_server_state(s);
        long max = (long)st->cfg->limits.max_connections;
        gw_state_unref(st);
        if (atomic_fetch_add(&s->nconns, 1) >= max) {
            atomic_fetch_sub(&s->nconns, 1);
            refuse(c, l->tls);
            continue;
        }
        conn *cn = conn_new(s, c, l->tls);
        if (cn == NULL) {
            atomic_fetch_sub(&s->nconns, 1);
            refuse(c, l->tls);
            continue;
        }
        gw_metrics_conn_opened(s->metrics);
        rt_mutex_lock(&s->mu);
        cn->next = s->conns;
        if (s->conns != NULL)
            s->conns->prev = cn;
        s->conns = cn;
        rt_mutex_unlock(&s->mu);
        rt_waitgroup_add(&s->wg, 1);
        rt_go_opts o = {.stack_size = l->tls ? GW_TLS_STACK_SIZE : CONN_STACK};
        if (rt_go_opts(conn_main, cn, &o) == 0) {
            /* No stack for it: refuse, as over max_connections. */
            rt_waitgroup_done(&s->wg);
            conn_unlink(cn);
            if (cn->tls != NULL)
                gw_tls_release(cn->tls); /* closes c */
            else
                refuse(c, false);
            rt_ctx_release(cn->ctx);
            rt_chan_free(cn->done);
            free(cn);
            gw_metrics_conn_closed(s->metrics);
            atomic_fetch_sub(&s->nconns, 1);
        }
    }
    rt_waitgroup_done(&s->accepting);
    rt_waitgroup_done(&s->wg);
}

/* ----------------------------------------------------------- start/stop */

static int listen_on(listener *l, gw_server *s, const char *addr, bool tls,
                     char *err, size_t errlen)
{
    l->srv = s;
    l->tls = tls;
    int rc = rt_listen(addr, 4096, &l->ln);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s: %s", addr, strerror(-rc));
        return rc;
    }
    l->port = rt_conn_port(l->ln);
    return 0;
}

int gw_server_start(gw_state *st, gw_tls_ctx *tls, gw_server **out, char *err,
                    size_t errlen)
{
    char scratch[1];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    *out = NULL;
    gw_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->tls = tls;
    s->state = gw_state_ref(st);
    s->metrics = st->metrics;
    s->ctx = rt_ctx_with_cancel(rt_ctx_background());
    s->idle_ctx = s->ctx != NULL ? rt_ctx_with_cancel(s->ctx) : NULL;
    s->drained = rt_chan_make(1, 0);
    s->force = rt_chan_make(1, 0);
    int rc = s->idle_ctx != NULL && s->drained != NULL && s->force != NULL
                 ? 0
                 : -ENOMEM;
    if (rc == 0)
        rc = listen_on(&s->main, s, st->cfg->listen, false, err, errlen);
    if (rc == 0 && tls != NULL && st->cfg->has_tls) {
        rc = listen_on(&s->secure, s, st->cfg->tls_listen, true, err, errlen);
        s->has_secure = rc == 0;
    }
    if (rc != 0) {
        if (s->main.ln != NULL)
            rt_conn_release(s->main.ln);
        rt_ctx_release(s->idle_ctx);
        rt_ctx_release(s->ctx);
        rt_chan_free(s->drained);
        rt_chan_free(s->force);
        gw_state_unref(s->state);
        free(s);
        return rc;
    }
    rt_waitgroup_add(&s->wg, 1);
    rt_waitgroup_add(&s->accepting, 1);
    rt_go(accept_main, &s->main);
    if (s->has_secure) {
        rt_waitgroup_add(&s->wg, 1);
        rt_waitgroup_add(&s->accepting, 1);
        rt_go(accept_main, &s->secure);
    }
    *out = s;
    return 0;
}

/* Wait for s->drained until deadline (or, when forceable, until
 * gw_server_force); true when it closed. */
static bool wait_drained(gw_server *s, int64_t deadline, bool forceable)
{
    int64_t left = deadline - rt_now();
    if (left <= 0)
        return atomic_load(&s->drained_once);
    rt_timer *t = rt_timer_new(left);
    if (t == NULL) {
        rt_sleep(left);
        return atomic_load(&s->drained_once);
    }
    rt_case cs[3] = {RT_RECV_CASE(s->drained, NULL),
                     RT_RECV_CASE(rt_timer_chan(t), NULL),
                     RT_RECV_CASE(s->force, NULL)};
    bool done = rt_select(cs, forceable ? 3 : 2) == 0;
    rt_timer_stop(t);
    rt_timer_free(t);
    return done;
}

void gw_server_force(gw_server *s)
{
    if (!atomic_exchange(&s->force_once, true))
        rt_chan_close(s->force);
}

int gw_server_drain(gw_server *s, int64_t timeout)
{
    if (atomic_exchange(&s->draining, true))
        return -EALREADY;
    int64_t deadline = rt_now() + timeout;
    /* New connections are refused from now on; idle keep-alive ones are
     * woken and close; the accept goroutines end (a connection accepted
     * just before the close is counted by then). */
    rt_conn_close(s->main.ln);
    if (s->has_secure)
        rt_conn_close(s->secure.ln);
    rt_ctx_cancel(s->idle_ctx);
    rt_waitgroup_wait(&s->accepting);
    maybe_drained(s);
    if (wait_drained(s, deadline, true))
        return 0;

    /* Out of time: cancel every request in flight, whose connection
     * then answers 503 "shutting down" and closes; close connections
     * that are between requests or still reading one. */
    atomic_store(&s->forced, true);
    rt_mutex_lock(&s->mu);
    size_t n = 0;
    for (conn *cn = s->conns; cn != NULL; cn = cn->next)
        n++;
    rt_conn **idle = calloc(n ? n : 1, sizeof *idle);
    size_t k = 0;
    for (conn *cn = s->conns; cn != NULL; cn = cn->next) {
        rt_mutex_lock(&cn->cmu);
        if (cn->req_ctx != NULL)
            rt_ctx_cancel(cn->req_ctx);
        else if (idle != NULL)
            idle[k++] = rt_conn_ref(cn->rc);
        rt_mutex_unlock(&cn->cmu);
    }
    rt_mutex_unlock(&s->mu);
    for (size_t i = 0; i < k; i++) {
        rt_conn_close(idle[i]);
        rt_conn_unref(idle[i]);
    }
    free(idle);
    /* The 503s go out (a client that does not read them is cut off by
     * gw_server_stop after this grace). */
    wait_drained(s, rt_now() + DRAIN_GRACE, false);
    return -ETIMEDOUT;
}

void gw_server_stop(gw_server *s)
{
    if (s == NULL || atomic_exchange(&s->stopping, true))
        return;
    rt_conn_close(s->main.ln);
    if (s->has_secure)
        rt_conn_close(s->secure.ln);
    rt_ctx_cancel(s->ctx); /* every connection and request */
    /* Close every connection: a goroutine parked in a read or a write
     * wakes with -EBADF. References taken under mu keep each rt_conn
     * valid while we close it. */
    rt_mutex_lock(&s->mu);
    size_t n = 0;
    for (conn *cn = s->conns; cn != NULL; cn = cn->next)
        n++;
    rt_conn **cs = calloc(n ? n : 1, sizeof *cs);
    size_t k = 0;
    for (conn *cn = s->conns; cs != NULL && cn != NULL; cn = cn->next)
        cs[k++] = rt_conn_ref(cn->rc);
    rt_mutex_unlock(&s->mu);
    for (size_t i = 0; i < k; i++) {
        rt_conn_close(cs[i]);
        rt_conn_unref(cs[i]);
    }
    free(cs);
    rt_waitgroup_wait(&s->wg);
}

void gw_server_free(gw_server *s)
{
    if (s == NULL)
        return;
    gw_server_stop(s);
    rt_conn_release(s->main.ln);
    if (s->has_secure)
        rt_conn_release(s->secure.ln);
    rt_ctx_release(s->idle_ctx);
    rt_ctx_release(s->ctx);
    rt_chan_free(s->drained);
    rt_chan_free(s->force);
    gw_state_unref(s->state);
    free(s);
}
