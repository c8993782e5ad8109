/*
 * stack.c - goroutine stacks, and the Gs that own them.
 *
 * Default stacks (64 KiB) are carved from slabs: one mmap of 256 slots
 * followed by the 256 Gs of those slots, packed. MAP_NORESERVE,
 * transparent huge pages off, committed lazily by the kernel page by page:
 * a parked goroutine with a shallow stack costs one resident stack page
 * plus its share of the G array. That is what lets a million goroutines
 * park in a few GiB. A slot is
 *
 *     [ 64 KiB guard | canary | stack ... grows down ... ]
 *     ^slot           ^stack_lo                 stack_hi^
 *
 * so every stack has 64 KiB below it that no stack uses, and the G array
 * sits above the last stack (stacks grow down, away from it).
 *
 * Guards. An overflowing goroutine must never write into its neighbour's
 * stack or a G: the guard below each stack is made inaccessible, so the
 * first touch faults, and the SIGSEGV handler (installed by rt_run,
 * running on a per-M signal stack) panics naming the goroutine and its
 * spawn site. How, decided once per process (rt__stacks_init):
 *   madvise   MADV_GUARD_INSTALL (Linux 6.13+): guard markers in the page
 *             tables, no extra mapping: every stack is guarded, at any
 *             count;
 *   mprotect  PROT_NONE on each guard. Each guard splits a mapping, and
 *             vm.max_map_count (65530 by default) caps the mappings of
 *             the process, so guards are rationed: half of the mappings
 *             left at start are the budget, big stacks (which run library
 *             code) may use all of it, default stacks only half, slab by
 *             slab. Slabs made beyond that have unguarded gaps (below);
 *   none      (FANFOLD_STACK_GUARD=none) no guards at all.
 * A stack without a guard still has the 64 KiB gap, never touched, so an
 * overrun of up to 64 KiB lands in it rather than in the neighbour, and
 * the canary catches most of those: the lowest 64 bytes of every stack
 * must stay zero (zero so that checking them costs no RSS), and they are
 * checked with the saved stack pointer every time the goroutine switches
 * out (park, yield, exit). An overrun that writes only zeros below the
 * canary, or a frame over 64 KiB that jumps the gap, is not seen there:
 * the README states these limits. Code built with -fstack-clash-protection
 * (fanfold's own is) probes every page of a big frame, so it cannot jump a
 * guard.
 *
 * Stacks larger than the default (rt_go_opts) get a mapping of their own,
 * [guard | stack | G], for goroutines that run deep C code (OpenSSL,
 * libcurl, jansson); they are always guarded, and when the mprotect
 * budget is spent a spawn that needs one fails (rt_go returns 0) rather
 * than run unguarded.
 *
 * A G and its stack stay together for life, so a free G is a free stack.
 * Gs are never unmapped while the scheduler runs: they are linked on
 * rt__s.allgs (for dumps) and recycled through free lists (per P in
 * sched.c, global here; moved in batches). rt__stacks_release_all()
 * unmaps everything at rt_run() teardown. Free default stacks beyond a
 * cache of hot ones give their pages back to the kernel (MADV_DONTNEED)
 * when an M goes idle, so RSS falls after a burst without a syscall on
 * the spawn/exit path.
 *
 * Locking: rt__s.glock protects the slab list, allgs, the global free
 * lists and the guard budget. The signal handler reads only the faulting
 * thread's current G.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLAB_SLOTS 256
#define GUARD (64 * 1024) /* below every stack */
#define CANARY_WORDS 8
#define HOT_FREE 4096 /* free default stacks kept resident */
#define ALTSTACK_SIZE (64 * 1024)

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif

enum guard_mode { GUARD_MADVISE, GUARD_MPROTECT, GUARD_NONE };
static const char *const guard_names[] = {"madvise", "mprotect", "none"};

/* A G rounded up so that stack_hi stays 64-byte aligned. */
#define G_AREA ((sizeof(rt_g) + 63) & ~(size_t)63)

typedef struct slab {
    struct slab *next;
    char *base;
    size_t len;
    int used; /* slots handed out */
    size_t slot;
    bool guarded; /* every stack of it has a guard */
} slab;

/* Mappings owned by the allocator; protected by rt__s.glock. Global
 * because there is one scheduler per process (see rt__s). */
static struct {
    slab *slabs;     /* default-stack slabs, newest first */
    slab *bigmaps;   /* one entry per big stack mapping */
    rt_g *bigfree;   /* free Gs with big stacks, pages released */
    rt_g *cleanfree; /* free default Gs whose stack pages were released */
    size_t pagesz;
    enum guard_mode mode;
    long vma_budget; /* mprotect: mappings the guards may add */
    long vma_used;
    uint64_t guarded, unguarded; /* stacks made, by kind */
    struct sigaction old_segv;
    bool segv_installed;
} st;

static size_t page_size(void)
{
    if (st.pagesz == 0)
        st.pagesz = (size_t)sysconf(_SC_PAGESIZE);
    return st.pagesz;
}

size_t rt__stack_default(void)
{
    return RT__DEFAULT_STACK;
}

/*
 * The canary is the lowest CANARY_WORDS words of the stack, which must stay
 * zero; an overflowing frame writes return addresses and saved registers
 * there, which are not zero. Fresh and MADV_DONTNEED'ed pages are zero, so
 * nothing needs writing. It is read only for stacks without a guard: a
 * guarded stack cannot overflow without faulting first, and reading the
 * canary would make its lowest page resident on kernels that do not map
 * the shared zero page for a read (seen here: a second page, 8 KiB per
 * parked goroutine instead of 4). The saved stack pointer is checked for
 * every stack; that costs no memory.
 */
void rt__stack_check(rt_g *g, void *sp)
{
    bool ok = (char *)sp > g->stack_lo + CANARY_WORDS * 8;
    if (RT__LIKELY(ok) && !g->guarded) {
        const uint64_t *w = (const uint64_t *)g->stack_lo;
        uint64_t any = 0;
        for (int i = 0; i < CANARY_WORDS; i++)
            any |= w[i];
        ok = any == 0;
    }
    if (RT__LIKELY(ok))
        return;
    rt__panic("stack overflow in goroutine %llu (stack %zu bytes, spawned "
              "at %s (%s:%d)); give it a larger stack with rt_go_opts",
              (unsigned long long)g->id, g->stack_size, g->fn_name, g->file,
              g->line);
}

static void *map_region(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_NOHUGEPAGE
    /* A huge page would make every parked goroutine cost 2 MiB. */
    madvise(p, len, MADV_NOHUGEPAGE);
#endif
    return p;
}

/* Initialise the G at g for the stack [stack_lo, stack_hi). */
static rt_g *g_place(rt_g *g, char *stack_lo, char *stack_hi, bool guarded)
{
    memset(g, 0, sizeof *g);
    g->guarded = guarded;
    g->stack_lo = stack_lo;
    g->stack_hi = stack_hi;
    g->stack_size = (size_t)(stack_hi - stack_lo);
    atomic_init(&g->state, RT_G_IDLE);
    g->allnext = rt__s.allgs;
    rt__s.allgs = g;
    return g;
}

/* ------------------------------------------------------------ guards */

/* Mappings the process may still make, read once: max_map_count minus
 * what is mapped already. */
static long mappings_left(void)
{
    long max = 65530, used = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &max) != 1)
            max = 65530;
        fclose(f);
    }
    f = fopen("/proc/self/maps", "r");
    if (f != NULL) {
        int c;
        while ((c = getc(f)) != EOF)
            used += c == '\n';
        fclose(f);
    }
    return max > used ? max - used : 0;
}

/* Does this kernel take MADV_GUARD_INSTALL? */
static bool madvise_guards_work(void)
{
    size_t pg = page_size();
    void *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return false;
    bool ok = madvise(p, pg, MADV_GUARD_INSTALL) == 0;
    munmap(p, 2 * pg);
    return ok;
}

/* Decide how stacks are guarded (once per process: the choice outlives
 * rt_run, like the mappings' budget it rations). */
static void choose_guards(void)
{
    static bool chosen;
    if (chosen)
        return;
    chosen = true;
    const char *env = getenv("FANFOLD_STACK_GUARD");
    bool madv = madvise_guards_work();
    st.mode = madv ? GUARD_MADVISE : GUARD_MPROTECT;
    if (env != NULL && strcmp(env, "none") == 0)
        st.mode = GUARD_NONE;
    else if (env != NULL && strcmp(env, "mprotect") == 0)
        st.mode = GUARD_MPROTECT;
    else if (env != NULL && strcmp(env, "madvise") == 0 && !madv)
        fprintf(stderr, "fanfold runtime: FANFOLD_STACK_GUARD=madvise: this "
                        "kernel has no MADV_GUARD_INSTALL; using mprotect\n");
    else if (env != NULL && *env != '\0' && strcmp(env, "madvise") != 0 &&
             strcmp(env, "auto") != 0)
        fprintf(stderr,
                "fanfold runtime: FANFOLD_STACK_GUARD=%s: want "
                "madvise, mprotect, none or auto; using %s\n",
                env, guard_names[st.mode]);
    st.vma_budget = mappings_left() / 2;
    /* An operator (or a test) may ration guards harder, to keep mappings
     * for something else. */
    env = getenv("FANFOLD_STACK_GUARD_MAPPINGS");
    if (env != NULL && *env != '\0') {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 0 && n < st.vma_budget)
            st.vma_budget = n;
    }
}

/*
 * Make [p, p + GUARD) a guard. big: the guard of a big stack, which may
 * use the whole mprotect budget; else a default slab's, which may use
 * half. Returns true when p is guarded. glock held.
 */
static bool guard(char *p, bool big, long vmas)
{
    switch (st.mode) {
    case GUARD_MADVISE:
        return madvise(p, GUARD, MADV_GUARD_INSTALL) == 0;
    case GUARD_MPROTECT: {
        long limit = big ? st.vma_budget : st.vma_budget / 2;
        if (st.vma_used + vmas > limit)
            return false;
        if (mprotect(p, GUARD, PROT_NONE) != 0)
            return false;
        st.vma_used += vmas;
        return true;
    }
    case GUARD_NONE:
        break;
    }
    return false;
}

/* ------------------------------------------------------------ allocation */

static rt_g *alloc_default(void)
{
    rt_g *g = rt__s.gfree;
    if (g != NULL) {
        rt__s.gfree = g->schednext;
        rt__s.ngfree--;
        g->schednext = NULL;
        return g;
    }
    if ((g = st.cleanfree) != NULL) {
        st.cleanfree = g->schednext;
        g->schednext = NULL;
        return g;
    }
    slab *sl = st.slabs;
    if (sl == NULL || sl->used == SLAB_SLOTS) {
        size_t slot = RT__DEFAULT_STACK + GUARD;
        sl = malloc(sizeof *sl);
        if (sl == NULL)
            return NULL;
        /* Stacks first, then the slab's Gs side by side: the scheduler
         * walks Gs in lists, and packed they share cache lines and TLB
         * entries; a G beside its own stack would cost a TLB miss per G. */
        size_t gbytes =
            (G_AREA * SLAB_SLOTS + page_size() - 1) & ~(page_size() - 1);
        sl->len = slot * SLAB_SLOTS + gbytes;
        sl->slot = slot;
        sl->used = 0;
        sl->base = map_region(sl->len);
        if (sl->base == NULL) {
            free(sl);
            return NULL;
        }
        /* All the slab's guards or none (mprotect: each guard adds two
         * mappings, the guard and the stack after it). */
        sl->guarded = st.mode == GUARD_MADVISE ||
                      (st.mode == GUARD_MPROTECT &&
                       st.vma_used + 2 * SLAB_SLOTS <= st.vma_budget / 2);
        for (int i = 0; i < SLAB_SLOTS && sl->guarded; i++)
            if (!guard(sl->base + slot * (size_t)i, false, 2))
                sl->guarded = false; /* those made stay; counted as none */
        sl->next = st.slabs;
        st.slabs = sl;
    }
    int i = sl->used++;
    char *lo = sl->base + sl->slot * (size_t)i;
    rt_g *ng = (rt_g *)(sl->base + sl->slot * SLAB_SLOTS + G_AREA * (size_t)i);
    if (sl->guarded)
        st.guarded++;
    else
        st.unguarded++;
    return g_place(ng, lo + GUARD, lo + sl->slot, sl->guarded);
}

static rt_g *alloc_big(size_t size)
{
    for (rt_g **pp = &st.bigfree; *pp != NULL; pp = &(*pp)->schednext) {
        rt_g *g = *pp;
        if (g->stack_size >= size && g->stack_size < size + size / 2) {
            *pp = g->schednext;
            g->schednext = NULL;
            return g;
        }
    }
    size_t pg = page_size();
    size_t len = (size + G_AREA + pg - 1) / pg * pg + GUARD;
    slab *m = malloc(sizeof *m);
    if (m == NULL)
        return NULL;
    char *base = map_region(len);
    if (base == NULL) {
        free(m);
        return NULL;
    }
    if (!guard(base, true, 2) && st.mode != GUARD_NONE) {
        /* No guard left for a stack that runs library code: refuse the
         * spawn rather than run it unguarded. */
        munmap(base, len);
        free(m);
        return NULL;
    }
    m->base = base;
    m->len = len;
    m->guarded = st.mode != GUARD_NONE;
    m->next = st.bigmaps;
    st.bigmaps = m;
    if (m->guarded)
        st.guarded++;
    else
        st.unguarded++;
    return g_place((rt_g *)(base + len - G_AREA), base + GUARD,
                   base + len - G_AREA, m->guarded);
}

/*
 * Caller owns the returned G (state RT_G_IDLE, stack ready for
 * rt__stack_prepare) and gives it back with rt__g_free(). NULL when the
 * kernel refuses memory.
 */
rt_g *rt__g_alloc(size_t stack_size)
{
    rt_g *g;
    rt__lock_acquire(&rt__s.glock);
    if (stack_size == 0 || stack_size <= RT__DEFAULT_STACK)
        g = alloc_default();
    else
        g = alloc_big(stack_size);
    rt__lock_release(&rt__s.glock);
    return g;
}

/* Give the pages of g's stack back to the kernel, keeping a page that
 * holds a G. They read as zero afterwards, canary included. */
static void release_pages(rt_g *g)
{
    size_t pg = page_size();
    char *lo = (char *)(((uintptr_t)g->stack_lo + pg - 1) & ~(pg - 1));
    char *end = (char *)((uintptr_t)g->stack_hi & ~(uintptr_t)(pg - 1));
    if ((char *)g > lo && (char *)g < g->stack_hi + G_AREA)
        end = (char *)((uintptr_t)g & ~(uintptr_t)(pg - 1)); /* big: G on top */
    if (end > lo)
        madvise(lo, (size_t)(end - lo), MADV_DONTNEED);
}

/*
 * The dead Gs head..tail (n of them, linked through schednext, default
 * stacks) go on the global free list, hot: their pages stay resident
 * until rt__stacks_scavenge() finds more than HOT_FREE of them.
 */
void rt__gfree_put(rt_g *head, rt_g *tail, int n)
{
    rt__lock_acquire(&rt__s.glock);
    tail->schednext = rt__s.gfree;
    rt__s.gfree = head;
    rt__s.ngfree += n;
    rt__lock_release(&rt__s.glock);
}

/* Take up to max free default Gs into *head (linked); returns how many. */
int rt__gfree_take(rt_g **head, int max)
{
    int n = 0;
    rt__lock_acquire(&rt__s.glock);
    rt_g *list = NULL;
    while (n < max) {
        rt_g *g = rt__s.gfree;
        if (g != NULL) {
            rt__s.gfree = g->schednext;
            rt__s.ngfree--;
        } else if ((g = st.cleanfree) != NULL) {
            st.cleanfree = g->schednext;
        } else {
            break;
        }
        g->schednext = list;
        list = g;
        n++;
    }
    rt__lock_release(&rt__s.glock);
    *head = list;
    return n;
}

/* A dead G with a big stack: its pages go back at once (they are few and
 * large), the G waits on bigfree for a spawn of a similar size. */
void rt__g_free_big(rt_g *g)
{
    release_pages(g);
    rt__lock_acquire(&rt__s.glock);
    g->schednext = st.bigfree;
    st.bigfree = g;
    rt__lock_release(&rt__s.glock);
}

/* More free stacks are resident than the hot cache needs. */
bool rt__stacks_scavenge_wanted(void)
{
    return atomic_load_explicit(&rt__s.ngfree, memory_order_relaxed) > HOT_FREE;
}

/*
 * Called by an M that has been idle for a while (sched.c): release the
 * pages of hot free stacks beyond HOT_FREE, so RSS falls after a burst of
 * goroutines. Never on the spawn/exit path, and not while the process is
 * busy: madvise costs a TLB shoot-down on every CPU. At most
 * SCAVENGE_BATCH stacks per call.
 */
void rt__stacks_scavenge(void)
{
    enum { SCAVENGE_BATCH = 4096 };
    rt__lock_acquire(&rt__s.glock);
    rt_g *list = NULL, *last = NULL;
    int n = 0;
    while (rt__s.ngfree > HOT_FREE && n < SCAVENGE_BATCH) {
        rt_g *g = rt__s.gfree;
        rt__s.gfree = g->schednext;
        rt__s.ngfree--;
        g->schednext = list;
        if (list == NULL)
            last = g;
        list = g;
        n++;
    }
    rt__lock_release(&rt__s.glock);
    if (list == NULL)
        return;
    for (rt_g *g = list; g != NULL; g = g->schednext)
        release_pages(g);
    rt__lock_acquire(&rt__s.glock);
    last->schednext = st.cleanfree;
    st.cleanfree = list;
    rt__lock_release(&rt__s.glock);
}

/* ------------------------------------------------ overflow: the handler */

/* Under ASan and TSan the sanitizer's own SIGSEGV handler reports stack
 * overflows (it knows the goroutine stacks from the fiber annotations). */
#if !defined(RT_ASAN) && !defined(RT_TSAN)
#define RT_SEGV_HANDLER 1

/* Async-signal-safe text: no stdio, no malloc. */
typedef struct sbuf {
    char b[512];
    size_t n;
} sbuf;

static void sb_str(sbuf *s, const char *p)
{
    while (p != NULL && *p != '\0' && s->n < sizeof s->b)
        s->b[s->n++] = *p++;
}

static void sb_num(sbuf *s, uint64_t v)
{
    char d[24];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0 && s->n < sizeof s->b)
        s->b[s->n++] = d[--n];
}

/*
 * SIGSEGV: a touch of the running goroutine's guard (or canary) is a
 * stack overflow: say which goroutine, then abort like rt__panic. Any
 * other fault is not ours: put the previous disposition back and return,
 * so the faulting instruction runs again and faults as it would have
 * without the runtime. Runs on the M's signal stack.
 */
static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    rt_m *m = rt__getm();
    rt_g *g =
        m != NULL ? atomic_load_explicit(&m->curg, memory_order_relaxed) : NULL;
    char *addr = si->si_addr;
    if (g == NULL || addr < g->stack_lo - GUARD ||
        addr >= g->stack_lo + CANARY_WORDS * 8) {
        sigaction(sig, &st.old_segv, NULL);
        return;
    }
    sbuf s = {.n = 0};
    sb_str(&s, "fanfold runtime panic: stack overflow in goroutine ");
    sb_num(&s, atomic_load_explicit(&g->id, memory_order_relaxed));
    sb_str(&s, " (stack ");
    sb_num(&s, g->stack_size);
    sb_str(&s, " bytes, spawned at ");
    sb_str(&s, atomic_load_explicit(&g->fn_name, memory_order_relaxed));
    sb_str(&s, " (");
    sb_str(&s, atomic_load_explicit(&g->file, memory_order_relaxed));
    sb_str(&s, ":");
    sb_num(&s, (uint64_t)atomic_load_explicit(&g->line, memory_order_relaxed));
    sb_str(&s, ")): it touched the guard below its stack; give it a larger "
               "stack with rt_go_opts\n");
    ssize_t w = write(2, s.b, s.n);
    (void)w;
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGABRT, &dfl, NULL);
    abort(); /* panic path */
}

#endif /* RT_SEGV_HANDLER */

/*
 * rt_run: choose the guards and install the handler, unless a sanitizer
 * reports overflows itself. A handler the program had keeps every fault
 * that is not a guard hit (on_segv hands those back), and comes back
 * when rt_run returns. Returns 0.
 */
int rt__stacks_init(void)
{
    choose_guards();
#ifdef RT_SEGV_HANDLER
    struct sigaction sa = {.sa_sigaction = on_segv,
                           .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    st.segv_installed = sigaction(SIGSEGV, &sa, &st.old_segv) == 0;
#endif
    return 0;
}

void rt__stacks_fini(void)
{
    if (st.segv_installed)
        sigaction(SIGSEGV, &st.old_segv, NULL);
    st.segv_installed = false;
}

/* A signal stack for the calling M's thread, for on_segv: the faulting
 * goroutine's own stack is the one that ran out. */
void rt__altstack_init(rt_m *m)
{
    m->altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m->altstack == MAP_FAILED) {
        m->altstack = NULL;
        return;
    }
    stack_t ss = {.ss_sp = m->altstack, .ss_size = ALTSTACK_SIZE};
    if (sigaltstack(&ss, &m->old_altstack) != 0) {
        munmap(m->altstack, ALTSTACK_SIZE);
        m->altstack = NULL;
    }
}

void rt__altstack_fini(rt_m *m)
{
    if (m->altstack == NULL)
        return;
    sigaltstack(&m->old_altstack, NULL);
    munmap(m->altstack, ALTSTACK_SIZE);
    m->altstack = NULL;
}

void rt_stack_stats_get(rt_stack_stats *out)
{
    rt__lock_acquire(&rt__s.glock);
    out->guard = guard_names[st.mode];
    out->guarded = st.guarded;
    out->unguarded = st.unguarded;
    out->guard_budget = st.mode == GUARD_MPROTECT ? st.vma_budget : 0;
    out->guard_used = st.vma_used;
    rt__lock_release(&rt__s.glock);
}

void rt__stack_prepare(rt_g *g)
{
    /* Nothing to write: a NULL sp tells sched.c to enter the goroutine
     * with rt__switch_start, so the stack is first touched by the CPU
     * that runs it. */
    g->regs.sp = NULL;
}

void *rt__stack_top(rt_g *g)
{
    return (void *)((uintptr_t)g->stack_hi & ~(uintptr_t)15);
}

void rt__stacks_release_all(void)
{
    while (st.slabs != NULL) {
        slab *s = st.slabs;
        st.slabs = s->next;
        munmap(s->base, s->len);
        free(s);
    }
    while (st.bigmaps != NULL) {
        slab *s = st.bigmaps;
        st.bigmaps = s->next;
        munmap(s->base, s->len);
        free(s);
    }
    st.bigfree = NULL;
    st.cleanfree = NULL;
    st.vma_used = 0;
    st.guarded = st.unguarded = 0;
    rt__s.gfree = NULL;
    rt__s.ngfree = 0;
    rt__s.allgs = NULL;
}
