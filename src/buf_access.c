/* SPDX-License-Identifier: MIT */
/*
 * Buffers, once allocated: cursors and direct access, growth (moving to a
 * larger class), bulk and typed (big- and little-endian) access, search and
 * fd IO. Invariant kept: reader <= writer <= capacity <= max_capacity. Calls
 * buf.c for the memory of a growth and the release of the old one.
 */
#include <endian.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

/* Netty's growth schedule: double up to 4 MiB, then 4 MiB steps. */
#define GROWTH_THRESHOLD ((size_t)4 << 20)

/* ---- cursors and direct access ---- */

/* Refuse NULL and released buffers (reported): the guard of every function
 * that reads or writes bytes or cursors. */
#define CHECK_LIVE(b, op, ret)                                                                     \
    do {                                                                                           \
        if (unlikely(!(b)))                                                                        \
            return ret;                                                                            \
        if (unlikely(nbuf_is_dead_(b))) {                                                          \
            nbuf_buf_dead_((b), (op));                                                             \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

NBUF_EXPORT size_t
nbuf_capacity(const struct nbuf *b)
{
    return b->capacity;
}

NBUF_EXPORT size_t
nbuf_max_capacity(const struct nbuf *b)
{
    return b->max_capacity;
}

NBUF_EXPORT size_t
nbuf_reader_index(const struct nbuf *b)
{
    return b->reader;
}

NBUF_EXPORT size_t
nbuf_writer_index(const struct nbuf *b)
{
    return b->writer;
}

NBUF_EXPORT size_t
nbuf_readable(const struct nbuf *b)
{
    return b->writer - b->reader;
}

NBUF_EXPORT size_t
nbuf_writable(const struct nbuf *b)
{
    return b->capacity - b->writer;
}

NBUF_EXPORT int
nbuf_set_indices(struct nbuf *b, size_t reader, size_t writer)
{
    CHECK_LIVE(b, "nbuf_set_indices", -EINVAL);
    if (reader > writer || writer > b->capacity)
        return -EINVAL;
    b->reader = reader;
    b->writer = writer;
    return 0;
}

NBUF_EXPORT void
nbuf_clear(struct nbuf *b)
{
    CHECK_LIVE(b, "nbuf_clear", );
    b->reader = 0;
    b->writer = 0;
}

NBUF_EXPORT int
nbuf_skip(struct nbuf *b, size_t n)
{
    CHECK_LIVE(b, "nbuf_skip", -EINVAL);
    if (n > b->writer - b->reader)
        return -ENODATA;
    b->reader += n;
    return 0;
}

NBUF_EXPORT int
nbuf_discard_read(struct nbuf *b)
{
    CHECK_LIVE(b, "nbuf_discard_read", -EINVAL);
    if (b->reader == 0)
        return 0;
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    memmove(b->mem, b->mem + b->reader, b->writer - b->reader);
    b->writer -= b->reader;
    b->reader = 0;
    return 0;
}

NBUF_EXPORT const uint8_t *
nbuf_data(const struct nbuf *b)
{
    if (unlikely(!b || nbuf_is_dead_(b))) {
        if (b)
            nbuf_buf_dead_(b, "nbuf_data");
        errno = EINVAL;
        return NULL;
    }
    return b->mem + b->reader;
}

/* New capacity for at least @need bytes, Netty-style, bounded by max. */
static size_t
grown_capacity(size_t need, size_t max)
{
    size_t cap;
    if (need > GROWTH_THRESHOLD) {
        if (nbuf_add_overflow_(need, GROWTH_THRESHOLD - 1, &cap))
            return max;
        cap -= cap % GROWTH_THRESHOLD;
    } else {
        cap = 64;
        while (cap < need)
            cap <<= 1;
    }
    return cap < max ? cap : max;
}

/* Move @b to a larger class: its header keeps its identity (and its leak
 * record), the old memory leaves with nb's header. */
static int
grow(struct nbuf *b, size_t need)
{
    struct nbuf *nb =
        nbuf_buf_alloc_untracked_(b->pool, grown_capacity(need, b->max_capacity), b->max_capacity);
    if (!nb)
        return -ENOMEM;
    /* Only the written bytes [0, writer): never the new length. */
    memcpy(nb->mem, b->mem, b->writer);
    struct nbuf tmp = *b;
    b->mem = nb->mem;
    b->capacity = nb->capacity;
    b->kind = nb->kind;
    b->szind = nb->szind;
    b->slab = nb->slab;
    b->handle = nb->handle;
    nbuf_buf_set_slow_(b, nb->slow | (b->ext != NULL));
    b->tid = nb->tid;
    b->requested = nb->requested;
    nb->mem = tmp.mem;
    nb->capacity = tmp.capacity;
    nb->kind = tmp.kind;
    nb->szind = tmp.szind;
    nb->slab = tmp.slab;
    nb->handle = tmp.handle;
    nbuf_buf_set_slow_(nb, tmp.slow);
    nb->tid = tmp.tid;
    nb->requested = tmp.requested;
    nbuf_release(nb);
    return 0;
}

NBUF_EXPORT int
nbuf_ensure_writable(struct nbuf *b, size_t n)
{
    CHECK_LIVE(b, "nbuf_ensure_writable", -EINVAL);
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    size_t need;
    if (nbuf_add_overflow_(b->writer, n, &need) || need > b->max_capacity)
        return -ENOBUFS;
    if (need <= b->capacity)
        return 0;
    /* Views and wrapped or mapped memory cannot move. */
    if (b->kind > NBUF_KIND_BYPASS)
        return -ENOBUFS;
    if (atomic_load_explicit(&b->nviews, memory_order_relaxed)) {
        /* Viewed: every view holds a reference, so a count of 1 (ours)
         * proves none is left (acquire: their last reads happened before). */
        if (atomic_load_explicit(&b->refcnt, memory_order_acquire) > 1)
            return -ENOBUFS;
        atomic_store_explicit(&b->nviews, 0, memory_order_relaxed);
    }
    return grow(b, need);
}

NBUF_EXPORT uint8_t *
nbuf_reserve(struct nbuf *b, size_t n)
{
    int err = nbuf_ensure_writable(b, n);
    if (err) {
        errno = -err;
        return NULL;
    }
    return b->mem + b->writer;
}

NBUF_EXPORT int
nbuf_commit(struct nbuf *b, size_t n)
{
    CHECK_LIVE(b, "nbuf_commit", -EINVAL);
    size_t w;
    if (nbuf_add_overflow_(b->writer, n, &w) || w > b->capacity)
        return -EINVAL;
    b->writer = w;
    return 0;
}

/* ---- bulk access ---- */

static inline int
buf_put(struct nbuf *b, const void *src, size_t n)
{
    CHECK_LIVE(b, "nbuf_write", -EINVAL);
    if (unlikely(n > b->capacity - b->writer || (b->flags & NBUF_F_READONLY))) {
        int err = nbuf_ensure_writable(b, n);
        if (err)
            return err;
    }
    if (likely(n))
        memcpy(b->mem + b->writer, src, n);
    b->writer += n;
    return 0;
}

static inline int
buf_take(struct nbuf *b, void *dst, size_t n)
{
    CHECK_LIVE(b, "nbuf_read", -EINVAL);
    if (unlikely(n > b->writer - b->reader))
        return -ENODATA;
    if (likely(n))
        memcpy(dst, b->mem + b->reader, n);
    b->reader += n;
    return 0;
}

static inline int
buf_get(const struct nbuf *b, size_t index, void *dst, size_t n)
{
    CHECK_LIVE(b, "nbuf_get", -EINVAL);
    if (unlikely(index > b->writer || n > b->writer - index))
        return -ENODATA;
    if (likely(n))
        memcpy(dst, b->mem + index, n);
    return 0;
}

static inline int
buf_set(struct nbuf *b, size_t index, const void *src, size_t n)
{
    CHECK_LIVE(b, "nbuf_set", -EINVAL);
    if (unlikely(b->flags & NBUF_F_READONLY))
        return -EROFS;
    if (unlikely(index > b->capacity || n > b->capacity - index))
        return -EINVAL;
    if (likely(n))
        memcpy(b->mem + index, src, n);
    return 0;
}

NBUF_EXPORT int
nbuf_write(struct nbuf *b, const void *src, size_t n)
{
    if (unlikely(!src && n))
        return -EINVAL;
    return buf_put(b, src, n);
}

NBUF_EXPORT int
nbuf_read(struct nbuf *b, void *dst, size_t n)
{
    if (unlikely(!dst && n))
        return -EINVAL;
    return buf_take(b, dst, n);
}

NBUF_EXPORT int
nbuf_get(const struct nbuf *b, size_t index, void *dst, size_t n)
{
    if (unlikely(!dst && n))
        return -EINVAL;
    return buf_get(b, index, dst, n);
}

NBUF_EXPORT int
nbuf_set(struct nbuf *b, size_t index, const void *src, size_t n)
{
    if (unlikely(!src && n))
        return -EINVAL;
    return buf_set(b, index, src, n);
}

/* ---- typed access ---- */

#define ident8(x) (x)

/* write/read/get/set of one integer type; WIRE converts host <-> wire order
 * (byte swaps are their own inverse). */
#define TYPED(name, type, WIRE)                                                                    \
    NBUF_EXPORT int nbuf_write_##name(struct nbuf *b, type v)                                      \
    {                                                                                              \
        type w = WIRE(v);                                                                          \
        return buf_put(b, &w, sizeof(w));                                                          \
    }                                                                                              \
    NBUF_EXPORT int nbuf_read_##name(struct nbuf *b, type *out)                                    \
    {                                                                                              \
        type w;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = buf_take(b, &w, sizeof(w));                                                      \
        if (likely(!err))                                                                          \
            *out = WIRE(w);                                                                        \
        return err;                                                                                \
    }                                                                                              \
    NBUF_EXPORT int nbuf_get_##name(const struct nbuf *b, size_t index, type *out)                 \
    {                                                                                              \
        type w;                                                                                    \
        if (unlikely(!out))                                                                        \
            return -EINVAL;                                                                        \
        int err = buf_get(b, index, &w, sizeof(w));                                                \
        if (likely(!err))                                                                          \
            *out = WIRE(w);                                                                        \
        return err;                                                                                \
    }                                                                                              \
    NBUF_EXPORT int nbuf_set_##name(struct nbuf *b, size_t index, type v)                          \
    {                                                                                              \
        type w = WIRE(v);                                                                          \
        return buf_set(b, index, &w, sizeof(w));                                                   \
    }

TYPED(u8, uint8_t, ident8)
TYPED(u16, uint16_t, htobe16)
TYPED(u32, uint32_t, htobe32)
TYPED(u64, uint64_t, htobe64)
TYPED(u16_le, uint16_t, htole16)
TYPED(u32_le, uint32_t, htole32)
TYPED(u64_le, uint64_t, htole64)

/* ---- search and fd IO ---- */

NBUF_EXPORT ssize_t
nbuf_index_of(const struct nbuf *b, size_t from, size_t to, uint8_t byte)
{
    CHECK_LIVE(b, "nbuf_index_of", -EINVAL);
    if (from > to)
        return -EINVAL;
    if (to > b->writer)
        to = b->writer;
    if (from >= to)
        return -ENOENT;
    const uint8_t *hit = memchr(b->mem + from, byte, to - from);
    return hit ? (ssize_t)(hit - b->mem) : -ENOENT;
}

NBUF_EXPORT ssize_t
nbuf_read_fd(struct nbuf *b, int fd, size_t max)
{
    CHECK_LIVE(b, "nbuf_read_fd", -EINVAL);
    if (max == 0)
        return -EINVAL;
    if (b->flags & NBUF_F_READONLY)
        return -EROFS;
    size_t room = b->capacity - b->writer;
    if (room < max) {
        /* Grow so that max bytes fit, bounded by max_capacity; when growth
         * fails, read into what room there is. */
        size_t want = b->max_capacity - b->writer < max ? b->max_capacity - b->writer : max;
        int err = want > room ? nbuf_ensure_writable(b, want) : 0;
        room = b->capacity - b->writer;
        if (room == 0)
            return err ? err : -ENOBUFS;
    }
    size_t n = room < max ? room : max;
    ssize_t r;
    do
        r = read(fd, b->mem + b->writer, n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    b->writer += (size_t)r;
    return r;
}

NBUF_EXPORT ssize_t
nbuf_write_fd(struct nbuf *b, int fd)
{
    CHECK_LIVE(b, "nbuf_write_fd", -EINVAL);
    size_t n = b->writer - b->reader;
    if (n == 0)
        return 0;
    const uint8_t *src = b->mem + b->reader;
    ssize_t r;
    /* send() for MSG_NOSIGNAL; write() when fd is not a socket. */
    do
        r = send(fd, src, n, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == ENOTSOCK) {
        do
            r = write(fd, src, n);
        while (r < 0 && errno == EINTR);
    }
    if (r < 0)
        return -errno;
    b->reader += (size_t)r;
    return r;
}

bool
nbuf_buf_check_(const struct nbuf *b)
{
    if (!(b->reader <= b->writer && b->writer <= b->capacity && b->capacity <= b->max_capacity))
        return false;
    if (b->magic != NBUF_MAGIC)
        return false;
    switch (b->kind) {
    case NBUF_KIND_SMALL:
    case NBUF_KIND_RUN:
        return b->slab && b->szind < b->pool->nclasses && b->capacity <= nbuf_sz_usize_(b->szind);
    case NBUF_KIND_VIEW: {
        const struct nbuf *r = b->root;
        return r && r->kind != NBUF_KIND_VIEW && atomic_load(&((struct nbuf *)r)->nviews) > 0 &&
               atomic_load(&((struct nbuf *)r)->refcnt) > 0 && b->mem >= r->mem &&
               b->mem + b->capacity <= r->mem + r->capacity;
    }
    default: return true;
    }
}
