/* SPDX-License-Identifier: MIT */
/*
 * Chunks: chunk_size bytes from the backing, carved into runs of pages.
 * Free runs sit in size-binned lists (8 exact bins, then 4 per doubling) with
 * a bitmask of non-empty bins, so finding a fitting run is one ctz; freeing
 * merges with both free neighbours in O(1) because the first and the last
 * page of every run record its length. A bitmap marks the free pages that
 * were written since they were last purged (dirty); nbuf_chunk_purge_
 * madvises them away. All calls need the arena lock. Calls the backing and
 * the pool's budget.
 */
#include "internal.h"

static void
bin_insert(struct nbuf_chunk *c, uint32_t page, uint32_t npages)
{
    unsigned b = nbuf_run_bin_floor_(npages);
    struct nbuf_page_info *pi = &c->pages[page];
    pi->prev = NBUF_RUN_NONE;
    pi->next = c->bins[b];
    if (pi->next != NBUF_RUN_NONE)
        c->pages[pi->next].prev = page;
    c->bins[b] = page;
    c->bin_mask |= (uint64_t)1 << b;
}

static void
bin_remove(struct nbuf_chunk *c, uint32_t page)
{
    struct nbuf_page_info *pi = &c->pages[page];
    unsigned b = nbuf_run_bin_floor_(pi->npages);
    if (pi->prev != NBUF_RUN_NONE)
        c->pages[pi->prev].next = pi->next;
    else
        c->bins[b] = pi->next;
    if (pi->next != NBUF_RUN_NONE)
        c->pages[pi->next].prev = pi->prev;
    if (c->bins[b] == NBUF_RUN_NONE)
        c->bin_mask &= ~((uint64_t)1 << b);
}

/* ---- the dirty bitmap: one bit per page ---- */

/* The bits of [*i, end) that lie in word *i / 64; advances *i past them. */
static uint64_t
word_bits(uint32_t *i, uint32_t end)
{
    uint32_t bit = *i & 63, take = 64 - bit < end - *i ? 64 - bit : end - *i;
    *i += take;
    return take == 64 ? ~(uint64_t)0 : (((uint64_t)1 << take) - 1) << bit;
}

static void
dirty_set(struct nbuf_chunk *c, uint32_t page, uint32_t n)
{
    for (uint32_t i = page; i < page + n;) {
        uint64_t *w = &c->dirty[i >> 6];
        *w |= word_bits(&i, page + n);
    }
}

/* Clear [page, page + n) and return how many of its pages were dirty. */
static uint32_t
dirty_take(struct nbuf_chunk *c, uint32_t page, uint32_t n)
{
    uint32_t was = 0;
    for (uint32_t i = page; i < page + n;) {
        uint64_t *w = &c->dirty[i >> 6];
        uint64_t mask = word_bits(&i, page + n);
        was += (uint32_t)__builtin_popcountll(*w & mask);
        *w &= ~mask;
    }
    return was;
}

static bool
dirty_test(const struct nbuf_chunk *c, uint32_t page)
{
    return c->dirty[page >> 6] >> (page & 63) & 1;
}

/* Record a run [page, page + npages) in state st at its head and tail. */
static void
mark_run(struct nbuf_chunk *c, uint32_t page, uint32_t npages, uint32_t st)
{
    c->pages[page].npages = npages;
    c->pages[page].state = st;
    uint32_t tail = page + npages - 1;
    c->pages[tail].npages = npages;
    c->pages[tail].state = st;
}

struct nbuf_chunk *
nbuf_chunk_new_(struct nbuf_arena *a)
{
    struct nbuf_pool *p = a->pool;
    uint32_t npages = p->chunk_pages;
    struct nbuf_chunk *c = calloc(1, sizeof(*c) + (size_t)npages * sizeof(struct nbuf_page_info));
    if (!c)
        return NULL;
    c->subpages = calloc(npages, sizeof(*c->subpages));
    if (!c->subpages)
        goto out_meta;
    /* A fresh chunk is clean: the backing's pages are not touched yet (or,
     * from jemalloc, not ours to count). */
    c->dirty = calloc((npages + 63) / 64, sizeof(*c->dirty));
    if (!c->dirty)
        goto out_subpages;
    c->purge_at = NBUF_NEVER;
    if (!nbuf_budget_charge_(p, p->cfg.chunk_size))
        goto out_subpages; /* errno = EDQUOT: the caller may trim and retry */
    c->base = nbuf_backing_alloc_(&p->backing, p->cfg.chunk_size, p->cfg.page_size);
    if (!c->base)
        goto out_charge;
    /* No buffer owns any of it yet (ASan / valgrind; see internal.h). */
    NBUF_POISON(c->base, p->cfg.chunk_size);
    c->arena = a;
    c->npages = npages;
    c->free_pages = npages;
    for (unsigned b = 0; b < NBUF_RUN_BINS; b++)
        c->bins[b] = NBUF_RUN_NONE;
    mark_run(c, 0, npages, NBUF_RUN_FREE);
    bin_insert(c, 0, npages);
    atomic_fetch_add_explicit(&p->nchunks, 1, memory_order_relaxed);
    return c;

out_charge:
    nbuf_budget_uncharge_(p, p->cfg.chunk_size);
    errno = ENOMEM;
out_subpages:
    free(c->dirty);
    free(c->subpages);
out_meta:
    free(c);
    return NULL;
}

void
nbuf_chunk_free_(struct nbuf_chunk *c)
{
    struct nbuf_pool *p = c->arena->pool;
    nbuf_assert(nbuf_chunk_empty_(c));
    /* A decaying pool wants the pages gone now, not when the backing gets
     * round to it (jemalloc's own decay would keep them for 10 s). */
    if (c->ndirty && p->decay_ms >= 0 && p->backing.kind == NBUF_BACKING_JEMALLOC) {
        uint64_t ncalls = 0;
        nbuf_chunk_purge_(c, &ncalls);
    }
    NBUF_UNPOISON(c->base, p->cfg.chunk_size);
    nbuf_backing_free_(&p->backing, c->base, p->cfg.chunk_size, p->cfg.page_size);
    nbuf_budget_uncharge_(p, p->cfg.chunk_size);
    atomic_fetch_sub_explicit(&p->nchunks, 1, memory_order_relaxed);
    free(c->dirty);
    free(c->subpages);
    free(c);
}

uint32_t
nbuf_chunk_alloc_run_(struct nbuf_chunk *c, uint32_t npages, enum nbuf_run_state st)
{
    nbuf_assert_internal(npages > 0 && st != NBUF_RUN_FREE);
    if (npages > c->free_pages)
        return NBUF_RUN_NONE;
    unsigned b = nbuf_run_bin_ceil_(npages);
    if (b >= NBUF_RUN_BINS)
        return NBUF_RUN_NONE;
    /* Every run in bins >= b is at least npages long. */
    uint64_t fit = c->bin_mask & (~(uint64_t)0 << b);
    if (!fit)
        return NBUF_RUN_NONE;
    b = (unsigned)__builtin_ctzll(fit);
    uint32_t page = c->bins[b];
    uint32_t have = c->pages[page].npages;
    bin_remove(c, page);
    if (have > npages) {
        uint32_t rest = page + npages;
        mark_run(c, rest, have - npages, NBUF_RUN_FREE);
        bin_insert(c, rest, have - npages);
    }
    mark_run(c, page, npages, st);
    c->free_pages -= npages;
    if (c->ndirty)
        c->ndirty -= dirty_take(c, page, npages);
    /* A used run belongs to its caller now; subpage elements are unpoisoned
     * one by one as they are handed out (see internal.h). */
    if (st == NBUF_RUN_USED)
        NBUF_UNPOISON(c->base + ((size_t)page << c->arena->pool->lg_page),
                      (size_t)npages << c->arena->pool->lg_page);
    /* Checked by the arena once the caller has attached any subpage. */
    return page;
}

void
nbuf_chunk_free_run_(struct nbuf_chunk *c, uint32_t page)
{
    uint32_t npages = c->pages[page].npages;
    nbuf_assert(c->pages[page].state != NBUF_RUN_FREE);
    c->subpages[page] = NULL;
    c->free_pages += npages;
    if (c->arena->pool->can_purge) {
        dirty_set(c, page, npages);
        c->ndirty += npages;
    }
    NBUF_POISON(c->base + ((size_t)page << c->arena->pool->lg_page),
                (size_t)npages << c->arena->pool->lg_page);
    /* Merge with the run before (its tail is page - 1). */
    if (page > 0 && c->pages[page - 1].state == NBUF_RUN_FREE) {
        uint32_t prev_len = c->pages[page - 1].npages;
        uint32_t prev = page - prev_len;
        bin_remove(c, prev);
        page = prev;
        npages += prev_len;
    }
    /* Merge with the run after. */
    uint32_t next = page + npages;
    if (next < c->npages && c->pages[next].state == NBUF_RUN_FREE) {
        uint32_t next_len = c->pages[next].npages;
        bin_remove(c, next);
        npages += next_len;
    }
    mark_run(c, page, npages, NBUF_RUN_FREE);
    bin_insert(c, page, npages);
    nbuf_assert_expensive(nbuf_chunk_check_(c));
}

uint32_t
nbuf_chunk_purge_(struct nbuf_chunk *c, uint64_t *ncalls)
{
    struct nbuf_pool *p = c->arena->pool;
    uint32_t purged = 0, words = (c->npages + 63) / 64;
    /* Dirty pages are free, and adjacent free pages are one run: each
     * stretch of set bits is one madvise. */
    for (uint32_t w = 0; w < words && purged < c->ndirty; w++) {
        while (c->dirty[w]) {
            uint32_t first = w * 64 + (uint32_t)__builtin_ctzll(c->dirty[w]), end = first;
            while (end < c->npages && dirty_test(c, end))
                end++;
            dirty_take(c, first, end - first);
            /* ASan / valgrind: the pages are poisoned free memory; madvise
             * does not read them. */
            nbuf_backing_discard_(&p->backing, c->base + ((size_t)first << p->lg_page),
                                  (size_t)(end - first) << p->lg_page);
            purged += end - first;
            ++*ncalls;
            w = (end - 1) / 64;
        }
    }
    c->ndirty = 0;
    c->purge_at = NBUF_NEVER;
    return purged;
}

bool
nbuf_chunk_check_(const struct nbuf_chunk *c)
{
    uint32_t page = 0, free_pages = 0;
    bool prev_free = false;
    while (page < c->npages) {
        const struct nbuf_page_info *pi = &c->pages[page];
        uint32_t n = pi->npages;
        if (n == 0 || page + n > c->npages)
            return false;
        const struct nbuf_page_info *tail = &c->pages[page + n - 1];
        if (tail->npages != n || tail->state != pi->state)
            return false;
        bool is_free = pi->state == NBUF_RUN_FREE;
        if (is_free && prev_free)
            return false; /* adjacent free runs must have merged */
        if (is_free) {
            free_pages += n;
            unsigned b = nbuf_run_bin_floor_(n);
            if (!(c->bin_mask & ((uint64_t)1 << b)))
                return false;
            /* The run must be on its bin's list. */
            uint32_t q = c->bins[b];
            while (q != NBUF_RUN_NONE && q != page)
                q = c->pages[q].next;
            if (q != page)
                return false;
        }
        if (pi->state == NBUF_RUN_SUBPAGE && !c->subpages[page])
            return false;
        /* Only free pages are dirty. */
        for (uint32_t q = page; !is_free && q < page + n; q++)
            if (dirty_test(c, q))
                return false;
        prev_free = is_free;
        page += n;
    }
    if (free_pages != c->free_pages)
        return false;
    /* ndirty counts the dirty bits. */
    uint32_t ndirty = 0;
    for (uint32_t w = 0; w < (c->npages + 63) / 64; w++)
        ndirty += (uint32_t)__builtin_popcountll(c->dirty[w]);
    if (ndirty != c->ndirty)
        return false;
    for (unsigned b = 0; b < NBUF_RUN_BINS; b++) {
        bool nonempty = c->bins[b] != NBUF_RUN_NONE;
        if (nonempty != !!(c->bin_mask & ((uint64_t)1 << b)))
            return false;
    }
    return true;
}
