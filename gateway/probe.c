/*
 * probe.c - `gateway --probe URL` (see probe.h): the container's
 * HEALTHCHECK, with nothing in the image but the gateway binary.
 *
 *   gateway --probe http://127.0.0.1:8080/healthz
 *
 * One connection, one request, one status line, then close:
 *
 *   GET /healthz HTTP/1.1
 *   Host: 127.0.0.1:8080
 *   User-Agent: fanfold-probe
 *   Connection: close
 *
 * Why not the runtime or libcurl: the probe is a separate process that
 * lives for one request, so plain sockets are enough, and a probe that
 * shares nothing with the gateway's request path cannot be broken by
 * what it is meant to detect. Why no resolver: a health check talks to
 * its own container; "localhost" is 127.0.0.1, and anything else must be
 * numeric, so no DNS or NSS lookup can hang or fail it.
 *
 * Time: one deadline (CLOCK_MONOTONIC) for the whole exchange. The socket
 * is non-blocking and every wait is a poll() for the time that is left,
 * so a peer that accepts and then says nothing, or trickles its answer a
 * byte at a time, still ends the probe at the deadline.
 *
 * Memory: the status line is read into a fixed GW_PROBE_STATUS_CAP
 * buffer; an answer without a line end in it is -EMSGSIZE. The rest of
 * the answer (headers, body) is never read.
 */
#include "probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- URL */

/* Port digits: 1..65535, no sign, no leading garbage. */
static int parse_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return -EINVAL;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

/* The host part, without brackets, into out->addr (port set later). */
static int parse_host(const char *h, size_t n, bool bracketed,
                      gw_probe_url *out)
{
    char buf[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, h, n);
    buf[n] = '\0';
    if (!bracketed && strcasecmp(buf, "localhost") == 0)
        memcpy(buf, "127.0.0.1", sizeof "127.0.0.1");

    memset(&out->addr, 0, sizeof out->addr);
    if (bracketed) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->addr;
        if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        out->addrlen = sizeof *a6;
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)&out->addr;
    if (inet_pton(AF_INET, buf, &a4->sin_addr) != 1)
        return -EINVAL;
    a4->sin_family = AF_INET;
    out->addrlen = sizeof *a4;
    return 0;
}

static void set_port(gw_probe_url *u, uint16_t port)
{
    if (u->addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&u->addr)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)&u->addr)->sin_port = htons(port);
}

int gw_probe_parse_url(const char *url, gw_probe_url *out, const char **why)
{
    static const char scheme[] = "http://";
    const size_t slen = sizeof scheme - 1;

    if (strncasecmp(url, scheme, slen) != 0) {
        *why = "want an http:// URL";
        return -EINVAL;
    }
    const char *auth = url + slen;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (alen == 0 || alen >= sizeof out->host) {
        *why = alen == 0 ? "no host" : "host:port too long";
        return -EINVAL;
    }
    if (memchr(auth, '@', alen) != NULL) {
        *why = "no user name or password in a probe URL";
        return -EINVAL;
    }

    /* host, [v6] or host:port, [v6]:port */
    const char *host = auth, *colon = NULL;
    size_t hlen;
    bool bracketed = auth[0] == '[';
    if (bracketed) {
        const char *close = memchr(auth, ']', alen);
        if (close == NULL) {
            *why = "an IPv6 address needs its closing ']'";
            return -EINVAL;
        }
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < rest) {
            if (close[1] != ':') {
                *why = "want ':' and a port after ']'";
                return -EINVAL;
            }
            colon = close + 1;
        }
    } else {
        colon = memchr(auth, ':', alen);
        hlen = colon != NULL ? (size_t)(colon - auth) : alen;
    }
    if (parse_host(host, hlen, bracketed, out) != 0) {
        *why = "the host must be a numeric IPv4 address, [IPv6] or "
               "localhost";
        return -EINVAL;
    }
    uint16_t port = 80;
    if (colon != NULL &&
        parse_port(colon + 1, (size_t)(rest - colon - 1), &port) != 0) {
        *why = "the port must be 1..65535";
        return -EINVAL;
    }
    set_port(out, port);
    memcpy(out->host, auth, alen);
    out->host[alen] = '\0';

    /* The target: up to a fragment; "/" for none; "?q" becomes "/?q". */
    size_t plen = strcspn(rest, "#");
    size_t lead = rest[0] == '/' ? 0 : 1;
    if (lead + plen >= sizeof out->path) {
        *why = "the path is too long";
        return -EINVAL;
    }
    for (size_t i = 0; i < plen; i++) {
        unsigned char ch = (unsigned char)rest[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            *why = "the path must be visible ASCII (percent-encode the rest)";
            return -EINVAL;
        }
    }
    out->path[0] = '/';
    memcpy(out->path + lead, rest, plen);
    out->path[lead + plen] = '\0';
    return 0;
}

/* ---------------------------------------------------------- socket */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until deadline: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 0; /* ready, or an error the next call will report */
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int connect_by(const gw_probe_url *u, int64_t deadline, int *fdp)
{
    int fd = socket(u->addr.ss_family,
                    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int err = 0;
    if (connect(fd, (const struct sockaddr *)&u->addr, u->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            err = -errno;
            goto fail;
        }
        err = wait_fd(fd, POLLOUT, deadline);
        if (err != 0)
            goto fail;
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            err = -errno;
            goto fail;
        }
        if (soerr != 0) {
            err = -soerr;
            goto fail;
        }
    }
    *fdp = fd;
    return 0;

fail:
    close(fd);
    return err;
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int err = wait_fd(fd, POLLOUT, deadline);
        if (err != 0)
            return err;
    }
    return 0;
}

/* "HTTP/1.x NNN" then SP or the line end: the code, or -EPROTO. */
static int parse_status_line(const char *line, size_t len)
{
    static const char ver[] = "HTTP/1.";
    const size_t vlen = sizeof ver - 1;
    if (len < vlen + 5 || memcmp(line, ver, vlen) != 0)
        return -EPROTO;
    const char *p = line + vlen;
    if (p[0] < '0' || p[0] > '9' || p[1] != ' ')
        return -EPROTO;
    p += 2;
    int code = 0;
    for (int i = 0; i < 3; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EPROTO;
        code = code * 10 + (p[i] - '0');
    }
    size_t used = (size_t)(p + 3 - line);
    if (code < 100 || (used < len && p[3] != ' '))
        return -EPROTO;
    return code;
}

/* Read until the first line end; the status code, or a negative errno. */
static int read_status(int fd, int64_t deadline)
{
    char buf[GW_PROBE_STATUS_CAP];
    size_t have = 0;
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (nl != NULL) {
            size_t len = (size_t)(nl - buf);
            if (len > 0 && buf[len - 1] == '\r')
                len--;
            return parse_status_line(buf, len);
        }
        if (have == sizeof buf)
            return -EMSGSIZE;
        ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n > 0) {
            have += (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int err = wait_fd(fd, POLLIN, deadline);
        if (err != 0)
            return err;
    }
}

int gw_probe_get(const gw_probe_url *u, int timeout_ms, int *status)
{
    int64_t deadline = now_ms() + timeout_ms;
    char req[GW_PROBE_PATH_CAP + GW_PROBE_HOST_CAP + 128];
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s\r\n"
                       "User-Agent: fanfold-probe\r\n"
                       "Connection: close\r\n\r\n",
                       u->path, u->host);
    if (len < 0 || (size_t)len >= sizeof req)
        return -EMSGSIZE;

    int fd = -1;
    int err = connect_by(u, deadline, &fd);
    if (err != 0)
        return err;
    err = send_all(fd, req, (size_t)len, deadline);
    if (err == 0) {
        int code = read_status(fd, deadline);
        if (code < 0)
            err = code;
        else
            *status = code;
    }
    close(fd);
    return err;
}

/* ------------------------------------------------------------ main */

int gw_probe_main(const char *url)
{
    gw_probe_url u;
    const char *why;
    if (gw_probe_parse_url(url, &u, &why) != 0) {
        fprintf(stderr, "gateway: --probe %s: bad URL: %s\n", url, why);
        return 1;
    }
    int status = 0;
    int err = gw_probe_get(&u, GW_PROBE_TIMEOUT_MS, &status);
    switch (err) {
    case 0:
        if (status >= 200 && status <= 299)
            return 0;
        fprintf(stderr, "gateway: --probe %s: status %d\n", url, status);
        return 1;
    case -ETIMEDOUT:
        fprintf(stderr, "gateway: --probe %s: no answer within %d ms\n", url,
                GW_PROBE_TIMEOUT_MS);
        return 1;
    case -ECONNRESET:
        fprintf(stderr,
                "gateway: --probe %s: connection closed before a status "
                "line\n",
                url);
        return 1;
    case -EPROTO:
        fprintf(stderr, "gateway: --probe %s: not an HTTP/1.x answer\n", url);
        return 1;
    case -EMSGSIZE:
        fprintf(stderr,
                "gateway: --probe %s: no status line in the first %d "
                "bytes\n",
                url, GW_PROBE_STATUS_CAP);
        return 1;
    default:
        fprintf(stderr, "gateway: --probe %s: %s\n", url, strerror(-err));
        return 1;
    }
}
