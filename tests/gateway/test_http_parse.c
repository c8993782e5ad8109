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
        cmocka_unit_test_setup_teardown(test_transfer_encoding_not_chunked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_obsolete_line_folding, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bare_lf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_not_supported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
