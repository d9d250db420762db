/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/stats.h
 * @brief Pool statistics: a snapshot struct and a printer.
 *
 * Counters are kept per thread and per arena and summed when you ask, so
 * keeping them costs the allocation fast path a few plain adds. A snapshot
 * taken while other threads allocate is approximate (each field is exact on
 * its own at some instant); a snapshot taken while the pool is quiet is exact.
 */
#ifndef NBUF_STATS_H
#define NBUF_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A snapshot of a pool's counters. */
struct nbuf_pool_stats {
    uint32_t version;           /**< NBUF_STATS_VERSION of the library that
                                     wrote the snapshot */
    uint32_t size;              /**< bytes of it written (see
                                     nbuf_pool_stats_sized()) */
    uint64_t chunks;            /**< chunks currently taken from the backing */
    uint64_t backing_bytes;     /**< bytes currently taken from the backing
                                     (chunks and huge buffers) */
    uint64_t used_bytes;        /**< size-class bytes of live buffers */
    uint64_t requested_bytes;   /**< bytes live buffers asked for */
    uint64_t cached_bytes;      /**< size-class bytes parked in thread caches
                                     and arena stashes */
    uint64_t live_buffers;      /**< pooled and huge buffers not yet released
                                     (views and wrapped memory not included) */
    uint64_t allocations;       /**< buffers allocated, ever */
    uint64_t releases;          /**< buffers freed, ever */
    uint64_t cache_hits;        /**< allocations served by a thread cache */
    uint64_t cache_misses;      /**< allocations that had to fill the cache */
    uint64_t remote_releases;   /**< frees on a thread other than the
                                     allocating one */
    uint64_t limit_failures;    /**< allocations refused by memory_limit */
    uint64_t huge_allocations;  /**< buffers larger than a chunk, ever */
    uint64_t arenas;            /**< number of arenas */
    uint64_t threads;           /**< threads holding a cache of this pool */
    uint64_t empty_chunks;      /**< chunks with no page in use (reserve) */
    uint64_t views;             /**< live views (slices, duplicates) */
    uint64_t slow_allocations;  /**< allocations that left the inline fast
                                     path: misses, sizes above 64 KiB or 0,
                                     flags, debug modes, growth, another pool
                                     bound to the thread */
    uint64_t resident_bytes;    /**< backing bytes that may be in RAM: pages
                                     of chunks in use or dirty, and huge
                                     buffers (never-touched and purged pages
                                     are not counted) */
    uint64_t dirty_bytes;       /**< free chunk pages written since they were
                                     last purged: what decay gives back */
    uint64_t purged_bytes;      /**< chunk bytes purged or given back, ever */
    uint64_t purges;            /**< madvise() calls made by decay and trim */
    uint64_t cache_bound_bytes; /**< most bytes one thread's cache of this
                                     pool can park (its bins and large cache) */
    uint64_t stash_bound_bytes; /**< most bytes the arena stashes can park in
                                     all (aged out after decay_ms) */
};

/** Formats for nbuf_pool_print_stats(). */
enum nbuf_stats_format {
    NBUF_FORMAT_TEXT = 0, /**< human-readable, with a chunk occupancy map */
    NBUF_FORMAT_JSON = 1, /**< one JSON object */
};

/**
 * Take a snapshot of @p p's counters.
 *
 * @param p the pool (not NULL: the default pool is nbuf_pool_default()).
 * @param out where the snapshot goes (all of struct nbuf_pool_stats).
 * @return 0; -EINVAL if @p p or @p out is NULL.
 */
int nbuf_pool_stats(struct nbuf_pool *p, struct nbuf_pool_stats *out);

/** Version of struct nbuf_pool_stats (fields are only ever added at the end). */
#define NBUF_STATS_VERSION 2

/**
 * nbuf_pool_stats() for a caller that states its struct's size: at most
 * @p size bytes of the snapshot are written (and out->size says how many),
 * so a program built against older headers, with a smaller struct, is never
 * written past. Call it as nbuf_pool_stats_sized(p, &st, sizeof(st)).
 *
 * @param p the pool (not NULL).
 * @param out where the snapshot goes.
 * @param size sizeof(*out) as the caller was built.
 * @return 0; -EINVAL if @p p or @p out is NULL or @p size is below the two
 *         header fields.
 */
int nbuf_pool_stats_sized(struct nbuf_pool *p, struct nbuf_pool_stats *out, size_t size);

/**
 * Print @p p's counters, per-arena figures and a per-chunk occupancy map to
 * @p out. In the text map each character is one page: '.' free, '#' a page
 * run in use, 's' a subpage run (its digit 0-9 when its elements are partly
 * used: tenths in use).
 *
 * @param p the pool (not NULL).
 * @param out the stream to write to.
 * @param format NBUF_FORMAT_TEXT or NBUF_FORMAT_JSON.
 * @return 0; -EINVAL for a NULL pool or stream or an unknown format; -EIO if
 *         writing to @p out failed.
 */
int nbuf_pool_print_stats(struct nbuf_pool *p, FILE *out, int format);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_STATS_H */
