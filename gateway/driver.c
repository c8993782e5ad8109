/*
 * driver.c - a goroutine that owns a library's sockets and timers (API:
 * driver.h). c-ares (dns.c) and libcurl (upstream_curl.c) both run on it.
 *
 * Why a goroutine. Those libraries' handles are single-threaded, and a
 * goroutine runs on one thread at a time: the driver goroutine is the only
 * code that touches the library handle once gw_driver_start() has
 * returned, and every ops callback runs on it.
 *
 * Data structures.
 *   epfd   a private epoll set, level-triggered, holding the library's
 *          sockets (gw_driver_watch: add, modify, remove by fd and
 *          interest) and evfd. The driver registers epfd itself with the
 *          runtime's netpoller and parks in rt_fd_wait(epfd, RT_READ,
 *          deadline, NULL): an epoll fd is readable when one of its fds is.
 *   evfd   an eventfd in epfd: "look at the queue" (and "stop").
 *   head   the hand-off queue: a Treiber stack of gw_driver_node, newest
 *          first, as a uintptr_t whose bit 0 means "closed" (nodes are
 *          pointer-aligned, so bit 0 of a node address is 0). Pushers CAS
 *          a node on; the driver takes everything with one fetch_and that
 *          keeps only the closed bit, and reverses it, so nodes reach
 *          ops->queued in push order (FIFO per pusher). There is a single
 *          consumer taking whole lists, so there is no ABA.
 *   idle   set by the driver just before it parks; a pusher that finds it
 *          set clears it and writes evfd. The driver re-reads head after
 *          setting idle, and a pusher reads idle after its CAS on head
 *          (all seq_cst: a Dekker pair), so either the driver sees the
 *          node or the pusher sees idle: no lost wake-up, and no syscall
 *          per push while the driver is busy.
 *   deadline  the library's next timer (gw_driver_set_deadline); once it
 *          has passed, ops->timeout runs (deadline reset to RT_FOREVER
 *          first, so the callback may set the next one).
 *
 * The loop. A round: hand the queue to ops->queued; epoll_wait(epfd, 0)
 * and hand each ready socket to ops->ready (draining evfd); run an expired
 * timer; ops->round. A round that found anything yields (scheduling is
 * cooperative) and goes again; only a round whose epoll_wait reported
 * nothing may park. That is the invariant that makes the nested epoll
 * safe: the runtime's poller is edge-triggered, and the inner set raises
 * an edge only when an fd joins its empty ready list; a level-triggered
 * fd the driver was just told about stays on that list without a new
 * edge, so parking before the inner set reported nothing could sleep on
 * a ready socket forever. Anything that becomes ready after the empty
 * epoll_wait raises an edge, which rt_fd_wait latches even when it comes
 * before the park.
 *
 * Ownership and who may call what.
 *   - gw_driver_start's caller (the owner) owns d: it alone calls
 *     gw_driver_stop and gw_driver_free.
 *   - Any goroutine may gw_driver_push, until gw_driver_free; a push
 *     hands the node to the driver until ops->queued is called with it.
 *   - The driver goroutine alone touches epfd's contents, deadline and the
 *     library handle; gw_driver_watch and gw_driver_set_deadline check
 *     that they run on it (d->goid).
 *   - The stopper closes the queue (sets the closed bit of head). From
 *     then on pushes fail, so a submitter whose push fails knows the
 *     driver will not take that node, and everything pushed before was
 *     or will be handed to ops->queued. The driver sees the bit, hands
 *     the last nodes over with closing set, calls ops->stopped,
 *     unregisters epfd and ends (d->wg). Memory: d may be freed once the
 *     driver has ended and no pusher can still run (a push that passed
 *     the closed check may still write evfd), which only the owner knows:
 *     hence gw_driver_stop and gw_driver_free are separate.
 *
 * Threads and errno: a goroutine may resume on another thread after a
 * park, and the callbacks may park. The syscalls below sit in noinline
 * wrappers that return -errno right after the call, and no function that
 * may park reads errno.
 */
#include "driver.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EPOLL_BATCH 64
#define QUEUE_CLOSED ((uintptr_t)1)
#define NOINLINE __attribute__((noinline))

_Static_assert(_Alignof(gw_driver_node) >= 2, "bit 0 of head is the mark");

struct gw_driver {
    /* Immutable after gw_driver_start(). */
    gw_driver_ops ops;
    void *arg;
    int epfd;        /* private level-triggered set, registered with rt */
    int evfd;        /* eventfd in epfd */
    rt_waitgroup wg; /* the driver goroutine */

    /* Shared: atomics. */
    _Atomic uintptr_t head; /* gw_driver_node *, newest first | closed */
    _Atomic bool idle;      /* the driver is parking or parked */
    _Atomic uint64_t goid;  /* the driver's id; 0 until it runs */

    /* Driver only. */
    int64_t deadline; /* RT_FOREVER: none */
};

/* -------------------------------------------------------------- syscalls */

static NOINLINE int sys_epoll_create(void)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

static NOINLINE int sys_eventfd(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

static NOINLINE int sys_epoll_ctl(int epfd, int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    return epoll_ctl(epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

/* Ready events without waiting: their number, or -errno. */
static NOINLINE int sys_epoll_poll(int epfd, struct epoll_event *evs, int n)
{
    int got = epoll_wait(epfd, evs, n, 0);
    return got >= 0 ? got : -errno;
}

/* Add 1 to the eventfd. EAGAIN (counter saturated) means a wake-up is
 * pending already, so the result does not matter. */
static NOINLINE void sys_eventfd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n;
}

static NOINLINE void sys_eventfd_drain(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof v);
    (void)n;
}

/* ------------------------------------------------------------------ queue */

/* Wake a driver that is parking or parked (see idle above). */
static void wake(gw_driver *d)
{
    if (atomic_load(&d->idle) && atomic_exchange(&d->idle, false))
        sys_eventfd_signal(d->evfd);
}

bool gw_driver_push(gw_driver *d, gw_driver_node *node)
{
    uintptr_t old = atomic_load(&d->head);
    do {
        if (old & QUEUE_CLOSED)
            return false;
        node->next = (gw_driver_node *)old;
    } while (!atomic_compare_exchange_weak(&d->head, &old, (uintptr_t)node));
    wake(d);
    return true;
}

/* Hand everything pushed so far to ops.queued, oldest first. *closed: the
 * queue is closed, and these were its last nodes. Returns whether there
 * was a node. */
static bool take_queue(gw_driver *d, bool *closed)
{
    uintptr_t old = atomic_fetch_and(&d->head, QUEUE_CLOSED);
    gw_driver_node *n = (gw_driver_node *)(old & ~QUEUE_CLOSED);
    gw_driver_node *fifo = NULL;

    *closed = (old & QUEUE_CLOSED) != 0;
    while (n != NULL) {
        gw_driver_node *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }
    bool any = fifo != NULL;
    while (fifo != NULL) {
        gw_driver_node *next = fifo->next; /* fifo is the caller's after */
        d->ops.queued(d->arg, fifo, *closed);
        fifo = next;
    }
    return any;
}

/* ------------------------------------------------------------ the driver */

static unsigned events_of(uint32_t e)
{
    return ((e & EPOLLIN) ? GW_DRIVER_READ : 0u) |
           ((e & EPOLLOUT) ? GW_DRIVER_WRITE : 0u) |
           ((e & EPOLLERR) ? GW_DRIVER_ERR : 0u) |
           ((e & EPOLLHUP) ? GW_DRIVER_HUP : 0u);
}

/* Hand the ready sockets to ops.ready without waiting. Returns the number
 * of events seen (0: the private set reported nothing, the driver may
 * park). */
static int poll_set(gw_driver *d)
{
    struct epoll_event evs[EPOLL_BATCH];
    int n = sys_epoll_poll(d->epfd, evs, EPOLL_BATCH);

    if (n == -EINTR)
        return 1; /* look again rather than park with events pending */
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        if (fd == d->evfd)
            sys_eventfd_drain(d->evfd);
        else
            d->ops.ready(d->arg, fd, events_of(evs[i].events));
    }
    return n > 0 ? n : 0;
}

static bool run_timer(gw_driver *d)
{
    if (d->deadline == RT_FOREVER || rt_now() < d->deadline)
        return false;
    d->deadline = RT_FOREVER;
    d->ops.timeout(d->arg);
    return true;
}

/* The driver goroutine: rounds until the queue is closed (see the top of
 * the file), then the last nodes, ops.stopped, and it ends. */
static void driver_main(void *arg)
{
    gw_driver *d = arg;

    atomic_store_explicit(&d->goid, rt_goid(), memory_order_relaxed);
    for (;;) {
        bool closed;
        bool work = take_queue(d, &closed);
        if (closed)
            break;
        work |= poll_set(d) > 0;
        work |= run_timer(d);
        if (d->ops.round != NULL)
            d->ops.round(d->arg);
        if (work) {
            rt_yield();
            continue;
        }
        atomic_store(&d->idle, true);
        if (atomic_load(&d->head) != 0) { /* a node, or closed */
            atomic_store(&d->idle, false);
            continue;
        }
        int rc = rt_fd_wait(d->epfd, RT_READ, d->deadline, NULL);
        atomic_store(&d->idle, false);
        if (rc != 0 && rc != -ETIMEDOUT) {
            /* Cannot happen: epfd stays registered until the driver
             * ends. Poll slowly rather than spin. */
            int64_t soon = rt_now() + 10 * RT_MSEC;
            rt_sleep_until(d->deadline < soon ? d->deadline : soon);
        }
    }
    if (d->ops.stopped != NULL)
        d->ops.stopped(d->arg);
    rt_fd_unregister(d->epfd);
    rt_waitgroup_done(&d->wg);
}

/* --------------------------------------------------- driver-only calls */

static bool on_driver(gw_driver *d)
{
    return atomic_load_explicit(&d->goid, memory_order_relaxed) == rt_goid();
}

int gw_driver_watch(gw_driver *d, int fd, unsigned interest)
{
    if (d == NULL || (interest & ~(unsigned)(GW_DRIVER_READ | GW_DRIVER_WRITE)))
        return -EINVAL;
    if (!on_driver(d))
        return -EPERM;
    if (interest == 0)
        return sys_epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, 0);
    uint32_t ev = ((interest & GW_DRIVER_READ) ? EPOLLIN : 0u) |
                  ((interest & GW_DRIVER_WRITE) ? EPOLLOUT : 0u);
    int err = sys_epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, ev);
    if (err == -EEXIST)
        err = sys_epoll_ctl(d->epfd, EPOLL_CTL_MOD, fd, ev);
    return err;
}

int gw_driver_set_deadline(gw_driver *d, int64_t deadline)
{
    if (d == NULL)
        return -EINVAL;
    if (!on_driver(d))
        return -EPERM;
    d->deadline = deadline;
    return 0;
}

/* ------------------------------------------------------------ lifetime */

int gw_driver_start(const gw_driver_ops *ops, void *arg, size_t stack_size,
                    gw_driver **out)
{
    int err;

    *out = NULL;
    if (ops == NULL || ops->queued == NULL || ops->ready == NULL ||
        ops->timeout == NULL)
        return -EINVAL;
    gw_driver *d = calloc(1, sizeof *d);
    if (d == NULL)
        return -ENOMEM;
    d->ops = *ops;
    d->arg = arg;
    d->deadline = RT_FOREVER;
    atomic_init(&d->head, 0);
    atomic_init(&d->idle, false);
    atomic_init(&d->goid, 0);
    d->epfd = sys_epoll_create();
    if (d->epfd < 0) {
        err = d->epfd;
        goto fail_alloc;
    }
    d->evfd = sys_eventfd();
    if (d->evfd < 0) {
        err = d->evfd;
        goto fail_epoll;
    }
    err = sys_epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->evfd, EPOLLIN);
    if (err != 0)
        goto fail_eventfd;
    err = rt_fd_register(d->epfd);
    if (err != 0)
        goto fail_eventfd;

    /* *out before the spawn: the driver's callbacks may read it at once. */
    *out = d;
    rt_waitgroup_add(&d->wg, 1);
    rt_go_opts go = {.stack_size = stack_size};
    if (rt_go_opts(driver_main, d, &go) == 0) {
        /* No stack (memory or guard-page budget): the driver never ran. */
        rt_waitgroup_done(&d->wg);
        *out = NULL;
        err = -ENOMEM;
        goto fail_register;
    }
    return 0;

fail_register:
    rt_fd_unregister(d->epfd);
fail_eventfd:
    close(d->evfd);
fail_epoll:
    close(d->epfd);
fail_alloc:
    free(d);
    return err;
}

int gw_driver_stop(gw_driver *d)
{
    if (d == NULL)
        return -EINVAL;
    if (on_driver(d))
        return -EDEADLK;
    atomic_fetch_or(&d->head, QUEUE_CLOSED);
    wake(d);
    rt_waitgroup_wait(&d->wg);
    return 0;
}

void gw_driver_free(gw_driver *d)
{
    if (d == NULL || gw_driver_stop(d) != 0)
        return;
    close(d->evfd);
    close(d->epfd);
    free(d);
}
