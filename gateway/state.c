/*
 * state.c - the reference-counted request state (see state.h).
 *
 * Built once per configuration (at start, and at each reload later):
 * the router, the JSON pieces and labels of every route, and per backend
 * its upstream client (the kind its "client" key chose, native or
 * libcurl; a keep-alive pool of up to max_inflight connections, host
 * names through the c-ares resolver), its semaphore, its origin string
 * and its metrics series. Immutable once built, so requests read it
 * without locks; only the reference counts change.
 */
#include "state.h"

#include "json.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An upstream client shared by the states whose backend settings
 * match; the last reference closes it. */
struct gw_shared_client {
    _Atomic long refs;
    gw_upstream *client;
};

/* A resolver shared by the states whose "dns" sections match. Freed
 * after the clients that use it: a state drops its backends first. */
struct gw_shared_resolver {
    _Atomic long refs;
    gw_resolver *r;
};

static void client_unref(gw_shared_client *c)
{
    if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1) {
        gw_upstream_free(c->client);
        free(c);
    }
}

static void resolver_unref(gw_shared_resolver *r)
{
    if (r != NULL && atomic_fetch_sub(&r->refs, 1) == 1) {
        gw_resolver_free(r->r);
        free(r);
    }
}

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether two backends' settings are the same (the name aside). */
static bool backend_same(const gw_backend_cfg *a, const gw_backend_cfg *b)
{
    return str_eq(a->url, b->url) && a->max_inflight == b->max_inflight &&
           a->timeout_ms == b->timeout_ms &&
           a->max_response_bytes == b->max_response_bytes &&
           str_eq(a->ca_file, b->ca_file) && a->client == b->client;
}

static bool dns_same(const gw_config *a, const gw_config *b)
{
    if (a->has_dns != b->has_dns || a->ndns_servers != b->ndns_servers ||
        a->dns_min_ttl_ms != b->dns_min_ttl_ms ||
        a->dns_max_ttl_ms != b->dns_max_ttl_ms ||
        (a->dns_servers == NULL) != (b->dns_servers == NULL))
        return false;
    for (size_t i = 0; i < a->ndns_servers && a->dns_servers != NULL; i++)
        if (!str_eq(a->dns_servers[i], b->dns_servers[i]))
            return false;
    return true;
}

/* "scheme://host:port", IPv6 hosts in brackets. Caller owns the result. */
static char *origin_of(const gw_backend_cfg *b, size_t *len)
{
    bool v6 = strchr(b->host, ':') != NULL;
    int n = snprintf(NULL, 0, "%s://%s%s%s:%d", b->scheme, v6 ? "[" : "",
                     b->host, v6 ? "]" : "", b->port);
    char *s = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (s == NULL)
        return NULL;
    snprintf(s, (size_t)n + 1, "%s://%s%s%s:%d", b->scheme, v6 ? "[" : "",
             b->host, v6 ? "]" : "", b->port);
    *len = (size_t)n;
    return s;
}

/* `lead` + the quoted name + ":" into a new string. Caller owns it. */
static char *quoted_key(const char *lead, const char *name, size_t *len)
{
    size_t nl = strlen(name), ll = strlen(lead);
    size_t q = gw_json_quote(NULL, 0, name, nl);
    char *s = malloc(ll + q + 2);
    if (s == NULL)
        return NULL;
    memcpy(s, lead, ll);
    gw_json_quote(s + ll, q + 1, name, nl);
    s[ll + q] = ':';
    s[ll + q + 1] = '\0';
    *len = ll + q + 1;
    return s;
}

static void routes_free(gw_state *s)
{
    if (s->routes == NULL)
        return;
    for (size_t r = 0; r < s->cfg->nroutes; r++) {
        gw_route_rt *rt = &s->routes[r];
        for (size_t i = 0; rt->prefix != NULL && i < s->cfg->routes[r].nparts;
             i++) {
            free(rt->prefix[i]);
            free(rt->errkey[i]);
        }
        free(rt->prefix);
        free(rt->prefix_len);
        free(rt->errkey);
        free(rt->errkey_len);
        free(rt->label);
    }
    free(s->routes);
    s->routes = NULL;
}

static int routes_build(gw_state *s)
{
    const gw_config *cfg = s->cfg;
    s->routes = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof *s->routes);
    if (s->routes == NULL)
        return -ENOMEM;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        const gw_route_cfg *rc = &cfg->routes[r];
        gw_route_rt *rt = &s->routes[r];
        size_t n = rc->nparts;
        rt->prefix = calloc(n, sizeof *rt->prefix);
        rt->prefix_len = calloc(n, sizeof *rt->prefix_len);
        rt->errkey = calloc(n, sizeof *rt->errkey);
        rt->errkey_len = calloc(n, sizeof *rt->errkey_len);
        size_t ll = strlen(rc->method) + 1 + strlen(rc->path) + 1;
        rt->label = malloc(ll);
        if (rt->prefix == NULL || rt->prefix_len == NULL ||
            rt->errkey == NULL || rt->errkey_len == NULL || rt->label == NULL)
            return -ENOMEM;
        snprintf(rt->label, ll, "%s %s", rc->method, rc->path);
        if (s->metrics != NULL &&
            (rt->metrics = gw_metrics_route(s->metrics, rt->label)) == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
            rt->prefix[i] = quoted_key(i == 0 ? "{" : ",", rc->parts[i].name,
                                       &rt->prefix_len[i]);
            rt->errkey[i] =
                quoted_key("", rc->parts[i].name, &rt->errkey_len[i]);
            if (rt->prefix[i] == NULL || rt->errkey[i] == NULL)
                return -ENOMEM;
        }
    }
    return 0;
}

static void backends_free(gw_state *s)
{
    if (s->backends == NULL)
        return;
    for (size_t i = 0; i < s->cfg->nbackends; i++) {
        gw_backend *b = &s->backends[i];
        client_unref(b->shared);
        gw_sem_unref(b->sem);
        free(b->origin);
    }
    free(s->backends);
    s->backends = NULL;
}

static int resolver_build(gw_state *s, gw_state *prev)
{
    const gw_config *cfg = s->cfg;
    if (prev != NULL && dns_same(prev->cfg, cfg)) {
        s->shared_resolver = prev->shared_resolver;
        atomic_fetch_add(&s->shared_resolver->refs, 1);
        s->resolver = s->shared_resolver->r;
        return 0;
    }
    gw_shared_resolver *sr = calloc(1, sizeof *sr);
    if (sr == NULL)
        return -ENOMEM;
    gw_dns_config dc = {0};
    if (cfg->has_dns) {
        dc.servers = (const char *const *)cfg->dns_servers;
        dc.nservers = cfg->ndns_servers;
        dc.min_ttl_ms = cfg->dns_min_ttl_ms;
        dc.max_ttl_ms = cfg->dns_max_ttl_ms;
    }
    int rc = gw_resolver_new(&dc, &sr->r);
    if (rc != 0) {
        free(sr);
        return rc;
    }
    atomic_init(&sr->refs, 1);
    s->shared_resolver = sr;
    s->resolver = sr->r;
    return 0;
}

static int backends_build(gw_state *s, gw_state *prev, char *err, size_t errlen)
{
    const gw_config *cfg = s->cfg;
    bool same_dns = prev != NULL && prev->resolver == s->resolver;
    s->backends =
        calloc(cfg->nbackends ? cfg->nbackends : 1, sizeof *s->backends);
    if (s->backends == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const gw_backend_cfg *bc = &cfg->backends[i];
        gw_backend *b = &s->backends[i];
        gw_backend *old =
            prev != NULL ? gw_state_backend(prev, bc->name) : NULL;
        b->cfg = bc;
        b->origin = origin_of(bc, &b->origin_len);
        if (b->origin == NULL)
            return -ENOMEM;
        if (old != NULL) {
            b->sem = gw_sem_ref(old->sem); /* its new limit: gw_state_new */
        } else if ((b->sem = gw_sem_new((long)bc->max_inflight)) == NULL) {
            return -ENOMEM;
        }
        if (s->metrics != NULL &&
            (b->metrics = gw_metrics_backend(s->metrics, bc->name)) == NULL)
            return -ENOMEM;
        if (old != NULL && same_dns && backend_same(old->cfg, bc)) {
            b->shared = old->shared;
            atomic_fetch_add(&b->shared->refs, 1);
            b->client = b->shared->client;
            b->carried = true;
            continue;
        }
        gw_shared_client *sc = calloc(1, sizeof *sc);
        if (sc == NULL)
            return -ENOMEM;
        gw_upstream_opts o = {
            .client = bc->client == GW_CLIENT_NATIVE ? GW_UPSTREAM_NATIVE
                                                     : GW_UPSTREAM_CURL,
            .max_host_connections = (int)bc->max_inflight,
            .max_response_bytes = (size_t)bc->max_response_bytes,
            .ca_file = bc->ca_file,
            .resolver = s->resolver,
        };
        int rc = gw_upstream_new(&o, &sc->client);
        if (rc != 0) {
            free(sc);
            snprintf(err, errlen, "backend %s: upstream client: %s", bc->name,
                     gw_upstream_strerror(rc));
            return rc;
        }
        atomic_init(&sc->refs, 1);
        b->shared = sc;
        b->client = sc->client;
    }
    return 0;
}

gw_backend *gw_state_backend(gw_state *s, const char *name)
{
    for (size_t i = 0; s->backends != NULL && i < s->cfg->nbackends; i++)
        if (strcmp(s->cfg->backends[i].name, name) == 0)
            return &s->backends[i];
    return NULL;
}

int gw_state_new(gw_config *cfg, gw_state *prev, gw_metrics *metrics,
                 gw_state **out, char *err, size_t errlen)
{
    char scratch[1];
    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    *out = NULL;
    gw_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    atomic_init(&s->refs, 1);
    s->cfg = cfg;
    s->metrics = metrics;
    int rc = gw_router_new(cfg, &s->router);
    if (rc != 0) {
        snprintf(err, errlen, "routes: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = routes_build(s)) != 0 ||
        (metrics != NULL &&
         (s->none = gw_metrics_route(metrics, "none")) == NULL)) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((rc = resolver_build(s, prev)) != 0) {
        snprintf(err, errlen, "DNS resolver: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = backends_build(s, prev, err, errlen)) != 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* Only now that nothing can fail: a carried semaphore takes its new
     * limit (a refused reload must leave the old one alone). */
    for (size_t i = 0; i < cfg->nbackends; i++)
        gw_sem_set_limit(s->backends[i].sem,
                         (long)cfg->backends[i].max_inflight);
    *out = s;
    return 0;

fail:
    /* The caller keeps cfg on failure; undo the rest (clients before the
     * resolver they use). */
    backends_free(s);
    resolver_unref(s->shared_resolver);
    routes_free(s);
    gw_router_free(s->router);
    free(s);
    return rc;
}

gw_state *gw_state_ref(gw_state *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void gw_state_unref(gw_state *s)
{
    if (s == NULL ||
        atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    backends_free(s);
    resolver_unref(s->shared_resolver);
    routes_free(s);
    gw_router_free(s->router);
    gw_config_free(s->cfg);
    free(s);
}
