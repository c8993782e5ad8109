/*
 * test_tls.c — gateway/tls.c: a TLS echo server on 127.0.0.1 driven by the
 * runtime, against OpenSSL clients on the same runtime.
 *
 * The group set-up makes a self-signed EC P-256 certificate for IP
 * 127.0.0.1 (and a second, unrelated key, and a junk file) in a temporary
 * directory, on the main thread before any rt_run(). Each test runs one
 * rt_run(): a listener on 127.0.0.1:0, an acceptor goroutine that spawns a
 * handler goroutine per connection, and the test's client goroutine. The
 * handler does the TLS handshake and then what the server's mode says,
 * and sends what happened (a srv_result) on a buffered channel that the
 * client reads after each connection.
 *
 * The client side is written directly on OpenSSL (SSL_set_fd, rt_fd_wait),
 * independent of tls.c. Every goroutine that runs OpenSSL code is spawned
 * with a GW_TLS_STACK_SIZE stack. cmocka's assertions longjmp, which must
 * not happen on a goroutine stack, so goroutines record failures with
 * CHECK() and the test asserts after rt_run() returned. Every loop is
 * bounded by a count or a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "rt.h"

#include "../rt_check.h"
#include "tls.h"

/* ------------------------------------------------------------- helpers */

#define IO_TIMEOUT (5 * RT_SEC)
#define MAX_CONNS 16
#define MAX_STEPS 100000 /* a belt over the deadlines' braces */
#define BULK_BYTES ((size_t)1 << 20)
#define RESET_BYTES ((size_t)8 << 20)

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i % 251);
}

/* --------------------------------------------- certificate (group set-up) */

static struct {
    char dir[64];
    char cert[128];
    char key[128];
    char other_key[128];
    char enc_key[128];
    char junk[128];
    char missing[128];
    X509 *x509; /* the client's trust anchor */
    gw_tls_ctx *tls;
} fx;

static X509 *make_cert(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *san;
    X509_NAME *name;

    if (x == NULL)
        return NULL;
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)getpid());
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)"fanfold test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    if (san == NULL || X509_add_ext(x, san, -1) != 1 ||
        X509_sign(x, key, EVP_sha256()) == 0) {
        X509_EXTENSION_free(san);
        X509_free(x);
        return NULL;
    }
    X509_EXTENSION_free(san);
    return x;
}

/* With a password when pass is not NULL. */
static int write_key(const char *path, EVP_PKEY *key, const char *pass)
{
    FILE *f = fopen(path, "w");
    int ok;

    if (f == NULL)
        return -1;
    ok = PEM_write_PrivateKey(f, key, pass ? EVP_aes_256_cbc() : NULL,
                              (const unsigned char *)pass,
                              pass ? (int)strlen(pass) : 0, NULL, NULL);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

static int write_cert(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    int ok;

    if (f == NULL)
        return -1;
    ok = PEM_write_X509(f, x);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int group_setup(void **state)
{
    EVP_PKEY *key, *other;
    char err[GW_TLS_ERR_LEN];
    int rc = -1;

    (void)state;
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/fanfold-tls-XXXXXX");
    if (mkdtemp(fx.dir) == NULL)
        return -1;
    snprintf(fx.cert, sizeof(fx.cert), "%s/server.crt", fx.dir);
    snprintf(fx.key, sizeof(fx.key), "%s/server.key", fx.dir);
    snprintf(fx.other_key, sizeof(fx.other_key), "%s/other.key", fx.dir);
    snprintf(fx.enc_key, sizeof(fx.enc_key), "%s/enc.key", fx.dir);
    snprintf(fx.junk, sizeof(fx.junk), "%s/junk.crt", fx.dir);
    snprintf(fx.missing, sizeof(fx.missing), "%s/missing.crt", fx.dir);

    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (key != NULL && other != NULL)
        fx.x509 = make_cert(key);
    if (fx.x509 != NULL && write_cert(fx.cert, fx.x509) == 0 &&
        write_key(fx.key, key, NULL) == 0 &&
        write_key(fx.other_key, other, NULL) == 0 &&
        write_key(fx.enc_key, key, "secret") == 0 &&
        write_text(fx.junk, "not a certificate\n") == 0)
        rc = gw_tls_ctx_new(fx.cert, fx.key, &fx.tls, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "group set-up failed: %s\n", err);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    return rc == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    gw_tls_ctx_free(fx.tls);
    X509_free(fx.x509);
    unlink(fx.cert);
    unlink(fx.key);
    unlink(fx.other_key);
    unlink(fx.enc_key);
    unlink(fx.junk);
    rmdir(fx.dir);
    return 0;
}

/* ---------------------------------------------------------------- server */

enum mode {
    MODE_ECHO,         /* echo until end of stream */
    MODE_BULK,         /* read a length and that many bytes, write as many */
    MODE_READ_TIMEOUT, /* a 200 ms read that times out, then echo */
    MODE_WRITE_RESET,  /* read one byte, then write RESET_BYTES at once */
};

typedef struct srv_result {
    int accept_rc;
    int64_t deadline; /* of the handshake */
    int64_t ended;    /* when gw_tls_accept returned */
    char err[160];
    char alpn[16];
    char version[16];
    int read_timeout_rc; /* MODE_READ_TIMEOUT */
    int64_t read_timeout_late;
    ssize_t io_rc; /* the mode's last read/write result */
    size_t bytes;  /* bytes read (echo) or written (bulk) */
    int shutdown_rc;
} srv_result;

typedef struct server {
    rt_conn *ln;
    int port;
    _Atomic int mode;
    _Atomic int64_t hs_timeout;
    rt_ctx *hs_ctx; /* passed to gw_tls_accept; NULL: none */
    rt_chan *results;
    rt_waitgroup wg;
} server;

typedef struct handler_arg {
    server *s;
    rt_conn *c;
    int mode;
} handler_arg;

static void copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src != NULL ? src : "");
}

static void serve_echo(gw_tls_conn *tc, srv_result *r)
{
    char *buf = malloc(16384);

    CHECK(buf != NULL);
    r->io_rc = -ENOMEM;
    for (int i = 0; buf != NULL && i < MAX_STEPS; i++) {
        ssize_t n = gw_tls_read(tc, buf, 16384, rt_now() + IO_TIMEOUT, NULL);

        r->io_rc = n;
        if (n <= 0)
            break;
        r->bytes += (size_t)n;
        r->io_rc =
            gw_tls_write(tc, buf, (size_t)n, rt_now() + IO_TIMEOUT, NULL);
        if (r->io_rc != n)
            break;
    }
    free(buf);
}

static ssize_t read_full(gw_tls_conn *tc, void *buf, size_t len)
{
    size_t off = 0;

    for (int i = 0; off < len && i < MAX_STEPS; i++) {
        ssize_t n = gw_tls_read(tc, (char *)buf + off, len - off,
                                rt_now() + IO_TIMEOUT, NULL);
        if (n <= 0)
            return n;
        off += (size_t)n;
    }
    return (ssize_t)off;
}

static void serve_bulk(gw_tls_conn *tc, srv_result *r)
{
    uint8_t hdr[8];
    uint64_t len = 0;
    uint8_t *buf;
    bool same = true;
    int sndbuf = 16384; /* so that the big write has to park */

    rt_conn_setsockopt(gw_tls_rt_conn(tc), SOL_SOCKET, SO_SNDBUF, &sndbuf,
                       sizeof(sndbuf));
    r->io_rc = read_full(tc, hdr, sizeof(hdr));
    if (r->io_rc != (ssize_t)sizeof(hdr))
        return;
    memcpy(&len, hdr, sizeof(len));
    CHECK(len <= 4 * BULK_BYTES);
    buf = malloc(len);
    CHECK(buf != NULL);
    if (len > 4 * BULK_BYTES || buf == NULL) {
        free(buf);
        return;
    }
    r->io_rc = read_full(tc, buf, len);
    for (size_t i = 0; i < len; i++)
        same = same && buf[i] == pattern(i);
    CHECK(same);
    if (r->io_rc == (ssize_t)len) {
        r->io_rc = gw_tls_write(tc, buf, len, rt_now() + IO_TIMEOUT, NULL);
        r->bytes = r->io_rc > 0 ? (size_t)r->io_rc : 0;
    }
    free(buf);
    /* then the client's close_notify */
    if (r->io_rc == (ssize_t)len)
        r->io_rc = gw_tls_read(tc, hdr, 1, rt_now() + IO_TIMEOUT, NULL);
}

static void serve_read_timeout(gw_tls_conn *tc, srv_result *r)
{
    char b[8];
    int64_t deadline = rt_now() + 200 * RT_MSEC;

    r->read_timeout_rc = (int)gw_tls_read(tc, b, sizeof(b), deadline, NULL);
    r->read_timeout_late = rt_now() - deadline;
    copy_str(r->err, sizeof(r->err), gw_tls_last_error(tc));
    serve_echo(tc, r);
}

static void serve_write_reset(gw_tls_conn *tc, srv_result *r)
{
    char go;
    uint8_t *buf = calloc(1, RESET_BYTES);
    int sndbuf = 16384;

    CHECK(buf != NULL);
    rt_conn_setsockopt(gw_tls_rt_conn(tc), SOL_SOCKET, SO_SNDBUF, &sndbuf,
                       sizeof(sndbuf));
    r->io_rc = gw_tls_read(tc, &go, 1, rt_now() + IO_TIMEOUT, NULL);
    if (r->io_rc == 1 && buf != NULL) {
        r->io_rc =
            gw_tls_write(tc, buf, RESET_BYTES, rt_now() + IO_TIMEOUT, NULL);
        copy_str(r->err, sizeof(r->err), gw_tls_last_error(tc));
    }
    free(buf);
}

static void handler(void *arg)
{
    handler_arg *h = arg;
    server *s = h->s;
    srv_result r = {.accept_rc = 1};
    gw_tls_conn *tc;

    if (gw_tls_conn_new(fx.tls, h->c, &tc) != 0) {
        CHECK(!"gw_tls_conn_new");
        rt_conn_release(h->c);
        goto done;
    }
    r.deadline = rt_now() + atomic_load(&s->hs_timeout);
    r.accept_rc = gw_tls_accept(tc, r.deadline, s->hs_ctx);
    r.ended = rt_now();
    copy_str(r.err, sizeof(r.err), gw_tls_last_error(tc));
    if (r.accept_rc == 0) {
        CHECK(strcmp(r.err, "") == 0);
        copy_str(r.alpn, sizeof(r.alpn), gw_tls_alpn(tc));
        copy_str(r.version, sizeof(r.version), gw_tls_version(tc));
        switch (h->mode) {
        case MODE_ECHO:
            serve_echo(tc, &r);
            break;
        case MODE_BULK:
            serve_bulk(tc, &r);
            break;
        case MODE_READ_TIMEOUT:
            serve_read_timeout(tc, &r);
            break;
        case MODE_WRITE_RESET:
            serve_write_reset(tc, &r);
            break;
        }
        r.shutdown_rc = gw_tls_shutdown(tc, rt_now() + IO_TIMEOUT, NULL);
    } else {
        CHECK(strcmp(r.err, "") != 0);
        /* a failed session refuses everything but close */
        CHECK(gw_tls_read(tc, r.alpn, 1, rt_now() + IO_TIMEOUT, NULL) ==
              r.accept_rc);
        CHECK(gw_tls_write(tc, "x", 1, rt_now() + IO_TIMEOUT, NULL) ==
              r.accept_rc);
        CHECK(gw_tls_shutdown(tc, rt_now() + IO_TIMEOUT, NULL) == r.accept_rc);
        CHECK(strcmp(gw_tls_last_error(tc), r.err) == 0); /* still why */
    }
    gw_tls_release(tc);
done:
    CHECK(rt_chan_trysend(s->results, &r));
    free(h);
    rt_waitgroup_done(&s->wg);
}

static void acceptor(void *arg)
{
    server *s = arg;
    rt_go_opts big = {.stack_size = GW_TLS_STACK_SIZE};

    for (int i = 0; i < MAX_CONNS; i++) {
        rt_conn *c;
        handler_arg *h;
        int rc = rt_accept(s->ln, &c, rt_now() + 20 * RT_SEC, NULL);

        if (rc != 0) {
            CHECK(rc == -EBADF); /* the listener closed by server_stop */
            break;
        }
        h = malloc(sizeof(*h));
        CHECK(h != NULL);
        if (h == NULL) {
            rt_conn_release(c);
            break;
        }
        *h = (handler_arg){.s = s, .c = c, .mode = atomic_load(&s->mode)};
        rt_waitgroup_add(&s->wg, 1);
        rt_go_opts(handler, h, &big);
    }
    rt_waitgroup_done(&s->wg);
}

static bool server_start(server *s)
{
    int rc = rt_listen("127.0.0.1:0", 64, &s->ln);

    CHECK(rc == 0);
    if (rc != 0)
        return false;
    s->port = rt_conn_port(s->ln);
    CHECK(s->port > 0);
    s->results = rt_chan_make(sizeof(srv_result), MAX_CONNS);
    CHECK(s->results != NULL);
    if (atomic_load(&s->hs_timeout) == 0)
        atomic_store(&s->hs_timeout, IO_TIMEOUT);
    rt_waitgroup_add(&s->wg, 1);
    rt_go(acceptor, s);
    return true;
}

static void server_stop(server *s)
{
    srv_result r;

    rt_conn_close(s->ln); /* wakes the acceptor with -EBADF */
    rt_waitgroup_wait(&s->wg);
    rt_conn_release(s->ln);
    CHECK(!rt_chan_tryrecv(s->results, &r, NULL)); /* all were checked */
    rt_chan_free(s->results);
}

/* The handler's report of the next connection, waiting at most 5 s. */
static bool next_result(server *s, srv_result *r)
{
    rt_case c[] = {RT_RECV_CASE(s->results, r)};
    bool ok = rt_select_timeout(c, 1, IO_TIMEOUT) == 0;

    CHECK(ok);
    return ok;
}

/* ---------------------------------------------------------------- client */

typedef struct client_opts {
    int min_version, max_version; /* 0: OpenSSL's defaults */
    const char *alpn;             /* wire format; NULL: no ALPN */
    size_t alpn_len;
    bool legacy; /* security level 0, so that TLS 1.1 is offered at all */
} client_opts;

#define ALPN_HTTP11 "\x08http/1.1"
#define ALPN_H2 "\x02h2"
#define ALPN_H2_HTTP11 "\x02h2\x08http/1.1"
#define ALPN(s) .alpn = (s), .alpn_len = sizeof(s) - 1

/* The client owns a plain socket registered with the netpoller: OpenSSL's
 * own socket BIO does its I/O (SSL_set_fd), and cl_step waits on it. */
typedef struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd; /* -1: none */
    char err[160];
} client;

static int cl_dial(client *cl, server *s)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)s->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = 0;

    memset(cl, 0, sizeof(*cl));
    /* A blocking connect on loopback: the handshake with the kernel's
     * listen queue does not wait for the server goroutine. */
    cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cl->fd < 0 || connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        rc = -errno;
    if (rc == 0)
        rc = rt_fd_register(cl->fd);
    CHECK(rc == 0);
    if (rc != 0 && cl->fd >= 0) {
        close(cl->fd);
        cl->fd = -1;
    }
    return rc;
}

/*
 * After a failed SSL call: waits and returns 1 to retry, 0 at end of
 * stream, or a negative errno with the reason in cl->err.
 */
static int cl_step(client *cl, int ret, int64_t deadline)
{
    int e = SSL_get_error(cl->ssl, ret);
    unsigned long q = ERR_peek_error();
    const char *why = q != 0 ? ERR_reason_error_string(q) : NULL;
    int rc;

    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        rc = rt_fd_wait(cl->fd, e == SSL_ERROR_WANT_READ ? RT_READ : RT_WRITE,
                        deadline, NULL);
        if (rc == 0)
            return 1;
        snprintf(cl->err, sizeof(cl->err), "wait: %s", rt_strerror(rc));
        return rc;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    snprintf(cl->err, sizeof(cl->err), "%s",
             why != NULL ? why : "syscall error or EOF");
    return -EPROTO;
}

static int cl_handshake(client *cl, const client_opts *o)
{
    int64_t deadline = rt_now() + IO_TIMEOUT;
    int rc = -EPROTO;

    ERR_clear_error();
    cl->ctx = SSL_CTX_new(TLS_client_method());
    CHECK(cl->ctx != NULL);
    if (cl->ctx == NULL)
        return -ENOMEM;
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cl->ctx), fx.x509);
    SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, NULL);
    if (o->legacy) {
        SSL_CTX_set_security_level(cl->ctx, 0);
        SSL_CTX_set_cipher_list(cl->ctx, "DEFAULT:@SECLEVEL=0");
    }
    if (o->min_version != 0)
        SSL_CTX_set_min_proto_version(cl->ctx, o->min_version);
    if (o->max_version != 0)
        SSL_CTX_set_max_proto_version(cl->ctx, o->max_version);
    cl->ssl = SSL_new(cl->ctx);
    CHECK(cl->ssl != NULL);
    if (cl->ssl == NULL)
        return -ENOMEM;
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(cl->ssl), "127.0.0.1");
    if (o->alpn != NULL)
        SSL_set_alpn_protos(cl->ssl, (const unsigned char *)o->alpn,
                            (unsigned int)o->alpn_len);
    SSL_set_fd(cl->ssl, cl->fd);
    SSL_set_connect_state(cl->ssl);
    for (int i = 0; i < MAX_STEPS; i++) {
        int ret;

        ERR_clear_error();
        ret = SSL_do_handshake(cl->ssl);
        if (ret == 1)
            return 0;
        rc = cl_step(cl, ret, deadline);
        if (rc <= 0)
            return rc < 0 ? rc : -ECONNRESET;
    }
    return rc;
}

static int cl_connect(client *cl, server *s, const client_opts *o)
{
    int rc = cl_dial(cl, s);

    return rc == 0 ? cl_handshake(cl, o) : rc;
}

static int cl_write(client *cl, const void *buf, size_t len)
{
    int64_t deadline = rt_now() + IO_TIMEOUT;
    size_t off = 0;

    for (int i = 0; off < len && i < MAX_STEPS; i++) {
        size_t chunk = len - off < 16384 ? len - off : 16384;
        size_t n = 0;
        int ret;

        ERR_clear_error();
        ret = SSL_write_ex(cl->ssl, (const char *)buf + off, chunk, &n);
        if (ret == 1) {
            off += n;
            continue;
        }
        ret = cl_step(cl, ret, deadline);
        if (ret <= 0)
            return ret < 0 ? ret : -EPIPE;
    }
    return off == len ? 0 : -EIO;
}

/* Reads exactly len bytes; returns len, fewer at end of stream, or < 0. */
static ssize_t cl_read(client *cl, void *buf, size_t len)
{
    int64_t deadline = rt_now() + IO_TIMEOUT;
    size_t off = 0;

    for (int i = 0; off < len && i < MAX_STEPS; i++) {
        size_t n = 0;
        int ret;

        ERR_clear_error();
        ret = SSL_read_ex(cl->ssl, (char *)buf + off, len - off, &n);
        if (ret == 1) {
            off += n;
            continue;
        }
        ret = cl_step(cl, ret, deadline);
        if (ret < 0)
            return ret;
        if (ret == 0)
            break;
    }
    return (ssize_t)off;
}

/* close_notify, then wait for the server's (or its end of stream). */
static void cl_shutdown(client *cl)
{
    int64_t deadline = rt_now() + IO_TIMEOUT;
    char b;

    for (int i = 0; i < MAX_STEPS; i++) {
        int ret;

        ERR_clear_error();
        ret = SSL_shutdown(cl->ssl);
        if (ret >= 0)
            break;
        if (cl_step(cl, ret, deadline) <= 0)
            return;
    }
    CHECK(cl_read(cl, &b, 1) == 0); /* the server's close_notify */
}

static void cl_close(client *cl)
{
    SSL_free(cl->ssl);
    SSL_CTX_free(cl->ctx);
    ERR_clear_error();
    if (cl->fd > 0) {
        rt_fd_unregister(cl->fd);
        close(cl->fd);
    }
    memset(cl, 0, sizeof(*cl));
    cl->fd = -1;
}

static const char *cl_alpn(client *cl)
{
    static const char http11[] = "http/1.1", h2[] = "h2";
    const unsigned char *p = NULL;
    unsigned int len = 0;

    SSL_get0_alpn_selected(cl->ssl, &p, &len);
    if (p == NULL || len == 0)
        return NULL;
    if (len == 8 && memcmp(p, http11, 8) == 0)
        return http11;
    if (len == 2 && memcmp(p, h2, 2) == 0)
        return h2;
    return "?";
}

/* Waits until the server closes c (end of stream or reset). */
static void expect_closed_by_server(rt_conn *c)
{
    char buf[256];

    for (int i = 0; i < MAX_STEPS; i++) {
        ssize_t n =
            rt_conn_read(c, buf, sizeof(buf), rt_now() + IO_TIMEOUT, NULL);
        if (n == 0 || n == -ECONNRESET)
            return;
        if (n < 0)
            fprintf(stderr, "expect_closed_by_server: %zd (%s)\n", n,
                    rt_strerror((int)n));
        CHECK(n > 0);
        if (n < 0)
            return;
    }
    CHECK(!"the server never closed");
}

/*
 * A full, good connection: handshake offering http/1.1, one echo, close.
 * This is how tests show that the server is still serving.
 */
static void good_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    client cl;
    srv_result r;
    char buf[5];

    atomic_store(&s->mode, MODE_ECHO);
    CHECK(cl_connect(&cl, s, &o) == 0);
    CHECK(cl_write(&cl, "hello", 5) == 0);
    CHECK(cl_read(&cl, buf, 5) == 5 && memcmp(buf, "hello", 5) == 0);
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(r.io_rc == 0); /* the client's close_notify */
        CHECK(r.bytes == 5);
        CHECK(r.shutdown_rc == 0);
    }
}

/* ------------------------------------------------------------ test runs */

typedef struct run_args {
    void (*client)(server *s);
    int mode;
    int64_t hs_timeout; /* 0: IO_TIMEOUT */
    bool hs_ctx;        /* give the handshake a cancellable context */
} run_args;

static rt_waitgroup client_wg;

typedef struct client_arg {
    run_args *a;
    server *s;
} client_arg;

static void client_main(void *arg)
{
    client_arg *ca = arg;

    ca->a->client(ca->s);
    rt_waitgroup_done(&client_wg);
}

static void run_main(void *arg)
{
    run_args *a = arg;
    server s = {.mode = a->mode, .hs_timeout = a->hs_timeout};
    client_arg ca = {a, &s};
    rt_go_opts big = {.stack_size = GW_TLS_STACK_SIZE};

    if (a->hs_ctx)
        s.hs_ctx = rt_ctx_with_cancel(rt_ctx_background());
    if (!server_start(&s))
        return;
    rt_waitgroup_add(&client_wg, 1);
    rt_go_opts(client_main, &ca, &big);
    rt_waitgroup_wait(&client_wg);
    server_stop(&s);
    if (s.hs_ctx != NULL)
        rt_ctx_release(s.hs_ctx);
}

static void run(run_args a)
{
    rt_check_run(0, run_main, &a);
}

/* --------------------------------------------------------------- context */

static void test_ctx_errors(void **state)
{
    char err[GW_TLS_ERR_LEN];
    gw_tls_ctx *t = (gw_tls_ctx *)1;

    (void)state;
    assert_int_equal(gw_tls_ctx_new(fx.missing, fx.key, &t, err, sizeof(err)),
                     -ENOENT);
    assert_null(t);
    assert_non_null(strstr(err, "certificate file"));
    assert_non_null(strstr(err, fx.missing));
    assert_non_null(strstr(err, "No such file or directory"));

    assert_int_equal(gw_tls_ctx_new(fx.cert, fx.missing, &t, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "private key file"));
    assert_non_null(strstr(err, fx.missing));

    assert_int_equal(gw_tls_ctx_new(fx.junk, fx.key, &t, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, fx.junk));
    assert_non_null(strstr(err, "no start line"));

    /* a certificate given as the key */
    assert_int_equal(gw_tls_ctx_new(fx.cert, fx.cert, &t, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "private key file"));

    assert_int_equal(
        gw_tls_ctx_new(fx.cert, fx.other_key, &t, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, fx.other_key));
    assert_non_null(strstr(err, "mismatch"));

    /* never a password prompt */
    assert_int_equal(gw_tls_ctx_new(fx.cert, fx.enc_key, &t, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, fx.enc_key));
    assert_non_null(strstr(err, "encrypted keys are not supported"));

    assert_int_equal(gw_tls_ctx_new("", fx.key, &t, err, sizeof(err)), -EINVAL);
    /* no error buffer, a tiny one */
    assert_int_equal(gw_tls_ctx_new(fx.missing, fx.key, &t, NULL, 0), -ENOENT);
    assert_int_equal(gw_tls_ctx_new(fx.missing, fx.key, &t, err, 4), -ENOENT);
    assert_int_equal(strlen(err), 3);

    assert_int_equal(gw_tls_ctx_new(fx.cert, fx.key, &t, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_non_null(t);
    gw_tls_ctx_free(t);
    gw_tls_ctx_free(NULL);
    assert_int_equal(ERR_peek_error(), 0);
}

/* ------------------------------------------------------------------ echo */

static void echo_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    client cl;
    srv_result r;
    char buf[64];
    size_t total = 0;

    CHECK(cl_connect(&cl, s, &o) == 0);
    CHECK(cl_alpn(&cl) != NULL && strcmp(cl_alpn(&cl), "http/1.1") == 0);
    for (int i = 0; i < 20; i++) {
        int len = snprintf(buf, sizeof(buf), "message %d", i);

        CHECK(cl_write(&cl, buf, (size_t)len) == 0);
        memset(buf, 0, sizeof(buf));
        CHECK(cl_read(&cl, buf, (size_t)len) == len);
        CHECK(strncmp(buf, "message ", 8) == 0 && strtol(buf + 8, NULL, 10) == i);
        total += (size_t)len;
    }
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(strcmp(r.alpn, "http/1.1") == 0);
        CHECK(strcmp(r.version, "TLSv1.3") == 0);
        CHECK(r.io_rc == 0);
        CHECK(r.bytes == total);
        CHECK(r.shutdown_rc == 0);
    }
}

static void test_echo(void **state)
{
    (void)state;
    run((run_args){.client = echo_client, .mode = MODE_ECHO});
}

static void bulk_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    uint64_t len = BULK_BYTES;
    uint8_t *buf = malloc(BULK_BYTES);
    bool same = true;
    client cl;
    srv_result r;

    CHECK(buf != NULL);
    if (buf == NULL)
        return;
    CHECK(cl_connect(&cl, s, &o) == 0);
    for (size_t i = 0; i < BULK_BYTES; i++)
        buf[i] = pattern(i);
    CHECK(cl_write(&cl, &len, sizeof(len)) == 0);
    CHECK(cl_write(&cl, buf, BULK_BYTES) == 0);
    memset(buf, 0, BULK_BYTES);
    rt_sleep(50 * RT_MSEC); /* let the server's one big write fill up */
    CHECK(cl_read(&cl, buf, BULK_BYTES) == (ssize_t)BULK_BYTES);
    for (size_t i = 0; i < BULK_BYTES; i++)
        same = same && buf[i] == pattern(i);
    CHECK(same);
    cl_shutdown(&cl);
    cl_close(&cl);
    free(buf);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(r.bytes == BULK_BYTES);
        CHECK(r.io_rc == 0);
        CHECK(r.shutdown_rc == 0);
    }
}

static void test_echo_1mib(void **state)
{
    (void)state;
    run((run_args){.client = bulk_client, .mode = MODE_BULK});
}

/* ------------------------------------------------------------------ ALPN */

static void alpn_client(server *s)
{
    static const client_opts both = {ALPN(ALPN_H2_HTTP11)};
    static const client_opts h2 = {ALPN(ALPN_H2)};
    static const client_opts none = {.alpn = NULL};
    client cl;
    srv_result r;

    /* h2 and http/1.1 offered: http/1.1, never h2 */
    CHECK(cl_connect(&cl, s, &both) == 0);
    CHECK(cl_alpn(&cl) != NULL && strcmp(cl_alpn(&cl), "http/1.1") == 0);
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(strcmp(r.alpn, "http/1.1") == 0);
    }

    /* only h2 offered: refused with no_application_protocol (nginx) */
    CHECK(cl_connect(&cl, s, &h2) == -EPROTO);
    CHECK(strstr(cl.err, "no application protocol") != NULL);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -EPROTO);
        CHECK(strstr(r.err, "TLS handshake: ") == r.err);
        CHECK(strstr(r.err, "no application protocol") != NULL);
        CHECK(strcmp(r.alpn, "") == 0);
    }

    /* no ALPN at all: served, nothing selected */
    CHECK(cl_connect(&cl, s, &none) == 0);
    CHECK(cl_alpn(&cl) == NULL);
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(strcmp(r.alpn, "") == 0);
    }
    good_client(s);
}

static void test_alpn(void **state)
{
    (void)state;
    run((run_args){.client = alpn_client, .mode = MODE_ECHO});
}

/* -------------------------------------------------------------- versions */

static void versions_client(server *s)
{
    static const client_opts tls12 = {.max_version = TLS1_2_VERSION,
                                      ALPN(ALPN_HTTP11)};
    static const client_opts tls11 = {.min_version = TLS1_1_VERSION,
                                      .max_version = TLS1_1_VERSION,
                                      .legacy = true,
                                      ALPN(ALPN_HTTP11)};
    client cl;
    srv_result r;
    char buf[2];

    CHECK(cl_connect(&cl, s, &tls12) == 0);
    CHECK(cl_write(&cl, "12", 2) == 0);
    CHECK(cl_read(&cl, buf, 2) == 2);
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(strcmp(r.version, "TLSv1.2") == 0);
        CHECK(strcmp(r.alpn, "http/1.1") == 0);
    }

    CHECK(cl_connect(&cl, s, &tls11) == -EPROTO);
    CHECK(strstr(cl.err, "protocol version") != NULL);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -EPROTO);
        CHECK(strstr(r.err, "unsupported protocol") != NULL);
    }
    good_client(s);
}

static void test_tls11_refused(void **state)
{
    (void)state;
    run((run_args){.client = versions_client, .mode = MODE_ECHO});
}

/* -------------------------------------------------------- broken clients */

static rt_conn *dial(server *s)
{
    char addr[32];
    rt_conn *c = NULL;
    int rc;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", s->port);
    rc = rt_dial(addr, &c, rt_now() + IO_TIMEOUT, NULL);
    CHECK(rc == 0);
    return rc == 0 ? c : NULL;
}

static void garbage_client(server *s)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    rt_conn *c = dial(s);
    srv_result r;

    if (c != NULL) {
        CHECK(rt_conn_write(c, req, sizeof(req) - 1, rt_now() + IO_TIMEOUT,
                            NULL) == (ssize_t)(sizeof(req) - 1));
        expect_closed_by_server(c);
        rt_conn_release(c);
    }
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -EPROTO);
        CHECK(strstr(r.err, "http request") != NULL);
    }
    good_client(s);
}

static void test_garbage(void **state)
{
    (void)state;
    run((run_args){.client = garbage_client, .mode = MODE_ECHO});
}

/* Connects and sends nothing: the handshake deadline (300 ms) ends it. */
static void silent_client(server *s)
{
    rt_conn *c = dial(s);
    srv_result r;

    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -ETIMEDOUT);
        CHECK(r.ended >= r.deadline);
        CHECK(r.ended < r.deadline + 200 * RT_MSEC);
        CHECK(strcmp(r.err, "TLS handshake: timed out") == 0);
    }
    if (c != NULL) {
        expect_closed_by_server(c);
        rt_conn_release(c);
    }
    atomic_store(&s->hs_timeout, IO_TIMEOUT);
    good_client(s);
}

static void test_silent_client_times_out(void **state)
{
    (void)state;
    run((run_args){.client = silent_client,
                   .mode = MODE_ECHO,
                   .hs_timeout = 300 * RT_MSEC});
}

/* The handshake's context is cancelled while it waits for a ClientHello. */
static void cancel_client(server *s)
{
    rt_conn *c = dial(s);
    srv_result r;

    rt_sleep(100 * RT_MSEC);
    rt_ctx_cancel(s->hs_ctx);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -ECANCELED);
        CHECK(strcmp(r.err, "TLS handshake: cancelled") == 0);
    }
    if (c != NULL) {
        expect_closed_by_server(c);
        rt_conn_release(c);
    }
}

static void test_handshake_cancelled(void **state)
{
    (void)state;
    run((run_args){.client = cancel_client, .mode = MODE_ECHO, .hs_ctx = true});
}

/*
 * A real ClientHello, made by OpenSSL into a memory BIO so that no answer
 * can reach the client's SSL. Returns its length, 0 on failure.
 */
static size_t client_hello(char *buf, size_t len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    int n = 0;

    if (ssl != NULL && rbio != NULL && wbio != NULL) {
        SSL_set_bio(ssl, rbio, wbio); /* the SSL owns both now */
        rbio = wbio = NULL;
        CHECK(SSL_connect(ssl) == -1); /* wants to read the answer */
        n = BIO_read(SSL_get_wbio(ssl), buf, (int)len);
    }
    BIO_free(rbio);
    BIO_free(wbio);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return n > 0 ? (size_t)n : 0;
}

/* Sends a ClientHello and leaves without waiting for the answer. */
static void hello_then_gone_client(server *s)
{
    char hello[4096];
    size_t len = client_hello(hello, sizeof(hello));
    rt_conn *c = dial(s);
    srv_result r;

    CHECK(len > 0);
    if (c != NULL) {
        CHECK(rt_conn_write(c, hello, len, rt_now() + IO_TIMEOUT, NULL) ==
              (ssize_t)len);
        rt_conn_release(c);
    }
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == -ECONNRESET || r.accept_rc == -EPIPE);
        CHECK(strstr(r.err, "TLS handshake: ") == r.err);
    }
    good_client(s);
}

static void test_client_gone_in_handshake(void **state)
{
    (void)state;
    run((run_args){.client = hello_then_gone_client, .mode = MODE_ECHO});
}

/* Closes the TCP connection without close_notify: the server reads end of
 * stream (0), not an error. */
static void fin_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    client cl;
    srv_result r;
    char buf[3];

    CHECK(cl_connect(&cl, s, &o) == 0);
    CHECK(cl_write(&cl, "abc", 3) == 0);
    CHECK(cl_read(&cl, buf, 3) == 3);
    cl_close(&cl); /* FIN, no close_notify */
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(r.io_rc == 0);
        CHECK(r.bytes == 3);
    }
    good_client(s);
}

static void test_eof_without_close_notify(void **state)
{
    (void)state;
    run((run_args){.client = fin_client, .mode = MODE_ECHO});
}

/* ------------------------------------------------- deadlines after hello */

/* The server's first read times out (200 ms); the session goes on. */
static void slow_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    client cl;
    srv_result r;
    char buf[4];

    CHECK(cl_connect(&cl, s, &o) == 0);
    rt_sleep(400 * RT_MSEC);
    CHECK(cl_write(&cl, "ping", 4) == 0);
    CHECK(cl_read(&cl, buf, 4) == 4 && memcmp(buf, "ping", 4) == 0);
    cl_shutdown(&cl);
    cl_close(&cl);
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(r.read_timeout_rc == -ETIMEDOUT);
        CHECK(r.read_timeout_late >= 0);
        CHECK(r.read_timeout_late < 200 * RT_MSEC);
        CHECK(strcmp(r.err, "TLS read: timed out") == 0);
        CHECK(r.bytes == 4);
        CHECK(r.io_rc == 0);
        CHECK(r.shutdown_rc == 0);
    }
}

static void test_read_timeout_keeps_session(void **state)
{
    (void)state;
    run((run_args){.client = slow_client, .mode = MODE_READ_TIMEOUT});
}

/* The client resets the connection while the server writes 8 MiB: an
 * error for that write, no SIGPIPE, and the server goes on. */
static void reset_client(server *s)
{
    client_opts o = {ALPN(ALPN_HTTP11)};
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    client cl;
    srv_result r;
    char buf[4096];

    CHECK(cl_connect(&cl, s, &o) == 0);
    CHECK(cl_write(&cl, "g", 1) == 0);
    CHECK(cl_read(&cl, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
    setsockopt(cl.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    cl_close(&cl); /* RST */
    if (next_result(s, &r)) {
        CHECK(r.accept_rc == 0);
        CHECK(r.io_rc == -ECONNRESET || r.io_rc == -EPIPE);
        CHECK(strstr(r.err, "TLS write: ") == r.err);
        CHECK(r.shutdown_rc == r.io_rc); /* the session is over */
    }
    good_client(s);
}

static void test_peer_reset_during_write(void **state)
{
    (void)state;
    run((run_args){.client = reset_client, .mode = MODE_WRITE_RESET});
}

/* ------------------------------------------------- close from outside */

/*
 * 1,000 rounds: the owner goroutine of a server-side TLS connection
 * handshakes, reads and echoes while another goroutine, holding its own
 * reference on the underlying rt_conn, closes it at a random point (an
 * idle reaper, a drain). The owner's call fails (-EBADF, or what the
 * client's reaction to the close causes), and since every byte OpenSSL
 * moves goes through the rt_conn, nothing touches a reused fd number or
 * freed memory (make test-asan / test-race run this too).
 */
#define TLS_RACE_ROUNDS 1000

/* Where the closes landed, so the test knows it covered every phase. */
static _Atomic int race_in_handshake, race_in_io;

typedef struct tls_race {
    server s; /* only port is used */
    rt_conn *srv;
    unsigned seed;
    _Atomic bool talking; /* the owner's handshake is done, or it gave up */
    rt_waitgroup wg;
} tls_race;

static bool tls_race_end(ssize_t rc)
{
    return rc == 0 || rc == -EBADF || rc == -ECONNRESET || rc == -EPIPE ||
           rc == -EPROTO;
}

static void tls_race_owner(void *arg)
{
    tls_race *r = arg;
    gw_tls_conn *tc;
    int rc = gw_tls_conn_new(fx.tls, r->srv, &tc);

    CHECK(rc == 0);
    if (rc != 0) {
        atomic_store(&r->talking, true);
        rt_conn_release(r->srv);
        rt_waitgroup_done(&r->wg);
        return;
    }
    rc = gw_tls_accept(tc, rt_now() + IO_TIMEOUT, NULL);
    CHECK(rc == 0 || tls_race_end(rc));
    atomic_fetch_add(rc == 0 ? &race_in_io : &race_in_handshake, 1);
    atomic_store(&r->talking, true);
    for (int i = 0; rc == 0 && i < MAX_STEPS; i++) {
        char buf[256];
        ssize_t n =
            gw_tls_read(tc, buf, sizeof(buf), rt_now() + IO_TIMEOUT, NULL);

        if (n <= 0) {
            CHECK(tls_race_end(n));
            break;
        }
        n = gw_tls_write(tc, buf, (size_t)n, rt_now() + IO_TIMEOUT, NULL);
        if (n < 0) {
            CHECK(tls_race_end(n));
            break;
        }
    }
    gw_tls_release(tc);
    rt_waitgroup_done(&r->wg);
}

static void tls_race_closer(void *arg)
{
    tls_race *r = arg;
    unsigned pick = (unsigned)rand_r(&r->seed);

    /* A random point: half the time somewhere in the handshake, half the
     * time somewhere in the echo loop, whatever the machine's speed. */
    if (pick % 2 == 1) {
        int64_t give_up = rt_now() + IO_TIMEOUT;

        while (!atomic_load(&r->talking) && rt_now() < give_up)
            rt_yield();
        pick /= 2;
    }
    for (unsigned i = 0; i < pick % 128; i++)
        rt_yield();
    rt_conn_close(r->srv);
    rt_conn_unref(r->srv);
    rt_waitgroup_done(&r->wg);
}

/* Connects, then talks until the server goes away. */
static void tls_race_client(void *arg)
{
    tls_race *r = arg;
    client_opts o = {ALPN(ALPN_HTTP11)};
    client cl;

    if (cl_dial(&cl, &r->s) == 0 && cl_handshake(&cl, &o) == 0) {
        char buf[8];

        for (int i = 0; i < 50; i++)
            if (cl_write(&cl, "ping", 4) != 0 || cl_read(&cl, buf, 4) != 4)
                break;
    }
    cl_close(&cl);
    rt_waitgroup_done(&r->wg);
}

static void tls_race_main(void *arg)
{
    int *rounds = arg;
    rt_go_opts big = {.stack_size = GW_TLS_STACK_SIZE};
    rt_conn *ln;

    CHECK(rt_listen("127.0.0.1:0", 64, &ln) == 0);
    for (int i = 0; i < TLS_RACE_ROUNDS; i++) {
        tls_race r = {.s.port = rt_conn_port(ln),
                      .seed = (unsigned)i * 2654435761u};

        rt_waitgroup_add(&r.wg, 1);
        rt_go_opts(tls_race_client, &r, &big);
        if (rt_accept(ln, &r.srv, rt_now() + IO_TIMEOUT, NULL) != 0) {
            CHECK(!"accept");
            rt_waitgroup_wait(&r.wg);
            break;
        }
        rt_conn_ref(r.srv); /* the closer's */
        rt_waitgroup_add(&r.wg, 2);
        rt_go_opts(tls_race_owner, &r, &big); /* takes main's reference */
        rt_go(tls_race_closer, &r);
        rt_waitgroup_wait(&r.wg);
        *rounds = i + 1;
    }
    rt_conn_release(ln);
}

static void test_close_from_outside(void **state)
{
    int rounds = 0;

    (void)state;
    rt_check_run(2, tls_race_main, &rounds);
    assert_int_equal(rounds, TLS_RACE_ROUNDS);
    /* Both phases were hit, many times each. */
    print_message("closed in the handshake %d times, after it %d times\n",
                  atomic_load(&race_in_handshake), atomic_load(&race_in_io));
    assert_true(atomic_load(&race_in_handshake) >= TLS_RACE_ROUNDS / 20);
    assert_true(atomic_load(&race_in_io) >= TLS_RACE_ROUNDS / 20);
}

int main(void)
{
    /* The test's client writes through OpenSSL's socket BIO, without
     * MSG_NOSIGNAL: a server that closes first must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_echo_1mib),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_tls11_refused),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_silent_client_times_out),
        cmocka_unit_test(test_handshake_cancelled),
        cmocka_unit_test(test_client_gone_in_handshake),
        cmocka_unit_test(test_eof_without_close_notify),
        cmocka_unit_test(test_read_timeout_keeps_session),
        cmocka_unit_test(test_peer_reset_during_write),
        cmocka_unit_test(test_close_from_outside),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
