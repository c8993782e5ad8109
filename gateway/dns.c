/*
 * dns.c - name resolution with c-ares on the runtime's netpoller.
 *
 * Design. A gw_resolver owns one ares_channel. c-ares handles are
 * single-threaded, so exactly one goroutine, the driver (driver.c, on its
 * own 256 KiB stack: c-ares recurses through its callbacks), ever touches
 * the channel after gw_resolver_new() made it: it starts queries, feeds
 * socket readiness and timeouts to c-ares and runs every c-ares callback.
 *
 * Sockets and timeouts. c-ares opens and closes its sockets itself and
 * reports them through ARES_OPT_SOCK_STATE_CB; the callback (driver
 * goroutine) mirrors them into the driver's epoll set with
 * gw_driver_watch(), and the driver hands each ready one to
 * ares_process_fd (drv_ready). After every round the driver's deadline is
 * set to now + ares_timeout() (drv_round); when it passes, drv_timeout
 * calls ares_process_fd(BAD, BAD) so c-ares retries or fails timed-out
 * queries. How the driver waits, wakes and stops: driver.c.
 *
 * Requests. A caller that misses the cache pushes a dns_req on the
 * driver's queue (gw_driver_push: no syscall while the driver is busy)
 * and then waits, with rt_select, on the request's own reply channel
 * (capacity 1) and on rt_ctx_done(ctx). A dns_req is reference counted
 * (caller + driver), so a caller whose context ends simply drops its
 * reference and leaves; the driver's reply then lands in the buffer and
 * whoever drops the last reference frees it.
 *
 * Single-flight. The driver keeps the in-flight lookups (r->inflight, a
 * list: there are few names in flight at once), each with the list of
 * requests waiting for it. A request for a name already in flight joins
 * that lookup; only one ares_getaddrinfo() runs per name. Before starting
 * a query the driver looks in the cache again, since a lookup may have
 * completed between the caller's miss and now.
 *
 * Callbacks never park. c-ares code around our callback may keep
 * thread-local addresses (errno) across it, and a parked goroutine may
 * resume on another thread; so on_addrinfo() only builds the answer and
 * moves the lookup to r->finished. The driver completes finished lookups
 * (cache insert under an rt_mutex, which may park; replies) after the
 * c-ares call returned.
 *
 * Cache. name (lower-cased) -> gw_dns_addrs, a reference-counted,
 * immutable array with its expiry (now + min(max(ttl, floor), ceiling),
 * ttl = the smallest TTL among the records and CNAMEs; /etc/hosts answers
 * carry TTL 0, so they live for the floor). Readers (any goroutine) and
 * the driver (the only writer) take r->cache_mu. Failures are not cached.
 * At most GW_DNS_CACHE_MAX names; expired ones are swept when it is full.
 *
 * Ownership and lifetime. The owner (gw_resolver_new's caller) stops the
 * driver in gw_resolver_free() (gw_driver_free: the queue is closed, then
 * waited for). The driver answers requests still queued with
 * GW_DNS_ECLOSED, then ares_destroy()s the channel (in-flight lookups end
 * with ARES_EDESTRUCTION -> GW_DNS_ECLOSED) and ends (drv_stopped); the
 * owner then frees the cache and r.
 *
 * What runs where: fields under "driver only" are touched by the driver
 * goroutine alone (and by gw_resolver_new before it starts / free after it
 * ended); the cache by whoever holds cache_mu; the rest is immutable after
 * gw_resolver_new() or atomic. c-ares reads /etc/hosts on each lookup
 * that reaches it (a small local file, on the driver's thread).
 */
#include "dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

#define NAME_MAX_LEN 254 /* 253 + a trailing dot */
#define LABEL_MAX_LEN 63
#define CACHE_BUCKETS 256 /* power of two */
#define DRIVER_STACK (256 * 1024)

/* What the driver sends on a request's reply channel. */
typedef struct dns_reply {
    int err;
    const char *why;
    gw_dns_addrs *addrs; /* a reference for the receiver, or NULL */
} dns_reply;

/* One caller's request. refs: the caller's and the driver's. */
typedef struct dns_req {
    gw_driver_node node; /* on the driver's queue */
    _Atomic int refs;
    rt_chan *reply;       /* dns_reply, capacity 1, one send */
    struct dns_req *next; /* driver only: waiters of one lookup */
    char name[];
} dns_req;

/* One ares_getaddrinfo() in flight (driver only). */
typedef struct lookup {
    gw_resolver *r;
    struct lookup *next; /* in r->inflight, then in r->finished */
    dns_req *waiters;
    int err; /* set by on_addrinfo() */
    const char *why;
    gw_dns_addrs *addrs; /* on success, one reference */
    char name[];
} lookup;

typedef struct cache_entry {
    struct cache_entry *next;
    gw_dns_addrs *addrs; /* one reference */
    char name[];
} cache_entry;

struct gw_resolver {
    /* Immutable after gw_resolver_new(). */
    int64_t min_ttl, max_ttl; /* ns */
    gw_driver *drv;           /* the driver goroutine; the owner stops it */

    /* The cache, under cache_mu. */
    rt_mutex cache_mu;
    cache_entry *buckets[CACHE_BUCKETS];
    size_t ncached;

    /* Driver only. */
    ares_channel ch;
    lookup *inflight;
    lookup *finished;
};

/* -------------------------------------------------------------- errors */

const char *gw_dns_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case GW_DNS_ENOTFOUND:
        return "no such host";
    case GW_DNS_ENODATA:
        return "host has no addresses";
    case GW_DNS_ETIMEOUT:
        return "DNS timeout";
    case GW_DNS_ESERVER:
        return "DNS server failure";
    case GW_DNS_EBADNAME:
        return "invalid host name";
    case GW_DNS_ENOMEM:
        return "out of memory";
    case GW_DNS_ECLOSED:
        return "resolver closed";
    case -ECANCELED:
        return "DNS lookup cancelled";
    default:
        return "DNS error";
    }
}

/* A c-ares status as one of our codes, with the detail in *why. */
static int map_status(int status, const char **why)
{
    switch (status) {
    case ARES_ENOTFOUND:
        *why = "no such host";
        return GW_DNS_ENOTFOUND;
    case ARES_ENODATA:
        *why = "host has no addresses";
        return GW_DNS_ENODATA;
    case ARES_ETIMEOUT:
        *why = "DNS timeout: no answer from the DNS servers";
        return GW_DNS_ETIMEOUT;
    case ARES_ESERVFAIL:
        *why = "DNS server failure (SERVFAIL)";
        return GW_DNS_ESERVER;
    case ARES_EREFUSED:
        *why = "DNS server refused the query";
        return GW_DNS_ESERVER;
    case ARES_ENOTIMP:
        *why = "DNS server does not implement the query";
        return GW_DNS_ESERVER;
    case ARES_EFORMERR:
        *why = "DNS server found the query malformed";
        return GW_DNS_ESERVER;
    case ARES_EBADRESP:
        *why = "malformed DNS response";
        return GW_DNS_ESERVER;
    case ARES_ECONNREFUSED:
        /* c-ares 1.18 also ends here when every server answered
         * SERVFAIL or REFUSED, so it cannot tell those apart. */
        *why = "DNS server failure or DNS servers unreachable";
        return GW_DNS_ESERVER;
    case ARES_EBADNAME:
        *why = "invalid host name";
        return GW_DNS_EBADNAME;
    case ARES_ENOMEM:
        *why = "out of memory";
        return GW_DNS_ENOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        *why = "resolver closed";
        return GW_DNS_ECLOSED;
    default:
        *why = ares_strerror(status); /* static strings */
        return GW_DNS_ESERVER;
    }
}

/* ------------------------------------------------------------ addresses */

static gw_dns_addrs *addrs_new(size_t n)
{
    gw_dns_addrs *a = calloc(1, sizeof *a + n * sizeof a->addr[0]);
    if (a != NULL)
        atomic_init(&a->refs, 1);
    return a;
}

gw_dns_addrs *gw_dns_addrs_ref(gw_dns_addrs *a)
{
    if (a != NULL)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void gw_dns_addrs_release(gw_dns_addrs *a)
{
    if (a != NULL &&
        atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        free(a);
}

const struct sockaddr_storage *gw_dns_pick(gw_dns_addrs *a)
{
    uint32_t i = atomic_fetch_add_explicit(&a->next, 1, memory_order_relaxed);
    return &a->addr[i % a->n];
}

const struct sockaddr_storage *
gw_dns_next(const gw_dns_addrs *a, const struct sockaddr_storage *prev)
{
    size_t i = (size_t)(prev - a->addr);
    return &a->addr[(i + 1) % a->n];
}

int gw_dns_hostport(const struct sockaddr_storage *sa, int port, char *buf,
                    size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    int n;

    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        n = snprintf(buf, len, "%s:%d", ip, port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        n = snprintf(buf, len, "[%s]:%d", ip, port);
    } else {
        return -EAFNOSUPPORT;
    }
    return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/*
 * A numeric host: "1.2.3.4", "::1" or "[::1]". Returns 1 with *out set,
 * 0 when host is not numeric, or a negative code.
 */
static int numeric_host(const char *host, gw_dns_addrs **out)
{
    char buf[INET6_ADDRSTRLEN];
    size_t len = strlen(host);
    const char *h = host;
    bool bracketed = len >= 2 && host[0] == '[' && host[len - 1] == ']';
    struct in_addr v4;
    struct in6_addr v6;

    if (bracketed) {
        if (len - 2 >= sizeof buf)
            return GW_DNS_EBADNAME;
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = '\0';
        h = buf;
    }
    if (!bracketed && inet_pton(AF_INET, h, &v4) == 1) {
        gw_dns_addrs *a = addrs_new(1);
        if (a == NULL)
            return GW_DNS_ENOMEM;
        struct sockaddr_in *in = (struct sockaddr_in *)&a->addr[0];
        in->sin_family = AF_INET;
        in->sin_addr = v4;
        a->n = 1;
        a->expires = RT_FOREVER;
        *out = a;
        return 1;
    }
    if (inet_pton(AF_INET6, h, &v6) == 1) {
        gw_dns_addrs *a = addrs_new(1);
        if (a == NULL)
            return GW_DNS_ENOMEM;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->addr[0];
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = v6;
        a->n = 1;
        a->expires = RT_FOREVER;
        *out = a;
        return 1;
    }
    return bracketed ? GW_DNS_EBADNAME : 0;
}

/*
 * Lower-case host into out (NAME_MAX_LEN + 1 bytes) and check it is a
 * plausible DNS name: 1..253 characters (plus an optional trailing dot),
 * labels of 1..63 letters, digits, '-' or '_'.
 */
static bool normalize_name(const char *host, char *out)
{
    size_t len = strnlen(host, NAME_MAX_LEN + 1);
    size_t label = 0;

    if (len == 0 || len > NAME_MAX_LEN)
        return false;
    if (len == NAME_MAX_LEN && host[len - 1] != '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0)
                return false; /* empty label */
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_') {
            if (++label > LABEL_MAX_LEN)
                return false;
        } else {
            return false;
        }
        out[i] = c;
    }
    out[len] = '\0';
    return true;
}

/* Build the answer of a successful ares_getaddrinfo(): deduplicated
 * addresses, at most GW_DNS_MAX_ADDRS, expiring after the clamped TTL. */
static gw_dns_addrs *addrs_from_ai(gw_resolver *r,
                                   const struct ares_addrinfo *ai, int *err,
                                   const char **why)
{
    size_t n = 0;
    int64_t ttl = INT64_MAX; /* seconds */

    for (const struct ares_addrinfo_node *nd = ai->nodes; nd != NULL;
         nd = nd->ai_next)
        n++;
    if (n > GW_DNS_MAX_ADDRS)
        n = GW_DNS_MAX_ADDRS;
    gw_dns_addrs *a = n > 0 ? addrs_new(n) : NULL;
    if (n > 0 && a == NULL) {
        *err = map_status(ARES_ENOMEM, why);
        return NULL;
    }
    for (const struct ares_addrinfo_node *nd = ai->nodes;
         nd != NULL && a->n < n; nd = nd->ai_next) {
        size_t sz;
        if (nd->ai_family == AF_INET)
            sz = sizeof(struct sockaddr_in);
        else if (nd->ai_family == AF_INET6)
            sz = sizeof(struct sockaddr_in6);
        else
            continue;
        if (nd->ai_addr == NULL || (size_t)nd->ai_addrlen < sz)
            continue;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        memcpy(&ss, nd->ai_addr, sz);
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = 0;
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
        bool dup = false;
        for (size_t i = 0; i < a->n && !dup; i++)
            dup = memcmp(&a->addr[i], &ss, sz) == 0;
        if (dup)
            continue;
        a->addr[a->n++] = ss;
        ttl = nd->ai_ttl < ttl ? nd->ai_ttl : ttl;
    }
    if (a == NULL || a->n == 0) {
        free(a);
        *err = map_status(ARES_ENODATA, why);
        return NULL;
    }
    for (const struct ares_addrinfo_cname *c = ai->cnames; c != NULL;
         c = c->next)
        ttl = c->ttl < ttl ? c->ttl : ttl;
    int64_t eff = ttl < 0 ? 0 : ttl > INT32_MAX ? INT32_MAX : ttl;
    eff *= RT_SEC;
    eff = eff < r->min_ttl ? r->min_ttl : eff;
    eff = eff > r->max_ttl ? r->max_ttl : eff;
    a->expires = rt_now() + eff;
    *err = 0;
    *why = NULL;
    return a;
}

/* ---------------------------------------------------------------- cache */

static size_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (CACHE_BUCKETS - 1);
}

/* A fresh cached answer for name, with a reference for the caller. */
static gw_dns_addrs *cache_get(gw_resolver *r, const char *name)
{
    gw_dns_addrs *a = NULL;
    int64_t now = rt_now();

    rt_mutex_lock(&r->cache_mu);
    for (cache_entry *e = r->buckets[name_hash(name)]; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            if (e->addrs->expires > now)
                a = gw_dns_addrs_ref(e->addrs);
            break;
        }
    }
    rt_mutex_unlock(&r->cache_mu);
    return a;
}

/* Drop every expired entry; cache_mu held. */
static void cache_sweep(gw_resolver *r, int64_t now)
{
    for (size_t b = 0; b < CACHE_BUCKETS; b++) {
        cache_entry **pp = &r->buckets[b];
        while (*pp != NULL) {
            cache_entry *e = *pp;
            if (e->addrs->expires > now) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            gw_dns_addrs_release(e->addrs);
            free(e);
            r->ncached--;
        }
    }
}

/* Store a (taking a reference) as the answer for name. Driver only. */
static void cache_put(gw_resolver *r, const char *name, gw_dns_addrs *a)
{
    size_t b = name_hash(name);

    rt_mutex_lock(&r->cache_mu);
    for (cache_entry *e = r->buckets[b]; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            gw_dns_addrs_release(e->addrs);
            e->addrs = gw_dns_addrs_ref(a);
            rt_mutex_unlock(&r->cache_mu);
            return;
        }
    }
    if (r->ncached >= GW_DNS_CACHE_MAX)
        cache_sweep(r, rt_now());
    size_t len = strlen(name);
    cache_entry *e =
        r->ncached < GW_DNS_CACHE_MAX ? malloc(sizeof *e + len + 1) : NULL;
    if (e != NULL) {
        memcpy(e->name, name, len + 1);
        e->addrs = gw_dns_addrs_ref(a);
        e->next = r->buckets[b];
        r->buckets[b] = e;
        r->ncached++;
    }
    rt_mutex_unlock(&r->cache_mu);
}

static void cache_free(gw_resolver *r)
{
    for (size_t b = 0; b < CACHE_BUCKETS; b++) {
        cache_entry *e = r->buckets[b];
        while (e != NULL) {
            cache_entry *next = e->next;
            gw_dns_addrs_release(e->addrs);
            free(e);
            e = next;
        }
        r->buckets[b] = NULL;
    }
    r->ncached = 0;
}

/* ------------------------------------------------------------- requests */

static dns_req *req_new(const char *name)
{
    size_t len = strlen(name);
    dns_req *q = malloc(sizeof *q + len + 1);
    if (q == NULL)
        return NULL;
    q->reply = rt_chan_make(sizeof(dns_reply), 1);
    if (q->reply == NULL) {
        free(q);
        return NULL;
    }
    atomic_init(&q->refs, 2); /* the caller's and the driver's */
    q->next = NULL;
    memcpy(q->name, name, len + 1);
    return q;
}

/* Drop a reference; the last one frees q and a reply nobody took. */
static void req_unref(dns_req *q)
{
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
        return;
    dns_reply rep;
    if (rt_chan_tryrecv(q->reply, &rep, NULL))
        gw_dns_addrs_release(rep.addrs);
    rt_chan_free(q->reply);
    free(q);
}

/* Answer q (never parks: the reply channel has room for the one reply)
 * and drop the driver's reference. */
static void req_reply(dns_req *q, int err, const char *why, gw_dns_addrs *a)
{
    dns_reply rep = {.err = err, .why = why, .addrs = gw_dns_addrs_ref(a)};
    if (!rt_chan_trysend(q->reply, &rep))
        gw_dns_addrs_release(rep.addrs); /* cannot happen */
    req_unref(q);
}

/* ------------------------------------------------------ driver: c-ares */

/* ARES_OPT_SOCK_STATE_CB (driver goroutine): mirror c-ares' interest in
 * fd into the driver's epoll set. A failure leaves the socket unwatched:
 * its query then ends with a DNS timeout, driven by ares_timeout(). */
static void sock_state_cb(void *data, ares_socket_t fd, int readable,
                          int writable)
{
    gw_resolver *r = data;
    unsigned interest =
        (readable ? GW_DRIVER_READ : 0u) | (writable ? GW_DRIVER_WRITE : 0u);
    gw_driver_watch(r->drv, fd, interest);
}

/* ares_getaddrinfo's callback, on the driver's stack inside c-ares: build
 * the answer and queue the lookup on r->finished. Must not park. */
static void on_addrinfo(void *arg, int status, int timeouts,
                        struct ares_addrinfo *ai)
{
    lookup *l = arg;
    gw_resolver *r = l->r;
    (void)timeouts;

    for (lookup **pp = &r->inflight; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    if (status == ARES_SUCCESS && ai != NULL)
        l->addrs = addrs_from_ai(r, ai, &l->err, &l->why);
    else
        l->err =
            map_status(status == ARES_SUCCESS ? ARES_ENODATA : status, &l->why);
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    l->next = r->finished;
    r->finished = l;
}

/* Complete the lookups c-ares finished: cache, then answer every waiter. */
static void finish_lookups(gw_resolver *r)
{
    lookup *l;

    while ((l = r->finished) != NULL) {
        r->finished = l->next;
        if (l->addrs != NULL)
            cache_put(r, l->name, l->addrs);
        dns_req *q = l->waiters;
        while (q != NULL) {
            dns_req *next = q->next;
            req_reply(q, l->err, l->why, l->addrs);
            q = next;
        }
        gw_dns_addrs_release(l->addrs);
        free(l);
    }
}

/* Serve q from the cache, join the lookup in flight for its name, or
 * start one. */
static void start_lookup(gw_resolver *r, dns_req *q)
{
    gw_dns_addrs *a = cache_get(r, q->name);
    if (a != NULL) {
        req_reply(q, 0, NULL, a);
        gw_dns_addrs_release(a);
        return;
    }
    for (lookup *l = r->inflight; l != NULL; l = l->next) {
        if (strcmp(l->name, q->name) == 0) {
            q->next = l->waiters;
            l->waiters = q;
            return;
        }
    }
    size_t len = strlen(q->name);
    lookup *l = calloc(1, sizeof *l + len + 1);
    if (l == NULL) {
        req_reply(q, GW_DNS_ENOMEM, "out of memory", NULL);
        return;
    }
    l->r = r;
    memcpy(l->name, q->name, len + 1);
    q->next = NULL;
    l->waiters = q;
    l->next = r->inflight;
    r->inflight = l;
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC};
    /* May call on_addrinfo before returning (/etc/hosts, bad name). */
    ares_getaddrinfo(r->ch, l->name, NULL, &hints, on_addrinfo, l);
    finish_lookups(r);
}

/* When c-ares next needs ares_process_fd for a timeout, or RT_FOREVER. */
static int64_t next_deadline(gw_resolver *r)
{
    struct timeval tv;
    struct timeval *t = ares_timeout(r->ch, NULL, &tv);

    if (t == NULL)
        return RT_FOREVER;
    return rt_now() + (int64_t)t->tv_sec * RT_SEC +
           (int64_t)t->tv_usec * RT_USEC;
}

/* ------------------------------------- driver callbacks (driver.h ops) */

/* A request from gw_dns_resolve; once the resolver is closing, answer it
 * without a lookup. */
static void drv_queued(void *arg, gw_driver_node *node, bool closing)
{
    gw_resolver *r = arg;
    dns_req *q = (dns_req *)((char *)node - offsetof(dns_req, node));

    if (closing)
        req_reply(q, GW_DNS_ECLOSED, "resolver closed", NULL);
    else
        start_lookup(r, q);
}

/* A c-ares socket is ready. A stale event for a socket c-ares closed
 * meanwhile is harmless: c-ares ignores fds it does not own and retries on
 * EAGAIN. */
static void drv_ready(void *arg, int fd, unsigned events)
{
    gw_resolver *r = arg;
    unsigned any = GW_DRIVER_ERR | GW_DRIVER_HUP;
    ares_socket_t rfd = events & (GW_DRIVER_READ | any) ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = events & (GW_DRIVER_WRITE | any) ? fd : ARES_SOCKET_BAD;

    ares_process_fd(r->ch, rfd, wfd);
}

/* ares_timeout() has passed: c-ares retries or fails timed-out queries. */
static void drv_timeout(void *arg)
{
    gw_resolver *r = arg;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

/* After each round: complete what c-ares finished (outside c-ares, so the
 * cache lock may park), and wait no longer than c-ares' next timeout. */
static void drv_round(void *arg)
{
    gw_resolver *r = arg;
    finish_lookups(r);
    gw_driver_set_deadline(r->drv, next_deadline(r));
}

/* The driver's last call: in-flight lookups end with ARES_EDESTRUCTION. */
static void drv_stopped(void *arg)
{
    gw_resolver *r = arg;
    ares_destroy(r->ch);
    r->ch = NULL;
    finish_lookups(r);
}

static const gw_driver_ops driver_ops = {
    .queued = drv_queued,
    .ready = drv_ready,
    .timeout = drv_timeout,
    .round = drv_round,
    .stopped = drv_stopped,
};

/* ---------------------------------------------------------- public API */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status;

static void ares_lib_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* "a,b,c" for ares_set_servers_ports_csv, or NULL (-EINVAL in *err). */
static char *servers_csv(const gw_dns_config *cfg, int *err)
{
    size_t len = 1;

    for (size_t i = 0; i < cfg->nservers; i++) {
        const char *s = cfg->servers[i];
        if (s == NULL || *s == '\0' || strpbrk(s, ", \t\r\n") != NULL) {
            *err = -EINVAL;
            return NULL;
        }
        len += strlen(s) + 1;
    }
    char *csv = malloc(len);
    if (csv == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < cfg->nservers; i++) {
        size_t n = strlen(cfg->servers[i]);
        if (i > 0)
            csv[off++] = ',';
        memcpy(csv + off, cfg->servers[i], n);
        off += n;
    }
    csv[off] = '\0';
    return csv;
}

int gw_resolver_new(const gw_dns_config *cfg, gw_resolver **out)
{
    static const gw_dns_config defaults = {0};
    static char lookups[] = "fb"; /* /etc/hosts first, then DNS */
    int err;
    char *csv = NULL;

    *out = NULL;
    if (cfg == NULL)
        cfg = &defaults;
    if (cfg->min_ttl_ms < 0 || cfg->max_ttl_ms < 0 || cfg->timeout_ms < 0 ||
        cfg->tries < 0 || (cfg->servers != NULL && cfg->nservers == 0) ||
        (cfg->servers == NULL && cfg->nservers != 0))
        return -EINVAL;
    /* A default never conflicts with the other bound set explicitly. */
    int64_t min_ms =
        cfg->min_ttl_ms ? cfg->min_ttl_ms : GW_DNS_DEFAULT_MIN_TTL_MS;
    int64_t max_ms =
        cfg->max_ttl_ms ? cfg->max_ttl_ms : GW_DNS_DEFAULT_MAX_TTL_MS;
    if (cfg->min_ttl_ms == 0 && min_ms > max_ms)
        min_ms = max_ms;
    if (cfg->max_ttl_ms == 0 && max_ms < min_ms)
        max_ms = min_ms;
    if (min_ms > max_ms || max_ms > INT64_MAX / RT_MSEC)
        return -EINVAL;
    if (cfg->servers != NULL && (csv = servers_csv(cfg, &err)) == NULL)
        return err;
    pthread_once(&ares_once, ares_lib_init);
    if (ares_init_status != ARES_SUCCESS) {
        err = -EIO;
        goto fail_csv;
    }

    gw_resolver *r = calloc(1, sizeof *r);
    if (r == NULL) {
        err = -ENOMEM;
        goto fail_csv;
    }
    r->min_ttl = min_ms * RT_MSEC;
    r->max_ttl = max_ms * RT_MSEC;

    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS;
    opts.sock_state_cb = sock_state_cb;
    opts.sock_state_cb_data = r;
    opts.lookups = lookups;
    if (cfg->timeout_ms > 0) {
        opts.timeout = cfg->timeout_ms;
        mask |= ARES_OPT_TIMEOUTMS;
    }
    if (cfg->tries > 0) {
        opts.tries = cfg->tries;
        mask |= ARES_OPT_TRIES;
    }
    int st = ares_init_options(&r->ch, &opts, mask);
    if (st != ARES_SUCCESS) {
        err = st == ARES_ENOMEM ? -ENOMEM : -EIO;
        goto fail_alloc;
    }
    if (csv != NULL) {
        st = ares_set_servers_ports_csv(r->ch, csv);
        if (st != ARES_SUCCESS) {
            err = st == ARES_ENOMEM ? -ENOMEM : -EINVAL;
            goto fail_ares;
        }
    }
    /* From here on the driver owns r->ch. */
    err = gw_driver_start(&driver_ops, r, DRIVER_STACK, &r->drv);
    if (err != 0)
        goto fail_ares;

    free(csv);
    *out = r;
    return 0;

fail_ares:
    ares_destroy(r->ch);
fail_alloc:
    free(r);
fail_csv:
    free(csv);
    return err;
}

void gw_resolver_free(gw_resolver *r)
{
    if (r == NULL)
        return;
    gw_driver_free(r->drv); /* stops the driver and waits for it */
    cache_free(r);
    free(r);
}

int gw_dns_resolve(gw_resolver *r, rt_ctx *ctx, const char *host,
                   gw_dns_addrs **out, const char **why)
{
    const char *unused;
    char name[NAME_MAX_LEN + 1];

    if (why == NULL)
        why = &unused;
    *why = NULL;
    *out = NULL;
    if (host == NULL) {
        *why = "invalid host name";
        return GW_DNS_EBADNAME;
    }
    int rc = numeric_host(host, out);
    if (rc != 0) {
        if (rc < 0)
            *why = gw_dns_strerror(rc);
        return rc < 0 ? rc : 0;
    }
    if (!normalize_name(host, name)) {
        *why = "invalid host name";
        return GW_DNS_EBADNAME;
    }
    if ((*out = cache_get(r, name)) != NULL)
        return 0;

    rt_chan *done = ctx != NULL ? rt_ctx_done(ctx) : NULL;
    if (ctx != NULL && (rc = rt_ctx_err(ctx)) != 0)
        goto ctx_ended;
    dns_req *q = req_new(name);
    if (q == NULL) {
        *why = "out of memory";
        return GW_DNS_ENOMEM;
    }
    if (!gw_driver_push(r->drv, &q->node)) {
        req_unref(q); /* the driver never saw it: drop both references */
        req_unref(q);
        *why = "resolver closed";
        return GW_DNS_ECLOSED;
    }

    dns_reply rep;
    rt_case recv[2] = {RT_RECV_CASE(q->reply, &rep), RT_RECV_CASE(done, NULL)};
    if (rt_select(recv, 2) != 0) {
        req_unref(q); /* the driver's reply, when it comes, is dropped */
        rc = rt_ctx_err(ctx);
        goto ctx_ended;
    }
    req_unref(q);
    *out = rep.addrs;
    *why = rep.why;
    return rep.err;

ctx_ended:
    *why = rc == -ETIMEDOUT ? "lookup deadline exceeded" : "lookup cancelled";
    return rc;
}
