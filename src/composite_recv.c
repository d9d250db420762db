/* SPDX-License-Identifier: MIT */
/*
 * Receiving into a composite: read_fd reads behind the last read or copy in
 * the tail, then into a fresh pooled buffer whose size adapts to what the
 * reads return (Netty's AdaptiveRecvByteBufAllocator). Owns the size table;
 * composite.c starts and checks rd_idx with the constants in composite_int.h.
 */
#include <limits.h>

#include "composite_int.h"
#include "sysops.h"

/* read_fd sizes (Netty's AdaptiveRecvByteBufAllocator, in powers of two). */
static const uint32_t read_sizes[] = {64,   128,  256,   512,   1024, 2048,
                                      4096, 8192, 16384, 32768, 65536};
_Static_assert(sizeof(read_sizes) / sizeof(read_sizes[0]) == NBUF_READ_SIZES,
               "NBUF_READ_SIZES is the length of read_sizes");

size_t
nbuf_composite_next_read_size_(const struct nbuf_composite *c)
{
    return read_sizes[c->rd_idx];
}

/* Netty's rule: grow fast after a read that filled the offer, shrink one
 * step after two reads in a row that fit the next smaller size. */
static void
read_adapt(struct nbuf_composite *c, size_t got, size_t offered)
{
    if (got >= offered) {
        c->rd_idx = c->rd_idx + 2 < NBUF_READ_SIZES ? c->rd_idx + 2 : NBUF_READ_SIZES - 1;
        c->rd_small = 0;
    } else if (c->rd_idx > 0 && got <= read_sizes[c->rd_idx - 1]) {
        if (++c->rd_small >= 2) {
            c->rd_idx--;
            c->rd_small = 0;
        }
    } else {
        c->rd_small = 0;
    }
}

NBUF_EXPORT ssize_t
nbuf_composite_read_fd(struct nbuf_composite *c, int fd, size_t max)
{
    if (unlikely(!c))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    size_t want = read_sizes[c->rd_idx];
    if (max && max < want)
        want = max;
    if (want > SSIZE_MAX)
        want = SSIZE_MAX;
    int err = nbuf_composite_room_for_(c, want);
    if (err)
        return err;
    if ((err = nbuf_composite_reserve_(c, 1)))
        return err;

    nbuf_composite_uncursor_(c); /* this writes the tail its own way */
    /* Offer the room behind the last read or copy first, then a fresh
     * buffer for the rest. */
    struct iovec iov[2];
    int niov = 0;
    size_t room = 0;
    struct nbuf *t = c->tail;
    struct nbuf_comp_ *last = nbuf_comp_last_(c);
    if (t && last && !last->is_file && last->buf == t && last->off + last->len == t->writer) {
        room = t->capacity - t->writer;
        if (room > want)
            room = want;
        if (room) {
            iov[niov].iov_base = t->mem + t->writer;
            iov[niov++].iov_len = room;
        }
    }
    /* A fresh buffer only when the room is less than half the size we aim
     * for: an allocation per small read would cost more than the read. */
    struct nbuf *fresh = NULL;
    if (room < want / 2 || !room) {
        fresh = nbuf_alloc(c->pool, want - room > read_sizes[0] ? want - room : read_sizes[0]);
        if (!fresh)
            return -errno;
        size_t k = fresh->capacity < want - room ? fresh->capacity : want - room;
        iov[niov].iov_base = fresh->mem;
        iov[niov++].iov_len = k;
    }
    ssize_t r;
    do
        r = nbuf_sys_.readv(fd, iov, niov);
    while (r < 0 && errno == EINTR);
    if (r <= 0) {
        err = r < 0 ? -errno : 0;
        nbuf_release(fresh);
        return err;
    }
    size_t got = (size_t)r, into_tail = got < room ? got : room;
    size_t offered = room + (fresh ? iov[niov - 1].iov_len : 0);
    if (into_tail) {
        t->writer += into_tail;
        last->len += into_tail;
        c->total += into_tail;
    }
    if (got > into_tail) {
        /* The fresh buffer becomes the tail: one reference for its
         * component (from nbuf_alloc), one for c->tail. */
        struct nbuf_comp_ nc = {.len = got - into_tail, .off = 0, .buf = fresh, .nref = 1};
        fresh->writer = got - into_tail;
        nbuf_composite_push_back_(c, &nc);
        if (nbuf_retain(fresh)) {
            nbuf_release(c->tail);
            c->tail = fresh;
        }
    } else {
        nbuf_release(fresh);
    }
    read_adapt(c, got, offered);
    return r;
}
