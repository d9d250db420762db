/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: framing (read_slice, split, flatten, the readable bytes
 * as iovecs). Calls composite.c, composite_read.c and buffers (views).
 *
 * read_slice is a view when the bytes lie in one component, else a pooled
 * copy; split moves whole components with their references and cuts the
 * boundary one.
 */
#include "composite_int.h"

/* A pooled copy of readable bytes [off, off + n). */
static struct nbuf *
copy_new(const struct nbuf_composite *c, size_t off, size_t n)
{
    struct nbuf *b = nbuf_alloc(c->pool, n);
    if (!b)
        return NULL;
    int err = nbuf_composite_copy_out_(c, off, b->mem, n);
    if (err) {
        nbuf_release(b);
        errno = -err;
        return NULL;
    }
    b->writer = n;
    return b;
}

NBUF_EXPORT struct nbuf *
nbuf_composite_read_slice(struct nbuf_composite *c, size_t n)
{
    if (unlikely(!c)) {
        errno = EINVAL;
        return NULL;
    }
    if (n > c->total) {
        errno = ENODATA;
        return NULL;
    }
    struct nbuf *b = NULL;
    if (n && c->count) {
        const struct nbuf_comp_ *cp = &c->comps[c->head];
        if (!cp->is_file && cp->len >= n) {
            /* A view: the bytes stay where they are. */
            b = nbuf_slice(cp->buf, cp->off, n);
            if (!b && errno != EINVAL)
                return NULL;
            /* EINVAL: the owner moved its writer index back; copy. */
        }
    }
    if (!b && !(b = copy_new(c, 0, n)))
        return NULL;
    nbuf_composite_consume_(c, n);
    return b;
}

NBUF_EXPORT int
nbuf_composite_split(struct nbuf_composite *c, size_t n, struct nbuf_composite *out)
{
    if (unlikely(!c || !out || c == out))
        return -EINVAL;
    if (n > c->total)
        return -ENODATA;
    int err = nbuf_composite_room_for_(out, n);
    if (err || !n)
        return err;
    /* Component i holds byte n - 1; it moves whole or is cut. */
    size_t slot = nbuf_composite_find_slot_(c, n - 1);
    size_t i = (slot - c->head) & c->mask;
    struct nbuf_comp_ *cut = &c->comps[slot];
    size_t cut_len = n - (cut->start - c->base); /* bytes of it that move */
    bool whole = cut_len == cut->len;
    if ((err = nbuf_composite_reserve_(out, i + 1)))
        return err;
    /* The only reference to take is the last moved part's own, taken first
     * so that nothing has moved when it fails. */
    bool need_ref = !whole || (!cut->is_file && cut->nref == 0);
    if (need_ref) {
        if (cut->is_file)
            atomic_fetch_add_explicit(&cut->file->refs, 1, memory_order_relaxed);
        else if (!nbuf_retain(cut->buf))
            return -errno;
    }
    for (size_t k = 0; k < i; k++) {
        nbuf_composite_push_back_(out, &c->comps[c->head]);
        nbuf_composite_pop_front_(c);
    }
    struct nbuf_comp_ part = *cut;
    part.len = cut_len;
    if (need_ref)
        part.nref = 1;
    nbuf_composite_push_back_(out, &part);
    if (whole) {
        /* Its references moved with part, or (nref 0) stay with its run. */
        nbuf_composite_pop_front_(c);
    } else {
        cut->off += cut_len;
        cut->len -= cut_len;
        cut->start += cut_len;
        c->base += cut_len;
        c->total -= cut_len;
    }
    nbuf_assert_expensive(nbuf_composite_check_(c) && nbuf_composite_check_(out));
    return 0;
}

NBUF_EXPORT struct nbuf *
nbuf_composite_flatten(const struct nbuf_composite *c)
{
    if (unlikely(!c)) {
        errno = EINVAL;
        return NULL;
    }
    if (c->count == 1 && !c->comps[c->head].is_file) {
        const struct nbuf_comp_ *cp = &c->comps[c->head];
        struct nbuf *b = nbuf_slice(cp->buf, cp->off, cp->len);
        if (b || errno != EINVAL)
            return b;
    }
    return copy_new(c, 0, c->total);
}

NBUF_EXPORT int
nbuf_composite_iov(const struct nbuf_composite *c, struct iovec *iov, int max, size_t max_bytes)
{
    if (unlikely(!c || max < 0 || (!iov && max)))
        return -EINVAL;
    int n = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < c->count && bytes < max_bytes; i++) {
        const struct nbuf_comp_ *cp = nbuf_comp_at_(c, i);
        if (cp->is_file)
            break;
        uint8_t *p = (uint8_t *)nbuf_comp_ptr_(cp);
        size_t k = cp->len < max_bytes - bytes ? cp->len : max_bytes - bytes;
        if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == (uintptr_t)p) {
            iov[n - 1].iov_len += k;
        } else {
            if (n == max)
                break;
            iov[n].iov_base = p;
            iov[n].iov_len = k;
            n++;
        }
        bytes += k;
    }
    return n;
}
