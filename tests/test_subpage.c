/* SPDX-License-Identifier: MIT */
/* Subpages: bitmapped elements of one small class in a run of pages; filling a
 * class until it needs a new run, and every run going back when emptied. */
#include "common.h"

static struct nbuf_pool *
pool_with(size_t page, size_t chunk, unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = 1;
    cfg.flags = flags;
    return t_pool_new(&cfg);
}

/* A subpage of class szind in a chunk of its own (not on any arena list). */
static struct nbuf_subpage *
subpage_make(struct nbuf_pool *p, struct nbuf_chunk *c, unsigned szind)
{
    uint32_t page = nbuf_chunk_alloc_run_(c, p->run_pages[szind], NBUF_RUN_SUBPAGE);
    cr_assert_neq(page, NBUF_RUN_NONE);
    struct nbuf_subpage *s = nbuf_subpage_new_(c, page, szind, (uint32_t)nbuf_sz_usize_(szind),
                                               p->run_pages[szind], p->run_elems[szind]);
    cr_assert_not_null(s);
    cr_assert(nbuf_chunk_check_(c));
    cr_assert(nbuf_subpage_check_(s));
    T_UNPOISON(s->base, (size_t)s->run_pages << p->lg_page);
    return s;
}

static void
subpage_unmake(struct nbuf_chunk *c, struct nbuf_subpage *s)
{
    uint32_t page = s->page;
    T_POISON(s->base, (size_t)s->run_pages << c->arena->pool->lg_page);
    nbuf_subpage_free_(s);
    nbuf_chunk_free_run_(c, page);
    cr_assert(nbuf_chunk_check_(c));
}

Test(subpage, run_sizes_waste_no_tail)
{
    static const size_t pages[] = {4096, 8192, 65536};
    for (unsigned k = 0; k < 3; k++) {
        struct nbuf_pool *p =
            pool_with(pages[k], 8 * pages[k] > (1u << 20) ? 8 * pages[k] : 1u << 20, 0);
        cr_assert_gt(p->nsmall, 0);
        for (unsigned i = 0; i < p->nsmall; i++) {
            size_t u = nbuf_sz_usize_(i);
            size_t run = (size_t)p->run_pages[i] << p->lg_page;
            cr_assert_lt(u, 4 * pages[k]);
            cr_assert_leq(p->run_pages[i], 7);
            cr_assert_eq(run % u, 0, "page %zu class %zu: tail wasted", pages[k], u);
            cr_assert_eq(p->run_elems[i], run / u);
        }
        /* The first class past the subpage range is a whole number of pages. */
        cr_assert_eq(nbuf_sz_usize_(p->nsmall) % pages[k], 0);
        t_pool_done(p);
    }
}

/* Every element of every small class: handed out once, disjoint, writable. */
Test(subpage, fill_every_class_directly)
{
    struct nbuf_pool *p = pool_with(8192, 4u << 20, 0);
    struct nbuf_chunk *c = nbuf_chunk_new_(&p->arenas[0]);
    cr_assert_not_null(c);
    uint64_t s_rand = 42;
    for (unsigned i = 0; i < p->nsmall; i++) {
        struct nbuf_subpage *s = subpage_make(p, c, i);
        uint32_t n = s->nelems;
        uint8_t *seen = calloc(n, 1);
        uint32_t *order = malloc(n * sizeof(*order));
        for (uint32_t k = 0; k < n; k++) {
            uint32_t idx = nbuf_subpage_alloc_(s);
            cr_assert_lt(idx, n, "class %u: element %u of %u refused", i, k, n);
            cr_assert_eq(seen[idx], 0, "class %u: element %u handed out twice", i, idx);
            seen[idx] = 1;
            order[k] = idx;
            t_pattern_fill(s->base + (size_t)idx * s->elem_size, s->elem_size, idx);
        }
        cr_assert_eq(s->nfree, 0);
        cr_assert_eq(nbuf_subpage_alloc_(s), UINT32_MAX, "class %u: full subpage gave more", i);
        cr_assert(nbuf_subpage_check_(s));
        for (uint32_t idx = 0; idx < n; idx++)
            cr_assert_eq(t_pattern_bad(s->base + (size_t)idx * s->elem_size, s->elem_size, idx),
                         SIZE_MAX, "class %u: element %u overwritten by a neighbour", i, idx);
        /* Release in a random order, checking the bitmap as it empties. */
        for (uint32_t k = n; k > 1; k--) {
            uint32_t j = (uint32_t)(t_rand(&s_rand) % k), t = order[k - 1];
            order[k - 1] = order[j];
            order[j] = t;
        }
        for (uint32_t k = 0; k < n; k++) {
            nbuf_subpage_release_(s, order[k]);
            cr_assert_eq(s->nfree, k + 1);
            if (k % 7 == 0 || k + 1 == n)
                cr_assert(nbuf_subpage_check_(s));
        }
        free(seen);
        free(order);
        subpage_unmake(c, s);
    }
    cr_assert(nbuf_chunk_empty_(c));
    nbuf_chunk_free_(c);
    t_pool_done(p);
}

/* A released element is found again; odd element counts leave no stray bit. */
Test(subpage, release_and_reuse)
{
    struct nbuf_pool *p = pool_with(8192, 4u << 20, 0);
    struct nbuf_chunk *c = nbuf_chunk_new_(&p->arenas[0]);
    /* 48 B: 3 pages hold 512 elements; 80 B: 5 pages, 512; 224 B: 7 pages, 256;
     * 24 KiB: 3 pages hold one. */
    static const size_t sizes[] = {48, 80, 224, 448, 24576, 16};
    for (unsigned k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        unsigned i = nbuf_sz_index_(sizes[k]);
        cr_assert_eq(nbuf_sz_usize_(i), sizes[k]);
        struct nbuf_subpage *s = subpage_make(p, c, i);
        uint32_t n = s->nelems;
        for (uint32_t e = 0; e < n; e++)
            cr_assert_neq(nbuf_subpage_alloc_(s), UINT32_MAX);
        for (uint32_t e = n / 3; e < n; e += 5) {
            nbuf_subpage_release_(s, e);
            cr_assert_eq(nbuf_subpage_alloc_(s), e, "size %zu: freed element %u not reused",
                         sizes[k], e);
        }
        cr_assert(nbuf_subpage_check_(s));
        for (uint32_t e = 0; e < n; e++)
            nbuf_subpage_release_(s, e);
        cr_assert_eq(s->nfree, n);
        subpage_unmake(c, s);
    }
    nbuf_chunk_free_(c);
    t_pool_done(p);
}

/* Subpage runs of the live classes in the arena's chunks. */
static unsigned
subpage_runs(struct nbuf_arena *a, unsigned szind)
{
    unsigned n = 0;
    for (struct nbuf_chunk *c = a->chunks; c; c = c->next)
        for (uint32_t page = 0; page < c->npages; page += c->pages[page].npages)
            if (c->pages[page].state == NBUF_RUN_SUBPAGE && c->subpages[page]->szind == szind)
                n++;
    return n;
}

static void
exhaust_and_return(unsigned flags, size_t size)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool *p = pool_with(8192, 4u << 20, flags);
    struct nbuf_arena *a = &p->arenas[0];
    unsigned szind = nbuf_sz_index_(size);
    cr_assert_lt(szind, p->nsmall);
    uint32_t per_run = p->run_elems[szind];
    uint32_t total = 2 * per_run + 1;
    struct nbuf **b = calloc(total, sizeof(*b));
    for (uint32_t k = 0; k < total; k++) {
        b[k] = nbuf_alloc(p, size);
        cr_assert_not_null(b[k]);
        cr_assert_eq(b[k]->kind, NBUF_KIND_SMALL);
        cr_assert_eq(b[k]->szind, szind);
        t_buf_fill(b[k], k);
        if (flags & NBUF_POOL_NO_CACHE) {
            /* Without caches every element is carved on demand. */
            unsigned want = k / per_run + 1;
            cr_assert_eq(subpage_runs(a, szind), want, "after %u of %u per run: %u runs", k + 1,
                         per_run, subpage_runs(a, szind));
            if ((k + 1) % per_run == 0)
                cr_assert_null(a->partial[szind], "full subpage still on the partial list");
        }
    }
    t_pool_check(p);
    /* A cached pool fills in batches, so it may carve more runs ahead. */
    if (flags & NBUF_POOL_NO_CACHE)
        cr_assert_eq(subpage_runs(a, szind), 3);
    else
        cr_assert_geq(subpage_runs(a, szind), 3);
    for (uint32_t k = 0; k < total; k++) {
        cr_assert(t_buf_verify(b[k], k), "element %u corrupted", k);
        cr_assert_eq(nbuf_release(b[k]), 1);
        if (k % 64 == 0)
            t_pool_check(p);
    }
    free(b);
    /* Caches and stashes hand everything back on trim; emptied runs go back
     * to the chunk except the class's last partial one, which trim frees. */
    if (flags & NBUF_POOL_NO_CACHE)
        cr_assert_leq(subpage_runs(a, szind), 1, "emptied subpage runs not returned");
    cr_assert_eq(nbuf_pool_trim(p), 0);
    t_pool_check(p);
    cr_assert_eq(subpage_runs(a, szind), 0);
    cr_assert_null(a->partial[szind]);
    cr_assert_eq(t_stats(p).chunks, 0, "trim left a chunk");
    t_pool_done(p);
}

Test(subpage, exhaust_and_return_no_cache)
{
    exhaust_and_return(NBUF_POOL_NO_CACHE, 256);
}

Test(subpage, exhaust_and_return_no_cache_big_elements)
{
    exhaust_and_return(NBUF_POOL_NO_CACHE, 20480);
}

Test(subpage, exhaust_and_return_cached)
{
    exhaust_and_return(0, 1000);
}

/* Partly used subpages stay on the partial list; a full one leaves it and
 * comes back when an element is freed. */
Test(subpage, partial_list_membership)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool *p = pool_with(4096, 64u << 10, NBUF_POOL_NO_CACHE);
    struct nbuf_arena *a = &p->arenas[0];
    unsigned szind = nbuf_sz_index_(2048);
    uint32_t per_run = p->run_elems[szind];
    cr_assert_eq(per_run, 2);
    struct nbuf *x = nbuf_alloc(p, 2048);
    struct nbuf_subpage *s = x->slab;
    cr_assert_eq(a->partial[szind], s);
    struct nbuf *y = nbuf_alloc(p, 2000);
    cr_assert_eq(y->slab, s);
    cr_assert_null(a->partial[szind]);
    cr_assert_eq(nbuf_release(x), 1);
    cr_assert_eq(a->partial[szind], s, "subpage with a free element not on the partial list");
    t_pool_check(p);
    cr_assert_eq(nbuf_release(y), 1);
    t_pool_check(p);
    t_pool_done(p);
}
