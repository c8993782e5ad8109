/*
 * log.h - messages and the access log, on stderr, never blocking a
 * request goroutine (design: log.c).
 *
 * Levels: error, warn, info (the default), debug. The access log is
 * written at info: `--log-level warn` turns it off. Messages look like
 *   fanfold: warn: the open-file limit is 1024, below ...
 * and access log lines are one JSON object each (fields: README.md).
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

typedef enum gw_log_level {
    GW_LOG_ERROR,
    GW_LOG_WARN,
    GW_LOG_INFO,
    GW_LOG_DEBUG,
} gw_log_level;

/* "error", "warn", "info", "debug" -> the level; -1 for anything else. */
int gw_log_parse_level(const char *name);

/* The level in force (before gw_log_start too). */
void gw_log_set_level(gw_log_level level);
bool gw_log_enabled(gw_log_level level);

/*
 * Start the writer goroutine (from a goroutine): from now on lines go
 * through a bounded queue that one goroutine drains to stderr; when the
 * queue is full a line is dropped and counted (metrics may be NULL).
 * Before it, and after gw_log_stop, lines are written at once. 0 or a
 * negative errno.
 */
int gw_log_start(gw_metrics *metrics);
/* Write what is queued and stop the writer; gives up after 2 s when
 * stderr takes nothing (what is left is lost, the writer left behind), so
 * a stuck log reader cannot keep the gateway from exiting. */
void gw_log_stop(void);

/* A message at level: "fanfold: LEVEL: " + the text + "\n". */
void gw_logf(gw_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Text (one or more whole lines, each ending in \n) at level, as is:
 * for messages with a format of their own, like the configuration's
 * "config: PATH: message" lines. Ordered with gw_logf's messages. */
void gw_log_text(gw_log_level level, const char *text);

/* One part of a request, for the access log. */
typedef struct gw_access_part {
    const char *name;
    const char *outcome; /* "ok", "timeout", ... (metrics' names) */
    int64_t ns;          /* -1: it never ran */
} gw_access_part;

/* One answered request. */
typedef struct gw_access {
    int64_t start;      /* rt_now() at its head; time is taken now */
    const char *id;     /* X-Request-Id */
    const char *client; /* the client's address */
    const char *method;
    const char *path; /* raw, not NUL-terminated */
    size_t path_len;
    const char *route; /* "GET /api/products/{id}" or NULL */
    int status;
    int64_t ns;       /* head to answer written */
    size_t bytes;     /* bytes written */
    int completed;    /* -1 none, 0, 1 */
    bool client_gone; /* cancelled: the client left (no answer) */
    const gw_access_part *parts;
    size_t nparts;
} gw_access;

/* Queue the access log line of a (at info; nothing when disabled). */
void gw_log_access(const gw_access *a);

#endif /* GW_LOG_H */
