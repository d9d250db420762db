/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: every way of adding (slices, buffers, copies, iovecs,
 * prepend, file regions, append). Calls composite.c, buffers and copy.h.
 *
 * Consecutive slices of one buffer share references and adjacent ones
 * merge; small pieces are copied into the pooled tail behind a cursor; each
 * entry point checks the total for overflow and is all-or-nothing.
 */
#include <sys/stat.h>

#include "composite_int.h"

/* Slices of at most this many bytes are copied when added (tests may change
 * it; 0 references every slice). */
size_t nbuf_composite_slice_copy_max_ = NBUF_COMPOSITE_COPY_MAX;

/* Append a buffer component (room reserved), field by field: building it on
 * the stack and copying costs store-forwarding stalls on the hot path. */
static inline void
push_back_buf(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len, uint32_t nref)
{
    struct nbuf_comp_ *d = &c->comps[(c->head + c->count) & c->mask];
    d->start = c->base + c->total;
    d->len = len;
    d->off = off;
    d->buf = b;
    d->nref = nref;
    d->is_file = 0;
    c->count++;
    c->total += len;
    nbuf_composite_uncursor_(c);
}

/*
 * Add [off, off + len) of @last's buffer @b behind it, without a reference
 * of its own: adjacent bytes grow @last (nginx merges such neighbours too),
 * others become a new component that the run's references move to. Room in
 * the ring reserved; the total cannot overflow.
 */
static inline void
extend_run(struct nbuf_composite *c, struct nbuf_comp_ *last, struct nbuf *b, size_t off,
           size_t len)
{
    if (last->off + last->len == off) {
        last->len += len;
        c->total += len;
        return;
    }
    uint32_t nref = last->nref;
    last->nref = 0;
    push_back_buf(c, b, off, len, nref);
}

static inline int
reserve1(struct nbuf_composite *c)
{
    return likely(c->count <= c->mask) ? 0 : nbuf_composite_reserve_(c, 1);
}

/* Point the copy cursor behind @run, the tail's run (the last component). */
static inline void
cursor_set(struct nbuf_composite *c, struct nbuf_comp_ *run)
{
    struct nbuf *t = c->tail;
    c->run = run;
    c->cur = (uintptr_t)(t->mem + t->writer);
    c->cur_end = (uintptr_t)(t->mem + t->capacity);
}

/*
 * Copy @n > 0 bytes to the end through the tail: behind the last component
 * when that is the tail's run, else as a new component on the tail (from its
 * start when it is idle) or on a new tail of max(@n, tail_size) bytes. The
 * total has room. 0 or -errno (-ENOMEM), nothing changed on failure.
 */
static int
tail_copy(struct nbuf_composite *c, const void *src, size_t n)
{
    struct nbuf *t = c->tail;
    struct nbuf_comp_ *run = nbuf_composite_tail_run_(c);
    int err;
    if (run && t->capacity - t->writer >= n) {
        memcpy(t->mem + t->writer, src, n);
        t->writer += n;
        run->len += n;
        c->total += n;
        cursor_set(c, run);
        return 0;
    }
    if (t && !run && t->writer && nbuf_composite_tail_idle_(t))
        t->writer = 0;
    if (t && t->capacity - t->writer >= n) {
        if ((err = reserve1(c)))
            return err;
        if (!nbuf_retain(t))
            return -errno;
    } else {
        size_t size = n > c->tail_size ? n : c->tail_size;
        struct nbuf *nt = nbuf_alloc(c->pool, size);
        if (!nt)
            return -errno;
        if ((err = reserve1(c))) {
            nbuf_release(nt);
            return err;
        }
        /* One reference for the component, one for c->tail. */
        if (!nbuf_retain(nt)) {
            err = -errno;
            nbuf_release(nt);
            return err;
        }
        nbuf_release(c->tail);
        c->tail = t = nt;
        if (c->tail_size < NBUF_TAIL_MAX)
            c->tail_size *= 2;
    }
    push_back_buf(c, t, t->writer, n, 1);
    memcpy(t->mem + t->writer, src, n);
    t->writer += n;
    cursor_set(c, nbuf_comp_last_(c));
    return 0;
}

/*
 * Add [off, off + len) of @b at the back. @take: the caller's reference moves
 * in (on success); else one is taken here, or shared with the previous
 * component when that is on the same buffer (no atomic for a run of slices).
 * Bytes that continue the last component on @b extend it; other slices (not
 * taken buffers) of at most nbuf_composite_slice_copy_max_ bytes are copied,
 * unless no tail memory is left: then they are referenced like bigger ones.
 */
static __attribute__((noinline)) int
add_buf(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len, bool take)
{
    if (unlikely(nbuf_composite_room_for_(c, len)))
        return -EOVERFLOW;
    if (unlikely(!len)) {
        if (take)
            nbuf_release(b);
        return 0;
    }
    size_t count = c->count;
    struct nbuf_comp_ *last = count ? &c->comps[(c->head + count - 1) & c->mask] : NULL;
    bool adjacent = last && last->buf == b && last->off + last->len == off;
    if (!take && !adjacent && len <= nbuf_composite_slice_copy_max_ &&
        tail_copy(c, b->mem + off, len) == 0)
        return 0;
    if (last && last->buf == b && (adjacent || !take)) {
        if (!adjacent && unlikely(count > c->mask)) {
            int err = nbuf_composite_reserve_(c, 1);
            if (err)
                return err;
            last = &c->comps[(c->head + count - 1) & c->mask];
        }
        extend_run(c, last, b, off, len);
        if (take)
            nbuf_release(b); /* adjacent: the run still holds one */
        return 0;
    }
    int err = reserve1(c);
    if (unlikely(err))
        return err;
    if (!take && !nbuf_retain(b))
        return -errno;
    push_back_buf(c, b, off, len, 1);
    return 0;
}

NBUF_EXPORT int
nbuf_composite_add(struct nbuf_composite *c, struct nbuf *b)
{
    if (unlikely(!c || !b))
        return -EINVAL;
    if (unlikely(nbuf_is_dead_(b)))
        return nbuf_buf_dead_(b, "nbuf_composite_add");
    return add_buf(c, b, b->reader, b->writer - b->reader, true);
}

/* add_slice of a slice too big to copy (or empty): out of line, so the
 * small-slice path needs no stack frame. */
static __attribute__((noinline)) int
add_slice_big(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len)
{
    size_t count = c->count;
    if (likely(count && count <= c->mask && len && !nbuf_composite_room_for_(c, len))) {
        /* The hot case of big slices inline: another slice of the buffer
         * the last component is on, with room in the ring. */
        struct nbuf_comp_ *last = &c->comps[(c->head + count - 1) & c->mask];
        if (last->buf == b) {
            extend_run(c, last, b, off, len);
            return 0;
        }
    }
    return add_buf(c, b, off, len, false);
}

NBUF_EXPORT int
nbuf_composite_add_slice(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len)
{
    size_t end;
    if (unlikely(!c || !b))
        return -EINVAL;
    if (unlikely(nbuf_is_dead_(b)))
        return nbuf_buf_dead_(b, "nbuf_composite_add_slice");
    if (unlikely(nbuf_add_overflow_(off, len, &end) || end > b->writer))
        return -EINVAL;
    if (len - 1 < nbuf_composite_slice_copy_max_) {
        /* The hot case of small slices inline: packed at the copy cursor,
         * behind the previous copy (@b is never the tail: callers cannot
         * reach it, so this never skips a merge with @b's last slice). No
         * cursor: cur_end - cur is 0. */
        uintptr_t d = c->cur;
        size_t total;
        if (likely(len <= c->cur_end - d && !nbuf_add_overflow_(c->total, len, &total))) {
            c->cur = d + len;
            c->total = total;
            c->run->len += len;
            c->tail->writer += len;
            if (len > 64)
                memcpy((uint8_t *)d, b->mem + off, len);
            else
                nbuf_copy_1_64_((uint8_t *)d, b->mem + off, len);
            return 0;
        }
        return add_buf(c, b, off, len, false);
    }
    return add_slice_big(c, b, off, len);
}

NBUF_EXPORT int
nbuf_composite_prepend(struct nbuf_composite *c, struct nbuf *b)
{
    if (unlikely(!c || !b))
        return -EINVAL;
    if (unlikely(nbuf_is_dead_(b)))
        return nbuf_buf_dead_(b, "nbuf_composite_prepend");
    size_t len = b->writer - b->reader;
    int err = nbuf_composite_room_for_(c, len);
    if (err)
        return err;
    if (!len) {
        nbuf_release(b);
        return 0;
    }
    struct nbuf_comp_ *first = c->count ? nbuf_comp_at_(c, 0) : NULL;
    if (first && !first->is_file && first->buf == b && b->writer == first->off) {
        /* Bytes just before the first component's: grow it backwards. */
        first->off = b->reader;
        first->len += len;
        first->start -= len;
        c->base -= len;
        c->total += len;
        nbuf_release(b); /* its run holds one */
        return 0;
    }
    if ((err = nbuf_composite_reserve_(c, 1)))
        return err;
    struct nbuf_comp_ nc = {.len = len, .off = b->reader, .buf = b, .nref = 1};
    nbuf_composite_push_front_(c, &nc);
    return 0;
}

NBUF_EXPORT int
nbuf_composite_add_copy(struct nbuf_composite *c, const void *src, size_t n)
{
    if (unlikely(!c || (!src && n)))
        return -EINVAL;
    int err = nbuf_composite_room_for_(c, n);
    if (err || !n)
        return err;
    return tail_copy(c, src, n);
}

/* The size of a new tail for the copied pieces of iov[i, n): their bytes,
 * counted over the next SCAN pieces and extrapolated (a scan of all of them
 * costs as much as copying), at most IOV_TAIL_MAX. */
#define SCAN 256
#define IOV_TAIL_MAX ((size_t)64 << 10)
static size_t
small_bytes(const struct iovec *iov, int i, int n)
{
    size_t sum = 0;
    int end = n - i > SCAN ? i + SCAN : n;
    for (int k = i; k < end; k++)
        if (iov[k].iov_len <= NBUF_COMPOSITE_COPY_MAX)
            sum += iov[k].iov_len;
    if (end < n) /* sum <= SCAN * 512, n < 2^31: no overflow */
        sum = (sum * (size_t)(n - i) + SCAN - 1) / SCAN;
    if (sum < iov[i].iov_len) /* extrapolation rounded below the first */
        sum = iov[i].iov_len;
    return sum < IOV_TAIL_MAX ? sum : IOV_TAIL_MAX;
}

/*
 * Many pieces of one buffer at once: each piece of at most
 * NBUF_COMPOSITE_COPY_MAX bytes is copied into the tail (as the flush would
 * copy it anyway), longer ones are referenced. One pass whose hot loop is a
 * bounds check and a small copy; anything that fails midway (a bad piece,
 * no memory) undoes what the call did, so it is all or nothing.
 */
NBUF_EXPORT int
nbuf_composite_add_iov(struct nbuf_composite *c, struct nbuf *b, const struct iovec *iov, int n)
{
    if (unlikely(!c || !b || n < 0 || (!iov && n)))
        return -EINVAL;
    if (unlikely(nbuf_is_dead_(b)))
        return nbuf_buf_dead_(b, "nbuf_composite_add_iov");
    nbuf_composite_uncursor_(c); /* this packs the tail its own way */
    const uintptr_t lo = (uintptr_t)b->mem, hi = lo + b->writer;
    const size_t room = SIZE_MAX - c->total; /* bytes the total can still take */
    /* What the undo restores. */
    const size_t old_count = c->count, old_total = c->total;
    struct nbuf *const old_tail = c->tail;
    const size_t old_writer = old_tail ? old_tail->writer : 0;
    struct nbuf_comp_ *last = nbuf_comp_last_(c);
    const size_t old_last_len = last ? last->len : 0;

    /* The copied run being filled: component copy_idx (from the front)
     * gets the bytes [run, dst) of tail when the run ends; end = room. */
    struct nbuf *tail = old_tail;
    size_t copy_idx = SIZE_MAX, big_idx = SIZE_MAX, added = 0;
    uint8_t *dst = NULL, *end = NULL, *run = NULL;
    int err = 0;
    if (tail && last && last->buf == tail && last->off + last->len == tail->writer) {
        copy_idx = old_count - 1; /* pack behind the previous copy */
        run = dst = tail->mem + tail->writer;
        end = tail->mem + tail->capacity;
    }
#define END_RUN()                                                                                  \
    do {                                                                                           \
        if (copy_idx != SIZE_MAX && dst != run) {                                                  \
            size_t k_ = (size_t)(dst - run);                                                       \
            if (k_ > room - added) {                                                               \
                err = -EOVERFLOW;                                                                  \
                goto out_undo;                                                                     \
            }                                                                                      \
            nbuf_comp_at_(c, copy_idx)->len += k_;                                                 \
            c->total += k_;                                                                        \
            added += k_;                                                                           \
            tail->writer = (size_t)(dst - tail->mem);                                              \
            run = dst;                                                                             \
        }                                                                                          \
    } while (0)

    const size_t span = b->writer;
    for (int i = 0; i < n; i++) {
        if (copy_idx != SIZE_MAX) {
            /* The hot loop: in-bounds pieces of 1-64 bytes that fit behind
             * dst, copied back to back; anything else takes the general
             * path below. (rel wraps above span when base < lo.) */
            size_t left = (size_t)(end - dst);
            for (; i < n; i++) {
                size_t rel = (uintptr_t)iov[i].iov_base - lo, len = iov[i].iov_len;
                if (rel > span || len > span - rel || len - 1 >= 64 || len > left)
                    break;
                nbuf_copy_1_64_(dst, (const uint8_t *)lo + rel, len);
                dst += len;
                left -= len;
            }
            if (i == n)
                break;
        }
        uintptr_t base = (uintptr_t)iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (unlikely(base < lo || base > hi || len > hi - base)) {
            err = -EINVAL;
            goto out_undo;
        }
        if (len <= NBUF_COMPOSITE_COPY_MAX) {
            if (likely(copy_idx != SIZE_MAX && len <= (size_t)(end - dst))) {
                nbuf_copy_small_(dst, (const uint8_t *)base, len);
                dst += len;
                continue;
            }
            if (!len)
                continue;
            /* A new copied run, on a new tail if this one is full. */
            END_RUN();
            if (!tail || tail->capacity - tail->writer < len) {
                size_t want = small_bytes(iov, i, n);
                struct nbuf *nt = nbuf_alloc(c->pool, want > c->tail_size ? want : c->tail_size);
                if (!nt) {
                    err = -errno;
                    goto out_undo;
                }
                if (tail != old_tail)
                    nbuf_release(tail); /* its components keep their own */
                tail = nt;              /* nbuf_alloc's reference: c->tail's on success */
            }
            if ((err = reserve1(c)))
                goto out_undo;
            if (!nbuf_retain(tail)) {
                err = -errno;
                goto out_undo;
            }
            push_back_buf(c, tail, tail->writer, 0, 1);
            copy_idx = c->count - 1;
            big_idx = SIZE_MAX;
            run = dst = tail->mem + tail->writer;
            end = tail->mem + tail->capacity;
            nbuf_copy_small_(dst, (const uint8_t *)base, len);
            dst += len;
            continue;
        }
        /* A referenced piece. */
        END_RUN();
        copy_idx = SIZE_MAX;
        if (len > room - added) {
            err = -EOVERFLOW;
            goto out_undo;
        }
        size_t off = (size_t)(base - lo);
        struct nbuf_comp_ *bc = big_idx != SIZE_MAX ? nbuf_comp_at_(c, big_idx) : NULL;
        if (bc && bc->off + bc->len == off) {
            bc->len += len; /* adjacent to the previous piece */
        } else {
            if ((err = reserve1(c)))
                goto out_undo;
            uint32_t nref = 1;
            if (big_idx != SIZE_MAX) {
                /* Same run: its reference moves to the new last component. */
                bc = nbuf_comp_at_(c, big_idx); /* the ring may have moved */
                nref = bc->nref;
                bc->nref = 0;
            } else if (!nbuf_retain(b)) {
                err = -errno;
                goto out_undo;
            }
            push_back_buf(c, b, off, 0, nref);
            big_idx = c->count - 1;
            bc = nbuf_comp_at_(c, big_idx);
            bc->len = len;
        }
        c->total += len;
        added += len;
    }
    END_RUN();
#undef END_RUN
    if (tail != old_tail) {
        nbuf_release(old_tail);
        c->tail = tail;
        if (c->tail_size < NBUF_TAIL_MAX)
            c->tail_size *= 2;
    }
    nbuf_assert_expensive(nbuf_composite_check_(c));
    return 0;

out_undo:
    while (c->count > old_count) {
        nbuf_comp_release_(nbuf_comp_last_(c));
        c->count--;
    }
    if (old_count)
        nbuf_comp_at_(c, old_count - 1)->len = old_last_len;
    c->total = old_total;
    if (old_tail)
        old_tail->writer = old_writer;
    if (tail != old_tail)
        nbuf_release(tail);
    return err;
}

NBUF_EXPORT int
nbuf_composite_add_file(struct nbuf_composite *c, int fd, off_t off, size_t len)
{
    struct stat st;
    if (unlikely(!c || off < 0))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    if ((uint64_t)len > (uint64_t)INT64_MAX - (uint64_t)off)
        return -EINVAL;
    int err = nbuf_composite_room_for_(c, len);
    if (err)
        return err;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode) && (uint64_t)off + len > (uint64_t)st.st_size)
        return -EINVAL;
    if (!len)
        return 0;
    if ((err = nbuf_composite_reserve_(c, 1)))
        return err;
    struct nbuf_cfile_ *f;
    if ((err = nbuf_cfile_new_(fd, &f)))
        return err;
    struct nbuf_comp_ nc = {.len = len, .off = (uint64_t)off, .file = f, .nref = 1, .is_file = 1};
    nbuf_composite_push_back_(c, &nc);
    return 0;
}

NBUF_EXPORT int
nbuf_composite_append(struct nbuf_composite *c, struct nbuf_composite *src)
{
    if (unlikely(!c || !src || c == src))
        return -EINVAL;
    int err = nbuf_composite_room_for_(c, src->total);
    if (err)
        return err;
    if (!src->count)
        return 0;
    if ((err = nbuf_composite_reserve_(c, src->count)))
        return err;
    /* The references move with the components. */
    for (size_t i = 0; i < src->count; i++)
        nbuf_composite_push_back_(c, nbuf_comp_at_(src, i));
    struct nbuf_comp_ *last = nbuf_comp_last_(src);
    if (src->tail && !last->is_file && last->buf == src->tail) {
        /* Keep packing behind src's last copy. */
        nbuf_release(c->tail);
        c->tail = src->tail;
        src->tail = NULL;
    }
    src->base += src->total;
    src->total = 0;
    src->count = 0;
    src->head = 0;
    nbuf_composite_uncursor_(src);
    nbuf_assert_expensive(nbuf_composite_check_(c));
    return 0;
}
