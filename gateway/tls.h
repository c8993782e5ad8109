/*
 * tls.h — server-side TLS streams (OpenSSL 3) over the runtime's sockets.
 *
 * A gw_tls_ctx holds one certificate chain and its key (TLS 1.2 minimum,
 * ALPN "http/1.1" only). A gw_tls_conn wraps one accepted rt_conn; its
 * handshake, read, write and shutdown park only the calling goroutine on
 * the netpoller and take a deadline (RT_FOREVER: none) and a context
 * (NULL: none), like rt_conn_read():
 *
 *     gw_tls_conn *tc;
 *     if (gw_tls_conn_new(tls, c, &tc) != 0) { rt_conn_release(c); return; }
 *     if (gw_tls_accept(tc, header_deadline, ctx) != 0) {
 *         log("%s", gw_tls_last_error(tc));
 *         gw_tls_release(tc);    (releases c too)
 *         return;
 *     }
 *     n = gw_tls_read(tc, buf, sizeof(buf), deadline, ctx);
 *     gw_tls_write(tc, resp, len, deadline, ctx);
 *     gw_tls_shutdown(tc, rt_now() + 100 * RT_MSEC, NULL);
 *     gw_tls_release(tc);
 *
 * Return values: 0 / a byte count, or a negative errno: -ETIMEDOUT (the
 * deadline passed), -ECANCELED (ctx done), -ECONNRESET (the peer reset or
 * closed the connection during the handshake), -EPIPE (write after the
 * peer closed), -EPROTO (a TLS protocol error: bad record, unsupported
 * version, alert...), -ENOMEM, -EBADF (the connection was closed), else a
 * socket errno. gw_tls_last_error() says what happened in words, with
 * OpenSSL's reason ("TLS handshake: unsupported protocol").
 *
 * Stack: OpenSSL runs on the calling goroutine's stack and a handshake
 * needs tens of KiB of it. Every goroutine that calls gw_tls_* (other than
 * gw_tls_ctx_* before rt_run) must be spawned with a stack of at least
 * GW_TLS_STACK_SIZE:
 *
 *     rt_go_opts o = {.stack_size = GW_TLS_STACK_SIZE};
 *     rt_go_opts(serve_conn, c, &o);
 *
 * Goroutines: a gw_tls_conn is used by one goroutine at a time (an SSL
 * object has a single state machine: no reader and writer goroutines at
 * once, unlike rt_conn). To interrupt a goroutine blocked in gw_tls_*,
 * cancel the context it passed, or close the underlying connection from
 * any goroutine that holds a reference on it (rt_conn_ref() of
 * gw_tls_rt_conn() while the owner still holds tc, then rt_conn_close()
 * and rt_conn_unref() whenever): the owner's call fails with -EBADF and
 * the session is broken; the owner still calls gw_tls_release().
 */
#ifndef GW_TLS_H
#define GW_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rt.h"

/* Minimum stack for goroutines that call gw_tls_* (see above). */
#define GW_TLS_STACK_SIZE ((size_t)256 * 1024)
/* A gw_tls_ctx_new() error buffer of this size never truncates the
 * reason (paths longer than ~200 bytes are shortened). */
#define GW_TLS_ERR_LEN 512

typedef struct gw_tls_ctx gw_tls_ctx;
typedef struct gw_tls_conn gw_tls_conn;

/*
 * Load a PEM certificate chain (leaf first) and its PEM private key
 * (unencrypted: there is no one to ask for a password) and make a server
 * context: TLS 1.2 and 1.3, ALPN "http/1.1", renegotiation off, stateless
 * session tickets, no server-side session cache. Reads files (blocking
 * I/O): call it at start-up, before rt_run() or from a goroutine with a
 * GW_TLS_STACK_SIZE stack.
 *
 * Returns 0 and *out (caller owns it: gw_tls_ctx_free()), or a negative
 * errno (-ENOENT, -EACCES... for a file that cannot be read, -EINVAL for
 * bad PEM or a key that does not match the certificate, -ENOMEM) with a
 * message in err (errlen bytes, NUL-terminated; may be NULL) naming the
 * file and OpenSSL's reason, e.g.
 *     certificate file "/etc/x.crt": No such file or directory
 */
int gw_tls_ctx_new(const char *cert_file, const char *key_file,
                   gw_tls_ctx **out, char *err, size_t errlen);

/* Free ctx (NULL: nothing). Connections made from it may outlive it. */
void gw_tls_ctx_free(gw_tls_ctx *ctx);

/*
 * Wrap an accepted connection c (registered with the netpoller, as
 * rt_accept() leaves it) for a server-side TLS session. No I/O. On success
 * *out owns the caller's reference on c: gw_tls_release() releases both.
 * On failure (-ENOMEM) c stays
 * the caller's.
 */
int gw_tls_conn_new(gw_tls_ctx *ctx, rt_conn *c, gw_tls_conn **out);

/*
 * The server handshake. The deadline covers the whole handshake (the
 * gateway passes the header deadline: the handshake counts toward
 * header_timeout_ms). Returns 0, or a negative errno with the reason in
 * gw_tls_last_error(); a failed handshake leaves the conn good only for
 * gw_tls_release(). Clients that offer ALPN without "http/1.1" (e.g. only
 * "h2") are refused with a no_application_protocol alert, as nginx and
 * Go's crypto/tls do (RFC 7301 §3.2); clients without ALPN are served.
 */
int gw_tls_accept(gw_tls_conn *tc, int64_t deadline, rt_ctx *ctx);

/*
 * Read up to len decrypted bytes. Returns the count (> 0), 0 at end of
 * stream (close_notify, or a TCP FIN without it: HTTP's own framing
 * detects truncation), or a negative errno. A timeout or cancellation
 * leaves the session usable; other errors are final. len 0 returns 0.
 */
ssize_t gw_tls_read(gw_tls_conn *tc, void *buf, size_t len, int64_t deadline,
                    rt_ctx *ctx);

/*
 * Write all of buf: returns len or a negative errno. Any error is final
 * (a record may have been half sent): later writes return it again.
 */
ssize_t gw_tls_write(gw_tls_conn *tc, const void *buf, size_t len,
                     int64_t deadline, rt_ctx *ctx);

/*
 * Send close_notify (best effort, bounded by the deadline); does not wait
 * for the peer's. Returns 0, or a negative errno when it could not be sent
 * (also when the handshake never completed or the session failed).
 */
int gw_tls_shutdown(gw_tls_conn *tc, int64_t deadline, rt_ctx *ctx);

/* Free the session and release (close and unref) the underlying rt_conn
 * (NULL: nothing). The owner's last call on tc. */
void gw_tls_release(gw_tls_conn *tc);

/*
 * What the last failed call on tc was about and why, e.g. "TLS handshake:
 * unsupported protocol"; "" when the last call succeeded. Once an error
 * has broken the session, it stays. Valid until the next call on tc.
 */
const char *gw_tls_last_error(const gw_tls_conn *tc);

/* The negotiated ALPN protocol ("http/1.1") or NULL; valid until close. */
const char *gw_tls_alpn(const gw_tls_conn *tc);

/* The protocol version, e.g. "TLSv1.3" (static string). */
const char *gw_tls_version(const gw_tls_conn *tc);

/* The underlying connection (tc holds a reference on it), e.g. for
 * rt_conn_wait(c, RT_HUP, ...) or rt_conn_ref(). */
rt_conn *gw_tls_rt_conn(gw_tls_conn *tc);

#endif /* GW_TLS_H */
