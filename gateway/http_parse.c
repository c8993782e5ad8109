/*
 * http_parse.c — strict HTTP/1.1 request parsing on top of llhttp.
 *
 * llhttp (built with LLHTTP_STRICT_MODE=1) does the tokenising; this file
 * keeps what it reports and adds what strict llhttp 8.1 still lets through,
 * so that the gateway follows DESIGN.md "Contract: responses" to the
 * letter: 400 then close for everything RFC 9112 says a server MUST
 * reject, and the strict reading wherever the RFC allows either.
 *
 * What strict llhttp 8.1 does, found by feeding it each case (the llhttp
 * error, then what this file answers):
 *
 *   rejected by llhttp                                 -> status here
 *   unknown method, lower-case method  HPE_INVALID_METHOD  -> 400
 *   byte outside 0x21-0x7e in the target (CTL, DEL, tab, obs-text)
 *                                      HPE_INVALID_URL     -> 400
 *   "HTTP/1.2", "HTTP/3.0", "HTTP/9.9" HPE_INVALID_VERSION at the
 *                                      last digit (well-formed) -> 505
 *   "HTTP/1.10", "HTTP/11.1", "HTTP/1.1 " HPE_INVALID_VERSION  -> 400
 *   whitespace before a colon, a name that is not a token
 *                                      HPE_INVALID_HEADER_TOKEN -> 400
 *   a CTL other than tab (DEL too) in a value, header or trailer
 *                                      HPE_INVALID_HEADER_TOKEN -> 400
 *   a CR inside a header name          HPE_INVALID_HEADER_TOKEN -> 400
 *   Content-Length "+1", "1 1", "1,1", "0x1", empty
 *                                      HPE_INVALID_CONTENT_LENGTH -> 400
 *   Content-Length over 64 bits        HPE_INVALID_CONTENT_LENGTH -> 413
 *   two Content-Length, Content-Length with Transfer-Encoding
 *                                      HPE_UNEXPECTED_CONTENT_LENGTH -> 400
 *                                      (caught first by note_header())
 *   anything after "chunked" in Transfer-Encoding, in one line or the
 *   next ("chunked, gzip", "chunked,", "chunked" twice)
 *                                      HPE_INVALID_TRANSFER_ENCODING -> 400
 *   a chunk size with a non-hex byte, "+", "0x", BWS
 *                                      HPE_INVALID_CHUNK_SIZE -> 400
 *   a chunk size over 64 bits          HPE_INVALID_CHUNK_SIZE -> 413
 *   a chunk extension off its grammar, missing CRLF after chunk data
 *                                      HPE_STRICT -> 400
 *   (but an empty extension value, "5;a=", passes llhttp: checked here,
 *   on_chunk_extension_value_complete -> 400)
 *   llhttp 8.1 is stricter than RFC 9112 7.1.1 for chunk extensions:
 *   BWS around ";" and "=" (senders MUST NOT send it), a quoted-pair in
 *   a quoted value, and any extension after one with a token value
 *   ("5;a=b;c", HPE_INVALID_CHUNK_SIZE) are refused with a 400. No
 *   lenient flag fixes this; clients practically never send extensions.
 *   "PRI * HTTP/2.0" (the HTTP/2 preface)  HPE_PAUSED_H2_UPGRADE -> 505
 *                                      (caught first as version 2.0)
 *
 *   let through by llhttp (or seen by it only at a span's end), checked
 *   here, by the line scan ahead of llhttp or in a callback -> status
 *   "HTTP/2.0", "HTTP/0.9" (llhttp's list)  on_version_complete -> 505
 *   no version at all ("GET /\r\n", HTTP/0.9: llhttp calls it 0.9 and
 *   reads on): fewer than two spaces in the request line   scan -> 400
 *   PRI with HTTP/1.x (only the HTTP/2 preface uses it)          -> 400
 *   CONNECT, TRACE                             on_method_complete -> 501
 *   two spaces between request-line parts (llhttp accepts)  scan -> 400
 *   "#" in the target (outside its grammar; llhttp accepts)  scan -> 400
 *   a target over GW_HTTP_MAX_TARGET_BYTES                   scan -> 414
 *   request line + headers over max_header_bytes (the trailer section
 *   counts apart), at the byte that crosses it             scan -> 431
 *   a CR not followed by LF (llhttp mostly refuses the next byte)
 *                                                     scan -> 400 bare CR
 *   "*" target with a method other than OPTIONS  on_url_complete -> 400
 *   absolute-form: a scheme other than http/https, an empty host,
 *   userinfo, a host or port off the grammar     on_url_complete -> 400
 *   a bare LF ending any head or trailer line (strict llhttp accepts it
 *   after the request line, a header line, and in trailers) line scan -> 400
 *   obsolete line folding, whitespace before the first header, and in
 *   trailers (llhttp joins the lines)                  line scan -> 400
 *   an empty header name (": v")          on_header_field_complete -> 400
 *   several Host; Transfer-Encoding in HTTP/1.0     note_header() -> 400
 *   HTTP/1.1 without Host; Host empty, with userinfo, or not
 *   uri-host [":" port] (RFC 9112 3.2: MUST 400)     check_host() -> 400
 *   Transfer-Encoding empty, with an empty element (", chunked",
 *   "gzip,,chunked"), a malformed coding, "chunked;x", a final coding
 *   that is not chunked ("gzip", "identity": llhttp pauses for these
 *   only after the head)                 check_transfer_encoding() -> 400
 *   "gzip, chunked" (another coding before chunked)                 -> 501
 *   Expect other than a list of 100-continue        check_expect() -> 417
 *   Content-Length over max_body_bytes, at the head   check_head() -> 413
 *   a chunked body growing over it        on_chunk_header, on_body -> 413
 *
 * Choices where the contract leaves room, stated once here:
 *  - Several Content-Length fields with equal values: RFC 9110 8.6 lets a
 *    recipient either reject them or use the one value. The contract takes
 *    the strict reading wherever the RFC allows either, and strict llhttp
 *    rejects any second Content-Length anyway: 400.
 *  - "chunked" followed only by whitespace is chunked, except a trailing
 *    tab: llhttp then does not set F_CHUNKED and could not frame the body,
 *    so that is a 400 too (no request is accepted that llhttp cannot
 *    frame).
 *  - Empty Expect list elements are ignored (RFC 9110 5.6.1 says a
 *    recipient MUST accept them); "100-continue" in HTTP/1.0 is ignored
 *    (RFC 9110 10.1.1), any other expectation is 417 in either version.
 *  - Empty and several Host fields are refused in HTTP/1.0 too.
 *  - Visible ASCII that RFC 3986 does not allow in a target ('"', '<',
 *    '{', '|', '^'...) passes: the contract names visible ASCII as the
 *    rule; '#' alone is refused, as the brief's grammar rule says.
 *    Percent-escapes are checked by the router, which decodes.
 *  - Leading empty lines before a request line are skipped (RFC 9112 2.2
 *    SHOULD; llhttp does it), a bare LF among them is a 400.
 *  - When one request has several faults, the one at the earliest byte
 *    answers, however the bytes were sliced: the scan runs ahead and
 *    llhttp stops before the scan's fault (llhttp reports an unsupported
 *    version or a 64-bit overflow one byte late; found first, they still
 *    win). What needs the whole head (Host, Transfer-Encoding, Expect,
 *    Content-Length over the limit) is checked at its end, after every
 *    fault in its bytes.
 *
 * Data and invariants:
 *  - head is one buffer of limits.max_header_bytes bytes, allocated once at
 *    init. The target, then each header name and value, are appended to it
 *    as llhttp reports them; pieces of one token arrive in order, so every
 *    token is contiguous and pointers into head stay valid until the
 *    request is released. head_len <= max_header_bytes always.
 *  - The line scan counts the raw bytes of the head (request line,
 *    headers, final CRLF, and any empty lines before the request line) and
 *    of the trailer section, and refuses the byte that crosses
 *    max_header_bytes (431) before llhttp sees it; so the stored tokens,
 *    a subset of those bytes, always fit in head, and the header array
 *    is bounded too. A target over GW_HTTP_MAX_TARGET_BYTES is a 414 even
 *    when it also overruns max_header_bytes: while the target is being
 *    read the 431 waits for its end (on_url notes head_overrun meanwhile
 *    and stores no more).
 *  - The raw bytes of the head and of the trailer section are scanned
 *    ahead of llhttp (scan_* carry the state across slices) for what
 *    llhttp does not see as lines: bare LF, bare CR, folding, the request
 *    line's spaces. llhttp then runs only up to the first such fault, so
 *    no callback sees a byte past it, and an answer never depends on
 *    where the slices of a request end (a test checks this on mutated
 *    requests). llhttp pauses in on_chunk_header for the last chunk, so
 *    the trailer section starts exactly at a slice boundary.
 *  - check_head() runs once per request, when llhttp has paused at the end
 *    of the head and before it reads any body byte; head_checked then
 *    says the request fields are final. In stop-at-head mode feed returns
 *    GW_HTTP_HEAD right there.
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

#define BODY_INITIAL_CAP 4096

/* scan_line: where the line scan is. */
#define SCAN_BEFORE_REQUEST_LINE 0 /* empty lines may come first */
#define SCAN_REQUEST_LINE 1
#define SCAN_FIELDS 2 /* header or trailer field lines */
#define SCAN_DONE 3   /* past the empty line that ends the section */

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

/* --- character classes (RFC 9110 5.6, RFC 3986 2) */

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_tchar(int c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_unreserved(int c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static bool is_sub_delim(int c)
{
    return c != 0 && strchr("!$&'()*+,;=", c) != NULL;
}

static bool is_ows(int c)
{
    return c == ' ' || c == '\t';
}

static bool token_eq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(s, lit, len) == 0;
}

static size_t skip_ows(const char *s, size_t i, size_t len)
{
    while (i < len && is_ows(s[i]))
        i++;
    return i;
}

static size_t skip_token(const char *s, size_t i, size_t len)
{
    while (i < len && is_tchar((unsigned char)s[i]))
        i++;
    return i;
}

/* quoted-string (RFC 9110 5.6.4) at s[*i] == '"'; advances past it. */
static bool skip_quoted(const char *s, size_t len, size_t *i)
{
    for (size_t j = *i + 1; j < len; j++) {
        int c = (unsigned char)s[j];

        if (c == '"') {
            *i = j + 1;
            return true;
        }
        if (c == '\\' && ++j == len)
            return false;
        c = (unsigned char)s[j];
        if (c != '\t' && (c < 0x20 || c == 0x7f))
            return false;
    }
    return false;
}

/* --- the authority in Host and in an absolute-form target */

enum { AUTH_OK, AUTH_EMPTY, AUTH_USERINFO, AUTH_INVALID };

/*
 * Checks uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2): an IP-literal
 * in brackets or a reg-name (an IPv4 address is one), then digits. "@"
 * means userinfo, which RFC 9110 4.2.4 says to treat as an error; an empty
 * host is refused (RFC 9110 4.2.1: a recipient MUST reject it).
 */
static int check_authority(const char *s, size_t len)
{
    size_t i = 0;

    if (memchr(s, '@', len) != NULL)
        return AUTH_USERINFO;
    if (len > 0 && s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++)
            if (!is_unreserved(s[i]) && !is_sub_delim(s[i]) && s[i] != ':')
                return AUTH_INVALID;
        if (i == len || i == 1)
            return AUTH_INVALID;
        i++;
    } else {
        for (; i < len && s[i] != ':'; i++) {
            if (s[i] == '%' && i + 2 < len && is_hex(s[i + 1]) &&
                is_hex(s[i + 2]))
                i += 2;
            else if (!is_unreserved(s[i]) && !is_sub_delim(s[i]))
                return AUTH_INVALID;
        }
        if (i == 0)
            return AUTH_EMPTY;
    }
    if (i < len && s[i] != ':')
        return AUTH_INVALID;
    for (i++; i < len; i++)
        if (!is_digit(s[i]))
            return AUTH_INVALID;
    return AUTH_OK;
}

/* --- the request line */

static int on_message_begin(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->started = true;
    return 0;
}

/* CONNECT (a tunnel) and TRACE are not served: 501 before the target. */
static int on_method_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    if (ll->method == HTTP_CONNECT)
        return reject(p, 501, "CONNECT not supported");
    if (ll->method == HTTP_TRACE)
        return reject(p, 501, "TRACE not supported");
    return 0;
}

/*
 * Stores a piece of the target. Its length (414) and "#" are checked by
 * the line scan, at the byte; llhttp refuses bytes outside visible ASCII
 * before they get here: the check is a backstop.
 */
static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);

    if (p->req.target_len == 0)
        p->req.target = p->head + p->head_len;
    p->req.target_len += len;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)at[i];

        if (c < 0x21 || c > 0x7e || c == '#')
            return reject(p, 400, "invalid byte in request target");
    }
    if (p->head_overrun || len > p->limits.max_header_bytes - p->head_len) {
        p->head_overrun = true;
        return 0;
    }
    memcpy(p->head + p->head_len, at, len);
    p->head_len += len;
    return 0;
}

/*
 * Absolute-form (RFC 9112 3.2.2): "http" or "https" "://" authority, then
 * the path and query. llhttp has checked the scheme's characters and the
 * "://". A gateway is no proxy: another scheme is a 400, not a fetch.
 */
static int split_absolute(gw_http_parser *p, const char **rest)
{
    gw_http_request *r = &p->req;
    const char *t = r->target, *end = t + r->target_len;
    const char *colon = memchr(t, ':', r->target_len), *a, *a_end;

    if (colon == NULL || end - colon < 3 || colon[1] != '/' || colon[2] != '/')
        return reject(p, 400, "invalid request target");
    if (!token_eq(t, colon - t, "http") && !token_eq(t, colon - t, "https"))
        return reject(p, 400, "request target scheme not http or https");
    a = colon + 3;
    for (a_end = a; a_end < end && *a_end != '/' && *a_end != '?'; a_end++)
        ;
    switch (check_authority(a, a_end - a)) {
    case AUTH_OK:
        break;
    case AUTH_EMPTY:
        return reject(p, 400, "empty host in request target");
    case AUTH_USERINFO:
        return reject(p, 400, "userinfo in request target");
    default:
        return reject(p, 400, "invalid host in request target");
    }
    r->host = a;
    r->host_len = a_end - a;
    *rest = a_end;
    return 0;
}

/* Sets target_form, path and query; refuses "*" without OPTIONS. */
static int split_target(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    const char *end = r->target + r->target_len, *path = r->target, *q;

    if (r->target_len == 1 && r->target[0] == '*') {
        /* PRI is the HTTP/2 preface: its version answers it (505). */
        if (p->ll.method != HTTP_OPTIONS && p->ll.method != HTTP_PRI)
            return reject(p, 400, "asterisk-form target without OPTIONS");
        r->target_form = GW_HTTP_TARGET_ASTERISK;
    } else if (r->target_len > 0 && r->target[0] == '/') {
        r->target_form = GW_HTTP_TARGET_ORIGIN;
    } else {
        r->target_form = GW_HTTP_TARGET_ABSOLUTE;
        if (r->target_len == 0)
            return reject(p, 400, "invalid request target");
        if (split_absolute(p, &path) != 0)
            return -1;
    }
    q = memchr(path, '?', end - path);
    r->path = path;
    r->path_len = (q != NULL ? q : end) - path;
    if (r->path_len == 0) {
        r->path = "/";
        r->path_len = 1;
    }
    r->query = q != NULL ? q + 1 : "";
    r->query_len = q != NULL ? (size_t)(end - q - 1) : 0;
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->url_done = true;
    if (p->head_overrun)
        return reject(p, 431, "request header fields too large");
    return split_target(p);
}

/* Keeps the first bytes of the version: tells 505 from 400 on an error. */
static int on_version(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);

    for (size_t i = 0; i < len; i++, p->version_len++)
        if (p->version_len < sizeof p->version)
            p->version[p->version_len] = at[i];
    return 0;
}

/*
 * llhttp accepts 0.9, 1.0, 1.1 and 2.0 here; only 1.0 and 1.1 are served.
 * "PRI" is only ever the HTTP/2 preface, which comes with 2.0.
 */
static int on_version_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->version_done = true;
    if (ll->http_major != 1 || ll->http_minor > 1)
        return reject(p, 505, "HTTP version not supported");
    if (ll->method == HTTP_PRI)
        return reject(p, 400, "malformed request line");
    return 0;
}

/*
 * llhttp refused the version. It refuses a well-formed but unsupported
 * one ("1.2") at its last digit, before on_version_complete and before it
 * sees the next byte; a malformed one ("1.10", "1.1 ") after it, or
 * earlier ("11.1", "1.x"). So: DIGIT "." DIGIT read, not completed: 505.
 */
static bool version_unsupported(const gw_http_parser *p)
{
    return !p->version_done && p->version_len == 3 && is_digit(p->version[0]) &&
           p->version[1] == '.' && is_digit(p->version[2]);
}

/* --- headers */

/* Appends to head. The line scan keeps the raw head within
 * max_header_bytes, so this cannot overrun; checked all the same. */
static int head_append(gw_http_parser *p, const char *at, size_t len)
{
    if (len > p->limits.max_header_bytes - p->head_len)
        return reject(p, 431, "request header fields too large");
    memcpy(p->head + p->head_len, at, len);
    p->head_len += len;
    return 0;
}

/* Makes room for one more header; a header line takes at least 4 raw
 * bytes ("X:" CRLF), so the count is bounded by max_header_bytes / 4. */
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

    p->field_len += len;
    if (p->trailers) /* trailer fields are checked, not kept */
        return 0;
    if (!p->in_field) {
        if (p->req.nheaders == p->hdrs_cap && grow_headers(p) != 0)
            return -1;
        h = &p->hdrs[p->req.nheaders++];
        h->name = p->head + p->head_len;
        h->name_len = 0;
        h->value = NULL;
        h->value_len = 0;
        p->in_field = true;
    }
    h = &p->hdrs[p->req.nheaders - 1];
    h->name_len += len;
    return head_append(p, at, len);
}

/*
 * Notes the fields that frame or route the request as their names end,
 * and refuses at once what no value can make right: a second Host, a
 * second Content-Length, both framings, Transfer-Encoding in HTTP/1.0.
 */
static int note_header(gw_http_parser *p, size_t idx)
{
    const gw_http_header *h = &p->hdrs[idx];

    if (token_eq(h->name, h->name_len, "host")) {
        if (p->host_idx != 0)
            return reject(p, 400, "several Host headers");
        p->host_idx = idx + 1;
    } else if (token_eq(h->name, h->name_len, "content-length")) {
        if (p->has_cl)
            return reject(p, 400, "several Content-Length headers");
        if (p->has_te)
            return reject(p, 400, "Content-Length with Transfer-Encoding");
        p->has_cl = true;
    } else if (token_eq(h->name, h->name_len, "transfer-encoding")) {
        if (p->has_cl)
            return reject(p, 400, "Transfer-Encoding with Content-Length");
        if (p->ll.http_major == 1 && p->ll.http_minor == 0)
            return reject(p, 400, "Transfer-Encoding in HTTP/1.0 request");
        p->has_te = true;
    }
    return 0;
}

/* The name is complete: the next name starts a new header. */
static int on_header_field_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);
    bool empty = p->field_len == 0;

    p->in_field = false;
    p->field_len = 0;
    p->in_value = true;
    if (empty)
        return reject(p, 400, "empty header name");
    if (p->trailers)
        return 0;
    return note_header(p, p->req.nheaders - 1);
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    gw_http_parser *p = from_ll(ll);
    gw_http_header *h;

    if (p->trailers)
        return 0;
    h = &p->hdrs[p->req.nheaders - 1];
    if (h->value == NULL)
        h->value = p->head + p->head_len;
    h->value_len += len;
    return head_append(p, at, len);
}

static int on_header_value_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);
    gw_http_header *h;

    p->in_value = false;
    if (p->trailers || p->req.nheaders == 0)
        return 0;
    h = &p->hdrs[p->req.nheaders - 1];
    if (h->value == NULL)
        h->value = p->head + p->head_len;
    while (h->value_len > 0 && is_ows(h->value[h->value_len - 1]))
        h->value_len--;
    return 0;
}

/*
 * Pause here so feed knows where the head ends: it then checks what needs
 * the whole head (check_head()) before llhttp reads any body byte.
 * Upgrade offers (e.g. h2c) are ignored, as RFC 9110 allows, by clearing
 * llhttp's flag.
 */
static int on_headers_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    if (!p->version_done)
        return reject(p, 400, "missing HTTP version");
    ll->upgrade = 0;
    p->head_done = true;
    p->in_field = false;
    return HPE_PAUSED;
}

/* --- the checks that need the whole head */

/* RFC 9112 3.2: MUST 400 without Host in HTTP/1.1, or with a bad one. */
static int check_host(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    const gw_http_header *h;

    if (p->host_idx == 0) {
        if (r->version_minor >= 1)
            return reject(p, 400, "missing Host header");
        return 0;
    }
    h = &p->hdrs[p->host_idx - 1];
    switch (check_authority(h->value, h->value_len)) {
    case AUTH_OK:
        break;
    case AUTH_EMPTY:
        return reject(p, 400, "empty Host header");
    case AUTH_USERINFO:
        return reject(p, 400, "userinfo in Host header");
    default:
        return reject(p, 400, "invalid Host header");
    }
    if (r->target_form != GW_HTTP_TARGET_ABSOLUTE) {
        r->host = h->value;
        r->host_len = h->value_len;
    }
    return 0;
}

/*
 * One transfer-coding at s[*i] (RFC 9112 7, RFC 9110 5.6.6): token
 * *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ). Sets
 * *name_len, and *params when it has parameters; false when malformed.
 */
static bool parse_coding(const char *s, size_t len, size_t *i, size_t *name_len,
                         bool *params)
{
    size_t j = skip_token(s, *i, len);

    if (j == *i)
        return false;
    *name_len = j - *i;
    *params = false;
    for (;;) {
        size_t k = skip_ows(s, j, len), n;

        if (k == len || s[k] != ';')
            break;
        k = skip_ows(s, k + 1, len);
        n = skip_token(s, k, len);
        if (n == k)
            return false;
        n = skip_ows(s, n, len);
        if (n == len || s[n] != '=')
            return false;
        k = skip_ows(s, n + 1, len);
        if (k < len && s[k] == '"') {
            if (!skip_quoted(s, len, &k))
                return false;
        } else {
            n = skip_token(s, k, len);
            if (n == k)
                return false;
            k = n;
        }
        j = k;
        *params = true;
    }
    *i = j;
    return true;
}

/*
 * Transfer-Encoding is accepted only as exactly "chunked" (coding names
 * compare case-insensitively). The list is every Transfer-Encoding line
 * in order (RFC 9110 5.3). 501 only when it is well-formed and ends in
 * one "chunked" with other codings before it; 400 for everything else:
 * an empty value or element (strict, though RFC 9110 5.6.1 tolerates
 * empty elements: the contract says so), "chunked" twice or with
 * parameters, a final coding that is not chunked (the body's length
 * cannot be known, RFC 9112 6.3).
 */
static int check_transfer_encoding(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    bool chunked = false, other = false, last_chunked = false;

    for (size_t n = 0; n < r->nheaders; n++) {
        const gw_http_header *h = &p->hdrs[n];
        const char *s = h->value;
        size_t len = h->value_len, i = 0;

        if (!token_eq(h->name, h->name_len, "transfer-encoding"))
            continue;
        if (len == 0)
            return reject(p, 400, "empty Transfer-Encoding");
        for (;;) {
            size_t start, name_len;
            bool params;

            i = skip_ows(s, i, len);
            if (i == len || s[i] == ',')
                return reject(p, 400, "empty Transfer-Encoding element");
            start = i;
            if (!parse_coding(s, len, &i, &name_len, &params))
                return reject(p, 400, "invalid Transfer-Encoding");
            last_chunked = token_eq(s + start, name_len, "chunked");
            if (last_chunked && chunked)
                return reject(p, 400, "chunked more than once");
            if (last_chunked && params)
                return reject(p, 400, "invalid Transfer-Encoding");
            chunked = chunked || last_chunked;
            other = other || !last_chunked;
            i = skip_ows(s, i, len);
            if (i == len)
                break;
            if (s[i] != ',')
                return reject(p, 400, "invalid Transfer-Encoding");
            i++;
        }
    }
    if (!last_chunked)
        return reject(p, 400, "final transfer coding not chunked");
    if (other)
        return reject(p, 501, "transfer coding not implemented");
    if (!(p->ll.flags & F_CHUNKED))
        return reject(p, 400, "invalid Transfer-Encoding");
    r->chunked = true;
    return 0;
}

/*
 * Expect (RFC 9110 10.1.1) is a list; 100-continue is the only
 * expectation defined, anything else is a 417. Empty elements are
 * skipped (RFC 9110 5.6.1). An HTTP/1.0 request's 100-continue is ignored.
 */
static int check_expect(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    bool cont = false;

    for (size_t n = 0; n < r->nheaders; n++) {
        const gw_http_header *h = &p->hdrs[n];
        const char *s = h->value;
        size_t len = h->value_len, i = 0;

        if (!token_eq(h->name, h->name_len, "expect"))
            continue;
        while (i < len) {
            const char *comma;
            size_t start = skip_ows(s, i, len), end;

            comma = memchr(s + start, ',', len - start);
            end = comma != NULL ? (size_t)(comma - s) : len;
            i = comma != NULL ? end + 1 : len;
            while (end > start && is_ows(s[end - 1]))
                end--;
            if (end == start)
                continue;
            if (!token_eq(s + start, end - start, "100-continue"))
                return reject(p, 417, "expectation failed");
            cont = true;
        }
    }
    r->expect_continue = cont && r->version_minor >= 1;
    return 0;
}

/*
 * Checks what needs the whole head and fills in the request; runs once,
 * with llhttp paused at the end of the head, before any body byte.
 */
static int check_head(gw_http_parser *p)
{
    gw_http_request *r = &p->req;
    llhttp_t *ll = &p->ll;

    r->method_id = ll->method;
    r->method = llhttp_method_name((llhttp_method_t)ll->method);
    r->version_major = ll->http_major;
    r->version_minor = ll->http_minor;
    r->headers = p->hdrs;
    if (check_host(p) != 0)
        return -1;
    if (p->has_te && check_transfer_encoding(p) != 0)
        return -1;
    if (check_expect(p) != 0)
        return -1;
    if (ll->flags & F_CONTENT_LENGTH) {
        r->has_content_length = true;
        r->content_length = ll->content_length;
        if (r->content_length > p->limits.max_body_bytes)
            return reject(p, 413, "request body too large");
    }
    r->keep_alive = llhttp_should_keep_alive(ll) != 0;
    p->head_checked = true;
    return 0;
}

/* --- the body */

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

static int on_chunk_extension_value(llhttp_t *ll, const char *at, size_t len)
{
    (void)at;
    from_ll(ll)->ext_value_len += len;
    return 0;
}

/* llhttp 8.1 accepts "5;a=": chunk-ext-val is 1*tchar or quoted-string. */
static int on_chunk_extension_value_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);
    bool empty = p->ext_value_len == 0;

    p->ext_value_len = 0;
    if (empty)
        return reject(p, 400, "invalid chunk extension");
    return 0;
}

/* A chunk growing the body over the cap is a 413 before its data. At the
 * last chunk, pause: the trailer section starts where llhttp stops. */
static int on_chunk_header(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    if (ll->content_length > p->limits.max_body_bytes - p->req.body_len)
        return reject(p, 413, "request body too large");
    if (ll->content_length != 0)
        return 0;
    p->trailers = true;
    p->scan_prev = '\n';
    p->scan_line = SCAN_FIELDS;
    p->scan_col = 0;
    p->scan_bytes = 0;
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *ll)
{
    gw_http_parser *p = from_ll(ll);

    p->req.keep_alive = llhttp_should_keep_alive(ll) != 0;
    p->req.body = p->body_fn == NULL && p->req.body_len ? p->body : NULL;
    p->complete = true;
    return HPE_PAUSED;
}

/* --- raw line scan */

/* A fault the line scan found, at the byte it stopped at. */
typedef struct scan_fault {
    int status; /* 0 when none */
    const char *message;
} scan_fault;

static bool scan_fail(scan_fault *f, int status, const char *message)
{
    f->status = status;
    f->message = message;
    return true;
}

/*
 * The checks of one byte of the request line (scan_spaces says which part
 * it is in): two spaces in a row, no version (the line ends with fewer
 * than two spaces: HTTP/0.9), "#" in the target, a target over 8 KiB.
 */
static bool scan_request_line(gw_http_parser *p, int c, int prev, scan_fault *f)
{
    if (c == ' ' && prev == ' ')
        return scan_fail(f, 400, "malformed request line");
    if (c == ' ') {
        p->scan_spaces++;
    } else if (c == '\n') {
        if (p->scan_spaces < 2)
            return scan_fail(f, 400, "missing HTTP version");
        p->scan_line = SCAN_FIELDS;
    } else if (p->scan_spaces == 1) {
        if (c == '#')
            return scan_fail(f, 400, "fragment in request target");
        if (++p->scan_target > GW_HTTP_MAX_TARGET_BYTES)
            return scan_fail(f, 414, "request target too long");
    }
    return false;
}

/*
 * Scans the raw bytes of the head or of the trailer section ahead of
 * llhttp, for what it does not report or reports only at a span's end: a
 * bare LF or bare CR line ending, a line starting with whitespace
 * (obsolete folding, or whitespace before the first field), the request
 * line's checks above, and the section's size (431; in the head not
 * before the target has ended, so that a long target is a 414). It finds
 * the end of the section itself, the first empty line, which is
 * unambiguous once every line ends in CRLF. Returns the number of sound
 * bytes: up to the end of the section, or up to the fault set in *f.
 */
static size_t scan_lines(gw_http_parser *p, const char *at, size_t len,
                         scan_fault *f)
{
    int prev = p->scan_prev;
    size_t i;

    f->status = 0;
    for (i = 0; i < len && p->scan_line != SCAN_DONE; i++) {
        int c = (unsigned char)at[i];
        bool bad = false;

        if (prev == '\r' && c != '\n') {
            bad = scan_fail(f, 400, "bare CR");
        } else if (c == '\n' && prev != '\r') {
            bad = scan_fail(f, 400, "bare LF line ending");
        } else if (p->scan_line == SCAN_BEFORE_REQUEST_LINE) {
            if (c != '\r' && c != '\n')
                p->scan_line = SCAN_REQUEST_LINE;
        } else if (p->scan_line == SCAN_REQUEST_LINE) {
            bad = scan_request_line(p, c, prev, f);
        } else if (c == '\n') {
            if (p->scan_col == 1) /* the line was just its CR */
                p->scan_line = SCAN_DONE;
            p->scan_col = 0;
        } else {
            if (p->scan_col == 0 && is_ows(c))
                bad = scan_fail(f, 400, "obsolete line folding");
            p->scan_col++;
        }
        if (!bad && ++p->scan_bytes > p->limits.max_header_bytes &&
            (p->scan_line != SCAN_REQUEST_LINE || p->scan_spaces >= 2))
            bad = scan_fail(f, 431, "request header fields too large");
        if (bad)
            break;
        prev = c;
    }
    p->scan_prev = prev;
    return i;
}

/*
 * A Content-Length or chunk size that does not fit in 64 bits is a well-
 * formed length over any max_body_bytes: a 413, not a 400. llhttp 8.1
 * gives no other sign of it than its reason (and reports the error one
 * byte past the digit), so this compares the reason; another llhttp would
 * only turn such a 413 into a 400.
 */
static bool number_overflow(const llhttp_t *ll)
{
    const char *why = llhttp_get_error_reason(ll);

    return why != NULL && (strcmp(why, "Content-Length overflow") == 0 ||
                           strcmp(why, "Chunk size overflow") == 0);
}

/* Turns an llhttp error into a rejection with a status and message. */
static int map_llhttp_error(gw_http_parser *p, llhttp_errno_t e)
{
    switch (e) {
    case HPE_INVALID_METHOD:
        return reject(p, 400, "unknown method");
    case HPE_INVALID_URL:
        return reject(p, 400, "invalid request target");
    case HPE_INVALID_VERSION:
        if (version_unsupported(p))
            return reject(p, 505, "HTTP version not supported");
        return reject(p, 400, "malformed request line");
    case HPE_PAUSED_H2_UPGRADE:
        return reject(p, 505, "HTTP version not supported");
    case HPE_INVALID_HEADER_TOKEN:
        if (p->trailers)
            return reject(p, 400, "invalid trailer field");
        if (p->in_value)
            return reject(p, 400, "invalid character in header value");
        return reject(p, 400, "invalid header name");
    case HPE_INVALID_CONTENT_LENGTH:
        if (number_overflow(&p->ll))
            return reject(p, 413, "request body too large");
        return reject(p, 400, "invalid Content-Length");
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return reject(p, 400, "invalid Content-Length");
    case HPE_INVALID_TRANSFER_ENCODING:
        return reject(p, 400, "chunked not the final transfer coding");
    case HPE_INVALID_CHUNK_SIZE:
        if (number_overflow(&p->ll))
            return reject(p, 413, "request body too large");
        return reject(p, 400, "invalid chunk size");
    default:
        break;
    }
    if (p->trailers)
        return reject(p, 400, "invalid trailer section");
    if (p->head_done)
        return reject(p, 400, "invalid chunked body");
    return reject(p, 400, "malformed request");
}

/* --- the parser */

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
    p->settings.on_method_complete = on_method_complete;
    p->settings.on_url = on_url;
    p->settings.on_url_complete = on_url_complete;
    p->settings.on_version = on_version;
    p->settings.on_version_complete = on_version_complete;
    p->settings.on_header_field = on_header_field;
    p->settings.on_header_field_complete = on_header_field_complete;
    p->settings.on_header_value = on_header_value;
    p->settings.on_header_value_complete = on_header_value_complete;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_chunk_extension_value = on_chunk_extension_value;
    p->settings.on_chunk_extension_value_complete =
        on_chunk_extension_value_complete;
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

void gw_http_parser_stop_at_head(gw_http_parser *p, bool on)
{
    p->stop_at_head = on;
}

/* A request without a body whose head was checked: llhttp completes it
 * without another byte. */
static bool finish_bodyless(gw_http_parser *p)
{
    if (!p->head_checked || gw_http_request_has_body(&p->req))
        return false;
    if (llhttp_execute(&p->ll, "", 0) != HPE_PAUSED || !p->complete)
        return false;
    llhttp_resume(&p->ll);
    return true;
}

void gw_http_parser_next(gw_http_parser *p)
{
    if (p->err == 0 && p->started && !p->complete && !finish_bodyless(p)) {
        p->err = -EINVAL;
        p->status = 0;
        p->message = "request released before it was complete";
    }
    memset(&p->req, 0, sizeof(p->req));
    p->head_len = 0;
    p->scan_prev = -1;
    p->scan_line = SCAN_BEFORE_REQUEST_LINE;
    p->scan_col = 0;
    p->scan_spaces = 0;
    p->scan_bytes = 0;
    p->scan_target = 0;
    p->head_overrun = false;
    p->url_done = false;
    p->version_done = false;
    p->version_len = 0;
    p->head_done = false;
    p->head_checked = false;
    p->in_field = false;
    p->field_len = 0;
    p->in_value = false;
    p->host_idx = 0;
    p->has_cl = false;
    p->has_te = false;
    p->ext_value_len = 0;
    p->trailers = false;
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
 * One llhttp_execute() from data[off]: returns the offset where it
 * stopped. In the head and the trailer section the bytes are scanned
 * first (scan_lines()); llhttp then runs only up to the first fault the
 * scan found, so a fault llhttp finds earlier wins, and no callback ever
 * sees a byte past it: the answer does not depend on where slices end.
 */
static size_t exec_slice(gw_http_parser *p, const char *data, size_t off,
                         size_t len, llhttp_errno_t *e)
{
    scan_fault f = {0, NULL};
    size_t stop = len, end;

    if (!p->head_done || p->trailers) {
        stop = off + scan_lines(p, data + off, len - off, &f);
        if (f.status == 0)
            stop = len; /* llhttp pauses at the section's end itself */
    }
    *e = HPE_OK;
    end = stop;
    if (stop > off || f.status == 0) {
        *e = llhttp_execute(&p->ll, data + off, stop - off);
        if (*e != HPE_OK)
            end = (size_t)(llhttp_get_error_pos(&p->ll) - data);
    }
    if (p->err == 0 && *e == HPE_OK && f.status != 0)
        reject(p, f.status, f.message);
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
    /* After the head, an empty feed may still complete a request. */
    if (len == 0 && !p->head_checked)
        return -EAGAIN;
    if (data == NULL)
        data = "";
    if (len > 0)
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
        if (was_head && p->head_done) {
            if (check_head(p) != 0)
                return p->err;
            if (p->stop_at_head)
                return GW_HTTP_HEAD;
        }
    }
}

const gw_http_request *gw_http_parser_request(const gw_http_parser *p)
{
    return p->complete && p->err == 0 ? &p->req : NULL;
}

const gw_http_request *gw_http_parser_head(const gw_http_parser *p)
{
    return p->head_checked ? &p->req : NULL;
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

bool gw_http_request_has_body(const gw_http_request *r)
{
    return r->chunked || (r->has_content_length && r->content_length > 0);
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
