/*
 * state.c - the reference-counted request state (see state.h).
 *
 * Built once per configuration (at start, and at each reload later):
 * the router, the JSON pieces of every route's merged answer, and per
 * backend its upstream client (the kind its "client" key chose, native
 * or libcurl; a keep-alive pool of up to max_inflight connections, host
 * names through the c-ares resolver), its semaphore and its origin
 * string. Immutable once built, so requests read it
 * without locks; only refs changes.
 */
#include "state.h"

#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        if (rt->prefix == NULL || rt->prefix_len == NULL ||
            rt->errkey == NULL || rt->errkey_len == NULL)
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
        gw_upstream_free(b->client);
        rt_chan_free(b->sem);
        free(b->origin);
    }
    free(s->backends);
    s->backends = NULL;
}

static int backends_build(gw_state *s, char *err, size_t errlen)
{
    const gw_config *cfg = s->cfg;
    s->backends =
        calloc(cfg->nbackends ? cfg->nbackends : 1, sizeof *s->backends);
    if (s->backends == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const gw_backend_cfg *bc = &cfg->backends[i];
        gw_backend *b = &s->backends[i];
        b->cfg = bc;
        b->origin = origin_of(bc, &b->origin_len);
        b->sem = rt_chan_make(1, (size_t)bc->max_inflight);
        if (b->origin == NULL || b->sem == NULL)
            return -ENOMEM;
        gw_upstream_opts o = {
            .client = bc->client == GW_CLIENT_NATIVE ? GW_UPSTREAM_NATIVE
                                                     : GW_UPSTREAM_CURL,
            .max_host_connections = (int)bc->max_inflight,
            .max_response_bytes = (size_t)bc->max_response_bytes,
            .ca_file = bc->ca_file,
            .resolver = s->resolver,
        };
        int rc = gw_upstream_new(&o, &b->client);
        if (rc != 0) {
            snprintf(err, errlen, "backend %s: upstream client: %s", bc->name,
                     gw_upstream_strerror(rc));
            return rc;
        }
    }
    return 0;
}

int gw_state_new(gw_config *cfg, gw_resolver *resolver, gw_state **out,
                 char *err, size_t errlen)
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
    s->resolver = resolver;
    int rc = gw_router_new(cfg, &s->router);
    if (rc != 0) {
        snprintf(err, errlen, "routes: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = routes_build(s)) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((rc = backends_build(s, err, errlen)) != 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "out of memory");
        goto fail;
    }
    *out = s;
    return 0;

fail:
    /* The caller keeps cfg on failure; undo the rest. */
    backends_free(s);
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
    routes_free(s);
    gw_router_free(s->router);
    gw_config_free(s->cfg);
    free(s);
}
