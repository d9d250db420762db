/* SPDX-License-Identifier: MIT */
/*
 * uring layer: the ring (uring.c) as its receive and send files see it,
 * the table of liburing calls tests swap to inject failures, and the
 * request header every completion is dispatched through.
 *
 * A request's user_data is its struct nbuf_uring_req_; the ring calls
 * req->complete for each completion, so uring.c calls nothing above it.
 */
#ifndef NBUF_URING_INT_H
#define NBUF_URING_INT_H

#include <liburing.h>
#include <stdbool.h>

#include "nbuf/uring.h"

/*
 * The liburing calls that can fail for the kernel's reasons. Synchronization:
 * written only by tests, while no ring is used; read with plain loads.
 */
struct nbuf_uring_ops_ {
    int (*queue_init)(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
    struct io_uring_probe *(*get_probe)(struct io_uring *ring);
    int (*register_buf_ring)(struct io_uring *ring, struct io_uring_buf_reg *reg, unsigned flags);
};

extern struct nbuf_uring_ops_ nbuf_uring_ops_;
extern const struct nbuf_uring_ops_ nbuf_uring_ops_default_;

/* A request in flight; its completions go to complete(). */
struct nbuf_uring_req_ {
    void (*complete)(struct nbuf_uring_req_ *req, const struct io_uring_cqe *cqe);
};

/*
 * Invariants: pending counts the SQEs with a request whose final completion
 * (one without IORING_CQE_F_MORE) has not been handled; attached counts the
 * groups and senders not freed. Synchronization: the owning thread only.
 */
struct nbuf_uring {
    struct io_uring ring;
    unsigned pending;
    unsigned attached;
    unsigned next_bgid; /* next buffer group id to try */
    unsigned running;   /* inside nbuf_uring_run: callbacks may be running */
    bool has_send_zc;   /* the kernel has IORING_OP_SENDMSG_ZC */
};

/* ---- uring.c ---- */
/* A submission slot (submitting queued ones when the queue is full), its
 * user_data set to @req (NULL: a request whose completion is ignored);
 * NULL when none. A slot with a request counts as pending. */
struct io_uring_sqe *nbuf_uring_sqe_(struct nbuf_uring *u, struct nbuf_uring_req_ *req);
/* Test hook: the next this many nbuf_uring_sqe_ calls find no slot. */
extern unsigned nbuf_uring_sqe_refuse_;

/* ---- uring_send.c ---- */
/* Test hook: the most bytes one send submission offers (0: no limit), to
 * make partial sends on demand. */
extern size_t nbuf_uring_send_cap_;

#endif /* NBUF_URING_INT_H */
