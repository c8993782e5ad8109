/*
 * test_config.c — unit tests for gateway/config.c: the embedded demo file
 * and its values, defaults, every validation rule with its exact JSON path
 * and message, several problems reported at once, malformed JSON with its
 * line and column, relative file paths, key order, and loading from files.
 *
 * JSON is written with single quotes in the C strings (q() turns them into
 * double quotes) so the configurations stay readable. Plain C: no
 * goroutines. Files are made in a temporary folder removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "llhttp.h"

/* ------------------------------------------------------------- helpers */

/* A copy of s with every ' turned into " (caller frees). */
static char *q(const char *s)
{
    char *j = strdup(s);

    assert_non_null(j);
    for (char *p = j; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return j;
}

static void print_errors(const gw_config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        print_message("  problem %zu: %s\n", i, e->msgs[i]);
}

/* Parses single-quoted JSON against dir; asserts success. */
static gw_config *parse_ok_in(const char *qjson, const char *dir)
{
    char *json = q(qjson);
    gw_config *cfg = NULL;
    gw_config_errors e = {0};
    int rc = gw_config_parse(json, strlen(json), dir, &cfg, &e);

    if (rc != 0)
        print_errors(&e);
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    assert_int_equal(e.n, 0);
    free(json);
    return cfg;
}

static gw_config *parse_ok(const char *qjson)
{
    return parse_ok_in(qjson, "/etc/fanfold");
}

/* Parses single-quoted JSON, expects -EINVAL and exactly the messages
 * given (NULL-terminated), in order. */
static void expect_problems(const char *qjson, ...)
{
    char *json = q(qjson);
    gw_config *cfg = (gw_config *)1;
    gw_config_errors e = {0};
    int rc = gw_config_parse(json, strlen(json), "/etc/fanfold", &cfg, &e);
    va_list ap;
    size_t n = 0;
    bool ok = rc == -EINVAL && cfg == NULL;

    va_start(ap, qjson);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL; n++) {
        if (n >= e.n || strcmp(e.msgs[n], want) != 0) {
            print_message("  expected %zu: %s\n", n, want);
            ok = false;
        }
    }
    va_end(ap);
    if (!ok || n != e.n) {
        print_message("  rc %d, config:\n  %s\n", rc, json);
        print_errors(&e);
    }
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_int_equal(e.n, n);
    assert_true(ok);
    gw_config_errors_free(&e);
    free(json);
}

/* A valid configuration around the pieces that vary. */
#define BACKENDS "'backends':{'b':{'url':'http://127.0.0.1:9101'}}"
#define PART "{'name':'p','backend':'b','path':'/y'}"
#define ROUTE "{'method':'GET','path':'/x','fanout':[" PART "]}"
#define ROUTES "'routes':[" ROUTE "]"
#define LISTEN "'listen':'127.0.0.1:8080'"
/* The whole file with extra top-level keys. */
#define CFG(extra) "{" LISTEN "," BACKENDS "," ROUTES extra "}"
/* With its own routes array contents. */
#define CFG_ROUTES(routes) "{" LISTEN "," BACKENDS ",'routes':[" routes "]}"
/* With one route's extra keys. */
#define CFG_ROUTE(extra)                                                       \
    CFG_ROUTES("{'method':'GET','path':'/x','fanout':[" PART "]" extra "}")
/* With one part. */
#define CFG_PART(part)                                                         \
    CFG_ROUTES("{'method':'GET','path':'/x','fanout':[" part "]}")
/* With one backend "b"'s contents. */
#define CFG_BACKEND(body) "{" LISTEN ",'backends':{'b':{" body "}}," ROUTES "}"

/* ----------------------------------------------------- the demo config */

static void check_demo(const gw_config *cfg)
{
    static const char *const names[] = {"profile", "inventory", "pricing"};
    static const char *const paths[] = {"/users/{user}", "/inventory/{id}",
                                        "/prices/{id}"};

    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->admin, "127.0.0.1:9901");
    assert_int_equal(cfg->workers, 0);
    assert_false(cfg->has_tls);
    assert_null(cfg->tls_listen);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_false(cfg->has_dns);
    assert_null(cfg->dns_servers);
    assert_int_equal(cfg->dns_min_ttl_ms, 1000);
    assert_int_equal(cfg->dns_max_ttl_ms, 60000);

    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.max_body_bytes, 1048576);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.body_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->limits.write_timeout_ms, 10000);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.drain_timeout_ms, 10000);
    assert_int_equal(cfg->limits.max_requests_per_connection, 1000);
    assert_int_equal(cfg->limits.max_connection_age_ms, 0);

    assert_int_equal(cfg->nbackends, 3);
    for (size_t i = 0; i < 3; i++) {
        const gw_backend_cfg *b = &cfg->backends[i];
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%zu", 9101 + i);
        assert_string_equal(b->name, names[i]);
        assert_string_equal(b->url, url);
        assert_string_equal(b->scheme, "http");
        assert_string_equal(b->host, "127.0.0.1");
        assert_int_equal(b->port, 9101 + (int)i);
        assert_string_equal(b->prefix, "");
        assert_int_equal(b->max_inflight, 256);
        assert_int_equal(b->timeout_ms, 0); /* the route deadline alone */
        assert_int_equal(b->max_response_bytes, 1024 * 1024);
        assert_null(b->ca_file);
        assert_int_equal(b->client, GW_CLIENT_NATIVE); /* auto, http */
    }

    assert_int_equal(cfg->nroutes, 1);
    const gw_route_cfg *r = &cfg->routes[0];
    assert_string_equal(r->method, "GET");
    assert_string_equal(r->path, "/api/products/{id}");
    assert_int_equal(r->timeout_ms, 1000);
    /* The demo's mock backends take X-Mock-Delay / X-Mock-Status. */
    assert_int_equal(r->nforward_headers, 2);
    assert_string_equal(r->forward_headers[0], "X-Mock-Delay");
    assert_string_equal(r->forward_headers[1], "X-Mock-Status");
    assert_int_equal(r->nparts, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(r->parts[i].name, names[i]);
        assert_int_equal(r->parts[i].backend, i);
        assert_string_equal(r->parts[i].path, paths[i]);
        assert_int_equal(r->parts[i].required, i == 1);
    }
}

static void test_demo_default(void **state)
{
    gw_config *cfg = NULL;
    gw_config_errors e = {0};

    (void)state;
    assert_int_equal(gw_config_load_default(&cfg, &e), 0);
    assert_int_equal(e.n, 0);
    check_demo(cfg);
    assert_string_equal(cfg->source, "(embedded routes/demo.json)");
    char *cwd = getcwd(NULL, 0);
    assert_string_equal(cfg->dir, cwd);
    free(cwd);
    gw_config_free(cfg);
}

/* routes/demo.json found upward from the test binary (the build folder
 * is under the repository), or NULL. Caller frees. */
static char *find_demo_file(void)
{
    char dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);

    if (n <= 0)
        return NULL;
    dir[n] = '\0';
    for (char *slash; (slash = strrchr(dir, '/')) != NULL;) {
        *slash = '\0';
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/routes/demo.json", dir);
        if (access(path, R_OK) == 0)
            return strdup(path);
    }
    return NULL;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 1 << 20);

    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    return buf;
}

/* The binary embeds routes/demo.json itself, byte for byte. */
static void test_demo_embedded_is_the_file(void **state)
{
    char *path = find_demo_file();
    size_t len, elen;

    (void)state;
    assert_non_null(path);
    char *file = slurp(path, &len);
    const char *embedded = gw_config_default_json(&elen);
    assert_int_equal(elen, len);
    assert_memory_equal(embedded, file, len);
    assert_int_equal(embedded[elen], '\0');
    assert_ptr_equal(gw_config_default_json(NULL), embedded);

    gw_config *cfg = NULL;
    gw_config_errors e = {0};
    assert_int_equal(gw_config_load(path, &cfg, &e), 0);
    check_demo(cfg);
    assert_string_equal(cfg->source, path);
    gw_config_free(cfg);
    free(file);
    free(path);
}

/* ------------------------------------------------------------ defaults */

static void test_defaults(void **state)
{
    (void)state;
    gw_config *cfg = parse_ok(CFG(""));

    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_null(cfg->admin);
    assert_int_equal(cfg->workers, 0);
    assert_false(cfg->has_tls);
    assert_false(cfg->has_dns);
    assert_null(cfg->dns_servers);
    assert_int_equal(cfg->ndns_servers, 0);
    assert_int_equal(cfg->dns_min_ttl_ms, 1000);
    assert_int_equal(cfg->dns_max_ttl_ms, 60000);
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.max_body_bytes, 1048576);
    assert_int_equal(cfg->limits.header_timeout_ms, 10000);
    assert_int_equal(cfg->limits.body_timeout_ms, 10000);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    assert_int_equal(cfg->limits.write_timeout_ms, 10000);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.drain_timeout_ms, 10000);
    assert_int_equal(cfg->limits.max_requests_per_connection, 1000);
    assert_int_equal(cfg->limits.max_connection_age_ms, 0);
    assert_int_equal(cfg->nbackends, 1);
    assert_int_equal(cfg->backends[0].max_inflight, 256);
    assert_int_equal(cfg->backends[0].timeout_ms, 0);
    assert_int_equal(cfg->backends[0].max_response_bytes, 1048576);
    assert_null(cfg->backends[0].ca_file);
    assert_int_equal(cfg->routes[0].timeout_ms, 1000);
    assert_false(cfg->routes[0].parts[0].required);
    assert_int_equal(cfg->routes[0].nforward_headers, 0);
    assert_string_equal(cfg->source, "(inline JSON)");
    assert_string_equal(cfg->dir, "/etc/fanfold");
    gw_config_free(cfg);

    /* An empty limits object: every default; one key: the others stay. */
    cfg = parse_ok(CFG(",'limits':{'max_connections':5}"));
    assert_int_equal(cfg->limits.max_connections, 5);
    assert_int_equal(cfg->limits.max_header_bytes, 16384);
    assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
    gw_config_free(cfg);
}

/* Every key set to something other than its default. */
static void test_everything_set(void **state)
{
    (void)state;
    gw_config *cfg = parse_ok(
        "{'listen':':8080','admin':'[::1]:9901','workers':4,"
        "'tls':{'listen':'0.0.0.0:8443','cert':'certs/server.crt',"
        "'key':'/keys/server.key'},"
        "'dns':{'servers':['127.0.0.1:5353','::1','[::1]:53'],"
        "'min_ttl_ms':10,'max_ttl_ms':20},"
        "'limits':{'max_header_bytes':1,'max_body_bytes':2,"
        "'header_timeout_ms':3,'body_timeout_ms':4,'idle_timeout_ms':5,"
        "'write_timeout_ms':6,'max_connections':7,'drain_timeout_ms':8,"
        "'max_requests_per_connection':0,'max_connection_age_ms':9},"
        "'backends':{'s':{'url':'https://api.example.com:8443/v1/',"
        "'max_inflight':1,'timeout_ms':2,'max_response_bytes':3,"
        "'ca_file':'ca.pem','client':'curl'}},"
        "'routes':[{'method':'POST','path':'/p/{a}/{b}','timeout_ms':77,"
        "'forward_headers':['Authorization','Accept-Language'],"
        "'fanout':[{'name':'one','backend':'s','path':'/q/{a}',"
        "'required':true},{'name':'two','backend':'s','path':'/r',"
        "'required':false}]}]}");

    assert_string_equal(cfg->listen, ":8080");
    assert_string_equal(cfg->admin, "[::1]:9901");
    assert_int_equal(cfg->workers, 4);
    assert_true(cfg->has_tls);
    assert_string_equal(cfg->tls_listen, "0.0.0.0:8443");
    assert_string_equal(cfg->tls_cert, "/etc/fanfold/certs/server.crt");
    assert_string_equal(cfg->tls_key, "/keys/server.key");
    assert_true(cfg->has_dns);
    assert_int_equal(cfg->ndns_servers, 3);
    assert_string_equal(cfg->dns_servers[0], "127.0.0.1:5353");
    assert_string_equal(cfg->dns_servers[1], "::1");
    assert_string_equal(cfg->dns_servers[2], "[::1]:53");
    assert_int_equal(cfg->dns_min_ttl_ms, 10);
    assert_int_equal(cfg->dns_max_ttl_ms, 20);
    const gw_limits *l = &cfg->limits;
    assert_int_equal(l->max_header_bytes, 1);
    assert_int_equal(l->max_body_bytes, 2);
    assert_int_equal(l->header_timeout_ms, 3);
    assert_int_equal(l->body_timeout_ms, 4);
    assert_int_equal(l->idle_timeout_ms, 5);
    assert_int_equal(l->write_timeout_ms, 6);
    assert_int_equal(l->max_connections, 7);
    assert_int_equal(l->drain_timeout_ms, 8);
    assert_int_equal(l->max_requests_per_connection, 0);
    assert_int_equal(l->max_connection_age_ms, 9);
    const gw_backend_cfg *b = &cfg->backends[0];
    assert_string_equal(b->name, "s");
    assert_string_equal(b->url, "https://api.example.com:8443/v1/");
    assert_string_equal(b->scheme, "https");
    assert_string_equal(b->host, "api.example.com");
    assert_int_equal(b->port, 8443);
    assert_string_equal(b->prefix, "/v1");
    assert_int_equal(b->max_inflight, 1);
    assert_int_equal(b->timeout_ms, 2);
    assert_int_equal(b->max_response_bytes, 3);
    assert_string_equal(b->ca_file, "/etc/fanfold/ca.pem");
    assert_int_equal(b->client, GW_CLIENT_CURL);
    const gw_route_cfg *r = &cfg->routes[0];
    assert_string_equal(r->method, "POST");
    assert_string_equal(r->path, "/p/{a}/{b}");
    assert_int_equal(r->timeout_ms, 77);
    assert_int_equal(r->nforward_headers, 2);
    assert_string_equal(r->forward_headers[0], "Authorization");
    assert_string_equal(r->forward_headers[1], "Accept-Language");
    assert_int_equal(r->nparts, 2);
    assert_string_equal(r->parts[0].name, "one");
    assert_true(r->parts[0].required);
    assert_string_equal(r->parts[1].path, "/r");
    assert_false(r->parts[1].required);
    gw_config_free(cfg);
}

/* ----------------------------------------------------------- key order */

static void test_key_order(void **state)
{
    (void)state;
    gw_config *cfg = parse_ok(
        "{'routes':[{'method':'GET','path':'/z','fanout':["
        "{'name':'zz','backend':'zeta','path':'/'},"
        "{'name':'aa','backend':'alpha','path':'/'},"
        "{'name':'mm','backend':'mid','path':'/'}]},"
        "{'method':'GET','path':'/a','fanout':[{'name':'x','backend':'mid',"
        "'path':'/'}]}],"
        "'backends':{'zeta':{'url':'http://z'},'alpha':{'url':'http://a'},"
        "'mid':{'url':'http://m'},'beta':{'url':'http://b'}},"
        "'listen':'127.0.0.1:1'}");
    static const char *const order[] = {"zeta", "alpha", "mid", "beta"};

    assert_int_equal(cfg->nbackends, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(cfg->backends[i].name, order[i]);
    assert_string_equal(cfg->routes[0].path, "/z");
    assert_string_equal(cfg->routes[1].path, "/a");
    assert_string_equal(cfg->routes[0].parts[0].name, "zz");
    assert_int_equal(cfg->routes[0].parts[0].backend, 0);
    assert_int_equal(cfg->routes[0].parts[1].backend, 1);
    assert_int_equal(cfg->routes[0].parts[2].backend, 2);
    assert_int_equal(cfg->routes[1].parts[0].backend, 2);
    size_t i = 99;
    assert_int_equal(gw_config_find_backend(cfg, "beta", &i), 0);
    assert_int_equal(i, 3);
    assert_int_equal(gw_config_find_backend(cfg, "nope", &i), -ENOENT);
    gw_config_free(cfg);
}

/* ---------------------------------------------------------- unknown keys */

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_problems(CFG(",'lisen':'x'"), "lisen: unknown key", NULL);
    expect_problems(
        "{" LISTEN ",'tls':{'listen':':1','cert':'c','key':'k','ca':'x'},"
        "'dns':{'server':[]},'limits':{'max_headers':1}," BACKENDS
        ",'routes':[{'method':'GET','path':'/x','timeout':5,"
        "'fanout':[{'name':'p','backend':'b','path':'/y','optional':true}]}]}",
        "tls.ca: unknown key", "dns.server: unknown key",
        "limits.max_headers: unknown key", "routes[0].timeout: unknown key",
        "routes[0].fanout[0].optional: unknown key", NULL);
    expect_problems(CFG_BACKEND("'url':'http://h','maxinflight':3"),
                    "backends.b.maxinflight: unknown key", NULL);
    /* Keys that are not plain words are quoted in the path. */
    expect_problems(CFG(",'a.b':1,'':2,'x\\ny':3"), "[\"a.b\"]: unknown key",
                    "[\"\"]: unknown key", "[\"x\\u000ay\"]: unknown key",
                    NULL);
}

/* ------------------------------------------------------------- types */

static void test_wrong_types(void **state)
{
    (void)state;
    expect_problems("{'listen':8080,'admin':true,'workers':'4','tls':[],"
                    "'dns':'x','limits':1,'backends':[],'routes':{}}",
                    "listen: must be a string, not an integer",
                    "admin: must be a string, not true",
                    "workers: must be an integer, not a string",
                    "tls: must be an object, not an array",
                    "dns: must be an object, not a string",
                    "limits: must be an object, not an integer",
                    "backends: must be an object, not an array",
                    "routes: must be an array, not an object", NULL);
    expect_problems(CFG(",'limits':{'idle_timeout_ms':1.5,'max_connections':"
                        "1e3,'drain_timeout_ms':null}"),
                    "limits.idle_timeout_ms: must be an integer, not a "
                    "number with a fraction or exponent",
                    "limits.max_connections: must be an integer, not a "
                    "number with a fraction or exponent",
                    "limits.drain_timeout_ms: must be an integer, not null",
                    NULL);
    expect_problems(CFG_BACKEND("'url':5,'max_inflight':'2','ca_file':[]"),
                    "backends.b.url: must be a string, not an integer",
                    "backends.b.max_inflight: must be an integer, not a "
                    "string",
                    "backends.b.ca_file: must be a string, not an array", NULL);
    expect_problems("{" LISTEN ",'backends':{'b':'http://h'}," ROUTES "}",
                    "backends.b: must be an object, not a string", NULL);
    expect_problems(CFG_ROUTES("{'method':null,'path':1,'timeout_ms':'1',"
                               "'fanout':{},'forward_headers':'Auth'}"),
                    "routes[0].method: must be a string, not null",
                    "routes[0].path: must be a string, not an integer",
                    "routes[0].timeout_ms: must be an integer, not a string",
                    "routes[0].fanout: must be an array, not an object",
                    "routes[0].forward_headers: must be an array, not a "
                    "string",
                    NULL);
    expect_problems(CFG_ROUTES("7"),
                    "routes[0]: must be an object, not an integer", NULL);
    expect_problems(CFG_PART("{'name':1,'backend':false,'path':{},"
                             "'required':'yes'}"),
                    "routes[0].fanout[0].name: must be a string, not an "
                    "integer",
                    "routes[0].fanout[0].backend: must be a string, not "
                    "false",
                    "routes[0].fanout[0].path: must be a string, not an "
                    "object",
                    "routes[0].fanout[0].required: must be a boolean, not a "
                    "string",
                    NULL);
    expect_problems(CFG_PART("[]"),
                    "routes[0].fanout[0]: must be an object, not an array",
                    NULL);
    expect_problems(CFG(",'dns':{'servers':'1.1.1.1'}"),
                    "dns.servers: must be an array, not a string", NULL);
    expect_problems(CFG(",'dns':{'servers':[1,'1.1.1.1']}"),
                    "dns.servers[0]: must be a string, not an integer", NULL);
    expect_problems(CFG_ROUTE(",'forward_headers':[1]"),
                    "routes[0].forward_headers[0]: must be a string, not an "
                    "integer",
                    NULL);
    /* An empty string where a value is needed. */
    expect_problems("{'listen':''," BACKENDS "," ROUTES "}",
                    "listen: must not be empty", NULL);
}

static void test_missing_keys(void **state)
{
    (void)state;
    expect_problems("{}", "listen: missing", "backends: missing",
                    "routes: missing", NULL);
    expect_problems("{" LISTEN "," BACKENDS ",'routes':[{'fanout':[{}]}]}",
                    "routes[0].method: missing", "routes[0].path: missing",
                    "routes[0].fanout[0].name: missing",
                    "routes[0].fanout[0].backend: missing",
                    "routes[0].fanout[0].path: missing", NULL);
    expect_problems(CFG_BACKEND("'timeout_ms':5"), "backends.b.url: missing",
                    NULL);
}

static void test_top_level_not_object(void **state)
{
    (void)state;
    expect_problems("[1, 2]", "top level: must be an object, not an array",
                    NULL);
}

/* ------------------------------------------------------------- ranges */

static void test_ranges(void **state)
{
    (void)state;
    expect_problems(CFG(",'workers':1025"),
                    "workers: must be between 0 and 1024 (got 1025)", NULL);
    expect_problems(CFG(",'limits':{'max_header_bytes':0,'max_body_bytes':0,"
                        "'header_timeout_ms':0,'body_timeout_ms':-1,"
                        "'idle_timeout_ms':0,'write_timeout_ms':0,"
                        "'max_connections':0,'drain_timeout_ms':0,"
                        "'max_requests_per_connection':-1,"
                        "'max_connection_age_ms':-1}"),
                    "limits.max_header_bytes: must be between 1 and 1048576 "
                    "(got 0)",
                    "limits.max_body_bytes: must be between 1 and "
                    "1073741824 (got 0)",
                    "limits.header_timeout_ms: must be between 1 and "
                    "2147483647 (got 0)",
                    "limits.body_timeout_ms: must be between 1 and "
                    "2147483647 (got -1)",
                    "limits.idle_timeout_ms: must be between 1 and "
                    "2147483647 (got 0)",
                    "limits.write_timeout_ms: must be between 1 and "
                    "2147483647 (got 0)",
                    "limits.max_connections: must be between 1 and 1000000 "
                    "(got 0)",
                    "limits.drain_timeout_ms: must be between 1 and "
                    "2147483647 (got 0)",
                    "limits.max_requests_per_connection: must be at least 0 "
                    "(got -1)",
                    "limits.max_connection_age_ms: must be between 0 and "
                    "2147483647 (got -1)",
                    NULL);
    expect_problems(CFG(",'limits':{'idle_timeout_ms':2147483648}"),
                    "limits.idle_timeout_ms: must be between 1 and "
                    "2147483647 (got 2147483648)",
                    NULL);
    expect_problems(CFG_BACKEND("'url':'http://h','max_inflight':0,"
                                "'timeout_ms':0,'max_response_bytes':0"),
                    "backends.b.max_inflight: must be between 1 and 1000000 "
                    "(got 0)",
                    "backends.b.timeout_ms: must be between 1 and 2147483647 "
                    "(got 0)",
                    "backends.b.max_response_bytes: must be between 1 and "
                    "1073741824 (got 0)",
                    NULL);
    expect_problems(CFG_ROUTE(",'timeout_ms':0"),
                    "routes[0].timeout_ms: must be between 1 and 2147483647 "
                    "(got 0)",
                    NULL);

    /* The edges that are allowed. */
    gw_config *cfg = parse_ok(
        CFG(",'workers':1024,'limits':{'max_header_bytes':1048576,"
            "'max_requests_per_connection':0,'max_connection_age_ms':0,"
            "'max_connections':1000000,'idle_timeout_ms':2147483647}"));
    assert_int_equal(cfg->workers, 1024);
    assert_int_equal(cfg->limits.max_header_bytes, 1048576);
    assert_int_equal(cfg->limits.max_requests_per_connection, 0);
    assert_int_equal(cfg->limits.idle_timeout_ms, INT32_MAX);
    gw_config_free(cfg);
}

/* ---------------------------------------------------------------- URLs */

static void test_bad_urls(void **state)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"127.0.0.1:9101", "must start with http:// or https://"},
        {"ftp://h", "the scheme must be http or https"},
        {"httpx://h", "the scheme must be http or https"},
        {"http://", "no host"},
        {"http:///path", "no host"},
        {"http://user@h", "userinfo (user@) is not allowed"},
        {"http://user:pw@h/x", "userinfo (user@) is not allowed"},
        {"http://h/x?a=1", "a query (?...) is not allowed"},
        {"http://h?a", "a query (?...) is not allowed"},
        {"http://h/#top", "a fragment (#...) is not allowed"},
        {"http://h:0", "the port must be 1-65535"},
        {"http://h:65536", "the port must be 1-65535"},
        {"http://h:123456", "the port must be 1-65535"},
        {"http://h:", "the port is empty"},
        {"http://h:8o", "the port must be a number"},
        {"http://h:-1", "the port must be a number"},
        {"http://[::1", "'[' without ']' in the host"},
        {"http://[zz]:80", "not an IPv6 address inside []"},
        {"http://[::1]x", "unexpected characters after ']'"},
        {"http://[::1]:", "the port is empty"},
        {"http://h h", "invalid host (a DNS name, a numeric IPv4 address, or "
                       "an IPv6 address in [])"},
        {"http://-h", "invalid host (a DNS name, a numeric IPv4 address, or "
                      "an IPv6 address in [])"},
        {"http://a..b", "invalid host (a DNS name, a numeric IPv4 address, "
                        "or an IPv6 address in [])"},
        {"http://999.1.1.1", "invalid host (a DNS name, a numeric IPv4 "
                             "address, or an IPv6 address in [])"},
        {"http://::1:80", "invalid host (a DNS name, a numeric IPv4 address, "
                          "or an IPv6 address in [])"},
        {"http://h/a b", "a character not allowed in a URL path "
                         "(percent-encode it) or an invalid percent-escape"},
        {"http://h/a%zz", "a character not allowed in a URL path "
                          "(percent-encode it) or an invalid percent-escape"},
        {"http://h/a%2", "a character not allowed in a URL path "
                         "(percent-encode it) or an invalid percent-escape"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[512], want[512];
        snprintf(json, sizeof json, CFG_BACKEND("'url':'%s'"), bad[i].url);
        snprintf(want, sizeof want, "backends.b.url: invalid URL \"%s\": %s",
                 bad[i].url, bad[i].why);
        expect_problems(json, want, NULL);
    }
}

static void test_good_urls(void **state)
{
    static const struct {
        const char *url, *scheme, *host;
        int port;
        const char *prefix;
    } good[] = {
        {"http://h", "http", "h", 80, ""},
        {"https://h", "https", "h", 443, ""},
        {"HTTP://Example.COM:8080", "http", "Example.COM", 8080, ""},
        {"http://h/", "http", "h", 80, ""},
        {"http://h/base", "http", "h", 80, "/base"},
        {"http://h/base/", "http", "h", 80, "/base"},
        {"http://h/a/b//", "http", "h", 80, "/a/b"},
        {"http://h/v%201/x", "http", "h", 80, "/v%201/x"},
        {"http://10.0.0.7:9102", "http", "10.0.0.7", 9102, ""},
        {"https://[::1]:8443/api", "https", "::1", 8443, "/api"},
        {"http://[2001:db8::7]", "http", "2001:db8::7", 80, ""},
        {"http://my_service.internal:1", "http", "my_service.internal", 1, ""},
        {"http://h:65535", "http", "h", 65535, ""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, CFG_BACKEND("'url':'%s'"), good[i].url);
        gw_config *cfg = parse_ok(json);
        const gw_backend_cfg *b = &cfg->backends[0];
        assert_string_equal(b->url, good[i].url);
        assert_string_equal(b->scheme, good[i].scheme);
        assert_string_equal(b->host, good[i].host);
        assert_int_equal(b->port, good[i].port);
        assert_string_equal(b->prefix, good[i].prefix);
        gw_config_free(cfg);
    }
}

static void test_ca_file(void **state)
{
    (void)state;
    expect_problems(CFG_BACKEND("'url':'http://h','ca_file':'ca.pem'"),
                    "backends.b.ca_file: only https backends use a CA file",
                    NULL);
    expect_problems(CFG_BACKEND("'url':'https://h','ca_file':''"),
                    "backends.b.ca_file: must not be empty", NULL);
    gw_config *cfg =
        parse_ok(CFG_BACKEND("'url':'https://h','ca_file':'/etc/ssl/ca.pem'"));
    assert_string_equal(cfg->backends[0].ca_file, "/etc/ssl/ca.pem");
    gw_config_free(cfg);
}

/* "client": auto (by scheme), native (http only), curl. */
static void test_client(void **state)
{
    (void)state;
    static const struct {
        const char *backend;
        gw_client_kind want;
    } good[] = {
        {"'url':'http://h'", GW_CLIENT_NATIVE},
        {"'url':'https://h'", GW_CLIENT_CURL},
        {"'url':'http://h','client':'auto'", GW_CLIENT_NATIVE},
        {"'url':'https://h','client':'auto'", GW_CLIENT_CURL},
        {"'url':'http://h','client':'native'", GW_CLIENT_NATIVE},
        {"'url':'http://h','client':'curl'", GW_CLIENT_CURL},
        {"'url':'https://h','client':'curl'", GW_CLIENT_CURL},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{" LISTEN ",'backends':{'b':{%s}}," ROUTES "}",
                 good[i].backend);
        gw_config *cfg = parse_ok(json);
        assert_int_equal(cfg->backends[0].client, good[i].want);
        gw_config_free(cfg);
    }
    expect_problems(CFG_BACKEND("'url':'http://h','client':'libcurl'"),
                    "backends.b.client: unknown client \"libcurl\": must be "
                    "\"auto\", \"native\" or \"curl\"",
                    NULL);
    expect_problems(CFG_BACKEND("'url':'https://h','client':'native'"),
                    "backends.b.client: the native client speaks plain HTTP: "
                    "an https backend uses \"curl\" (or \"auto\")",
                    NULL);
    expect_problems(CFG_BACKEND("'url':'http://h','client':''"),
                    "backends.b.client: must not be empty", NULL);
    expect_problems(CFG_BACKEND("'url':'http://h','client':1"),
                    "backends.b.client: must be a string, not an integer",
                    NULL);
}

/* ---------------------------------------------------- fan-out and names */

static void test_unknown_backend(void **state)
{
    (void)state;
    expect_problems(CFG_ROUTES("{'method':'GET','path':'/x','fanout':[" PART
                               ",{'name':'q','backend':'x','path':'/'}]}"),
                    "routes[0].fanout[1].backend: unknown backend \"x\"", NULL);
    /* Backend names are case-sensitive. */
    expect_problems(CFG_PART("{'name':'p','backend':'B','path':'/'}"),
                    "routes[0].fanout[0].backend: unknown backend \"B\"", NULL);
}

static void test_fanout_missing_or_empty(void **state)
{
    (void)state;
    expect_problems(CFG_ROUTES("{'method':'GET','path':'/x'}"),
                    "routes[0].fanout: missing (a route needs at least one "
                    "part)",
                    NULL);
    expect_problems(CFG_ROUTES("{'method':'GET','path':'/x','fanout':[]}"),
                    "routes[0].fanout: must not be empty (a route needs at "
                    "least one part)",
                    NULL);
}

static void test_too_many_parts(void **state)
{
    char json[16384];
    size_t o = 0;

    (void)state;
    o += (size_t)snprintf(json, sizeof json,
                          "{" LISTEN "," BACKENDS
                          ",'routes':[{'method':'GET','path':'/x','fanout':[");
    for (int i = 0; i < GW_CONFIG_MAX_PARTS + 1; i++)
        o += (size_t)snprintf(json + o, sizeof json - o,
                              "%s{'name':'p%d','backend':'b','path':'/'}",
                              i ? "," : "", i);
    snprintf(json + o, sizeof json - o, "]}]}");
    expect_problems(json, "routes[0].fanout: more than 64 parts", NULL);
}

static void test_part_names(void **state)
{
    (void)state;
    expect_problems(CFG_ROUTES("{'method':'GET','path':'/x','fanout':["
                               "{'name':'a','backend':'b','path':'/1'},"
                               "{'name':'c','backend':'b','path':'/2'},"
                               "{'name':'a','backend':'b','path':'/3'}]}"),
                    "routes[0].fanout[2].name: duplicate part name \"a\" (also "
                    "fanout[0])",
                    NULL);
    expect_problems(CFG_PART("{'name':'errors','backend':'b','path':'/'}"),
                    "routes[0].fanout[0].name: \"errors\" is reserved (the "
                    "answer's map of failed parts)",
                    NULL);
    expect_problems(CFG_PART("{'name':'a\\\\b','backend':'b','path':'/'}"),
                    "routes[0].fanout[0].name: invalid part name \"a\\\\b\": "
                    "a name must be 1-64 bytes without control characters, "
                    "'\"' or '\\'",
                    NULL);
    expect_problems(CFG_PART("{'name':'','backend':'b','path':'/'}"),
                    "routes[0].fanout[0].name: must not be empty", NULL);
    /* The same part name in two routes is fine; so is UTF-8. */
    gw_config *cfg = parse_ok(
        CFG_ROUTES("{'method':'GET','path':'/x','fanout':[" PART "]},"
                   "{'method':'GET','path':'/y','fanout':[" PART
                   ",{'name':'pr\xc3\xa9' ,'backend':'b','path':'/'}]}"));
    assert_string_equal(cfg->routes[1].parts[1].name, "pr\xc3\xa9");
    gw_config_free(cfg);
}

static void test_backend_names(void **state)
{
    (void)state;
    expect_problems("{" LISTEN ",'backends':{'a\\'b':{'url':'http://h'}},"
                    "'routes':[{'method':'GET','path':'/x','fanout':["
                    "{'name':'p','backend':'a\\'b','path':'/'}]}]}",
                    "backends[\"a\\\"b\"]: invalid backend name: a name must "
                    "be 1-64 bytes without control characters, '\"' or '\\'",
                    NULL);
}

static void test_duplicate_routes(void **state)
{
    (void)state;
    expect_problems(
        CFG_ROUTES("{'method':'GET','path':'/a/{id}','fanout':[" PART "]},"
                   "{'method':'POST','path':'/a/{id}','fanout':[" PART "]},"
                   "{'method':'GET','path':'/a/{key}','fanout':[" PART "]},"
                   "{'method':'GET','path':'/b','fanout':[" PART "]},"
                   "{'method':'GET','path':'/a/{x}','fanout':[" PART "]}"),
        "routes[2]: GET /a/{key} has the same method and path as routes[0] "
        "(GET /a/{id})",
        "routes[4]: GET /a/{x} has the same method and path as routes[0] "
        "(GET /a/{id})",
        NULL);
    /* A literal and a parameter at one place are different paths; so
     * are paths that differ in a trailing slash. */
    gw_config *cfg = parse_ok(
        CFG_ROUTES("{'method':'GET','path':'/a/{id}','fanout':[" PART "]},"
                   "{'method':'GET','path':'/a/new','fanout':[" PART "]},"
                   "{'method':'GET','path':'/a/new/','fanout':[" PART "]}"));
    assert_int_equal(cfg->nroutes, 3);
    gw_config_free(cfg);
}

/* -------------------------------------------------- methods and paths */

static void test_methods(void **state)
{
    static const struct {
        const char *method, *why;
    } bad[] = {
        {"get", "must be an upper-case method token such as \"GET\""},
        {"Get", "must be an upper-case method token such as \"GET\""},
        {"G ET", "must be an upper-case method token such as \"GET\""},
        {"GET\\n", "must be an upper-case method token such as \"GET\""},
        {"HEAD", "HEAD is served by every GET route and cannot have its own"},
        {"OPTIONS", "OPTIONS is answered by the gateway (204 with Allow)"},
        {"CONNECT", "CONNECT and TRACE are answered 501 by the gateway"},
        {"TRACE", "CONNECT and TRACE are answered 501 by the gateway"},
        {"FOO", "not a method the HTTP parser accepts (such requests are "
                "answered 400)"},
        {"DESCRIBE", "not a method the HTTP parser accepts (such requests "
                     "are answered 400)"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[512], want[512];
        snprintf(json, sizeof json,
                 CFG_ROUTES("{'method':'%s','path':'/x','fanout':[" PART "]}"),
                 bad[i].method);
        snprintf(want, sizeof want, "routes[0].method: \"%s\": %s",
                 strcmp(bad[i].method, "GET\\n") == 0 ? "GET\\u000a"
                                                      : bad[i].method,
                 bad[i].why);
        expect_problems(json, want, NULL);
    }
    static const char *const good[] = {"GET",   "POST",     "PUT",
                                       "PATCH", "DELETE",   "M-SEARCH",
                                       "PURGE", "PROPFIND", "SOURCE"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 CFG_ROUTES("{'method':'%s','path':'/x','fanout':[" PART "]}"),
                 good[i]);
        gw_config *cfg = parse_ok(json);
        assert_string_equal(cfg->routes[0].method, good[i]);
        gw_config_free(cfg);
    }
    /* Every method llhttp knows is either routable or refused by name. */
#define TRY(num, name, string)                                                 \
    {                                                                          \
        const char *why = NULL;                                                \
        int rc = gw_config_check_method(#string, &why);                        \
        assert_true(rc == 0 || (rc == -EINVAL && why != NULL));                \
    }
    HTTP_METHOD_MAP(TRY)
#undef TRY
}

static void test_route_paths(void **state)
{
    static const struct {
        const char *path, *why;
    } bad[] = {
        {"x", "must start with '/'"},
        {"", NULL},
        {"/a/x{id}", "a placeholder must be a whole segment (/a/{id}, not "
                     "/a/x{id})"},
        {"/a/{id}x", "a placeholder must be a whole segment (/a/{id}, not "
                     "/a/x{id})"},
        {"/a/{id}{b}", "a placeholder must be a whole segment (/a/{id}, not "
                       "/a/x{id})"},
        {"/a/{id", "unbalanced '{' (a placeholder is {name} within one "
                   "segment)"},
        {"/a/{id/b}", "unbalanced '{' (a placeholder is {name} within one "
                      "segment)"},
        {"/a/id}", "unbalanced '}'"},
        {"/a/{}", "empty placeholder {}"},
        {"/a/{1d}", "a placeholder name must be an identifier "
                    "([A-Za-z_][A-Za-z0-9_]*)"},
        {"/a/{i-d}", "a placeholder name must be an identifier "
                     "([A-Za-z_][A-Za-z0-9_]*)"},
        {"/a/{a{b}}", "'{' inside a placeholder"},
        {"/{id}/{id}", "the same placeholder twice"},
        {"/a b", "a character not allowed in a URL path (spaces, '?', '#', "
                 "non-ASCII...: percent-encode it)"},
        {"/a?b", "a character not allowed in a URL path (spaces, '?', '#', "
                 "non-ASCII...: percent-encode it)"},
        {"/caf\xc3\xa9", "a character not allowed in a URL path (spaces, "
                         "'?', '#', non-ASCII...: percent-encode it)"},
        {"/a%2", "invalid percent-escape (% must be followed by two hex "
                 "digits)"},
        {"/a%g0", "invalid percent-escape (% must be followed by two hex "
                  "digits)"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[512], want[512];
        snprintf(json, sizeof json,
                 CFG_ROUTES("{'method':'GET','path':'%s','fanout':[" PART "]}"),
                 bad[i].path);
        if (bad[i].why == NULL)
            snprintf(want, sizeof want, "routes[0].path: must not be empty");
        else
            snprintf(want, sizeof want,
                     "routes[0].path: invalid path \"%s\": %s", bad[i].path,
                     bad[i].why);
        expect_problems(json, want, NULL);
    }

    /* Limits: 16 placeholders and 32 segments are fine, one more is not. */
    char path[512], json[1024], want[1024];
    size_t o = 0;
    for (int i = 0; i < 16; i++)
        o += (size_t)snprintf(path + o, sizeof path - o, "/{p%d}", i);
    snprintf(json, sizeof json,
             CFG_ROUTES("{'method':'GET','path':'%s','fanout':[" PART "]}"),
             path);
    gw_config_free(parse_ok(json));
    snprintf(path + o, sizeof path - o, "/{p16}");
    snprintf(json, sizeof json,
             CFG_ROUTES("{'method':'GET','path':'%s','fanout':[" PART "]}"),
             path);
    snprintf(want, sizeof want,
             "routes[0].path: invalid path \"%s\": more than 16 "
             "placeholders",
             path);
    expect_problems(json, want, NULL);
    o = 0;
    for (int i = 0; i < 32; i++)
        o += (size_t)snprintf(path + o, sizeof path - o, "/s");
    snprintf(json, sizeof json,
             CFG_ROUTES("{'method':'GET','path':'%s','fanout':[" PART "]}"),
             path);
    gw_config_free(parse_ok(json));
    snprintf(path + o, sizeof path - o, "/s");
    snprintf(json, sizeof json,
             CFG_ROUTES("{'method':'GET','path':'%s','fanout':[" PART "]}"),
             path);
    expect_problems(json,
                    "routes[0].path: invalid path \"/s/s/s/s/s/s/s/s/s/s/s/"
                    "s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s/s\": too many "
                    "segments (at most 32)",
                    NULL);

    /* What is allowed: the root, empty segments, escapes, sub-delims. */
    gw_config *cfg = parse_ok(CFG_ROUTES(
        "{'method':'GET','path':'/','fanout':[" PART "]},"
        "{'method':'GET','path':'/a//b/','fanout':[" PART "]},"
        "{'method':'GET','path':'/caf%C3%A9/{_x1}','fanout':[" PART "]},"
        "{'method':'GET','path':'/a:b@c/!$&\\u0027()*+,;=-._~','fanout':[" PART
        "]}"));
    assert_int_equal(cfg->nroutes, 4);
    gw_config_free(cfg);
}

static void test_part_paths(void **state)
{
    (void)state;
    expect_problems(CFG_PART("{'name':'p','backend':'b','path':'users'}"),
                    "routes[0].fanout[0].path: invalid path \"users\": must "
                    "start with '/'",
                    NULL);
    expect_problems(CFG_PART("{'name':'p','backend':'b','path':'/u/{x'}"),
                    "routes[0].fanout[0].path: invalid path \"/u/{x\": "
                    "unbalanced '{' (a placeholder is {name} within one "
                    "segment)",
                    NULL);
    expect_problems(CFG_PART("{'name':'p','backend':'b','path':'/u?x={x}'}"),
                    "routes[0].fanout[0].path: invalid path \"/u?x={x}\": a "
                    "character not allowed in a URL path (spaces, '?', '#', "
                    "non-ASCII...: percent-encode it)",
                    NULL);
    /* In a part path a placeholder may sit inside a segment, and a name
     * may be used twice. */
    gw_config *cfg = parse_ok(CFG_PART(
        "{'name':'p','backend':'b','path':'/x/item-{id}.json/{id}/{q}'}"));
    assert_string_equal(cfg->routes[0].parts[0].path,
                        "/x/item-{id}.json/{id}/{q}");
    gw_config_free(cfg);
}

static void test_forward_headers(void **state)
{
    (void)state;
    expect_problems(
        CFG_ROUTE(",'forward_headers':['Authorization','connection','','a b',"
                  "'X-Request-Id','authorization','Host','Accept']"),
        "routes[0].forward_headers[1]: \"connection\" cannot be forwarded "
        "(hop-by-hop, or set by the gateway)",
        "routes[0].forward_headers[2]: \"\" is not a header field name",
        "routes[0].forward_headers[3]: \"a b\" is not a header field name",
        "routes[0].forward_headers[4]: \"X-Request-Id\" cannot be forwarded "
        "(hop-by-hop, or set by the gateway)",
        "routes[0].forward_headers[5]: \"authorization\" is listed twice",
        "routes[0].forward_headers[6]: \"Host\" cannot be forwarded "
        "(hop-by-hop, or set by the gateway)",
        NULL);
    gw_config *cfg = parse_ok(CFG_ROUTE(",'forward_headers':[]"));
    assert_int_equal(cfg->routes[0].nforward_headers, 0);
    gw_config_free(cfg);
}

/* ---------------------------------------------------------- listeners */

static void test_listen_addresses(void **state)
{
    static const struct {
        const char *addr, *why;
    } bad[] = {
        {"8080", "expected host:port (no port)"},
        {"localhost:8080", "expected host:port with a numeric IPv4 address, "
                           "[IPv6] or an empty host"},
        {"1.2.3:80", "expected host:port with a numeric IPv4 address, "
                     "[IPv6] or an empty host"},
        {"::1:80", "expected host:port (write an IPv6 address in [])"},
        {"[::1]", "expected host:port (no port after ']')"},
        {"[::1:80", "expected host:port ('[' without ']')"},
        {"[x]:80", "expected host:port with a numeric IPv6 address in []"},
        {"127.0.0.1:", "the port is empty"},
        {"127.0.0.1:0", "the port must be 1-65535"},
        {"127.0.0.1:65536", "the port must be 1-65535"},
        {"127.0.0.1:http", "the port must be a number"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = NULL;
        assert_int_equal(gw_config_check_listen(bad[i].addr, &why), -EINVAL);
        assert_string_equal(why, bad[i].why);
        char json[512], want[512];
        snprintf(json, sizeof json,
                 "{'listen':'%s','admin':'%s'," BACKENDS "," ROUTES "}",
                 bad[i].addr, bad[i].addr);
        snprintf(want, sizeof want, "listen: invalid address \"%s\": %s",
                 bad[i].addr, bad[i].why);
        char want2[512];
        snprintf(want2, sizeof want2, "admin: invalid address \"%s\": %s",
                 bad[i].addr, bad[i].why);
        expect_problems(json, want, want2, NULL);
    }
    static const char *const good[] = {"127.0.0.1:1", ":8080", "0.0.0.0:80",
                                       "[::]:443", "[::1]:65535"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(gw_config_check_listen(good[i], NULL), 0);
    assert_int_equal(gw_config_check_listen(NULL, NULL), -EINVAL);
}

static void test_listener_overlap(void **state)
{
    (void)state;
    expect_problems(CFG(",'admin':'127.0.0.1:8080'"),
                    "admin: 127.0.0.1:8080 overlaps listen (127.0.0.1:8080)",
                    NULL);
    expect_problems(CFG(",'admin':':8080'"),
                    "admin: :8080 overlaps listen (127.0.0.1:8080)", NULL);
    expect_problems(CFG(",'tls':{'listen':'0.0.0.0:8080','cert':'/c',"
                        "'key':'/k'}"),
                    "tls.listen: 0.0.0.0:8080 overlaps listen "
                    "(127.0.0.1:8080)",
                    NULL);
    /* Same port on different addresses, or different ports: fine. */
    gw_config *cfg = parse_ok(CFG(",'admin':'127.0.0.2:8080','tls':{"
                                  "'listen':'[::1]:8080','cert':'/c',"
                                  "'key':'/k'}"));
    gw_config_free(cfg);
}

static void test_tls_needs_all(void **state)
{
    (void)state;
    expect_problems(CFG(",'tls':{}"),
                    "tls.listen: missing (tls needs listen, cert and key)",
                    "tls.cert: missing (tls needs listen, cert and key)",
                    "tls.key: missing (tls needs listen, cert and key)", NULL);
    expect_problems(CFG(",'tls':{'listen':':8443','cert':'c'}"),
                    "tls.key: missing (tls needs listen, cert and key)", NULL);
    expect_problems(CFG(",'tls':{'listen':'x','cert':'','key':'k'}"),
                    "tls.listen: invalid address \"x\": expected host:port "
                    "(no port)",
                    "tls.cert: must not be empty", NULL);
}

/* ----------------------------------------------------------------- dns */

static void test_dns(void **state)
{
    (void)state;
    expect_problems(CFG(",'dns':{'servers':[]}"),
                    "dns.servers: must not be empty (leave \"servers\" out to "
                    "use the system's resolver)",
                    NULL);
    expect_problems(CFG(",'dns':{'min_ttl_ms':5000,'max_ttl_ms':1000}"),
                    "dns.min_ttl_ms: 5000 is greater than max_ttl_ms 1000",
                    NULL);
    expect_problems(CFG(",'dns':{'servers':['dns.google','1.1.1.1:0',"
                        "'[::1]','8.8.8.8']}"),
                    "dns.servers[0]: invalid server \"dns.google\": expected "
                    "a numeric IP address with an optional port (1.2.3.4, "
                    "1.2.3.4:53, [::1]:53)",
                    "dns.servers[1]: invalid server \"1.1.1.1:0\": expected "
                    "a numeric IP address with an optional port (1.2.3.4, "
                    "1.2.3.4:53, [::1]:53)",
                    "dns.servers[2]: invalid server \"[::1]\": expected a "
                    "numeric IP address with an optional port (1.2.3.4, "
                    "1.2.3.4:53, [::1]:53)",
                    NULL);
    expect_problems(CFG(",'dns':{'min_ttl_ms':0}"),
                    "dns.min_ttl_ms: must be between 1 and 2147483647 (got 0)",
                    NULL);

    /* Without servers: the system's resolver with these bounds. */
    gw_config *cfg = parse_ok(CFG(",'dns':{'max_ttl_ms':500}"));
    assert_true(cfg->has_dns);
    assert_null(cfg->dns_servers);
    assert_int_equal(cfg->dns_min_ttl_ms, 500);
    assert_int_equal(cfg->dns_max_ttl_ms, 500);
    gw_config_free(cfg);
    cfg = parse_ok(CFG(",'dns':{'min_ttl_ms':90000}"));
    assert_int_equal(cfg->dns_min_ttl_ms, 90000);
    assert_int_equal(cfg->dns_max_ttl_ms, 90000);
    gw_config_free(cfg);
    cfg = parse_ok(CFG(",'dns':{'min_ttl_ms':5,'max_ttl_ms':5}"));
    assert_int_equal(cfg->dns_min_ttl_ms, 5);
    assert_int_equal(cfg->dns_max_ttl_ms, 5);
    gw_config_free(cfg);
    cfg = parse_ok(CFG(",'dns':{}"));
    assert_true(cfg->has_dns);
    assert_int_equal(cfg->dns_min_ttl_ms, 1000);
    assert_int_equal(cfg->dns_max_ttl_ms, 60000);
    gw_config_free(cfg);
}

/* ------------------------------------------------------- relative paths */

static void test_relative_paths(void **state)
{
    (void)state;
    const char *tls = CFG(",'tls':{'listen':':8443','cert':'certs/s.crt',"
                          "'key':'../k/s.key'}");
    gw_config *cfg = parse_ok_in(tls, "/srv/gw");
    assert_string_equal(cfg->tls_cert, "/srv/gw/certs/s.crt");
    assert_string_equal(cfg->tls_key, "/srv/gw/../k/s.key");
    assert_string_equal(cfg->dir, "/srv/gw");
    gw_config_free(cfg);
    cfg = parse_ok_in(tls, "/");
    assert_string_equal(cfg->tls_cert, "/certs/s.crt");
    gw_config_free(cfg);

    /* NULL or relative dir: against the current directory. */
    char *cwd = getcwd(NULL, 0), want[PATH_MAX + 64];
    cfg = parse_ok_in(tls, NULL);
    snprintf(want, sizeof want, "%s/certs/s.crt", cwd);
    assert_string_equal(cfg->tls_cert, want);
    assert_string_equal(cfg->dir, cwd);
    gw_config_free(cfg);
    cfg = parse_ok_in(tls, "conf");
    snprintf(want, sizeof want, "%s/conf/certs/s.crt", cwd);
    assert_string_equal(cfg->tls_cert, want);
    gw_config_free(cfg);
    free(cwd);

    /* Absolute paths stay as written. */
    cfg = parse_ok_in(CFG(",'tls':{'listen':':8443','cert':'/a/s.crt',"
                          "'key':'/a/s.key'}"),
                      "/srv/gw");
    assert_string_equal(cfg->tls_cert, "/a/s.crt");
    gw_config_free(cfg);
}

/* ---------------------------------------------------------- malformed */

static void test_malformed_json(void **state)
{
    (void)state;
    expect_problems("{\n 'listen': 1,\n 'backends': }",
                    "line 3, column 14: unexpected token near '}'", NULL);
    expect_problems("",
                    "line 1, column 0: '[' or '{' expected near end of "
                    "file",
                    NULL);
    expect_problems("{'a':1",
                    "line 1, column 6: '}' expected near end of "
                    "file",
                    NULL);
    expect_problems("{} x", "line 1, column 4: end of file expected near 'x'",
                    NULL);
    /* A key twice in one object would silently keep the last value. */
    expect_problems("{'listen':'127.0.0.1:1',\n'listen':'127.0.0.1:2'}",
                    "line 2, column 8: duplicate object key near "
                    "'\"listen\"'",
                    NULL);
    expect_problems("{'a':'\\u0000'}",
                    "line 1, column 13: \\u0000 is not allowed without "
                    "JSON_ALLOW_NUL near '\"\\u0000\"'",
                    NULL);
    /* Raw control bytes never reach a message. */
    expect_problems("{'a':1\x01}", "line 1, column 7: '}' expected near '?'",
                    NULL);
}

/* --------------------------------------------------- several at once */

static void test_many_problems(void **state)
{
    (void)state;
    expect_problems(
        "{'listen':'localhost:80','admin':':8080','workers':-1,'foo':1,"
        "'tls':{'cert':'a.pem','listen':'[::]:8080'},"
        "'dns':{'servers':[],'min_ttl_ms':5000,'max_ttl_ms':10},"
        "'limits':{'max_header_bytes':0,'bar':true},"
        "'backends':{'a':{'url':'ftp://x'},'c':{'url':'http://u@h/'}},"
        "'routes':["
        "{'method':'get','path':'/a/x{id}','fanout':["
        "{'name':'errors','backend':'q','path':'nope'},"
        "{'name':'p','backend':'a','path':'/{a{b}}'},"
        "{'name':'p','backend':'c','path':'/x'}]},"
        "{'method':'GET','path':'/a/{id}','fanout':[]},"
        "{'method':'GET','path':'/a/{key}','forward_headers':['Host']}]}",
        "foo: unknown key",
        "listen: invalid address \"localhost:80\": expected host:port with a "
        "numeric IPv4 address, [IPv6] or an empty host",
        "workers: must be between 0 and 1024 (got -1)",
        "tls.key: missing (tls needs listen, cert and key)",
        "dns.servers: must not be empty (leave \"servers\" out to use the "
        "system's resolver)",
        "dns.min_ttl_ms: 5000 is greater than max_ttl_ms 10",
        "limits.bar: unknown key",
        "limits.max_header_bytes: must be between 1 and 1048576 (got 0)",
        "backends.a.url: invalid URL \"ftp://x\": the scheme must be http or "
        "https",
        "backends.c.url: invalid URL \"http://u@h/\": userinfo (user@) is "
        "not allowed",
        "routes[0].method: \"get\": must be an upper-case method token such "
        "as \"GET\"",
        "routes[0].path: invalid path \"/a/x{id}\": a placeholder must be a "
        "whole segment (/a/{id}, not /a/x{id})",
        "routes[0].fanout[0].name: \"errors\" is reserved (the answer's map "
        "of failed parts)",
        "routes[0].fanout[0].backend: unknown backend \"q\"",
        "routes[0].fanout[0].path: invalid path \"nope\": must start with "
        "'/'",
        "routes[0].fanout[1].path: invalid path \"/{a{b}}\": '{' inside a "
        "placeholder",
        "routes[0].fanout[2].name: duplicate part name \"p\" (also "
        "fanout[1])",
        "routes[1].fanout: must not be empty (a route needs at least one "
        "part)",
        "routes[2].fanout: missing (a route needs at least one part)",
        "routes[2].forward_headers[0]: \"Host\" cannot be forwarded "
        "(hop-by-hop, or set by the gateway)",
        "routes[2]: GET /a/{key} has the same method and path as routes[1] "
        "(GET /a/{id})",
        "tls.listen: [::]:8080 overlaps admin (:8080)", NULL);
}

/* More problems than are kept: the rest are counted in one line. */
static void test_error_cap(void **state)
{
    size_t cap = 64 + 32 * (GW_CONFIG_MAX_ERRORS + 50);
    char *json = malloc(cap);
    size_t o = 0;
    gw_config *cfg;
    gw_config_errors e = {0};

    (void)state;
    assert_non_null(json);
    o += (size_t)snprintf(json, cap, "{" LISTEN "," BACKENDS "," ROUTES);
    for (int i = 0; i < GW_CONFIG_MAX_ERRORS + 50; i++)
        o += (size_t)snprintf(json + o, cap - o, ",'k%d':1", i);
    snprintf(json + o, cap - o, "}");
    char *j = q(json);
    assert_int_equal(gw_config_parse(j, strlen(j), NULL, &cfg, &e), -EINVAL);
    assert_int_equal(e.n, GW_CONFIG_MAX_ERRORS + 1);
    assert_string_equal(e.msgs[0], "k0: unknown key");
    assert_string_equal(e.msgs[GW_CONFIG_MAX_ERRORS],
                        "50 more problems not shown");
    gw_config_errors_free(&e);
    assert_null(e.msgs);
    assert_int_equal(e.n, 0);
    free(j);
    free(json);
}

/* Long keys and values are shortened when quoted. */
static void test_long_values_shortened(void **state)
{
    char json[4096], name[301];

    (void)state;
    memset(name, 'x', 300);
    name[300] = '\0';
    snprintf(json, sizeof json,
             CFG_PART("{'name':'p','backend':'%s','path':'/'}"), name);
    char *j = q(json);
    gw_config *cfg;
    gw_config_errors e = {0};
    assert_int_equal(gw_config_parse(j, strlen(j), NULL, &cfg, &e), -EINVAL);
    assert_int_equal(e.n, 1);
    assert_true(strlen(e.msgs[0]) < 200);
    assert_non_null(strstr(e.msgs[0], "xxx...\""));
    gw_config_errors_free(&e);
    free(j);
}

/* ----------------------------------------------------------- printing */

static void test_errors_print(void **state)
{
    char *msgs[] = {"a: one", "line 1, column 2: two"};
    gw_config_errors e = {.msgs = msgs, .n = 2};
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    (void)state;
    assert_non_null(f);
    gw_config_errors_print(&e, f);
    fclose(f);
    assert_string_equal(out, "config: a: one\nconfig: line 1, column 2: two\n");
    free(out);
    gw_config_errors_print(NULL, stderr);
    gw_config_errors_free(NULL);
    gw_config_free(NULL);
}

/* ------------------------------------------------------------- files */

static char tmpdir[] = "/tmp/test_config.XXXXXX";

static void write_file(const char *name, const char *qtext)
{
    char path[256];
    char *text = q(qtext);

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
}

static int files_setup(void **state)
{
    (void)state;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    char sub[256];
    snprintf(sub, sizeof sub, "%s/certs", tmpdir);
    return mkdir(sub, 0700);
}

static int files_teardown(void **state)
{
    char cmd[300];

    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_load_files(void **state)
{
    char path[256], want[256];
    gw_config *cfg = NULL;
    gw_config_errors e = {0};

    (void)state;
    write_file("certs/s.crt", "cert");
    write_file("certs/s.key", "key");
    write_file("ca.pem", "ca");
    write_file("gw.json",
               "{" LISTEN ",'tls':{'listen':':8443','cert':'certs/s.crt',"
               "'key':'certs/s.key'},'backends':{'b':{'url':'https://h',"
               "'ca_file':'ca.pem'}}," ROUTES "}");
    snprintf(path, sizeof path, "%s/gw.json", tmpdir);
    assert_int_equal(gw_config_load(path, &cfg, &e), 0);
    assert_int_equal(e.n, 0);
    assert_string_equal(cfg->source, path);
    assert_string_equal(cfg->dir, tmpdir);
    snprintf(want, sizeof want, "%s/certs/s.crt", tmpdir);
    assert_string_equal(cfg->tls_cert, want);
    snprintf(want, sizeof want, "%s/ca.pem", tmpdir);
    assert_string_equal(cfg->backends[0].ca_file, want);
    gw_config_free(cfg);

    /* A file it names that cannot be read is a problem at its path. */
    write_file("gw2.json",
               "{" LISTEN ",'tls':{'listen':':8443','cert':'certs/no.crt',"
               "'key':'certs'},'backends':{'b':{'url':'https://h',"
               "'ca_file':'/nonexistent/ca.pem'}}," ROUTES "}");
    snprintf(path, sizeof path, "%s/gw2.json", tmpdir);
    assert_int_equal(gw_config_load(path, &cfg, &e), -EINVAL);
    assert_null(cfg);
    assert_int_equal(e.n, 3);
    snprintf(want, sizeof want,
             "tls.cert: cannot read \"%s/certs/no.crt\": No such file or "
             "directory",
             tmpdir);
    assert_string_equal(e.msgs[0], want);
    snprintf(want, sizeof want,
             "tls.key: cannot read \"%s/certs\": Is a directory", tmpdir);
    assert_string_equal(e.msgs[1], want);
    assert_string_equal(e.msgs[2],
                        "backends.b.ca_file: cannot read "
                        "\"/nonexistent/ca.pem\": No such file or directory");
    gw_config_errors_free(&e);

    /* An invalid file: the same messages as gw_config_parse. */
    write_file("bad.json", "{'listen':'x'}");
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    assert_int_equal(gw_config_load(path, &cfg, &e), -EINVAL);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.msgs[0],
                        "listen: invalid address \"x\": expected host:port "
                        "(no port)");
    gw_config_errors_free(&e);
}

static void test_load_unreadable(void **state)
{
    char path[256], want[300];
    gw_config *cfg = (gw_config *)1;
    gw_config_errors e = {0};

    (void)state;
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    assert_int_equal(gw_config_load(path, &cfg, &e), -ENOENT);
    assert_null(cfg);
    assert_int_equal(e.n, 1);
    snprintf(want, sizeof want, "cannot read \"%s\": No such file or directory",
             path);
    assert_string_equal(e.msgs[0], want);
    gw_config_errors_free(&e);

    assert_int_equal(gw_config_load(tmpdir, &cfg, &e), -EISDIR);
    snprintf(want, sizeof want, "cannot read \"%s\": Is a directory", tmpdir);
    assert_string_equal(e.msgs[0], want);
    gw_config_errors_free(&e);

    /* Over the cap: refused without parsing. */
    snprintf(path, sizeof path, "%s/big.json", tmpdir);
    FILE *f = fopen(path, "w");
    char *spaces = malloc(GW_CONFIG_MAX_FILE_BYTES + 1);
    assert_non_null(f);
    assert_non_null(spaces);
    memset(spaces, ' ', GW_CONFIG_MAX_FILE_BYTES + 1);
    assert_int_equal(fwrite(spaces, 1, GW_CONFIG_MAX_FILE_BYTES + 1, f),
                     GW_CONFIG_MAX_FILE_BYTES + 1);
    fclose(f);
    free(spaces);
    assert_int_equal(gw_config_load(path, &cfg, &e), -EFBIG);
    snprintf(want, sizeof want,
             "cannot read \"%s\": file too large (over 4 MiB)", path);
    assert_string_equal(e.msgs[0], want);
    gw_config_errors_free(&e);

    /* A path without a folder resolves against the current directory. */
    assert_int_equal(gw_config_load("no-such-config.json", &cfg, &e), -ENOENT);
    gw_config_errors_free(&e);

    /* Misuse. */
    assert_int_equal(gw_config_load(NULL, &cfg, &e), -EINVAL);
    assert_int_equal(gw_config_parse(NULL, 0, NULL, &cfg, &e), -EINVAL);
    assert_int_equal(gw_config_parse("{}", 2, NULL, NULL, &e), -EINVAL);
    /* errs may be NULL: the return code still says it. */
    assert_int_equal(gw_config_parse("{}", 2, NULL, &cfg, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_default),
        cmocka_unit_test(test_demo_embedded_is_the_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_everything_set),
        cmocka_unit_test(test_key_order),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_missing_keys),
        cmocka_unit_test(test_top_level_not_object),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_good_urls),
        cmocka_unit_test(test_ca_file),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_unknown_backend),
        cmocka_unit_test(test_fanout_missing_or_empty),
        cmocka_unit_test(test_too_many_parts),
        cmocka_unit_test(test_part_names),
        cmocka_unit_test(test_backend_names),
        cmocka_unit_test(test_duplicate_routes),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_route_paths),
        cmocka_unit_test(test_part_paths),
        cmocka_unit_test(test_forward_headers),
        cmocka_unit_test(test_listen_addresses),
        cmocka_unit_test(test_listener_overlap),
        cmocka_unit_test(test_tls_needs_all),
        cmocka_unit_test(test_dns),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_many_problems),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_long_values_shortened),
        cmocka_unit_test(test_errors_print),
        cmocka_unit_test(test_load_files),
        cmocka_unit_test(test_load_unreadable),
    };

    return cmocka_run_group_tests(tests, files_setup, files_teardown);
}
