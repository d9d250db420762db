/* SPDX-License-Identifier: MIT */
/*
 * An arena's chunks: the list, runs taken from and given back to them, and
 * their dirty pages. A run comes from a chunk already in use before an
 * empty one, so that empty chunks stay empty and can go back to the
 * backing (beyond a reserve of one per arena). A chunk's free pages are
 * dirty until purged: decay_ms after the chunk turned dirty (the arena's
 * decay pass), at once when the arena holds more than its bound
 * (dirty_max), or on trim. All under the arena's lock.
 * Layer: arena; calls chunk.c and decay.c (clock, purger wake-up).
 */
#include "internal.h"

#define EMPTY_CHUNK_RESERVE 1

static void
chunk_link(struct nbuf_arena *a, struct nbuf_chunk *c)
{
    c->prev = NULL;
    c->next = a->chunks;
    if (a->chunks)
        a->chunks->prev = c;
    a->chunks = c;
    a->nchunks++;
    a->nempty++;
}

static void
chunk_unlink_free(struct nbuf_arena *a, struct nbuf_chunk *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->chunks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nchunks--;
    a->nempty--;
    a->purged_pages += c->ndirty; /* nbuf_chunk_free_ gives them back */
    a->ndirty -= c->ndirty;
    nbuf_chunk_free_(c);
}

/* The chunk's run calls, keeping the arena's count of dirty pages. */
static uint32_t
chunk_alloc_run(struct nbuf_arena *a, struct nbuf_chunk *c, uint32_t npages, enum nbuf_run_state st)
{
    uint32_t before = c->ndirty;
    uint32_t page = nbuf_chunk_alloc_run_(c, npages, st);
    a->ndirty -= before - c->ndirty;
    return page;
}

static void
chunk_free_run(struct nbuf_arena *a, struct nbuf_chunk *c, uint32_t page)
{
    uint32_t before = c->ndirty;
    nbuf_chunk_free_run_(c, page);
    a->ndirty += c->ndirty - before;
}

/* A run of npages from any chunk, preferring chunks already in use so that
 * empty ones stay empty and can go back to the backing. */
uint32_t
nbuf_arena_run_alloc_locked_(struct nbuf_arena *a, uint32_t npages, enum nbuf_run_state st,
                             struct nbuf_chunk **out)
{
    nbuf_arena_assert_locked_(a);
    for (int pass = 0; pass < 2; pass++) {
        for (struct nbuf_chunk *c = a->chunks; c; c = c->next) {
            bool empty = nbuf_chunk_empty_(c);
            if (empty != (pass == 1))
                continue;
            uint32_t page = chunk_alloc_run(a, c, npages, st);
            if (page != NBUF_RUN_NONE) {
                if (empty)
                    a->nempty--;
                *out = c;
                return page;
            }
        }
    }
    struct nbuf_chunk *c = nbuf_chunk_new_(a);
    if (!c)
        return NBUF_RUN_NONE;
    chunk_link(a, c);
    a->nempty--;
    *out = c;
    return chunk_alloc_run(a, c, npages, st);
}

/* Arm @c's deadline when it has just turned dirty. */
static void
chunk_dirtied(struct nbuf_arena *a, struct nbuf_chunk *c)
{
    struct nbuf_pool *p = a->pool;
    if (c->purge_at != NBUF_NEVER || !c->ndirty || p->decay_ms < 0)
        return;
    c->purge_at = nbuf_decay_deadline_(p, nbuf_decay_now_(p));
    if (c->purge_at < a->purge_at) {
        a->purge_at = c->purge_at;
        nbuf_decay_wake_(p, a->purge_at);
    }
}

static void
chunk_purge(struct nbuf_arena *a, struct nbuf_chunk *c)
{
    a->ndirty -= c->ndirty;
    a->purged_pages += nbuf_chunk_purge_(c, &a->npurges);
}

/*
 * Dirty pages an arena keeps whatever the clock says: the larger of
 * NBUF_DIRTY_MIN_BYTES and 1/64 of its chunks. Past that, the dirtiest
 * chunks are purged down to half of it at once. Time decay alone lets a
 * busy process keep every free page resident (on the (d) trace of
 * docs/benchmarks.md, 16 MiB of 96 for 64.6 live: its steady ratio went
 * from 1.53 to 1.36 with this bound), while the pages a cycling workload
 * reuses stay under the bound: (b) and (c) purge no more than before.
 */
static uint64_t
dirty_max(const struct nbuf_arena *a)
{
    const struct nbuf_pool *p = a->pool;
    uint64_t floor = NBUF_DIRTY_MIN_BYTES >> p->lg_page;
    uint64_t share = (uint64_t)a->nchunks * p->chunk_pages / 64;
    return share > floor ? share : floor;
}

static void
dirty_bound(struct nbuf_arena *a)
{
    uint64_t max = dirty_max(a);
    if (a->ndirty <= max)
        return;
    while (a->ndirty > max / 2) {
        struct nbuf_chunk *worst = a->chunks;
        for (struct nbuf_chunk *c = a->chunks; c; c = c->next)
            if (c->ndirty > worst->ndirty)
                worst = c;
        nbuf_assert_internal(worst && worst->ndirty);
        chunk_purge(a, worst);
    }
}

void
nbuf_arena_run_free_locked_(struct nbuf_arena *a, struct nbuf_chunk *c, uint32_t page)
{
    chunk_free_run(a, c, page);
    if (nbuf_chunk_empty_(c)) {
        a->nempty++;
        if (a->nempty > EMPTY_CHUNK_RESERVE) {
            chunk_unlink_free(a, c);
            return;
        }
    }
    if (a->pool->decay_ms == 0) {
        chunk_purge(a, c);
    } else if (a->pool->decay_ms > 0) {
        chunk_dirtied(a, c);
        dirty_bound(a);
    }
}

uint64_t
nbuf_arena_chunks_decay_locked_(struct nbuf_arena *a, uint64_t now)
{
    uint64_t next = NBUF_NEVER;
    for (struct nbuf_chunk *c = a->chunks, *cn; c; c = cn) {
        cn = c->next;
        if (c->purge_at > now)
            next = nbuf_min_u64_(next, c->purge_at);
        else if (nbuf_chunk_empty_(c))
            chunk_unlink_free(a, c); /* empty for a decay period: give it back */
        else
            chunk_purge(a, c);
    }
    return next;
}

void
nbuf_arena_chunks_trim_locked_(struct nbuf_arena *a, unsigned keep)
{
    struct nbuf_chunk *c = a->chunks;
    while (c && a->nempty > keep) {
        struct nbuf_chunk *next = c->next;
        if (nbuf_chunk_empty_(c))
            chunk_unlink_free(a, c);
        c = next;
    }
    /* Idle now means idle: the free pages of the chunks that stay go too. */
    for (c = a->chunks; c; c = c->next)
        if (c->ndirty)
            chunk_purge(a, c);
}

bool
nbuf_arena_chunks_check_(const struct nbuf_arena *a)
{
    uint32_t n = 0, empty = 0;
    uint64_t dirty = 0;
    for (struct nbuf_chunk *c = a->chunks; c; c = c->next) {
        if (c->arena != a || !nbuf_chunk_check_(c))
            return false;
        n++;
        empty += nbuf_chunk_empty_(c);
        dirty += c->ndirty;
    }
    return n == a->nchunks && empty == a->nempty && dirty == a->ndirty;
}
