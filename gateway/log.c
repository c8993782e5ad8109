/*
 * log.c - messages and the access log (see log.h).
 *
 * A request goroutine formats its line (a malloc'd string) and offers it
 * to `queue`, a buffered channel of QUEUE_LINES lines, with a
 * non-blocking send: when the queue is full the line is dropped and
 * counted (fanfold_log_dropped_total), so a slow or blocked stderr
 * (a full pipe, a stuck terminal) never holds a request up. One writer
 * goroutine drains the queue and writes batches to fd 2 through
 * rt_blocking, so a blocking write holds a pool thread, not a P.
 *
 * The state is global because the process has one stderr; `level` is
 * read without a lock (an atomic), the rest is set by gw_log_start and
 * gw_log_stop only. gw_log_stop sends a NULL line (the writer's cue to
 * end), waits for the writer (at most STOP_WAIT), and frees the queue:
 * it must be called
 * once nothing logs any more (after the server has stopped), since a
 * send after that would touch freed memory. Before gw_log_start and
 * after gw_log_stop, lines are written at once.
 */
#include "log.h"

#include "json.h"
#include "rt.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_LINES 4096
#define STOP_WAIT (2 * RT_SEC) /* gw_log_stop's bound on a stuck stderr */
#define BATCH 64
#define LINE_BYTES 2048
#define LINE_MAX_BYTES (1024 * 1024)

static _Atomic int level = GW_LOG_INFO;
static struct {
    rt_chan *queue;  /* char *; NULL line = stop */
    rt_chan *exited; /* closed by the writer goroutine as it ends */
    gw_metrics *metrics;
    _Atomic bool running;
} lg;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int gw_log_parse_level(const char *name)
{
    for (int i = 0; i <= GW_LOG_DEBUG; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void gw_log_set_level(gw_log_level l)
{
    atomic_store(&level, (int)l);
}

bool gw_log_enabled(gw_log_level l)
{
    return (int)l <= atomic_load_explicit(&level, memory_order_relaxed);
}

/* write(2) all of buf to fd 2; errors are dropped (nowhere to say so). */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(2, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

typedef struct batch {
    char *buf;
    size_t len;
} batch;

static intptr_t write_batch(void *arg)
{
    batch *b = arg;
    write_all(b->buf, b->len);
    return 0;
}

/* Append line to the batch (dropped if the batch cannot grow). */
static void batch_add(batch *b, size_t *cap, const char *line)
{
    size_t l = strlen(line);
    if (b->len + l > *cap) {
        char *nb = realloc(b->buf, b->len + l);
        if (nb == NULL)
            return;
        b->buf = nb;
        *cap = b->len + l;
    }
    memcpy(b->buf + b->len, line, l);
    b->len += l;
}

static void writer_main(void *arg)
{
    (void)arg;
    batch b = {.buf = NULL, .len = 0};
    size_t cap = 0;
    bool stop = false;
    while (!stop) {
        char *line;
        rt_chan_recv(lg.queue, &line, NULL);
        b.len = 0;
        for (int n = 0;; n++) {
            if (line == NULL) { /* gw_log_stop's cue, after every line */
                stop = true;
                break;
            }
            batch_add(&b, &cap, line);
            free(line);
            if (n + 1 >= BATCH || !rt_chan_tryrecv(lg.queue, &line, NULL))
                break;
        }
        if (b.len > 0)
            rt_blocking(write_batch, &b);
    }
    free(b.buf);
    rt_chan_close(lg.exited);
}

int gw_log_start(gw_metrics *metrics)
{
    if (atomic_load(&lg.running))
        return -EBUSY;
    lg.queue = rt_chan_make(sizeof(char *), QUEUE_LINES);
    lg.exited = rt_chan_make(1, 0);
    if (lg.queue == NULL || lg.exited == NULL ||
        rt_go(writer_main, NULL) == 0) {
        rt_chan_free(lg.queue);
        rt_chan_free(lg.exited);
        lg.queue = lg.exited = NULL;
        return -ENOMEM;
    }
    lg.metrics = metrics;
    atomic_store(&lg.running, true);
    return 0;
}

void gw_log_stop(void)
{
    if (!atomic_exchange(&lg.running, false))
        return;
    /* The stop cue goes after every queued line. A stderr that takes
     * nothing (a reader that stopped reading) must not keep the process
     * from exiting: after STOP_WAIT the writer and what it holds are
     * left behind, and what is still queued is lost. */
    char *stop = NULL;
    rt_timer *t = rt_timer_new(STOP_WAIT);
    bool done = false;
    if (t != NULL) {
        rt_case send[2] = {RT_SEND_CASE(lg.queue, &stop),
                           RT_RECV_CASE(rt_timer_chan(t), NULL)};
        if (rt_select(send, 2) == 0) {
            rt_case wait[2] = {RT_RECV_CASE(lg.exited, NULL),
                               RT_RECV_CASE(rt_timer_chan(t), NULL)};
            done = rt_select(wait, 2) == 0;
        }
        rt_timer_stop(t);
        rt_timer_free(t);
    }
    if (!done)
        return; /* the writer is stuck in write(2): leave it */
    rt_chan_free(lg.queue);
    rt_chan_free(lg.exited);
    lg.queue = lg.exited = NULL;
    lg.metrics = NULL;
}

/* Hand a finished line (malloc'd, ends with \n) to the writer, or write
 * it now when there is none. Takes ownership. */
static void emit(char *line)
{
    if (line == NULL)
        return;
    if (atomic_load_explicit(&lg.running, memory_order_acquire)) {
        if (rt_chan_trysend(lg.queue, &line))
            return;
        gw_metrics_log_dropped(lg.metrics);
        free(line);
        return;
    }
    write_all(line, strlen(line));
    free(line);
}

void gw_logf(gw_log_level l, const char *fmt, ...)
{
    if (!gw_log_enabled(l))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg) + strlen(level_names[l]) + 16;
    char *line = malloc(n);
    if (line != NULL)
        snprintf(line, n, "fanfold: %s: %s\n", level_names[l], msg);
    emit(line);
}

void gw_log_text(gw_log_level l, const char *text)
{
    if (gw_log_enabled(l) && text[0] != '\0')
        emit(strdup(text));
}

/* "2026-12-01T01:03:13.123Z" (RFC 3339, UTC, milliseconds). */
static void now_rfc3339(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Write the access line of a (without its newline) into line, which has
 * room for cap bytes; like snprintf, returns the length the whole line
 * needs. A NULL string field is written as null. */
static size_t format_access(char *line, size_t cap, const gw_access *a,
                            const char *ts)
{
    size_t n = 0;
#define ROOM (n < cap ? cap - n : 0)
#define AT (n < cap ? line + n : NULL)
#define ADD(...) (n += (size_t)snprintf(AT, ROOM, __VA_ARGS__))
#define QUOTE(s, len) (n += gw_json_quote(AT, ROOM, (s), (len)))
#define QUOTE_STR(s)                                                           \
    do {                                                                       \
        if ((s) != NULL)                                                       \
            QUOTE((s), strlen(s));                                             \
        else                                                                   \
            ADD("null");                                                       \
    } while (0)
    ADD("{\"time\":\"%s\",\"id\":", ts);
    QUOTE_STR(a->id);
    ADD(",\"client\":");
    QUOTE_STR(a->client);
    ADD(",\"method\":");
    QUOTE_STR(a->method);
    ADD(",\"path\":");
    if (a->path != NULL)
        QUOTE(a->path, a->path_len);
    else
        ADD("null");
    ADD(",\"route\":");
    QUOTE_STR(a->route);
    ADD(",\"status\":%d,\"duration_ms\":%.3f,\"bytes\":%zu", a->status,
        (double)a->ns / 1e6, a->bytes);
    if (a->completed >= 0)
        ADD(",\"completed\":%s", a->completed ? "true" : "false");
    if (a->client_gone)
        ADD(",\"client_gone\":true");
    if (a->nparts > 0) {
        ADD(",\"parts\":{");
        for (size_t i = 0; i < a->nparts; i++) {
            const gw_access_part *p = &a->parts[i];
            ADD(i == 0 ? "" : ",");
            QUOTE_STR(p->name);
            ADD(":{\"outcome\":");
            QUOTE_STR(p->outcome);
            if (p->ns >= 0)
                ADD(",\"ms\":%.3f", (double)p->ns / 1e6);
            ADD("}");
        }
        ADD("}");
    }
    ADD("}");
#undef ROOM
#undef AT
#undef ADD
#undef QUOTE
#undef QUOTE_STR
    return n;
}

/*
 * The line is formatted into LINE_BYTES first and, when it needs more (a
 * long path: the parser lets targets of 8 KiB through, and escaping makes
 * a control byte six), once more into a buffer of the size it needs, so
 * that a request is always logged whole. Only a line past LINE_MAX_BYTES
 * (many parts with long names) is replaced by an error line.
 */
void gw_log_access(const gw_access *a)
{
    if (!gw_log_enabled(GW_LOG_INFO))
        return;
    char ts[32];
    now_rfc3339(ts);
    size_t cap = LINE_BYTES;
    for (int pass = 0; pass < 2; pass++) {
        char *line = malloc(cap + 2);
        if (line == NULL)
            return;
        size_t n = format_access(line, cap, a, ts);
        if (n >= cap && pass == 0 && n <= LINE_MAX_BYTES) {
            free(line);
            cap = n + 1;
            continue;
        }
        if (n >= cap) /* say so rather than cut the JSON */
            n = (size_t)snprintf(line, cap,
                                 "{\"time\":\"%s\",\"error\":\"access log "
                                 "line too long\"}",
                                 ts);
        line[n++] = '\n';
        line[n] = '\0';
        emit(line);
        return;
    }
}
