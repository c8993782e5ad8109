/*
 * route.h — request routing: which route a request's method and path
 * select, its path parameters, the Allow list for 405 and OPTIONS, and the
 * path each fan-out part calls on its backend.
 *
 *     gw_router *r;
 *     if (gw_router_new(cfg, &r) != 0) ...          // once per config
 *     gw_route_match m;
 *     gw_router_match(r, "GET", path, path_len, &m); // path without query
 *     if (m.status != 0)  answer m.status {"error": m.error}, with
 *                         "Allow: m.allow" on 405;
 *     else if (m.options) answer 204 with "Allow: m.allow";
 *     else for each part i of m.route:
 *         char p[GW_PART_PATH_LEN]; const char *which;
 *         int n = gw_route_part_path(r, &m, i, query, query_len, p,
 *                                    sizeof p, &which);
 *         n == -ENOENT: answer 400 naming `which`.
 *
 * Matching. A path is split into raw segments on '/' (no decoding first;
 * an empty segment is a segment: "/a//b" has three, "/a/" two). A literal
 * template segment matches the same bytes; {param} matches any one
 * non-empty segment. When several templates match a path, the most
 * specific wins: comparing segments left to right, the first place where
 * one has a literal and the other a parameter decides for the literal
 * ("/a/new" beats "/a/{id}", "/a/{id}/x" beats "/{s}/b/x" for "/a/b/x").
 * The method then selects among routes whose template matched: the most
 * specific template that has a route for the method is chosen, as Go's
 * ServeMux does; when none has, the answer is 405 with the methods of all
 * of them. HEAD is served by GET routes.
 *
 * A gw_router is immutable after gw_router_new: any number of goroutines
 * may match on it at once. It keeps pointers into its gw_config, which
 * must outlive it.
 */
#ifndef GW_ROUTE_H
#define GW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define GW_MAX_PARAMS 16
/* Room for every method a route may have plus HEAD and OPTIONS
 * (route.c checks it at compile time). */
#define GW_ALLOW_LEN 256
/* A suggested size for gw_route_part_path's buffer: three times the
 * longest request target (every byte of a value may become %XX) plus
 * room for the template. A path that still does not fit (a value used
 * several times) is -ENOSPC. */
#define GW_PART_PATH_LEN (3 * 8192 + 4096)

typedef struct gw_router gw_router;

/*
 * Compile cfg's routes. cfg must be valid as gw_config_parse returns it
 * (anything else, such as an unknown method, a bad template or two routes
 * with one method and path, is -EINVAL) and must outlive the router.
 * Caller owns *out: gw_router_free(). Returns 0, -EINVAL or -ENOMEM.
 */
int gw_router_new(const gw_config *cfg, gw_router **out);

/* Free r. NULL is a no-op. */
void gw_router_free(gw_router *r);

typedef struct gw_route_match {
    /* 0 matched; 400 bad percent-escape in the path; 404 no route; 405 the
     * path matched, the method did not. */
    int status;
    /* For 400/404/405: "invalid percent-escape in path", "no route",
     * "method not allowed" (static strings); NULL when status is 0. */
    const char *error;
    /* When status is 0 and options is false: the route and its index in
     * cfg->routes. For 405 and OPTIONS on a route's path, route is NULL
     * and route_index is the first route (config order) with that path,
     * which metrics and the access log name. */
    const gw_route_cfg *route;
    size_t route_index;
    /* Method OPTIONS on a route's path: answer 204 with allow (status 0,
     * route NULL). */
    bool options;
    /* For 405 and OPTIONS: this path's methods, plus HEAD with GET, plus
     * OPTIONS, e.g. "GET, HEAD, OPTIONS". Empty otherwise. */
    char allow[GW_ALLOW_LEN];
    /* The route's path parameters in template order. name is owned by the
     * router; raw points into the path given to gw_router_match (still
     * percent-encoded, never empty). */
    size_t nparams;
    struct {
        const char *name;
        const char *raw;
        size_t raw_len;
    } params[GW_MAX_PARAMS];
} gw_route_match;

/*
 * Match a request. method is the request's method (e.g. "GET"; one the
 * gateway does not route, such as "TRACE", never matches and gives 405
 * on a routed path); path the request's path, raw (percent-encoded),
 * without the query. An invalid percent-escape anywhere in the path
 * gives 400 before any lookup; a path that does not start with '/' gives
 * 404. m is filled in every case.
 */
void gw_router_match(const gw_router *r, const char *method, const char *path,
                     size_t path_len, gw_route_match *m);

/* The Allow value for "OPTIONS *": every route's method, HEAD with GET,
 * and OPTIONS, each once, in a stable order (GET, HEAD, POST, PUT, PATCH,
 * DELETE, then the others, OPTIONS last). Owned by the router. */
const char *gw_router_allow_all(const gw_router *r);

/*
 * The path of the call to part `part` of m's route: its backend's prefix,
 * then the part's template with each {name} filled from m's path
 * parameters, else from the query's first parameter of that name with a
 * non-empty value (percent-decoded first, '+' in the query is a space;
 * path parameters are percent-decoded too, so "%2F" inside a segment
 * stays in that value), then re-encoded for a path segment: RFC 3986
 * unreserved characters stay, every other byte becomes %XX (upper-case
 * hex). query is the request's query without the '?' (may be NULL when
 * query_len is 0); pairs are separated by '&', a name without '=' has an
 * empty value. The client's query string is not forwarded.
 *
 * Writes the path NUL-terminated into buf and returns its length, or:
 *   -ENOENT  a placeholder has no value;
 *   -EINVAL  a bad percent-escape in the value it would use, or a
 *            value that decodes to "." or ".." (as a segment the backend's
 *            HTTP client or server would resolve it and leave the
 *            template: "/inventory/.." is "/");
 *            for both, *which (may be NULL) points to the placeholder's
 *            name (NUL-terminated, owned by the router);
 *   -ENOSPC  buf is too small (*which NULL);
 *   -EINVAL  with *which NULL: m is not a route match, or part is out of
 *            range.
 */
int gw_route_part_path(const gw_router *r, const gw_route_match *m, size_t part,
                       const char *query, size_t query_len, char *buf,
                       size_t len, const char **which);

#endif /* GW_ROUTE_H */
