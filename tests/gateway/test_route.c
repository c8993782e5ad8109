/*
 * test_route.c — unit tests for gateway/route.c: matching raw segments,
 * literal before parameter, 404 / 405 with Allow, OPTIONS and "OPTIONS *",
 * HEAD on GET routes, empty segments, bad percent-escapes, and part paths
 * built from path then query parameters with their re-encoding.
 *
 * Routers are compiled from configurations parsed by gateway/config.c
 * (single-quoted JSON, as in test_config.c). Plain C: no goroutines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "llhttp.h"
#include "route.h"

/* ------------------------------------------------------------- helpers */

typedef struct fixture {
    gw_config *cfg;
    gw_router *r;
} fixture;

/* Parses single-quoted JSON and compiles its routes; asserts success. */
static fixture make(const char *qjson)
{
    char *json = strdup(qjson);
    fixture f = {0};
    gw_config_errors e = {0};

    assert_non_null(json);
    for (char *p = json; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    int rc = gw_config_parse(json, strlen(json), "/", &f.cfg, &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("  problem: %s\n", e.msgs[i]);
    gw_config_errors_free(&e);
    free(json);
    assert_int_equal(rc, 0);
    assert_int_equal(gw_router_new(f.cfg, &f.r), 0);
    assert_non_null(f.r);
    return f;
}

static void unmake(fixture *f)
{
    gw_router_free(f->r);
    gw_config_free(f->cfg);
}

#define HEAD_                                                                  \
    "{'listen':'127.0.0.1:8080','backends':{'b':{'url':'http://h:1'},"         \
    "'pre':{'url':'http://h:2/base/'}},'routes':["
#define TAIL_ "]}"
/* A route with one part calling /p on backend b. */
#define R(method, path)                                                        \
    "{'method':'" method "','path':'" path "','fanout':[{'name':'p',"          \
    "'backend':'b','path':'/p'}]}"

static void match(const gw_router *r, const char *method, const char *path,
                  gw_route_match *m)
{
    gw_router_match(r, method, path, strlen(path), m);
}

/* Asserts that method+path selects route index want. */
static void expect_route(const fixture *f, const char *method, const char *path,
                         size_t want)
{
    gw_route_match m;

    match(f->r, method, path, &m);
    if (m.status != 0 || m.route_index != want)
        print_message("  %s %s: status %d route %zu, want route %zu\n", method,
                      path, m.status, m.route_index, want);
    assert_int_equal(m.status, 0);
    assert_false(m.options);
    assert_null(m.error);
    assert_int_equal(m.route_index, want);
    assert_ptr_equal(m.route, &f->cfg->routes[want]);
}

static void expect_status(const fixture *f, const char *method,
                          const char *path, int status, const char *allow)
{
    gw_route_match m;

    match(f->r, method, path, &m);
    if (m.status != status)
        print_message("  %s %s: status %d, want %d\n", method, path, m.status,
                      status);
    assert_int_equal(m.status, status);
    assert_null(m.route);
    assert_int_equal(m.nparams, 0);
    assert_string_equal(m.error, status == 400   ? "invalid percent-escape in "
                                                   "path"
                                 : status == 404 ? "no route"
                                                 : "method not allowed");
    assert_string_equal(m.allow, allow != NULL ? allow : "");
}

/* The demo-like routes used by the part-path tests. */
#define PARTS_CFG                                                              \
    HEAD_ "{'method':'GET','path':'/api/products/{id}','fanout':["             \
          "{'name':'inventory','backend':'b','path':'/inventory/{id}'},"       \
          "{'name':'profile','backend':'b','path':'/users/{user}'},"           \
          "{'name':'pre','backend':'pre','path':'/x/{id}-{id}.json'},"         \
          "{'name':'two','backend':'b','path':'/q/{a}/{b}'},"                  \
          "{'name':'lit','backend':'pre','path':'/'}]},"                       \
          "{'method':'GET','path':'/u/{user}','fanout':["                      \
          "{'name':'profile','backend':'b','path':'/users/{user}'}]}" TAIL_

enum { P_INVENTORY, P_PROFILE, P_PRE, P_TWO, P_LIT };

/* The part path for part of the route matched by GET path, with query. */
static int part_path(const fixture *f, const char *path, size_t part,
                     const char *query, char *buf, size_t len,
                     const char **which)
{
    gw_route_match m;

    match(f->r, "GET", path, &m);
    assert_int_equal(m.status, 0);
    return gw_route_part_path(f->r, &m, part, query,
                              query != NULL ? strlen(query) : 0, buf, len,
                              which);
}

/* Asserts the part path is want. */
static void expect_part(const fixture *f, const char *path, size_t part,
                        const char *query, const char *want)
{
    char buf[4096];
    const char *which = "unset";
    int n = part_path(f, path, part, query, buf, sizeof buf, &which);

    if (n < 0 || strcmp(buf, want) != 0)
        print_message("  %s ? %s: %d %s, want %s\n", path,
                      query ? query : "(none)", n, n >= 0 ? buf : "", want);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);
    assert_null(which);
}

/* Asserts the part path fails with err naming placeholder name. */
static void expect_part_error(const fixture *f, const char *path, size_t part,
                              const char *query, int err, const char *name)
{
    char buf[4096];
    const char *which = NULL;

    assert_int_equal(part_path(f, path, part, query, buf, sizeof buf, &which),
                     err);
    assert_non_null(which);
    assert_string_equal(which, name);
}

/* ------------------------------------------------------------ matching */

static void test_match_param(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/api/products/{id}") "," R(
        "DELETE", "/api/products/{id}/items/{item}") TAIL_);
    const char *path = "/api/products/42";
    gw_route_match m;

    match(f.r, "GET", path, &m);
    assert_int_equal(m.status, 0);
    assert_null(m.error);
    assert_false(m.options);
    assert_int_equal(m.route_index, 0);
    assert_ptr_equal(m.route, &f.cfg->routes[0]);
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.params[0].name, "id");
    assert_ptr_equal(m.params[0].raw, path + 14);
    assert_int_equal(m.params[0].raw_len, 2);
    assert_string_equal(m.allow, "");

    path = "/api/products/a%2Fb/items/x%20y";
    match(f.r, "DELETE", path, &m);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.route_index, 1);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.params[0].name, "id");
    assert_memory_equal(m.params[0].raw, "a%2Fb", 5);
    assert_int_equal(m.params[0].raw_len, 5);
    assert_string_equal(m.params[1].name, "item");
    assert_ptr_equal(m.params[1].raw, path + 26);
    assert_int_equal(m.params[1].raw_len, 5);

    /* path_len is honoured: the bytes after it are not looked at. */
    gw_router_match(f.r, "GET", "/api/products/7%zz", 15, &m);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.params[0].raw_len, 1);
    unmake(&f);
}

static void test_literal_beats_param(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/p/{id}") "," R("GET", "/p/new") "," R(
        "POST", "/p/{pid}") TAIL_);
    gw_route_match m;

    expect_route(&f, "GET", "/p/new", 1);
    match(f.r, "GET", "/p/new", &m);
    assert_int_equal(m.nparams, 0);
    expect_route(&f, "GET", "/p/7", 0);
    /* The literal template has no POST: the parameter one does. */
    expect_route(&f, "POST", "/p/new", 2);
    match(f.r, "POST", "/p/new", &m);
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.params[0].name, "pid");
    assert_memory_equal(m.params[0].raw, "new", 3);
    /* Neither has DELETE: 405 with the methods of both. */
    expect_status(&f, "DELETE", "/p/new", 405, "GET, HEAD, POST, OPTIONS");
    unmake(&f);
}

/* The first segment where two templates differ decides, whatever the
 * order of the routes in the file. */
static void test_precedence_left_to_right(void **state)
{
    (void)state;
    for (int reversed = 0; reversed < 2; reversed++) {
        fixture f = make(
            reversed
                ? HEAD_ R("GET", "/{s}/b/x") "," R("GET", "/a/{id}/x") TAIL_
                : HEAD_ R("GET", "/a/{id}/x") "," R("GET", "/{s}/b/x") TAIL_);
        size_t a = reversed ? 1 : 0, s = reversed ? 0 : 1;
        expect_route(&f, "GET", "/a/b/x", a);
        expect_route(&f, "GET", "/a/c/x", a);
        expect_route(&f, "GET", "/c/b/x", s);
        expect_status(&f, "GET", "/c/c/x", 404, NULL);
        unmake(&f);
    }

    /* A literal branch that fails deeper falls back to the parameter. */
    fixture f = make(HEAD_ R("GET", "/a/b/c") "," R("GET", "/a/{x}/d") TAIL_);
    gw_route_match m;
    expect_route(&f, "GET", "/a/b/c", 0);
    expect_route(&f, "GET", "/a/b/d", 1);
    match(f.r, "GET", "/a/b/d", &m);
    assert_int_equal(m.nparams, 1);
    assert_memory_equal(m.params[0].raw, "b", 1);
    expect_status(&f, "GET", "/a/b/e", 404, NULL);
    unmake(&f);
}

static void test_no_route(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/api/products/{id}") TAIL_);
    static const char *const paths[] = {
        "/nope",
        "/api/products",
        "/api/products/",
        "/api/products/1/2",
        "",
        "*",
        "api/products/1",
        "/API/products/1",
        "//api/products/1",
        "/api/products//",
    };

    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        expect_status(&f, "GET", paths[i], 404, NULL);
    /* 404 whatever the method. */
    expect_status(&f, "POST", "/nope", 404, NULL);
    expect_status(&f, "OPTIONS", "/nope", 404, NULL);
    gw_route_match m;
    gw_router_match(f.r, "GET", NULL, 0, &m);
    assert_int_equal(m.status, 400);
    unmake(&f);
}

static void test_method_not_allowed(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/r/{id}") "," R("POST", "/r/{id}") "," R(
        "PATCH", "/r/{id}") "," R("DELETE", "/r/x") "," R("POST", "/w") TAIL_);

    expect_status(&f, "PUT", "/r/x", 405,
                  "GET, HEAD, POST, PATCH, DELETE, OPTIONS");
    expect_status(&f, "PUT", "/r/y", 405, "GET, HEAD, POST, PATCH, OPTIONS");
    expect_status(&f, "DELETE", "/r/y", 405, "GET, HEAD, POST, PATCH, OPTIONS");
    expect_route(&f, "DELETE", "/r/x", 3);
    /* Without GET there is no HEAD. */
    expect_status(&f, "GET", "/w", 405, "POST, OPTIONS");
    expect_status(&f, "HEAD", "/w", 405, "POST, OPTIONS");
    /* Methods no route can have: 405 on a routed path. */
    expect_status(&f, "TRACE", "/w", 405, "POST, OPTIONS");
    expect_status(&f, "CONNECT", "/w", 405, "POST, OPTIONS");
    expect_status(&f, "BREW", "/w", 405, "POST, OPTIONS");
    expect_status(&f, "post", "/w", 405, "POST, OPTIONS");
    expect_status(&f, "", "/w", 405, "POST, OPTIONS");
    expect_status(&f, NULL, "/w", 405, "POST, OPTIONS");
    unmake(&f);
}

static void test_head(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("POST", "/r/{id}") "," R("GET", "/r/{id}") TAIL_);
    gw_route_match m;

    expect_route(&f, "HEAD", "/r/5", 1);
    match(f.r, "HEAD", "/r/5", &m);
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.route->method, "GET");
    expect_route(&f, "POST", "/r/5", 0);
    unmake(&f);
}

static void test_options(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/r/{id}") "," R("PUT", "/r/{id}") "," R(
        "DELETE", "/d") TAIL_);
    gw_route_match m;

    match(f.r, "OPTIONS", "/r/1", &m);
    assert_int_equal(m.status, 0);
    assert_null(m.error);
    assert_true(m.options);
    assert_null(m.route);
    assert_int_equal(m.nparams, 0);
    assert_string_equal(m.allow, "GET, HEAD, PUT, OPTIONS");
    match(f.r, "OPTIONS", "/d", &m);
    assert_true(m.options);
    assert_string_equal(m.allow, "DELETE, OPTIONS");
    expect_status(&f, "OPTIONS", "/x", 404, NULL);
    expect_status(&f, "OPTIONS", "/r/%", 400, NULL);
    /* "OPTIONS *": the server asks gw_router_allow_all. */
    expect_status(&f, "OPTIONS", "*", 404, NULL);
    assert_string_equal(gw_router_allow_all(f.r),
                        "GET, HEAD, PUT, DELETE, OPTIONS");
    unmake(&f);
}

static void test_allow_all(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("PATCH", "/d") "," R("DELETE", "/c") "," R(
        "GET", "/b") "," R("POST", "/a") "," R("GET", "/e") TAIL_);
    assert_string_equal(gw_router_allow_all(f.r),
                        "GET, HEAD, POST, PATCH, DELETE, OPTIONS");
    unmake(&f);

    f = make(HEAD_ R("POST", "/a") TAIL_);
    assert_string_equal(gw_router_allow_all(f.r), "POST, OPTIONS");
    unmake(&f);

    f = make(HEAD_ R("PURGE", "/a") "," R("M-SEARCH", "/a") "," R("GET", "/a")
                 TAIL_);
    assert_string_equal(gw_router_allow_all(f.r),
                        "GET, HEAD, M-SEARCH, PURGE, OPTIONS");
    unmake(&f);
}

/* One route per method a route may have, all on one path: every one
 * compiles and matches, and the Allow list fits. */
static void test_every_method(void **state)
{
    char json[16384];
    size_t o = 0, n = 0;
    const char *names[64];

    (void)state;
    o += (size_t)snprintf(json, sizeof json, "%s", HEAD_);
#define ADD(num, name, string)                                                 \
    if (gw_config_check_method(#string, NULL) == 0) {                          \
        names[n++] = #string;                                                  \
        o += (size_t)snprintf(json + o, sizeof json - o, "%s" R("%s", "/m"),   \
                              n > 1 ? "," : "", #string);                      \
    }
    HTTP_METHOD_MAP(ADD)
#undef ADD
    snprintf(json + o, sizeof json - o, "%s", TAIL_);
    assert_true(n >= 30);
    fixture f = make(json);
    for (size_t i = 0; i < n; i++)
        expect_route(&f, names[i], "/m", i);
    gw_route_match m;
    match(f.r, "OPTIONS", "/m", &m);
    assert_true(m.options);
    assert_true(strlen(m.allow) < GW_ALLOW_LEN);
    assert_int_equal(
        strncmp(m.allow, "GET, HEAD, POST, PUT, PATCH, DELETE, ", 37), 0);
    assert_non_null(strstr(m.allow, ", M-SEARCH, "));
    assert_non_null(strstr(m.allow, ", SOURCE, OPTIONS"));
    assert_string_equal(m.allow, gw_router_allow_all(f.r));
    /* Each method once: n route methods plus HEAD and OPTIONS. */
    size_t commas = 0;
    for (const char *p = m.allow; *p != '\0'; p++)
        commas += *p == ',';
    assert_int_equal(commas + 1, n + 2);
    unmake(&f);
}

static void test_empty_segments(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/a//b") "," R("GET", "/a/{x}/b") "," R(
        "GET", "/") "," R("GET", "/a/") "," R("GET", "/a") "," R("GET",
                                                                 "/x/{id}")
                         TAIL_);

    expect_route(&f, "GET", "/a//b", 0);
    expect_route(&f, "GET", "/a/z/b", 1);
    expect_route(&f, "GET", "/", 2);
    expect_route(&f, "GET", "/a/", 3);
    expect_route(&f, "GET", "/a", 4);
    expect_status(&f, "GET", "/a/b", 404, NULL);
    expect_status(&f, "GET", "//", 404, NULL);
    expect_status(&f, "GET", "/a///b", 404, NULL);
    expect_status(&f, "GET", "/a//b/", 404, NULL);
    /* A parameter never matches an empty segment. */
    expect_status(&f, "GET", "/x/", 404, NULL);
    expect_status(&f, "GET", "/x//", 404, NULL);
    unmake(&f);
}

static void test_bad_escapes(void **state)
{
    (void)state;
    fixture f = make(HEAD_ R("GET", "/api/products/{id}") TAIL_);
    static const char *const bad[] = {
        "/api/products/%zz",
        "/api/products/%",
        "/api/products/%4",
        "/api/products/%4g",
        "/nope/%4",
        "/%",
        "/a%2",
        "/%%41",
        "/%4%41",
    };

    /* 400 before 404 or 405, whatever the method. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_status(&f, "GET", bad[i], 400, NULL);
        expect_status(&f, "DELETE", bad[i], 400, NULL);
    }
    gw_route_match m;
    match(f.r, "GET", "/api/products/a%2Fb", &m);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.params[0].raw_len, 5);
    expect_route(&f, "GET", "/api/products/%2f%41%7e", 0);
    unmake(&f);
}

/* Literal segments compare raw bytes: no decoding, no case folding. */
static void test_raw_literals(void **state)
{
    (void)state;
    fixture f =
        make(HEAD_ R("GET", "/caf%C3%A9/{x}") "," R("GET", "/a%2Fb") TAIL_);

    expect_route(&f, "GET", "/caf%C3%A9/1", 0);
    expect_status(&f, "GET", "/caf%c3%a9/1", 404, NULL);
    expect_status(&f, "GET", "/caf\xc3\xa9/1", 404, NULL);
    expect_route(&f, "GET", "/a%2Fb", 1);
    expect_status(&f, "GET", "/a/b", 404, NULL);
    unmake(&f);
}

static void test_sixteen_params(void **state)
{
    char route[512], json[1024], path[256];
    size_t o = 0, p = 0;

    (void)state;
    for (int i = 0; i < GW_MAX_PARAMS; i++) {
        o += (size_t)snprintf(route + o, sizeof route - o, "/{p%d}", i);
        p += (size_t)snprintf(path + p, sizeof path - p, "/v%d", i);
    }
    snprintf(json, sizeof json, HEAD_ R("GET", "%s") TAIL_, route);
    fixture f = make(json);
    gw_route_match m;
    match(f.r, "GET", path, &m);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.nparams, GW_MAX_PARAMS);
    for (int i = 0; i < GW_MAX_PARAMS; i++) {
        char name[8], val[8];
        snprintf(name, sizeof name, "p%d", i);
        snprintf(val, sizeof val, "v%d", i);
        assert_string_equal(m.params[i].name, name);
        assert_int_equal(m.params[i].raw_len, strlen(val));
        assert_memory_equal(m.params[i].raw, val, strlen(val));
    }
    unmake(&f);
}

/* Many literal siblings (binary search) beside a parameter. */
static void test_many_literals(void **state)
{
    size_t cap = 64 * 1024, o = 0;
    char *json = malloc(cap);

    (void)state;
    assert_non_null(json);
    o += (size_t)snprintf(json, cap, "%s", HEAD_);
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(json + o, cap - o, "%s" R("GET", "/r/k%d"),
                              i ? "," : "", i);
    snprintf(json + o, cap - o, "," R("GET", "/r/{any}") TAIL_);
    fixture f = make(json);
    for (int i = 0; i < 300; i++) {
        char path[32];
        snprintf(path, sizeof path, "/r/k%d", i);
        expect_route(&f, "GET", path, (size_t)i);
    }
    expect_route(&f, "GET", "/r/k300", 300);
    expect_route(&f, "GET", "/r/k", 300);
    unmake(&f);
    free(json);
}

/* ----------------------------------------------------------- part paths */

static void test_part_from_path(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);

    expect_part(&f, "/api/products/42", P_INVENTORY, NULL, "/inventory/42");
    expect_part(&f, "/api/products/42", P_INVENTORY, "", "/inventory/42");
    /* The backend's prefix, and a name used twice inside a segment. */
    expect_part(&f, "/api/products/42", P_PRE, NULL, "/base/x/42-42.json");
    expect_part(&f, "/api/products/42", P_LIT, NULL, "/base/");
    /* A path parameter wins over the query. */
    expect_part(&f, "/api/products/42", P_INVENTORY, "id=9", "/inventory/42");
    expect_part(&f, "/u/bob", 0, "user=alice", "/users/bob");
    unmake(&f);
}

static void test_part_from_query(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);
    const char *p = "/api/products/1";

    expect_part(&f, p, P_PROFILE, "user=bob", "/users/bob");
    expect_part(&f, p, P_PROFILE, "a=1&user=bob&b=2", "/users/bob");
    /* The first with a value wins; an empty value is no value. */
    expect_part(&f, p, P_PROFILE, "user=a&user=b", "/users/a");
    expect_part(&f, p, P_PROFILE, "user=&user=b", "/users/b");
    expect_part(&f, p, P_PROFILE, "user&user=c", "/users/c");
    expect_part(&f, p, P_PROFILE, "&&user=d&", "/users/d");
    expect_part(&f, p, P_PROFILE, "user==e", "/users/%3De");
    /* Names are decoded before they are compared. */
    expect_part(&f, p, P_PROFILE, "%75ser=f", "/users/f");
    expect_part(&f, p, P_PROFILE, "us%65r=g&user=h", "/users/g");
    expect_part(&f, p, P_TWO, "b=2&a=1", "/q/1/2");
    unmake(&f);
}

static void test_part_missing_placeholder(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);
    const char *p = "/api/products/1";

    expect_part_error(&f, p, P_PROFILE, NULL, -ENOENT, "user");
    expect_part_error(&f, p, P_PROFILE, "", -ENOENT, "user");
    expect_part_error(&f, p, P_PROFILE, "user=", -ENOENT, "user");
    expect_part_error(&f, p, P_PROFILE, "user=&user", -ENOENT, "user");
    expect_part_error(&f, p, P_PROFILE, "users=x&use=y&User=z", -ENOENT,
                      "user");
    expect_part_error(&f, p, P_PROFILE, "us+er=x&user+=y", -ENOENT, "user");
    /* The first placeholder without a value is named. */
    expect_part_error(&f, p, P_TWO, "a=1", -ENOENT, "b");
    expect_part_error(&f, p, P_TWO, "b=1", -ENOENT, "a");
    /* which is the router's own string, the same on every call. */
    char buf[64];
    const char *w1, *w2;
    assert_int_equal(part_path(&f, p, P_PROFILE, NULL, buf, sizeof buf, &w1),
                     -ENOENT);
    assert_int_equal(part_path(&f, p, P_PROFILE, NULL, buf, sizeof buf, &w2),
                     -ENOENT);
    assert_ptr_equal(w1, w2);
    /* which may be NULL. */
    assert_int_equal(part_path(&f, p, P_PROFILE, NULL, buf, sizeof buf, NULL),
                     -ENOENT);
    unmake(&f);
}

static void test_part_plus_and_slash(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);

    /* '+' is a space in the query, itself in the path. */
    expect_part(&f, "/api/products/1", P_PROFILE, "user=a+b", "/users/a%20b");
    expect_part(&f, "/u/a+b", 0, NULL, "/users/a%2Bb");
    expect_part(&f, "/api/products/1", P_PROFILE, "user=%2B", "/users/%2B");
    /* %2F inside a segment stays in that value, re-encoded. */
    expect_part(&f, "/api/products/a%2Fb", P_INVENTORY, NULL,
                "/inventory/a%2Fb");
    expect_part(&f, "/api/products/a%2fb", P_INVENTORY, NULL,
                "/inventory/a%2Fb");
    expect_part(&f, "/api/products/1", P_PROFILE, "user=a/b", "/users/a%2Fb");
    /* Escaped unreserved characters come out plain. */
    expect_part(&f, "/api/products/%41%7e%2D", P_INVENTORY, NULL,
                "/inventory/A~-");
    /* Characters a path allows but a segment value should not keep. */
    expect_part(&f, "/api/products/a:b@c;d=e,f!", P_INVENTORY, NULL,
                "/inventory/a%3Ab%40c%3Bd%3De%2Cf%21");
    /* A value that is a dot-segment would leave the template. */
    expect_part_error(&f, "/api/products/..", P_INVENTORY, NULL, -EINVAL, "id");
    expect_part_error(&f, "/api/products/.", P_INVENTORY, NULL, -EINVAL, "id");
    expect_part_error(&f, "/api/products/%2E%2e", P_INVENTORY, NULL, -EINVAL,
                      "id");
    expect_part_error(&f, "/api/products/1", P_PROFILE, "user=..", -EINVAL,
                      "user");
    expect_part(&f, "/api/products/...", P_INVENTORY, NULL, "/inventory/...");
    expect_part(&f, "/api/products/..a", P_INVENTORY, NULL, "/inventory/..a");
    expect_part(&f, "/api/products/1", P_PROFILE, "user=.%2F..",
                "/users/.%2F..");
    unmake(&f);
}

/* Every byte value through the query: unreserved stay, the rest %XX. */
static void test_part_encodes_every_byte(void **state)
{
    char query[1024], want[1024];
    size_t o = 0, w = 0;

    (void)state;
    fixture f = make(PARTS_CFG);
    o += (size_t)snprintf(query, sizeof query, "user=");
    w += (size_t)snprintf(want, sizeof want, "/users/");
    for (int b = 0; b < 256; b++) {
        o += (size_t)snprintf(query + o, sizeof query - o, "%%%02x", b);
        bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
                          (b >= '0' && b <= '9') || b == '-' || b == '.' ||
                          b == '_' || b == '~';
        if (unreserved)
            want[w++] = (char)b;
        else
            w += (size_t)snprintf(want + w, sizeof want - w, "%%%02X", b);
    }
    want[w] = '\0';
    expect_part(&f, "/api/products/1", P_PROFILE, query, want);

    /* Raw bytes in the query (what a lenient client may send). */
    expect_part(&f, "/api/products/1", P_PROFILE, "user=!*'()\"<> ~",
                "/users/%21%2A%27%28%29%22%3C%3E%20~");
    unmake(&f);
}

static void test_part_bad_escape(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);
    const char *p = "/api/products/1";

    expect_part_error(&f, p, P_PROFILE, "user=%zz", -EINVAL, "user");
    expect_part_error(&f, p, P_PROFILE, "user=a%4", -EINVAL, "user");
    expect_part_error(&f, p, P_PROFILE, "user=%", -EINVAL, "user");
    expect_part_error(&f, p, P_PROFILE, "user=&user=%4", -EINVAL, "user");
    /* Only the value that would be used counts. */
    expect_part(&f, p, P_PROFILE, "other=%zz&user=ok", "/users/ok");
    expect_part(&f, p, P_PROFILE, "user=ok&user=%zz", "/users/ok");
    expect_part(&f, p, P_PROFILE, "%zz=1&user=ok", "/users/ok");
    /* A hand-made match with a bad path value. */
    gw_route_match m;
    char buf[64];
    const char *which = NULL;
    match(f.r, "GET", "/api/products/1", &m);
    m.params[0].raw = "%q1";
    m.params[0].raw_len = 3;
    assert_int_equal(gw_route_part_path(f.r, &m, P_INVENTORY, NULL, 0, buf,
                                        sizeof buf, &which),
                     -EINVAL);
    assert_string_equal(which, "id");
    unmake(&f);
}

static void test_part_nospace(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);
    const char *want = "/base/x/42-42.json";
    size_t n = strlen(want);
    char buf[64];
    const char *which = "unset";

    memset(buf, 'z', sizeof buf);
    assert_int_equal(
        part_path(&f, "/api/products/42", P_PRE, NULL, buf, n + 1, &which),
        (int)n);
    assert_string_equal(buf, want);
    assert_null(which);
    which = "unset";
    assert_int_equal(
        part_path(&f, "/api/products/42", P_PRE, NULL, buf, n, &which),
        -ENOSPC);
    assert_null(which);
    assert_string_equal(buf, "");
    assert_int_equal(
        part_path(&f, "/api/products/42", P_PRE, NULL, buf, 1, &which),
        -ENOSPC);
    /* An escape that does not fit whole. */
    assert_int_equal(part_path(&f, "/api/products/%20", P_INVENTORY, NULL, buf,
                               strlen("/inventory/%2"), &which),
                     -ENOSPC);
    assert_int_equal(
        part_path(&f, "/api/products/%20", P_INVENTORY, NULL, buf, 0, &which),
        -EINVAL);
    unmake(&f);
}

static void test_part_misuse(void **state)
{
    (void)state;
    fixture f = make(PARTS_CFG);
    gw_route_match m;
    char buf[64];
    const char *which = "unset";

    match(f.r, "GET", "/api/products/1", &m);
    assert_int_equal(
        gw_route_part_path(f.r, &m, 5, NULL, 0, buf, sizeof buf, &which),
        -EINVAL);
    assert_null(which);
    match(f.r, "GET", "/nope", &m);
    assert_int_equal(
        gw_route_part_path(f.r, &m, 0, NULL, 0, buf, sizeof buf, &which),
        -EINVAL);
    match(f.r, "OPTIONS", "/api/products/1", &m);
    assert_int_equal(
        gw_route_part_path(f.r, &m, 0, NULL, 0, buf, sizeof buf, &which),
        -EINVAL);
    assert_int_equal(
        gw_route_part_path(f.r, NULL, 0, NULL, 0, buf, sizeof buf, &which),
        -EINVAL);
    unmake(&f);
}

/* ----------------------------------------------------------- compiling */

static void test_router_new_invalid(void **state)
{
    gw_backend_cfg backend = {.name = "b", .prefix = ""};
    gw_part_cfg part = {.name = "p", .backend = 0, .path = "/p/{id}"};
    gw_route_cfg routes[2] = {
        {.method = "GET", .path = "/a/{id}", .parts = &part, .nparts = 1},
        {.method = "GET", .path = "/a/{x}", .parts = &part, .nparts = 1},
    };
    gw_config cfg = {
        .backends = &backend, .nbackends = 1, .routes = routes, .nroutes = 1};
    gw_router *r = (gw_router *)1;

    (void)state;
    /* A hand-made valid config compiles. */
    assert_int_equal(gw_router_new(&cfg, &r), 0);
    gw_router_free(r);
    /* Two routes with one method and path. */
    cfg.nroutes = 2;
    assert_int_equal(gw_router_new(&cfg, &r), -EINVAL);
    assert_null(r);
    routes[1].method = "POST";
    assert_int_equal(gw_router_new(&cfg, &r), 0);
    gw_router_free(r);
    /* Methods a route may not have. */
    static const char *const methods[] = {"HEAD", "OPTIONS", "FOO", "get",
                                          NULL};
    for (size_t i = 0; methods[i] != NULL; i++) {
        routes[1].method = (char *)methods[i];
        assert_int_equal(gw_router_new(&cfg, &r), -EINVAL);
    }
    routes[1].method = "POST";
    /* Bad templates, a bad backend index. */
    routes[1].path = "/a/x{id}";
    assert_int_equal(gw_router_new(&cfg, &r), -EINVAL);
    routes[1].path = "/a/{x}";
    part.path = "/p/{id";
    assert_int_equal(gw_router_new(&cfg, &r), -EINVAL);
    part.path = "/p/{id}";
    part.backend = 1;
    assert_int_equal(gw_router_new(&cfg, &r), -EINVAL);
    part.backend = 0;
    assert_int_equal(gw_router_new(&cfg, &r), 0);
    gw_router_free(r);
    /* Misuse. */
    assert_int_equal(gw_router_new(NULL, &r), -EINVAL);
    assert_int_equal(gw_router_new(&cfg, NULL), -EINVAL);
    gw_router_free(NULL);

    /* No routes: everything is 404; OPTIONS * allows OPTIONS. */
    cfg.nroutes = 0;
    assert_int_equal(gw_router_new(&cfg, &r), 0);
    gw_route_match m;
    gw_router_match(r, "GET", "/", 1, &m);
    assert_int_equal(m.status, 404);
    assert_string_equal(gw_router_allow_all(r), "OPTIONS");
    gw_router_free(r);
}

/* The demo configuration: its route and the paths of its three parts. */
static void test_demo(void **state)
{
    gw_config *cfg;
    gw_router *r;
    gw_route_match m;
    char buf[256];
    const char *which;

    (void)state;
    assert_int_equal(gw_config_load_default(&cfg, NULL), 0);
    assert_int_equal(gw_router_new(cfg, &r), 0);
    gw_router_match(r, "GET", "/api/products/7", 15, &m);
    assert_int_equal(m.status, 0);
    assert_int_equal(
        gw_route_part_path(r, &m, 0, "user=ann", 8, buf, sizeof buf, &which),
        10);
    assert_string_equal(buf, "/users/ann");
    assert_int_equal(
        gw_route_part_path(r, &m, 0, NULL, 0, buf, sizeof buf, &which),
        -ENOENT);
    assert_string_equal(which, "user");
    assert_int_equal(
        gw_route_part_path(r, &m, 1, NULL, 0, buf, sizeof buf, &which), 12);
    assert_string_equal(buf, "/inventory/7");
    assert_int_equal(
        gw_route_part_path(r, &m, 2, NULL, 0, buf, sizeof buf, &which), 9);
    assert_string_equal(buf, "/prices/7");
    gw_router_match(r, "POST", "/api/products/7", 15, &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "GET, HEAD, OPTIONS");
    assert_string_equal(gw_router_allow_all(r), "GET, HEAD, OPTIONS");
    gw_router_free(r);
    gw_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_param),
        cmocka_unit_test(test_literal_beats_param),
        cmocka_unit_test(test_precedence_left_to_right),
        cmocka_unit_test(test_no_route),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_allow_all),
        cmocka_unit_test(test_every_method),
        cmocka_unit_test(test_empty_segments),
        cmocka_unit_test(test_bad_escapes),
        cmocka_unit_test(test_raw_literals),
        cmocka_unit_test(test_sixteen_params),
        cmocka_unit_test(test_many_literals),
        cmocka_unit_test(test_part_from_path),
        cmocka_unit_test(test_part_from_query),
        cmocka_unit_test(test_part_missing_placeholder),
        cmocka_unit_test(test_part_plus_and_slash),
        cmocka_unit_test(test_part_encodes_every_byte),
        cmocka_unit_test(test_part_bad_escape),
        cmocka_unit_test(test_part_nospace),
        cmocka_unit_test(test_part_misuse),
        cmocka_unit_test(test_router_new_invalid),
        cmocka_unit_test(test_demo),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
