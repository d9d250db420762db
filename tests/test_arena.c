/* SPDX-License-Identifier: MIT */
/* Arenas: pairs (header + memory) of every class, stashes, the empty-chunk
 * reserve, chunk preference, headers, home arenas and least-loaded binding. */
#include "common.h"

static struct nbuf_pool *
pool_with(size_t page, size_t chunk, unsigned arenas)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = arenas;
    return t_pool_new(&cfg);
}

static void
arena_ok(struct nbuf_arena *a)
{
    nbuf_arena_lock_(a);
    bool ok = nbuf_arena_check_(a);
    nbuf_arena_unlock_(a);
    cr_assert(ok, "arena %u invariants violated", a->index);
}

Test(arena, pairs_of_every_class)
{
    struct nbuf_pool *p = pool_with(8192, 4u << 20, 1);
    struct nbuf_arena *a = &p->arenas[0];
    for (unsigned i = 0; i < p->nclasses; i++) {
        struct nbuf *out[3];
        unsigned n = nbuf_arena_alloc_pairs_(a, i, out, 3);
        cr_assert_eq(n, 3, "class %u: %u pairs", i, n);
        for (unsigned k = 0; k < n; k++) {
            struct nbuf *h = out[k];
            cr_assert_eq(h->szind, i);
            cr_assert_eq(h->capacity, nbuf_sz_usize_(i));
            cr_assert_eq(h->pool, p);
            cr_assert_eq(atomic_load(&h->refcnt), 0);
            cr_assert_eq(h->kind, i < p->nsmall ? NBUF_KIND_SMALL : NBUF_KIND_RUN);
            if (h->kind == NBUF_KIND_RUN)
                cr_assert_eq((uintptr_t)h->mem % 8192, 0);
            T_UNPOISON(h->mem, h->capacity);
            t_pattern_fill(h->mem, h->capacity, k + 7 * i);
        }
        for (unsigned k = 0; k < n; k++)
            cr_assert_eq(t_pattern_bad(out[k]->mem, out[k]->capacity, k + 7 * i), SIZE_MAX,
                         "class %u: pairs overlap", i);
        for (unsigned k = 0; k < n; k++)
            T_POISON(out[k]->mem, out[k]->capacity);
        arena_ok(a);
        nbuf_pairs_free_(p, out, n, false);
        arena_ok(a);
    }
    cr_assert_leq(a->nempty, 1, "empty chunks beyond the reserve kept");
    nbuf_arena_trim_(a, 0);
    cr_assert_eq(a->nchunks, 0);
    cr_assert_eq(atomic_load(&p->nchunks), 0);
    cr_assert_eq(atomic_load(&p->backing_bytes), 0);
    t_pool_done(p);
}

Test(arena, stash_is_lifo_bounded_and_trimmed)
{
    struct nbuf_pool *p = pool_with(8192, 4u << 20, 1);
    struct nbuf_arena *a = &p->arenas[0];
    unsigned szind = nbuf_sz_index_(512);
    struct nbuf_stash *st = &a->stash[szind];
    cr_assert_eq(st->cap, 2 * p->cfg.cache_small_count);
    unsigned n = st->cap + 10;
    struct nbuf **v = calloc(n, sizeof(*v)), **copy = calloc(n, sizeof(*v));
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, szind, v, n), n);
    memcpy(copy, v, n * sizeof(*v));
    nbuf_pairs_free_(p, v, n, true);
    cr_assert_eq(st->count, st->cap, "stash holds %u of cap %u", st->count, st->cap);
    cr_assert_eq(a->stash_bytes, (uint64_t)st->cap * 512);
    arena_ok(a);
    /* Refills come from the top of the stash, most recent first. */
    struct nbuf *out[4];
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, szind, out, 4), 4);
    for (unsigned k = 0; k < 4; k++)
        cr_assert_eq(out[k], copy[st->cap - 4 + k], "refill %u not from the stash", k);
    cr_assert_eq(a->stash_bytes, (uint64_t)(st->cap - 4) * 512);
    nbuf_pairs_free_(p, out, 4, true);
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.cached_bytes, (uint64_t)st->cap * 512);
    nbuf_arena_trim_(a, 0);
    cr_assert_eq(st->count, 0);
    cr_assert_eq(a->stash_bytes, 0);
    cr_assert_eq(a->nchunks, 0);
    free(v);
    free(copy);
    t_pool_done(p);
}

/* Emptied chunks go back beyond one spare per arena; trim takes the spare. */
Test(arena, empty_chunk_reserve)
{
    struct nbuf_pool *p = pool_with(4096, 64u << 10, 1);
    struct nbuf_arena *a = &p->arenas[0];
    unsigned szind = nbuf_sz_index_(64u << 10); /* a whole chunk */
    cr_assert_eq(szind, p->nclasses - 1);
    struct nbuf *v[4];
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, szind, v, 4), 4);
    cr_assert_eq(a->nchunks, 4);
    cr_assert_eq(a->nempty, 0);
    cr_assert_eq(atomic_load(&p->backing_bytes), 4u * (64u << 10));
    for (unsigned k = 0; k < 4; k++) {
        nbuf_pairs_free_(p, &v[k], 1, false);
        /* The first emptied chunk stays as the spare, later ones go back. */
        cr_assert_eq(a->nchunks, k == 0 ? 4 : 4 - k, "after %u frees: %u chunks", k + 1,
                     a->nchunks);
        arena_ok(a);
    }
    cr_assert_eq(a->nchunks, 1);
    cr_assert_eq(a->nempty, 1);
    struct nbuf_pool_stats s = t_stats(p);
    cr_assert_eq(s.chunks, 1);
    cr_assert_eq(s.empty_chunks, 1);
    /* The spare is reused before a new chunk is taken. */
    struct nbuf_chunk *spare = a->chunks;
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, szind, v, 1), 1);
    cr_assert_eq(v[0]->slab, spare);
    cr_assert_eq(a->nempty, 0);
    nbuf_pairs_free_(p, v, 1, false);
    nbuf_arena_trim_(a, 1);
    cr_assert_eq(a->nchunks, 1, "trim(keep 1) dropped the spare");
    nbuf_arena_trim_(a, 0);
    cr_assert_eq(a->nchunks, 0);
    cr_assert_eq(atomic_load(&p->backing_bytes), 0);
    t_pool_done(p);
}

/* Runs come from chunks in use before the empty spare is touched. */
Test(arena, prefers_chunks_in_use)
{
    struct nbuf_pool *p = pool_with(4096, 64u << 10, 1);
    struct nbuf_arena *a = &p->arenas[0];
    unsigned half = nbuf_sz_index_(32u << 10), whole = nbuf_sz_index_(64u << 10);
    unsigned quarter = nbuf_sz_index_(16u << 10);
    struct nbuf *x, *y, *z, *w;
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, half, &x, 1), 1);
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, half, &y, 1), 1);
    cr_assert_eq(x->slab, y->slab);
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, whole, &z, 1), 1);
    struct nbuf_chunk *used = x->slab, *spare = z->slab;
    cr_assert_neq(used, spare);
    nbuf_pairs_free_(p, &z, 1, false);
    nbuf_pairs_free_(p, &x, 1, false);
    cr_assert_eq(a->nempty, 1);
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, quarter, &w, 1), 1);
    cr_assert_eq(w->kind, NBUF_KIND_RUN);
    cr_assert_eq(w->slab, used, "a run was cut from the empty spare");
    cr_assert_eq(a->nempty, 1);
    arena_ok(a);
    nbuf_pairs_free_(p, &w, 1, false);
    nbuf_pairs_free_(p, &y, 1, false);
    /* Two empty chunks now: one goes back at once. */
    cr_assert_eq(a->nchunks, 1);
    arena_ok(a);
    t_pool_done(p);
}

Test(arena, headers_recycled)
{
    struct nbuf_pool *p = pool_with(8192, 4u << 20, 2);
    struct nbuf_arena *a = &p->arenas[1];
    enum { N = 200 };
    struct nbuf *h[N];
    cr_assert_eq(nbuf_arena_alloc_headers_(a, h, N), N);
    for (unsigned i = 0; i < N; i++)
        for (unsigned j = 0; j < i; j++)
            cr_assert_neq(h[i], h[j]);
    uint32_t blocks = a->nhblocks;
    cr_assert_geq(blocks * 64u, N);
    nbuf_headers_free_(p, h, N);
    /* Headers go back to arena 0 and are handed out again from there. */
    uint32_t before = p->arenas[0].nfree_headers;
    cr_assert_geq(before, N);
    cr_assert_eq(nbuf_arena_alloc_headers_(&p->arenas[0], h, N), N);
    cr_assert_eq(p->arenas[0].nfree_headers, before - N);
    nbuf_headers_free_(p, h, N);
    t_pool_done(p);
}

/* A batch mixing arenas is split and each pair goes to its home arena. */
Test(arena, pairs_go_home)
{
    struct nbuf_pool *p = pool_with(8192, 1u << 20, 3);
    enum { PER = 5 };
    struct nbuf *v[3 * PER];
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(nbuf_arena_alloc_pairs_(&p->arenas[i], nbuf_sz_index_(100 << (i * 4)),
                                             v + i * PER, PER),
                     PER);
    }
    /* Interleave: arena 0, 1, 2, 0, 1, 2... */
    struct nbuf *mix[3 * PER];
    for (unsigned k = 0; k < PER; k++)
        for (unsigned i = 0; i < 3; i++)
            mix[k * 3 + i] = v[i * PER + k];
    nbuf_pairs_free_(p, mix, 3 * PER, true);
    for (unsigned i = 0; i < 3; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        unsigned szind = nbuf_sz_index_(100 << (i * 4));
        cr_assert_eq(a->stash[szind].count, PER, "arena %u stash %u", i, a->stash[szind].count);
        for (unsigned k = 0; k < PER; k++) {
            struct nbuf *h = a->stash[szind].items[k];
            struct nbuf_chunk *c = h->kind == NBUF_KIND_SMALL
                                       ? ((struct nbuf_subpage *)h->slab)->chunk
                                       : (struct nbuf_chunk *)h->slab;
            cr_assert_eq(c->arena, a);
        }
        arena_ok(a);
    }
    cr_assert_eq(nbuf_pool_trim(p), 0);
    cr_assert_eq(atomic_load(&p->nchunks), 0);
    t_pool_done(p);
}

/* The checker notices broken counts (and so would catch real corruption). */
Test(arena, checker_detects_bad_counts)
{
    struct nbuf_pool *p = pool_with(8192, 1u << 20, 1);
    struct nbuf_arena *a = &p->arenas[0];
    struct nbuf *h;
    cr_assert_eq(nbuf_arena_alloc_pairs_(a, nbuf_sz_index_(64), &h, 1), 1);
    arena_ok(a);
    nbuf_arena_lock_(a);
    a->nempty++;
    cr_assert_not(nbuf_arena_check_(a));
    a->nempty--;
    a->chunks->free_pages--;
    cr_assert_not(nbuf_arena_check_(a));
    a->chunks->free_pages++;
    struct nbuf_subpage *s = h->slab;
    s->nfree--;
    cr_assert_not(nbuf_arena_check_(a));
    s->nfree++;
    cr_assert(nbuf_arena_check_(a));
    nbuf_arena_unlock_(a);
    nbuf_pairs_free_(p, &h, 1, false);
    t_pool_done(p);
}

struct bind_arg {
    struct nbuf_pool *p;
    pthread_barrier_t *bar;
    unsigned arena;
};

static void *
bind_thread(void *arg)
{
    struct bind_arg *ba = arg;
    struct nbuf *b = nbuf_alloc(ba->p, 100);
    T_CHECK(b != NULL);
    T_CHECK(nbuf_tls_.pool_id == ba->p->id);
    ba->arena = nbuf_tls_.tc->arena->index;
    /* Stay alive until everyone has bound. */
    pthread_barrier_wait(ba->bar);
    T_CHECK(nbuf_release(b) == 1);
    return NULL;
}

/* Threads alive at the same time bind to distinct arenas while any is free. */
Test(arena, threads_bind_least_loaded)
{
    if (t_bypass())
        cr_skip("pooled layout");
    enum { T = 4 };
    struct nbuf_pool *p = pool_with(8192, 1u << 20, T);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T);
    pthread_t th[T];
    struct bind_arg args[T];
    for (unsigned i = 0; i < T; i++) {
        args[i] = (struct bind_arg){.p = p, .bar = &bar};
        cr_assert_eq(pthread_create(&th[i], NULL, bind_thread, &args[i]), 0);
    }
    for (unsigned i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    t_thread_assert_ok();
    for (unsigned i = 0; i < T; i++)
        for (unsigned j = 0; j < i; j++)
            cr_assert_neq(args[i].arena, args[j].arena, "threads %u and %u share arena %u", i, j,
                          args[i].arena);
    for (unsigned i = 0; i < T; i++)
        cr_assert_eq(atomic_load(&p->arenas[i].nthreads), 0, "arena %u: exited thread counted", i);
    pthread_barrier_destroy(&bar);
    t_pool_done(p);
}
