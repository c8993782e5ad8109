/*
 * blocking.c - rt_blocking(): run a blocking C call off the scheduler.
 *
 * Go hands the P of a goroutine entering a syscall to another M. fanfold
 * keeps one M per P and sends the call to a small pool of worker threads
 * instead: the goroutine parks (wait reason "blocking call"), a worker runs the
 * function on its own full-size thread stack and readies the goroutine
 * with the result. The P goes on running other goroutines meanwhile.
 * Costs a thread hand-off per call, which is noise next to a blocking
 * syscall, and deep C code gets a real stack.
 *
 * Workers are created on demand up to MAX_WORKERS and live until rt_run()
 * returns; beyond that, calls queue (FIFO). The queue and counters are
 * under pool.mu (a pthread mutex: workers are plain threads).
 * rt_run()'s teardown waits for calls in flight to finish.
 */
#include "rt_internal.h"
#include "sched_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_WORKERS 64

typedef struct job {
    struct job *next;
    intptr_t (*fn)(void *arg);
    void *arg;
    rt_g *g;
} job;

/* The pool of the process's one scheduler (see rt__s): global for the
 * same reason. Static initialisers make it usable without set-up. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* work queued, or shutting down */
    pthread_cond_t done; /* a worker exited */
    job *head, *tail;
    int workers, idle;
    bool stop;
    pthread_t threads[MAX_WORKERS];
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .cv = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.head == NULL && !pool.stop) {
            pool.idle++;
            pthread_cond_wait(&pool.cv, &pool.mu);
            pool.idle--;
        }
        if (pool.head == NULL)
            break; /* stopping and drained */
        job *j = pool.head;
        pool.head = j->next;
        if (pool.head == NULL)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.mu);
        j->g->blocking_ret = j->fn(j->arg);
        rt__ready(j->g); /* j lives on g's stack: don't touch it after */
        pthread_mutex_lock(&pool.mu);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* g0, after the caller switched out: queue the job. */
static bool submit(rt_g *g, void *arg)
{
    (void)g;
    job *j = arg;
    pthread_mutex_lock(&pool.mu);
    j->next = NULL;
    if (pool.tail != NULL)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    if (pool.idle > 0) {
        pthread_cond_signal(&pool.cv);
    } else if (pool.workers < MAX_WORKERS &&
               pthread_create(&pool.threads[pool.workers], NULL, worker,
                              NULL) == 0) {
        pool.workers++;
    }
    /* else: a busy worker will take it when it finishes its call */
    bool none = pool.workers == 0;
    pthread_mutex_unlock(&pool.mu);
    if (none)
        rt__panic("rt_blocking: cannot start a worker thread");
    return true;
}

intptr_t rt_blocking(intptr_t (*fn)(void *arg), void *arg)
{
    rt_g *g = rt__curg();
    if (g == NULL)
        rt__panic("rt_blocking called outside a goroutine");
    job j = {.fn = fn, .arg = arg, .g = g};
    rt__park(submit, &j, "blocking call");
    return g->blocking_ret;
}

void rt__blocking_shutdown(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.stop = true;
    pthread_cond_broadcast(&pool.cv);
    int n = pool.workers;
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < n; i++)
        pthread_join(pool.threads[i], NULL);
    pthread_mutex_lock(&pool.mu);
    pool.workers = 0;
    pool.idle = 0;
    pool.stop = false;
    pool.head = pool.tail = NULL;
    pthread_mutex_unlock(&pool.mu);
}
