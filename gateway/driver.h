/*
 * driver.h - a goroutine that owns a library's sockets and timers: the one
 * driver pattern of dns.c (c-ares) and upstream_curl.c (libcurl). Design,
 * invariants and goroutine rules: the comment at the top of driver.c.
 *
 * The library handle belongs to one goroutine, the driver. It waits on a
 * private level-triggered epoll set holding the library's sockets (and an
 * eventfd for wake-ups) through the netpoller, with the library's next
 * timer as deadline, and calls back into the caller's code with what
 * happened. Other goroutines hand it work through an intrusive queue.
 *
 *     static const gw_driver_ops ops = {.queued = on_queued,
 *                                       .ready = on_ready,
 *                                       .timeout = on_timeout,
 *                                       .stopped = on_stopped};
 *     lib = library_new(... callbacks that call gw_driver_watch() and
 *                       gw_driver_set_deadline() on s->drv ...);
 *     int err = gw_driver_start(&ops, s, 256 * 1024, &s->drv);
 *     ...
 *     gw_driver_push(s->drv, &req->node);     // any goroutine
 *     ...
 *     gw_driver_stop(s->drv);   // queue closed; on_queued(.., closing) and
 *                               // on_stopped ran; the driver has ended
 *     gw_driver_free(s->drv);   // once nobody can push any more
 */
#ifndef FANFOLD_GW_DRIVER_H
#define FANFOLD_GW_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

typedef struct gw_driver gw_driver;

/*
 * A queue link, embedded in the caller's request. Owned by the driver from
 * a successful gw_driver_push() until ops->queued() is called with it; a
 * node may be queued once at a time (pushing a queued node again corrupts
 * the queue, undetected). Needs no initialisation.
 */
typedef struct gw_driver_node {
    struct gw_driver_node *next;
} gw_driver_node;

/* Interest (gw_driver_watch) and readiness (ops->ready) bits. */
enum {
    GW_DRIVER_READ = 1,  /* readable (EPOLLIN) */
    GW_DRIVER_WRITE = 2, /* writable (EPOLLOUT) */
    GW_DRIVER_ERR = 4,   /* readiness only: error pending (EPOLLERR) */
    GW_DRIVER_HUP = 8,   /* readiness only: hung up (EPOLLHUP) */
};

/*
 * What the driver calls, always on the driver goroutine, never two at a
 * time. Callbacks may park (the driver just waits meanwhile) and may call
 * gw_driver_push, gw_driver_watch and gw_driver_set_deadline; not
 * gw_driver_stop or gw_driver_free.
 */
typedef struct gw_driver_ops {
    /* A pushed node, oldest first per pusher. closing: the queue was
     * closed (gw_driver_stop): answer or end the request without starting
     * work. The driver is done with node when this is called. */
    void (*queued)(void *arg, gw_driver_node *node, bool closing);
    /* fd, watched with gw_driver_watch, is ready: GW_DRIVER_* bits. After
     * the library removed a socket, one stale event for its fd number may
     * still come in the same round (libraries retry on EAGAIN). */
    void (*ready)(void *arg, int fd, unsigned events);
    /* The deadline of gw_driver_set_deadline passed (it is reset to
     * RT_FOREVER before the call). */
    void (*timeout)(void *arg);
    /* Optional: after every round (queue, sockets, timer), before the
     * driver yields or parks: collect completions, update the deadline. */
    void (*round)(void *arg);
    /* Optional: the driver's last call, after the queue was closed and
     * drained: end what is in flight and destroy the library handle. */
    void (*stopped)(void *arg);
} gw_driver_ops;

/*
 * Make a driver and start its goroutine on a stack of stack_size bytes
 * (0: the runtime's default; c-ares wants 256 KiB, libcurl with OpenSSL
 * 512 KiB). *ops is copied; arg is passed to every callback. The library
 * handle must exist before this call: the driver may call back at once.
 * Caller owns *out (set before the goroutine starts, so callbacks see it):
 * gw_driver_stop() then gw_driver_free(). Returns 0, -EINVAL (ops->queued,
 * ready or timeout NULL), -ENOMEM (no memory, or no stack for the
 * goroutine) or an errno of epoll, eventfd or the netpoller; on error
 * *out is NULL and nothing is left to undo.
 */
int gw_driver_start(const gw_driver_ops *ops, void *arg, size_t stack_size,
                    gw_driver **out);

/*
 * Queue node for ops->queued. Any goroutine; never parks; wakes a parked
 * driver (an eventfd write only when the driver is idle). Returns false
 * when the queue is closed (gw_driver_stop was called): node was not
 * queued, and the driver answers no more requests.
 */
bool gw_driver_push(gw_driver *d, gw_driver_node *node);

/*
 * Watch fd for interest (GW_DRIVER_READ | GW_DRIVER_WRITE); 0 stops
 * watching it. Adds, modifies or removes fd in the private epoll set.
 * Driver goroutine only (inside a callback, e.g. the library's socket
 * callback): -EPERM from any other goroutine. Returns 0, -EINVAL for a
 * bad interest or d NULL, or epoll_ctl's errno.
 */
int gw_driver_watch(gw_driver *d, int fd, unsigned interest);

/*
 * Call ops->timeout once deadline (rt_now() clock) has passed; RT_FOREVER
 * cancels. Replaces the previous deadline. Driver goroutine only: -EPERM
 * from any other goroutine, -EINVAL for d NULL.
 */
int gw_driver_set_deadline(gw_driver *d, int64_t deadline);

/*
 * Close the queue (later pushes return false), wake the driver and wait
 * until it has handed every queued node to ops->queued with closing set,
 * called ops->stopped and ended. Any goroutine but the driver (-EDEADLK:
 * it cannot wait for itself); calling it again is harmless. Returns 0, or
 * -EINVAL for d NULL.
 */
int gw_driver_stop(gw_driver *d);

/*
 * Stop d if needed (gw_driver_stop), close its fds and free it. No
 * goroutine may be inside gw_driver_push(d, ..) or call it later: the
 * owner stops its submitters first. Called on the driver goroutine it
 * does nothing (misuse). NULL is a no-op.
 */
void gw_driver_free(gw_driver *d);

#endif /* FANFOLD_GW_DRIVER_H */
