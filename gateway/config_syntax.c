/*
 * config_syntax.c — the grammars of configuration values: listening
 * addresses, DNS servers, backend URLs, path templates, methods, names and
 * header field names (declared in config_syntax.h, and the gw_config_check_*
 * functions of config.h).
 *
 * Everything here is a pure function over a string: no allocation, no I/O,
 * messages are static strings. The grammars are strict on purpose: a
 * configuration is written once and checked by --check, so anything that
 * would be interpreted in a surprising way later (a name the resolver
 * would look up instead of a numeric address, a '?' in a path, a method
 * the HTTP parser refuses) is refused here with a message saying why.
 */
#include "config_syntax.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "llhttp.h"

/* ------------------------------------------------------ character sets */

static bool is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_hex(int ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ':', '@'. */
static bool is_pchar(int ch)
{
    return is_alpha(ch) || is_digit(ch) ||
           (ch != '\0' && strchr("-._~!$&'()*+,;=:@", ch) != NULL);
}

/* RFC 9110 tchar. */
static bool is_tchar(int ch)
{
    return is_alpha(ch) || is_digit(ch) ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* A port: 1 to 5 digits, 1-65535. */
static int parse_port(const char *s, size_t len, int *port, const char **why)
{
    int v = 0;

    if (len == 0) {
        *why = "the port is empty";
        return -EINVAL;
    }
    if (len > 5) {
        *why = "the port must be 1-65535";
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            *why = "the port must be a number";
            return -EINVAL;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535) {
        *why = "the port must be 1-65535";
        return -EINVAL;
    }
    *port = v;
    return 0;
}

/* A numeric address of family af, len bytes at s; into bin (16 bytes) when
 * not NULL. */
static bool numeric_addr(int af, const char *s, size_t len, void *bin)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char scratch[16];

    if (len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(af, tmp, bin != NULL ? bin : scratch) == 1;
}

/* --------------------------------------------------------- addresses */

int gw__parse_listen(const char *s, gw__hostport *hp, const char **why)
{
    const char *colon;
    gw__hostport tmp;
    const char *dummy;

    if (hp == NULL)
        hp = &tmp;
    if (why == NULL)
        why = &dummy;
    memset(hp, 0, sizeof *hp);
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            *why = "expected host:port ('[' without ']')";
            return -EINVAL;
        }
        if (!numeric_addr(AF_INET6, s + 1, (size_t)(close - s - 1), hp->addr)) {
            *why = "expected host:port with a numeric IPv6 address in []";
            return -EINVAL;
        }
        hp->family = AF_INET6;
        colon = close + 1;
        if (*colon != ':') {
            *why = "expected host:port (no port after ']')";
            return -EINVAL;
        }
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            *why = "expected host:port (no port)";
            return -EINVAL;
        }
        if (colon > s) {
            if (!numeric_addr(AF_INET, s, (size_t)(colon - s), hp->addr)) {
                *why = memchr(s, ':', (size_t)(colon - s)) != NULL
                           ? "expected host:port (write an IPv6 address "
                             "in [])"
                           : "expected host:port with a numeric IPv4 "
                             "address, [IPv6] or an empty host";
                return -EINVAL;
            }
            hp->family = AF_INET;
        }
    }
    return parse_port(colon + 1, strlen(colon + 1), &hp->port, why);
}

int gw_config_check_listen(const char *addr, const char **why)
{
    if (addr == NULL) {
        if (why != NULL)
            *why = "no address";
        return -EINVAL;
    }
    return gw__parse_listen(addr, NULL, why);
}

static bool wildcard(const gw__hostport *h)
{
    static const unsigned char zero[16];

    return h->family == 0 ||
           memcmp(h->addr, zero, h->family == AF_INET ? 4 : 16) == 0;
}

bool gw__listen_overlap(const gw__hostport *a, const gw__hostport *b)
{
    if (a->port != b->port)
        return false;
    if (wildcard(a) || wildcard(b))
        return true;
    return a->family == b->family && memcmp(a->addr, b->addr, 16) == 0;
}

bool gw__valid_dns_server(const char *s)
{
    gw__hostport hp;
    size_t len = strlen(s);

    if (numeric_addr(AF_INET, s, len, NULL) ||
        numeric_addr(AF_INET6, s, len, NULL))
        return true;
    return gw__parse_listen(s, &hp, NULL) == 0 && hp.family != 0;
}

/* ---------------------------------------------------------- templates */

static bool is_ident(const char *s, size_t len)
{
    if (len == 0 || is_digit(s[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!(is_alpha(s[i]) || is_digit(s[i]) || s[i] == '_'))
            return false;
    return true;
}

int gw_config_check_template(const char *t, bool route_path, const char **why)
{
    struct {
        const char *s;
        size_t len;
    } names[GW_CONFIG_MAX_PARAMS];
    size_t nnames = 0, nsegments = 0;
    const char *dummy;

    if (why == NULL)
        why = &dummy;
    if (t == NULL || t[0] != '/') {
        *why = "must start with '/'";
        return -EINVAL;
    }
    for (const char *p = t; *p != '\0'; p++) {
        if (*p == '/') {
            if (route_path && ++nsegments > GW_CONFIG_MAX_SEGMENTS) {
                *why = "too many segments (at most 32)";
                return -EINVAL;
            }
            continue;
        }
        if (*p == '%') {
            if (!is_hex(p[1]) || !is_hex(p[2])) {
                *why = "invalid percent-escape (% must be followed by two "
                       "hex digits)";
                return -EINVAL;
            }
            p += 2;
            continue;
        }
        if (*p == '}') {
            *why = "unbalanced '}'";
            return -EINVAL;
        }
        if (*p != '{') {
            if (!is_pchar((unsigned char)*p)) {
                *why = "a character not allowed in a URL path (spaces, "
                       "'?', '#', non-ASCII...: percent-encode it)";
                return -EINVAL;
            }
            continue;
        }
        const char *name = p + 1, *end = name;
        while (*end != '\0' && *end != '}' && *end != '{' && *end != '/')
            end++;
        if (*end == '{') {
            *why = "'{' inside a placeholder";
            return -EINVAL;
        }
        if (*end != '}') {
            *why = "unbalanced '{' (a placeholder is {name} within one "
                   "segment)";
            return -EINVAL;
        }
        size_t len = (size_t)(end - name);
        if (len == 0) {
            *why = "empty placeholder {}";
            return -EINVAL;
        }
        if (!is_ident(name, len)) {
            *why = "a placeholder name must be an identifier "
                   "([A-Za-z_][A-Za-z0-9_]*)";
            return -EINVAL;
        }
        if (len > GW_CONFIG_MAX_NAME) {
            *why = "a placeholder name is longer than 64 bytes";
            return -EINVAL;
        }
        if (route_path) {
            if (p[-1] != '/' || (end[1] != '/' && end[1] != '\0')) {
                *why = "a placeholder must be a whole segment (/a/{id}, "
                       "not /a/x{id})";
                return -EINVAL;
            }
            for (size_t i = 0; i < nnames; i++) {
                if (names[i].len == len && memcmp(names[i].s, name, len) == 0) {
                    *why = "the same placeholder twice";
                    return -EINVAL;
                }
            }
            if (nnames == GW_CONFIG_MAX_PARAMS) {
                *why = "more than 16 placeholders";
                return -EINVAL;
            }
            names[nnames].s = name;
            names[nnames].len = len;
            nnames++;
        }
        p = end;
    }
    return 0;
}

int gw_config_check_method(const char *m, const char **why)
{
    static const char *const known[] = {
#define GW__METHOD_NAME(num, name, string) #string,
        HTTP_METHOD_MAP(GW__METHOD_NAME)
#undef GW__METHOD_NAME
    };
    const char *dummy;

    if (why == NULL)
        why = &dummy;
    bool token = m != NULL && *m != '\0';
    for (const char *p = m; token && *p != '\0'; p++)
        token = is_tchar((unsigned char)*p) && !(*p >= 'a' && *p <= 'z');
    if (!token) {
        *why = "must be an upper-case method token such as \"GET\"";
        return -EINVAL;
    }
    if (strcmp(m, "HEAD") == 0) {
        *why = "HEAD is served by every GET route and cannot have its own";
        return -EINVAL;
    }
    if (strcmp(m, "OPTIONS") == 0) {
        *why = "OPTIONS is answered by the gateway (204 with Allow)";
        return -EINVAL;
    }
    if (strcmp(m, "CONNECT") == 0 || strcmp(m, "TRACE") == 0) {
        *why = "CONNECT and TRACE are answered 501 by the gateway";
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], m) == 0)
            return 0;
    *why = "not a method the HTTP parser accepts (such requests are "
           "answered 400)";
    return -EINVAL;
}

/* --------------------------------------------------------------- URLs */

/* Host of a URL: a name of labels [A-Za-z0-9_-] (not starting or ending
 * with '-'), or a dotted IPv4 address. */
static bool valid_host_name(const char *s, size_t len)
{
    bool numeric = true;
    size_t label = 0;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!(is_alpha(ch) || is_digit(ch) || ch == '-' || ch == '_'))
            return false;
        if (ch == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
        numeric = numeric && is_digit(ch);
    }
    if (label == 0 || s[len - 1] == '-')
        return false;
    return !numeric || numeric_addr(AF_INET, s, len, NULL);
}

/* Checks that s[0..len) is a URL path ('/'-separated pchars and valid
 * escapes). */
static bool valid_url_path(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (s[i] != '/' && !is_pchar((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

const char *gw__parse_url(const char *url, gw__url *u)
{
    const char *sep = strstr(url, "://");
    const char *auth, *auth_end, *host, *port_s = NULL;
    size_t host_len, port_len = 0;
    bool https;

    if (sep == NULL)
        return "must start with http:// or https://";
    if ((size_t)(sep - url) == 4 && strncasecmp(url, "http", 4) == 0)
        https = false;
    else if ((size_t)(sep - url) == 5 && strncasecmp(url, "https", 5) == 0)
        https = true;
    else
        return "the scheme must be http or https";
    auth = sep + 3;
    auth_end = auth + strcspn(auth, "/?#");
    if (memchr(auth, '@', (size_t)(auth_end - auth)) != NULL)
        return "userinfo (user@) is not allowed";
    if (strchr(auth_end, '?') != NULL)
        return "a query (?...) is not allowed";
    if (strchr(auth_end, '#') != NULL)
        return "a fragment (#...) is not allowed";
    if (auth == auth_end)
        return "no host";
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', (size_t)(auth_end - auth));
        if (close == NULL)
            return "'[' without ']' in the host";
        host = auth + 1;
        host_len = (size_t)(close - host);
        if (!numeric_addr(AF_INET6, host, host_len, NULL))
            return "not an IPv6 address inside []";
        if (close + 1 < auth_end) {
            if (close[1] != ':')
                return "unexpected characters after ']'";
            port_s = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', (size_t)(auth_end - auth));
        host = auth;
        host_len = (size_t)((colon != NULL ? colon : auth_end) - auth);
        if (!valid_host_name(host, host_len))
            return "invalid host (a DNS name, a numeric IPv4 address, or "
                   "an IPv6 address in [])";
        if (colon != NULL)
            port_s = colon + 1;
    }
    u->port = https ? 443 : 80;
    if (port_s != NULL) {
        const char *why;
        port_len = (size_t)(auth_end - port_s);
        if (parse_port(port_s, port_len, &u->port, &why) != 0)
            return why;
    }
    size_t path_len = strlen(auth_end);
    if (!valid_url_path(auth_end, path_len))
        return "a character not allowed in a URL path (percent-encode it) "
               "or an invalid percent-escape";
    while (path_len > 0 && auth_end[path_len - 1] == '/')
        path_len--;
    u->https = https;
    u->host = host;
    u->host_len = host_len;
    u->path = auth_end;
    u->path_len = path_len;
    return NULL;
}

/* ---------------------------------------------------- names, headers */

bool gw__valid_name(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > GW_CONFIG_MAX_NAME)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            return false;
    return true;
}

bool gw__reserved_header(const char *h)
{
    static const char *const names[] = {
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Expect",
        "X-Request-Id",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(names[i], h) == 0)
            return true;
    return false;
}

bool gw__header_token(const char *s)
{
    if (*s == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++)
        if (!is_tchar((unsigned char)*p))
            return false;
    return true;
}
