/*
 * http_parse.c — strict HTTP/1.1 request parsing on top of llhttp.
 *
 * llhttp (built with LLHTTP_STRICT_MODE=1) does the tokenising; this file
 * keeps what it reports and adds what strict llhttp 8.1 still lets through.
 *
 * Data and invariants:
 *  - head is one buffer of limits.max_header_bytes bytes, allocated once at
 *    init. The target, then each header name and value, are appended to it
 *    as llhttp reports them; pieces of one token arrive in order, so every
 *    token is contiguous and pointers into head stay valid until the
 *    request is released. head_len <= max_header_bytes always.
 *  - head_raw counts the exact raw bytes of the request line and header
 *    section: feed pauses llhttp in on_headers_complete, so the end of the
 *    head inside a slice is known. head_est is a lower bound of the same
 *    count (stored bytes plus line overhead) checked as bytes arrive, so a
 *    single huge slice cannot grow the header array without bound.
 *  - A target over GW_HTTP_MAX_TARGET_BYTES is a 414 even when it also
 *    overruns max_header_bytes: while the target is being read an overrun
 *    is only noted (head_overrun) and becomes a 431 once it ends.
 *  - The raw head bytes are scanned (scan_prev carries the last byte across
 *    slices) for what strict llhttp 8.1 accepts: a bare LF ending the
 *    request line and obsolete line folding. Folding in trailers is caught
 *    from a gap between two pieces of one value (llhttp skipped the CRLF).
 *  - llhttp is paused in on_message_complete, so one feed never runs past
 *    the end of one request; complete stays true until the caller releases
 *    the request with gw_http_parser_next().
 *  - Once err is set the parser is dead: every feed returns err.
 *
 * A parser belongs to one connection and is not thread-safe.
 */
#include "http_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Method, two spaces, "HTTP/1.1" and CRLF around the target. */
#define REQUEST_LINE_OVERHEAD 12
/* At least ":" and CRLF around a header's name and value. */
#define HEADER_LINE_OVERHEAD 3
#define BODY_INITIAL_CAP 4096

static gw_http_parser *from_ll(llhttp_t *ll)
{
    return ll->data;
}

/* Records a rejection; the first one wins. Returns -1 for llhttp. */
static int reject(gw_http_parser *p, int status, const char *message)
{
    if (p->err == 0) {
        p->err = -EPROTO;
        p->status = status;
        p->message = message;
    }
    return -1;
}

static int fail(gw_http_parser *p, int err, const char *message)
{
    if (p->err == 0) {
        p->err = err;
        p->status = 500;
        p->message = message;
    }
    return -1;
}

/* Appends to head, counting toward the 431 limit. */
static int head_append(gw_http_parser *p, const char *at, size_t len)
{
    size_t max = p->limits.max_header_bytes;

    p->head_est += len;
    if (p->head_est > max || len > max - p->head_len)
        return reject(p, 431, "request header fields too large");
    memcpy(p->head + p->head_len, at, len);
    p->head_len += len;
    return 0;
}

static int on_message_begin(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->started = true;
    p->head_est = REQUEST_LINE_OVERHEAD;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);
    size_t max = p->limits.max_header_bytes;

    if (p->req.target_len == 0)
        p->req.target = p->head + p->head_len;
    p->req.target_len += len;
    if (p->req.target_len > GW_HTTP_MAX_TARGET_BYTES)
        return reject(p, 414, "request target too long");
    p->head_est += len;
    if (p->head_overrun || p->head_est > max || len > max - p->head_len) {
        p->head_overrun = true;
        return 0;
    }
    memcpy(p->head + p->head_len, at, len);
    p->head_len += len;
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->url_done = true;
    if (p->head_overrun)
        return reject(p, 431, "request header fields too large");
    return 0;
}

/* Makes room for one more header; the count is bounded by head_est. */
static int grow_headers(gw_http_parser *p)
{
    size_t cap = p->hdrs_cap ? p->hdrs_cap * 2 : 16;
    gw_http_header *h = realloc(p->hdrs, cap * sizeof(*h));

    if (h == NULL)
        return fail(p, -ENOMEM, "out of memory");
    p->hdrs = h;
    p->hdrs_cap = cap;
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);
    gw_http_header *h;

    if (p->trailers) {
        /* Trailer fields are checked, not kept; they share the limit. */
        p->trailer_bytes += len;
        if (p->trailer_bytes > p->limits.max_header_bytes)
            return reject(p, 431, "request header fields too large");
        return 0;
    }
    if (!p->in_field) {
        if (p->req.nheaders == p->hdrs_cap && grow_headers(p) != 0)
            return -1;
        h = &p->hdrs[p->req.nheaders++];
        h->name = p->head + p->head_len;
        h->name_len = 0;
        h->value = NULL;
        h->value_len = 0;
        p->head_est += HEADER_LINE_OVERHEAD;
        p->in_field = true;
    }
    h = &p->hdrs[p->req.nheaders - 1];
    h->name_len += len;
    return head_append(p, at, len);
}

/*
 * In trailers, a piece of a value that does not continue the previous
 * piece means llhttp skipped a line break: obsolete folding. A piece at
 * the start of a new slice continues the previous one unless that slice
 * ended with the LF.
 */
static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);
    gw_http_header *h;

    if (p->trailers) {
        if (p->value_end != NULL && at != p->value_end &&
            (at != p->exec_base || p->scan_prev == '\n'))
            return reject(p, 400, "obsolete line folding");
        p->value_end = at + len;
        p->trailer_bytes += len;
        if (p->trailer_bytes > p->limits.max_header_bytes)
            return reject(p, 431, "request header fields too large");
        return 0;
    }
    h = &p->hdrs[p->req.nheaders - 1];
    if (h->value == NULL)
        h->value = p->head + p->head_len;
    h->value_len += len;
    return head_append(p, at, len);
}

/* The name is complete: the next name starts a new header. */
static int on_header_field_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->in_field = false;
    p->value_end = NULL;
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);
    gw_http_header *h;

    p->value_end = NULL;
    if (p->trailers || p->req.nheaders == 0)
        return 0;
    h = &p->hdrs[p->req.nheaders - 1];
    if (h->value == NULL)
        h->value = p->head + p->head_len;
    while (h->value_len > 0 && (h->value[h->value_len - 1] == ' ' ||
                                h->value[h->value_len - 1] == '\t'))
        h->value_len--;
    return 0;
}

/*
 * Pause here so feed knows where the head ends: it then counts the raw
 * bytes, scans them and checks the header semantics before the body.
 * Upgrade offers (e.g. h2c) are ignored, as RFC 9110 allows, by clearing
 * llhttp's flag; CONNECT is refused.
 */
static int on_headers_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    if (ll->method == HTTP_CONNECT)
        return reject(p, 501, "CONNECT not supported");
    ll->upgrade = 0;
    p->head_done = true;
    p->in_field = false;
    return HPE_PAUSED;
}

static int body_store(gw_http_parser *p, const char *at, size_t len)
{
    size_t need = p->req.body_len + len;

    if (need > p->body_cap) {
        size_t cap = p->body_cap ? p->body_cap : BODY_INITIAL_CAP;
        char *b;

        while (cap < need)
            cap *= 2;
        if (cap > p->limits.max_body_bytes)
            cap = p->limits.max_body_bytes;
        b = realloc(p->body, cap);
        if (b == NULL)
            return fail(p, -ENOMEM, "out of memory");
        p->body = b;
        p->body_cap = cap;
    }
    memcpy(p->body + p->req.body_len, at, len);
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);
    int rc;

    if (len > p->limits.max_body_bytes - p->req.body_len)
        return reject(p, 413, "request body too large");
    if (p->body_fn != NULL) {
        rc = p->body_fn(p->body_arg, at, len);
        if (rc < 0)
            return fail(p, rc, "body callback failed");
    } else if (body_store(p, at, len) != 0) {
        return -1;
    }
    p->req.body_len += len;
    return 0;
}

static int on_chunk_header(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    if (ll->content_length > p->limits.max_body_bytes - p->req.body_len)
        return reject(p, 413, "request body too large");
    if (ll->content_length == 0)
        p->trailers = true; /* last chunk: header lines now are trailers */
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->req.keep_alive = llhttp_should_keep_alive(ll) != 0;
    p->req.body = p->body_fn == NULL && p->req.body_len ? p->body : NULL;
    p->complete = true;
    return HPE_PAUSED;
}

/* Scans raw head bytes for a bare LF and for a line starting with
 * whitespace (obsolete folding, or whitespace before the first field). */
static int scan_head(gw_http_parser *p, const char *at, size_t len)
{
    int prev = p->scan_prev;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)at[i];

        if (c == '\n' && prev != '\r')
            return reject(p, 400, "bare LF line ending");
        if (prev == '\n' && (c == ' ' || c == '\t'))
            return reject(p, 400, "obsolete line folding");
        prev = c;
    }
    p->scan_prev = prev;
    return 0;
}

static bool token_eq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

/* Checks that need the whole header section; sets up the body. */
static int check_head(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    llhttp_t *ll = &p->ll;
    size_t hosts = 0;

    if (p->head_raw > p->limits.max_header_bytes)
        return reject(p, 431, "request header fields too large");
    r->method_id = ll->method;
    r->method = llhttp_method_name((llhttp_method_t)ll->method);
    r->version_major = ll->http_major;
    r->version_minor = ll->http_minor;
    r->headers = p->hdrs;
    if (r->version_major != 1)
        return reject(p, 505, "HTTP version not supported");
    for (size_t i = 0; i < r->nheaders; i++) {
        const gw_http_header *h = &p->hdrs[i];

        if (token_eq(h->name, h->name_len, "host"))
            hosts++;
        else if (token_eq(h->name, h->name_len, "transfer-encoding") &&
                 (r->chunked || !token_eq(h->value, h->value_len, "chunked")))
            return reject(p, 501, "unsupported transfer-encoding");
        else if (token_eq(h->name, h->name_len, "transfer-encoding"))
            r->chunked = true;
    }
    if (hosts > 1)
        return reject(p, 400, "more than one Host header");
    if (hosts == 0 && r->version_major == 1 && r->version_minor >= 1)
        return reject(p, 400, "missing Host header");
    if (ll->flags & F_CONTENT_LENGTH) {
        r->has_content_length = true;
        r->content_length = ll->content_length;
        if (r->content_length > p->limits.max_body_bytes)
            return reject(p, 413, "request body too large");
    }
    return 0;
}

static int map_llhttp_error(gw_http_parser *p, llhttp_errno_t e)
{
    if (e == HPE_INVALID_TRANSFER_ENCODING)
        return reject(p, 501, "unsupported transfer-encoding");
    return reject(p, 400, "malformed request");
}

int gw_http_parser_init(gw_http_parser *p, const gw_http_limits *limits,
                        gw_http_body_fn body_fn, void *body_arg)
{
    memset(p, 0, sizeof(*p));
    if (limits != NULL)
        p->limits = *limits;
    if (p->limits.max_header_bytes == 0)
        p->limits.max_header_bytes = GW_HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (p->limits.max_body_bytes == 0)
        p->limits.max_body_bytes = GW_HTTP_DEFAULT_MAX_BODY_BYTES;
    p->head = malloc(p->limits.max_header_bytes);
    if (p->head == NULL)
        return -ENOMEM;
    p->body_fn = body_fn;
    p->body_arg = body_arg;

    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_url = on_url;
    p->settings.on_url_complete = on_url_complete;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_field_complete = on_header_field_complete;
    p->settings.on_header_value = on_header_value;
    p->settings.on_header_value_complete = on_header_value_complete;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_chunk_header = on_chunk_header;
    p->settings.on_message_complete = on_message_complete;
    llhttp_init(&p->ll, HTTP_REQUEST, &p->settings);
    p->ll.data = p;
    gw_http_parser_next(p);
    return 0;
}

void gw_http_parser_free(gw_http_parser *p)
{
    free(p->head);
    free(p->hdrs);
    free(p->body);
    p->head = NULL;
    p->hdrs = NULL;
    p->body = NULL;
}

void gw_http_parser_next(gw_http_parser *p)
{
    memset(&p->req, 0, sizeof(p->req));
    p->head_len = 0;
    p->head_est = 0;
    p->head_raw = 0;
    p->scan_prev = -1;
    p->head_overrun = false;
    p->url_done = false;
    p->head_done = false;
    p->in_field = false;
    p->trailers = false;
    p->trailer_bytes = 0;
    p->value_end = NULL;
    p->started = false;
    p->complete = false;
}

void gw_http_parser_reset(gw_http_parser *p)
{
    gw_http_parser_next(p);
    p->err = 0;
    p->status = 0;
    p->message = NULL;
    llhttp_reset(&p->ll);
}

/*
 * One llhttp_execute() over data[off, len): returns the offset where it
 * stopped and applies the head accounting to the bytes it went through.
 */
static size_t exec_slice(gw_http_parser *p, const char *data, size_t off,
                         size_t len, llhttp_errno_t *e)
{
    bool in_head = !p->head_done;
    size_t end;

    p->exec_base = data + off;
    *e = llhttp_execute(&p->ll, data + off, len - off);
    end = *e == HPE_OK ? len : (size_t)(llhttp_get_error_pos(&p->ll) - data);
    if (in_head && p->err == 0) {
        p->head_raw += end - off;
        scan_head(p, data + off, end - off);
        if (p->err == 0 && p->url_done &&
            p->head_raw > p->limits.max_header_bytes)
            reject(p, 431, "request header fields too large");
    } else if (p->trailers && end > off) {
        p->scan_prev = (unsigned char)data[end - 1];
    }
    return end;
}

int gw_http_parser_feed(gw_http_parser *p, const char *data, size_t len,
                        size_t *consumed)
{
    size_t off = 0;
    llhttp_errno_t e;

    *consumed = 0;
    if (p->err != 0)
        return p->err;
    if (p->complete)
        return -EBUSY;
    if (len == 0)
        return -EAGAIN;
    p->started = true;

    for (;;) {
        bool was_head = !p->head_done;

        off = exec_slice(p, data, off, len, &e);
        *consumed = off;
        if (p->err != 0)
            return p->err;
        if (e == HPE_OK)
            return -EAGAIN;
        if (e != HPE_PAUSED) {
            map_llhttp_error(p, e);
            return p->err;
        }
        llhttp_resume(&p->ll);
        if (p->complete)
            return 0;
        if (was_head && p->head_done && check_head(p) != 0)
            return p->err;
    }
}

const gw_http_request *gw_http_parser_request(const gw_http_parser *p)
{
    return p->complete ? &p->req : NULL;
}

bool gw_http_parser_started(const gw_http_parser *p)
{
    return p->started;
}

int gw_http_parser_status(const gw_http_parser *p)
{
    return p->err ? p->status : 0;
}

const char *gw_http_parser_message(const gw_http_parser *p)
{
    return p->err ? p->message : NULL;
}

const gw_http_header *gw_http_request_header(const gw_http_request *req,
                                             const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const gw_http_header *h = &req->headers[i];

        if (token_eq(h->name, h->name_len, name))
            return h;
    }
    return NULL;
}
