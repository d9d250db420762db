/* SPDX-License-Identifier: MIT */
/* Stress in the style of mimalloc's test-stress: threads swap buffers through
 * a shared atomic transfer array, every buffer carries a cookie pattern that
 * is verified before release, and threads are recreated over rounds (E36). */
#include "common.h"

#include <pthread.h>
#include <unistd.h>

enum { TRANSFER = 512, LOCAL = 64, THREADS = 4 };

struct stress {
    struct nbuf_pool *p;
    _Atomic(struct nbuf *) transfer[TRANSFER];
    unsigned iters;
    size_t huge; /* largest size, rarely */
    _Atomic unsigned long allocs, frees, swaps;
    _Atomic bool stop_trimmer;
};

/* The cookie: derived from the buffer's identity and length, so a buffer
 * handed to two owners, or memory reused under a live buffer, shows. */
static uint64_t
cookie(const struct nbuf *b)
{
    return (uint64_t)(uintptr_t)nbuf_data(b) * 0x9e3779b97f4a7c15ull ^ nbuf_readable(b);
}

static size_t
pick_size(uint64_t *s, size_t huge)
{
    /* Mostly small, a tail of page runs and rarely a huge buffer: the bytes
     * written stay small enough for ASan. */
    uint64_t r = t_rand(s) % 10000;
    if (r < 7500)
        return 1 + t_rand(s) % 1024;
    if (r < 9700)
        return 1 + t_rand(s) % 32768;
    if (r < 9995)
        return 1 + t_rand(s) % (256u << 10);
    return huge ? 1 + t_rand(s) % huge : 1;
}

static struct nbuf *
make(struct stress *st, uint64_t *s)
{
    size_t size = pick_size(s, st->huge);
    struct nbuf *b = nbuf_alloc(st->p, size);
    T_CHECK(b != NULL);
    if (!b)
        return NULL;
    T_CHECK(nbuf_capacity(b) >= size);
    /* Fill what was asked for (the cookie covers every requested byte). */
    uint8_t *w = nbuf_reserve(b, size);
    T_CHECK(w != NULL);
    T_CHECK(nbuf_commit(b, size) == 0);
    t_pattern_fill(w, size, cookie(b));
    atomic_fetch_add_explicit(&st->allocs, 1, memory_order_relaxed);
    return b;
}

static void
check_and_release(struct stress *st, struct nbuf *b)
{
    if (!b)
        return;
    T_CHECK(nbuf_refcnt(b) == 1);
    T_CHECK(t_pattern_bad(nbuf_data(b), nbuf_readable(b), cookie(b)) == SIZE_MAX);
    T_CHECK(nbuf_release(b) == 1);
    atomic_fetch_add_explicit(&st->frees, 1, memory_order_relaxed);
}

struct worker {
    struct stress *st;
    uint64_t seed;
};

static void *
worker(void *arg)
{
    struct worker *w = arg;
    struct stress *st = w->st;
    uint64_t s = w->seed;
    struct nbuf *local[LOCAL] = {0};
    for (unsigned i = 0; i < st->iters; i++) {
        unsigned k = (unsigned)(t_rand(&s) % LOCAL);
        uint64_t op = t_rand(&s) % 100;
        if (op < 40) {
            /* Allocate into a local slot (releasing what was there). */
            check_and_release(st, local[k]);
            local[k] = make(st, &s);
        } else if (op < 60) {
            check_and_release(st, local[k]);
            local[k] = NULL;
        } else {
            /* Swap with the transfer array: the other side may be a buffer
             * of any thread, including ones that have exited. */
            unsigned t = (unsigned)(t_rand(&s) % TRANSFER);
            struct nbuf *mine = local[k] ? local[k] : make(st, &s);
            struct nbuf *theirs = atomic_exchange(&st->transfer[t], mine);
            atomic_fetch_add_explicit(&st->swaps, 1, memory_order_relaxed);
            if (theirs)
                T_CHECK(t_pattern_bad(nbuf_data(theirs), nbuf_readable(theirs), cookie(theirs)) ==
                        SIZE_MAX);
            local[k] = theirs;
        }
    }
    /* Half of what is left goes to the transfer array for later rounds. */
    for (unsigned k = 0; k < LOCAL; k++) {
        if (k % 2 && local[k]) {
            struct nbuf *old = atomic_exchange(&st->transfer[t_rand(&s) % TRANSFER], local[k]);
            check_and_release(st, old);
        } else {
            check_and_release(st, local[k]);
        }
    }
    return NULL;
}

static void *
trimmer(void *arg)
{
    struct stress *st = arg;
    while (!atomic_load(&st->stop_trimmer)) {
        nbuf_pool_trim(st->p);
        struct nbuf_pool_stats s;
        nbuf_pool_stats(st->p, &s);
        T_CHECK(nbuf_pool_check_(st->p));
        usleep(2000);
    }
    return NULL;
}

static void
run_stress(const struct nbuf_pool_config *cfg, unsigned rounds, unsigned iters, bool trim)
{
    struct stress *st = calloc(1, sizeof(*st));
    st->p = t_pool_new(cfg);
    st->iters = iters;
    st->huge = st->p->cfg.chunk_size * 2;
    pthread_t trim_thread;
    if (trim)
        pthread_create(&trim_thread, NULL, trimmer, st);
    for (unsigned r = 0; r < rounds; r++) {
        pthread_t th[THREADS];
        struct worker w[THREADS];
        for (unsigned i = 0; i < THREADS; i++) {
            w[i] = (struct worker){st, (r * THREADS + i + 1) * 0x2545f4914f6cdd1dull};
            cr_assert_eq(pthread_create(&th[i], NULL, worker, &w[i]), 0);
        }
        for (unsigned i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        t_thread_assert_ok();
        t_pool_check(st->p);
        /* Exited threads' caches are gone; the transfer array holds the
         * only live buffers. */
        struct nbuf_pool_stats s = t_stats(st->p);
        unsigned held = 0;
        for (unsigned t = 0; t < TRANSFER; t++)
            held += atomic_load(&st->transfer[t]) != NULL;
        cr_assert_eq(s.live_buffers, held, "round %u: %llu live, %u in transfer", r,
                     (unsigned long long)s.live_buffers, held);
        if (!trim)
            cr_assert_eq(s.threads, 0, "round %u: %llu caches of exited threads", r,
                         (unsigned long long)s.threads);
    }
    if (trim) {
        atomic_store(&st->stop_trimmer, true);
        pthread_join(trim_thread, NULL);
        t_thread_assert_ok();
    }
    for (unsigned t = 0; t < TRANSFER; t++)
        check_and_release(st, atomic_exchange(&st->transfer[t], NULL));
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(st->p);
    cr_assert_eq(s.allocations, atomic_load(&st->allocs));
    cr_assert_eq(s.releases, atomic_load(&st->frees));
    cr_assert_eq(s.live_buffers, 0);
    cr_assert_gt(atomic_load(&st->swaps), 0);
    if (!t_bypass())
        cr_assert_gt(s.remote_releases, 0, "no buffer crossed threads");
    cr_assert_eq(nbuf_pool_trim(st->p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(st->p).chunks, 0, "chunks left after everything was released");
    t_pool_done(st->p);
    free(st);
}

static struct nbuf_pool_config
cfg_of(size_t page, size_t chunk, unsigned arenas, unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = arenas;
    cfg.flags = flags;
    return cfg;
}

Test(stress, transfer_default, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 0, 0);
    run_stress(&cfg, 4, 15000, false);
}

Test(stress, transfer_one_arena, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 1, 0);
    run_stress(&cfg, 3, 12000, false);
}

Test(stress, transfer_no_cache, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 2, NBUF_POOL_NO_CACHE);
    run_stress(&cfg, 3, 10000, false);
}

Test(stress, transfer_tiny_chunks, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(4096, 64u << 10, 2, 0);
    run_stress(&cfg, 3, 12000, false);
}

Test(stress, transfer_small_caches, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 2, 0);
    cfg.cache_small_count = 2;
    cfg.cache_normal_count = 1;
    run_stress(&cfg, 3, 12000, false);
}

Test(stress, transfer_with_concurrent_trim, .timeout = 120)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 2, 0);
    run_stress(&cfg, 3, 12000, true);
}

/* Many short-lived threads, each allocating a little and leaving buffers to
 * the next generation (thread recreation, exit with buffers in flight). */
struct gen {
    struct stress *st;
    unsigned id;
};

static void *
short_lived(void *arg)
{
    struct gen *g = arg;
    uint64_t s = g->id * 0x9e3779b97f4a7c15ull + 1;
    for (unsigned i = 0; i < 200; i++) {
        struct nbuf *b = make(g->st, &s);
        struct nbuf *old = atomic_exchange(&g->st->transfer[t_rand(&s) % 64], b);
        check_and_release(g->st, old);
    }
    return NULL;
}

Test(stress, thread_generations, .timeout = 120)
{
    struct stress *st = calloc(1, sizeof(*st));
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 2, 0);
    st->p = t_pool_new(&cfg);
    st->huge = 0;
    for (unsigned gen = 0; gen < 40; gen++) {
        pthread_t th[THREADS];
        struct gen g[THREADS];
        for (unsigned i = 0; i < THREADS; i++) {
            g[i] = (struct gen){st, gen * THREADS + i};
            pthread_create(&th[i], NULL, short_lived, &g[i]);
        }
        for (unsigned i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
    }
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(st->p);
    cr_assert_eq(s.threads, 0);
    for (unsigned t = 0; t < TRANSFER; t++)
        check_and_release(st, atomic_exchange(&st->transfer[t], NULL));
    t_thread_assert_ok();
    /* Only this thread (it released the leftovers) is still bound. */
    unsigned bound = 0;
    for (unsigned i = 0; i < st->p->narenas; i++)
        bound += atomic_load(&st->p->arenas[i].nthreads);
    cr_assert_eq(bound, t_stats(st->p).threads);
    cr_assert_leq(bound, 1);
    cr_assert_eq(nbuf_pool_trim(st->p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(st->p).chunks, 0);
    t_pool_done(st->p);
    free(st);
}
