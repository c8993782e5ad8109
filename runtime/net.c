/*
 * net.c - TCP sockets on the netpoller: listen, accept, dial, read, write,
 * writev, shutdown, close, each parking only its goroutine, with a
 * deadline and a context (Go's net.netFD + internal/poll.FD).
 *
 * An rt_conn owns its fd. The I/O loop is always the same: try the
 * syscall; on EAGAIN park in rt_fd_wait() until the poller says the fd is
 * ready (or the deadline, the context or a close ends the wait); retry.
 *
 * Closing and freeing are separate (Go's fdMutex, simplified; the memory
 * rule Go gets from its garbage collector comes from reference counts):
 *
 *   state  one atomic word: bit 0 CLOSING, the rest the number of
 *          operations in progress (each call is one operation from its
 *          first syscall to its return). An operation begins with one
 *          fetch_add and fails with -EBADF if CLOSING was set.
 *   close  rt_conn_close() sets CLOSING (the first caller wins; the
 *          others get -EBADF at once), unregisters the fd from the poller,
 *          which wakes every parked operation with -EBADF, then parks
 *          until the operation count is zero, and only then closes the
 *          fd. So an fd number is never closed, and reused, while an
 *          operation may still issue a syscall on it; and every operation
 *          that starts after the close fails with -EBADF, from any
 *          goroutine, at any time.
 *   refs   how many holders may still call into the conn: the creator's
 *          reference (rt_listen, rt_accept, rt_dial) and one per
 *          rt_conn_ref(). The memory goes with the last rt_conn_unref()
 *          or rt_conn_release(). Every caller of any rt_conn_* function
 *          holds a reference for the duration of the call, so an operation
 *          in progress always holds one, and a closed conn stays valid
 *          memory (every call fails with -EBADF) until its last holder
 *          lets go.
 *
 * Who wakes the closer: the operation whose end brings state to exactly
 * CLOSING (no operations left) sets `drained` under c->lk and readies
 * c->closer if one is parked. After CLOSING no operation can begin, so
 * the count reaches zero once and stays there (a failing begin adds and
 * removes one, and may signal again: harmless).
 *
 * Errors are 0 or negative errno; read returns 0 at end of stream. Writes
 * use MSG_NOSIGNAL: a peer that went away is -EPIPE, never SIGPIPE. errno
 * is read with rt__errno() right after each syscall (see rt_internal.h).
 */
#include "rt_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLOSING ((uint64_t)1)
#define ONE_OP ((uint64_t)2)

struct rt_conn {
    int fd;
    _Atomic uint64_t state; /* CLOSING | operations * ONE_OP */
    _Atomic uint32_t refs;
    rt__lock lk;  /* protects drained, closer */
    bool drained; /* operations reached zero after CLOSING */
    rt_g *closer; /* parked in rt_conn_close until drained */
};

static void op_drained(rt_conn *c)
{
    rt__lock_acquire(&c->lk);
    c->drained = true;
    rt_g *g = c->closer;
    c->closer = NULL;
    rt__lock_release(&c->lk);
    if (g != NULL)
        rt__ready(g);
}

static void op_end(rt_conn *c)
{
    uint64_t s =
        atomic_fetch_sub_explicit(&c->state, ONE_OP, memory_order_acq_rel) -
        ONE_OP;
    if (RT__UNLIKELY(s == CLOSING))
        op_drained(c);
}

static int op_begin(rt_conn *c)
{
    uint64_t s =
        atomic_fetch_add_explicit(&c->state, ONE_OP, memory_order_acq_rel);
    if (RT__UNLIKELY(s & CLOSING)) {
        op_end(c);
        return -EBADF;
    }
    return 0;
}

/* Caller owns the result (it owns fd from now on): one reference. */
static rt_conn *conn_new(int fd)
{
    rt_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = fd;
    atomic_init(&c->refs, 1);
    return c;
}

static bool close_unlock(rt_g *g, void *arg)
{
    rt_conn *c = arg;
    c->closer = g;
    rt__lock_release(&c->lk);
    return true;
}

int rt_conn_close(rt_conn *c)
{
    if (c == NULL)
        return -EBADF;
    uint64_t s = atomic_fetch_or(&c->state, CLOSING);
    if (s & CLOSING)
        return -EBADF;
    rt_fd_unregister(c->fd); /* parked operations: -EBADF */
    rt__lock_acquire(&c->lk);
    if (!c->drained && atomic_load(&c->state) != CLOSING)
        rt__park(close_unlock, c, "conn close");
    else
        rt__lock_release(&c->lk);
    close(c->fd);
    return 0;
}

rt_conn *rt_conn_ref(rt_conn *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void rt_conn_unref(rt_conn *c)
{
    if (c == NULL ||
        atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* The last holder: nothing can call into c any more. */
    rt_conn_close(c);
    free(c);
}

void rt_conn_release(rt_conn *c)
{
    if (c == NULL)
        return;
    rt_conn_close(c);
    rt_conn_unref(c);
}

bool rt_conn_closed(rt_conn *c)
{
    return (atomic_load_explicit(&c->state, memory_order_acquire) & CLOSING) !=
           0;
}

/* ------------------------------------------------------------ addresses */

/* Parse numeric "host:port", "[v6]:port" or ":port" (all interfaces). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return -EINVAL;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 ||
        port > 65535)
        return -EINVAL;
    char host[INET6_ADDRSTRLEN + 2];
    size_t hlen = (size_t)(colon - addr);
    if (hlen >= sizeof host)
        return -EINVAL;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof *ss);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (hlen == 0)
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -EINVAL;
    *len = sizeof *s4;
    return 0;
}

int rt_conn_port(rt_conn *c)
{
    int err = op_begin(c);
    if (err != 0)
        return err;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &len) != 0)
        err = rt__errno();
    else if (ss.ss_family == AF_INET6)
        err = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        err = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    op_end(c);
    return err;
}

int rt_conn_peer_addr(rt_conn *c, char *buf, size_t len)
{
    int err = op_begin(c);
    if (err != 0)
        return err;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    int n = -1;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) != 0) {
        err = rt__errno();
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        n = snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        n = snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else {
        err = -EAFNOSUPPORT;
    }
    if (err == 0 && (n < 0 || (size_t)n >= len))
        err = -ENOSPC;
    op_end(c);
    return err;
}

int rt_conn_setsockopt(rt_conn *c, int level, int name, const void *val,
                       socklen_t len)
{
    int err = op_begin(c);
    if (err != 0)
        return err;
    if (setsockopt(c->fd, level, name, val, len) != 0)
        err = rt__errno();
    op_end(c);
    return err;
}

/* ------------------------------------------------------- listen, accept */

/* A non-blocking TCP socket for addr, which is parsed into *ss / *len.
 * Returns the fd (caller owns it) or a negative errno. */
static int stream_socket(const char *addr, struct sockaddr_storage *ss,
                         socklen_t *len)
{
    int err = parse_addr(addr, ss, len);
    if (err != 0)
        return err;
    int fd =
        socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd >= 0 ? fd : rt__errno();
}

/* Caller owns *out (one reference): rt_conn_release(). */
int rt_listen(const char *addr, int backlog, rt_conn **out)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err;
    int fd = stream_socket(addr, &ss, &len);
    if (fd < 0)
        return fd;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 ||
        listen(fd, backlog > 0 ? backlog : SOMAXCONN) != 0)
        goto fail_fd;
    if ((err = rt_fd_register(fd)) != 0)
        goto fail_err;
    rt_conn *c = conn_new(fd);
    if (c == NULL) {
        err = -ENOMEM;
        goto fail_registered;
    }
    *out = c;
    return 0;

fail_fd:
    err = rt__errno();
    goto fail_err;
fail_registered:
    rt_fd_unregister(fd);
fail_err:
    close(fd);
    return err;
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A connection for a connected, non-blocking fd; closes fd on failure. */
static int adopt(int fd, rt_conn **out)
{
    int err = rt_fd_register(fd);
    if (err != 0) {
        close(fd);
        return err;
    }
    rt_conn *c = conn_new(fd);
    if (c == NULL) {
        rt_fd_unregister(fd);
        close(fd);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

/* Caller owns *out (one reference): rt_conn_release(). -EMFILE/-ENFILE
 * when out of fds: the caller decides whether to back off. */
int rt_accept(rt_conn *ln, rt_conn **out, int64_t deadline, rt_ctx *ctx)
{
    int err = op_begin(ln);
    if (err != 0)
        return err;
    for (;;) {
        int fd = accept4(ln->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            tune(fd);
            err = adopt(fd, out);
            break;
        }
        err = rt__errno();
        if (err == -EINTR || err == -ECONNABORTED)
            continue;
        if (err != -EAGAIN)
            break;
        if ((err = rt_fd_wait(ln->fd, RT_READ, deadline, ctx)) != 0)
            break;
    }
    op_end(ln);
    return err;
}

/*
 * Wait for a non-blocking connect to finish. Writability can be spurious
 * (a wake-up for an earlier state): SO_ERROR 0 is confirmed with
 * getpeername(), and an unconnected socket waits again (as Go does).
 */
static int connect_wait(int fd, int64_t deadline, rt_ctx *ctx)
{
    for (;;) {
        int err = rt_fd_wait(fd, RT_WRITE, deadline, ctx);
        if (err != 0)
            return err;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            return rt__errno();
        if (soerr == EINPROGRESS || soerr == EALREADY || soerr == EINTR)
            continue;
        if (soerr != 0)
            return -soerr;
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
            return 0;
        if ((err = rt__errno()) != -ENOTCONN)
            return err;
    }
}

/* Caller owns *out (one reference): rt_conn_release(). */
int rt_dial(const char *addr, rt_conn **out, int64_t deadline, rt_ctx *ctx)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int err;
    int fd = stream_socket(addr, &ss, &len);
    if (fd < 0)
        return fd;
    tune(fd);
    /* Connect first, register after: an unconnected TCP socket polls as
     * EPOLLHUP, which would mark the fd hung up for good. */
    bool pending = false;
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        err = rt__errno();
        if (err != -EINPROGRESS && err != -EINTR) {
            close(fd);
            return err;
        }
        pending = true;
    }
    rt_conn *c;
    if ((err = adopt(fd, &c)) != 0)
        return err;
    if (pending && (err = connect_wait(fd, deadline, ctx)) != 0) {
        rt_conn_release(c);
        return err;
    }
    *out = c;
    return 0;
}

/* ---------------------------------------------------------------- I/O */

/* One read(2): the count, 0 at end of stream, or a negative errno
 * (-EAGAIN when nothing is buffered). */
static ssize_t read_once(rt_conn *c, void *buf, size_t len)
{
    for (;;) {
        ssize_t r = read(c->fd, buf, len);
        if (r >= 0)
            return r;
        r = rt__errno();
        if (r != -EINTR)
            return r;
    }
}

/* One send(2) with MSG_NOSIGNAL; a negative errno on failure. */
static ssize_t sendmsg_once(rt_conn *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov,
                        .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        n = rt__errno();
        if (n != -EINTR)
            return n;
    }
}

ssize_t rt_conn_read(rt_conn *c, void *buf, size_t len, int64_t deadline,
                     rt_ctx *ctx)
{
    ssize_t r = op_begin(c);
    if (r != 0)
        return r;
    while ((r = read_once(c, buf, len)) == -EAGAIN &&
           (r = rt_fd_wait(c->fd, RT_READ, deadline, ctx)) == 0)
        ;
    op_end(c);
    return r;
}

ssize_t rt_conn_try_read(rt_conn *c, void *buf, size_t len)
{
    ssize_t r = op_begin(c);
    if (r != 0)
        return r;
    r = read_once(c, buf, len);
    op_end(c);
    return r;
}

ssize_t rt_conn_try_write(rt_conn *c, const void *buf, size_t len)
{
    ssize_t r = op_begin(c);
    if (r != 0)
        return r;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    r = sendmsg_once(c, &iov, 1);
    op_end(c);
    return r;
}

ssize_t rt_conn_try_writev(rt_conn *c, const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    ssize_t r = op_begin(c);
    if (r != 0)
        return r;
    r = sendmsg_once(c, iov, iovcnt);
    op_end(c);
    return r;
}

int rt_conn_wait(rt_conn *c, int mode, int64_t deadline, rt_ctx *ctx)
{
    int err = op_begin(c);
    if (err != 0)
        return err;
    err = rt_fd_wait(c->fd, mode, deadline, ctx);
    op_end(c);
    return err;
}

ssize_t rt_conn_writev(rt_conn *c, const struct iovec *iov, int iovcnt,
                       int64_t deadline, rt_ctx *ctx)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > SSIZE_MAX)
        return -EINVAL;
    struct iovec local[16];
    struct iovec *v = local;
    if (iovcnt > 16 && (v = malloc(sizeof *v * (size_t)iovcnt)) == NULL)
        return -ENOMEM;
    if (iovcnt > 0)
        memcpy(v, iov, sizeof *v * (size_t)iovcnt);

    ssize_t r = op_begin(c);
    if (r == 0) {
        int first = 0;
        size_t done = 0;
        while (done < total) {
            ssize_t n = sendmsg_once(c, v + first, iovcnt - first);
            if (n < 0) {
                r = n;
                if (r == -EAGAIN &&
                    (r = rt_fd_wait(c->fd, RT_WRITE, deadline, ctx)) == 0)
                    continue;
                break;
            }
            done += (size_t)n;
            while (first < iovcnt && (size_t)n >= v[first].iov_len) {
                n -= (ssize_t)v[first].iov_len;
                first++;
            }
            if (n > 0) {
                v[first].iov_base = (char *)v[first].iov_base + n;
                v[first].iov_len -= (size_t)n;
            }
        }
        if (done == total)
            r = (ssize_t)total;
        op_end(c);
    }
    if (v != local)
        free(v);
    return r;
}

ssize_t rt_conn_write(rt_conn *c, const void *buf, size_t len, int64_t deadline,
                      rt_ctx *ctx)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return rt_conn_writev(c, &iov, 1, deadline, ctx);
}

int rt_conn_shutdown(rt_conn *c, int how)
{
    int err = op_begin(c);
    if (err != 0)
        return err;
    if (shutdown(c->fd, how) != 0)
        err = rt__errno();
    op_end(c);
    return err;
}

/*
 * Peer gone: the poller saw EPOLLRDHUP/HUP/ERR, and a 1-byte
 * recv(MSG_PEEK) confirms there is nothing left to read (0 = FIN) or the
 * connection was reset. Without a hang-up event nothing is asked of the
 * kernel, so this is cheap to call often (nginx's
 * ngx_http_upstream_check_broken_connection). A closed conn is gone.
 */
bool rt_conn_peer_gone(rt_conn *c)
{
    if (op_begin(c) != 0)
        return true;
    bool gone = false;
    if (rt_fd_hup(c->fd)) {
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0)
            gone = true;
        else if (n < 0) {
            int err = rt__errno();
            gone = err != -EAGAIN && err != -EINTR;
        }
    }
    op_end(c);
    return gone;
}
