/* SPDX-License-Identifier: MIT */
/*
 * uring layer: the ring, its life cycle, submission slots and the
 * completion loop; the table of liburing calls (tests inject failures
 * through it). Calls liburing only; completions go to the hook of the
 * request they belong to (uring_recv.c, uring_send.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "uring_int.h"

/* ---- the liburing table ---- */

static int
ops_queue_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    return io_uring_queue_init_params(entries, ring, p);
}

#define OPS_DEFAULTS                                                                               \
    {                                                                                              \
        .queue_init = ops_queue_init, .get_probe = io_uring_get_probe_ring,                        \
        .register_buf_ring = io_uring_register_buf_ring,                                           \
    }
const struct nbuf_uring_ops_ nbuf_uring_ops_default_ = OPS_DEFAULTS;
struct nbuf_uring_ops_ nbuf_uring_ops_ = OPS_DEFAULTS;

/* ---- life cycle ---- */

NBUF_EXPORT struct nbuf_uring *
nbuf_uring_new(unsigned entries)
{
    if (entries == 0 || entries > 32768) {
        errno = EINVAL;
        return NULL;
    }
    struct nbuf_uring *u = calloc(1, sizeof(*u));
    if (!u) {
        errno = ENOMEM;
        return NULL;
    }
    struct io_uring_params params = {0};
    int err = nbuf_uring_ops_.queue_init(entries, &u->ring, &params);
    if (err < 0) {
        /* -ENOSYS: no io_uring; -EPERM: seccomp or io_uring_disabled;
         * -ENOMEM: memory or RLIMIT_MEMLOCK (kernels before 5.12). */
        free(u);
        errno = -err;
        return NULL;
    }
    struct io_uring_probe *probe = nbuf_uring_ops_.get_probe(&u->ring);
    if (!probe || !io_uring_opcode_supported(probe, IORING_OP_RECV)) {
        err = EOPNOTSUPP; /* before Linux 5.6, or no probe (5.5) */
        goto out_ring;
    }
    u->has_send_zc = io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);
    io_uring_free_probe(probe);
    return u;

out_ring:
    if (probe)
        io_uring_free_probe(probe);
    io_uring_queue_exit(&u->ring);
    free(u);
    errno = err;
    return NULL;
}

unsigned nbuf_uring_sqe_refuse_;

NBUF_EXPORT int
nbuf_uring_free(struct nbuf_uring *u)
{
    if (!u)
        return -EINVAL;
    /* From a callback, the run that called it still reads the ring. */
    if (u->pending || u->attached || u->running)
        return -EBUSY;
    io_uring_queue_exit(&u->ring);
    free(u);
    return 0;
}

NBUF_EXPORT int
nbuf_uring_fd(const struct nbuf_uring *u)
{
    return u ? u->ring.ring_fd : -EINVAL;
}

NBUF_EXPORT unsigned
nbuf_uring_pending(const struct nbuf_uring *u)
{
    return u ? u->pending : 0;
}

/* ---- submission ---- */

struct io_uring_sqe *
nbuf_uring_sqe_(struct nbuf_uring *u, struct nbuf_uring_req_ *req)
{
    if (nbuf_uring_sqe_refuse_) {
        nbuf_uring_sqe_refuse_--;
        return NULL;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
        if (!sqe)
            return NULL;
    }
    io_uring_sqe_set_data(sqe, req); /* the prep_* calls leave user_data */
    if (req)
        u->pending++;
    return sqe;
}

NBUF_EXPORT int
nbuf_uring_cancel_fd(struct nbuf_uring *u, int fd)
{
    if (!u)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    struct io_uring_sqe *sqe = nbuf_uring_sqe_(u, NULL);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data(sqe, NULL);
    return 0;
}

/* ---- completions ---- */

NBUF_EXPORT int
nbuf_uring_run(struct nbuf_uring *u, unsigned wait_nr, int timeout_ms)
{
    if (!u)
        return -EINVAL;
    int err = io_uring_submit(&u->ring);
    if (err < 0 && err != -EBUSY && err != -EAGAIN)
        return err;
    if (wait_nr) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        err = io_uring_wait_cqes(&u->ring, &cqe, wait_nr, timeout_ms < 0 ? NULL : &ts, NULL);
        if (err < 0 && err != -ETIME)
            return err;
    }
    int handled = 0;
    struct io_uring_cqe *cqe;
    u->running++;
    while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
        struct io_uring_cqe copy = *cqe;
        io_uring_cqe_seen(&u->ring, cqe);
        struct nbuf_uring_req_ *req = io_uring_cqe_get_data(&copy);
        if (!req)
            continue; /* a cancel's own completion */
        if (!(copy.flags & IORING_CQE_F_MORE)) {
            nbuf_assert(u->pending > 0);
            u->pending--;
        }
        req->complete(req, &copy); /* may submit, and free req */
        handled++;
    }
    u->running--;
    /* What the callbacks queued (re-armed receives, refills, next sends). */
    io_uring_submit(&u->ring);
    return handled;
}

static long long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

NBUF_EXPORT int
nbuf_uring_drain(struct nbuf_uring *u, int timeout_ms)
{
    if (!u)
        return -EINVAL;
    if (!u->pending)
        return 0;
    struct io_uring_sqe *sqe = nbuf_uring_sqe_(u, NULL);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data(sqe, NULL);
    long long end = now_ms() + timeout_ms;
    while (u->pending) {
        int left = 100;
        if (timeout_ms >= 0) {
            long long rest = end - now_ms();
            if (rest <= 0)
                return -ETIME;
            left = rest < 100 ? (int)rest : 100;
        }
        int r = nbuf_uring_run(u, 1, left);
        if (r < 0 && r != -EINTR)
            return r;
    }
    return 0;
}
