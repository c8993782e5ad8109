/*
 * rt.h - fanfold's Go-style concurrency runtime: the one public header.
 *
 * Goroutines are stackful coroutines multiplexed M:N onto OS threads by a
 * G/M/P scheduler with work stealing. On top of it: timers, channels,
 * select, Mutex/RWMutex/WaitGroup/Once and a context package, all with Go's
 * semantics. Every blocking operation parks the calling goroutine, never the
 * thread.
 *
 * Conventions (see STYLE.md):
 *   - public names are rt_*, internals shared between runtime files rt__*;
 *   - functions that can fail return 0 or a negative errno: -ETIMEDOUT for a
 *     deadline, -ECANCELED for a cancelled context, -EAGAIN for "would block"
 *     in a non-blocking call;
 *   - times are int64_t nanoseconds on CLOCK_MONOTONIC (rt_now()); a
 *     deadline is an absolute time, a timeout a duration;
 *   - a programmer error (send on a closed channel, unlock of an unlocked
 *     mutex, negative WaitGroup counter) aborts with a message, like a Go
 *     panic.
 *
 * Everything except rt_run(), rt_set_procs() and rt_now() must be called
 * from a goroutine, i.e. from inside rt_run().
 *
 * Threads: a goroutine may resume on another OS thread after any call that
 * can block (a channel operation, select, a lock, sleep, I/O). Such calls
 * may change errno, and thread-local addresses taken before them are
 * stale after; save errno first if you need it.
 */
#ifndef FANFOLD_RT_H
#define FANFOLD_RT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- time */

#define RT_NSEC ((int64_t)1)
#define RT_USEC ((int64_t)1000)
#define RT_MSEC ((int64_t)1000000)
#define RT_SEC ((int64_t)1000000000)
/* A deadline that never comes. */
#define RT_FOREVER INT64_MAX

/* Monotonic time in nanoseconds. Callable from any thread. */
int64_t rt_now(void);

/* ------------------------------------------------------ scheduler, G/M/P */

/*
 * Set the number of Ps (GOMAXPROCS) used by the next rt_run(). 0 restores
 * the default: $FANFOLD_PROCS when set, else the number of online CPUs.
 */
void rt_set_procs(int procs);

/* The number of Ps of the running scheduler. */
int rt_procs(void);

/* The index (0 .. rt_procs() - 1) of the P the caller runs on right now:
 * a hint for sharding counters per P, stale after any call that may park
 * (the goroutine may move). 0 outside a goroutine. */
int rt_proc_id(void);

/*
 * Start the scheduler, run main_fn(arg) as the first goroutine and return
 * when it returns. Goroutines still alive then are abandoned and their
 * stacks released, as when a Go program's main returns. Returns 0, or a
 * negative errno when the scheduler could not start. rt_run() may be called
 * again afterwards (tests do), but not concurrently or from a goroutine.
 */
int rt_run(void (*main_fn)(void *arg), void *arg);

typedef void (*rt_fn)(void *arg);

/* Spawn options; zero-initialise and set what you need. */
typedef struct rt_go_opts {
    /* Stack bytes to reserve; 0 = the default (64 KiB). Larger stacks
     * get a mapping of their own, always with a guard: use them for
     * goroutines that run deep C code (OpenSSL, libcurl, a recursive
     * parser), e.g. 256 KiB. */
    size_t stack_size;
} rt_go_opts;

/*
 * Start fn(arg) in a new goroutine. The spawn site (function name, file,
 * line) is recorded for goroutine dumps. Returns the goroutine id (> 0),
 * or 0 when no stack could be had (out of memory or address space, or no
 * guard left for a big stack: see rt_stack_stats): fn does not run, arg
 * stays the caller's, and the caller decides (a server refuses the
 * connection). rt_go may park the caller (a goroutine that fills its P's
 * run queue waits until it drains to a quarter: spawn back-pressure), so
 * what holds for any blocking call holds for it too (errno, thread-local
 * addresses).
 *
 * Stack overflow: every stack has a 64 KiB guard below it (see
 * runtime/README.md for when there are not enough mappings for guards);
 * a goroutine that touches it dies with a panic naming it and its spawn
 * site, never writing into another goroutine's stack.
 */
#define rt_go(fn, arg) rt__go((fn), (arg), NULL, #fn, __FILE__, __LINE__)
#define rt_go_opts(fn, arg, opts)                                              \
    rt__go((fn), (arg), (opts), #fn, __FILE__, __LINE__)
uint64_t rt__go(rt_fn fn, void *arg, const rt_go_opts *opts,
                const char *fn_name, const char *file, int line);

/* How stacks are guarded (see runtime/README.md, "Stacks"). */
typedef struct rt_stack_stats {
    const char *guard;           /* "madvise", "mprotect" or "none" */
    uint64_t guarded, unguarded; /* stacks made since rt_run, by kind */
    long guard_budget;           /* mprotect: mappings the guards may add */
    long guard_used;             /* mprotect: mappings they have added */
} rt_stack_stats;
void rt_stack_stats_get(rt_stack_stats *out);

/* Let other goroutines run; the caller stays runnable (runtime.Gosched). */
void rt_yield(void);

/* End the calling goroutine now (runtime.Goexit). Does not return. */
_Noreturn void rt_exit(void);

/* The id of the calling goroutine. */
uint64_t rt_goid(void);

/* Park the calling goroutine for ns nanoseconds / until deadline. */
void rt_sleep(int64_t ns);
void rt_sleep_until(int64_t deadline);

/*
 * Run fn(arg) on a separate thread from a bounded pool, without holding a
 * P, and park the calling goroutine until it returns (Go's
 * entersyscall/handoff). Use it for blocking C calls: file I/O, a library
 * that blocks. fn runs on a full-size thread stack. Returns fn's result.
 */
intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg);

/* ----------------------------------------------------------- introspection */

typedef enum rt_gstate {
    RT_G_IDLE = 0, /* in a free list, not a live goroutine */
    RT_G_RUNNABLE,
    RT_G_RUNNING,
    RT_G_WAITING,
    RT_G_DEAD,
    RT_G_NSTATES
} rt_gstate;

typedef struct rt_gstats {
    uint64_t live;                   /* goroutines alive now */
    uint64_t by_state[RT_G_NSTATES]; /* of which, per state */
    uint64_t spawned;                /* total spawned since rt_run */
} rt_gstats;

/* Number of live goroutines (cheap: one atomic load). */
uint64_t rt_goroutines(void);
void rt_gstats_get(rt_gstats *out);
const char *rt_gstate_name(rt_gstate s);

/*
 * Scheduling cannot preempt a goroutine that computes without blocking
 * (C code has no safe points). sysmon, a monitor thread, watches for
 * that: a goroutine that holds its P for RT_LONG_RUN or longer without
 * switching out is counted here, its spawn site kept as the last one
 * seen, and a dump shows it as "[running, N ms without yielding]". Long
 * computations belong in rt_blocking(), or should call rt_yield() now
 * and then. sysmon also polls the network and runs overdue timers when
 * every P is busy, so readiness and deadlines are not lost behind them.
 */
#define RT_LONG_RUN (10 * RT_MSEC)
typedef struct rt_sched_stats {
    uint64_t long_runs; /* goroutines seen holding a P >= RT_LONG_RUN */
    /* The last of them: id, spawn site (static strings) and how long it
     * had run when sysmon last saw it (at least RT_LONG_RUN). */
    uint64_t last_long_goid;
    const char *last_long_fn, *last_long_file;
    int last_long_line;
    int64_t last_long_ns;
    uint64_t sysmon_polls;  /* network polls sysmon made for busy Ms */
    uint64_t sysmon_timers; /* overdue timers sysmon ran for busy Ps */
} rt_sched_stats;
void rt_sched_stats_get(rt_sched_stats *out);

/*
 * Goroutine dump in Go's shape: "goroutines: N", then per goroutine
 * "goroutine ID [STATE, WAIT REASON]:" and "\tspawned at FN (FILE:LINE)".
 * rt_dump_buf writes at most size bytes (NUL-terminated) and returns the
 * length the whole dump needs, like snprintf.
 */
size_t rt_dump_buf(char *buf, size_t size);
void rt_dump(FILE *out);

/* -------------------------------------------------------------- channels */

typedef struct rt_chan rt_chan;

/*
 * Make a channel of elements of elem_size bytes with room for cap of them
 * (0 = unbuffered). Caller owns the result; free it with rt_chan_free()
 * once no goroutine uses it any more. Returns NULL when out of memory.
 */
rt_chan *rt_chan_make(size_t elem_size, size_t cap);
void rt_chan_free(rt_chan *c);

/* Send a copy of *elem. Blocks until received (or buffered). A NULL
 * channel blocks forever; a closed channel aborts (Go's panic). */
void rt_chan_send(rt_chan *c, const void *elem);

/* Receive into *elem (may be NULL to discard). *ok (may be NULL) is false
 * when the channel is closed and drained; *elem is then zeroed. */
void rt_chan_recv(rt_chan *c, void *elem, bool *ok);

/* Non-blocking forms, also callable from timer callbacks (scheduler
 * context): true when the operation happened. */
bool rt_chan_trysend(rt_chan *c, const void *elem);
bool rt_chan_tryrecv(rt_chan *c, void *elem, bool *ok);

/* Close: wakes every receiver (they get ok = false) and every blocked
 * sender (which then aborts). Closing twice or a NULL channel aborts. By
 * convention only the sending side closes. */
void rt_chan_close(rt_chan *c);

size_t rt_chan_len(rt_chan *c);
size_t rt_chan_cap(rt_chan *c);

/* ---------------------------------------------------------------- select */

typedef enum rt_dir { RT_RECV = 1, RT_SEND = 2 } rt_dir;

typedef struct rt_case {
    rt_chan *chan; /* NULL: the case is never ready (Go's nil channel) */
    rt_dir dir;
    void *elem; /* RT_SEND: the value to send; RT_RECV: where to store the
                   value, or NULL */
    bool ok;    /* RT_RECV: set like rt_chan_recv's ok */
} rt_case;

#define RT_RECV_CASE(ch, ptr)                                                  \
    ((rt_case){.chan = (ch), .dir = RT_RECV, .elem = (ptr)})
#define RT_SEND_CASE(ch, ptr)                                                  \
    ((rt_case){.chan = (ch), .dir = RT_SEND, .elem = (void *)(ptr)})

/*
 * Wait until one case can proceed, do it and return its index. Among ready
 * cases one is chosen uniformly at random. Channels are locked in address
 * order.
 *   rt_select:          blocks (no case at all blocks forever);
 *   rt_select_default:  returns -EAGAIN at once when no case is ready;
 *   rt_select_deadline: returns -ETIMEDOUT once deadline has passed;
 *   rt_select_timeout:  same, with a duration.
 */
int rt_select(rt_case *cases, size_t ncases);
int rt_select_default(rt_case *cases, size_t ncases);
int rt_select_deadline(rt_case *cases, size_t ncases, int64_t deadline);
int rt_select_timeout(rt_case *cases, size_t ncases, int64_t timeout);

/* ---------------------------------------------------------------- timers */

typedef struct rt_timer rt_timer;

/*
 * A timer that sends its fire time (int64_t) on rt_timer_chan() once, d ns
 * from now (Go's time.NewTimer). Caller owns it: rt_timer_free().
 */
rt_timer *rt_timer_new(int64_t d);
rt_chan *rt_timer_chan(rt_timer *t);
/* Stop: true when this call stopped it before it fired. */
bool rt_timer_stop(rt_timer *t);
/* Reset to fire d ns from now: true when it had been active. */
bool rt_timer_reset(rt_timer *t, int64_t d);
void rt_timer_free(rt_timer *t);

/* ------------------------------------------------------------------ sync */

/* Internal building blocks of the sync types; treat as opaque. */
typedef struct rt__lock {
    _Atomic uint32_t v;
} rt__lock;
typedef struct rt__waitq {
    void *head, *tail;
} rt__waitq;

/* A mutual exclusion lock that parks goroutines. Zero value = unlocked
 * (RT_MUTEX_INIT). Not recursive. */
typedef struct rt_mutex {
    _Atomic uint32_t state;
    rt__lock lk; /* protects wq */
    rt__waitq wq;
} rt_mutex;
#define RT_MUTEX_INIT                                                          \
    {                                                                          \
        .state = 0                                                             \
    }
bool rt_mutex_trylock(rt_mutex *m);
/* The fast paths are inline, as Go inlines Lock and Unlock: one locked
 * instruction each and no call when uncontended. Bit 0 of state is
 * "locked"; anything else (waiters, flags) takes the slow path in sync.c. */
#define RT__MUTEX_LOCKED 1u
void rt__mutex_lock_slow(rt_mutex *m);
void rt__mutex_unlock_slow(rt_mutex *m);
static inline void rt_mutex_lock(rt_mutex *m)
{
    uint32_t unlocked = 0;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &m->state, &unlocked, RT__MUTEX_LOCKED,
                             memory_order_acquire, memory_order_relaxed),
                         1))
        return;
    rt__mutex_lock_slow(m);
}
static inline void rt_mutex_unlock(rt_mutex *m)
{
    uint32_t locked = RT__MUTEX_LOCKED;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &m->state, &locked, 0, memory_order_release,
                             memory_order_relaxed),
                         1))
        return;
    rt__mutex_unlock_slow(m);
}

/* Readers-writer lock; a waiting writer blocks new readers. Zero value =
 * unlocked. */
typedef struct rt_rwmutex {
    rt__lock lk;      /* protects every field below */
    int32_t readers;  /* active readers */
    bool writer;      /* a writer holds the lock */
    uint32_t wwait;   /* writers waiting */
    rt__waitq rq, wq; /* parked readers, parked writers */
} rt_rwmutex;
#define RT_RWMUTEX_INIT                                                        \
    {                                                                          \
        .readers = 0                                                           \
    }
void rt_rwmutex_rlock(rt_rwmutex *m);
void rt_rwmutex_runlock(rt_rwmutex *m);
void rt_rwmutex_lock(rt_rwmutex *m);
void rt_rwmutex_unlock(rt_rwmutex *m);

/* WaitGroup. Zero value = counter 0. A negative counter aborts. */
typedef struct rt_waitgroup {
    _Atomic int64_t count;
    rt__lock lk; /* protects wq */
    rt__waitq wq;
} rt_waitgroup;
#define RT_WAITGROUP_INIT                                                      \
    {                                                                          \
        .count = 0                                                             \
    }
void rt_waitgroup_add(rt_waitgroup *wg, int64_t delta);
void rt_waitgroup_done(rt_waitgroup *wg);
void rt_waitgroup_wait(rt_waitgroup *wg);

/* Once: fn runs exactly once; concurrent callers wait until it returned. */
typedef struct rt_once {
    _Atomic uint32_t done;
    rt_mutex m;
} rt_once;
#define RT_ONCE_INIT                                                           \
    {                                                                          \
        .done = 0                                                              \
    }
void rt_once_do(rt_once *o, void (*fn)(void *arg), void *arg);

/* --------------------------------------------------------------- context */

typedef struct rt_ctx rt_ctx;

/*
 * Contexts form a tree. Each with_* call returns a new child holding one
 * reference owned by the caller, who must drop it with rt_ctx_release()
 * (cancel + unref: Go's "defer cancel()"). A child holds a reference on its
 * parent, so a tree is freed when its last holder lets go. Cancelling a
 * context cancels its whole subtree and detaches it from its parent.
 * Returns NULL when out of memory.
 */
rt_ctx *rt_ctx_background(void); /* never cancelled; not reference counted */
rt_ctx *rt_ctx_with_cancel(rt_ctx *parent);
rt_ctx *rt_ctx_with_deadline(rt_ctx *parent, int64_t deadline);
rt_ctx *rt_ctx_with_timeout(rt_ctx *parent, int64_t timeout);
rt_ctx *rt_ctx_with_value(rt_ctx *parent, const void *key, void *value);

/* Cancel with -ECANCELED (no effect when already done). */
void rt_ctx_cancel(rt_ctx *ctx);
/* Cancel, then drop the caller's reference. */
void rt_ctx_release(rt_ctx *ctx);
rt_ctx *rt_ctx_ref(rt_ctx *ctx);
void rt_ctx_unref(rt_ctx *ctx);

/* A channel closed exactly once when ctx is done; usable in select. NULL
 * (blocks forever) for a context that can never be cancelled. Owned by
 * ctx: valid while the caller holds a reference. */
rt_chan *rt_ctx_done(rt_ctx *ctx);
/* 0 while not done, then -ECANCELED or -ETIMEDOUT (deadline exceeded). */
int rt_ctx_err(rt_ctx *ctx);
/* The earliest deadline on the path to the root, or RT_FOREVER. */
int64_t rt_ctx_deadline(rt_ctx *ctx);
/* The value for key on the path to the root, or NULL. Keys compare by
 * address. */
void *rt_ctx_value(rt_ctx *ctx, const void *key);

/* ------------------------------------------------------ netpoller, fds */

/*
 * The netpoller: one epoll instance, edge-triggered, each fd registered
 * once. The primitive every adapter (TLS, DNS, libcurl) builds on is
 * rt_fd_wait(): park the calling goroutine until the fd is ready, with a
 * deadline and a context.
 *
 * rt_fd_register() makes fd non-blocking and registers it (for read, write
 * and peer hang-up). Returns 0 or a negative errno; -EEXIST when fd is
 * registered already.
 * rt_fd_wait() parks until fd is ready for mode:
 *   RT_READ   readable (data, end of stream, hang-up or error);
 *   RT_WRITE  writable (or hang-up, error);
 *   RT_HUP    the peer hung up or the connection failed (EPOLLRDHUP, HUP,
 *             ERR), whatever data is still buffered: readiness to read is
 *             neither needed nor consumed, so a server can watch for its
 *             client going away without reading the client's bytes.
 * It returns 0 when fd is ready (for RT_READ/RT_WRITE: or may be; retry
 * the I/O and wait again on EAGAIN), -ETIMEDOUT at the deadline
 * (RT_FOREVER: none), -ECANCELED when ctx (may be NULL) is done, -EBADF
 * when the fd is unregistered meanwhile, -EBUSY when another goroutine is
 * already waiting on fd for the same mode (one waiter per fd and mode),
 * -EINVAL for a bad mode.
 * After a hang-up, a read-wait returns at once for good (the next read
 * says end of stream or error), yielding the P first.
 * rt_fd_unregister() wakes every goroutine waiting on fd (-EBADF) and
 * removes it from the poller; it does not close fd. Unregister before
 * closing: an fd closed while registered is forgotten only when its number
 * is registered again.
 * rt_fd_hup() tells whether the peer hung up (EPOLLRDHUP/HUP/ERR seen).
 */
enum { RT_READ = 1, RT_WRITE = 2, RT_HUP = 3 };
int rt_fd_register(int fd);
int rt_fd_wait(int fd, int mode, int64_t deadline, rt_ctx *ctx);
void rt_fd_unregister(int fd);
bool rt_fd_hup(int fd);

/* ----------------------------------------------------------------- sockets */

/*
 * TCP connections and listeners on the netpoller. Every blocking call
 * parks only its goroutine and takes a deadline (RT_FOREVER: none) and a
 * context (NULL: none). Errors: -ETIMEDOUT (deadline), -ECANCELED (ctx
 * done), -ECONNRESET (reset by peer), -EPIPE (write after the peer closed),
 * -EBADF (the connection is closed), -EBUSY (another goroutine is already
 * reading, or writing, or waiting for the same thing), else a negative
 * errno. rt_conn_read returns 0 at end of stream.
 *
 * Addresses are numeric "host:port" ("127.0.0.1:8080", "[::1]:8080",
 * ":8080" for all interfaces); name resolution is not the runtime's job.
 *
 * Closing and lifetime (Go's Close, with reference counts where Go has a
 * garbage collector):
 *   - rt_conn_close() may be called from any goroutine at any time, any
 *     number of times: the first call wakes every operation in progress
 *     with -EBADF, waits until they have left, and closes the socket;
 *     every later operation fails with -EBADF; later calls return -EBADF.
 *     No fd number is reused while an operation on it may still run.
 *   - The memory is reference counted. rt_listen, rt_accept and rt_dial
 *     hand the caller one reference; rt_conn_ref() takes another (for a
 *     goroutine that may use or close the connection later: a reaper, a
 *     drain list); rt_conn_unref() drops one; rt_conn_release() closes
 *     and drops one (the owner's "defer c.Close()"). The last reference
 *     frees the connection, closing it first if nobody did. Every call on
 *     a connection must be made by a holder of a reference.
 *   - One reader and one writer may run at a time (plus one hang-up
 *     watcher); a second concurrent reader gets -EBUSY when it would
 *     park.
 */
typedef struct rt_conn rt_conn;

/* Caller owns one reference on *out: rt_conn_release(). */
int rt_listen(const char *addr, int backlog, rt_conn **out);
int rt_accept(rt_conn *ln, rt_conn **out, int64_t deadline, rt_ctx *ctx);
int rt_dial(const char *addr, rt_conn **out, int64_t deadline, rt_ctx *ctx);

ssize_t rt_conn_read(rt_conn *c, void *buf, size_t len, int64_t deadline,
                     rt_ctx *ctx);
/* Write all of buf (or fail): returns len or a negative errno. */
ssize_t rt_conn_write(rt_conn *c, const void *buf, size_t len, int64_t deadline,
                      rt_ctx *ctx);
ssize_t rt_conn_writev(rt_conn *c, const struct iovec *iov, int iovcnt,
                       int64_t deadline, rt_ctx *ctx);

/*
 * For adapters that run their own I/O state machine (TLS): one read(2) /
 * one send(2) (or sendmsg(2)), never parking: the byte count (0 from try_read
 * at end of stream) or a negative errno, -EAGAIN when it would block.
 * rt_conn_wait parks until c is (maybe) ready for mode (RT_READ, RT_WRITE or
 * RT_HUP; see rt_fd_wait). All three count as operations: a close from another
 * goroutine wakes them and fails them with -EBADF.
 */
ssize_t rt_conn_try_read(rt_conn *c, void *buf, size_t len);
ssize_t rt_conn_try_write(rt_conn *c, const void *buf, size_t len);
/* One sendmsg(2) of the vector (a server that enforces its own progress
 * deadline loops over it and rt_conn_wait(c, RT_WRITE, ...)). */
ssize_t rt_conn_try_writev(rt_conn *c, const struct iovec *iov, int iovcnt);
int rt_conn_wait(rt_conn *c, int mode, int64_t deadline, rt_ctx *ctx);

/* shutdown(2): SHUT_RD, SHUT_WR or SHUT_RDWR. */
int rt_conn_shutdown(rt_conn *c, int how);

/* See "Closing and lifetime" above. rt_conn_close returns 0, or -EBADF
 * when the connection was closed already. */
int rt_conn_close(rt_conn *c);
rt_conn *rt_conn_ref(rt_conn *c); /* returns c */
void rt_conn_unref(rt_conn *c);
void rt_conn_release(rt_conn *c);
/* Has rt_conn_close been called (a snapshot)? */
bool rt_conn_closed(rt_conn *c);

/* The local port (a listener bound to port 0 learns its port), or a
 * negative errno. */
int rt_conn_port(rt_conn *c);
/* The peer's address as "1.2.3.4:5678" or "[::1]:5678" into buf. Returns
 * 0, -ENOSPC when len is too small (RT_ADDR_LEN always fits), or a
 * negative errno. */
#define RT_ADDR_LEN 56
int rt_conn_peer_addr(rt_conn *c, char *buf, size_t len);
/* setsockopt(2) on the connection's socket. */
int rt_conn_setsockopt(rt_conn *c, int level, int name, const void *val,
                       socklen_t len);
/*
 * Has the peer gone away (FIN or RST)? Does not consume data: uses the
 * poller's EPOLLRDHUP, else a 1-byte recv(MSG_PEEK), as nginx does. Data
 * still buffered (a pipelined request) is not "gone"; to wait for a
 * hang-up whatever is buffered, use rt_conn_wait(c, RT_HUP, ...). A
 * closed connection is gone.
 */
bool rt_conn_peer_gone(rt_conn *c);

/* ----------------------------------------------------------------- signals */

/*
 * Signals as channels (Go's signal.Notify). The supported set is
 *     SIGHUP SIGINT SIGQUIT SIGTERM SIGUSR1 SIGUSR2 SIGWINCH
 * While rt_run() runs, those signals are blocked in every runtime thread
 * (the Ms and the rt_blocking pool) and the netpoller reads them from a
 * signalfd, and SIGPIPE is ignored: a write to a closed pipe or socket
 * fails with EPIPE instead of killing the process. A signal of the set
 * for which the program had installed a handler before rt_run() is left
 * alone. When rt_run() returns, the caller's signal mask and SIGPIPE are
 * as they were.
 *
 * rt_signal_notify() makes the runtime send the signal number (an int)
 * on c each time sig arrives. The send is rt_chan_trysend(): it never
 * blocks, so a full channel misses the signal, as in Go; give c a buffer
 * (1 is enough for one signal). One channel may watch several signals and
 * several channels one signal (each gets it); a second call for the same
 * c and sig does nothing. Returns 0; -EINVAL when c is NULL or not a
 * channel of int, when sig is not in the supported set (SIGKILL, SIGSTOP,
 * the synchronous faults SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
 * SIGABRT, and SIGPIPE, SIGALRM, SIGCHLD, real-time signals...), or when
 * called outside rt_run(); -EBUSY when the program had its own handler
 * for sig when rt_run() started; -ENOMEM.
 *
 * rt_signal_stop() ends every delivery to c (Go's signal.Stop). Once it
 * returns the runtime never touches c again: c may be closed and freed.
 * Closing a channel that is still registered aborts at the next signal
 * for it (send on closed channel), as in Go.
 *
 * A signal no channel watches gets the action it would have had without
 * the runtime: it is discarded when ignored (SIG_IGN) and for SIGWINCH;
 * SIGHUP, SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 kill the process with that
 * signal (a parent sees WIFSIGNALED with it), and SIGQUIT does too after
 * writing a goroutine dump (rt_dump) to stderr, as Go does. A signal
 * ignored when rt_run() started is delivered once a channel watches it,
 * as with Go's Notify. A watched signal still pending when rt_run()
 * returns is dropped.
 *
 * Caveats:
 *   - call rt_run() from the main thread, before starting threads of your
 *     own: a thread that exists before rt_run() keeps its mask, and a
 *     signal sent to the process may be delivered to it (with its default
 *     action: death) instead of to the runtime;
 *   - signals sent to one thread (pthread_kill, tgkill, raise() in a
 *     goroutine) are not reliably seen: send to the process (kill);
 *   - installing a handler or changing the signal mask from a goroutine
 *     has no effect on the set above (blocked in every runtime thread: a
 *     handler installed after rt_run() never runs) and may break it;
 *   - a child process started from a goroutine (fork, posix_spawn)
 *     inherits the blocked mask and SIGPIPE ignored; reset both between
 *     fork and exec (sigprocmask, signal(SIGPIPE, SIG_DFL)), or with
 *     posix_spawnattr_setsigmask and posix_spawnattr_setsigdefault.
 */
int rt_signal_notify(rt_chan *c, int sig);
void rt_signal_stop(rt_chan *c);

/* Message for the runtime's negative errno values. */
const char *rt_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* FANFOLD_RT_H */
