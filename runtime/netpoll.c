/*
 * netpoll.c - the netpoller: epoll, edge-triggered, each fd registered
 * once, integrated with the scheduler (Go's netpoll_epoll.go + netpoll.go).
 *
 * Each registered fd has a poll descriptor (rt__pd) that lives for the
 * whole rt_run() in a two-level table indexed by fd, so the poller can map
 * an event to its pd without a lock. Per pd, under pd->lk, for each mode
 * (RT_READ, RT_WRITE, RT_HUP):
 *   ready[mode]  readiness latched by the poller (edge-triggered: the
 *                kernel says it once), consumed by rt_fd_wait();
 *   waiter[mode] the one goroutine parked for that mode; a second one
 *                gets -EBUSY (misuse is an error, not an abort);
 *   seq          registration generation, also stored in the epoll event
 *                data: an event from before the fd was unregistered and
 *                its number reused is stale and ignored;
 *   gone[mode]   a hang-up was seen (EPOLLRDHUP/HUP/ERR for reading and
 *                hang-up, HUP/ERR for writing): from then on the fd counts
 *                as ready for that mode for good, as a level-triggered
 *                poller would say. Edge-triggered epoll reports a hang-up
 *                once, and the syscall after it can still say EAGAIN while
 *                the kernel finishes tearing the connection down (seen
 *                under gVisor); a waiter parked after that would never
 *                wake. A read-wait that returns because of the latch
 *                yields first, so a loop that waits and never reads cannot
 *                starve the other goroutines of its P;
 *   closing      set by rt_fd_unregister(): waiters get -EBADF.
 *
 * RT_HUP is the broken-connection watch (nginx's
 * ngx_http_upstream_check_broken_connection, without the polling): a
 * waiter for RT_HUP is readied only by EPOLLRDHUP/HUP/ERR, never by
 * EPOLLIN, and does not consume read readiness, so a server can wait for
 * its client to go away while the client's next request sits unread in
 * the socket buffer.
 *
 * A wait (rt_fd_wait) can end four ways: readiness (the poller), the
 * deadline (an rt__timer), the context (an rt__ctx_watch), or
 * rt_fd_unregister(). Whoever comes first marks the waiter done under
 * pd->lk with its result and readies the goroutine; the others find it
 * done and do nothing. The timer and the watch are armed before the
 * waiter is published in the pd, so they may fire first: then the waiter
 * is found done when publishing and the goroutine never parks. After a
 * wake-up the goroutine stops its timer and removes its watch, both of
 * which wait for a callback in progress, so nothing touches the waiter
 * (on the goroutine's stack) once rt_fd_wait returns.
 *
 * Scheduler side (sched.c): an M with nothing to run becomes the poller
 * if no other M is (rt__s.polling) and blocks in epoll_pwait2 until the
 * next timer; the others sleep on futexes. Waking the poller writes to an
 * eventfd. Busy Ms poll without blocking when their queue runs dry, and
 * sysmon polls when nobody has for 10 ms, so ready fds are not starved
 * behind runnable goroutines.
 *
 * Lock order: context locks > pd->lk > timer heap locks; the poller holds
 * pd->lk only while collecting waiters and readies them after releasing it.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define PD_CHUNK 1024
#define PD_CHUNKS 1024 /* fds up to 1,048,576 */

typedef struct pd_waiter pd_waiter;
typedef struct rt__pd rt__pd;

/* Modes index the per-mode arrays; slot 0 is unused (RT_READ is 1). */
#define NMODES (RT_HUP + 1)

struct rt__pd {
    rt__lock lk;
    uint32_t seq;
    bool closing;
    bool ready[NMODES];        /* RT_READ, RT_WRITE (RT_HUP: gone only) */
    bool gone[NMODES];         /* hang-up seen: ready for good */
    pd_waiter *waiter[NMODES]; /* at most one per mode */
    _Atomic bool hup;          /* gone[RT_HUP], readable without lk */
    _Atomic bool registered;
};

struct pd_waiter {
    rt_g *g;
    rt__pd *pd;
    int mode;
    bool done;  /* under pd->lk */
    int result; /* valid once done */
    rt__timer timer;
    rt__ctx_watch watch;
};

/* The table of pds: chunk pointers published with release stores, read
 * without a lock; chunks are only freed at teardown. Global because the
 * process has one scheduler and one epoll instance (see rt__s). */
static struct {
    rt__lock grow; /* serialises chunk allocation */
    rt__pd *_Atomic chunks[PD_CHUNKS];
} pdt;

static rt__pd *pd_lookup(int fd)
{
    if (fd < 0 || fd >= PD_CHUNK * PD_CHUNKS)
        return NULL;
    rt__pd *c =
        atomic_load_explicit(&pdt.chunks[fd / PD_CHUNK], memory_order_acquire);
    return c != NULL ? &c[fd % PD_CHUNK] : NULL;
}

static rt__pd *pd_get(int fd)
{
    rt__pd *pd = pd_lookup(fd);
    if (pd != NULL || fd < 0 || fd >= PD_CHUNK * PD_CHUNKS)
        return pd;
    rt__lock_acquire(&pdt.grow);
    rt__pd *c = atomic_load(&pdt.chunks[fd / PD_CHUNK]);
    if (c == NULL) {
        c = calloc(PD_CHUNK, sizeof *c);
        if (c != NULL)
            atomic_store_explicit(&pdt.chunks[fd / PD_CHUNK], c,
                                  memory_order_release);
    }
    rt__lock_release(&pdt.grow);
    return c != NULL ? &c[fd % PD_CHUNK] : NULL;
}

/* ------------------------------------------------------------ set-up */

int rt__netpoll_init(void)
{
    rt__s.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (rt__s.epfd < 0)
        return -errno;
    rt__s.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt__s.evfd < 0) {
        int err = -errno;
        close(rt__s.epfd);
        return err;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(rt__s.epfd, EPOLL_CTL_ADD, rt__s.evfd, &ev) != 0) {
        int err = -errno;
        close(rt__s.evfd);
        close(rt__s.epfd);
        return err;
    }
    return 0;
}

void rt__netpoll_destroy(void)
{
    close(rt__s.evfd);
    close(rt__s.epfd);
    for (int i = 0; i < PD_CHUNKS; i++) {
        free(atomic_load(&pdt.chunks[i]));
        atomic_store(&pdt.chunks[i], NULL);
    }
}

/* Wake an M blocked in epoll. */
void rt__netpoll_break(void)
{
    uint64_t one = 1;
    ssize_t r = write(rt__s.evfd, &one, sizeof one);
    (void)r; /* EAGAIN: a wake-up is pending already */
}

/* ----------------------------------------------------- register, wait */

int rt_fd_register(int fd)
{
    rt__pd *pd = pd_get(fd);
    if (pd == NULL)
        return fd < 0 ? -EBADF : -ENOMEM;
    if (atomic_load(&pd->registered)) {
        /* Registered twice: an error, and its waiters and readiness stay
         * as they are. Unless the fd was closed without
         * rt_fd_unregister() and its number reused: the kernel dropped
         * it from the epoll set, so forget the old registration. */
        rt__lock_acquire(&pd->lk);
        struct epoll_event old = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
            .data.u64 = ((uint64_t)pd->seq << 32) | (uint32_t)fd,
        };
        rt__lock_release(&pd->lk);
        if (epoll_ctl(rt__s.epfd, EPOLL_CTL_MOD, fd, &old) == 0)
            return -EEXIST;
        rt_fd_unregister(fd);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return rt__errno();
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return rt__errno();
    rt__lock_acquire(&pd->lk);
    pd->seq++;
    pd->closing = false;
    for (int m = 0; m < NMODES; m++) {
        pd->ready[m] = pd->gone[m] = false;
        pd->waiter[m] = NULL;
    }
    atomic_store(&pd->hup, false);
    uint32_t seq = pd->seq;
    rt__lock_release(&pd->lk);
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = ((uint64_t)seq << 32) | (uint32_t)fd,
    };
    if (epoll_ctl(rt__s.epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return rt__errno();
    atomic_store(&pd->registered, true);
    atomic_fetch_add(&rt__s.npolled, 1);
    return 0;
}

/* Mark w done with result; pd->lk held. Returns the G to ready (if it
 * was published, i.e. parked or parking), else NULL. */
static rt_g *waiter_finish(pd_waiter *w, int result, bool published)
{
    if (w->done)
        return NULL;
    w->done = true;
    w->result = result;
    if (!published)
        return NULL;
    w->pd->waiter[w->mode] = NULL;
    return w->g;
}

static void finish_from_outside(pd_waiter *w, int result)
{
    rt__pd *pd = w->pd;
    rt__lock_acquire(&pd->lk);
    rt_g *g = waiter_finish(w, result, pd->waiter[w->mode] == w);
    rt__lock_release(&pd->lk);
    if (g != NULL)
        rt__ready(g);
}

static void wait_timeout(rt__timer *t)
{
    finish_from_outside(t->arg, -ETIMEDOUT);
}

static void wait_cancelled(rt__ctx_watch *w, int err)
{
    finish_from_outside(w->arg, err);
}

static bool wait_unlock(rt_g *g, void *arg)
{
    (void)g;
    rt__lock_release(&((rt__pd *)arg)->lk);
    return true;
}

static const char *const wait_reasons[NMODES] = {
    [RT_READ] = "IO wait (read)",
    [RT_WRITE] = "IO wait (write)",
    [RT_HUP] = "IO wait (hang-up)",
};

/* Consume readiness for mode; pd->lk held. 1: ready, 2: ready only
 * because of the hang-up latch, 0: not ready. */
static int take_ready(rt__pd *pd, int mode)
{
    if (pd->ready[mode]) {
        pd->ready[mode] = false;
        return 1;
    }
    return pd->gone[mode] ? 2 : 0;
}

int rt_fd_wait(int fd, int mode, int64_t deadline, rt_ctx *ctx)
{
    if (mode != RT_READ && mode != RT_WRITE && mode != RT_HUP)
        return -EINVAL;
    rt__pd *pd = pd_lookup(fd);
    if (pd == NULL || !atomic_load(&pd->registered))
        return -EBADF;

    /* Fast paths under the lock: no timer, no watch. */
    rt__lock_acquire(&pd->lk);
    if (pd->closing) {
        rt__lock_release(&pd->lk);
        return -EBADF;
    }
    int ready = take_ready(pd, mode);
    rt__lock_release(&pd->lk);
    if (ready != 0) {
        if (ready == 2 && mode == RT_READ)
            rt_yield(); /* see "gone" at the top of the file */
        return 0;
    }
    int err = ctx != NULL ? rt_ctx_err(ctx) : 0;
    if (err != 0)
        return err;
    if (deadline <= rt_now())
        return -ETIMEDOUT;

    pd_waiter w = {.g = rt__curg(), .pd = pd, .mode = mode};
    if (w.g == NULL)
        rt__panic("rt_fd_wait called outside a goroutine");
    bool timed = deadline != RT_FOREVER;
    if (timed) {
        rt__timer_init(&w.timer, wait_timeout, &w);
        rt__timer_start(&w.timer, deadline);
    }
    w.watch.fn = wait_cancelled;
    w.watch.arg = &w;
    err = rt__ctx_watch_add(ctx, &w.watch);

    rt__lock_acquire(&pd->lk);
    if (err != 0)
        waiter_finish(&w, err, false);
    else if (pd->closing)
        waiter_finish(&w, -EBADF, false);
    else if (pd->waiter[mode] != NULL)
        waiter_finish(&w, -EBUSY, false); /* one waiter per mode */
    else if (take_ready(pd, mode) != 0)
        waiter_finish(&w, 0, false);
    if (!w.done) {
        pd->waiter[mode] = &w;
        rt__park(wait_unlock, pd, wait_reasons[mode]);
    } else {
        rt__lock_release(&pd->lk);
    }
    if (timed)
        rt__timer_stop(&w.timer);
    rt__ctx_watch_del(&w.watch);
    return w.result;
}

void rt_fd_unregister(int fd)
{
    rt__pd *pd = pd_lookup(fd);
    if (pd == NULL || !atomic_load(&pd->registered))
        return;
    epoll_ctl(rt__s.epfd, EPOLL_CTL_DEL, fd, NULL);
    rt_g *gs[NMODES] = {NULL};
    rt__lock_acquire(&pd->lk);
    pd->closing = true;
    pd->seq++; /* events still queued for this fd are stale now */
    for (int m = RT_READ; m < NMODES; m++)
        if (pd->waiter[m] != NULL)
            gs[m] = waiter_finish(pd->waiter[m], -EBADF, true);
    atomic_store(&pd->registered, false);
    rt__lock_release(&pd->lk);
    atomic_fetch_sub(&rt__s.npolled, 1);
    for (int m = RT_READ; m < NMODES; m++)
        if (gs[m] != NULL)
            rt__ready(gs[m]);
}

bool rt_fd_hup(int fd)
{
    rt__pd *pd = pd_lookup(fd);
    return pd != NULL && atomic_load(&pd->hup);
}

/* --------------------------------------------------------------- poll */

/*
 * Poll once, waiting at most timeout ns (0: don't wait, < 0: forever),
 * and ready the goroutines whose fds became ready. Called by sched.c from
 * scheduler context, by one M at a time (rt__s.polling). Returns how many
 * goroutines it readied.
 */
int rt__netpoll(int64_t timeout)
{
    struct epoll_event evs[128];
    struct timespec ts, *tsp = NULL;
    if (timeout >= 0) {
        ts.tv_sec = timeout / RT_SEC;
        ts.tv_nsec = timeout % RT_SEC;
        tsp = &ts;
    }
    int n = epoll_pwait2(rt__s.epfd, evs, 128, tsp, NULL);
    if (n < 0 && errno == ENOSYS) {
        int ms = timeout < 0 ? -1 : (int)((timeout + RT_MSEC - 1) / RT_MSEC);
        n = epoll_wait(rt__s.epfd, evs, 128, ms);
    }
    atomic_store_explicit(&rt__s.last_poll, rt_now(), memory_order_relaxed);
    if (n <= 0)
        return 0;
    int readied = 0;
    for (int i = 0; i < n; i++) {
        uint64_t data = evs[i].data.u64;
        if (data == UINT64_MAX) { /* rt__netpoll_break */
            uint64_t v;
            ssize_t r = read(rt__s.evfd, &v, sizeof v);
            (void)r;
            continue;
        }
        if (data == RT__SIGNAL_TAG) {
            rt__signal_poll();
            continue;
        }
        int fd = (int)(uint32_t)data;
        uint32_t seq = (uint32_t)(data >> 32);
        rt__pd *pd = pd_lookup(fd);
        if (pd == NULL)
            continue;
        uint32_t e = evs[i].events;
        rt_g *gs[NMODES] = {NULL};
        rt__lock_acquire(&pd->lk);
        if (pd->seq == seq && !pd->closing) {
            if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                atomic_store(&pd->hup, true);
                pd->gone[RT_READ] = pd->gone[RT_HUP] = true;
                if (pd->waiter[RT_HUP] != NULL)
                    gs[RT_HUP] = waiter_finish(pd->waiter[RT_HUP], 0, true);
            }
            if (e & (EPOLLHUP | EPOLLERR))
                pd->gone[RT_WRITE] = true;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                if (pd->waiter[RT_READ] != NULL)
                    gs[RT_READ] = waiter_finish(pd->waiter[RT_READ], 0, true);
                else
                    pd->ready[RT_READ] = true;
            }
            if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
                if (pd->waiter[RT_WRITE] != NULL)
                    gs[RT_WRITE] = waiter_finish(pd->waiter[RT_WRITE], 0, true);
                else
                    pd->ready[RT_WRITE] = true;
            }
        }
        rt__lock_release(&pd->lk);
        for (int m = RT_READ; m < NMODES; m++) {
            if (gs[m] != NULL) {
                rt__ready(gs[m]);
                readied++;
            }
        }
    }
    return readied;
}
