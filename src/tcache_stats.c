/* SPDX-License-Identifier: MIT */
/*
 * A thread cache's counters: adding one set of counters to another, and a
 * cache's own (its slow-path counters plus its bins' fast-path counts), for
 * the cache's exit and for stats.c's snapshot above. Calls nothing above
 * the thread-cache layer.
 */
#include "internal.h"

void
nbuf_tstats_add_(struct nbuf_tstats *dst, const struct nbuf_tstats *src)
{
#define ADD(f) dst->f += NBUF_LOAD_RELAXED(src->f);
    TSTATS_FIELDS(ADD)
#undef ADD
}

/* The bins' fast-path counts, as slow-path style counters. */
void
nbuf_tcache_release_counts_(const struct nbuf_tcache *tc, struct nbuf_tstats *t)
{
    for (unsigned i = 0; i < tc->pool->ncached; i++) {
        uint64_t n = NBUF_LOAD_RELAXED(tc->bins[i].nrelease);
        t->nrelease += n;
        t->bytes_release += n * nbuf_sz_usize_(i);
    }
}

void
nbuf_tcache_alloc_counts_(const struct nbuf_tcache *tc, struct nbuf_tstats *t)
{
    for (unsigned i = 0; i < tc->pool->ncached; i++) {
        uint64_t n = NBUF_LOAD_RELAXED(tc->bins[i].nalloc);
        t->nalloc += n;
        t->bytes_alloc += n * nbuf_sz_usize_(i);
    }
}

void
nbuf_tcache_stats_(const struct nbuf_tcache *tc, struct nbuf_tstats *out)
{
    nbuf_tstats_add_(out, &tc->st);
    nbuf_tcache_release_counts_(tc, out);
    nbuf_tcache_alloc_counts_(tc, out);
}
