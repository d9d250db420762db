/* SPDX-License-Identifier: MIT */
/*
 * Thread caches: per thread and pool, a bounded LIFO list of ready pairs
 * (header with memory) per size class, so that the fast paths in buf.c are a
 * pop and a push. Misses fill half a bin from the bound arena in one lock
 * round; overflows flush the coldest half to the home arenas' stashes. A
 * bin's cap starts small and doubles on a miss or an overflow, up to its
 * class's cap, while the caps of all bins stay within the pool's byte budget
 * (tcmalloc's slow start and per-thread cache size): so a thread parks what
 * its pattern needs, and never more than the budget. A GC pass (every 4096
 * fast releases) moves half of each bin that served no allocation since the
 * last pass to the arena stashes and halves its cap, giving budget back to
 * the bins in use. Caches are
 * flushed at thread exit (pthread key destructor); a thread that is exiting,
 * or that releases after its cache is gone, uses the arenas directly.
 * Layer: thread cache; calls the arenas, budget.c (reclaim) and tcache_stats.c.
 */
#include "internal.h"

#define HEADER_CACHE_MAX 256
#define HEADER_BATCH 32

__thread struct nbuf_tls nbuf_tls_ NBUF_TLS_MODEL;
/* Set once this thread has started tearing down its caches. */
static __thread bool tls_dying;
/* Cache keys, process-wide: never 0 (an unbound thread) nor reused. */
static _Atomic uint64_t next_tcache_key = 1;

uint16_t nbuf_tcache_bin_off_[NBUF_FAST_MAX >> NBUF_LG_QUANTUM];

__attribute__((constructor)) static void
tcache_build_bin_offsets(void)
{
    for (size_t i = 0; i < NBUF_FAST_MAX >> NBUF_LG_QUANTUM; i++) {
        unsigned szind = nbuf_sz_index_slow_((i + 1) << NBUF_LG_QUANTUM);
        nbuf_tcache_bin_off_[i] =
            (uint16_t)(offsetof(struct nbuf_tcache, bins) + szind * sizeof(struct nbuf_tcache_bin));
    }
}
_Static_assert(offsetof(struct nbuf_tcache, bins) +
                       NBUF_NCLASSES * sizeof(struct nbuf_tcache_bin) <=
                   UINT16_MAX,
               "bin offsets fit nbuf_tcache_bin_off_");

/* Pairs move between a bin and the arenas in chunks of this many. */
#define MOVE_CHUNK 64

static inline uint32_t
bin_count(const struct nbuf_tcache_bin *bin)
{
    return bin->cap - NBUF_LOAD_RELAXED(bin->room);
}

static inline void
bin_set_count(struct nbuf_tcache_bin *bin, uint32_t n)
{
    NBUF_STORE_RELAXED(bin->room, bin->cap - n);
}

/* For other threads (stats): the owner may be growing or shrinking the bin,
 * so cap and room are read relaxed and a mixed pair clamps to 0. */
uint32_t
nbuf_tcache_bin_count_(const struct nbuf_tcache_bin *bin)
{
    uint32_t room = NBUF_LOAD_RELAXED(bin->room), cap = NBUF_LOAD_RELAXED(bin->cap);
    return room > cap ? 0 : cap - room;
}

/* ---- the byte budget ---- */

/* A bin starts with room for this many bytes (at least one pair); misses
 * alone grow it up to MISS_GROW_BYTES. */
#define BIN_START_BYTES ((size_t)16 << 10)
#define MISS_GROW_BYTES ((uint64_t)64 << 10)

static unsigned
bin_szind(const struct nbuf_tcache *tc, const struct nbuf_tcache_bin *bin)
{
    return (unsigned)(bin - tc->bins);
}

/* The cap a bin starts with. */
static uint32_t
bin_start(const struct nbuf_pool *p, unsigned szind)
{
    size_t usize = nbuf_sz_usize_(szind);
    uint32_t start = BIN_START_BYTES / usize ? (uint32_t)(BIN_START_BYTES / usize) : 1;
    uint32_t max = p->cache_cap[szind];
    return start < max ? start : max;
}

uint64_t
nbuf_tcache_min_budget_(const struct nbuf_pool *p)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < p->ncached; i++)
        sum += (uint64_t)bin_start(p, i) * nbuf_sz_usize_(i);
    return sum;
}

/* Double @bin's cap, as far as its class's cap and the budget allow; false
 * if it cannot grow at all. */
static bool
bin_grow(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin)
{
    unsigned szind = bin_szind(tc, bin);
    uint32_t max = tc->pool->cache_cap[szind];
    size_t usize = nbuf_sz_usize_(szind);
    uint64_t grow = bin->cap ? bin->cap : 1;
    if (grow > max - bin->cap)
        grow = max - bin->cap;
    if (grow > tc->budget / usize)
        grow = tc->budget / usize;
    if (!grow)
        return false;
    NBUF_STORE_RELAXED(bin->cap, bin->cap + (uint32_t)grow); /* stats read it */
    NBUF_STORE_RELAXED(bin->room, bin->room + (uint32_t)grow);
    tc->budget -= grow * usize;
    return true;
}

/* Lower @bin's cap to @cap (not below what it holds, nor to 0). */
static void
bin_shrink(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin, uint32_t cap)
{
    uint32_t count = bin_count(bin);
    if (cap < count)
        cap = count;
    if (cap == 0)
        cap = 1;
    if (cap >= bin->cap)
        return;
    uint32_t cut = bin->cap - cap;
    NBUF_STORE_RELAXED(bin->cap, cap); /* stats read it */
    NBUF_STORE_RELAXED(bin->room, bin->room - cut);
    tc->budget += (uint64_t)cut * nbuf_sz_usize_(bin_szind(tc, bin));
}

/* The arena with the fewest bound threads, for a new thread cache. */
static struct nbuf_arena *
bind_arena(struct nbuf_pool *p)
{
    struct nbuf_arena *best = &p->arenas[0];
    unsigned best_n = atomic_load(&best->nthreads);
    for (unsigned i = 1; i < p->narenas && best_n; i++) {
        unsigned n = atomic_load(&p->arenas[i].nthreads);
        if (n < best_n) {
            best = &p->arenas[i];
            best_n = n;
        }
    }
    atomic_fetch_add(&best->nthreads, 1);
    return best;
}

static struct nbuf_tcache *
tcache_new(struct nbuf_pool *p)
{
    struct nbuf_tcache *tc = calloc(1, sizeof(*tc));
    if (!tc)
        return NULL;
    tc->budget = p->cache_budget;
    for (unsigned i = 0; i < p->ncached; i++) {
        struct nbuf_tcache_bin *bin = &tc->bins[i];
        bin->cap = bin_start(p, i);
        bin->room = bin->cap;
        tc->budget -= (uint64_t)bin->cap * nbuf_sz_usize_(i);
    }
    tc->pool = p;
    tc->key = atomic_fetch_add(&next_tcache_key, 1);
    tc->gc_tick = NBUF_GC_INTERVAL;
    tc->arena = bind_arena(p);
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
    nbuf_tls_.key = tc->key;
    nbuf_tls_.tc = tc;
    return tc;
}

/* Give back the n coldest pairs of a bin: the tail of its LIFO list. */
static void
bin_flush(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin, uint32_t n, bool to_stash)
{
    uint32_t count = bin_count(bin);
    if (n > count)
        n = count;
    if (!n)
        return;
    uint32_t keep = count - n;
    struct nbuf *rest;
    if (keep == 0) {
        rest = bin->head;
        bin->head = NULL;
    } else {
        struct nbuf *cut = bin->head;
        for (uint32_t i = 1; i < keep; i++)
            cut = cut->next;
        rest = cut->next;
        cut->next = NULL;
    }
    bin_set_count(bin, keep);
    struct nbuf *batch[MOVE_CHUNK];
    unsigned k = 0;
    while (rest) {
        batch[k++] = rest;
        rest = rest->next;
        if (k == MOVE_CHUNK || !rest) {
            nbuf_pairs_free_(tc->pool, batch, k, to_stash);
            k = 0;
        }
    }
}

/* A full bin takes one more pair. If it served allocations since its last
 * overflow or the last GC pass, the class cycles through it: grow. If not,
 * flush a batch; and from the second such overflow in a row (the thread only
 * releases this class: a burst ending, a consumer) keep a quarter and cut
 * the cap to it, so that a burst leaves little parked while a batch of
 * releases (up to 1.5 caps) does not shrink a bin its allocations refill. */
static void
bin_overflow(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin)
{
    unsigned szind = bin_szind(tc, bin);
    uint32_t nalloc = (uint32_t)bin->nalloc;
    bool cycling = nalloc != tc->ovf_nalloc[szind] || nalloc != tc->gc_nalloc[szind];
    tc->ovf_nalloc[szind] = nalloc;
    if (cycling) {
        tc->ovf_idle[szind] = 0;
        if (bin_grow(tc, bin))
            return;
    } else if (tc->ovf_idle[szind] < UINT8_MAX) {
        tc->ovf_idle[szind]++;
    }
    if (tc->ovf_idle[szind] < 2) {
        bin_flush(tc, bin, nbuf_tcache_bin_batch_(bin), true);
        return;
    }
    /* Keep a quarter, and room for the pair being released. */
    uint32_t keep = bin->cap / 4;
    bin_flush(tc, bin, bin_count(bin) - keep, true);
    bin_shrink(tc, bin, keep + 1);
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

/* ---- the remote stage ---- */

static void
stage_flush(struct nbuf_tcache *tc)
{
    struct nbuf_remote_stage *rs = &tc->stage;
    if (rs->n)
        nbuf_pairs_free_(tc->pool, rs->items, rs->n, true);
    rs->n = 0;
    NBUF_STORE_RELAXED(rs->bytes, 0);
}

void
nbuf_tcache_stage_(struct nbuf_tcache *tc, struct nbuf *b)
{
    struct nbuf_remote_stage *rs = &tc->stage;
    b->key = NBUF_KEY_NONE;
    b->tid = tc->id;
    rs->items[rs->n++] = b;
    NBUF_STORE_RELAXED(rs->bytes, rs->bytes + b->capacity);
    if (rs->n == NBUF_STAGE_PAIRS || rs->bytes >= NBUF_STAGE_BYTES)
        stage_flush(tc);
}

void
nbuf_tcache_flush_(struct nbuf_tcache *tc)
{
    for (unsigned i = 0; i < tc->pool->ncached; i++)
        bin_flush(tc, &tc->bins[i], UINT32_MAX, false);
    nbuf_tcache_large_flush_(tc);
    stage_flush(tc);
    headers_flush(tc, 0);
}

/* Return half of what each bin held while it served no allocation since the
 * last pass; on a trim request, return everything. */
void
nbuf_tcache_gc_(struct nbuf_tcache *tc)
{
    uint64_t epoch = atomic_load_explicit(&tc->pool->trim_epoch, memory_order_relaxed);
    if (epoch != tc->seen_trim_epoch) {
        tc->seen_trim_epoch = epoch;
        nbuf_tcache_flush_(tc);
        return;
    }
    for (unsigned i = 0; i < tc->pool->ncached; i++) {
        struct nbuf_tcache_bin *bin = &tc->bins[i];
        uint32_t count = bin_count(bin);
        /* To the stash, not the chunks: another thread may want them, and
         * breaking pairs into bitmap bits only to rebuild them is costly. */
        if ((uint32_t)bin->nalloc == tc->gc_nalloc[i]) {
            if (count)
                bin_flush(tc, bin, (count + 1) / 2, true);
            bin_shrink(tc, bin, bin->cap / 2);
        }
        tc->gc_nalloc[i] = (uint32_t)bin->nalloc;
    }
    /* Large pairs are few and big: an idle interval returns them all. */
    if (tc->large.nget == tc->large.gc_nget)
        nbuf_tcache_large_flush_(tc);
    tc->large.gc_nget = tc->large.nget;
}

void
nbuf_tcache_destroy_(struct nbuf_tcache *tc)
{
    struct nbuf_pool *p = tc->pool;
    nbuf_tcache_flush_(tc);
    struct nbuf_tstats sum = {0};
    nbuf_tcache_stats_(tc, &sum);
    pthread_mutex_lock(&p->lock);
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        p->tcaches = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    nbuf_tstats_add_(&p->retired, &sum);
    pthread_mutex_unlock(&p->lock);
    if (tc->arena)
        atomic_fetch_sub(&tc->arena->nthreads, 1);
    if (nbuf_tls_.tc == tc)
        memset(&nbuf_tls_, 0, sizeof(nbuf_tls_));
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
    nbuf_budget_reclaim_(p);
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

/* Fill half a bin from the bound arena; the pairs now belong to this cache. */
static unsigned
bin_fill(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin, unsigned szind)
{
    struct nbuf *batch[MOVE_CHUNK];
    unsigned total = 0;
    uint32_t want = nbuf_tcache_bin_batch_(bin);
    while (total < want) {
        unsigned n = want - total < MOVE_CHUNK ? want - total : MOVE_CHUNK;
        unsigned got = fill(tc->pool, tc->arena, szind, batch, n);
        for (unsigned i = 0; i < got; i++) {
            /* Cached pairs belong to no buffer (see internal.h). */
            NBUF_POISON(batch[i]->mem, nbuf_sz_usize_(szind));
            nbuf_tcache_bin_push_(tc, bin, batch[i]);
        }
        total += got;
        if (got < n)
            break;
    }
    bin_set_count(bin, bin_count(bin) + total);
    return total;
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
        h->key = NBUF_KEY_NONE; /* a stashed pair keeps its last cache's key */
        return h;
    }
    if (atomic_load_explicit(&p->trim_epoch, memory_order_relaxed) != tc->seen_trim_epoch)
        nbuf_tcache_gc_(tc);
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    if (bin->cap == 0) {
        if (!fill(p, tc->arena, szind, &h, 1))
            return NULL;
        h->tid = tc->id;
        h->key = NBUF_KEY_NONE;
        NBUF_STAT_ADD(tc->st.cache_misses, 1);
        return h;
    }
    if (!bin->head) {
        /* A miss: this class is in demand. Grow until a fill is worth its
         * lock round (MISS_GROW_BYTES); beyond that only a class that also
         * comes back (an overflow after allocations) grows, so a thread that
         * only allocates (a producer) keeps few pairs in its bins. */
        if ((uint64_t)bin->cap * nbuf_sz_usize_(szind) < MISS_GROW_BYTES)
            bin_grow(tc, bin);
        if (!bin_fill(tc, bin, szind))
            return NULL;
        NBUF_STAT_ADD(tc->st.cache_misses, 1);
    }
    h = bin->head;
    bin->head = h->next;
    bin_set_count(bin, bin_count(bin) - 1);
    return h;
}

void
nbuf_tcache_release_slow_(struct nbuf *b)
{
    struct nbuf_pool *p = b->pool;
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    unsigned szind = b->szind;
    if (!tc || szind >= p->ncached || tc->bins[szind].cap == 0) {
        nbuf_pairs_free_(p, &b, 1, false);
        return;
    }
    struct nbuf_tcache_bin *bin = &tc->bins[szind];
    if (nbuf_tcache_stages_(tc, b)) {
        nbuf_tcache_stage_(tc, b);
    } else {
        if (bin_count(bin) >= bin->cap)
            bin_overflow(tc, bin);
        nbuf_tcache_bin_push_(tc, bin, b);
        bin_set_count(bin, bin_count(bin) + 1);
    }
    if (atomic_load_explicit(&p->trim_epoch, memory_order_relaxed) != tc->seen_trim_epoch)
        nbuf_tcache_gc_(tc);
}

struct nbuf *
nbuf_header_alloc_(struct nbuf_pool *p)
{
    struct nbuf *h;
    if (p->cfg.flags & NBUF_POOL_BYPASS) {
        h = calloc(1, sizeof(*h));
        if (!h)
            errno = ENOMEM;
        else {
            h->magic = NBUF_MAGIC;
            h->key = NBUF_KEY_NONE;
        }
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
    uint64_t caps = 0;
    for (unsigned i = 0; i < tc->pool->ncached; i++) {
        if (tc->bins[i].cap > tc->pool->cache_cap[i])
            return false;
        caps += (uint64_t)tc->bins[i].cap * nbuf_sz_usize_(i);
    }
    if (caps + tc->budget != tc->pool->cache_budget)
        return false;
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        const struct nbuf_tcache_bin *bin = &tc->bins[i];
        uint32_t n = 0;
        for (const struct nbuf *b = bin->head; b; b = b->next, n++) {
            if (n > bin->cap || b->szind != i || b->pool != tc->pool || b->tid != tc->id ||
                atomic_load(&b->refcnt) != 0 || b->key != (b->slow ? NBUF_KEY_NONE : tc->key) ||
                (b->kind != NBUF_KIND_SMALL && b->kind != NBUF_KIND_RUN))
                return false;
        }
        if (n != bin_count(bin) || n > bin->cap)
            return false;
    }
    uint64_t large = 0;
    for (unsigned i = 0; i < NBUF_LARGE_SLOTS; i++) {
        const struct nbuf *b = tc->large.slot[i];
        if (!b)
            continue;
        if (b->pool != tc->pool || b->tid != tc->id || atomic_load(&b->refcnt) != 0 ||
            b->key != NBUF_KEY_NONE || (b->kind != NBUF_KIND_SMALL && b->kind != NBUF_KIND_RUN) ||
            b->szind < tc->pool->ncached)
            return false;
        large += b->capacity;
    }
    if (large != tc->large.bytes || large > tc->pool->cfg.cache_large_bytes)
        return false;
    uint64_t staged = 0;
    if (tc->stage.n > NBUF_STAGE_PAIRS)
        return false;
    for (unsigned i = 0; i < tc->stage.n; i++) {
        const struct nbuf *b = tc->stage.items[i];
        if (b->pool != tc->pool || atomic_load(&b->refcnt) != 0 || b->key != NBUF_KEY_NONE)
            return false;
        staged += b->capacity;
    }
    if (staged != tc->stage.bytes)
        return false;
    uint32_t n = 0;
    for (const struct nbuf *h = tc->headers; h; h = h->root)
        n++;
    return n == tc->nheaders;
}
