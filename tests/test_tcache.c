/* SPDX-License-Identifier: MIT */
/* Thread caches: batch fill, LIFO hits, bounded bins flushing to stashes, GC,
 * trim epochs, flush at thread exit, and releases from foreign, exited,
 * never-allocating and dying threads (CHECKLIST E33-E35). */
#include "common.h"

#include <pthread.h>

static struct nbuf_pool *
pool_with(unsigned arenas, unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = arenas;
    cfg.flags = flags;
    return t_pool_new(&cfg);
}

/* Pooled and cached (skip if the environment turned either off). */
static struct nbuf_pool *
cached_pool(unsigned arenas)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool *p = pool_with(arenas, 0);
    if (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)) {
        t_pool_done(p);
        cr_skip("thread caches disabled by the environment");
    }
    return p;
}

static struct nbuf_tcache *
my_tcache(struct nbuf_pool *p)
{
    cr_assert_eq(nbuf_tls_.pool_id, p->id);
    cr_assert(nbuf_tcache_check_(nbuf_tls_.tc));
    return nbuf_tls_.tc;
}

Test(tcache, batch_fill_then_lifo_hits)
{
    struct nbuf_pool *p = cached_pool(1);
    unsigned szind = nbuf_sz_index_(100);
    struct nbuf *a = nbuf_alloc(p, 100);
    cr_assert_not_null(a);
    struct nbuf_tcache *tc = my_tcache(p);
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    cr_assert_eq(bin->cap, p->cfg.cache_small_count);
    cr_assert_eq(nbuf_tcache_bin_count_(bin), nbuf_tcache_bin_batch_(bin) - 1,
                 "one miss should fill a batch");
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.cache_misses, 1);
    cr_assert_eq(s.cache_hits, 0);
    cr_assert_eq(nbuf_release(a), 1);
    cr_assert_eq(nbuf_tcache_bin_count_(bin), nbuf_tcache_bin_batch_(bin));
    struct nbuf *b = nbuf_alloc(p, 112);
    cr_assert_eq(b, a, "a release then an alloc of the same class should hit the same pair");
    s = t_stats(p);
    cr_assert_eq(s.cache_hits, 1);
    cr_assert_eq(s.cache_misses, 1);
    cr_assert_eq(s.cached_bytes, (uint64_t)(nbuf_tcache_bin_batch_(bin) - 1) * 112);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert(nbuf_tcache_check_(tc));
    t_pool_done(p);
}

/* A full bin flushes its oldest batch to the home arena's stash. */
Test(tcache, overflow_flushes_to_stash)
{
    struct nbuf_pool *p = cached_pool(1);
    unsigned szind = nbuf_sz_index_(4096);
    unsigned cap = p->cfg.cache_small_count, n = cap + 8;
    struct nbuf **v = calloc(n, sizeof(*v));
    for (unsigned i = 0; i < n; i++)
        cr_assert_not_null(v[i] = nbuf_alloc(p, 4096));
    struct nbuf_tcache *tc = my_tcache(p);
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    struct nbuf_stash *st = &p->arenas[0].stash[szind];
    for (unsigned i = 0; i < n; i++) {
        cr_assert_eq(nbuf_release(v[i]), 1);
        cr_assert_leq(nbuf_tcache_bin_count_(bin), bin->cap);
    }
    cr_assert_gt(st->count, 0, "an overflowing bin did not flush to the stash");
    cr_assert(nbuf_tcache_check_(tc));
    t_pool_check(p);
    /* A fill takes the stashed pairs back before carving new ones. */
    unsigned stashed = st->count;
    for (unsigned i = 0; i < n; i++)
        cr_assert_not_null(v[i] = nbuf_alloc(p, 4096));
    cr_assert_lt(st->count, stashed);
    for (unsigned i = 0; i < n; i++)
        nbuf_release(v[i]);
    free(v);
    t_pool_done(p);
}

/* What a bin has not dipped into since the last GC pass goes back. */
Test(tcache, gc_returns_idle_pairs)
{
    struct nbuf_pool *p = cached_pool(1);
    enum { N = 100 };
    struct nbuf *v[N];
    for (unsigned i = 0; i < N; i++)
        v[i] = nbuf_alloc(p, 2000);
    for (unsigned i = 0; i < N; i++)
        nbuf_release(v[i]);
    struct nbuf_tcache *tc = my_tcache(p);
    struct nbuf_tcache_bin *idle = &tc->bins[nbuf_sz_index_(2000)];
    uint32_t before = nbuf_tcache_bin_count_(idle);
    cr_assert_geq(before, 2, "the burst left %u", before);
    /* Three GC intervals of traffic on another class. */
    for (unsigned i = 0; i < 3 * 4096 + 10; i++)
        nbuf_release(nbuf_alloc(p, 64));
    cr_assert_lt(nbuf_tcache_bin_count_(idle), before / 2, "idle bin kept %u of %u",
                 nbuf_tcache_bin_count_(idle), before);
    cr_assert(nbuf_tcache_check_(tc));
    t_pool_done(p);
}

struct sync {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int step;
};

static void
sync_wait(struct sync *s, int step)
{
    pthread_mutex_lock(&s->m);
    while (s->step < step)
        pthread_cond_wait(&s->cv, &s->m);
    pthread_mutex_unlock(&s->m);
}

static void
sync_set(struct sync *s, int step)
{
    pthread_mutex_lock(&s->m);
    s->step = step;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->m);
}

struct trim_arg {
    struct nbuf_pool *p;
    struct sync s;
    uint32_t after_trim;
};

static void *
trim_thread(void *arg)
{
    struct trim_arg *ta = arg;
    struct nbuf *v[50];
    for (unsigned i = 0; i < 50; i++)
        v[i] = nbuf_alloc(ta->p, 1024);
    for (unsigned i = 0; i < 50; i++)
        nbuf_release(v[i]);
    sync_set(&ta->s, 1);
    sync_wait(&ta->s, 2);
    /* A miss notices the trim epoch and flushes the whole cache. */
    struct nbuf *b = nbuf_alloc(ta->p, 100000);
    T_CHECK(b != NULL);
    ta->after_trim = nbuf_tcache_bin_count_(&nbuf_tls_.tc->bins[nbuf_sz_index_(1024)]);
    nbuf_release(b);
    return NULL;
}

Test(tcache, trim_reaches_other_threads)
{
    struct nbuf_pool *p = cached_pool(2);
    struct trim_arg ta = {.p = p,
                          .s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0},
                          .after_trim = UINT32_MAX};
    pthread_t t;
    pthread_create(&t, NULL, trim_thread, &ta);
    sync_wait(&ta.s, 1);
    cr_assert_geq(t_stats(p).cached_bytes, 50 * 1024);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    sync_set(&ta.s, 2);
    pthread_join(t, NULL);
    t_thread_assert_ok();
    cr_assert_eq(ta.after_trim, 0, "the other thread kept %u cached pairs after a trim",
                 ta.after_trim);
    t_pool_done(p);
}

static void *
churn_thread(void *arg)
{
    struct nbuf_pool *p = arg;
    struct nbuf *v[300];
    for (unsigned i = 0; i < 300; i++) {
        v[i] = nbuf_alloc(p, 16 + (i * 97) % 70000);
        T_CHECK(v[i] != NULL);
    }
    for (unsigned i = 0; i < 300; i++)
        T_CHECK(nbuf_release(v[i]) == 1);
    return NULL;
}

/* An exiting thread's cache goes back and its counters are kept. */
Test(tcache, thread_exit_flushes_cache)
{
    struct nbuf_pool *p = pool_with(2, 0);
    t_run_thread(churn_thread, p);
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.threads, 0, "exited thread still holds a cache");
    cr_assert_eq(s.allocations, 300);
    cr_assert_eq(s.releases, 300);
    cr_assert_eq(s.live_buffers, 0);
    cr_assert_eq(s.remote_releases, 0);
    if (!t_bypass()) {
        /* No cache is left: only arena stashes may hold pairs now. */
        uint64_t stashed = 0;
        for (unsigned i = 0; i < p->narenas; i++)
            stashed += p->arenas[i].stash_bytes;
        cr_assert_eq(s.cached_bytes, stashed);
        cr_assert_eq(nbuf_pool_trim(p), 0);
        cr_assert_eq(t_stats(p).chunks, 0);
    }
    t_pool_done(p);
}

struct xfer {
    struct nbuf_pool *p;
    struct nbuf **v;
    unsigned n;
};

static size_t
xfer_size(unsigned i)
{
    static const size_t sizes[] = {1, 100, 1500, 4096, 9000, 33000, 65536, 200000, 5u << 20};
    return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
}

static void
xfer_alloc(struct xfer *x)
{
    for (unsigned i = 0; i < x->n; i++) {
        x->v[i] = nbuf_alloc(x->p, xfer_size(i));
        T_CHECK(x->v[i] != NULL);
        if (x->v[i])
            t_pattern_fill(nbuf_reserve(x->v[i], xfer_size(i)), xfer_size(i), i);
        if (x->v[i])
            nbuf_commit(x->v[i], xfer_size(i));
    }
}

static void
xfer_release(struct xfer *x)
{
    for (unsigned i = 0; i < x->n; i++) {
        T_CHECK(nbuf_readable(x->v[i]) == xfer_size(i));
        T_CHECK(t_pattern_bad(nbuf_data(x->v[i]), xfer_size(i), i) == SIZE_MAX);
        T_CHECK(nbuf_release(x->v[i]) == 1);
    }
}

static void *
xfer_alloc_thread(void *arg)
{
    xfer_alloc(arg);
    return NULL;
}

static void *
xfer_release_thread(void *arg)
{
    xfer_release(arg);
    return NULL;
}

/* Memory released on another thread is reusable, and counted as remote. */
Test(tcache, cross_thread_release)
{
    struct nbuf_pool *p = pool_with(2, 0);
    enum { N = 180 };
    struct nbuf *v[N];
    struct xfer x = {p, v, N};
    xfer_alloc(&x);
    t_thread_assert_ok();
    t_run_thread(xfer_release_thread, &x);
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.live_buffers, 0);
    cr_assert_eq(s.releases, N);
    if (!t_bypass())
        cr_assert_eq(s.remote_releases, N);
    /* Everything is reusable: allocate it all again here and there. */
    xfer_alloc(&x);
    xfer_release(&x);
    t_run_thread(xfer_alloc_thread, &x);
    xfer_release(&x);
    t_thread_assert_ok();
    t_pool_check(p);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(p).chunks, 0, "memory released remotely did not go back");
    t_pool_done(p);
}

/* The allocating thread is gone (its cache destroyed) before the release. */
Test(tcache, release_after_allocating_thread_exited)
{
    struct nbuf_pool *p = pool_with(2, 0);
    enum { N = 90 };
    struct nbuf *v[N];
    struct xfer x = {p, v, N};
    t_run_thread(xfer_alloc_thread, &x);
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.live_buffers, N);
    cr_assert_eq(s.threads, 0);
    xfer_release(&x);
    t_thread_assert_ok();
    s = t_stats(p);
    cr_assert_eq(s.live_buffers, 0);
    if (!t_bypass())
        cr_assert_eq(s.remote_releases, N);
    /* And once more, released by a second short-lived thread. */
    t_run_thread(xfer_alloc_thread, &x);
    t_run_thread(xfer_release_thread, &x);
    t_thread_assert_ok();
    xfer_alloc(&x);
    xfer_release(&x);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(p).chunks, 0);
    t_pool_done(p);
}

/* A thread whose first and only use of the pool is releasing. */
Test(tcache, release_from_thread_that_never_allocated)
{
    struct nbuf_pool *p = pool_with(2, 0);
    enum { N = 45 };
    struct nbuf *v[N];
    struct xfer x = {p, v, N};
    xfer_alloc(&x);
    struct nbuf_pool_stats before = t_stats(p);
    cr_assert_eq(before.threads, t_bypass() ? before.threads : 1);
    t_run_thread(xfer_release_thread, &x);
    t_thread_assert_ok();
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.live_buffers, 0);
    cr_assert_eq(s.releases, N);
    cr_assert_eq(s.threads, before.threads, "the releasing thread left a cache behind");
    xfer_alloc(&x);
    xfer_release(&x);
    t_thread_assert_ok();
    t_pool_done(p);
}

/* ---- release during thread teardown (E35) ---- */

struct dying {
    struct nbuf_pool *p;
    pthread_key_t key;
    bool use_pool_first; /* allocate on the thread before it exits */
    struct nbuf *v[8];
    unsigned n;
    /* Filled in by the destructor. */
    bool ran;
    int released;
    bool allocated;
    bool shared_path; /* the fast path's thread-local no longer names p */
};

static void
dying_destructor(void *arg)
{
    struct dying *d = arg;
    d->ran = true;
    d->shared_path = nbuf_tls_.pool_id != d->p->id;
    for (unsigned i = 0; i < d->n; i++)
        d->released += nbuf_release(d->v[i]) == 1;
    /* Allocating while dying works too, and leaves no cache behind. */
    struct nbuf *b = nbuf_alloc(d->p, 300);
    struct nbuf *h = nbuf_alloc(d->p, 70000);
    d->allocated = b && h;
    if (b)
        t_pattern_fill(nbuf_reserve(b, 300), 300, 1);
    nbuf_release(b);
    nbuf_release(h);
}

static void *
dying_thread(void *arg)
{
    struct dying *d = arg;
    if (d->use_pool_first) {
        /* Create this thread's cache and keep something in it. */
        nbuf_release(nbuf_alloc(d->p, 100));
    }
    pthread_setspecific(d->key, d);
    return NULL;
}

/* key_first: the test's key is created before the pool's, so its destructor
 * runs first (glibc runs them in key order); otherwise after the pool's. */
static void
release_in_teardown(bool key_first, bool use_pool_first)
{
    struct dying d = {.use_pool_first = use_pool_first};
    if (key_first)
        cr_assert_eq(pthread_key_create(&d.key, dying_destructor), 0);
    d.p = pool_with(2, 0);
    if (!key_first)
        cr_assert_eq(pthread_key_create(&d.key, dying_destructor), 0);
    struct nbuf_pool *p = d.p;
    d.n = 8;
    for (unsigned i = 0; i < d.n; i++) {
        d.v[i] = nbuf_alloc(p, 50 + 4000 * i);
        cr_assert_not_null(d.v[i]);
    }
    struct nbuf_pool_stats before = t_stats(p);
    t_run_thread(dying_thread, &d);
    cr_assert(d.ran, "the test's TLS destructor did not run");
    cr_assert_eq(d.released, 8);
    cr_assert(d.allocated, "allocation from a dying thread failed");
    if (!key_first && use_pool_first)
        cr_assert(d.shared_path, "the pool's cache outlived its destructor");
    if (key_first && use_pool_first && !t_bypass())
        cr_assert_not(d.shared_path, "destructor order assumption broken: pool's ran first");
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.live_buffers, 0);
    cr_assert_eq(s.releases, before.releases + 8 + 2 + use_pool_first);
    cr_assert_eq(s.threads, before.threads, "a dying thread left a cache in the pool");
    t_pool_check(p);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(p).chunks, 0);
    pthread_key_delete(d.key);
    t_pool_done(p);
}

Test(tcache, release_in_tls_destructor_after_pool_destructor)
{
    release_in_teardown(false, true);
}

Test(tcache, release_in_tls_destructor_before_pool_destructor)
{
    release_in_teardown(true, true);
}

Test(tcache, release_in_tls_destructor_of_thread_without_cache)
{
    release_in_teardown(false, false);
}

/* NBUF_POOL_NO_CACHE: every allocation misses, every release goes home. */
Test(tcache, no_cache_config)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool *p = pool_with(1, NBUF_POOL_NO_CACHE);
    for (unsigned round = 0; round < 3; round++) {
        struct nbuf *v[40];
        for (unsigned i = 0; i < 40; i++) {
            v[i] = nbuf_alloc(p, 16 + i * 1000);
            cr_assert_not_null(v[i]);
            t_buf_fill(v[i], i);
        }
        struct nbuf_tcache *tc = my_tcache(p);
        for (unsigned i = 0; i < NBUF_NCLASSES; i++)
            cr_assert_eq(nbuf_tcache_bin_count_(&tc->bins[i]), 0);
        for (unsigned i = 0; i < 40; i++) {
            cr_assert(t_buf_verify(v[i], i));
            cr_assert_eq(nbuf_release(v[i]), 1);
        }
    }
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.cache_hits, 0);
    cr_assert_eq(s.cache_misses, 120);
    cr_assert_eq(s.cached_bytes, 0);
    t_pool_done(p);
}

/* A pool freed while a thread still has a (idle) cache in it; that thread
 * goes on with another pool and exits cleanly. */
struct two_pools {
    struct nbuf_pool *a, *b;
    struct sync s;
};

static void *
two_pools_thread(void *arg)
{
    struct two_pools *tp = arg;
    nbuf_release(nbuf_alloc(tp->a, 100));
    sync_set(&tp->s, 1);
    sync_wait(&tp->s, 2);
    struct nbuf *b = nbuf_alloc(tp->b, 100);
    T_CHECK(b != NULL);
    T_CHECK(nbuf_release(b) == 1);
    return NULL;
}

Test(tcache, pool_freed_while_thread_cache_idle)
{
    struct two_pools tp = {.a = pool_with(1, 0),
                           .b = pool_with(1, 0),
                           .s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}};
    pthread_t t;
    pthread_create(&t, NULL, two_pools_thread, &tp);
    sync_wait(&tp.s, 1);
    t_pool_done(tp.a);
    sync_set(&tp.s, 2);
    pthread_join(t, NULL);
    t_thread_assert_ok();
    cr_assert_eq(t_stats(tp.b).threads, 0);
    t_pool_done(tp.b);
}

/* Pools whose flags force the slow allocation path (fast_id NBUF_KEY_NONE) must not
 * hand out a cached pair for a 0-byte request either: with NBUF_POOL_ZERO
 * the recycled 16 bytes would keep the previous owner's data. */
Test(tcache, zero_size_request_in_slow_pool)
{
    struct nbuf_pool *p = pool_with(1, NBUF_POOL_ZERO);
    cr_assert(!nbuf_pool_fast_(p));
    for (unsigned round = 0; round < 3; round++) {
        struct nbuf *a = nbuf_alloc(p, 1);
        cr_assert_not_null(a);
        memset(nbuf_reserve(a, nbuf_writable(a)), 0xff, nbuf_writable(a));
        cr_assert_eq(nbuf_release(a), 1);
        struct nbuf *b = nbuf_alloc(p, 0);
        cr_assert_not_null(b);
        const uint8_t *m = nbuf_reserve(b, 0);
        for (size_t i = 0; i < nbuf_capacity(b); i++)
            cr_assert_eq(m[i], 0, "round %u: byte %zu of a 0-byte request not zeroed", round, i);
        cr_assert_eq(nbuf_release(b), 1);
    }
    t_pool_done(p);
}

/* A custom growth bound never reaches the cache: the allocation fast path
 * trusts cached pairs to carry the pool's max_buffer_size (found by
 * fuzz_pool, corpus file regress-alloc-ex-max-capacity-reaches-cache). */
Test(tcache, alloc_ex_bound_does_not_reach_cache)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    for (int i = 0; i < 4; i++) {
        struct nbuf *b = nbuf_alloc_ex(p, 100, 200, 0);
        cr_assert_not_null(b);
        cr_assert_eq(nbuf_max_capacity(b), 200);
        cr_assert_eq(nbuf_release(b), 1);
        struct nbuf *c = nbuf_alloc(p, 100);
        cr_assert_not_null(c);
        cr_assert_eq(nbuf_max_capacity(c), p->cfg.max_buffer_size);
        cr_assert_eq(nbuf_release(c), 1);
    }
    t_pool_done(p);
}

/* Growth keeps the header and swaps in memory from the growing thread's
 * arena, so a pair can carry a header from another arena's blocks and wait
 * in this arena's stash. Freeing the pool must flush every stash before any
 * arena frees its header blocks (ASan caught the reverse order). */
struct cross_pair {
    struct nbuf_pool *p;
    struct nbuf *b;
};

static void *
grow_and_stash_thread(void *arg)
{
    struct cross_pair *x = arg;
    T_CHECK(nbuf_ensure_writable(x->b, 3000) == 0);
    /* The growth's allocation bound this thread to the other arena. */
    T_CHECK(nbuf_tls_.pool_id == x->p->id);
    struct nbuf_tcache *tc = nbuf_tls_.tc;
    struct nbuf_arena *home = tc->arena;
    T_CHECK(home == &x->p->arenas[1]);
    struct nbuf_tcache_bin *bin = &tc->bins[x->b->szind];
    nbuf_release(x->b);
    /* Idle GC passes halve the bin (coldest first) until the grown pair,
     * the hottest, goes to the stash too. */
    for (unsigned i = 0; i < 64 && nbuf_tcache_bin_count_(bin); i++)
        nbuf_tcache_gc_(tc);
    T_CHECK(nbuf_tcache_bin_count_(bin) == 0);
    nbuf_arena_lock_(home);
    size_t stashed = home->stash_bytes;
    nbuf_arena_unlock_(home);
    T_CHECK(stashed > 0);
    return NULL;
}

Test(tcache, foreign_header_in_stash_at_pool_free)
{
    struct nbuf_pool *p = cached_pool(2);
    struct cross_pair x = {p, nbuf_alloc(p, 64)};
    cr_assert_not_null(x.b);
    cr_assert_eq(my_tcache(p)->arena, &p->arenas[0]);
    t_run_thread(grow_and_stash_thread, &x);
    t_thread_assert_ok();
    t_pool_done(p);
}

/* Classes cached above the table lookup (64 KiB) take a call more on
 * allocation but still come from the thread cache. */
Test(tcache, large_cached_classes_beyond_the_fast_path)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = 1;
    cfg.cache_max_size = 1u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    if (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)) {
        t_pool_done(p);
        cr_skip("thread caches disabled by the environment");
    }
    cr_assert_eq(NBUF_FAST_MAX, 64u << 10);
    /* The largest cached class (tiny chunks cap the classes below it). */
    size_t size = p->ncached ? nbuf_sz_usize_(p->ncached - 1) : 0;
    if (size <= (64u << 10)) {
        t_pool_done(p);
        cr_skip("no cached class above 64 KiB with these chunks");
    }
    struct nbuf *b = nbuf_alloc(p, size);
    cr_assert_not_null(b);
    uint8_t *mem = b->mem;
    unsigned szind = b->szind;
    struct nbuf_tcache *tc = my_tcache(p);
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    cr_assert_gt(bin->cap, 0, "class %u not cached (cap 0)", szind);
    uint32_t before = nbuf_tcache_bin_count_(bin);
    nbuf_release(b);
    cr_assert_eq(nbuf_tcache_bin_count_(bin), before + 1, "not cached");
    b = nbuf_alloc(p, size);
    cr_assert_eq(b->mem, mem, "not served from the cache");
    cr_assert_eq(nbuf_tcache_bin_count_(bin), before);
    nbuf_release(b);
    t_pool_done(p);
}

/* A loop of cached pairs of every fast size, on the pool given and on the
 * default pool through NULL, never enters the slow allocation path. */
static void
assert_fast_loop(struct nbuf_pool *arg, struct nbuf_pool *p)
{
    static const size_t sizes[] = {1, 64, 1000, 4096, 4097, 16384, 65536};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++)
        nbuf_release(nbuf_alloc(arg, sizes[k])); /* fill the bins */
    struct nbuf_pool_stats before = t_stats(p);
    enum { N = 10000 };
    for (unsigned i = 0; i < N; i++) {
        struct nbuf *b = nbuf_alloc(arg, sizes[i % (sizeof(sizes) / sizeof(sizes[0]))]);
        cr_assert_not_null(b);
        cr_assert_eq(b->pool, p);
        cr_assert_eq(nbuf_write_u8(b, (uint8_t)i), 0);
        cr_assert_eq(nbuf_release(b), 1);
    }
    struct nbuf_pool_stats after = t_stats(p);
    cr_assert_eq(after.allocations - before.allocations, N);
    cr_assert_eq(after.slow_allocations, before.slow_allocations, "%llu slow allocations",
                 (unsigned long long)(after.slow_allocations - before.slow_allocations));
    cr_assert_eq(after.cache_hits - before.cache_hits, N);
    /* And the slow path is counted: 0 bytes, above 64 KiB, nbuf_alloc_ex. */
    nbuf_release(nbuf_alloc(arg, 0));
    nbuf_release(nbuf_alloc(arg, 65537));
    nbuf_release(nbuf_alloc_ex(arg, 64, 1024, 0));
    cr_assert_eq(t_stats(p).slow_allocations, before.slow_allocations + 3);
}

Test(tcache, default_pool_takes_the_fast_path)
{
    struct nbuf_pool *p = nbuf_pool_default();
    cr_assert_not_null(p);
    if (!nbuf_pool_fast_(p) || (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)))
        cr_skip("the environment turned the fast paths or the caches off");
    assert_fast_loop(NULL, p);
    assert_fast_loop(p, p);
    cr_assert(nbuf_tcache_check_(nbuf_tls_.tc));
}

Test(tcache, explicit_pool_takes_the_fast_path)
{
    struct nbuf_pool *p = cached_pool(1);
    if (!nbuf_pool_fast_(p)) {
        t_pool_done(p);
        cr_skip("the environment turned the fast paths off");
    }
    assert_fast_loop(p, p);
    t_pool_done(p);
}

/* A thread that alternates between two pools rebinds at each switch (a
 * slow allocation) but every buffer still goes back to its own pool. */
Test(tcache, alternating_pools_stay_correct)
{
    struct nbuf_pool *a = cached_pool(1);
    struct nbuf_pool *b = cached_pool(1);
    for (unsigned i = 0; i < 1000; i++) {
        struct nbuf *x = nbuf_alloc(a, 64), *y = nbuf_alloc(b, 64);
        struct nbuf *z = nbuf_alloc(NULL, 64);
        cr_assert(x && y && z);
        cr_assert_eq(x->pool, a);
        cr_assert_eq(y->pool, b);
        cr_assert_eq(z->pool, nbuf_pool_default());
        cr_assert_eq(nbuf_release(x), 1);
        cr_assert_eq(nbuf_release(z), 1);
        cr_assert_eq(nbuf_release(y), 1);
    }
    cr_assert_eq(t_stats(a).live_buffers, 0);
    cr_assert_eq(t_stats(b).live_buffers, 0);
    cr_assert_eq(t_stats(nbuf_pool_default()).live_buffers, 0);
    t_pool_done(a);
    t_pool_done(b);
}

/* ---- the large cache: a few pairs above cache_max_size ---- */

static struct nbuf_pool *
large_pool(size_t budget, size_t *size)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = 1;
    cfg.cache_large_bytes = budget;
    struct nbuf_pool *p = t_pool_new(&cfg);
    *size = p->cfg.chunk_size / 4;
    if ((p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)) || !nbuf_pool_fast_(p) ||
        *size <= p->cfg.cache_max_size) {
        t_pool_done(p);
        cr_skip("no large class with this environment's pools");
    }
    return p;
}

/* A loop of large pairs reuses one buffer, with one slow allocation. */
Test(tcache, large_pairs_reuse_the_cached_buffer)
{
    size_t size;
    struct nbuf_pool *p = large_pool(4u << 20, &size);
    struct nbuf *b = nbuf_alloc(p, size);
    cr_assert_not_null(b);
    struct nbuf *h = b;
    uint8_t *mem = b->mem;
    size_t cap = b->capacity;
    nbuf_release(b);
    struct nbuf_pool_stats before = t_stats(p);
    cr_assert_eq(before.cached_bytes, cap);
    for (unsigned i = 0; i < 1000; i++) {
        b = nbuf_alloc(p, size - i);
        cr_assert_eq(b, h);
        cr_assert_eq(b->mem, mem);
        cr_assert_eq(nbuf_refcnt(b), 1);
        cr_assert_eq(nbuf_readable(b), 0);
        cr_assert_eq(nbuf_capacity(b), cap);
        t_buf_fill(b, i);
        cr_assert(t_buf_verify(b, i));
        cr_assert_eq(nbuf_pool_stats(p, &before), 0);
        cr_assert_eq(before.requested_bytes, size - i);
        cr_assert_eq(before.cached_bytes, 0);
        cr_assert_eq(nbuf_release(b), 1);
    }
    struct nbuf_pool_stats after = t_stats(p);
    cr_assert_eq(after.slow_allocations, 1);
    cr_assert_eq(after.allocations, 1001);
    cr_assert_eq(after.releases, 1001);
    cr_assert_eq(after.cache_hits, 1000);
    cr_assert_eq(after.live_buffers, 0);
    cr_assert_eq(after.used_bytes, 0);
    cr_assert(nbuf_tcache_check_(my_tcache(p)));
    /* Trim gives it back: the chunk is empty again. */
    cr_assert_eq(nbuf_pool_trim(p), 0);
    after = t_stats(p);
    cr_assert_eq(after.cached_bytes, 0);
    cr_assert_eq(p->arenas[0].nchunks, p->arenas[0].nempty);
    t_pool_done(p);
}

/* At most four pairs and cache_large_bytes bytes; 0 keeps none. */
Test(tcache, large_cache_is_bounded)
{
    size_t size;
    struct nbuf_pool *p = large_pool(3 * ((size_t)4 << 20) / 4, &size);
    enum { N = 6 };
    struct nbuf *v[N];
    for (unsigned i = 0; i < N; i++)
        cr_assert_not_null(v[i] = nbuf_alloc(p, size / 2 + i * 4096));
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(nbuf_release(v[i]), 1);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_leq(st.cached_bytes, p->cfg.cache_large_bytes);
    cr_assert_gt(st.cached_bytes, 0);
    struct nbuf_tcache *tc = my_tcache(p);
    unsigned n = 0;
    for (unsigned i = 0; i < NBUF_LARGE_SLOTS; i++)
        n += tc->large.slot[i] != NULL;
    cr_assert_leq(n, NBUF_LARGE_SLOTS);
    cr_assert(nbuf_tcache_check_(tc));
    t_pool_done(p);

    p = large_pool(0, &size);
    cr_assert_eq(p->large_max, 0);
    nbuf_release(nbuf_alloc(p, size));
    cr_assert_eq(t_stats(p).cached_bytes, 0);
    t_pool_done(p);
}

/* An idle GC interval returns the large pairs. */
Test(tcache, large_cache_returns_idle_pairs)
{
    size_t size;
    struct nbuf_pool *p = large_pool(4u << 20, &size);
    nbuf_release(nbuf_alloc(p, size));
    cr_assert_gt(t_stats(p).cached_bytes, 0);
    for (unsigned i = 0; i < 2 * NBUF_GC_INTERVAL + 10; i++)
        nbuf_release(nbuf_alloc(p, 64));
    struct nbuf_tcache *tc = my_tcache(p);
    cr_assert_eq(tc->large.bytes, 0, "idle large pairs kept");
    cr_assert(nbuf_tcache_check_(tc));
    t_pool_done(p);
}

struct large_handoff {
    struct nbuf_pool *p;
    struct nbuf *b;
};

static void *
release_large(void *arg)
{
    struct large_handoff *h = arg;
    T_CHECK(nbuf_release(h->b) == 1);
    /* It joined this thread's cache, and a new allocation gets it. */
    struct nbuf *again = nbuf_alloc(h->p, h->p->cfg.chunk_size / 4);
    T_CHECK(again == h->b);
    T_CHECK(nbuf_release(again) == 1);
    return NULL;
}

/* A large pair released on another thread joins that thread's cache. */
Test(tcache, large_pair_released_remotely)
{
    size_t size;
    struct nbuf_pool *p = large_pool(4u << 20, &size);
    struct large_handoff h = {p, nbuf_alloc(p, size)};
    cr_assert_not_null(h.b);
    uint64_t remote = t_stats(p).remote_releases;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, release_large, &h), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    t_thread_assert_ok();
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.remote_releases, remote + 1);
    cr_assert_eq(st.live_buffers, 0);
    t_pool_done(p);
}

/* ---- the remote stage: a consumer's releases go home in batches ---- */

struct consumer_arg {
    struct nbuf_pool *p;
    struct nbuf **v;
    unsigned n;
    uint64_t max_staged;
};

static void *
consume(void *arg)
{
    struct consumer_arg *c = arg;
    for (unsigned i = 0; i < c->n; i++) {
        T_CHECK(t_buf_verify(c->v[i], i));
        T_CHECK(nbuf_release(c->v[i]) == 1);
        struct nbuf_tcache *tc = nbuf_tls_.tc;
        if (!tc || nbuf_tls_.pool_id != c->p->id)
            continue;
        /* Nothing lingers in this thread's bins: it never allocates. */
        for (unsigned k = 0; k < c->p->ncached; k++)
            T_CHECK(nbuf_tcache_bin_count_(&tc->bins[k]) == 0);
        if (tc->stage.bytes > c->max_staged)
            c->max_staged = tc->stage.bytes;
        T_CHECK(nbuf_tcache_check_(tc));
    }
    return NULL;
}

Test(tcache, consumer_releases_go_home_in_batches)
{
    struct nbuf_pool *p = cached_pool(1);
    if (!nbuf_pool_fast_(p)) {
        t_pool_done(p);
        cr_skip("the environment turned the fast paths off");
    }
    enum { N = 3000 };
    struct nbuf **v = calloc(N, sizeof(*v));
    cr_assert_not_null(v);
    for (int round = 0; round < 2; round++) {
        for (unsigned i = 0; i < N; i++) {
            cr_assert_not_null(v[i] = nbuf_alloc(p, 64 + (i * 977) % 20000));
            t_buf_fill(v[i], i);
        }
        uint64_t chunks = t_stats(p).chunks;
        struct consumer_arg c = {p, v, N, 0};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, consume, &c), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        t_thread_assert_ok();
        cr_assert_leq(c.max_staged, NBUF_STAGE_BYTES + (64u << 10));
        struct nbuf_pool_stats st = t_stats(p);
        cr_assert_eq(st.live_buffers, 0);
        cr_assert_eq(st.remote_releases, (uint64_t)(round + 1) * N);
        /* Home again: the second round needs no new chunk. */
        if (round == 1)
            cr_assert_leq(st.chunks, chunks);
    }
    free(v);
    t_pool_done(p);
}

/* ---- the byte budget ---- */

static uint64_t
bins_bytes(const struct nbuf_pool *p, const struct nbuf_tcache *tc)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < p->ncached; i++)
        sum += (uint64_t)nbuf_tcache_bin_count_(&tc->bins[i]) * nbuf_sz_usize_(i);
    return sum;
}

/* A class that cycles through its bin (releases and allocations
 * interleaved: a window of buffers in flight) grows the bin's cap, up to the
 * class's cap. */
Test(tcache, cycling_class_grows_its_bin)
{
    struct nbuf_pool *p = cached_pool(1);
    unsigned szind = nbuf_sz_index_(16384);
    enum { WINDOW = 96 };
    struct nbuf *v[WINDOW];
    cr_assert_not_null(v[0] = nbuf_alloc(p, 16384));
    struct nbuf_tcache *tc = my_tcache(p);
    uint32_t start = tc->bins[szind].cap;
    for (unsigned i = 1; i < WINDOW; i++)
        cr_assert_not_null(v[i] = nbuf_alloc(p, 16384));
    /* Release in batches of 24 and allocate them back: each batch overflows
     * the bin after allocations, so the class cycles. */
    for (unsigned round = 0; round < 16; round++) {
        for (unsigned i = 0; i < 24; i++)
            nbuf_release(v[(round * 24 + i) % WINDOW]);
        for (unsigned i = 0; i < 24; i++)
            cr_assert_not_null(v[(round * 24 + i) % WINDOW] = nbuf_alloc(p, 16384));
    }
    uint32_t cap = tc->bins[szind].cap;
    cr_assert_gt(cap, start, "cap %u did not grow from %u", cap, start);
    cr_assert_eq(cap, nbuf_pool_cache_cap_(p, szind), "cap %u, class cap %u", cap,
                 nbuf_pool_cache_cap_(p, szind));
    cr_assert(nbuf_tcache_check_(tc));
    for (unsigned i = 0; i < WINDOW; i++)
        nbuf_release(v[i]);
    t_pool_done(p);
}

/* A burst of releases with no allocation between them halves the bins it
 * overflows: what stays parked is a fraction of what was released. */
Test(tcache, release_burst_leaves_little_parked)
{
    struct nbuf_pool *p = cached_pool(1);
    enum { N = 4000 };
    struct nbuf **v = calloc(N, sizeof(*v));
    uint64_t r = 7, bytes = 0;
    for (unsigned i = 0; i < N; i++) {
        v[i] = nbuf_alloc(p, 64 + t_rand(&r) % 32768);
        cr_assert_not_null(v[i]);
        bytes += v[i]->capacity;
    }
    for (unsigned i = 0; i < N; i++)
        nbuf_release(v[i]);
    struct nbuf_tcache *tc = my_tcache(p);
    uint64_t parked = bins_bytes(p, tc);
    cr_assert_lt(parked, bytes / 8, "%llu of %llu bytes parked in the bins",
                 (unsigned long long)parked, (unsigned long long)bytes);
    free(v);
    t_pool_done(p);
}

/* However the classes cycle, the bins' caps stay within cache_thread_bytes
 * (nbuf_tcache_check_ checks caps + budget = the pool's budget), and stats
 * report the bound. */
Test(tcache, bins_stay_within_the_thread_budget)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = 1;
    cfg.cache_thread_bytes = 2u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    if (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)) {
        t_pool_done(p);
        cr_skip("thread caches disabled by the environment");
    }
    struct nbuf *v[256];
    uint64_t r = 3;
    for (unsigned round = 0; round < 200; round++) {
        size_t size = 64 + t_rand(&r) % 65000;
        unsigned n = 1 + (unsigned)(t_rand(&r) % 256);
        for (unsigned i = 0; i < n; i++)
            cr_assert_not_null(v[i] = nbuf_alloc(p, size));
        for (unsigned i = 0; i < n; i++)
            nbuf_release(v[i]);
        struct nbuf_tcache *tc = my_tcache(p);
        cr_assert_leq(bins_bytes(p, tc), p->cache_budget, "round %u", round);
    }
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_leq(st.cache_bound_bytes, (2u << 20) + p->cfg.cache_large_bytes);
    t_pool_done(p);
}
