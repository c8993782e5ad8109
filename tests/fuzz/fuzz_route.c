/*
 * fuzz_route.c - libFuzzer target: route matching and placeholder
 * expansion (gateway/route.c) on a fixed set of routes.
 *
 * Input: byte 0 picks the method, the rest is a request target (path,
 * then an optional "?query"), as the server hands them over.
 *
 * Oracle, besides the sanitizers: every backend path built from a match
 * starts with '/', has only RFC 3986 unreserved characters, '/', and
 * %XX escapes outside the template's own text, and no segment that is
 * "." or ".." (a backend would resolve it and leave the template).
 */
#include "config.h"
#include "route.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config_json[] =
    "{\"listen\":\"127.0.0.1:1\","
    "\"backends\":{"
    "\"a\":{\"url\":\"http://127.0.0.1:1/v2/\"},"
    "\"b\":{\"url\":\"http://127.0.0.1:2\"}},"
    "\"routes\":["
    "{\"method\":\"GET\",\"path\":\"/api/products/{id}\",\"fanout\":["
    "{\"name\":\"p\",\"backend\":\"a\",\"path\":\"/users/{user}\"},"
    "{\"name\":\"i\",\"backend\":\"b\",\"path\":\"/inventory/{id}\","
    "\"required\":true}]},"
    "{\"method\":\"POST\",\"path\":\"/api/products/{id}\",\"fanout\":["
    "{\"name\":\"i\",\"backend\":\"b\",\"path\":\"/items/{id}.json\"}]},"
    "{\"method\":\"GET\",\"path\":\"/api/products/special\",\"fanout\":["
    "{\"name\":\"i\",\"backend\":\"b\",\"path\":\"/special\"}]},"
    "{\"method\":\"DELETE\",\"path\":\"/u/{a}/x/{b}\",\"fanout\":["
    "{\"name\":\"i\",\"backend\":\"a\",\"path\":\"/{b}-{a}/{q}\"}]},"
    "{\"method\":\"GET\",\"path\":\"/\",\"fanout\":["
    "{\"name\":\"i\",\"backend\":\"b\",\"path\":\"/root/{x}\"}]}"
    "]}";

static const char *const methods[] = {"GET",     "HEAD",  "POST",
                                      "PUT",     "PATCH", "DELETE",
                                      "OPTIONS", "TRACE", "PURGE"};

static gw_config *cfg;
static gw_router *router;

static void setup(void)
{
    gw_config_errors errs = {0};
    if (gw_config_parse(config_json, strlen(config_json), "/", &cfg, &errs) !=
        0) {
        gw_config_errors_print(&errs, stderr);
        abort(); /* panic path: the fixed config must load */
    }
    if (gw_router_new(cfg, &router) != 0)
        abort(); /* panic path */
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

static void check_path(const char *p, int len)
{
    if (len <= 0 || p[0] != '/' || (int)strlen(p) != len)
        goto bad;
    for (int i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)p[i + 1]) ||
                !isxdigit((unsigned char)p[i + 2]))
                goto bad;
            i += 2;
            continue;
        }
        if (c != '/' && !unreserved(c))
            goto bad;
    }
    /* No "." or ".." segment. */
    for (const char *s = p; *s != '\0';) {
        const char *e = strchr(s + 1, '/');
        size_t n = e ? (size_t)(e - s - 1) : strlen(s + 1);
        if ((n == 1 && s[1] == '.') || (n == 2 && s[1] == '.' && s[2] == '.'))
            goto bad;
        if (e == NULL)
            break;
        s = e;
    }
    return;
bad:
    fprintf(stderr, "bad backend path: %s\n", p);
    abort(); /* panic path: the finding */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (router == NULL)
        setup();
    if (size < 1)
        return 0;
    const char *method = methods[data[0] % (sizeof methods / sizeof *methods)];
    const char *target = (const char *)data + 1;
    size_t tlen = size - 1;
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    const char *query = q ? q + 1 : NULL;
    size_t qlen = q ? tlen - plen - 1 : 0;

    gw_route_match m;
    gw_router_match(router, method, target, plen, &m);
    if (m.status != 0 || m.route == NULL)
        return 0;
    for (size_t i = 0; i < m.route->nparts; i++) {
        char buf[512];
        const char *which = NULL;
        int n = gw_route_part_path(router, &m, i, query, qlen, buf, sizeof buf,
                                   &which);
        if (n >= 0)
            check_path(buf, n);
        else if (n != -ENOENT && n != -EINVAL && n != -ENOSPC)
            abort(); /* panic path: undocumented return */
    }
    return 0;
}
