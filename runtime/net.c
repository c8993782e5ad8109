/*
 * net.c - TCP sockets on the netpoller: listen, accept, dial, read, write,
 * writev, shutdown, close, each parking only its goroutine, with a
 * deadline and a context (Go's net.netFD + internal/poll.FD).
 *
 * An rt_conn owns its fd. The I/O loop is always the same: try the
 * syscall; on EAGAIN park in rt_fd_wait() until the poller says the fd is
 * ready (or the deadline, the context or a close ends the wait); retry.
 *
 * Closing while other goroutines use the connection (Go's fdMutex, much
 * simplified): every operation is counted in c->ops under c->lk;
 * rt_conn_close() marks the conn closing, unregisters the fd (which wakes
 * parked readers and writers with -EBADF), parks until ops drops to zero,
 * and only then closes the fd and frees the struct. So an fd number is
 * never closed (and reused) while an operation may still issue syscalls
 * on it, and no goroutine touches a freed rt_conn.
 *
 * Errors are 0 or negative errno; read returns 0 at end of stream. Writes
 * use MSG_NOSIGNAL: a peer that went away is -EPIPE, never SIGPIPE.
 */
#include "rt_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct rt_conn {
    int fd;
    rt__lock lk; /* protects ops, closing, closer */
    int ops;
    bool closing;
    rt_g *closer;
};

static int op_begin(rt_conn *c)
{
    rt__lock_acquire(&c->lk);
    bool closing = c->closing;
    if (!closing)
        c->ops++;
    rt__lock_release(&c->lk);
    return closing ? -EBADF : 0;
}

static void op_end(rt_conn *c)
{
    rt__lock_acquire(&c->lk);
    rt_g *wake = --c->ops == 0 ? c->closer : NULL;
    if (wake != NULL)
        c->closer = NULL;
    rt__lock_release(&c->lk);
    if (wake != NULL)
        rt__ready(wake);
}

/* Caller owns the result (it owns fd from now on). */
static rt_conn *conn_new(int fd)
{
    rt_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = fd;
    return c;
}

static bool close_unlock(rt_g *g, void *arg)
{
    rt_conn *c = arg;
    c->closer = g;
    rt__lock_release(&c->lk);
    return true;
}

void rt_conn_close(rt_conn *c)
{
    if (c == NULL)
        return;
    rt__lock_acquire(&c->lk);
    if (c->closing)
        rt__panic("rt_conn_close: connection closed twice");
    c->closing = true;
    rt__lock_release(&c->lk);
    rt_fd_unregister(c->fd); /* parked readers and writers: -EBADF */
    rt__lock_acquire(&c->lk);
    if (c->ops > 0)
        rt__park(close_unlock, c, "conn close");
    else
        rt__lock_release(&c->lk);
    close(c->fd);
    free(c);
}

int rt_conn_fd(rt_conn *c)
{
    return c->fd;
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
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
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
    return fd >= 0 ? fd : -errno;
}

/* Caller owns *out: rt_conn_close(). */
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
    err = -errno;
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

/* Caller owns *out: rt_conn_close(). -EMFILE/-ENFILE when out of fds:
 * the caller decides whether to back off. */
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
        err = -errno;
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
            return -errno;
        if (soerr == EINPROGRESS || soerr == EALREADY || soerr == EINTR)
            continue;
        if (soerr != 0)
            return -soerr;
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0)
            return 0;
        if (errno != ENOTCONN)
            return -errno;
    }
}

/* Caller owns *out: rt_conn_close(). */
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
        err = -errno;
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
        rt_conn_close(c);
        return err;
    }
    *out = c;
    return 0;
}

/* ---------------------------------------------------------------- I/O */

ssize_t rt_conn_read(rt_conn *c, void *buf, size_t len, int64_t deadline,
                     rt_ctx *ctx)
{
    ssize_t r = op_begin(c);
    if (r != 0)
        return r;
    for (;;) {
        r = read(c->fd, buf, len);
        if (r >= 0)
            break;
        r = -errno;
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN)
            break;
        if ((r = rt_fd_wait(c->fd, RT_READ, deadline, ctx)) != 0)
            break;
    }
    op_end(c);
    return r;
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
            struct msghdr mh = {.msg_iov = v + first,
                                .msg_iovlen = (size_t)(iovcnt - first)};
            ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
            if (n < 0) {
                r = -errno;
                if (r == -EINTR)
                    continue;
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
        err = -errno;
    op_end(c);
    return err;
}

/*
 * Peer gone: the poller saw EPOLLRDHUP/HUP/ERR, and a 1-byte
 * recv(MSG_PEEK) confirms there is nothing left to read (0 = FIN) or the
 * connection was reset. Without a hang-up event nothing is asked of the
 * kernel, so this is cheap to call often (nginx's
 * ngx_http_upstream_check_broken_connection).
 */
bool rt_conn_peer_gone(rt_conn *c)
{
    if (!rt_fd_hup(c->fd))
        return false;
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return true;
    return false;
}
