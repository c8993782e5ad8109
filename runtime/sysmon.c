/*
 * sysmon.c - the monitor thread (Go's sysmon), for what a cooperative
 * scheduler cannot do from its own Ms.
 *
 * A goroutine runs until it blocks, yields or exits: C code has no safe
 * points, so nothing can preempt it. While every M runs such a goroutine,
 * no M polls the network or runs timers, and the goroutines those would
 * ready wait behind it. sysmon is one OS thread, outside the G/M/P world
 * (it has no M and no P), that wakes now and then and
 *
 *   - polls the network without blocking when nobody has for NETPOLL_GAP
 *     (rt__s.last_poll) and no M is polling; the goroutines it readies go
 *     to the global run queue (rt__ready without an M), and an idle M is
 *     woken for them;
 *   - runs the timers of every P whose earliest timer is overdue by more
 *     than TIMER_SLACK (an M runs its own P's due timers every time it
 *     schedules, idle Ms sleep until the earliest timer: an overdue timer
 *     means its P is stuck in a long goroutine); the callbacks ready
 *     goroutines onto the global queue the same way;
 *   - when it put work on the global queue while no M was idle, sets
 *     rt__s.gq_urgent, which every M checks once per schedule (a relaxed
 *     load of a line sysmon rarely writes) and answers by taking from the
 *     global queue first: work sysmon found runs at the next switch of any
 *     M, not 61 switches later;
 *   - watches each M's switch counter: an M whose counter is odd (running
 *     a G) and has not moved for RT_LONG_RUN holds its P with one
 *     goroutine. sysmon counts it (rt_sched_stats), keeps its spawn site,
 *     and marks the G (g->long_run_since) so a goroutine dump shows it.
 *
 * Back-off, as Go's: sysmon sleeps 20 us after a round in which it acted,
 * doubling up to 10 ms while there is nothing to do. When every M is idle
 * there is nothing it could do (the poller M sleeps in epoll until the
 * next timer), so it parks on its futex until an M wakes up
 * (rt__sysmon_kick): an idle process uses no CPU. The Dekker pair: sysmon
 * publishes sysmon_idle then re-reads nidle; a waking M has already left
 * the idle count and then reads sysmon_idle; one of them sees the other.
 *
 * Threads: sysmon runs timer callbacks and rt__netpoll, both written for
 * scheduler context (no goroutine, no parking). It never runs goroutines.
 * It takes sched.lock (through rt__ready) and timer heap locks, never
 * while holding another runtime lock; rt__s.statlock is a leaf.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#define NETPOLL_GAP (10 * RT_MSEC)
#define TIMER_SLACK (1 * RT_MSEC)
#define DELAY_MIN (20 * RT_USEC)
#define DELAY_MAX (10 * RT_MSEC)

/* What sysmon last saw of one M (sysmon's own memory). */
typedef struct m_seen {
    uint32_t switches;
    int64_t since;  /* when switches took this value */
    int64_t cpu_at; /* wall time of cpu0, 0 until taken */
    int64_t cpu0;   /* the M thread's CPU time then */
    bool reported;  /* this run counted already */
} m_seen;

/* The CPU time the thread of m has used, or -1. */
static int64_t thread_cpu(rt_m *m)
{
    clockid_t id;
    struct timespec ts;
    if (pthread_getcpuclockid(m->thread, &id) != 0 ||
        clock_gettime(id, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * RT_SEC + ts.tv_nsec;
}

static void stat_add(uint64_t *field)
{
    rt__lock_acquire(&rt__s.statlock);
    (*field)++;
    rt__lock_release(&rt__s.statlock);
}

void rt_sched_stats_get(rt_sched_stats *out)
{
    rt__lock_acquire(&rt__s.statlock);
    *out = rt__s.stats;
    rt__lock_release(&rt__s.statlock);
}

/* Poll the network if nobody has for a while and nobody is. */
static bool poll_network(int64_t now)
{
    if ((atomic_load_explicit(&rt__s.npolled, memory_order_relaxed) == 0 &&
         !atomic_load_explicit(&rt__s.signalfd_on, memory_order_relaxed)) ||
        now - atomic_load_explicit(&rt__s.last_poll, memory_order_relaxed) <
            NETPOLL_GAP ||
        atomic_load(&rt__s.polling) || atomic_exchange(&rt__s.polling, true))
        return false;
    int n = rt__netpoll(0);
    rt__poll_release();
    if (n > 0)
        stat_add(&rt__s.stats.sysmon_polls);
    return n > 0;
}

/* Run the overdue timers of Ps whose Ms are busy elsewhere. */
static bool run_timers(int64_t now)
{
    bool acted = false;
    for (int i = 0; i < rt__s.nprocs; i++) {
        rt__theap *th = &rt__s.ps[i].timers;
        if (atomic_load_explicit(&th->next, memory_order_relaxed) >
            now - TIMER_SLACK)
            continue;
        rt__timers_run(th, now);
        stat_add(&rt__s.stats.sysmon_timers);
        acted = true;
    }
    return acted;
}

/* Note goroutines that hold their P; see the top of the file. */
static void watch_long_runs(m_seen *seen, int64_t now)
{
    for (int i = 0; i < rt__s.nprocs; i++) {
        rt_m *m = &rt__s.ms[i];
        uint32_t sw = atomic_load_explicit(&m->switches, memory_order_relaxed);
        m_seen *s = &seen[i];
        if (sw != s->switches) {
            *s = (m_seen){.switches = sw, .since = now};
            continue;
        }
        if ((sw & 1) == 0)
            continue;
        /* A thread the kernel did not run for a while is not a goroutine
         * holding its P: from a quarter of the threshold on, compare the
         * thread's CPU time with the wall time (two clock reads per
         * candidate; a healthy process has few). */
        if (now - s->since >= RT_LONG_RUN / 4 && s->cpu_at == 0) {
            s->cpu0 = thread_cpu(m);
            s->cpu_at = now;
        }
        if (now - s->since < RT_LONG_RUN)
            continue;
        if (s->cpu0 >= 0 && s->cpu_at != 0 && now > s->cpu_at) {
            int64_t cpu = thread_cpu(m);
            if (cpu >= 0 && cpu - s->cpu0 < (now - s->cpu_at) / 2) {
                /* Start the watch again from now. */
                s->since = s->cpu_at = now;
                s->cpu0 = cpu;
                continue;
            }
        }
        rt_g *g = atomic_load_explicit(&m->curg, memory_order_acquire);
        if (g == NULL)
            continue;
        /* G memory is never unmapped while the scheduler runs, so g can
         * be read and marked even if it switched out meanwhile; the
         * switch counter, read again, says whether it did. */
        atomic_store_explicit(&g->long_run_since, s->since,
                              memory_order_relaxed);
        if (atomic_load(&m->switches) != sw) {
            int64_t since = s->since;
            atomic_compare_exchange_strong(&g->long_run_since, &since, 0);
            continue;
        }
        rt__lock_acquire(&rt__s.statlock);
        if (!s->reported)
            rt__s.stats.long_runs++;
        rt__s.stats.last_long_goid =
            atomic_load_explicit(&g->id, memory_order_relaxed);
        rt__s.stats.last_long_fn =
            atomic_load_explicit(&g->fn_name, memory_order_relaxed);
        rt__s.stats.last_long_file =
            atomic_load_explicit(&g->file, memory_order_relaxed);
        rt__s.stats.last_long_line =
            atomic_load_explicit(&g->line, memory_order_relaxed);
        rt__s.stats.last_long_ns = now - s->since;
        rt__lock_release(&rt__s.statlock);
        s->reported = true;
    }
}

static bool all_idle(void)
{
    return atomic_load(&rt__s.nidle) >= rt__s.nprocs &&
           atomic_load(&rt__s.gq_size) == 0;
}

/* Sleep ns (< 0: until kicked). Returns early when kicked. */
static void sysmon_sleep(int64_t ns)
{
    rt__futex_wait(&rt__s.sysmon_wake, 0, ns);
    atomic_store(&rt__s.sysmon_wake, 0);
}

static void *sysmon_main(void *arg)
{
    m_seen *seen = arg;
    int64_t delay = DELAY_MIN;
    while (!atomic_load(&rt__s.stopping)) {
        sysmon_sleep(delay);
        if (atomic_load(&rt__s.stopping))
            break;
        if (all_idle()) {
            atomic_store(&rt__s.sysmon_idle, true);
            if (all_idle() && !atomic_load(&rt__s.stopping))
                sysmon_sleep(-1);
            atomic_store(&rt__s.sysmon_idle, false);
            delay = DELAY_MIN;
            memset(seen, 0, sizeof *seen * (size_t)rt__s.nprocs);
            continue;
        }
        int64_t now = rt_now();
        bool acted = poll_network(now);
        acted |= run_timers(now);
        watch_long_runs(seen, now);
        if (acted) {
            if (atomic_load(&rt__s.gq_size) > 0)
                atomic_store_explicit(&rt__s.gq_urgent, true,
                                      memory_order_relaxed);
            delay = DELAY_MIN;
        } else if (delay < DELAY_MAX) {
            delay = delay * 2 < DELAY_MAX ? delay * 2 : DELAY_MAX;
        }
    }
    free(seen);
    return NULL;
}

void rt__sysmon_kick(void)
{
    if (atomic_load(&rt__s.sysmon_idle) &&
        atomic_exchange(&rt__s.sysmon_idle, false)) {
        atomic_store(&rt__s.sysmon_wake, 1);
        rt__futex_wake(&rt__s.sysmon_wake, 1);
    }
}

/* Start the thread (rt_run). 0 or a negative errno. */
int rt__sysmon_start(void)
{
    m_seen *seen = calloc((size_t)rt__s.nprocs, sizeof *seen);
    if (seen == NULL)
        return -ENOMEM;
    int err = pthread_create(&rt__s.sysmon, NULL, sysmon_main, seen);
    if (err != 0) {
        free(seen);
        return -err;
    }
    rt__s.sysmon_started = true;
    return 0;
}

/* Stop and join it (rt_run teardown; rt__s.stopping is set). */
void rt__sysmon_stop(void)
{
    if (!rt__s.sysmon_started)
        return;
    atomic_store(&rt__s.sysmon_wake, 1);
    rt__futex_wake(&rt__s.sysmon_wake, 1);
    pthread_join(rt__s.sysmon, NULL);
    rt__s.sysmon_started = false;
}
