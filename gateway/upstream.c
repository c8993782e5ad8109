/*
 * upstream.c — the dispatcher of upstream.h: gw_upstream_new builds the
 * client opts->client names, and every other call goes through the
 * client's operations (upstream_internal.h). Also here: what does not
 * depend on the client (the answer's helpers, error messages, the check
 * of a numeric connect address).
 *
 * The two clients:
 *   upstream_curl.c    libcurl's multi_socket API on a driver goroutine;
 *                      http and https, HTTP/2 where offered.
 *   upstream_native.c  HTTP/1.1 over the runtime's sockets on the
 *                      caller's goroutine, its own keep-alive pool, llhttp
 *                      for the answer; http only.
 * Design and measurements of both: gateway/README.md.
 *
 * A gw_upstream is owned by its creator; the dispatcher keeps no state of
 * its own, so it has no lock.
 */
#include "upstream_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int gw_upstream_new(const gw_upstream_opts *opts, gw_upstream **out)
{
    *out = NULL;
    gw_upstream_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.max_response_bytes == 0)
        o.max_response_bytes = GW_UPSTREAM_DEFAULT_MAX_RESPONSE_BYTES;
    if (o.max_host_connections < 0 || o.drivers < 0 ||
        o.max_idle_connections < 0 || o.idle_timeout_ms < 0 ||
        o.max_connection_age_ms < 0 || o.max_response_bytes > SIZE_MAX / 4)
        return -EINVAL;
    switch (o.client) {
    case GW_UPSTREAM_CURL:
        return gw__upstream_curl_new(&o, out);
    case GW_UPSTREAM_NATIVE:
        return gw__upstream_native_new(&o, out);
    default:
        return -EINVAL;
    }
}

void gw_upstream_free(gw_upstream *up)
{
    if (up != NULL)
        up->ops->free(up);
}

int gw_upstream_do(gw_upstream *up, const gw_upstream_req *req, rt_ctx *ctx,
                   gw_upstream_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    if (up == NULL || req == NULL || req->url == NULL)
        return -EINVAL;
    return up->ops->call(up, req, ctx, resp);
}

void gw_upstream_stats_get(gw_upstream *up, gw_upstream_stats *out)
{
    up->ops->stats(up, out);
}

int gw__upstream_check_addr(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || colon[1] == '\0')
        return -EINVAL;
    char host[64];
    size_t hlen = (size_t)(colon - addr);
    const char *h = addr;
    int af = AF_INET;
    if (addr[0] == '[') {
        if (hlen < 3 || addr[hlen - 1] != ']')
            return -EINVAL;
        h = addr + 1;
        hlen -= 2;
        af = AF_INET6;
    }
    if (hlen >= sizeof host)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(af, host, buf) != 1)
        return -EINVAL;
    long port = 0;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || p - colon > 5)
            return -EINVAL;
        port = port * 10 + (*p - '0');
    }
    return port >= 1 && port <= 65535 ? 0 : -EINVAL;
}

/* ------------------------------------------------------------ helpers */

const char *gw_upstream_resp_header(const gw_upstream_resp *resp,
                                    const char *name)
{
    const char *p = resp->headers;
    for (size_t i = 0; p != NULL && i < resp->nheaders; i++) {
        const char *value = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0)
            return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

void gw_upstream_resp_free(gw_upstream_resp *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    free(resp->headers);
    memset(resp, 0, sizeof *resp);
}

const char *gw_upstream_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -ETIMEDOUT:
        return "timeout";
    case -ECANCELED:
        return "cancelled";
    case -ECONNREFUSED:
        return "connection refused";
    case -ECONNRESET:
        return "connection reset";
    case -EHOSTUNREACH:
        return "host unreachable";
    case -EPROTO:
        return "protocol or TLS error";
    case -EFBIG:
        return "response too large";
    case -EINVAL:
        return "invalid request";
    case -ENOMEM:
        return "out of memory";
    default:
        return "upstream error";
    }
}
