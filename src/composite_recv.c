/* SPDX-License-Identifier: MIT */
/*
 * IO layer: receiving into a composite (read_fd) and its read-size table.
 * Calls the composite through composite_io.h, buffers and sysops.
 *
 * read_fd reads behind the last read or copy in the tail, then into a fresh
 * pooled buffer whose size adapts to what the reads return (Netty's
 * AdaptiveRecvByteBufAllocator).
 */
#include <limits.h>

#include "composite_io.h"
#include "io_int.h"
#include "sysops.h"

/* read_fd sizes (Netty's AdaptiveRecvByteBufAllocator, in powers of two). */
static const uint32_t read_sizes[] = {64,   128,  256,   512,   1024, 2048,
                                      4096, 8192, 16384, 32768, 65536};
_Static_assert(sizeof(read_sizes) / sizeof(read_sizes[0]) == NBUF_READ_SIZES,
               "NBUF_READ_SIZES is the length of read_sizes");

size_t
nbuf_composite_next_read_size_(struct nbuf_composite *c)
{
    return read_sizes[nbuf_composite_read_adapt_(c)->idx];
}

/* Netty's rule: grow fast after a read that filled the offer, shrink one
 * step after two reads in a row that fit the next smaller size. */
static void
read_adapt(struct nbuf_read_adapt_ *ra, size_t got, size_t offered)
{
    if (got >= offered) {
        ra->idx = ra->idx + 2 < NBUF_READ_SIZES ? ra->idx + 2 : NBUF_READ_SIZES - 1;
        ra->small = 0;
    } else if (ra->idx > 0 && got <= read_sizes[ra->idx - 1]) {
        if (++ra->small >= 2) {
            ra->idx--;
            ra->small = 0;
        }
    } else {
        ra->small = 0;
    }
}

NBUF_EXPORT ssize_t
nbuf_composite_read_fd(struct nbuf_composite *c, int fd, size_t max)
{
    if (unlikely(!c))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    struct nbuf_read_adapt_ *ra = nbuf_composite_read_adapt_(c);
    size_t want = read_sizes[ra->idx];
    if (max && max < want)
        want = max;
    if (want > SSIZE_MAX)
        want = SSIZE_MAX;
    int err = nbuf_composite_room_for_(c, want);
    if (err)
        return err;
    if ((err = nbuf_composite_reserve_(c, 1)))
        return err;

    /* Offer the room behind the last read or copy first, then a fresh
     * buffer for the rest. */
    struct iovec iov[2];
    size_t room = nbuf_composite_tail_room_(c, want, &iov[0]);
    int niov = room ? 1 : 0;
    /* A fresh buffer only when the room is less than half the size we aim
     * for: an allocation per small read would cost more than the read. */
    struct nbuf *fresh = NULL;
    if (room < want / 2 || !room) {
        size_t size = want - room > read_sizes[0] ? want - room : read_sizes[0];
        fresh = nbuf_alloc(nbuf_composite_pool_(c), size);
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
    if (into_tail)
        nbuf_composite_tail_wrote_(c, into_tail);
    if (got > into_tail) {
        /* The fresh buffer becomes the tail (its reference moves in). */
        fresh->writer = got - into_tail;
        nbuf_composite_add_read_(c, fresh);
    } else {
        nbuf_release(fresh);
    }
    read_adapt(ra, got, offered);
    return r;
}
