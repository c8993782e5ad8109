/*
 * dns.h - asynchronous name resolution for backend hosts: c-ares driven by
 * the runtime's netpoller, a TTL cache with a floor and a ceiling, and
 * single-flight (concurrent lookups of one name share one query).
 *
 * Use from goroutines only (inside rt_run()):
 *
 *     gw_resolver *r;
 *     gw_dns_config cfg = {.servers = srv, .nservers = 1};  // or NULL
 *     if (gw_resolver_new(&cfg, &r) != 0) ...
 *     gw_dns_addrs *a;
 *     const char *why;
 *     int err = gw_dns_resolve(r, ctx, "backend.internal", &a, &why);
 *     if (err != 0)
 *         log("dns: %s: %s", gw_dns_strerror(err), why);
 *     char hp[GW_DNS_HOSTPORT_LEN];
 *     gw_dns_hostport(gw_dns_pick(a), 8080, hp, sizeof hp); // "10.0.0.7:8080"
 *     rt_dial(hp, ...);
 *     gw_dns_addrs_release(a);
 *     ...
 *     gw_resolver_free(r);
 */
#ifndef FANFOLD_GW_DNS_H
#define FANFOLD_GW_DNS_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "rt.h"

/*
 * Errors: gw_dns_resolve() returns 0 or one of these negative errno values
 * (gw_dns_strerror() names them), or rt_ctx_err(ctx) (-ECANCELED or
 * -ETIMEDOUT) when the caller's context ended first:
 *   GW_DNS_ENOTFOUND  "no such host" (NXDOMAIN)
 *   GW_DNS_ENODATA    "host has no addresses" (no A or AAAA record)
 *   GW_DNS_ETIMEOUT   "DNS timeout" (no answer within timeout x tries)
 *   GW_DNS_ESERVER    "DNS server failure" (SERVFAIL, REFUSED, a bad
 *                     answer, servers unreachable)
 *   GW_DNS_EBADNAME   "invalid host name"
 *   GW_DNS_ENOMEM     "out of memory"
 *   GW_DNS_ECLOSED    "resolver closed" (gw_resolver_free during a lookup)
 */
#define GW_DNS_ENOTFOUND (-ENOENT)
#define GW_DNS_ENODATA (-ENODATA)
#define GW_DNS_ETIMEOUT (-ETIMEDOUT)
#define GW_DNS_ESERVER (-EIO)
#define GW_DNS_EBADNAME (-EINVAL)
#define GW_DNS_ENOMEM (-ENOMEM)
#define GW_DNS_ECLOSED (-ESHUTDOWN)

/* Message for the values above; a static string. */
const char *gw_dns_strerror(int err);

/* Resolver settings; zero-initialise and set what you need. Mirrors the
 * config section "dns": {"servers": [...], "min_ttl_ms", "max_ttl_ms"}. */
typedef struct gw_dns_config {
    /* Servers as "ip", "ip:port" or "[ipv6]:port". NULL: the system's
     * resolv.conf. A non-NULL list with nservers == 0 is invalid. The
     * strings are copied. /etc/hosts applies either way. */
    const char *const *servers;
    size_t nservers;
    /* Effective TTL = min(max(ttl, min_ttl_ms), max_ttl_ms). 0 = the
     * default below, or the other bound when that is set past it (max
     * 500 alone: min 500). min > max, both set, is invalid. */
    int64_t min_ttl_ms;
    int64_t max_ttl_ms;
    /* c-ares: first per-try timeout and tries per server. 0 = resolv.conf
     * ("options timeout: attempts:") or c-ares' defaults. */
    int timeout_ms;
    int tries;
} gw_dns_config;

#define GW_DNS_DEFAULT_MIN_TTL_MS 1000
#define GW_DNS_DEFAULT_MAX_TTL_MS 60000
/* At most this many names are cached (expired ones are swept first; past
 * it answers are still returned, just not cached). */
#define GW_DNS_CACHE_MAX 4096
/* At most this many addresses are kept per name. */
#define GW_DNS_MAX_ADDRS 32

/*
 * The addresses of one name, immutable once published and reference
 * counted: the cache holds one reference, each successful
 * gw_dns_resolve() hands one to its caller. n >= 1; addr[i] is a
 * sockaddr_in or sockaddr_in6 with port 0; expires is on rt_now()'s clock
 * (RT_FOREVER for a numeric address). Fields below the line are private.
 */
typedef struct gw_dns_addrs {
    size_t n;
    int64_t expires;
    /* -- private -- */
    _Atomic uint32_t refs;
    _Atomic uint32_t next; /* round-robin cursor of gw_dns_pick() */
    struct sockaddr_storage addr[];
} gw_dns_addrs;

typedef struct gw_resolver gw_resolver;

/*
 * Make a resolver (cfg may be NULL: defaults) and start its driver
 * goroutine. Caller owns *out: gw_resolver_free(). Returns 0, -EINVAL for
 * a bad setting or server string, -ENOMEM, -EIO when c-ares fails to
 * initialise, or an errno from epoll/eventfd/the netpoller.
 */
int gw_resolver_new(const gw_dns_config *cfg, gw_resolver **out);

/*
 * Stop the driver goroutine (lookups still in flight end with
 * GW_DNS_ECLOSED), wait for it, and free r. No gw_dns_resolve() on r may
 * be running or start: the owner stops its users first. gw_dns_addrs
 * already handed out stay valid. NULL is a no-op.
 */
void gw_resolver_free(gw_resolver *r);

/*
 * Resolve host to all its addresses (IPv4 and IPv6). A numeric address
 * ("10.0.0.1", "::1", "[::1]") resolves at once without a query; else
 * /etc/hosts, then the cache, then DNS, with concurrent lookups of one
 * name sharing one query. ctx (may be NULL) bounds the wait: when it ends
 * the call returns rt_ctx_err(ctx) at once (the query goes on and may
 * still fill the cache). On success *out holds a reference the caller
 * drops with gw_dns_addrs_release(). On failure *out is NULL and *why
 * (may be NULL) points to a static message with the detail, e.g. "no such
 * host" or "DNS server refused the query".
 */
int gw_dns_resolve(gw_resolver *r, rt_ctx *ctx, const char *host,
                   gw_dns_addrs **out, const char **why);

/* Take another reference / drop one (NULL is a no-op). Any goroutine or
 * thread. */
gw_dns_addrs *gw_dns_addrs_ref(gw_dns_addrs *a);
void gw_dns_addrs_release(gw_dns_addrs *a);

/* The next address round-robin: one atomic increment. A cached result is
 * shared by every caller, so the rotation is across all of them. */
const struct sockaddr_storage *gw_dns_pick(gw_dns_addrs *a);
/* The address after prev (one of a's), wrapping: where a call whose
 * pick refused its connection tries next. Picking again instead could
 * give the refused address back, as other calls move the cursor. */
const struct sockaddr_storage *
gw_dns_next(const gw_dns_addrs *a, const struct sockaddr_storage *prev);

/* Write sa with port as "1.2.3.4:80" or "[::1]:80" (what rt_dial takes).
 * Returns 0, -ENOSPC when len is too small, -EAFNOSUPPORT. */
#define GW_DNS_HOSTPORT_LEN 56
int gw_dns_hostport(const struct sockaddr_storage *sa, int port, char *buf,
                    size_t len);

#endif /* FANFOLD_GW_DNS_H */
