/*
 * upstream_internal.h — what the upstream dispatcher (upstream.c) shares
 * with the two clients behind it (upstream_curl.c, upstream_native.c).
 * Nothing else includes it: the API is upstream.h.
 *
 * A gw_upstream is the head of each client's own struct (its first
 * member), holding the client's operations. The dispatcher checks the
 * arguments every client would check (NULL client, request or URL), fills
 * the defaults of the options both share, and calls through ops.
 */
#ifndef GW_UPSTREAM_INTERNAL_H
#define GW_UPSTREAM_INTERNAL_H

#include "upstream.h"

typedef struct gw__upstream_ops {
    /* req and req->url are not NULL; resp is zeroed on error. */
    int (*call)(gw_upstream *up, const gw_upstream_req *req, rt_ctx *ctx,
                gw_upstream_resp *resp);
    void (*free)(gw_upstream *up); /* up is not NULL */
    void (*stats)(gw_upstream *up, gw_upstream_stats *out);
} gw__upstream_ops;

struct gw_upstream {
    const gw__upstream_ops *ops;
};

/*
 * Constructors, called by gw_upstream_new with validated options
 * (max_response_bytes set, counts and times not negative). Caller owns
 * *out: gw_upstream_free(). 0 or a negative errno.
 */
int gw__upstream_curl_new(const gw_upstream_opts *opts, gw_upstream **out);
int gw__upstream_native_new(const gw_upstream_opts *opts, gw_upstream **out);

/* Is addr a numeric "a.b.c.d:port" or "[v6]:port" with port 1-65535 (what
 * req.connect_to takes)? 0 or -EINVAL. */
int gw__upstream_check_addr(const char *addr);

#endif /* GW_UPSTREAM_INTERNAL_H */
