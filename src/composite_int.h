/* SPDX-License-Identifier: MIT */
/*
 * Composite layer: the internals its files share (the component ring, its
 * inline accessors, tails, prototypes by file). Calls buffers (internal.h)
 * and copy.h.
 *
 * For composite.c (the container), composite_add.c (adding),
 * composite_read.c (reading) and composite_frame.c (framing), and tests.
 * The IO layer uses composite_io.h instead.
 */
#ifndef NBUF_COMPOSITE_INT_H
#define NBUF_COMPOSITE_INT_H

#include "copy.h"
#include "internal.h"

/*
 * A file region's descriptor, shared by the components a split or an append
 * made of one nbuf_composite_add_file() call.
 * Synchronization: refs is atomic (halves of a split may live on different
 * threads); fd is immutable.
 */
struct nbuf_cfile_ {
    _Atomic uint32_t refs;
    int fd; /* our own dup, closed with the last reference */
};

/*
 * One component: len > 0 bytes of a buffer's memory at buf->mem + off, or of
 * a file at offset off.
 *
 * Invariants:
 * - len > 0 (empty components are never stored, so never become iovecs).
 * - start = the composite's base + the lengths of the components before it
 *   (mod 2^64): positions never move when the front is consumed or a
 *   component is prepended.
 * - memory: buf is live and off + len <= buf->capacity.
 * - nref references on buf belong to this component. A run of consecutive
 *   components on one buffer shares references: a component with nref 0 is
 *   always followed by one on the same buffer, and the last of a run has
 *   nref >= 1. Consuming from the front keeps this true; a split gives the
 *   moved part its own reference.
 * - file: is_file, file->refs counts this component, nref is 1.
 */
struct nbuf_comp_ {
    size_t start;
    size_t len;
    uint64_t off;
    union {
        struct nbuf *buf;
        struct nbuf_cfile_ *file;
    };
    uint32_t nref;
    uint8_t is_file;
};

/* read_fd's adaptive read size (composite_recv.c's, through
 * nbuf_composite_read_adapt_()): idx < NBUF_READ_SIZES. */
struct nbuf_read_adapt_ {
    uint8_t idx;   /* of the next read size */
    uint8_t small; /* consecutive reads that fit the next smaller size */
};

/* Components stored in the composite itself before the ring is malloc'd. */
#define NBUF_COMP_INLINE 4

/*
 * A composite: a ring (deque) of components read as one logical buffer.
 *
 * Invariants:
 * - mask + 1 is a power of two >= count; component i (0 = the reader's) is at
 *   slot (head + i) & mask.
 * - base = the start of the first component; total = sum of lengths.
 * - the first component begins at the reader: consumed bytes are cut off its
 *   front at once (and it is released when it empties).
 * - hint is any slot (validated before use).
 * - tail, when set, is a buffer the composite holds one reference on, packed
 *   by add_copy, add_slice and read_fd at its writer index; bytes past its
 *   writer index belong to nobody else.
 * - the copy cursor: run, cur and cur_end are all 0, or the last component
 *   is the tail's run ending at the tail's writer index, run points to it,
 *   cur = tail->mem + writer and cur_end = tail->mem + capacity. Whatever
 *   moves the ring, adds behind the run or writes the tail another way
 *   resets it (nbuf_composite_uncursor_).
 * Synchronization: none; a composite has one owner at a time.
 */
struct nbuf_composite {
    struct nbuf_comp_ *comps;
    size_t mask;
    size_t head;
    size_t count;
    size_t base;
    size_t total;
    size_t hint;
    struct nbuf_pool *pool;
    struct nbuf *tail;
    uint32_t tail_size; /* capacity of the next add_copy tail */
    struct nbuf_read_adapt_ rd;
    /* add_slice's fast path packs small slices at cur (see Invariants). */
    struct nbuf_comp_ *run;
    uintptr_t cur, cur_end;
    struct nbuf_comp_ inl[NBUF_COMP_INLINE];
};

/* read_fd's size table (composite_recv.c): its length, and the index a new
 * composite starts at (2 KiB). The composite layer owns both numbers: it
 * starts and checks rd.idx. */
#define NBUF_READ_SIZES ((uint8_t)11)
#define NBUF_READ_INITIAL 5

static inline struct nbuf_comp_ *
nbuf_comp_at_(const struct nbuf_composite *c, size_t i)
{
    return &c->comps[(c->head + i) & c->mask];
}

static inline const uint8_t *
nbuf_comp_ptr_(const struct nbuf_comp_ *cp)
{
    return cp->buf->mem + cp->off;
}

static inline struct nbuf_comp_ *
nbuf_comp_last_(const struct nbuf_composite *c)
{
    return c->count ? nbuf_comp_at_(c, c->count - 1) : NULL;
}

/* Forget the copy cursor (the next small slice takes the slow path, which
 * sets it again). */
static inline void
nbuf_composite_uncursor_(struct nbuf_composite *c)
{
    c->run = NULL;
    c->cur = c->cur_end = 0;
}

/* The room a composite has for @len more bytes: 0 or -EOVERFLOW. */
static inline int
nbuf_composite_room_for_(const struct nbuf_composite *c, size_t len)
{
    size_t t;
    return nbuf_add_overflow_(c->total, len, &t) ? -EOVERFLOW : 0;
}

/* Append @cp (room reserved); it takes cp's references. */
static inline void
nbuf_composite_push_back_(struct nbuf_composite *c, const struct nbuf_comp_ *cp)
{
    struct nbuf_comp_ *d = &c->comps[(c->head + c->count) & c->mask];
    *d = *cp;
    d->start = c->base + c->total;
    c->count++;
    c->total += cp->len;
    nbuf_composite_uncursor_(c);
}

/* Remove the first component without releasing it (its references moved). */
static inline void
nbuf_composite_pop_front_(struct nbuf_composite *c)
{
    struct nbuf_comp_ *cp = &c->comps[c->head];
    c->base += cp->len;
    c->total -= cp->len;
    c->head = (c->head + 1) & c->mask;
    if (!--c->count)
        nbuf_composite_uncursor_(c);
}

/* Tails (the pooled buffers copies are packed into) start at NBUF_TAIL_MIN
 * bytes and double each time one fills, up to NBUF_TAIL_MAX: the largest
 * size class the thread caches keep by default, so a frame of copied slices
 * takes a tail or two rather than one per 4 KiB. A drained composite keeps
 * a tail of at most NBUF_TAIL_KEEP bytes, so an idle one pins little. */
#define NBUF_TAIL_MIN 256
#define NBUF_TAIL_MAX ((size_t)64 << 10)
#define NBUF_TAIL_KEEP 4096

/* No component and no view holds the tail any more, only c->tail: its bytes
 * are nobody's, so copies may be packed again from its start, while that
 * memory is still hot in cache. Acquire pairs with the release of the last
 * other reference: whatever read those bytes is done with them. */
static inline bool
nbuf_composite_tail_idle_(struct nbuf *t)
{
    return atomic_load_explicit(&t->refcnt, memory_order_acquire) == 1;
}

/* The last component when it is the tail's run ending at the tail's writer
 * index (copies pack behind it), else NULL. A file's pointer never equals a
 * buffer's: no is_file test needed. */
static inline struct nbuf_comp_ *
nbuf_composite_tail_run_(const struct nbuf_composite *c)
{
    struct nbuf *t = c->tail;
    struct nbuf_comp_ *last = nbuf_comp_last_(c);
    return t && last && last->buf == t && last->off + last->len == t->writer ? last : NULL;
}

/* ---- composite.c ---- */
/* A file region's descriptor for a dup of @fd with one reference: 0 or
 * -errno. Components drop their references with nbuf_comp_release_(). */
int nbuf_cfile_new_(int fd, struct nbuf_cfile_ **out);
/* Drop the references a component owns. */
void nbuf_comp_release_(struct nbuf_comp_ *cp);
/* Consume @n <= total bytes from the front, releasing emptied components. */
void nbuf_composite_consume_(struct nbuf_composite *c, size_t n);
/* Make room for @more components (amortized doubling): 0 or -ENOMEM. */
int nbuf_composite_reserve_(struct nbuf_composite *c, size_t more);
/* Put @cp in front of the first component (room reserved); it takes cp's
 * references. */
void nbuf_composite_push_front_(struct nbuf_composite *c, const struct nbuf_comp_ *cp);
/* Full invariant check (tests, fuzzers, expensive asserts). */
bool nbuf_composite_check_(const struct nbuf_composite *c);

/* ---- composite_add.c ---- */
/* Slices of at most this many bytes are copied by add_slice and add (tests
 * may change it; 0 references every slice). */
extern size_t nbuf_composite_slice_copy_max_;

/* ---- composite_read.c ---- */
/* The slot of the component holding readable byte @off (< total); moves the
 * lookup hint. */
size_t nbuf_composite_find_slot_(const struct nbuf_composite *c, size_t off);
/* Copy readable bytes [off, off + n) (in range) to @dst: 0, -EIO or -ESPIPE
 * (a file region that ends early or is a pipe). */
int nbuf_composite_copy_out_(const struct nbuf_composite *c, size_t off, void *dst, size_t n);

#endif /* NBUF_COMPOSITE_INT_H */
