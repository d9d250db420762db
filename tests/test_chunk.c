/* SPDX-License-Identifier: MIT */
/* Chunks: page runs split from free runs and merged back with both neighbours,
 * checked against a page-by-page model and nbuf_chunk_check_ after each step. */
#include "common.h"

/* A chunk outside any arena list (the arena only lends the pool). */
struct fixture {
    struct nbuf_pool *p;
    struct nbuf_chunk *c;
    uint32_t *owner; /* model: 0 free, else the head page + 1 of its run */
};

static struct fixture
fx_new(size_t page, size_t chunk)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = 1;
    struct fixture f = {.p = t_pool_new(&cfg)};
    f.c = nbuf_chunk_new_(&f.p->arenas[0]);
    cr_assert_not_null(f.c);
    cr_assert_eq(f.c->npages, chunk / page);
    cr_assert_eq((uintptr_t)f.c->base % page, 0, "chunk base not page aligned");
    f.owner = calloc(f.c->npages, sizeof(*f.owner));
    cr_assert_not_null(f.owner);
    return f;
}

static void
fx_done(struct fixture *f)
{
    struct nbuf_chunk *c = f->c;
    cr_assert(nbuf_chunk_check_(c));
    cr_assert_eq(c->free_pages, c->npages);
    cr_assert_eq(c->pages[0].npages, c->npages, "chunk did not merge back into one run");
    cr_assert_eq(c->pages[0].state, NBUF_RUN_FREE);
    cr_assert_eq(c->bin_mask, (uint64_t)1 << nbuf_run_bin_floor_(c->npages));
    nbuf_chunk_free_(c);
    free(f->owner);
    t_pool_done(f->p);
}

/* Longest free run in the model. */
static uint32_t
model_longest_free(const struct fixture *f)
{
    uint32_t best = 0, cur = 0;
    for (uint32_t i = 0; i < f->c->npages; i++) {
        cur = f->owner[i] ? 0 : cur + 1;
        if (cur > best)
            best = cur;
    }
    return best;
}

/* The model and the chunk agree: run boundaries, states and free count. */
static void
model_check(const struct fixture *f)
{
    const struct nbuf_chunk *c = f->c;
    cr_assert(nbuf_chunk_check_(c), "nbuf_chunk_check_ failed");
    uint32_t free_pages = 0;
    for (uint32_t page = 0; page < c->npages;) {
        const struct nbuf_page_info *pi = &c->pages[page];
        if (pi->state == NBUF_RUN_FREE) {
            for (uint32_t k = 0; k < pi->npages; k++)
                cr_assert_eq(f->owner[page + k], 0, "page %u free in chunk, used in model",
                             page + k);
            free_pages += pi->npages;
        } else {
            for (uint32_t k = 0; k < pi->npages; k++)
                cr_assert_eq(f->owner[page + k], page + 1, "page %u: run mismatch", page + k);
        }
        page += pi->npages;
    }
    cr_assert_eq(free_pages, c->free_pages);
}

static uint32_t
fx_alloc(struct fixture *f, uint32_t npages)
{
    uint32_t page = nbuf_chunk_alloc_run_(f->c, npages, NBUF_RUN_USED);
    if (page == NBUF_RUN_NONE)
        return page;
    cr_assert_leq(page + npages, f->c->npages);
    for (uint32_t k = 0; k < npages; k++) {
        cr_assert_eq(f->owner[page + k], 0, "run %u+%u overlaps a used page", page, npages);
        f->owner[page + k] = page + 1;
    }
    /* The run's memory is usable end to end. */
    uint8_t *mem = f->c->base + ((size_t)page << f->p->lg_page);
    T_UNPOISON(mem, (size_t)npages << f->p->lg_page);
    memset(mem, 0xa5, (size_t)npages << f->p->lg_page);
    T_POISON(mem, (size_t)npages << f->p->lg_page);
    model_check(f);
    return page;
}

static void
fx_free(struct fixture *f, uint32_t page)
{
    uint32_t npages = f->c->pages[page].npages;
    nbuf_chunk_free_run_(f->c, page);
    for (uint32_t k = 0; k < npages; k++)
        f->owner[page + k] = 0;
    model_check(f);
}

Test(chunk, new_chunk_is_one_free_run)
{
    struct fixture f = fx_new(8192, 4u << 20);
    cr_assert_eq(f.c->free_pages, 512);
    cr_assert(nbuf_chunk_empty_(f.c));
    model_check(&f);
    fx_done(&f);
}

Test(chunk, whole_chunk_run)
{
    struct fixture f = fx_new(4096, 64u << 10);
    uint32_t page = fx_alloc(&f, 16);
    cr_assert_eq(page, 0);
    cr_assert_eq(f.c->free_pages, 0);
    cr_assert_eq(f.c->bin_mask, 0);
    cr_assert_eq(fx_alloc(&f, 1), NBUF_RUN_NONE, "a full chunk handed out a page");
    fx_free(&f, page);
    fx_done(&f);
}

Test(chunk, request_larger_than_free)
{
    struct fixture f = fx_new(4096, 64u << 10);
    cr_assert_eq(fx_alloc(&f, 17), NBUF_RUN_NONE);
    cr_assert_eq(fx_alloc(&f, 65536), NBUF_RUN_NONE);
    uint32_t a = fx_alloc(&f, 10);
    cr_assert_eq(fx_alloc(&f, 7), NBUF_RUN_NONE);
    uint32_t b = fx_alloc(&f, 6);
    cr_assert_eq(fx_alloc(&f, 1), NBUF_RUN_NONE);
    fx_free(&f, a);
    fx_free(&f, b);
    fx_done(&f);
}

/* Runs carve from the front of the free run; every free order merges back. */
Test(chunk, split_then_free_in_many_orders)
{
    static const uint32_t sizes[] = {1, 2, 3, 4, 5, 8, 16, 7, 6, 10, 12, 1, 1, 14, 20, 32};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    /* 0 forward, 1 reverse, 2 odd then even, 3 middle out, 4 every third. */
    for (int order = 0; order < 5; order++) {
        struct fixture f = fx_new(8192, 4u << 20);
        uint32_t pages[N], expect = 0;
        for (unsigned i = 0; i < N; i++) {
            pages[i] = fx_alloc(&f, sizes[i]);
            cr_assert_eq(pages[i], expect, "order %d: run %u at page %u, want %u", order, i,
                         pages[i], expect);
            expect += sizes[i];
        }
        cr_assert_eq(f.c->free_pages, 512 - expect);
        unsigned seq[N], n = 0;
        switch (order) {
        case 0:
            for (unsigned i = 0; i < N; i++)
                seq[n++] = i;
            break;
        case 1:
            for (unsigned i = N; i-- > 0;)
                seq[n++] = i;
            break;
        case 2:
            for (unsigned i = 1; i < N; i += 2)
                seq[n++] = i;
            for (unsigned i = 0; i < N; i += 2)
                seq[n++] = i;
            break;
        case 3:
            for (unsigned d = 0; d < N; d++) {
                unsigned i = d % 2 ? N / 2 - 1 - d / 2 : N / 2 + d / 2;
                seq[n++] = i;
            }
            break;
        case 4:
            for (unsigned s = 0; s < 3; s++)
                for (unsigned i = s; i < N; i += 3)
                    seq[n++] = i;
            break;
        }
        cr_assert_eq(n, N);
        for (unsigned k = 0; k < N; k++)
            fx_free(&f, pages[seq[k]]);
        fx_done(&f);
    }
}

Test(chunk, merge_with_both_neighbours)
{
    struct fixture f = fx_new(4096, 256u << 10);
    uint32_t a = fx_alloc(&f, 3), b = fx_alloc(&f, 5), c = fx_alloc(&f, 4), d = fx_alloc(&f, 2);
    fx_free(&f, a);
    fx_free(&f, c);
    cr_assert_eq(f.c->pages[a].npages, 3);
    cr_assert_eq(f.c->pages[c].npages, 4);
    /* b merges with a before it and c after it: one run of 12 pages. */
    fx_free(&f, b);
    cr_assert_eq(f.c->pages[0].npages, 12);
    cr_assert_eq(f.c->pages[0].state, NBUF_RUN_FREE);
    cr_assert_eq(f.c->pages[11].npages, 12, "tail page does not record the merged length");
    /* d merges with the 12 before it and the tail after it. */
    fx_free(&f, d);
    fx_done(&f);
}

/* A freed hole of the right size is reused before the big tail is split. */
Test(chunk, exact_bins_reuse_holes)
{
    struct fixture f = fx_new(8192, 4u << 20);
    uint32_t r[6];
    for (unsigned i = 0; i < 6; i++)
        r[i] = fx_alloc(&f, 3);
    fx_free(&f, r[2]);
    cr_assert_eq(fx_alloc(&f, 3), r[2], "a 3-page hole was not reused");
    fx_free(&f, r[4]);
    cr_assert_eq(fx_alloc(&f, 2), r[4], "a 2-page request did not split the 3-page hole");
    cr_assert_eq(f.c->pages[r[4] + 2].npages, 1);
    cr_assert_eq(f.c->pages[r[4] + 2].state, NBUF_RUN_FREE);
    for (unsigned i = 0; i < 6; i++)
        fx_free(&f, r[i]);
    fx_done(&f);
}

/* The page counts the allocator asks for: subpage runs and run classes. */
static const uint32_t class_pages[] = {1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32};

static void
random_model(uint64_t seed, size_t page, size_t chunk, bool any_size)
{
    struct fixture f = fx_new(page, chunk);
    uint32_t npages = f.c->npages;
    uint32_t *live = calloc(npages, sizeof(*live));
    unsigned nlive = 0;
    uint64_t s = seed;
    for (unsigned step = 0; step < 3000; step++) {
        bool do_alloc = nlive == 0 || t_rand(&s) % 100 < 55;
        if (do_alloc) {
            uint32_t n = any_size ? 1 + (uint32_t)(t_rand(&s) % 24)
                                  : class_pages[t_rand(&s) % (sizeof(class_pages) / 4)];
            uint32_t longest = model_longest_free(&f);
            uint32_t page_got = fx_alloc(&f, n);
            if (page_got == NBUF_RUN_NONE) {
                if (!any_size)
                    cr_assert_lt(longest, n, "seed %llu: %u pages refused, %u free in a row",
                                 (unsigned long long)seed, n, longest);
                /* Any size: a fitting run may sit one bin lower, never two. */
                else
                    for (uint32_t p = 0; p < npages;) {
                        const struct nbuf_page_info *pi = &f.c->pages[p];
                        if (pi->state == NBUF_RUN_FREE)
                            cr_assert_lt(nbuf_run_bin_floor_(pi->npages), nbuf_run_bin_ceil_(n));
                        p += pi->npages;
                    }
            } else {
                live[nlive++] = page_got;
            }
        } else {
            unsigned k = (unsigned)(t_rand(&s) % nlive);
            fx_free(&f, live[k]);
            live[k] = live[--nlive];
        }
    }
    while (nlive)
        fx_free(&f, live[--nlive]);
    free(live);
    fx_done(&f);
}

Test(chunk, random_against_model_class_sizes)
{
    for (uint64_t seed = 1; seed <= 6; seed++)
        random_model(seed * 0x1234567ull, 4096, 256u << 10, false);
}

Test(chunk, random_against_model_any_size)
{
    for (uint64_t seed = 1; seed <= 6; seed++)
        random_model(seed * 0x7654321ull, 8192, 512u << 10, true);
}

/* The same through the pool: run-class buffers of one arena share a chunk. */
Test(chunk, pool_runs_split_and_merge)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = 1;
    cfg.flags = NBUF_POOL_NO_CACHE;
    struct nbuf_pool *p = t_pool_new(&cfg);
    /* Run classes: 4, 5, 6, 7, 8, 10 pages of 8 KiB. */
    static const size_t sizes[] = {32768, 40960, 49152, 57344, 65536, 81920};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    for (int order = 0; order < 3; order++) {
        struct nbuf *b[N];
        for (unsigned i = 0; i < N; i++) {
            b[i] = nbuf_alloc(p, sizes[i]);
            cr_assert_not_null(b[i]);
            cr_assert_eq(b[i]->kind, NBUF_KIND_RUN);
            t_buf_fill(b[i], i);
            t_pool_check(p);
        }
        struct nbuf_chunk *c = p->arenas[0].chunks;
        cr_assert_not_null(c);
        cr_assert_null(c->next, "six small runs took two chunks");
        for (unsigned i = 0; i < N; i++) {
            cr_assert_eq(b[i]->slab, c);
            cr_assert_eq(c->pages[b[i]->handle].npages, sizes[i] / 8192);
            cr_assert_eq(c->pages[b[i]->handle].state, NBUF_RUN_USED);
        }
        for (unsigned k = 0; k < N; k++) {
            unsigned i = order == 0 ? k : order == 1 ? N - 1 - k : (k * 5) % N;
            cr_assert(t_buf_verify(b[i], i));
            cr_assert_eq(nbuf_release(b[i]), 1);
            t_pool_check(p);
        }
        /* The chunk stays as the arena's empty reserve, one free run. */
        cr_assert_eq(p->arenas[0].nchunks, 1);
        cr_assert_eq(c->free_pages, c->npages);
        cr_assert_eq(c->pages[0].npages, c->npages);
    }
    t_pool_done(p);
}
