/* SPDX-License-Identifier: MIT */
/*
 * Arenas: one lock each, owning chunks, the partial subpages of every small
 * class, per-class stashes of ready pairs, and the buffer headers. Thread
 * caches fill and flush here in batches; nothing here is on the fast path.
 * Runs come from the arena's chunks (arena_chunks.c, which also purges).
 * Decay (decay.c has the clock): stashed pairs unused for a decay period go
 * back to chunks, and the chunks' pass runs (arena_chunks.c); all on the
 * slow-path events that hold the lock anyway, or the purger.
 * Layer: arena; calls arena_chunks.c, chunk.c, subpage.c and decay.c.
 */
#include "internal.h"

#define HEADERS_PER_BLOCK 64

void
nbuf_arena_lock_(struct nbuf_arena *a)
{
    pthread_mutex_lock(&a->lock);
#ifndef NDEBUG
    a->owner = pthread_self();
    a->owned = true;
#endif
}

void
nbuf_arena_unlock_(struct nbuf_arena *a)
{
#ifndef NDEBUG
    a->owned = false;
#endif
    pthread_mutex_unlock(&a->lock);
}

#define assert_locked(a) nbuf_arena_assert_locked_(a)

int
nbuf_arena_init_(struct nbuf_arena *a, struct nbuf_pool *p, unsigned index)
{
    memset(a, 0, sizeof(*a));
    a->pool = p;
    a->index = index;
    a->purge_at = NBUF_NEVER;
    a->stash_gc_at = NBUF_NEVER;
    for (unsigned i = 0; i < p->ncached; i++) {
        struct nbuf_stash *st = &a->stash[i];
        st->cap = p->stash_cap[i];
        if (!st->cap)
            continue;
        st->items = malloc(st->cap * sizeof(*st->items));
        if (!st->items)
            goto out_stashes;
    }
    if (pthread_mutex_init(&a->lock, NULL) != 0)
        goto out_stashes;
    return 0;

out_stashes:
    for (unsigned i = 0; i < NBUF_NCLASSES; i++)
        free(a->stash[i].items);
    return -ENOMEM;
}

/* ---- headers ---- */

static struct nbuf *
header_pop_locked(struct nbuf_arena *a)
{
    assert_locked(a);
    if (!a->free_headers) {
        if (a->nhblocks == a->hblocks_cap) {
            uint32_t cap = a->hblocks_cap ? a->hblocks_cap * 2 : 16;
            void **nb = realloc(a->hblocks, cap * sizeof(*nb));
            if (!nb)
                return NULL;
            a->hblocks = nb;
            a->hblocks_cap = cap;
        }
        struct nbuf *blk = calloc(HEADERS_PER_BLOCK, sizeof(*blk));
        if (!blk)
            return NULL;
        a->hblocks[a->nhblocks++] = blk;
        for (unsigned i = 0; i < HEADERS_PER_BLOCK; i++) {
            blk[i].magic = NBUF_MAGIC;
            blk[i].root = a->free_headers;
            a->free_headers = &blk[i];
        }
        a->nfree_headers += HEADERS_PER_BLOCK;
    }
    struct nbuf *h = a->free_headers;
    a->free_headers = h->root;
    a->nfree_headers--;
    h->root = NULL;
    return h;
}

static void
header_push_locked(struct nbuf_arena *a, struct nbuf *h)
{
    assert_locked(a);
    h->mem = NULL;
    h->root = a->free_headers;
    a->free_headers = h;
    a->nfree_headers++;
}

unsigned
nbuf_arena_alloc_headers_(struct nbuf_arena *a, struct nbuf **out, unsigned n)
{
    unsigned got = 0;
    nbuf_arena_lock_(a);
    while (got < n && (out[got] = header_pop_locked(a)))
        got++;
    nbuf_arena_unlock_(a);
    if (!got)
        errno = ENOMEM;
    return got;
}

void
nbuf_headers_free_(struct nbuf_pool *p, struct nbuf **items, unsigned n)
{
    /* Headers are interchangeable: any arena will do; use the first. */
    struct nbuf_arena *a = &p->arenas[0];
    nbuf_arena_lock_(a);
    for (unsigned i = 0; i < n; i++)
        header_push_locked(a, items[i]);
    nbuf_arena_unlock_(a);
}

/* ---- memory ---- */

static struct nbuf_arena *
pair_arena(const struct nbuf *b)
{
    if (b->kind == NBUF_KIND_SMALL)
        return ((struct nbuf_subpage *)b->slab)->chunk->arena;
    return ((struct nbuf_chunk *)b->slab)->arena;
}

static void
partial_push(struct nbuf_arena *a, struct nbuf_subpage *s)
{
    s->prev = NULL;
    s->next = a->partial[s->szind];
    if (s->next)
        s->next->prev = s;
    a->partial[s->szind] = s;
}

static void
partial_remove(struct nbuf_arena *a, struct nbuf_subpage *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        a->partial[s->szind] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* Memory for one buffer of class szind into h (mem, slab, handle, kind). */
static bool
mem_alloc_locked(struct nbuf_arena *a, unsigned szind, struct nbuf *h)
{
    struct nbuf_pool *p = a->pool;
    struct nbuf_chunk *c;
    if (szind < p->nsmall) {
        struct nbuf_subpage *s = a->partial[szind];
        if (!s) {
            uint32_t page =
                nbuf_arena_run_alloc_locked_(a, p->run_pages[szind], NBUF_RUN_SUBPAGE, &c);
            if (page == NBUF_RUN_NONE)
                return false;
            s = nbuf_subpage_new_(c, page, szind, (uint32_t)nbuf_sz_usize_(szind),
                                  p->run_pages[szind], p->run_elems[szind]);
            if (!s) {
                nbuf_arena_run_free_locked_(a, c, page);
                errno = ENOMEM;
                return false;
            }
            partial_push(a, s);
        }
        uint32_t idx = nbuf_subpage_alloc_(s);
        if (s->nfree == 0)
            partial_remove(a, s);
        h->kind = NBUF_KIND_SMALL;
        h->slab = s;
        h->handle = idx;
        h->mem = s->base + (size_t)idx * s->elem_size;
    } else {
        uint32_t npages = (uint32_t)(nbuf_sz_usize_(szind) >> p->lg_page);
        uint32_t page = nbuf_arena_run_alloc_locked_(a, npages, NBUF_RUN_USED, &c);
        if (page == NBUF_RUN_NONE)
            return false;
        h->kind = NBUF_KIND_RUN;
        h->slab = c;
        h->handle = page;
        h->mem = c->base + ((size_t)page << p->lg_page);
    }
    h->szind = (uint8_t)szind;
    h->capacity = nbuf_sz_usize_(szind);
    h->pool = p;
    /* Normalised as the allocation fast path expects (it sets only cursors,
     * the requested size and the count). */
    h->key = NBUF_KEY_NONE; /* a cache's key when a bin takes it */
    h->max_capacity = p->cfg.max_buffer_size;
    h->slow = p->buf_slow;
    h->flags = p->buf_flags;
    h->root = NULL;
    h->ext = NULL;
    atomic_store_explicit(&h->nviews, 0, memory_order_relaxed);
    atomic_store_explicit(&h->refcnt, 0, memory_order_relaxed);
    return true;
}

/* Arm the GC deadline: a pair was just stashed, or a class's last
 * subpage just emptied (it is kept, so both wait for a pass). */
static void
gc_arm(struct nbuf_arena *a)
{
    struct nbuf_pool *p = a->pool;
    if (a->stash_gc_at != NBUF_NEVER || p->decay_ms < 0)
        return;
    a->stash_gc_at = nbuf_decay_deadline_(p, nbuf_decay_now_(p));
    nbuf_decay_wake_(p, a->stash_gc_at);
}

static void
subpage_free_locked(struct nbuf_arena *a, struct nbuf_subpage *s)
{
    struct nbuf_chunk *c = s->chunk;
    uint32_t page = s->page;
    partial_remove(a, s);
    nbuf_subpage_free_(s);
    nbuf_arena_run_free_locked_(a, c, page);
}

static void
mem_free_locked(struct nbuf_arena *a, struct nbuf *h)
{
    assert_locked(a);
    if (h->kind == NBUF_KIND_SMALL) {
        struct nbuf_subpage *s = h->slab;
        bool was_full = s->nfree == 0;
        nbuf_subpage_release_(s, h->handle);
        if (was_full)
            partial_push(a, s);
        /* An empty subpage goes back to its chunk unless it is the class's
         * last partial one (keeping it avoids churn on alloc/free cycles);
         * that one goes at the next GC pass if still empty then. */
        if (s->nfree == s->nelems) {
            if (s->next || s->prev)
                subpage_free_locked(a, s);
            else
                gc_arm(a);
        }
    } else {
        nbuf_arena_run_free_locked_(a, h->slab, h->handle);
    }
}

/* ---- decay ---- */

/* Pairs no thread took since the last pass (the stash never held fewer) go
 * back to their chunks, oldest first: the bottom of the stack; then the
 * kept empty subpages. */
static void
arena_gc(struct nbuf_arena *a, uint64_t now)
{
    struct nbuf_pool *p = a->pool;
    bool left = false;
    for (unsigned i = 0; i < p->ncached; i++) {
        struct nbuf_stash *st = &a->stash[i];
        nbuf_assert_internal(st->low <= st->count);
        uint32_t n = p->decay_ms == 0 ? st->count : st->low;
        for (uint32_t k = 0; k < n; k++) {
            struct nbuf *h = st->items[k];
            a->stash_bytes -= h->capacity;
            mem_free_locked(a, h);
            header_push_locked(a, h);
        }
        if (n) {
            st->count -= n;
            memmove(st->items, st->items + n, st->count * sizeof(*st->items));
        }
        st->low = st->count;
        left |= st->count != 0;
    }
    for (unsigned i = 0; i < p->nsmall; i++) {
        struct nbuf_subpage *s = a->partial[i];
        if (s && !s->next && s->nfree == s->nelems)
            subpage_free_locked(a, s);
    }
    a->stash_gc_at = left ? nbuf_decay_deadline_(p, now) : NBUF_NEVER;
}

uint64_t
nbuf_arena_decay_locked_(struct nbuf_arena *a, uint64_t now)
{
    assert_locked(a);
    if (now >= a->stash_gc_at)
        arena_gc(a, now); /* may dirty chunks: before the purge */
    if (now >= a->purge_at)
        a->purge_at = nbuf_arena_chunks_decay_locked_(a, now);
    return nbuf_min_u64_(a->purge_at, a->stash_gc_at);
}

/* At the end of a locked slow-path section: run the decay pass when due.
 * The clock is read only while something waits for its deadline. */
static void
decay_maybe_locked(struct nbuf_arena *a)
{
    uint64_t at = nbuf_min_u64_(a->purge_at, a->stash_gc_at);
    if (at == NBUF_NEVER)
        return;
    uint64_t now = nbuf_decay_now_(a->pool);
    if (now >= at)
        nbuf_arena_decay_locked_(a, now);
}

unsigned
nbuf_arena_alloc_pairs_(struct nbuf_arena *a, unsigned szind, struct nbuf **out, unsigned n)
{
    unsigned got = 0;
    nbuf_arena_lock_(a);
    struct nbuf_stash *st = &a->stash[szind];
    if (st->count) {
        got = n < st->count ? n : st->count;
        st->count -= got;
        memcpy(out, st->items + st->count, got * sizeof(*out));
        a->stash_bytes -= got * nbuf_sz_usize_(szind);
        if (st->count < st->low)
            st->low = st->count;
        /* Stashed memory is poisoned; the caller owns these pairs now. */
        for (unsigned i = 0; i < got; i++)
            NBUF_UNPOISON(out[i]->mem, nbuf_sz_usize_(szind));
    }
    while (got < n) {
        struct nbuf *h = header_pop_locked(a);
        if (!h) {
            errno = ENOMEM;
            break;
        }
        if (!mem_alloc_locked(a, szind, h)) {
            header_push_locked(a, h);
            break;
        }
        out[got++] = h;
    }
    decay_maybe_locked(a);
    nbuf_assert_expensive(nbuf_arena_check_(a));
    nbuf_arena_unlock_(a);
    return got;
}

void
nbuf_pairs_free_(struct nbuf_pool *p, struct nbuf **items, unsigned n, bool to_stash)
{
    (void)p;
    /* Group by home arena: one lock round per arena present in the batch. */
    while (n) {
        struct nbuf_arena *a = pair_arena(items[0]);
        unsigned keep = 0;
        nbuf_arena_lock_(a);
        for (unsigned i = 0; i < n; i++) {
            struct nbuf *h = items[i];
            if (pair_arena(h) != a) {
                items[keep++] = h;
                continue;
            }
            struct nbuf_stash *st = &a->stash[h->szind];
            if (to_stash && st->count < st->cap) {
                st->items[st->count++] = h;
                a->stash_bytes += h->capacity;
                gc_arm(a);
            } else {
                mem_free_locked(a, h);
                header_push_locked(a, h);
            }
        }
        decay_maybe_locked(a);
        nbuf_assert_expensive(nbuf_arena_check_(a));
        nbuf_arena_unlock_(a);
        n = keep;
    }
}

void
nbuf_arena_trim_(struct nbuf_arena *a, unsigned keep)
{
    struct nbuf_pool *p = a->pool;
    nbuf_arena_lock_(a);
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        struct nbuf_stash *st = &a->stash[i];
        while (st->count) {
            struct nbuf *h = st->items[--st->count];
            a->stash_bytes -= h->capacity;
            mem_free_locked(a, h);
            header_push_locked(a, h);
        }
        st->low = 0;
    }
    /* The last empty subpage of each class is kept by mem_free_locked. */
    for (unsigned i = 0; i < p->nsmall; i++) {
        struct nbuf_subpage *s = a->partial[i];
        if (s && !s->next && s->nfree == s->nelems) {
            struct nbuf_chunk *c = s->chunk;
            uint32_t page = s->page;
            partial_remove(a, s);
            nbuf_subpage_free_(s);
            nbuf_arena_run_free_locked_(a, c, page);
        }
    }
    nbuf_arena_chunks_trim_locked_(a, keep);
    a->purge_at = NBUF_NEVER;
    a->stash_gc_at = NBUF_NEVER;
    nbuf_assert_expensive(nbuf_arena_check_(a));
    nbuf_arena_unlock_(a);
}

void
nbuf_arena_fini_(struct nbuf_arena *a)
{
    /* The pool trimmed every arena first (arenas_destroy in pool.c says why). */
    nbuf_assert(a->nchunks == 0 && a->stash_bytes == 0);
    for (uint32_t i = 0; i < a->nhblocks; i++)
        free(a->hblocks[i]);
    free(a->hblocks);
    for (unsigned i = 0; i < NBUF_NCLASSES; i++)
        free(a->stash[i].items);
    pthread_mutex_destroy(&a->lock);
}

bool
nbuf_arena_check_(struct nbuf_arena *a)
{
    if (!nbuf_arena_chunks_check_(a))
        return false;
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        for (struct nbuf_subpage *s = a->partial[i]; s; s = s->next) {
            if (s->szind != i || s->nfree == 0 || !nbuf_subpage_check_(s))
                return false;
        }
        const struct nbuf_stash *st = &a->stash[i];
        for (uint32_t k = 0; k < st->count; k++) {
            const struct nbuf *h = st->items[k];
            if (h->szind != i || atomic_load(&h->refcnt) != 0)
                return false;
        }
    }
    return true;
}
