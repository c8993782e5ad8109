/*
 * test_probe.c - `gateway --probe`: the URL parser (hosts, ports, the
 * target, what it refuses) and gw_probe_get against a loopback listener
 * of the test's own that answers a canned reply (status lines good and
 * bad, a close, silence until the deadline). The end-to-end runs against
 * the mock backend and the gateway are in tests/docker-check.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

/* ------------------------------------------------------------- URL */

static void test_parse_good(void **state)
{
    (void)state;
    gw_probe_url u;
    const char *why = NULL;

    assert_int_equal(
        gw_probe_parse_url("http://127.0.0.1:8080/healthz", &u, &why), 0);
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&u.addr;
    assert_int_equal(a4->sin_family, AF_INET);
    assert_int_equal(ntohs(a4->sin_port), 8080);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x7f000001);
    assert_string_equal(u.host, "127.0.0.1:8080");
    assert_string_equal(u.path, "/healthz");

    /* No port: 80; no path: "/"; localhost in any case. */
    assert_int_equal(gw_probe_parse_url("HTTP://LocalHost", &u, &why), 0);
    assert_int_equal(ntohs(a4->sin_port), 80);
    assert_int_equal(ntohl(a4->sin_addr.s_addr), 0x7f000001);
    assert_string_equal(u.host, "LocalHost");
    assert_string_equal(u.path, "/");

    /* A query is kept, a fragment dropped, "?q" becomes "/?q". */
    assert_int_equal(
        gw_probe_parse_url("http://10.0.0.1:1/a/b?x=1&y=%20#frag", &u, &why),
        0);
    assert_string_equal(u.path, "/a/b?x=1&y=%20");
    assert_int_equal(gw_probe_parse_url("http://10.0.0.1:65535?x", &u, &why),
                     0);
    assert_string_equal(u.path, "/?x");

    /* IPv6 in brackets, with and without a port. */
    assert_int_equal(gw_probe_parse_url("http://[::1]:9901/metrics", &u, &why),
                     0);
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&u.addr;
    assert_int_equal(a6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(a6->sin6_port), 9901);
    assert_true(IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr));
    assert_string_equal(u.host, "[::1]:9901");
    assert_int_equal(gw_probe_parse_url("http://[::]/", &u, &why), 0);
    assert_int_equal(ntohs(a6->sin6_port), 80);
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "127.0.0.1:8080/healthz",      /* no scheme */
        "https://127.0.0.1/",          /* not http */
        "http://",                     /* no host */
        "http:///healthz",             /* no host */
        "http://example.com/",         /* a name: no DNS here */
        "http://profile:9101/stats",   /* a compose service name */
        "http://127.0.0.1:/",          /* empty port */
        "http://127.0.0.1:0/",         /* port 0 */
        "http://127.0.0.1:65536/",     /* port too big */
        "http://127.0.0.1:-1/",        /* a sign */
        "http://127.0.0.1:80a/",       /* garbage */
        "http://127.0.0.1:000080/",    /* six digits */
        "http://user@127.0.0.1/",      /* userinfo */
        "http://::1/",                 /* IPv6 without brackets */
        "http://[::1/",                /* no ']' */
        "http://[::1]x/",              /* garbage after ']' */
        "http://[127.0.0.1]/",         /* IPv4 in brackets */
        "http://[localhost]/",         /* a name in brackets */
        "http://127.0.0.1/a b",        /* a space in the target */
        "http://127.0.0.1/a\r\nX: y",  /* header injection */
        "http://127.0.0.1/caf\xc3\xa9" /* not ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_probe_url u;
        const char *why = NULL;
        if (gw_probe_parse_url(bad[i], &u, &why) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_non_null(why);
    }

    /* A target that does not fit. */
    char url[GW_PROBE_PATH_CAP + 64];
    int n = snprintf(url, sizeof url, "http://127.0.0.1/");
    memset(url + n, 'a', sizeof url - (size_t)n - 1);
    url[sizeof url - 1] = '\0';
    gw_probe_url u;
    const char *why = NULL;
    assert_int_equal(gw_probe_parse_url(url, &u, &why), -EINVAL);
}

/* ------------------------------------------------------ the exchange */

/* A one-connection server: accepts, reads the request, writes reply
 * (NULL: nothing), then waits hold_ms and closes. */
typedef struct server {
    int ln;
    uint16_t port;
    const char *reply;
    size_t reply_len;
    int hold_ms;
    char request[1024];
    pthread_t thread;
} server;

static void *serve(void *arg)
{
    server *s = arg;
    int c = accept(s->ln, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t have = 0;
    while (have < sizeof s->request - 1 &&
           strstr(s->request, "\r\n\r\n") == NULL) {
        ssize_t n = read(c, s->request + have, sizeof s->request - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        s->request[have] = '\0';
    }
    if (s->reply != NULL && write(c, s->reply, s->reply_len) < 0)
        s->reply = NULL;
    if (s->hold_ms > 0) {
        struct timespec ts = {s->hold_ms / 1000,
                              (long)(s->hold_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    close(c);
    return NULL;
}

static void server_start(server *s, const char *reply, size_t len, int hold_ms)
{
    memset(s, 0, sizeof *s);
    s->reply = reply;
    s->reply_len = len;
    s->hold_ms = hold_ms;
    s->ln = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->ln >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->ln, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->ln, 4), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(s->ln, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(server *s)
{
    pthread_join(s->thread, NULL);
    close(s->ln);
}

/* Probe a server answering reply; returns gw_probe_get's result. */
static int probe_reply(const char *reply, size_t len, int hold_ms,
                       int timeout_ms, int *status, server *s)
{
    server_start(s, reply, len, hold_ms);
    char url[64];
    snprintf(url, sizeof url, "http://localhost:%u/healthz?x=1",
             (unsigned)s->port);
    gw_probe_url u;
    const char *why = NULL;
    assert_int_equal(gw_probe_parse_url(url, &u, &why), 0);
    int rc = gw_probe_get(&u, timeout_ms, status);
    server_stop(s);
    return rc;
}

#define REPLY(s) s, sizeof s - 1

static void test_get_status(void **state)
{
    (void)state;
    server s;
    int status = 0;

    assert_int_equal(probe_reply(REPLY("HTTP/1.1 200 OK\r\nContent-Length: "
                                       "15\r\n\r\n{\"status\":\"ok\"}"),
                                 0, 2000, &status, &s),
                     0);
    assert_int_equal(status, 200);
    /* The request: the target, Host as written, close. */
    assert_non_null(strstr(s.request, "GET /healthz?x=1 HTTP/1.1\r\n"));
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: localhost:%u\r\n", (unsigned)s.port);
    assert_non_null(strstr(s.request, host));
    assert_non_null(strstr(s.request, "\r\nConnection: close\r\n"));

    /* Other statuses come back as they are; main decides on 2xx. */
    assert_int_equal(
        probe_reply(REPLY("HTTP/1.1 503 Service Unavailable\r\n\r\n"), 0, 2000,
                    &status, &s),
        0);
    assert_int_equal(status, 503);
    /* HTTP/1.0, no reason phrase, a bare LF. */
    assert_int_equal(
        probe_reply(REPLY("HTTP/1.0 204\n\n"), 0, 2000, &status, &s), 0);
    assert_int_equal(status, 204);
}

static void test_get_errors(void **state)
{
    (void)state;
    server s;
    int status = -1;

    assert_int_equal(
        probe_reply(REPLY("SSH-2.0-OpenSSH\r\n"), 0, 2000, &status, &s),
        -EPROTO);
    assert_int_equal(
        probe_reply(REPLY("HTTP/1.1 20 OK\r\n"), 0, 2000, &status, &s),
        -EPROTO);
    assert_int_equal(
        probe_reply(REPLY("HTTP/1.1 2000 OK\r\n"), 0, 2000, &status, &s),
        -EPROTO);
    assert_int_equal(probe_reply(REPLY("HTTP/2 200\r\n"), 0, 2000, &status, &s),
                     -EPROTO);
    /* Closed before a whole line, and before any byte. */
    assert_int_equal(probe_reply(REPLY("HTTP/1.1 20"), 0, 2000, &status, &s),
                     -ECONNRESET);
    assert_int_equal(probe_reply(NULL, 0, 0, 2000, &status, &s), -ECONNRESET);
    assert_int_equal(status, -1);

    /* No line end within the cap. */
    static char longline[GW_PROBE_STATUS_CAP + 16];
    memset(longline, 'x', sizeof longline);
    assert_int_equal(
        probe_reply(longline, sizeof longline, 0, 2000, &status, &s),
        -EMSGSIZE);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_get_timeout(void **state)
{
    (void)state;
    server s;
    int status = -1;

    /* Accepts and says nothing for 1 s; the probe gives up at 200 ms
     * (tolerance: 150..900 ms on a loaded machine). Timed here, not
     * around server_stop, which waits for the server's hold. */
    server_start(&s, NULL, 0, 1000);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)s.port);
    gw_probe_url u;
    const char *why = NULL;
    assert_int_equal(gw_probe_parse_url(url, &u, &why), 0);
    int64_t t0 = now_ms();
    int rc = gw_probe_get(&u, 200, &status);
    int64_t took = now_ms() - t0;
    server_stop(&s);
    assert_int_equal(rc, -ETIMEDOUT);
    if (took < 150 || took > 900)
        fail_msg("the 200 ms deadline took %lld ms", (long long)took);
}

static void test_get_refused(void **state)
{
    (void)state;
    /* A port that refuses: bound and never listening. The socket stays
     * open until the end, so no other test can take the port meanwhile
     * (a port closed after bind is free for anyone, and a backend of a
     * test running beside this one once answered on it). */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/healthz",
             (unsigned)ntohs(a.sin_port));
    gw_probe_url u;
    const char *why = NULL;
    int status = -1;
    assert_int_equal(gw_probe_parse_url(url, &u, &why), 0);
    assert_int_equal(gw_probe_get(&u, 2000, &status), -ECONNREFUSED);
    assert_int_equal(gw_probe_main(url), 1);
    assert_int_equal(gw_probe_main("ftp://127.0.0.1/"), 1);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),  cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_get_status),  cmocka_unit_test(test_get_errors),
        cmocka_unit_test(test_get_timeout), cmocka_unit_test(test_get_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
