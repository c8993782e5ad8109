/*
 * admin.h - the admin listener: GET /healthz, /metrics and
 * /debug/goroutines on their own address, apart from client traffic
 * (design: admin.c).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics.h"

typedef struct gw_admin gw_admin;

typedef struct gw_admin_opts {
    const char *listen;  /* "127.0.0.1:9901" */
    gw_metrics *metrics; /* not owned; must outlive the listener; NULL:
                            no /metrics (404) */
    /* True while the gateway drains: /healthz answers 503. */
    bool (*draining)(void *arg);
    void *draining_arg;
} gw_admin_opts;

/*
 * Listen and serve (from a goroutine). Returns 0 and *out (caller owns
 * it: gw_admin_stop then gw_admin_free), or a negative errno with the
 * reason in err.
 */
int gw_admin_start(const gw_admin_opts *o, gw_admin **out, char *err,
                   size_t errlen);
int gw_admin_port(const gw_admin *a);
/* Close the listener and every admin connection; wait for them. */
void gw_admin_stop(gw_admin *a);
void gw_admin_free(gw_admin *a);

#endif /* GW_ADMIN_H */
