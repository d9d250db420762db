/* SPDX-License-Identifier: MIT */
/*
 * Thread caches: per thread and pool, a bounded stack of ready pairs (header
 * with memory) per size class, so that the fast paths in buf.c are a pop and
 * a push. Misses fill half a bin from the bound arena in one lock round;
 * overflows flush the coldest half to the home arenas' stashes. A GC pass
 * every NBUF_GC_INTERVAL releases returns what a bin has not needed since the
 * last pass. Caches are flushed at thread exit (pthread key destructor); a
 * thread that is exiting, or that releases after its cache is gone, uses the
 * arenas directly.
 */
#include "internal.h"

#define NBUF_GC_INTERVAL 4096
#define HEADER_CACHE_MAX 256
#define HEADER_BATCH 32

__thread struct nbuf_tls nbuf_tls_;
/* Set once this thread has started tearing down its caches. */
static __thread bool tls_dying;

static struct nbuf_tcache *
tcache_new(struct nbuf_pool *p)
{
    size_t slots = 0;
    uint32_t caps[NBUF_NCLASSES] = {0};
    bool cached = !(p->cfg.flags & NBUF_POOL_NO_CACHE);
    for (unsigned i = 0; i < p->ncached && cached; i++) {
        caps[i] = i < p->nsmall ? p->cfg.cache_small_count : p->cfg.cache_normal_count;
        slots += caps[i];
    }
    /* fast_max 0 (flags force the slow path) still lets a 0-byte request
     * into nbuf_alloc's fast path (capacity <= fast_max): with its class
     * never cached, that lookup always misses. */
    if (p->fast_max == 0 && caps[0]) {
        slots -= caps[0];
        caps[0] = 0;
    }
    struct nbuf_tcache *tc = calloc(1, sizeof(*tc) + slots * sizeof(struct nbuf *));
    if (!tc)
        return NULL;
    struct nbuf **stack = (struct nbuf **)(tc + 1);
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        struct nbuf_tcache_bin *bin = &tc->bins[i];
        bin->cap = caps[i];
        bin->batch = caps[i] > 1 ? caps[i] / 2 : 1;
        bin->stack = stack;
        stack += caps[i];
    }
    tc->pool = p;
    tc->gc_ticks = NBUF_GC_INTERVAL;
    tc->arena = nbuf_pool_bind_arena_(p);
    tc->seen_trim_epoch = atomic_load(&p->trim_epoch);
    pthread_mutex_lock(&p->lock);
    tc->id = ++p->next_tcache_id;
    tc->next = p->tcaches;
    if (tc->next)
        tc->next->prev = tc;
    p->tcaches = tc;
    pthread_mutex_unlock(&p->lock);
    return tc;
}

struct nbuf_tcache *
nbuf_tcache_get_slow_(struct nbuf_pool *p)
{
    if (tls_dying)
        return NULL;
    struct nbuf_tcache *tc = pthread_getspecific(p->tsd_key);
    if (!tc) {
        tc = tcache_new(p);
        if (!tc)
            return NULL;
        if (pthread_setspecific(p->tsd_key, tc) != 0) {
            nbuf_tcache_destroy_(tc);
            return NULL;
        }
    }
    nbuf_tls_.pool_id = p->id;
    nbuf_tls_.tc = tc;
    return tc;
}

/* Give back the oldest n pairs of a bin (the bottom of its stack). */
static void
bin_flush(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin, uint32_t n, bool to_stash)
{
    if (!n)
        return;
    nbuf_pairs_free_(tc->pool, bin->stack, n, to_stash);
    memmove(bin->stack, bin->stack + n, (bin->count - n) * sizeof(*bin->stack));
    NBUF_STORE_RELAXED(bin->count, bin->count - n);
    if (bin->low_water > bin->count)
        bin->low_water = bin->count;
}

static void
headers_flush(struct nbuf_tcache *tc, uint32_t keep)
{
    struct nbuf *batch[HEADER_CACHE_MAX];
    uint32_t n = 0;
    while (tc->nheaders > keep) {
        struct nbuf *h = tc->headers;
        tc->headers = h->root;
        tc->nheaders--;
        batch[n++] = h;
    }
    if (n)
        nbuf_headers_free_(tc->pool, batch, n);
}

void
nbuf_tcache_flush_(struct nbuf_tcache *tc)
{
    for (unsigned i = 0; i < tc->pool->ncached; i++)
        bin_flush(tc, &tc->bins[i], tc->bins[i].count, false);
    headers_flush(tc, 0);
}

/* Return what each bin has not dipped into since the last pass. */
static void
tcache_gc(struct nbuf_tcache *tc)
{
    tc->gc_ticks = NBUF_GC_INTERVAL;
    uint64_t epoch = atomic_load_explicit(&tc->pool->trim_epoch, memory_order_relaxed);
    if (epoch != tc->seen_trim_epoch) {
        tc->seen_trim_epoch = epoch;
        nbuf_tcache_flush_(tc);
        return;
    }
    for (unsigned i = 0; i < tc->pool->ncached; i++) {
        struct nbuf_tcache_bin *bin = &tc->bins[i];
        if (bin->low_water)
            bin_flush(tc, bin, (bin->low_water + 1) / 2, false);
        bin->low_water = bin->count;
    }
}

void
nbuf_tcache_destroy_(struct nbuf_tcache *tc)
{
    struct nbuf_pool *p = tc->pool;
    nbuf_tcache_flush_(tc);
    pthread_mutex_lock(&p->lock);
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        p->tcaches = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    nbuf_tstats_add_(&p->retired, &tc->st);
    pthread_mutex_unlock(&p->lock);
    if (tc->arena)
        atomic_fetch_sub(&tc->arena->nthreads, 1);
    if (nbuf_tls_.tc == tc) {
        nbuf_tls_.pool_id = 0;
        nbuf_tls_.tc = NULL;
    }
    free(tc);
}

void
nbuf_tcache_destructor_(void *arg)
{
    tls_dying = true;
    nbuf_tcache_destroy_(arg);
}

/* One fill attempt; on memory_limit, trim everything and try once more. */
static unsigned
fill(struct nbuf_pool *p, struct nbuf_arena *a, unsigned szind, struct nbuf **out, unsigned n)
{
    unsigned got = nbuf_arena_alloc_pairs_(a, szind, out, n);
    if (got || errno != EDQUOT)
        return got;
    nbuf_pool_trim_all_(p);
    got = nbuf_arena_alloc_pairs_(a, szind, out, n);
    if (!got && errno == EDQUOT) {
        atomic_fetch_add(&p->limit_failures, 1);
        nbuf_report_("nbuf: memory_limit %zu reached (backing %llu bytes) allocating a %zu-byte "
                     "buffer\n",
                     p->cfg.memory_limit, (unsigned long long)atomic_load(&p->backing_bytes),
                     nbuf_sz_usize_(szind));
        errno = ENOMEM;
    }
    return got;
}

struct nbuf *
nbuf_tcache_alloc_slow_(struct nbuf_pool *p, unsigned szind)
{
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    struct nbuf *h = NULL;
    if (!tc) {
        /* Exiting thread: straight from an arena. */
        if (!fill(p, &p->arenas[0], szind, &h, 1))
            return NULL;
        h->tid = 0;
        return h;
    }
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    if (atomic_load_explicit(&p->trim_epoch, memory_order_relaxed) != tc->seen_trim_epoch)
        tcache_gc(tc);
    if (bin->count) {
        /* Arrived here only because the thread-local pointed elsewhere. */
        h = bin->stack[bin->count - 1];
        NBUF_STORE_RELAXED(bin->count, bin->count - 1);
    } else if (bin->cap == 0) {
        if (!fill(p, tc->arena, szind, &h, 1))
            return NULL;
        NBUF_STAT_ADD(tc->st.cache_misses, 1);
    } else {
        unsigned got = fill(p, tc->arena, szind, bin->stack, bin->batch);
        if (!got)
            return NULL;
        /* Cached pairs belong to no buffer (see internal.h). */
        for (unsigned i = 0; i + 1 < got; i++)
            NBUF_POISON(bin->stack[i]->mem, nbuf_sz_usize_(szind));
        h = bin->stack[got - 1];
        NBUF_STORE_RELAXED(bin->count, got - 1);
        bin->low_water = 0;
        NBUF_STAT_ADD(tc->st.cache_misses, 1);
    }
    h->tid = tc->id;
    return h;
}

void
nbuf_tcache_release_slow_(struct nbuf *b)
{
    struct nbuf_pool *p = b->pool;
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    unsigned szind = b->szind;
    if (!tc) {
        nbuf_pairs_free_(p, &b, 1, false);
        return;
    }
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    if (szind >= p->ncached || bin->cap == 0) {
        nbuf_pairs_free_(p, &b, 1, false);
        return;
    }
    if (bin->count == bin->cap)
        bin_flush(tc, bin, bin->batch, true);
    bin->stack[bin->count] = b;
    NBUF_STORE_RELAXED(bin->count, bin->count + 1);
    if (--tc->gc_ticks <= 0 ||
        atomic_load_explicit(&p->trim_epoch, memory_order_relaxed) != tc->seen_trim_epoch)
        tcache_gc(tc);
}

/* Called by the release fast path when its GC countdown runs out. */
void
nbuf_tcache_gc_(struct nbuf_tcache *tc)
{
    tcache_gc(tc);
}

struct nbuf *
nbuf_header_alloc_(struct nbuf_pool *p)
{
    struct nbuf *h;
    if (p->cfg.flags & NBUF_POOL_BYPASS) {
        h = calloc(1, sizeof(*h));
        if (!h)
            errno = ENOMEM;
        else
            h->magic = NBUF_MAGIC;
        return h;
    }
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    if (!tc) {
        return nbuf_arena_alloc_headers_(&p->arenas[0], &h, 1) ? h : NULL;
    }
    if (!tc->headers) {
        struct nbuf *batch[HEADER_BATCH];
        unsigned got = nbuf_arena_alloc_headers_(tc->arena, batch, HEADER_BATCH);
        if (!got)
            return NULL;
        for (unsigned i = 0; i < got; i++) {
            batch[i]->root = tc->headers;
            tc->headers = batch[i];
        }
        tc->nheaders += got;
    }
    h = tc->headers;
    tc->headers = h->root;
    tc->nheaders--;
    h->root = NULL;
    return h;
}

void
nbuf_header_free_(struct nbuf *h)
{
    struct nbuf_pool *p = h->pool;
    if (p->cfg.flags & NBUF_POOL_BYPASS) {
        free(h);
        return;
    }
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    if (!tc) {
        nbuf_headers_free_(p, &h, 1);
        return;
    }
    h->root = tc->headers;
    tc->headers = h;
    if (++tc->nheaders > HEADER_CACHE_MAX)
        headers_flush(tc, HEADER_CACHE_MAX / 2);
}

bool
nbuf_tcache_check_(const struct nbuf_tcache *tc)
{
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        const struct nbuf_tcache_bin *bin = &tc->bins[i];
        if (bin->count > bin->cap)
            return false;
        for (uint32_t k = 0; k < bin->count; k++) {
            const struct nbuf *b = bin->stack[k];
            if (b->szind != i || b->pool != tc->pool || atomic_load(&b->refcnt) != 0 ||
                (b->kind != NBUF_KIND_SMALL && b->kind != NBUF_KIND_RUN))
                return false;
        }
    }
    uint32_t n = 0;
    for (const struct nbuf *h = tc->headers; h; h = h->root)
        n++;
    return n == tc->nheaders;
}
