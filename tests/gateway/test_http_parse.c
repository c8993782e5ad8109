/*
 * test_http_parse.c — unit tests for gateway/http_parse.c: what a request
 * parses into, incremental and pipelined feeding, chunked bodies, and each
 * rejection with its HTTP status.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_parse.h"

static int setup(void **state)
{
    gw_http_parser *p = malloc(sizeof(*p));

    if (p == NULL || gw_http_parser_init(p, NULL, NULL, NULL) != 0) {
        free(p);
        return -1;
    }
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    gw_http_parser_free(*state);
    free(*state);
    return 0;
}

/* Feeds a whole string at once. */
static int feed_str(gw_http_parser *p, const char *s, size_t *used)
{
    return gw_http_parser_feed(p, s, strlen(s), used);
}

/* Feeds one byte at a time until the parser stops asking for more. */
static int feed_bytewise(gw_http_parser *p, const char *s, size_t *used)
{
    size_t len = strlen(s);
    int rc = -EAGAIN;

    *used = 0;
    for (size_t i = 0; i < len && rc == -EAGAIN; i++) {
        size_t n = 0;

        rc = gw_http_parser_feed(p, s + i, 1, &n);
        *used += n;
    }
    return rc;
}

static void assert_token(const char *s, size_t len, const char *want)
{
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
}

static void assert_header(const gw_http_request *r, const char *name,
                          const char *want)
{
    const gw_http_header *h = gw_http_request_header(r, name);

    assert_non_null(h);
    assert_token(h->value, h->value_len, want);
}

/* Expects the request to be rejected with status. */
static void assert_rejected(gw_http_parser *p, int rc, int status)
{
    size_t used;

    assert_int_equal(rc, -EPROTO);
    assert_int_equal(gw_http_parser_status(p), status);
    assert_non_null(gw_http_parser_message(p));
    assert_null(gw_http_parser_request(p));
    /* The parser stays dead. */
    assert_int_equal(feed_str(p, "GET / HTTP/1.1\r\n", &used), -EPROTO);
}

/* Requests built around one line or one value under test. */
#define GET_H(lines) "GET / HTTP/1.1\r\nHost: a\r\n" lines "\r\n"
#define POST_TE(te, body)                                                      \
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " te "\r\n\r\n" body
#define POST_CL(cl)                                                            \
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " cl "\r\n\r\n"
#define CHUNKED(body) POST_TE("chunked", body)

static void test_simple_get(void **state)
{
    gw_http_parser *p = *state;
    const char *req = "GET /api/products/42?user=7 HTTP/1.1\r\n"
                      "Host: example.test\r\n"
                      "X-Request-Id: abc \r\n"
                      "Accept: */*\r\n"
                      "\r\n";
    size_t used;
    const gw_http_request *r;

    assert_false(gw_http_parser_started(p));
    assert_int_equal(feed_str(p, req, &used), 0);
    assert_int_equal(used, strlen(req));
    r = gw_http_parser_request(p);
    assert_non_null(r);
    assert_string_equal(r->method, "GET");
    assert_token(r->target, r->target_len, "/api/products/42?user=7");
    assert_int_equal(r->version_major, 1);
    assert_int_equal(r->version_minor, 1);
    assert_int_equal(r->nheaders, 3);
    assert_token(r->headers[0].name, r->headers[0].name_len, "Host");
    assert_token(r->headers[2].name, r->headers[2].name_len, "Accept");
    assert_header(r, "host", "example.test");
    assert_header(r, "x-request-id", "abc");
    assert_null(gw_http_request_header(r, "cookie"));
    assert_true(r->keep_alive);
    assert_false(r->has_content_length);
    assert_false(r->chunked);
    assert_int_equal(r->body_len, 0);
    assert_null(r->body);
    assert_int_equal(gw_http_parser_status(p), 0);
}

static void test_connection_close_and_http10(void **state)
{
    gw_http_parser *p = *state;
    size_t used;
    const gw_http_request *r;

    assert_int_equal(feed_str(p,
                              "GET / HTTP/1.1\r\nHost: a\r\n"
                              "Connection: close\r\n\r\n",
                              &used),
                     0);
    assert_false(gw_http_parser_request(p)->keep_alive);
    gw_http_parser_reset(p);

    /* HTTP/1.0 needs no Host and is not kept alive by default. */
    assert_int_equal(feed_str(p, "HEAD /x HTTP/1.0\r\n\r\n", &used), 0);
    r = gw_http_parser_request(p);
    assert_string_equal(r->method, "HEAD");
    assert_int_equal(r->version_minor, 0);
    assert_false(r->keep_alive);
}

static void test_split_into_single_bytes(void **state)
{
    gw_http_parser *p = *state;
    const char *req = "POST /orders HTTP/1.1\r\n"
                      "Host: a\r\n"
                      "Content-Type: application/json\r\n"
                      "Content-Length: 11\r\n"
                      "\r\n"
                      "{\"n\": 1234}";
    size_t used;
    const gw_http_request *r;

    assert_int_equal(feed_bytewise(p, req, &used), 0);
    assert_int_equal(used, strlen(req));
    assert_true(gw_http_parser_started(p));
    r = gw_http_parser_request(p);
    assert_string_equal(r->method, "POST");
    assert_token(r->target, r->target_len, "/orders");
    assert_header(r, "content-type", "application/json");
    assert_true(r->has_content_length);
    assert_int_equal(r->content_length, 11);
    assert_int_equal(r->body_len, 11);
    assert_memory_equal(r->body, "{\"n\": 1234}", 11);
}

static void test_pipelined(void **state)
{
    gw_http_parser *p = *state;
    const char *first = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *both = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /two HTTP/1.1\r\nHost: b\r\n"
                       "Content-Length: 3\r\n\r\nxyz";
    size_t used, rest;
    const gw_http_request *r;

    assert_int_equal(feed_str(p, both, &used), 0);
    assert_int_equal(used, strlen(first));
    r = gw_http_parser_request(p);
    assert_token(r->target, r->target_len, "/one");
    assert_true(r->keep_alive);

    /* The first request must be released before the next is parsed. */
    assert_int_equal(feed_str(p, both + used, &rest), -EBUSY);
    assert_int_equal(rest, 0);
    gw_http_parser_next(p);
    assert_false(gw_http_parser_started(p));

    assert_int_equal(feed_str(p, both + used, &rest), 0);
    assert_int_equal(used + rest, strlen(both));
    r = gw_http_parser_request(p);
    assert_string_equal(r->method, "POST");
    assert_token(r->target, r->target_len, "/two");
    assert_header(r, "host", "b");
    assert_int_equal(r->body_len, 3);
    assert_memory_equal(r->body, "xyz", 3);
}

static void test_upgrade_offer_ignored(void **state)
{
    gw_http_parser *p = *state;
    const char *both = "GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                       "Connection: Upgrade, HTTP2-Settings\r\n"
                       "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
                       "GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used, rest;

    assert_int_equal(feed_str(p, both, &used), 0);
    assert_header(gw_http_parser_request(p), "upgrade", "h2c");
    gw_http_parser_next(p);
    assert_int_equal(feed_str(p, both + used, &rest), 0);
    assert_token(gw_http_parser_request(p)->target,
                 gw_http_parser_request(p)->target_len, "/b");
}

static const char chunked_req[] = "POST /c HTTP/1.1\r\n"
                                  "Host: a\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                  "\r\n"
                                  "5\r\nhello\r\n"
                                  "6;ext=1\r\n world\r\n"
                                  "0\r\n"
                                  "Trailer-X: t\r\n"
                                  "\r\n";

static void check_chunked(gw_http_parser *p, int rc, size_t used)
{
    const gw_http_request *r;

    assert_int_equal(rc, 0);
    assert_int_equal(used, strlen(chunked_req));
    r = gw_http_parser_request(p);
    assert_true(r->chunked);
    assert_false(r->has_content_length);
    assert_int_equal(r->body_len, 11);
    assert_memory_equal(r->body, "hello world", 11);
    /* Trailers are not merged into the headers. */
    assert_int_equal(r->nheaders, 2);
}

static void test_chunked_body(void **state)
{
    size_t used;
    int rc = feed_str(*state, chunked_req, &used);

    check_chunked(*state, rc, used);
}

static void test_chunked_body_single_bytes(void **state)
{
    size_t used;
    int rc = feed_bytewise(*state, chunked_req, &used);

    check_chunked(*state, rc, used);
}

struct sink {
    char buf[64];
    size_t len;
    int calls;
};

static int sink_body(void *arg, const char *data, size_t len)
{
    struct sink *s = arg;

    if (len > sizeof(s->buf) - s->len)
        return -ENOSPC;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->calls++;
    return 0;
}

static void test_body_callback(void **state)
{
    gw_http_parser p;
    struct sink s = {.len = 0};
    size_t used;
    const gw_http_request *r;

    (void)state;
    assert_int_equal(gw_http_parser_init(&p, NULL, sink_body, &s), 0);
    assert_int_equal(feed_bytewise(&p, chunked_req, &used), 0);
    r = gw_http_parser_request(&p);
    assert_int_equal(r->body_len, 11);
    assert_null(r->body);
    assert_int_equal(s.len, 11);
    assert_memory_equal(s.buf, "hello world", 11);
    assert_true(s.calls >= 2);
    gw_http_parser_free(&p);
}

static void test_body_callback_error(void **state)
{
    gw_http_parser p;
    struct sink s = {.len = 60};
    size_t used;

    (void)state;
    assert_int_equal(gw_http_parser_init(&p, NULL, sink_body, &s), 0);
    assert_int_equal(feed_str(&p, chunked_req, &used), -ENOSPC);
    assert_int_equal(gw_http_parser_status(&p), 500);
    gw_http_parser_free(&p);
}

static void test_malformed(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    assert_rejected(p, feed_str(p, "GET / HTTP/1.1\r\nX : b\r\n\r\n", &used),
                    400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, "G@T / HTTP/1.1\r\n\r\n", &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, "GET /a b HTTP/1.1\r\n\r\n", &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p,
                    feed_str(p,
                             "POST / HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                             &used),
                    400);
    gw_http_parser_reset(p);
    assert_rejected(
        p, feed_str(p, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &used),
        400);
}

/* "GET /xxxx... HTTP/1.1\r\nHost: a\r\n\r\n" with a target of n bytes. */
static char *request_with_target(size_t n)
{
    char *s = malloc(n + 64);

    assert_non_null(s);
    memcpy(s, "GET /", 5);
    memset(s + 5, 'x', n - 1);
    static const char tail[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
    memcpy(s + 4 + n, tail, sizeof(tail));
    return s;
}

static void test_target_too_long(void **state)
{
    gw_http_parser *p = *state;
    char *ok = request_with_target(GW_HTTP_MAX_TARGET_BYTES);
    char *big = request_with_target(GW_HTTP_MAX_TARGET_BYTES + 1);
    gw_http_limits small = {.max_header_bytes = 1024};
    gw_http_parser q;
    size_t used;

    assert_int_equal(feed_str(p, ok, &used), 0);
    assert_int_equal(gw_http_parser_request(p)->target_len,
                     GW_HTTP_MAX_TARGET_BYTES);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, big, &used), 414);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_bytewise(p, big, &used), 414);

    /* 414 wins over 431 even when the target overruns the header limit;
     * a target under 8 KiB that overruns it is a 431. */
    assert_int_equal(gw_http_parser_init(&q, &small, NULL, NULL), 0);
    assert_rejected(&q, feed_bytewise(&q, big, &used), 414);
    gw_http_parser_reset(&q);
    assert_rejected(&q, feed_str(&q, ok, &used), 431);
    gw_http_parser_free(&q);
    free(ok);
    free(big);
}

static void test_headers_too_large(void **state)
{
    /* Request line (16) + "Host: a\r\n" (9) + "X: " + value + CRLF (5 + n)
     * + final CRLF (2): with n = 68 the head is exactly 100 bytes. */
    gw_http_limits lim = {.max_header_bytes = 100};
    char value[80], req[256];
    gw_http_parser q;
    size_t used;

    (void)state;
    assert_int_equal(gw_http_parser_init(&q, &lim, NULL, NULL), 0);
    memset(value, 'v', sizeof(value));
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: %.*s\r\n\r\n",
             68, value);
    assert_int_equal(strlen(req), 100);
    assert_int_equal(feed_str(&q, req, &used), 0);
    gw_http_parser_reset(&q);
    assert_int_equal(feed_bytewise(&q, req, &used), 0);
    gw_http_parser_reset(&q);

    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: a\r\nX: %.*s\r\n\r\n",
             69, value);
    assert_rejected(&q, feed_str(&q, req, &used), 431);
    gw_http_parser_reset(&q);
    assert_rejected(&q, feed_bytewise(&q, req, &used), 431);
    gw_http_parser_reset(&q);

    /* Headers without optional whitespace, exactly at the limit. */
    assert_int_equal(feed_str(&q,
                              "GET / HTTP/1.1\r\nHost:a\r\n"
                              "A:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\nF:6\r\n"
                              "G:7\r\nH:8\r\nI:9\r\nJ:0\r\nK:1\r\nL:2\r\n"
                              "M:3\r\nN:4\r\nQ:\r\n\r\n",
                              &used),
                     0);
    assert_int_equal(used, 100);
    gw_http_parser_reset(&q);

    /* Many small headers, no terminator yet: rejected as they arrive. */
    for (int i = 0; i < 40; i++) {
        int rc = feed_str(&q, i ? "A: b\r\n" : "GET / HTTP/1.1\r\n", &used);

        if (rc != -EAGAIN) {
            assert_rejected(&q, rc, 431);
            break;
        }
        assert_true(i < 30);
    }
    gw_http_parser_free(&q);
}

/* Trailers are checked, not kept, and have a limit of their own. */
static void test_trailers_too_large(void **state)
{
    gw_http_limits lim = {.max_header_bytes = 80};
    char req[256], big[64];
    gw_http_parser q;
    size_t used;

    (void)state;
    memset(big, 'v', sizeof big);
    assert_int_equal(gw_http_parser_init(&q, &lim, NULL, NULL), 0);
    /* "T: " + 40 + CRLF, twice, + CRLF: 92 bytes of trailer section. */
    snprintf(req, sizeof req, CHUNKED("0\r\nT: %.40s\r\nU: %.40s\r\n\r\n"), big,
             big);
    assert_rejected(&q, feed_str(&q, req, &used), 431);
    gw_http_parser_reset(&q);
    assert_rejected(&q, feed_bytewise(&q, req, &used), 431);
    gw_http_parser_reset(&q);
    snprintf(req, sizeof req, CHUNKED("0\r\nT: %.40s\r\n\r\n"), big);
    assert_int_equal(feed_str(&q, req, &used), 0);
    assert_int_equal(gw_http_parser_request(&q)->nheaders, 2);
    gw_http_parser_free(&q);
}

static void test_body_too_large(void **state)
{
    gw_http_limits lim = {.max_body_bytes = 10};
    gw_http_parser q;
    size_t used;

    (void)state;
    assert_int_equal(gw_http_parser_init(&q, &lim, NULL, NULL), 0);
    /* Content-Length over the cap: rejected before any body byte. */
    assert_rejected(&q,
                    feed_str(&q,
                             "POST / HTTP/1.1\r\nHost: a\r\n"
                             "Content-Length: 11\r\n\r\n",
                             &used),
                    413);
    gw_http_parser_reset(&q);
    assert_int_equal(feed_str(&q,
                              "POST / HTTP/1.1\r\nHost: a\r\n"
                              "Content-Length: 10\r\n\r\n0123456789",
                              &used),
                     0);
    gw_http_parser_reset(&q);
    assert_rejected(&q,
                    feed_str(&q,
                             "POST / HTTP/1.1\r\nHost: a\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n"
                             "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
                             &used),
                    413);
    gw_http_parser_free(&q);
}

static void test_transfer_encoding_not_chunked(void **state)
{
    gw_http_parser *p = *state;
    /* Contract of 2026-11-30: 501 only for another coding before a final
     * chunked; every other Transfer-Encoding but chunked is a 400. */
    static const struct {
        const char *coding;
        int status;
    } codings[] = {
        {"gzip", 400},     {"gzip, chunked", 501}, {"chunked, chunked", 400},
        {"identity", 400}, {"chunked;x", 400},
    };
    char req[256];
    size_t used;

    for (size_t i = 0; i < sizeof(codings) / sizeof(codings[0]); i++) {
        snprintf(req, sizeof(req),
                 "POST / HTTP/1.1\r\nHost: a\r\n"
                 "Transfer-Encoding: %s\r\n\r\n0\r\n\r\n",
                 codings[i].coding);
        assert_rejected(p, feed_str(p, req, &used), codings[i].status);
        gw_http_parser_reset(p);
    }
    /* Two Transfer-Encoding lines are "chunked, chunked". */
    assert_rejected(p,
                    feed_str(p,
                             "POST / HTTP/1.1\r\nHost: a\r\n"
                             "Transfer-Encoding: chunked\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                             &used),
                    400);
    gw_http_parser_reset(p);
    /* Coding names are case-insensitive. */
    assert_int_equal(feed_str(p,
                              "POST / HTTP/1.1\r\nHost: a\r\n"
                              "Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
                              &used),
                     0);
}

static void test_obsolete_line_folding(void **state)
{
    gw_http_parser *p = *state;
    const char *fold = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n";
    const char *tab = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n";
    const char *trailer = "POST / HTTP/1.1\r\nHost: a\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n"
                          "0\r\nT: b\r\n c\r\n\r\n";
    size_t used;

    assert_rejected(p, feed_str(p, fold, &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_bytewise(p, fold, &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, tab, &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, trailer, &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_bytewise(p, trailer, &used), 400);
}

static void test_missing_host(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    assert_rejected(
        p, feed_str(p, "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", &used), 400);
    assert_string_equal(gw_http_parser_message(p), "missing Host header");
}

static void test_bare_lf(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    /* Strict llhttp 8.1 accepts a bare LF after the request line. */
    assert_rejected(p, feed_str(p, "GET / HTTP/1.1\nHost: a\r\n\r\n", &used),
                    400);
    assert_string_equal(gw_http_parser_message(p), "bare LF line ending");
    gw_http_parser_reset(p);
    assert_rejected(
        p, feed_bytewise(p, "GET / HTTP/1.1\nHost: a\r\n\r\n", &used), 400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, "GET / HTTP/1.1\r\nHost: a\n\r\n", &used),
                    400);
    gw_http_parser_reset(p);
    assert_rejected(p, feed_str(p, "GET / HTTP/1.1\r\nHost: a\r\n\n", &used),
                    400);
}

static void test_version_not_supported(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    assert_rejected(p, feed_str(p, "GET / HTTP/2.0\r\nHost: a\r\n\r\n", &used),
                    505);
}

static void test_connect_refused(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    assert_rejected(p,
                    feed_str(p,
                             "CONNECT example.test:443 HTTP/1.1\r\n"
                             "Host: example.test:443\r\n\r\n",
                             &used),
                    501);
}

/* --- the contract's rules, one case each, fed in every split */

/*
 * Feeds s: the first `first` bytes (0 = no special first piece), then
 * pieces of `step` bytes (0 = the rest at once). Goes on after
 * GW_HTTP_HEAD (with an empty feed when every byte is used) until the
 * request is complete, rejected, or every byte is used. *used counts the
 * bytes consumed.
 */
static int feed_pieces(gw_http_parser *p, const char *s, size_t len,
                       size_t first, size_t step, size_t *used)
{
    size_t off = 0;
    int rc;

    do {
        size_t n = len - off, got;

        if (off == 0 && first > 0 && first < n)
            n = first;
        else if (step > 0 && step < n)
            n = step;
        rc = gw_http_parser_feed(p, s + off, n, &got);
        assert_true(got <= n);
        if (rc == -EAGAIN)
            assert_int_equal(got, n);
        off += got;
    } while ((rc == -EAGAIN && off < len) || rc == GW_HTTP_HEAD);
    *used = off;
    return rc;
}

struct reject_case {
    const char *req;
    int status;
    const char *message; /* NULL: any */
};

static const struct reject_case reject_cases[] = {
    /* Transfer-Encoding: exactly chunked, else 400; 501 for <x>, chunked */
    {POST_TE("gzip", "0\r\n\r\n"), 400, "final transfer coding not chunked"},
    {POST_TE("identity", "0\r\n\r\n"), 400,
     "final transfer coding not chunked"},
    {POST_TE("gzip, chunked", "0\r\n\r\n"), 501,
     "transfer coding not implemented"},
    {POST_TE("gzip,chunked", "0\r\n\r\n"), 501, NULL},
    {POST_TE("x-zip , chunked", "0\r\n\r\n"), 501, NULL},
    {POST_TE("gzip;level=\"9,x\", chunked", "0\r\n\r\n"), 501, NULL},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     501, NULL},
    {POST_TE("chunked, gzip", "0\r\n\r\n"), 400, NULL},
    {POST_TE("chunked,", "0\r\n\r\n"), 400, NULL},
    {POST_TE(", chunked", "0\r\n\r\n"), 400, "empty Transfer-Encoding element"},
    {POST_TE("gzip,,chunked", "0\r\n\r\n"), 400,
     "empty Transfer-Encoding element"},
    {POST_TE("gzip, ,chunked", "0\r\n\r\n"), 400,
     "empty Transfer-Encoding element"},
    {POST_TE("chunked, chunked", "0\r\n\r\n"), 400, NULL},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, NULL},
    {POST_TE("", "0\r\n\r\n"), 400, "empty Transfer-Encoding"},
    {POST_TE("chunked;x", "0\r\n\r\n"), 400, "invalid Transfer-Encoding"},
    {POST_TE("chunked;x=1", "0\r\n\r\n"), 400, "invalid Transfer-Encoding"},
    {POST_TE("gzip;, chunked", "0\r\n\r\n"), 400, "invalid Transfer-Encoding"},
    {POST_TE("gz@ip, chunked", "0\r\n\r\n"), 400, "invalid Transfer-Encoding"},
    {POST_TE("chunked\t", "0\r\n\r\n"), 400, "invalid Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 1\r\n\r\n0\r\n\r\n",
     400, "Content-Length with Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400, "Transfer-Encoding with Content-Length"},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding in HTTP/1.0 request"},

    /* versions: 505 unless 1.0 or 1.1; no version at all is a 400 */
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"},
    {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"},
    {"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"},
    /* Refused at its last digit: the LF after it is never looked at. */
    {"GET / HTTP/1.2\nHost: a\r\n\r\n", 505, "HTTP version not supported"},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP version not supported"},
    {"PRI * HTTP/1.1\r\n\r\n", 400, "malformed request line"},
    {"GET /\r\n", 400, "missing HTTP version"},
    {"GET /\r\n\r\n", 400, "missing HTTP version"},
    {"GET /\r\nHost: a\r\n\r\n", 400, "missing HTTP version"},
    {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "malformed request line"},
    {"GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400, "malformed request line"},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", 400, NULL},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "malformed request line"},
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request line"},
    {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed request line"},

    /* methods */
    {"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501,
     "CONNECT not supported"},
    {"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "TRACE not supported"},
    {"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "unknown method"},
    {"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "unknown method"},

    /* Host */
    {"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, "missing Host header"},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400,
     "several Host headers"},
    {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400,
     "several Host headers"},
    {"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "empty Host header"},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400, "empty Host header"},
    {"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400, "empty Host header"},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "userinfo in Host header"},
    {"GET / HTTP/1.1\r\nHost: u:p@a:80\r\n\r\n", 400,
     "userinfo in Host header"},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host header"},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host header"},
    {"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400, "invalid Host header"},
    {"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400, "invalid Host header"},

    /* header syntax */
    {GET_H("X : b\r\n"), 400, "invalid header name"},
    {GET_H("X\t: b\r\n"), 400, "invalid header name"},
    {GET_H("X@Y: b\r\n"), 400, "invalid header name"},
    {GET_H("X(Y: b\r\n"), 400, "invalid header name"},
    {GET_H("X\x80Y: b\r\n"), 400, "invalid header name"},
    {GET_H(": b\r\n"), 400, "empty header name"},
    {GET_H("X: a\x01z\r\n"), 400, "invalid character in header value"},
    {GET_H("X: a\x1bz\r\n"), 400, "invalid character in header value"},
    {GET_H("X: a\x7fz\r\n"), 400, "invalid character in header value"},
    {GET_H("X: b\r\n c\r\n"), 400, "obsolete line folding"},
    {GET_H("X: b\r\n\tc\r\n"), 400, "obsolete line folding"},
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "obsolete line folding"},
    {GET_H("X: a\rb\r\n"), 400, "bare CR"},
    {GET_H("X: a\r\r\n"), 400, "bare CR"},
    {"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "bare CR"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400, "bare CR"},
    {"GET / HTTP/1.1\r\nHost\r: a\r\n\r\n", 400, "invalid header name"},
    {"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "bare LF line ending"},
    {"GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare LF line ending"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "bare LF line ending"},
    {"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare LF line ending"},

    /* the request target */
    {"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid request target"},
    {"GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid request target"},
    {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid request target"},
    {"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid request target"},
    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "invalid request target"},
    {"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "fragment in request target"},
    {"GET /#b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "fragment in request target"},
    {"GET http://h#f HTTP/1.1\r\nHost: a\r\n\r\n", 400, NULL},
    {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400,
     "asterisk-form target without OPTIONS"},
    {"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 400,
     "asterisk-form target without OPTIONS"},
    {"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid request target"},
    {"GET ftp://h/p HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "request target scheme not http or https"},
    {"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "empty host in request target"},
    {"GET http://u@h/p HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "userinfo in request target"},
    {"GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "userinfo in request target"},
    {"GET http://h:8x/p HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "invalid host in request target"},
    {"GET http://h:80:90/p HTTP/1.1\r\nHost: h\r\n\r\n", 400,
     "invalid host in request target"},

    /* Content-Length */
    {POST_CL("+1") "x", 400, "invalid Content-Length"},
    {POST_CL("-1") "x", 400, "invalid Content-Length"},
    {POST_CL("1 1") "x", 400, "invalid Content-Length"},
    {POST_CL("1,1") "x", 400, "invalid Content-Length"},
    {POST_CL("1, 1") "x", 400, "invalid Content-Length"},
    {POST_CL("0x1") "x", 400, "invalid Content-Length"},
    {POST_CL("") "x", 400, "invalid Content-Length"},
    {POST_CL("1\r\nContent-Length: 2") "x", 400,
     "several Content-Length headers"},
    /* Equal values too: the strict reading RFC 9110 8.6 allows. */
    {POST_CL("1\r\nContent-Length: 1") "x", 400,
     "several Content-Length headers"},
    {POST_CL("1048577"), 413, "request body too large"},
    {POST_CL("18446744073709551615"), 413, "request body too large"},
    {POST_CL("18446744073709551616"), 413, "request body too large"},
    {POST_CL("99999999999999999999999"), 413, "request body too large"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\n",
     413, "request body too large"},

    /* chunk sizes and extensions off the grammar */
    {CHUNKED("5 \r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("5\t\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("0x5\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("+5\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("-5\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("g\r\n"), 400, "invalid chunk size"},
    {CHUNKED("\r\n"), 400, "invalid chunk size"},
    {CHUNKED("5\nhello\r\n0\r\n\r\n"), 400, "invalid chunk size"},
    {CHUNKED("5\rhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;a=b c\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;@\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;a=\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk extension"},
    {CHUNKED("5;a;b=\r\nhello\r\n0\r\n\r\n"), 400, "invalid chunk extension"},
    {CHUNKED("0;a=\r\n\r\n"), 400, "invalid chunk extension"},
    {CHUNKED("5;a=b\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5\r\nhelloX\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5\r\nhello\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("fffffffffffffffff\r\n"), 413, "request body too large"},
    /* Valid by RFC 9112 7.1.1, refused by llhttp 8.1 (see http_parse.c). */
    {CHUNKED("5;a=b;c\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5; a=b\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    {CHUNKED("5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n"), 400, NULL},
    /* trailers */
    {CHUNKED("0\r\n\n"), 400, "bare LF line ending"},
    {CHUNKED("0\r\nT: x\r\n\n"), 400, "bare LF line ending"},
    {CHUNKED("0\r\nT: x\n\r\n"), 400, "bare LF line ending"},
    {CHUNKED("0\r\n\rX"), 400, "bare CR"},
    {CHUNKED("0\r\nT: x\rY\r\n\r\n"), 400, "bare CR"},
    {CHUNKED("0\r\nT : x\r\n\r\n"), 400, "invalid trailer field"},
    {CHUNKED("0\r\nT: \x01\r\n\r\n"), 400, "invalid trailer field"},
    {CHUNKED("0\r\n: x\r\n\r\n"), 400, "empty header name"},
    {CHUNKED("0\r\nT: b\r\n c\r\n\r\n"), 400, "obsolete line folding"},
    {CHUNKED("0\r\n T: b\r\n\r\n"), 400, "obsolete line folding"},

    /* Expect */
    {GET_H("Expect: foo\r\n"), 417, "expectation failed"},
    {GET_H("Expect: 100-continue, foo\r\n"), 417, "expectation failed"},
    {GET_H("Expect: 100-continue=1\r\n"), 417, "expectation failed"},
    {GET_H("Expect: 100-continue\r\nExpect: 200-ok\r\n"), 417,
     "expectation failed"},
    {"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n", 417, "expectation failed"},
    /* A too large body is refused at the head, before any 100 Continue. */
    {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
     "Content-Length: 2000000\r\n\r\n",
     413, "request body too large"},
};

/* s with CR, LF and bytes outside visible ASCII escaped, for messages. */
static const char *escaped(const char *s)
{
    static char out[512];
    size_t n = 0;

    for (; *s != '\0' && n + 5 < sizeof out; s++) {
        unsigned char c = (unsigned char)*s;

        if (c >= 0x20 && c < 0x7f)
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, sizeof out - n, "\\x%02x", c);
    }
    out[n] = '\0';
    return out;
}

/* Checks one way of feeding a rejected case. */
static void check_rejected_as(gw_http_parser *p, const struct reject_case *c,
                              int rc, const char *how, size_t at)
{
    const char *msg = gw_http_parser_message(p);
    int status = gw_http_parser_status(p);

    if (rc != -EPROTO || status != c->status || msg == NULL ||
        (c->message != NULL && strcmp(msg, c->message) != 0))
        fail_msg("%s at %zu: rc %d status %d (want %d) message \"%s\" "
                 "(want \"%s\") for: %s",
                 how, at, rc, status, c->status, msg ? msg : "(null)",
                 c->message ? c->message : "any", escaped(c->req));
    assert_null(gw_http_parser_request(p));
    gw_http_parser_reset(p);
}

/* Every case whole, byte by byte, and split in two at every point. */
static void run_reject_cases(gw_http_parser *p)
{
    for (size_t i = 0; i < sizeof reject_cases / sizeof reject_cases[0]; i++) {
        const struct reject_case *c = &reject_cases[i];
        size_t len = strlen(c->req), used;

        check_rejected_as(p, c, feed_pieces(p, c->req, len, 0, 0, &used),
                          "whole", 0);
        check_rejected_as(p, c, feed_pieces(p, c->req, len, 0, 1, &used),
                          "byte by byte", 0);
        for (size_t k = 1; k < len; k++)
            check_rejected_as(p, c, feed_pieces(p, c->req, len, k, 0, &used),
                              "split", k);
    }
}

static void test_contract_rejections(void **state)
{
    run_reject_cases(*state);
}

/* The same with stop-at-head on: no GW_HTTP_HEAD for a rejected head. */
static void test_contract_rejections_stop_at_head(void **state)
{
    gw_http_parser_stop_at_head(*state, true);
    run_reject_cases(*state);
}

/* A NUL byte, which a C string cannot carry, in a value and a target. */
static void test_nul_bytes(void **state)
{
    gw_http_parser *p = *state;
    static const char value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    static const char target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used;

    assert_int_equal(gw_http_parser_feed(p, value, sizeof value - 1, &used),
                     -EPROTO);
    assert_int_equal(gw_http_parser_status(p), 400);
    gw_http_parser_reset(p);
    assert_int_equal(gw_http_parser_feed(p, target, sizeof target - 1, &used),
                     -EPROTO);
    assert_int_equal(gw_http_parser_status(p), 400);
}

/*
 * Parses an accepted request whole, byte by byte and split at every
 * point, in the parser's current mode; leaves the whole-fed result in p.
 */
static const gw_http_request *parse_ok(gw_http_parser *p, const char *req)
{
    size_t len = strlen(req), used;

    for (size_t k = 0; k < len; k++) {
        int rc = k == 0 ? feed_pieces(p, req, len, 0, 1, &used)
                        : feed_pieces(p, req, len, k, 0, &used);

        if (rc != 0 || used != len)
            fail_msg("split at %zu: rc %d used %zu of %zu (%s) for: %s", k, rc,
                     used, len,
                     gw_http_parser_message(p) ? gw_http_parser_message(p)
                                               : "-",
                     escaped(req));
        gw_http_parser_reset(p);
    }
    assert_int_equal(feed_pieces(p, req, len, 0, 0, &used), 0);
    assert_int_equal(used, len);
    assert_non_null(gw_http_parser_request(p));
    return gw_http_parser_request(p);
}

static void test_transfer_encoding_accepted(void **state)
{
    gw_http_parser *p = *state;
    static const char *const codings[] = {"chunked",  "Chunked",   "CHUNKED",
                                          "chunked ", "\tchunked", "cHuNkEd"};
    char req[256];

    for (size_t i = 0; i < sizeof codings / sizeof codings[0]; i++) {
        const gw_http_request *r;

        snprintf(req, sizeof req,
                 "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n",
                 codings[i]);
        r = parse_ok(p, req);
        assert_true(r->chunked);
        assert_true(gw_http_request_has_body(r));
        assert_int_equal(r->body_len, 3);
        gw_http_parser_reset(p);
    }
}

static void test_chunk_extensions_accepted(void **state)
{
    const gw_http_request *r =
        parse_ok(*state, CHUNKED("5;a=\"q x\";c;e=\"\"\r\nhello\r\n"
                                 "6;n;m=1\r\n world\r\n0;z=1\r\nT: v\r\n\r\n"));

    assert_int_equal(r->body_len, 11);
    assert_memory_equal(r->body, "hello world", 11);
}

static void test_content_length_accepted(void **state)
{
    gw_http_parser *p = *state;
    const gw_http_request *r;
    size_t used;

    r = parse_ok(p, POST_CL(" 01 ") "x");
    assert_true(r->has_content_length);
    assert_int_equal(r->content_length, 1);
    assert_true(gw_http_request_has_body(r));
    gw_http_parser_reset(p);
    r = parse_ok(p, POST_CL("0"));
    assert_true(r->has_content_length);
    assert_false(gw_http_request_has_body(r));
    gw_http_parser_reset(p);
    /* At the limit: accepted (the body is then still to come). */
    assert_int_equal(feed_str(p, POST_CL("1048576"), &used), -EAGAIN);
    assert_int_equal(gw_http_parser_status(p), 0);
}

static void test_methods_accepted(void **state)
{
    gw_http_parser *p = *state;
    static const char *const methods[] = {
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"};
    char req[128];

    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        snprintf(req, sizeof req, "%s /x HTTP/1.1\r\nHost: a\r\n\r\n",
                 methods[i]);
        assert_string_equal(parse_ok(p, req)->method, methods[i]);
        gw_http_parser_reset(p);
    }
}

static void test_host_accepted(void **state)
{
    gw_http_parser *p = *state;
    static const char *const hosts[] = {"a",     "a:8080",    "127.0.0.1:80",
                                        "[::1]", "[::1]:443", "x-y.z_w",
                                        "a%41b", "a:"};
    char req[128];

    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        const gw_http_request *r;

        snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n",
                 hosts[i]);
        r = parse_ok(p, req);
        assert_token(r->host, r->host_len, hosts[i]);
        gw_http_parser_reset(p);
    }
}

static void assert_target(const gw_http_request *r, gw_http_target_form form,
                          const char *path, const char *query, const char *host)
{
    assert_int_equal(r->target_form, form);
    assert_token(r->path, r->path_len, path);
    assert_non_null(r->query);
    assert_token(r->query, r->query_len, query);
    if (host == NULL) {
        assert_null(r->host);
        assert_int_equal(r->host_len, 0);
    } else {
        assert_token(r->host, r->host_len, host);
    }
}

static void test_target_forms(void **state)
{
    gw_http_parser *p = *state;
    const gw_http_request *r;

    r = parse_ok(p, "GET /api/products/42?user=7&x HTTP/1.1\r\n"
                    "Host: example.test\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/api/products/42", "user=7&x",
                  "example.test");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET /p? HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/p", "", "h");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET /a?b?c/d HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/a", "b?c/d", "h");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET //x/%2F HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "//x/%2F", "", "h");
    gw_http_parser_reset(p);

    /* Absolute-form: routed by its path; its authority wins over Host. */
    r = parse_ok(p, "GET http://Example.test:8080/a/b?q=1 HTTP/1.1\r\n"
                    "Host: other\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ABSOLUTE, "/a/b", "q=1",
                  "Example.test:8080");
    assert_token(r->target, r->target_len, "http://Example.test:8080/a/b?q=1");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ABSOLUTE, "/", "", "h");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ABSOLUTE, "/", "x=1", "h");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET https://[::1]:8443/p HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ABSOLUTE, "/p", "", "[::1]:8443");
    gw_http_parser_reset(p);
    /* HTTP/1.0 needs no Host: the target's authority, or none. */
    r = parse_ok(p, "GET http://h/p HTTP/1.0\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ABSOLUTE, "/p", "", "h");
    gw_http_parser_reset(p);
    r = parse_ok(p, "GET /p HTTP/1.0\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/p", "", NULL);
    gw_http_parser_reset(p);

    r = parse_ok(p, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ASTERISK, "*", "", "h");
    assert_string_equal(r->method, "OPTIONS");
    gw_http_parser_reset(p);
    /* Visible ASCII off RFC 3986 passes (see http_parse.c). */
    r = parse_ok(p, "GET /a|b{c}^ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/a|b{c}^", "", "h");
}

static void test_leading_empty_lines(void **state)
{
    const gw_http_request *r =
        parse_ok(*state, "\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n");

    assert_token(r->path, r->path_len, "/x");
}

static void test_expect_continue(void **state)
{
    gw_http_parser *p = *state;
    const gw_http_request *r;

    r = parse_ok(p, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                    "Content-Length: 2\r\n\r\nab");
    assert_true(r->expect_continue);
    gw_http_parser_reset(p);
    r = parse_ok(p, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_true(r->expect_continue);
    gw_http_parser_reset(p);
    r = parse_ok(p, "POST / HTTP/1.1\r\nHost: a\r\nExpect: , 100-CONTINUE ,\r\n"
                    "Content-Length: 0\r\n\r\n");
    assert_true(r->expect_continue);
    gw_http_parser_reset(p);
    r = parse_ok(p, GET_H(""));
    assert_false(r->expect_continue);
    gw_http_parser_reset(p);
    /* RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored. */
    r = parse_ok(p, "POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
                    "Content-Length: 2\r\n\r\nab");
    assert_false(r->expect_continue);
}

/* --- stop at head */

static void test_stop_at_head_body_not_consumed(void **state)
{
    gw_http_parser *p = *state;
    static const char head[] = "POST /orders?x=1 HTTP/1.1\r\nHost: a\r\n"
                               "Expect: 100-continue\r\n"
                               "Content-Length: 5\r\n\r\n";
    static const char req[] = "POST /orders?x=1 HTTP/1.1\r\nHost: a\r\n"
                              "Expect: 100-continue\r\n"
                              "Content-Length: 5\r\n\r\nhello";
    const gw_http_request *r;
    size_t used, rest;

    gw_http_parser_stop_at_head(p, true);
    assert_null(gw_http_parser_head(p));
    assert_int_equal(feed_str(p, req, &used), GW_HTTP_HEAD);
    assert_int_equal(used, strlen(head));
    assert_null(gw_http_parser_request(p)); /* not complete yet */
    r = gw_http_parser_head(p);
    assert_non_null(r);
    assert_string_equal(r->method, "POST");
    assert_token(r->target, r->target_len, "/orders?x=1");
    assert_target(r, GW_HTTP_TARGET_ORIGIN, "/orders", "x=1", "a");
    assert_int_equal(r->version_minor, 1);
    assert_int_equal(r->nheaders, 3);
    assert_true(r->has_content_length);
    assert_int_equal(r->content_length, 5);
    assert_false(r->chunked);
    assert_true(r->expect_continue);
    assert_true(r->keep_alive);
    assert_true(gw_http_request_has_body(r));
    assert_int_equal(r->body_len, 0);
    assert_null(r->body);

    /* Feeding on reads the body. */
    assert_int_equal(feed_str(p, req + used, &rest), 0);
    assert_int_equal(rest, 5);
    r = gw_http_parser_request(p);
    assert_non_null(r);
    assert_ptr_equal(r, gw_http_parser_head(p));
    assert_int_equal(r->body_len, 5);
    assert_memory_equal(r->body, "hello", 5);
}

/* Byte by byte: GW_HTTP_HEAD comes with the head's last byte, once. */
static void test_stop_at_head_bytewise(void **state)
{
    gw_http_parser *p = *state;
    const char *req = chunked_req;
    size_t len = strlen(req), head_len = strstr(req, "\r\n\r\n") + 4 - req;
    int heads = 0, rc = -EAGAIN;

    gw_http_parser_stop_at_head(p, true);
    for (size_t i = 0; i < len; i++) {
        size_t n;

        rc = gw_http_parser_feed(p, req + i, 1, &n);
        assert_int_equal(n, 1);
        if (rc == GW_HTTP_HEAD) {
            heads++;
            assert_int_equal(i + 1, head_len);
            assert_true(gw_http_parser_head(p)->chunked);
            assert_int_equal(gw_http_parser_head(p)->body_len, 0);
        } else if (i + 1 < len) {
            assert_int_equal(rc, -EAGAIN);
        }
    }
    assert_int_equal(rc, 0);
    assert_int_equal(heads, 1);
    assert_memory_equal(gw_http_parser_request(p)->body, "hello world", 11);
}

static void test_stop_at_head_pipelined(void **state)
{
    gw_http_parser *p = *state;
    const char *all = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /two HTTP/1.1\r\nHost: b\r\n"
                      "Content-Length: 3\r\n\r\nxyz"
                      "POST /three HTTP/1.1\r\nHost: c\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
                      "GET /four HTTP/1.1\r\nHost: d\r\n\r\n";
    size_t len = strlen(all), off = 0, used;

    gw_http_parser_stop_at_head(p, true);
    /* A request without a body: GW_HTTP_HEAD, then 0 using no byte. */
    assert_int_equal(gw_http_parser_feed(p, all, len, &used), GW_HTTP_HEAD);
    off += used;
    assert_false(gw_http_request_has_body(gw_http_parser_head(p)));
    assert_token(gw_http_parser_head(p)->path, gw_http_parser_head(p)->path_len,
                 "/one");
    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used), 0);
    assert_int_equal(used, 0);
    gw_http_parser_next(p);

    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used),
                     GW_HTTP_HEAD);
    off += used;
    assert_token(gw_http_parser_head(p)->path, gw_http_parser_head(p)->path_len,
                 "/two");
    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used), 0);
    assert_int_equal(used, 3);
    off += used;
    assert_memory_equal(gw_http_parser_request(p)->body, "xyz", 3);
    gw_http_parser_next(p);

    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used),
                     GW_HTTP_HEAD);
    off += used;
    assert_true(gw_http_parser_head(p)->chunked);
    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used), 0);
    off += used;
    assert_memory_equal(gw_http_parser_request(p)->body, "hi", 2);
    gw_http_parser_next(p);

    /* The last one is released straight after its head. */
    assert_int_equal(gw_http_parser_feed(p, all + off, len - off, &used),
                     GW_HTTP_HEAD);
    off += used;
    assert_int_equal(off, len);
    assert_token(gw_http_parser_head(p)->path, gw_http_parser_head(p)->path_len,
                 "/four");
    gw_http_parser_next(p);
    assert_null(gw_http_parser_head(p));
    assert_int_equal(
        gw_http_parser_feed(p, "GET / HTTP/1.1\r\nHost: e\r\n\r\n", 27, &used),
        GW_HTTP_HEAD);
}

/* After the head of a bodyless request an empty feed completes it. */
static void test_stop_at_head_empty_feed(void **state)
{
    gw_http_parser *p = *state;
    size_t used;

    gw_http_parser_stop_at_head(p, true);
    assert_int_equal(feed_str(p, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", &used),
                     GW_HTTP_HEAD);
    assert_int_equal(gw_http_parser_feed(p, NULL, 0, &used), 0);
    assert_int_equal(used, 0);
    assert_non_null(gw_http_parser_request(p));
    gw_http_parser_next(p);
    /* With a body still to come it asks for more. */
    assert_int_equal(feed_str(p, POST_CL("2"), &used), GW_HTTP_HEAD);
    assert_int_equal(gw_http_parser_feed(p, NULL, 0, &used), -EAGAIN);
    assert_int_equal(feed_str(p, "a", &used), -EAGAIN);
    assert_int_equal(feed_str(p, "b", &used), 0);
}

/* Misuse: releasing a request whose body was not read. */
static void test_next_before_body_read(void **state)
{
    gw_http_parser *p = *state;
    const char *req = POST_CL("3") "abcGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used;

    gw_http_parser_stop_at_head(p, true);
    assert_int_equal(feed_str(p, req, &used), GW_HTTP_HEAD);
    gw_http_parser_next(p); /* e.g. after a 404, without reading "abc" */
    assert_int_equal(feed_str(p, req + used, &used), -EINVAL);
    assert_int_equal(used, 0);
    assert_int_equal(gw_http_parser_status(p), 0);
    assert_non_null(gw_http_parser_message(p));
    assert_null(gw_http_parser_request(p));
    gw_http_parser_reset(p);

    /* Mid-head, in the default mode, too. */
    gw_http_parser_stop_at_head(p, false);
    assert_int_equal(feed_str(p, "GET / HTTP/1.1\r\n", &used), -EAGAIN);
    gw_http_parser_next(p);
    assert_int_equal(feed_str(p, "Host: a\r\n\r\n", &used), -EINVAL);
}

/* A body rejected after GW_HTTP_HEAD: the head stays readable. */
static void test_stop_at_head_body_rejected(void **state)
{
    gw_http_limits lim = {.max_body_bytes = 4};
    gw_http_parser q;
    size_t used;
    const char *req = CHUNKED("3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");

    (void)state;
    assert_int_equal(gw_http_parser_init(&q, &lim, NULL, NULL), 0);
    gw_http_parser_stop_at_head(&q, true);
    assert_int_equal(feed_str(&q, req, &used), GW_HTTP_HEAD);
    assert_int_equal(feed_str(&q, req + used, &used), -EPROTO);
    assert_int_equal(gw_http_parser_status(&q), 413);
    assert_null(gw_http_parser_request(&q));
    assert_non_null(gw_http_parser_head(&q));
    assert_string_equal(gw_http_parser_head(&q)->method, "POST");
    gw_http_parser_free(&q);
}

/* Default off: no GW_HTTP_HEAD; stop-at-head survives reset and next. */
static void test_stop_at_head_toggle(void **state)
{
    gw_http_parser *p = *state;
    const char *req = POST_CL("2") "ab";
    size_t used;

    assert_int_equal(feed_str(p, req, &used), 0);
    assert_int_equal(used, strlen(req));
    gw_http_parser_next(p);
    gw_http_parser_stop_at_head(p, true);
    gw_http_parser_reset(p);
    assert_int_equal(feed_str(p, req, &used), GW_HTTP_HEAD);
    assert_int_equal(feed_str(p, req + used, &used), 0);
    gw_http_parser_next(p);
    gw_http_parser_stop_at_head(p, false);
    assert_int_equal(feed_str(p, req, &used), 0);
}

/* HTTP/1.0 keep-alive is what it was, at the head and at the end. */
static void test_http10_keep_alive(void **state)
{
    gw_http_parser *p = *state;
    static const struct {
        const char *req;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n", true},
        {"POST / HTTP/1.0\r\nConnection: keep-alive\r\n"
         "Content-Length: 1\r\n\r\nx",
         true},
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
    };
    size_t used;

    for (int stop = 0; stop < 2; stop++) {
        gw_http_parser_stop_at_head(p, stop);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t len = strlen(cases[i].req);
            int rc = gw_http_parser_feed(p, cases[i].req, len, &used);

            if (stop) {
                assert_int_equal(rc, GW_HTTP_HEAD);
                assert_int_equal(gw_http_parser_head(p)->keep_alive,
                                 cases[i].keep_alive);
                rc = gw_http_parser_feed(p, cases[i].req + used, len - used,
                                         &used);
            }
            assert_int_equal(rc, 0);
            assert_int_equal(gw_http_parser_request(p)->keep_alive,
                             cases[i].keep_alive);
            gw_http_parser_reset(p);
        }
    }
}

/* --- split independence under mutation (a small deterministic fuzz) */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: deterministic across platforms. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

struct outcome {
    int rc;
    int status;
    const char *message;
    size_t used;
};

static struct outcome run_feed(gw_http_parser *p, const char *s, size_t len,
                               size_t first, size_t step)
{
    struct outcome o;

    gw_http_parser_reset(p);
    o.rc = feed_pieces(p, s, len, first, step, &o.used);
    o.status = gw_http_parser_status(p);
    o.message = gw_http_parser_message(p);
    return o;
}

static void assert_same_outcome(const struct outcome *a,
                                const struct outcome *b, const char *s,
                                size_t len, const char *how)
{
    char shown[256];
    size_t n = 0;

    /* On a rejection *consumed says nothing: the connection closes. */
    if (a->rc == b->rc && a->status == b->status &&
        (a->rc == -EPROTO || a->used == b->used) &&
        (a->message == b->message ||
         (a->message != NULL && b->message != NULL &&
          strcmp(a->message, b->message) == 0)))
        return;
    for (size_t i = 0; i < len && n + 5 < sizeof shown; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f)
            shown[n++] = (char)c;
        else
            n += (size_t)snprintf(shown + n, sizeof shown - n, "\\x%02x", c);
    }
    shown[n] = '\0';
    fail_msg("%s: rc %d/%d status %d/%d used %zu/%zu message %s/%s for: %s",
             how, a->rc, b->rc, a->status, b->status, a->used, b->used,
             a->message ? a->message : "-", b->message ? b->message : "-",
             shown);
}

/* What every accepted request satisfies, whatever bytes it came from. */
static void assert_accepted_invariants(const gw_http_request *r)
{
    assert_int_equal(r->version_major, 1);
    assert_true(r->version_minor <= 1);
    assert_true(r->method_id != HTTP_CONNECT && r->method_id != HTTP_TRACE);
    for (size_t i = 0; i < r->target_len; i++)
        assert_true(r->target[i] > 0x20 && r->target[i] < 0x7f &&
                    r->target[i] != '#');
    assert_true(r->target_form != GW_HTTP_TARGET_ASTERISK ||
                r->method_id == HTTP_OPTIONS);
    assert_non_null(r->path);
    assert_true(r->path_len > 0);
    assert_non_null(r->query);
    if (r->version_minor == 1) {
        assert_non_null(r->host);
        assert_true(r->host_len > 0);
    }
    assert_null(r->host == NULL ? NULL : memchr(r->host, '@', r->host_len));
    assert_false(r->chunked && r->has_content_length);
    assert_true(r->body_len <= GW_HTTP_DEFAULT_MAX_BODY_BYTES);
}

/*
 * Mutates valid requests (a byte replaced, inserted or removed, from an
 * alphabet of the bytes the grammar cares about) and checks that feeding
 * whole, byte by byte and split at a random point gives the same result,
 * status and message: a rejection never depends on how the bytes
 * arrived; and that what is accepted keeps the contract's invariants.
 * Runs under the sanitizers with the rest.
 */
static void test_mutations_split_independent(void **state)
{
    static const char *const seeds[] = {
        "GET /a/b?c=d HTTP/1.1\r\nHost: h:80\r\nX: v\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
        "Expect: 100-continue\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3;a=b\r\nabc\r\n0\r\nT: v\r\n\r\n",
        "GET http://h:1/p?q HTTP/1.1\r\nHost: h\r\n\r\n",
        "OPTIONS * HTTP/1.0\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: [::1]\r\n"
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    };
    static const char alphabet[] = "\r\n \t:;,=\"#@*/?%0159afzAZ-.\x00\x7f\x80";
    gw_http_parser *p = *state;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    char buf[256];

    for (int iter = 0; iter < 6000; iter++) {
        const char *src = seeds[iter % (sizeof seeds / sizeof seeds[0])];
        size_t len = strlen(src);
        struct outcome whole, bytes, split;
        int mutations = 1 + (int)(rng_next(&seed) % 3);

        memcpy(buf, src, len);
        for (int m = 0; m < mutations; m++) {
            size_t at = rng_next(&seed) % len;
            char c = alphabet[rng_next(&seed) % (sizeof alphabet - 1)];

            switch (rng_next(&seed) % 3) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = c;
                len++;
                break;
            default:
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
                break;
            }
        }
        gw_http_parser_stop_at_head(p, iter % 2);
        whole = run_feed(p, buf, len, 0, 0);
        if (whole.rc == 0)
            assert_accepted_invariants(gw_http_parser_request(p));
        bytes = run_feed(p, buf, len, 0, 1);
        assert_same_outcome(&whole, &bytes, buf, len, "byte by byte");
        split = run_feed(p, buf, len, 1 + rng_next(&seed) % (len - 1), 0);
        assert_same_outcome(&whole, &split, buf, len, "split");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_simple_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_close_and_http10, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_split_into_single_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_offer_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_single_bytes, setup,
                                        teardown),
        cmocka_unit_test(test_body_callback),
        cmocka_unit_test(test_body_callback_error),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_too_long, setup, teardown),
        cmocka_unit_test(test_headers_too_large),
        cmocka_unit_test(test_body_too_large),
        cmocka_unit_test(test_trailers_too_large),
        cmocka_unit_test_setup_teardown(test_transfer_encoding_not_chunked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_obsolete_line_folding, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bare_lf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_not_supported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contract_rejections, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_contract_rejections_stop_at_head,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transfer_encoding_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_chunk_extensions_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_content_length_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_methods_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leading_empty_lines, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_at_head_body_not_consumed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_at_head_bytewise, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_at_head_pipelined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_at_head_empty_feed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_next_before_body_read, setup,
                                        teardown),
        cmocka_unit_test(test_stop_at_head_body_rejected),
        cmocka_unit_test_setup_teardown(test_stop_at_head_toggle, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_http10_keep_alive, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_mutations_split_independent, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
