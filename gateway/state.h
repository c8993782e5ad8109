/*
 * state.h - what a request runs on: the configuration, its routes, and a
 * client and a semaphore per backend, as one reference-counted object.
 *
 * The server holds the current state; each request takes a reference
 * when it starts (gw_state_get) and drops it when it ends, so a reload
 * can install a new state while the requests in flight finish on the one
 * they started with. The last reference frees the state: its routes, and
 * the backend clients, whose calls have all returned by then.
 *
 * A backend's semaphore is a buffered channel of max_inflight tokens
 * (Go's `sem := make(chan struct{}, n)`): a part acquires a slot by
 * sending a token and releases it by receiving one, so at most
 * max_inflight calls to that backend run at once from this process.
 */
#ifndef GW_STATE_H
#define GW_STATE_H

#include <stdatomic.h>
#include <stddef.h>

#include "config.h"
#include "dns.h"
#include "route.h"
#include "rt.h"
#include "upstream.h"

typedef struct gw_backend {
    const gw_backend_cfg *cfg;
    gw_upstream *client;
    rt_chan *sem; /* tokens (bytes); capacity cfg->max_inflight */
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
} gw_route_rt;

typedef struct gw_state {
    _Atomic long refs;
    gw_config *cfg;
    gw_router *router;
    gw_backend *backends; /* cfg->nbackends, in config order */
    gw_route_rt *routes;  /* cfg->nroutes */
    gw_resolver *resolver;
} gw_state;

/*
 * Build a state for cfg (the state takes ownership of cfg: it is freed
 * with the state) with one upstream client per backend, resolving host
 * names through resolver (not owned; must outlive the state). Call from a
 * goroutine. Returns 0 and *out holding one reference, or a negative
 * errno with what failed in err (errlen bytes).
 */
int gw_state_new(gw_config *cfg, gw_resolver *resolver, gw_state **out,
                 char *err, size_t errlen);

/* Another reference / drop one. The last frees the state (it waits for
 * nothing: no call can be running once no request holds a reference). */
gw_state *gw_state_ref(gw_state *s);
void gw_state_unref(gw_state *s);

#endif /* GW_STATE_H */
