/*
 * upstream_curl.c — the libcurl client behind upstream.h (GW_UPSTREAM_CURL):
 * backend HTTP calls over libcurl's multi_socket API, driven by the
 * runtime's netpoller (design and measurements: gateway/README.md). The
 * dispatcher (upstream.c) validates the options and calls in here through
 * gw__upstream_ops; upstream_native.c is the other client.
 *
 * Shape. A gw_upstream owns one or more shards. A shard is one CURLM and
 * the gw_driver (driver.c) whose goroutine owns it: the sockets libcurl
 * asks for (CURLMOPT_SOCKETFUNCTION, on_socket) go into the driver's epoll
 * set with gw_driver_watch, libcurl's timer (CURLMOPT_TIMERFUNCTION,
 * on_timer) becomes the driver's deadline, each ready socket and the
 * expired timer go to curl_multi_socket_action (drv_ready, drv_timeout),
 * and after every round completed transfers come out of
 * curl_multi_info_read (drv_round). Only the driver goroutine ever touches
 * the CURLM (and an easy handle while it is added to it): a goroutine runs
 * on one thread at a time, which is libcurl's rule for a multi handle.
 *
 * A call (struct call) carries an easy handle, its reply channel and the
 * growing body and header buffers. Calls are pooled per client with the
 * reply channel and the buffers; the easy handle is made anew for every
 * call (see call_put: curl_easy_reset is not enough with libcurl 7.88).
 *
 * Ownership of a call moves between two goroutines:
 *   caller: takes a call from the pool, configures the easy handle, pushes
 *           call->submit on the driver's queue (gw_driver_push); from then
 *           on the driver owns the easy handle and the buffers, until it
 *           sends MSG_FINAL on call->reply. The caller then reads the
 *           result, and puts the call back into the pool.
 *   driver: takes the node (drv_queued), curl_multi_add_handle; on
 *           completion or cancellation curl_multi_remove_handle, then
 *           MSG_FINAL. After MSG_FINAL the driver touches the call again
 *           only to answer a cancel node that was queued for it (MSG_ACK),
 *           and the caller waits for that ACK, so no memory is shared once
 *           gw_upstream_do returns.
 * Cancellation: the caller selects on call->reply and rt_ctx_done(ctx).
 * When ctx wins it pushes call->cancel and waits for MSG_ACK. The driver
 * then removes a still-running transfer (libcurl closes a connection that
 * is mid-transfer, so the backend sees the close) and answers
 * MSG_FINAL|MSG_ACK; for a call already finished it answers MSG_ACK only.
 * The reply channel holds 2 messages, so the driver never blocks on it.
 *
 * The driver's queue hands nodes over in push order, so a call's submit
 * is always handled before its cancel; a push costs no syscall while the
 * driver is busy. gw_upstream_free stops the drivers, which closes their
 * queues: a later push fails, and the caller knows the driver has already
 * answered (or will answer) MSG_FINAL: nodes queued before the close are
 * answered with closing set (a submit with -ECANCELED), transfers still in
 * the multi are finished with -ECANCELED by drv_stopped.
 *
 * Lifetime: gw_upstream_free stops every driver (gw_driver_stop: in-flight
 * calls get -ECANCELED, the multi is cleaned up on the driver, the driver
 * has ended), waits for every gw_upstream_do still returning (up->calls;
 * one may still be pushing a cancel), then frees the drivers, the pool
 * and the client.
 *
 * Fields are owned as follows: shard.multi, active list, call.state:
 * driver only. call.submit/cancel nodes: the driver's queue. up->pool:
 * pool_mu. Counters: atomics.
 */
#include "upstream_internal.h"

#include "dns.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "driver.h"

#define DRIVER_STACK (512 * 1024) /* libcurl + OpenSSL run deep */
#define POOL_MAX 256 /* idle calls kept per client (easy handle + buffers) */
#define BODY_MIN_CAP 1024
#define HEADER_MIN_CAP 512
#define CONNECT_TO_MAX 128 /* "::" + "[v6]:port" */

enum { MSG_FINAL = 1, MSG_ACK = 2 };
enum { NODE_SUBMIT, NODE_CANCEL };
enum { CALL_QUEUED, CALL_ACTIVE, CALL_DONE };

/* A call's node on the driver's queue: its submit or its cancel. */
typedef struct qnode {
    gw_driver_node link;
    int kind;
} qnode;

typedef struct shard shard;
typedef struct curl_client curl_client;

struct call {
    qnode submit, cancel;
    CURL *easy;
    rt_chan *reply; /* int messages, capacity 2 */
    struct curl_slist *hdrs, *connect_to;
    int state;                /* driver only */
    struct call *prev, *next; /* driver's active list */
    CURLcode code;            /* set by the driver before MSG_FINAL */
    int result;               /* a driver-side failure (-ENOMEM, -ECANCELED) */
    bool too_big, oom;        /* set by the write / header callbacks */
    size_t max_body;
    char *body;
    size_t body_len, body_cap;
    char *hbuf; /* "name\0value\0"... */
    size_t hbuf_len, hbuf_cap, nheaders;
    struct call *pool_next;
};

struct shard {
    curl_client *up;
    gw_driver *drv;      /* owns multi once started; gw_upstream_free stops */
    CURLM *multi;        /* driver only */
    struct call *active; /* driver only: transfers in the multi */
};

struct curl_client {
    gw_upstream base; /* first: the dispatcher's handle */
    gw_upstream_opts opts;
    char *ca_file;
    shard *shards;
    size_t nshards;
    _Atomic size_t rr;
    rt_waitgroup calls; /* one per gw_upstream_do in progress */
    rt_mutex pool_mu;
    struct call *pool; /* under pool_mu */
    size_t pool_len;   /* under pool_mu */
    _Atomic uint64_t n_calls, n_cancelled, n_connects;
};

/* ----------------------------------------------------------- libcurl */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------ callbacks (driver) */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t len = size * nmemb;
    if (len > c->max_body - c->body_len) {
        c->too_big = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap != 0 ? c->body_cap : BODY_MIN_CAP;
        if (c->body_cap == 0) {
            curl_off_t cl = -1;
            curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            if (cl > 0 && (uint64_t)cl <= c->max_body)
                cap = (size_t)cl + 1;
        }
        while (cap < c->body_len + len + 1)
            cap = cap <= c->max_body / 2 ? cap * 2 : c->max_body + 1;
        char *b = realloc(c->body, cap);
        if (b == NULL) {
            c->oom = true;
            return 0;
        }
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
    return len;
}

static bool hbuf_append(struct call *c, const char *s, size_t len)
{
    if (c->hbuf_len + len + 1 > c->hbuf_cap) {
        size_t cap = c->hbuf_cap != 0 ? c->hbuf_cap : HEADER_MIN_CAP;
        while (cap < c->hbuf_len + len + 1)
            cap *= 2;
        char *b = realloc(c->hbuf, cap);
        if (b == NULL) {
            c->oom = true;
            return false;
        }
        c->hbuf = b;
        c->hbuf_cap = cap;
    }
    memcpy(c->hbuf + c->hbuf_len, s, len);
    c->hbuf[c->hbuf_len + len] = '\0';
    c->hbuf_len += len + 1;
    return true;
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && strchr(" \t\r\n", (*s)[*len - 1]) != NULL)
        (*len)--;
}

/* One header line of the answer. A status line starts a new header
 * section (after 1xx answers only the last one counts). */
static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t len = size * nmemb;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        c->hbuf_len = 0;
        c->nheaders = 0;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || line[0] == ' ' || line[0] == '\t')
        return len; /* the empty line, or something we do not keep */
    const char *name = line, *value = colon + 1;
    size_t nlen = (size_t)(colon - line), vlen = len - nlen - 1;
    trim(&name, &nlen);
    trim(&value, &vlen);
    if (c->hbuf_len + nlen + vlen + 2 > GW_UPSTREAM_MAX_HEADER_BYTES) {
        c->too_big = true;
        return 0;
    }
    if (!hbuf_append(c, name, nlen) || !hbuf_append(c, value, vlen))
        return 0;
    c->nheaders++;
    return len;
}

/* CURLMOPT_SOCKETFUNCTION (driver goroutine): mirror libcurl's interest
 * in s into the driver's epoll set. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *arg,
                     void *sockp)
{
    (void)easy;
    (void)sockp;
    shard *sh = arg;
    unsigned interest = 0;
    if (what != CURL_POLL_REMOVE)
        interest = ((what & CURL_POLL_IN) ? GW_DRIVER_READ : 0u) |
                   ((what & CURL_POLL_OUT) ? GW_DRIVER_WRITE : 0u);
    int err = gw_driver_watch(sh->drv, s, interest);
    if (err != 0 && interest != 0)
        return -1; /* libcurl fails the transfer */
    return 0;
}

/* CURLMOPT_TIMERFUNCTION (driver goroutine): libcurl's timer is the
 * driver's deadline. */
static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
    (void)multi;
    shard *sh = arg;
    gw_driver_set_deadline(
        sh->drv, timeout_ms < 0 ? RT_FOREVER : rt_now() + timeout_ms * RT_MSEC);
    return 0;
}

/* ------------------------------------------------------------ driver */

static void reply(struct call *c, int msg)
{
    /* Capacity 2 and at most 2 messages per call: a full channel is a bug
     * in this file, and going on would lose a caller for good. */
    if (!rt_chan_trysend(c->reply, &msg)) {
        fputs("fanfold: upstream: reply channel full (a bug)\n", stderr);
        abort(); /* panic path */
    }
}

static void active_link(shard *sh, struct call *c)
{
    c->prev = NULL;
    c->next = sh->active;
    if (sh->active != NULL)
        sh->active->prev = c;
    sh->active = c;
}

static void active_unlink(shard *sh, struct call *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        sh->active = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Take an active transfer out of the multi; MSG_FINAL goes with msg. */
static void finish(shard *sh, struct call *c, CURLcode code, int result,
                   int msg)
{
    curl_multi_remove_handle(sh->multi, c->easy);
    active_unlink(sh, c);
    c->state = CALL_DONE;
    c->code = code;
    c->result = result;
    reply(c, msg | MSG_FINAL);
}

/* A call's submit or cancel; closing: the client is being freed. */
static void drv_queued(void *arg, gw_driver_node *link, bool closing)
{
    shard *sh = arg;
    qnode *n = (qnode *)((char *)link - offsetof(qnode, link));
    if (n->kind == NODE_SUBMIT) {
        struct call *c =
            (struct call *)((char *)n - offsetof(struct call, submit));
        if (closing) {
            c->state = CALL_DONE;
            c->result = -ECANCELED;
            reply(c, MSG_FINAL);
            return;
        }
        CURLMcode mc = curl_multi_add_handle(sh->multi, c->easy);
        if (mc != CURLM_OK) {
            c->state = CALL_DONE;
            c->result = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
            reply(c, MSG_FINAL);
            return;
        }
        c->state = CALL_ACTIVE;
        active_link(sh, c);
        return;
    }
    struct call *c = (struct call *)((char *)n - offsetof(struct call, cancel));
    if (c->state == CALL_ACTIVE) {
        atomic_fetch_add(&sh->up->n_cancelled, 1);
        finish(sh, c, CURLE_OK, -ECANCELED, MSG_ACK);
    } else {
        reply(c, MSG_ACK);
    }
}

/* A socket is ready: hand it to libcurl. */
static void drv_ready(void *arg, int fd, unsigned events)
{
    shard *sh = arg;
    int running;
    int flags =
        ((events & (GW_DRIVER_READ | GW_DRIVER_HUP)) ? CURL_CSELECT_IN : 0) |
        ((events & GW_DRIVER_WRITE) ? CURL_CSELECT_OUT : 0) |
        ((events & GW_DRIVER_ERR) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(sh->multi, fd, flags, &running);
}

/* libcurl's timer expired. */
static void drv_timeout(void *arg)
{
    shard *sh = arg;
    int running;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
}

/* After each round: answer every transfer libcurl has finished. */
static void drv_round(void *arg)
{
    shard *sh = arg;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(sh->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct call *c = NULL;
        CURLcode code = m->data.result; /* m dies with remove_handle */
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        finish(sh, c, code, 0, 0);
    }
}

/* The driver's last call, after the closed queue was drained: cancel what
 * is still in the multi and close the pooled connections. */
static void drv_stopped(void *arg)
{
    shard *sh = arg;
    while (sh->active != NULL)
        finish(sh, sh->active, CURLE_OK, -ECANCELED, 0);
    curl_multi_cleanup(sh->multi);
    sh->multi = NULL;
}

static const gw_driver_ops driver_ops = {
    .queued = drv_queued,
    .ready = drv_ready,
    .timeout = drv_timeout,
    .round = drv_round,
    .stopped = drv_stopped,
};

/* ------------------------------------------------------- client setup */

/* Make sh's multi and start its driver, which owns the multi from then
 * on; on failure nothing is left to undo. */
static int shard_init(curl_client *up, shard *sh)
{
    const gw_upstream_opts *o = &up->opts;
    sh->up = up;
    sh->multi = curl_multi_init();
    if (sh->multi == NULL)
        return -ENOMEM;
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    if (o->max_host_connections > 0) {
        long per = (o->max_host_connections + (long)up->nshards - 1) /
                   (long)up->nshards;
        curl_multi_setopt(sh->multi, CURLMOPT_MAX_HOST_CONNECTIONS, per);
    }
    long idle = o->max_idle_connections > 0 ? o->max_idle_connections
                                            : o->max_host_connections;
    if (idle > 0)
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, idle);
    int err = gw_driver_start(&driver_ops, sh, DRIVER_STACK, &sh->drv);
    if (err != 0) {
        curl_multi_cleanup(sh->multi); /* no transfer, no socket yet */
        sh->multi = NULL;
    }
    return err;
}

static const gw__upstream_ops curl_ops;

/* opts were validated and defaulted by the dispatcher (upstream.c). */
int gw__upstream_curl_new(const gw_upstream_opts *opts, gw_upstream **out)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return -ENOMEM;
    curl_client *up = calloc(1, sizeof *up);
    if (up == NULL)
        return -ENOMEM;
    up->base.ops = &curl_ops;
    up->opts = *opts;
    int err = -ENOMEM;
    if (up->opts.ca_file != NULL) {
        up->ca_file = strdup(up->opts.ca_file);
        if (up->ca_file == NULL)
            goto fail_up;
    }
    up->opts.ca_file = up->ca_file;
    up->nshards = up->opts.drivers > 0 ? (size_t)up->opts.drivers : 1;
    up->shards = calloc(up->nshards, sizeof *up->shards);
    if (up->shards == NULL)
        goto fail_ca;
    size_t i;
    for (i = 0; i < up->nshards; i++) {
        err = shard_init(up, &up->shards[i]);
        if (err != 0)
            goto fail_shards;
    }
    *out = &up->base;
    return 0;

fail_shards:
    while (i-- > 0)
        gw_driver_free(up->shards[i].drv); /* cleans up its multi */
    free(up->shards);
fail_ca:
    free(up->ca_file);
fail_up:
    free(up);
    return err;
}

static void call_destroy(struct call *c)
{
    curl_easy_cleanup(c->easy);
    rt_chan_free(c->reply);
    free(c->body);
    free(c->hbuf);
    free(c);
}

static void curl_free_client(gw_upstream *base)
{
    curl_client *up = (curl_client *)base;
    for (size_t i = 0; i < up->nshards; i++)
        gw_driver_stop(up->shards[i].drv); /* in-flight calls: -ECANCELED */
    /* A call that saw its context end may still be pushing a cancel (it
     * fails: the queues are closed); only then may the drivers go. */
    rt_waitgroup_wait(&up->calls);
    for (size_t i = 0; i < up->nshards; i++)
        gw_driver_free(up->shards[i].drv);
    struct call *c = up->pool;
    while (c != NULL) {
        struct call *next = c->pool_next;
        call_destroy(c);
        c = next;
    }
    free(up->shards);
    free(up->ca_file);
    free(up);
}

/* -------------------------------------------------------- caller side */

static struct call *call_get(curl_client *up)
{
    rt_mutex_lock(&up->pool_mu);
    struct call *c = up->pool;
    if (c != NULL) {
        up->pool = c->pool_next;
        up->pool_len--;
    }
    rt_mutex_unlock(&up->pool_mu);
    if (c != NULL)
        return c;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->easy = curl_easy_init();
    c->reply = rt_chan_make(sizeof(int), 2);
    if (c->easy == NULL || c->reply == NULL) {
        if (c->easy != NULL)
            curl_easy_cleanup(c->easy);
        if (c->reply != NULL)
            rt_chan_free(c->reply);
        free(c);
        return NULL;
    }
    return c;
}

/* Reset a call for reuse and pool it (or destroy it if the pool is full). */
static void call_put(curl_client *up, struct call *c)
{
    /* A fresh easy handle for every call, not curl_easy_reset: libcurl
     * 7.88 (Debian 12) keeps a pointer to the previous transfer's last
     * header across the reset and follows it when a reply's first header
     * line starts with whitespace (obs-fold, a continuation of nothing):
     * a use after free any backend can trigger (curl issue 11620, fixed in
     * curl 8.3.0). A fresh handle refuses that line instead. Connections
     * live in the multi handle's cache, so they are still reused. Found by
     * tests/fuzz/fuzz_proxy. */
    curl_easy_cleanup(c->easy);
    c->easy = curl_easy_init(); /* NULL: the call is destroyed below */
    curl_slist_free_all(c->hdrs);
    curl_slist_free_all(c->connect_to);
    c->hdrs = c->connect_to = NULL;
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->hbuf_len = c->nheaders = 0;
    if (c->hbuf_cap > 4 * HEADER_MIN_CAP) {
        free(c->hbuf);
        c->hbuf = NULL;
        c->hbuf_cap = 0;
    }
    c->too_big = c->oom = false;
    c->code = CURLE_OK;
    c->result = 0;
    rt_mutex_lock(&up->pool_mu);
    bool keep = up->pool_len < POOL_MAX && c->easy != NULL;
    if (keep) {
        c->pool_next = up->pool;
        up->pool = c;
        up->pool_len++;
    }
    rt_mutex_unlock(&up->pool_mu);
    if (!keep)
        call_destroy(c);
}

/* Check "a.b.c.d:port" / "[v6]:port" and make libcurl's CONNECT_TO entry
 * "::host:port" (any URL host and port goes there). */
static int connect_to_entry(const char *addr, char *out, size_t outlen)
{
    if (gw__upstream_check_addr(addr) != 0)
        return -EINVAL;
    int n = snprintf(out, outlen, "::%s", addr);
    return n > 0 && (size_t)n < outlen ? 0 : -EINVAL;
}

static int call_setup(curl_client *up, struct call *c,
                      const gw_upstream_req *req, int64_t deadline)
{
    CURL *e = c->easy;
    c->max_body = up->opts.max_response_bytes;
    c->state = CALL_QUEUED;
    c->submit.kind = NODE_SUBMIT;
    c->cancel.kind = NODE_CANCEL;
    for (size_t i = 0; i < req->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(c->hdrs, req->headers[i]);
        if (l == NULL)
            return -ENOMEM;
        c->hdrs = l;
    }
    if (req->body != NULL) {
        /* No "Expect: 100-continue" round trip for large bodies. */
        struct curl_slist *l = curl_slist_append(c->hdrs, "Expect:");
        if (l == NULL)
            return -ENOMEM;
        c->hdrs = l;
    }
    if (req->connect_to != NULL) {
        char entry[CONNECT_TO_MAX];
        int err = connect_to_entry(req->connect_to, entry, sizeof entry);
        if (err != 0)
            return err;
        c->connect_to = curl_slist_append(NULL, entry);
        if (c->connect_to == NULL)
            return -ENOMEM;
    }
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                          \
    do {                                                                       \
        if (rc == CURLE_OK)                                                    \
            rc = curl_easy_setopt(e, opt, val);                                \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PRIVATE, c);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, c);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, c);
    if (c->hdrs != NULL)
        SET(CURLOPT_HTTPHEADER, c->hdrs);
    if (c->connect_to != NULL)
        SET(CURLOPT_CONNECT_TO, c->connect_to);
    if (up->ca_file != NULL)
        SET(CURLOPT_CAINFO, up->ca_file);
    const char *m = req->method != NULL ? req->method : "GET";
    /* A known Content-Length over the cap is refused before the body is
     * read; a HEAD answer's Content-Length comes with no body. */
    if (strcmp(m, "HEAD") != 0)
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
    if (strcmp(m, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L);
    else if (strcmp(m, "GET") != 0 || req->body != NULL)
        SET(CURLOPT_CUSTOMREQUEST, m);
    if (req->body != NULL) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, req->body);
    }
    if (deadline != RT_FOREVER) {
        int64_t left = deadline - rt_now();
        long ms = left <= 0 ? 1 : (long)((left + RT_MSEC - 1) / RT_MSEC);
        SET(CURLOPT_TIMEOUT_MS, ms);
    }
#undef SET
    if (rc == CURLE_OUT_OF_MEMORY)
        return -ENOMEM;
    return rc == CURLE_OK ? 0 : -EINVAL;
}

/* libcurl's verdict as one of our errors. */
static int map_error(struct call *c)
{
    long oserr = 0;
    switch (c->code) {
    case CURLE_OK:
        return 0;
    case CURLE_WRITE_ERROR:
        return c->oom ? -ENOMEM : c->too_big ? -EFBIG : -EIO;
    case CURLE_FILESIZE_EXCEEDED:
        return -EFBIG;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(c->easy, CURLINFO_OS_ERRNO, &oserr);
        if (oserr == EHOSTUNREACH || oserr == ENETUNREACH)
            return -EHOSTUNREACH;
        return -ECONNREFUSED;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return -ECONNRESET;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return -EPROTO;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_UNSUPPORTED_PROTOCOL: {
        /* Before connecting: the URL's scheme. After: an answer that is
         * not HTTP (libcurl calls it HTTP/0.9 and refuses it). */
        char *ip = NULL;
        curl_easy_getinfo(c->easy, CURLINFO_PRIMARY_IP, &ip);
        return ip != NULL && ip[0] != '\0' ? -EPROTO : -EINVAL;
    }
    case CURLE_URL_MALFORMAT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* After MSG_FINAL: move the answer into *resp. */
static int collect(curl_client *up, struct call *c, gw_upstream_resp *resp)
{
    long nconn = 0;
    curl_easy_getinfo(c->easy, CURLINFO_NUM_CONNECTS, &nconn);
    if (nconn > 0)
        atomic_fetch_add(&up->n_connects, (uint64_t)nconn);
    int err = c->result != 0 ? c->result : map_error(c);
    if (err != 0)
        return err;
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (c->body == NULL) {
        c->body = malloc(1);
        if (c->body == NULL)
            return -ENOMEM;
    }
    char *headers = malloc(c->hbuf_len + 1);
    if (headers == NULL)
        return -ENOMEM;
    if (c->hbuf_len > 0)
        memcpy(headers, c->hbuf, c->hbuf_len);
    headers[c->hbuf_len] = '\0';
    c->body[c->body_len] = '\0';
    resp->status = (int)status;
    resp->body = c->body;
    resp->body_len = c->body_len;
    resp->headers = headers;
    resp->nheaders = c->nheaders;
    c->body = NULL; /* the caller owns it now */
    return 0;
}

/* ctx is done: have the driver drop the transfer and wait until it no
 * longer touches c. */
static void cancel_and_wait(shard *sh, struct call *c)
{
    /* A closed queue means the driver answers MSG_FINAL without an ACK. */
    bool acked = !gw_driver_push(sh->drv, &c->cancel.link);
    bool final = false;
    /* At most two messages come: MSG_FINAL and MSG_ACK (maybe as one). */
    for (int i = 0; i < 2 && !(final && acked); i++) {
        int msg = 0;
        rt_chan_recv(c->reply, &msg, NULL);
        final |= (msg & MSG_FINAL) != 0;
        acked |= (msg & MSG_ACK) != 0;
    }
}

/* One request to the address in req (or libcurl's own resolution). */
static int do_once(curl_client *up, const gw_upstream_req *req, rt_ctx *ctx,
                   gw_upstream_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    int err = ctx != NULL ? rt_ctx_err(ctx) : 0;
    if (err != 0)
        return err;
    int64_t deadline = ctx != NULL ? rt_ctx_deadline(ctx) : RT_FOREVER;
    if (deadline <= rt_now())
        return -ETIMEDOUT;

    rt_waitgroup_add(&up->calls, 1);
    struct call *c = call_get(up);
    if (c == NULL) {
        rt_waitgroup_done(&up->calls);
        return -ENOMEM;
    }
    err = call_setup(up, c, req, deadline);
    if (err != 0)
        goto out;
    shard *sh = &up->shards[atomic_fetch_add(&up->rr, 1) % up->nshards];
    atomic_fetch_add(&up->n_calls, 1);
    if (!gw_driver_push(sh->drv, &c->submit.link)) {
        err = -ECANCELED;
        goto out;
    }
    int msg = 0;
    rt_case cases[2] = {
        RT_RECV_CASE(c->reply, &msg),
        RT_RECV_CASE(ctx != NULL ? rt_ctx_done(ctx) : NULL, NULL),
    };
    if (rt_select(cases, 2) == 0) {
        err = collect(up, c, resp);
    } else {
        cancel_and_wait(sh, c);
        err = rt_ctx_err(ctx);
    }
out:
    call_put(up, c);
    rt_waitgroup_done(&up->calls);
    return err;
}

/*
 * The URL's host and port (the scheme's default when absent); host without
 * IPv6 brackets. Returns 0 or -EINVAL.
 */
static int url_host_port(const char *url, char *host, size_t hostlen, int *port)
{
    CURLU *u = curl_url();
    if (u == NULL)
        return -ENOMEM;
    char *h = NULL, *p = NULL;
    int err = -EINVAL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        size_t n = strlen(h);
        const char *start = h;
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
            start = h + 1;
            n -= 2;
        }
        char *end;
        long port_l = strtol(p, &end, 10);
        if (n < hostlen && *end == '\0' && port_l > 0 && port_l <= 65535) {
            memcpy(host, start, n);
            host[n] = '\0';
            *port = (int)port_l;
            err = 0;
        }
    }
    curl_free(h);
    curl_free(p);
    curl_url_cleanup(u);
    return err;
}

/* req and req->url are not NULL (the dispatcher checked). */
static int curl_do(gw_upstream *base, const gw_upstream_req *req, rt_ctx *ctx,
                   gw_upstream_resp *resp)
{
    curl_client *up = (curl_client *)base;
    if (up->opts.resolver == NULL || req->connect_to != NULL)
        return do_once(up, req, ctx, resp);

    char host[256];
    int port;
    int err = url_host_port(req->url, host, sizeof host, &port);
    if (err != 0)
        return err;
    gw_dns_addrs *addrs;
    err = gw_dns_resolve(up->opts.resolver, ctx, host, &addrs, NULL);
    if (err != 0) {
        int cerr = ctx != NULL ? rt_ctx_err(ctx) : 0;
        return cerr != 0 ? cerr : -EHOSTUNREACH;
    }
    /* Round-robin over the name's addresses; a refused connection tries
     * the next one once (the deadline still bounds both). */
    gw_upstream_req r = *req;
    char hp[GW_DNS_HOSTPORT_LEN];
    size_t tries = addrs->n > 1 ? 2 : 1;
    const struct sockaddr_storage *sa = gw_dns_pick(addrs);
    for (size_t i = 0; i < tries; i++, sa = gw_dns_next(addrs, sa)) {
        gw_dns_hostport(sa, port, hp, sizeof hp);
        r.connect_to = hp;
        err = do_once(up, &r, ctx, resp);
        if (err != -ECONNREFUSED)
            break;
    }
    gw_dns_addrs_release(addrs);
    return err;
}

static void curl_stats(gw_upstream *base, gw_upstream_stats *out)
{
    curl_client *up = (curl_client *)base;
    out->calls = atomic_load(&up->n_calls);
    out->cancelled = atomic_load(&up->n_cancelled);
    out->connects = atomic_load(&up->n_connects);
}

static const gw__upstream_ops curl_ops = {
    .call = curl_do,
    .free = curl_free_client,
    .stats = curl_stats,
};
