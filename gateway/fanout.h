/*
 * fanout.h - one routed request: fan out to its parts, fan the results
 * back in, merge them into the contract's answer (design: fanout.c).
 */
#ifndef GW_FANOUT_H
#define GW_FANOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_parse.h"
#include "metrics.h"
#include "response.h"
#include "route.h"
#include "rt.h"
#include "state.h"

/* How one part ended, for the access log. */
typedef struct gw_part_outcome {
    gw_outcome outcome;
    int status; /* the backend's HTTP status when it answered, else 0 */
    int64_t ns; /* from the fan-out to its result (-1: it never ran) */
} gw_part_outcome;

/*
 * What the server hands the request goroutine. Everything it points to
 * stays valid until gw_fanout_run returns; the response it fills may
 * outlive it (it owns what it points into, or points into the state).
 */
typedef struct gw_request {
    gw_state *state;             /* the server holds a reference */
    const gw_route_match *match; /* status 0: a route */
    const gw_http_request *http; /* its headers (forward_headers, XFF) */
    char **part_paths;           /* per part: the path, filled (server) */
    bool head;                   /* HEAD: answered without a body */
    const char *request_id;      /* 1..128 visible ASCII characters */
    const char *client_ip;       /* for X-Forwarded-For */
    const char *proto;           /* "http" or "https" */
    /* The request's context: the route deadline, a child of the
     * connection's; the server cancels it when the client goes away. */
    rt_ctx *ctx;
    /* Per part (the route's nparts; owned by the server, may be NULL):
     * filled before the answer is sent on done. */
    gw_part_outcome *outcomes;
} gw_request;

/*
 * Fan out, fan in, merge: fills *resp (initialised by the caller) with
 * the answer, as soon as every part is in, a required part failed, or
 * the context ended (deadline: pending parts are `timeout`, or
 * `overloaded` if still waiting for a slot; cancelled: they are
 * `cancelled`). Counts each part's outcome in the backend's metrics, and
 * a deadline that cut parts in fanfold_cancellations_total. Then cancels
 * req->ctx, so
 * every part still running is aborted, and returns once they have all
 * ended. Runs on the request's goroutine; parks.
 *
 * done, when not NULL, gets the answer the moment it is ready (before the
 * stragglers are waited for): gw_fanout_run sends `resp` (the pointer) on
 * it, and from then on the receiver owns *resp.
 */
void gw_fanout_run(gw_request *req, gw_response *resp, rt_chan *done);

/* "timeout", "unavailable", "status 503", "invalid json", "too large",
 * "overloaded", "cancelled": the answer's reason for a part. buf: 16. */
const char *gw_part_reason(gw_outcome o, int status, char buf[16]);

#endif /* GW_FANOUT_H */
