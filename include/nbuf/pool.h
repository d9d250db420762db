/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/pool.h
 * @brief Pools: where every nbuf buffer's memory comes from.
 *
 * A pool is a jemalloc/Netty-style allocator dedicated to IO buffers. It takes
 * large *chunks* (4 MiB by default) from a *backing* (anonymous mmap, a
 * dedicated jemalloc arena in a build with -Djemalloc=enabled, or your own
 * callbacks), carves them into *pages*
 * (8 KiB by default) and runs of pages, and carves single-page-ish runs into
 * equal *subpage* elements for small sizes. Requests are rounded up to one of
 * four size classes per doubling (16 B quantum), so the waste of a buffer is
 * at most 20 % of its size and usually about 10 %.
 *
 * Sizes below 4 pages (28 KiB with 8 KiB pages) come from subpages; sizes up
 * to the chunk size from page runs; larger ("huge") buffers straight from the
 * backing. Each thread binds to the least-loaded of several *arenas* (each
 * with its own lock) and keeps a bounded per-thread cache of ready buffers per
 * size class, so a typical allocate/release pair takes no lock and no atomic
 * read-modify-write. A buffer may be released on any thread.
 *
 * Thread safety: every function here may be called from any thread, except
 * that nbuf_pool_free() must not race with other use of the same pool.
 */
#ifndef NBUF_POOL_H
#define NBUF_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque pool. */
struct nbuf_pool;

/** @name Pool flags (nbuf_pool_config::flags) */
/**@{*/
/** Zero every buffer's memory on allocation. */
#define NBUF_POOL_ZERO (1u << 0)
/** Zero every buffer's memory on its final release (before it is cached). */
#define NBUF_POOL_SCRUB (1u << 1)
/** No per-thread caches: every allocation and release takes the arena lock. */
#define NBUF_POOL_NO_CACHE (1u << 2)
/** Every buffer straight from the system allocator with its exact size, so
 *  AddressSanitizer and valgrind see each one (debugging only). */
#define NBUF_POOL_BYPASS (1u << 3)
/** Checked mode: quarantine, junk fill, stale/double release reports. */
#define NBUF_POOL_CHECKED (1u << 4)
/** No background purging: idle memory decays only on the pool's own
 *  allocations and releases (see nbuf_pool_background()). */
#define NBUF_POOL_NO_BACKGROUND (1u << 5)
/**@}*/

/** Where a pool takes its chunks from. */
enum nbuf_backing_kind {
    /** A dedicated jemalloc arena, aligned mallocx() without tcache (the
     *  default in a build with -Djemalloc=enabled; EINVAL in one without). */
    NBUF_BACKING_JEMALLOC = 0,
    /** Anonymous mmap() (the default); see nbuf_pool_config::huge_pages. */
    NBUF_BACKING_MMAP = 1,
    /** nbuf_pool_config::chunk_alloc / chunk_free. */
    NBUF_BACKING_CUSTOM = 2,
};

/**
 * Pool configuration. Always start from nbuf_pool_config_init(), then change
 * fields: new fields may be added at the end in later versions.
 */
struct nbuf_pool_config {
    /** sizeof(struct nbuf_pool_config) as the caller was built: set by
     *  nbuf_pool_config_init(), so start from it. A caller built against
     *  older headers (a smaller size) gets the defaults for the fields it
     *  has not got; 0 or a size larger than the library's is EINVAL. */
    size_t size;
    /** Page size in bytes: a power of two >= 4096 (default 8192). */
    size_t page_size;
    /** Chunk size in bytes: page_size * 2^k, at most 65536 pages and 1 GiB
     *  (default 4 MiB). */
    size_t chunk_size;
    /** Number of arenas; 0 means 2 x online CPUs (default 0). */
    unsigned arenas;
    /** Thread-cache entries per subpage size class (default 128). */
    unsigned cache_small_count;
    /** Thread-cache entries per page-run size class (default 16). */
    unsigned cache_normal_count;
    /** Largest buffer size class kept in thread caches (default 64 KiB). */
    size_t cache_max_size;
    /** Upper bound on bytes taken from the backing; 0 = none (default 0). */
    size_t memory_limit;
    /** Largest capacity of a single buffer (default 1 GiB). */
    size_t max_buffer_size;
    /** NBUF_POOL_* flags (default 0). */
    unsigned flags;
    /** Backing kind (default NBUF_BACKING_MMAP, or NBUF_BACKING_JEMALLOC in
     *  a build with -Djemalloc=enabled). */
    enum nbuf_backing_kind backing;
    /** With NBUF_BACKING_MMAP: madvise(MADV_HUGEPAGE) on chunks. */
    int huge_pages;
    /** With NBUF_BACKING_CUSTOM: return @p size bytes aligned to @p align
     *  (a power of two), or NULL. Called without pool locks held. */
    void *(*chunk_alloc)(size_t size, size_t align, void *ctx);
    /** With NBUF_BACKING_CUSTOM: give back what chunk_alloc returned. */
    void (*chunk_free)(void *ptr, size_t size, void *ctx);
    /** Passed to chunk_alloc and chunk_free. */
    void *backing_ctx;
    /** Bytes each thread cache may keep in up to four buffers larger than
     *  cache_max_size (up to the chunk size), so that a loop of large
     *  buffers does not take an arena lock per buffer; 0 = none (default
     *  4 MiB). Also, unless 0: the pool keeps up to four freed buffers
     *  larger than a chunk (32 MiB in all, still counted in backing_bytes
     *  and memory_limit) for reuse by a request of the same size. */
    size_t cache_large_bytes;
    /** Milliseconds a free page stays resident before it is purged
     *  (madvise(MADV_DONTNEED)); then a chunk left empty goes back to the
     *  backing, and pairs an arena stash kept unused for this long go back
     *  to their chunks. 0 purges at once, -1 never (only nbuf_pool_trim()
     *  does); default NBUF_DECAY_MS_DEFAULT. Memory from a custom backing is
     *  never purged (it may not be private anonymous memory). */
    int decay_ms;
    /** Bytes one thread's cache bins may hold in all: each bin's cap starts
     *  small and doubles when its class cycles through it, up to
     *  cache_small_count / cache_normal_count, within this budget; a bin
     *  only released into (a burst ending) halves instead, so a burst leaves
     *  little parked. Default 12 MiB (at least the bins' start, ~1 MiB). */
    size_t cache_thread_bytes;
};

/** Default nbuf_pool_config::decay_ms (docs/design.md says why). */
#define NBUF_DECAY_MS_DEFAULT 500

/**
 * Fill @p cfg with the defaults listed at each field (size included).
 *
 * @param cfg the configuration to fill; NULL does nothing.
 */
void nbuf_pool_config_init(struct nbuf_pool_config *cfg);

/**
 * Create a pool.
 *
 * @param cfg configuration, copied; NULL means the defaults.
 * @return the pool, or NULL with errno = EINVAL (a field out of range, or
 *         NBUF_BACKING_CUSTOM without both callbacks, or jemalloc backing in a
 *         build without jemalloc), ENOMEM (no memory for the pool itself) or
 *         EAGAIN (out of thread-specific keys).
 * @see nbuf_pool_free
 */
struct nbuf_pool *nbuf_pool_new(const struct nbuf_pool_config *cfg);

/**
 * Destroy a pool and return all its memory to the backing.
 *
 * @param p the pool (not the default pool, which is never freed); no other
 *        call may use it concurrently.
 * @return 0 on success (the pool is gone); -EBUSY while buffers or views of
 *         the pool are still live: the pool stays fully usable and a report
 *         (see nbuf_set_report_fn()) counts them and, with leak tracking on,
 *         names each live tracked buffer; -EINVAL for NULL or the default
 *         pool.
 */
int nbuf_pool_free(struct nbuf_pool *p);

/**
 * The process-wide pool used when a function gets a NULL pool. Created on
 * first use from the NBUF_* environment variables (see docs/api.md,
 * "Environment variables"), never freed.
 *
 * @return the pool, or NULL with errno set if it cannot be created.
 */
struct nbuf_pool *nbuf_pool_default(void);

/**
 * Give cached and idle memory back to the backing now: the calling thread's
 * cache, the arenas' stashes, the pool's cached huge extents, every empty
 * chunk and every dirty page. Other threads flush their caches at their next
 * cache miss (their caches are theirs alone).
 *
 * @param p the pool (not NULL: the default pool is nbuf_pool_default()).
 * @return 0, or -EINVAL for a NULL pool.
 */
int nbuf_pool_trim(struct nbuf_pool *p);

/**
 * Purge @p p's idle memory in the background (on, the default unless the
 * pool has NBUF_POOL_NO_BACKGROUND or NBUF_BACKGROUND=0 is set) or only on
 * its own allocations and releases (off). Background purging is one thread
 * per process, shared by every pool, started when a pool first has memory
 * to decay; it sleeps until the next decay deadline, so an idle process
 * gives memory back without any call into nbuf.
 *
 * Turning it on runs any decay already due at once.
 *
 * @param p the pool (not NULL: the default pool is nbuf_pool_default()).
 * @param on nonzero for background purging, 0 for none.
 * @return 0; -EINVAL for a NULL pool.
 */
int nbuf_pool_background(struct nbuf_pool *p, int on);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_POOL_H */
