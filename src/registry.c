/* SPDX-License-Identifier: MIT */
/*
 * The registry of live pools, for the two things that must reach every
 * pool from outside any call: fork (the atfork handlers take every lock so
 * the child starts with all of them free) and the background purger (its
 * pass visits every pool, and the pass over one pool is here too). Calls
 * the arena, huge and decay layers.
 */
#include "internal.h"

/* ---- fork safety ---- */

/*
 * Every live pool is in this registry, so that fork() in one thread while
 * another holds a pool's lock, one of its arena locks or its leak registry's
 * lock leaves the child with all of them free: the prepare handler takes
 * them all (registry, then per pool: arenas, pool lock, leak registry) and
 * the parent and child handlers release them in reverse order. The library
 * never holds two of these locks at once, except the purger's lock, taken
 * (briefly, to wake it) under an arena or huge-cache lock and so taken last
 * here; the registry lock is taken only here, around (un)registering and
 * by the purger's pass, which takes arena locks under it as fork does.
 */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static int fork_once_err;
static struct nbuf_pool **fork_pools; /* fork_lock */
static size_t fork_npools, fork_cap;  /* fork_lock */

static void
fork_prepare(void)
{
    pthread_mutex_lock(&fork_lock);
    for (size_t i = 0; i < fork_npools; i++) {
        struct nbuf_pool *p = fork_pools[i];
        for (unsigned k = 0; k < p->narenas; k++)
            nbuf_arena_lock_(&p->arenas[k]);
        pthread_mutex_lock(&p->lock);
        if (p->leaks)
            pthread_mutex_lock(&p->leaks->lock);
        pthread_mutex_lock(&p->huge_cache.lock);
    }
    nbuf_symbolize_fork_prepare_(); /* taken with a pool's leak lock held */
    nbuf_decay_fork_prepare_();
    nbuf_report_fork_prepare_();
}

/* Parent and child alike: the child's only thread is the one that forked,
 * which holds every lock taken above. */
static void
release_all(void)
{
    nbuf_symbolize_fork_release_();
    for (size_t i = fork_npools; i-- > 0;) {
        struct nbuf_pool *p = fork_pools[i];
        pthread_mutex_unlock(&p->huge_cache.lock);
        if (p->leaks)
            pthread_mutex_unlock(&p->leaks->lock);
        pthread_mutex_unlock(&p->lock);
        for (unsigned k = p->narenas; k-- > 0;)
            nbuf_arena_unlock_(&p->arenas[k]);
    }
    pthread_mutex_unlock(&fork_lock);
}

static void
fork_parent(void)
{
    nbuf_report_fork_parent_();
    nbuf_decay_fork_parent_();
    release_all();
}

static void
fork_child(void)
{
    nbuf_report_fork_child_();
    nbuf_decay_fork_child_();
    release_all();
}

/* The decay pass over every arena and the huge cache; the next deadline. */
uint64_t
nbuf_pool_decay_(struct nbuf_pool *p, uint64_t now)
{
    uint64_t next = nbuf_huge_decay_(p, now);
    for (unsigned i = 0; i < p->narenas; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        nbuf_arena_lock_(a);
        uint64_t at = nbuf_arena_decay_locked_(a, now);
        nbuf_arena_unlock_(a);
        next = at < next ? at : next;
    }
    return next;
}

/* The purger's pass: every pool on the real clock that purges in the
 * background. The registry lock keeps each pool alive meanwhile. */
static uint64_t
decay_pass(uint64_t now)
{
    uint64_t next = NBUF_NEVER;
    pthread_mutex_lock(&fork_lock);
    for (size_t i = 0; i < fork_npools; i++) {
        struct nbuf_pool *p = fork_pools[i];
        if (p->clock_ms || !atomic_load_explicit(&p->background, memory_order_relaxed))
            continue;
        uint64_t at = nbuf_pool_decay_(p, now);
        next = at < next ? at : next;
    }
    pthread_mutex_unlock(&fork_lock);
    return next;
}

static void
fork_install(void)
{
    fork_once_err = pthread_atfork(fork_prepare, fork_parent, fork_child);
    nbuf_decay_set_pass_(decay_pass);
}

/* 0, or -ENOMEM (the pool must not be used then: fork would not see it). */
int
nbuf_registry_add_(struct nbuf_pool *p)
{
    pthread_once(&fork_once, fork_install);
    if (fork_once_err)
        return -ENOMEM;
    int err = 0;
    pthread_mutex_lock(&fork_lock);
    if (fork_npools == fork_cap) {
        size_t cap = fork_cap ? 2 * fork_cap : 8;
        struct nbuf_pool **np = realloc(fork_pools, cap * sizeof(*np));
        if (np) {
            fork_pools = np;
            fork_cap = cap;
        } else {
            err = -ENOMEM;
        }
    }
    if (!err)
        fork_pools[fork_npools++] = p;
    pthread_mutex_unlock(&fork_lock);
    return err;
}

void
nbuf_registry_remove_(struct nbuf_pool *p)
{
    pthread_mutex_lock(&fork_lock);
    for (size_t i = 0; i < fork_npools; i++) {
        if (fork_pools[i] == p) {
            fork_pools[i] = fork_pools[--fork_npools];
            break;
        }
    }
    pthread_mutex_unlock(&fork_lock);
}
