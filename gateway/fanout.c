/* clang-format off */
/*
 * fanout.c - fan-out, fan-in and merge for one request, in the Go idiom
 * of the gateway's design:
 *
 *     results := make(chan result, len(parts))   // room for every part
 *     for i, p := range parts {
 *         go func() {
 *             ctx := ctx
 *             if p.timeout > 0 { ctx = WithDeadline(ctx, start+p.timeout) }
 *             if err := p.sem.Acquire(ctx); err != nil {  // sem.h
 *                 results <- overloaded; return
 *             }
 *             r := call(ctx, p)                 // the upstream client
 *             p.sem.Release()
 *             results <- r                      // never blocks: buffered
 *         }()
 *     }
 *     for got < len(parts) {
 *         select {
 *         case r := <-results: keep r; if required and failed { break }
 *         case <-ctx.Done():   pending parts: timeout (or overloaded); break
 *         }
 *     }
 *     answer; cancel()                          // stragglers are aborted
 *
 * Ownership. The fan (one per request, allocated here) owns the parts,
 * the upstream header lines and the results channel; it is freed only
 * after every part goroutine has ended (f->wg), so a part never touches
 * freed memory however late it finishes. A part's body moves into its
 * result, then into the response, which the server frees after writing.
 * After the answer is handed over (done), nothing here touches the
 * request's parser memory (headers, path parameters): what the parts
 * need was copied before they started.
 *
 * Deadlines. The request context carries the route deadline. A part
 * whose backend has timeout_ms runs under a child context with the
 * earlier of the two. The wait for a semaphore slot counts: a part still
 * waiting at its deadline is `overloaded`, one that had a slot is
 * `timeout`. At the route deadline the fan-in answers at once with the
 * parts not yet in reported by that rule (has_slot), without waiting for
 * them to notice.
 */
/* clang-format on */
#include "fanout.h"

#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct part_result {
    size_t idx;
    gw_outcome outcome;
    int status; /* the backend's HTTP status, when it answered */
    char *body; /* owned; a 2xx JSON body */
    size_t body_len;
    int64_t latency;
} part_result;

typedef struct fan fan;

typedef struct part {
    fan *f;
    size_t idx;
    gw_backend *be;
    char *url;             /* owned */
    _Atomic bool has_slot; /* holds a semaphore slot (or did) */
} part;

struct fan {
    gw_request *req;
    const gw_route_cfg *route;
    const gw_route_rt *rt;
    size_t nparts;
    part *parts;
    rt_chan *results; /* part_result, capacity nparts */
    rt_waitgroup wg;  /* the part goroutines */
    char **hdrs;      /* upstream request header lines, owned */
    size_t nhdrs;
};

const char *gw_part_reason(gw_outcome o, int status, char buf[16])
{
    switch (o) {
    case GW_OK:
        return "ok";
    case GW_TIMEOUT:
        return "timeout";
    case GW_UNAVAILABLE:
        return "unavailable";
    case GW_STATUS:
        snprintf(buf, 16, "status %d", status);
        return buf;
    case GW_INVALID_JSON:
        return "invalid json";
    case GW_TOO_LARGE:
        return "too large";
    case GW_OVERLOADED:
        return "overloaded";
    case GW_CANCELLED:
    default:
        return "cancelled";
    }
}

/* ------------------------------------------------------------- parts */

/* What the upstream client's result means for the answer. */
static gw_outcome classify(int rc, const gw_upstream_resp *resp, rt_ctx *ctx)
{
    if (rc == 0) {
        if (resp->status < 200 || resp->status > 299)
            return GW_STATUS;
        return gw_json_valid(resp->body, resp->body_len) ? GW_OK
                                                         : GW_INVALID_JSON;
    }
    switch (rc) {
    case -EFBIG:
        return GW_TOO_LARGE;
    case -ETIMEDOUT:
        return GW_TIMEOUT;
    case -ECANCELED:
        /* The part's own deadline (backend timeout_ms) cancels with
         * -ETIMEDOUT; -ECANCELED is a sibling or the client. */
        return rt_ctx_err(ctx) == -ETIMEDOUT ? GW_TIMEOUT : GW_CANCELLED;
    default:
        return GW_UNAVAILABLE; /* refused, reset, DNS, TLS, protocol */
    }
}

static void part_main(void *arg)
{
    part *p = arg;
    fan *f = p->f;
    rt_ctx *ctx = f->req->ctx, *own = NULL;
    part_result r = {.idx = p->idx};
    int64_t start = rt_now();

    if (p->be->cfg->timeout_ms > 0) {
        int64_t dl = start + p->be->cfg->timeout_ms * RT_MSEC;
        if (dl < rt_ctx_deadline(ctx) && (own = rt_ctx_with_deadline(ctx, dl)))
            ctx = own;
    }
    /* Acquire a slot, or fail at the deadline. */
    bool waited;
    int err = gw_sem_acquire(p->be->sem, ctx, &waited);
    if (waited)
        gw_metrics_sem_wait(p->be->metrics);
    if (err != 0) {
        r.outcome = err == -ETIMEDOUT   ? GW_OVERLOADED
                    : err == -ECANCELED ? GW_CANCELLED
                                        : GW_UNAVAILABLE;
        goto out;
    }
    gw_metrics_sem_add(p->be->metrics, 1);
    atomic_store(&p->has_slot, true);

    gw_upstream_req ur = {
        .url = p->url,
        .headers = (const char *const *)f->hdrs,
        .nheaders = f->nhdrs,
    };
    gw_upstream_resp resp;
    int rc = gw_upstream_do(p->be->client, &ur, ctx, &resp);
    gw_sem_release(p->be->sem);
    gw_metrics_sem_add(p->be->metrics, -1);
    r.outcome = classify(rc, &resp, ctx);
    if (rc == 0) {
        r.status = resp.status;
        if (r.outcome == GW_OK) {
            r.body = resp.body; /* moves into the result */
            r.body_len = resp.body_len;
            resp.body = NULL;
        }
        gw_upstream_resp_free(&resp);
    }
out:
    r.latency = rt_now() - start;
    if (own != NULL)
        rt_ctx_release(own);
    rt_chan_send(f->results, &r); /* room for every part: never blocks */
    rt_waitgroup_done(&f->wg);
}

/* ------------------------------------------------------------ set-up */

static char *str_printf(const char *fmt, const char *a, const char *b)
{
    int n = snprintf(NULL, 0, fmt, a, b);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s != NULL)
        snprintf(s, (size_t)n + 1, fmt, a, b);
    return s;
}

/* A header line "Name: value" from a request header (len-delimited). */
static char *header_line(const char *name, const gw_http_header *h)
{
    size_t nl = strlen(name);
    char *s = malloc(nl + 2 + h->value_len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, name, nl);
    memcpy(s + nl, ": ", 2);
    memcpy(s + nl + 2, h->value, h->value_len);
    s[nl + 2 + h->value_len] = '\0';
    return s;
}

/*
 * The lines every part sends: X-Request-Id, X-Forwarded-For (the client's
 * X-Forwarded-For with the client's address appended), X-Forwarded-Proto
 * and the route's forward_headers that the request has.
 */
static int build_headers(fan *f)
{
    const gw_request *req = f->req;
    const gw_route_cfg *rc = f->route;
    f->hdrs = calloc(3 + rc->nforward_headers, sizeof *f->hdrs);
    if (f->hdrs == NULL)
        return -ENOMEM;
    f->hdrs[f->nhdrs++] = str_printf("X-Request-Id: %s%s", req->request_id, "");
    const gw_http_header *xff =
        gw_http_request_header(req->http, "x-forwarded-for");
    if (xff != NULL && xff->value_len > 0) {
        char *prev = header_line("X-Forwarded-For", xff);
        f->hdrs[f->nhdrs++] =
            prev != NULL ? str_printf("%s, %s", prev, req->client_ip) : NULL;
        free(prev);
    } else {
        f->hdrs[f->nhdrs++] =
            str_printf("X-Forwarded-For: %s%s", req->client_ip, "");
    }
    f->hdrs[f->nhdrs++] = str_printf("X-Forwarded-Proto: %s%s", req->proto, "");
    for (size_t i = 0; i < f->nhdrs; i++)
        if (f->hdrs[i] == NULL)
            return -ENOMEM;
    for (size_t i = 0; i < rc->nforward_headers; i++) {
        const char *name = rc->forward_headers[i];
        const gw_http_header *h = gw_http_request_header(req->http, name);
        if (h == NULL)
            continue;
        if ((f->hdrs[f->nhdrs] = header_line(name, h)) == NULL)
            return -ENOMEM;
        f->nhdrs++;
    }
    return 0;
}

static void fan_free(fan *f)
{
    for (size_t i = 0; i < f->nparts; i++)
        free(f->parts[i].url);
    for (size_t i = 0; i < f->nhdrs; i++)
        free(f->hdrs[i]);
    free(f->hdrs);
    free(f->parts);
    rt_chan_free(f->results);
    free(f);
}

/* Caller owns the result: fan_free (after f->wg). */
static fan *fan_new(gw_request *req)
{
    const gw_state *st = req->state;
    size_t ri = req->match->route_index;
    fan *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->req = req;
    f->route = &st->cfg->routes[ri];
    f->rt = &st->routes[ri];
    f->nparts = f->route->nparts;
    f->parts = calloc(f->nparts, sizeof *f->parts);
    f->results = rt_chan_make(sizeof(part_result), f->nparts);
    if (f->parts == NULL || f->results == NULL || build_headers(f) != 0)
        goto fail;
    for (size_t i = 0; i < f->nparts; i++) {
        part *p = &f->parts[i];
        p->f = f;
        p->idx = i;
        p->be = &st->backends[f->route->parts[i].backend];
        p->url = str_printf("%s%s", p->be->origin, req->part_paths[i]);
        if (p->url == NULL)
            goto fail;
    }
    return f;
fail:
    fan_free(f);
    return NULL;
}

/* ------------------------------------------------------------- merge */

/* What a 200 answer owns: the iov array, the part bodies, the errors
 * object. One allocation of pointers, freed by merged_release. */
typedef struct merged {
    struct iovec *iov;
    char **bodies;
    size_t nbodies;
    char *errors;
} merged;

static void merged_release(void *arg)
{
    merged *m = arg;
    for (size_t i = 0; i < m->nbodies; i++)
        free(m->bodies[i]);
    free(m->bodies);
    free(m->errors);
    free(m->iov);
    free(m);
}

/*
 * The 200 answer: {"a":<body>,"b":null,...,"errors":{"b":"timeout"}},
 * keys in config order, each body spliced in as the backend sent it (it
 * was checked to be one JSON value), failed parts null, the errors
 * object only when something failed. Takes the bodies out of res.
 */
static int merge(fan *f, part_result *res, gw_response *resp)
{
    size_t n = f->nparts;
    merged *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->iov = calloc(2 * n + 2, sizeof *m->iov);
    m->bodies = calloc(n, sizeof *m->bodies);
    size_t errlen = 0;
    for (size_t i = 0; i < n; i++) {
        char b[16];
        if (res[i].outcome != GW_OK)
            errlen += f->rt->errkey_len[i] + 3 +
                      strlen(gw_part_reason(res[i].outcome, res[i].status, b));
    }
    if (errlen > 0)
        m->errors = malloc(errlen + 16);
    if (m->iov == NULL || m->bodies == NULL || (errlen > 0 && !m->errors)) {
        merged_release(m);
        return -ENOMEM;
    }
    int k = 0;
    size_t total = 0, elen = 0;
    for (size_t i = 0; i < n; i++) {
        m->iov[k++] = (struct iovec){f->rt->prefix[i], f->rt->prefix_len[i]};
        if (res[i].outcome == GW_OK) {
            m->bodies[m->nbodies++] = res[i].body;
            m->iov[k++] = (struct iovec){res[i].body, res[i].body_len};
            res[i].body = NULL;
        } else {
            m->iov[k++] = (struct iovec){(void *)"null", 4};
            char b[16];
            const char *why = gw_part_reason(res[i].outcome, res[i].status, b);
            memcpy(m->errors + elen, elen == 0 ? ",\"errors\":{" : ",",
                   elen == 0 ? 11 : 1);
            elen += elen == 0 ? 11 : 1;
            memcpy(m->errors + elen, f->rt->errkey[i], f->rt->errkey_len[i]);
            elen += f->rt->errkey_len[i];
            elen += gw_json_quote(m->errors + elen, errlen + 16 - elen, why,
                                  strlen(why));
        }
    }
    if (elen > 0) {
        m->errors[elen++] = '}';
        m->iov[k++] = (struct iovec){m->errors, elen};
    }
    m->iov[k++] = (struct iovec){(void *)"}", 1};
    for (int i = 0; i < k; i++)
        total += m->iov[i].iov_len;
    gw_response_free(resp);
    resp->status = 200;
    resp->completed = elen == 0;
    resp->iov = m->iov;
    resp->niov = k;
    resp->body_len = total;
    resp->release = merged_release;
    resp->release_arg = m;
    return 0;
}

/* ------------------------------------------------------------ fan-in */

/* Note one part's result; true when it decides the answer (a required
 * part failed: the first failure decides). */
static bool take(fan *f, part_result *res, bool *in, const part_result *r)
{
    res[r->idx] = *r;
    in[r->idx] = true;
    return r->outcome != GW_OK && f->route->parts[r->idx].required;
}

void gw_fanout_run(gw_request *req, gw_response *resp, rt_chan *done)
{
    fan *f = fan_new(req);
    if (f == NULL) {
        gw_response_error(resp, 500, "out of memory", NULL, -1);
        goto answer_only;
    }
    part_result *res = calloc(f->nparts, sizeof *res);
    bool *in = calloc(f->nparts, sizeof *in);
    if (res == NULL || in == NULL) {
        free(res);
        free(in);
        fan_free(f);
        gw_response_error(resp, 500, "out of memory", NULL, -1);
        goto answer_only;
    }

    /* Fan out. A part that cannot get a goroutine (no stack) fails at
     * once as unavailable. */
    int64_t t0 = rt_now();
    for (size_t i = 0; i < f->nparts; i++) {
        rt_waitgroup_add(&f->wg, 1);
        if (rt_go(part_main, &f->parts[i]) == 0) {
            rt_waitgroup_done(&f->wg);
            part_result r = {
                .idx = i, .outcome = GW_UNAVAILABLE, .latency = -1};
            rt_chan_send(f->results, &r);
        }
    }

    /* Fan in. */
    size_t got = 0;
    long decided = -1; /* a required part that failed */
    rt_chan *ctx_done = rt_ctx_done(req->ctx);
    while (got < f->nparts && decided < 0) {
        part_result r;
        rt_case cs[2] = {RT_RECV_CASE(f->results, &r),
                         RT_RECV_CASE(ctx_done, NULL)};
        if (rt_select(cs, 2) == 1)
            break;
        got++;
        if (take(f, res, in, &r))
            decided = (long)r.idx;
    }
    /* Results already in when the context won the select count. */
    part_result r;
    while (decided < 0 && got < f->nparts &&
           rt_chan_tryrecv(f->results, &r, NULL)) {
        got++;
        if (take(f, res, in, &r))
            decided = (long)r.idx;
    }
    /*
     * The parts not in yet. After a required part failed, or when the
     * context was cancelled (the client left, the server stops), they
     * are cancelled. At the deadline they are cut: timeout if they had a
     * slot, overloaded if they were still waiting for one.
     */
    int64_t now = rt_now();
    bool cut = decided < 0 && got < f->nparts;
    bool deadline = cut && rt_ctx_err(req->ctx) == -ETIMEDOUT;
    for (size_t i = 0; i < f->nparts; i++) {
        if (in[i])
            continue;
        res[i].idx = i;
        res[i].latency = now - t0;
        if (!deadline)
            res[i].outcome = GW_CANCELLED;
        else if (atomic_load(&f->parts[i].has_slot))
            res[i].outcome = GW_TIMEOUT;
        else
            res[i].outcome = GW_OVERLOADED;
        if (deadline && decided < 0 && f->route->parts[i].required)
            decided = (long)i;
    }
    /* A request cut by its deadline: the fan-in saw it, or a part that
     * was still pending reported timeout or overloaded at that moment. */
    /* (The clock, not rt_ctx_err: a part's socket wait may report the
     * deadline a moment before the context's own timer has fired.) */
    bool expired = deadline || rt_ctx_err(req->ctx) == -ETIMEDOUT ||
                   now >= rt_ctx_deadline(req->ctx);
    bool cut_parts = deadline;
    for (size_t i = 0; expired && !cut_parts && i < f->nparts; i++)
        cut_parts =
            res[i].outcome == GW_TIMEOUT || res[i].outcome == GW_OVERLOADED;
    if (expired && cut_parts)
        gw_metrics_cancelled(req->state->metrics, GW_CANCEL_DEADLINE);
    for (size_t i = 0; i < f->nparts; i++) {
        gw_metrics_part(f->parts[i].be->metrics, res[i].outcome,
                        res[i].latency);
        if (req->outcomes != NULL)
            req->outcomes[i] = (gw_part_outcome){res[i].outcome, res[i].status,
                                                 res[i].latency};
    }

    if (decided >= 0) {
        char b[16];
        const part_result *d = &res[decided];
        int status = d->outcome == GW_TIMEOUT      ? 504
                     : d->outcome == GW_OVERLOADED ? 503
                                                   : 502;
        gw_response_error(resp, status,
                          gw_part_reason(d->outcome, d->status, b),
                          f->route->parts[decided].name, 0);
    } else if (merge(f, res, resp) != 0) {
        gw_response_error(resp, 500, "out of memory", NULL, -1);
    }
    for (size_t i = 0; i < f->nparts; i++)
        free(res[i].body); /* bodies not merged */
    free(res);
    free(in);

    /* The answer goes out now; the stragglers are cancelled and waited
     * for before their memory goes. */
    if (done != NULL)
        rt_chan_send(done, &resp);
    rt_ctx_cancel(req->ctx);
    rt_waitgroup_wait(&f->wg);
    /* Drain what the stragglers sent (their bodies). */
    while (rt_chan_tryrecv(f->results, &r, NULL))
        free(r.body);
    fan_free(f);
    return;

answer_only:
    if (req->outcomes != NULL)
        for (size_t i = 0; i < req->match->route->nparts; i++)
            req->outcomes[i] = (gw_part_outcome){GW_CANCELLED, 0, -1};
    if (done != NULL)
        rt_chan_send(done, &resp);
    rt_ctx_cancel(req->ctx);
}
