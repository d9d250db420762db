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

/* ---- size_class.c ---- */
extern uint8_t nbuf_sz_lookup_[NBUF_LOOKUP_MAX / NBUF_QUANTUM + 1];
size_t nbuf_sz_usize_(unsigned szind);
unsigned nbuf_sz_index_slow_(size_t size);
unsigned nbuf_run_bin_floor_(uint32_t npages);
unsigned nbuf_run_bin_ceil_(uint32_t npages);
uint32_t nbuf_sz_run_pages_(size_t usize, size_t page_size);

/* Size class of @size (callers bound it by the chunk size first). */
static inline unsigned
nbuf_sz_index_(size_t size)
{
    if (likely(size <= NBUF_LOOKUP_MAX))
        return nbuf_sz_lookup_[(size + NBUF_QUANTUM - 1) >> NBUF_LG_QUANTUM];
    return nbuf_sz_index_slow_(size);
}

/* ---- backing.c ---- */
int nbuf_backing_init_(struct nbuf_backing *bk, const struct nbuf_pool_config *cfg);
void *nbuf_backing_alloc_(struct nbuf_backing *bk, size_t size, size_t align);
void nbuf_backing_free_(struct nbuf_backing *bk, void *ptr, size_t size, size_t align);
void nbuf_backing_purge_(struct nbuf_backing *bk);
bool nbuf_backing_has_jemalloc_(void);
/* Test hook: the Nth backing allocation from now fails (0 = none). */
void nbuf_backing_fail_after_(struct nbuf_pool *p, long n);

/* ---- chunk.c ---- */
struct nbuf_chunk *nbuf_chunk_new_(struct nbuf_arena *a);
void nbuf_chunk_free_(struct nbuf_chunk *c);
/* Head page of a run of npages, or NBUF_RUN_NONE. */
uint32_t nbuf_chunk_alloc_run_(struct nbuf_chunk *c, uint32_t npages, enum nbuf_run_state st);
void nbuf_chunk_free_run_(struct nbuf_chunk *c, uint32_t page);
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

/* ---- tcache.c ---- */
extern __thread struct nbuf_tls nbuf_tls_;
struct nbuf_tcache *nbuf_tcache_get_slow_(struct nbuf_pool *p);
struct nbuf *nbuf_tcache_alloc_slow_(struct nbuf_pool *p, unsigned szind);
void nbuf_tcache_release_slow_(struct nbuf *b);
void nbuf_tcache_flush_(struct nbuf_tcache *tc);
void nbuf_tcache_gc_(struct nbuf_tcache *tc);
void nbuf_tcache_destroy_(struct nbuf_tcache *tc);
void nbuf_tcache_destructor_(void *arg);
struct nbuf *nbuf_header_alloc_(struct nbuf_pool *p);
void nbuf_header_free_(struct nbuf *h);
bool nbuf_tcache_check_(const struct nbuf_tcache *tc);

/* ---- pool.c ---- */
int nbuf_pool_trim_all_(struct nbuf_pool *p);
struct nbuf_arena *nbuf_pool_bind_arena_(struct nbuf_pool *p);
bool nbuf_pool_check_(struct nbuf_pool *p);
/* Debit/credit backing bytes against the limit; false = over the limit. */
bool nbuf_pool_charge_(struct nbuf_pool *p, size_t bytes);
void nbuf_pool_uncharge_(struct nbuf_pool *p, size_t bytes);
unsigned nbuf_pool_env_flags_(void);

/* ---- buf.c ---- */
bool nbuf_buf_check_(const struct nbuf *b);
void nbuf_buf_free_(struct nbuf *b);

/* ---- stats.c ---- */
void nbuf_tstats_add_(struct nbuf_tstats *dst, const struct nbuf_tstats *src);
/* Add @d to the calling thread's counters for @p (or the pool's, locked). */
void nbuf_stats_account_(struct nbuf_pool *p, const struct nbuf_tstats *d, uint32_t tid);

/* ---- debug.c ---- */
void nbuf_report_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern void (*nbuf_report_hook_)(const char *msg);

#endif /* NBUF_INTERNAL_H */
