/*
 * response.h - an answer of the gateway before it is written: status,
 * the headers that vary, and the body as a vector of pieces, so that
 * backend bodies are written from where they are (writev), not copied.
 *
 * Every answer carries Content-Type: application/json, Content-Length,
 * Date and X-Request-Id (the contract); the server adds Connection when
 * it closes. Route answers also carry X-Gateway-Completed.
 */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* Room for {"error":"...","part":"..."} with quoted message and name. */
#define GW_RESPONSE_SMALL 512

typedef struct gw_response {
    int status;
    int completed;     /* X-Gateway-Completed: -1 none, 0 false, 1 true */
    const char *allow; /* Allow header, or NULL (static or the router's) */
    bool no_body;      /* 204: neither Content-Type nor Content-Length */
    /* The body: niov pieces; they point into memory the response owns
     * (small, or what release frees) or that outlives it (the state). */
    struct iovec *iov;
    int niov;
    size_t body_len;
    /* Frees what the pieces point into; NULL when nothing to free. */
    void (*release)(void *arg);
    void *release_arg;
    struct iovec one; /* iov for a body in small */
    char small[GW_RESPONSE_SMALL];
} gw_response;

/* An empty response (status 0). */
void gw_response_init(gw_response *r);

/* Run release (once) and reset r to empty. */
void gw_response_free(gw_response *r);

/*
 * A JSON error answer: {"error":"<error>"} or, with part,
 * {"error":"<error>","part":"<part>"}; the strings are quoted for JSON and
 * cut to fit GW_RESPONSE_SMALL. completed: -1, 0 or 1 as above.
 */
void gw_response_error(gw_response *r, int status, const char *error,
                       const char *part, int completed);

/* A small JSON body given as is, e.g. {"status":"ok"}. */
void gw_response_json(gw_response *r, int status, const char *json);

/* 204 No Content with Allow (OPTIONS). */
void gw_response_options(gw_response *r, const char *allow);

/* The reason phrase of status ("OK", "Bad Gateway", ...). */
const char *gw_status_reason(int status);

/*
 * Write the status line and headers of r into buf (cap bytes): HTTP/1.1,
 * Content-Type and Content-Length (unless no_body), Date, X-Request-Id,
 * X-Gateway-Completed, Allow, then Connection: close when close, or
 * Connection: keep-alive when keep_alive_10 (an HTTP/1.0 client that
 * asked for it). Returns the length, or 0 when cap is too small.
 */
size_t gw_response_head(const gw_response *r, const char *request_id,
                        bool close, bool keep_alive_10, char *buf, size_t cap);

/* The current time as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"),
 * formatted at most once per second per thread. out: 30 bytes. */
void gw_http_date(char out[30]);

#endif /* GW_RESPONSE_H */
