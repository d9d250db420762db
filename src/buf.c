/* SPDX-License-Identifier: MIT */
/*
 * Buffers: allocation and release (the fast paths: a pop or a push on the
 * thread cache, no lock, no atomic read-modify-write when the count is 1),
 * reference counting, cursors, direct access and growth.
 * Invariants kept: reader <= writer <= capacity <= max_capacity; a header's
 * refcnt is 0 exactly while it is free.
 */
#include <unistd.h>

#include "internal.h"

/* Netty's growth schedule: double up to 4 MiB, then 4 MiB steps. */
#define GROWTH_THRESHOLD ((size_t)4 << 20)

/* ---- allocation ---- */

static void
account_alloc(struct nbuf_pool *p, const struct nbuf *b, bool huge)
{
    struct nbuf_tstats d = {.nalloc = 1,
                            .bytes_alloc = b->capacity,
                            .req_alloc = b->requested,
                            .huge_alloc = huge,
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
    b->slow = p->buf_slow;
    b->root = NULL;
    b->ext = NULL;
    atomic_store_explicit(&b->nviews, 0, memory_order_relaxed);
    atomic_store_explicit(&b->refcnt, 1, memory_order_relaxed);
}

static struct nbuf *
alloc_huge(struct nbuf_pool *p, size_t capacity)
{
    size_t size = nbuf_align_up_(capacity, 4096);
    struct nbuf *b = nbuf_header_alloc_(p);
    if (!b)
        return NULL;
    b->pool = p;
    if (!nbuf_pool_charge_(p, size)) {
        nbuf_pool_trim_all_(p);
        if (!nbuf_pool_charge_(p, size)) {
            atomic_fetch_add(&p->limit_failures, 1);
            nbuf_report_("nbuf: memory_limit %zu reached allocating a %zu-byte huge buffer\n",
                         p->cfg.memory_limit, capacity);
            goto out_header;
        }
    }
    b->mem = nbuf_backing_alloc_(&p->backing, size, p->cfg.page_size);
    if (!b->mem) {
        nbuf_pool_uncharge_(p, size);
        goto out_header;
    }
    b->kind = NBUF_KIND_HUGE;
    b->szind = NBUF_SZIND_HUGE;
    b->capacity = size;
    return b;

out_header:
    nbuf_header_free_(b);
    errno = ENOMEM;
    return NULL;
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
        nbuf_header_free_(b);
        errno = ENOMEM;
        return NULL;
    }
    b->kind = NBUF_KIND_BYPASS;
    b->szind = NBUF_SZIND_HUGE;
    b->capacity = capacity;
    return b;
}

/* Everything the fast path does not take: huge, bypass, flags, misses. */
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
        b->slow = 1;
        b->tid = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc->id : 0;
    }
    if (b->capacity > max_capacity) {
        /* Hide the class slack; the slow release restores it. */
        b->capacity = max_capacity;
        b->slow = 1;
    }
    if ((flags & NBUF_ZERO) || (p->cfg.flags & NBUF_POOL_ZERO))
        memset(b->mem, 0, b->capacity);
    account_alloc(p, b, huge);
    return b;
}

NBUF_EXPORT struct nbuf *
nbuf_alloc(struct nbuf_pool *p, size_t capacity)
{
    if (unlikely(!p) && !(p = nbuf_pool_default()))
        return NULL;
    if (likely(capacity <= p->fast_max && nbuf_tls_.pool_id == p->id)) {
        struct nbuf_tcache *tc = nbuf_tls_.tc;
        struct nbuf_tcache_bin *bin = &tc->bins[nbuf_sz_index_(capacity)];
        uint32_t n = bin->count;
        if (likely(n)) {
            struct nbuf *b = bin->stack[--n];
            NBUF_STORE_RELAXED(bin->count, n);
            if (n < bin->low_water)
                bin->low_water = n;
            buf_init(b, p, capacity, p->cfg.max_buffer_size);
            b->tid = tc->id;
            NBUF_STAT_ADD(tc->st.nalloc, 1);
            NBUF_STAT_ADD(tc->st.bytes_alloc, b->capacity);
            NBUF_STAT_ADD(tc->st.req_alloc, capacity);
            return b;
        }
    }
    return alloc_slow(p, capacity, p->cfg.max_buffer_size, 0);
}

NBUF_EXPORT struct nbuf *
nbuf_alloc_ex(struct nbuf_pool *p, size_t capacity, size_t max_capacity, unsigned flags)
{
    if (unlikely(!p) && !(p = nbuf_pool_default()))
        return NULL;
    if (flags & ~(NBUF_ZERO | NBUF_ALIGN_PAGE)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_slow(p, capacity, max_capacity, flags);
}

/* ---- release ---- */

/* Memory of a pooled buffer going back: scrub, then cache or arena. */
static void
pooled_free_slow(struct nbuf *b)
{
    if (b->flags & NBUF_F_SCRUB)
        memset(b->mem, 0, b->capacity);
    nbuf_tcache_release_slow_(b);
}

void
nbuf_buf_free_(struct nbuf *b)
{
    struct nbuf_pool *p = b->pool;
    switch (b->kind) {
    case NBUF_KIND_SMALL:
    case NBUF_KIND_RUN:
        account_release(p, b);
        b->capacity = nbuf_sz_usize_(b->szind);
        pooled_free_slow(b);
        return;
    case NBUF_KIND_HUGE:
        account_release(p, b);
        if (b->flags & NBUF_F_SCRUB)
            memset(b->mem, 0, b->capacity);
        nbuf_backing_free_(&p->backing, b->mem, b->capacity, p->cfg.page_size);
        nbuf_pool_uncharge_(p, b->capacity);
        nbuf_header_free_(b);
        return;
    case NBUF_KIND_BYPASS:
        account_release(p, b);
        if (b->flags & NBUF_F_SCRUB)
            memset(b->mem, 0, b->capacity);
        free(b->mem);
        nbuf_header_free_(b);
        return;
    default:
        /* Views, wrapped and mapped buffers: see their constructors. */
        nbuf_assert(!"unknown buffer kind");
        return;
    }
}

static int
release_shared(struct nbuf *b, uint32_t r)
{
    while (r > 0) {
        if (atomic_compare_exchange_weak_explicit(&b->refcnt, &r, r - 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            if (r != 1)
                return 0;
            nbuf_buf_free_(b);
            return 1;
        }
    }
    nbuf_report_("nbuf: release of already released buffer %p (double or stale release)\n",
                 (void *)b);
    return -EINVAL;
}

NBUF_EXPORT int
nbuf_release(struct nbuf *b)
{
    if (unlikely(!b))
        return 0;
    /* The only reference: nobody else can touch the count, skip the RMW. */
    uint32_t r = atomic_load_explicit(&b->refcnt, memory_order_acquire);
    if (unlikely(r != 1))
        return release_shared(b, r);
    atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
    if (likely(!b->slow)) {
        struct nbuf_pool *p = b->pool;
        if (likely(nbuf_tls_.pool_id == p->id)) {
            struct nbuf_tcache *tc = nbuf_tls_.tc;
            struct nbuf_tcache_bin *bin = &tc->bins[b->szind];
            uint32_t n = bin->count;
            if (likely(n < bin->cap)) {
                bin->stack[n] = b;
                NBUF_STORE_RELAXED(bin->count, n + 1);
                NBUF_STAT_ADD(tc->st.nrelease, 1);
                NBUF_STAT_ADD(tc->st.bytes_release, b->capacity);
                NBUF_STAT_ADD(tc->st.req_release, b->requested);
                if (unlikely(b->tid != tc->id))
                    NBUF_STAT_ADD(tc->st.remote_releases, 1);
                if (unlikely(--tc->gc_ticks <= 0))
                    nbuf_tcache_gc_(tc);
                return 1;
            }
        }
    }
    nbuf_buf_free_(b);
    return 1;
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
            nbuf_report_("nbuf: retain of released buffer %p\n", (void *)b);
            errno = EINVAL;
            return NULL;
        }
        if (r == UINT32_MAX) {
            errno = EOVERFLOW;
            return NULL;
        }
    } while (!atomic_compare_exchange_weak_explicit(&b->refcnt, &r, r + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return b;
}

NBUF_EXPORT unsigned
nbuf_refcnt(const struct nbuf *b)
{
    return b ? atomic_load_explicit(&((struct nbuf *)b)->refcnt, memory_order_relaxed) : 0;
}

/* ---- cursors and direct access ---- */

NBUF_EXPORT size_t
nbuf_capacity(const struct nbuf *b)
{
    return b->capacity;
}

NBUF_EXPORT size_t
nbuf_max_capacity(const struct nbuf *b)
{
    return b->max_capacity;
}

NBUF_EXPORT size_t
nbuf_reader_index(const struct nbuf *b)
{
    return b->reader;
}

NBUF_EXPORT size_t
nbuf_writer_index(const struct nbuf *b)
{
    return b->writer;
}

NBUF_EXPORT size_t
nbuf_readable(const struct nbuf *b)
{
    return b->writer - b->reader;
}

NBUF_EXPORT size_t
nbuf_writable(const struct nbuf *b)
{
    return b->capacity - b->writer;
}

NBUF_EXPORT const uint8_t *
nbuf_data(const struct nbuf *b)
{
    return b->mem + b->reader;
}

/* New capacity for at least @need bytes, Netty-style, bounded by max. */
static size_t
grown_capacity(size_t need, size_t max)
{
    size_t cap;
    if (need > GROWTH_THRESHOLD) {
        if (nbuf_add_overflow_(need, GROWTH_THRESHOLD - 1, &cap))
            return max;
        cap -= cap % GROWTH_THRESHOLD;
    } else {
        cap = 64;
        while (cap < need)
            cap <<= 1;
    }
    return cap < max ? cap : max;
}

NBUF_EXPORT int
nbuf_ensure_writable(struct nbuf *b, size_t n)
{
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    size_t need;
    if (nbuf_add_overflow_(b->writer, n, &need) || need > b->max_capacity)
        return -ENOBUFS;
    if (need <= b->capacity)
        return 0;
    if (b->kind > NBUF_KIND_BYPASS || atomic_load(&b->nviews))
        return -ENOBUFS; /* views and external memory cannot move */
    struct nbuf *nb =
        alloc_slow(b->pool, grown_capacity(need, b->max_capacity), b->max_capacity, 0);
    if (!nb)
        return -ENOMEM;
    /* Copy only the written bytes, then swap memory: the caller's header
     * keeps its identity, the old memory leaves with nb's header. */
    memcpy(nb->mem + b->reader, b->mem + b->reader, b->writer - b->reader);
    struct nbuf tmp = *b;
    b->mem = nb->mem;
    b->capacity = nb->capacity;
    b->kind = nb->kind;
    b->szind = nb->szind;
    b->slab = nb->slab;
    b->handle = nb->handle;
    b->slow = nb->slow;
    b->tid = nb->tid;
    size_t req = b->requested;
    b->requested = nb->requested;
    nb->mem = tmp.mem;
    nb->capacity = tmp.capacity;
    nb->kind = tmp.kind;
    nb->szind = tmp.szind;
    nb->slab = tmp.slab;
    nb->handle = tmp.handle;
    nb->slow = tmp.slow;
    nb->tid = tmp.tid;
    nb->requested = req;
    nbuf_release(nb);
    return 0;
}

NBUF_EXPORT uint8_t *
nbuf_reserve(struct nbuf *b, size_t n)
{
    int err = nbuf_ensure_writable(b, n);
    if (err) {
        errno = -err;
        return NULL;
    }
    return b->mem + b->writer;
}

NBUF_EXPORT int
nbuf_commit(struct nbuf *b, size_t n)
{
    size_t w;
    if (nbuf_add_overflow_(b->writer, n, &w) || w > b->capacity)
        return -EINVAL;
    b->writer = w;
    return 0;
}

NBUF_EXPORT int
nbuf_write(struct nbuf *b, const void *src, size_t n)
{
    if (n > b->capacity - b->writer) {
        int err = nbuf_ensure_writable(b, n);
        if (err)
            return err;
    }
    memcpy(b->mem + b->writer, src, n);
    b->writer += n;
    return 0;
}

bool
nbuf_buf_check_(const struct nbuf *b)
{
    if (!(b->reader <= b->writer && b->writer <= b->capacity && b->capacity <= b->max_capacity))
        return false;
    switch (b->kind) {
    case NBUF_KIND_SMALL:
    case NBUF_KIND_RUN:
        return b->slab && b->szind < b->pool->nclasses && b->capacity <= nbuf_sz_usize_(b->szind);
    case NBUF_KIND_VIEW: return b->root && b->root->kind != NBUF_KIND_VIEW;
    default: return true;
    }
}
