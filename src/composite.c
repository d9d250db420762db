/* SPDX-License-Identifier: MIT */
/*
 * Composites: a ring of components (buffer slices and file regions) read as
 * one logical buffer. Owns adding (with overflow checks and reference
 * sharing between consecutive slices of one buffer), O(log n) offset lookup
 * with a last-hit hint, reads across components, framing (read_slice, split,
 * flatten) and read_fd. Keeps the invariants listed in composite_int.h; the
 * flush lives in flush.c.
 */
#include <endian.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "composite_int.h"
#include "sysops.h"

/* add_copy tails start at this many bytes and double up to the maximum. */
#define TAIL_MIN 256
#define TAIL_MAX 4096
/* Scratch for searching file regions. */
#define FILE_SCRATCH 2048

/* read_fd sizes (Netty's AdaptiveRecvByteBufAllocator, in powers of two). */
static const uint32_t read_sizes[] = {64,   128,  256,   512,   1024, 2048,
                                      4096, 8192, 16384, 32768, 65536};
#define READ_SIZES ((uint8_t)(sizeof(read_sizes) / sizeof(read_sizes[0])))
#define READ_INITIAL 5 /* 2 KiB */

/* ---- file regions ---- */

static void
cfile_put(struct nbuf_cfile_ *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        close(f->fd);
        free(f);
    }
}

/* Drop the references a component owns. */
static void
comp_release(struct nbuf_comp_ *cp)
{
    if (cp->is_file) {
        cfile_put(cp->file);
        return;
    }
    for (uint32_t i = 0; i < cp->nref; i++)
        nbuf_release(cp->buf);
}

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

/* ---- the ring ---- */

static inline struct nbuf_comp_ *
comp_last(const struct nbuf_composite *c)
{
    return c->count ? nbuf_comp_at_(c, c->count - 1) : NULL;
}

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

/* Append @cp (room reserved); it takes cp's references. */
static inline void
push_back(struct nbuf_composite *c, const struct nbuf_comp_ *cp)
{
    struct nbuf_comp_ *d = &c->comps[(c->head + c->count) & c->mask];
    *d = *cp;
    d->start = c->base + c->total;
    c->count++;
    c->total += cp->len;
}

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

/* Remove the first component without releasing it (its references moved). */
static inline void
pop_front(struct nbuf_composite *c)
{
    struct nbuf_comp_ *cp = &c->comps[c->head];
    c->base += cp->len;
    c->total -= cp->len;
    c->head = (c->head + 1) & c->mask;
    c->count--;
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
    nbuf_assert_expensive(nbuf_composite_check_(c));
}

/*
 * The slot of the component holding byte @off (< total) of the readable
 * bytes: the hint or its successor (sequential access), else a binary search
 * over the starts, which grow monotonically from base (mod 2^64).
 */
static size_t
find_slot(const struct nbuf_composite *c, size_t off)
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
static int
copy_out(const struct nbuf_composite *c, size_t off, void *dst, size_t n)
{
    if (!n)
        return 0;
    uint8_t *d = dst;
    size_t slot = find_slot(c, off);
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

/* ---- life cycle ---- */

NBUF_EXPORT struct nbuf_composite *
nbuf_composite_new(struct nbuf_pool *p)
{
    if (!p && !(p = nbuf_pool_default()))
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
    c->tail_size = TAIL_MIN;
    c->rd_idx = READ_INITIAL;
    return c;
}

NBUF_EXPORT void
nbuf_composite_free(struct nbuf_composite *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        comp_release(nbuf_comp_at_(c, i));
    nbuf_release(c->tail);
    if (c->comps != c->inl)
        free(c->comps);
    free(c);
}

/* ---- adding ---- */

/* The room a composite has for @len more bytes: 0 or -EOVERFLOW. */
static inline int
room_for(const struct nbuf_composite *c, size_t len)
{
    size_t t;
    return nbuf_add_overflow_(c->total, len, &t) ? -EOVERFLOW : 0;
}

/*
 * Add [off, off + len) of @b at the back. @take: the caller's reference moves
 * in (on success); else one is taken here, or shared with the previous
 * component when that is on the same buffer (no atomic for a run of slices).
 */
static inline int
reserve1(struct nbuf_composite *c)
{
    return likely(c->count <= c->mask) ? 0 : nbuf_composite_reserve_(c, 1);
}

static __attribute__((noinline)) int
add_buf(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len, bool take)
{
    size_t total;
    if (unlikely(nbuf_add_overflow_(c->total, len, &total)))
        return -EOVERFLOW;
    if (unlikely(!len)) {
        if (take)
            nbuf_release(b);
        return 0;
    }
    size_t count = c->count;
    if (likely(count)) {
        /* A file's pointer never equals a buffer's: no is_file test needed. */
        struct nbuf_comp_ *last = &c->comps[(c->head + count - 1) & c->mask];
        if (last->buf == b) {
            if (last->off + last->len == off) {
                /* Adjacent bytes of the same buffer: grow the last
                 * component (nginx merges such neighbours too). */
                last->len += len;
                c->total = total;
                if (take)
                    nbuf_release(b); /* the run still holds one */
                return 0;
            }
            if (!take) {
                if (unlikely(count > c->mask)) {
                    int err = nbuf_composite_reserve_(c, 1);
                    if (err)
                        return err;
                    last = &c->comps[(c->head + count - 1) & c->mask];
                }
                /* The run's references move to its new last component. */
                uint32_t nref = last->nref;
                last->nref = 0;
                push_back_buf(c, b, off, len, nref);
                return 0;
            }
        }
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
    /* The hot case inline: another slice of the buffer the last component
     * is on, with room in the ring (a frame of payload slices). */
    size_t count = c->count, total;
    if (likely(count && count <= c->mask && len && !nbuf_add_overflow_(c->total, len, &total))) {
        struct nbuf_comp_ *comps = c->comps;
        size_t slot = c->head + count;
        struct nbuf_comp_ *last = &comps[(slot - 1) & c->mask];
        if (last->buf == b) {
            if (last->off + last->len == off) {
                last->len += len; /* adjacent: grow the last component */
            } else {
                struct nbuf_comp_ *d = &comps[slot & c->mask];
                d->start = c->base + c->total;
                d->len = len;
                d->off = off;
                d->buf = b;
                d->nref = last->nref; /* the run's references move on */
                d->is_file = 0;
                last->nref = 0;
                c->count = count + 1;
            }
            c->total = total;
            return 0;
        }
    }
    return add_buf(c, b, off, len, false);
}

NBUF_EXPORT int
nbuf_composite_prepend(struct nbuf_composite *c, struct nbuf *b)
{
    if (unlikely(!c || !b))
        return -EINVAL;
    if (unlikely(nbuf_is_dead_(b)))
        return nbuf_buf_dead_(b, "nbuf_composite_prepend");
    size_t len = b->writer - b->reader;
    int err = room_for(c, len);
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
    int err = room_for(c, n);
    if (err || !n)
        return err;
    struct nbuf *t = c->tail;
    struct nbuf_comp_ *last = comp_last(c);
    if (t && t->capacity - t->writer >= n) {
        if (last && last->buf == t && !last->is_file && last->off + last->len == t->writer) {
            /* The common case: pack behind the previous copy. */
            memcpy(t->mem + t->writer, src, n);
            t->writer += n;
            last->len += n;
            c->total += n;
            return 0;
        }
        if ((err = nbuf_composite_reserve_(c, 1)))
            return err;
        if (!nbuf_retain(t))
            return -errno;
    } else {
        size_t size = n > c->tail_size ? n : c->tail_size;
        struct nbuf *nt = nbuf_alloc(c->pool, size);
        if (!nt)
            return -errno;
        if ((err = nbuf_composite_reserve_(c, 1))) {
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
        if (c->tail_size < TAIL_MAX)
            c->tail_size *= 2;
    }
    push_back_buf(c, t, t->writer, n, 1);
    memcpy(t->mem + t->writer, src, n);
    t->writer += n;
    return 0;
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
    const uintptr_t lo = (uintptr_t)b->mem, hi = lo + b->writer;
    const size_t room = SIZE_MAX - c->total; /* bytes the total can still take */
    /* What the undo restores. */
    const size_t old_count = c->count, old_total = c->total;
    struct nbuf *const old_tail = c->tail;
    const size_t old_writer = old_tail ? old_tail->writer : 0;
    struct nbuf_comp_ *last = comp_last(c);
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
        if (c->tail_size < TAIL_MAX)
            c->tail_size *= 2;
    }
    nbuf_assert_expensive(nbuf_composite_check_(c));
    return 0;

out_undo:
    while (c->count > old_count) {
        comp_release(comp_last(c));
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
    int err = room_for(c, len);
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
    struct nbuf_cfile_ *f = malloc(sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (f->fd < 0) {
        err = -errno;
        free(f);
        return err;
    }
    atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
    struct nbuf_comp_ nc = {.len = len, .off = (uint64_t)off, .file = f, .nref = 1, .is_file = 1};
    push_back(c, &nc);
    return 0;
}

NBUF_EXPORT int
nbuf_composite_append(struct nbuf_composite *c, struct nbuf_composite *src)
{
    if (unlikely(!c || !src || c == src))
        return -EINVAL;
    int err = room_for(c, src->total);
    if (err)
        return err;
    if (!src->count)
        return 0;
    if ((err = nbuf_composite_reserve_(c, src->count)))
        return err;
    /* The references move with the components. */
    for (size_t i = 0; i < src->count; i++)
        push_back(c, nbuf_comp_at_(src, i));
    struct nbuf_comp_ *last = comp_last(src);
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
    nbuf_assert_expensive(nbuf_composite_check_(c));
    return 0;
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

/* ---- reading ---- */

NBUF_EXPORT int
nbuf_composite_get(const struct nbuf_composite *c, size_t index, void *dst, size_t n)
{
    size_t end;
    if (unlikely(!c || (!dst && n)))
        return -EINVAL;
    if (nbuf_add_overflow_(index, n, &end) || end > c->total)
        return -ENODATA;
    return copy_out(c, index, dst, n);
}

NBUF_EXPORT int
nbuf_composite_read(struct nbuf_composite *c, void *dst, size_t n)
{
    if (unlikely(!c || (!dst && n)))
        return -EINVAL;
    if (n > c->total)
        return -ENODATA;
    int err = copy_out(c, 0, dst, n);
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
    return copy_out(c, index, dst, n);
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
    const struct nbuf_comp_ *cp = &c->comps[find_slot(c, off)];
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

/* ---- framing ---- */

/* A pooled copy of readable bytes [off, off + n). */
static struct nbuf *
copy_new(const struct nbuf_composite *c, size_t off, size_t n)
{
    struct nbuf *b = nbuf_alloc(c->pool, n);
    if (!b)
        return NULL;
    int err = copy_out(c, off, b->mem, n);
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
    int err = room_for(out, n);
    if (err || !n)
        return err;
    /* Component i holds byte n - 1; it moves whole or is cut. */
    size_t slot = find_slot(c, n - 1);
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
        push_back(out, &c->comps[c->head]);
        pop_front(c);
    }
    struct nbuf_comp_ part = *cut;
    part.len = cut_len;
    if (need_ref)
        part.nref = 1;
    push_back(out, &part);
    if (whole) {
        /* Its references moved with part, or (nref 0) stay with its run. */
        pop_front(c);
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

/* ---- read_fd ---- */

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
        c->rd_idx = c->rd_idx + 2 < READ_SIZES ? c->rd_idx + 2 : READ_SIZES - 1;
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
    int err = room_for(c, want);
    if (err)
        return err;
    if ((err = nbuf_composite_reserve_(c, 1)))
        return err;

    /* Offer the room behind the last read or copy first, then a fresh
     * buffer for the rest. */
    struct iovec iov[2];
    int niov = 0;
    size_t room = 0;
    struct nbuf *t = c->tail;
    struct nbuf_comp_ *last = comp_last(c);
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
        push_back(c, &nc);
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
    return c->rd_idx < READ_SIZES;
}
