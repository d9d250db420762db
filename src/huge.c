/* SPDX-License-Identifier: MIT */
/*
 * Huge memory: buffers larger than a chunk, straight from the backing and
 * charged against memory_limit, with a small per-pool cache of freed extents
 * so that a loop of huge buffers reuses one mapping (already faulted in)
 * instead of paying the backing, and page faults, on every pair. A cached
 * extent stays charged: it is still taken from the backing. An extent
 * cached for decay_ms goes back to the backing (on the next huge release or
 * the purger's pass), as do all of them on trim and pool teardown. Calls
 * the backing, the pool's budget and the decay clock.
 */
#include "internal.h"

int
nbuf_huge_cache_init_(struct nbuf_pool *p)
{
    struct nbuf_huge_cache *hc = &p->huge_cache;
    memset(hc, 0, sizeof(*hc));
    /* Debug modes want every huge release to unmap; no caches, none here. */
    bool off = !p->cfg.cache_large_bytes || p->decay_ms == 0 ||
               (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED)) ||
               NBUF_RUNNING_ON_VALGRIND();
    hc->cap = off ? 0 : NBUF_HUGE_CACHE_BYTES;
    return pthread_mutex_init(&hc->lock, NULL) ? -ENOMEM : 0;
}

void
nbuf_huge_cache_fini_(struct nbuf_pool *p)
{
    nbuf_huge_trim_(p);
    pthread_mutex_destroy(&p->huge_cache.lock);
}

/* A cached extent of exactly @size bytes (page multiple), or NULL: the
 * capacity of a huge buffer stays its request rounded to 4 KiB. */
static void *
cache_take(struct nbuf_huge_cache *hc, size_t size)
{
    void *mem = NULL;
    pthread_mutex_lock(&hc->lock);
    for (unsigned i = 0; i < hc->n; i++) {
        if (hc->slot[i].size == size) {
            mem = hc->slot[i].mem;
            hc->bytes -= size;
            hc->slot[i] = hc->slot[--hc->n];
            break;
        }
    }
    pthread_mutex_unlock(&hc->lock);
    return mem;
}

void *
nbuf_huge_alloc_(struct nbuf_pool *p, size_t size)
{
    void *mem = cache_take(&p->huge_cache, size);
    if (mem) {
        NBUF_UNPOISON(mem, size);
        return mem;
    }
    if (!nbuf_budget_charge_(p, size)) {
        nbuf_budget_reclaim_(p);
        if (!nbuf_budget_charge_(p, size)) {
            atomic_fetch_add(&p->limit_failures, 1);
            nbuf_report_("nbuf: memory_limit %zu reached allocating a %zu-byte huge buffer\n",
                         p->cfg.memory_limit, size);
            errno = ENOMEM;
            return NULL;
        }
    }
    mem = nbuf_backing_alloc_(&p->backing, size, p->cfg.page_size);
    if (!mem) {
        nbuf_budget_uncharge_(p, size);
        errno = ENOMEM;
        return NULL;
    }
    return mem;
}

static void
extent_free(struct nbuf_pool *p, void *mem, size_t size)
{
    nbuf_backing_free_(&p->backing, mem, size, p->cfg.page_size);
    nbuf_budget_uncharge_(p, size);
}

/* Move the extents cached before @now - decay_ms into @out (hc->lock);
 * how many, and the next deadline of those left in *next. */
static unsigned
take_expired(struct nbuf_pool *p, uint64_t now, struct nbuf_huge_extent *out, uint64_t *next)
{
    struct nbuf_huge_cache *hc = &p->huge_cache;
    unsigned n = 0;
    *next = NBUF_NEVER;
    for (unsigned i = 0; i < hc->n;) {
        uint64_t at = nbuf_decay_deadline_(p, hc->slot[i].cached_at);
        if (at <= now) {
            out[n++] = hc->slot[i];
            hc->bytes -= hc->slot[i].size;
            hc->slot[i] = hc->slot[--hc->n];
        } else {
            *next = at < *next ? at : *next;
            i++;
        }
    }
    return n;
}

static void
free_extents(struct nbuf_pool *p, struct nbuf_huge_extent *ext, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        NBUF_UNPOISON(ext[i].mem, ext[i].size);
        extent_free(p, ext[i].mem, ext[i].size);
    }
}

void
nbuf_huge_free_(struct nbuf_pool *p, void *mem, size_t size)
{
    struct nbuf_huge_cache *hc = &p->huge_cache;
    struct nbuf_huge_extent old[NBUF_HUGE_SLOTS];
    unsigned nold = 0;
    uint64_t next = NBUF_NEVER;
    pthread_mutex_lock(&hc->lock);
    if (hc->cap) {
        uint64_t now = nbuf_decay_now_(p);
        nold = take_expired(p, now, old, &next);
        if (hc->n < NBUF_HUGE_SLOTS && hc->bytes + size <= hc->cap) {
            NBUF_POISON(mem, size);
            hc->slot[hc->n] = (struct nbuf_huge_extent){mem, size, now};
            hc->n++;
            hc->bytes += size;
            mem = NULL;
            uint64_t at = nbuf_decay_deadline_(p, now);
            next = at < next ? at : next;
            nbuf_decay_wake_(p, next);
        }
    }
    pthread_mutex_unlock(&hc->lock);
    free_extents(p, old, nold);
    if (mem)
        extent_free(p, mem, size);
}

uint64_t
nbuf_huge_decay_(struct nbuf_pool *p, uint64_t now)
{
    struct nbuf_huge_cache *hc = &p->huge_cache;
    struct nbuf_huge_extent old[NBUF_HUGE_SLOTS];
    uint64_t next;
    pthread_mutex_lock(&hc->lock);
    unsigned n = take_expired(p, now, old, &next);
    pthread_mutex_unlock(&hc->lock);
    free_extents(p, old, n);
    return next;
}

void
nbuf_huge_trim_(struct nbuf_pool *p)
{
    struct nbuf_huge_cache *hc = &p->huge_cache;
    pthread_mutex_lock(&hc->lock);
    struct nbuf_huge_extent out[NBUF_HUGE_SLOTS];
    unsigned n = hc->n;
    memcpy(out, hc->slot, n * sizeof(out[0]));
    hc->n = 0;
    hc->bytes = 0;
    pthread_mutex_unlock(&hc->lock);
    free_extents(p, out, n);
}

uint64_t
nbuf_huge_cached_bytes_(struct nbuf_pool *p)
{
    pthread_mutex_lock(&p->huge_cache.lock);
    uint64_t b = p->huge_cache.bytes;
    pthread_mutex_unlock(&p->huge_cache.lock);
    return b;
}
