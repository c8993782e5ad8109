/*
 * fuzz_http_parse.c - libFuzzer target: the request parser
 * (gateway/http_parse.c over llhttp), the code every byte a client sends
 * goes through first.
 *
 * Input: byte 0 picks the mode (bit 0: stop-at-head, as the server runs
 * it; bits 1-7: the seed of a chunking pattern), the rest is what a
 * client sends on one connection, pipelined requests included.
 *
 * Oracle, besides the sanitizers: the outcome must not depend on how the
 * bytes arrive. The input is parsed twice, once in one piece and once cut
 * into pieces of 1-16 bytes, and both runs must give the same sequence of
 * events (each request's method, target, version, framing and body, and
 * the final rejection's status). A parser that keeps state wrongly across
 * reads (the classic source of request smuggling) breaks this.
 */
#include "http_parse.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One run's events, as text: compared with memcmp. */
typedef struct trace {
    char buf[65536];
    size_t len;
} trace;

static void trace_add(trace *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void trace_add(trace *t, const char *fmt, ...)
{
    if (t->len >= sizeof t->buf)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < sizeof t->buf - t->len ? (size_t)n
                                                     : sizeof t->buf - t->len;
}

static void trace_request(trace *t, const gw_http_request *r, bool head)
{
    trace_add(t, "%s %s %.*s path=%.*s query=%.*s host=%.*s v=%d.%d h=%zu",
              head ? "HEAD-DONE" : "REQ", r->method, (int)r->target_len,
              r->target, (int)r->path_len, r->path, (int)r->query_len, r->query,
              (int)r->host_len, r->host ? r->host : "", r->version_major,
              r->version_minor, r->nheaders);
    if (!head)
        trace_add(t, " cl=%d/%llu chunked=%d ka=%d body=%zu:%.*s",
                  r->has_content_length, (unsigned long long)r->content_length,
                  r->chunked, r->keep_alive, r->body_len,
                  (int)(r->body_len < 64 ? r->body_len : 64),
                  r->body ? r->body : "");
    trace_add(t, "\n");
}

/* Parse data[0, size) delivered in pieces (step 0: all at once). */
static void run(const uint8_t *data, size_t size, bool stop_at_head,
                unsigned seed, trace *t)
{
    gw_http_parser p;
    gw_http_limits lim = {.max_header_bytes = 4096, .max_body_bytes = 8192};
    if (gw_http_parser_init(&p, &lim, NULL, NULL) != 0)
        abort(); /* panic path */
    gw_http_parser_stop_at_head(&p, stop_at_head);

    /* buf holds what was delivered and not consumed yet, as a server's
     * read buffer does. */
    char *buf = malloc(size + 1);
    size_t have = 0, off = 0;
    unsigned rng = seed * 2654435761u + 1;
    int requests = 0;
    for (;;) {
        /* Deliver the next piece. */
        if (off < size) {
            size_t step = size - off;
            if (seed != 0) {
                rng = rng * 1103515245u + 12345u;
                size_t s = 1 + (rng >> 16) % 16;
                if (s < step)
                    step = s;
            }
            memcpy(buf + have, data + off, step);
            have += step;
            off += step;
        }
        bool fed_all = off == size;
        for (;;) {
            size_t used = 0;
            int rc = gw_http_parser_feed(&p, buf, have, &used);
            if (used > have)
                abort(); /* panic path: consumed more than given */
            if (rc == -EAGAIN) {
                have = 0; /* everything was used */
                break;
            }
            memmove(buf, buf + used, have - used);
            have -= used;
            if (rc == GW_HTTP_HEAD) {
                const gw_http_request *r = gw_http_parser_head(&p);
                if (r == NULL)
                    abort(); /* panic path */
                trace_request(t, r, true);
                continue;
            }
            if (rc == 0) {
                trace_request(t, gw_http_parser_request(&p), false);
                gw_http_parser_next(&p);
                if (++requests > 64)
                    goto out;
                continue;
            }
            trace_add(t, "ERR rc=%d status=%d %s\n", rc,
                      gw_http_parser_status(&p), gw_http_parser_message(&p));
            goto out;
        }
        if (fed_all)
            break;
    }
    trace_add(t, "END started=%d\n", gw_http_parser_started(&p));
out:
    free(buf);
    gw_http_parser_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool stop_at_head = data[0] & 1;
    unsigned seed = (data[0] >> 1) | 1;
    static trace whole, pieces;
    whole.len = pieces.len = 0;
    run(data + 1, size - 1, stop_at_head, 0, &whole);
    run(data + 1, size - 1, stop_at_head, seed, &pieces);
    if (whole.len != pieces.len || memcmp(whole.buf, pieces.buf, whole.len)) {
        fprintf(stderr,
                "split changed the outcome\n--- whole\n%.*s--- in pieces\n%.*s",
                (int)whole.len, whole.buf, (int)pieces.len, pieces.buf);
        abort(); /* panic path: the finding */
    }
    return 0;
}
