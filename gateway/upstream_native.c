/*
 * upstream_native.c — the native client behind upstream.h
 * (GW_UPSTREAM_NATIVE): HTTP/1.1 over the runtime's sockets, on the
 * caller's goroutine, with a keep-alive pool per target address and
 * llhttp (strict, HTTP_RESPONSE) for the answer. http:// only.
 *
 * A call. gw_upstream_do parses the URL, formats the request head into a
 * stack buffer (the heap when it does not fit), picks the target address
 * (req.connect_to; a numeric host; else opts.resolver, round-robin, and a
 * refused connection tries the next address once), takes an idle
 * connection to that address from the pool or dials one, and runs one
 * exchange on it: one writev of the head and the body, then reads parked
 * in the netpoller until llhttp has seen the whole answer. No other
 * goroutine takes part, so a call on a kept-alive socket costs a writev,
 * a read or two, and the poller's share of an epoll_wait.
 *
 * Data structures (one client's, under up->mu unless said otherwise):
 *   native_client  hosts, the list of every connection (all), closing,
 *                  counters (atomics), the waitgroup of calls in flight.
 *   host           one target address ("10.0.0.7:9102"): its idle
 *                  connections, a LIFO list (head: the most recently
 *                  used; tail: the longest idle, swept first); nidle; and
 *                  nconns, the connections that point to it (idle, in use
 *                  or being dialled). A host is freed with its last
 *                  connection.
 *   pconn          one connection and what a call reuses on it: the
 *                  rt_conn, its llhttp parser, a fixed read buffer and the
 *                  scratch buffer the answer's header fields are collected
 *                  in. In up->all from before its dial until it is
 *                  destroyed; in its host's idle list while idle.
 *
 * Invariants:
 *   - a pconn is idle (in h->idle, busy false) or owned by exactly one
 *     call (busy true). Only the owner touches its socket, parser and
 *     buffers, without the lock; mu guards the links, busy, dial_ctx,
 *     conn while dialling, and the host's counts;
 *   - conn is NULL only while the dial runs, and dial_ctx is set then, so
 *     gw_upstream_free can interrupt a dial by cancelling dial_ctx;
 *   - once closing is set no connection goes into an idle list and none is
 *     dialled: a call that sees it gives up with -ECANCELED.
 *
 * Who may call what: any goroutine may call gw_upstream_do, concurrently.
 * gw_upstream_free runs once, possibly while calls are in flight: under
 * mu it sets closing, destroys the idle connections, rt_conn_close()s
 * those in use (which wakes their calls with -EBADF) and cancels dials;
 * then it waits for the calls (up->calls) and frees the client. A call
 * that fails while closing returns -ECANCELED.
 *
 * Locks: up->mu (an rt_mutex) alone; mu is taken before any context lock
 * (free cancels dial contexts under it). It is held to take or give back
 * a connection and, in free, while closing connections in use:
 * rt_conn_close parks until the I/O in progress on that socket has left,
 * and I/O never takes mu. It is never held across a call's own I/O;
 * sockets dropped from the pool are closed after it is released.
 *
 * Reuse. Before an idle connection is reused, rt_conn_peer_gone checks
 * it (no syscall unless the poller saw a hang-up); one idle longer than
 * opts.idle_timeout_ms or older than opts.max_connection_age_ms is closed
 * instead (checked when connections are taken, and on every give-back for
 * the longest-idle one of that address). After the answer, the connection
 * goes back only when the answer was whole, the backend keeps it alive
 * (llhttp_should_keep_alive: HTTP/1.1 without Connection: close, HTTP/1.0
 * with keep-alive, a body not delimited by the close), and no byte came
 * after it. A reused connection may have been closed by the backend an
 * instant ago: when the exchange fails before any byte of the answer came
 * (end of stream, reset, EPIPE), a GET or HEAD is sent once more on a
 * fresh connection to the same address.
 *
 * Deadline and cancellation. Every wait takes rt_ctx_deadline(ctx) and
 * ctx, so a call ends the moment ctx is done; its connection is then
 * closed at once (the backend sees the close) and the call returns
 * rt_ctx_err(ctx), or -ETIMEDOUT when its own deadline timer fired first.
 *
 * Reading. After the write the call waits for readability before its
 * first read (an answer is rarely there already, and a read that ends in
 * EAGAIN is a wasted syscall); after a read that filled its buffer it
 * reads again at once. When a Content-Length body is larger than what came
 * with the head, the rest is read straight into the answer's body. Caps:
 * a Content-Length over max_response_bytes is refused before any body
 * byte is read, and a body growing past it fails too (-EFBIG); so does a
 * header section (status line, fields, trailers) over
 * GW_UPSTREAM_MAX_HEADER_BYTES. The read buffer has a fixed size (llhttp
 * parses bytes as they come, and nothing stays in it between reads); the
 * header scratch grows up to the header cap and is given back after a
 * large answer.
 *
 * Known limit: bytes a backend sends outside an answer are noticed when
 * they arrive together with one (the connection is then not reused); bytes
 * that arrive while the connection is idle would be read as the start of
 * the next answer (llhttp then usually refuses them: -EPROTO). Catching
 * those would cost a syscall per call (libcurl's liveness poll).
 */
#include "upstream_internal.h"

#include "dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#define RBUF_SIZE 4096    /* read buffer per connection */
#define HEAD_STACK 2048   /* request heads up to this are built on the stack */
#define SCRATCH_MIN 512   /* first size of a header scratch */
#define SCRATCH_KEEP 4096 /* a larger scratch is freed after its answer */
#define BODY_MIN_CAP 1024 /* first body buffer when the length is unknown */
#define HOST_MAX 255      /* bytes of a URL host */
#define DEFAULT_PORT 80

typedef struct native_client native_client;
typedef struct host host;
typedef struct pconn pconn;

struct host {
    host *next;                   /* up->hosts */
    pconn *idle_head, *idle_tail; /* LIFO at the head */
    int nidle, nconns;
    char addr[GW_DNS_HOSTPORT_LEN];
};

struct pconn {
    host *h;
    pconn *idle_prev, *idle_next; /* h's idle list */
    pconn *all_prev, *all_next;   /* up->all */
    bool busy;
    rt_ctx *dial_ctx; /* while dialling */
    rt_conn *conn;    /* one reference, owned; NULL while dialling */
    /* The owner's (the call holding it busy), no lock: */
    int64_t created, idle_since;
    bool drained; /* the last read emptied the socket: wait first */
    llhttp_t parser;
    char *scratch; /* header fields, "name\0value\0..." */
    size_t scratch_cap;
    char rbuf[RBUF_SIZE];
};

struct native_client {
    gw_upstream base; /* first: the dispatcher's handle */
    gw_upstream_opts opts;
    int64_t idle_timeout, max_age; /* ns */
    int max_idle;                  /* per address */
    rt_mutex mu;
    host *hosts;          /* under mu */
    pconn *all;           /* under mu */
    _Atomic bool closing; /* written under mu; read anywhere */
    rt_waitgroup calls;   /* one per gw_upstream_do in progress */
    _Atomic uint64_t n_calls, n_cancelled, n_connects;
};

/* A request ready to write. */
typedef struct request {
    struct iovec iov[2]; /* the head, then the body if any */
    int iovcnt;
    char *heap;      /* the head when it did not fit on the stack, owned */
    bool idempotent; /* GET or HEAD: may be sent a second time */
    bool head;       /* HEAD: the answer has no body */
} request;

/* The parts of an http:// URL. */
typedef struct url {
    const char *auth; /* host[:port] as written: the Host header */
    size_t auth_len;
    const char *path; /* from '/' or '?', fragment cut; empty = "/" */
    size_t path_len;
    char host[HOST_MAX + 1]; /* IPv6 without brackets */
    bool v6;
    int port;
} url;

/* One exchange's state; llhttp's callbacks reach it through data. */
typedef struct exchange {
    pconn *pc;
    size_t max_body;
    bool head_req;
    int err; /* set by a callback before it fails the parse */
    int status;
    bool headers_done; /* of the current message (1xx included) */
    bool complete, keep_alive;
    size_t head_bytes; /* header section bytes of the current message */
    size_t scratch_len, value_at, nheaders;
    bool cl_body; /* a final answer with a Content-Length body */
    uint64_t cl;  /* its length */
    char *body;   /* owned until handed to the caller */
    size_t body_len, body_cap;
} exchange;

/* ------------------------------------------------------ URL, request */

static bool is_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_host_char(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* Digits only, 1-65535 (empty: the default port). */
static int parse_port(const char *s, size_t len, int *port)
{
    if (len == 0) {
        *port = DEFAULT_PORT;
        return 0;
    }
    if (len > 5)
        return -EINVAL;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    *port = v;
    return 0;
}

/*
 * Split an absolute http:// URL (scheme in any case). -EINVAL for another
 * scheme (https:// included: the native client speaks plain HTTP only),
 * userinfo, a bad host or port, or a byte that may not go on a request
 * line (controls, space, DEL, non-ASCII).
 */
static int url_parse(const char *s, url *u)
{
    if (strncasecmp(s, "http://", 7) != 0)
        return -EINVAL;
    const char *a = s + 7, *p = a;
    while (*p != '\0' && *p != '/' && *p != '?' && *p != '#')
        p++;
    const char *end = p + strcspn(p, "#");
    for (const char *q = a; q < end; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            return -EINVAL;
    u->auth = a;
    u->auth_len = (size_t)(p - a);
    u->path = p;
    u->path_len = (size_t)(end - p);
    const char *h = a, *hend, *port = p;
    if (*a == '[') {
        const char *rb = memchr(a, ']', u->auth_len);
        if (rb == NULL)
            return -EINVAL;
        h = a + 1;
        hend = rb;
        if (rb + 1 < p && rb[1] != ':')
            return -EINVAL;
        port = rb + 1 < p ? rb + 2 : p;
        u->v6 = true;
    } else {
        const char *colon = memchr(a, ':', u->auth_len);
        hend = colon != NULL ? colon : p;
        port = colon != NULL ? colon + 1 : p;
        u->v6 = false;
        for (const char *q = h; q < hend; q++)
            if (!is_host_char((unsigned char)*q))
                return -EINVAL;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen > HOST_MAX)
        return -EINVAL;
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    unsigned char bin[sizeof(struct in6_addr)];
    if (u->v6 && inet_pton(AF_INET6, u->host, bin) != 1)
        return -EINVAL;
    return parse_port(port, (size_t)(p - port), &u->port);
}

/* A numeric host (or "localhost") as the address to dial, into out. */
static bool numeric_target(const url *u, char *out, size_t len)
{
    unsigned char bin[sizeof(struct in6_addr)];
    int n;
    if (u->v6)
        n = snprintf(out, len, "[%s]:%d", u->host, u->port);
    else if (inet_pton(AF_INET, u->host, bin) == 1)
        n = snprintf(out, len, "%s:%d", u->host, u->port);
    else if (strcasecmp(u->host, "localhost") == 0)
        n = snprintf(out, len, "127.0.0.1:%d", u->port);
    else
        return false;
    return n > 0 && (size_t)n < len;
}

/* "Name: value": a token, a colon, no CR or LF. */
static bool valid_header_line(const char *line)
{
    const char *p = line;
    while (is_tchar((unsigned char)*p))
        p++;
    if (p == line || *p != ':')
        return false;
    return strpbrk(p, "\r\n") == NULL;
}

/* Appends while it fits; len counts everything, so a second pass can
 * size the heap buffer. */
typedef struct putbuf {
    char *p;
    size_t len, cap;
} putbuf;

static void put(putbuf *b, const char *s, size_t n)
{
    if (b->len + n <= b->cap)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_str(putbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_uint(putbuf *b, size_t v)
{
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(b, d + i, sizeof d - i);
}

static void put_head(putbuf *b, const gw_upstream_req *req, const url *u,
                     const char *method, bool with_length)
{
    put_str(b, method);
    put(b, " ", 1);
    if (u->path_len == 0 || u->path[0] != '/')
        put(b, "/", 1);
    put(b, u->path, u->path_len);
    put_str(b, " HTTP/1.1\r\nHost: ");
    put(b, u->auth, u->auth_len);
    put(b, "\r\n", 2);
    for (size_t i = 0; i < req->nheaders; i++) {
        put_str(b, req->headers[i]);
        put(b, "\r\n", 2);
    }
    if (with_length) {
        put_str(b, "Content-Length: ");
        put_uint(b, req->body != NULL ? req->body_len : 0);
        put(b, "\r\n", 2);
    }
    put(b, "\r\n", 2);
}

/*
 * Check the request and format it into stack (stack_len bytes), or into a
 * heap buffer rq->heap owned by rq when it does not fit: request_free().
 * 0, -EINVAL or -ENOMEM.
 */
static int request_build(const gw_upstream_req *req, const url *u, char *stack,
                         size_t stack_len, request *rq)
{
    const char *m = req->method != NULL ? req->method : "GET";
    if (*m == '\0')
        return -EINVAL;
    for (const char *p = m; *p != '\0'; p++)
        if (!is_tchar((unsigned char)*p))
            return -EINVAL;
    if (req->nheaders > 0 && req->headers == NULL)
        return -EINVAL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (req->headers[i] == NULL || !valid_header_line(req->headers[i]))
            return -EINVAL;
    rq->idempotent = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    rq->head = strcmp(m, "HEAD") == 0;
    bool with_length = req->body != NULL || strcmp(m, "POST") == 0 ||
                       strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
    putbuf b = {.p = stack, .cap = stack_len};
    put_head(&b, req, u, m, with_length);
    rq->heap = NULL;
    if (b.len > b.cap) {
        rq->heap = malloc(b.len);
        if (rq->heap == NULL)
            return -ENOMEM;
        b = (putbuf){.p = rq->heap, .cap = b.len};
        put_head(&b, req, u, m, with_length);
    }
    rq->iov[0] = (struct iovec){.iov_base = b.p, .iov_len = b.len};
    rq->iovcnt = 1;
    if (req->body != NULL && req->body_len > 0) {
        rq->iov[1] = (struct iovec){.iov_base = (void *)req->body,
                                    .iov_len = req->body_len};
        rq->iovcnt = 2;
    }
    return 0;
}

static void request_free(request *rq)
{
    free(rq->heap);
    rq->heap = NULL;
}

/* ------------------------------------------------------------- pool */

static host *host_find(native_client *up, const char *addr)
{
    for (host *h = up->hosts; h != NULL; h = h->next)
        if (strcmp(h->addr, addr) == 0)
            return h;
    return NULL;
}

/* Find or make addr's host (owned by up, freed by host_release); NULL
 * when out of memory. Under mu. */
static host *host_get(native_client *up, const char *addr)
{
    host *h = host_find(up, addr);
    if (h != NULL)
        return h;
    size_t len = strlen(addr);
    if (len >= sizeof h->addr || (h = calloc(1, sizeof *h)) == NULL)
        return NULL;
    memcpy(h->addr, addr, len + 1);
    h->next = up->hosts;
    up->hosts = h;
    return h;
}

/* Free h if no connection points to it any more. Under mu. */
static void host_release(native_client *up, host *h)
{
    if (h->nconns > 0)
        return;
    for (host **pp = &up->hosts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            free(h);
            return;
        }
    }
}

static void idle_push(host *h, pconn *pc)
{
    pc->idle_prev = NULL;
    pc->idle_next = h->idle_head;
    if (h->idle_head != NULL)
        h->idle_head->idle_prev = pc;
    else
        h->idle_tail = pc;
    h->idle_head = pc;
    h->nidle++;
}

static void idle_unlink(host *h, pconn *pc)
{
    if (pc->idle_prev != NULL)
        pc->idle_prev->idle_next = pc->idle_next;
    else
        h->idle_head = pc->idle_next;
    if (pc->idle_next != NULL)
        pc->idle_next->idle_prev = pc->idle_prev;
    else
        h->idle_tail = pc->idle_prev;
    pc->idle_prev = pc->idle_next = NULL;
    h->nidle--;
}

static void all_link(native_client *up, pconn *pc)
{
    pc->all_prev = NULL;
    pc->all_next = up->all;
    if (up->all != NULL)
        up->all->all_prev = pc;
    up->all = pc;
}

/* Take pc out of the client (not out of an idle list: the caller did);
 * its host may then be released. Under mu. */
static void detach(native_client *up, pconn *pc)
{
    if (pc->all_prev != NULL)
        pc->all_prev->all_next = pc->all_next;
    else
        up->all = pc->all_next;
    if (pc->all_next != NULL)
        pc->all_next->all_prev = pc->all_prev;
    pc->all_prev = NULL;
    pc->all_next = NULL;
    pc->h->nconns--;
}

/* Close and free a detached connection (its socket too). Not under mu. */
static void pconn_destroy(pconn *pc)
{
    if (pc->conn != NULL)
        rt_conn_release(pc->conn);
    free(pc->scratch);
    free(pc);
}

/* Destroy a list of detached connections linked through idle_next. */
static void destroy_list(pconn *pc)
{
    while (pc != NULL) {
        pconn *next = pc->idle_next;
        pconn_destroy(pc);
        pc = next;
    }
}

static bool expired(const native_client *up, const pconn *pc, int64_t now)
{
    return now - pc->idle_since >= up->idle_timeout ||
           now - pc->created >= up->max_age;
}

/* An idle connection to addr that still looks alive, taken busy (the
 * caller owns it until pool_give_back); NULL when there is none. The dead
 * and expired ones met on the way are destroyed. */
static pconn *pool_take(native_client *up, const char *addr)
{
    pconn *doomed = NULL, *pc = NULL;
    int64_t now = rt_now();
    rt_mutex_lock(&up->mu);
    host *h = host_find(up, addr);
    while (h != NULL && (pc = h->idle_head) != NULL) {
        idle_unlink(h, pc);
        if (!expired(up, pc, now) && !rt_conn_peer_gone(pc->conn)) {
            pc->busy = true;
            break;
        }
        detach(up, pc);
        pc->idle_next = doomed;
        doomed = pc;
        pc = NULL;
    }
    if (h != NULL)
        host_release(up, h);
    rt_mutex_unlock(&up->mu);
    destroy_list(doomed);
    return pc;
}

/*
 * Give back a connection its call is done with (the caller's ownership
 * ends): into the idle list when keep says it can serve again and there
 * is room, else destroyed. Also sweeps the address's longest-idle
 * connections that have expired.
 */
static void pool_give_back(native_client *up, pconn *pc, bool keep)
{
    pconn *doomed = NULL;
    int64_t now = rt_now();
    rt_mutex_lock(&up->mu);
    host *h = pc->h;
    pc->busy = false;
    if (keep && !atomic_load(&up->closing) && h->nidle < up->max_idle &&
        now - pc->created < up->max_age) {
        pc->idle_since = now;
        idle_push(h, pc);
    } else {
        detach(up, pc);
        pc->idle_next = doomed;
        doomed = pc;
    }
    pconn *t;
    while ((t = h->idle_tail) != NULL && expired(up, t, now)) {
        idle_unlink(h, t);
        detach(up, t);
        t->idle_next = doomed;
        doomed = t;
    }
    host_release(up, h);
    rt_mutex_unlock(&up->mu);
    destroy_list(doomed);
}

/*
 * A new connection to addr, taken busy: the caller owns it until it hands
 * it to pool_give_back. The dial runs under a child of ctx that
 * gw_upstream_free cancels. Returns 0 or rt_dial's error (-ECANCELED when
 * the client is closing, -ENOMEM).
 */
static int pool_dial(native_client *up, const char *addr, rt_ctx *ctx,
                     int64_t deadline, pconn **out)
{
    *out = NULL;
    int err = -ENOMEM;
    pconn *pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        goto fail;
    rt_ctx *dctx = rt_ctx_with_cancel(ctx != NULL ? ctx : rt_ctx_background());
    if (dctx == NULL)
        goto fail_pc;
    rt_mutex_lock(&up->mu);
    host *h = NULL;
    if (atomic_load(&up->closing) || (h = host_get(up, addr)) == NULL) {
        err = atomic_load(&up->closing) ? -ECANCELED : -ENOMEM;
        rt_mutex_unlock(&up->mu);
        goto fail_ctx;
    }
    h->nconns++;
    pc->h = h;
    pc->busy = true;
    pc->dial_ctx = dctx;
    all_link(up, pc);
    rt_mutex_unlock(&up->mu);

    rt_conn *c = NULL;
    err = rt_dial(addr, &c, deadline, dctx);
    rt_mutex_lock(&up->mu);
    pc->dial_ctx = NULL;
    pc->conn = c;
    if (err == 0 && atomic_load(&up->closing))
        err = -ECANCELED; /* free ran before conn was visible to it */
    rt_mutex_unlock(&up->mu);
    rt_ctx_release(dctx);
    if (err != 0) {
        pool_give_back(up, pc, false); /* detaches and destroys it */
        return err;
    }
    atomic_fetch_add(&up->n_connects, 1);
    pc->created = rt_now();
    pc->drained = true;
    *out = pc;
    return 0;

fail_ctx:
    rt_ctx_release(dctx);
fail_pc:
    free(pc);
fail:
    return err;
}

/* ------------------------------------------------ the answer (llhttp) */

static exchange *ex_of(llhttp_t *p)
{
    return p->data;
}

static int fail_parse(exchange *x, int err)
{
    if (x->err == 0)
        x->err = err;
    return -1;
}

/* Count n bytes of the header section against its cap. */
static int count_head(exchange *x, size_t n)
{
    x->head_bytes += n;
    if (x->head_bytes > GW_UPSTREAM_MAX_HEADER_BYTES)
        return fail_parse(x, -EFBIG);
    return 0;
}

static int scratch_put(exchange *x, const char *s, size_t n)
{
    pconn *pc = x->pc;
    if (x->scratch_len + n + 1 > GW_UPSTREAM_MAX_HEADER_BYTES)
        return fail_parse(x, -EFBIG);
    if (x->scratch_len + n > pc->scratch_cap) {
        size_t cap = pc->scratch_cap != 0 ? pc->scratch_cap : SCRATCH_MIN;
        while (cap < x->scratch_len + n)
            cap *= 2;
        char *b = realloc(pc->scratch, cap);
        if (b == NULL)
            return fail_parse(x, -ENOMEM);
        pc->scratch = b;
        pc->scratch_cap = cap;
    }
    if (n > 0)
        memcpy(pc->scratch + x->scratch_len, s, n);
    x->scratch_len += n;
    return 0;
}

/* A message starts (a 1xx answer and the final one each start one): its
 * header fields replace the previous ones'. */
static int on_message_begin(llhttp_t *p)
{
    exchange *x = ex_of(p);
    x->scratch_len = 0;
    x->nheaders = 0;
    x->head_bytes = 0;
    x->headers_done = false;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    return count_head(ex_of(p), len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    exchange *x = ex_of(p);
    if (count_head(x, len) != 0)
        return -1;
    return x->headers_done ? 0 : scratch_put(x, at, len); /* trailers: no */
}

static int on_header_field_complete(llhttp_t *p)
{
    exchange *x = ex_of(p);
    if (x->headers_done)
        return 0;
    if (scratch_put(x, "", 1) != 0)
        return -1;
    x->value_at = x->scratch_len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    exchange *x = ex_of(p);
    if (count_head(x, len) != 0)
        return -1;
    return x->headers_done ? 0 : scratch_put(x, at, len);
}

/* The value is whole: trim it (spaces and tabs) and close it. */
static int on_header_value_complete(llhttp_t *p)
{
    exchange *x = ex_of(p);
    if (x->headers_done)
        return 0;
    char *v = x->pc->scratch + x->value_at;
    size_t len = x->scratch_len - x->value_at, skip = 0;
    while (skip < len && (v[skip] == ' ' || v[skip] == '\t'))
        skip++;
    while (len > skip && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (skip > 0)
        memmove(v, v + skip, len - skip);
    x->scratch_len = x->value_at + len - skip;
    if (scratch_put(x, "", 1) != 0)
        return -1;
    x->nheaders++;
    return 0;
}

/* The head of a message is in. Returns 1 (no body) for a HEAD request's
 * final answer; refuses a 101 and a Content-Length over the cap. */
static int on_headers_complete(llhttp_t *p)
{
    exchange *x = ex_of(p);
    x->status = llhttp_get_status_code(p);
    x->headers_done = true;
    if (x->status == 101)
        return fail_parse(x, -EPROTO); /* never asked to switch */
    if (x->status < 200)
        return 0; /* interim: llhttp reads the next message */
    if (x->head_req)
        return 1;
    if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) &&
        x->status != 204 && x->status != 304) {
        if (p->content_length > x->max_body)
            return fail_parse(x, -EFBIG);
        x->cl_body = true;
        x->cl = p->content_length;
        x->body = malloc((size_t)x->cl + 1);
        if (x->body == NULL)
            return fail_parse(x, -ENOMEM);
        x->body_cap = (size_t)x->cl + 1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    exchange *x = ex_of(p);
    if (len > x->max_body - x->body_len)
        return fail_parse(x, -EFBIG);
    if (x->body_len + len + 1 > x->body_cap) {
        size_t cap = x->body_cap != 0 ? x->body_cap : BODY_MIN_CAP;
        while (cap < x->body_len + len + 1)
            cap = cap <= x->max_body / 2 ? cap * 2 : x->max_body + 1;
        char *b = realloc(x->body, cap);
        if (b == NULL)
            return fail_parse(x, -ENOMEM);
        x->body = b;
        x->body_cap = cap;
    }
    /* Bytes read straight into the body are already in place. */
    if (at != x->body + x->body_len)
        memcpy(x->body + x->body_len, at, len);
    x->body_len += len;
    return 0;
}

/* The final answer is whole: pause, so that llhttp stops right after it. */
static int on_message_complete(llhttp_t *p)
{
    exchange *x = ex_of(p);
    if (x->status < 200)
        return 0;
    x->complete = true;
    x->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static const llhttp_settings_t parse_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------- one exchange */

/* End of stream: the end of an answer delimited by the close, or a
 * connection closed before (or in the middle of) the answer. */
static int read_eof(exchange *x, bool answered)
{
    if (!answered)
        return -ECONNRESET;
    llhttp_errno_t e = llhttp_finish(&x->pc->parser);
    if ((e == HPE_OK || e == HPE_PAUSED) && x->complete) {
        x->keep_alive = false;
        return 0;
    }
    return x->err != 0 ? x->err : -ECONNRESET;
}

/* Read and parse until the answer is whole. *answered: a byte came. */
static int read_answer(exchange *x, int64_t deadline, rt_ctx *ctx,
                       bool *answered)
{
    pconn *pc = x->pc;
    for (;;) {
        int err = 0;
        if (pc->drained)
            err = rt_conn_wait(pc->conn, RT_READ, deadline, ctx);
        else if (ctx != NULL && rt_ctx_err(ctx) != 0)
            err = -ECANCELED; /* a fast stream must not outrun ctx */
        else if (deadline != RT_FOREVER && rt_now() >= deadline)
            err = -ETIMEDOUT;
        if (err != 0)
            return err;
        char *dst = pc->rbuf;
        size_t want = sizeof pc->rbuf;
        if (x->cl_body && x->body_len < x->cl) {
            dst = x->body + x->body_len; /* the rest of the body, in place */
            want = (size_t)x->cl - x->body_len;
        }
        ssize_t n = rt_conn_try_read(pc->conn, dst, want);
        if (n == -EAGAIN) {
            pc->drained = true;
            continue;
        }
        if (n < 0)
            return (int)n;
        if (n == 0)
            return read_eof(x, *answered);
        *answered = true;
        pc->drained = (size_t)n < want;
        llhttp_errno_t e = llhttp_execute(&pc->parser, dst, (size_t)n);
        if (e == HPE_OK)
            continue;
        if (e == HPE_PAUSED && x->complete) {
            if (llhttp_get_error_pos(&pc->parser) != dst + n)
                x->keep_alive = false; /* bytes after the answer */
            pc->drained = true;
            return 0;
        }
        return x->err != 0 ? x->err : -EPROTO;
    }
}

/* Move the answer into *resp (the caller's from now on). */
static int take_answer(exchange *x, gw_upstream_resp *resp)
{
    if (x->body == NULL) {
        x->body = malloc(1);
        if (x->body == NULL)
            return -ENOMEM;
    }
    char *headers = malloc(x->scratch_len + 1);
    if (headers == NULL)
        return -ENOMEM;
    if (x->scratch_len > 0)
        memcpy(headers, x->pc->scratch, x->scratch_len);
    headers[x->scratch_len] = '\0';
    x->body[x->body_len] = '\0';
    resp->status = x->status;
    resp->body = x->body;
    resp->body_len = x->body_len;
    resp->headers = headers;
    resp->nheaders = x->nheaders;
    x->body = NULL;
    return 0;
}

/*
 * Write the request on pc and read the answer into *resp. Returns 0 or
 * the raw error (a runtime socket error, -ECONNRESET for a close before
 * the answer was whole, -EPROTO, -EFBIG, -ENOMEM). *answered: a byte of
 * the answer came; *keep: pc may serve another call. On a deadline or a
 * cancellation the socket is closed here, at once.
 */
static int exchange_run(pconn *pc, const request *rq, size_t max_body,
                        int64_t deadline, rt_ctx *ctx, gw_upstream_resp *resp,
                        bool *answered, bool *keep)
{
    exchange x = {.pc = pc, .max_body = max_body, .head_req = rq->head};
    llhttp_init(&pc->parser, HTTP_RESPONSE, &parse_settings);
    pc->parser.data = &x;
    *answered = false;
    ssize_t n = rt_conn_writev(pc->conn, rq->iov, rq->iovcnt, deadline, ctx);
    int err = n < 0 ? (int)n : read_answer(&x, deadline, ctx, answered);
    if (err == 0)
        err = take_answer(&x, resp);
    if (err == -ETIMEDOUT || err == -ECANCELED)
        rt_conn_close(pc->conn); /* the backend sees it now */
    *keep = err == 0 && x.keep_alive;
    free(x.body);
    if (pc->scratch_cap > SCRATCH_KEEP) {
        free(pc->scratch);
        pc->scratch = NULL;
        pc->scratch_cap = 0;
    }
    return err;
}

/* ------------------------------------------------------------- calls */

/* A raw error as one of upstream.h's. */
static int map_error(native_client *up, rt_ctx *ctx, int err)
{
    if (atomic_load(&up->closing))
        return -ECANCELED;
    switch (err) {
    case -ETIMEDOUT:
    case -ECANCELED: {
        atomic_fetch_add(&up->n_cancelled, 1);
        int cerr = ctx != NULL ? rt_ctx_err(ctx) : 0;
        return cerr != 0 ? cerr : -ETIMEDOUT;
    }
    case -ECONNREFUSED:
    case -EHOSTUNREACH:
    case -EPROTO:
    case -EFBIG:
    case -EINVAL:
    case -ENOMEM:
        return err;
    case -ENETUNREACH:
    case -EHOSTDOWN:
    case -ENETDOWN:
        return -EHOSTUNREACH;
    case -ECONNRESET:
    case -EPIPE:
    case -ECONNABORTED:
    case -ENOTCONN:
    case -ESHUTDOWN:
        return -ECONNRESET;
    case -ENOBUFS:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* The backend closed a kept-alive connection meanwhile? */
static bool stale(int err, bool reused, bool answered)
{
    return reused && !answered && (err == -ECONNRESET || err == -EPIPE);
}

/*
 * The request to one address: a pooled connection or a new one, and on a
 * reused connection that turns out to be stale, a GET or HEAD once more on
 * a fresh one.
 */
static int call_addr(native_client *up, const char *addr, const request *rq,
                     int64_t deadline, rt_ctx *ctx, gw_upstream_resp *resp)
{
    bool fresh = false;
    for (;;) {
        pconn *pc = fresh ? NULL : pool_take(up, addr);
        bool reused = pc != NULL;
        int err = 0;
        if (pc == NULL)
            err = pool_dial(up, addr, ctx, deadline, &pc);
        if (err != 0)
            return map_error(up, ctx, err);
        bool answered, keep;
        err = exchange_run(pc, rq, up->opts.max_response_bytes, deadline, ctx,
                           resp, &answered, &keep);
        pool_give_back(up, pc, keep);
        if (err == 0)
            return 0;
        if (!fresh && rq->idempotent && stale(err, reused, answered) &&
            !atomic_load(&up->closing) &&
            (ctx == NULL || rt_ctx_err(ctx) == 0) && rt_now() < deadline) {
            fresh = true;
            continue;
        }
        return map_error(up, ctx, err);
    }
}

/* The addresses of u: connect_to, a numeric host, or the resolver's. */
static int call_url(native_client *up, const gw_upstream_req *req, const url *u,
                    const request *rq, int64_t deadline, rt_ctx *ctx,
                    gw_upstream_resp *resp)
{
    char addr[GW_DNS_HOSTPORT_LEN];
    if (req->connect_to != NULL) {
        if (gw__upstream_check_addr(req->connect_to) != 0 ||
            strlen(req->connect_to) >= sizeof addr)
            return -EINVAL;
        return call_addr(up, req->connect_to, rq, deadline, ctx, resp);
    }
    if (numeric_target(u, addr, sizeof addr))
        return call_addr(up, addr, rq, deadline, ctx, resp);
    if (up->opts.resolver == NULL)
        return -EHOSTUNREACH;
    gw_dns_addrs *addrs;
    int err = gw_dns_resolve(up->opts.resolver, ctx, u->host, &addrs, NULL);
    if (err != 0) {
        int cerr = ctx != NULL ? rt_ctx_err(ctx) : 0;
        return cerr != 0 ? cerr : -EHOSTUNREACH;
    }
    /* Round-robin over the name's addresses; a refused connection tries
     * the next one once (the deadline still bounds both). */
    size_t tries = addrs->n > 1 ? 2 : 1;
    const struct sockaddr_storage *sa = gw_dns_pick(addrs);
    for (size_t i = 0; i < tries; i++, sa = gw_dns_next(addrs, sa)) {
        if (gw_dns_hostport(sa, u->port, addr, sizeof addr) != 0) {
            err = -EHOSTUNREACH;
            break;
        }
        err = call_addr(up, addr, rq, deadline, ctx, resp);
        if (err != -ECONNREFUSED)
            break;
    }
    gw_dns_addrs_release(addrs);
    return err;
}

static int native_do(gw_upstream *base, const gw_upstream_req *req, rt_ctx *ctx,
                     gw_upstream_resp *resp)
{
    native_client *up = (native_client *)base;
    url u;
    int err = url_parse(req->url, &u);
    if (err != 0)
        return err;
    if (req->connect_to != NULL && gw__upstream_check_addr(req->connect_to))
        return -EINVAL;
    if ((err = ctx != NULL ? rt_ctx_err(ctx) : 0) != 0)
        return err;
    int64_t deadline = ctx != NULL ? rt_ctx_deadline(ctx) : RT_FOREVER;
    if (deadline <= rt_now())
        return -ETIMEDOUT;
    char stack[HEAD_STACK];
    request rq;
    if ((err = request_build(req, &u, stack, sizeof stack, &rq)) != 0)
        return err;
    rt_waitgroup_add(&up->calls, 1);
    if (atomic_load(&up->closing)) {
        err = -ECANCELED;
    } else {
        atomic_fetch_add(&up->n_calls, 1);
        err = call_url(up, req, &u, &rq, deadline, ctx, resp);
    }
    rt_waitgroup_done(&up->calls);
    request_free(&rq);
    return err;
}

/* ------------------------------------------------------------ client */

static void native_free(gw_upstream *base)
{
    native_client *up = (native_client *)base;
    pconn *doomed = NULL;
    rt_mutex_lock(&up->mu);
    atomic_store(&up->closing, true);
    for (pconn *pc = up->all, *next; pc != NULL; pc = next) {
        next = pc->all_next;
        if (!pc->busy) {
            host *h = pc->h;
            idle_unlink(h, pc);
            detach(up, pc);
            host_release(up, h);
            pc->idle_next = doomed;
            doomed = pc;
            continue;
        }
        /* In use: its call wakes with -EBADF (or -ECANCELED) and gives
         * it back, which destroys it since closing is set. */
        if (pc->dial_ctx != NULL)
            rt_ctx_cancel(pc->dial_ctx);
        if (pc->conn != NULL)
            rt_conn_close(pc->conn);
    }
    rt_mutex_unlock(&up->mu);
    destroy_list(doomed);
    rt_waitgroup_wait(&up->calls);
    /* Every call has given its connection back: nothing is left. */
    free(up);
}

static void native_stats(gw_upstream *base, gw_upstream_stats *out)
{
    native_client *up = (native_client *)base;
    out->calls = atomic_load(&up->n_calls);
    out->cancelled = atomic_load(&up->n_cancelled);
    out->connects = atomic_load(&up->n_connects);
}

static const gw__upstream_ops native_ops = {
    .call = native_do,
    .free = native_free,
    .stats = native_stats,
};

/* opts were validated and defaulted by the dispatcher (upstream.c). */
int gw__upstream_native_new(const gw_upstream_opts *opts, gw_upstream **out)
{
    *out = NULL;
    native_client *up = calloc(1, sizeof *up);
    if (up == NULL)
        return -ENOMEM;
    up->base.ops = &native_ops;
    up->opts = *opts;
    up->opts.ca_file = NULL; /* not used, not kept */
    int idle_ms = opts->idle_timeout_ms > 0
                      ? opts->idle_timeout_ms
                      : GW_UPSTREAM_DEFAULT_IDLE_TIMEOUT_MS;
    int age_ms = opts->max_connection_age_ms > 0
                     ? opts->max_connection_age_ms
                     : GW_UPSTREAM_DEFAULT_MAX_CONNECTION_AGE_MS;
    up->idle_timeout = idle_ms * RT_MSEC;
    up->max_age = age_ms * RT_MSEC;
    up->max_idle = opts->max_idle_connections > 0 ? opts->max_idle_connections
                   : opts->max_host_connections > 0
                       ? opts->max_host_connections
                       : GW_UPSTREAM_DEFAULT_MAX_IDLE;
    *out = &up->base;
    return 0;
}
