/* SPDX-License-Identifier: MIT */
/*
 * Subpages: a run of 1..7 pages carved into equal elements of one small size
 * class, with a bitmap of elements in use. The run length is the smallest
 * that holds a whole number of elements (size_class.c), so no tail is wasted.
 * A search starts at a hint word, so a mostly full subpage costs one ctz.
 * All calls need the arena lock.
 * Layer: chunk; calls size_class.c only.
 */
#include "internal.h"

struct nbuf_subpage *
nbuf_subpage_new_(struct nbuf_chunk *c, uint32_t page, unsigned szind, uint32_t elem_size,
                  uint32_t run_pages, uint32_t nelems)
{
    size_t words = (nelems + 63) / 64;
    struct nbuf_subpage *s = calloc(1, sizeof(*s) + words * sizeof(uint64_t));
    if (!s)
        return NULL;
    s->chunk = c;
    s->page = page;
    s->base = c->base + ((size_t)page << c->arena->pool->lg_page);
    s->run_pages = run_pages;
    s->elem_size = elem_size;
    s->nelems = nelems;
    s->nfree = nelems;
    s->szind = (uint8_t)szind;
    c->subpages[page] = s;
    return s;
}

void
nbuf_subpage_free_(struct nbuf_subpage *s)
{
    nbuf_assert(s->nfree == s->nelems);
    free(s);
}

uint32_t
nbuf_subpage_alloc_(struct nbuf_subpage *s)
{
    if (s->nfree == 0)
        return UINT32_MAX;
    uint32_t words = (s->nelems + 63) / 64;
    for (uint32_t i = 0; i < words; i++) {
        uint32_t w = (s->hint + i) % words;
        uint64_t bits = s->bitmap[w];
        /* Bits past nelems count as used so they are never handed out. */
        uint32_t valid = s->nelems - w * 64;
        if (valid < 64)
            bits |= ~(uint64_t)0 << valid;
        if (bits == ~(uint64_t)0)
            continue;
        uint32_t bit = (uint32_t)__builtin_ctzll(~bits);
        s->bitmap[w] |= (uint64_t)1 << bit;
        s->nfree--;
        s->hint = w;
        /* The element belongs to the caller now (see internal.h). */
        NBUF_UNPOISON(s->base + (size_t)(w * 64 + bit) * s->elem_size, s->elem_size);
        return w * 64 + bit;
    }
    nbuf_assert(!"subpage nfree > 0 but bitmap full");
    return UINT32_MAX;
}

void
nbuf_subpage_release_(struct nbuf_subpage *s, uint32_t idx)
{
    nbuf_assert(idx < s->nelems);
    uint64_t mask = (uint64_t)1 << (idx % 64);
    nbuf_assert(s->bitmap[idx / 64] & mask);
    s->bitmap[idx / 64] &= ~mask;
    s->nfree++;
    s->hint = idx / 64;
    NBUF_POISON(s->base + (size_t)idx * s->elem_size, s->elem_size);
}

bool
nbuf_subpage_check_(const struct nbuf_subpage *s)
{
    uint32_t words = (s->nelems + 63) / 64, used = 0;
    for (uint32_t w = 0; w < words; w++) {
        used += (uint32_t)__builtin_popcountll(s->bitmap[w]);
        uint32_t valid = s->nelems - w * 64;
        if (valid < 64 && (s->bitmap[w] & (~(uint64_t)0 << valid)))
            return false;
    }
    if (s->nfree != s->nelems - used)
        return false;
    if ((uint64_t)s->elem_size * s->nelems >
        ((uint64_t)s->run_pages << s->chunk->arena->pool->lg_page))
        return false;
    return s->chunk->subpages[s->page] == s && s->chunk->pages[s->page].state == NBUF_RUN_SUBPAGE;
}
