/* SPDX-License-Identifier: MIT */
/*
 * Decay: the clock that ages free memory, and the background purger: one
 * thread per process, started on first need, that sleeps until the earliest
 * decay deadline of any pool and then runs the pools' decay pass (a callback
 * the pool layer registers, so this file calls no layer above it).
 *
 * Why a deadline per chunk (mimalloc's delayed purge, not jemalloc's
 * smoothed curve): a chunk's free pages are purged decay_ms after the chunk
 * first turned dirty, in as many madvise calls as it has dirty stretches;
 * the passes run on slow-path events that hold the arena lock anyway, so an
 * idle process needs the purger only for its last deadline.
 */
#include "internal.h"

#include <signal.h>
#include <time.h>

static uint64_t
coarse_now_ms(void)
{
    /* CLOCK_MONOTONIC_COARSE is a vDSO read of the last tick (4 ms at
     * HZ=250): fine grain enough for deadlines of tens of ms and more. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
nbuf_decay_now_(const struct nbuf_pool *p)
{
    return p->clock_ms ? p->clock_ms(p->clock_ctx) : coarse_now_ms();
}

uint64_t
nbuf_decay_deadline_(const struct nbuf_pool *p, uint64_t now)
{
    return p->decay_ms < 0 ? NBUF_NEVER : now + (uint64_t)p->decay_ms;
}

/* ---- the purger thread ---- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* on CLOCK_MONOTONIC */
    pthread_once_t once;
    bool cond_ready;
    bool running, failed;         /* lock */
    _Atomic uint64_t sleep_until; /* written under lock; NBUF_NEVER: until woken */
    uint64_t (*pass)(uint64_t now);
} purger = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .once = PTHREAD_ONCE_INIT,
    .sleep_until = NBUF_NEVER,
};

static void
cond_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&purger.cond, &attr);
    pthread_condattr_destroy(&attr);
    purger.cond_ready = true;
}

static void *
purger_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&purger.lock);
    for (;;) {
        uint64_t now = coarse_now_ms();
        uint64_t until = atomic_load_explicit(&purger.sleep_until, memory_order_relaxed);
        if (now < until) {
            if (until == NBUF_NEVER) {
                pthread_cond_wait(&purger.cond, &purger.lock);
            } else {
                /* The coarse clock lags CLOCK_MONOTONIC by under a tick. */
                struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000};
                pthread_cond_timedwait(&purger.cond, &purger.lock, &ts);
            }
            continue;
        }
        /* Deadlines armed during the pass lower this again and signal. */
        atomic_store_explicit(&purger.sleep_until, NBUF_NEVER, memory_order_relaxed);
        pthread_mutex_unlock(&purger.lock);
        uint64_t next = purger.pass(now);
        pthread_mutex_lock(&purger.lock);
        if (next < atomic_load_explicit(&purger.sleep_until, memory_order_relaxed))
            atomic_store_explicit(&purger.sleep_until, next, memory_order_relaxed);
    }
    return NULL;
}

/* Start the thread (purger.lock held) with every signal blocked, so that
 * the application's handlers never run on it. */
static void
purger_start(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_t t;
    int err = pthread_attr_init(&attr);
    if (!err) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        err = pthread_create(&t, &attr, purger_main, NULL);
        pthread_attr_destroy(&attr);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        purger.failed = true; /* decay still runs on slow-path events */
        nbuf_report_("nbuf: no background purger (%s); idle memory decays on the next "
                     "allocations only\n",
                     strerror(err));
        return;
    }
    purger.running = true;
}

void
nbuf_decay_set_pass_(uint64_t (*pass)(uint64_t now))
{
    purger.pass = pass;
}

void
nbuf_decay_wake_(const struct nbuf_pool *p, uint64_t at)
{
    /* Pools on their own clock (tests) are driven by hand. */
    if (at == NBUF_NEVER || p->clock_ms ||
        !atomic_load_explicit(&p->background, memory_order_relaxed))
        return;
    if (at >= atomic_load_explicit(&purger.sleep_until, memory_order_relaxed))
        return; /* it wakes up soon enough */
    pthread_once(&purger.once, cond_init);
    pthread_mutex_lock(&purger.lock);
    if (at < atomic_load_explicit(&purger.sleep_until, memory_order_relaxed)) {
        atomic_store_explicit(&purger.sleep_until, at, memory_order_relaxed);
        if (purger.running)
            pthread_cond_signal(&purger.cond);
        else if (!purger.failed && purger.pass)
            purger_start();
    }
    pthread_mutex_unlock(&purger.lock);
}

/* fork: the parent keeps its purger; the child has none (threads do not
 * survive fork) and starts one when it next needs it. */
void
nbuf_decay_fork_prepare_(void)
{
    pthread_mutex_lock(&purger.lock);
}

void
nbuf_decay_fork_parent_(void)
{
    pthread_mutex_unlock(&purger.lock);
}

void
nbuf_decay_fork_child_(void)
{
    pthread_mutex_unlock(&purger.lock);
    purger.running = false;
    atomic_store_explicit(&purger.sleep_until, NBUF_NEVER, memory_order_relaxed);
    if (purger.cond_ready) /* the parent's waiter is gone */
        cond_init();
}

bool
nbuf_decay_purger_running_(void)
{
    pthread_mutex_lock(&purger.lock);
    bool r = purger.running;
    pthread_mutex_unlock(&purger.lock);
    return r;
}
