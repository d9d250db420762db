/* SPDX-License-Identifier: MIT */
/* Backings: jemalloc arena, mmap, user callbacks (counted; misaligned chunks
 * refused), and failure injection on the Nth call for N = 1..20 (F39). */
#include "common.h"

#include <unistd.h>

/* ---- a counting user backing ---- */

enum { MAX_OUTSTANDING = 4096 };

struct counting {
    _Atomic unsigned allocs, frees;
    _Atomic long outstanding;
    _Atomic uint64_t bytes;
    bool misalign;  /* hand out chunks 64 bytes off their alignment */
    bool give_null; /* refuse every call */
    pthread_mutex_t lock;
    struct {
        void *user, *raw;
        size_t size;
    } map[MAX_OUTSTANDING];
};

static void *
counting_alloc(size_t size, size_t align, void *ctx)
{
    struct counting *c = ctx;
    atomic_fetch_add(&c->allocs, 1);
    if (c->give_null)
        return NULL;
    void *raw = NULL;
    if (posix_memalign(&raw, align, size + (c->misalign ? align : 0)) != 0)
        return NULL;
    void *user = (uint8_t *)raw + (c->misalign ? 64 : 0);
    pthread_mutex_lock(&c->lock);
    unsigned i = 0;
    while (i < MAX_OUTSTANDING && c->map[i].user)
        i++;
    if (i == MAX_OUTSTANDING) {
        pthread_mutex_unlock(&c->lock);
        free(raw);
        return NULL;
    }
    c->map[i].user = user;
    c->map[i].raw = raw;
    c->map[i].size = size;
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add(&c->outstanding, 1);
    atomic_fetch_add(&c->bytes, size);
    return user;
}

static void
counting_free(void *ptr, size_t size, void *ctx)
{
    struct counting *c = ctx;
    atomic_fetch_add(&c->frees, 1);
    pthread_mutex_lock(&c->lock);
    unsigned i = 0;
    while (i < MAX_OUTSTANDING && c->map[i].user != ptr)
        i++;
    if (i == MAX_OUTSTANDING || c->map[i].size != size) {
        /* Checked by the test thread through outstanding/bytes. */
        pthread_mutex_unlock(&c->lock);
        T_CHECK(!"chunk_free of a pointer or size chunk_alloc never returned");
        return;
    }
    free(c->map[i].raw);
    c->map[i].user = NULL;
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_sub(&c->outstanding, 1);
    atomic_fetch_sub(&c->bytes, size);
}

static struct counting *
counting_new(void)
{
    struct counting *c = calloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static struct nbuf_pool_config
custom_cfg(struct counting *c, size_t page, size_t chunk, unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = 1;
    cfg.flags = flags;
    cfg.backing = NBUF_BACKING_CUSTOM;
    cfg.chunk_alloc = counting_alloc;
    cfg.chunk_free = counting_free;
    cfg.backing_ctx = c;
    return cfg;
}

/* ---- direct backing calls ---- */

static void
direct_roundtrip(struct nbuf_pool *p)
{
    static const size_t cases[][2] = {
        {32768, 4096}, {1u << 20, 8192}, {4u << 20, 65536}, {12288, 4096}, {2u << 20, 1u << 20}};
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t size = cases[i][0], align = cases[i][1];
        uint8_t *m = nbuf_backing_alloc_(&p->backing, size, align);
        cr_assert_not_null(m, "%zu bytes aligned %zu", size, align);
        cr_assert_eq((uintptr_t)m % align, 0, "%p not aligned to %zu", (void *)m, align);
        t_pattern_fill(m, size, i);
        cr_assert_eq(t_pattern_bad(m, size, i), SIZE_MAX);
        nbuf_backing_free_(&p->backing, m, size, align);
    }
    nbuf_backing_purge_(&p->backing);
}

Test(backing, jemalloc_direct)
{
    if (!nbuf_backing_has_jemalloc_())
        cr_skip("built without jemalloc");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cr_assert_eq(cfg.backing, NBUF_BACKING_JEMALLOC, "jemalloc is the default backing");
    struct nbuf_pool *p = t_pool_new(&cfg);
    direct_roundtrip(p);
    t_pool_done(p);
}

Test(backing, mmap_direct)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.backing = NBUF_BACKING_MMAP;
    struct nbuf_pool *p = t_pool_new(&cfg);
    direct_roundtrip(p);
    t_pool_done(p);
    cfg.huge_pages = 1;
    p = t_pool_new(&cfg);
    direct_roundtrip(p);
    t_pool_done(p);
}

Test(backing, custom_direct_counts_calls)
{
    struct counting *c = counting_new();
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 4u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    direct_roundtrip(p);
    cr_assert_eq(c->allocs, 5);
    cr_assert_eq(c->frees, 5);
    cr_assert_eq(c->outstanding, 0);
    t_pool_done(p);
    t_thread_assert_ok();
    free(c);
}

/* The countdown fails exactly the Nth call from now, then clears itself. */
Test(backing, fail_countdown_semantics)
{
    struct counting *c = counting_new();
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 4u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    nbuf_backing_fail_after_(p, 3);
    void *m[5];
    for (unsigned i = 0; i < 5; i++) {
        errno = 0;
        m[i] = nbuf_backing_alloc_(&p->backing, 65536, 8192);
        if (i == 2) {
            cr_assert_null(m[i], "call 3 should fail");
            cr_assert_eq(errno, ENOMEM);
        } else {
            cr_assert_not_null(m[i], "call %u failed", i + 1);
        }
    }
    /* The injected failure never reached the user's callback. */
    cr_assert_eq(c->allocs, 4);
    cr_assert_eq(atomic_load(&p->backing.fail_count), 1);
    for (unsigned i = 0; i < 5; i++)
        if (m[i])
            nbuf_backing_free_(&p->backing, m[i], 65536, 8192);
    nbuf_backing_fail_after_(p, 1);
    nbuf_backing_fail_after_(p, 0); /* cleared before it fired */
    void *x = nbuf_backing_alloc_(&p->backing, 65536, 8192);
    cr_assert_not_null(x);
    nbuf_backing_free_(&p->backing, x, 65536, 8192);
    cr_assert_eq(c->outstanding, 0);
    t_pool_done(p);
    free(c);
}

/* Sizes no backing can give fail cleanly, without wrapping the slack. */
static void
absurd_sizes(struct nbuf_pool *p)
{
    static const size_t sizes[] = {SIZE_MAX - 4095, SIZE_MAX - (1u << 20), SIZE_MAX >> 1};
    for (unsigned i = 0; i < 3; i++) {
        errno = 0;
        void *m = nbuf_backing_alloc_(&p->backing, sizes[i], 1u << 20);
        cr_assert_null(m, "%zu bytes granted", sizes[i]);
        cr_assert_eq(errno, ENOMEM);
    }
}

Test(backing, absurd_sizes_fail)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    struct nbuf_pool *p;
    if (nbuf_backing_has_jemalloc_()) {
        p = t_pool_new(&cfg);
        absurd_sizes(p);
        t_pool_done(p);
    }
    cfg.backing = NBUF_BACKING_MMAP;
    p = t_pool_new(&cfg);
    absurd_sizes(p);
    t_pool_done(p);
}

/* ---- pools on each backing ---- */

static void
pool_roundtrip(struct nbuf_pool *p)
{
    static const size_t sizes[] = {1,      200,      3000,           20000,   40000,
                                   300000, 4u << 20, (4u << 20) + 1, 9u << 20};
    struct nbuf *v[9];
    for (unsigned i = 0; i < 9; i++) {
        v[i] = nbuf_alloc(p, sizes[i]);
        cr_assert_not_null(v[i], "size %zu: %s", sizes[i], strerror(errno));
        t_buf_fill(v[i], i);
    }
    t_pool_check(p);
    for (unsigned i = 0; i < 9; i++) {
        cr_assert(t_buf_verify(v[i], i));
        cr_assert_eq(nbuf_release(v[i]), 1);
    }
    cr_assert_eq(nbuf_pool_trim(p), 0);
}

Test(backing, pool_on_mmap)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.backing = NBUF_BACKING_MMAP;
    cfg.huge_pages = 1;
    struct nbuf_pool *p = t_pool_new(&cfg);
    pool_roundtrip(p);
    if (!t_bypass()) {
        cr_assert_eq(t_stats(p).chunks, 0);
        cr_assert_eq(t_stats(p).backing_bytes, 0);
    }
    t_pool_done(p);
}

/* Every chunk and huge buffer is one user call, given back exactly once. */
Test(backing, pool_on_custom_callbacks)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 4u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    pool_roundtrip(p);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.huge_allocations, 2);
    cr_assert_geq(c->allocs, 3, "two huge buffers and at least one chunk");
    cr_assert_eq(c->allocs, c->frees);
    cr_assert_eq(c->outstanding, 0);
    /* Live memory is visible to the callbacks byte for byte. */
    struct nbuf *b = nbuf_alloc(p, 100);
    struct nbuf *h = nbuf_alloc(p, 5u << 20);
    st = t_stats(p);
    cr_assert_eq(st.backing_bytes, atomic_load(&c->bytes));
    cr_assert_eq(st.backing_bytes, (4u << 20) + (5u << 20));
    nbuf_release(b);
    nbuf_release(h);
    t_pool_done(p);
    cr_assert_eq(c->outstanding, 0, "pool freed with %ld chunks still out", (long)c->outstanding);
    t_thread_assert_ok();
    free(c);
}

/* A huge buffer whose capacity is clipped by max_capacity gives back what it
 * took (the callbacks check the size), and the gauge returns to zero. */
Test(backing, huge_with_clipped_capacity)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 1u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    size_t cap = (3u << 20) - 100;
    struct nbuf *b = nbuf_alloc_ex(p, cap, cap, 0);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_capacity(b), cap);
    cr_assert_eq(t_stats(p).backing_bytes, 3u << 20);
    t_buf_fill(b, 1);
    cr_assert_eq(nbuf_release(b), 1);
    /* The extent waits in the pool's huge cache (still charged), until a
     * trim frees it with its real size. */
    cr_assert_eq(t_stats(p).backing_bytes, nbuf_huge_cached_bytes_(p));
    cr_assert_eq(nbuf_pool_trim(p), 0);
    cr_assert_eq(t_stats(p).backing_bytes, 0);
    cr_assert_eq(c->outstanding, 0);
    t_pool_done(p);
    t_thread_assert_ok();
    free(c);
}

Test(backing, custom_misaligned_chunk_refused)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    t_capture_reports();
    struct counting *c = counting_new();
    c->misalign = true;
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 1u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf_pool_stats before = t_stats(p);
    static const size_t sizes[] = {100, 100000, 3u << 20};
    for (unsigned i = 0; i < 3; i++) {
        errno = 0;
        cr_assert_null(nbuf_alloc(p, sizes[i]), "size %zu: misaligned memory accepted", sizes[i]);
        cr_assert_eq(errno, ENOMEM);
    }
    struct nbuf_pool_stats after = t_stats(p);
    t_stats_assert_same(&before, &after);
    cr_assert_eq(after.chunks, 0);
    cr_assert_eq(after.backing_bytes, 0);
    cr_assert_eq(c->allocs, 3);
    cr_assert_eq(c->frees, 3, "a refused chunk was not handed back");
    cr_assert_eq(c->outstanding, 0);
    cr_assert_geq(t_reports(), 3);
    cr_assert(strstr(t_report_text(), "aligned") != NULL, "report: %s", t_report_text());
    /* The same pool works once the callbacks behave. */
    c->misalign = false;
    struct nbuf *b = nbuf_alloc(p, 100);
    cr_assert_not_null(b);
    nbuf_release(b);
    t_pool_done(p);
    cr_assert_eq(c->outstanding, 0);
    t_thread_assert_ok();
    free(c);
}

Test(backing, custom_null_is_enomem)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    c->give_null = true;
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 1u << 20, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    errno = 0;
    cr_assert_null(nbuf_alloc(p, 10));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(nbuf_alloc(p, 2u << 20));
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(c->frees, 0);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.allocations, 0);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.limit_failures, 0);
    t_pool_done(p);
    free(c);
}

/* ---- failure on the Nth call (F39) ---- */

/* Sizes that, on 32 KiB chunks of 4 KiB pages, take a new chunk (whole-chunk
 * runs), come straight from the backing (huge) or share subpage runs. */
static const size_t wl_sizes[] = {100,  32768, 40000, 5000,   16384, 1,     70000, 32768,
                                  2000, 9000,  32768, 100000, 300,   12288, 32768, 40000};
enum { WL_ROUNDS = 3, WL_N = WL_ROUNDS * sizeof(wl_sizes) / sizeof(wl_sizes[0]) };

/* Runs the workload, returns how many allocations failed; every failure must
 * be a clean NULL with ENOMEM that changed no counter. */
static unsigned
wl_run(struct nbuf_pool *p, struct nbuf **v)
{
    unsigned failed = 0;
    for (unsigned i = 0; i < WL_N; i++) {
        size_t size = wl_sizes[i % (sizeof(wl_sizes) / sizeof(wl_sizes[0]))];
        struct nbuf_pool_stats before = t_stats(p);
        errno = 0;
        v[i] = nbuf_alloc(p, size);
        if (!v[i]) {
            cr_assert_eq(errno, ENOMEM, "alloc %u (%zu B): errno %d", i, size, errno);
            struct nbuf_pool_stats after = t_stats(p);
            t_stats_assert_same(&before, &after);
            failed++;
            continue;
        }
        t_buf_fill(v[i], i);
        /* Release a few along the way so frees interleave with failures. */
        if (i % 5 == 4 && v[i - 2]) {
            cr_assert(t_buf_verify(v[i - 2], i - 2));
            nbuf_release(v[i - 2]);
            v[i - 2] = NULL;
        }
    }
    t_pool_check(p);
    return failed;
}

static void
wl_release(struct nbuf **v)
{
    for (unsigned i = 0; i < WL_N; i++) {
        if (v[i]) {
            cr_assert(t_buf_verify(v[i], i), "buffer %u corrupted", i);
            cr_assert_eq(nbuf_release(v[i]), 1);
            v[i] = NULL;
        }
    }
}

static void
fail_every_n(unsigned flags)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct nbuf *v[WL_N];
    /* A clean run first: how many backing calls the workload makes. */
    struct counting *c = counting_new();
    struct nbuf_pool_config cfg = custom_cfg(c, 4096, 32u << 10, flags);
    struct nbuf_pool *p = t_pool_new(&cfg);
    cr_assert_eq(wl_run(p, v), 0);
    wl_release(v);
    unsigned calls = c->allocs;
    cr_assert_geq(calls, 20, "the workload makes only %u backing calls", calls);
    t_pool_done(p);
    cr_assert_eq(c->outstanding, 0);
    free(c);

    for (long n = 1; n <= 20; n++) {
        c = counting_new();
        cfg = custom_cfg(c, 4096, 32u << 10, flags);
        p = t_pool_new(&cfg);
        struct nbuf_pool_stats base = t_stats(p);
        nbuf_backing_fail_after_(p, n);
        unsigned failed = wl_run(p, v);
        cr_assert_eq(atomic_load(&p->backing.fail_count), 1, "N=%ld: the fault never fired", n);
        if (flags & NBUF_POOL_NO_CACHE)
            cr_assert_eq(failed, 1, "N=%ld: %u allocations failed", n, failed);
        else
            cr_assert_leq(failed, 1, "N=%ld: %u allocations failed", n, failed);
        /* The fault is spent: everything works again. */
        struct nbuf *more[4];
        for (unsigned k = 0; k < 4; k++) {
            more[k] = nbuf_alloc(p, wl_sizes[k + 1]);
            cr_assert_not_null(more[k], "N=%ld: allocation after the fault failed", n);
        }
        for (unsigned k = 0; k < 4; k++)
            nbuf_release(more[k]);
        wl_release(v);
        cr_assert_eq(nbuf_pool_trim(p), 0);
        struct nbuf_pool_stats st = t_stats(p);
        cr_assert_eq(st.live_buffers, base.live_buffers);
        cr_assert_eq(st.used_bytes, base.used_bytes);
        cr_assert_eq(st.requested_bytes, base.requested_bytes);
        cr_assert_eq(st.chunks, 0, "N=%ld: %llu chunks leaked", n, (unsigned long long)st.chunks);
        cr_assert_eq(st.backing_bytes, 0);
        cr_assert_eq(st.allocations, st.releases);
        t_pool_done(p);
        cr_assert_eq(c->outstanding, 0, "N=%ld: %ld chunks never given back", n,
                     (long)c->outstanding);
        cr_assert_eq(c->allocs, c->frees);
        free(c);
    }
    t_thread_assert_ok();
}

Test(backing, fail_nth_call_cached)
{
    fail_every_n(0);
}

Test(backing, fail_nth_call_no_cache)
{
    fail_every_n(NBUF_POOL_NO_CACHE);
}

/* The same on the built-in backings, counting only through the pool. */
static void
fail_every_n_builtin(enum nbuf_backing_kind kind)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    if (kind == NBUF_BACKING_JEMALLOC && !nbuf_backing_has_jemalloc_())
        cr_skip("built without jemalloc");
    struct nbuf *v[WL_N];
    for (long n = 1; n <= 20; n++) {
        struct nbuf_pool_config cfg;
        nbuf_pool_config_init(&cfg);
        cfg.page_size = 4096;
        cfg.chunk_size = 32u << 10;
        cfg.arenas = 1;
        cfg.backing = kind;
        cfg.flags = NBUF_POOL_NO_CACHE;
        struct nbuf_pool *p = t_pool_new(&cfg);
        nbuf_backing_fail_after_(p, n);
        cr_assert_eq(wl_run(p, v), 1, "N=%ld", n);
        wl_release(v);
        cr_assert_eq(nbuf_pool_trim(p), 0);
        cr_assert_eq(t_stats(p).backing_bytes, 0);
        t_pool_done(p);
    }
}

Test(backing, fail_nth_call_jemalloc)
{
    fail_every_n_builtin(NBUF_BACKING_JEMALLOC);
}

Test(backing, fail_nth_call_mmap)
{
    fail_every_n_builtin(NBUF_BACKING_MMAP);
}

/* Failures while other threads allocate: each caller sees a clean result. */
struct fault_arg {
    struct nbuf_pool *p;
    unsigned ok, failed;
};

static void *
fault_thread(void *arg)
{
    struct fault_arg *fa = arg;
    struct nbuf *v[64];
    for (unsigned i = 0; i < 64; i++) {
        errno = 0;
        v[i] = nbuf_alloc(fa->p, i % 2 ? 32768 : 50000);
        if (v[i]) {
            fa->ok++;
            t_pattern_fill(nbuf_reserve(v[i], 1000), 1000, i);
        } else {
            T_CHECK(errno == ENOMEM);
            fa->failed++;
        }
    }
    for (unsigned i = 0; i < 64; i++)
        if (v[i])
            T_CHECK(nbuf_release(v[i]) == 1);
    return NULL;
}

Test(backing, fail_while_threads_allocate)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    /* No caches: a failed backing call is always a failed allocation. */
    struct nbuf_pool_config cfg = custom_cfg(c, 4096, 32u << 10, NBUF_POOL_NO_CACHE);
    cfg.arenas = 2;
    struct nbuf_pool *p = t_pool_new(&cfg);
    for (long n = 1; n <= 20; n += 3) {
        nbuf_backing_fail_after_(p, n);
        pthread_t t[3];
        struct fault_arg fa[3] = {{p, 0, 0}, {p, 0, 0}, {p, 0, 0}};
        for (unsigned i = 0; i < 3; i++)
            pthread_create(&t[i], NULL, fault_thread, &fa[i]);
        for (unsigned i = 0; i < 3; i++)
            pthread_join(t[i], NULL);
        t_thread_assert_ok();
        cr_assert_eq(fa[0].failed + fa[1].failed + fa[2].failed, 1, "N=%ld", n);
    }
    cr_assert_eq(atomic_load(&p->backing.fail_count), 7);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.allocations, 7 * (3 * 64 - 1));
    cr_assert_eq(nbuf_pool_trim(p), 0);
    cr_assert_eq(t_stats(p).chunks, 0);
    t_pool_done(p);
    cr_assert_eq(c->outstanding, 0);
    free(c);
}

/* ---- the huge-extent cache ---- */

static struct nbuf_pool *
huge_pool(struct counting *c, size_t limit)
{
    struct nbuf_pool_config cfg = custom_cfg(c, 8192, 1u << 20, 0);
    cfg.memory_limit = limit;
    struct nbuf_pool *p = t_pool_new(&cfg);
    if (p->huge_cache.cap == 0) {
        t_pool_done(p);
        cr_skip("the huge cache is off in this environment (no cache or checked mode)");
    }
    return p;
}

/* A loop of same-size huge buffers calls the backing once. */
Test(backing, huge_extents_are_reused)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    struct nbuf_pool *p = huge_pool(c, 0);
    size_t size = (3u << 20) + 1; /* 3 MiB + 4 KiB once rounded */
    uint8_t *mem = NULL;
    for (unsigned i = 0; i < 100; i++) {
        struct nbuf *b = nbuf_alloc(p, size);
        cr_assert_not_null(b);
        cr_assert_eq(b->kind, NBUF_KIND_HUGE);
        cr_assert_eq(nbuf_capacity(b), (3u << 20) + 4096);
        if (i)
            cr_assert_eq(b->mem, mem, "extent not reused");
        mem = b->mem;
        t_buf_fill(b, i);
        cr_assert(t_buf_verify(b, i));
        cr_assert_eq(nbuf_release(b), 1);
    }
    cr_assert_eq(c->allocs, 1);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.cached_bytes, (3u << 20) + 4096);
    cr_assert_eq(st.backing_bytes, (3u << 20) + 4096, "a cached extent stays charged");
    cr_assert_eq(st.huge_allocations, 100);
    cr_assert_eq(st.live_buffers, 0);
    /* Another size does not take it; the cache is bounded. */
    struct nbuf *v[NBUF_HUGE_SLOTS + 2];
    for (unsigned i = 0; i < NBUF_HUGE_SLOTS + 2; i++)
        cr_assert_not_null(v[i] = nbuf_alloc(p, (2u << 20) + i * 8192));
    cr_assert_eq(c->allocs, 1 + NBUF_HUGE_SLOTS + 2);
    for (unsigned i = 0; i < NBUF_HUGE_SLOTS + 2; i++)
        cr_assert_eq(nbuf_release(v[i]), 1);
    cr_assert_leq(p->huge_cache.n, NBUF_HUGE_SLOTS);
    cr_assert_leq(nbuf_huge_cached_bytes_(p), NBUF_HUGE_CACHE_BYTES);
    cr_assert_eq(c->outstanding, (long)p->huge_cache.n);
    /* Trim frees them all. */
    cr_assert_eq(nbuf_pool_trim(p), 0);
    cr_assert_eq(c->outstanding, 0);
    cr_assert_eq(t_stats(p).backing_bytes, 0);
    t_pool_done(p);
    t_thread_assert_ok();
    free(c);
}

/* Cached extents count against memory_limit, and the limit's trim frees
 * them before it refuses anything. */
Test(backing, huge_cache_yields_to_memory_limit)
{
    if (t_bypass())
        cr_skip("bypass: the backing is not used");
    struct counting *c = counting_new();
    struct nbuf_pool *p = huge_pool(c, 8u << 20);
    struct nbuf *b = nbuf_alloc(p, 6u << 20);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(t_stats(p).backing_bytes, 6u << 20);
    /* 5 MiB does not fit beside the cached 6 MiB: trim, then it does. */
    b = nbuf_alloc(p, 5u << 20);
    cr_assert_not_null(b, "the cached extent was not given back under the limit");
    cr_assert_eq(t_stats(p).backing_bytes, 5u << 20);
    cr_assert_eq(t_stats(p).limit_failures, 0);
    cr_assert_eq(nbuf_release(b), 1);
    t_pool_done(p);
    cr_assert_eq(c->outstanding, 0);
    t_thread_assert_ok();
    free(c);
}
