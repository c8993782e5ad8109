/*
 * http_server.h - the gateway's HTTP/1.1 server on the runtime: an accept
 * goroutine per listener, a goroutine per connection, a goroutine per
 * request (design: http_server.c).
 */
#ifndef GW_HTTP_SERVER_H
#define GW_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "rt.h"
#include "state.h"
#include "tls.h"

typedef struct gw_server gw_server;

/*
 * Listen on st->cfg->listen (and, when tls is not NULL, on
 * st->cfg->tls_listen) and start serving with st (the server takes a
 * reference). Call from a goroutine. Returns 0 and *out (caller owns it:
 * gw_server_stop, then gw_server_free), or a negative errno with the
 * reason in err ("listen 127.0.0.1:8080: Address already in use").
 */
int gw_server_start(gw_state *st, gw_tls_ctx *tls, gw_server **out, char *err,
                    size_t errlen);

/* The port the main listener is bound to (a listen port 0 picks one). */
int gw_server_port(const gw_server *s);
/* The TLS listener's port, or 0 when there is none. */
int gw_server_tls_port(const gw_server *s);

/* The state new requests start on (a reload swaps it; requests in flight
 * keep theirs). Returns a reference the caller drops. */
gw_state *gw_server_state(gw_server *s);
void gw_server_set_state(gw_server *s, gw_state *st);

/* A new TLS context for new handshakes (a reload read the certificate
 * and key again). Returns the previous one, which the caller frees:
 * sessions made from it outlive it. */
gw_tls_ctx *gw_server_set_tls(gw_server *s, gw_tls_ctx *tls);

/*
 * Drain (SIGTERM): close the listeners at once (new connections are
 * refused), close idle keep-alive connections, let requests in flight
 * finish (their answers carry Connection: close) and wait until no
 * connection is left: 0. If that takes longer than timeout (ns), answer
 * what is still in flight 503 {"error":"shutting down"}, close the
 * rest, and return -ETIMEDOUT after a short grace for those answers.
 * From the start, /healthz answers 503 and gw_server_draining is true.
 * Call gw_server_stop and gw_server_free after it. -EALREADY when a
 * drain was started before.
 */
int gw_server_drain(gw_server *s, int64_t timeout);
/* Make a drain in progress (or the next one) stop waiting at once: what
 * is in flight is answered 503 as at the timeout (a second SIGTERM). */
void gw_server_force(gw_server *s);
bool gw_server_draining(const gw_server *s);

/* Connections open on the main (plain and TLS) listeners. */
long gw_server_connections(const gw_server *s);

/*
 * Stop: close the listeners (new connections are refused), cancel every
 * request, close every connection, and wait until every goroutine of the
 * server has ended. Idempotent.
 */
void gw_server_stop(gw_server *s);

/* Free a stopped server (NULL: nothing). */
void gw_server_free(gw_server *s);

#endif /* GW_HTTP_SERVER_H */
