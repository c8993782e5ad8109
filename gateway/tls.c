/*
 * tls.c — server-side TLS (OpenSSL 3) on the runtime's netpoller.
 *
 * Design. OpenSSL is used in non-blocking mode: every SSL_* call either
 * completes or says SSL_ERROR_WANT_READ / WANT_WRITE, and drive() then
 * parks the goroutine in rt_conn_wait() until the socket is ready, the
 * deadline passes, the context is done or the connection is closed, and
 * calls again.
 *
 * The BIO is ours (fd_bio_*) rather than OpenSSL's socket BIO: it does its
 * I/O through rt_conn_try_read() / rt_conn_try_write(), never on the raw
 * fd. So every byte OpenSSL moves is an operation of the rt_conn: a close
 * from another goroutine (an idle reaper, a drain) fails the next one with
 * -EBADF instead of letting OpenSSL write into a reused fd number, and the
 * writes use MSG_NOSIGNAL: a peer that vanishes mid-handshake is -EPIPE,
 * never a SIGPIPE. The BIO records the socket error in the gw_tls_conn, so
 * that no errno has to survive anything. The BIO method is created once
 * per process and never freed.
 *
 * Thread-local state and migration. OpenSSL's error queue is per thread,
 * and a goroutine may resume on another thread after any rt_conn_wait().
 * So: ERR_clear_error() before every SSL_* call; classify() reads
 * SSL_get_error() and the queue right after the failing call, copies the
 * reason into tc->err and clears the queue, all before the goroutine can
 * park. No SSL_* call ever parks (the BIO never waits), so OpenSSL's
 * per-thread state is only used within one call, on one thread.
 *
 * Ownership. gw_tls_ctx owns its SSL_CTX; each SSL holds a reference on
 * it, so the ctx may be freed while connections are open. gw_tls_conn
 * owns its SSL (which owns the BIO) and, once made, the caller's
 * reference on the rt_conn; gw_tls_release() frees the session and
 * releases the connection.
 *
 * Goroutines. A gw_tls_conn is used by one goroutine at a time: the SSL
 * state machine is shared by reads and writes. That goroutine needs a
 * GW_TLS_STACK_SIZE stack (OpenSSL runs on it). Another goroutine may
 * close the underlying rt_conn at any time (holding its own reference:
 * rt_conn_ref(gw_tls_rt_conn(tc))); the owner's call then fails with
 * -EBADF. Errors: tc->fatal keeps the first error that broke the session
 * (any handshake or write error, a read error other than a timeout or
 * cancellation); every later call but gw_tls_release() returns it, and
 * SSL_shutdown() is not called after it, as OpenSSL requires.
 */
#include "tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Room for an operation name and an OpenSSL reason string. */
#define CONN_ERR_LEN 128

struct gw_tls_ctx {
    SSL_CTX *ssl_ctx;
};

struct gw_tls_conn {
    SSL *ssl;
    rt_conn *conn;
    int io_errno;     /* the BIO's last socket error in this SSL call, or 0 */
    bool eof;         /* the BIO read end of stream */
    int fatal;        /* the error that broke the session, or 0 */
    bool no_shutdown; /* SSL_shutdown() is not allowed any more */
    char err[CONN_ERR_LEN];
};

/* What drive() runs; also the wording of error messages. */
enum tls_op { OP_HANDSHAKE, OP_READ, OP_WRITE, OP_SHUTDOWN };

static const char *const op_names[] = {
    [OP_HANDSHAKE] = "TLS handshake",
    [OP_READ] = "TLS read",
    [OP_WRITE] = "TLS write",
    [OP_SHUTDOWN] = "TLS shutdown",
};

/* ----------------------------------------------------------- socket BIO */

static pthread_once_t fd_bio_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *fd_bio_method; /* set once by fd_bio_init, never freed */

static int fd_bio_write(BIO *b, const char *buf, int len)
{
    gw_tls_conn *tc = BIO_get_data(b);
    ssize_t n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    n = rt_conn_try_write(tc->conn, buf, (size_t)len);
    if (n >= 0)
        return (int)n;
    if (n == -EAGAIN) {
        BIO_set_retry_write(b);
        return -1;
    }
    tc->io_errno = (int)-n;
    return -1;
}

static int fd_bio_read(BIO *b, char *buf, int len)
{
    gw_tls_conn *tc = BIO_get_data(b);
    ssize_t n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    n = rt_conn_try_read(tc->conn, buf, (size_t)len);
    if (n > 0)
        return (int)n;
    if (n == 0) {
        tc->eof = true;
        return 0;
    }
    if (n == -EAGAIN) {
        BIO_set_retry_read(b);
        return -1;
    }
    tc->io_errno = (int)-n;
    return -1;
}

/*
 * OpenSSL asks for FLUSH after each flight (nothing is buffered here) and
 * EOF to tell a closed stream from a failed read; everything else (kTLS,
 * push/pop) is unsupported, which 0 says.
 */
static long fd_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    gw_tls_conn *tc = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return tc != NULL && tc->eof;
    default:
        return 0;
    }
}

static void fd_bio_init(void)
{
    int index = BIO_get_new_index();
    BIO_METHOD *m;

    if (index == -1)
        return;
    m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "fanfold socket");
    if (m == NULL)
        return;
    if (BIO_meth_set_write(m, fd_bio_write) != 1 ||
        BIO_meth_set_read(m, fd_bio_read) != 1 ||
        BIO_meth_set_ctrl(m, fd_bio_ctrl) != 1) {
        BIO_meth_free(m);
        return;
    }
    fd_bio_method = m;
}

/* ------------------------------------------------------------- messages */

/* OpenSSL's reason for error e, e.g. "unsupported protocol". */
static void reason_of(unsigned long e, char *buf, size_t len)
{
    const char *r;

    if (e == 0) {
        snprintf(buf, len, "unknown error");
        return;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SYS) {
        char sys[128];

        snprintf(buf, len, "%s",
                 strerror_r(ERR_GET_REASON(e), sys, sizeof(sys)));
        return;
    }
    r = ERR_reason_error_string(e);
    if (r != NULL)
        snprintf(buf, len, "%s", r);
    else
        ERR_error_string_n(e, buf, len);
}

/*
 * Takes the most telling error off this thread's queue and empties it: the
 * first system error (a file that cannot be opened), else the oldest one,
 * which OpenSSL raises where the problem is seen (the later ones say "PEM
 * lib"). Its text data, if any, goes to detail ("" if none).
 */
static unsigned long telling_error(char *detail, size_t len)
{
    unsigned long chosen = 0;
    unsigned long e;
    const char *data;
    int flags;

    detail[0] = '\0';
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        bool sys = ERR_GET_LIB(e) == ERR_LIB_SYS;

        if (chosen != 0 && !sys)
            continue;
        chosen = e;
        detail[0] = '\0';
        if (!sys && data != NULL && (flags & ERR_TXT_STRING) != 0)
            snprintf(detail, len, "%s", data);
        if (sys)
            break;
    }
    ERR_clear_error();
    return chosen;
}

static int errno_of(unsigned long e)
{
    if (ERR_GET_LIB(e) == ERR_LIB_SYS && ERR_GET_REASON(e) > 0)
        return -ERR_GET_REASON(e);
    if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
        return -ENOMEM;
    return -EINVAL;
}

/* -------------------------------------------------------------- context */

/* ALPN: "http/1.1" or nothing; see gw_tls_accept() in tls.h. OpenSSL has
 * checked that in is a well-formed protocol list. */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    static const char http11[] = "http/1.1";
    unsigned int i = 0;

    (void)ssl;
    (void)arg;
    while (i < inlen) {
        unsigned int n = in[i];

        if (n > inlen - i - 1)
            break;
        if (n == sizeof(http11) - 1 && memcmp(in + i + 1, http11, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += n + 1;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

/* Encrypted keys are refused instead of prompting on the terminal;
 * *asked (the userdata) records that a password was wanted. */
static int no_password(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)asked = true;
    return -1;
}

static void configure(SSL_CTX *s)
{
    SSL_CTX_set_options(
        s, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* Partial writes let drive() resume a large write after a short one;
     * released buffers keep an idle connection small (~a few KiB). */
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    /* Resumption through stateless tickets only: no per-session memory on
     * the server and no cache lock shared by every thread. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(s, alpn_select, NULL);
}

/* Writes "what "path": reason (detail)" to err; returns the errno. */
static int load_error(char *err, size_t errlen, const char *what,
                      const char *path)
{
    char reason[128], detail[128];
    unsigned long e = telling_error(detail, sizeof(detail));

    reason_of(e, reason, sizeof(reason));
    snprintf(err, errlen, "%s \"%.200s\": %s%s%s%s", what, path, reason,
             detail[0] != '\0' ? " (" : "", detail,
             detail[0] != '\0' ? ")" : "");
    return errno_of(e);
}

/* The certificate chain and the key, with what went wrong in err. */
static int load_files(SSL_CTX *s, const char *cert_file, const char *key_file,
                      char *err, size_t errlen)
{
    bool asked = false;
    int rc = 0;

    if (SSL_CTX_use_certificate_chain_file(s, cert_file) != 1)
        return load_error(err, errlen, "certificate file", cert_file);
    SSL_CTX_set_default_passwd_cb(s, no_password);
    SSL_CTX_set_default_passwd_cb_userdata(s, &asked);
    if (SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(s) != 1) {
        rc = load_error(err, errlen, "private key file", key_file);
        if (asked)
            snprintf(err, errlen,
                     "private key file \"%.200s\": encrypted keys are not "
                     "supported",
                     key_file);
        else if (rc == -EINVAL && strstr(err, "mismatch") != NULL)
            snprintf(err + strlen(err), errlen - strlen(err),
                     ": not the key of \"%.200s\"", cert_file);
    }
    SSL_CTX_set_default_passwd_cb_userdata(s, NULL);
    return rc;
}

int gw_tls_ctx_new(const char *cert_file, const char *key_file,
                   gw_tls_ctx **out, char *err, size_t errlen)
{
    char scratch[1];
    gw_tls_ctx *t;
    SSL_CTX *s;
    int rc;

    if (err == NULL || errlen == 0) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    err[0] = '\0';
    *out = NULL;
    if (cert_file == NULL || key_file == NULL || *cert_file == '\0' ||
        *key_file == '\0') {
        snprintf(err, errlen, "TLS needs a certificate file and a key file");
        return -EINVAL;
    }
    if (pthread_once(&fd_bio_once, fd_bio_init) != 0 || fd_bio_method == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return -ENOMEM;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        return -ENOMEM;
    }

    ERR_clear_error();
    s = SSL_CTX_new(TLS_server_method());
    if (s == NULL) {
        rc = load_error(err, errlen, "TLS context for", cert_file);
        goto fail_ctx;
    }
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1) {
        rc = load_error(err, errlen, "TLS 1.2 minimum for", cert_file);
        goto fail_config;
    }
    configure(s);
    rc = load_files(s, cert_file, key_file, err, errlen);
    if (rc != 0)
        goto fail_config;
    ERR_clear_error();
    t->ssl_ctx = s;
    *out = t;
    return 0;

fail_config:
    SSL_CTX_free(s);
fail_ctx:
    ERR_clear_error();
    free(t);
    return rc;
}

void gw_tls_ctx_free(gw_tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* ---------------------------------------------------------- connections */

int gw_tls_conn_new(gw_tls_ctx *ctx, rt_conn *c, gw_tls_conn **out)
{
    gw_tls_conn *tc;
    BIO *bio;

    *out = NULL;
    tc = calloc(1, sizeof(*tc));
    if (tc == NULL)
        return -ENOMEM;
    ERR_clear_error();
    tc->ssl = SSL_new(ctx->ssl_ctx);
    if (tc->ssl == NULL)
        goto fail_ssl;
    bio = BIO_new(fd_bio_method);
    if (bio == NULL)
        goto fail_bio;
    BIO_set_data(bio, tc);
    BIO_set_init(bio, 1);
    SSL_set_bio(tc->ssl, bio, bio); /* the SSL owns the BIO */
    SSL_set_accept_state(tc->ssl);
    tc->conn = c;
    *out = tc;
    return 0;

fail_bio:
    SSL_free(tc->ssl);
fail_ssl:
    ERR_clear_error();
    free(tc);
    return -ENOMEM;
}

/* Records a failure of op: the message, and err when it breaks tc. */
static int fail(gw_tls_conn *tc, enum tls_op op, int err, bool final,
                const char *why)
{
    snprintf(tc->err, sizeof(tc->err), "%s: %s", op_names[op], why);
    if (final && tc->fatal == 0)
        tc->fatal = err;
    return err;
}

static int fail_errno(gw_tls_conn *tc, enum tls_op op, int err, bool final)
{
    char buf[128];

    switch (err) {
    case -ETIMEDOUT:
        return fail(tc, op, err, final, "timed out");
    case -ECANCELED:
        return fail(tc, op, err, final, "cancelled");
    case -EBADF:
        return fail(tc, op, err, final, "connection closed");
    default:
        return fail(tc, op, err, final, strerror_r(-err, buf, sizeof(buf)));
    }
}

/*
 * Classify ret, the failure of an SSL_* call of op on tc. Must run right
 * after that call, on the same thread: before the goroutine can park.
 * Returns RT_READ or RT_WRITE to wait for, 0 at end of stream, or a
 * negative errno (tc->err says why). Leaves the error queue empty.
 */
static int classify(gw_tls_conn *tc, enum tls_op op, int ret)
{
    int code = SSL_get_error(tc->ssl, ret);
    char reason[96];
    int rc;

    if (code == SSL_ERROR_WANT_READ) {
        rc = RT_READ;
    } else if (code == SSL_ERROR_WANT_WRITE) {
        rc = RT_WRITE;
    } else if (code == SSL_ERROR_ZERO_RETURN) {
        rc = 0; /* close_notify, or a FIN: see configure() */
    } else if (code == SSL_ERROR_SYSCALL && tc->io_errno != 0) {
        rc = fail_errno(tc, op, -tc->io_errno, true);
    } else if (code == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        /* The peer closed the stream. OpenSSL forbids SSL_shutdown()
         * after SSL_ERROR_SYSCALL, whatever the cause. */
        tc->no_shutdown = true;
        rc = 0;
    } else if (code == SSL_ERROR_SSL || code == SSL_ERROR_SYSCALL) {
        reason_of(ERR_peek_error(), reason, sizeof(reason));
        rc = fail(tc, op, -EPROTO, true, reason);
    } else {
        rc = fail(tc, op, -EPROTO, true, "unexpected OpenSSL state");
    }
    ERR_clear_error();
    return rc;
}

/*
 * Run op to completion: call OpenSSL, and while it wants the socket
 * readable or writable, park until it is (rt_conn_wait may also say "maybe":
 * OpenSSL then just asks again). Each pass either makes progress, parks,
 * or ends, and rt_conn_wait fails once the deadline has passed, so the loop
 * is bounded by the deadline. Returns 1 on success with *done bytes
 * (read/write), 0 at end of stream, or a negative errno.
 */
static int drive(gw_tls_conn *tc, enum tls_op op, void *buf, size_t len,
                 size_t *done, int64_t deadline, rt_ctx *ctx)
{
    for (;;) {
        int ret = 0;
        int want;

        ERR_clear_error();
        tc->io_errno = 0;
        switch (op) {
        case OP_HANDSHAKE:
            ret = SSL_do_handshake(tc->ssl);
            break;
        case OP_READ:
            ret = SSL_read_ex(tc->ssl, buf, len, done);
            break;
        case OP_WRITE:
            ret = SSL_write_ex(tc->ssl, buf, len, done);
            break;
        case OP_SHUTDOWN:
            /* 0: our close_notify is out, the peer's is not awaited */
            ret = SSL_shutdown(tc->ssl);
            if (ret == 0)
                ret = 1;
            break;
        }
        if (ret > 0)
            return 1;
        want = classify(tc, op, ret);
        if (want <= 0)
            return want;
        want = rt_conn_wait(tc->conn, want, deadline, ctx);
        if (want < 0) {
            /* A read may be retried after a timeout or cancellation:
             * OpenSSL keeps what it had read. A half-sent record or a
             * half-done handshake cannot be resumed by another call. */
            bool final = op != OP_READ || want == -EBADF;

            return fail_errno(tc, op, want, final);
        }
    }
}

int gw_tls_accept(gw_tls_conn *tc, int64_t deadline, rt_ctx *ctx)
{
    int rc;

    if (tc->fatal != 0)
        return tc->fatal; /* tc->err still says why */
    tc->err[0] = '\0';
    rc = drive(tc, OP_HANDSHAKE, NULL, 0, NULL, deadline, ctx);
    if (rc == 1)
        return 0;
    if (rc == 0) /* the client left in the middle */
        rc = fail(tc, OP_HANDSHAKE, -ECONNRESET, true,
                  "connection closed by the client");
    return rc;
}

ssize_t gw_tls_read(gw_tls_conn *tc, void *buf, size_t len, int64_t deadline,
                    rt_ctx *ctx)
{
    size_t n = 0;
    int rc;

    if (tc->fatal != 0)
        return tc->fatal; /* tc->err still says why */
    tc->err[0] = '\0';
    if (len == 0)
        return 0;
    rc = drive(tc, OP_READ, buf, len, &n, deadline, ctx);
    if (rc == 1)
        return (ssize_t)n;
    return rc;
}

ssize_t gw_tls_write(gw_tls_conn *tc, const void *buf, size_t len,
                     int64_t deadline, rt_ctx *ctx)
{
    const char *p = buf;
    size_t off = 0;

    if (tc->fatal != 0)
        return tc->fatal; /* tc->err still says why */
    tc->err[0] = '\0';
    /* Each pass writes at least one byte or returns: bounded by len. */
    while (off < len) {
        size_t n = 0;
        int rc = drive(tc, OP_WRITE, (void *)(p + off), len - off, &n, deadline,
                       ctx);

        if (rc == 0) /* the peer's close_notify: nobody reads any more */
            return fail(tc, OP_WRITE, -EPIPE, true,
                        "connection closed by the peer");
        if (rc < 0)
            return rc;
        off += n;
    }
    return (ssize_t)len;
}

int gw_tls_shutdown(gw_tls_conn *tc, int64_t deadline, rt_ctx *ctx)
{
    int rc;

    if (tc->fatal != 0)
        return tc->fatal; /* tc->err still says why */
    tc->err[0] = '\0';
    if (!SSL_is_init_finished(tc->ssl))
        return fail(tc, OP_SHUTDOWN, -ENOTCONN, false,
                    "handshake not completed");
    if (tc->no_shutdown)
        return fail(tc, OP_SHUTDOWN, -EPIPE, false,
                    "connection closed by the peer");
    rc = drive(tc, OP_SHUTDOWN, NULL, 0, NULL, deadline, ctx);
    if (rc == 1)
        return 0;
    if (rc == 0)
        return fail(tc, OP_SHUTDOWN, -EPIPE, true,
                    "connection closed by the peer");
    return rc;
}

void gw_tls_release(gw_tls_conn *tc)
{
    if (tc == NULL)
        return;
    ERR_clear_error();
    SSL_free(tc->ssl); /* frees the BIO; sends nothing */
    ERR_clear_error();
    rt_conn_release(tc->conn);
    free(tc);
}

const char *gw_tls_last_error(const gw_tls_conn *tc)
{
    return tc->err;
}

const char *gw_tls_alpn(const gw_tls_conn *tc)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;

    SSL_get0_alpn_selected(tc->ssl, &p, &len);
    if (p != NULL && len == 8 && memcmp(p, "http/1.1", 8) == 0)
        return "http/1.1";
    return NULL;
}

const char *gw_tls_version(const gw_tls_conn *tc)
{
    return SSL_get_version(tc->ssl);
}

rt_conn *gw_tls_rt_conn(gw_tls_conn *tc)
{
    return tc->conn;
}
