/*
 * state.h - what a request runs on: the configuration, its routes, and a
 * client and a semaphore per backend, as one reference-counted object.
 *
 * The server holds the current state; each request takes a reference
 * when it starts (gw_server_state) and drops it when it ends, so a
 * reload can install a new state while the requests in flight finish on
 * the one they started with. The last reference frees the state.
 *
 * What a reload carries over (gw_state_new with the previous state):
 *   - a backend's semaphore, always, by the backend's name: calls in
 *     flight keep their slots and the new max_inflight applies to new
 *     acquisitions (sem.h), so the limit holds across the swap;
 *   - a backend's upstream client (its connection pool) when the
 *     backend's settings did not change; a changed backend gets a fresh
 *     client, and the old one is closed when the last state using it is
 *     freed, which is after its last call (calls hold a state reference);
 *   - the resolver (and its cache) when the "dns" section did not change.
 * Clients and resolvers are shared between states by reference count.
 */
#ifndef GW_STATE_H
#define GW_STATE_H

#include <stdatomic.h>
#include <stddef.h>

#include "config.h"
#include "dns.h"
#include "metrics.h"
#include "route.h"
#include "rt.h"
#include "sem.h"
#include "upstream.h"

typedef struct gw_shared_client gw_shared_client;
typedef struct gw_shared_resolver gw_shared_resolver;

typedef struct gw_backend {
    const gw_backend_cfg *cfg;
    gw_upstream *client;      /* shared->client */
    gw_shared_client *shared; /* a reference */
    bool carried;             /* the client came from the previous state */
    gw_sem *sem;              /* a reference; keyed by the backend's name */
    gw_backend_metrics *metrics;
    char *origin; /* "http://host:port" for URLs (IPv6 in brackets) */
    size_t origin_len;
} gw_backend;

/* Per route, the pieces of the merged answer that do not change:
 * prefix[i] is `{"name":` for the first part and `,"name":` for the
 * others, with the name quoted for JSON; errkey[i] is `"name":`. */
typedef struct gw_route_rt {
    char **prefix;
    size_t *prefix_len;
    char **errkey;
    size_t *errkey_len;
    char *label; /* "GET /api/products/{id}": metrics and the access log */
    gw_route_metrics *metrics;
} gw_route_rt;

typedef struct gw_state {
    _Atomic long refs;
    gw_config *cfg;
    gw_router *router;
    gw_backend *backends; /* cfg->nbackends, in config order */
    gw_route_rt *routes;  /* cfg->nroutes */
    gw_resolver *resolver;
    gw_shared_resolver *shared_resolver; /* a reference */
    gw_metrics *metrics;                 /* not owned; may be NULL */
    gw_route_metrics *none; /* answers outside any route ("none") */
} gw_state;

/*
 * Build a state for cfg: the router, one upstream client and one
 * semaphore per backend, the resolver; with prev (NULL at start), carry
 * over what the comment at the top says. metrics (not owned, may be
 * NULL) must outlive the state: its series for cfg's routes and backends
 * are made now, so they exist from the start at 0. Call from a goroutine.
 *
 * Returns 0 and *out holding one reference; the state owns cfg from then
 * on (freed with it). Or a negative errno with what failed in err
 * (errlen bytes); cfg stays the caller's.
 */
int gw_state_new(gw_config *cfg, gw_state *prev, gw_metrics *metrics,
                 gw_state **out, char *err, size_t errlen);

/* The backend of s named name, or NULL. */
gw_backend *gw_state_backend(gw_state *s, const char *name);

/* Another reference / drop one. The last frees the state (it waits for
 * nothing: no call can be running once no request holds a reference). */
gw_state *gw_state_ref(gw_state *s);
void gw_state_unref(gw_state *s);

#endif /* GW_STATE_H */
