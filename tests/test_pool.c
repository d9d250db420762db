/* SPDX-License-Identifier: MIT */
/* Pools: config validation, sizes from 0 B to 9 MiB and every class boundary,
 * refused sizes, double release, memory_limit, trim, -EBUSY, configs
 * (CHECKLIST A1, A2, A5, B8, F41). */
#include "common.h"

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

/* ---- configuration ---- */

Test(pool, config_defaults)
{
    struct nbuf_pool_config cfg;
    memset(&cfg, 0x5a, sizeof(cfg));
    nbuf_pool_config_init(&cfg);
    cr_assert_eq(cfg.page_size, 8192);
    cr_assert_eq(cfg.chunk_size, 4u << 20);
    cr_assert_eq(cfg.arenas, 0);
    cr_assert_eq(cfg.cache_small_count, 128);
    cr_assert_eq(cfg.cache_normal_count, 16);
    cr_assert_eq(cfg.cache_max_size, 64u << 10);
    cr_assert_eq(cfg.memory_limit, 0);
    cr_assert_eq(cfg.max_buffer_size, (size_t)1 << 30);
    cr_assert_eq(cfg.flags, 0);
    cr_assert_null(cfg.chunk_alloc);
    nbuf_pool_config_init(NULL);
    struct nbuf_pool *p = t_pool_new(NULL);
    cr_assert_geq(p->narenas, 1);
    cr_assert_eq(t_stats(p).arenas, p->narenas);
    t_pool_done(p);
}

static void *
dummy_alloc(size_t size, size_t align, void *ctx)
{
    (void)ctx;
    return aligned_alloc(align, size);
}

static void
dummy_free(void *ptr, size_t size, void *ctx)
{
    (void)size;
    (void)ctx;
    free(ptr);
}

struct bad_cfg {
    const char *what;
    void (*set)(struct nbuf_pool_config *c);
};

#define BAD(name, stmt)                                                                            \
    static void bad_##name(struct nbuf_pool_config *c)                                             \
    {                                                                                              \
        stmt;                                                                                      \
    }
BAD(page_zero, c->page_size = 0)
BAD(page_not_pow2, c->page_size = 12288)
BAD(page_too_small, c->page_size = 2048)
BAD(page_too_big, c->page_size = 2u << 20)
BAD(chunk_zero, c->chunk_size = 0)
BAD(chunk_not_pow2, c->chunk_size = 3u << 20)
BAD(chunk_below_8_pages, c->chunk_size = 4 * c->page_size)
BAD(chunk_too_many_pages, (c->page_size = 4096, c->chunk_size = (size_t)4096 * 131072))
BAD(chunk_above_1g, (c->page_size = 1u << 20, c->chunk_size = (size_t)2 << 30))
BAD(arenas_too_many, c->arenas = 1025)
BAD(cache_small_too_big, c->cache_small_count = 65537)
BAD(cache_normal_too_big, c->cache_normal_count = 65537)
BAD(max_buffer_zero, c->max_buffer_size = 0)
BAD(max_buffer_huge, c->max_buffer_size = SIZE_MAX)
BAD(max_buffer_quarter_plus_one, c->max_buffer_size = (SIZE_MAX >> 2) + 1)
BAD(unknown_flag, c->flags = 1u << 20)
BAD(unknown_backing, c->backing = (enum nbuf_backing_kind)7)
BAD(custom_no_callbacks, c->backing = NBUF_BACKING_CUSTOM)
BAD(custom_no_free, (c->backing = NBUF_BACKING_CUSTOM, c->chunk_alloc = dummy_alloc))
BAD(custom_no_alloc, (c->backing = NBUF_BACKING_CUSTOM, c->chunk_free = dummy_free))
BAD(size_zero, c->size = 0)
BAD(size_newer_than_the_library, c->size = sizeof(*c) + 8)
BAD(decay_below_minus_one, c->decay_ms = -2)
#undef BAD

Test(pool, config_each_invalid_field)
{
    static const struct bad_cfg bad[] = {
#define B(n) {#n, bad_##n}
        B(page_zero),
        B(page_not_pow2),
        B(page_too_small),
        B(page_too_big),
        B(chunk_zero),
        B(chunk_not_pow2),
        B(chunk_below_8_pages),
        B(chunk_too_many_pages),
        B(chunk_above_1g),
        B(arenas_too_many),
        B(cache_small_too_big),
        B(cache_normal_too_big),
        B(max_buffer_zero),
        B(max_buffer_huge),
        B(max_buffer_quarter_plus_one),
        B(unknown_flag),
        B(unknown_backing),
        B(custom_no_callbacks),
        B(custom_no_free),
        B(custom_no_alloc),
        B(size_zero),
        B(size_newer_than_the_library),
        B(decay_below_minus_one),
#undef B
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct nbuf_pool_config cfg;
        nbuf_pool_config_init(&cfg);
        bad[i].set(&cfg);
        errno = 0;
        struct nbuf_pool *p = nbuf_pool_new(&cfg);
        cr_assert_null(p, "%s accepted", bad[i].what);
        cr_assert_eq(errno, EINVAL, "%s: errno %d", bad[i].what, errno);
    }
}

/* The edges of every range are accepted. */
Test(pool, config_edges_accepted)
{
    struct nbuf_pool_config ok[6];
    ok[0] = cfg_of(4096, 8 * 4096, 1, 0);
    ok[1] = cfg_of(4096, (size_t)4096 * 65536, 1, 0);
    ok[2] = cfg_of(1u << 20, (size_t)1 << 30, 1, 0);
    ok[3] = cfg_of(8192, 4u << 20, 1024, 0);
    ok[3].cache_small_count = 0; /* no stashes: 1024 arenas stay small */
    ok[3].cache_normal_count = 0;
    ok[4] = cfg_of(8192, 4u << 20, 1, NBUF_POOL_ZERO | NBUF_POOL_SCRUB | NBUF_POOL_NO_CACHE);
    ok[4].max_buffer_size = SIZE_MAX >> 2;
    ok[4].cache_max_size = SIZE_MAX;
    ok[5] = cfg_of(8192, 4u << 20, 1, 0);
    ok[5].backing = NBUF_BACKING_CUSTOM;
    ok[5].chunk_alloc = dummy_alloc;
    ok[5].chunk_free = dummy_free;
    ok[5].cache_max_size = 0;
    ok[5].max_buffer_size = 1;
    for (unsigned i = 0; i < 6; i++) {
        struct nbuf_pool *p = t_pool_new(&ok[i]);
        struct nbuf *b = nbuf_alloc(p, 1);
        cr_assert_not_null(b, "config %u: %s", i, strerror(errno));
        t_buf_fill(b, i);
        cr_assert(t_buf_verify(b, i));
        cr_assert_eq(nbuf_release(b), 1);
        t_pool_done(p);
    }
}

Test(pool, null_and_default_pool)
{
    cr_assert_eq(nbuf_pool_free(NULL), -EINVAL);
    cr_assert_eq(nbuf_pool_trim(NULL), -EINVAL);
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(NULL, &st), -EINVAL);
    struct nbuf_pool *d = nbuf_pool_default();
    cr_assert_not_null(d);
    cr_assert_eq(nbuf_pool_default(), d);
    cr_assert_eq(nbuf_pool_stats(d, NULL), -EINVAL);
    struct nbuf *b = nbuf_alloc(NULL, 1000);
    cr_assert_not_null(b);
    cr_assert_eq(b->pool, d);
    t_buf_fill(b, 3);
    cr_assert_eq(nbuf_pool_free(d), -EINVAL, "the default pool must never be freed");
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(nbuf_pool_trim(d), 0);
    cr_assert(nbuf_pool_check_(d));
    cr_assert_eq(t_stats(d).live_buffers, 0);
}

/* ---- sizes ---- */

static void
alloc_fill_verify(struct nbuf_pool *p, size_t size)
{
    struct nbuf *b = nbuf_alloc(p, size);
    cr_assert_not_null(b, "size %zu: %s", size, strerror(errno));
    size_t cap = nbuf_capacity(b);
    cr_assert_geq(cap, size, "size %zu got capacity %zu", size, cap);
    cr_assert_eq(nbuf_readable(b), 0);
    cr_assert_eq(nbuf_writable(b), cap);
    if (!t_bypass()) {
        if (size <= p->cfg.chunk_size) {
            unsigned szind = nbuf_sz_index_(size);
            cr_assert_eq(b->szind, szind, "size %zu", size);
            cr_assert_eq(cap, nbuf_sz_usize_(szind));
            cr_assert_eq(b->kind, szind < p->nsmall ? NBUF_KIND_SMALL : NBUF_KIND_RUN);
        } else {
            cr_assert_eq(b->kind, NBUF_KIND_HUGE, "size %zu", size);
            cr_assert_lt(cap - size, 4096);
        }
    }
    t_buf_fill(b, size);
    cr_assert_eq(nbuf_readable(b), cap);
    cr_assert(t_buf_verify(b, size), "size %zu: capacity %zu does not read back", size, cap);
    cr_assert_eq(nbuf_release(b), 1);
}

/* Every size up to 8 KiB, then every class boundary +-1 and a 3 % stride up
 * to 9 MiB (huge buffers past the 4 MiB chunk): the whole capacity is
 * written and read back. */
Test(pool, every_size_1b_to_9mib, .timeout = 120)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    const size_t top = 9u << 20;
    for (size_t s = 0; s <= 8192; s++)
        alloc_fill_verify(p, s);
    for (unsigned i = 0; i < NBUF_NCLASSES && nbuf_sz_usize_(i) <= top; i++) {
        size_t u = nbuf_sz_usize_(i);
        if (u <= 8192)
            continue;
        alloc_fill_verify(p, u - 1);
        alloc_fill_verify(p, u);
        alloc_fill_verify(p, u + 1);
    }
    for (size_t s = 8193; s <= top; s += s / 32 + 7)
        alloc_fill_verify(p, s);
    alloc_fill_verify(p, top - 1);
    alloc_fill_verify(p, top);
    t_pool_check(p);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.allocations, st.releases);
    if (!t_bypass())
        cr_assert_gt(st.huge_allocations, 0);
    t_pool_done(p);
}

/* Class max, page, 4 pages (subpage/run split) and chunk, each +-1, in
 * several geometries. */
static void
boundaries(size_t page, size_t chunk)
{
    struct nbuf_pool_config cfg = cfg_of(page, chunk, 1, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    for (unsigned i = 0; i < p->nclasses; i++) {
        size_t u = nbuf_sz_usize_(i);
        alloc_fill_verify(p, u - 1);
        alloc_fill_verify(p, u);
        alloc_fill_verify(p, u + 1);
    }
    const size_t edges[] = {page, 4 * page, chunk, 2 * chunk};
    for (unsigned k = 0; k < 4; k++) {
        alloc_fill_verify(p, edges[k] - 1);
        alloc_fill_verify(p, edges[k]);
        alloc_fill_verify(p, edges[k] + 1);
    }
    t_pool_done(p);
}

Test(pool, class_boundaries_default)
{
    boundaries(8192, 4u << 20);
}

Test(pool, class_boundaries_tiny_chunks)
{
    boundaries(4096, 32u << 10);
}

Test(pool, class_boundaries_big_pages)
{
    boundaries(65536, 8u << 20);
}

Test(pool, alloc_zero_is_a_real_buffer)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *a = nbuf_alloc(p, 0), *b = nbuf_alloc(p, 0);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_neq(a, b);
    cr_assert_eq(nbuf_refcnt(a), 1);
    cr_assert_eq(nbuf_readable(a), 0);
    if (!t_bypass())
        cr_assert_neq(a->mem, b->mem, "two empty buffers share memory");
    /* Whatever capacity it has is its own to write. */
    t_buf_fill(a, 1);
    t_buf_fill(b, 2);
    cr_assert(t_buf_verify(a, 1));
    cr_assert(t_buf_verify(b, 2));
    /* And it can grow like any buffer. */
    cr_assert_eq(nbuf_write(a, "hello", 5), 0);
    cr_assert_eq(nbuf_release(a), 1);
    cr_assert_eq(nbuf_release(b), 1);
    t_pool_done(p);
}

static void
refused(struct nbuf_pool *p, size_t size)
{
    struct nbuf_pool_stats before = t_stats(p);
    errno = 0;
    struct nbuf *b = nbuf_alloc(p, size);
    cr_assert_null(b, "size %zu was granted", size);
    cr_assert_eq(errno, EINVAL, "size %zu: errno %d", size, errno);
    struct nbuf_pool_stats after = t_stats(p);
    t_stats_assert_same(&before, &after);
    cr_assert_eq(after.limit_failures, before.limit_failures);
}

Test(pool, oversize_refused_without_side_effects)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    const size_t sizes[] = {SIZE_MAX,
                            SIZE_MAX - 1,
                            SIZE_MAX - 15,
                            SIZE_MAX - 4095,
                            SIZE_MAX >> 1,
                            (size_t)1 << 40,
                            p->cfg.max_buffer_size + 1,
                            (size_t)4 << 30};
    for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        refused(p, sizes[i]);
    cr_assert_eq(t_stats(p).chunks, 0, "a refused size took a chunk");
    cr_assert_eq(t_stats(p).backing_bytes, 0);
    /* nbuf_alloc_ex: capacity above max_capacity, max above the pool's. */
    errno = 0;
    cr_assert_null(nbuf_alloc_ex(p, 10, 9, 0));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(nbuf_alloc_ex(p, 10, p->cfg.max_buffer_size + 1, 0));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(nbuf_alloc_ex(p, 10, 100, 1u << 9));
    cr_assert_eq(errno, EINVAL);
    t_pool_done(p);
}

/* A pool with a small max_buffer_size: the bound itself is fine, +1 is not. */
Test(pool, max_buffer_size_bound)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 1, 0);
    cfg.max_buffer_size = 100000;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf *b = nbuf_alloc(p, 100000);
    cr_assert_not_null(b);
    /* Class slack above max_buffer_size is hidden. */
    cr_assert_eq(nbuf_capacity(b), 100000);
    t_buf_fill(b, 5);
    cr_assert(t_buf_verify(b, 5));
    cr_assert_eq(nbuf_write(b, "x", 1), -ENOBUFS);
    refused(p, 100001);
    refused(p, SIZE_MAX);
    cr_assert_eq(nbuf_release(b), 1);
    t_pool_done(p);
}

/* A3: the size arithmetic around a buffer never wraps. */
Test(pool, size_arithmetic_overflow)
{
    size_t r;
    cr_assert(nbuf_add_overflow_(SIZE_MAX, 1, &r));
    cr_assert_not(nbuf_add_overflow_(SIZE_MAX - 1, 1, &r));
    cr_assert_eq(r, SIZE_MAX);
    cr_assert(nbuf_mul_overflow_((SIZE_MAX >> 1) + 1, 2, &r));
    cr_assert_not(nbuf_mul_overflow_(SIZE_MAX >> 1, 2, &r));
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = nbuf_alloc(p, 100);
    cr_assert_eq(nbuf_write(b, "abc", 3), 0);
    struct nbuf_pool_stats before = t_stats(p);
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 2, SIZE_MAX - 3, (SIZE_MAX >> 2) + 1};
    for (unsigned i = 0; i < 4; i++) {
        errno = 0;
        cr_assert_null(nbuf_reserve(b, huge[i]), "reserve %zu", huge[i]);
        cr_assert_eq(errno, ENOBUFS);
        cr_assert_eq(nbuf_commit(b, huge[i]), -EINVAL, "commit %zu", huge[i]);
        cr_assert_eq(nbuf_write(b, "x", huge[i]), -ENOBUFS, "write %zu", huge[i]);
        errno = 0;
        cr_assert_null(nbuf_alloc_ex(p, huge[i], huge[i], NBUF_ALIGN_PAGE));
        cr_assert_eq(errno, EINVAL);
    }
    /* Nothing moved: same cursors, same bytes, no allocation. */
    cr_assert_eq(nbuf_readable(b), 3);
    cr_assert(memcmp(nbuf_data(b), "abc", 3) == 0);
    struct nbuf_pool_stats after = t_stats(p);
    t_stats_assert_same(&before, &after);
    cr_assert_eq(nbuf_release(b), 1);
    t_pool_done(p);
}

/* The largest allowed size, far above what the backing can give: ENOMEM,
 * nothing charged. */
Test(pool, unsatisfiable_huge_size)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator sees the size");
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 1, 0);
    cfg.max_buffer_size = SIZE_MAX >> 2;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf_pool_stats before = t_stats(p);
    errno = 0;
    cr_assert_null(nbuf_alloc(p, SIZE_MAX >> 2));
    cr_assert_eq(errno, ENOMEM);
    struct nbuf_pool_stats after = t_stats(p);
    t_stats_assert_same(&before, &after);
    cr_assert_eq(after.backing_bytes, 0);
    t_pool_done(p);
}

/* ---- reference counting (B8) ---- */

Test(pool, double_release_detected)
{
    if (t_bypass())
        cr_skip("bypass: the memory is gone after the first release");
    t_capture_reports();
    struct nbuf_pool *p = t_pool_new(NULL);
    static const size_t sizes[] = {10, 20000, 100000, 5u << 20};
    for (unsigned i = 0; i < 4; i++) {
        struct nbuf *b = nbuf_alloc(p, sizes[i]);
        cr_assert_not_null(b);
        struct nbuf_pool_stats s0 = t_stats(p);
        unsigned r0 = t_reports();
        cr_assert_eq(nbuf_release(b), 1);
        cr_assert_eq(nbuf_release(b), -EINVAL, "size %zu: second release accepted", sizes[i]);
        cr_assert_eq(t_reports(), r0 + 1, "double release not reported");
        cr_assert(strstr(t_report_text(), "released") != NULL, "report: %s", t_report_text());
        struct nbuf_pool_stats s1 = t_stats(p);
        cr_assert_eq(s1.releases, s0.releases + 1, "release count rose by %llu",
                     (unsigned long long)(s1.releases - s0.releases));
        cr_assert_eq(s1.live_buffers, s0.live_buffers - 1);
        /* The memory went back once: the next two allocations differ. */
        struct nbuf *x = nbuf_alloc(p, sizes[i]), *y = nbuf_alloc(p, sizes[i]);
        cr_assert_not_null(x);
        cr_assert_not_null(y);
        cr_assert_neq(x, y);
        cr_assert_neq(nbuf_data(x), nbuf_data(y), "one buffer handed out twice");
        t_pool_check(p);
        nbuf_release(x);
        nbuf_release(y);
    }
    /* With a shared count: the third release of a twice-held buffer. */
    struct nbuf *b = nbuf_alloc(p, 64);
    cr_assert_eq(nbuf_retain(b), b);
    cr_assert_eq(nbuf_release(b), 0);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(nbuf_release(b), -EINVAL);
    cr_assert_null(nbuf_retain(b), "a dead buffer was revived");
    t_pool_done(p);
}

/* ---- pool lifetime ---- */

Test(pool, free_busy_while_live_then_usable)
{
    t_capture_reports();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *v[3];
    for (unsigned i = 0; i < 3; i++)
        v[i] = nbuf_alloc(p, 100 * (i + 1));
    nbuf_release(v[0]);
    nbuf_release(v[2]);
    unsigned r0 = t_reports();
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    cr_assert_gt(t_reports(), r0, "no leak report");
    cr_assert(strstr(t_report_text(), "1 live") != NULL, "report: %s", t_report_text());
    /* Still fully usable. */
    t_pool_check(p);
    struct nbuf *b = nbuf_alloc(p, 5000);
    cr_assert_not_null(b);
    t_buf_fill(b, 9);
    cr_assert(t_buf_verify(b, 9));
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    nbuf_release(b);
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    nbuf_release(v[1]);
    t_pool_done(p);
}

Test(pool, trim_returns_empty_chunks)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 2, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    enum { N = 600 };
    struct nbuf **v = calloc(N, sizeof(*v));
    uint64_t s = 7;
    for (unsigned i = 0; i < N; i++) {
        v[i] = nbuf_alloc(p, 1 + t_rand(&s) % (i % 10 == 0 ? 1u << 20 : 20000));
        cr_assert_not_null(v[i]);
    }
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_gt(st.chunks, 2);
    cr_assert_eq(st.backing_bytes, st.chunks << 20);
    for (unsigned i = 0; i < N; i++)
        nbuf_release(v[(i * 7) % N]);
    free(v);
    st = t_stats(p);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_gt(st.cached_bytes, 0, "nothing cached: the test does not test trim");
    cr_assert_eq(nbuf_pool_trim(p), 0);
    t_pool_check(p);
    st = t_stats(p);
    cr_assert_eq(st.chunks, 0, "%llu chunks left after trim", (unsigned long long)st.chunks);
    cr_assert_eq(st.backing_bytes, 0);
    cr_assert_eq(st.cached_bytes, 0);
    cr_assert_eq(st.empty_chunks, 0);
    /* And the pool works as before. */
    struct nbuf *b = nbuf_alloc(p, 300000);
    cr_assert_not_null(b);
    nbuf_release(b);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    t_pool_done(p);
}

/* ---- memory_limit (F41) ---- */

Test(pool, memory_limit_trim_retry_then_enomem)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    t_capture_reports();
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 1, 0);
    cfg.memory_limit = 2u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    if (p->cfg.flags & NBUF_POOL_NO_CACHE) {
        t_pool_done(p);
        cr_skip("needs thread caches");
    }
    /* Chunk 1 filled by 15 x 64 KiB that end up idle in the thread cache and
     * the arena stash (both bounded by bytes, so some go back to the chunk;
     * what stays keeps chunk 1 from being empty). The bin's fills grow
     * (1, 2, 4, 4, 4 pairs): 15 allocations take exactly 15 pairs. */
    struct nbuf *c[15];
    for (unsigned i = 0; i < 15; i++)
        cr_assert_not_null(c[i] = nbuf_alloc(p, 65536));
    for (unsigned i = 0; i < 15; i++)
        nbuf_release(c[i]);
    cr_assert_eq(t_stats(p).chunks, 1);
    cr_assert_gt(t_stats(p).cached_bytes, 0);
    /* Chunk 2, then a third would pass the limit: trim frees chunk 1, the
     * retry succeeds. */
    struct nbuf *x = nbuf_alloc(p, 1u << 20);
    cr_assert_not_null(x);
    struct nbuf *y = nbuf_alloc(p, 1u << 20);
    cr_assert_not_null(y, "trim and retry did not make room: %s", strerror(errno));
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.limit_failures, 0);
    cr_assert_eq(st.chunks, 2);
    cr_assert_eq(st.backing_bytes, 2u << 20);
    t_pool_check(p);
    /* Half of chunk 2 in use; a whole chunk more cannot fit. */
    nbuf_release(y);
    struct nbuf *z = nbuf_alloc(p, 512u << 10);
    cr_assert_not_null(z);
    cr_assert_eq(t_stats(p).chunks, 2);
    struct nbuf_pool_stats before = t_stats(p);
    unsigned r0 = t_reports();
    errno = 0;
    cr_assert_null(nbuf_alloc(p, 1u << 20));
    cr_assert_eq(errno, ENOMEM);
    struct nbuf_pool_stats after = t_stats(p);
    t_stats_assert_same(&before, &after);
    cr_assert_eq(after.limit_failures, before.limit_failures + 1);
    cr_assert_gt(t_reports(), r0, "limit failure not reported");
    cr_assert(strstr(t_report_text(), "memory_limit") != NULL, "report: %s", t_report_text());
    /* A huge buffer (straight from the backing) is refused the same way. */
    errno = 0;
    cr_assert_null(nbuf_alloc(p, 3u << 20));
    cr_assert_eq(errno, ENOMEM);
    after = t_stats(p);
    before.limit_failures++;
    t_stats_assert_same(&before, &after);
    cr_assert_eq(after.limit_failures, before.limit_failures + 1);
    t_pool_check(p);
    /* Smaller allocations still fit in what the limit allows. */
    struct nbuf *w = nbuf_alloc(p, 256u << 10), *s = nbuf_alloc(p, 100);
    cr_assert_not_null(w);
    cr_assert_not_null(s);
    t_buf_fill(w, 1);
    cr_assert(t_buf_verify(w, 1));
    cr_assert_leq(t_stats(p).backing_bytes, cfg.memory_limit);
    nbuf_release(w);
    nbuf_release(s);
    nbuf_release(z);
    nbuf_release(x);
    t_pool_done(p);
}

/* A huge buffer over the limit: the trim frees idle cached chunks, the retry
 * succeeds; the same request later, with everything live, fails cleanly. */
Test(pool, memory_limit_huge_trim_retry)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    t_capture_reports();
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 1, 0);
    cfg.memory_limit = 3u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    /* Two chunks of idle memory: cached pairs and the empty spare (15
     * allocations take 15 pairs, as above). */
    struct nbuf *c[15];
    for (unsigned i = 0; i < 15; i++)
        cr_assert_not_null(c[i] = nbuf_alloc(p, 65536));
    struct nbuf *x = nbuf_alloc(p, 1u << 20);
    cr_assert_not_null(x);
    for (unsigned i = 0; i < 15; i++)
        nbuf_release(c[i]);
    nbuf_release(x);
    cr_assert_eq(t_stats(p).chunks, 2);
    struct nbuf *h = nbuf_alloc(p, (2u << 20) + 1);
    cr_assert_not_null(h, "trim did not make room for a huge buffer: %s", strerror(errno));
    cr_assert_eq(h->kind, NBUF_KIND_HUGE);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.limit_failures, 0);
    cr_assert_leq(st.backing_bytes, cfg.memory_limit);
    t_buf_fill(h, 4);
    struct nbuf *y = nbuf_alloc(p, 1u << 20);
    cr_assert_null(y, "over the limit");
    cr_assert_eq(errno, ENOMEM);
    cr_assert_eq(t_stats(p).limit_failures, 1);
    cr_assert(t_buf_verify(h, 4));
    nbuf_release(h);
    cr_assert_not_null(y = nbuf_alloc(p, 1u << 20));
    nbuf_release(y);
    t_pool_done(p);
}

/* A limit below one chunk: pooled sizes all fail, nothing is leaked. */
Test(pool, memory_limit_below_a_chunk)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    t_capture_reports();
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 1, 0);
    cfg.memory_limit = 512u << 10;
    struct nbuf_pool *p = t_pool_new(&cfg);
    static const size_t sizes[] = {1, 100, 5000, 65536, 1u << 20, 2u << 20};
    for (unsigned i = 0; i < 6; i++) {
        errno = 0;
        cr_assert_null(nbuf_alloc(p, sizes[i]), "size %zu", sizes[i]);
        cr_assert_eq(errno, ENOMEM);
    }
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.limit_failures, 6);
    cr_assert_eq(st.allocations, 0);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.backing_bytes, 0);
    t_pool_done(p);
}

/* ---- configurations (G47) ---- */

/* Random live set of log-uniform sizes, some huge, each verified on release. */
static void
workload(struct nbuf_pool *p, uint64_t seed, unsigned steps)
{
    enum { LIVE = 256 };
    struct nbuf *live[LIVE] = {0};
    uint64_t tags[LIVE];
    uint64_t s = seed;
    size_t max_huge = p->cfg.chunk_size * 2 + 12345;
    for (unsigned i = 0; i < steps; i++) {
        unsigned k = (unsigned)(t_rand(&s) % LIVE);
        if (live[k]) {
            cr_assert(t_buf_verify(live[k], tags[k]), "step %u: buffer corrupted", i);
            cr_assert_eq(nbuf_release(live[k]), 1);
            live[k] = NULL;
            continue;
        }
        size_t size = (size_t)1 << (t_rand(&s) % 18);
        size += t_rand(&s) % size;
        if (t_rand(&s) % 64 == 0)
            size = p->cfg.chunk_size - 1 + t_rand(&s) % (max_huge - p->cfg.chunk_size);
        live[k] = nbuf_alloc(p, size);
        cr_assert_not_null(live[k], "size %zu: %s", size, strerror(errno));
        tags[k] = t_rand(&s);
        t_buf_fill(live[k], tags[k]);
        if (i % 256 == 0)
            t_pool_check(p);
    }
    for (unsigned k = 0; k < LIVE; k++) {
        if (live[k]) {
            cr_assert(t_buf_verify(live[k], tags[k]));
            nbuf_release(live[k]);
        }
    }
    t_pool_check(p);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    if (!t_bypass())
        cr_assert_eq(t_stats(p).chunks, 0, "chunks left after release and trim");
}

Test(pool, config_default)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    workload(p, 1, 4000);
    t_pool_done(p);
}

Test(pool, config_no_cache)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 0, NBUF_POOL_NO_CACHE);
    struct nbuf_pool *p = t_pool_new(&cfg);
    workload(p, 2, 4000);
    if (!t_bypass())
        cr_assert_eq(t_stats(p).cache_hits, 0);
    t_pool_done(p);
}

Test(pool, config_one_arena)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 4u << 20, 1, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    cr_assert_eq(p->narenas, 1);
    workload(p, 3, 4000);
    t_pool_done(p);
}

Test(pool, config_tiny_chunks)
{
    struct nbuf_pool_config cfg = cfg_of(4096, 32u << 10, 2, 0);
    struct nbuf_pool *p = t_pool_new(&cfg);
    workload(p, 4, 4000);
    t_pool_done(p);
}

Test(pool, config_tiny_chunks_no_cache_one_arena)
{
    struct nbuf_pool_config cfg = cfg_of(4096, 32u << 10, 1, NBUF_POOL_NO_CACHE);
    struct nbuf_pool *p = t_pool_new(&cfg);
    workload(p, 5, 4000);
    t_pool_done(p);
}

Test(pool, config_small_caches)
{
    struct nbuf_pool_config cfg = cfg_of(16384, 1u << 20, 2, 0);
    cfg.cache_small_count = 1;
    cfg.cache_normal_count = 1;
    cfg.cache_max_size = 1u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    workload(p, 6, 4000);
    t_pool_done(p);
}

Test(pool, config_zero_and_scrub)
{
    struct nbuf_pool_config cfg = cfg_of(8192, 1u << 20, 1, NBUF_POOL_ZERO | NBUF_POOL_SCRUB);
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf *b = nbuf_alloc(p, 3000);
    t_buf_fill(b, 77);
    nbuf_release(b);
    b = nbuf_alloc(p, 3000);
    for (size_t i = 0; i < nbuf_capacity(b); i++)
        cr_assert_eq(nbuf_reserve(b, 0)[i], 0, "byte %zu of a fresh buffer not zero", i);
    nbuf_release(b);
    workload(p, 7, 1500);
    t_pool_done(p);
}

/* ---- the default pool's NBUF_* environment (each test is its own process,
 * so the default pool is created here, from this environment) ---- */

Test(pool, default_pool_from_environment)
{
    t_capture_reports();
    setenv("NBUF_PAGE_SIZE", "16k", 1);
    setenv("NBUF_CHUNK_SIZE", "2M", 1);
    setenv("NBUF_ARENAS", "3", 1);
    setenv("NBUF_CACHE_SMALL", "7", 1);
    setenv("NBUF_CACHE_NORMAL", "5", 1);
    setenv("NBUF_CACHE_MAX_SIZE", "32kb", 1);
    setenv("NBUF_MEMORY_LIMIT", "64m", 1);
    setenv("NBUF_MAX_BUFFER_SIZE", "10M", 1);
    setenv("NBUF_BACKING", "mmap", 1);
    struct nbuf_pool *p = nbuf_pool_default();
    cr_assert_not_null(p);
    cr_assert_eq(t_reports(), 0, "reports: %s", t_report_text());
    cr_assert_eq(p->cfg.page_size, 16384);
    cr_assert_eq(p->cfg.chunk_size, 2u << 20);
    cr_assert_eq(p->narenas, 3);
    cr_assert_eq(p->cfg.cache_small_count, 7);
    cr_assert_eq(p->cfg.cache_normal_count, 5);
    cr_assert_eq(p->cfg.cache_max_size, 32u << 10);
    cr_assert_eq(p->cfg.memory_limit, 64u << 20);
    cr_assert_eq(p->cfg.max_buffer_size, 10u << 20);
    cr_assert_eq(p->cfg.backing, NBUF_BACKING_MMAP);
    errno = 0;
    cr_assert_null(nbuf_alloc(NULL, (10u << 20) + 1));
    cr_assert_eq(errno, EINVAL);
    struct nbuf *b = nbuf_alloc(NULL, 10u << 20);
    cr_assert_not_null(b);
    t_buf_fill(b, 2);
    cr_assert(t_buf_verify(b, 2));
    nbuf_release(b);
    cr_assert(nbuf_pool_check_(p));
}

Test(pool, default_pool_bad_environment_falls_back)
{
    t_capture_reports();
    setenv("NBUF_CHUNK_SIZE", "lots", 1); /* not a size: ignored */
    setenv("NBUF_BACKING", "floppy", 1);  /* unknown: ignored */
    setenv("NBUF_MEMORY_LIMIT", "99999999999999999999g", 1);
    setenv("NBUF_PAGE_SIZE", "3000", 1); /* a size, but an invalid config */
    struct nbuf_pool *p = nbuf_pool_default();
    cr_assert_not_null(p, "no default pool: %s", strerror(errno));
    cr_assert_geq(t_reports(), 4, "reports: %s", t_report_text());
    cr_assert(strstr(t_report_text(), "NBUF_CHUNK_SIZE") != NULL);
    cr_assert(strstr(t_report_text(), "NBUF_BACKING") != NULL);
    /* Each bad variable is dropped on its own (here all of them are), so
     * the defaults stay. */
    struct nbuf_pool_config def;
    nbuf_pool_config_init(&def);
    cr_assert_eq(p->cfg.page_size, def.page_size);
    cr_assert_eq(p->cfg.chunk_size, def.chunk_size);
    cr_assert_eq(p->cfg.memory_limit, 0);
    struct nbuf *b = nbuf_alloc(NULL, 100);
    cr_assert_not_null(b);
    nbuf_release(b);
}

/* ---- the default pool's NBUF_* variables, one by one (issue 16) ---- */

/* Criterion runs each case in its own process, so the default pool made
 * here reads this case's environment. Every bad variable is reported by
 * name and dropped; the good ones still apply. */
Test(pool, env_bad_variables_are_reported_one_by_one)
{
    if (t_bypass())
        cr_skip("NBUF_BYPASS=1 makes its own pools");
    t_capture_reports();
    setenv("NBUF_ARENAS", "1", 1);
    setenv("NBUF_PAGE_SIZE", "5000", 1);         /* not a power of two */
    setenv("NBUF_MEMORY_LIMIT", "-1", 1);        /* would wrap */
    setenv("NBUF_CACHE_SMALL", "9999999999", 1); /* above 32 bits */
    setenv("NBUF_BACKING", "MMAP", 1);           /* any case */
    setenv("NBUF_HUGE_PAGES", "garbage", 1);     /* not a boolean */
    struct nbuf_pool *d = nbuf_pool_default();
    cr_assert_not_null(d);
    cr_assert_eq(d->narenas, 1, "NBUF_ARENAS=1 still applies");
    cr_assert_eq(d->cfg.page_size, 8192);
    cr_assert_eq(d->cfg.memory_limit, 0);
    cr_assert_eq(d->cfg.cache_small_count, 128);
    cr_assert_eq(d->cfg.backing, NBUF_BACKING_MMAP);
    cr_assert_eq(d->cfg.huge_pages, 0);
    const char *text = t_report_text();
    cr_assert_eq(t_reports(), 4, "%s", text);
    cr_assert(strstr(text, "NBUF_PAGE_SIZE=5000") != NULL, "%s", text);
    cr_assert(strstr(text, "NBUF_MEMORY_LIMIT=-1") != NULL, "%s", text);
    cr_assert(strstr(text, "NBUF_CACHE_SMALL=9999999999") != NULL, "%s", text);
    cr_assert(strstr(text, "NBUF_HUGE_PAGES=garbage") != NULL, "%s", text);
    cr_assert(strstr(text, "NBUF_ARENAS") == NULL, "%s", text);
}

/* Flag variables apply to every pool; a value that is no boolean is
 * reported and leaves the flag off. */
Test(pool, env_flag_garbage_is_not_on)
{
    if (t_bypass())
        cr_skip("NBUF_BYPASS=1 is itself a flag variable");
    t_capture_reports();
    setenv("NBUF_CHECK", "garbage", 1);
    setenv("NBUF_NO_CACHE", "TRUE", 1);
    unsigned f = nbuf_pool_env_flags_();
    cr_assert_eq(f & NBUF_POOL_CHECKED, 0);
    cr_assert_neq(f & NBUF_POOL_NO_CACHE, 0);
    cr_assert(strstr(t_report_text(), "NBUF_CHECK=garbage") != NULL, "%s", t_report_text());
}

/* ---- ABI: sizes and versions (issue 16) ---- */

/* A caller built against older headers passes a smaller config: the fields
 * it has not got keep their defaults, whatever its memory holds there. */
Test(pool, config_from_an_older_caller_gets_defaults)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cr_assert_eq(cfg.size, sizeof(cfg));
    cfg.arenas = 1;
    cfg.decay_ms = -7;              /* past the older size: not read */
    cfg.cache_thread_bytes = 12345; /* likewise */
    cfg.size = offsetof(struct nbuf_pool_config, cache_large_bytes);
    struct nbuf_pool *p = nbuf_pool_new(&cfg);
    cr_assert_not_null(p, "%s", strerror(errno));
    cr_assert_eq(p->narenas, 1);
    cr_assert_eq(p->decay_ms, NBUF_DECAY_MS_DEFAULT);
    cr_assert_eq(p->cfg.cache_large_bytes, 4u << 20);
    cr_assert_eq(p->cfg.cache_thread_bytes, 12u << 20);
    cr_assert_eq(nbuf_pool_free(p), 0);
}

Test(pool, stats_carry_size_and_version)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(p, &st), 0);
    cr_assert_eq(st.version, NBUF_STATS_VERSION);
    cr_assert_eq(st.size, sizeof(st));
    /* An older, smaller struct is never written past. */
    unsigned char buf[sizeof(st) + 16];
    memset(buf, 0xa5, sizeof(buf));
    size_t small = offsetof(struct nbuf_pool_stats, live_buffers);
    cr_assert_eq(nbuf_pool_stats_sized(p, (struct nbuf_pool_stats *)buf, small), 0);
    for (size_t i = small; i < sizeof(buf); i++)
        cr_assert_eq(buf[i], 0xa5, "byte %zu written", i);
    struct nbuf_pool_stats head;
    memcpy(&head, buf, small);
    cr_assert_eq(head.size, small);
    cr_assert_eq(head.version, NBUF_STATS_VERSION);
    cr_assert_eq(nbuf_pool_stats_sized(p, &st, 4), -EINVAL);
    cr_assert_eq(nbuf_pool_stats_sized(NULL, &st, sizeof(st)), -EINVAL);
    t_pool_done(p);
}

Test(pool, version_matches_the_headers)
{
    cr_assert_eq(nbuf_version(), NBUF_VERSION);
    cr_assert_eq(NBUF_VERSION,
                 NBUF_VERSION_MAJOR * 10000 + NBUF_VERSION_MINOR * 100 + NBUF_VERSION_PATCH);
}
