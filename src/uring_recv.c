/* SPDX-License-Identifier: MIT */
/*
 * uring layer: buffer groups (a provided-buffer ring of pooled buffers)
 * and the receives that take from them. Calls the ring (uring.c), buffers
 * and pools through the public API, liburing.
 *
 * slot[bid] is the buffer the kernel may fill under that id; a completion
 * hands it to the caller (the group's reference moves) and queues the id
 * for the next refill, which allocates from the calling thread's cache.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "uring_int.h"

/*
 * Invariants: every bid is either in the kernel's ring with slot[bid] a
 * buffer whose whole capacity it may fill, or in free_bids[0, nfree) with
 * slot[bid] NULL. Synchronization: the ring's owning thread.
 */
struct nbuf_uring_bufs {
    struct nbuf_uring *u;
    struct nbuf_pool *pool;
    struct io_uring_buf_ring *br; /* mmap'ed, page aligned */
    size_t br_bytes;
    size_t buf_size;
    unsigned count, batch;
    unsigned armed; /* receives not finished */
    unsigned nfree;
    uint16_t bgid;
    struct nbuf **slot;
    uint16_t *free_bids;
};

struct recv_req {
    struct nbuf_uring_req_ req; /* first: the ring hands this back */
    struct nbuf_uring_bufs *g;
    int fd;
    bool multishot;
    nbuf_uring_recv_fn fn;
    void *ctx;
};

/* Give the kernel a fresh buffer for each free id, as many as the pool
 * gives (from this thread's cache, so one batch costs no lock). */
static void
bufs_refill(struct nbuf_uring_bufs *g)
{
    int mask = io_uring_buf_ring_mask(g->count);
    int added = 0;
    while (g->nfree) {
        struct nbuf *b = nbuf_alloc(g->pool, g->buf_size);
        if (!b)
            break; /* the memory limit: try again at the next completion */
        size_t cap = nbuf_capacity(b);
        uint8_t *mem = nbuf_reserve(b, cap);
        nbuf_assert(mem);
        uint16_t bid = g->free_bids[--g->nfree];
        g->slot[bid] = b; /* the group's reference */
        io_uring_buf_ring_add(g->br, mem, cap > UINT32_MAX ? UINT32_MAX : (unsigned)cap, bid, mask,
                              added++);
    }
    if (added)
        io_uring_buf_ring_advance(g->br, added);
}

static void
bufs_release_all(struct nbuf_uring_bufs *g)
{
    for (unsigned i = 0; i < g->count; i++)
        nbuf_release(g->slot[i]);
    munmap(g->br, g->br_bytes);
    free(g->slot);
    free(g->free_bids);
    free(g);
}

NBUF_EXPORT struct nbuf_uring_bufs *
nbuf_uring_bufs_new(struct nbuf_uring *u, struct nbuf_pool *p, size_t buf_size, unsigned count)
{
    if (!u || !count || count > 32768 || (count & (count - 1)) || !buf_size ||
        buf_size > UINT32_MAX) {
        errno = EINVAL;
        return NULL;
    }
    if (!p && !(p = nbuf_pool_default()))
        return NULL;
    if (u->attached >= 65536) {
        errno = ENOSPC;
        return NULL;
    }
    int err = ENOMEM;
    struct nbuf_uring_bufs *g = calloc(1, sizeof(*g));
    if (!g)
        goto out_errno;
    g->u = u;
    g->pool = p;
    g->buf_size = buf_size;
    g->count = count;
    g->batch = count / 4 ? count / 4 : 1;
    g->slot = calloc(count, sizeof(*g->slot));
    g->free_bids = malloc(count * sizeof(*g->free_bids));
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    g->br_bytes = (count * sizeof(struct io_uring_buf) + page - 1) & ~(page - 1);
    g->br = mmap(NULL, g->br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->br == MAP_FAILED) {
        g->br = NULL;
        goto out_free;
    }
    if (!g->slot || !g->free_bids)
        goto out_unmap;
    io_uring_buf_ring_init(g->br);
    for (unsigned i = 0; i < count; i++)
        g->free_bids[i] = (uint16_t)(count - 1 - i);
    g->nfree = count;
    bufs_refill(g);
    if (g->nfree) {
        err = errno; /* the pool's: ENOMEM, or EINVAL above max_buffer_size */
        goto out_bufs;
    }
    /* A free group id: the ring's are tried from where the last one was. */
    for (unsigned tries = 0;; tries++) {
        g->bgid = (uint16_t)u->next_bgid++;
        struct io_uring_buf_reg reg = {
            .ring_addr = (unsigned long)(uintptr_t)g->br, .ring_entries = count, .bgid = g->bgid};
        int r = nbuf_uring_ops_.register_buf_ring(&u->ring, &reg, 0);
        if (r == 0)
            break;
        if (r == -EEXIST && tries < 65536)
            continue;
        /* -EINVAL: a kernel before 5.19 knows no buffer rings. -ENOMEM:
         * memory, or RLIMIT_MEMLOCK below the pinned ring. */
        err = r == -EINVAL ? EOPNOTSUPP : r == -EEXIST ? ENOSPC : -r;
        goto out_bufs;
    }
    u->attached++;
    return g;

out_bufs:
    bufs_release_all(g);
    errno = err;
    return NULL;
out_unmap:
    munmap(g->br, g->br_bytes);
out_free:
    free(g->slot);
    free(g->free_bids);
    free(g);
out_errno:
    errno = err;
    return NULL;
}

NBUF_EXPORT int
nbuf_uring_bufs_free(struct nbuf_uring_bufs *g)
{
    if (!g)
        return -EINVAL;
    if (g->armed)
        return -EBUSY;
    io_uring_unregister_buf_ring(&g->u->ring, g->bgid);
    g->u->attached--;
    bufs_release_all(g);
    return 0;
}

NBUF_EXPORT unsigned
nbuf_uring_bufs_ready(const struct nbuf_uring_bufs *g)
{
    return g ? g->count - g->nfree : 0;
}

/* ---- receives ---- */

static bool
recv_arm(struct recv_req *r)
{
    struct io_uring_sqe *sqe = nbuf_uring_sqe_(r->g->u, &r->req);
    if (!sqe)
        return false;
    if (r->multishot)
        io_uring_prep_recv_multishot(sqe, r->fd, NULL, 0, 0);
    else
        io_uring_prep_recv(sqe, r->fd, NULL, 0, 0);
    io_uring_sqe_set_data(sqe, &r->req);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = r->g->bgid;
    return true;
}

static void
recv_complete(struct nbuf_uring_req_ *req, const struct io_uring_cqe *cqe)
{
    struct recv_req *r = (struct recv_req *)req;
    struct nbuf_uring_bufs *g = r->g;
    struct nbuf *b = NULL;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        b = g->slot[bid]; /* the group's reference moves to the caller */
        g->slot[bid] = NULL;
        g->free_bids[g->nfree++] = bid;
        nbuf_assert(b);
    }
    int res = cqe->res;
    bool more = cqe->flags & IORING_CQE_F_MORE;
    if (g->nfree >= g->batch || res == -ENOBUFS)
        bufs_refill(g);
    if (res > 0 && b) {
        nbuf_commit(b, (size_t)res);
        /* A multishot receive the kernel ended (a full CQ): arm again. */
        if (!more && r->multishot)
            more = recv_arm(r);
        nbuf_uring_recv_fn fn = r->fn;
        void *ctx = r->ctx;
        if (!more) {
            g->armed--;
            free(r);
        }
        fn(ctx, b, res, more ? NBUF_URING_MORE : 0);
        return;
    }
    nbuf_release(b); /* a buffer with nothing in it (not seen, but harmless) */
    if (more)
        return;
    /* Ran dry: the refill above gave the kernel buffers, so go again. */
    if (res == -ENOBUFS && g->nfree < g->count && recv_arm(r))
        return;
    nbuf_uring_recv_fn fn = r->fn;
    void *ctx = r->ctx;
    g->armed--;
    free(r);
    fn(ctx, NULL, res, 0);
}

static int
recv_start(struct nbuf_uring_bufs *g, int fd, nbuf_uring_recv_fn fn, void *ctx, bool multishot)
{
    if (!g || !fn)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    struct recv_req *r = malloc(sizeof(*r));
    if (!r)
        return -ENOMEM;
    *r = (struct recv_req){.req.complete = recv_complete,
                           .g = g,
                           .fd = fd,
                           .multishot = multishot,
                           .fn = fn,
                           .ctx = ctx};
    if (!recv_arm(r)) {
        free(r);
        return -EBUSY;
    }
    g->armed++;
    return 0;
}

NBUF_EXPORT int
nbuf_uring_recv(struct nbuf_uring_bufs *g, int fd, nbuf_uring_recv_fn fn, void *ctx)
{
    return recv_start(g, fd, fn, ctx, false);
}

NBUF_EXPORT int
nbuf_uring_recv_multishot(struct nbuf_uring_bufs *g, int fd, nbuf_uring_recv_fn fn, void *ctx)
{
    return recv_start(g, fd, fn, ctx, true);
}
