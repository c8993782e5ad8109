/*
 * route.c — compiled routes: a segment trie for matching, and each part's
 * template cut into pieces for building its backend path.
 *
 * Data structures.
 *  - The trie: one node per distinct template prefix. A node has literal
 *    children (sorted by length, then bytes, for a binary search) and at
 *    most one parameter child (all {names} at one position share it: the
 *    name is the route's business, not the path's). A node where templates
 *    end has `methods`, a bit per method of the table below, and route[],
 *    the route index per method. Two routes with one method ending on one
 *    node are two routes with the same method and path: -EINVAL.
 *  - Per route: its parameter names in template order and its compiled
 *    parts; per part, the backend's prefix and the template as pieces,
 *    each a literal run (pointing into the config) or a placeholder name.
 *  - Names are copied, NUL-terminated, into one buffer of the router
 *    (sized from the templates' lengths: a name is shorter than its
 *    "{name}"), so `which` and m->params[].name point there.
 *
 * Invariants. The trie's depth is at most GW_CONFIG_MAX_SEGMENTS + 1 (the
 * templates were checked), so the recursive search below uses a bounded
 * stack whatever the request path; along any root-to-node path there are
 * at most GW_MAX_PARAMS parameter nodes (each such path is a prefix of one
 * template). The router is never written after gw_router_new returns.
 *
 * Search. A depth-first walk over the request's raw segments that tries a
 * node's literal child before its parameter child, so the first template
 * reached that has the method is the most specific one (route.h); when no
 * template has it, the walk has visited every matching template and
 * `allow` holds the union of their methods. Each trie node is visited at
 * most once per match (a node sits at one depth, and the segment at that
 * depth is fixed), so a match costs O(trie size) at worst and O(depth *
 * log children) when literals decide.
 *
 * Ownership: the router owns its nodes, route and part arrays and the name
 * buffer; it borrows the gw_config (templates, prefixes, route structs).
 */
#include "route.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(GW_MAX_PARAMS == GW_CONFIG_MAX_PARAMS,
               "route.h and config.h disagree on placeholders per route");

/* Every method a route may have (gw_config_check_method's set), HEAD and
 * OPTIONS, in Allow order. */
#define ROUTE_METHODS(X)                                                       \
    X("GET")                                                                   \
    X("HEAD")                                                                  \
    X("POST")                                                                  \
    X("PUT")                                                                   \
    X("PATCH")                                                                 \
    X("DELETE")                                                                \
    X("COPY")                                                                  \
    X("LOCK")                                                                  \
    X("MKCOL")                                                                 \
    X("MOVE")                                                                  \
    X("PROPFIND")                                                              \
    X("PROPPATCH")                                                             \
    X("SEARCH")                                                                \
    X("UNLOCK")                                                                \
    X("BIND")                                                                  \
    X("REBIND")                                                                \
    X("UNBIND")                                                                \
    X("ACL")                                                                   \
    X("REPORT")                                                                \
    X("MKACTIVITY")                                                            \
    X("CHECKOUT")                                                              \
    X("MERGE")                                                                 \
    X("M-SEARCH")                                                              \
    X("NOTIFY")                                                                \
    X("SUBSCRIBE")                                                             \
    X("UNSUBSCRIBE")                                                           \
    X("PURGE")                                                                 \
    X("MKCALENDAR")                                                            \
    X("LINK")                                                                  \
    X("UNLINK")                                                                \
    X("SOURCE")                                                                \
    X("OPTIONS")

#define METHOD_NAME(s) s,
static const char *const methods[] = {ROUTE_METHODS(METHOD_NAME)};
#undef METHOD_NAME

enum {
    NMETHODS = sizeof methods / sizeof methods[0],
    M_GET = 0,
    M_HEAD = 1,
    M_OPTIONS = NMETHODS - 1,
};

_Static_assert(NMETHODS <= 32, "a method mask is 32 bits");
/* All of them joined by ", " with the NUL fit in an Allow buffer. */
#define ALLOW_COST(s) +(sizeof s - 1 + 2)
_Static_assert(0 ROUTE_METHODS(ALLOW_COST) - 2 + 1 <= GW_ALLOW_LEN,
               "GW_ALLOW_LEN is too small for every method");
#undef ALLOW_COST

typedef struct node {
    const char *seg; /* literal segment (into the config); NULL: parameter */
    size_t seg_len;
    struct node **lits; /* literal children, sorted after the build */
    size_t nlits, cap;
    struct node *param;
    uint32_t methods;       /* templates ending here, a bit per method */
    size_t route[NMETHODS]; /* route index per method in `methods` */
} node;

typedef struct piece {
    const char *lit; /* literal run (into the config), when name is NULL */
    size_t len;
    const char *name; /* placeholder name, in the router's name buffer */
} piece;

typedef struct cpart {
    const char *prefix; /* the backend's prefix: "" or "/base" */
    size_t prefix_len;
    piece *pieces;
    size_t npieces;
} cpart;

typedef struct croute {
    const char *names[GW_MAX_PARAMS]; /* parameter names, template order */
    size_t nnames;
    cpart *parts;
    size_t nparts;
} croute;

struct gw_router {
    const gw_config *cfg;
    node *root;
    croute *routes;
    size_t nroutes;
    char *names; /* every name, NUL-terminated */
    size_t names_used, names_cap;
    char allow_all[GW_ALLOW_LEN];
};

/* ------------------------------------------------------------- helpers */

static bool is_hex_digit(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
           (ch >= 'A' && ch <= 'F');
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return ch - 'A' + 10;
}

/* ------------------------------------------------------------- methods */

/* Index of a method in the table, or -1. */
static int method_index(const char *m)
{
    for (int i = 0; i < NMETHODS; i++)
        if (strcmp(methods[i], m) == 0)
            return i;
    return -1;
}

/* "GET, HEAD, OPTIONS" from a mask: HEAD with GET, OPTIONS always. */
static void build_allow(uint32_t mask, char *out)
{
    size_t o = 0;

    if (mask & (1u << M_GET))
        mask |= 1u << M_HEAD;
    mask |= 1u << M_OPTIONS;
    for (int i = 0; i < NMETHODS; i++) {
        if (!(mask & (1u << i)))
            continue;
        size_t n = strlen(methods[i]);
        if (o > 0) {
            memcpy(out + o, ", ", 2);
            o += 2;
        }
        memcpy(out + o, methods[i], n); /* fits: the assertion above */
        o += n;
    }
    out[o] = '\0';
}

/* ---------------------------------------------------------------- trie */

static void node_free(node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nlits; i++)
        node_free(n->lits[i]);
    free(n->lits);
    node_free(n->param);
    free(n);
}

/* The literal child seg of n, created when missing; NULL: out of memory. */
static node *lit_child(node *n, const char *seg, size_t len)
{
    for (size_t i = 0; i < n->nlits; i++)
        if (n->lits[i]->seg_len == len &&
            memcmp(n->lits[i]->seg, seg, len) == 0)
            return n->lits[i];
    if (n->nlits == n->cap) {
        size_t cap = n->cap ? 2 * n->cap : 4;
        node **lits = realloc(n->lits, cap * sizeof *lits);
        if (lits == NULL)
            return NULL;
        n->lits = lits;
        n->cap = cap;
    }
    node *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->seg = seg;
    c->seg_len = len;
    n->lits[n->nlits++] = c;
    return c;
}

static int seg_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

static int lit_cmp(const void *a, const void *b)
{
    const node *x = *(node *const *)a, *y = *(node *const *)b;

    return seg_cmp(x->seg, x->seg_len, y->seg, y->seg_len);
}

static void node_sort(node *n)
{
    if (n == NULL)
        return;
    if (n->nlits > 1)
        qsort(n->lits, n->nlits, sizeof *n->lits, lit_cmp);
    for (size_t i = 0; i < n->nlits; i++)
        node_sort(n->lits[i]);
    node_sort(n->param);
}

static const node *find_lit(const node *n, const char *seg, size_t len)
{
    size_t lo = 0, hi = n->nlits;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const node *c = n->lits[mid];
        int d = seg_cmp(seg, len, c->seg, c->seg_len);
        if (d == 0)
            return c;
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------- compile */

/* A copy of name[0..len) in r's name buffer (sized in gw_router_new). */
static const char *keep_name(gw_router *r, const char *name, size_t len)
{
    char *p = r->names + r->names_used;

    memcpy(p, name, len);
    p[len] = '\0';
    r->names_used += len + 1;
    return p;
}

/* Adds route i's template to the trie and records its parameter names. */
static int add_route(gw_router *r, size_t i)
{
    const gw_route_cfg *rc = &r->cfg->routes[i];
    croute *cr = &r->routes[i];
    node *n = r->root;

    if (rc->method == NULL || rc->path == NULL ||
        gw_config_check_method(rc->method, NULL) != 0 ||
        gw_config_check_template(rc->path, true, NULL) != 0)
        return -EINVAL;
    int mi = method_index(rc->method);
    if (mi < 0)
        return -EINVAL;
    for (const char *p = rc->path + 1;; p++) {
        const char *end = strchr(p, '/');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len > 0 && p[0] == '{') {
            if (n->param == NULL && (n->param = calloc(1, sizeof *n)) == NULL)
                return -ENOMEM;
            n = n->param;
            cr->names[cr->nnames++] = keep_name(r, p + 1, len - 2);
        } else if ((n = lit_child(n, p, len)) == NULL) {
            return -ENOMEM;
        }
        if (end == NULL)
            break;
        p = end;
    }
    if (n->methods & (1u << mi))
        return -EINVAL; /* same method and path as an earlier route */
    n->methods |= 1u << mi;
    n->route[mi] = i;
    return 0;
}

/* Cuts a part's template into literal runs and placeholders. */
static int compile_part(gw_router *r, const gw_part_cfg *pc, cpart *cp)
{
    size_t n = 1;

    if (pc->path == NULL || gw_config_check_template(pc->path, false, NULL) ||
        pc->backend >= r->cfg->nbackends)
        return -EINVAL;
    cp->prefix = r->cfg->backends[pc->backend].prefix;
    if (cp->prefix == NULL)
        cp->prefix = "";
    cp->prefix_len = strlen(cp->prefix);
    for (const char *p = pc->path; *p != '\0'; p++)
        n += *p == '{' ? 2 : 0;
    cp->pieces = calloc(n, sizeof *cp->pieces);
    if (cp->pieces == NULL)
        return -ENOMEM;
    for (const char *p = pc->path; *p != '\0';) {
        piece *pc_ = &cp->pieces[cp->npieces++];
        if (*p == '{') {
            const char *close = strchr(p, '}');
            pc_->name = keep_name(r, p + 1, (size_t)(close - p - 1));
            p = close + 1;
        } else {
            size_t len = strcspn(p, "{");
            pc_->lit = p;
            pc_->len = len;
            p += len;
        }
    }
    return 0;
}

void gw_router_free(gw_router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; r->routes != NULL && i < r->nroutes; i++) {
        for (size_t j = 0; j < r->routes[i].nparts; j++)
            free(r->routes[i].parts[j].pieces);
        free(r->routes[i].parts);
    }
    free(r->routes);
    free(r->names);
    node_free(r->root);
    free(r);
}

int gw_router_new(const gw_config *cfg, gw_router **out)
{
    gw_router *r;
    uint32_t all = 0;
    int err = -ENOMEM;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (cfg == NULL || (cfg->nroutes > 0 && cfg->routes == NULL))
        return -EINVAL;
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->cfg = cfg;
    r->nroutes = cfg->nroutes;
    r->root = calloc(1, sizeof *r->root);
    r->routes = calloc(cfg->nroutes + 1, sizeof *r->routes);
    /* Every name with its NUL is shorter than its "{name}". */
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const gw_route_cfg *rc = &cfg->routes[i];
        r->names_cap += rc->path != NULL ? strlen(rc->path) : 0;
        for (size_t j = 0; rc->parts != NULL && j < rc->nparts; j++)
            r->names_cap +=
                rc->parts[j].path != NULL ? strlen(rc->parts[j].path) : 0;
    }
    r->names = malloc(r->names_cap + 1);
    if (r->root == NULL || r->routes == NULL || r->names == NULL)
        goto fail_router;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const gw_route_cfg *rc = &cfg->routes[i];
        croute *cr = &r->routes[i];

        err = -EINVAL;
        if (rc->nparts > 0 && rc->parts == NULL)
            goto fail_router;
        err = add_route(r, i);
        if (err != 0)
            goto fail_router;
        all |= 1u << method_index(rc->method);
        err = -ENOMEM;
        cr->parts = calloc(rc->nparts + 1, sizeof *cr->parts);
        if (cr->parts == NULL)
            goto fail_router;
        cr->nparts = rc->nparts;
        for (size_t j = 0; j < rc->nparts; j++) {
            err = compile_part(r, &rc->parts[j], &cr->parts[j]);
            if (err != 0)
                goto fail_router;
        }
    }
    node_sort(r->root);
    build_allow(all, r->allow_all);
    *out = r;
    return 0;

fail_router:
    gw_router_free(r);
    return err;
}

const char *gw_router_allow_all(const gw_router *r)
{
    return r->allow_all;
}

/* --------------------------------------------------------------- match */

typedef struct walk {
    const char *path;
    size_t len;
    int method; /* index, or -1: no route has it */
    uint32_t allow;
    long path_route;   /* the first route (config order) on a matched path */
    gw_route_match *m; /* params[] is the capture stack */
} walk;

/* Matches the segments from pos on (pos > len: none left) below n.
 * Returns true once a template with the method is found (m filled). */
static bool search(walk *w, const node *n, size_t pos)
{
    gw_route_match *m = w->m;

    if (pos > w->len) {
        w->allow |= n->methods;
        for (int k = 0; k < NMETHODS; k++)
            if ((n->methods & (1u << k)) &&
                (w->path_route < 0 || (long)n->route[k] < w->path_route))
                w->path_route = (long)n->route[k];
        if (w->method < 0 || !(n->methods & (1u << w->method)))
            return false;
        m->route_index = n->route[w->method];
        return true;
    }
    const char *seg = w->path + pos;
    const char *slash = memchr(seg, '/', w->len - pos);
    size_t len = slash != NULL ? (size_t)(slash - seg) : w->len - pos;
    size_t next = pos + len + 1; /* past the '/', or past the end */

    const node *lit = find_lit(n, seg, len);
    if (lit != NULL && search(w, lit, next))
        return true;
    if (n->param != NULL && len > 0 && m->nparams < GW_MAX_PARAMS) {
        m->params[m->nparams].raw = seg;
        m->params[m->nparams].raw_len = len;
        m->nparams++;
        if (search(w, n->param, next))
            return true;
        m->nparams--;
    }
    return false;
}

static bool valid_escapes(const char *s, size_t len)
{
    for (const char *p = memchr(s, '%', len); p != NULL;
         p = memchr(p + 1, '%', len - (size_t)(p + 1 - s))) {
        size_t left = len - (size_t)(p - s);
        if (left < 3 || !is_hex_digit(p[1]) || !is_hex_digit(p[2]))
            return false;
    }
    return true;
}

void gw_router_match(const gw_router *r, const char *method, const char *path,
                     size_t path_len, gw_route_match *m)
{
    walk w = {.path = path, .len = path_len, .path_route = -1, .m = m};
    bool options = method != NULL && strcmp(method, "OPTIONS") == 0;

    /* Field by field: params[] and most of allow[] need no clearing. */
    m->status = 0;
    m->error = NULL;
    m->route = NULL;
    m->route_index = 0;
    m->options = false;
    m->allow[0] = '\0';
    m->nparams = 0;
    if (path == NULL || !valid_escapes(path, path_len)) {
        m->status = 400;
        m->error = "invalid percent-escape in path";
        return;
    }
    if (path_len == 0 || path[0] != '/') {
        m->status = 404;
        m->error = "no route";
        return;
    }
    w.method = method == NULL || options ? -1 : method_index(method);
    if (w.method == M_HEAD)
        w.method = M_GET;
    else if (w.method == M_OPTIONS)
        w.method = -1;
    if (search(&w, r->root, 1)) {
        const croute *cr = &r->routes[m->route_index];
        m->route = &r->cfg->routes[m->route_index];
        for (size_t i = 0; i < m->nparams; i++)
            m->params[i].name = cr->names[i];
        return;
    }
    m->nparams = 0;
    m->route_index = w.path_route >= 0 ? (size_t)w.path_route : 0;
    if (w.allow == 0) {
        m->status = 404;
        m->error = "no route";
        return;
    }
    build_allow(w.allow, m->allow);
    if (options) {
        m->options = true;
        return;
    }
    m->status = 405;
    m->error = "method not allowed";
}

/* ----------------------------------------------------------- part path */

typedef struct outbuf {
    char *buf;
    size_t cap; /* bytes usable before the NUL */
    size_t used;
    bool full;
} outbuf;

static void put(outbuf *o, const char *s, size_t n)
{
    if (o->full || n > o->cap - o->used) {
        o->full = true;
        return;
    }
    memcpy(o->buf + o->used, s, n);
    o->used += n;
}

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
           ch == '~';
}

/* Decodes one byte of raw at *i (a %XX escape, '+' as a space when
 * plus_space, else the byte itself) and advances *i. -1: bad escape. */
static int decode_byte(const char *raw, size_t len, size_t *i, bool plus_space)
{
    unsigned char ch = (unsigned char)raw[*i];

    if (ch == '%') {
        if (len - *i < 3 || !is_hex_digit(raw[*i + 1]) ||
            !is_hex_digit(raw[*i + 2]))
            return -1;
        ch = (unsigned char)(hex_value(raw[*i + 1]) << 4 |
                             hex_value(raw[*i + 2]));
        *i += 3;
        return ch;
    }
    *i += 1;
    return plus_space && ch == '+' ? ' ' : ch;
}

/* Appends raw decoded then re-encoded for a path segment. */
static int put_value(outbuf *o, const char *raw, size_t len, bool plus_space)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < len;) {
        int ch = decode_byte(raw, len, &i, plus_space);
        if (ch < 0)
            return -EINVAL;
        if (unreserved((unsigned char)ch)) {
            char c = (char)ch;
            put(o, &c, 1);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            put(o, esc, 3);
        }
    }
    return 0;
}

/* Whether raw decodes to "." or "..": as a segment the backend's client
 * or server would resolve it, stepping out of the part's template. */
static bool dot_segment(const char *raw, size_t len, bool plus_space)
{
    size_t i = 0, n = 0;

    while (i < len && n < 3) {
        if (decode_byte(raw, len, &i, plus_space) != '.')
            return false;
        n++;
    }
    return i == len && n <= 2;
}

/* Whether raw (a query parameter's name) decodes to name. */
static bool decoded_equals(const char *raw, size_t len, const char *name)
{
    size_t i = 0, j = 0;

    while (i < len) {
        int ch = decode_byte(raw, len, &i, true);
        if (ch < 0 || name[j] == '\0' || (unsigned char)name[j] != ch)
            return false;
        j++;
    }
    return name[j] == '\0';
}

/* The raw value of the query's first parameter called name with a
 * non-empty value. */
static bool query_value(const char *q, size_t qlen, const char *name,
                        const char **val, size_t *vlen)
{
    size_t pos = 0;

    while (q != NULL && pos < qlen) {
        const char *pair = q + pos;
        const char *amp = memchr(pair, '&', qlen - pos);
        size_t plen = amp != NULL ? (size_t)(amp - pair) : qlen - pos;
        const char *eq = memchr(pair, '=', plen);
        size_t nlen = eq != NULL ? (size_t)(eq - pair) : plen;

        pos += plen + 1;
        if (eq == NULL || nlen + 1 == plen)
            continue; /* no value, or an empty one */
        if (decoded_equals(pair, nlen, name)) {
            *val = eq + 1;
            *vlen = plen - nlen - 1;
            return true;
        }
    }
    return false;
}

int gw_route_part_path(const gw_router *r, const gw_route_match *m, size_t part,
                       const char *query, size_t query_len, char *buf,
                       size_t len, const char **which)
{
    const char *dummy;

    if (which == NULL)
        which = &dummy;
    *which = NULL;
    if (r == NULL || m == NULL || m->status != 0 || m->route == NULL ||
        m->route_index >= r->nroutes || buf == NULL || len == 0)
        return -EINVAL;
    const croute *cr = &r->routes[m->route_index];
    if (part >= cr->nparts)
        return -EINVAL;
    const cpart *cp = &cr->parts[part];
    outbuf o = {.buf = buf, .cap = (len > INT_MAX ? INT_MAX : len) - 1};

    put(&o, cp->prefix, cp->prefix_len);
    for (size_t i = 0; i < cp->npieces; i++) {
        const piece *pc = &cp->pieces[i];
        const char *raw = NULL;
        size_t raw_len = 0;
        bool from_query = false;

        if (pc->name == NULL) {
            put(&o, pc->lit, pc->len);
            continue;
        }
        for (size_t k = 0; k < m->nparams && raw == NULL; k++) {
            if (m->params[k].name != NULL && m->params[k].raw_len > 0 &&
                strcmp(m->params[k].name, pc->name) == 0) {
                raw = m->params[k].raw;
                raw_len = m->params[k].raw_len;
            }
        }
        if (raw == NULL) {
            from_query = true;
            if (!query_value(query, query_len, pc->name, &raw, &raw_len)) {
                *which = pc->name;
                return -ENOENT;
            }
        }
        if (dot_segment(raw, raw_len, from_query) ||
            put_value(&o, raw, raw_len, from_query) != 0) {
            *which = pc->name;
            return -EINVAL;
        }
    }
    if (o.full) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    buf[o.used] = '\0';
    return (int)o.used;
}
