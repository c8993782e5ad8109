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
 * Every buffer has a hard cap taken from gw_http_limits. Rejections carry
 * the HTTP status to answer with (400, 413, 414, 431, 501, 505) and a short
 * message; after any rejection the connection must be closed.
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

typedef struct gw_http_limits {
    /* Request line plus header section, in raw bytes; 0 = default. */
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
    int version_major;
    int version_minor;
    const gw_http_header *headers;
    size_t nheaders;
    bool has_content_length;
    uint64_t content_length;
    bool chunked;
    bool keep_alive; /* llhttp_should_keep_alive() at message end */
    /* The body when no body callback is set (NULL if empty); body_len
     * counts decoded body bytes in both modes. */
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
    size_t head_est;   /* lower bound of raw head bytes seen so far */
    size_t head_raw;   /* exact raw head bytes consumed so far */
    int scan_prev;     /* last head byte scanned, -1 at message start */
    bool head_overrun; /* target did not fit in head (431 unless 414) */
    bool url_done;
    bool head_done;
    bool in_field; /* a header name is being read */
    bool trailers; /* past the last chunk: header lines are trailers */
    size_t trailer_bytes;
    const char *exec_base; /* start of the slice given to llhttp_execute */
    const char *value_end; /* end of the last header value piece */

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

/* Frees what gw_http_parser_init() and feeding allocated. p may be reused
 * only after another gw_http_parser_init(). */
void gw_http_parser_free(gw_http_parser *p);

/*
 * Parses up to len bytes of data and sets *consumed to the number used.
 * Returns:
 *   0         one request is complete (gw_http_parser_request()); bytes
 *             after *consumed belong to the next request
 *   -EAGAIN   every byte was used and the request is not complete yet
 *   -EPROTO   the request is rejected: see gw_http_parser_status() and
 *             gw_http_parser_message(); answer, then close
 *   -ENOMEM   out of memory (status 500)
 *   -EBUSY    a complete request has not been released with
 *             gw_http_parser_next() yet
 *   <0        a negative errno returned by the body callback (status 500)
 * After a rejection every further call returns the same error.
 */
int gw_http_parser_feed(gw_http_parser *p, const char *data, size_t len,
                        size_t *consumed);

/* The complete request after feed returned 0, else NULL. Owned by p. */
const gw_http_request *gw_http_parser_request(const gw_http_parser *p);

/* Releases the current request (its pointers become invalid) and readies
 * the parser for the next one on the same connection. */
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

/* The first header named name (ASCII case-insensitive), or NULL. */
const gw_http_header *gw_http_request_header(const gw_http_request *req,
                                             const char *name);

#endif /* GW_HTTP_PARSE_H */
