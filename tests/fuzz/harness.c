/*
 * harness.c - see harness.h.
 *
 * Threads: libFuzzer's (the client side, plain blocking sockets) and the
 * runtime's (rt_run on a thread started here, which then owns the
 * gateway and the backends for the rest of the process). They share only
 * the startup handshake (start_mu/start_cv) and the scripted replies
 * (reply_mu), both pthread mutexes held for a copy.
 */
#include "harness.h"

#include "config.h"
#include "http_parse.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "rt.h"
#include "state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NBACKENDS 3
#define REPLY_MAX 65536
/* A gateway that neither answers nor closes within this long after the
 * client's FIN is stuck: the route deadline is 300 ms, the header and
 * body timeouts 1 s. Generous for sanitizer builds on a busy machine. */
#define STUCK_SECONDS 20

static ffz_backend_mode backend_mode;

/* ffz_stop: set by the fuzzer thread, polled by gateway_main. */
static _Atomic bool stopping;
static pthread_t runtime_tid;

/* Every backend goroutine (accept loops and connections), so that a stop
 * can wait for them: a clean stop leaves nothing behind for LeakSanitizer
 * to report. */
static rt_waitgroup backend_wg = RT_WAITGROUP_INIT;

/* Startup handshake between ffz_start and the runtime thread. */
static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cv = PTHREAD_COND_INITIALIZER;
static int gateway_port; /* > 0 once serving; < 0 when startup failed */

/* Scripted replies, set by the fuzzer thread, read by backend
 * goroutines (copied out under the lock). */
static pthread_mutex_t reply_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t reply_buf[NBACKENDS][REPLY_MAX];
static size_t reply_len[NBACKENDS];

#define FIXED_BODY "{\"ok\":true,\"n\":1}"
static const char fixed_reply[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    "Content-Length: 17\r\n\r\n" FIXED_BODY;
_Static_assert(sizeof FIXED_BODY - 1 == 17, "fixed_reply's Content-Length");

void ffz_set_reply(int i, const uint8_t *data, size_t len)
{
    if (len > REPLY_MAX)
        len = REPLY_MAX;
    pthread_mutex_lock(&reply_mu);
    if (len > 0) /* data may be NULL then */
        memcpy(reply_buf[i], data, len);
    reply_len[i] = len;
    pthread_mutex_unlock(&reply_mu);
}

typedef struct backend_conn {
    rt_conn *c;
    int index;
} backend_conn;

/* Reads until the end of a request head ("\r\n\r\n"), EOF or an error.
 * Returns true at a head. The mock ignores request bodies: parts are
 * GETs. */
static bool read_head(rt_conn *c)
{
    char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = rt_conn_read(c, buf + have, sizeof buf - have,
                                 rt_now() + 2 * RT_SEC, NULL);
        if (n <= 0)
            return false;
        have += (size_t)n;
        if (memmem(buf, have, "\r\n\r\n", 4) != NULL)
            return true;
        if (have == sizeof buf)
            return false;
    }
}

/* One backend connection: answer each request head. Ends at EOF, an
 * error, or after a scripted reply (which closes). */
static void backend_conn_main(void *arg)
{
    backend_conn *bc = arg;
    while (read_head(bc->c)) {
        if (backend_mode == FFZ_BACKEND_FIXED) {
            if (rt_conn_write(bc->c, fixed_reply, sizeof fixed_reply - 1,
                              rt_now() + 2 * RT_SEC, NULL) < 0)
                break;
            continue;
        }
        uint8_t *buf = malloc(REPLY_MAX);
        if (buf == NULL)
            break;
        pthread_mutex_lock(&reply_mu);
        size_t len = reply_len[bc->index];
        memcpy(buf, reply_buf[bc->index], len);
        pthread_mutex_unlock(&reply_mu);
        if (len > 0)
            rt_conn_write(bc->c, buf, len, rt_now() + 2 * RT_SEC, NULL);
        free(buf);
        break;
    }
    rt_conn_release(bc->c);
    free(bc);
    rt_waitgroup_done(&backend_wg);
}

typedef struct backend {
    rt_conn *ln;
    int index;
} backend;

static void backend_accept_main(void *arg)
{
    backend *b = arg;
    for (;;) {
        rt_conn *c;
        int rc = rt_accept(b->ln, &c, RT_FOREVER, NULL);
        if (rc != 0) {
            if (rt_conn_closed(b->ln))
                break; /* ffz_stop */
            continue;
        }
        backend_conn *bc = malloc(sizeof *bc);
        if (bc == NULL) {
            rt_conn_release(c);
            continue;
        }
        bc->c = c;
        bc->index = b->index;
        rt_waitgroup_add(&backend_wg, 1);
        if (rt_go(backend_conn_main, bc) == 0) {
            rt_conn_release(c);
            free(bc);
            rt_waitgroup_done(&backend_wg);
        }
    }
    rt_waitgroup_done(&backend_wg);
}

static void started(int port)
{
    pthread_mutex_lock(&start_mu);
    gateway_port = port;
    pthread_cond_broadcast(&start_cv);
    pthread_mutex_unlock(&start_mu);
}

static void gateway_main(void *arg)
{
    (void)arg;
    static backend backends[NBACKENDS];
    int ports[NBACKENDS];
    for (int i = 0; i < NBACKENDS; i++) {
        backends[i].index = i;
        if (rt_listen("127.0.0.1:0", 128, &backends[i].ln) != 0) {
            fprintf(stderr, "fuzz harness: backend listen failed\n");
            started(-1);
            return;
        }
        ports[i] = rt_conn_port(backends[i].ln);
        rt_waitgroup_add(&backend_wg, 1);
        if (rt_go(backend_accept_main, &backends[i]) == 0)
            rt_waitgroup_done(&backend_wg);
    }
    /* profile through libcurl, inventory and pricing through the native
     * client: both clients parse what the scripted backends send. */
    char json[2048];
    snprintf(json, sizeof json,
             "{\"listen\":\"127.0.0.1:1\","
             "\"limits\":{\"max_header_bytes\":4096,\"max_body_bytes\":8192,"
             "\"header_timeout_ms\":1000,\"body_timeout_ms\":1000,"
             "\"idle_timeout_ms\":1000,\"max_connections\":256},"
             "\"backends\":{"
             "\"profile\":{\"url\":\"http://127.0.0.1:%d\",\"max_inflight\":16,"
             "\"client\":\"curl\"},"
             "\"inventory\":{\"url\":\"http://127.0.0.1:%d/v1\","
             "\"max_inflight\":16},"
             "\"pricing\":{\"url\":\"http://127.0.0.1:%d\",\"max_inflight\":16,"
             "\"max_response_bytes\":2048}},"
             "\"routes\":["
             "{\"method\":\"GET\",\"path\":\"/api/products/{id}\","
             "\"timeout_ms\":300,\"forward_headers\":[\"X-Mock-Delay\"],"
             "\"fanout\":["
             "{\"name\":\"profile\",\"backend\":\"profile\","
             "\"path\":\"/users/{user}\"},"
             "{\"name\":\"inventory\",\"backend\":\"inventory\","
             "\"path\":\"/inventory/{id}\",\"required\":true},"
             "{\"name\":\"pricing\",\"backend\":\"pricing\","
             "\"path\":\"/prices/{id}\"}]},"
             "{\"method\":\"POST\",\"path\":\"/api/orders/{id}\","
             "\"timeout_ms\":300,\"fanout\":["
             "{\"name\":\"inventory\",\"backend\":\"inventory\","
             "\"path\":\"/inventory/{id}\",\"required\":true}]}]}",
             ports[0], ports[1], ports[2]);
    gw_config *cfg = NULL;
    gw_config_errors errs = {0};
    gw_metrics *metrics = NULL;
    gw_state *st = NULL;
    gw_server *srv = NULL;
    char err[256];
    if (gw_config_parse(json, strlen(json), "/", &cfg, &errs) != 0) {
        gw_config_errors_print(&errs, stderr);
        gw_config_errors_free(&errs);
        started(-1);
        return;
    }
    /* The configuration wants a real port; the server takes 0 (any free
     * one), which is what a test wants. Strings of a configuration live
     * in its own block: point elsewhere, as main.c's --listen does. */
    cfg->listen = (char *)"127.0.0.1:0";
    if (gw_metrics_new(&metrics) != 0 ||
        gw_state_new(cfg, NULL, metrics, &st, err, sizeof err) != 0 ||
        gw_server_start(st, NULL, &srv, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz harness: gateway start failed: %s\n", err);
        started(-1);
        return;
    }
    gw_state_unref(st); /* the server holds its own reference */
    started(gw_server_port(srv));
    /* Serve until ffz_stop (a poll every 20 ms: the fuzzer thread is not
     * a goroutine and cannot send on a channel). */
    while (!atomic_load(&stopping))
        rt_sleep(20 * RT_MSEC);
    gw_server_drain(srv, 5 * RT_SEC);
    gw_server_stop(srv);
    gw_server_free(srv);
    gw_metrics_free(metrics);
    for (int i = 0; i < NBACKENDS; i++)
        rt_conn_close(backends[i].ln);
    rt_waitgroup_wait(&backend_wg);
    for (int i = 0; i < NBACKENDS; i++)
        rt_conn_release(backends[i].ln);
}

static void *runtime_thread(void *arg)
{
    (void)arg;
    int rc = rt_run(gateway_main, NULL);
    if (rc != 0 || !atomic_load(&stopping)) {
        fprintf(stderr, "fuzz harness: rt_run returned %d\n", rc);
        abort(); /* panic path: the gateway must outlive the fuzzing */
    }
    return NULL;
}

void ffz_stop(void)
{
    if (gateway_port <= 0)
        return;
    atomic_store(&stopping, true);
    pthread_join(runtime_tid, NULL);
    gateway_port = 0;
}

void ffz_start(ffz_backend_mode mode)
{
    if (gateway_port > 0)
        return;
    backend_mode = mode;
    signal(SIGPIPE, SIG_IGN);
    /* The access log runs (its formatting is under test) unless
     * FANFOLD_FUZZ_QUIET is set (the corpus replay in make test). */
    gw_log_set_level(getenv("FANFOLD_FUZZ_QUIET") ? GW_LOG_ERROR : GW_LOG_INFO);
    if (pthread_create(&runtime_tid, NULL, runtime_thread, NULL) != 0)
        abort(); /* panic path */
    pthread_mutex_lock(&start_mu);
    while (gateway_port == 0)
        pthread_cond_wait(&start_cv, &start_mu);
    int port = gateway_port;
    pthread_mutex_unlock(&start_mu);
    if (port < 0)
        abort(); /* panic path: said why above */
}

/*
 * A finding's message: to stderr, and appended to $FANFOLD_FUZZ_REPORT
 * when set (tests/fuzz/run.sh sets it: libFuzzer's -close_fd_mask=2,
 * which keeps the access log out of its output, closes stderr too).
 */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    const char *path = getenv("FANFOLD_FUZZ_REPORT");
    FILE *f = path != NULL ? fopen(path, "a") : NULL;
    if (f != NULL) {
        va_start(ap, fmt);
        vfprintf(f, fmt, ap);
        va_end(ap);
        fclose(f);
    }
}

/*
 * How many answers the gateway owes for req[0, len): one per complete
 * request the parser (the server's own, with the same limits) finds, plus
 * one when it ends in a rejection. The gateway may owe fewer when a
 * request closes the connection (Connection: close, HTTP/1.0, an answer
 * sent before a body was read): then it closes, which ends the wait too.
 * *may_add is set when the input ends inside a body whose head is
 * complete: the gateway may answer that request at its head (404, 405, a
 * missing placeholder, 413) without waiting for the body, or not at all.
 */
static int answers_owed(const uint8_t *req, size_t len, bool *may_add)
{
    gw_http_parser p;
    gw_http_limits lim = {.max_header_bytes = 4096, .max_body_bytes = 8192};
    if (gw_http_parser_init(&p, &lim, NULL, NULL) != 0)
        abort(); /* panic path */
    gw_http_parser_stop_at_head(&p, true);
    int owed = 0;
    bool in_body = false;
    const char *buf = (const char *)req;
    for (;;) {
        size_t used = 0;
        int rc = gw_http_parser_feed(&p, buf, len, &used);
        if (rc == -EAGAIN)
            break;
        if (rc == GW_HTTP_HEAD) {
            in_body = true;
            buf += used;
            len -= used;
            continue;
        }
        in_body = false;
        if (rc != 0) {
            owed++; /* the rejection's answer */
            break;
        }
        buf += used;
        len -= used;
        owed++;
        gw_http_parser_next(&p);
    }
    gw_http_parser_free(&p);
    *may_add = in_body;
    return owed;
}

/*
 * Scans the answers in buf[0, len): counts the final ones (1xx are
 * interim) into *finals and returns true while everything is well-formed
 * HTTP/1.1 so far (a partial last answer is fine unless complete is set:
 * the gateway closed). Every gateway answer carries Content-Length (1xx
 * and 204 have no body); an answer to HEAD has it without the body, which
 * shows as the next answer (or the end) right after the head: the
 * gateway's bodies are JSON, never "HTTP/1.1 ...".
 */
static bool scan_answers(const char *buf, size_t len, bool complete,
                         int *finals)
{
    *finals = 0;
    while (len > 0) {
        if (len < 12) {
            if (memcmp(buf, "HTTP/1.1 ", len < 9 ? len : 9) != 0)
                return false;
            return !complete;
        }
        if (memcmp(buf, "HTTP/1.1 ", 9) != 0 || buf[9] < '1' || buf[9] > '5' ||
            buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9')
            return false;
        int status =
            (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + buf[11] - '0';
        const char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end == NULL)
            return !complete && len < 8192;
        size_t head = (size_t)(end - buf) + 4;
        size_t body = 0;
        const char *cl = memmem(buf, head, "\r\nContent-Length: ", 18);
        if (cl != NULL) {
            char *e;
            body = strtoul(cl + 18, &e, 10);
            if (*e != '\r')
                return false;
        } else if (status >= 200 && status != 204) {
            return false;
        }
        size_t rest = len - head;
        if (body > 0 && rest >= 9 && memcmp(buf + head, "HTTP/1.1 ", 9) == 0)
            body = 0;
        if (body > rest) {
            if (complete && rest > 0)
                return false; /* truncated */
            if (complete)
                body = 0; /* the end right after a HEAD answer */
            else
                return true; /* the body is on its way */
        }
        if (status >= 200)
            (*finals)++;
        buf += head + body;
        len -= head + body;
    }
    return true;
}

static void stuck(const char *what, size_t have)
{
    report("fuzz harness: %s within %d s (%zu bytes answered)\n", what,
           STUCK_SECONDS, have);
    abort(); /* panic path: the finding */
}

int ffz_exchange(const uint8_t *req, size_t len)
{
    bool may_add;
    int owed = answers_owed(req, len, &may_add);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        abort(); /* panic path */
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)gateway_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = STUCK_SECONDS};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("fuzz harness: connect");
        abort(); /* panic path: the gateway stopped accepting */
    }
    /* The gateway may answer and close before it read everything (a
     * rejection): a failed send is fine, the answer is still read. */
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    /* Read until every answer owed is in (or the gateway closed); only
     * then close our side: a FIN while a request is in flight means the
     * client is gone, and the gateway would rightly cancel it. Then read
     * to the gateway's close. */
    static char resp[1 << 20];
    size_t have = 0;
    bool closed = false, fin = false;
    int finals = 0;
    for (;;) {
        if (!fin && finals >= owed) {
            shutdown(fd, SHUT_WR);
            fin = true;
        }
        ssize_t n = recv(fd, resp + have, sizeof resp - have, 0);
        if (n == 0) {
            closed = true;
            break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                stuck(fin ? "no close after the client's FIN"
                          : "answers owed not sent",
                      have);
            closed = true; /* reset: closed with unread request bytes */
            break;
        }
        have += (size_t)n;
        if (have == sizeof resp)
            break;
        if (!scan_answers(resp, have, false, &finals))
            break;
    }
    close(fd);
    if (getenv("FANFOLD_FUZZ_VERBOSE") != NULL)
        fprintf(stderr,
                "--- %zu bytes sent, %d answers owed, %zu bytes back:\n%.*s\n",
                len, owed, have, (int)(have < 600 ? have : 600), resp);
    if (!scan_answers(resp, have, closed, &finals)) {
        report("fuzz harness: malformed answer (%zu bytes):\n%.*s\n", have,
               (int)(have < 2048 ? have : 2048), resp);
        abort(); /* panic path: the finding */
    }
    if (finals > owed + may_add) {
        report("fuzz harness: %d answers to %d requests\n", finals, owed);
        abort(); /* panic path: the finding (a smuggled request?) */
    }
    return finals;
}
