/* SPDX-License-Identifier: MIT */
/*
 * The large cache of a thread cache: up to four released buffers above the
 * largest binned class (up to the chunk size, cache_large_bytes in all), so
 * a loop of large buffers does not take an arena lock per buffer. Same
 * layer as tcache.c; calls the arena layer to give pairs back.
 */
#include "internal.h"

struct nbuf *
nbuf_tcache_large_get_(struct nbuf_tcache *tc, unsigned szind)
{
    struct nbuf_large_cache *lc = &tc->large;
    for (unsigned i = 0; i < NBUF_LARGE_SLOTS; i++) {
        struct nbuf *b = lc->slot[i];
        if (b && b->szind == szind) {
            lc->slot[i] = NULL;
            NBUF_STORE_RELAXED(lc->bytes, lc->bytes - b->capacity);
            lc->nget++;
            NBUF_COUNTER_ADD64(tc->st.nalloc, 1);
            NBUF_COUNTER_ADD64(tc->st.bytes_alloc, b->capacity);
            return b;
        }
    }
    return NULL;
}

bool
nbuf_tcache_large_put_(struct nbuf_tcache *tc, struct nbuf *b)
{
    struct nbuf_large_cache *lc = &tc->large;
    /* large_max <= cache_large_bytes, and 0 when the pool caches nothing. */
    if (b->capacity > tc->pool->large_max ||
        lc->bytes + b->capacity > tc->pool->cfg.cache_large_bytes)
        return false;
    for (unsigned i = 0; i < NBUF_LARGE_SLOTS; i++) {
        if (!lc->slot[i]) {
            b->tid = tc->id;
            b->key = NBUF_KEY_NONE; /* never on a bin: releases come here */
            lc->slot[i] = b;
            NBUF_STORE_RELAXED(lc->bytes, lc->bytes + b->capacity);
            NBUF_COUNTER_ADD64(tc->st.nrelease, 1);
            NBUF_COUNTER_ADD64(tc->st.bytes_release, b->capacity);
            return true;
        }
    }
    return false;
}

void
nbuf_tcache_large_flush_(struct nbuf_tcache *tc)
{
    struct nbuf_large_cache *lc = &tc->large;
    struct nbuf *items[NBUF_LARGE_SLOTS];
    unsigned n = 0;
    for (unsigned i = 0; i < NBUF_LARGE_SLOTS; i++) {
        if (lc->slot[i]) {
            items[n++] = lc->slot[i];
            lc->slot[i] = NULL;
        }
    }
    NBUF_STORE_RELAXED(lc->bytes, 0);
    if (n)
        nbuf_pairs_free_(tc->pool, items, n, false);
}
