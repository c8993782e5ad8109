/*
 * response.c - gateway answers: error bodies, the header block, the Date
 * cache (see response.h).
 *
 * The Date value is formatted once per second per thread: a thread-local
 * cache of the value (never of an address), read and written only inside
 * gw_http_date, which never parks, so goroutine migration cannot tear it.
 */
#include "response.h"

#include "json.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void gw_response_init(gw_response *r)
{
    memset(r, 0, sizeof *r);
    r->completed = -1;
}

void gw_response_free(gw_response *r)
{
    if (r->release != NULL)
        r->release(r->release_arg);
    gw_response_init(r);
}

static void set_small_body(gw_response *r, size_t len)
{
    r->one.iov_base = r->small;
    r->one.iov_len = len;
    r->iov = &r->one;
    r->niov = 1;
    r->body_len = len;
}

void gw_response_error(gw_response *r, int status, const char *error,
                       const char *part, int completed)
{
    gw_response_free(r);
    r->status = status;
    r->completed = completed;
    size_t cap = sizeof r->small;
    /* Leave room for the part and the closing brace: quote the error
     * into at most half of the buffer. */
    size_t n = (size_t)snprintf(r->small, cap, "{\"error\":");
    size_t elen = strlen(error);
    size_t room = cap / 2 - n;
    while (gw_json_quote(NULL, 0, error, elen) + 1 > room && elen > 0)
        elen--;
    n += gw_json_quote(r->small + n, cap - n, error, elen);
    if (part != NULL) {
        size_t plen = strlen(part);
        n += (size_t)snprintf(r->small + n, cap - n, ",\"part\":");
        while (gw_json_quote(NULL, 0, part, plen) + 2 > cap - n && plen > 0)
            plen--;
        n += gw_json_quote(r->small + n, cap - n, part, plen);
    }
    if (n + 1 < cap)
        r->small[n++] = '}';
    r->small[n] = '\0';
    set_small_body(r, n);
}

void gw_response_json(gw_response *r, int status, const char *json)
{
    gw_response_free(r);
    r->status = status;
    size_t n = strlen(json);
    if (n >= sizeof r->small)
        n = sizeof r->small - 1;
    memcpy(r->small, json, n);
    r->small[n] = '\0';
    set_small_body(r, n);
}

void gw_response_options(gw_response *r, const char *allow)
{
    gw_response_free(r);
    r->status = 204;
    r->allow = allow;
    r->no_body = true;
}

const char *gw_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
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
    default:
        return "Unknown";
    }
}

static __thread struct {
    time_t sec;
    char text[30];
} date_cache;

void gw_http_date(char out[30])
{
    time_t now = time(NULL);
    if (now != date_cache.sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date_cache.text, sizeof date_cache.text,
                 "%a, %d %b %Y %H:%M:%S GMT", &tm);
        date_cache.sec = now;
    }
    memcpy(out, date_cache.text, 30);
}

size_t gw_response_head(const gw_response *r, const char *request_id,
                        bool close, bool keep_alive_10, char *buf, size_t cap)
{
    char date[30];
    gw_http_date(date);
    /* A 204 has neither Content-Type nor Content-Length (RFC 9110 8.6:
     * a server MUST NOT send Content-Length in a 204). */
    char clen[80] = "";
    if (!r->no_body)
        snprintf(clen, sizeof clen,
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                 r->body_len);
    int n = snprintf(
        buf, cap,
        "HTTP/1.1 %d %s\r\n"
        "%s"
        "Date: %s\r\n"
        "X-Request-Id: %s\r\n"
        "%s%s%s"
        "%s%s%s"
        "%s"
        "\r\n",
        r->status, gw_status_reason(r->status), clen, date, request_id,
        r->completed < 0 ? "" : "X-Gateway-Completed: ",
        r->completed < 0 ? ""
        : r->completed   ? "true"
                         : "false",
        r->completed < 0 ? "" : "\r\n", r->allow != NULL ? "Allow: " : "",
        r->allow != NULL ? r->allow : "", r->allow != NULL ? "\r\n" : "",
        close           ? "Connection: close\r\n"
        : keep_alive_10 ? "Connection: keep-alive\r\n"
                        : "");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
