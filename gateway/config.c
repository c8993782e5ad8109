/*
 * config.c — loading and validating the gateway's JSON configuration.
 *
 * Flow. The text is decoded by jansson (JSON_REJECT_DUPLICATES: a key given
 * twice in one object is a syntax error, since jansson would otherwise keep
 * the last value silently). The tree is then walked once, section by
 * section in a fixed order (listen, admin, workers, tls, dns, limits,
 * backends, routes), filling a gw_config while every problem found is
 * recorded with its JSON path; nothing stops at the first problem. Then a
 * few whole-config checks run (duplicate routes, listeners that collide).
 * Any problem: the half-built config is freed and -EINVAL returned. The
 * grammars of single values (addresses, URLs, templates, methods, names)
 * are in config_syntax.c; this file walks the tree and builds the config.
 *
 * Key order. jansson (>= 2.8; 2.14 here) keeps an object's keys in
 * insertion order, so json_object_iter walks "backends" in the file's
 * order and cfg->backends keeps it (tested).
 *
 * Data and ownership.
 *  - checker: the walk's state: the error list being filled (the
 *    caller's), the current JSON path (a bounded buffer, pushed and popped
 *    around each key or index), the config under construction.
 *  - Every string and array of a gw_config comes from its arena, a list of
 *    malloc'd blocks freed together by gw_config_free; the gw_config
 *    struct itself is malloc'd. Strings are copied out of the jansson tree,
 *    which is freed before returning.
 *  - Problems are malloc'd strings appended to the caller's
 *    gw_config_errors; at most GW_CONFIG_MAX_ERRORS are kept, plus one line
 *    counting the rest.
 *
 * Caps. The file is read up to GW_CONFIG_MAX_FILE_BYTES; the path buffer
 * and each message have fixed sizes (long keys and values are shortened
 * with "..." when quoted); a route has at most GW_CONFIG_MAX_PARTS parts.
 *
 * The embedded default: routes/demo.json is assembled into .rodata by a
 * top-level .incbin (the build runs from the repository root; the
 * Makefile makes config.o depend on the JSON file), followed by a NUL and
 * an 8-byte length.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_syntax.h"

/* ------------------------------------------------------- embedded file */

__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".globl gw__demo_json\n"
        ".hidden gw__demo_json\n"
        ".type gw__demo_json, %object\n"
        "gw__demo_json:\n"
        ".incbin \"routes/demo.json\"\n"
        "1:\n"
        ".byte 0\n"
        ".size gw__demo_json, . - gw__demo_json\n"
        ".balign 8\n"
        ".globl gw__demo_json_len\n"
        ".hidden gw__demo_json_len\n"
        ".type gw__demo_json_len, %object\n"
        "gw__demo_json_len:\n"
        ".quad 1b - gw__demo_json\n"
        ".size gw__demo_json_len, 8\n"
        ".popsection\n");

extern const char gw__demo_json[] __attribute__((visibility("hidden")));
extern const uint64_t gw__demo_json_len __attribute__((visibility("hidden")));

#define DEFAULT_SOURCE "(embedded routes/demo.json)"
#define INLINE_SOURCE "(inline JSON)"

/* ---------------------------------------------------------------- arena */

#define ARENA_BLOCK 4096

struct gw__config_arena {
    struct gw__config_arena *next;
    size_t used, cap;
    max_align_t data[];
};

/* Zeroed memory owned by cfg's arena; NULL when out of memory. */
static void *arena_alloc(gw_config *cfg, size_t n)
{
    const size_t align = sizeof(max_align_t);
    struct gw__config_arena *a = cfg->arena;

    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) / align * align;
    if (a == NULL || a->cap - a->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        struct gw__config_arena *b = malloc(sizeof *b + cap);

        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a;
        cfg->arena = b;
        a = b;
    }
    void *p = (char *)a->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strndup(gw_config *cfg, const char *s, size_t len)
{
    char *p = arena_alloc(cfg, len + 1);

    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static char *arena_strdup(gw_config *cfg, const char *s)
{
    return arena_strndup(cfg, s, strlen(s));
}

/* ---------------------------------------------------------- error list */

/* Appends a copy of msg; false when out of memory. */
static bool errors_add(gw_config_errors *errs, const char *msg)
{
    if (errs == NULL)
        return true;
    char *copy = strdup(msg);
    char **msgs = realloc(errs->msgs, (errs->n + 1) * sizeof *msgs);

    if (copy == NULL || msgs == NULL) {
        free(copy);
        if (msgs != NULL)
            errs->msgs = msgs;
        return false;
    }
    msgs[errs->n++] = copy;
    errs->msgs = msgs;
    return true;
}

void gw_config_errors_free(gw_config_errors *errs)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->n = 0;
}

void gw_config_errors_print(const gw_config_errors *errs, FILE *f)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->n; i++)
        fprintf(f, "config: %s\n", errs->msgs[i]);
}

/* ------------------------------------------------------------- checker */

#define PATH_CAP 512
#define MSG_CAP 1024
#define QUOTE_CAP 128
#define ELLIPSIS "..."

typedef struct checker {
    gw_config_errors *errs;
    size_t nproblems; /* found, kept or not */
    bool nomem;
    gw_config *cfg;
    char path[PATH_CAP];
    size_t plen;
} checker;

/* Writes s as a JSON string literal into buf (QUOTE_CAP bytes): quotes,
 * escapes, shortened with "..." inside the quotes when long (never
 * splitting a UTF-8 sequence). Returns buf. */
static const char *quote(char *buf, const char *s)
{
    const size_t room = QUOTE_CAP - sizeof ELLIPSIS - 2;
    size_t o = 0;

    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        char esc[8];
        size_t n;

        if (*p == '"' || *p == '\\')
            n = (size_t)snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            n = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
        else {
            esc[0] = (char)*p;
            n = 1;
        }
        /* Stop before the first byte that does not fit, or at a UTF-8
         * lead byte when fewer than 4 bytes of room remain. */
        if (o + n > room || (*p >= 0xc0 && o + 4 > room)) {
            memcpy(buf + o, ELLIPSIS, sizeof ELLIPSIS - 1);
            o += sizeof ELLIPSIS - 1;
            break;
        }
        memcpy(buf + o, esc, n);
        o += n;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static void add_line(checker *c, const char *msg)
{
    c->nproblems++;
    if (c->nproblems > GW_CONFIG_MAX_ERRORS)
        return;
    if (!errors_add(c->errs, msg))
        c->nomem = true;
}

/* Records a problem at the current path: "PATH: message". */
__attribute__((format(printf, 2, 3))) static void problem(checker *c,
                                                          const char *fmt, ...)
{
    char msg[MSG_CAP];
    int n =
        snprintf(msg, sizeof msg, "%s: ", c->plen > 0 ? c->path : "top level");
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    add_line(c, msg);
}

/* Appends text to the path, keeping it NUL-terminated; a path that does
 * not fit ends in "...". Returns the length to restore with path_pop. */
static size_t path_append(checker *c, const char *text)
{
    size_t old = c->plen, n = strlen(text);

    if (c->plen + n >= PATH_CAP) {
        n = PATH_CAP - 1 - c->plen;
        memcpy(c->path + c->plen, text, n);
        c->plen = PATH_CAP - 1;
        memcpy(c->path + c->plen - 3, ELLIPSIS, 3);
    } else {
        memcpy(c->path + c->plen, text, n);
        c->plen += n;
    }
    c->path[c->plen] = '\0';
    return old;
}

static bool simple_key(const char *key)
{
    if (*key == '\0')
        return false;
    for (const char *p = key; *p != '\0'; p++)
        if (!(*p == '_' || *p == '-' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return false;
    return true;
}

/* ".key", or ["key"] for a key that is not a plain word. */
static size_t path_key(checker *c, const char *key)
{
    char part[QUOTE_CAP + 8];

    if (simple_key(key) && strlen(key) <= GW_CONFIG_MAX_NAME)
        snprintf(part, sizeof part, "%s%s", c->plen > 0 ? "." : "", key);
    else {
        char q[QUOTE_CAP];
        snprintf(part, sizeof part, "[%s]", quote(q, key));
    }
    return path_append(c, part);
}

static size_t path_index(checker *c, size_t i)
{
    char part[32];

    snprintf(part, sizeof part, "[%zu]", i);
    return path_append(c, part);
}

static void path_pop(checker *c, size_t len)
{
    c->plen = len;
    c->path[len] = '\0';
}

/* ---------------------------------------------------------- JSON access */

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction or exponent";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "a JSON value";
}

/* Reports every key of obj that is not in the NULL-terminated list. */
static void check_keys(checker *c, json_t *obj, const char *const *known)
{
    for (void *it = json_object_iter(obj); it != NULL;
         it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t i = 0;
        while (known[i] != NULL && strcmp(known[i], key) != 0)
            i++;
        if (known[i] == NULL) {
            size_t saved = path_key(c, key);
            problem(c, "unknown key");
            path_pop(c, saved);
        }
    }
}

/*
 * obj[key] when present and of type want, else NULL: a wrong type is
 * reported; a missing key is reported when why_required is set (the text
 * after "missing").
 */
static json_t *get(checker *c, json_t *obj, const char *key, json_type want,
                   const char *why_required)
{
    json_t *v = json_object_get(obj, key);
    size_t saved = path_key(c, key);
    static const char *const want_name[] = {
        [JSON_OBJECT] = "an object", [JSON_ARRAY] = "an array",
        [JSON_STRING] = "a string",  [JSON_INTEGER] = "an integer",
        [JSON_TRUE] = "a boolean",
    };

    if (v == NULL) {
        if (why_required != NULL)
            problem(c, "missing%s", why_required);
    } else if (json_typeof(v) != want &&
               !(want == JSON_TRUE && json_is_boolean(v))) {
        problem(c, "must be %s, not %s", want_name[want], type_name(v));
        v = NULL;
    }
    path_pop(c, saved);
    return v;
}

/* obj[key] as a string, NULL when absent or not a string (reported). An
 * empty string is reported too ("must not be empty") and gives NULL. */
static const char *get_str(checker *c, json_t *obj, const char *key,
                           const char *why_required)
{
    json_t *v = get(c, obj, key, JSON_STRING, why_required);

    if (v == NULL)
        return NULL;
    if (json_string_length(v) == 0) {
        size_t saved = path_key(c, key);
        problem(c, "must not be empty");
        path_pop(c, saved);
        return NULL;
    }
    return json_string_value(v);
}

/* obj[key] as an integer in [min, max] into *out; absent: *out unchanged.
 * Returns true when the key was present and valid. */
static bool get_int(checker *c, json_t *obj, const char *key, int64_t min,
                    int64_t max, int64_t *out)
{
    json_t *v = get(c, obj, key, JSON_INTEGER, NULL);

    if (v == NULL)
        return false;
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        size_t saved = path_key(c, key);
        if (max == INT64_MAX)
            problem(c, "must be at least %lld (got %lld)", (long long)min,
                    (long long)n);
        else
            problem(c, "must be between %lld and %lld (got %lld)",
                    (long long)min, (long long)max, (long long)n);
        path_pop(c, saved);
        return false;
    }
    *out = n;
    return true;
}

/* ---------------------------------------------------------- file paths */

/* path made absolute against cfg->dir, in the arena; NULL (reported, or
 * nomem) on failure. */
static char *abs_path(checker *c, const char *key, const char *path)
{
    if (path[0] == '/') {
        char *p = arena_strdup(c->cfg, path);
        if (p == NULL)
            c->nomem = true;
        return p;
    }
    if (c->cfg->dir == NULL) {
        size_t saved = path_key(c, key);
        problem(c, "a relative path, and the current directory is unknown");
        path_pop(c, saved);
        return NULL;
    }
    size_t dlen = strlen(c->cfg->dir), plen = strlen(path);
    bool slash = dlen > 0 && c->cfg->dir[dlen - 1] == '/';
    char *p = arena_alloc(c->cfg, dlen + 1 + plen + 1);
    if (p == NULL) {
        c->nomem = true;
        return NULL;
    }
    memcpy(p, c->cfg->dir, dlen);
    if (!slash)
        p[dlen++] = '/';
    memcpy(p + dlen, path, plen + 1);
    return p;
}

/* The absolute form of dir (NULL: the current directory), malloc'd; NULL
 * when getcwd fails or out of memory (*nomem says which). */
static char *absolute_dir(const char *dir, bool *nomem)
{
    char *cwd, *out;

    *nomem = false;
    if (dir != NULL && dir[0] == '/') {
        out = strdup(dir);
        *nomem = out == NULL;
        return out;
    }
    cwd = getcwd(NULL, 0);
    if (cwd == NULL) {
        *nomem = errno == ENOMEM;
        return NULL;
    }
    if (dir == NULL || *dir == '\0' || strcmp(dir, ".") == 0)
        return cwd;
    size_t clen = strlen(cwd), dlen = strlen(dir);
    out = malloc(clen + 1 + dlen + 1);
    if (out == NULL) {
        *nomem = true;
        free(cwd);
        return NULL;
    }
    memcpy(out, cwd, clen);
    out[clen] = '/';
    memcpy(out + clen + 1, dir, dlen + 1);
    free(cwd);
    return out;
}

/* ------------------------------------------------------------- sections */

static char *copy_str(checker *c, const char *s)
{
    if (s == NULL)
        return NULL;
    char *p = arena_strdup(c->cfg, s);
    if (p == NULL)
        c->nomem = true;
    return p;
}

/* A listener key (listen, admin, tls.listen): copied when valid. */
static char *get_listen(checker *c, json_t *obj, const char *key,
                        const char *why_required)
{
    const char *s = get_str(c, obj, key, why_required);
    const char *why;
    char q[QUOTE_CAP];

    if (s == NULL)
        return NULL;
    if (gw__parse_listen(s, NULL, &why) != 0) {
        size_t saved = path_key(c, key);
        problem(c, "invalid address %s: %s", quote(q, s), why);
        path_pop(c, saved);
        return NULL;
    }
    return copy_str(c, s);
}

static void check_tls(checker *c, json_t *root)
{
    static const char *const keys[] = {"listen", "cert", "key", NULL};
    static const char *const need = " (tls needs listen, cert and key)";
    json_t *tls = get(c, root, "tls", JSON_OBJECT, NULL);

    if (tls == NULL)
        return;
    gw_config *cfg = c->cfg;
    size_t saved = path_key(c, "tls");
    check_keys(c, tls, keys);
    cfg->has_tls = true;
    cfg->tls_listen = get_listen(c, tls, "listen", need);
    const char *cert = get_str(c, tls, "cert", need);
    const char *key = get_str(c, tls, "key", need);
    if (cert != NULL)
        cfg->tls_cert = abs_path(c, "cert", cert);
    if (key != NULL)
        cfg->tls_key = abs_path(c, "key", key);
    path_pop(c, saved);
}

static void check_dns(checker *c, json_t *root)
{
    static const char *const keys[] = {"servers", "min_ttl_ms", "max_ttl_ms",
                                       NULL};
    json_t *dns = get(c, root, "dns", JSON_OBJECT, NULL);
    gw_config *cfg = c->cfg;

    cfg->dns_min_ttl_ms = GW_CONFIG_DEFAULT_DNS_MIN_TTL_MS;
    cfg->dns_max_ttl_ms = GW_CONFIG_DEFAULT_DNS_MAX_TTL_MS;
    if (dns == NULL)
        return;
    size_t saved = path_key(c, "dns");
    cfg->has_dns = true;
    check_keys(c, dns, keys);

    json_t *servers = get(c, dns, "servers", JSON_ARRAY, NULL);
    if (servers != NULL) {
        size_t n = json_array_size(servers), at = path_key(c, "servers");
        if (n == 0)
            problem(c, "must not be empty (leave \"servers\" out to use "
                       "the system's resolver)");
        cfg->dns_servers = arena_alloc(cfg, (n + 1) * sizeof(char *));
        if (cfg->dns_servers == NULL)
            c->nomem = true;
        for (size_t i = 0; i < n && cfg->dns_servers != NULL; i++) {
            json_t *s = json_array_get(servers, i);
            size_t at_i = path_index(c, i);
            char q[QUOTE_CAP];
            if (!json_is_string(s))
                problem(c, "must be a string, not %s", type_name(s));
            else if (!gw__valid_dns_server(json_string_value(s)))
                problem(c,
                        "invalid server %s: expected a numeric IP address "
                        "with an optional port (1.2.3.4, 1.2.3.4:53, "
                        "[::1]:53)",
                        quote(q, json_string_value(s)));
            else
                cfg->dns_servers[cfg->ndns_servers++] =
                    copy_str(c, json_string_value(s));
            path_pop(c, at_i);
        }
        path_pop(c, at);
    }

    int64_t min = 0, max = 0;
    bool has_min = get_int(c, dns, "min_ttl_ms", 1, GW_CONFIG_MAX_MS, &min);
    bool has_max = get_int(c, dns, "max_ttl_ms", 1, GW_CONFIG_MAX_MS, &max);
    if (has_min && has_max && min > max) {
        size_t at = path_key(c, "min_ttl_ms");
        problem(c, "%lld is greater than max_ttl_ms %lld", (long long)min,
                (long long)max);
        path_pop(c, at);
    }
    /* As gw_dns_config: a lone bound past the other's default moves it. */
    if (has_min)
        cfg->dns_min_ttl_ms = min;
    if (has_max)
        cfg->dns_max_ttl_ms = max;
    if (has_min && !has_max && min > cfg->dns_max_ttl_ms)
        cfg->dns_max_ttl_ms = min;
    if (has_max && !has_min && max < cfg->dns_min_ttl_ms)
        cfg->dns_min_ttl_ms = max;
    path_pop(c, saved);
}

static void check_limits(checker *c, json_t *root)
{
#define LIM(field, lo, hi, def)                                                \
    {                                                                          \
#field, offsetof(gw_limits, field), lo, hi, def                        \
    }
    static const struct {
        const char *key;
        size_t off;
        int64_t min, max, def;
    } lim[] = {
        LIM(max_header_bytes, 1, GW_CONFIG_MAX_HEADER_BYTES, 16384),
        LIM(max_body_bytes, 1, GW_CONFIG_MAX_BODY_BYTES, 1048576),
        LIM(header_timeout_ms, 1, GW_CONFIG_MAX_MS, 10000),
        LIM(body_timeout_ms, 1, GW_CONFIG_MAX_MS, 10000),
        LIM(idle_timeout_ms, 1, GW_CONFIG_MAX_MS, 60000),
        LIM(write_timeout_ms, 1, GW_CONFIG_MAX_MS, 10000),
        LIM(max_connections, 1, GW_CONFIG_MAX_CONNECTIONS, 10000),
        LIM(drain_timeout_ms, 1, GW_CONFIG_MAX_MS, 10000),
        LIM(max_requests_per_connection, 0, INT64_MAX, 1000),
        LIM(max_connection_age_ms, 0, GW_CONFIG_MAX_MS, 0),
    };
#undef LIM
    const size_t n = sizeof lim / sizeof lim[0];
    const char *keys[sizeof lim / sizeof lim[0] + 1];

    for (size_t i = 0; i < n; i++) {
        keys[i] = lim[i].key;
        *(int64_t *)((char *)&c->cfg->limits + lim[i].off) = lim[i].def;
    }
    keys[n] = NULL;
    json_t *limits = get(c, root, "limits", JSON_OBJECT, NULL);
    if (limits == NULL)
        return;
    size_t saved = path_key(c, "limits");
    check_keys(c, limits, keys);
    for (size_t i = 0; i < n; i++)
        get_int(c, limits, lim[i].key, lim[i].min, lim[i].max,
                (int64_t *)((char *)&c->cfg->limits + lim[i].off));
    path_pop(c, saved);
}

/* "client": "auto" (default: native for http, curl for https), "native"
 * (http only) or "curl". */
static void check_client(checker *c, json_t *v, gw_backend_cfg *b)
{
    bool https = b->scheme != NULL && strcmp(b->scheme, "https") == 0;
    b->client = https ? GW_CLIENT_CURL : GW_CLIENT_NATIVE;
    const char *kind = get_str(c, v, "client", NULL);
    if (kind == NULL || strcmp(kind, "auto") == 0)
        return;
    char q[QUOTE_CAP];
    size_t at = path_key(c, "client");
    if (strcmp(kind, "curl") == 0)
        b->client = GW_CLIENT_CURL;
    else if (strcmp(kind, "native") != 0)
        problem(c,
                "unknown client %s: must be \"auto\", \"native\" or "
                "\"curl\"",
                quote(q, kind));
    else if (https)
        problem(c, "the native client speaks plain HTTP: an https backend "
                   "uses \"curl\" (or \"auto\")");
    path_pop(c, at);
}

static void check_backend(checker *c, const char *name, json_t *v,
                          gw_backend_cfg *b)
{
    static const char *const keys[] = {
        "url",     "max_inflight", "timeout_ms", "max_response_bytes",
        "ca_file", "client",       NULL};
    char q[QUOTE_CAP];

    b->name = copy_str(c, name);
    b->max_inflight = GW_CONFIG_DEFAULT_MAX_INFLIGHT;
    b->max_response_bytes = GW_CONFIG_DEFAULT_MAX_RESPONSE_BYTES;
    if (!gw__valid_name(name))
        problem(c, "invalid backend name: " GW__NAME_RULE);
    if (!json_is_object(v)) {
        problem(c, "must be an object, not %s", type_name(v));
        return;
    }
    check_keys(c, v, keys);
    const char *url = get_str(c, v, "url", "");
    if (url != NULL) {
        gw__url u;
        const char *why = gw__parse_url(url, &u);
        if (why != NULL) {
            size_t at = path_key(c, "url");
            problem(c, "invalid URL %s: %s", quote(q, url), why);
            path_pop(c, at);
        } else {
            b->url = copy_str(c, url);
            b->scheme = copy_str(c, u.https ? "https" : "http");
            b->host = arena_strndup(c->cfg, u.host, u.host_len);
            b->port = u.port;
            b->prefix = arena_strndup(c->cfg, u.path, u.path_len);
            if (b->host == NULL || b->prefix == NULL)
                c->nomem = true;
        }
    }
    get_int(c, v, "max_inflight", 1, GW_CONFIG_MAX_INFLIGHT, &b->max_inflight);
    get_int(c, v, "timeout_ms", 1, GW_CONFIG_MAX_MS, &b->timeout_ms);
    get_int(c, v, "max_response_bytes", 1, GW_CONFIG_MAX_RESPONSE_BYTES,
            &b->max_response_bytes);
    const char *ca = get_str(c, v, "ca_file", NULL);
    if (ca != NULL) {
        if (b->scheme != NULL && strcmp(b->scheme, "https") != 0) {
            size_t at = path_key(c, "ca_file");
            problem(c, "only https backends use a CA file");
            path_pop(c, at);
        } else {
            b->ca_file = abs_path(c, "ca_file", ca);
        }
    }
    check_client(c, v, b);
}

static void check_backends(checker *c, json_t *root)
{
    json_t *backends = get(c, root, "backends", JSON_OBJECT, "");
    gw_config *cfg = c->cfg;

    if (backends == NULL)
        return;
    size_t n = json_object_size(backends);
    cfg->backends = arena_alloc(cfg, (n + 1) * sizeof *cfg->backends);
    if (cfg->backends == NULL) {
        c->nomem = true;
        return;
    }
    size_t saved = path_key(c, "backends");
    /* jansson keeps insertion order: backends stay in the file's order. */
    for (void *it = json_object_iter(backends); it != NULL;
         it = json_object_iter_next(backends, it)) {
        const char *name = json_object_iter_key(it);
        size_t at = path_key(c, name);
        check_backend(c, name, json_object_iter_value(it),
                      &cfg->backends[cfg->nbackends++]);
        path_pop(c, at);
    }
    path_pop(c, saved);
}

static void check_forward_headers(checker *c, json_t *route, gw_route_cfg *r)
{
    json_t *fh = get(c, route, "forward_headers", JSON_ARRAY, NULL);
    char q[QUOTE_CAP];

    if (fh == NULL)
        return;
    size_t n = json_array_size(fh), saved = path_key(c, "forward_headers");
    r->forward_headers = arena_alloc(c->cfg, (n + 1) * sizeof(char *));
    if (r->forward_headers == NULL) {
        c->nomem = true;
        path_pop(c, saved);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *h = json_array_get(fh, i);
        size_t at = path_index(c, i);
        const char *s = json_string_value(h);
        if (!json_is_string(h)) {
            problem(c, "must be a string, not %s", type_name(h));
        } else if (!gw__header_token(s)) {
            problem(c, "%s is not a header field name", quote(q, s));
        } else if (gw__reserved_header(s)) {
            problem(c,
                    "%s cannot be forwarded (hop-by-hop, or set by the "
                    "gateway)",
                    quote(q, s));
        } else {
            bool dup = false;
            for (size_t j = 0; j < r->nforward_headers && !dup; j++)
                dup = strcasecmp(r->forward_headers[j], s) == 0;
            if (dup)
                problem(c, "%s is listed twice", quote(q, s));
            else
                r->forward_headers[r->nforward_headers++] = copy_str(c, s);
        }
        path_pop(c, at);
    }
    path_pop(c, saved);
}

static void check_part(checker *c, json_t *v, gw_route_cfg *r, size_t idx)
{
    static const char *const keys[] = {"name", "backend", "path", "required",
                                       NULL};
    gw_part_cfg *p = &r->parts[idx];
    char q[QUOTE_CAP];
    const char *why;

    p->backend = SIZE_MAX;
    if (!json_is_object(v)) {
        problem(c, "must be an object, not %s", type_name(v));
        return;
    }
    check_keys(c, v, keys);

    const char *name = get_str(c, v, "name", "");
    if (name != NULL) {
        size_t at = path_key(c, "name");
        if (!gw__valid_name(name))
            problem(c, "invalid part name %s: " GW__NAME_RULE, quote(q, name));
        else if (strcmp(name, "errors") == 0)
            problem(c, "\"errors\" is reserved (the answer's map of failed "
                       "parts)");
        else {
            size_t dup = SIZE_MAX;
            for (size_t j = 0; j < idx && dup == SIZE_MAX; j++)
                if (r->parts[j].name != NULL &&
                    strcmp(r->parts[j].name, name) == 0)
                    dup = j;
            if (dup != SIZE_MAX)
                problem(c, "duplicate part name %s (also fanout[%zu])",
                        quote(q, name), dup);
            else
                p->name = copy_str(c, name);
        }
        path_pop(c, at);
    }

    const char *backend = get_str(c, v, "backend", "");
    if (backend != NULL) {
        size_t bi;
        if (gw_config_find_backend(c->cfg, backend, &bi) == 0) {
            p->backend = bi;
        } else {
            size_t at = path_key(c, "backend");
            problem(c, "unknown backend %s", quote(q, backend));
            path_pop(c, at);
        }
    }

    const char *path = get_str(c, v, "path", "");
    if (path != NULL) {
        if (gw_config_check_template(path, false, &why) != 0) {
            size_t at = path_key(c, "path");
            problem(c, "invalid path %s: %s", quote(q, path), why);
            path_pop(c, at);
        } else {
            p->path = copy_str(c, path);
        }
    }

    json_t *req = get(c, v, "required", JSON_TRUE, NULL);
    p->required = req != NULL && json_is_true(req);
}

static void check_route(checker *c, json_t *v, gw_route_cfg *r)
{
    static const char *const keys[] = {
        "method", "path", "timeout_ms", "fanout", "forward_headers", NULL};
    static const char *const one_part = " (a route needs at least one part)";
    char q[QUOTE_CAP];
    const char *why;

    r->timeout_ms = GW_CONFIG_DEFAULT_ROUTE_TIMEOUT_MS;
    if (!json_is_object(v)) {
        problem(c, "must be an object, not %s", type_name(v));
        return;
    }
    check_keys(c, v, keys);

    const char *method = get_str(c, v, "method", "");
    if (method != NULL) {
        if (gw_config_check_method(method, &why) != 0) {
            size_t at = path_key(c, "method");
            problem(c, "%s: %s", quote(q, method), why);
            path_pop(c, at);
        } else {
            r->method = copy_str(c, method);
        }
    }

    const char *path = get_str(c, v, "path", "");
    if (path != NULL) {
        if (gw_config_check_template(path, true, &why) != 0) {
            size_t at = path_key(c, "path");
            problem(c, "invalid path %s: %s", quote(q, path), why);
            path_pop(c, at);
        } else {
            r->path = copy_str(c, path);
        }
    }

    get_int(c, v, "timeout_ms", 1, GW_CONFIG_MAX_MS, &r->timeout_ms);

    json_t *fanout = get(c, v, "fanout", JSON_ARRAY, one_part);
    if (fanout != NULL) {
        size_t n = json_array_size(fanout), saved = path_key(c, "fanout");
        if (n == 0)
            problem(c, "must not be empty%s", one_part);
        else if (n > GW_CONFIG_MAX_PARTS)
            problem(c, "more than %d parts", GW_CONFIG_MAX_PARTS);
        else if ((r->parts = arena_alloc(c->cfg, n * sizeof *r->parts)) == NULL)
            c->nomem = true;
        else {
            r->nparts = n;
            for (size_t i = 0; i < n; i++) {
                size_t at = path_index(c, i);
                check_part(c, json_array_get(fanout, i), r, i);
                path_pop(c, at);
            }
        }
        path_pop(c, saved);
    }

    check_forward_headers(c, v, r);
}

/* "METHOD /path/{}" with placeholder names left out: two routes with the
 * same key match the same requests. malloc'd; NULL when out of memory. */
static char *route_key(const gw_route_cfg *r)
{
    size_t mlen = strlen(r->method), plen = strlen(r->path);
    char *k = malloc(mlen + 1 + plen + 1);

    if (k == NULL)
        return NULL;
    memcpy(k, r->method, mlen);
    size_t o = mlen;
    k[o++] = ' ';
    for (const char *p = r->path; *p != '\0'; p++) {
        k[o++] = *p;
        if (*p == '{') {
            p = strchr(p, '}');
            k[o++] = '}';
        }
    }
    k[o] = '\0';
    return k;
}

typedef struct keyed {
    char *key;
    size_t index;
} keyed;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    int d = strcmp(x->key, y->key);

    if (d != 0)
        return d;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Two routes with the same method and path (placeholder names aside):
 * each later one is reported, naming the first. */
static void check_duplicate_routes(checker *c)
{
    gw_config *cfg = c->cfg;
    keyed *k = calloc(cfg->nroutes + 1, sizeof *k);
    size_t *first = calloc(cfg->nroutes + 1, sizeof *first);
    size_t n = 0;

    if (k == NULL || first == NULL) {
        c->nomem = true;
        goto out;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (cfg->routes[i].method == NULL || cfg->routes[i].path == NULL)
            continue;
        k[n].key = route_key(&cfg->routes[i]);
        k[n].index = i;
        if (k[n].key == NULL) {
            c->nomem = true;
            goto out;
        }
        n++;
    }
    qsort(k, n, sizeof *k, keyed_cmp);
    for (size_t i = 0; i < cfg->nroutes; i++)
        first[i] = SIZE_MAX;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(k[i].key, k[i - 1].key) == 0)
            first[k[i].index] = first[k[i - 1].index] != SIZE_MAX
                                    ? first[k[i - 1].index]
                                    : k[i - 1].index;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (first[i] == SIZE_MAX)
            continue;
        const gw_route_cfg *a = &cfg->routes[first[i]];
        size_t at = path_key(c, "routes");
        path_index(c, i);
        problem(c, "%s %s has the same method and path as routes[%zu] (%s %s)",
                cfg->routes[i].method, cfg->routes[i].path, first[i], a->method,
                a->path);
        path_pop(c, at);
    }
out:
    for (size_t i = 0; k != NULL && i < n; i++)
        free(k[i].key);
    free(k);
    free(first);
}

static void check_routes(checker *c, json_t *root)
{
    json_t *routes = get(c, root, "routes", JSON_ARRAY, "");
    gw_config *cfg = c->cfg;

    if (routes == NULL)
        return;
    size_t n = json_array_size(routes), saved = path_key(c, "routes");
    if (n == 0)
        problem(c, "must not be empty (a gateway without routes answers "
                   "404 to everything)");
    cfg->routes = arena_alloc(cfg, (n + 1) * sizeof *cfg->routes);
    if (cfg->routes == NULL) {
        c->nomem = true;
        path_pop(c, saved);
        return;
    }
    cfg->nroutes = n;
    for (size_t i = 0; i < n; i++) {
        size_t at = path_index(c, i);
        check_route(c, json_array_get(routes, i), &cfg->routes[i]);
        path_pop(c, at);
    }
    path_pop(c, saved);
    check_duplicate_routes(c);
}

/* listen, admin and tls.listen may not claim the same port on
 * overlapping addresses. */
static void check_listener_overlap(checker *c)
{
    const char *keys[] = {"listen", "admin", "tls.listen"};
    const char *addrs[] = {c->cfg->listen, c->cfg->admin, c->cfg->tls_listen};
    gw__hostport hp[3];

    for (size_t i = 0; i < 3; i++)
        if (addrs[i] != NULL && gw__parse_listen(addrs[i], &hp[i], NULL) != 0)
            addrs[i] = NULL;
    for (size_t i = 1; i < 3; i++) {
        for (size_t j = 0; j < i; j++) {
            if (addrs[i] == NULL || addrs[j] == NULL ||
                !gw__listen_overlap(&hp[i], &hp[j]))
                continue;
            size_t at = path_append(c, keys[i]);
            problem(c, "%s overlaps %s (%s)", addrs[i], keys[j], addrs[j]);
            path_pop(c, at);
            break;
        }
    }
}

static void check_root(checker *c, json_t *root)
{
    static const char *const keys[] = {"listen",   "admin",  "workers",
                                       "tls",      "dns",    "limits",
                                       "backends", "routes", NULL};
    gw_config *cfg = c->cfg;

    check_keys(c, root, keys);
    cfg->listen = get_listen(c, root, "listen", "");
    cfg->admin = get_listen(c, root, "admin", NULL);
    get_int(c, root, "workers", 0, GW_CONFIG_MAX_WORKERS, &cfg->workers);
    check_tls(c, root);
    check_dns(c, root);
    check_limits(c, root);
    check_backends(c, root);
    check_routes(c, root);
    check_listener_overlap(c);
}

/* -------------------------------------------------------------- parse */

void gw_config_free(gw_config *cfg)
{
    if (cfg == NULL)
        return;
    for (struct gw__config_arena *a = cfg->arena, *next; a != NULL; a = next) {
        next = a->next;
        free(a);
    }
    free(cfg);
}

int gw_config_find_backend(const gw_config *cfg, const char *name,
                           size_t *index)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        if (cfg->backends[i].name != NULL &&
            strcmp(cfg->backends[i].name, name) == 0) {
            if (index != NULL)
                *index = i;
            return 0;
        }
    }
    return -ENOENT;
}

/* Writes the final "N more problems" line when problems were dropped. */
static void finish_errors(checker *c)
{
    if (c->nproblems > GW_CONFIG_MAX_ERRORS) {
        char msg[64];
        snprintf(msg, sizeof msg, "%zu more problems not shown",
                 c->nproblems - GW_CONFIG_MAX_ERRORS);
        if (!errors_add(c->errs, msg))
            c->nomem = true;
    }
}

static int parse(const char *json, size_t len, const char *dir,
                 const char *source, gw_config **out, gw_config_errors *errs)
{
    checker c = {.errs = errs};
    json_error_t jerr;
    json_t *root = NULL;
    int rc = -ENOMEM;
    bool nomem;

    *out = NULL;
    c.cfg = calloc(1, sizeof *c.cfg);
    if (c.cfg == NULL)
        return -ENOMEM;
    char *absdir = absolute_dir(dir, &nomem);
    if (nomem)
        goto fail_cfg;
    if (absdir != NULL) {
        c.cfg->dir = arena_strdup(c.cfg, absdir);
        free(absdir);
        if (c.cfg->dir == NULL)
            goto fail_cfg;
    }
    c.cfg->source = arena_strdup(c.cfg, source);
    if (c.cfg->source == NULL)
        goto fail_cfg;

    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char msg[MSG_CAP];
        snprintf(msg, sizeof msg, "line %d, column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        for (char *p = msg; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        add_line(&c, msg);
        rc = c.nomem ? -ENOMEM : -EINVAL;
        goto fail_cfg;
    }
    if (!json_is_object(root))
        problem(&c, "must be an object, not %s", type_name(root));
    else
        check_root(&c, root);
    json_decref(root);
    finish_errors(&c);
    if (c.nomem)
        goto fail_cfg;
    if (c.nproblems > 0) {
        rc = -EINVAL;
        goto fail_cfg;
    }
    *out = c.cfg;
    return 0;

fail_cfg:
    gw_config_free(c.cfg);
    return rc;
}

int gw_config_parse(const char *json, size_t len, const char *dir,
                    gw_config **out, gw_config_errors *errs)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (json == NULL)
        return -EINVAL;
    return parse(json, len, dir, INLINE_SOURCE, out, errs);
}

const char *gw_config_default_json(size_t *len)
{
    if (len != NULL)
        *len = (size_t)gw__demo_json_len;
    return gw__demo_json;
}

int gw_config_load_default(gw_config **out, gw_config_errors *errs)
{
    if (out == NULL)
        return -EINVAL;
    return parse(gw__demo_json, (size_t)gw__demo_json_len, NULL, DEFAULT_SOURCE,
                 out, errs);
}

/* ---------------------------------------------------------------- load */

/* One message "cannot read PATH: reason" for err (negative). */
static int file_error(gw_config_errors *errs, const char *what,
                      const char *path, int err)
{
    char msg[MSG_CAP], q[QUOTE_CAP], buf[128];
    const char *reason = err == -EFBIG ? "file too large (over 4 MiB)"
                                       : strerror_r(-err, buf, sizeof buf);

    snprintf(msg, sizeof msg, "%s%s%s: %s", what, *what ? " " : "",
             quote(q, path), reason);
    return errors_add(errs, msg) ? err : -ENOMEM;
}

/* Reads the whole file at path into a malloc'd buffer the caller frees.
 * Returns 0 or a negative errno (-EFBIG past the cap). */
static int read_file(const char *path, char **data, size_t *len)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int rc, fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail_fd;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail_fd;
    }
    /* Read up to the cap plus one byte: the size from fstat is only a
     * hint (a pipe, a file that grows). */
    buf = malloc(GW_CONFIG_MAX_FILE_BYTES + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto fail_fd;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, GW_CONFIG_MAX_FILE_BYTES + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto fail_buf;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > GW_CONFIG_MAX_FILE_BYTES) {
            rc = -EFBIG;
            goto fail_buf;
        }
    }
    close(fd);
    *data = buf;
    *len = n;
    return 0;

fail_buf:
    free(buf);
fail_fd:
    close(fd);
    return rc;
}

/* A problem for each file of cfg (tls.cert, tls.key, ca_file) that cannot
 * be opened for reading. Returns 0, -EINVAL or -ENOMEM. */
static int check_files(gw_config *cfg, gw_config_errors *errs)
{
    checker c = {.errs = errs, .cfg = cfg};
    size_t nfiles = 2 + cfg->nbackends;

    for (size_t i = 0; i < nfiles; i++) {
        const char *file;
        if (i == 0) {
            file = cfg->tls_cert;
            path_append(&c, "tls.cert");
        } else if (i == 1) {
            file = cfg->tls_key;
            path_append(&c, "tls.key");
        } else {
            file = cfg->backends[i - 2].ca_file;
            path_key(&c, "backends");
            path_key(&c, cfg->backends[i - 2].name);
            path_key(&c, "ca_file");
        }
        struct stat st;
        int err = 0, fd = file != NULL ? open(file, O_RDONLY | O_CLOEXEC) : -1;
        if (file == NULL)
            err = 0;
        else if (fd < 0)
            err = errno;
        else if (fstat(fd, &st) != 0)
            err = errno;
        else if (S_ISDIR(st.st_mode))
            err = EISDIR;
        if (fd >= 0)
            close(fd);
        if (err != 0) {
            char q[QUOTE_CAP], buf[128];
            problem(&c, "cannot read %s: %s", quote(q, file),
                    strerror_r(err, buf, sizeof buf));
        }
        path_pop(&c, 0);
    }
    finish_errors(&c);
    if (c.nomem)
        return -ENOMEM;
    return c.nproblems > 0 ? -EINVAL : 0;
}

/* The folder part of path ("." when there is none), malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int gw_config_load(const char *path, gw_config **out, gw_config_errors *errs)
{
    char *data = NULL, *dir = NULL;
    size_t len = 0;
    int rc;

    if (out == NULL || path == NULL)
        return -EINVAL;
    *out = NULL;
    rc = read_file(path, &data, &len);
    if (rc != 0)
        return rc == -ENOMEM ? rc : file_error(errs, "cannot read", path, rc);
    dir = dir_of(path);
    if (dir == NULL) {
        rc = -ENOMEM;
        goto fail_data;
    }
    rc = parse(data, len, dir, path, out, errs);
    if (rc != 0)
        goto fail_dir;
    rc = check_files(*out, errs);
    if (rc != 0) {
        gw_config_free(*out);
        *out = NULL;
    }

fail_dir:
    free(dir);
fail_data:
    free(data);
    return rc;
}
