/* SPDX-License-Identifier: MIT */
/*
 * Buffers: allocation and release (the fast paths: a pop or a push on the
 * thread cache, no lock, no atomic read-modify-write when the count is 1)
 * and reference counting. Cursors, access, growth and fd IO are in
 * buf_access.c. Invariant kept: a header's refcnt is 0 exactly while it is
 * free. Every debug feature (tracking, junk, quarantine, valgrind) hides
 * behind p->slow_alloc and b->slow; only ASan builds compile poisoning into
 * the fast paths. Calls the thread cache, the arenas (through it), huge.c,
 * stats and leak tracking.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Checked mode's junk: on allocation and on release (jemalloc's bytes). */
#define JUNK_ALLOC 0xa5
#define JUNK_FREE 0x5a

/* ---- allocation ---- */

static void
account_alloc(struct nbuf_pool *p, const struct nbuf *b, bool huge)
{
    struct nbuf_tstats d = {.nalloc = 1,
                            .bytes_alloc = b->capacity,
                            .req_alloc = b->requested,
                            .huge_alloc = huge,
                            .slow_alloc = 1,
                            .cache_misses = b->kind == NBUF_KIND_BYPASS};
    nbuf_stats_account_(p, &d, 0);
}

static void
account_release(struct nbuf_pool *p, const struct nbuf *b)
{
    struct nbuf_tstats d = {
        .nrelease = 1, .bytes_release = b->capacity, .req_release = b->requested};
    nbuf_stats_account_(p, &d, b->tid);
}

/* Common initialisation of a header about to be handed out. */
static inline void
buf_init(struct nbuf *b, struct nbuf_pool *p, size_t requested, size_t max_capacity)
{
    b->reader = 0;
    b->writer = 0;
    b->max_capacity = max_capacity;
    b->requested = requested;
    b->flags = p->buf_flags;
    nbuf_buf_set_slow_(b, p->buf_slow);
    b->root = NULL;
    b->ext = NULL;
    atomic_store_explicit(&b->nviews, 0, memory_order_relaxed);
    atomic_store_explicit(&b->refcnt, 1, memory_order_relaxed);
}

static struct nbuf *
alloc_huge(struct nbuf_pool *p, size_t capacity)
{
    struct nbuf *b = nbuf_header_alloc_(p);
    if (!b)
        return NULL;
    b->pool = p;
    b->flags = 0;
    size_t size = nbuf_align_up_(capacity, 4096);
    b->mem = nbuf_huge_alloc_(p, size);
    if (!b->mem) {
        nbuf_header_free_(b);
        return NULL;
    }
    b->kind = NBUF_KIND_HUGE;
    b->szind = NBUF_SZIND_HUGE;
    b->capacity = size;
    /* The backing size: capacity may be clamped to max_capacity below. */
    b->slab = (void *)(uintptr_t)size;
    return b;
}

static struct nbuf *
alloc_bypass(struct nbuf_pool *p, size_t capacity, unsigned flags)
{
    struct nbuf *b = nbuf_header_alloc_(p);
    if (!b)
        return NULL;
    b->pool = p;
    /* Exact size, so ASan and valgrind see an overread at capacity. */
    if (flags & NBUF_ALIGN_PAGE)
        b->mem = aligned_alloc(p->cfg.page_size,
                               nbuf_align_up_(capacity ? capacity : 1, p->cfg.page_size));
    else
        b->mem = malloc(capacity ? capacity : 1);
    if (!b->mem) {
        b->flags = 0;
        nbuf_header_free_(b);
        errno = ENOMEM;
        return NULL;
    }
    b->kind = NBUF_KIND_BYPASS;
    b->szind = NBUF_SZIND_HUGE;
    b->capacity = capacity;
    return b;
}

/* Everything the fast path does not take: huge, bypass, flags, misses, debug
 * modes. The buffer is not tracked (nbuf_alloc* track it; growth must not). */
static struct nbuf *
alloc_slow(struct nbuf_pool *p, size_t capacity, size_t max_capacity, unsigned flags)
{
    if (capacity > max_capacity || max_capacity > p->cfg.max_buffer_size) {
        errno = EINVAL;
        return NULL;
    }
    struct nbuf *b;
    size_t want = capacity;
    if (flags & NBUF_ALIGN_PAGE)
        want = nbuf_align_up_(capacity ? capacity : 1, p->cfg.page_size);
    bool huge = false;
    if (p->cfg.flags & NBUF_POOL_BYPASS)
        b = alloc_bypass(p, capacity, flags);
    else if (want > p->cfg.chunk_size) {
        b = alloc_huge(p, want);
        huge = true;
    } else
        b = nbuf_tcache_alloc_slow_(p, nbuf_sz_index_(want));
    if (!b)
        return NULL;
    buf_init(b, p, capacity, max_capacity);
    if (b->kind != NBUF_KIND_SMALL && b->kind != NBUF_KIND_RUN) {
        nbuf_buf_set_slow_(b, 1);
        b->tid = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc->id : 0;
    }
    /* A custom growth bound must not reach the cache: the allocation fast
     * path trusts cached pairs to carry the pool's max_buffer_size, and the
     * slow release puts it back. */
    if (max_capacity != p->cfg.max_buffer_size)
        nbuf_buf_set_slow_(b, 1);
    if (b->capacity > max_capacity) {
        /* Hide the class slack (poisoned: an overread is reported); the
         * slow release restores the class size. */
        NBUF_POISON(b->mem + max_capacity, b->capacity - max_capacity);
        b->capacity = max_capacity;
        nbuf_buf_set_slow_(b, 1);
    }
    if (b->kind != NBUF_KIND_BYPASS)
        NBUF_UNPOISON(b->mem, b->capacity);
    if ((flags & NBUF_ZERO) || (p->cfg.flags & NBUF_POOL_ZERO))
        memset(b->mem, 0, b->capacity);
    else if (b->flags & NBUF_F_CHECKED)
        memset(b->mem, JUNK_ALLOC, b->capacity);
    account_alloc(p, b, huge);
    return b;
}

struct nbuf *
nbuf_buf_alloc_untracked_(struct nbuf_pool *p, size_t capacity, size_t max_capacity)
{
    return alloc_slow(p, capacity, max_capacity, 0);
}

static struct nbuf *
alloc_tracked(struct nbuf_pool *p, size_t capacity, size_t max_capacity, unsigned flags)
{
    struct nbuf *b = alloc_slow(p, capacity, max_capacity, flags);
    if (b && unlikely(p->leaks))
        nbuf_leak_track_(p, b);
    return b;
}

/* A cached pair becomes a fresh buffer of @capacity requested bytes. Cached
 * pairs are normalised on their way in (max_capacity, flags, key...): only
 * the cursors, the counts and the statistics change here. */
static inline struct nbuf *
pair_hand_out(struct nbuf_tcache *tc, struct nbuf *b, size_t capacity)
{
    b->reader = 0;
    b->writer = 0;
    b->requested = capacity;
    /* A fresh buffer has had no views (the last owner may have). */
    atomic_store_explicit(&b->nviews, 0, memory_order_relaxed);
    atomic_store_explicit(&b->refcnt, 1, memory_order_relaxed);
    NBUF_ASAN_UNPOISON(b->mem, b->capacity);
    NBUF_COUNTER_ADD64(tc->st.req_alloc, capacity);
    return b;
}

/* Out of line, so that the fast path needs no stack frame. @p is a pool or
 * &nbuf_no_pool_ (a NULL argument before the default pool exists). */
static __attribute__((noinline)) struct nbuf *
alloc_miss(struct nbuf_pool *p, size_t capacity)
{
    if (!(p = nbuf_pool_resolve_(p)))
        return NULL;
    /* Above the bins: the thread's large cache, with no lock. */
    if (capacity - 1 < p->large_max && p->fast_id == nbuf_tls_.pool_id) {
        unsigned szind = nbuf_sz_index_(capacity);
        struct nbuf *b;
        if (szind >= p->ncached && (b = nbuf_tcache_large_get_(nbuf_tls_.tc, szind)))
            return pair_hand_out(nbuf_tls_.tc, b, capacity);
    }
    return alloc_tracked(p, capacity, p->cfg.max_buffer_size, 0);
}

/*
 * The fast path: a pop from the bound thread cache. One test admits it:
 * the pool's fast_id is the bound pool's id (a pool in a debug mode, an
 * unbound thread and a NULL argument before the default pool exists all
 * fail it) and 1 <= capacity <= 64 KiB; then an empty bin (uncached or
 * drained) is the miss.
 */
NBUF_EXPORT struct nbuf *
nbuf_alloc(struct nbuf_pool *p, size_t capacity)
{
    p = nbuf_pool_fast_resolve_(p);
    struct nbuf_tcache *tc = nbuf_tls_.tc;
    size_t below = capacity - 1; /* 0 wraps: a 0-byte request is slow */
    if (likely(p->fast_id == nbuf_tls_.pool_id && below < NBUF_FAST_MAX)) {
        struct nbuf_tcache_bin *bin = nbuf_tcache_bin_of_(tc, below);
        struct nbuf *b = bin->head;
        if (likely(b)) {
            bin->head = b->next;
            NBUF_COUNTER_ADD32(bin->room, 1);
            NBUF_COUNTER_ADD64(bin->nalloc, 1);
            return pair_hand_out(tc, b, capacity);
        }
    }
    return alloc_miss(p, capacity);
}

NBUF_EXPORT struct nbuf *
nbuf_alloc_ex(struct nbuf_pool *p, size_t capacity, size_t max_capacity, unsigned flags)
{
    if (!(p = nbuf_pool_resolve_(p)))
        return NULL;
    if (flags & ~(NBUF_ZERO | NBUF_ALIGN_PAGE)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_tracked(p, capacity, max_capacity, flags);
}

/* ---- release ---- */

/* Pooled memory going back: scrub or junk it, then poison it whole. */
static void
mem_retire(struct nbuf *b, size_t size)
{
    if (b->flags & (NBUF_F_SCRUB | NBUF_F_CHECKED)) {
        NBUF_UNPOISON(b->mem, size); /* the hidden slack may be poisoned */
        memset(b->mem, (b->flags & NBUF_F_SCRUB) ? 0 : JUNK_FREE, size);
    }
    NBUF_POISON(b->mem, size);
}

void
nbuf_buf_header_put_(struct nbuf *h)
{
    if (h->flags & NBUF_F_CHECKED)
        nbuf_quarantine_push_(h);
    else if (likely(h->pool))
        nbuf_header_free_(h);
    else
        free(h);
}

static void
view_free(struct nbuf *b)
{
    switch (b->kind) {
    case NBUF_KIND_VIEW: {
        struct nbuf *root = b->root;
        struct nbuf_pool *p = b->pool;
        if (p)
            nbuf_views_account_(p, false);
        nbuf_buf_header_put_(b);
        /* The view's reference on the root goes here. */
        nbuf_release(root);
        return;
    }
    case NBUF_KIND_WRAP: {
        void (*free_fn)(void *, void *) = b->free_fn;
        void *data = b->mem, *ctx = b->slab;
        nbuf_buf_header_put_(b);
        if (free_fn)
            free_fn(data, ctx);
        return;
    }
    case NBUF_KIND_MAPPED:
        if (b->capacity) {
            /* The mapping starts on the page holding mem (see map_file). */
            size_t page = (size_t)sysconf(_SC_PAGESIZE);
            size_t delta = (size_t)((uintptr_t)b->mem & (page - 1));
            munmap(b->mem - delta, b->capacity + delta);
        }
        nbuf_buf_header_put_(b);
        return;
    default: nbuf_assert(!"not a view, wrapped or mapped buffer");
    }
}

void
nbuf_buf_free_(struct nbuf *b)
{
    struct nbuf_pool *p = b->pool;
    if (unlikely(b->ext))
        nbuf_leak_untrack_(b);
    switch (b->kind) {
    case NBUF_KIND_SMALL:
    case NBUF_KIND_RUN:
        account_release(p, b);
        b->capacity = nbuf_sz_usize_(b->szind);
        mem_retire(b, b->capacity);
        /* Checked mode: the memory goes on in a fresh header; this one waits
         * in the quarantine so a stale release still finds it dead. */
        if (b->flags & NBUF_F_CHECKED)
            b = nbuf_quarantine_swap_(b);
        /* Normalise for the allocation fast path, which sets only cursors
         * (pools with tracking or checks never take it). */
        b->max_capacity = p->cfg.max_buffer_size;
        nbuf_buf_set_slow_(b, p->buf_slow);
        b->flags = p->buf_flags;
        nbuf_tcache_release_slow_(b);
        return;
    case NBUF_KIND_HUGE: {
        size_t size = (size_t)(uintptr_t)b->slab;
        account_release(p, b);
        NBUF_UNPOISON(b->mem, size);
        if (b->flags & NBUF_F_SCRUB)
            memset(b->mem, 0, size);
        nbuf_huge_free_(p, b->mem, size);
        nbuf_buf_header_put_(b);
        return;
    }
    case NBUF_KIND_BYPASS:
        account_release(p, b);
        if (b->flags & (NBUF_F_SCRUB | NBUF_F_CHECKED))
            memset(b->mem, (b->flags & NBUF_F_SCRUB) ? 0 : JUNK_FREE, b->capacity);
        free(b->mem);
        nbuf_buf_header_put_(b);
        return;
    case NBUF_KIND_VIEW:
    case NBUF_KIND_WRAP:
    case NBUF_KIND_MAPPED: view_free(b); return;
    default: nbuf_assert(!"unknown buffer kind"); return;
    }
}

/* A pointer that no pool issued: never touch what it points to again. */
static int
report_foreign(const struct nbuf *b, const char *op)
{
    nbuf_report_("nbuf: %s(%p): not a buffer nbuf issued (stack, malloc'd or interior "
                 "pointer?); ignored\n",
                 op, (const void *)b);
    return -EINVAL;
}

int
nbuf_buf_dead_(const struct nbuf *b, const char *op)
{
    if (b->magic != NBUF_MAGIC)
        return report_foreign(b, op);
    nbuf_report_buf_(b,
                     "nbuf: %s(%p): buffer already released (double or stale release, or use "
                     "after release)\n",
                     op, (const void *)b);
    return -EINVAL;
}

static __attribute__((noinline)) int
release_shared(struct nbuf *b, uint32_t r)
{
    if (unlikely(b->magic != NBUF_MAGIC))
        return report_foreign(b, "nbuf_release");
    /* Recorded before the decrement: after it, another thread may free b. */
    if (unlikely(b->flags & NBUF_F_TRACKED) && r > 1)
        nbuf_leak_record_(b, NBUF_OP_RELEASE);
    while (r > 0) {
        if (atomic_compare_exchange_weak_explicit(&b->refcnt, &r, r - 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            if (r != 1)
                return 0;
            nbuf_buf_free_(b);
            return 1;
        }
    }
    return nbuf_buf_dead_(b, "nbuf_release");
}

/* The last reference of a buffer that takes the slow path. Out of line (as
 * the two below), so the release fast path needs no stack frame. */
static __attribute__((noinline)) int
release_last_slow(struct nbuf *b)
{
    if (unlikely(b->magic != NBUF_MAGIC))
        return report_foreign(b, "nbuf_release");
    if (unlikely(b->flags & NBUF_F_CHECKED)) {
        /* Checked mode: a second release racing with this one (a double
         * release from two threads) must find the count gone, not free the
         * buffer twice; the header then waits in the quarantine. */
        uint32_t one = 1;
        if (!atomic_compare_exchange_strong_explicit(&b->refcnt, &one, 0, memory_order_acq_rel,
                                                     memory_order_acquire))
            return one ? release_shared(b, one) : nbuf_buf_dead_(b, "nbuf_release");
    } else {
        atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
    }
    nbuf_buf_free_(b);
    return 1;
}

/* The last reference is gone and the pair goes to a cache: dead from now
 * on (refcnt 0 is what a stale or double release finds), its bytes no
 * buffer's (ASan). The counterpart of pair_hand_out. */
static inline void
pair_take_back(struct nbuf *b)
{
    atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
    NBUF_ASAN_POISON(b->mem, b->capacity);
}

static __attribute__((noinline)) int
release_gc(struct nbuf_tcache *tc)
{
    tc->gc_tick = NBUF_GC_INTERVAL;
    nbuf_tcache_gc_(tc);
    return 1;
}

/* The last reference of a pooled buffer whose key is not this thread's:
 * released on another thread than the one whose cache it came from (or
 * after a slow allocation), or whose bin is full. A pair of the bound pool
 * joins this thread's cache if its bin has room; anything else takes the
 * slow path. */
static __attribute__((noinline)) int
release_other(struct nbuf *b)
{
    if (unlikely(b->magic != NBUF_MAGIC))
        return report_foreign(b, "nbuf_release");
    struct nbuf_pool *p = b->pool;
    if (!b->slow && p->id == nbuf_tls_.pool_id) {
        struct nbuf_tcache *tc = nbuf_tls_.tc;
        struct nbuf_tcache_bin *bin = &tc->bins[b->szind];
        uint32_t tid = b->tid;
        /* Read now: once staged, a flush may hand b to another thread. */
        size_t requested = b->requested;
        if (nbuf_tcache_stages_(tc, b)) {
            pair_take_back(b);
            NBUF_COUNTER_ADD64(tc->st.nrelease, 1);
            NBUF_COUNTER_ADD64(tc->st.bytes_release, b->capacity);
            nbuf_tcache_stage_(tc, b);
        } else if (bin->room) {
            NBUF_COUNTER_ADD32(bin->room, -1);
            pair_take_back(b);
            nbuf_tcache_bin_push_(tc, bin, b);
            NBUF_COUNTER_ADD64(bin->nrelease, 1);
        } else if (b->szind >= p->ncached && p->fast_id == nbuf_tls_.pool_id &&
                   nbuf_tcache_large_put_(tc, b)) {
            pair_take_back(b);
        } else {
            return release_last_slow(b);
        }
        NBUF_COUNTER_ADD64(tc->st.req_release, requested);
        if (tid != tc->id) /* released on another thread: it joins this cache */
            NBUF_COUNTER_ADD64(tc->st.remote_releases, 1);
        if (unlikely(--tc->gc_tick == 0))
            return release_gc(tc);
        return 1;
    }
    return release_last_slow(b);
}

/*
 * The fast path: the only reference (no atomic read-modify-write) of a
 * buffer whose key is this thread's cache key (so: pooled, not slow, of the
 * bound pool, from this cache), pushed on its bin when the bin has room.
 */
NBUF_EXPORT int
nbuf_release(struct nbuf *b)
{
    if (unlikely(!b))
        return 0;
    uint32_t r = atomic_load_explicit(&b->refcnt, memory_order_acquire);
    if (unlikely(r != 1))
        return release_shared(b, r);
    if (likely(b->key == nbuf_tls_.key)) {
        struct nbuf_tcache *tc = nbuf_tls_.tc;
        struct nbuf_tcache_bin *bin = &tc->bins[b->szind];
        NBUF_OPAQUE(bin); /* one address computation, not one per use */
        NBUF_ROOM_TAKE(bin->room, full);
        pair_take_back(b);
        b->next = bin->head;
        bin->head = b;
        NBUF_COUNTER_ADD64(bin->nrelease, 1);
        NBUF_COUNTER_ADD64(tc->st.req_release, b->requested);
        if (likely(--tc->gc_tick != 0))
            return 1;
        return release_gc(tc);
    full:
        NBUF_COUNTER_ADD32(bin->room, 1); /* undo: the bin is full */
    }
    return release_other(b);
}

NBUF_EXPORT struct nbuf *
nbuf_retain(struct nbuf *b)
{
    if (!b) {
        errno = EINVAL;
        return NULL;
    }
    uint32_t r = atomic_load_explicit(&b->refcnt, memory_order_relaxed);
    do {
        if (r == 0) {
            errno = -nbuf_buf_dead_(b, "nbuf_retain");
            return NULL;
        }
        if (r == UINT32_MAX) {
            errno = EOVERFLOW;
            return NULL;
        }
    } while (!atomic_compare_exchange_weak_explicit(&b->refcnt, &r, r + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (unlikely(b->flags & NBUF_F_TRACKED))
        nbuf_leak_record_(b, NBUF_OP_RETAIN);
    return b;
}

NBUF_EXPORT unsigned
nbuf_refcnt(const struct nbuf *b)
{
    return b ? atomic_load_explicit(&((struct nbuf *)b)->refcnt, memory_order_relaxed) : 0;
}
