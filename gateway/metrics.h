/*
 * metrics.h - the gateway's counters, gauges and histograms, and their
 * Prometheus text exposition (design: metrics.c).
 *
 * Series (every one with HELP and TYPE; those of configured routes and
 * backends exist from the start, at 0):
 *   fanfold_requests_total{route,status}              counter
 *   fanfold_request_duration_seconds{route}           histogram
 *   fanfold_backend_requests_total{backend,outcome}   counter
 *   fanfold_backend_duration_seconds{backend}         histogram
 *   fanfold_inflight_requests                         gauge
 *   fanfold_connections_open                          gauge
 *   fanfold_connections_total                         counter
 *   fanfold_semaphore_inflight{backend}               gauge
 *   fanfold_semaphore_waits_total{backend}            counter
 *   fanfold_cancellations_total{reason}               counter
 *   fanfold_goroutines                                gauge
 *   fanfold_log_dropped_total                         counter
 *   fanfold_goroutine_long_runs_total                 counter
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Outcomes of a part, as fanfold_backend_requests_total names them. */
typedef enum gw_outcome {
    GW_OK,
    GW_TIMEOUT,
    GW_UNAVAILABLE,
    GW_STATUS, /* a non-2xx answer */
    GW_INVALID_JSON,
    GW_TOO_LARGE,
    GW_OVERLOADED,
    GW_CANCELLED, /* a required sibling failed, or the client left */
    GW_NOUTCOMES
} gw_outcome;

/* Why a request was cancelled (fanfold_cancellations_total). */
typedef enum gw_cancel_reason {
    GW_CANCEL_CLIENT_GONE,
    GW_CANCEL_DEADLINE,
    GW_NCANCEL
} gw_cancel_reason;

typedef struct gw_metrics gw_metrics;
typedef struct gw_route_metrics gw_route_metrics;
typedef struct gw_backend_metrics gw_backend_metrics;

/* Make the registry (call from a goroutine: it shards by rt_procs()).
 * Caller owns *out: gw_metrics_free. 0 or -ENOMEM. */
int gw_metrics_new(gw_metrics **out);
void gw_metrics_free(gw_metrics *m);

/*
 * The series of one route label ("GET /api/products/{id}", or "none" for
 * answers outside any route) or backend name: made on first use and kept
 * for the life of m, so a reload that drops a route keeps its counters
 * (they never go back). Takes a mutex: look them up once (a state keeps
 * the pointers), not per request. NULL when out of memory.
 */
gw_route_metrics *gw_metrics_route(gw_metrics *m, const char *label);
gw_backend_metrics *gw_metrics_backend(gw_metrics *m, const char *name);

/* The hot path: a relaxed atomic add on the caller's P's shard each;
 * NULL series are ignored. */
void gw_metrics_request(gw_route_metrics *r, int status, int64_t ns);
void gw_metrics_part(gw_backend_metrics *b, gw_outcome o, int64_t ns);
void gw_metrics_sem_wait(gw_backend_metrics *b);
void gw_metrics_sem_add(gw_backend_metrics *b, int delta);
void gw_metrics_inflight_add(gw_metrics *m, int delta);
void gw_metrics_conn_opened(gw_metrics *m);
void gw_metrics_conn_closed(gw_metrics *m);
void gw_metrics_cancelled(gw_metrics *m, gw_cancel_reason why);
void gw_metrics_log_dropped(gw_metrics *m);

/* The text exposition (Prometheus 0.0.4). Caller owns *out: free().
 * 0 or -ENOMEM. */
int gw_metrics_render(gw_metrics *m, char **out, size_t *len);

#endif /* GW_METRICS_H */
