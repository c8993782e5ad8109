/*
 * mock_backend.c — build/mock-backend, the demo and test backend, on
 * fanfold's runtime.
 *
 * Contract (DESIGN.md, "Contract: command line"):
 *
 *   mock-backend --port P --name NAME [--delay-ms D] [--fail-rate F]
 *                [--listen HOST]
 *
 * Every instance serves the three demo resources with the bodies of
 * bench/backends.sh (the nginx mocks of the benchmark), application/json,
 * keep-alive, GET and HEAD:
 *
 *   /users/{user}    {"id":"<user>","name":"Ada Lovelace",...}
 *   /inventory/{id}  {"id":"<id>","sku":"SKU-<id>","in_stock":true,...}
 *   /prices/{id}     {"id":"<id>","currency":"EUR","amount_cents":1999,...}
 *
 * {id} is the path segment as received (percent-escapes left alone),
 * JSON-escaped when spliced in. Anything else is 404 {"error":"not found"};
 * a request the strict parser (gateway/http_parse.h) rejects is answered
 * with its status (400 for a malformed one) and the connection is closed.
 * Every answer carries X-Backend: NAME. GET /stats answers
 * {"served":N,"cancelled":N,"inflight":N,"max_inflight":N} at once and is
 * not counted itself.
 *
 * A counted request (any request but /stats) goes through these steps:
 *   1. inflight += 1 (max_inflight follows it);
 *   2. the delay: ?delay_ms=N (digits; the first occurrence wins), else
 *      X-Mock-Delay: NAME=N for this backend's NAME (the header form is
 *      for requests through the gateway, which forwards the route's
 *      forward_headers but not the client's query string), else
 *      --delay-ms. While it runs the connection goroutine watches the
 *      socket for a hang-up (rt_conn_wait(RT_HUP) with the end of the
 *      delay as its deadline): a client that goes away (FIN or RST) makes
 *      the request `cancelled`; it is not answered and the connection is
 *      closed at once. Bytes the client pipelined meanwhile stay unread.
 *      A client that only half-closes (shutdown(SHUT_WR)) during a delay
 *      counts as gone too: EPOLLRDHUP does not tell the two apart.
 *   3. the answer: ?status=NNN (three digits, 100..599), else
 *      X-Mock-Status: NAME=NNN, answers NNN
 *      {"error":"injected status NNN"}; else the --fail-rate draw may
 *      answer 503 {"error":"injected failure"}; else the route's body or
 *      the 404. The draw is deterministic: over the first n draws exactly
 *      floor(n * F) fail (a Bresenham accumulator), so 0.5 fails every
 *      second request and 1.0 all of them.
 *   4. served += 1 and inflight -= 1 just before the answer is written, so
 *      a client that has its answer sees it counted.
 * Statuses that cannot carry a body (1xx, 204, 304) are sent without one;
 * after a 1xx, which promises a final answer that never comes, the
 * connection is closed.
 *
 * Structure: main() parses the flags and runs the runtime; the first
 * goroutine listens, prints "mock-backend NAME listening on HOST:PORT" on
 * stderr (the port chosen for --port 0) and becomes the accept goroutine.
 * It spawns one goroutine per connection; rt_accept failures such as
 * EMFILE back off (5 ms doubling to 1 s, as Go's http.Server does). A
 * connection goroutine owns a strict parser and a fixed read buffer: it
 * feeds the parser what it has, serves each complete request in order
 * (pipelined requests too), and reads more only when every byte is
 * consumed; a read waits at most IDLE_TIMEOUT. An answer (headers and
 * body) goes out in one rt_conn_writev(). When the server closes after an
 * answer (Connection: close, a rejection) it shuts its side down and
 * drains what the client still sends for a while (nginx's lingering
 * close), so the answer is not lost to a reset.
 *
 * Ownership: the listener reference belongs to the accept goroutine for
 * the life of the process. rt_accept hands the accept goroutine one
 * reference per connection, which it passes with the mock_conn to the
 * connection goroutine (or releases itself when that cannot start); the
 * connection goroutine drops it with rt_conn_release() when it ends. The
 * counters are atomics shared by every goroutine.
 *
 * SIGTERM and SIGINT end the process with status 0 (in-flight requests are
 * dropped); SIGPIPE is ignored.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "http_parse.h"
#include "rt.h"

#define READ_BUF_BYTES 8192
#define IDLE_TIMEOUT (60 * RT_SEC)
#define WRITE_TIMEOUT (10 * RT_SEC)
#define LINGER_TIMEOUT (500 * RT_MSEC)
#define LINGER_MAX_BYTES (64 * 1024)
#define MAX_BODY_BYTES (64 * 1024)
#define MAX_DELAY_MS 3600000 /* one hour */
#define MAX_NAME_LEN 64
#define FAIL_SCALE 1000000 /* --fail-rate in millionths */
#define BACKOFF_MIN (5 * RT_MSEC)
#define BACKOFF_MAX RT_SEC

/* ---------------------------------------------------------- options */

typedef struct mock_opts {
    int port;                      /* 0: the kernel picks */
    const char *name;              /* visible ASCII, for logs and X-Backend */
    int64_t delay_ms;              /* default delay before each answer */
    uint64_t fail_ppm;             /* --fail-rate in millionths */
    char listen[INET6_ADDRSTRLEN]; /* numeric host */
    int exit_code;                 /* set by server_main when it returns */
} mock_opts;

static const char usage_text[] =
    "usage: mock-backend --port P --name NAME [--delay-ms D] [--fail-rate F]\n"
    "                    [--listen HOST]\n"
    "\n"
    "The demo and test backend: GET or HEAD /users/{user}, /inventory/{id}\n"
    "and /prices/{id} answer fixed JSON bodies; GET /stats answers\n"
    "{\"served\":N,\"cancelled\":N,\"inflight\":N,\"max_inflight\":N}.\n"
    "\n"
    "  --port P       TCP port, 0..65535 (0: a free one, printed on stderr)\n"
    "  --name NAME    name for logs and the X-Backend header (visible ASCII)\n"
    "  --delay-ms D   wait D ms before every answer (default 0, max 3600000)\n"
    "  --fail-rate F  answer this fraction of requests, 0..1, 503\n"
    "                 {\"error\":\"injected failure\"} (default 0)\n"
    "  --listen HOST  numeric address to listen on (default 127.0.0.1)\n"
    "  -h, --help     print this text\n"
    "\n"
    "Per request: ?delay_ms=N waits N ms (a client that hangs up meanwhile\n"
    "is counted as cancelled), ?status=NNN (100..599) answers that status.\n"
    "Through a gateway, which forwards headers but not the query:\n"
    "X-Mock-Delay: NAME=N and X-Mock-Status: NAME=NNN (several, comma-\n"
    "separated) apply to the backend started with --name NAME.\n"
    "SIGTERM or SIGINT ends the process with status 0.\n";

/* Parses a whole decimal string into [min, max]. */
static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_rate(const char *s, uint64_t *ppm)
{
    char *end;

    if ((*s < '0' || *s > '9') && *s != '.')
        return -EINVAL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= 0.0 && v <= 1.0))
        return -EINVAL;
    *ppm = (uint64_t)(v * FAIL_SCALE + 0.5);
    return 0;
}

static bool valid_name(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > MAX_NAME_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

static bool valid_host(const char *s)
{
    unsigned char addr[sizeof(struct in6_addr)];

    return strlen(s) < INET6_ADDRSTRLEN && (inet_pton(AF_INET, s, addr) == 1 ||
                                            inet_pton(AF_INET6, s, addr) == 1);
}

/* Prints problem and the usage on stderr; returns 2, the exit status. */
static int bad_args(const char *problem, const char *arg)
{
    if (problem != NULL)
        fprintf(stderr, "mock-backend: %s%s%s\n", problem,
                arg != NULL ? ": " : "", arg != NULL ? arg : "");
    fputs(usage_text, stderr);
    return 2;
}

/* Fills *o from argv. Returns 0, 1 for --help, or 2 (usage printed). */
static int parse_args(int argc, char **argv, mock_opts *o)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"name", required_argument, NULL, 'n'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"fail-rate", required_argument, NULL, 'f'},
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long v;
    int opt;

    memset(o, 0, sizeof *o);
    o->port = -1;
    snprintf(o->listen, sizeof o->listen, "127.0.0.1");
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (parse_long(optarg, 0, 65535, &v) != 0)
                return bad_args("--port wants 0..65535", optarg);
            o->port = (int)v;
            break;
        case 'n':
            if (!valid_name(optarg))
                return bad_args("--name wants 1..64 visible ASCII characters",
                                optarg);
            o->name = optarg;
            break;
        case 'd':
            if (parse_long(optarg, 0, MAX_DELAY_MS, &v) != 0)
                return bad_args("--delay-ms wants 0..3600000", optarg);
            o->delay_ms = v;
            break;
        case 'f':
            if (parse_rate(optarg, &o->fail_ppm) != 0)
                return bad_args("--fail-rate wants a number in [0, 1]", optarg);
            break;
        case 'l':
            if (!valid_host(optarg))
                return bad_args("--listen wants a numeric IPv4 or IPv6 address",
                                optarg);
            snprintf(o->listen, sizeof o->listen, "%s", optarg);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 1;
        case ':':
            return bad_args("missing value for", argv[optind - 1]);
        default:
            return bad_args("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bad_args("unexpected argument", argv[optind]);
    if (o->port < 0)
        return bad_args("--port is required", NULL);
    if (o->name == NULL)
        return bad_args("--name is required", NULL);
    return 0;
}

/* ---------------------------------------------------------- counters */

static const mock_opts *opts; /* set once before rt_run */

/*
 * The four request counters move together under one lock, so that /stats
 * is a snapshot: with one atomic each, a reader could see inflight at its
 * new peak before max_inflight had followed it (seen under TSan: 300 in
 * flight, max_inflight 299). The lock is held for a few instructions per
 * request; this is a test backend, not a hot path.
 */
static struct {
    rt_mutex mu;
    uint64_t served;        /* mu */
    uint64_t cancelled;     /* mu */
    int64_t inflight;       /* mu */
    int64_t max_inflight;   /* mu */
    _Atomic uint64_t draws; /* --fail-rate draws so far */
} stats = {.mu = RT_MUTEX_INIT};

static void inflight_begin(void)
{
    rt_mutex_lock(&stats.mu);
    if (++stats.inflight > stats.max_inflight)
        stats.max_inflight = stats.inflight;
    rt_mutex_unlock(&stats.mu);
}

/* The request ends without an answer: its client went away. */
static void inflight_cancelled(void)
{
    rt_mutex_lock(&stats.mu);
    stats.cancelled++;
    stats.inflight--;
    rt_mutex_unlock(&stats.mu);
}

/* The request is about to be answered. */
static void inflight_served(void)
{
    rt_mutex_lock(&stats.mu);
    stats.served++;
    stats.inflight--;
    rt_mutex_unlock(&stats.mu);
}

/* true when this request must fail: draw k fails when floor((k+1) F)
 * exceeds floor(k F), so n draws hold exactly floor(n F) failures. */
static bool fail_draw(void)
{
    uint64_t ppm = opts->fail_ppm;

    if (ppm == 0)
        return false;
    uint64_t k = atomic_fetch_add(&stats.draws, 1);
    return (k + 1) * ppm / FAIL_SCALE > k * ppm / FAIL_SCALE;
}

/* ------------------------------------------------------ request target */

typedef struct target {
    const char *path, *query; /* not NUL-terminated; query without '?' */
    size_t path_len, query_len;
} target;

/* Splits a request target into path and query. An absolute-form target
 * ("http://host/users/1") is reduced to its path; anything else that does
 * not start with '/' ("*", an authority) gets an empty path, which no
 * route matches. */
static target split_target(const char *s, size_t len)
{
    target t = {.path = s, .query = s + len};
    const char *end = s + len;

    if (len > 0 && s[0] != '/') {
        const char *scheme = memchr(s, ':', len);
        const char *p = s + len;
        if (scheme != NULL && end - scheme >= 3 &&
            memcmp(scheme, "://", 3) == 0) {
            for (p = scheme + 3; p < end && *p != '/' && *p != '?'; p++)
                ;
        }
        t.path = p;
    }
    const char *q = memchr(t.path, '?', (size_t)(end - t.path));
    if (q != NULL) {
        t.query = q + 1;
        t.query_len = (size_t)(end - q - 1);
    } else {
        q = end;
    }
    t.path_len = (size_t)(q - t.path);
    return t;
}

/* The value of the first key=value in the query with that key, or NULL. */
static const char *query_param(const target *t, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *p = t->query, *end = t->query + t->query_len;

    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pend = amp != NULL ? amp : end;
        if ((size_t)(pend - p) > klen && memcmp(p, key, klen) == 0 &&
            p[klen] == '=') {
            *len = (size_t)(pend - p) - klen - 1;
            return p + klen + 1;
        }
        if (amp == NULL)
            break;
        p = amp + 1;
    }
    return NULL;
}

/* A run of digits as a number, saturating at max; -1 unless all digits. */
static int64_t digits_value(const char *s, size_t len, int64_t max)
{
    int64_t v = 0;

    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > max)
            v = max;
    }
    return v;
}

/*
 * The value for this backend in a header "NAME=VALUE[, NAME=VALUE...]"
 * (X-Mock-Delay, X-Mock-Status): how a request through the gateway, which
 * does not forward its query string but forwards the route's
 * forward_headers to every part, slows down or fails one backend only.
 */
static const char *header_for_me(const gw_http_request *req, const char *name,
                                 size_t *len)
{
    const gw_http_header *h = gw_http_request_header(req, name);
    size_t me = strlen(opts->name);

    if (h == NULL)
        return NULL;
    for (size_t i = 0; i < h->value_len;) {
        while (i < h->value_len && (h->value[i] == ' ' || h->value[i] == ','))
            i++;
        size_t start = i;
        while (i < h->value_len && h->value[i] != ',')
            i++;
        const char *item = h->value + start;
        size_t n = i - start;
        while (n > 0 && item[n - 1] == ' ')
            n--;
        if (n > me + 1 && memcmp(item, opts->name, me) == 0 &&
            item[me] == '=') {
            *len = n - me - 1;
            return item + me + 1;
        }
    }
    return NULL;
}

/* ?delay_ms=N in ms, else X-Mock-Delay: NAME=N, else --delay-ms. */
static int64_t request_delay_ms(const target *t, const gw_http_request *req)
{
    size_t len;
    const char *v = query_param(t, "delay_ms", &len);
    if (v == NULL)
        v = header_for_me(req, "x-mock-delay", &len);
    int64_t ms = v != NULL ? digits_value(v, len, MAX_DELAY_MS) : -1;

    return ms >= 0 ? ms : opts->delay_ms;
}

/* ?status=NNN (three digits in 100..599), else X-Mock-Status: NAME=NNN,
 * else 0. */
static int request_status(const target *t, const gw_http_request *req)
{
    size_t len;
    const char *v = query_param(t, "status", &len);
    if (v == NULL)
        v = header_for_me(req, "x-mock-status", &len);
    int64_t st = v != NULL && len == 3 ? digits_value(v, len, 999) : -1;

    return st >= 100 && st <= 599 ? (int)st : 0;
}

/* ----------------------------------------------------------- answers */

/* The three resources: a path prefix and a body template in which every
 * @ID@ is replaced by the JSON-escaped path segment. */
typedef struct route {
    const char *prefix;
    const char *body;
} route;

static const route routes[] = {
    {"/users/",
     "{\"id\":\"@ID@\",\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\","
     "\"tier\":\"gold\",\"since\":\"2015-06-01\",\"locale\":\"en-GB\"}"},
    {"/inventory/",
     "{\"id\":\"@ID@\",\"sku\":\"SKU-@ID@\",\"in_stock\":true,\"quantity\":42,"
     "\"warehouse\":\"ams-1\",\"updated_at\":\"2024-01-01T00:00:00Z\"}"},
    {"/prices/", "{\"id\":\"@ID@\",\"currency\":\"EUR\",\"amount_cents\":1999,"
                 "\"list_cents\":2499,\"discount_pct\":20,"
                 "\"valid_until\":\"2030-12-31\"}"},
};

/* An answer being built. body points at text or at owned (malloc'd, freed
 * by reply_free). */
typedef struct reply {
    int status;
    const char *body;
    size_t body_len;
    char *owned;
    char text[192]; /* short bodies: errors, /stats (4 x 20 digits fit) */
} reply;

static void reply_text(reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_text(reply *r, int status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
    r->status = status;
    r->body = r->text;
    r->body_len = n < 0                         ? 0
                  : (size_t)n >= sizeof r->text ? sizeof r->text - 1
                                                : (size_t)n;
}

static void reply_free(reply *r)
{
    free(r->owned);
    r->owned = NULL;
}

/* Bytes s takes once JSON-escaped. */
static size_t json_escaped_len(const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        n += c == '"' || c == '\\' ? 2 : c < 0x20 || c == 0x7f ? 6 : 1;
    }
    return n;
}

/* Writes s JSON-escaped at out (json_escaped_len bytes); returns the end. */
static char *json_escape(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            out += 6;
        } else {
            *out++ = (char)c;
        }
    }
    return out;
}

/* The route's body with id spliced in, into r (owned). -ENOMEM or 0. */
static int reply_route(reply *r, const route *ro, const char *id, size_t len)
{
    size_t esc = json_escaped_len(id, len), total = 0;
    const char *t, *at;

    for (t = ro->body; (at = strstr(t, "@ID@")) != NULL; t = at + 4)
        total += (size_t)(at - t) + esc;
    total += strlen(t);
    char *out = malloc(total), *o = out;
    if (out == NULL)
        return -ENOMEM;
    for (t = ro->body; (at = strstr(t, "@ID@")) != NULL; t = at + 4) {
        memcpy(o, t, (size_t)(at - t));
        o = json_escape(o + (at - t), id, len);
    }
    memcpy(o, t, strlen(t));
    r->status = 200;
    r->owned = out;
    r->body = out;
    r->body_len = total;
    return 0;
}

/* Fills r for a path: a resource, or the 404. */
static void reply_path(reply *r, const char *path, size_t len)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t plen = strlen(routes[i].prefix);
        if (len <= plen || memcmp(path, routes[i].prefix, plen) != 0 ||
            memchr(path + plen, '/', len - plen) != NULL)
            continue;
        if (reply_route(r, &routes[i], path + plen, len - plen) == 0)
            return;
        reply_text(r, 500, "{\"error\":\"out of memory\"}");
        return;
    }
    reply_text(r, 404, "{\"error\":\"not found\"}");
}

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    static const char *const classes[] = {"Informational", "Success",
                                          "Redirection", "Client Error",
                                          "Server Error"};
    return classes[status / 100 - 1];
}

/* May an answer with this status carry a body (RFC 9110 6.4.1)? */
static bool status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* Writes r's status line, headers and (unless head_only) body in one
 * writev. keep_alive says which Connection header to send: HTTP/1.1 keeps
 * alive without one, HTTP/1.0 needs "keep-alive". Returns 0 or a negative
 * errno. */
static int reply_write(rt_conn *c, const reply *r, bool head_only,
                       bool keep_alive, bool http10)
{
    bool body = status_has_body(r->status);
    char len_hdr[48] = "";
    char head[320];

    if (body)
        snprintf(len_hdr, sizeof len_hdr, "Content-Length: %zu\r\n",
                 r->body_len);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "%s"
                     "X-Backend: %s\r\n"
                     "%s"
                     "\r\n",
                     r->status, reason(r->status), len_hdr, opts->name,
                     !keep_alive ? "Connection: close\r\n"
                     : http10    ? "Connection: keep-alive\r\n"
                                 : "");
    if (n < 0 || (size_t)n >= sizeof head)
        return -ENOSPC;
    struct iovec iov[2] = {
        {.iov_base = head, .iov_len = (size_t)n},
        {.iov_base = (void *)r->body, .iov_len = r->body_len},
    };
    int cnt = body && !head_only && r->body_len > 0 ? 2 : 1;
    ssize_t w = rt_conn_writev(c, iov, cnt, rt_now() + WRITE_TIMEOUT, NULL);
    return w < 0 ? (int)w : 0;
}

/* ------------------------------------------------------- connections */

/* One accepted connection. Owned by its goroutine, which frees it. */
typedef struct mock_conn {
    rt_conn *c; /* one reference, released by conn_main */
    gw_http_parser parser;
    char buf[READ_BUF_BYTES];
} mock_conn;

/*
 * Waits out a delay while watching for the client to hang up. Returns
 * true when the delay ran out, false when the client went away (or the
 * wait failed, which ends the request the same way).
 */
static bool delay_watching(rt_conn *c, int64_t ms)
{
    if (ms <= 0)
        return true;
    return rt_conn_wait(c, RT_HUP, rt_now() + ms * RT_MSEC, NULL) == -ETIMEDOUT;
}

static void answer_stats(reply *r)
{
    rt_mutex_lock(&stats.mu);
    uint64_t served = stats.served, cancelled = stats.cancelled;
    int64_t inflight = stats.inflight, max_inflight = stats.max_inflight;
    rt_mutex_unlock(&stats.mu);
    reply_text(r, 200,
               "{\"served\":%" PRIu64 ",\"cancelled\":%" PRIu64
               ",\"inflight\":%" PRId64 ",\"max_inflight\":%" PRId64 "}",
               served, cancelled, inflight, max_inflight);
}

/*
 * Serves one request (the steps in the file comment). Returns true when
 * the connection stays open, false when it must close; *linger tells
 * whether an answer went out, so the close should drain.
 */
static bool serve(mock_conn *mc, const gw_http_request *req, bool *linger)
{
    target t = split_target(req->target, req->target_len);
    bool get = req->method_id == HTTP_GET, head = req->method_id == HTTP_HEAD;
    bool http10 = req->version_minor == 0;
    reply r = {0};

    *linger = false;
    if ((get || head) && t.path_len == 6 && memcmp(t.path, "/stats", 6) == 0) {
        answer_stats(&r);
    } else {
        inflight_begin();
        if (!delay_watching(mc->c, request_delay_ms(&t, req))) {
            inflight_cancelled();
            return false;
        }
        int status = request_status(&t, req);
        if (status != 0)
            reply_text(&r, status, "{\"error\":\"injected status %d\"}",
                       status);
        else if (fail_draw())
            reply_text(&r, 503, "{\"error\":\"injected failure\"}");
        else if (get || head)
            reply_path(&r, t.path, t.path_len);
        else
            reply_text(&r, 404, "{\"error\":\"not found\"}");
        inflight_served();
    }
    bool keep = req->keep_alive && r.status >= 200;
    int err = reply_write(mc->c, &r, head, keep, http10);
    reply_free(&r);
    *linger = err == 0 && !keep;
    return err == 0 && keep;
}

/* Answers a request the parser rejected: its status, {"error":"..."}. */
static int answer_rejected(mock_conn *mc)
{
    const char *msg = gw_http_parser_message(&mc->parser);
    int status = gw_http_parser_status(&mc->parser);
    reply r = {0};

    if (status < 400 || status > 599)
        status = 500;
    reply_text(&r, status, "{\"error\":\"%s\"}",
               msg != NULL ? msg : "bad request");
    return reply_write(mc->c, &r, false, false, false);
}

/* Closes our side and reads what the client still sends, up to a limit,
 * until it closes too: closing with unread bytes would reset the
 * connection and could destroy the answer before the client read it. */
static void linger_close(mock_conn *mc)
{
    int64_t deadline = rt_now() + LINGER_TIMEOUT;
    size_t drained = 0;

    if (rt_conn_shutdown(mc->c, SHUT_WR) != 0)
        return;
    while (drained < LINGER_MAX_BYTES) {
        ssize_t n =
            rt_conn_read(mc->c, mc->buf, sizeof mc->buf, deadline, NULL);
        if (n <= 0)
            return;
        drained += (size_t)n;
    }
}

/*
 * The connection goroutine: reads, feeds the parser and serves requests
 * in order until the client closes, idles for IDLE_TIMEOUT, sends a
 * request the parser rejects, asks for a close, or hangs up during a
 * delay. Owns mc and its connection reference and releases both.
 */
static void conn_main(void *arg)
{
    mock_conn *mc = arg;
    size_t off = 0, len = 0;
    bool linger = false;

    for (;;) {
        if (off == len) {
            ssize_t n = rt_conn_read(mc->c, mc->buf, sizeof mc->buf,
                                     rt_now() + IDLE_TIMEOUT, NULL);
            if (n <= 0)
                break; /* end of stream, reset, idle timeout */
            off = 0;
            len = (size_t)n;
        }
        size_t used = 0;
        int rc =
            gw_http_parser_feed(&mc->parser, mc->buf + off, len - off, &used);
        off += used;
        if (rc == -EAGAIN)
            continue;
        if (rc != 0) {
            linger = answer_rejected(mc) == 0;
            break;
        }
        bool keep = serve(mc, gw_http_parser_request(&mc->parser), &linger);
        gw_http_parser_next(&mc->parser);
        if (!keep)
            break;
    }
    if (linger)
        linger_close(mc);
    gw_http_parser_free(&mc->parser);
    rt_conn_release(mc->c);
    free(mc);
}

/* Starts the goroutine for c; takes over the caller's reference. */
static void conn_start(rt_conn *c)
{
    gw_http_limits limits = {.max_body_bytes = MAX_BODY_BYTES};
    mock_conn *mc = malloc(sizeof *mc);

    if (mc == NULL)
        goto fail_conn;
    mc->c = c;
    if (gw_http_parser_init(&mc->parser, &limits, NULL, NULL) != 0)
        goto fail_mc;
    if (rt_go(conn_main, mc) == 0)
        goto fail_parser;
    return;

fail_parser:
    gw_http_parser_free(&mc->parser);
fail_mc:
    free(mc);
fail_conn:
    rt_conn_release(c);
}

/*
 * The accept loop. Errors that pass (out of fds, of memory, of buffers)
 * back off, 5 ms doubling to 1 s, and are logged once per streak; a
 * listener that stops working (-EBADF, -EINVAL) ends the loop.
 */
static int accept_loop(rt_conn *ln)
{
    int64_t backoff = 0;

    for (;;) {
        rt_conn *c;
        int err = rt_accept(ln, &c, RT_FOREVER, NULL);
        if (err == 0) {
            backoff = 0;
            conn_start(c);
            continue;
        }
        if (err == -EBADF || err == -EINVAL)
            return err;
        if (backoff == 0)
            fprintf(stderr, "mock-backend %s: accept: %s; backing off\n",
                    opts->name, rt_strerror(err));
        backoff = backoff == 0 ? BACKOFF_MIN : 2 * backoff;
        if (backoff > BACKOFF_MAX)
            backoff = BACKOFF_MAX;
        rt_sleep(backoff);
    }
}

/* The first goroutine: listen, say where, then accept for ever. */
static void server_main(void *arg)
{
    mock_opts *o = arg;
    bool v6 = strchr(o->listen, ':') != NULL;
    char addr[INET6_ADDRSTRLEN + 16];
    rt_conn *ln;

    snprintf(addr, sizeof addr, "%s%s%s:%d", v6 ? "[" : "", o->listen,
             v6 ? "]" : "", o->port);
    int err = rt_listen(addr, 4096, &ln);
    if (err != 0) {
        fprintf(stderr, "mock-backend %s: cannot listen on %s: %s\n", o->name,
                addr, rt_strerror(err));
        o->exit_code = 1;
        return;
    }
    fprintf(stderr, "mock-backend %s listening on %s%s%s:%d\n", o->name,
            v6 ? "[" : "", o->listen, v6 ? "]" : "", rt_conn_port(ln));
    err = accept_loop(ln);
    fprintf(stderr, "mock-backend %s: accept: %s\n", o->name, rt_strerror(err));
    rt_conn_release(ln);
    o->exit_code = 1;
}

/* ------------------------------------------------------------- main */

static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

/* Signals: SIGTERM/SIGINT end the process with status 0, SIGPIPE is
 * ignored (sockets use MSG_NOSIGNAL; this covers a closed stderr). */
static void install_signals(void)
{
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction ign = {.sa_handler = SIG_IGN};

    sigemptyset(&stop.sa_mask);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGPIPE, &ign, NULL);
}

/* Thousands of connections need thousands of fds: soft limit = hard. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    mock_opts o;

    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    opts = &o;
    install_signals();
    raise_fd_limit();
    rc = rt_run(server_main, &o);
    if (rc != 0) {
        fprintf(stderr, "mock-backend %s: cannot start the runtime: %s\n",
                o.name, rt_strerror(rc));
        return 1;
    }
    return o.exit_code;
}
