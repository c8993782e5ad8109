/*
 * test_gateway.c - the gateway end to end: build/gateway and
 * build/mock-backend run as real processes on free loopback ports, and
 * the test speaks HTTP/1.1 to them over plain sockets (DESIGN.md, the
 * "Contract" sections).
 *
 * Processes. Each test starts what it needs: mock backends with --port 0
 * (the port is read from their first stderr line) and one gateway with
 * its own configuration file in the test's temporary folder. The gateway
 * cannot listen on port 0 (the configuration refuses it), so the test
 * picks a free port (bind to port 0, read it, close it) and tries another
 * when the gateway says the address is in use. Every process is
 * registered the moment it is spawned; the teardown, which cmocka runs
 * after a failing assertion too, stops each gateway with SIGTERM (SIGKILL
 * after 5 s) and every other process with SIGKILL, reaps them all, and
 * fails the test when a gateway did not exit 0 or a process's output
 * holds a sanitizer or runtime report. It also stops the in-test servers,
 * closes every client the test opened and frees its answer buffers.
 *
 * In-test servers (threads): a stub backend that answers every request
 * with a fixed status and body (after an optional delay) and records the
 * last request head, for what the mock cannot do (a 500, a body that is
 * not JSON, an empty one, a reset) or does not show (what a part sends);
 * and a DNS server (UDP) that answers every name NXDOMAIN, or with the A
 * records it was given, for a backend name that does not resolve and one
 * with several addresses (the second mock listens on 127.0.0.2).
 *
 * Clients are blocking sockets with poll() timeouts on the test's thread
 * (cmocka asserts are fine there); concurrent requests run on pthreads
 * that only record what they saw, checked on the test's thread after
 * pthread_join. No goroutine runs in this binary.
 *
 * Timing. Every wait is bounded in time and count. A time assertion
 * states its tolerance: an answer due at a deadline may come up to
 * LATE_MS after it (more in sanitizer builds), and timed cases are tried
 * twice, since a loaded machine may be late once.
 *
 * Binaries: $(BUILD)/gateway and $(BUILD)/mock-backend next to this
 * binary's build folder ($(BUILD)/tests/gateway/test_gateway), so a
 * sanitizer build tests its own; $GATEWAY and $MOCK_BACKEND override.
 *
 * Each test's folder (/tmp/fanfold-itest-XXXXXX: configurations, and the
 * output of every process it started, the gateway's access log among
 * them) is removed by the teardown, unless FANFOLD_ITEST_KEEP is set in
 * the environment: then it is kept and named on stderr, to read what a
 * failed test's processes saw.
 * wrk is optional: its test is skipped when it is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

/* How late an answer due at a deadline may be. */
#ifdef SANITIZED
#define LATE_MS 400
#else
#define LATE_MS 150
#endif

#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define IO_TIMEOUT_MS 5000
#define MAX_PROCS 12
#define MAX_CLIENTS 64
#define MAX_STUBS 8
#define CLIENT_BUF 65536
#define CONFIG_MAX 8192

/* The mock's bodies (tests/mock_backend.c), with the id as received. */
#define USERS_FMT                                                              \
    "{\"id\":\"%s\",\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\","  \
    "\"tier\":\"gold\",\"since\":\"2015-06-01\",\"locale\":\"en-GB\"}"
#define INVENTORY_FMT                                                          \
    "{\"id\":\"%s\",\"sku\":\"SKU-%s\",\"in_stock\":true,\"quantity\":42,"     \
    "\"warehouse\":\"ams-1\",\"updated_at\":\"2024-01-01T00:00:00Z\"}"
#define PRICES_FMT                                                             \
    "{\"id\":\"%s\",\"currency\":\"EUR\",\"amount_cents\":1999,"               \
    "\"list_cents\":2499,\"discount_pct\":20,\"valid_until\":\"2030-12-31\"}"

/* Configuration pieces, with ' for " (gateway_start turns them back). */
#define BACKEND(name) "'" name "':{'url':'http://127.0.0.1:%d'}"
#define DEMO_BACKENDS                                                          \
    "'backends':{" BACKEND("profile") "," BACKEND("inventory") "," BACKEND(    \
        "pricing") "}"
/* The demo route on path (a literal) with a %d timeout_ms. */
#define DEMO_ROUTE(method, path)                                               \
    "{'method':'" method "','path':'" path "','timeout_ms':%d,"                \
    "'fanout':[{'name':'profile','backend':'profile','path':'/users/{user}'}," \
    "{'name':'inventory','backend':'inventory','path':'/inventory/{id}',"      \
    "'required':true},"                                                        \
    "{'name':'pricing','backend':'pricing','path':'/prices/{id}'}]}"

/* ------------------------------------------------------------- time */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* -------------------------------------------------- the test's world */

typedef struct proc {
    pid_t pid; /* 0 once reaped */
    bool gateway;
    char name[32];
    char log[PATH_MAX]; /* its stdout and stderr */
} proc;

typedef struct client {
    int fd;
    size_t len; /* bytes buffered, not yet returned */
    char buf[CLIENT_BUF];
} client;

typedef struct stub stub;
typedef struct dns_stub dns_stub;

/* What the running test started; the teardown undoes all of it. Only
 * the test's thread touches it. */
static struct {
    char dir[64];
    proc procs[MAX_PROCS];
    size_t nprocs;
    client *clients[MAX_CLIENTS];
    stub *stubs[MAX_STUBS];
    size_t nstubs;
    dns_stub *dns;
    void *resps[16]; /* new_resp() */
    int nfiles;
} E;

/* The file's content (at most len - 1 bytes), NUL-terminated. */
static void read_file(const char *path, char *buf, size_t len)
{
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && got < len - 1) {
        ssize_t r = read(fd, buf + got, len - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (fd >= 0)
        close(fd);
    buf[got] = '\0';
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    close(fd);
}

/* A new file name in the test's folder. */
static void temp_name(char *out, size_t len, const char *stem, const char *ext)
{
    int n = snprintf(out, len, "%s/%s-%d%s", E.dir, stem, E.nfiles++, ext);
    assert_true(n > 0 && (size_t)n < len);
}

/* $(BUILD)/NAME: this binary is $(BUILD)/tests/gateway/test_gateway. */
static void bin_path(const char *name, const char *env, char *out, size_t len)
{
    const char *e = getenv(env);
    if (e != NULL && *e != '\0') {
        snprintf(out, len, "%s", e);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(exe, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    int k = snprintf(out, len, "%s/%s", exe, name);
    assert_true(k > 0 && (size_t)k < len);
}

/* ------------------------------------------------------- processes */

/* Starts argv[0] with stdout and stderr to a file of its own; registered
 * before this returns, so the teardown stops it. */
static proc *spawn(const char *name, const char *const argv[], bool gateway)
{
    assert_true(E.nprocs < MAX_PROCS);
    proc *p = &E.procs[E.nprocs];
    memset(p, 0, sizeof *p);
    p->gateway = gateway;
    snprintf(p->name, sizeof p->name, "%s", name);
    temp_name(p->log, sizeof p->log, name, ".log");
    int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0 && nul >= 0);
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    posix_spawn_file_actions_adddup2(&fa, nul, 0);
    posix_spawn_file_actions_adddup2(&fa, fd, 1);
    posix_spawn_file_actions_adddup2(&fa, fd, 2);
    int rc =
        posix_spawn(&p->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd);
    close(nul);
    if (rc != 0)
        fail_msg("cannot run %s: %s", argv[0], strerror(rc));
    E.nprocs++;
    return p;
}

/* Waits up to ms for p to exit: its wait status, or -1 (still running). */
static int proc_wait(proc *p, long ms)
{
    if (p->pid <= 0)
        return -1;
    for (int64_t end = now_ms() + ms;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return st;
        }
        if (r < 0 || now_ms() >= end)
            return -1;
        sleep_ms(2);
    }
}

/* sig, then SIGKILL after STOP_TIMEOUT_MS. The wait status, or -1 when
 * it had to be killed. */
static int proc_stop(proc *p, int sig)
{
    if (p->pid <= 0)
        return 0;
    kill(p->pid, sig);
    int st = proc_wait(p, STOP_TIMEOUT_MS);
    if (st == -1 && p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    return st;
}

/* A whole line of log holds text. */
static bool has_line(const char *log, const char *text)
{
    const char *at = strstr(log, text);
    return at != NULL && strchr(at, '\n') != NULL;
}

/* Waits until a whole line of p's output holds text (true) or p exits
 * without one (false); fails the test after START_TIMEOUT_MS. log gets
 * the output. */
static bool wait_output(proc *p, const char *text, char *log, size_t len)
{
    for (int64_t end = now_ms() + START_TIMEOUT_MS;;) {
        read_file(p->log, log, len);
        if (has_line(log, text))
            return true;
        if (proc_wait(p, 0) != -1) {
            read_file(p->log, log, len);
            return has_line(log, text);
        }
        if (now_ms() > end)
            fail_msg("%s: no \"%s\" after %d ms; output:\n%s", p->name, text,
                     START_TIMEOUT_MS, log);
        sleep_ms(2);
    }
}

/* A TCP socket bound to a free port of 127.0.0.1, not listening; the
 * port in *port. Caller owns the fd. */
static int bound_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on right now. */
static int free_port(void)
{
    int port;
    close(bound_socket(&port));
    return port;
}

/* A port of 127.0.0.1 that refuses connections for the rest of this
 * process: bound, never listening. The socket is kept open on purpose (one
 * per call, closed at exit), so that nothing else can take the port: a
 * port from free_port() is free for anyone, and once a backend of a test
 * running beside this one answered on it. */
static int refused_port(void)
{
    int port;
    (void)bound_socket(&port); /* kept open on purpose, see above */
    return port;
}

/* A mock-backend named name on a free port of 127.0.0.1, with extra
 * flags (a NULL-terminated list; the first may be NULL; --listen and
 * --port among them override). Returns its port. */
static int mock_start(const char *name, ...)
{
    char path[PATH_MAX];
    bin_path("mock-backend", "MOCK_BACKEND", path, sizeof path);
    const char *argv[16] = {path, "--port", "0", "--name", name};
    size_t n = 5;
    va_list ap;
    va_start(ap, name);
    for (const char *f; n < 15 && (f = va_arg(ap, const char *)) != NULL;)
        argv[n++] = f;
    va_end(ap);
    argv[n] = NULL;
    proc *p = spawn(name, argv, false);
    char log[1024], want[128];
    snprintf(want, sizeof want, "mock-backend %s listening on ", name);
    if (!wait_output(p, want, log, sizeof log))
        fail_msg("mock-backend %s did not start:\n%s", name, log);
    char *line = strstr(log, want);
    *strchr(line, '\n') = '\0';
    int port = (int)strtol(strrchr(line, ':') + 1, NULL, 10);
    assert_true(port > 0 && port < 65536);
    return port;
}

/* vsnprintf, then every ' becomes " (configurations are written with '). */
static void json_vformat(char *out, size_t len, const char *fmt, va_list ap)
{
    int n = vsnprintf(out, len, fmt, ap);
    assert_true(n > 0 && (size_t)n < len);
    for (char *c = out; *c != '\0'; c++)
        if (*c == '\'')
            *c = '"';
}

/* Writes a configuration file: {"listen":"127.0.0.1:PORT","workers":2,
 * then the formatted rest, which ends with the closing brace. */
static void write_config(char *path, size_t len, int port, const char *rest)
{
    char cfg[CONFIG_MAX + 64];
    temp_name(path, len, "gateway", ".json");
    snprintf(cfg, sizeof cfg, "{\"listen\":\"127.0.0.1:%d\",\"workers\":2,%s",
             port, rest);
    write_file(path, cfg);
}

/* Starts a gateway whose configuration is {"listen":..., "workers":2,
 * then fmt (' for "), on a free port; returns the port. */
static int gateway_start(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int gateway_start(const char *fmt, ...)
{
    char rest[CONFIG_MAX], gw[PATH_MAX], cfg[PATH_MAX], log[8192];
    va_list ap;
    va_start(ap, fmt);
    json_vformat(rest, sizeof rest, fmt, ap);
    va_end(ap);
    bin_path("gateway", "GATEWAY", gw, sizeof gw);
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = free_port();
        write_config(cfg, sizeof cfg, port, rest);
        const char *argv[] = {gw, "-c", cfg, NULL};
        proc *p = spawn("gateway", argv, true);
        if (wait_output(p, "fanfold: listening on", log, sizeof log))
            return port;
        if (strstr(log, "Address already in use") == NULL)
            fail_msg("the gateway did not start; output:\n%s\nconfig: %s", log,
                     rest);
    }
    fail_msg("the gateway found no free port in 5 tries");
    return -1;
}

/* -------------------------------------------------------- clients */

/* A connection to 127.0.0.1:port, not registered (any thread). NULL on
 * failure. Free with client_free. */
static client *client_open(int port)
{
    client *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (c->fd >= 0)
            close(c->fd);
        free(c);
        return NULL;
    }
    return c;
}

static void client_free(client *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}

/* A registered connection (the test's thread): the teardown closes it if
 * the test does not. */
static client *dial(int port)
{
    size_t i = 0;
    while (i < MAX_CLIENTS && E.clients[i] != NULL)
        i++;
    assert_true(i < MAX_CLIENTS);
    client *c = client_open(port);
    if (c == NULL)
        fail_msg("cannot connect to 127.0.0.1:%d: %s", port, strerror(errno));
    E.clients[i] = c;
    return c;
}

static void unregister(client *c)
{
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (E.clients[i] == c)
            E.clients[i] = NULL;
}

static void cl_close(client *c)
{
    unregister(c);
    client_free(c);
}

/* Close with a reset (SO_LINGER 0) instead of a FIN. */
static void cl_reset(client *c)
{
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    cl_close(c);
}

/* Sends len bytes. 0 or a negative errno. */
static int cl_write(client *c, const char *s, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = send(c->fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -errno;
        off += (size_t)n;
    }
    return 0;
}

static int cl_send(client *c, const char *s)
{
    return cl_write(c, s, strlen(s));
}

/* Reads more by deadline: the byte count, 0 at end of stream, -ETIMEDOUT
 * or a negative errno. */
static ssize_t cl_fill(client *c, int64_t deadline)
{
    if (c->len == CLIENT_BUF)
        return -ENOSPC;
    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {c->fd, POLLIN, 0};
        int r = poll(&p, 1, left > 0 ? (int)left : 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = recv(c->fd, c->buf + c->len, CLIENT_BUF - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        c->len += (size_t)n;
        return n;
    }
}

typedef struct resp {
    int status;
    long clen;       /* Content-Length, -1 when absent */
    char head[8192]; /* status line and headers, NUL-terminated */
    char body[CLIENT_BUF];
    size_t body_len;
    int64_t ms; /* from the request to the whole answer (fetch) */
} resp;

/* A response buffer for the test's thread, freed by the teardown. */
static resp *new_resp(void)
{
    size_t i = 0;
    while (i < 16 && E.resps[i] != NULL)
        i++;
    assert_true(i < 16);
    resp *r = calloc(1, sizeof *r);
    assert_non_null(r);
    E.resps[i] = r;
    return r;
}

/* The value of header name in r (case-insensitive), copied into out, or
 * NULL. */
static const char *hdr(const resp *r, const char *name, char *out, size_t len)
{
    size_t nlen = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p != NULL;
         p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
            continue;
        const char *v = line + nlen + 1;
        while (*v == ' ')
            v++;
        const char *end = strstr(v, "\r\n");
        size_t n = end != NULL ? (size_t)(end - v) : strlen(v);
        if (n >= len)
            n = len - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return out;
    }
    return NULL;
}

/* Reads one answer into r (no body for head_only, 1xx, 204). 0,
 * -ENODATA at end of stream before a byte of it, -ETIMEDOUT, -EPROTO. */
static int cl_recv(client *c, bool head_only, resp *r, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    const char *end;
    memset(r, 0, offsetof(resp, body));
    r->body[0] = '\0';
    r->body_len = 0;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        ssize_t n = cl_fill(c, deadline);
        if (n == 0)
            return c->len == 0 ? -ENODATA : -EPROTO;
        if (n < 0)
            return (int)n;
    }
    size_t hlen = (size_t)(end - c->buf) + 4;
    if (hlen >= sizeof r->head)
        return -EPROTO;
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    if (sscanf(r->head, "HTTP/1.1 %3d ", &r->status) != 1)
        return -EPROTO;
    char v[32];
    r->clen = -1;
    if (hdr(r, "Content-Length", v, sizeof v) != NULL)
        r->clen = strtol(v, NULL, 10);
    bool no_body = head_only || r->status < 200 || r->status == 204 ||
                   r->status == 304 || r->clen < 0;
    size_t blen = no_body ? 0 : (size_t)r->clen;
    if (blen >= sizeof r->body)
        return -EPROTO;
    while (c->len < hlen + blen) {
        ssize_t n = cl_fill(c, deadline);
        if (n <= 0)
            return n == 0 ? -EPROTO : (int)n;
    }
    memcpy(r->body, c->buf + hlen, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    c->len -= hlen + blen;
    memmove(c->buf, c->buf + hlen + blen, c->len);
    return 0;
}

/* Waits up to ms for the server to close: 0 when it closed (FIN or RST)
 * with no byte more, -EPROTO when bytes came first, -ETIMEDOUT. */
static int cl_wait_close(client *c, int ms)
{
    int64_t deadline = now_ms() + ms;
    for (;;) {
        if (c->len > 0)
            return -EPROTO;
        ssize_t n = cl_fill(c, deadline);
        if (n == 0 || n == -ECONNRESET)
            return c->len > 0 ? -EPROTO : 0;
        if (n < 0)
            return (int)n;
    }
}

/* True when nothing arrives for ms (and the connection stays open). */
static bool cl_quiet(client *c, int ms)
{
    return c->len == 0 && cl_fill(c, now_ms() + ms) == -ETIMEDOUT;
}

/* One request (as sent) on a new connection, the answer in r (any
 * thread). 0 or a negative errno. */
static int fetch_raw(int port, const char *req, bool head_only, resp *r)
{
    int64_t t0 = now_ms();
    client *c = client_open(port);
    if (c == NULL)
        return -ECONNREFUSED;
    int err = cl_send(c, req);
    if (err == 0)
        err = cl_recv(c, head_only, r, IO_TIMEOUT_MS);
    r->ms = now_ms() - t0;
    client_free(c);
    return err;
}

/* GET target on a new connection (the test's thread: asserts). */
static void get(int port, const char *target, resp *r)
{
    char req[16384];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", target);
    int err = fetch_raw(port, req, false, r);
    if (err != 0)
        fail_msg("GET %s: %s", target, strerror(-err));
}

/* One request as sent, on a new connection (asserts). */
static void fetch(int port, const char *req, resp *r)
{
    int err = fetch_raw(port, req, false, r);
    if (err != 0)
        fail_msg("%.60s...: %s", req, strerror(-err));
}

/* ---------------------------------------------------- assertions */

#define assert_status(r, want)                                                 \
    do {                                                                       \
        if ((r)->status != (want))                                             \
            fail_msg("status %d, wanted %d; answer:\n%s%s", (r)->status,       \
                     (want), (r)->head, (r)->body);                            \
    } while (0)

#define assert_body(r, want)                                                   \
    do {                                                                       \
        if (strcmp((r)->body, (want)) != 0)                                    \
            fail_msg("body\n  %s\nwanted\n  %s\nhead:\n%s", (r)->body, (want), \
                     (r)->head);                                               \
    } while (0)

#define assert_header(r, name, want)                                           \
    do {                                                                       \
        char v_[512];                                                          \
        const char *got_ = hdr((r), (name), v_, sizeof v_);                    \
        if (got_ == NULL || strcmp(got_, (want)) != 0)                         \
            fail_msg("%s: %s, wanted %s; head:\n%s", (name),                   \
                     got_ ? got_ : "(absent)", (want), (r)->head);             \
    } while (0)

#define assert_no_header(r, name)                                              \
    do {                                                                       \
        char v_[512];                                                          \
        if (hdr((r), (name), v_, sizeof v_) != NULL)                           \
            fail_msg("unexpected %s: %s; head:\n%s", (name), v_, (r)->head);   \
    } while (0)

#define assert_closes(c)                                                       \
    do {                                                                       \
        int e_ = cl_wait_close((c), IO_TIMEOUT_MS);                            \
        if (e_ != 0)                                                           \
            fail_msg("the connection did not close: %s", strerror(-e_));       \
    } while (0)

/* Elapsed ms in [lo, hi]. */
#define assert_ms(got, lo, hi)                                                 \
    do {                                                                       \
        int64_t g_ = (got);                                                    \
        if (g_ < (lo) || g_ > (hi))                                            \
            fail_msg("took %lld ms, wanted %lld..%lld", (long long)g_,         \
                     (long long)(lo), (long long)(hi));                        \
    } while (0)

static bool is_hex32(const char *s)
{
    if (strlen(s) != 32)
        return false;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The gateway's own answer: Content-Type, a correct Content-Length, a
 * current Date, an X-Request-Id. */
static void assert_gateway_headers(const resp *r)
{
    char v[512];
    assert_header(r, "Content-Type", "application/json");
    if (r->clen != (long)r->body_len)
        fail_msg("Content-Length %ld for %zu bytes", r->clen, r->body_len);
    if (hdr(r, "Date", v, sizeof v) == NULL)
        fail_msg("no Date; head:\n%s", r->head);
    struct tm tm = {0};
    const char *rest = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (rest == NULL || *rest != '\0')
        fail_msg("Date not in the IMF-fixdate form: %s", v);
    time_t t = timegm(&tm), now = time(NULL);
    if (t < now - 5 || t > now + 5)
        fail_msg("Date %s is not now", v);
    const char *id = hdr(r, "X-Request-Id", v, sizeof v);
    if (id == NULL || *id == '\0')
        fail_msg("no X-Request-Id; head:\n%s", r->head);
}

/* A JSON error body {"error":want} (want NULL: any string), or with a
 * part {"error":want,"part":part}. */
static void assert_error_body(const resp *r, const char *want, const char *part)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    if (j == NULL)
        fail_msg("not JSON (%s): %s", je.text, r->body);
    const char *e = json_string_value(json_object_get(j, "error"));
    const char *p = json_string_value(json_object_get(j, "part"));
    bool ok = json_is_object(j) && e != NULL &&
              (want == NULL || strcmp(e, want) == 0) &&
              json_object_size(j) == (part != NULL ? 2u : 1u) &&
              (part == NULL || (p != NULL && strcmp(p, part) == 0));
    json_decref(j);
    if (!ok)
        fail_msg("error body %s, wanted error %s part %s", r->body,
                 want ? want : "(any)", part ? part : "(none)");
}

/* An error answer the gateway makes itself. */
static void assert_error(const resp *r, int status, const char *want)
{
    assert_status(r, status);
    assert_gateway_headers(r);
    assert_error_body(r, want, NULL);
    assert_no_header(r, "X-Gateway-Completed");
}

/* A required part's failure: status, {"error":why,"part":part}, not
 * completed. */
static void assert_part_error(const resp *r, int status, const char *why,
                              const char *part)
{
    assert_status(r, status);
    assert_gateway_headers(r);
    assert_error_body(r, why, part);
    assert_header(r, "X-Gateway-Completed", "false");
}

/* The mock bodies merged as the demo route answers for user and id. */
static void demo_body(char *out, size_t len, const char *user, const char *id)
{
    char u[512], i[512], p[512];
    snprintf(u, sizeof u, USERS_FMT, user);
    snprintf(i, sizeof i, INVENTORY_FMT, id, id);
    snprintf(p, sizeof p, PRICES_FMT, id);
    snprintf(out, len, "{\"profile\":%s,\"inventory\":%s,\"pricing\":%s}", u, i,
             p);
}

/* The id a part's mock saw, from the merged body: "part":{"id":"..." */
static const char *part_id(const resp *r, const char *part, char *out,
                           size_t len)
{
    char key[96];
    snprintf(key, sizeof key, "\"%s\":{\"id\":\"", part);
    const char *s = strstr(r->body, key);
    if (s == NULL)
        fail_msg("no %s in %s", key, r->body);
    s += strlen(key);
    const char *e = strchr(s, '"');
    assert_non_null(e);
    size_t n = (size_t)(e - s) < len ? (size_t)(e - s) : len - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

/* ------------------------------------------------ mock statistics */

typedef struct mstats {
    long long served, cancelled, inflight, max_inflight;
} mstats;

static int stats_get(int port, mstats *s)
{
    resp *r = malloc(sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    int err =
        fetch_raw(port, "GET /stats HTTP/1.1\r\nHost: m\r\n\r\n", false, r);
    int n = -1;
    if (err == 0)
        sscanf(r->body,
               "{\"served\":%lld,\"cancelled\":%lld,\"inflight\":%lld,"
               "\"max_inflight\":%lld}%n",
               &s->served, &s->cancelled, &s->inflight, &s->max_inflight, &n);
    if (err == 0 && (r->status != 200 || n != (int)r->body_len))
        err = -EPROTO;
    free(r);
    return err;
}

static mstats stats(int port)
{
    mstats s;
    int err = stats_get(port, &s);
    if (err != 0)
        fail_msg("GET /stats on %d: %s", port, strerror(-err));
    return s;
}

/* Polls the mock's /stats until the field at off is at least want, or
 * until deadline (true when it got there). */
static bool stat_reaches(int port, size_t off, long long want, int64_t deadline)
{
    for (;;) {
        mstats s;
        if (stats_get(port, &s) == 0 &&
            *(long long *)((char *)&s + off) >= want)
            return true;
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
}

/* ------------------------------------------------ concurrent requests */

typedef struct job {
    pthread_t th;
    int port;
    char req[1024];
    pthread_barrier_t *start; /* may be NULL */
    int err;
    resp r;
} job;

static void *job_main(void *arg)
{
    job *j = arg;
    if (j->start != NULL)
        pthread_barrier_wait(j->start);
    j->err = fetch_raw(j->port, j->req, false, &j->r);
    return NULL;
}

/* A GET of target on its own thread. Caller joins with job_join. */
static job *job_start(int port, const char *target, pthread_barrier_t *start)
{
    job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->port = port;
    j->start = start;
    snprintf(j->req, sizeof j->req, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n",
             target);
    assert_int_equal(pthread_create(&j->th, NULL, job_main, j), 0);
    return j;
}

static void job_join(job *j)
{
    pthread_join(j->th, NULL);
}

/* -------------------------------------------------- the stub backend */

struct stub {
    int fd, port;
    pthread_t th;
    _Atomic bool stop;
    int status;     /* set before the thread starts */
    char body[256]; /* idem */
    int delay_ms;   /* idem */
    pthread_mutex_t mu;
    char last[4096]; /* the last request head (mu) */
    int nreq;        /* requests seen (mu) */
};

/* Reads one request head, records it, waits the delay, answers, closes
 * (one connection at a time: enough for these tests). */
static void stub_serve(stub *s, int c)
{
    char buf[4096];
    size_t len = 0;
    int64_t end = now_ms() + IO_TIMEOUT_MS;
    while (memmem(buf, len, "\r\n\r\n", 4) == NULL) {
        struct pollfd p = {c, POLLIN, 0};
        int64_t left = end - now_ms();
        if (len == sizeof buf - 1 || left <= 0 || poll(&p, 1, (int)left) <= 0)
            return;
        ssize_t n = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return;
        len += (size_t)n;
    }
    buf[len] = '\0';
    pthread_mutex_lock(&s->mu);
    memcpy(s->last, buf, len + 1);
    s->nreq++;
    pthread_mutex_unlock(&s->mu);
    for (int64_t until = now_ms() + s->delay_ms;
         now_ms() < until && !atomic_load(&s->stop);)
        sleep_ms(5);
    if (s->status == 0) {
        /* A reset instead of an answer. */
        struct linger lg = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        return;
    }
    char out[512];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d Stub\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     s->status, strlen(s->body), s->body);
    send(c, out, (size_t)n, MSG_NOSIGNAL);
    shutdown(c, SHUT_WR);
}

static void *stub_main(void *arg)
{
    stub *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        stub_serve(s, c);
        close(c);
    }
    return NULL;
}

/* A stub backend answering status with body after delay_ms (status 0:
 * resetting the connection instead); stopped by the teardown. */
static stub *stub_start(int status, const char *body, int delay_ms)
{
    assert_true(E.nstubs < MAX_STUBS);
    stub *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->status = status;
    snprintf(s->body, sizeof s->body, "%s", body);
    s->delay_ms = delay_ms;
    pthread_mutex_init(&s->mu, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(s->fd, 64) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &alen) != 0) {
        if (s->fd >= 0)
            close(s->fd);
        free(s);
        fail_msg("stub: %s", strerror(errno));
    }
    s->port = ntohs(a.sin_port);
    if (pthread_create(&s->th, NULL, stub_main, s) != 0) {
        close(s->fd);
        free(s);
        fail_msg("stub: no thread");
    }
    E.stubs[E.nstubs++] = s;
    return s;
}

static void stub_stop(stub *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The last request head the stub saw (copied), and how many it saw. */
static int stub_last(stub *s, char *out, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(out, len, "%s", s->last);
    int n = s->nreq;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---------------------------------------------------- the DNS stub */

struct dns_stub {
    int fd, port;
    pthread_t th;
    _Atomic bool stop;
    _Atomic int queries;
    size_t naddrs;           /* 0: NXDOMAIN for every name */
    struct in_addr addrs[4]; /* the A records of every name */
};

/* Appends one A record (a pointer to the question's name, TTL 60 s) at
 * q + end; returns the new end. */
static size_t dns_a_record(unsigned char *q, size_t end, struct in_addr a)
{
    static const unsigned char rr[] = {0xc0, 0x0c, 0, 1,  0, 1,
                                       0,    0,    0, 60, 0, 4};
    memcpy(q + end, rr, sizeof rr);
    memcpy(q + end + sizeof rr, &a, 4);
    return end + sizeof rr + 4;
}

/* Answers every query: NXDOMAIN when the stub has no addresses, else the
 * addresses for type A and no record (NOERROR) for any other type. The
 * question is echoed; other sections are dropped. */
static void *dns_main(void *arg)
{
    dns_stub *d = arg;
    while (!atomic_load(&d->stop)) {
        struct pollfd p = {d->fd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        unsigned char q[512];
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(d->fd, q, 256, 0, (struct sockaddr *)&from, &flen);
        if (n < 12)
            continue;
        size_t end = 12;
        while (end < (size_t)n && q[end] != 0 && (q[end] & 0xc0) == 0)
            end += (size_t)q[end] + 1;
        end += 5; /* the root label, type and class */
        if (end > (size_t)n)
            continue;
        bool type_a = q[end - 4] == 0 && q[end - 3] == 1;
        size_t nans = d->naddrs > 0 && type_a ? d->naddrs : 0;
        q[2] = (unsigned char)(0x80 | (q[2] & 0x79)); /* QR; opcode, RD */
        q[3] = d->naddrs > 0 ? 0x80 : 0x83; /* RA; NOERROR or NXDOMAIN */
        memset(q + 4, 0, 8);
        q[5] = 1;
        q[7] = (unsigned char)nans;
        for (size_t i = 0; i < nans; i++)
            end = dns_a_record(q, end, d->addrs[i]);
        sendto(d->fd, q, end, 0, (struct sockaddr *)&from, flen);
        atomic_fetch_add(&d->queries, 1);
    }
    return NULL;
}

/* A DNS server on a free UDP port of 127.0.0.1 that gives every name the
 * naddrs addresses (dotted quads), or NXDOMAIN with none. */
static dns_stub *dns_start(size_t naddrs, const char *const addrs[])
{
    dns_stub *d = calloc(1, sizeof *d);
    assert_non_null(d);
    assert_true(naddrs <= 4);
    d->naddrs = naddrs;
    for (size_t i = 0; i < naddrs; i++)
        assert_int_equal(inet_pton(AF_INET, addrs[i], &d->addrs[i]), 1);
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(d->fd, (struct sockaddr *)&a, &alen) != 0) {
        if (d->fd >= 0)
            close(d->fd);
        free(d);
        fail_msg("dns stub: %s", strerror(errno));
    }
    d->port = ntohs(a.sin_port);
    if (pthread_create(&d->th, NULL, dns_main, d) != 0) {
        close(d->fd);
        free(d);
        fail_msg("dns stub: no thread");
    }
    E.dns = d;
    return d;
}

static void dns_stop(dns_stub *d)
{
    atomic_store(&d->stop, true);
    pthread_join(d->th, NULL);
    close(d->fd);
    free(d);
}

/* ------------------------------------------------ setup, teardown */

static int env_setup(void **state)
{
    (void)state;
    memset(&E, 0, sizeof E);
    snprintf(E.dir, sizeof E.dir, "/tmp/fanfold-itest-XXXXXX");
    return mkdtemp(E.dir) != NULL ? 0 : -1;
}

/* A sanitizer's or the runtime's report in a process's output. */
static bool has_report(const char *log)
{
    return strstr(log, "AddressSanitizer") != NULL ||
           strstr(log, "ThreadSanitizer") != NULL ||
           strstr(log, "LeakSanitizer") != NULL ||
           strstr(log, "runtime error:") != NULL ||
           strstr(log, "runtime panic") != NULL;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Clients first (the gateway then has nothing in flight), then the
 * gateways (each must exit 0 on SIGTERM), the mocks, the stubs. */
static int env_teardown(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (E.clients[i] != NULL)
            cl_close(E.clients[i]);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < E.nprocs; i++) {
            proc *p = &E.procs[i];
            if (p->gateway != (pass == 0))
                continue;
            bool running = p->pid > 0;
            /* A gateway must exit 0 on SIGTERM (and its sanitizers then
             * report); the rest need not be asked (their own tests check
             * that; a TSan mock takes a second to answer SIGTERM). */
            int st = proc_stop(p, p->gateway ? SIGTERM : SIGKILL);
            static char log[65536];
            read_file(p->log, log, sizeof log);
            bool failed = p->gateway && running &&
                          (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0);
            if (failed || has_report(log)) {
                fprintf(stderr,
                        "%s (%s) did not stop cleanly (wait status 0x%x); "
                        "output:\n%s\n",
                        p->name, p->log, st, log);
                bad = -1;
            }
        }
    }
    for (size_t i = 0; i < E.nstubs; i++)
        stub_stop(E.stubs[i]);
    for (size_t i = 0; i < 16; i++)
        free(E.resps[i]);
    if (E.dns != NULL)
        dns_stop(E.dns);
    const char *keep = getenv("FANFOLD_ITEST_KEEP");
    if (keep != NULL && *keep != '\0')
        fprintf(stderr, "    kept %s\n", E.dir);
    else
        remove_dir(E.dir);
    memset(&E, 0, sizeof E);
    return bad;
}

/* ============================================================ tests */

/* Three mocks (profile, inventory, pricing), each with one optional flag
 * (NULL: none), and a gateway with the demo route GET /api/products/{id}
 * (timeout_ms timeout) after the top-level keys in extra ("" or keys
 * with a trailing comma). */
typedef struct demo {
    int mock[3];
    int gw;
} demo;

static void demo_start(demo *d, const char *pf, const char *inf,
                       const char *prf, int timeout, const char *extra)
{
    d->mock[0] = mock_start("profile", pf, NULL);
    d->mock[1] = mock_start("inventory", inf, NULL);
    d->mock[2] = mock_start("pricing", prf, NULL);
    d->gw = gateway_start("%s" DEMO_BACKENDS ",'routes':[" DEMO_ROUTE(
                              "GET", "/api/products/{id}") "]}",
                          extra, d->mock[0], d->mock[1], d->mock[2], timeout);
}

/* ----------------------------------------------------- happy path */

static void test_happy_path(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    resp *r = new_resp();
    char want[2048], v[64];
    get(d.gw, "/api/products/42?user=ada", r);
    assert_status(r, 200);
    demo_body(want, sizeof want, "ada", "42");
    assert_body(r, want);
    assert_gateway_headers(r);
    assert_header(r, "X-Gateway-Completed", "true");
    assert_no_header(r, "Connection");
    if (!is_hex32(hdr(r, "X-Request-Id", v, sizeof v)))
        fail_msg("generated X-Request-Id %s is not 32 hex digits", v);
    /* Each request its own id. */
    char first[64];
    snprintf(first, sizeof first, "%s", v);
    get(d.gw, "/api/products/42?user=ada", r);
    hdr(r, "X-Request-Id", v, sizeof v);
    assert_true(is_hex32(v));
    assert_string_not_equal(first, v);
}

/* X-Request-Id: taken when 1-128 visible ASCII characters, else a new
 * one; on route answers and the gateway's own answers alike. */
static void test_request_id(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    resp *r = new_resp();
    char req[1024], v[256], id128[129], id129[130];
    memset(id128, 'a', 128);
    id128[0] = '!';
    id128[127] = '~';
    id128[128] = '\0';
    memset(id129, 'b', 129);
    id129[129] = '\0';
    const char *kept[] = {"abc-123", "x", id128, "{\"q\":1}"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        snprintf(req, sizeof req,
                 "GET /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n"
                 "X-Request-Id: %s\r\n\r\n",
                 kept[i]);
        fetch(d.gw, req, r);
        assert_status(r, 200);
        assert_header(r, "X-Request-Id", kept[i]);
        snprintf(
            req, sizeof req,
            "GET /nowhere HTTP/1.1\r\nHost: gw\r\nX-Request-Id: %s\r\n\r\n",
            kept[i]);
        fetch(d.gw, req, r);
        assert_status(r, 404);
        assert_header(r, "X-Request-Id", kept[i]);
    }
    /* Too long, empty, a space or a tab inside, bytes over 0x7e. */
    const char *replaced[] = {id129, "", "a b", "a\tb", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof replaced / sizeof replaced[0]; i++) {
        snprintf(req, sizeof req,
                 "GET /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n"
                 "X-Request-Id: %s\r\n\r\n",
                 replaced[i]);
        fetch(d.gw, req, r);
        assert_status(r, 200);
        if (!is_hex32(hdr(r, "X-Request-Id", v, sizeof v)))
            fail_msg("X-Request-Id \"%s\" answered with \"%s\", wanted a new "
                     "one (32 hex digits)",
                     replaced[i], v);
    }
}

/* HEAD: GET's status and headers, Content-Length included, no body. */
static void test_head(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    resp *g = new_resp(), *h = new_resp();
    fetch(d.gw,
          "GET /api/products/7?user=ada HTTP/1.1\r\nHost: gw\r\n"
          "X-Request-Id: head-1\r\n\r\n",
          g);
    assert_status(g, 200);
    client *c = dial(d.gw);
    /* HEAD, then a GET right behind it: its answer must follow the HEAD's
     * headers directly. */
    assert_int_equal(cl_send(c, "HEAD /api/products/7?user=ada HTTP/1.1\r\n"
                                "Host: gw\r\nX-Request-Id: head-1\r\n\r\n"
                                "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, true, h, IO_TIMEOUT_MS), 0);
    assert_status(h, 200);
    /* The same headers but Date (which may have ticked). */
    char *gd = strstr(g->head, "Date: "), *hd = strstr(h->head, "Date: ");
    assert_true(gd != NULL && hd != NULL);
    memset(gd, '-', (size_t)(strstr(gd, "\r\n") - gd));
    memset(hd, '-', (size_t)(strstr(hd, "\r\n") - hd));
    assert_string_equal(g->head, h->head);
    assert_true(h->clen == (long)g->body_len);
    assert_int_equal(cl_recv(c, false, h, IO_TIMEOUT_MS), 0);
    assert_status(h, 200);
    assert_body(h, "{\"status\":\"ok\"}");
    assert_true(cl_quiet(c, 50));
}

/* ---------------------------------------------------- concurrency */

/* Three backends 200 ms each, called at once: the answer in under
 * 400 ms (serially it would be 600). */
static void test_concurrent_fanout(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, "--delay-ms=200", "--delay-ms=200", "--delay-ms=200", 2000,
               "");
    resp *r = new_resp();
    char want[2048];
    demo_body(want, sizeof want, "ada", "3");
    int64_t took = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        get(d.gw, "/api/products/3?user=ada", r);
        assert_status(r, 200);
        assert_body(r, want);
        took = r->ms;
        assert_true(took >= 195);
        if (took < 400)
            break;
    }
    assert_ms(took, 195, 399);
}

/* ---------------------------------------------------- part failures */

/* An optional part that times out: 200 at the route deadline, the part
 * null and named in errors, X-Gateway-Completed false. */
static void test_optional_part_timeout(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, "--delay-ms=2000", 300, "");
    resp *r = new_resp();
    char u[512], i[512], want[2048];
    snprintf(u, sizeof u, USERS_FMT, "ada");
    snprintf(i, sizeof i, INVENTORY_FMT, "5", "5");
    snprintf(want, sizeof want,
             "{\"profile\":%s,\"inventory\":%s,\"pricing\":null,"
             "\"errors\":{\"pricing\":\"timeout\"}}",
             u, i);
    for (int attempt = 0; attempt < 2; attempt++) {
        get(d.gw, "/api/products/5?user=ada", r);
        assert_status(r, 200);
        assert_body(r, want);
        assert_gateway_headers(r);
        assert_header(r, "X-Gateway-Completed", "false");
        if (r->ms >= 295 && r->ms <= 300 + LATE_MS)
            break;
    }
    assert_ms(r->ms, 295, 300 + LATE_MS);
}

/* A required part answering 500: 502 naming it. */
static void test_required_status_500(void **state)
{
    (void)state;
    int m = mock_start("m", NULL);
    stub *s = stub_start(500, "{\"error\":\"boom\"}", 0);
    int gw = gateway_start(DEMO_BACKENDS ",'routes':[" DEMO_ROUTE(
                               "GET", "/api/products/{id}") "]}",
                           m, s->port, m, 1000);
    resp *r = new_resp();
    get(gw, "/api/products/1?user=ada", r);
    assert_part_error(r, 502, "status 500", "inventory");
}

/* A required part whose backend is down (connection refused): 502. */
static void test_required_down(void **state)
{
    (void)state;
    int m = mock_start("m", NULL);
    int gw = gateway_start(DEMO_BACKENDS ",'routes':[" DEMO_ROUTE(
                               "GET", "/api/products/{id}") "]}",
                           m, refused_port(), m, 1000);
    resp *r = new_resp();
    get(gw, "/api/products/1?user=ada", r);
    assert_part_error(r, 502, "unavailable", "inventory");
}

/* A required part that times out: 504 at the route deadline. */
static void test_required_timeout(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, "--delay-ms=2000", NULL, 300, "");
    resp *r = new_resp();
    for (int attempt = 0; attempt < 2; attempt++) {
        get(d.gw, "/api/products/1?user=ada", r);
        assert_part_error(r, 504, "timeout", "inventory");
        if (r->ms >= 295 && r->ms <= 300 + LATE_MS)
            break;
    }
    assert_ms(r->ms, 295, 300 + LATE_MS);
}

/*
 * A gateway whose backend "x" (max_inflight 1) is a mock delayed
 * 1200 ms, with three routes on it: /hold/{id} (timeout 5000, x
 * required), /opt/{id} (x optional) and /req/{id} (x required), both
 * timeout 300, each also with a required "inventory" part on a quick
 * mock. A request to /hold takes the only slot first.
 */
static const char overload_cfg[] =
    "'backends':{'x':{'url':'http://127.0.0.1:%d','max_inflight':1},"
    "'inventory':{'url':'http://127.0.0.1:%d'}},'routes':["
    "{'method':'GET','path':'/hold/{id}','timeout_ms':5000,'fanout':["
    "{'name':'x','backend':'x','path':'/prices/{id}','required':true}]},"
    "{'method':'GET','path':'/opt/{id}','timeout_ms':300,'fanout':["
    "{'name':'inventory','backend':'inventory','path':'/inventory/{id}',"
    "'required':true},{'name':'x','backend':'x','path':'/prices/{id}'}]},"
    "{'method':'GET','path':'/req/{id}','timeout_ms':300,'fanout':["
    "{'name':'inventory','backend':'inventory','path':'/inventory/{id}',"
    "'required':true},"
    "{'name':'x','backend':'x','path':'/prices/{id}','required':true}]}]}";

/* Starts the overload set-up and the holding request; returns its job
 * once the mock has the held call. */
static job *overload_start(int *gw, int *slow)
{
    *slow = mock_start("slow", "--delay-ms=1200", NULL);
    int quick = mock_start("quick", NULL);
    *gw = gateway_start(overload_cfg, *slow, quick);
    job *hold = job_start(*gw, "/hold/1", NULL);
    if (!stat_reaches(*slow, offsetof(mstats, inflight), 1,
                      now_ms() + IO_TIMEOUT_MS)) {
        job_join(hold);
        free(hold);
        fail_msg("the holding call never reached the backend");
    }
    return hold;
}

static void overload_finish(job *hold)
{
    job_join(hold);
    int err = hold->err, status = hold->r.status;
    free(hold);
    assert_int_equal(err, 0);
    assert_int_equal(status, 200);
}

/* max_inflight 1 and a held call: a required part waiting for the slot
 * is overloaded at the deadline, 503. */
static void test_required_overloaded(void **state)
{
    (void)state;
    int gw, slow;
    job *hold = overload_start(&gw, &slow);
    resp *r = new_resp();
    int err =
        fetch_raw(gw, "GET /req/1 HTTP/1.1\r\nHost: gw\r\n\r\n", false, r);
    overload_finish(hold);
    assert_int_equal(err, 0);
    assert_part_error(r, 503, "overloaded", "x");
    assert_ms(r->ms, 295, 300 + LATE_MS);
    /* The held call was the only one the backend saw. */
    assert_true(stats(slow).max_inflight == 1);
}

/* ------------------------------------------- each part error reason */

/*
 * Backend "x" as given (the inside of its object, formatted), a quick
 * mock "inventory", and two routes with timeout 300: /opt/{id} with x
 * optional, /req/{id} with x required. /opt must answer 200 with x null
 * and errors {"x": reason}; /req must answer req_status
 * {"error": reason, "part": "x"}.
 */
static void reason_case(const char *x, const char *extra, const char *reason,
                        int req_status)
{
    int inv = mock_start("inventory", NULL);
    int gw = gateway_start(
        "%s'backends':{'x':{%s},'inventory':{'url':'http://127.0.0.1:%d'}},"
        "'routes':["
        "{'method':'GET','path':'/opt/{id}','timeout_ms':300,'fanout':["
        "{'name':'inventory','backend':'inventory','path':'/inventory/{id}',"
        "'required':true},{'name':'x','backend':'x','path':'/prices/{id}'}]},"
        "{'method':'GET','path':'/req/{id}','timeout_ms':300,'fanout':["
        "{'name':'inventory','backend':'inventory','path':'/inventory/{id}',"
        "'required':true},"
        "{'name':'x','backend':'x','path':'/prices/{id}','required':true}]}]}",
        extra, x, inv);
    resp *r = new_resp();
    char i[512], want[1024];
    snprintf(i, sizeof i, INVENTORY_FMT, "9", "9");
    snprintf(want, sizeof want,
             "{\"inventory\":%s,\"x\":null,\"errors\":{\"x\":\"%s\"}}", i,
             reason);
    get(gw, "/opt/9", r);
    assert_status(r, 200);
    assert_body(r, want);
    assert_gateway_headers(r);
    assert_header(r, "X-Gateway-Completed", "false");
    get(gw, "/req/9", r);
    assert_part_error(r, req_status, reason, "x");
}

static void test_reason_timeout(void **state)
{
    (void)state;
    char x[128];
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'",
             mock_start("slow", "--delay-ms=2000", NULL));
    reason_case(x, "", "timeout", 504);
}

static void test_reason_unavailable_refused(void **state)
{
    (void)state;
    char x[128];
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'", refused_port());
    reason_case(x, "", "unavailable", 502);
}

/* A host name that does not resolve (the DNS server says NXDOMAIN). */
static void test_reason_unavailable_dns(void **state)
{
    (void)state;
    dns_stub *dns = dns_start(0, NULL);
    char extra[128];
    snprintf(extra, sizeof extra, "'dns':{'servers':['127.0.0.1:%d']},",
             dns->port);
    reason_case("'url':'http://nonexistent.invalid:9'", extra, "unavailable",
                502);
    assert_true(atomic_load(&dns->queries) > 0);
}

/* The backend resets the connection instead of answering. */
static void test_reason_unavailable_reset(void **state)
{
    (void)state;
    char x[128];
    stub *s = stub_start(0, "", 0);
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'", s->port);
    reason_case(x, "", "unavailable", 502);
}

static void test_reason_status_503(void **state)
{
    (void)state;
    char x[128];
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'",
             mock_start("failing", "--fail-rate=1", NULL));
    reason_case(x, "", "status 503", 502);
}

/* The mock answers 404 for a path it does not know. */
static void test_reason_status_404(void **state)
{
    (void)state;
    char x[128];
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d/nowhere'",
             mock_start("m", NULL));
    reason_case(x, "", "status 404", 502);
}

static void test_reason_invalid_json(void **state)
{
    (void)state;
    const char *bodies[] = {"this is not JSON", "{\"a\":1", "{} {}"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char x[128];
        stub *s = stub_start(200, bodies[i], 0);
        snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'", s->port);
        reason_case(x, "", "invalid json", 502);
    }
}

static void test_reason_invalid_json_empty(void **state)
{
    (void)state;
    char x[128];
    stub *s = stub_start(200, "", 0);
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d'", s->port);
    reason_case(x, "", "invalid json", 502);
}

/* The mock's prices body is ~130 bytes: over max_response_bytes 16. */
static void test_reason_too_large(void **state)
{
    (void)state;
    char x[128];
    snprintf(x, sizeof x, "'url':'http://127.0.0.1:%d','max_response_bytes':16",
             mock_start("big", NULL));
    reason_case(x, "", "too large", 502);
}

/* An optional part waiting for the only slot: overloaded at the route
 * deadline, the answer 200 with x null. */
static void test_reason_overloaded(void **state)
{
    (void)state;
    int gw, slow;
    job *hold = overload_start(&gw, &slow);
    resp *r = new_resp();
    int err =
        fetch_raw(gw, "GET /opt/9 HTTP/1.1\r\nHost: gw\r\n\r\n", false, r);
    overload_finish(hold);
    assert_int_equal(err, 0);
    char i[512], want[1024];
    snprintf(i, sizeof i, INVENTORY_FMT, "9", "9");
    snprintf(want, sizeof want,
             "{\"inventory\":%s,\"x\":null,\"errors\":{\"x\":\"overloaded\"}}",
             i);
    assert_status(r, 200);
    assert_body(r, want);
    assert_header(r, "X-Gateway-Completed", "false");
    assert_ms(r->ms, 295, 300 + LATE_MS);
}

/* Any JSON value is a valid part body, spliced in as sent. */
static void test_any_json_value(void **state)
{
    (void)state;
    stub *s = stub_start(200, " [1, \"two\", null] ", 0);
    int gw = gateway_start(
        "'backends':{'x':{'url':'http://127.0.0.1:%d'}},'routes':["
        "{'method':'GET','path':'/a','fanout':["
        "{'name':'x','backend':'x','path':'/v','required':true}]}]}",
        s->port);
    resp *r = new_resp();
    get(gw, "/a", r);
    assert_status(r, 200);
    assert_body(r, "{\"x\": [1, \"two\", null] }");
    assert_header(r, "X-Gateway-Completed", "true");
}

/* A required part's failure answers at once and cancels the others. */
static void test_required_failure_answers_at_once(void **state)
{
    (void)state;
    stub *s = stub_start(500, "{}", 100);
    int m = mock_start("slow", "--delay-ms=2000", NULL);
    int gw = gateway_start(DEMO_BACKENDS ",'routes':[" DEMO_ROUTE(
                               "GET", "/api/products/{id}") "]}",
                           m, s->port, m, 1500);
    resp *r = new_resp();
    get(gw, "/api/products/1?user=ada", r);
    assert_part_error(r, 502, "status 500", "inventory");
    assert_ms(r->ms, 95, 100 + LATE_MS);
    /* profile and pricing were in flight at the slow mock: cancelled. */
    if (!stat_reaches(m, offsetof(mstats, cancelled), 2,
                      now_ms() + 100 + LATE_MS))
        fail_msg("the slow mock saw %lld calls cancelled, wanted 2",
                 stats(m).cancelled);
}

/* A gateway whose backend "x" is http://multi.test:port, resolved by a
 * DNS stub to addrs, on the route GET /m/{id} (x required). */
static int multi_start(int port, size_t naddrs, const char *const addrs[])
{
    dns_stub *dns = dns_start(naddrs, addrs);
    return gateway_start(
        "'dns':{'servers':['127.0.0.1:%d']},"
        "'backends':{'x':{'url':'http://multi.test:%d'}},'routes':["
        "{'method':'GET','path':'/m/{id}','fanout':["
        "{'name':'x','backend':'x','path':'/prices/{id}','required':true}]}]}",
        dns->port, port);
}

/* A name with two addresses: calls rotate over them. */
static void test_dns_round_robin(void **state)
{
    (void)state;
    int port = mock_start("one", NULL);
    char p[32];
    snprintf(p, sizeof p, "--port=%d", port);
    mock_start("two", "--listen=127.0.0.2", p, NULL);
    const char *addrs[] = {"127.0.0.1", "127.0.0.2"};
    int gw = multi_start(port, 2, addrs);
    resp *r = new_resp();
    for (int i = 0; i < 20; i++) {
        get(gw, "/m/1", r);
        assert_status(r, 200);
    }
    long long one = stats(port).served;
    /* The second mock's /stats, on 127.0.0.2. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char req[] = "GET /stats HTTP/1.1\r\nHost: m\r\n\r\n";
    assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL),
                     (ssize_t)(sizeof req - 1));
    client *two = malloc(sizeof *two);
    assert_non_null(two);
    two->fd = fd;
    two->len = 0;
    int err = cl_recv(two, false, r, IO_TIMEOUT_MS);
    client_free(two);
    assert_int_equal(err, 0);
    long long served_two = -1;
    sscanf(r->body, "{\"served\":%lld", &served_two);
    fprintf(stderr, "    round robin: %lld and %lld calls\n", one, served_two);
    assert_int_equal(one + served_two, 20);
    assert_true(one >= 5 && served_two >= 5);
}

/* A name with two addresses, one refusing: each call that meets the
 * refusal tries the other, so every answer is 200, with 40 requests at
 * once too. */
static void test_dns_refused_tries_next(void **state)
{
    (void)state;
    enum { N = 40 };
    int port = mock_start("live", NULL);
    const char *addrs[] = {"127.0.0.2", "127.0.0.1"};
    int gw = multi_start(port, 2, addrs);
    resp *r = new_resp();
    for (int i = 0; i < 10; i++) {
        get(gw, "/m/1", r);
        assert_status(r, 200);
    }
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    job *jobs[N];
    for (int i = 0; i < N; i++)
        jobs[i] = job_start(gw, "/m/2", &go);
    int ok = 0;
    char why[2048] = "";
    for (int i = 0; i < N; i++) {
        job_join(jobs[i]);
        if (jobs[i]->err == 0 && jobs[i]->r.status == 200)
            ok++;
        else if (why[0] == '\0')
            snprintf(why, sizeof why, "err %d: %.1000s%.500s", jobs[i]->err,
                     jobs[i]->r.head, jobs[i]->r.body);
        free(jobs[i]);
    }
    pthread_barrier_destroy(&go);
    if (ok != N)
        fail_msg("%d of %d concurrent calls failed; e.g. %s", N - ok, N, why);
}

/* A backend's timeout_ms shorter than the route deadline cuts that part
 * only; the answer comes when the other parts are in. */
static void test_backend_timeout_cuts_one_part(void **state)
{
    (void)state;
    int p = mock_start("profile", "--delay-ms=400", NULL);
    int i = mock_start("inventory", NULL);
    int q = mock_start("pricing", "--delay-ms=2000", NULL);
    int gw = gateway_start(
        "'backends':{" BACKEND("profile") "," BACKEND(
            "inventory") ",'pricing':{'url':'http://127.0.0.1:%d',"
                         "'timeout_ms':150}},"
                         "'routes':[" DEMO_ROUTE("GET",
                                                 "/api/products/{id}") "]}",
        p, i, q, 3000);
    resp *r = new_resp();
    char u[512], inv[512], want[2048];
    snprintf(u, sizeof u, USERS_FMT, "ada");
    snprintf(inv, sizeof inv, INVENTORY_FMT, "4", "4");
    snprintf(want, sizeof want,
             "{\"profile\":%s,\"inventory\":%s,\"pricing\":null,"
             "\"errors\":{\"pricing\":\"timeout\"}}",
             u, inv);
    for (int attempt = 0; attempt < 2; attempt++) {
        get(gw, "/api/products/4?user=ada", r);
        assert_status(r, 200);
        assert_body(r, want);
        if (r->ms >= 395 && r->ms <= 400 + LATE_MS)
            break;
    }
    assert_ms(r->ms, 395, 400 + LATE_MS);
}

/* ------------------------------------------------ client disconnect */

/* The client goes away (FIN, or RST with reset) while its three parts
 * wait 1 s at their backends: each backend call is cancelled within
 * 100 ms (the mocks count a call whose client left as cancelled). */
static void disconnect_case(bool reset)
{
    demo d;
    demo_start(&d, "--delay-ms=1000", "--delay-ms=1000", "--delay-ms=1000",
               5000, "");
    int64_t late = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(d.gw);
        assert_int_equal(
            cl_send(c, "GET /api/products/1?user=ada HTTP/1.1\r\nHost: gw\r\n"
                       "\r\n"),
            0);
        for (int k = 0; k < 3; k++)
            if (!stat_reaches(d.mock[k], offsetof(mstats, inflight), 1,
                              now_ms() + IO_TIMEOUT_MS))
                fail_msg("part %d never reached its backend", k);
        if (reset)
            cl_reset(c);
        else
            cl_close(c);
        int64_t t0 = now_ms();
        late = 0;
        for (int k = 0; k < 3; k++)
            if (!stat_reaches(d.mock[k], offsetof(mstats, cancelled),
                              attempt + 1, t0 + 100))
                late = now_ms() - t0;
        if (late == 0)
            break;
        /* Late: let the stragglers land before the second try. */
        for (int k = 0; k < 3; k++)
            stat_reaches(d.mock[k], offsetof(mstats, cancelled), attempt + 1,
                         now_ms() + 2000);
    }
    if (late != 0)
        fail_msg("a backend call was not cancelled within 100 ms of the "
                 "client leaving (twice)");
    for (int k = 0; k < 3; k++)
        assert_true(stats(d.mock[k]).served == 0);
}

static void test_client_disconnect_cancels(void **state)
{
    (void)state;
    disconnect_case(false);
}

static void test_client_reset_cancels(void **state)
{
    (void)state;
    disconnect_case(true);
}

/* -------------------------------------------------- the semaphore */

/* How 40 requests at once against a backend with max_inflight 4 were
 * answered, and the most calls the backend (a mock) saw at once. */
typedef struct sem_run {
    int n200, n503, n504;
    long long backend_max;
} sem_run;

/* The backend delays delay_ms, the route's deadline is timeout_ms; every
 * answer must be 200, 503 overloaded (still waiting for a slot at the
 * deadline) or 504 timeout (had a slot, not done at the deadline). */
static sem_run semaphore_run(int delay_ms, int timeout_ms)
{
    enum { N = 40 };
    char delay[32];
    snprintf(delay, sizeof delay, "--delay-ms=%d", delay_ms);
    int m = mock_start("slow", delay, NULL);
    int gw = gateway_start(
        "'backends':{'x':{'url':'http://127.0.0.1:%d','max_inflight':4}},"
        "'routes':[{'method':'GET','path':'/s/{id}','timeout_ms':%d,"
        "'fanout':[{'name':'x','backend':'x','path':'/inventory/{id}',"
        "'required':true}]}]}",
        m, timeout_ms);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    job *jobs[N];
    for (int i = 0; i < N; i++)
        jobs[i] = job_start(gw, "/s/7", &go);
    for (int i = 0; i < N; i++)
        job_join(jobs[i]);
    pthread_barrier_destroy(&go);
    char inv[512], ok_body[1024];
    snprintf(inv, sizeof inv, INVENTORY_FMT, "7", "7");
    snprintf(ok_body, sizeof ok_body, "{\"x\":%s}", inv);
    sem_run sr = {0};
    int bad = -1;
    for (int i = 0; i < N; i++) {
        resp *r = &jobs[i]->r;
        if (jobs[i]->err != 0)
            bad = i;
        else if (r->status == 200 && strcmp(r->body, ok_body) == 0)
            sr.n200++;
        else if (r->status == 503 &&
                 strcmp(r->body, "{\"error\":\"overloaded\",\"part\":\"x\"}") ==
                     0)
            sr.n503++;
        else if (r->status == 504 &&
                 strcmp(r->body, "{\"error\":\"timeout\",\"part\":\"x\"}") == 0)
            sr.n504++;
        else
            bad = i;
    }
    char why[8192] = "";
    if (bad >= 0)
        snprintf(why, sizeof why, "request %d: err %d\n%.4000s%.2000s", bad,
                 jobs[bad]->err, jobs[bad]->r.head, jobs[bad]->r.body);
    for (int i = 0; i < N; i++)
        free(jobs[i]);
    if (bad >= 0)
        fail_msg("an answer outside the contract: %s", why);
    sr.backend_max = stats(m).max_inflight;
    fprintf(stderr,
            "    semaphore: %d x 200, %d x 503, %d x 504; backend "
            "max_inflight %lld\n",
            sr.n200, sr.n503, sr.n504, sr.backend_max);
    return sr;
}

/* max_inflight 4, 40 requests at once, 100 ms each, a deadline all fit
 * in (10 rounds of 4: 1 s of 3): every answer 200, and the backend never
 * saw more than 4 calls at once (it used all 4). No call is cut here:
 * a cut call's slot is free once the gateway has closed its connection,
 * but the mock counts it as in flight until it has noticed the close, so
 * its count would lag behind the gateway's. */
static void test_semaphore_bound(void **state)
{
    (void)state;
    sem_run sr = semaphore_run(100, 3000);
    assert_int_equal(sr.n200, 40);
    assert_int_equal(sr.backend_max, 4);
}

/* The same with 200 ms calls and a 700 ms deadline: three rounds of 4
 * are served (two when a slow start loses one), the rest answered 503
 * overloaded or 504 timeout (semaphore_run fails on anything else).
 * Which of the two is a matter of timing, so it is not asserted here: the
 * calls cut at their deadline release their slots to the waiters queued
 * behind them, in arrival order, which is deadline order; a waiter
 * granted a moment before its own deadline has a slot when it is cut, a
 * 504. Seen in a -flto pass: 12 x 200, 28 x 504, no 503.
 * test_semaphore_overloaded_answers makes the 503 certain. */
static void test_semaphore_deadline_answers(void **state)
{
    (void)state;
    sem_run sr = semaphore_run(200, 700);
    assert_true(sr.n200 >= 8 && sr.n200 <= 12);
    assert_int_equal(sr.n200 + sr.n503 + sr.n504, 40);
}

/* 503 overloaded: a request still waiting for a slot at its deadline.
 * Two routes share backend x (max_inflight 4, every call 2 s): four
 * requests on /hold (deadline 5 s) take the four slots; then eight on
 * /wait (deadline 300 ms) queue behind them and reach their deadline
 * with the slots still held, more than a second before one is released:
 * each is answered 503 {"error":"overloaded","part":"x"} at about 300 ms,
 * and the holders 200. */
static void test_semaphore_overloaded_answers(void **state)
{
    (void)state;
    enum { HOLD = 4, WAIT = 8 };
    int m = mock_start("slow", "--delay-ms=2000", NULL);
    int gw = gateway_start(
        "'backends':{'x':{'url':'http://127.0.0.1:%d','max_inflight':4}},"
        "'routes':[{'method':'GET','path':'/hold/{id}','timeout_ms':5000,"
        "'fanout':[{'name':'x','backend':'x','path':'/inventory/{id}',"
        "'required':true}]},"
        "{'method':'GET','path':'/wait/{id}','timeout_ms':300,"
        "'fanout':[{'name':'x','backend':'x','path':'/inventory/{id}',"
        "'required':true}]}]}",
        m);
    job *hold[HOLD], *wait[WAIT];
    for (int i = 0; i < HOLD; i++)
        hold[i] = job_start(gw, "/hold/7", NULL);
    /* Every slot taken: the four calls are at the backend. */
    bool full =
        stat_reaches(m, offsetof(mstats, inflight), HOLD, now_ms() + 5000);
    int64_t t0 = now_ms();
    for (int i = 0; i < WAIT; i++)
        wait[i] = job_start(gw, "/wait/7", NULL);
    for (int i = 0; i < WAIT; i++)
        job_join(wait[i]);
    int64_t took = now_ms() - t0;
    for (int i = 0; i < HOLD; i++)
        job_join(hold[i]);

    char inv[512], ok_body[1024], why[4096] = "";
    snprintf(inv, sizeof inv, INVENTORY_FMT, "7", "7");
    snprintf(ok_body, sizeof ok_body, "{\"x\":%s}", inv);
    for (int i = 0; i < WAIT && why[0] == 0; i++)
        if (wait[i]->err != 0 || wait[i]->r.status != 503 ||
            strcmp(wait[i]->r.body,
                   "{\"error\":\"overloaded\",\"part\":\"x\"}") != 0)
            snprintf(why, sizeof why, "waiter %d: err %d\n%.2000s%.1000s", i,
                     wait[i]->err, wait[i]->r.head, wait[i]->r.body);
    for (int i = 0; i < HOLD && why[0] == 0; i++)
        if (hold[i]->err != 0 || hold[i]->r.status != 200 ||
            strcmp(hold[i]->r.body, ok_body) != 0)
            snprintf(why, sizeof why, "holder %d: err %d\n%.2000s%.1000s", i,
                     hold[i]->err, hold[i]->r.head, hold[i]->r.body);
    for (int i = 0; i < HOLD; i++)
        free(hold[i]);
    for (int i = 0; i < WAIT; i++)
        free(wait[i]);
    if (!full)
        fail_msg("the four holders never were in flight at the backend");
    if (why[0] != 0)
        fail_msg("%s", why);
    /* Answered at their 300 ms deadline, not when a slot came back. */
    assert_true(took < 1500);
}

/* ------------------------------------------- keep-alive, pipelining */

static void test_keep_alive(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    resp *r = new_resp();
    char req[256], want[2048], id[16];
    client *c = dial(d.gw);
    for (int i = 0; i < 5; i++) {
        snprintf(req, sizeof req,
                 "GET /api/products/%d?user=ada HTTP/1.1\r\nHost: gw\r\n\r\n",
                 i);
        assert_int_equal(cl_send(c, req), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
        snprintf(id, sizeof id, "%d", i);
        demo_body(want, sizeof want, "ada", id);
        assert_body(r, want);
        assert_no_header(r, "Connection");
    }
    cl_close(c);

    /* HTTP/1.0 with keep-alive asked for: kept, and said so. */
    c = dial(d.gw);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cl_send(c, "GET /api/products/1?user=ada HTTP/1.0\r\n"
                                    "Connection: keep-alive\r\n\r\n"),
                         0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
        assert_header(r, "Connection", "keep-alive");
    }
    /* HTTP/1.0 without it: closed. */
    assert_int_equal(cl_send(c, "GET /healthz HTTP/1.0\r\n\r\n"), 0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    assert_header(r, "Connection", "close");
    assert_closes(c);
    /* HTTP/1.1 with Connection: close: closed after the answer. */
    c = dial(d.gw);
    assert_int_equal(cl_send(c, "GET /api/products/1?user=ada HTTP/1.1\r\n"
                                "Host: gw\r\nConnection: close\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    assert_header(r, "Connection", "close");
    assert_closes(c);
}

/* Three requests in one write: three answers, in order, each with its
 * own X-Request-Id and body. */
static void test_pipelining(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, "--delay-ms=50", NULL, 1000, "");
    resp *r = new_resp();
    char want[2048];
    client *c = dial(d.gw);
    assert_int_equal(
        cl_send(c, "GET /api/products/1?user=a HTTP/1.1\r\nHost: gw\r\n"
                   "X-Request-Id: p-1\r\n\r\n"
                   "GET /api/products/2?user=b HTTP/1.1\r\nHost: gw\r\n"
                   "X-Request-Id: p-2\r\n\r\n"
                   "GET /api/products/3?user=c HTTP/1.1\r\nHost: gw\r\n"
                   "X-Request-Id: p-3\r\n\r\n"),
        0);
    const char *users[] = {"a", "b", "c"}, *ids[] = {"1", "2", "3"};
    const char *rids[] = {"p-1", "p-2", "p-3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
        assert_header(r, "X-Request-Id", rids[i]);
        demo_body(want, sizeof want, users[i], ids[i]);
        assert_body(r, want);
    }
    /* Mixed: a route, a 404, /healthz. */
    assert_int_equal(
        cl_send(c, "GET /api/products/4?user=d HTTP/1.1\r\nHost: gw\r\n"
                   "X-Request-Id: q-1\r\n\r\n"
                   "GET /nope HTTP/1.1\r\nHost: gw\r\nX-Request-Id: q-2\r\n\r\n"
                   "GET /healthz HTTP/1.1\r\nHost: gw\r\n"
                   "X-Request-Id: q-3\r\n\r\n"),
        0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    assert_header(r, "X-Request-Id", "q-1");
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 404);
    assert_header(r, "X-Request-Id", "q-2");
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    assert_header(r, "X-Request-Id", "q-3");
    assert_body(r, "{\"status\":\"ok\"}");
    assert_true(cl_quiet(c, 50));
}

/* ----------------------------------------------------------- limits */

/* One mock behind the demo's three backends, GET and POST routes on
 * /api/products/{id}, and these limits. Returns the gateway's port. */
static int limits_start(const char *limits)
{
    int m = mock_start("m", NULL);
    return gateway_start(
        "'limits':{%s}," DEMO_BACKENDS
        ",'routes':[" DEMO_ROUTE("GET", "/api/products/{id}") "," DEMO_ROUTE(
            "POST", "/api/products/{id}") "]}",
        limits, m, m, m, 1000, 1000);
}

#define STRICT_LIMITS                                                          \
    "'max_header_bytes':1024,'max_body_bytes':100,'header_timeout_ms':300,"    \
    "'body_timeout_ms':300,'idle_timeout_ms':600"

/* Sends req on a new connection: the answer must be status with a JSON
 * error body, then the connection closes. */
static void expect_error_close(int gw, const char *req, size_t len, int status)
{
    resp *r = new_resp();
    client *c = dial(gw);
    int err = cl_write(c, req, len);
    /* The server may answer and close before it has read everything. */
    assert_true(err == 0 || err == -EPIPE || err == -ECONNRESET);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, status, NULL);
    assert_header(r, "Connection", "close");
    assert_closes(c);
    cl_close(c);
}

static void test_431_headers_too_large(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    char req[2048], big[1100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(req, sizeof req,
             "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: %s\r\n\r\n", big);
    expect_error_close(gw, req, strlen(req), 431);
    /* Just under the limit passes: the line and headers count, 1024. */
    size_t fixed =
        strlen("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: \r\n\r\n");
    big[1024 - fixed] = '\0';
    snprintf(req, sizeof req,
             "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: %s\r\n\r\n", big);
    assert_int_equal(strlen(req), 1024);
    resp *r = new_resp();
    fetch(gw, req, r);
    assert_status(r, 200);
}

/* A target over 8 KiB: 414, before the 431 it would also be. */
static void test_414_target_too_long(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    static char req[10000];
    int n = snprintf(req, sizeof req, "GET /api/products/");
    memset(req + n, 'a', 8200);
    snprintf(req + n + 8200, sizeof req - (size_t)n - 8200,
             " HTTP/1.1\r\nHost: gw\r\n\r\n");
    expect_error_close(gw, req, strlen(req), 414);
    /* And with the default max_header_bytes (16384). */
    gw = limits_start("'idle_timeout_ms':1000");
    expect_error_close(gw, req, strlen(req), 414);
}

/* A Content-Length over max_body_bytes: 413 at the head, then close. */
static void test_413_content_length(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    char req[512];
    snprintf(req, sizeof req,
             "POST /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n"
             "Content-Length: 101\r\n\r\n");
    expect_error_close(gw, req, strlen(req), 413);
    /* At the limit: served. */
    resp *r = new_resp();
    char body[101];
    memset(body, 'b', 100);
    body[100] = '\0';
    snprintf(req, sizeof req,
             "POST /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n"
             "Content-Length: 100\r\n\r\n%s",
             body);
    fetch(gw, req, r);
    assert_status(r, 200);
}

/* A chunked body that grows over max_body_bytes: 413 when the chunk that
 * crosses it arrives. */
static void test_413_chunked(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    resp *r = new_resp();
    char chunk[80];
    memset(chunk, 'c', 64);
    chunk[64] = '\0';
    client *c = dial(gw);
    char req[512];
    snprintf(req, sizeof req,
             "POST /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n"
             "Transfer-Encoding: chunked\r\n\r\n40\r\n%s\r\n",
             chunk);
    assert_int_equal(cl_send(c, req), 0);
    assert_true(cl_quiet(c, 100)); /* 64 of 100: reading on */
    snprintf(req, sizeof req, "40\r\n%s\r\n0\r\n\r\n", chunk);
    int err = cl_send(c, req);
    assert_true(err == 0 || err == -EPIPE || err == -ECONNRESET);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 413, NULL);
    assert_closes(c);
}

/* header_timeout 300: after some bytes, 408 then close; counted from
 * accept for the first request, from its first byte for a later one. */
static void test_408_header_timeout(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    resp *r = new_resp();
    int64_t took = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(gw);
        int64_t t0 = now_ms();
        sleep_ms(100);
        assert_int_equal(cl_send(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n"),
                         0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        took = now_ms() - t0;
        assert_error(r, 408, NULL);
        assert_closes(c);
        cl_close(c);
        if (took >= 295 && took <= 300 + LATE_MS)
            break;
    }
    assert_ms(took, 295, 300 + LATE_MS);

    /* A later request: 300 ms from its first byte, not from the last
     * answer (the idle wait before it does not count). */
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(gw);
        assert_int_equal(
            cl_send(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
        sleep_ms(200);
        int64_t t0 = now_ms();
        assert_int_equal(cl_send(c, "GET /healthz HTTP/1.1\r\n"), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        took = now_ms() - t0;
        assert_error(r, 408, NULL);
        assert_closes(c);
        cl_close(c);
        if (took >= 295 && took <= 300 + LATE_MS)
            break;
    }
    assert_ms(took, 295, 300 + LATE_MS);
}

/* header_timeout with no byte at all: a silent close. */
static void test_header_timeout_silent(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    int64_t took = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(gw);
        int64_t t0 = now_ms();
        assert_closes(c);
        took = now_ms() - t0;
        cl_close(c);
        if (took >= 295 && took <= 300 + LATE_MS)
            break;
    }
    assert_ms(took, 295, 300 + LATE_MS);
}

/* body_timeout 300: a body that stops coming, 408 then close. */
static void test_408_body_timeout(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    resp *r = new_resp();
    int64_t took = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(gw);
        assert_int_equal(cl_send(c, "POST /api/products/1?user=u HTTP/1.1\r\n"
                                    "Host: gw\r\nContent-Length: 10\r\n\r\n"
                                    "12345"),
                         0);
        int64_t t0 = now_ms();
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        took = now_ms() - t0;
        assert_error(r, 408, NULL);
        assert_closes(c);
        cl_close(c);
        if (took >= 295 && took <= 300 + LATE_MS)
            break;
    }
    assert_ms(took, 295, 300 + LATE_MS);
}

/* idle_timeout 600: a keep-alive connection left idle is closed
 * silently. */
static void test_idle_timeout(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    resp *r = new_resp();
    int64_t took = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        client *c = dial(gw);
        assert_int_equal(
            cl_send(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
        int64_t t0 = now_ms();
        assert_closes(c);
        took = now_ms() - t0;
        cl_close(c);
        if (took >= 595 && took <= 600 + LATE_MS)
            break;
    }
    assert_ms(took, 595, 600 + LATE_MS);
}

/* max_requests_per_connection 3: the third answer says Connection: close
 * and the connection closes; whatever the requests are. */
static void test_max_requests_per_connection(void **state)
{
    (void)state;
    int gw = limits_start("'max_requests_per_connection':3");
    resp *r = new_resp();
    const char *sets[][3] = {
        {"/api/products/1?user=u", "/api/products/2?user=u",
         "/api/products/3?user=u"},
        {"/healthz", "/api/products/1?user=u", "/nope"},
        {"/healthz", "/healthz", "/healthz"},
    };
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        client *c = dial(gw);
        for (int i = 0; i < 3; i++) {
            char req[256];
            snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n",
                     sets[s][i]);
            assert_int_equal(cl_send(c, req), 0);
            assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
            if (i < 2) {
                assert_no_header(r, "Connection");
            } else {
                assert_header(r, "Connection", "close");
            }
        }
        assert_closes(c);
        cl_close(c);
    }
}

/* max_connection_age_ms 300: the first answer after that closes the
 * connection, whatever the request is. */
static void test_max_connection_age(void **state)
{
    (void)state;
    int gw = limits_start("'max_connection_age_ms':300");
    resp *r = new_resp();
    const char *late[] = {"/api/products/1?user=u", "/healthz", "/nope"};
    for (size_t i = 0; i < sizeof late / sizeof late[0]; i++) {
        client *c = dial(gw);
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n",
                 late[i]);
        assert_int_equal(cl_send(c, req), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_no_header(r, "Connection");
        sleep_ms(350);
        assert_int_equal(cl_send(c, req), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_header(r, "Connection", "close");
        assert_closes(c);
        cl_close(c);
    }
}

/* max_connections 2: the third is answered 503 and closed; once one
 * closes, a new one is served. */
static void test_max_connections(void **state)
{
    (void)state;
    int gw = limits_start("'max_connections':2");
    resp *r = new_resp();
    client *a = dial(gw), *b = dial(gw);
    client *ab[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            cl_send(ab[i], "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"), 0);
        assert_int_equal(cl_recv(ab[i], false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, 200);
    }
    client *c = dial(gw);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 503, "too many connections");
    assert_closes(c);
    cl_close(c);
    /* The first two still work. */
    assert_int_equal(cl_send(a, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(a, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    cl_close(a);
    /* The count drops when the gateway notices the close: bounded retry. */
    bool served = false;
    for (int i = 0; i < 100 && !served; i++) {
        if (fetch_raw(gw, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", false,
                      r) == 0 &&
            r->status == 200)
            served = true;
        else
            sleep_ms(10);
    }
    assert_true(served);
}

/* Expect: 100-continue: "100 Continue", then the body, then the answer;
 * a Content-Length over the limit gets its 413 at once. */
static void test_expect_continue(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    resp *r = new_resp();
    client *c = dial(gw);
    assert_int_equal(cl_send(c, "POST /api/products/8?user=ada HTTP/1.1\r\n"
                                "Host: gw\r\nContent-Length: 5\r\n"
                                "Expect: 100-continue\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 100);
    assert_string_equal(r->head, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_int_equal(cl_send(c, "hello"), 0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    char want[2048];
    demo_body(want, sizeof want, "ada", "8");
    assert_body(r, want);
    /* The connection goes on. */
    assert_int_equal(cl_send(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    cl_close(c);

    /* Over the limit: the 413 at once, no 100. */
    c = dial(gw);
    assert_int_equal(cl_send(c, "POST /api/products/8?user=ada HTTP/1.1\r\n"
                                "Host: gw\r\nContent-Length: 500\r\n"
                                "Expect: 100-continue\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 413, NULL);
    assert_closes(c);
    cl_close(c);

    /* No route: the 404 at once, no 100, then close (the body is never
     * read). */
    c = dial(gw);
    assert_int_equal(cl_send(c, "POST /nope HTTP/1.1\r\nHost: gw\r\n"
                                "Content-Length: 5\r\n"
                                "Expect: 100-continue\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 404, "no route");
    assert_header(r, "Connection", "close");
    assert_closes(c);
}

/* Malformed requests: 400 with a JSON body, then close. */
static void test_400_malformed(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    const char *bad[] = {
        "GET /healthz HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n", /* no Host */
        "GET /healthz\r\n\r\n",          /* no version */
        "GET /healthz HTTP/1.1\nHost: gw\n\n",
        ("GET /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\n"
         "Transfer-Encoding: chunked\r\n\r\n"),
        "FOO /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error_close(gw, bad[i], strlen(bad[i]), 400);
}

static void test_501_gzip_chunked(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    const char req[] = "POST /api/products/1 HTTP/1.1\r\nHost: gw\r\n"
                       "Transfer-Encoding: gzip, chunked\r\n\r\n";
    expect_error_close(gw, req, strlen(req), 501);
}

static void test_505_versions(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    expect_error_close(gw, preface, strlen(preface), 505);
    const char v12[] = "GET /healthz HTTP/1.2\r\nHost: gw\r\n\r\n";
    expect_error_close(gw, v12, strlen(v12), 505);
}

static void test_501_connect_trace(void **state)
{
    (void)state;
    int gw = limits_start(STRICT_LIMITS);
    const char conn[] = "CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n";
    expect_error_close(gw, conn, strlen(conn), 501);
    const char trace[] = "TRACE /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
    expect_error_close(gw, trace, strlen(trace), 501);
}

/* ---------------------------------------------------- placeholders */

/* GET target on the demo route: 200, and what the profile and inventory
 * mocks received as their id. */
static void ids_of(int gw, const char *target, const char *user, const char *id)
{
    resp *r = new_resp();
    char got[512];
    get(gw, target, r);
    if (r->status != 200)
        fail_msg("GET %s: %d %s", target, r->status, r->body);
    if (user != NULL && strcmp(part_id(r, "profile", got, sizeof got), user))
        fail_msg("GET %s: profile got {user} \"%s\", wanted \"%s\"", target,
                 got, user);
    if (id != NULL && strcmp(part_id(r, "inventory", got, sizeof got), id))
        fail_msg("GET %s: inventory got {id} \"%s\", wanted \"%s\"", target,
                 got, id);
}

static void test_placeholder_from_path_and_query(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    ids_of(d.gw, "/api/products/42?user=ada", "ada", "42");
    /* The path's value wins over the query's. */
    ids_of(d.gw, "/api/products/42?id=7&user=ada", "ada", "42");
    /* Of repeated parameters the first wins; an empty value is none. */
    ids_of(d.gw, "/api/products/1?user=ann&user=bob", "ann", "1");
    ids_of(d.gw, "/api/products/1?user=&user=bob", "bob", "1");
    ids_of(d.gw, "/api/products/1?user&x=1&user=bob", "bob", "1");
    /* '+' in the query is a space; %2B is a plus. */
    ids_of(d.gw, "/api/products/1?user=ann+lee", "ann%20lee", "1");
    ids_of(d.gw, "/api/products/1?user=a%2Bb", "a%2Bb", "1");
    /* In the path '+' is itself. */
    ids_of(d.gw, "/api/products/a+b?user=u", "u", "a%2Bb");
}

/* %2F stays in its segment; values are decoded, then re-encoded:
 * unreserved bytes stay, every other byte is %XX in upper case. */
static void test_placeholder_encoding(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    ids_of(d.gw, "/api/products/a%2Fb?user=u", "u", "a%2Fb");
    ids_of(d.gw, "/api/products/a%2fb?user=u", "u", "a%2Fb");
    ids_of(d.gw, "/api/products/A-z0._~!$&'()*,;=:@?user=u", "u",
           "A-z0._~%21%24%26%27%28%29%2A%2C%3B%3D%3A%40");
    ids_of(d.gw, "/api/products/%41%7e%2d%20%c3%a9%25?user=u", "u",
           "A~-%20%C3%A9%25");
    ids_of(d.gw, "/api/products/1?user=%3Fq%3D1%26r%23%00x",
           "%3Fq%3D1%26r%23%00x", "1");
}

/* A placeholder without a value, or with a bad escape: 400 naming it. */
static void test_placeholder_invalid(void **state)
{
    (void)state;
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    resp *r = new_resp();
    const char *missing[] = {
        "/api/products/1", "/api/products/1?user=", "/api/products/1?user",
        "/api/products/1?users=x", "/api/products/1?x=1&user=&y"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        get(d.gw, missing[i], r);
        assert_error(r, 400, "missing value for {user}");
    }
    get(d.gw, "/api/products/1?user=%zz", r);
    assert_error(r, 400, "invalid percent-escape in {user}");
    get(d.gw, "/api/products/1?user=%4", r);
    assert_error(r, 400, "invalid percent-escape in {user}");
    get(d.gw, "/api/products/%g1?user=u", r);
    assert_error(r, 400, "invalid percent-escape in path");
    get(d.gw, "/api/products/ab%?user=u", r);
    assert_error(r, 400, "invalid percent-escape in path");
    /* A value that decodes to a dot-segment would leave the template. */
    get(d.gw, "/api/products/%2E%2E?user=u", r);
    assert_status(r, 400);
    assert_true(strstr(r->body, "{id}") != NULL);
    /* 400s for a placeholder keep the connection (no body unread). */
    client *c = dial(d.gw);
    assert_int_equal(
        cl_send(c, "GET /api/products/1 HTTP/1.1\r\nHost: gw\r\n\r\n"), 0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 400);
    assert_no_header(r, "Connection");
    assert_int_equal(
        cl_send(c, "GET /api/products/1?user=u HTTP/1.1\r\nHost: gw\r\n\r\n"),
        0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 200);
    cl_close(c);
    /* With a body left unread: the 400, then a close (the body, here a
     * whole request, is never answered). */
    c = dial(d.gw);
    assert_int_equal(cl_send(c, "GET /api/products/1 HTTP/1.1\r\nHost: gw\r\n"
                                "Content-Length: 35\r\n\r\n"
                                "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 400, "missing value for {user}");
    assert_header(r, "Connection", "close");
    assert_closes(c);
}

/* A backend URL with a path prefix: it goes in front of the part's path
 * (its trailing '/' dropped). */
static void test_backend_path_prefix(void **state)
{
    (void)state;
    stub *s = stub_start(200, "{\"ok\":true}", 0);
    int gw = gateway_start(
        "'backends':{'x':{'url':'http://127.0.0.1:%d/base/v2/'}},'routes':["
        "{'method':'GET','path':'/p/{id}','fanout':["
        "{'name':'x','backend':'x','path':'/users/{id}.json','required':true}"
        "]}]}",
        s->port);
    resp *r = new_resp();
    get(gw, "/p/a%20b", r);
    assert_status(r, 200);
    assert_body(r, "{\"x\":{\"ok\":true}}");
    char last[4096];
    assert_int_equal(stub_last(s, last, sizeof last), 1);
    const char *want = "GET /base/v2/users/a%20b.json HTTP/1.1\r\n";
    if (strncmp(last, want, strlen(want)) != 0)
        fail_msg("the backend got:\n%s\nwanted it to start %s", last, want);
}

/* --------------------------------------------- what a part sends */

/* GET for any method, the client's query dropped, X-Request-Id,
 * X-Forwarded-For (appended), X-Forwarded-Proto, forward_headers. */
static void test_part_request_headers(void **state)
{
    (void)state;
    stub *s = stub_start(200, "{}", 0);
    int gw = gateway_start(
        "'backends':{'x':{'url':'http://127.0.0.1:%d'}},'routes':["
        "{'method':'GET','path':'/r/{id}','forward_headers':['Authorization'],"
        "'fanout':[{'name':'x','backend':'x','path':'/items/{id}'}]},"
        "{'method':'POST','path':'/r/{id}',"
        "'fanout':[{'name':'x','backend':'x','path':'/items/{id}'}]}]}",
        s->port);
    resp *r = new_resp();
    char last[4096];
    fetch(
        gw,
        "GET /r/abc?user=x&q=1 HTTP/1.1\r\nHost: gw\r\nX-Request-Id: rid-1\r\n"
        "X-Forwarded-For: 10.1.2.3\r\nAuthorization: Bearer t\r\n"
        "Accept-Language: fr\r\n\r\n",
        r);
    assert_status(r, 200);
    assert_body(r, "{\"x\":{}}");
    assert_int_equal(stub_last(s, last, sizeof last), 1);
    const char *has[] = {
        "GET /items/abc HTTP/1.1\r\n", "\r\nX-Request-Id: rid-1\r\n",
        "\r\nX-Forwarded-For: 10.1.2.3, 127.0.0.1\r\n",
        "\r\nX-Forwarded-Proto: http\r\n", "\r\nAuthorization: Bearer t\r\n"};
    for (size_t i = 0; i < sizeof has / sizeof has[0]; i++)
        if (strcasestr(last, has[i]) == NULL)
            fail_msg("no \"%s\" in what the backend got:\n%s", has[i], last);
    if (strcasestr(last, "Accept-Language") != NULL || strchr(last, '?'))
        fail_msg("the backend got what is not forwarded:\n%s", last);

    /* HEAD fans out as GET; a generated id is the one sent on. */
    fetch_raw(gw, "HEAD /r/h HTTP/1.1\r\nHost: gw\r\n\r\n", true, r);
    assert_status(r, 200);
    assert_int_equal(stub_last(s, last, sizeof last), 2);
    assert_true(strncmp(last, "GET /items/h HTTP/1.1\r\n", 23) == 0);
    char id[64], line[128];
    hdr(r, "X-Request-Id", id, sizeof id);
    snprintf(line, sizeof line, "\r\nX-Request-Id: %s\r\n", id);
    assert_non_null(strcasestr(last, line));
    assert_non_null(strcasestr(last, "\r\nX-Forwarded-For: 127.0.0.1\r\n"));

    /* POST with a body: the part is a GET without it. */
    fetch(gw, "POST /r/p HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\nbody",
          r);
    assert_status(r, 200);
    assert_int_equal(stub_last(s, last, sizeof last), 3);
    assert_true(strncmp(last, "GET /items/p HTTP/1.1\r\n", 23) == 0);
    assert_null(strcasestr(last, "Content-Length"));
}

/* --------------------------------------------------------- routing */

static const char routing_cfg[] =
    "'backends':{'x':{'url':'http://127.0.0.1:%d'}},'routes':["
    "{'method':'GET','path':'/api/products/{id}','fanout':["
    "{'name':'x','backend':'x','path':'/inventory/{id}'}]},"
    "{'method':'DELETE','path':'/api/products/{id}','fanout':["
    "{'name':'x','backend':'x','path':'/inventory/{id}'}]},"
    "{'method':'POST','path':'/orders','fanout':["
    "{'name':'x','backend':'x','path':'/inventory/o'}]}]}";

static void test_404_405(void **state)
{
    (void)state;
    int gw = gateway_start(routing_cfg, mock_start("m", NULL));
    resp *r = new_resp();
    const char *none[] = {"/", "/nope", "/api/products", "/api/products/1/x",
                          "/api/products/"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        get(gw, none[i], r);
        assert_error(r, 404, "no route");
    }
    fetch(gw, "PUT /api/products/1 HTTP/1.1\r\nHost: gw\r\n\r\n", r);
    assert_error(r, 405, "method not allowed");
    assert_header(r, "Allow", "GET, HEAD, DELETE, OPTIONS");
    fetch(gw, "GET /orders HTTP/1.1\r\nHost: gw\r\n\r\n", r);
    assert_error(r, 405, "method not allowed");
    assert_header(r, "Allow", "POST, OPTIONS");
    /* The routes themselves answer. */
    get(gw, "/api/products/1", r);
    assert_status(r, 200);
    fetch(gw, "DELETE /api/products/1 HTTP/1.1\r\nHost: gw\r\n\r\n", r);
    assert_status(r, 200);
    /* The absolute form is routed by its path. */
    get(gw, "http://gw/api/products/1", r);
    assert_status(r, 200);
}

static void test_options(void **state)
{
    (void)state;
    int gw = gateway_start(routing_cfg, mock_start("m", NULL));
    resp *r = new_resp();
    client *c = dial(gw);
    /* Pipelined, so a stray body would show as a broken next answer. */
    assert_int_equal(
        cl_send(c, "OPTIONS /api/products/1 HTTP/1.1\r\nHost: gw\r\n\r\n"
                   "OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n"
                   "OPTIONS /nope HTTP/1.1\r\nHost: gw\r\n\r\n"),
        0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 204);
    assert_header(r, "Allow", "GET, HEAD, DELETE, OPTIONS");
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 204);
    assert_header(r, "Allow", "GET, HEAD, POST, DELETE, OPTIONS");
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_error(r, 404, "no route");
    assert_true(cl_quiet(c, 50));
}

/* An answer sent before the body was read (404, 405, 400 for a
 * placeholder) is followed by a close: the unread body, here a whole
 * request, is never answered. */
static void test_early_answer_closes(void **state)
{
    (void)state;
    int gw = gateway_start(routing_cfg, mock_start("m", NULL));
    resp *r = new_resp();
    const char *heads[] = {
        "POST /nope HTTP/1.1\r\nHost: gw\r\n",
        "PUT /api/products/1 HTTP/1.1\r\nHost: gw\r\n",
    };
    const int statuses[] = {404, 405};
    const char smuggled[] = "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
    for (size_t i = 0; i < 2; i++) {
        char req[512];
        snprintf(req, sizeof req, "%sContent-Length: %zu\r\n\r\n%s", heads[i],
                 strlen(smuggled), smuggled);
        client *c = dial(gw);
        assert_int_equal(cl_send(c, req), 0);
        assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
        assert_status(r, statuses[i]);
        assert_header(r, "Connection", "close");
        assert_closes(c);
        cl_close(c);
    }
    /* Chunked too. */
    client *c = dial(gw);
    assert_int_equal(cl_send(c, "POST /nope HTTP/1.1\r\nHost: gw\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n"
                                "5\r\nhello\r\n0\r\n\r\n"),
                     0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 404);
    assert_closes(c);
    cl_close(c);
    /* Without a body the connection stays. */
    c = dial(gw);
    assert_int_equal(cl_send(c, "GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n"), 0);
    assert_int_equal(cl_recv(c, false, r, IO_TIMEOUT_MS), 0);
    assert_status(r, 404);
    assert_no_header(r, "Connection");
    assert_true(cl_quiet(c, 50));
}

static void test_healthz(void **state)
{
    (void)state;
    int gw = gateway_start(routing_cfg, mock_start("m", NULL));
    resp *r = new_resp();
    get(gw, "/healthz", r);
    assert_status(r, 200);
    assert_gateway_headers(r);
    assert_body(r, "{\"status\":\"ok\"}");
    assert_no_header(r, "X-Gateway-Completed");
    fetch_raw(gw, "HEAD /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", true, r);
    assert_status(r, 200);
    assert_true(r->clen == 15);
}

/* ---------------------------------------------------------- --check */

/* Runs the gateway with args (after the binary) to its exit: the exit
 * status (-1 on a signal), its output in out. */
static int run_gateway(const char *const args[], char *out, size_t len)
{
    char gw[PATH_MAX];
    bin_path("gateway", "GATEWAY", gw, sizeof gw);
    const char *argv[16] = {gw};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    proc *p = spawn("gateway-run", argv, false);
    int st = proc_wait(p, START_TIMEOUT_MS);
    read_file(p->log, out, len);
    if (st == -1)
        fail_msg("the gateway did not exit; output:\n%s", out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void config_file(char *path, size_t len, const char *json)
{
    char text[CONFIG_MAX];
    snprintf(text, sizeof text, "%s", json);
    for (char *c = text; *c != '\0'; c++)
        if (*c == '\'')
            *c = '"';
    temp_name(path, len, "check", ".json");
    write_file(path, text);
}

static const char broken_cfg[] =
    "{'listen':'127.0.0.1:8080','lisen':'x',"
    "'limits':{'max_header_bytes':0},"
    "'backends':{'a':{'url':'ftp://x'}},"
    "'routes':[{'method':'GET','path':'/a','fanout':["
    "{'name':'p','backend':'q','path':'/x'}]}]}";

static const char *const broken_lines[] = {
    "config: lisen: unknown key",
    "config: limits.max_header_bytes: must be between 1 and 1048576 (got 0)",
    ("config: backends.a.url: invalid URL \"ftp://x\": the scheme must be "
     "http or https"),
    "config: routes[0].fanout[0].backend: unknown backend \"q\"",
};

/* Each line of out is one of want (all of them there), nothing else. */
static void assert_lines(const char *out, const char *const *want, size_t n)
{
    size_t lines = 0;
    for (const char *p = out; *p != '\0'; lines++) {
        const char *nl = strchr(p, '\n');
        if (nl == NULL)
            fail_msg("output without a final newline:\n%s", out);
        p = nl + 1;
    }
    for (size_t i = 0; i < n; i++) {
        char line[512];
        snprintf(line, sizeof line, "%s\n", want[i]);
        if (strstr(out, line) == NULL)
            fail_msg("no line \"%s\" in:\n%s", want[i], out);
    }
    if (lines != n)
        fail_msg("%zu lines, wanted %zu:\n%s", lines, n, out);
}

static void test_check_invalid(void **state)
{
    (void)state;
    char path[PATH_MAX], out[8192];
    config_file(path, sizeof path, broken_cfg);
    const char *args[] = {"--check", "-c", path, NULL};
    assert_int_equal(run_gateway(args, out, sizeof out), 1);
    assert_lines(out, broken_lines, 4);
    /* A start with it is refused with the same lines. */
    const char *start[] = {"-c", path, NULL};
    assert_int_equal(run_gateway(start, out, sizeof out), 1);
    assert_lines(out, broken_lines, 4);
}

static void test_check_valid(void **state)
{
    (void)state;
    char path[PATH_MAX], out[8192];
    config_file(path, sizeof path,
                "{'listen':'127.0.0.1:8080','backends':{'a':{'url':"
                "'http://127.0.0.1:9'}},'routes':[{'method':'GET','path':'/a',"
                "'fanout':[{'name':'p','backend':'a','path':'/x'}]}]}");
    const char *args[] = {"--check", "-c", path, NULL};
    assert_int_equal(run_gateway(args, out, sizeof out), 0);
    assert_string_equal(out, "");
    const char *embedded[] = {"--check", NULL};
    assert_int_equal(run_gateway(embedded, out, sizeof out), 0);
    assert_string_equal(out, "");
}

static void test_check_syntax_error(void **state)
{
    (void)state;
    char path[PATH_MAX], out[8192];
    config_file(path, sizeof path, "{\n  'listen': ,\n  'x': 1\n}\n");
    const char *args[] = {"--check", "-c", path, NULL};
    assert_int_equal(run_gateway(args, out, sizeof out), 1);
    int line = 0, col = 0, at = 0;
    sscanf(out, "config: line %d, column %d: %n", &line, &col, &at);
    if (at == 0 || line != 2 || col < 1 || out[at] == '\n' ||
        strchr(out, '\n') != out + strlen(out) - 1)
        fail_msg("wanted one line \"config: line 2, column C: ...\"; got:\n%s",
                 out);
}

/* --listen ADDR overrides the configuration's listen; a bad ADDR is
 * refused with a message (not a crash). */
static void test_listen_flag(void **state)
{
    (void)state;
    char cfg[PATH_MAX], out[8192], gw[PATH_MAX], addr[64], want[128];
    int cfg_port = free_port(), port = 0;
    write_config(cfg, sizeof cfg, cfg_port,
                 "\"backends\":{\"a\":{\"url\":\"http://127.0.0.1:9\"}},"
                 "\"routes\":[{\"method\":\"GET\",\"path\":\"/a\",\"fanout\":["
                 "{\"name\":\"p\",\"backend\":\"a\",\"path\":\"/x\"}]}]}");
    const char *check[] = {"--check",        "-c", cfg, "--listen",
                           "127.0.0.1:8081", NULL};
    assert_int_equal(run_gateway(check, out, sizeof out), 0);
    assert_string_equal(out, "");
    const char *bad[] = {"bogus", "127.0.0.1:0", "localhost:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = {"--check", "-c", cfg, "--listen", bad[i], NULL};
        int st = run_gateway(args, out, sizeof out);
        if (st <= 0 || strstr(out, bad[i]) == NULL)
            fail_msg("--listen %s: exit %d, wanted a refusal naming it; "
                     "output:\n%s",
                     bad[i], st, out);
    }
    bin_path("gateway", "GATEWAY", gw, sizeof gw);
    for (int attempt = 0; attempt < 5 && port == 0; attempt++) {
        int p = free_port();
        snprintf(addr, sizeof addr, "127.0.0.1:%d", p);
        const char *argv[] = {gw, "-c", cfg, "--listen", addr, NULL};
        proc *g = spawn("gateway", argv, true);
        snprintf(want, sizeof want, "fanfold: listening on http://%s ", addr);
        if (wait_output(g, want, out, sizeof out))
            port = p;
        else if (strstr(out, "Address already in use") == NULL)
            fail_msg("the gateway did not start with --listen %s:\n%s", addr,
                     out);
    }
    assert_true(port != 0);
    resp *r = new_resp();
    get(port, "/healthz", r);
    assert_status(r, 200);
    assert_null(client_open(cfg_port)); /* not on the file's address */
}

/* --------------------------------------------------------------- wrk */

static bool wrk_path(char *out, size_t len)
{
    const char *dirs[] = {"/usr/bin", "/usr/local/bin"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(out, len, "%s/wrk", dirs[i]);
        if (access(out, X_OK) == 0)
            return true;
    }
    return false;
}

/* wrk -t2 -c32 -d2s against the gateway and three mocks: no non-2xx
 * answer, no socket error. */
static void test_wrk(void **state)
{
    (void)state;
    char wrk[PATH_MAX];
    if (!wrk_path(wrk, sizeof wrk)) {
        fprintf(stderr, "    wrk is not installed (make deps): skipped\n");
        skip();
    }
    demo d;
    demo_start(&d, NULL, NULL, NULL, 1000, "");
    char url[128], out[8192];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/products/1?user=ada",
             d.gw);
    const char *argv[] = {wrk, "-t2", "-c32", "-d2s", url, NULL};
    proc *p = spawn("wrk", argv, false);
    int st = proc_wait(p, 20000);
    read_file(p->log, out, sizeof out);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("wrk failed (0x%x):\n%s", st, out);
    long long n = 0;
    const char *in = strstr(out, " requests in ");
    if (in != NULL) {
        const char *s = in;
        while (s > out && s[-1] >= '0' && s[-1] <= '9')
            s--;
        n = strtoll(s, NULL, 10);
    }
    fprintf(stderr, "    wrk: %lld requests in 2 s\n", n);
    if (n <= 0 || strstr(out, "Non-2xx") != NULL ||
        strstr(out, "Socket errors") != NULL)
        fail_msg("wrk saw errors:\n%s", out);
}

/* ------------------------------------------------------------ main */

#define T(f) cmocka_unit_test_setup_teardown(f, env_setup, env_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_happy_path),
        T(test_request_id),
        T(test_head),
        T(test_concurrent_fanout),
        T(test_optional_part_timeout),
        T(test_required_status_500),
        T(test_required_down),
        T(test_required_timeout),
        T(test_required_overloaded),
        T(test_required_failure_answers_at_once),
        T(test_reason_timeout),
        T(test_reason_unavailable_refused),
        T(test_reason_unavailable_dns),
        T(test_reason_unavailable_reset),
        T(test_reason_status_503),
        T(test_reason_status_404),
        T(test_reason_invalid_json),
        T(test_reason_invalid_json_empty),
        T(test_reason_too_large),
        T(test_reason_overloaded),
        T(test_any_json_value),
        T(test_dns_round_robin),
        T(test_dns_refused_tries_next),
        T(test_backend_timeout_cuts_one_part),
        T(test_client_disconnect_cancels),
        T(test_client_reset_cancels),
        T(test_semaphore_bound),
        T(test_semaphore_deadline_answers),
        T(test_semaphore_overloaded_answers),
        T(test_keep_alive),
        T(test_pipelining),
        T(test_431_headers_too_large),
        T(test_414_target_too_long),
        T(test_413_content_length),
        T(test_413_chunked),
        T(test_408_header_timeout),
        T(test_header_timeout_silent),
        T(test_408_body_timeout),
        T(test_idle_timeout),
        T(test_max_requests_per_connection),
        T(test_max_connection_age),
        T(test_max_connections),
        T(test_expect_continue),
        T(test_400_malformed),
        T(test_501_gzip_chunked),
        T(test_505_versions),
        T(test_501_connect_trace),
        T(test_placeholder_from_path_and_query),
        T(test_placeholder_encoding),
        T(test_placeholder_invalid),
        T(test_backend_path_prefix),
        T(test_part_request_headers),
        T(test_404_405),
        T(test_options),
        T(test_early_answer_closes),
        T(test_healthz),
        T(test_check_invalid),
        T(test_check_valid),
        T(test_check_syntax_error),
        T(test_listen_flag),
        T(test_wrk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
