/* SPDX-License-Identifier: MIT */
/*
 * Views and foreign memory: slices, duplicates and deep copies of buffers,
 * buffers wrapping caller memory (WRAP) and read-only file mappings (MAPPED).
 * A view is a recycled header (no malloc) whose mem points into its root, the
 * buffer that owns the memory; it holds one reference on the root and marks
 * root->nviews, so the root's memory neither moves nor goes away first.
 * A view of a view points at the original root. WRAP and MAPPED headers come
 * from the default pool's header cache but belong to no pool's counters.
 * Layer: buffer; calls buf.c, the pool (NULL-pool resolution), leak.c and
 * the thread cache (headers).
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A bare header from @p's cache, or calloc'd when there is no pool (the
 * default pool could not be created). Every field is set by the caller. */
static struct nbuf *
hdr_alloc(struct nbuf_pool *p)
{
    struct nbuf *h;
    if (likely(p))
        return nbuf_header_alloc_(p);
    h = calloc(1, sizeof(*h));
    if (!h) {
        errno = ENOMEM;
        return NULL;
    }
    h->magic = NBUF_MAGIC;
    return h;
}

/* Give back a header from hdr_alloc that was never initialised. */
static void
hdr_discard(struct nbuf *h, struct nbuf_pool *p)
{
    if (p) {
        h->pool = p;
        nbuf_header_free_(h);
    } else {
        free(h);
    }
}

/* Header fields every non-pooled header starts with. */
static inline void
hdr_init(struct nbuf *h, struct nbuf_pool *p, uint8_t kind, uint8_t *mem, size_t capacity)
{
    h->mem = mem;
    h->reader = 0;
    h->writer = capacity;
    h->capacity = capacity;
    h->max_capacity = capacity;
    atomic_store_explicit(&h->refcnt, 1, memory_order_relaxed);
    atomic_store_explicit(&h->nviews, 0, memory_order_relaxed);
    h->kind = kind;
    h->szind = NBUF_SZIND_HUGE;
    h->flags = p ? (p->buf_flags & NBUF_F_CHECKED) : 0;
    nbuf_buf_set_slow_(h, 1);
    h->pool = p;
    h->slab = NULL;
    h->tid = 0;
    h->handle = 0;
    h->requested = 0;
    h->root = NULL;
    h->free_fn = NULL;
    h->ext = NULL;
}

/* The common constructor: a view of [off, off + len) of @b's memory. */
static struct nbuf *
view_new(struct nbuf *b, size_t off, size_t len)
{
    struct nbuf *root = b->kind == NBUF_KIND_VIEW ? b->root : b;
    struct nbuf_pool *p = root->pool;
    struct nbuf *v = hdr_alloc(p);
    if (unlikely(!v))
        return NULL;
    /* The view's reference on the root. */
    if (unlikely(!nbuf_retain(root))) {
        int err = errno;
        hdr_discard(v, p);
        errno = err;
        return NULL;
    }
    /* Mark the root as viewed (no read-modify-write: only set here while
     * the mark is clear, which means no view exists and the caller owns the
     * root; cleared by nbuf_ensure_writable once the count shows no view
     * can be left). */
    if (!atomic_load_explicit(&root->nviews, memory_order_relaxed))
        atomic_store_explicit(&root->nviews, 1, memory_order_relaxed);
    hdr_init(v, p, NBUF_KIND_VIEW, b->mem + off, len);
    v->flags |= root->flags & NBUF_F_READONLY;
    v->root = root;
    if (p) {
        nbuf_views_account_(p, true);
        if (unlikely(p->leaks))
            nbuf_leak_track_(p, v);
    }
    return v;
}

NBUF_EXPORT struct nbuf *
nbuf_slice(struct nbuf *b, size_t off, size_t len)
{
    if (unlikely(!b)) {
        errno = EINVAL;
        return NULL;
    }
    if (unlikely(nbuf_is_dead_(b))) {
        errno = -nbuf_buf_dead_(b, "nbuf_slice");
        return NULL;
    }
    /* Within [0, writer]: never the unwritten tail or the class slack. */
    if (off > b->writer || len > b->writer - off) {
        errno = EINVAL;
        return NULL;
    }
    return view_new(b, off, len);
}

NBUF_EXPORT struct nbuf *
nbuf_read_slice(struct nbuf *b, size_t n)
{
    if (unlikely(!b)) {
        errno = EINVAL;
        return NULL;
    }
    if (unlikely(nbuf_is_dead_(b))) {
        errno = -nbuf_buf_dead_(b, "nbuf_read_slice");
        return NULL;
    }
    if (n > b->writer - b->reader) {
        errno = ENODATA;
        return NULL;
    }
    struct nbuf *v = view_new(b, b->reader, n);
    if (v)
        b->reader += n;
    return v;
}

NBUF_EXPORT struct nbuf *
nbuf_duplicate(struct nbuf *b)
{
    if (unlikely(!b)) {
        errno = EINVAL;
        return NULL;
    }
    if (unlikely(nbuf_is_dead_(b))) {
        errno = -nbuf_buf_dead_(b, "nbuf_duplicate");
        return NULL;
    }
    struct nbuf *v = view_new(b, 0, b->capacity);
    if (v) {
        v->reader = b->reader;
        v->writer = b->writer;
    }
    return v;
}

NBUF_EXPORT struct nbuf *
nbuf_copy(const struct nbuf *b, size_t off, size_t len)
{
    if (unlikely(!b)) {
        errno = EINVAL;
        return NULL;
    }
    if (unlikely(nbuf_is_dead_(b))) {
        errno = -nbuf_buf_dead_(b, "nbuf_copy");
        return NULL;
    }
    if (off > b->writer || len > b->writer - off) {
        errno = EINVAL;
        return NULL;
    }
    /* b->pool: the buffer's or its root's pool; for wrapped and mapped
     * memory the default pool (or NULL, which nbuf_alloc reads the same). */
    struct nbuf *c = nbuf_alloc(b->pool, len);
    if (!c)
        return NULL;
    if (len)
        memcpy(c->mem, b->mem + off, len);
    c->writer = len;
    return c;
}

NBUF_EXPORT struct nbuf *
nbuf_wrap(void *data, size_t len, void (*free_fn)(void *data, void *ctx), void *ctx)
{
    if (!data && len) {
        errno = EINVAL;
        return NULL;
    }
    struct nbuf_pool *p = nbuf_pool_resolve_(NULL);
    struct nbuf *h = hdr_alloc(p);
    if (!h)
        return NULL;
    hdr_init(h, p, NBUF_KIND_WRAP, data, len);
    h->free_fn = free_fn;
    h->slab = ctx;
    if (p && unlikely(p->leaks))
        nbuf_leak_track_(p, h);
    return h;
}

NBUF_EXPORT struct nbuf *
nbuf_map_file(int fd, off_t off, size_t len)
{
    struct stat st;
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    if (fstat(fd, &st) != 0)
        return NULL;
    size_t end;
    if (off < 0 || nbuf_add_overflow_((size_t)off, len, &end) || (off_t)end < 0 ||
        (off_t)end > st.st_size) {
        errno = EINVAL;
        return NULL;
    }
    /* An empty range maps nothing, but its buffer still needs a non-NULL
     * address (nbuf_data() and views do pointer arithmetic on it). */
    static uint8_t empty_map[1];
    uint8_t *mem = empty_map;
    if (len) {
        /* mmap wants a page-aligned offset: map from the page holding off. */
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t delta = (size_t)off & (page - 1);
        void *map = mmap(NULL, len + delta, PROT_READ, MAP_SHARED, fd, off - (off_t)delta);
        if (map == MAP_FAILED)
            return NULL;
        mem = (uint8_t *)map + delta;
    }
    struct nbuf_pool *p = nbuf_pool_resolve_(NULL);
    struct nbuf *h = hdr_alloc(p);
    if (!h) {
        if (len) {
            size_t page = (size_t)sysconf(_SC_PAGESIZE);
            size_t delta = (size_t)off & (page - 1);
            munmap(mem - delta, len + delta);
        }
        errno = ENOMEM;
        return NULL;
    }
    hdr_init(h, p, NBUF_KIND_MAPPED, mem, len);
    h->flags |= NBUF_F_READONLY;
    if (p && unlikely(p->leaks))
        nbuf_leak_track_(p, h);
    return h;
}
