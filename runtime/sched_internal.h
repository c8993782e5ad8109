/*
 * sched_internal.h - the scheduler's structures, shared by sched.c,
 * stack.c, timer.c, blocking.c and debug.c. See sched.c for the design.
 */
#ifndef FANFOLD_SCHED_INTERNAL_H
#define FANFOLD_SCHED_INTERNAL_H

#include "rt_internal.h"

#include <pthread.h>
#include <signal.h>

/* Private G states beyond rt_gstate (see rt__park in sched.c). */
enum {
    RT__G_PARKING = RT_G_NSTATES, /* switching out to park */
    RT__G_PARKING_READY,          /* readied before the switch finished */
};

/* What a G asks g0 to do after switching to it. */
enum { RT__ACT_NONE, RT__ACT_PARK, RT__ACT_YIELD, RT__ACT_EXIT };

#define RT__RUNQ_SIZE 256
#define RT__DEFAULT_STACK (64 * 1024)

/* One timer heap per P, guarded by its lock (timer.c). */
typedef struct rt__theap {
    rt__lock lock;
    rt__timer **h; /* min-heap on when */
    int32_t len, cap;
    _Atomic int64_t next; /* when of h[0], RT_FOREVER when empty */
} rt__theap;

typedef struct rt_p rt_p;
typedef struct rt_m rt_m;

/*
 * P: a right to run goroutines, with its own queue. runq is a bounded
 * single-producer (the owner) multi-consumer (owner + thieves) ring, Go's
 * runqput/runqget/runqsteal; runnext holds the G to run next.
 */
struct rt_p {
    int id;
    _Atomic uint32_t runqhead; /* consumers CAS it */
    _Atomic uint32_t runqtail; /* only the owner stores it */
    _Atomic(rt_g *) runq[RT__RUNQ_SIZE];
    _Atomic(rt_g *) runnext;
    uint32_t schedtick;      /* owner only */
    uint32_t runnext_streak; /* owner only: runnext picks in a row */
    rt_g *spawn_waiters;     /* owner only: spawners parked on a full ring,
                                linked through schednext */

    /* Free Gs with default stacks, owner only. */
    rt_g *gfree;
    int ngfree;

    /* Goroutine ids handed out in batches (owner only). */
    uint64_t goid_next, goid_end;

    /* Counters summed by rt_goroutines(); written by the owner only. */
    _Atomic uint64_t nspawned, nexited;

    rt__theap timers;
    rt_m *m;

    /* Thieves' view of this P's M, for taking its runnext (see
     * runqsteal_next in sched.c): the M's switch count when a spinning M
     * last looked, and since when it has had that value. Written by
     * spinning Ms only (races between two are harmless: a heuristic), on
     * a cache line of its own so the owner's writes do not bounce it. */
    _Atomic uint32_t stall_switches __attribute__((aligned(64)));
    _Atomic int64_t stall_since;
} __attribute__((aligned(64)));

/*
 * M: an OS thread. In fanfold each P has its own dedicated M (blocking C
 * calls go to a separate pool instead of Go's P hand-off, see blocking.c),
 * so m->p never changes.
 */
struct rt_m {
    int id;
    pthread_t thread;
    rt__regs g0regs; /* scheduler context on the thread's own stack */
    /* The G running on this M, NULL in the scheduler. Written by the M
     * only; relaxed loads elsewhere (sysmon, dumps). */
    _Atomic(rt_g *) curg;
    /* Incremented by the M at every switch into and out of a G (odd:
     * running a G), so sysmon can tell a G that keeps the P. */
    _Atomic uint32_t switches;
    rt_p *p;
    bool spinning; /* counted in sched.nspinning; owner or under sched.lock */
    bool idle;     /* on sched.idle list, under sched.lock */
    rt_m *idlenext;
    _Atomic uint32_t wake;       /* futex word: 1 = wake up */
    _Atomic int64_t sleep_until; /* while asleep: its timeout */
    _Atomic bool in_poll;        /* asleep in epoll, not on the futex */
    void *g0_stack_lo;
    size_t g0_stack_size;
    void *altstack; /* signal stack for stack-overflow reports */
    stack_t old_altstack;
#ifdef RT_TSAN
    void *tsan_fiber;
#endif
#ifdef RT_ASAN
    void *asan_fake_stack;
#endif
} __attribute__((aligned(64)));

/*
 * The scheduler's globals, in groups that each start a cache line: what
 * every schedule reads but hardly anyone writes must not share a line
 * with what busy Ms write all the time (the global queue, the idle
 * counts, the netpoller's clock), or each write would evict it from every
 * other CPU's cache.
 */
typedef struct rt__sched {
    /* Read-mostly: set by rt_run, read on every schedule. */
    int nprocs;
    rt_p *ps;
    rt_m *ms;
    rt_g *main_g;
    int epfd, evfd;
    _Atomic bool stopping;
    /* sysmon readied Gs onto the global queue while every M was busy:
     * Ms look there first at their next schedule (set by sysmon, cleared
     * by an M that finds the queue empty). */
    _Atomic bool gq_urgent;
    _Atomic bool sysmon_idle; /* sysmon parked until an M wakes up */

    /* The global run queue and the idle list. */
    _Alignas(64) rt__lock lock; /* protects gq_*, idle list */
    rt_g *gq_head, *gq_tail;
    _Atomic int32_t gq_size;
    rt_m *idle;

    /* Read by every rt__wakep, written when Ms go idle or spin. */
    _Alignas(64) _Atomic int32_t nidle;
    _Atomic int32_t nspinning;

    /* Every G ever made (dumps) and the global free list: under glock. */
    _Alignas(64) rt__lock glock;
    rt_g *allgs;
    rt_g *gfree;
    _Atomic int ngfree; /* written under glock, peeked without */
    _Atomic uint64_t goidgen;
    /* Goroutines started outside any P (rt_run's main) and exits seen
     * without one; summed with the per-P counters. */
    _Atomic uint64_t nspawned_x, nexited_x;

    /* Netpoller (netpoll.c): at most one M blocks in epoll at a time. */
    _Alignas(64) _Atomic bool polling; /* an M or sysmon is in rt__netpoll */
    /* An idle M found polling taken and sleeps on its futex instead of in
     * epoll: whoever gives up polling after a poll that did not block
     * wakes an idle M to take the role (poll_release in sched.c). */
    _Atomic bool poll_wanted;
    _Atomic int npolled; /* fds registered (netpoll.c) */
    /* The signalfd is in the epoll set (signal.c). Not in npolled: an M
     * that runs out of work polls before it steals only when some fd
     * was registered (a syscall each time, which would otherwise be paid
     * by every program, and for nothing: no goroutine waits on the
     * signalfd); sysmon and the sleeping poller cover signals. */
    _Atomic bool signalfd_on;
    _Atomic int64_t last_poll; /* when epoll was last consulted */

    /* sysmon (sysmon.c). */
    _Alignas(64) pthread_t sysmon;
    bool sysmon_started;
    _Atomic uint32_t sysmon_wake; /* futex word: 1 = look now */
    rt__lock statlock;            /* protects stats */
    rt_sched_stats stats;
} rt__sched;

/* The one scheduler of the process: rt_run() initialises it and tears it
 * down; Go has a single runtime per process too. */
extern rt__sched rt__s;

rt_m *rt__getm(void) RT__NOINLINE;

/* lock.c */
int rt__futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t timeout_ns);
void rt__futex_wake(_Atomic uint32_t *addr, int n);

/* sched.c */
void rt__wakep(void);
/* Give up rt__s.polling after a non-blocking poll (sched.c). */
void rt__poll_release(void);
void rt__globrunqput(rt_g *g);
/* Called by an M that wakes from its idle sleep: restarts sysmon if the
 * whole process had gone idle. */
void rt__sysmon_kick(void);

/* sysmon.c */
int rt__sysmon_start(void);
void rt__sysmon_stop(void);

/* stack.c: G + stack allocation. Caller owns the result; a dead G goes
 * back with rt__gfree_put() (default stacks, in batches) or
 * rt__g_free_big() (stack and G are one allocation). */
rt_g *rt__g_alloc(size_t stack_size);
void rt__gfree_put(rt_g *head, rt_g *tail, int n);
int rt__gfree_take(rt_g **head, int max);
void rt__g_free_big(rt_g *g);
void rt__stacks_scavenge(void);
bool rt__stacks_scavenge_wanted(void);
/* Check the canary and stack pointer of g; panic on overflow. */
void rt__stack_check(rt_g *g, void *sp);
/* Mark g as never run: the next switch to it starts rt__gstart on the
 * 16-byte aligned rt__stack_top(g). */
void rt__stack_prepare(rt_g *g);
void *rt__stack_top(rt_g *g);
/* Release every stack and G mapping (rt_run teardown). */
void rt__stacks_release_all(void);
/* Guards and the stack-overflow handler (rt_run), and each M thread's
 * signal stack. */
int rt__stacks_init(void);
void rt__stacks_fini(void);
void rt__altstack_init(rt_m *m);
void rt__altstack_fini(rt_m *m);
/* Default stack size (RT__DEFAULT_STACK). */
size_t rt__stack_default(void);

/* timer.c */
void rt__theap_init(rt__theap *th);
void rt__theap_destroy(rt__theap *th);
/* Run the expired timers of th; returns th's next deadline. */
int64_t rt__timers_run(rt__theap *th, int64_t now);
/* Earliest deadline over all Ps. */
int64_t rt__timers_next(void);

/* netpoll.c */
int rt__netpoll_init(void);
void rt__netpoll_destroy(void);
void rt__netpoll_break(void);
int rt__netpoll(int64_t timeout);

/* blocking.c */
void rt__blocking_shutdown(void);

/* signal.c: rt_run calls rt__signal_init (0 or a negative errno) on its
 * thread before it starts any other, and rt__signal_fini at teardown;
 * rt__netpoll calls rt__signal_poll for an event whose data is
 * RT__SIGNAL_TAG (UINT64_MAX is the wake-up eventfd). */
#define RT__SIGNAL_TAG (UINT64_MAX - 1)
int rt__signal_init(void);
void rt__signal_fini(void);
void rt__signal_poll(void);

/* switch_*.S */
void rt__switch(rt__regs *from, rt__regs *to);
void rt__switch_start(rt__regs *from, void *stack_top);
void rt__gstart(void);

#endif /* FANFOLD_SCHED_INTERNAL_H */
