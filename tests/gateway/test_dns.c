/*
 * test_dns.c - gateway/dns.c against a DNS server that runs inside the
 * test: a goroutine with a UDP socket on 127.0.0.1 (a free port), on the
 * netpoller, plus a TCP listener on the same port for answers that do
 * not fit ("truncated" over UDP). It answers A and AAAA questions from a
 * table with chosen TTLs, counts the questions per name and type, answers
 * NXDOMAIN for unknown names, and can delay an answer, answer SERVFAIL,
 * or never answer.
 *
 * Each test runs its body as the main goroutine of rt_run(). cmocka's
 * assertions longjmp, which must not happen on a goroutine stack, so the
 * bodies record failures with CHECK() and the test fails after rt_run()
 * returned. Every body stops its server and frees its resolver; leaks are
 * left to AddressSanitizer (make test-asan). Every wait is bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"
#include "rt.h"

#include "../rt_check.h"

/* ------------------------------------------------------------- helpers */

static void run(void (*fn)(void *), void *arg)
{
    rt_check_run(0, fn, arg);
}

/* errno through a call: its address depends on the thread, and a
 * goroutine may change threads across a park. */
static __attribute__((noinline)) int errno_get(void)
{
    return errno;
}

/* ------------------------------------------------- the test DNS server */

#define T_A 1
#define T_AAAA 28

typedef struct rec {
    const char *name;
    const char *addrs[4]; /* an IPv6 address (':') answers AAAA */
    uint32_t ttl;         /* seconds */
    int delay_ms;         /* answer this much later */
    int rcode;            /* non-zero: answer this rcode, no records */
    int never;            /* never answer */
    int tc;               /* over UDP answer "truncated": retry on TCP */
    _Atomic int qa, qaaaa;
} rec;

static rec recs[] = {
    {.name = "multi.test",
     .addrs = {"10.0.0.1", "10.0.0.2", "10.0.0.3"},
     .ttl = 300},
    {.name = "dual.test", .addrs = {"10.0.7.1", "2001:db8::7"}, .ttl = 300},
    {.name = "short.test", .addrs = {"10.0.2.1"}, .ttl = 1},
    {.name = "zero.test", .addrs = {"10.0.3.1"}, .ttl = 0},
    {.name = "long.test", .addrs = {"10.0.4.1"}, .ttl = 3600},
    {.name = "many.test", .addrs = {"10.0.5.1"}, .ttl = 300, .delay_ms = 100},
    {.name = "delayed.test",
     .addrs = {"10.0.6.1"},
     .ttl = 300,
     .delay_ms = 300},
    {.name = "empty.test", .ttl = 300}, /* exists, no A or AAAA */
    {.name = "big.test",
     .addrs = {"10.0.8.1", "10.0.8.2"},
     .ttl = 300,
     .tc = 1},
    {.name = "fail.test", .rcode = 2 /* SERVFAIL */},
    {.name = "slow.test", .never = 1},
};
#define NRECS (sizeof recs / sizeof recs[0])

typedef struct dns_srv {
    int fd;        /* UDP */
    rt_conn *ln;   /* TCP, same port */
    char addr[32]; /* "127.0.0.1:PORT" */
    rt_ctx *ctx;   /* cancelled to stop */
    rt_waitgroup wg;
    _Atomic int total; /* questions received */
    _Atomic int tcp;   /* of which over TCP */
} dns_srv;

static rec *rec_find(const char *name)
{
    for (size_t i = 0; i < NRECS; i++)
        if (strcmp(recs[i].name, name) == 0)
            return &recs[i];
    return NULL;
}

/* Questions for name of type A (or AAAA). */
static int qcount(const char *name, int type)
{
    rec *r = rec_find(name);
    return type == T_A ? atomic_load(&r->qa) : atomic_load(&r->qaaaa);
}

/* Parse the one question: name (lower case), type, end offset. */
static int parse_query(const uint8_t *b, size_t n, char *name, size_t cap,
                       int *qtype, size_t *qend)
{
    size_t off = 12, len = 0;

    if (n < 12 || b[4] != 0 || b[5] != 1 || (b[2] & 0x80))
        return -1;
    for (int labels = 0;; labels++) {
        if (labels > 127 || off >= n)
            return -1;
        uint8_t l = b[off++];
        if (l == 0)
            break;
        if (l > 63 || off + l > n || len + l + 2 > cap)
            return -1;
        if (len > 0)
            name[len++] = '.';
        for (size_t i = 0; i < l; i++) {
            char c = (char)b[off + i];
            name[len++] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        off += l;
    }
    name[len] = '\0';
    if (off + 4 > n)
        return -1;
    *qtype = b[off] << 8 | b[off + 1];
    *qend = off + 4;
    return 0;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* The answer to query q (qend: end of its question); returns its length. */
static size_t build_answer(const uint8_t *q, size_t qend, const rec *r,
                           int qtype, bool udp, uint8_t *out)
{
    size_t off = qend, an = 0;
    int rcode = r == NULL ? 3 /* NXDOMAIN */ : r->rcode;
    bool tc = udp && r != NULL && r->tc;

    memcpy(out, q, qend);
    out[2] = (uint8_t)(0x80 | (tc ? 0x02 : 0) | (q[2] & 0x01)); /* QR TC RD */
    out[3] = (uint8_t)(0x80 | rcode);                           /* RA */
    put16(out + 6, 0);
    put16(out + 8, 0);
    put16(out + 10, 0);
    for (int i = 0; rcode == 0 && !tc && i < 4 && r->addrs[i] != NULL; i++) {
        uint8_t raw[16];
        bool v6 = strchr(r->addrs[i], ':') != NULL;
        if ((qtype == T_AAAA) != v6)
            continue;
        if (inet_pton(v6 ? AF_INET6 : AF_INET, r->addrs[i], raw) != 1)
            continue;
        size_t rdlen = v6 ? 16 : 4;
        put16(out + off, 0xc00c); /* the name of the question */
        put16(out + off + 2, (unsigned)qtype);
        put16(out + off + 4, 1); /* IN */
        out[off + 6] = (uint8_t)(r->ttl >> 24);
        out[off + 7] = (uint8_t)(r->ttl >> 16);
        out[off + 8] = (uint8_t)(r->ttl >> 8);
        out[off + 9] = (uint8_t)r->ttl;
        put16(out + off + 10, (unsigned)rdlen);
        memcpy(out + off + 12, raw, rdlen);
        off += 12 + rdlen;
        an++;
    }
    put16(out + 6, (unsigned)an);
    return off;
}

typedef struct late_reply {
    dns_srv *s;
    struct sockaddr_storage to;
    socklen_t tolen;
    int delay_ms;
    size_t len;
    uint8_t buf[512];
} late_reply;

/* Send a reply after its delay, unless the server stops first. */
static void late_send(void *arg)
{
    late_reply *lr = arg;
    rt_case c[1] = {RT_RECV_CASE(rt_ctx_done(lr->s->ctx), NULL)};
    if (rt_select_timeout(c, 1, lr->delay_ms * RT_MSEC) == -ETIMEDOUT)
        sendto(lr->s->fd, lr->buf, lr->len, 0, (struct sockaddr *)&lr->to,
               lr->tolen);
    rt_waitgroup_done(&lr->s->wg);
    free(lr);
}

/* Parse and count question q; *r is its record (NULL: unknown name).
 * Returns false when it gets no answer (malformed, or a "never" name). */
static bool srv_question(dns_srv *s, const uint8_t *q, size_t n, rec **r,
                         int *qtype, size_t *qend)
{
    char name[256];

    if (parse_query(q, n, name, sizeof name, qtype, qend) != 0 || *qend > 256)
        return false;
    atomic_fetch_add(&s->total, 1);
    *r = rec_find(name);
    if (*r != NULL) {
        if (*qtype == T_A)
            atomic_fetch_add(&(*r)->qa, 1);
        else if (*qtype == T_AAAA)
            atomic_fetch_add(&(*r)->qaaaa, 1);
        if ((*r)->never)
            return false;
    }
    return true;
}

static void srv_handle(dns_srv *s, const uint8_t *q, size_t n,
                       const struct sockaddr_storage *from, socklen_t fl)
{
    rec *r;
    int qtype;
    size_t qend;

    if (!srv_question(s, q, n, &r, &qtype, &qend))
        return;
    late_reply *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return;
    lr->s = s;
    lr->to = *from;
    lr->tolen = fl;
    lr->len = build_answer(q, qend, r, qtype, true, lr->buf);
    if (r != NULL && r->delay_ms > 0) {
        lr->delay_ms = r->delay_ms;
        rt_waitgroup_add(&s->wg, 1);
        rt_go(late_send, lr);
        return;
    }
    sendto(s->fd, lr->buf, lr->len, 0, (const struct sockaddr *)from, fl);
    free(lr);
}

static void srv_loop(void *arg)
{
    dns_srv *s = arg;
    uint8_t buf[512];

    for (;;) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n =
            recvfrom(s->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n >= 0) {
            srv_handle(s, buf, (size_t)n, &from, fl);
            continue;
        }
        int e = errno_get();
        if (e == EINTR)
            continue;
        if (e != EAGAIN && e != EWOULDBLOCK)
            break;
        if (rt_fd_wait(s->fd, RT_READ, RT_FOREVER, s->ctx) != 0)
            break; /* stopped */
    }
    rt_waitgroup_done(&s->wg);
}

/* Read exactly len bytes: 0, or < 0 at end of stream, error or stop. */
static int read_full(dns_srv *s, rt_conn *c, uint8_t *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = rt_conn_read(c, buf + got, len - got, RT_FOREVER, s->ctx);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

typedef struct tcp_arg {
    dns_srv *s;
    rt_conn *c;
} tcp_arg;

/* One TCP connection: length-prefixed questions, answered in order. */
static void srv_tcp_conn(void *arg)
{
    tcp_arg *ta = arg;
    dns_srv *s = ta->s;
    rt_conn *c = ta->c;
    uint8_t q[514], out[514];

    free(ta);
    for (int i = 0; i < 64; i++) { /* bounded: c-ares sends 2 per name */
        rec *r;
        int qtype;
        size_t qend;
        if (read_full(s, c, q, 2) != 0)
            break;
        size_t n = (size_t)q[0] << 8 | q[1];
        if (n < 12 || n > 512 || read_full(s, c, q, n) != 0)
            break;
        atomic_fetch_add(&s->tcp, 1);
        if (!srv_question(s, q, n, &r, &qtype, &qend))
            continue;
        size_t len = build_answer(q, qend, r, qtype, false, out + 2);
        put16(out, (unsigned)len);
        if (rt_conn_write(c, out, len + 2, rt_now() + RT_SEC, s->ctx) < 0)
            break;
    }
    rt_conn_release(c);
    rt_waitgroup_done(&s->wg);
}

static void srv_accept(void *arg)
{
    dns_srv *s = arg;

    for (;;) {
        rt_conn *c;
        if (rt_accept(s->ln, &c, RT_FOREVER, s->ctx) != 0)
            break; /* stopped */
        tcp_arg *ta = malloc(sizeof *ta);
        if (ta == NULL) {
            rt_conn_release(c);
            continue;
        }
        *ta = (tcp_arg){.s = s, .c = c};
        rt_waitgroup_add(&s->wg, 1);
        rt_go(srv_tcp_conn, ta);
    }
    rt_conn_release(s->ln);
    rt_waitgroup_done(&s->wg);
}

/* A UDP socket on a free loopback port and a TCP listener on the same
 * port (a few tries, in case that TCP port is taken). */
static int srv_bind(dns_srv *s)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t sl = sizeof sa;
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0)
            return -1;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(s->fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(s->fd, (struct sockaddr *)&sa, &sl) != 0) {
            close(s->fd);
            return -1;
        }
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", ntohs(sa.sin_port));
        int err = rt_listen(s->addr, 16, &s->ln);
        if (err == 0) {
            if ((err = rt_fd_register(s->fd)) == 0)
                return 0;
            fprintf(stderr, "srv_bind: rt_fd_register(%d): %s\n", s->fd,
                    strerror(-err));
            rt_conn_release(s->ln);
            close(s->fd);
            return -1;
        }
        fprintf(stderr, "srv_bind: rt_listen(%s): %s\n", s->addr,
                strerror(-err));
        close(s->fd);
    }
    return -1;
}

static int srv_start(dns_srv *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < NRECS; i++) {
        atomic_store(&recs[i].qa, 0);
        atomic_store(&recs[i].qaaaa, 0);
    }
    if (srv_bind(s) != 0)
        return -1;
    s->ctx = rt_ctx_with_cancel(rt_ctx_background());
    rt_waitgroup_add(&s->wg, 2);
    rt_go(srv_loop, s);
    rt_go(srv_accept, s);
    return 0;
}

static void srv_stop(dns_srv *s)
{
    rt_ctx_cancel(s->ctx);
    rt_waitgroup_wait(&s->wg);
    rt_fd_unregister(s->fd);
    close(s->fd);
    rt_ctx_release(s->ctx);
}

/* A resolver that asks only s. */
static gw_resolver *resolver_for(dns_srv *s, int64_t min_ttl_ms,
                                 int64_t max_ttl_ms, int timeout_ms, int tries)
{
    const char *servers[1] = {s->addr};
    gw_dns_config cfg = {
        .servers = servers,
        .nservers = 1,
        .min_ttl_ms = min_ttl_ms,
        .max_ttl_ms = max_ttl_ms,
        .timeout_ms = timeout_ms,
        .tries = tries,
    };
    gw_resolver *r = NULL;
    int rc = gw_resolver_new(&cfg, &r);
    CHECK(rc == 0);
    return r;
}

/* Does a hold the IP address ip (port 0)? */
static bool has_addr(const gw_dns_addrs *a, const char *ip)
{
    char want[GW_DNS_HOSTPORT_LEN], got[GW_DNS_HOSTPORT_LEN];
    bool v6 = strchr(ip, ':') != NULL;

    snprintf(want, sizeof want, v6 ? "[%s]:0" : "%s:0", ip);
    for (size_t i = 0; a != NULL && i < a->n; i++)
        if (gw_dns_hostport(&a->addr[i], 0, got, sizeof got) == 0 &&
            strcmp(got, want) == 0)
            return true;
    return false;
}

/* --------------------------------------------------------------- tests */

/* Several A records come back together; round-robin visits them all;
 * A and AAAA mix; the cache is case-insensitive. */
static void multi_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 2000, 2);
    gw_dns_addrs *a = NULL, *b = NULL;
    const char *why = NULL;

    CHECK(gw_dns_resolve(r, NULL, "multi.test", &a, &why) == 0);
    CHECK(a != NULL && a->n == 3);
    CHECK(why == NULL);
    CHECK(has_addr(a, "10.0.0.1") && has_addr(a, "10.0.0.2") &&
          has_addr(a, "10.0.0.3"));
    CHECK(qcount("multi.test", T_A) == 1);
    CHECK(qcount("multi.test", T_AAAA) == 1);
    if (a != NULL && a->n == 3) {
        int seen[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) {
            const struct sockaddr_storage *p = gw_dns_pick(a);
            seen[p - a->addr]++;
        }
        CHECK(seen[0] == 2 && seen[1] == 2 && seen[2] == 2);
        char hp[GW_DNS_HOSTPORT_LEN];
        CHECK(gw_dns_hostport(&a->addr[0], 8080, hp, sizeof hp) == 0);
        CHECK(strncmp(hp, "10.0.0.", 7) == 0 && strstr(hp, ":8080") != NULL);
        CHECK(gw_dns_hostport(&a->addr[0], 8080, hp, 5) == -ENOSPC);
    }

    /* Same name in another case: the cached answer, no query. */
    CHECK(gw_dns_resolve(r, NULL, "MULTI.Test", &b, NULL) == 0);
    CHECK(b == a);
    CHECK(qcount("multi.test", T_A) == 1);
    gw_dns_addrs_release(b);
    gw_dns_addrs_release(a);

    /* IPv4 and IPv6 records of one name. */
    CHECK(gw_dns_resolve(r, NULL, "dual.test", &a, NULL) == 0);
    CHECK(a != NULL && a->n == 2);
    CHECK(has_addr(a, "10.0.7.1") && has_addr(a, "2001:db8::7"));
    for (size_t i = 0; a != NULL && i < a->n; i++) {
        char hp[GW_DNS_HOSTPORT_LEN];
        CHECK(gw_dns_hostport(&a->addr[i], 443, hp, sizeof hp) == 0);
        if (a->addr[i].ss_family == AF_INET6)
            CHECK(strcmp(hp, "[2001:db8::7]:443") == 0);
        else
            CHECK(strcmp(hp, "10.0.7.1:443") == 0);
    }
    gw_dns_addrs_release(a);

    /* A truncated UDP answer: c-ares asks again over TCP (the socket is
     * watched for writing while it connects). */
    CHECK(atomic_load(&s.tcp) == 0);
    CHECK(gw_dns_resolve(r, NULL, "big.test", &a, NULL) == 0);
    CHECK(a != NULL && a->n == 2);
    CHECK(has_addr(a, "10.0.8.1") && has_addr(a, "10.0.8.2"));
    CHECK(atomic_load(&s.tcp) >= 1);
    gw_dns_addrs_release(a);

    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_several_addresses(void **state)
{
    (void)state;
    run(multi_main, NULL);
}

/* Numeric addresses resolve without a query; bad names are refused
 * before one. */
static void numeric_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 2000, 2);
    gw_dns_addrs *a = NULL;
    const char *why = NULL;
    char hp[GW_DNS_HOSTPORT_LEN];

    CHECK(gw_dns_resolve(r, NULL, "10.1.2.3", &a, NULL) == 0);
    CHECK(a != NULL && a->n == 1 && a->expires == RT_FOREVER);
    CHECK(a != NULL && gw_dns_hostport(gw_dns_pick(a), 80, hp, sizeof hp) == 0);
    CHECK(strcmp(hp, "10.1.2.3:80") == 0);
    gw_dns_addrs_release(a);

    const char *v6[] = {"::1", "[::1]"};
    for (int i = 0; i < 2; i++) {
        CHECK(gw_dns_resolve(r, NULL, v6[i], &a, NULL) == 0);
        CHECK(a != NULL && a->n == 1 && a->addr[0].ss_family == AF_INET6);
        CHECK(a != NULL &&
              gw_dns_hostport(&a->addr[0], 9000, hp, sizeof hp) == 0);
        CHECK(strcmp(hp, "[::1]:9000") == 0);
        gw_dns_addrs_release(a);
    }

    const char *bad[] = {"",           "bad name", "a..b", ".a",
                         "[10.0.0.1]", "[nope]",   "x\ny"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = (gw_dns_addrs *)1;
        CHECK(gw_dns_resolve(r, NULL, bad[i], &a, &why) == GW_DNS_EBADNAME);
        CHECK(a == NULL);
        CHECK(why != NULL && strcmp(why, "invalid host name") == 0);
    }
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(gw_dns_resolve(r, NULL, longname, &a, NULL) == GW_DNS_EBADNAME);

    CHECK(atomic_load(&s.total) == 0);
    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_numeric_without_query(void **state)
{
    (void)state;
    run(numeric_main, NULL);
}

/* Within the TTL the cache answers; after it, a new query. */
static void expiry_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 50, 60000, 2000, 2);
    gw_dns_addrs *a = NULL, *b = NULL;

    int64_t t0 = rt_now();
    CHECK(gw_dns_resolve(r, NULL, "short.test", &a, NULL) == 0);
    int64_t t1 = rt_now();
    CHECK(a != NULL && has_addr(a, "10.0.2.1"));
    CHECK(qcount("short.test", T_A) == 1);
    /* TTL 1 s: expires one second after the answer arrived. */
    CHECK(a != NULL && a->expires >= t0 + RT_SEC && a->expires <= t1 + RT_SEC);

    CHECK(gw_dns_resolve(r, NULL, "short.test", &b, NULL) == 0);
    CHECK(b == a);
    CHECK(qcount("short.test", T_A) == 1);
    gw_dns_addrs_release(b);

    if (a != NULL)
        rt_sleep_until(a->expires + 20 * RT_MSEC);
    CHECK(gw_dns_resolve(r, NULL, "short.test", &b, NULL) == 0);
    CHECK(b != NULL && b != a && has_addr(b, "10.0.2.1"));
    CHECK(qcount("short.test", T_A) == 2);
    gw_dns_addrs_release(b);
    gw_dns_addrs_release(a); /* still valid after expiry */

    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    run(expiry_main, NULL);
}

/* Effective TTL = min(max(ttl, min_ttl), max_ttl). */
static void clamp_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 300, 2000, 2000, 2);
    static const struct {
        const char *name;
        int64_t want; /* effective TTL */
    } cases[] = {
        {"zero.test", 300 * RT_MSEC},  /* TTL 0: the floor */
        {"short.test", 1 * RT_SEC},    /* TTL 1 s: as is */
        {"long.test", 2000 * RT_MSEC}, /* TTL 3600 s: the ceiling */
    };
    gw_dns_addrs *a = NULL;

    for (size_t i = 0; i < 3; i++) {
        int64_t t0 = rt_now();
        CHECK(gw_dns_resolve(r, NULL, cases[i].name, &a, NULL) == 0);
        int64_t t1 = rt_now();
        CHECK(a != NULL && a->expires >= t0 + cases[i].want &&
              a->expires <= t1 + cases[i].want);
        gw_dns_addrs_release(a);
    }
    /* 400 ms later: the floored name was asked again, the others not. */
    rt_sleep(400 * RT_MSEC);
    for (size_t i = 0; i < 3; i++) {
        CHECK(gw_dns_resolve(r, NULL, cases[i].name, &a, NULL) == 0);
        gw_dns_addrs_release(a);
    }
    if (qcount("zero.test", T_A) != 2 || qcount("short.test", T_A) != 1 ||
        qcount("long.test", T_A) != 1)
        fprintf(stderr, "clamp: A queries zero %d short %d long %d, AAAA "
                        "zero %d, total %d\n",
                qcount("zero.test", T_A), qcount("short.test", T_A),
                qcount("long.test", T_A), qcount("zero.test", T_AAAA),
                (int)atomic_load(&s.total));
    CHECK(qcount("zero.test", T_A) == 2);
    CHECK(qcount("short.test", T_A) == 1);
    CHECK(qcount("long.test", T_A) == 1);

    gw_resolver_free(r);

    /* Bad settings. */
    const char *servers[] = {s.addr};
    const char *bad_server[] = {"not-an-ip"};
    const char *comma[] = {"127.0.0.1,127.0.0.2"};
    gw_dns_config bad[] = {
        {.min_ttl_ms = 5000, .max_ttl_ms = 1000},
        {.min_ttl_ms = -1},
        {.servers = servers, .nservers = 0},
        {.servers = bad_server, .nservers = 1},
        {.servers = comma, .nservers = 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = (gw_resolver *)1;
        CHECK(gw_resolver_new(&bad[i], &r) == -EINVAL);
        CHECK(r == NULL);
    }
    /* One bound alone below / above the other's default is fine. */
    gw_dns_config good[] = {
        {.servers = servers, .nservers = 1, .max_ttl_ms = 500},
        {.servers = servers, .nservers = 1, .min_ttl_ms = 120000},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        r = NULL;
        CHECK(gw_resolver_new(&good[i], &r) == 0);
        gw_resolver_free(r);
    }
    srv_stop(&s);
}

static void test_ttl_clamp(void **state)
{
    (void)state;
    run(clamp_main, NULL);
}

#define NCONC 50

typedef struct conc {
    gw_resolver *r;
    rt_waitgroup *wg;
    int rc;
    gw_dns_addrs *a;
} conc;

static void conc_lookup(void *arg)
{
    conc *c = arg;
    c->rc = gw_dns_resolve(c->r, NULL, "many.test", &c->a, NULL);
    rt_waitgroup_done(c->wg);
}

/* 50 concurrent lookups of one name: one query, one shared answer. */
static void single_flight_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 2000, 2);
    rt_waitgroup wg = RT_WAITGROUP_INIT;
    static conc cs[NCONC];

    for (int i = 0; i < NCONC; i++) {
        cs[i] = (conc){.r = r, .wg = &wg, .rc = 1};
        rt_waitgroup_add(&wg, 1);
        rt_go(conc_lookup, &cs[i]);
    }
    rt_waitgroup_wait(&wg);
    for (int i = 0; i < NCONC; i++) {
        CHECK(cs[i].rc == 0);
        CHECK(cs[i].a != NULL && cs[i].a == cs[0].a);
        gw_dns_addrs_release(cs[i].a);
    }
    CHECK(has_addr(cs[0].a, "10.0.5.1") || cs[0].a == NULL);
    CHECK(qcount("many.test", T_A) == 1);
    CHECK(qcount("many.test", T_AAAA) == 1);

    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_single_flight(void **state)
{
    (void)state;
    run(single_flight_main, NULL);
}

/* NXDOMAIN, no addresses and SERVFAIL come back as clear errors,
 * quickly. */
static void errors_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 2000, 1);
    gw_dns_addrs *a = (gw_dns_addrs *)1;
    const char *why = NULL;

    int64_t t0 = rt_now();
    CHECK(gw_dns_resolve(r, NULL, "nope.test", &a, &why) == GW_DNS_ENOTFOUND);
    CHECK(a == NULL);
    CHECK(why != NULL && strcmp(why, "no such host") == 0);
    CHECK(strcmp(gw_dns_strerror(GW_DNS_ENOTFOUND), "no such host") == 0);

    CHECK(gw_dns_resolve(r, NULL, "empty.test", &a, &why) == GW_DNS_ENODATA);
    CHECK(a == NULL);
    CHECK(why != NULL && strcmp(why, "host has no addresses") == 0);

    CHECK(gw_dns_resolve(r, NULL, "fail.test", &a, &why) == GW_DNS_ESERVER);
    /* c-ares 1.18 reports servers that all failed as ECONNREFUSED. */
    CHECK(why != NULL && strstr(why, "DNS server") != NULL);
    CHECK(strcmp(gw_dns_strerror(GW_DNS_ESERVER), "DNS server failure") == 0);
    CHECK(rt_now() - t0 < RT_SEC); /* answers, not timeouts */

    /* Failures are not cached: asking again asks the server again. */
    int before = qcount("fail.test", T_A);
    CHECK(gw_dns_resolve(r, NULL, "fail.test", &a, NULL) == GW_DNS_ESERVER);
    CHECK(qcount("fail.test", T_A) > before);

    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_nxdomain_and_servfail(void **state)
{
    (void)state;
    run(errors_main, NULL);
}

/* A server that never answers: a DNS timeout after timeout_ms x tries. */
static void timeout_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 200, 1);
    gw_dns_addrs *a = (gw_dns_addrs *)1;
    const char *why = NULL;

    int64_t t0 = rt_now();
    int rc = gw_dns_resolve(r, NULL, "slow.test", &a, &why);
    int64_t took = rt_now() - t0;
    CHECK(rc == GW_DNS_ETIMEOUT);
    CHECK(a == NULL);
    CHECK(why != NULL && strstr(why, "DNS timeout") != NULL);
    CHECK(strcmp(gw_dns_strerror(rc), "DNS timeout") == 0);
    /* One 200 ms try; generous tolerance for a loaded machine. */
    CHECK(took >= 150 * RT_MSEC);
    CHECK(took < 3 * RT_SEC);
    CHECK(qcount("slow.test", T_A) == 1);

    gw_resolver_free(r);
    srv_stop(&s);
}

static void test_timeout(void **state)
{
    (void)state;
    run(timeout_main, NULL);
}

typedef struct canceller {
    rt_ctx *ctx;
    int64_t after;
} canceller;

static void cancel_later(void *arg)
{
    canceller *c = arg;
    rt_sleep(c->after);
    rt_ctx_cancel(c->ctx);
    rt_ctx_unref(c->ctx);
    free(c);
}

/* The caller's context ends the wait at once; the query goes on and
 * fills the cache; freeing the resolver with a query in flight is fine. */
static void cancel_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 5000, 1);
    gw_dns_addrs *a = (gw_dns_addrs *)1;
    const char *why = NULL;

    rt_ctx *ctx = rt_ctx_with_cancel(rt_ctx_background());
    canceller *c = malloc(sizeof *c);
    if (ctx == NULL || c == NULL) {
        CHECK(!"out of memory");
        free(c);
        return;
    }
    *c = (canceller){.ctx = rt_ctx_ref(ctx), .after = 100 * RT_MSEC};
    int64_t t0 = rt_now();
    rt_go(cancel_later, c);
    int rc = gw_dns_resolve(r, ctx, "slow.test", &a, &why);
    int64_t took = rt_now() - t0;
    CHECK(rc == -ECANCELED);
    CHECK(a == NULL);
    CHECK(why != NULL && strcmp(why, "lookup cancelled") == 0);
    CHECK(took >= 90 * RT_MSEC && took < RT_SEC);
    /* Already cancelled: returns at once. */
    CHECK(gw_dns_resolve(r, ctx, "slow.test", &a, NULL) == -ECANCELED);
    rt_ctx_release(ctx);

    /* A deadline shorter than the (300 ms late) answer. */
    ctx = rt_ctx_with_timeout(rt_ctx_background(), 50 * RT_MSEC);
    t0 = rt_now();
    rc = gw_dns_resolve(r, ctx, "delayed.test", &a, &why);
    took = rt_now() - t0;
    CHECK(rc == -ETIMEDOUT);
    CHECK(took < 290 * RT_MSEC);
    rt_ctx_release(ctx);
    /* The query finished anyway and filled the cache. */
    rt_sleep(500 * RT_MSEC);
    t0 = rt_now();
    CHECK(gw_dns_resolve(r, NULL, "delayed.test", &a, NULL) == 0);
    CHECK(rt_now() - t0 < 100 * RT_MSEC);
    CHECK(a != NULL && has_addr(a, "10.0.6.1"));
    CHECK(qcount("delayed.test", T_A) == 1);
    gw_dns_addrs_release(a);

    /* slow.test is still in flight in c-ares: free ends it. */
    t0 = rt_now();
    gw_resolver_free(r);
    CHECK(rt_now() - t0 < RT_SEC);
    srv_stop(&s);
}

static void test_cancel(void **state)
{
    (void)state;
    run(cancel_main, NULL);
}

/* Is "localhost" in /etc/hosts? (The test needs it.) */
static bool hosts_has_localhost(void)
{
    FILE *f = fopen("/etc/hosts", "r");
    char line[512];
    bool found = false;

    if (f == NULL)
        return false;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#')
            continue;
        for (char *tok = strtok(line, " \t\r\n"); tok != NULL && !found;
             tok = strtok(NULL, " \t\r\n"))
            found = strcmp(tok, "localhost") == 0;
    }
    fclose(f);
    return found;
}

/* /etc/hosts applies with a custom server list and with the system's. */
static void hosts_main(void *arg)
{
    (void)arg;
    dns_srv s;
    if (srv_start(&s) != 0) {
        CHECK(!"server start");
        return;
    }
    gw_resolver *r = resolver_for(&s, 0, 0, 2000, 1);
    gw_dns_addrs *a = NULL, *b = NULL;
    const char *why = NULL;

    int rc = gw_dns_resolve(r, NULL, "localhost", &a, &why);
    CHECK(rc == 0);
    if (rc != 0)
        fprintf(stderr, "localhost: %s (%s)\n", gw_dns_strerror(rc), why);
    CHECK(a != NULL && (has_addr(a, "127.0.0.1") || has_addr(a, "::1")));
    CHECK(atomic_load(&s.total) == 0);
    /* Hosts-file answers have TTL 0: cached for the floor. */
    CHECK(gw_dns_resolve(r, NULL, "LOCALHOST", &b, NULL) == 0);
    CHECK(b == a);
    gw_dns_addrs_release(b);
    gw_dns_addrs_release(a);
    gw_resolver_free(r);
    srv_stop(&s);

    /* Defaults: the system's resolv.conf; hosts still first, no query. */
    CHECK(gw_resolver_new(NULL, &r) == 0);
    if (r == NULL)
        return;
    CHECK(gw_dns_resolve(r, NULL, "localhost", &a, NULL) == 0);
    CHECK(a != NULL && (has_addr(a, "127.0.0.1") || has_addr(a, "::1")));
    gw_dns_addrs_release(a);
    gw_resolver_free(r);
}

static void test_hosts_file(void **state)
{
    (void)state;
    if (!hosts_has_localhost())
        skip();
    run(hosts_main, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_several_addresses),
        cmocka_unit_test(test_numeric_without_query),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_ttl_clamp),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_nxdomain_and_servfail),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_hosts_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
