/*
 * upstream.h — the gateway's HTTP client for backend calls (design:
 * gateway/README.md). Two implementations stand behind this one API,
 * chosen per client with opts.client:
 *   GW_UPSTREAM_CURL    libcurl's multi_socket API on a driver goroutine
 *                       (upstream_curl.c): http:// and https://;
 *   GW_UPSTREAM_NATIVE  HTTP/1.1 on the runtime's sockets, on the caller's
 *                       goroutine, with its own keep-alive pool
 *                       (upstream_native.c): http:// only.
 * Everything below holds for both unless it says otherwise.
 *
 * One gw_upstream per backend (or per group of backends sharing limits).
 * gw_upstream_do() blocks only the calling goroutine and returns status,
 * headers and a size-capped body:
 *
 *     gw_upstream_req req = {.url = "http://inventory/items/7",
 *                            .connect_to = "10.0.0.7:9102"};
 *     gw_upstream_resp resp;
 *     int rc = gw_upstream_do(up, &req, ctx, &resp);
 *     if (rc == 0) {
 *         use resp.status, resp.body, gw_upstream_resp_header(&resp, "...");
 *         gw_upstream_resp_free(&resp);
 *     }
 *
 * Errors (negative errno, distinct per outcome; gw_upstream_strerror):
 *   -ETIMEDOUT      the context's deadline passed (or libcurl's timeout,
 *                   which is set from it);
 *   -ECANCELED      the context was cancelled, or the client is being freed;
 *   -ECONNREFUSED   connection refused;              the four are the
 *   -ECONNRESET     reset / closed mid-answer;       gateway's
 *   -EHOSTUNREACH   no route, or name not resolved;  "unavailable"
 *   -EPROTO         not HTTP, or a TLS failure;
 *   -EFBIG          body over max_response_bytes (or headers over 64 KiB):
 *                   the gateway's "too large";
 *   -EINVAL         a bad request (URL, method, connect_to; an https://
 *                   URL for the native client);
 *   -ENOMEM, -EIO   out of memory, any other libcurl failure.
 * A non-2xx answer is not an error: rc 0 and resp.status says it.
 */
#ifndef GW_UPSTREAM_H
#define GW_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "rt.h"

#define GW_UPSTREAM_DEFAULT_MAX_RESPONSE_BYTES (1024 * 1024)
/* The response header section (all lines) may not exceed this. */
#define GW_UPSTREAM_MAX_HEADER_BYTES (64 * 1024)

typedef struct gw_upstream gw_upstream;

/* Which implementation gw_upstream_new builds. */
typedef enum gw_upstream_client {
    GW_UPSTREAM_CURL = 0, /* libcurl (the default, as before the choice) */
    GW_UPSTREAM_NATIVE = 1,
} gw_upstream_client;

/* Idle connections of the native client are closed instead of reused
 * after this long idle, or this long after they were opened. */
#define GW_UPSTREAM_DEFAULT_IDLE_TIMEOUT_MS 30000
#define GW_UPSTREAM_DEFAULT_MAX_CONNECTION_AGE_MS 300000
/* Idle connections the native client keeps per address when neither
 * max_idle_connections nor max_host_connections says. */
#define GW_UPSTREAM_DEFAULT_MAX_IDLE 32

typedef struct gw_upstream_opts {
    gw_upstream_client client; /* 0 = GW_UPSTREAM_CURL */
    /* curl: connections per host:port (CURLMOPT_MAX_HOST_CONNECTIONS;
     * with several drivers, split between them, rounded up); calls beyond
     * it wait inside libcurl for a connection. Use the backend's
     * max_inflight. 0 = no limit.
     * native: no queueing (the caller bounds concurrency, as the
     * gateway's per-backend semaphore does); only the idle default
     * below. */
    int max_host_connections;
    /* Idle keep-alive connections kept: curl, CURLMOPT_MAXCONNECTS per
     * driver, 0 = max_host_connections, or libcurl's default; native,
     * per address, 0 = max_host_connections, or
     * GW_UPSTREAM_DEFAULT_MAX_IDLE. */
    int max_idle_connections;
    /* native only: an idle connection is closed instead of reused once
     * idle this long, or this long after it was opened. 0 = the
     * defaults above. */
    int idle_timeout_ms;
    int max_connection_age_ms;
    /* Body bytes kept; a larger answer fails with -EFBIG. 0 = 1 MiB. */
    size_t max_response_bytes;
    /* curl only: CA bundle for https backends (CURLOPT_CAINFO); NULL =
     * system's. */
    const char *ca_file;
    /* curl only: driver goroutines, each owning one libcurl multi handle
     * and its own connection pool; calls are spread round-robin. 0 = 1
     * (see gateway/README.md for the measurement behind the default). */
    int drivers;
    /* Resolver for the URLs' host names (not owned; must outlive the
     * client). When set, a call without connect_to resolves the host
     * through it (c-ares, TTL cache), connects to the addresses in
     * round-robin order, and after a refused connection tries the next
     * address once, within the deadline. A DNS failure is -EHOSTUNREACH.
     * NULL: curl resolves names itself; the native client connects to
     * numeric hosts (and "localhost") only, any other name is
     * -EHOSTUNREACH. */
    struct gw_resolver *resolver;
} gw_upstream_opts;

typedef struct gw_upstream_req {
    const char *method; /* NULL = "GET" */
    const char *url;    /* absolute http:// or https:// URL */
    /* Extra request headers as "Name: value" lines (e.g. X-Request-Id). */
    const char *const *headers;
    size_t nheaders;
    /* Optional request body; not copied (the call blocks until done). */
    const void *body;
    size_t body_len;
    /* Optional numeric address to connect to instead of resolving the
     * URL's host: "10.0.0.7:9102" or "[::1]:9102" (the resolver's
     * round-robin pick). Host header and TLS name still come from url.
     * NULL = the host is resolved as opts.resolver says. */
    const char *connect_to;
} gw_upstream_req;

typedef struct gw_upstream_resp {
    int status; /* HTTP status, e.g. 200, 404, 503 */
    /* Body, NUL-terminated for convenience (body_len excludes the NUL);
     * never NULL on success. Owned by the caller: gw_upstream_resp_free()
     * or take it and free() it. */
    char *body;
    size_t body_len;
    /* The final response's header fields, as nheaders pairs stored
     * "name\0value\0name\0value\0..." (value trimmed); owned by the
     * caller. Use gw_upstream_resp_header(). */
    char *headers;
    size_t nheaders;
} gw_upstream_resp;

/*
 * Make a client of the kind opts->client names (opts may be NULL:
 * defaults, a libcurl client). The libcurl client spawns its driver
 * goroutine(s); call from a goroutine. Caller owns *out:
 * gw_upstream_free(). Returns 0, -EINVAL for a bad option (a negative
 * count or time, an unknown client), -ENOMEM.
 */
int gw_upstream_new(const gw_upstream_opts *opts, gw_upstream **out);

/*
 * Free a client: calls still in flight fail with -ECANCELED; waits until
 * they have returned (and the curl client's drivers have exited), closing
 * every pooled connection. No new gw_upstream_do may start once this is
 * called. NULL is a no-op.
 */
void gw_upstream_free(gw_upstream *up);

/*
 * Perform one HTTP request, parking only the calling goroutine. The
 * deadline is ctx's (rt_ctx_deadline; ctx may be NULL = none); when ctx is
 * done the transfer is removed at once and its connection closed (the
 * backend sees the close; over a multiplexed HTTP/2 connection only the
 * stream is reset), and the call returns rt_ctx_err(ctx). The native
 * client retries a GET or HEAD once on a fresh connection when a reused
 * keep-alive connection fails before any byte of the answer (the backend
 * had closed it meanwhile); libcurl does the same. req and
 * everything it points to are only used until the call returns. On 0,
 * *resp is filled and owned by the caller; on error *resp is zeroed.
 */
int gw_upstream_do(gw_upstream *up, const gw_upstream_req *req, rt_ctx *ctx,
                   gw_upstream_resp *resp);

/* Value of the first header field named name (case-insensitive), or NULL.
 * Valid until gw_upstream_resp_free. */
const char *gw_upstream_resp_header(const gw_upstream_resp *resp,
                                    const char *name);

/* Free the body and headers (NULL-safe) and zero *resp. */
void gw_upstream_resp_free(gw_upstream_resp *resp);

/* A short message for gw_upstream_do's errors. */
const char *gw_upstream_strerror(int err);

/* Counters of one client (for tests and metrics). */
typedef struct gw_upstream_stats {
    uint64_t calls;     /* gw_upstream_do calls submitted */
    uint64_t cancelled; /* transfers removed because ctx was done */
    uint64_t connects;  /* new connections opened */
} gw_upstream_stats;
void gw_upstream_stats_get(gw_upstream *up, gw_upstream_stats *out);

#endif /* GW_UPSTREAM_H */
