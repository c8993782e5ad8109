/*
 * config_syntax.h — the configuration's value grammars, internal to
 * config.c and route.c (the public checks are in config.h): listening
 * addresses, DNS servers, backend URLs, names and header field names.
 *
 * Pure functions over strings: no allocation, no I/O. A `why` out
 * parameter, when there is one, receives a static message.
 */
#ifndef GW_CONFIG_SYNTAX_H
#define GW_CONFIG_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

/* A listening address: family 0 (empty host: all interfaces), AF_INET or
 * AF_INET6; addr holds the address in network order (4 or 16 bytes). */
typedef struct gw__hostport {
    int family;
    unsigned char addr[16];
    int port;
} gw__hostport;

/* "host:port" as gw_config_check_listen describes it. hp and why may be
 * NULL. Returns 0 or -EINVAL. */
int gw__parse_listen(const char *s, gw__hostport *hp, const char **why);

/* Whether two parsed listeners would claim the same port on overlapping
 * addresses (equal, or either one all interfaces). */
bool gw__listen_overlap(const gw__hostport *a, const gw__hostport *b);

/* A DNS server: "ip", "ip:port" or "[ipv6]:port", numeric only. */
bool gw__valid_dns_server(const char *s);

/* A backend URL, cut into its parts (pointers into the URL). */
typedef struct gw__url {
    bool https;
    const char *host; /* without brackets */
    size_t host_len;
    int port;         /* explicit, or 80 / 443 */
    const char *path; /* the path without trailing '/': "" or "/base" */
    size_t path_len;
} gw__url;

/* Parses an absolute http(s) URL: a host name, numeric IPv4 or [IPv6];
 * an optional port 1-65535; an optional path of RFC 3986 characters with
 * valid escapes; no userinfo, query or fragment. Returns NULL, or a static
 * message saying what is wrong. */
const char *gw__parse_url(const char *url, gw__url *u);

/* A backend or part name: 1-GW_CONFIG_MAX_NAME bytes, no control
 * character, '"' or '\' (names are written verbatim into JSON answers and
 * metric labels). */
bool gw__valid_name(const char *s);
#define GW__NAME_RULE                                                          \
    "a name must be 1-64 bytes without control characters, '\"' or '\\'"

/* A header field name: a non-empty RFC 9110 token. */
bool gw__header_token(const char *s);

/* A header field the gateway sets itself, or a hop-by-hop one: never
 * copied from the client to the parts. */
bool gw__reserved_header(const char *s);

#endif /* GW_CONFIG_SYNTAX_H */
