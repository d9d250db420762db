/* SPDX-License-Identifier: MIT */
/*
 * Buffers: allocation and release (the fast paths: a pop or a push on the
 * thread cache, no lock, no atomic read-modify-write when the count is 1),
 * reference counting, cursors, bulk and typed access, growth and fd IO.
 * Invariants kept: reader <= writer <= capacity <= max_capacity; a header's
 * refcnt is 0 exactly while it is free. Every debug feature (tracking, junk,
 * quarantine, valgrind) hides behind p->slow_alloc and b->slow; only ASan
 * builds compile poisoning into the fast paths.
 */
#include <endian.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* Netty's growth schedule: double up to 4 MiB, then 4 MiB steps. */
#define GROWTH_THRESHOLD ((size_t)4 << 20)
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
    case NBUF_KIND_MAPPED: nbuf_view_free_(b); return;
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
        if (tid != tc->id && b->szind < p->ncached &&
            (uint32_t)bin->nalloc == tc->gc_nalloc[b->szind]) {
            /* A consumer's release: home in a batch, not into idle bins. */
            atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
            NBUF_ASAN_POISON(b->mem, b->capacity);
            NBUF_COUNTER_ADD64(tc->st.nrelease, 1);
            NBUF_COUNTER_ADD64(tc->st.bytes_release, b->capacity);
            nbuf_tcache_stage_(tc, b);
        } else if (bin->room) {
            NBUF_COUNTER_ADD32(bin->room, -1);
            atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
            NBUF_ASAN_POISON(b->mem, b->capacity);
            b->key = tc->key;
            b->tid = tc->id;
            b->next = bin->head;
            bin->head = b;
            NBUF_COUNTER_ADD64(bin->nrelease, 1);
        } else if (b->szind >= p->ncached && p->fast_id == nbuf_tls_.pool_id &&
                   nbuf_tcache_large_put_(tc, b)) {
            atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
            NBUF_ASAN_POISON(b->mem, b->capacity);
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
        atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
        NBUF_ASAN_POISON(b->mem, b->capacity);
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

/* ---- cursors and direct access ---- */

/* Refuse NULL and released buffers (reported): the guard of every function
 * that reads or writes bytes or cursors. */
#define CHECK_LIVE(b, op, ret)                                                                     \
    do {                                                                                           \
        if (unlikely(!(b)))                                                                        \
            return ret;                                                                            \
        if (unlikely(nbuf_is_dead_(b))) {                                                          \
            nbuf_buf_dead_((b), (op));                                                             \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

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

NBUF_EXPORT int
nbuf_set_indices(struct nbuf *b, size_t reader, size_t writer)
{
    CHECK_LIVE(b, "nbuf_set_indices", -EINVAL);
    if (reader > writer || writer > b->capacity)
        return -EINVAL;
    b->reader = reader;
    b->writer = writer;
    return 0;
}

NBUF_EXPORT void
nbuf_clear(struct nbuf *b)
{
    CHECK_LIVE(b, "nbuf_clear", );
    b->reader = 0;
    b->writer = 0;
}

NBUF_EXPORT int
nbuf_skip(struct nbuf *b, size_t n)
{
    CHECK_LIVE(b, "nbuf_skip", -EINVAL);
    if (n > b->writer - b->reader)
        return -ENODATA;
    b->reader += n;
    return 0;
}

NBUF_EXPORT int
nbuf_discard_read(struct nbuf *b)
{
    CHECK_LIVE(b, "nbuf_discard_read", -EINVAL);
    if (b->reader == 0)
        return 0;
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    memmove(b->mem, b->mem + b->reader, b->writer - b->reader);
    b->writer -= b->reader;
    b->reader = 0;
    return 0;
}

NBUF_EXPORT const uint8_t *
nbuf_data(const struct nbuf *b)
{
    if (unlikely(!b || nbuf_is_dead_(b))) {
        if (b)
            nbuf_buf_dead_(b, "nbuf_data");
        errno = EINVAL;
        return NULL;
    }
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

/* Move @b to a larger class: its header keeps its identity (and its leak
 * record), the old memory leaves with nb's header. */
static int
grow(struct nbuf *b, size_t need)
{
    struct nbuf *nb =
        alloc_slow(b->pool, grown_capacity(need, b->max_capacity), b->max_capacity, 0);
    if (!nb)
        return -ENOMEM;
    /* Only the written bytes [0, writer): never the new length. */
    memcpy(nb->mem, b->mem, b->writer);
    struct nbuf tmp = *b;
    b->mem = nb->mem;
    b->capacity = nb->capacity;
    b->kind = nb->kind;
    b->szind = nb->szind;
    b->slab = nb->slab;
    b->handle = nb->handle;
    nbuf_buf_set_slow_(b, nb->slow | (b->ext != NULL));
    b->tid = nb->tid;
    b->requested = nb->requested;
    nb->mem = tmp.mem;
    nb->capacity = tmp.capacity;
    nb->kind = tmp.kind;
    nb->szind = tmp.szind;
    nb->slab = tmp.slab;
    nb->handle = tmp.handle;
    nbuf_buf_set_slow_(nb, tmp.slow);
    nb->tid = tmp.tid;
    nb->requested = tmp.requested;
    nbuf_release(nb);
    return 0;
}

NBUF_EXPORT int
nbuf_ensure_writable(struct nbuf *b, size_t n)
{
    CHECK_LIVE(b, "nbuf_ensure_writable", -EINVAL);
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    size_t need;
    if (nbuf_add_overflow_(b->writer, n, &need) || need > b->max_capacity)
        return -ENOBUFS;
    if (need <= b->capacity)
        return 0;
    /* Views and wrapped or mapped memory cannot move. */
    if (b->kind > NBUF_KIND_BYPASS)
        return -ENOBUFS;
    if (atomic_load_explicit(&b->nviews, memory_order_relaxed)) {
        /* Viewed: every view holds a reference, so a count of 1 (ours)
         * proves none is left (acquire: their last reads happened before). */
        if (atomic_load_explicit(&b->refcnt, memory_order_acquire) > 1)
            return -ENOBUFS;
        atomic_store_explicit(&b->nviews, 0, memory_order_relaxed);
    }
    return grow(b, need);
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
    CHECK_LIVE(b, "nbuf_commit", -EINVAL);
    size_t w;
    if (nbuf_add_overflow_(b->writer, n, &w) || w > b->capacity)
        return -EINVAL;
    b->writer = w;
    return 0;
}

/* ---- bulk access ---- */

static inline int
buf_put(struct nbuf *b, const void *src, size_t n)
{
    CHECK_LIVE(b, "nbuf_write", -EINVAL);
    if (unlikely(n > b->capacity - b->writer || (b->flags & NBUF_F_READONLY))) {
        int err = nbuf_ensure_writable(b, n);
        if (err)
            return err;
    }
    if (likely(n))
        memcpy(b->mem + b->writer, src, n);
    b->writer += n;
    return 0;
}

static inline int
buf_take(struct nbuf *b, void *dst, size_t n)
{
    CHECK_LIVE(b, "nbuf_read", -EINVAL);
    if (unlikely(n > b->writer - b->reader))
        return -ENODATA;
    if (likely(n))
        memcpy(dst, b->mem + b->reader, n);
    b->reader += n;
    return 0;
}

static inline int
buf_get(const struct nbuf *b, size_t index, void *dst, size_t n)
{
    CHECK_LIVE(b, "nbuf_get", -EINVAL);
    if (unlikely(index > b->writer || n > b->writer - index))
        return -ENODATA;
    if (likely(n))
        memcpy(dst, b->mem + index, n);
    return 0;
}

static inline int
buf_set(struct nbuf *b, size_t index, const void *src, size_t n)
{
    CHECK_LIVE(b, "nbuf_set", -EINVAL);
    if (unlikely(b->flags & NBUF_F_READONLY))
        return -EROFS;
    if (unlikely(index > b->capacity || n > b->capacity - index))
        return -EINVAL;
    if (likely(n))
        memcpy(b->mem + index, src, n);
    return 0;
}

NBUF_EXPORT int
nbuf_write(struct nbuf *b, const void *src, size_t n)
{
    if (unlikely(!src && n))
        return -EINVAL;
    return buf_put(b, src, n);
}

NBUF_EXPORT int
nbuf_read(struct nbuf *b, void *dst, size_t n)
{
    if (unlikely(!dst && n))
        return -EINVAL;
    return buf_take(b, dst, n);
}

NBUF_EXPORT int
nbuf_get(const struct nbuf *b, size_t index, void *dst, size_t n)
{
    if (unlikely(!dst && n))
        return -EINVAL;
    return buf_get(b, index, dst, n);
}

NBUF_EXPORT int
nbuf_set(struct nbuf *b, size_t index, const void *src, size_t n)
{
    if (unlikely(!src && n))
        return -EINVAL;
    return buf_set(b, index, src, n);
}

/* ---- typed access ---- */

#define ident8(x) (x)

/* write/read/get/set of one integer type; WIRE converts host <-> wire order
 * (byte swaps are their own inverse). */
#define TYPED(name, type, WIRE)                                                                    \
    NBUF_EXPORT int nbuf_write_##name(struct nbuf *b, type v)                                      \
    {                                                                                              \
        type w = WIRE(v);                                                                          \
        return buf_put(b, &w, sizeof(w));                                                          \
    }                                                                                              \
    NBUF_EXPORT int nbuf_read_##name(struct nbuf *b, type *out)                                    \
    {                                                                                              \
        type w;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = buf_take(b, &w, sizeof(w));                                                      \
        if (likely(!err))                                                                          \
            *out = WIRE(w);                                                                        \
        return err;                                                                                \
    }                                                                                              \
    NBUF_EXPORT int nbuf_get_##name(const struct nbuf *b, size_t index, type *out)                 \
    {                                                                                              \
        type w;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = buf_get(b, index, &w, sizeof(w));                                                \
        if (likely(!err))                                                                          \
            *out = WIRE(w);                                                                        \
        return err;                                                                                \
    }                                                                                              \
    NBUF_EXPORT int nbuf_set_##name(struct nbuf *b, size_t index, type v)                          \
    {                                                                                              \
        type w = WIRE(v);                                                                          \
        return buf_set(b, index, &w, sizeof(w));                                                   \
    }

TYPED(u8, uint8_t, ident8)
TYPED(u16, uint16_t, htobe16)
TYPED(u32, uint32_t, htobe32)
TYPED(u64, uint64_t, htobe64)
TYPED(u16_le, uint16_t, htole16)
TYPED(u32_le, uint32_t, htole32)
TYPED(u64_le, uint64_t, htole64)

/* ---- search and fd IO ---- */

NBUF_EXPORT ssize_t
nbuf_index_of(const struct nbuf *b, size_t from, size_t to, uint8_t byte)
{
    CHECK_LIVE(b, "nbuf_index_of", -EINVAL);
    if (from > to)
        return -EINVAL;
    if (to > b->writer)
        to = b->writer;
    if (from >= to)
        return -ENOENT;
    const uint8_t *hit = memchr(b->mem + from, byte, to - from);
    return hit ? (ssize_t)(hit - b->mem) : -ENOENT;
}

NBUF_EXPORT ssize_t
nbuf_read_fd(struct nbuf *b, int fd, size_t max)
{
    CHECK_LIVE(b, "nbuf_read_fd", -EINVAL);
    if (max == 0)
        return -EINVAL;
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    size_t room = b->capacity - b->writer;
    if (room < max) {
        /* Grow so that max bytes fit, bounded by max_capacity; when growth
         * fails, read into what room there is. */
        size_t want = b->max_capacity - b->writer < max ? b->max_capacity - b->writer : max;
        int err = want > room ? nbuf_ensure_writable(b, want) : 0;
        room = b->capacity - b->writer;
        if (room == 0)
            return err ? err : -ENOBUFS;
    }
    size_t n = room < max ? room : max;
    ssize_t r;
    do
        r = read(fd, b->mem + b->writer, n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    b->writer += (size_t)r;
    return r;
}

NBUF_EXPORT ssize_t
nbuf_write_fd(struct nbuf *b, int fd)
{
    CHECK_LIVE(b, "nbuf_write_fd", -EINVAL);
    size_t n = b->writer - b->reader;
    if (n == 0)
        return 0;
    const uint8_t *src = b->mem + b->reader;
    ssize_t r;
    /* send() for MSG_NOSIGNAL; write() when fd is not a socket. */
    do
        r = send(fd, src, n, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == ENOTSOCK) {
        do
            r = write(fd, src, n);
        while (r < 0 && errno == EINTR);
    }
    if (r < 0)
        return -errno;
    b->reader += (size_t)r;
    return r;
}

bool
nbuf_buf_check_(const struct nbuf *b)
{
    if (!(b->reader <= b->writer && b->writer <= b->capacity && b->capacity <= b->max_capacity))
        return false;
    if (b->magic != NBUF_MAGIC)
        return false;
    switch (b->kind) {
    case NBUF_KIND_SMALL:
    case NBUF_KIND_RUN:
        return b->slab && b->szind < b->pool->nclasses && b->capacity <= nbuf_sz_usize_(b->szind);
    case NBUF_KIND_VIEW: {
        const struct nbuf *r = b->root;
        return r && r->kind != NBUF_KIND_VIEW && atomic_load(&((struct nbuf *)r)->nviews) > 0 &&
               atomic_load(&((struct nbuf *)r)->refcnt) > 0 && b->mem >= r->mem &&
               b->mem + b->capacity <= r->mem + r->capacity;
    }
    default: return true;
    }
}
