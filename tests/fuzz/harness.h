/*
 * harness.h - an in-process gateway for the end-to-end fuzz targets
 * (fuzz_server.c, fuzz_proxy.c): the real server (gw_server_start) on a
 * loopback port with three mock backends, all on the runtime, which runs
 * on threads of its own beside libFuzzer's.
 *
 * The fuzz callback stays on libFuzzer's thread and talks to the gateway
 * as a client does, over a loopback TCP connection with plain blocking
 * sockets: everything a request goes through in production (accept, the
 * connection goroutine, parsing, routing, the fan-out, both upstream
 * clients, the merge, the answer, the access log) runs for every input.
 */
#ifndef FFZ_HARNESS_H
#define FFZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

/* What the mock backends answer. */
typedef enum ffz_backend_mode {
    /* A fixed 200 with a small JSON body, keep-alive. */
    FFZ_BACKEND_FIXED,
    /* Backend i writes the bytes set by ffz_set_replies(i, ...) as it is,
     * after reading the request head, then closes. */
    FFZ_BACKEND_SCRIPTED,
} ffz_backend_mode;

/* Starts the runtime, the backends and the gateway once (later calls do
 * nothing). Aborts with a message when that fails. */
void ffz_start(ffz_backend_mode mode);

/* Drains and stops the gateway and the backends and ends the runtime
 * (nothing is left allocated): the corpus replay calls it before it
 * exits. libFuzzer never does (it exits from its loop). */
void ffz_stop(void);

/* Scripted mode: the reply of backend i (0-2: profile, inventory,
 * pricing) for the requests that follow. Copied. */
void ffz_set_reply(int i, const uint8_t *data, size_t len);

/*
 * Sends req[0, len) on a new connection, reads the answers the gateway
 * owes for it (one per complete request, as the server's own parser
 * counts them, plus one for a rejection), then closes the sending side
 * and reads until the gateway closes. A gateway that owes an answer or
 * keeps the connection open for 20 s is stuck: a finding, which aborts;
 * so do a malformed answer and more answers than requests. Returns the
 * number of final answers. With FANFOLD_FUZZ_VERBOSE set, prints them.
 */
int ffz_exchange(const uint8_t *req, size_t len);

#endif /* FFZ_HARNESS_H */
