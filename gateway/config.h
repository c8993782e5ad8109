/*
 * config.h — the gateway's configuration: a JSON file (jansson) loaded,
 * validated against the contract and turned into plain C structs.
 *
 *     gw_config *cfg;
 *     gw_config_errors errs = {0};
 *     int rc = path ? gw_config_load(path, &cfg, &errs)
 *                   : gw_config_load_default(&cfg, &errs);
 *     if (rc != 0) {
 *         gw_config_errors_print(&errs, stderr);  // "config: PATH: msg"
 *         gw_config_errors_free(&errs);
 *         exit(1);
 *     }
 *     ... cfg->routes[i].parts[j], cfg->backends[cfg->...backend] ...
 *     gw_config_free(cfg);
 *
 * A gw_config is immutable once returned and owns everything it points to
 * (one arena: gw_config_free releases it all at once), so any number of
 * goroutines may read it while it lives. A reload makes a new one.
 *
 * The key reference for users is docs/configuration.md; the rules it
 * states are the ones checked here.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Defaults (the contract's). */
#define GW_CONFIG_DEFAULT_ROUTE_TIMEOUT_MS 1000
#define GW_CONFIG_DEFAULT_MAX_INFLIGHT 256
#define GW_CONFIG_DEFAULT_MAX_RESPONSE_BYTES (1024 * 1024)
#define GW_CONFIG_DEFAULT_DNS_MIN_TTL_MS 1000
#define GW_CONFIG_DEFAULT_DNS_MAX_TTL_MS 60000

/* Upper bounds of numeric settings (lower bounds: docs/configuration.md).
 * Every time in milliseconds fits an int and converts to nanoseconds
 * without overflow; sizes bound what is allocated per connection or per
 * call. */
#define GW_CONFIG_MAX_MS INT32_MAX                    /* ~24.8 days */
#define GW_CONFIG_MAX_HEADER_BYTES (1024 * 1024)      /* per connection */
#define GW_CONFIG_MAX_BODY_BYTES (1024 * 1024 * 1024) /* 1 GiB */
#define GW_CONFIG_MAX_RESPONSE_BYTES (1024 * 1024 * 1024)
#define GW_CONFIG_MAX_CONNECTIONS 1000000
#define GW_CONFIG_MAX_INFLIGHT 1000000
#define GW_CONFIG_MAX_WORKERS 1024 /* the runtime's cap on Ps */
/* A route path has at most this many segments and GW_MAX_PARAMS
 * placeholders (route.h); a placeholder name at most this many bytes. */
#define GW_CONFIG_MAX_SEGMENTS 32
#define GW_CONFIG_MAX_PARAMS 16
#define GW_CONFIG_MAX_NAME 64
/* A route fans out to at most this many parts. */
#define GW_CONFIG_MAX_PARTS 64
/* A configuration file larger than this is refused unread. */
#define GW_CONFIG_MAX_FILE_BYTES (4 * 1024 * 1024)
/* At most this many problems are kept; one more line says how many were
 * left out. */
#define GW_CONFIG_MAX_ERRORS 200

typedef struct gw_limits {
    int64_t max_header_bytes, max_body_bytes;   /* 16384, 1048576 */
    int64_t header_timeout_ms, body_timeout_ms; /* 10000, 10000 */
    int64_t idle_timeout_ms, write_timeout_ms;  /* 60000, 10000 */
    int64_t max_connections, drain_timeout_ms;  /* 10000, 10000 */
    int64_t max_requests_per_connection;        /* 1000, 0 = no cap */
    int64_t max_connection_age_ms;              /* 0 = none */
} gw_limits;

/* Which upstream client calls a backend (its "client" key). */
typedef enum gw_client_kind {
    GW_CLIENT_NATIVE = 0, /* HTTP/1.1 on the runtime's sockets: http only */
    GW_CLIENT_CURL = 1,   /* libcurl: http and https */
} gw_client_kind;

typedef struct gw_backend_cfg {
    char *name;   /* its key in "backends" */
    char *url;    /* as written */
    char *scheme; /* "http" or "https" (lower case) */
    char *host;   /* host name or address, IPv6 without brackets */
    int port;     /* explicit, or the scheme's default (80, 443) */
    char *prefix; /* the URL's path without a trailing '/': "" or "/base" */
    int64_t max_inflight;       /* 256 */
    int64_t timeout_ms;         /* 0: absent (the route deadline alone) */
    int64_t max_response_bytes; /* 1 MiB */
    char *ca_file; /* NULL, or a path made absolute against the config's
                      folder */
    /* "client", with "auto" (the default) resolved: native for http,
     * curl for https. */
    gw_client_kind client;
} gw_backend_cfg;

typedef struct gw_part_cfg {
    char *name;
    size_t backend; /* index into gw_config.backends */
    char *path;     /* template, e.g. "/users/{user}" */
    bool required;  /* false */
} gw_part_cfg;

typedef struct gw_route_cfg {
    char *method;       /* an HTTP method llhttp knows, e.g. "GET" */
    char *path;         /* template, e.g. "/api/products/{id}" */
    int64_t timeout_ms; /* 1000 */
    gw_part_cfg *parts; /* "fanout", in order; nparts >= 1 */
    size_t nparts;
    char **forward_headers; /* header names as written; none by default */
    size_t nforward_headers;
} gw_route_cfg;

struct gw__config_arena;

typedef struct gw_config {
    char *listen;    /* "host:port" */
    char *admin;     /* NULL when absent */
    int64_t workers; /* 0 = one per usable CPU */
    bool has_tls;
    char *tls_listen, *tls_cert, *tls_key; /* paths absolute */
    bool has_dns;
    char **dns_servers; /* NULL when "servers" is absent (resolv.conf) */
    size_t ndns_servers;
    /* Effective bounds, defaults filled in as gw_dns_config does: with
     * only max_ttl_ms set below 1000, min is that max (and vice versa). */
    int64_t dns_min_ttl_ms, dns_max_ttl_ms;
    gw_limits limits;
    gw_backend_cfg *backends; /* in the file's order */
    size_t nbackends;
    gw_route_cfg *routes; /* in the file's order */
    size_t nroutes;
    char *source; /* the file's path, or "(embedded routes/demo.json)" */
    char *dir;    /* the absolute folder relative paths were resolved in */
    /* -- private -- */
    struct gw__config_arena *arena;
} gw_config;

/*
 * Problems found in a configuration, each one line without "config: ",
 * e.g. `routes[0].fanout[1].backend: unknown backend "x"` or
 * `line 3, column 7: unexpected token near '}'`. msgs[i] and msgs are
 * malloc'd and owned by the caller: gw_config_errors_free(). Start from
 * a zeroed struct; the functions below append to it.
 */
typedef struct gw_config_errors {
    char **msgs;
    size_t n;
} gw_config_errors;

/*
 * Parse and validate len bytes of JSON (need not be NUL-terminated).
 * dir is the folder relative file paths (tls.cert, tls.key, ca_file) are
 * resolved against; NULL or relative: against the current directory
 * (getcwd). Pure apart from getcwd: no file is opened.
 * On 0, *out is a new config the caller owns (gw_config_free) and errs is
 * untouched. On error *out is NULL and:
 *   -EINVAL  the configuration is invalid; every problem is in errs;
 *   -ENOMEM  out of memory (errs may hold what was found until then).
 */
int gw_config_parse(const char *json, size_t len, const char *dir,
                    gw_config **out, gw_config_errors *errs);

/*
 * Read the file at path, then gw_config_parse it with the file's folder
 * as dir, then check that every file it names (tls.cert, tls.key,
 * ca_file) can be read (each one that cannot is a problem with its path).
 * Blocking file I/O: call before rt_run() or through rt_blocking().
 * Returns what gw_config_parse returns, or when the file itself cannot be
 * read a negative errno (-ENOENT, -EACCES, -EISDIR, -EFBIG over
 * GW_CONFIG_MAX_FILE_BYTES...) with one message saying so in errs.
 * Caller owns *out on 0: gw_config_free.
 */
int gw_config_load(const char *path, gw_config **out, gw_config_errors *errs);

/*
 * The configuration embedded at build time from routes/demo.json,
 * relative paths resolved against the current directory. Same returns
 * and ownership as gw_config_parse (the file is valid, so in practice 0
 * or -ENOMEM).
 */
int gw_config_load_default(gw_config **out, gw_config_errors *errs);

/* The embedded routes/demo.json, NUL-terminated; *len (may be NULL) gets
 * its length without the NUL. Static storage. */
const char *gw_config_default_json(size_t *len);

/* Free cfg and everything it points to. NULL is a no-op. */
void gw_config_free(gw_config *cfg);

/* Free every message and zero *errs (ready for reuse). NULL is a no-op. */
void gw_config_errors_free(gw_config_errors *errs);

/* Write each error as "config: <msg>\n" to f (the --check and refused-start
 * format). */
void gw_config_errors_print(const gw_config_errors *errs, FILE *f);

/* Index of the backend named name, or -ENOENT. */
int gw_config_find_backend(const gw_config *cfg, const char *name,
                           size_t *index);

/*
 * Syntax checks shared with other modules (main's --listen, route.c).
 * Each returns 0, or -EINVAL with *why (may be NULL) set to a static
 * message saying what is wrong.
 *
 * gw_config_check_listen: "host:port" with a numeric IPv4 host, an IPv6
 * host in brackets, or an empty host (all interfaces); port 1-65535 (0,
 * "any free port", is refused: every listener needs a known address).
 *
 * gw_config_check_template: a path template. It starts with '/'; outside
 * placeholders only RFC 3986 path characters (unreserved, sub-delims,
 * ':', '@', '/', valid %XX escapes); each {name} is an identifier
 * ([A-Za-z_][A-Za-z0-9_]*, at most GW_CONFIG_MAX_NAME bytes) with
 * balanced braces. With route_path set also: each placeholder is a whole
 * segment, no name twice, at most GW_CONFIG_MAX_SEGMENTS segments and 16
 * placeholders.
 */
int gw_config_check_listen(const char *addr, const char **why);
int gw_config_check_template(const char *tmpl, bool route_path,
                             const char **why);

/*
 * The HTTP method a route may name: an upper-case token that llhttp
 * accepts, other than HEAD (served by every GET route), OPTIONS (answered
 * by the gateway), CONNECT and TRACE (answered 501). 0 or -EINVAL with
 * *why.
 */
int gw_config_check_method(const char *method, const char **why);

#endif /* GW_CONFIG_H */
