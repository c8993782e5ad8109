/*
 * stack.c - goroutine stacks, and the Gs that own them.
 *
 * Default stacks (64 KiB) are carved from slabs: one mmap of 256 stack
 * slots followed by the 256 Gs of those slots, packed. MAP_NORESERVE,
 * transparent huge pages off, committed lazily by the kernel page by page:
 * a parked goroutine with a shallow stack costs one resident stack page
 * plus its share of the G array. That is what lets a million goroutines
 * park in a few GiB. A slot is
 *
 *     [ 4 KiB gap | canary | stack ... grows down ... ]
 *     ^slot        ^stack_lo                 stack_hi^
 *
 * The canary is 64 bytes that must stay zero (see rt__stack_check()), so
 * checking it costs no RSS either.
 *
 * Why no guard page per stack: each mprotect'ed guard splits the mapping,
 * and vm.max_map_count (65530 here) would cap us at ~32,000 goroutines.
 * Instead overflow is detected in software: a canary at stack_lo, checked
 * together with the saved stack pointer every time the goroutine switches
 * out (park, yield, exit), panics with the goroutine's spawn site. The gap
 * is never used, so a frame that overruns by less than 4 KiB lands in it
 * rather than in the neighbouring goroutine's stack.
 *
 * Stacks larger than the default get a mapping of their own with a
 * PROT_NONE guard page below the stack: goroutines that run deep C code
 * (OpenSSL, libcurl) get hardware overflow detection too; there are few of
 * them.
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
 * Locking: rt__s.glock protects the slab list, allgs and the global free
 * lists.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLAB_SLOTS 256
#define GAP 4096
#define CANARY_WORDS 8
#define HOT_FREE 4096 /* free default stacks kept resident */

/* A G rounded up so that stack_hi stays 64-byte aligned. */
#define G_AREA ((sizeof(rt_g) + 63) & ~(size_t)63)

typedef struct slab {
    struct slab *next;
    char *base;
    size_t len;
    int used; /* slots handed out */
    size_t slot;
} slab;

/* Mappings owned by the allocator; protected by rt__s.glock. Global
 * because there is one scheduler per process (see rt__s). */
static struct {
    slab *slabs;     /* default-stack slabs, newest first */
    slab *bigmaps;   /* one entry per big stack mapping */
    rt_g *bigfree;   /* free Gs with big stacks, pages released */
    rt_g *cleanfree; /* free default Gs whose stack pages were released */
    size_t pagesz;
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
 * zero. Zero because a fresh anonymous page reads as zero without being
 * committed: checking the canary of a shallow stack maps the kernel's
 * shared zero page and costs no RSS, while a magic pattern would commit a
 * second page per goroutine. An overflowing frame writes return addresses
 * and saved registers there, which are not zero. Fresh and MADV_DONTNEED'ed
 * pages are zero, so nothing needs writing.
 */
void rt__stack_check(rt_g *g, void *sp)
{
    const uint64_t *w = (const uint64_t *)g->stack_lo;
    uint64_t any = 0;
    for (int i = 0; i < CANARY_WORDS; i++)
        any |= w[i];
    if (RT__LIKELY((char *)sp > g->stack_lo + CANARY_WORDS * 8 && any == 0))
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
static rt_g *g_place(rt_g *g, char *stack_lo, char *stack_hi)
{
    memset(g, 0, sizeof *g);
    g->stack_lo = stack_lo;
    g->stack_hi = stack_hi;
    g->stack_size = (size_t)(stack_hi - stack_lo);
    atomic_init(&g->state, RT_G_IDLE);
    g->allnext = rt__s.allgs;
    rt__s.allgs = g;
    return g;
}

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
        size_t slot = RT__DEFAULT_STACK + GAP;
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
        sl->next = st.slabs;
        st.slabs = sl;
    }
    int i = sl->used++;
    char *lo = sl->base + sl->slot * (size_t)i;
    rt_g *ng = (rt_g *)(sl->base + sl->slot * SLAB_SLOTS + G_AREA * (size_t)i);
    return g_place(ng, lo + GAP, lo + sl->slot);
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
    size_t len = (size + G_AREA + pg - 1) / pg * pg + pg;
    slab *m = malloc(sizeof *m);
    if (m == NULL)
        return NULL;
    char *base = map_region(len);
    if (base == NULL) {
        free(m);
        return NULL;
    }
    if (mprotect(base, pg, PROT_NONE) != 0) {
        munmap(base, len);
        free(m);
        return NULL;
    }
    m->base = base;
    m->len = len;
    m->next = st.bigmaps;
    st.bigmaps = m;
    return g_place((rt_g *)(base + len - G_AREA), base + pg,
                   base + len - G_AREA);
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
    rt__s.gfree = NULL;
    rt__s.ngfree = 0;
    rt__s.allgs = NULL;
}
