/* SPDX-License-Identifier: MIT */
/*
 * Every internal struct of nbuf, with its invariants and synchronization.
 * Each "Invariants:" line has a matching check in nbuf_<type>_check_().
 *
 * Vocabulary: szind = size-class index; usize = usable (class) size;
 * npages = a count of pages; lg_ = log2; run = consecutive pages of a chunk;
 * subpage = a run carved into equal elements; pair = a buffer header with its
 * memory attached, ready to hand out.
 */
#ifndef NBUF_TYPES_H
#define NBUF_TYPES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbuf/pool.h"
#include "nbuf/stats.h"

/* ---- size classes ------------------------------------------------------ */

/* Four classes per doubling, 16-byte quantum; see size_class.c. */
#define NBUF_LG_QUANTUM 4
#define NBUF_QUANTUM ((size_t)1 << NBUF_LG_QUANTUM)
#define NBUF_LG_MAX_CHUNK 30
/* Classes 16..2^30: 8 + 4 * (30 - 7) = 100. */
#define NBUF_NCLASSES 100
/* Sizes <= this go through a table lookup. */
#define NBUF_LOOKUP_MAX 4096
/* szind of a huge buffer (exact page-rounded size, straight from backing). */
#define NBUF_SZIND_HUGE 0xff

/* ---- chunks ---------------------------------------------------------- */

enum nbuf_run_state {
    NBUF_RUN_FREE = 0,
    NBUF_RUN_USED = 1,    /* a page run handed out as one buffer */
    NBUF_RUN_SUBPAGE = 2, /* a run carved into subpage elements */
};

#define NBUF_RUN_NONE UINT32_MAX
#define NBUF_NEVER UINT64_MAX /* a decay deadline that never comes */
/* Free-run bins: 8 exact (1..8 pages), then 4 per doubling up to 2^16 pages. */
#define NBUF_RUN_BINS 64

/*
 * Per-page metadata. Only the first and the last page of a run (free or used)
 * are meaningful; they both hold the run's length so that a neighbour can find
 * the run's head from its tail in O(1).
 */
struct nbuf_page_info {
    uint32_t npages; /* length of the run this page heads or ends */
    uint32_t next;   /* free-list links (head page of a free run) */
    uint32_t prev;
    uint32_t state; /* enum nbuf_run_state */
};

/*
 * A chunk: chunk_size bytes from the backing, carved into runs of pages.
 *
 * Invariants:
 * - runs tile [0, npages): every page belongs to exactly one run.
 * - two free runs are never adjacent (freeing merges eagerly).
 * - a free run of n pages is in bin nbuf_run_bin_floor_(n), and bit b of
 *   bin_mask is set iff bin b is non-empty.
 * - free_pages = sum of free run lengths.
 * Synchronization: everything is guarded by arena->lock.
 */
struct nbuf_chunk {
    uint8_t *base; /* page_size-aligned, chunk_size bytes */
    struct nbuf_arena *arena;
    struct nbuf_chunk *next, *prev; /* arena->chunks */
    uint32_t npages;
    uint32_t free_pages;
    uint64_t bin_mask;
    uint32_t bins[NBUF_RUN_BINS];   /* head page of each free list */
    struct nbuf_subpage **subpages; /* by head page of a SUBPAGE run */
    /* Decay (decay.c explains): free pages written since they were last
     * purged, one bit each; ndirty counts them; purge_at is when they go
     * (ms on the pool's clock, NBUF_NEVER while ndirty == 0). */
    uint64_t *dirty;
    uint32_t ndirty;
    uint64_t purge_at;
    struct nbuf_page_info pages[];
};

/*
 * A subpage: a run of run_pages pages carved into nelems elements of elem_size
 * bytes, tracked by a bitmap (1 = in use).
 *
 * Invariants:
 * - nfree = nelems - popcount(bitmap); bits >= nelems are 0.
 * - nfree > 0 iff the subpage is on arena->partial[szind].
 * Synchronization: arena->lock.
 */
struct nbuf_subpage {
    struct nbuf_chunk *chunk;
    struct nbuf_subpage *next, *prev; /* arena->partial[szind] */
    uint8_t *base;
    uint32_t page; /* head page in chunk */
    uint32_t run_pages;
    uint32_t elem_size;
    uint32_t nelems;
    uint32_t nfree;
    uint32_t hint; /* bitmap word to search first */
    uint8_t szind;
    uint64_t bitmap[];
};

/* ---- buffers --------------------------------------------------------- */

enum nbuf_kind {
    NBUF_KIND_SMALL = 0,  /* subpage element */
    NBUF_KIND_RUN = 1,    /* page run */
    NBUF_KIND_HUGE = 2,   /* straight from the backing */
    NBUF_KIND_BYPASS = 3, /* system malloc, exact size (NBUF_POOL_BYPASS) */
    NBUF_KIND_VIEW = 4,   /* slice/duplicate: memory of root */
    NBUF_KIND_WRAP = 5,   /* external memory with a free callback */
    NBUF_KIND_MAPPED = 6, /* read-only mmap of a file */
};

/* nbuf::flags */
#define NBUF_F_READONLY (1u << 0)
#define NBUF_F_CHECKED (1u << 1) /* pool in checked mode */
#define NBUF_F_TRACKED (1u << 2) /* leak tracking record attached */
#define NBUF_F_SCRUB (1u << 3)   /* zero on final release */

/*
 * nbuf::key is a hint for the release fast path: it equals the key of the
 * thread cache whose bin the buffer goes back to. A header gets a cache's
 * key only when it is pushed into that cache's bin (and so is pooled, not
 * slow, and normalised); everything slow carries NBUF_KEY_NONE, which no
 * cache has. Cache keys come from one process-wide counter (never reused,
 * never 0), so a stale thread-local binding (pool freed) matches nothing and
 * an unbound thread (key 0) matches nothing either.
 */
#define NBUF_KEY_NONE UINT64_MAX

/* Every header nbuf hands out carries this in nbuf::magic (set where headers
 * are born: arena header blocks, bypass calloc, view.c's fallback). */
#define NBUF_MAGIC 0x6e627566u /* "nbuf" */

/*
 * A buffer header. Pooled headers live in subpage elements of their arena and
 * are recycled together with their memory (a "pair") through thread caches,
 * so allocation never mallocs a header.
 *
 * Invariants:
 * - reader <= writer <= capacity <= max_capacity.
 * - kind VIEW: root != NULL, root->kind != VIEW, mem lies inside root's
 *   memory, and the view holds one reference on root.
 * - kind SMALL/RUN: slab is the subpage/chunk holding mem, szind < NCLASSES.
 * - refcnt == 0 iff the header is free (cached, stashed or quarantined).
 * Synchronization: refcnt is atomic; everything else belongs to the one
 * thread that currently owns the buffer (or the cache holding it).
 */
struct nbuf {
    /* First cache line: everything the alloc/release fast paths touch. */
    struct nbuf *next; /* link while cached in a thread-cache bin */
    uint8_t *mem;      /* start of this buffer's bytes */
    size_t reader;     /* reader index */
    size_t writer;     /* writer index */
    size_t requested;  /* what the caller asked for (stats) */
    uint64_t key;      /* the key of the thread cache this pair belongs to, or
                          NBUF_KEY_NONE; equal to the releasing thread's
                          nbuf_tls_.key only if the release fast path may push
                          it there (see NBUF_KEY_NONE) */
    _Atomic uint32_t refcnt;
    uint32_t tid;            /* id of the thread cache the buffer came from (a
                                cached pair: the cache holding it) */
    uint8_t kind;            /* enum nbuf_kind */
    uint8_t szind;           /* size class of mem (pooled kinds) */
    uint8_t flags;           /* NBUF_F_* */
    uint8_t slow;            /* non-zero: release takes the slow path */
    _Atomic uint32_t nviews; /* 1: views may share mem (set by view.c, cleared by
                                the owner when refcnt == 1 proves none is left) */
    /* Second line. */
    size_t capacity;
    size_t max_capacity;
    uint32_t magic;  /* NBUF_MAGIC from the header's birth (foreign-pointer check) */
    uint32_t handle; /* SMALL: element index; RUN: head page */
    struct nbuf_pool *pool;
    void *slab;                             /* SMALL: subpage; RUN: chunk; HUGE: backing size;
                                               WRAP: free_fn ctx; VIEW: unused */
    struct nbuf *root;                      /* VIEW: owner of mem; else NULL */
    void (*free_fn)(void *data, void *ctx); /* WRAP */
    struct nbuf_header_ext *ext;            /* leak/checked-mode record, or NULL */
};

/* ---- debugging (leak.c) ------------------------------------------------ */

/* Dirty free pages an arena keeps at most, at least (arena.c: dirty_max). */
#define NBUF_DIRTY_MIN_BYTES ((uint64_t)2 << 20)
#define NBUF_BT_DEPTH 16  /* frames kept of an allocation or final release */
#define NBUF_SITE_DEPTH 6 /* frames kept of a retain/release site */
#define NBUF_NSITES 4     /* retain/release sites kept (a ring, newest last) */

struct nbuf_site {
    uint8_t op;      /* enum nbuf_site_op (leak.c) */
    uint32_t refcnt; /* count after the operation */
    uint32_t depth;
    void *pc[NBUF_SITE_DEPTH];
};

/*
 * The history of one tracked buffer (NBUF_LEAK, checked mode).
 *
 * Invariants:
 * - on the registry's live list iff the buffer is live (refcnt > 0);
 *   buf->ext == this while attached.
 * Synchronization: the registry's lock (sites are written by whichever
 * thread retains or releases).
 */
struct nbuf_header_ext {
    struct nbuf_header_ext *next, *prev; /* registry live list */
    struct nbuf *buf;
    uint64_t serial; /* allocation number within the pool */
    size_t capacity, requested;
    uint8_t kind;
    bool live;
    uint32_t nsites; /* sites recorded, ever (ring index = nsites % NBUF_NSITES) */
    uint32_t alloc_depth, free_depth;
    void *alloc_pc[NBUF_BT_DEPTH];
    void *free_pc[NBUF_BT_DEPTH];
    struct nbuf_site sites[NBUF_NSITES];
};

/*
 * Per-pool debugging state: the registry of live tracked buffers and the
 * checked-mode quarantine (a FIFO of released headers).
 *
 * Invariants:
 * - nlive = length of live; qcount <= qcap; every quarantined header has
 *   refcnt 0 and NBUF_F_CHECKED.
 * Synchronization: lock guards everything but the immutable mode fields.
 */
struct nbuf_leak_registry {
    pthread_mutex_t lock;
    int mode;     /* enum nbuf_leak_mode (leak.c) */
    bool checked; /* pool in checked mode */
    struct nbuf_header_ext *live;
    uint64_t nlive;
    uint64_t serial;
    struct nbuf **quarantine; /* ring of qcap */
    uint32_t qcap, qhead, qcount;
    /* History records are recycled (no malloc per buffer in steady state,
     * so fork and sanitizers see few allocator calls): a free list linked
     * through next, carved from blocks freed with the registry. */
    struct nbuf_header_ext *free_ext;
    void *ext_blocks;
};

/* ---- arenas ---------------------------------------------------------- */

/*
 * Per-class stash of ready pairs between thread caches and the chunks (like
 * tcmalloc's transfer cache): a releasing thread flushes batches here, an
 * allocating thread refills from here, both under the arena lock with a
 * memcpy of pointers, so producer/consumer traffic never touches bitmaps.
 */
struct nbuf_stash {
    uint32_t count;
    uint32_t cap;
    uint32_t low; /* fewest pairs held since the last decay pass */
    struct nbuf **items;
};

/*
 * An arena: a lock, its chunks, partial subpages per class, stashes.
 *
 * Invariants:
 * - every chunk on chunks has chunk->arena == this arena.
 * - nempty = number of chunks with free_pages == npages.
 * Synchronization: lock guards everything except nthreads (atomic).
 */
struct nbuf_arena {
    pthread_mutex_t lock;
    struct nbuf_pool *pool;
    unsigned index;
    _Atomic unsigned nthreads; /* threads bound (least-loaded choice) */
    struct nbuf_chunk *chunks; /* doubly linked */
    uint32_t nchunks;
    uint32_t nempty;
    struct nbuf_subpage *partial[NBUF_NCLASSES];
    struct nbuf_stash stash[NBUF_NCLASSES];
    /* Free headers, linked through nbuf::root; carved from hblocks, which
     * live until the pool is freed. */
    struct nbuf *free_headers;
    uint32_t nfree_headers;
    uint32_t nhblocks, hblocks_cap;
    void **hblocks;
    uint64_t stash_bytes; /* lock */
    /* Decay (lock): the earliest chunk purge_at, and when the stashes are
     * next aged (NBUF_NEVER: nothing to do); pages purged and madvise calls
     * made, ever. */
    uint64_t purge_at;
    uint64_t stash_gc_at;
    uint64_t purged_pages;
    uint64_t npurges;
    uint64_t ndirty; /* dirty free pages of all its chunks (lock) */
#ifndef NDEBUG
    pthread_t owner; /* for _locked asserts */
    bool owned;
#endif
};

/* ---- thread caches ----------------------------------------------------- */

/*
 * One size class of a thread cache: 32 bytes, so the fast paths find a bin
 * with a shift (nbuf_sz_bin_off_ holds the offsets for requests <= 64 KiB).
 * Invariants: count = cap - room <= cap pairs on head's list.
 * Synchronization: written by the owning thread only, each field with one
 * instruction (NBUF_COUNTER_ADD); nbuf_pool_stats reads them relaxed.
 */
struct nbuf_tcache_bin {
    struct nbuf *head; /* cached pairs, linked through nbuf::next (LIFO) */
    uint64_t nalloc;   /* fast-path pops (statistics) */
    uint64_t nrelease; /* fast-path pushes (statistics) */
    uint32_t room;     /* free places: the release fast path's one test */
    uint32_t cap;      /* now; grows on demand up to pool->cache_cap (0
                          with NBUF_POOL_NO_CACHE or above cache_max_size) */
};

/*
 * Counters a thread keeps for itself; written by the owner with relaxed
 * atomic stores (plain moves on x86), summed by nbuf_pool_stats.
 */
struct nbuf_tstats {
    uint64_t nalloc, nrelease;
    uint64_t bytes_alloc, bytes_release; /* class sizes */
    uint64_t req_alloc, req_release;     /* requested sizes */
    uint64_t cache_misses;               /* hits = nalloc - misses (no fast-path add) */
    uint64_t remote_releases;
    uint64_t views_new, views_free;
    uint64_t huge_alloc;
    uint64_t slow_alloc; /* entries of buf.c's alloc_slow */
};

/*
 * A thread's few pairs above cache_max_size (to the chunk size), so a loop
 * of large buffers reuses one instead of taking an arena lock per pair.
 * Invariants: bytes = sum of the slots' capacities <= cache_large_bytes;
 * every slot pair has refcnt 0, key NBUF_KEY_NONE, a pooled kind.
 * Synchronization: the owning thread; bytes is read relaxed by stats.
 */
#define NBUF_LARGE_SLOTS 4
struct nbuf_large_cache {
    struct nbuf *slot[NBUF_LARGE_SLOTS];
    uint64_t bytes;
    uint32_t nget;    /* pairs taken, ever */
    uint32_t gc_nget; /* nget at the last GC pass: unchanged = idle */
};

/*
 * Pairs released on this thread that came from another thread's cache,
 * while this thread does not allocate their class (a consumer): they go home
 * to their arenas' stashes in batches instead of filling this thread's bins,
 * where nothing would take them.
 * Invariants: n <= NBUF_STAGE_PAIRS; bytes = sum of their capacities.
 * Synchronization: the owning thread; bytes is read relaxed by stats.
 */
#define NBUF_STAGE_PAIRS 32
#define NBUF_STAGE_BYTES ((uint64_t)128 << 10)
struct nbuf_remote_stage {
    struct nbuf *items[NBUF_STAGE_PAIRS];
    uint32_t n;
    uint64_t bytes;
};

/*
 * A thread's cache for one pool. Found through the thread-local
 * nbuf_tls_ (fast) or the pool's pthread key (slow).
 *
 * Invariants:
 * - bin[i].count <= bin[i].cap; every cached pair has refcnt 0, kind
 *   SMALL/RUN, szind i, pool == this->pool.
 * Synchronization: the bins belong to the owning thread; stats fields are
 * relaxed atomics; next/prev and flush_epoch are guarded by pool->lock.
 */
struct nbuf_tcache {
    struct nbuf_pool *pool;
    struct nbuf_arena *arena; /* bound arena (fills come from here) */
    uint64_t key;             /* process-wide unique, see NBUF_KEY_NONE */
    uint32_t id;              /* per pool (nbuf::tid, remote-release stats) */
    uint32_t gc_tick;         /* fast releases until the next GC pass */
    uint64_t seen_trim_epoch;
    struct nbuf_tcache *next, *prev; /* pool->tcaches */
    struct nbuf_tstats st;
    struct nbuf *headers; /* bare headers for views, linked through root */
    uint32_t nheaders;
    uint32_t gc_nalloc[NBUF_NCLASSES];  /* bin nalloc at the last GC pass */
    uint32_t ovf_nalloc[NBUF_NCLASSES]; /* and at the bin's last overflow */
    uint8_t ovf_idle[NBUF_NCLASSES];    /* overflows in a row with no allocation */
    /* Bytes the bins' caps may still grow by: the caps of all bins, times
     * their class sizes, never exceed the pool's cache_budget. */
    uint64_t budget;
    struct nbuf_large_cache large;
    struct nbuf_remote_stage stage;
    struct nbuf_tcache_bin bins[NBUF_NCLASSES];
};

/* The fast-path thread-local: the bound cache, its pool's id and its key
 * (all 0 while the thread is bound to no pool: no pool or header matches). */
struct nbuf_tls {
    uint64_t pool_id; /* compared with nbuf_pool::fast_id by allocations */
    uint64_t key;     /* compared with nbuf::key by releases */
    struct nbuf_tcache *tc;
};

/* ---- backing ----------------------------------------------------------- */

struct nbuf_backing {
    enum nbuf_backing_kind kind;
    int huge_pages;
    void *(*chunk_alloc)(size_t size, size_t align, void *ctx);
    void (*chunk_free)(void *ptr, size_t size, void *ctx);
    void *ctx;
    /* Test hook: fail the Nth call from now (1 = next); 0 = never. */
    _Atomic long fail_countdown;
    _Atomic uint64_t fail_count;
};

/* ---- huge extents (huge.c) ------------------------------------------------ */

/*
 * Freed huge extents kept for reuse. A cached extent stays charged against
 * memory_limit (it is still taken from the backing) and is poisoned.
 * Invariants: n <= NBUF_HUGE_SLOTS; bytes = sum of the slots' sizes <=
 * NBUF_HUGE_CACHE_BYTES.
 * Synchronization: lock guards everything.
 */
#define NBUF_HUGE_SLOTS 4
#define NBUF_HUGE_CACHE_BYTES ((uint64_t)32 << 20)
struct nbuf_huge_extent {
    void *mem;
    size_t size;
    uint64_t cached_at; /* ms on the pool's clock */
};
struct nbuf_huge_cache {
    pthread_mutex_t lock;
    unsigned n;
    uint64_t bytes;
    uint64_t cap; /* NBUF_HUGE_CACHE_BYTES, or 0 (off) */
    struct nbuf_huge_extent slot[NBUF_HUGE_SLOTS];
};

/* ---- pool ---------------------------------------------------------------- */

/*
 * Invariants:
 * - backing_bytes <= memory_limit when a limit is set.
 * - small classes are szind < nsmall; run classes nsmall <= szind < nclasses.
 * Synchronization: config fields are immutable after nbuf_pool_new; the
 * tcache list, retired stats and huge counters use lock; byte gauges are
 * atomics.
 */
struct nbuf_pool {
    uint64_t id;      /* unique per process, never reused */
    uint64_t fast_id; /* id when the allocation fast path may serve this
                         pool, else NBUF_KEY_NONE (debug modes, flags, a
                         max_buffer_size under 64 KiB) */
    struct nbuf_pool_config cfg;
    unsigned lg_page;
    unsigned chunk_pages;
    unsigned nsmall;       /* classes served from subpages */
    unsigned nclasses;     /* classes served from the pool (<= chunk_size) */
    unsigned ncached;      /* classes with a thread cache bin */
    size_t large_max;      /* largest request the large cache serves (0: none) */
    uint64_t cache_budget; /* bytes one thread's bins may hold (tcache.c) */
    unsigned header_szind;
    uint8_t slow_alloc; /* any flag that forces the slow allocation path */
    uint8_t buf_slow;   /* value of nbuf::slow for new buffers */
    uint8_t buf_flags;  /* value of nbuf::flags for new buffers */
    bool is_default;
    pthread_key_t tsd_key;
    struct nbuf_backing backing;
    unsigned narenas;
    struct nbuf_arena *arenas;
    /* Per class: a thread-cache bin's and an arena stash's most entries. */
    uint32_t cache_cap[NBUF_NCLASSES];
    uint32_t stash_cap[NBUF_NCLASSES];
    /* Per small class: pages per subpage run and elements per run. */
    uint32_t run_pages[NBUF_NCLASSES];
    uint32_t run_elems[NBUF_NCLASSES];

    pthread_mutex_t lock;
    struct nbuf_tcache *tcaches;
    uint32_t next_tcache_id;
    struct nbuf_tstats retired; /* counters of exited threads */
    _Atomic uint64_t trim_epoch;

    _Atomic uint64_t backing_bytes;      /* budget.c */
    int (*reclaim)(struct nbuf_pool *p); /* budget.c's hook: the pool's trim */
    _Atomic uint64_t nchunks;
    _Atomic uint64_t huge_allocs;
    _Atomic uint64_t limit_failures;
    _Atomic uint64_t live_views;

    /* Decay (decay.c): -1 never, 0 at once, else ms a free page stays
     * resident; the clock (tests inject one); background purging wanted. */
    int64_t decay_ms;
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
    _Atomic bool background;
    bool can_purge; /* the backing's memory may be madvise()d */

    struct nbuf_leak_registry *leaks;  /* leak.c, may be NULL */
    struct nbuf_huge_cache huge_cache; /* huge.c */
};

#endif /* NBUF_TYPES_H */
