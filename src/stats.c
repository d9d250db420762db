/* SPDX-License-Identifier: MIT */
/*
 * Statistics: summing per-thread counters (relaxed reads of fields their
 * owners write), the retired counters of exited threads and the arenas'
 * figures into a snapshot, and printing it as text or JSON with a per-chunk
 * occupancy map.
 * Layer: pool (an observer); calls the arenas, the thread caches' counters
 * and huge.c.
 */
#include "internal.h"

void
nbuf_stats_account_(struct nbuf_pool *p, const struct nbuf_tstats *d, uint32_t tid)
{
    struct nbuf_tcache *tc = nbuf_tls_.pool_id == p->id ? nbuf_tls_.tc : nbuf_tcache_get_slow_(p);
    /* A release on another thread than the allocating one (tid 0: none). */
    uint64_t remote = d->nrelease && tid && (!tc || tc->id != tid);
    if (tc) {
#define ADD(f) NBUF_STAT_ADD(tc->st.f, d->f);
        TSTATS_FIELDS(ADD)
#undef ADD
        NBUF_STAT_ADD(tc->st.remote_releases, remote);
        return;
    }
    pthread_mutex_lock(&p->lock);
    nbuf_tstats_add_(&p->retired, d);
    p->retired.remote_releases += remote;
    pthread_mutex_unlock(&p->lock);
}

static uint64_t
cached_bytes_of(const struct nbuf_pool *p, const struct nbuf_tcache *tc)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < p->ncached; i++)
        sum += (uint64_t)nbuf_tcache_bin_count_(&tc->bins[i]) * nbuf_sz_usize_(i);
    sum += NBUF_LOAD_RELAXED(tc->large.bytes);
    sum += NBUF_LOAD_RELAXED(tc->stage.bytes);
    return sum;
}

/* What parking can cost at most: one thread's bins and large cache, and the
 * stashes of every arena. */
static void
bounds(const struct nbuf_pool *p, struct nbuf_pool_stats *out)
{
    for (unsigned i = 0; i < p->ncached; i++) {
        out->cache_bound_bytes += (uint64_t)p->cache_cap[i] * nbuf_sz_usize_(i);
        out->stash_bound_bytes += (uint64_t)p->stash_cap[i] * nbuf_sz_usize_(i);
    }
    if (out->cache_bound_bytes > p->cache_budget)
        out->cache_bound_bytes = p->cache_budget;
    if (p->large_max)
        out->cache_bound_bytes += p->cfg.cache_large_bytes;
    out->stash_bound_bytes *= p->narenas;
}

NBUF_EXPORT int
nbuf_pool_stats_sized(struct nbuf_pool *p, struct nbuf_pool_stats *out, size_t size)
{
    if (!p || !out || size < offsetof(struct nbuf_pool_stats, chunks))
        return -EINVAL;
    struct nbuf_pool_stats full;
    int err = nbuf_pool_stats(p, &full);
    if (err)
        return err;
    if (size > sizeof(full))
        size = sizeof(full);
    full.size = (uint32_t)size;
    memcpy(out, &full, size);
    return 0;
}

NBUF_EXPORT int
nbuf_pool_stats(struct nbuf_pool *p, struct nbuf_pool_stats *out)
{
    if (!p || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    out->version = NBUF_STATS_VERSION;
    out->size = sizeof(*out);
    struct nbuf_tstats t = {0};
    pthread_mutex_lock(&p->lock);
    /* Every thread's release counters first, then the allocation ones: a
     * release counted has its allocation counted too, even when the
     * releasing thread's cache is read before the allocating one's and the
     * reader is preempted in between; otherwise live_buffers and the byte
     * gauges could wrap below zero while other threads work. */
#define ADD(f) t.f += NBUF_LOAD_RELAXED(st->f);
    for (struct nbuf_tcache *tc = p->tcaches;; tc = tc->next) {
        const struct nbuf_tstats *st = tc ? &tc->st : &p->retired;
        TSTATS_RELEASE_FIELDS(ADD)
        if (!tc)
            break;
        nbuf_tcache_release_counts_(tc, &t);
    }
    atomic_thread_fence(memory_order_acquire);
    for (struct nbuf_tcache *tc = p->tcaches;; tc = tc->next) {
        const struct nbuf_tstats *st = tc ? &tc->st : &p->retired;
        TSTATS_ALLOC_FIELDS(ADD)
        if (!tc)
            break;
        nbuf_tcache_alloc_counts_(tc, &t);
        out->cached_bytes += cached_bytes_of(p, tc);
        out->threads++;
    }
#undef ADD
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->narenas; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        nbuf_arena_lock_(a);
        out->cached_bytes += a->stash_bytes;
        out->empty_chunks += a->nempty;
        uint64_t dirty = 0, resident = 0;
        for (const struct nbuf_chunk *c = a->chunks; c; c = c->next) {
            dirty += c->ndirty;
            resident += c->npages - c->free_pages + c->ndirty;
        }
        out->dirty_bytes += dirty << p->lg_page;
        out->resident_bytes += resident << p->lg_page;
        out->purged_bytes += a->purged_pages << p->lg_page;
        out->purges += a->npurges;
        nbuf_arena_unlock_(a);
    }
    out->cached_bytes += nbuf_huge_cached_bytes_(p);
    bounds(p, out);
    out->chunks = atomic_load(&p->nchunks);
    out->backing_bytes = atomic_load(&p->backing_bytes);
    /* Huge buffers, live and cached, count as resident. */
    uint64_t chunk_bytes = out->chunks * p->cfg.chunk_size;
    if (out->backing_bytes > chunk_bytes)
        out->resident_bytes += out->backing_bytes - chunk_bytes;
    out->allocations = t.nalloc;
    out->releases = t.nrelease;
    out->live_buffers = t.nalloc - t.nrelease;
    out->used_bytes = t.bytes_alloc - t.bytes_release;
    out->requested_bytes = t.req_alloc - t.req_release;
    out->cache_misses = t.cache_misses;
    out->cache_hits =
        t.nalloc - t.huge_alloc >= t.cache_misses ? t.nalloc - t.huge_alloc - t.cache_misses : 0;
    out->remote_releases = t.remote_releases;
    out->limit_failures = atomic_load(&p->limit_failures);
    out->huge_allocations = t.huge_alloc;
    out->slow_allocations = t.slow_alloc;
    out->arenas = p->narenas;
    out->views = t.views_new - t.views_free;
    return 0;
}

/* One character per page: '.' free, '#' run, 's' or '0'-'9' subpage. */
static void
chunk_map(FILE *out, const struct nbuf_chunk *c, char *line, size_t width)
{
    size_t col = 0;
    for (uint32_t page = 0; page < c->npages;) {
        const struct nbuf_page_info *pi = &c->pages[page];
        char ch = '.';
        if (pi->state == NBUF_RUN_USED)
            ch = '#';
        else if (pi->state == NBUF_RUN_SUBPAGE) {
            const struct nbuf_subpage *s = c->subpages[page];
            uint32_t used = s->nelems - s->nfree;
            ch = used == s->nelems ? 's' : (char)('0' + (used * 10) / s->nelems);
        }
        for (uint32_t k = 0; k < pi->npages; k++) {
            line[col++] = ch;
            if (col == width) {
                fprintf(out, "    %.*s\n", (int)col, line);
                col = 0;
            }
        }
        page += pi->npages;
    }
    if (col)
        fprintf(out, "    %.*s\n", (int)col, line);
}

#define STATS_FIELDS(X)                                                                            \
    X(chunks)                                                                                      \
    X(backing_bytes)                                                                               \
    X(used_bytes)                                                                                  \
    X(requested_bytes)                                                                             \
    X(cached_bytes)                                                                                \
    X(live_buffers)                                                                                \
    X(allocations)                                                                                 \
    X(releases)                                                                                    \
    X(cache_hits)                                                                                  \
    X(cache_misses)                                                                                \
    X(remote_releases)                                                                             \
    X(limit_failures)                                                                              \
    X(huge_allocations)                                                                            \
    X(arenas)                                                                                      \
    X(threads)                                                                                     \
    X(empty_chunks)                                                                                \
    X(views)                                                                                       \
    X(slow_allocations)                                                                            \
    X(resident_bytes)                                                                              \
    X(dirty_bytes)                                                                                 \
    X(purged_bytes)                                                                                \
    X(purges)                                                                                      \
    X(cache_bound_bytes)                                                                           \
    X(stash_bound_bytes)

static void
print_text(struct nbuf_pool *p, FILE *out, const struct nbuf_pool_stats *st)
{
    fprintf(out, "nbuf pool %p: page %zu B, chunk %zu B, %u arenas\n", (void *)p, p->cfg.page_size,
            p->cfg.chunk_size, p->narenas);
#define PRINT(f) fprintf(out, "  %-18s %llu\n", #f, (unsigned long long)st->f);
    STATS_FIELDS(PRINT)
#undef PRINT
    char line[64];
    for (unsigned i = 0; i < p->narenas; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        nbuf_arena_lock_(a);
        if (a->nchunks)
            fprintf(out,
                    "  arena %u: %u threads, %u chunks (%u empty), %llu stashed bytes, "
                    "%llu purged bytes in %llu purges\n",
                    i, atomic_load(&a->nthreads), a->nchunks, a->nempty,
                    (unsigned long long)a->stash_bytes,
                    (unsigned long long)(a->purged_pages << p->lg_page),
                    (unsigned long long)a->npurges);
        unsigned k = 0;
        for (const struct nbuf_chunk *c = a->chunks; c; c = c->next, k++) {
            fprintf(out, "   chunk %u at %p: %u/%u pages free, %u dirty\n", k, (void *)c->base,
                    c->free_pages, c->npages, c->ndirty);
            chunk_map(out, c, line, sizeof(line));
        }
        nbuf_arena_unlock_(a);
    }
}

static void
print_json(struct nbuf_pool *p, FILE *out, const struct nbuf_pool_stats *st)
{
    fprintf(out, "{\"page_size\":%zu,\"chunk_size\":%zu", p->cfg.page_size, p->cfg.chunk_size);
#define PRINT(f) fprintf(out, ",\"%s\":%llu", #f, (unsigned long long)st->f);
    STATS_FIELDS(PRINT)
#undef PRINT
    fputs(",\"arena_list\":[", out);
    for (unsigned i = 0; i < p->narenas; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        nbuf_arena_lock_(a);
        fprintf(out,
                "%s{\"index\":%u,\"threads\":%u,\"stash_bytes\":%llu,\"purged_bytes\":%llu,"
                "\"purges\":%llu,\"chunks\":[",
                i ? "," : "", i, atomic_load(&a->nthreads), (unsigned long long)a->stash_bytes,
                (unsigned long long)(a->purged_pages << p->lg_page),
                (unsigned long long)a->npurges);
        for (const struct nbuf_chunk *c = a->chunks; c; c = c->next) {
            fprintf(out, "%s{\"free_pages\":%u,\"dirty_pages\":%u,\"pages\":%u,\"map\":\"",
                    c == a->chunks ? "" : ",", c->free_pages, c->ndirty, c->npages);
            for (uint32_t page = 0; page < c->npages;) {
                const struct nbuf_page_info *pi = &c->pages[page];
                char ch = pi->state == NBUF_RUN_FREE ? '.' : pi->state == NBUF_RUN_USED ? '#' : 's';
                for (uint32_t k = 0; k < pi->npages; k++)
                    fputc(ch, out);
                page += pi->npages;
            }
            fputs("\"}", out);
        }
        fputs("]}", out);
        nbuf_arena_unlock_(a);
    }
    fputs("]}\n", out);
}

NBUF_EXPORT int
nbuf_pool_print_stats(struct nbuf_pool *p, FILE *out, int format)
{
    if (!p || !out || (format != NBUF_FORMAT_TEXT && format != NBUF_FORMAT_JSON))
        return -EINVAL;
    struct nbuf_pool_stats st;
    nbuf_pool_stats(p, &st);
    if (format == NBUF_FORMAT_TEXT)
        print_text(p, out, &st);
    else
        print_json(p, out, &st);
    return ferror(out) || fflush(out) ? -EIO : 0;
}
