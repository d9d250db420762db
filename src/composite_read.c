/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: reading across components (the offset lookup, copies
 * out, get/read/skip, typed reads, index_of, find). Calls composite.c and
 * sysops (pread of file regions).
 *
 * The lookup is O(log n) with a last-hit hint (find_slot). Framing uses the
 * lookup and the copy too, so both are internal functions (declared in
 * composite_int.h) rather than static. Nothing here adds components; read
 * and skip consume through nbuf_composite_consume_.
 */
#include <endian.h>
#include <limits.h>

#include "composite_int.h"
#include "sysops.h"

/* Scratch for searching file regions. */
#define FILE_SCRATCH 2048

/* pread exactly @n bytes at @off (EINTR retried). 0 or -errno; -EIO when the
 * file ends first, -ESPIPE for a pipe or socket (reading would consume it). */
static int
pread_full(int fd, void *dst, size_t n, uint64_t off)
{
    uint8_t *d = dst;
    while (n) {
        ssize_t r = nbuf_sys_.pread(fd, d, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        d += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/*
 * The slot of the component holding byte @off (< total) of the readable
 * bytes: the hint or its successor (sequential access), else a binary search
 * over the starts, which grow monotonically from base (mod 2^64).
 */
size_t
nbuf_composite_find_slot_(const struct nbuf_composite *c, size_t off)
{
    size_t h = c->hint;
    for (int k = 0; k < 2; k++, h = (h + 1) & c->mask) {
        if (((h - c->head) & c->mask) >= c->count)
            break;
        const struct nbuf_comp_ *cp = &c->comps[h];
        size_t rel = cp->start - c->base;
        if (off - rel < cp->len) /* rel <= off < rel + len, unsigned */
            return h;
    }
    size_t lo = 0, hi = c->count; /* the answer is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (nbuf_comp_at_(c, mid)->start - c->base <= off)
            lo = mid;
        else
            hi = mid;
    }
    h = (c->head + lo) & c->mask;
    ((struct nbuf_composite *)c)->hint = h; /* a cache, not state */
    return h;
}

/* Copy readable bytes [off, off + n) (in range) to @dst. 0, -EIO, -ESPIPE. */
int
nbuf_composite_copy_out_(const struct nbuf_composite *c, size_t off, void *dst, size_t n)
{
    if (!n)
        return 0;
    uint8_t *d = dst;
    size_t slot = nbuf_composite_find_slot_(c, off);
    const struct nbuf_comp_ *cp = &c->comps[slot];
    size_t in = off - (cp->start - c->base);
    for (;;) {
        size_t k = cp->len - in < n ? cp->len - in : n;
        if (cp->is_file) {
            int err = pread_full(cp->file->fd, d, k, cp->off + in);
            if (err)
                return err;
        } else {
            memcpy(d, nbuf_comp_ptr_(cp) + in, k);
        }
        d += k;
        n -= k;
        if (!n)
            return 0;
        slot = (slot + 1) & c->mask;
        cp = &c->comps[slot];
        in = 0;
    }
}

/* ---- reading ---- */

NBUF_EXPORT int
nbuf_composite_get(const struct nbuf_composite *c, size_t index, void *dst, size_t n)
{
    size_t end;
    if (unlikely(!c || (!dst && n)))
        return -EINVAL;
    if (nbuf_add_overflow_(index, n, &end) || end > c->total)
        return -ENODATA;
    return nbuf_composite_copy_out_(c, index, dst, n);
}

NBUF_EXPORT int
nbuf_composite_read(struct nbuf_composite *c, void *dst, size_t n)
{
    if (unlikely(!c || (!dst && n)))
        return -EINVAL;
    if (n > c->total)
        return -ENODATA;
    int err = nbuf_composite_copy_out_(c, 0, dst, n);
    if (!err)
        nbuf_composite_consume_(c, n);
    return err;
}

NBUF_EXPORT int
nbuf_composite_skip(struct nbuf_composite *c, size_t n)
{
    if (unlikely(!c))
        return -EINVAL;
    if (n > c->total)
        return -ENODATA;
    nbuf_composite_consume_(c, n);
    return 0;
}

/* Fixed-size read or get: the first component usually holds all of it. */
static inline int
get_fixed(const struct nbuf_composite *c, size_t index, void *dst, size_t n)
{
    if (unlikely(!c || !dst))
        return -EINVAL;
    if (index >= c->total || c->total - index < n)
        return -ENODATA;
    if (likely(c->count && index == 0)) {
        const struct nbuf_comp_ *cp = &c->comps[c->head];
        if (likely(!cp->is_file && cp->len >= n)) {
            memcpy(dst, nbuf_comp_ptr_(cp), n);
            return 0;
        }
    }
    return nbuf_composite_copy_out_(c, index, dst, n);
}

#define ID8(x) (x)
#define COMPOSITE_TYPED(name, type, conv)                                                          \
    NBUF_EXPORT int nbuf_composite_read_##name(struct nbuf_composite *c, type *out)                \
    {                                                                                              \
        type v;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = get_fixed(c, 0, &v, sizeof(v));                                                  \
        if (unlikely(err))                                                                         \
            return err;                                                                            \
        nbuf_composite_consume_(c, sizeof(v));                                                     \
        *out = conv(v);                                                                            \
        return 0;                                                                                  \
    }                                                                                              \
    NBUF_EXPORT int nbuf_composite_get_##name(const struct nbuf_composite *c, size_t index,        \
                                              type *out)                                           \
    {                                                                                              \
        type v;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = get_fixed(c, index, &v, sizeof(v));                                              \
        if (unlikely(err))                                                                         \
            return err;                                                                            \
        *out = conv(v);                                                                            \
        return 0;                                                                                  \
    }

COMPOSITE_TYPED(u8, uint8_t, ID8)
COMPOSITE_TYPED(u16, uint16_t, be16toh)
COMPOSITE_TYPED(u32, uint32_t, be32toh)
COMPOSITE_TYPED(u64, uint64_t, be64toh)
COMPOSITE_TYPED(u16_le, uint16_t, le16toh)
COMPOSITE_TYPED(u32_le, uint32_t, le32toh)
COMPOSITE_TYPED(u64_le, uint64_t, le64toh)

/*
 * Contiguous bytes at readable offset @off (< total): a pointer to the rest
 * of a memory component, or up to @cap bytes of a file region read into
 * @tmp. Returns how many, or -errno.
 */
static ssize_t
seg_at(const struct nbuf_composite *c, size_t off, const uint8_t **p, uint8_t *tmp, size_t cap)
{
    const struct nbuf_comp_ *cp = &c->comps[nbuf_composite_find_slot_(c, off)];
    size_t in = off - (cp->start - c->base);
    size_t k = cp->len - in;
    if (!cp->is_file) {
        *p = nbuf_comp_ptr_(cp) + in;
        return (ssize_t)(k > SSIZE_MAX ? SSIZE_MAX : k);
    }
    if (k > cap)
        k = cap;
    int err = pread_full(cp->file->fd, tmp, k, cp->off + in);
    if (err)
        return err;
    *p = tmp;
    return (ssize_t)k;
}

NBUF_EXPORT ssize_t
nbuf_composite_index_of(const struct nbuf_composite *c, size_t from, uint8_t byte)
{
    uint8_t tmp[FILE_SCRATCH];
    if (unlikely(!c || from > c->total))
        return -EINVAL;
    size_t end = c->total > SSIZE_MAX ? SSIZE_MAX : c->total;
    while (from < end) {
        const uint8_t *p = NULL;
        ssize_t k = seg_at(c, from, &p, tmp, sizeof(tmp));
        if (k < 0)
            return k;
        if ((size_t)k > end - from)
            k = (ssize_t)(end - from);
        const uint8_t *hit = memchr(p, byte, (size_t)k);
        if (hit)
            return (ssize_t)(from + (size_t)(hit - p));
        from += (size_t)k;
    }
    return -ENOENT;
}

/* Whether @needle[0, n) is at readable offset @off (in range). */
static int
equal_at(const struct nbuf_composite *c, size_t off, const uint8_t *needle, size_t n)
{
    uint8_t tmp[FILE_SCRATCH];
    while (n) {
        const uint8_t *p = NULL;
        ssize_t k = seg_at(c, off, &p, tmp, sizeof(tmp));
        if (k < 0)
            return (int)k;
        if ((size_t)k > n)
            k = (ssize_t)n;
        if (memcmp(p, needle, (size_t)k))
            return 0;
        off += (size_t)k;
        needle += k;
        n -= (size_t)k;
    }
    return 1;
}

NBUF_EXPORT ssize_t
nbuf_composite_find(const struct nbuf_composite *c, size_t from, const void *needle, size_t n)
{
    uint8_t tmp[FILE_SCRATCH];
    const uint8_t *nd = needle;
    if (unlikely(!c || (!needle && n) || from > c->total))
        return -EINVAL;
    size_t total = c->total > SSIZE_MAX ? SSIZE_MAX : c->total;
    if (!n)
        return (ssize_t)from;
    while (from < total && total - from >= n) {
        const uint8_t *p = NULL;
        ssize_t k = seg_at(c, from, &p, tmp, sizeof(tmp));
        if (k < 0)
            return k;
        size_t seg_end = from + (size_t)k;
        if ((size_t)k >= n) {
            /* Matches that lie inside this segment. */
            const uint8_t *hit = memmem(p, (size_t)k, nd, n);
            if (hit)
                return (ssize_t)(from + (size_t)(hit - p));
            from = seg_end - n + 1;
        }
        /* Matches that start here and cross into the next segments. */
        for (; from < seg_end && total - from >= n; from++) {
            if (p[from - (seg_end - (size_t)k)] != nd[0])
                continue;
            int eq = equal_at(c, from, nd, n);
            if (eq < 0)
                return eq;
            if (eq)
                return (ssize_t)from;
        }
        /* equal_at moved the hint; seg_at finds the next segment again. */
    }
    return -ENOENT;
}
