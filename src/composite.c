/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: the container, a ring of components (buffer slices, file
 * regions) read as one buffer: file-region references, the ring (reserve,
 * push, consume, shrink), new/free, sizes, the check. Calls buffers, pools.
 *
 * Adding is in composite_add.c, reading in composite_read.c, framing in
 * composite_frame.c; the IO layer uses the container through composite_io.h.
 */
#include <fcntl.h>
#include <unistd.h>

#include "composite_io.h"

/* ---- file regions ---- */

static void
cfile_put(struct nbuf_cfile_ *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        close(f->fd);
        free(f);
    }
}

void
nbuf_comp_release_(struct nbuf_comp_ *cp)
{
    if (cp->is_file) {
        cfile_put(cp->file);
        return;
    }
    for (uint32_t i = 0; i < cp->nref; i++)
        nbuf_release(cp->buf);
}

int
nbuf_cfile_new_(int fd, struct nbuf_cfile_ **out)
{
    struct nbuf_cfile_ *f = malloc(sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (f->fd < 0) {
        int err = -errno;
        free(f);
        return err;
    }
    atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
    *out = f;
    return 0;
}

/* ---- the ring ---- */

static void
ring_resize(struct nbuf_composite *c, struct nbuf_comp_ *nc, size_t ncap)
{
    for (size_t i = 0; i < c->count; i++)
        nc[i] = *nbuf_comp_at_(c, i);
    if (c->comps != c->inl)
        free(c->comps);
    c->comps = nc;
    c->mask = ncap - 1;
    c->head = 0;
    c->hint = 0;
    nbuf_composite_uncursor_(c);
}

int
nbuf_composite_reserve_(struct nbuf_composite *c, size_t more)
{
    size_t need, cap = c->mask + 1, bytes;
    if (nbuf_add_overflow_(c->count, more, &need))
        return -ENOMEM;
    if (likely(need <= cap))
        return 0;
    while (cap < need)
        if (nbuf_mul_overflow_(cap, 2, &cap))
            return -ENOMEM;
    if (nbuf_mul_overflow_(cap, sizeof(struct nbuf_comp_), &bytes))
        return -ENOMEM;
    struct nbuf_comp_ *nc = malloc(bytes);
    if (!nc)
        return -ENOMEM;
    ring_resize(c, nc, cap);
    return 0;
}

void
nbuf_composite_push_front_(struct nbuf_composite *c, const struct nbuf_comp_ *cp)
{
    nbuf_assert(c->count <= c->mask);
    c->head = (c->head - 1) & c->mask;
    struct nbuf_comp_ *d = &c->comps[c->head];
    *d = *cp;
    c->base -= cp->len; /* modular: positions before the old front */
    d->start = c->base;
    c->count++;
    c->total += cp->len;
}

/* The composite emptied: a big tail (copies made it grow) goes back to the
 * pool rather than stay pinned by an idle composite; a small one stays for
 * the next headers. */
static void
tail_drained(struct nbuf_composite *c)
{
    struct nbuf *t = c->tail;
    if (t && t->capacity > NBUF_TAIL_KEEP && nbuf_composite_tail_idle_(t)) {
        nbuf_release(t);
        c->tail = NULL;
    }
}

void
nbuf_composite_consume_(struct nbuf_composite *c, size_t n)
{
    nbuf_assert(n <= c->total);
    /* Locals, written back once: no store-to-load chain per component. */
    struct nbuf_comp_ *comps = c->comps;
    size_t head = c->head, count = c->count, mask = c->mask;
    c->base += n;
    c->total -= n;
    while (n) {
        struct nbuf_comp_ *cp = &comps[head];
        if (n < cp->len) {
            cp->off += n;
            cp->len -= n;
            cp->start += n;
            break;
        }
        n -= cp->len;
        if (cp->is_file)
            cfile_put(cp->file);
        else
            for (uint32_t k = cp->nref; k; k--)
                nbuf_release(cp->buf);
        head = (head + 1) & mask;
        count--;
    }
    c->head = head;
    c->count = count;
    if (!count) {
        nbuf_composite_uncursor_(c);
        tail_drained(c);
    }
    nbuf_assert_expensive(nbuf_composite_check_(c));
}

void
nbuf_composite_replace_front_(struct nbuf_composite *c, struct nbuf *b)
{
    nbuf_assert(c->count && b->writer <= nbuf_comp_at_(c, 0)->len);
    /* Releases the region if those bytes were all of it. */
    nbuf_composite_consume_(c, b->writer);
    struct nbuf_comp_ mc = {.len = b->writer, .off = 0, .buf = b, .nref = 1};
    nbuf_composite_push_front_(c, &mc);
}

NBUF_EXPORT int
nbuf_composite_discard_read(struct nbuf_composite *c)
{
    if (unlikely(!c))
        return -EINVAL;
    /* Read components are released as they empty; what is left to give back
     * is ring capacity a burst grew and nothing uses now. */
    size_t cap = c->mask + 1;
    if (c->comps != c->inl && c->count * 4 < cap) {
        size_t ncap = NBUF_COMP_INLINE;
        if (c->count <= NBUF_COMP_INLINE) {
            struct nbuf_comp_ tmp[NBUF_COMP_INLINE];
            for (size_t i = 0; i < c->count; i++)
                tmp[i] = *nbuf_comp_at_(c, i);
            free(c->comps);
            memcpy(c->inl, tmp, sizeof(tmp));
            c->comps = c->inl;
            c->mask = ncap - 1;
            c->head = 0;
            c->hint = 0;
            nbuf_composite_uncursor_(c);
            return 0;
        }
        while (ncap < c->count * 2)
            ncap *= 2;
        struct nbuf_comp_ *nc = malloc(ncap * sizeof(*nc));
        if (nc) /* else keep the big ring: nothing is lost */
            ring_resize(c, nc, ncap);
    }
    return 0;
}

/* ---- life cycle ---- */

NBUF_EXPORT struct nbuf_composite *
nbuf_composite_new(struct nbuf_pool *p)
{
    if (!(p = nbuf_pool_resolve_(p)))
        return NULL;
    struct nbuf_composite *c = malloc(sizeof(*c));
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    memset(c, 0, offsetof(struct nbuf_composite, inl));
    c->comps = c->inl;
    c->mask = NBUF_COMP_INLINE - 1;
    c->pool = p;
    c->tail_size = NBUF_TAIL_MIN;
    c->rd.idx = NBUF_READ_INITIAL;
    return c;
}

NBUF_EXPORT void
nbuf_composite_free(struct nbuf_composite *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        nbuf_comp_release_(nbuf_comp_at_(c, i));
    nbuf_release(c->tail);
    if (c->comps != c->inl)
        free(c->comps);
    free(c);
}

/* ---- sizes ---- */

NBUF_EXPORT size_t
nbuf_composite_readable(const struct nbuf_composite *c)
{
    return c ? c->total : 0;
}

NBUF_EXPORT size_t
nbuf_composite_count(const struct nbuf_composite *c)
{
    return c ? c->count : 0;
}

/* ---- checks ---- */

bool
nbuf_composite_check_(const struct nbuf_composite *c)
{
    size_t cap = c->mask + 1;
    if (cap & c->mask || c->count > cap || c->head > c->mask)
        return false;
    if (c->comps == c->inl && cap != NBUF_COMP_INLINE)
        return false;
    size_t pos = c->base, sum = 0;
    for (size_t i = 0; i < c->count; i++) {
        const struct nbuf_comp_ *cp = nbuf_comp_at_(c, i);
        if (!cp->len || cp->start != pos)
            return false;
        pos += cp->len;
        sum += cp->len;
        if (cp->is_file) {
            if (cp->nref != 1 || atomic_load(&cp->file->refs) == 0)
                return false;
            continue;
        }
        if (!cp->buf || nbuf_refcnt(cp->buf) == 0 || cp->off > cp->buf->capacity ||
            cp->len > cp->buf->capacity - cp->off)
            return false;
        if (cp->nref == 0) {
            if (i + 1 == c->count)
                return false;
            const struct nbuf_comp_ *nx = nbuf_comp_at_(c, i + 1);
            if (nx->is_file || nx->buf != cp->buf)
                return false;
        }
    }
    if (sum != c->total)
        return false;
    if (c->tail && nbuf_refcnt(c->tail) == 0)
        return false;
    if (c->run || c->cur || c->cur_end) {
        const struct nbuf *t = c->tail;
        const struct nbuf_comp_ *run = c->run;
        if (!c->count || run != nbuf_comp_at_(c, c->count - 1) || !t || run->is_file ||
            run->buf != t || run->off + run->len != t->writer ||
            c->cur != (uintptr_t)(t->mem + t->writer) ||
            c->cur_end != (uintptr_t)(t->mem + t->capacity))
            return false;
    }
    return c->rd.idx < NBUF_READ_SIZES;
}
