/* SPDX-License-Identifier: MIT */
/*
 * Internal macros (assert tiers, branch hints, relaxed counters), the size
 * arithmetic helper, the fast-path inlines, and prototypes grouped by file.
 * Internal functions shared across files end in an underscore.
 */
#ifndef NBUF_INTERNAL_H
#define NBUF_INTERNAL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbuf.h"
#include "types.h"

#define NBUF_EXPORT __attribute__((visibility("default")))
/* Internal data the fast paths read: hidden, so even the shared library
 * reaches it PC-relative, without a GOT load. */
#define NBUF_HIDDEN __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Assert tiers (NBUF_DEBUG_LEVEL from meson's debug_checks option):
 *   nbuf_assert           level >= 1: cheap checks on public-path invariants
 *   nbuf_assert_internal  level >= 2: internal consistency
 *   nbuf_assert_expensive level >= 3: full walks (O(n))
 * They always compile (the condition is type-checked) and vanish when off.
 */
#ifndef NBUF_DEBUG_LEVEL
#define NBUF_DEBUG_LEVEL 0
#endif
void nbuf_assert_fail_(const char *expr, const char *file, int line) __attribute__((noreturn));
#define NBUF_ASSERT_AT(level, e)                                                                   \
    do {                                                                                           \
        if (NBUF_DEBUG_LEVEL >= (level) && unlikely(!(e)))                                         \
            nbuf_assert_fail_(#e, __FILE__, __LINE__);                                             \
    } while (0)
#define nbuf_assert(e) NBUF_ASSERT_AT(1, e)
#define nbuf_assert_internal(e) NBUF_ASSERT_AT(2, e)
#define nbuf_assert_expensive(e) NBUF_ASSERT_AT(3, e)

/* Counters written by one thread and read by others (no RMW needed). */
#define NBUF_LOAD_RELAXED(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define NBUF_STORE_RELAXED(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define NBUF_STAT_ADD(x, v) NBUF_STORE_RELAXED(x, NBUF_LOAD_RELAXED(x) + (v))

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NBUF_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(NBUF_TSAN)
#define NBUF_TSAN 1
#endif

/*
 * Counters of the thread-cache bins: written by their owner only, read by
 * nbuf_pool_stats on other threads. On x86-64 each update is one add to
 * memory (a single store, so a reader sees the old or the new value), which
 * the compiler cannot emit for an atomic load-add-store; elsewhere, and under
 * TSan, relaxed atomics.
 *   NBUF_COUNTER_ADD64/32(x, v)  x += v
 *   NBUF_ROOM_TAKE(x, label)     x -= 1, then goto label if x was 0 (x then
 *                                reads UINT32_MAX until label's code undoes it)
 */
#if defined(__x86_64__) && !defined(NBUF_TSAN)
#define NBUF_COUNTER_ADD64(x, v) __asm__("addq %1, %0" : "+m"(x) : "er"((uint64_t)(v)) : "cc")
#define NBUF_COUNTER_ADD32(x, v) __asm__("addl %1, %0" : "+m"(x) : "ir"((uint32_t)(v)) : "cc")
#define NBUF_ROOM_TAKE(x, label)                                                                   \
    __asm__ goto("subl $1, %0\n\tjb %l[" #label "]" : : "m"(x) : "cc", "memory" : label)
#else
#define NBUF_COUNTER_ADD64(x, v) NBUF_STAT_ADD(x, (uint64_t)(v))
#define NBUF_COUNTER_ADD32(x, v) NBUF_STAT_ADD(x, (uint32_t)(v))
#define NBUF_ROOM_TAKE(x, label)                                                                   \
    do {                                                                                           \
        uint32_t room_ = NBUF_LOAD_RELAXED(x);                                                     \
        NBUF_STORE_RELAXED(x, room_ - 1);                                                          \
        if (unlikely(room_ == 0))                                                                  \
            goto label;                                                                            \
    } while (0)
#endif

/* Make the compiler treat @x as computed once: it stops re-deriving an
 * address at every use (an instruction or two a time on a fast path). */
#define NBUF_OPAQUE(x) __asm__("" : "+r"(x))

/* All size arithmetic goes through these: true on overflow. */
static inline bool
nbuf_add_overflow_(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool
nbuf_mul_overflow_(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static inline size_t
nbuf_align_up_(size_t n, size_t align)
{
    return (n + align - 1) & ~(align - 1);
}

/* The earlier of two deadlines (NBUF_NEVER is the latest). */
static inline uint64_t
nbuf_min_u64_(uint64_t x, uint64_t y)
{
    return x < y ? x : y;
}

/* ---- size_class.c ---- */
extern NBUF_HIDDEN uint8_t nbuf_sz_lookup_[NBUF_LOOKUP_MAX / NBUF_QUANTUM + 1];
/* Class sizes by szind, built at load (the batch paths look one up per pair). */
extern NBUF_HIDDEN size_t nbuf_sz_usize_table_[NBUF_NCLASSES];
size_t nbuf_sz_usize_slow_(unsigned szind);
static inline size_t
nbuf_sz_usize_(unsigned szind)
{
    nbuf_assert_internal(szind < NBUF_NCLASSES);
    return nbuf_sz_usize_table_[szind];
}
unsigned nbuf_sz_index_slow_(size_t size);
unsigned nbuf_run_bin_floor_(uint32_t npages);
unsigned nbuf_run_bin_ceil_(uint32_t npages);
uint32_t nbuf_sz_run_pages_(size_t usize, size_t page_size);

/* Sizes in (4 KiB, 64 KiB]: every class boundary there is a multiple of
 * 1 KiB, so the class of ceil(size / 1 KiB) KiB is the class of size. */
#define NBUF_LOOKUP2_MAX 65536
extern NBUF_HIDDEN uint8_t nbuf_sz_lookup2_[NBUF_LOOKUP2_MAX / 1024 + 1];

/* Size class of @size <= NBUF_LOOKUP2_MAX: table reads only, no call, so a
 * caller's fast path needs no stack frame. */
static inline unsigned
nbuf_sz_index_table_(size_t size)
{
    nbuf_assert_internal(size <= NBUF_LOOKUP2_MAX);
    if (likely(size <= NBUF_LOOKUP_MAX))
        return nbuf_sz_lookup_[(size + NBUF_QUANTUM - 1) >> NBUF_LG_QUANTUM];
    return nbuf_sz_lookup2_[(size + 1023) >> 10];
}

/* Size class of @size (callers bound it by the chunk size first). */
static inline unsigned
nbuf_sz_index_(size_t size)
{
    if (likely(size <= NBUF_LOOKUP2_MAX))
        return nbuf_sz_index_table_(size);
    return nbuf_sz_index_slow_(size);
}

/* ---- decay.c ---- */

/* Now in ms on @p's clock (CLOCK_MONOTONIC_COARSE unless a test set one). */
uint64_t nbuf_decay_now_(const struct nbuf_pool *p);
/* When memory dirtied at @now decays: now + decay_ms, NBUF_NEVER for -1. */
uint64_t nbuf_decay_deadline_(const struct nbuf_pool *p, uint64_t now);
/* A deadline was armed: make sure the purger wakes by @at (background
 * pools on the real clock only); starts the thread on first use. */
void nbuf_decay_wake_(const struct nbuf_pool *p, uint64_t at);
/* The pass the purger runs over every pool; the next deadline. */
void nbuf_decay_set_pass_(uint64_t (*pass)(uint64_t now));
void nbuf_decay_fork_prepare_(void);
void nbuf_decay_fork_parent_(void);
void nbuf_decay_fork_child_(void);
bool nbuf_decay_purger_running_(void);

/* ---- budget.c ---- */
/* Charge @bytes taken from the backing against memory_limit: false with
 * errno = EDQUOT (nothing charged) if it would pass the limit. */
bool nbuf_budget_charge_(struct nbuf_pool *p, size_t bytes);
void nbuf_budget_uncharge_(struct nbuf_pool *p, size_t bytes);
/* A charge failed: have the pool give idle memory back (p->reclaim). */
void nbuf_budget_reclaim_(struct nbuf_pool *p);

/* ---- backing.c ---- */
int nbuf_backing_init_(struct nbuf_backing *bk, const struct nbuf_pool_config *cfg);
void *nbuf_backing_alloc_(struct nbuf_backing *bk, size_t size, size_t align);
void nbuf_backing_free_(struct nbuf_backing *bk, void *ptr, size_t size, size_t align);
void nbuf_backing_purge_(struct nbuf_backing *bk);
bool nbuf_backing_can_discard_(const struct nbuf_backing *bk);
int nbuf_backing_discard_(struct nbuf_backing *bk, void *addr, size_t len);
bool nbuf_backing_has_jemalloc_(void);
/* Test hook: the Nth backing allocation from now fails (0 = none). */
void nbuf_backing_fail_after_(struct nbuf_pool *p, long n);

/* ---- huge.c ---- */
/* The pool's extent cache (off in debug modes and without caches): 0 or
 * -ENOMEM; fini frees what it holds. */
int nbuf_huge_cache_init_(struct nbuf_pool *p);
void nbuf_huge_cache_fini_(struct nbuf_pool *p);
/* Memory for a huge buffer of @size bytes (page multiple): a cached extent
 * of that size, else the backing (charged; on memory_limit trims and
 * retries once). NULL with errno ENOMEM. */
void *nbuf_huge_alloc_(struct nbuf_pool *p, size_t size);
/* Give back what nbuf_huge_alloc_ returned: cached if it fits, else freed. */
void nbuf_huge_free_(struct nbuf_pool *p, void *mem, size_t size);
/* Free every cached extent (trim, pool teardown). */
void nbuf_huge_trim_(struct nbuf_pool *p);
uint64_t nbuf_huge_cached_bytes_(struct nbuf_pool *p);
/* Free extents cached for a decay period; the next deadline. */
uint64_t nbuf_huge_decay_(struct nbuf_pool *p, uint64_t now);

/* ---- chunk.c ---- */
struct nbuf_chunk *nbuf_chunk_new_(struct nbuf_arena *a);
void nbuf_chunk_free_(struct nbuf_chunk *c);
/* Head page of a run of npages, or NBUF_RUN_NONE. */
uint32_t nbuf_chunk_alloc_run_(struct nbuf_chunk *c, uint32_t npages, enum nbuf_run_state st);
void nbuf_chunk_free_run_(struct nbuf_chunk *c, uint32_t page);
/* madvise every dirty free page of @c away; the number of pages purged. */
uint32_t nbuf_chunk_purge_(struct nbuf_chunk *c, uint64_t *ncalls);
bool nbuf_chunk_check_(const struct nbuf_chunk *c);
static inline bool
nbuf_chunk_empty_(const struct nbuf_chunk *c)
{
    return c->free_pages == c->npages;
}

/* ---- subpage.c ---- */
struct nbuf_subpage *nbuf_subpage_new_(struct nbuf_chunk *c, uint32_t page, unsigned szind,
                                       uint32_t elem_size, uint32_t run_pages, uint32_t nelems);
void nbuf_subpage_free_(struct nbuf_subpage *s);
/* Element index, or UINT32_MAX when full. */
uint32_t nbuf_subpage_alloc_(struct nbuf_subpage *s);
void nbuf_subpage_release_(struct nbuf_subpage *s, uint32_t idx);
bool nbuf_subpage_check_(const struct nbuf_subpage *s);

/* ---- arena.c ---- */
int nbuf_arena_init_(struct nbuf_arena *a, struct nbuf_pool *p, unsigned index);
/* Frees header blocks; call only after nbuf_arena_trim_(_, 0) on every arena. */
void nbuf_arena_fini_(struct nbuf_arena *a);
void nbuf_arena_lock_(struct nbuf_arena *a);
void nbuf_arena_unlock_(struct nbuf_arena *a);
/* Fill @out with up to @n pairs of class @szind; returns how many (0: errno). */
unsigned nbuf_arena_alloc_pairs_(struct nbuf_arena *a, unsigned szind, struct nbuf **out,
                                 unsigned n);
/* Give back pairs (any arena); @to_stash lets them wait in stashes. */
void nbuf_pairs_free_(struct nbuf_pool *p, struct nbuf **items, unsigned n, bool to_stash);
/* Bare headers (for views). */
unsigned nbuf_arena_alloc_headers_(struct nbuf_arena *a, struct nbuf **out, unsigned n);
void nbuf_headers_free_(struct nbuf_pool *p, struct nbuf **items, unsigned n);
/* Flush stashes and free empty chunks beyond @keep per arena. */
void nbuf_arena_trim_(struct nbuf_arena *a, unsigned keep);
bool nbuf_arena_check_(struct nbuf_arena *a);
/* The decay pass (purge due chunks, give back due empty ones, age the
 * stashes); the arena's next deadline, NBUF_NEVER for none. */
uint64_t nbuf_arena_decay_locked_(struct nbuf_arena *a, uint64_t now);

/* ---- arena_chunks.c ---- */
/* The arena's lock is held by this thread (an internal assert). */
#ifndef NDEBUG
#define nbuf_arena_assert_locked_(a)                                                               \
    nbuf_assert_internal((a)->owned &&pthread_equal((a)->owner, pthread_self()))
#else
#define nbuf_arena_assert_locked_(a) ((void)(a))
#endif
/* A run of @npages (lock held); NBUF_RUN_NONE when no chunk has one and no
 * new chunk could be had. */
uint32_t nbuf_arena_run_alloc_locked_(struct nbuf_arena *a, uint32_t npages, enum nbuf_run_state st,
                                      struct nbuf_chunk **out);
/* Give a run back: may free its chunk (empty, beyond the reserve), arm its
 * decay deadline or purge at once (decay 0, or over the dirty bound). */
void nbuf_arena_run_free_locked_(struct nbuf_arena *a, struct nbuf_chunk *c, uint32_t page);
/* Purge the chunks whose deadline passed, free those empty; the next deadline. */
uint64_t nbuf_arena_chunks_decay_locked_(struct nbuf_arena *a, uint64_t now);
/* Free empty chunks beyond @keep and purge the rest. */
void nbuf_arena_chunks_trim_locked_(struct nbuf_arena *a, unsigned keep);
bool nbuf_arena_chunks_check_(const struct nbuf_arena *a);

/* ---- tcache.c ---- */
/* Requests of 1 B to NBUF_FAST_MAX take the allocation fast path. */
#define NBUF_FAST_MAX NBUF_LOOKUP2_MAX
/* Byte offset in struct nbuf_tcache of the bin serving a request of
 * 1 <= size <= NBUF_FAST_MAX, at index (size - 1) >> NBUF_LG_QUANTUM (every
 * class boundary up to 64 KiB is a multiple of the quantum): one load gives
 * the bin, no call, no branch. Built at load time. */
extern NBUF_HIDDEN uint16_t nbuf_tcache_bin_off_[NBUF_FAST_MAX >> NBUF_LG_QUANTUM];
static inline struct nbuf_tcache_bin *
nbuf_tcache_bin_of_(struct nbuf_tcache *tc, size_t size_minus_1)
{
    return (struct nbuf_tcache_bin *)((char *)tc +
                                      nbuf_tcache_bin_off_[size_minus_1 >> NBUF_LG_QUANTUM]);
}
/* Pairs a bin moves per fill or flush. */
static inline uint32_t
nbuf_tcache_bin_batch_(const struct nbuf_tcache_bin *bin)
{
    return bin->cap > 1 ? bin->cap / 2 : 1;
}
/* The large cache (see struct nbuf_large_cache): a pair of class @szind
 * (>= ncached) or NULL; put takes a released pair (capacity = its class
 * size) if it fits, else false. Both count the thread's statistics. */
struct nbuf *nbuf_tcache_large_get_(struct nbuf_tcache *tc, unsigned szind);
bool nbuf_tcache_large_put_(struct nbuf_tcache *tc, struct nbuf *b);
/* Give every pair of the large cache back to its arena. */
void nbuf_tcache_large_flush_(struct nbuf_tcache *tc);
/* A pair joins @tc's bin (the caller counts it): from now on its release on
 * this thread is fast, unless it is slow. */
static inline void
nbuf_tcache_bin_push_(struct nbuf_tcache *tc, struct nbuf_tcache_bin *bin, struct nbuf *b)
{
    b->tid = tc->id;
    b->key = b->slow ? NBUF_KEY_NONE : tc->key;
    b->next = bin->head;
    bin->head = b;
}
/* True for a pair released here from another thread's cache, of a class this
 * thread has not allocated since the last GC pass (a consumer's release):
 * it goes to the stage, not into a bin nothing takes from. */
static inline bool
nbuf_tcache_stages_(const struct nbuf_tcache *tc, const struct nbuf *b)
{
    return b->tid != tc->id && b->szind < tc->pool->ncached &&
           (uint32_t)tc->bins[b->szind].nalloc == tc->gc_nalloc[b->szind];
}
/* Stage a pair (struct nbuf_remote_stage): it is sent home in a batch. The
 * caller counts the release. */
void nbuf_tcache_stage_(struct nbuf_tcache *tc, struct nbuf *b);
/* Fast releases between two GC passes of a thread cache. */
#define NBUF_GC_INTERVAL 4096
/* initial-exec: a plain %fs-relative load even in the shared library (no
 * __tls_get_addr call per operation), as jemalloc does. */
#define NBUF_TLS_MODEL __attribute__((tls_model("initial-exec")))
extern NBUF_HIDDEN __thread struct nbuf_tls nbuf_tls_ NBUF_TLS_MODEL;
struct nbuf_tcache *nbuf_tcache_get_slow_(struct nbuf_pool *p);
struct nbuf *nbuf_tcache_alloc_slow_(struct nbuf_pool *p, unsigned szind);
void nbuf_tcache_release_slow_(struct nbuf *b);
void nbuf_tcache_flush_(struct nbuf_tcache *tc);
/* What the bins of one thread hold at their start caps, in bytes. */
uint64_t nbuf_tcache_min_budget_(const struct nbuf_pool *p);
void nbuf_tcache_gc_(struct nbuf_tcache *tc);
void nbuf_tcache_destroy_(struct nbuf_tcache *tc);
void nbuf_tcache_destructor_(void *arg);
struct nbuf *nbuf_header_alloc_(struct nbuf_pool *p);
void nbuf_header_free_(struct nbuf *h);
bool nbuf_tcache_check_(const struct nbuf_tcache *tc);
uint32_t nbuf_tcache_bin_count_(const struct nbuf_tcache_bin *bin);

/* Send @b's final release down the slow path (and off the key fast path). */
static inline void
nbuf_buf_set_slow_(struct nbuf *b, uint8_t slow)
{
    b->slow = slow;
    if (slow)
        b->key = NBUF_KEY_NONE;
}

/* ---- tcache_stats.c ---- */
/* Counters moved by an allocation, and by a release (see nbuf_pool_stats). */
#define TSTATS_ALLOC_FIELDS(X)                                                                     \
    X(nalloc)                                                                                      \
    X(bytes_alloc)                                                                                 \
    X(req_alloc)                                                                                   \
    X(cache_misses)                                                                                \
    X(views_new)                                                                                   \
    X(huge_alloc)                                                                                  \
    X(slow_alloc)
#define TSTATS_RELEASE_FIELDS(X)                                                                   \
    X(nrelease)                                                                                    \
    X(bytes_release)                                                                               \
    X(req_release)                                                                                 \
    X(remote_releases)                                                                             \
    X(views_free)
#define TSTATS_FIELDS(X) TSTATS_ALLOC_FIELDS(X) TSTATS_RELEASE_FIELDS(X)

void nbuf_tstats_add_(struct nbuf_tstats *dst, const struct nbuf_tstats *src);
/* A cache's counters: its slow-path ones plus its bins' fast-path counts. */
void nbuf_tcache_stats_(const struct nbuf_tcache *tc, struct nbuf_tstats *out);
/* Its bins' fast-path counts alone, as release or allocation counters. */
void nbuf_tcache_release_counts_(const struct nbuf_tcache *tc, struct nbuf_tstats *t);
void nbuf_tcache_alloc_counts_(const struct nbuf_tcache *tc, struct nbuf_tstats *t);

/* ---- pool.c ---- */
/* Entries a thread-cache bin of class @szind may hold (0: not cached), and
 * its arena stash (the lower layers read p->cache_cap and p->stash_cap). */
uint32_t nbuf_pool_cache_cap_(const struct nbuf_pool *p, unsigned szind);
uint32_t nbuf_pool_stash_cap_(const struct nbuf_pool *p, unsigned szind);
/* What a NULL pool argument means: the default pool, once it exists; until
 * then nbuf_no_pool_, whose fast_id matches no thread, so the fast paths
 * fall through to their slow path (the one place that creates it). */
extern NBUF_HIDDEN struct nbuf_pool nbuf_no_pool_;
extern NBUF_HIDDEN struct nbuf_pool *_Atomic nbuf_default_pool_;
static inline struct nbuf_pool *
nbuf_pool_fast_resolve_(struct nbuf_pool *p)
{
    /* Loaded either way, so both kinds of argument run the same code. */
    struct nbuf_pool *d = atomic_load_explicit(&nbuf_default_pool_, memory_order_acquire);
    return p ? p : d;
}
/* The pool of a NULL-or-pool argument; NULL (errno set) only if the default
 * pool cannot be created. Every NULL-pool entry point resolves here. */
static inline struct nbuf_pool *
nbuf_pool_resolve_(struct nbuf_pool *p)
{
    p = nbuf_pool_fast_resolve_(p);
    return likely(p != &nbuf_no_pool_) ? p : nbuf_pool_default();
}
/* fast_id for a pool in its current mode: its id, or NBUF_KEY_NONE when a
 * mode or flag forces the slow allocation path. */
uint64_t nbuf_pool_fast_id_(const struct nbuf_pool *p);
static inline bool
nbuf_pool_fast_(const struct nbuf_pool *p)
{
    return p->fast_id != NBUF_KEY_NONE;
}
int nbuf_pool_trim_all_(struct nbuf_pool *p);
/* Tests: run @p's decay on this clock (ms) instead of the real one; the
 * purger then leaves the pool alone and nbuf_pool_decay_ drives it. */
void nbuf_pool_set_clock_(struct nbuf_pool *p, uint64_t (*clock_ms)(void *ctx), void *ctx);
bool nbuf_pool_check_(struct nbuf_pool *p);
/* Debit/credit backing bytes against the limit; false = over the limit. */
unsigned nbuf_pool_env_flags_(void);

/*
 * Memory annotations for sanitizers. In AddressSanitizer builds pooled memory
 * that no live buffer owns is poisoned (compiled into the fast paths only
 * there); under valgrind the pools take the slow paths, which annotate with
 * client requests (no-ops when not running on valgrind).
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NBUF_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(NBUF_ASAN)
#define NBUF_ASAN 1
#endif
#ifdef NBUF_ASAN
#include <sanitizer/asan_interface.h>
#define NBUF_ASAN_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define NBUF_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define NBUF_ASAN_POISON(p, n) ((void)(p), (void)(n))
#define NBUF_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#ifdef NBUF_HAVE_VALGRIND
#include <valgrind/memcheck.h>
/* RUNNING_ON_VALGRIND once, at load: each client request costs about ten
 * instructions even natively, and the batch paths make one per pair. */
extern NBUF_HIDDEN bool nbuf_on_valgrind_;
#define NBUF_RUNNING_ON_VALGRIND() nbuf_on_valgrind_
#define NBUF_VG_NOACCESS(p, n)                                                                     \
    do {                                                                                           \
        if (unlikely(nbuf_on_valgrind_))                                                           \
            VALGRIND_MAKE_MEM_NOACCESS((p), (n));                                                  \
    } while (0)
#define NBUF_VG_UNDEFINED(p, n)                                                                    \
    do {                                                                                           \
        if (unlikely(nbuf_on_valgrind_))                                                           \
            VALGRIND_MAKE_MEM_UNDEFINED((p), (n));                                                 \
    } while (0)
#else
#define NBUF_RUNNING_ON_VALGRIND() false
#define NBUF_VG_NOACCESS(p, n) ((void)(p), (void)(n))
#define NBUF_VG_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif
/* Memory nobody owns (fresh chunks, cached pairs) vs. memory a buffer owns. */
#define NBUF_POISON(p, n)                                                                          \
    do {                                                                                           \
        NBUF_ASAN_POISON(p, n);                                                                    \
        NBUF_VG_NOACCESS(p, n);                                                                    \
    } while (0)
#define NBUF_UNPOISON(p, n)                                                                        \
    do {                                                                                           \
        NBUF_ASAN_UNPOISON(p, n);                                                                  \
        NBUF_VG_UNDEFINED(p, n);                                                                   \
    } while (0)

/* ---- stats.c ---- */
/* Add @d to the calling thread's counters for @p (or the pool's, locked). */
void nbuf_stats_account_(struct nbuf_pool *p, const struct nbuf_tstats *d, uint32_t tid);

/* ---- registry.c ---- */
/* 0, or -ENOMEM (the pool must not be used then: fork would not see it). */
int nbuf_registry_add_(struct nbuf_pool *p);
void nbuf_registry_remove_(struct nbuf_pool *p);
/* The decay pass over every arena and the huge cache; the next deadline. */
uint64_t nbuf_pool_decay_(struct nbuf_pool *p, uint64_t now);

/* ---- buf.c ---- */
/* A buffer of the slow path, not leak-tracked (growth keeps the header's
 * record): NULL with errno. */
struct nbuf *nbuf_buf_alloc_untracked_(struct nbuf_pool *p, size_t capacity, size_t max_capacity);
bool nbuf_buf_check_(const struct nbuf *b);
void nbuf_buf_free_(struct nbuf *b);
/* Give a header back (quarantine in checked mode, else its cache or free). */
void nbuf_buf_header_put_(struct nbuf *h);
/* Report a use of released buffer @b by @op (with its history); -EINVAL. */
int nbuf_buf_dead_(const struct nbuf *b, const char *op);
/* Count a view made or gone in the calling thread's counters. */
static inline void
nbuf_views_account_(struct nbuf_pool *p, bool created)
{
    if (likely(nbuf_tls_.pool_id == p->id)) {
        struct nbuf_tcache *tc = nbuf_tls_.tc;
        if (created)
            NBUF_STAT_ADD(tc->st.views_new, 1);
        else
            NBUF_STAT_ADD(tc->st.views_free, 1);
        return;
    }
    struct nbuf_tstats d = {.views_new = created, .views_free = !created};
    nbuf_stats_account_(p, &d, 0);
}

static inline bool
nbuf_is_dead_(const struct nbuf *b)
{
    return atomic_load_explicit(&((struct nbuf *)b)->refcnt, memory_order_relaxed) == 0;
}

/* ---- leak.c ---- */
/* Debug state of a new pool from NBUF_LEAK / checked mode / valgrind; may
 * force the slow paths. 0 or -ENOMEM. */
int nbuf_debug_pool_init_(struct nbuf_pool *p);
/* Drop quarantined headers and the registry (pool going away, nothing live). */
void nbuf_debug_pool_fini_(struct nbuf_pool *p);
/* Register the at-exit leak report of the default pool. */
void nbuf_leak_default_pool_(struct nbuf_pool *p);
/* Attach a history record to @b if the pool's mode selects it. */
void nbuf_leak_track_(struct nbuf_pool *p, struct nbuf *b);
enum nbuf_site_op { NBUF_OP_RETAIN = 1, NBUF_OP_RELEASE = 2, NBUF_OP_FREE = 3 };
/* Record a retain or a non-final release of a tracked buffer. */
void nbuf_leak_record_(struct nbuf *b, enum nbuf_site_op op);
/* Final release of a tracked buffer: off the live list (history kept in
 * checked mode until the header leaves the quarantine). */
void nbuf_leak_untrack_(struct nbuf *b);
/* Checked mode: park a released header; evicts (and frees) the oldest. */
void nbuf_quarantine_push_(struct nbuf *h);
/* Checked mode, pooled pair: move b's memory into a fresh header and park b;
 * returns the header now carrying the memory (b itself if none is free). */
struct nbuf *nbuf_quarantine_swap_(struct nbuf *b);
/* One report: the printf-style headline, then @b's history when it has one
 * (allocation, last retain/release sites, final release). */
void nbuf_report_buf_(const struct nbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Leak report through nbuf_report_ (nbuf_pool_free's -EBUSY path). */
void nbuf_leak_report_pool_(struct nbuf_pool *p);
/* nbuf_pool_leak_report's report to @out (may be NULL): live buffers counted. */
uint64_t nbuf_leak_report_stream_(struct nbuf_pool *p, FILE *out);
/* The registry's and the quarantine's invariants (true without a registry). */
bool nbuf_leak_check_(struct nbuf_pool *p);

/* ---- symbolize.c ---- */
/* Names addresses for one report, holding the symbolizer's lock until
 * close; NULL (no libdw, or it failed) still names exported symbols. */
struct nbuf_symbolizer;
struct nbuf_symbolizer *nbuf_symbolizer_open_(void);
void nbuf_symbolizer_close_(struct nbuf_symbolizer *sy);
/* "function+0xoff at file.c:line (object)" for a return address. */
void nbuf_symbolize_(struct nbuf_symbolizer *sy, const void *pc, char *out, size_t len);
void nbuf_symbolize_fork_prepare_(void);
void nbuf_symbolize_fork_release_(void); /* parent and child */

/* ---- debug.c ---- */
void nbuf_report_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern void (*nbuf_report_hook_)(const char *msg);
void nbuf_report_fork_prepare_(void);
void nbuf_report_fork_parent_(void);
void nbuf_report_fork_child_(void);

#endif /* NBUF_INTERNAL_H */
