/*
 * http_parse.h — strict, incremental HTTP/1.1 request parsing over llhttp.
 *
 * One gw_http_parser per connection. Bytes are fed as they arrive; the
 * parser stops after one complete request and says how many bytes it used,
 * so pipelined requests are handled one at a time by the caller:
 *
 *     for (;;) {
 *         size_t used;
 *         int rc = gw_http_parser_feed(&p, buf, len, &used);
 *         buf += used; len -= used;
 *         if (rc == -EAGAIN) read more and continue;
 *         if (rc == -EPROTO) answer gw_http_parser_status(&p) and close;
 *         if (rc == 0) serve gw_http_parser_request(&p), then
 *                      gw_http_parser_next(&p) and continue with buf/len;
 *     }
 *
 * A server that must route and answer before it reads a body (404 and 405
 * without reading it, "100 Continue" only when it will read it) turns on
 * gw_http_parser_stop_at_head(): feed then also returns GW_HTTP_HEAD, once
 * per request, as soon as the request line and the headers are complete
 * and checked, without consuming a body byte:
 *
 *         if (rc == GW_HTTP_HEAD) {
 *             r = gw_http_parser_head(&p);
 *             route r; if the answer does not need the body, answer and,
 *             when gw_http_request_has_body(r), close;
 *             else if r->expect_continue, send "100 Continue";
 *             continue feeding: feed returns 0 when the body is read.
 *         }
 *
 * Every buffer has a hard cap taken from gw_http_limits. Rejections carry
 * the HTTP status to answer with (400, 413, 414, 417, 431, 501, 505) and a
 * short message; after any rejection the connection must be closed. What
 * is rejected with which status, and why, is listed at the top of
 * http_parse.c.
 */
#ifndef GW_HTTP_PARSE_H
#define GW_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llhttp.h"

/* A request target longer than this is answered 414. */
#define GW_HTTP_MAX_TARGET_BYTES 8192
#define GW_HTTP_DEFAULT_MAX_HEADER_BYTES 16384
#define GW_HTTP_DEFAULT_MAX_BODY_BYTES (1024 * 1024)

/* gw_http_parser_feed(): the head of a request is complete and checked
 * (only with gw_http_parser_stop_at_head() on). */
#define GW_HTTP_HEAD 1

typedef struct gw_http_limits {
    /* Request line plus header section, in raw bytes (empty lines before
     * the request line included), 431 beyond; a chunked body's trailer
     * section has the same cap of its own. 0 = default. */
    size_t max_header_bytes;
    /* Decoded body bytes (after de-chunking); 0 = default. */
    size_t max_body_bytes;
} gw_http_limits;

/* Points into the parser's header buffer; not NUL-terminated. */
typedef struct gw_http_header {
    const char *name;
    size_t name_len;
    const char *value; /* leading and trailing whitespace removed */
    size_t value_len;
} gw_http_header;

/*
 * Receives body bytes as they are decoded. Returns 0 to go on, or a
 * negative errno that aborts the request (feed returns it, status 500).
 * data is only valid during the call.
 */
typedef int (*gw_http_body_fn)(void *arg, const char *data, size_t len);

/* The form of the request target (RFC 9112 3.2); authority-form only
 * comes with CONNECT, which is refused. */
typedef enum gw_http_target_form {
    GW_HTTP_TARGET_ORIGIN,   /* "/path?query" */
    GW_HTTP_TARGET_ABSOLUTE, /* "http://host:port/path?query" */
    GW_HTTP_TARGET_ASTERISK, /* "*", with OPTIONS only */
} gw_http_target_form;

/*
 * A parsed request. Every pointer is owned by the parser and stays valid
 * until gw_http_parser_next(), gw_http_parser_reset() or
 * gw_http_parser_free() is called on it.
 */
typedef struct gw_http_request {
    const char *method; /* static string, e.g. "GET" */
    int method_id;      /* llhttp_method_t */
    const char *target; /* raw request target, not NUL-terminated */
    size_t target_len;
    gw_http_target_form target_form;
    /* The target's path, not decoded: for origin-form the target up to
     * "?"; for absolute-form what follows the authority up to "?", or "/"
     * when that is empty; "*" for asterisk-form. Never NULL. */
    const char *path;
    size_t path_len;
    /* What follows the first "?" of the target, without it; empty (not
     * NULL) when there is none. Not decoded. */
    const char *query;
    size_t query_len;
    /* The authority the request is for: the absolute-form target's
     * authority when there is one (RFC 9112 3.2.2: it wins over Host),
     * else the Host header's value; "host" or "host:port", userinfo never
     * present. NULL with host_len 0 only for an HTTP/1.0 request without
     * Host and without an absolute-form target. */
    const char *host;
    size_t host_len;
    int version_major;
    int version_minor;
    const gw_http_header *headers;
    size_t nheaders;
    bool has_content_length;
    uint64_t content_length;
    bool chunked; /* Transfer-Encoding: chunked (the only one accepted) */
    /* "Expect: 100-continue" in an HTTP/1.1 request (RFC 9110 10.1.1: an
     * HTTP/1.0 one is ignored); any other expectation is rejected 417.
     * The server sends "100 Continue" only when it will read the body. */
    bool expect_continue;
    /* llhttp_should_keep_alive(): set at the head, final at message end. */
    bool keep_alive;
    /* The body when no body callback is set (NULL if empty); body_len
     * counts decoded body bytes in both modes. Empty at GW_HTTP_HEAD. */
    const char *body;
    size_t body_len;
} gw_http_request;

/* All fields are private; the struct is public so it can be embedded. */
typedef struct gw_http_parser {
    llhttp_t ll;
    llhttp_settings_t settings;
    gw_http_limits limits;
    gw_http_body_fn body_fn;
    void *body_arg;

    char *head; /* capacity limits.max_header_bytes */
    size_t head_len;
    int scan_prev;      /* last head byte scanned, -1 at message start */
    int scan_line;      /* SCAN_* in http_parse.c: where the scan is */
    size_t scan_col;    /* bytes of the current line scanned, CR included */
    int scan_spaces;    /* spaces in the request line so far */
    size_t scan_bytes;  /* raw bytes of the head (or trailers) scanned */
    size_t scan_target; /* raw bytes of the target scanned */
    bool head_overrun;  /* target did not fit in head (then a 431) */
    bool url_done;
    bool version_done; /* llhttp completed the version (any it knows) */
    char version[3];   /* the first bytes of the version ("1.1") */
    size_t version_len;
    bool head_done;       /* llhttp is past the head (paused there once) */
    bool head_checked;    /* the head passed check_head(); req filled in */
    bool stop_at_head;    /* feed returns GW_HTTP_HEAD after each head */
    bool in_field;        /* a header name is being read */
    size_t field_len;     /* bytes of that name so far */
    bool in_value;        /* a header value is being read */
    size_t host_idx;      /* index + 1 of the Host header, 0 = none yet */
    bool has_cl;          /* a Content-Length header was read */
    bool has_te;          /* a Transfer-Encoding header was read */
    size_t ext_value_len; /* bytes of the chunk extension value so far */
    bool trailers;        /* past the last chunk: header lines are trailers */

    gw_http_header *hdrs;
    size_t hdrs_cap;
    char *body;
    size_t body_cap;

    gw_http_request req;
    bool started;  /* some byte of the current request was fed */
    bool complete; /* req is ready; gw_http_parser_next() not called yet */
    int err;       /* 0, or the negative errno feed keeps returning */
    int status;    /* HTTP status to answer with when err != 0 */
    const char *message;
} gw_http_parser;

/*
 * Initialises p with a copy of *limits (NULL = defaults). When body_fn is
 * not NULL, body bytes go to it instead of being accumulated.
 * Allocates the header buffer; the caller owns p and must release it with
 * gw_http_parser_free(). Returns 0 or -ENOMEM (p then needs no free).
 */
int gw_http_parser_init(gw_http_parser *p, const gw_http_limits *limits,
                        gw_http_body_fn body_fn, void *body_arg);

/*
 * With on, every later request makes feed return GW_HTTP_HEAD once its
 * head is complete and checked, before any body byte is consumed (see
 * gw_http_parser_feed()). Default off: feed then returns only 0 for a
 * complete request. Stays set across gw_http_parser_next() and
 * gw_http_parser_reset(); changing it in the middle of a request takes
 * effect at the next head.
 */
void gw_http_parser_stop_at_head(gw_http_parser *p, bool on);

/* Frees what gw_http_parser_init() and feeding allocated. p may be reused
 * only after another gw_http_parser_init(). */
void gw_http_parser_free(gw_http_parser *p);

/*
 * Parses up to len bytes of data and sets *consumed to the number used.
 * Returns:
 *   0         one request is complete (gw_http_parser_request()); bytes
 *             after *consumed belong to the next request
 *   GW_HTTP_HEAD  (stop-at-head mode only) the head is complete and
 *             checked (gw_http_parser_head()); *consumed ends just past
 *             it, no body byte is used. Feed on to read the body: the
 *             next call returns 0 when the request is complete, -EAGAIN
 *             while it is not. A request without a body completes on the
 *             next call even with len 0 (or release it at once with
 *             gw_http_parser_next()).
 *   -EAGAIN   every byte was used and the request is not complete yet
 *   -EPROTO   the request is rejected: see gw_http_parser_status() and
 *             gw_http_parser_message(); answer, then close
 *   -ENOMEM   out of memory (status 500)
 *   -EBUSY    a complete request has not been released with
 *             gw_http_parser_next() yet
 *   -EINVAL   gw_http_parser_next() was called before the request was
 *             complete (status 0: nothing to answer, close)
 *   <0        a negative errno returned by the body callback (status 500)
 * After a rejection every further call returns the same error, and
 * *consumed says nothing (the connection is closed). len may be 0 (data
 * may then be NULL).
 */
int gw_http_parser_feed(gw_http_parser *p, const char *data, size_t len,
                        size_t *consumed);

/* The complete request after feed returned 0, else NULL (also after a
 * rejection). Owned by p. */
const gw_http_request *gw_http_parser_request(const gw_http_parser *p);

/*
 * The request from the moment its head was checked (feed returned
 * GW_HTTP_HEAD, or 0) until gw_http_parser_next(): method, target and its
 * parts, version, headers, framing and expect_continue are final, the body
 * fields grow as the body is read. Still available after a rejection of
 * the body (for the access log); NULL before the head was checked or when
 * the head was rejected. Owned by p.
 */
const gw_http_request *gw_http_parser_head(const gw_http_parser *p);

/*
 * Releases the current request (its pointers become invalid) and readies
 * the parser for the next one on the same connection. Misuse: called
 * before the request is complete (its head or body not fully read; a
 * request without a body counts as complete once its head was checked),
 * it leaves the parser dead: feed returns -EINVAL from then on, so the
 * bytes of an unread body are never parsed as a next request.
 */
void gw_http_parser_next(gw_http_parser *p);

/* Like gw_http_parser_next(), and also clears a rejection. */
void gw_http_parser_reset(gw_http_parser *p);

/* True once any byte of the current request has been fed: tells a header
 * timeout that must answer 408 from an idle connection to close silently. */
bool gw_http_parser_started(const gw_http_parser *p);

/* The HTTP status for the rejection (0 when none) and a short static
 * message such as "request target too long". */
int gw_http_parser_status(const gw_http_parser *p);
const char *gw_http_parser_message(const gw_http_parser *p);

/* True when the request has a body: a Content-Length over 0, or chunked. */
bool gw_http_request_has_body(const gw_http_request *r);

/* The first header named name (ASCII case-insensitive), or NULL. */
const gw_http_header *gw_http_request_header(const gw_http_request *req,
                                             const char *name);

#endif /* GW_HTTP_PARSE_H */
