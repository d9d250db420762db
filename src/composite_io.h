/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: what the IO layer (flush.c, composite_recv.c) uses of a
 * composite, so that IO reads no field of the container. Calls composite.c
 * and buffers.
 *
 * An iterator over the readable memory as iovecs, the file region at the
 * front, consuming, and appending what a read brought in. Also for IO, from
 * composite_int.h: nbuf_composite_consume_() (drop bytes from the front),
 * nbuf_composite_reserve_() (ring room, taken before a syscall so that
 * nothing read can be lost) and nbuf_composite_room_for_().
 */
#ifndef NBUF_COMPOSITE_IO_H
#define NBUF_COMPOSITE_IO_H

#include <sys/uio.h>

#include "composite_int.h"

/* The readable bytes. */
static inline size_t
nbuf_composite_readable_(const struct nbuf_composite *c)
{
    return c->total;
}

/* The pool a composite allocates from (staging copies, reads). */
static inline struct nbuf_pool *
nbuf_composite_pool_(const struct nbuf_composite *c)
{
    return c->pool;
}

/* ---- the readable memory as iovecs, from the front ---- */

/* Slots [pos, end) (unmasked) are the components not visited yet. */
struct nbuf_comp_iter_ {
    const struct nbuf_comp_ *comps;
    size_t mask;
    size_t pos, end;
};

static inline void
nbuf_composite_iov_begin_(const struct nbuf_composite *c, struct nbuf_comp_iter_ *it)
{
    it->comps = c->comps;
    it->mask = c->mask;
    it->pos = c->head;
    it->end = c->head + c->count;
}

/* The next memory component as one iovec (len > 0) and true; false at the
 * end or at a file region, where the iterator stays. */
static inline bool
nbuf_composite_iov_next_(struct nbuf_comp_iter_ *it, struct iovec *out)
{
    if (it->pos == it->end)
        return false;
    const struct nbuf_comp_ *cp = &it->comps[it->pos & it->mask];
    if (cp->is_file)
        return false;
    out->iov_base = cp->buf->mem + cp->off;
    out->iov_len = cp->len;
    it->pos++;
    return true;
}

/* The length of the component next_ would return, 0 when it returns false. */
static inline size_t
nbuf_composite_iov_peek_(const struct nbuf_comp_iter_ *it)
{
    if (it->pos == it->end)
        return 0;
    const struct nbuf_comp_ *cp = &it->comps[it->pos & it->mask];
    return cp->is_file ? 0 : cp->len;
}

/* Whether the iterator stopped at a file region (not at the end). */
static inline bool
nbuf_composite_iov_at_file_(const struct nbuf_comp_iter_ *it)
{
    return it->pos != it->end && it->comps[it->pos & it->mask].is_file;
}

/* ---- the file region at the front ---- */

struct nbuf_file_seg_ {
    int fd;       /* the composite's dup, valid while the region is queued */
    uint64_t off; /* of the first readable byte in the file */
    size_t len;   /* > 0 */
};

/* True and *out when the first component of a non-empty composite is a
 * file region. */
static inline bool
nbuf_composite_front_file_(const struct nbuf_composite *c, struct nbuf_file_seg_ *out)
{
    const struct nbuf_comp_ *cp = &c->comps[c->head];
    if (!cp->is_file)
        return false;
    out->fd = cp->file->fd;
    out->off = cp->off;
    out->len = cp->len;
    return true;
}

/* The first b->writer bytes (at most the front file region's length) leave
 * the front and come back as @b's bytes [0, writer), which the caller read
 * from that region: the readable bytes are unchanged. Room for one
 * component reserved; takes the caller's reference on @b. */
void nbuf_composite_replace_front_(struct nbuf_composite *c, struct nbuf *b);

/* ---- appending what a read brought in ---- */

/* read_fd's adaptive read size: composite_recv.c's state, which the
 * composite carries (it starts at NBUF_READ_INITIAL). */
static inline struct nbuf_read_adapt_ *
nbuf_composite_read_adapt_(struct nbuf_composite *c)
{
    return &c->rd;
}

/*
 * The room behind the last component when it is the tail's run: at most
 * @max bytes at out->iov_base, returned and in out->iov_len (0: none, *out
 * untouched). Forgets the copy cursor: the caller writes the tail its own
 * way, then calls nbuf_composite_tail_wrote_().
 */
static inline size_t
nbuf_composite_tail_room_(struct nbuf_composite *c, size_t max, struct iovec *out)
{
    nbuf_composite_uncursor_(c);
    if (!nbuf_composite_tail_run_(c))
        return 0;
    struct nbuf *t = c->tail;
    size_t room = t->capacity - t->writer;
    if (room > max)
        room = max;
    if (room) {
        out->iov_base = t->mem + t->writer;
        out->iov_len = room;
    }
    return room;
}

/* @n bytes (at most the room given) now fill the room behind the tail's run:
 * they join it. The total has room for them. */
static inline void
nbuf_composite_tail_wrote_(struct nbuf_composite *c, size_t n)
{
    c->comps[(c->head + c->count - 1) & c->mask].len += n;
    c->tail->writer += n;
    c->total += n;
}

/* Append @b's bytes [0, writer) (> 0, room for one component reserved, the
 * total has room) as a component that takes the caller's reference, and
 * make @b the tail, so the next read fills its room. */
static inline void
nbuf_composite_add_read_(struct nbuf_composite *c, struct nbuf *b)
{
    struct nbuf_comp_ nc = {.len = b->writer, .off = 0, .buf = b, .nref = 1};
    nbuf_composite_push_back_(c, &nc);
    if (nbuf_retain(b)) { /* one reference for the component, one for c->tail */
        nbuf_release(c->tail);
        c->tail = b;
    }
}

#endif /* NBUF_COMPOSITE_IO_H */
