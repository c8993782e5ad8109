/*
 * debug.c - introspection: goroutine counts and dumps.
 *
 * Counts come from per-P counters (spawned/exited, written by the owning
 * P only) so rt_goroutines() costs one pass over the Ps and nothing on the
 * spawn path. Dumps walk rt__s.allgs under glock; the fields they read of
 * a running goroutine are relaxed atomics, so a dump is a consistent-enough
 * snapshot (a goroutine may change state while it is being printed), as
 * Go's is without stopping the world.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[RT_G_NSTATES] = {
    [RT_G_IDLE] = "idle",       [RT_G_RUNNABLE] = "runnable",
    [RT_G_RUNNING] = "running", [RT_G_WAITING] = "waiting",
    [RT_G_DEAD] = "dead",
};

const char *rt_gstate_name(rt_gstate s)
{
    if ((int)s < 0 || s >= RT_G_NSTATES || state_names[s] == NULL)
        return "unknown";
    return state_names[s];
}

/* Private parking states read as "waiting". */
static int public_state(int s)
{
    return s >= RT_G_NSTATES ? RT_G_WAITING : s;
}

uint64_t rt_goroutines(void)
{
    uint64_t spawned = atomic_load(&rt__s.nspawned_x);
    uint64_t exited = atomic_load(&rt__s.nexited_x);
    for (int i = 0; i < rt__s.nprocs; i++) {
        spawned +=
            atomic_load_explicit(&rt__s.ps[i].nspawned, memory_order_relaxed);
        exited +=
            atomic_load_explicit(&rt__s.ps[i].nexited, memory_order_relaxed);
    }
    return spawned > exited ? spawned - exited : 0;
}

void rt_gstats_get(rt_gstats *out)
{
    memset(out, 0, sizeof *out);
    rt__lock_acquire(&rt__s.glock);
    for (rt_g *g = rt__s.allgs; g != NULL; g = g->allnext) {
        int s = public_state(atomic_load(&g->state));
        if (s == RT_G_IDLE || s == RT_G_DEAD)
            continue;
        out->by_state[s]++;
        out->live++;
    }
    rt__lock_release(&rt__s.glock);
    out->spawned = atomic_load(&rt__s.nspawned_x);
    for (int i = 0; i < rt__s.nprocs; i++)
        out->spawned +=
            atomic_load_explicit(&rt__s.ps[i].nspawned, memory_order_relaxed);
}

/* A growable text buffer with snprintf semantics over a fixed one. */
typedef struct out {
    char *buf;
    size_t size, len;
    FILE *f;
} out;

static void outf(out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void outf(out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (o->f != NULL) {
        int n = vfprintf(o->f, fmt, ap);
        if (n > 0)
            o->len += (size_t)n;
    } else {
        size_t room = o->len < o->size ? o->size - o->len : 0;
        int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
        if (n > 0)
            o->len += (size_t)n;
    }
    va_end(ap);
}

static void dump(out *o)
{
    rt__lock_acquire(&rt__s.glock);
    uint64_t live = 0;
    for (rt_g *g = rt__s.allgs; g != NULL; g = g->allnext) {
        int s = public_state(atomic_load(&g->state));
        if (s != RT_G_IDLE && s != RT_G_DEAD)
            live++;
    }
    outf(o, "goroutines: %llu\n", (unsigned long long)live);
    for (rt_g *g = rt__s.allgs; g != NULL; g = g->allnext) {
        int s = public_state(atomic_load(&g->state));
        if (s == RT_G_IDLE || s == RT_G_DEAD)
            continue;
        uint64_t id = atomic_load_explicit(&g->id, memory_order_relaxed);
        const char *why =
            atomic_load_explicit(&g->waitreason, memory_order_relaxed);
        outf(o, "\ngoroutine %llu [%s", (unsigned long long)id,
             rt_gstate_name((rt_gstate)s));
        int64_t since =
            atomic_load_explicit(&g->long_run_since, memory_order_relaxed);
        if (s == RT_G_WAITING && why != NULL)
            outf(o, ", %s", why);
        else if (s == RT_G_RUNNING && since != 0)
            outf(o, ", %lld ms without yielding",
                 (long long)((rt_now() - since) / RT_MSEC));
        outf(o, "]:\n\tspawned at %s (%s:%d)\n",
             atomic_load_explicit(&g->fn_name, memory_order_relaxed),
             atomic_load_explicit(&g->file, memory_order_relaxed),
             atomic_load_explicit(&g->line, memory_order_relaxed));
    }
    rt__lock_release(&rt__s.glock);
}

size_t rt_dump_buf(char *buf, size_t size)
{
    out o = {.buf = buf, .size = size};
    if (size > 0)
        buf[0] = '\0';
    dump(&o);
    return o.len;
}

void rt_dump(FILE *f)
{
    out o = {.f = f};
    dump(&o);
    fflush(f);
}
