/*
 * probe.h - `gateway --probe URL`: one HTTP/1.1 GET over a plain
 * blocking-style socket, for a container's HEALTHCHECK (design: probe.c).
 *
 * The probe runs in its own short process, before and without the
 * runtime: no goroutines, no libcurl, no resolver. It needs nothing in
 * the image but the gateway binary.
 */
#ifndef GW_PROBE_H
#define GW_PROBE_H

#include <stddef.h>
#include <sys/socket.h>

/* The whole probe (connect, send, the status line) gets this long. */
#define GW_PROBE_TIMEOUT_MS 2000

#define GW_PROBE_HOST_CAP 64    /* the Host header, "host:port" */
#define GW_PROBE_PATH_CAP 2048  /* the request target */
#define GW_PROBE_STATUS_CAP 512 /* the status line, CRLF included */

/* A parsed probe URL: where to connect and what to send. */
typedef struct gw_probe_url {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[GW_PROBE_HOST_CAP]; /* authority as written: the Host header */
    char path[GW_PROBE_PATH_CAP]; /* "/" when the URL has none */
} gw_probe_url;

/*
 * Parse "http://HOST[:PORT][/PATH]". HOST is a numeric IPv4 address, a
 * numeric IPv6 address in brackets, or "localhost" (127.0.0.1); PORT is
 * 1..65535, 80 when left out; PATH (with any query) is visible ASCII; a
 * "#fragment" is dropped, as clients do. Returns 0 and fills *out, or
 * -EINVAL with *why saying what is wrong (a static string).
 */
int gw_probe_parse_url(const char *url, gw_probe_url *out, const char **why);

/*
 * Send "GET PATH HTTP/1.1" to u and read the answer's status line, all
 * within timeout_ms. Returns 0 with *status set (100..999), or a negative
 * errno: -ETIMEDOUT (the deadline passed), the connect's or the socket's
 * error (-ECONNREFUSED, -ENETUNREACH, ...), -ECONNRESET (closed before a
 * whole status line), -EPROTO (not an HTTP/1.x status line), -EMSGSIZE
 * (no line end within GW_PROBE_STATUS_CAP bytes). Only the status line is
 * read; the connection is closed after it.
 */
int gw_probe_get(const gw_probe_url *u, int timeout_ms, int *status);

/*
 * The --probe mode: GET url within GW_PROBE_TIMEOUT_MS. Returns the exit
 * status: 0 when the answer's status is 2xx (nothing printed), else 1
 * with one line on stderr saying why (a bad URL, a refused connection, a
 * timeout, the status). 1 and never 2 for a failure: Docker reserves a
 * HEALTHCHECK's exit status 2.
 */
int gw_probe_main(const char *url);

#endif /* GW_PROBE_H */
