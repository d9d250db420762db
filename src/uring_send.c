/* SPDX-License-Identifier: MIT */
/*
 * uring layer: senders, a composite's memory to a socket by
 * IORING_OP_SENDMSG_ZC (or SENDMSG, copying, where zero-copy cannot be
 * had). Calls the ring (uring.c), composites through the public API and
 * composite_io.h, liburing.
 *
 * A flush moves the composite's memory into requests (at most IOV_MAX
 * iovecs each) that keep every slice referenced. One request at a time is
 * in the kernel, so bytes leave in order; a short send resubmits the rest.
 * A request is finished when all its bytes went out and every notification
 * (IORING_CQE_F_NOTIF: the kernel is done with the memory) came back; then
 * its slices are released and the callback runs, in flush order.
 */
#include <errno.h>
#include <stdlib.h>

#include "composite_io.h"
#include "internal.h"
#include "uring_int.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

size_t nbuf_uring_send_cap_;

struct send_req {
    struct nbuf_uring_req_ req; /* first: the ring hands this back */
    struct send_req *next;
    struct nbuf_uring_sender *s;
    struct nbuf_composite *data; /* holds the slices until finished */
    size_t total, sent;
    unsigned notifs; /* notifications still to come */
    bool in_kernel;  /* a send of it has not completed */
    bool done;       /* nothing more to send (all sent, or failed) */
    int err;
    int niov, at;   /* iov[at, niov) not fully sent */
    int cut_at;     /* the iovec the cap shortened, -1 none */
    size_t cut_len; /* its length before */
    struct msghdr msg;
    struct iovec iov[];
};

/*
 * Invariants: head..tail are the requests in flush order, none finished;
 * cur is the first that is not done (NULL: none), the only one that may be
 * in the kernel. Synchronization: the ring's owning thread.
 */
struct nbuf_uring_sender {
    struct nbuf_uring *u;
    int fd;
    bool zc;         /* SENDMSG_ZC, else SENDMSG */
    bool report;     /* ask the kernel whether it copied (Linux 6.2) */
    bool in_cb;      /* inside its callback: free refuses */
    unsigned copied; /* notifications that said the kernel copied */
    int err;         /* sticky: the first send error */
    unsigned flags;
    nbuf_uring_sent_fn fn;
    void *ctx;
    struct send_req *head, *tail, *cur;
    size_t unacked;
    unsigned reqs;
};

/* Kernel ABI of Linux 6.2, newer than liburing 2.3's copy of io_uring.h. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

static void send_complete(struct nbuf_uring_req_ *req, const struct io_uring_cqe *cqe);

/* Give the kernel what is left of @r (up to the test cap). */
static bool
send_submit(struct nbuf_uring_sender *s, struct send_req *r)
{
    struct io_uring_sqe *sqe = nbuf_uring_sqe_(s->u, &r->req);
    if (!sqe)
        return false;
    r->cut_at = -1;
    int n = r->niov - r->at;
    if (nbuf_uring_send_cap_) {
        size_t room = nbuf_uring_send_cap_;
        for (int i = r->at; i < r->niov; i++) {
            if (r->iov[i].iov_len >= room) {
                if (r->iov[i].iov_len > room) {
                    r->cut_at = i;
                    r->cut_len = r->iov[i].iov_len;
                    r->iov[i].iov_len = room;
                }
                n = i - r->at + 1;
                break;
            }
            room -= r->iov[i].iov_len;
        }
    }
    r->msg = (struct msghdr){.msg_iov = &r->iov[r->at], .msg_iovlen = (size_t)n};
    if (s->zc) {
        io_uring_prep_sendmsg_zc(sqe, s->fd, &r->msg, MSG_NOSIGNAL);
        if (s->report)
            sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
    } else
        io_uring_prep_sendmsg(sqe, s->fd, &r->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data(sqe, &r->req);
    r->in_kernel = true;
    return true;
}

/* The kernel took @n more bytes of @r. */
static void
send_advance(struct send_req *r, size_t n)
{
    r->sent += n;
    while (n && r->at < r->niov) {
        struct iovec *v = &r->iov[r->at];
        size_t k = n < v->iov_len ? n : v->iov_len;
        v->iov_base = (char *)v->iov_base + k;
        v->iov_len -= k;
        n -= k;
        if (!v->iov_len)
            r->at++;
    }
}

/* Every request not done fails with @err (none of them is in the kernel). */
static void
send_fail(struct nbuf_uring_sender *s, int err)
{
    s->err = err;
    for (struct send_req *r = s->cur; r; r = r->next) {
        r->done = true;
        r->err = err;
    }
    s->cur = NULL;
}

/* The next request goes to the kernel, or the sender fails. */
static void
send_next(struct nbuf_uring_sender *s)
{
    if (s->cur && !s->cur->in_kernel && !send_submit(s, s->cur))
        send_fail(s, -EBUSY);
}

/* Finished requests from the front: slices released, callbacks in order. */
static void
send_finish(struct nbuf_uring_sender *s)
{
    struct send_req *r;
    while ((r = s->head) && r->done && !r->in_kernel && !r->notifs) {
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->reqs--;
        s->unacked -= r->total;
        nbuf_composite_free(r->data); /* the kernel is done with them */
        ssize_t res = r->err ? r->err : (ssize_t)r->total;
        free(r);
        if (s->fn) {
            s->in_cb = true;
            s->fn(s->ctx, res);
            s->in_cb = false;
        }
    }
}

static void
send_complete(struct nbuf_uring_req_ *req, const struct io_uring_cqe *cqe)
{
    struct send_req *r = (struct send_req *)req;
    struct nbuf_uring_sender *s = r->s;
    if (cqe->flags & IORING_CQE_F_NOTIF) {
        nbuf_assert(r->notifs > 0);
        r->notifs--;
        if (s->report && ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)) {
            /* The kernel copied anyway (loopback, a device without
             * scatter-gather): zero-copy only adds its costs, so copy from
             * now on, unless zero-copy was required. */
            s->copied++;
            if (!(s->flags & NBUF_URING_SEND_ZC))
                s->zc = false;
        }
        send_finish(s);
        return;
    }
    r->in_kernel = false;
    if (cqe->flags & IORING_CQE_F_MORE)
        r->notifs++; /* the memory is the kernel's until the notification */
    if (r->cut_at >= 0)
        r->iov[r->cut_at].iov_len = r->cut_len;
    int res = cqe->res;
    if (res == -EINVAL && s->zc && s->report && !r->sent) {
        s->report = false; /* a kernel before 6.2: send without the report */
        send_next(s);
    } else if (res == -EOPNOTSUPP && s->zc && !(s->flags & NBUF_URING_SEND_ZC)) {
        s->zc = false; /* this socket has no zero-copy: copy from now on */
        send_next(s);
    } else if (res == -EINTR || res == -EAGAIN) {
        send_next(s);
    } else if (res < 0 || (res == 0 && r->sent < r->total)) {
        send_fail(s, res < 0 ? res : -EIO);
    } else {
        send_advance(r, (size_t)res);
        if (r->sent == r->total) {
            r->done = true;
            s->cur = r->next;
        }
        send_next(s);
    }
    send_finish(s);
}

NBUF_EXPORT struct nbuf_uring_sender *
nbuf_uring_sender_new(struct nbuf_uring *u, int fd, unsigned flags, nbuf_uring_sent_fn fn,
                      void *ctx)
{
    if (!u || (flags & ~(NBUF_URING_SEND_ZC | NBUF_URING_SEND_COPY)) ||
        (flags & NBUF_URING_SEND_ZC && flags & NBUF_URING_SEND_COPY)) {
        errno = EINVAL;
        return NULL;
    }
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    int domain = -1;
    socklen_t len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        return NULL; /* errno: ENOTSOCK, EBADF */
    /* Zero-copy needs the kernel's SENDMSG_ZC (6.1) and an inet socket
     * (AF_UNIX has none); elsewhere copying SENDMSG does the same job. */
    bool zc = u->has_send_zc && (domain == AF_INET || domain == AF_INET6);
    if (flags & NBUF_URING_SEND_ZC && !zc) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    struct nbuf_uring_sender *s = calloc(1, sizeof(*s));
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    s->u = u;
    s->fd = fd;
    s->zc = zc && !(flags & NBUF_URING_SEND_COPY);
    s->report = s->zc;
    s->flags = flags;
    s->fn = fn;
    s->ctx = ctx;
    u->attached++;
    return s;
}

NBUF_EXPORT ssize_t
nbuf_uring_sender_flush(struct nbuf_uring_sender *s, struct nbuf_composite *c)
{
    if (!s || !c)
        return -EINVAL;
    if (s->err)
        return s->err;
    size_t taken = 0;
    while (nbuf_composite_readable(c)) {
        /* Count the iovecs and bytes of the next request (<= IOV_MAX). */
        int niov = 0;
        size_t bytes = 0;
        struct nbuf_comp_iter_ it;
        struct iovec v;
        nbuf_composite_iov_begin_(c, &it);
        while (niov < IOV_MAX && nbuf_composite_iov_next_(&it, &v)) {
            bytes += v.iov_len;
            niov++;
        }
        if (!niov)
            return taken ? (ssize_t)taken : -EOPNOTSUPP; /* a file region */
        struct send_req *r = calloc(1, sizeof(*r) + (size_t)niov * sizeof(struct iovec));
        struct nbuf_composite *data = r ? nbuf_composite_new(nbuf_composite_pool_(c)) : NULL;
        int err = data ? nbuf_composite_split(c, bytes, data) : -ENOMEM;
        if (err) {
            nbuf_composite_free(data);
            free(r);
            return taken ? (ssize_t)taken : err;
        }
        /* The slices' references moved into the request. */
        r->req.complete = send_complete;
        r->s = s;
        r->data = data;
        r->total = bytes;
        r->niov = nbuf_composite_iov(data, r->iov, niov, SIZE_MAX);
        nbuf_assert(r->niov > 0);
        if (s->tail)
            s->tail->next = r;
        else
            s->head = r;
        s->tail = r;
        s->reqs++;
        s->unacked += bytes;
        taken += bytes;
        if (!s->cur) {
            s->cur = r;
            send_next(s);
        }
        if (s->err) {
            /* No slot for it: the sender failed. With nothing of it in
             * the kernel no completion would finish the failed pieces, so
             * finish them here (their callbacks get the error). */
            send_finish(s);
            break;
        }
    }
    return (ssize_t)taken;
}

NBUF_EXPORT size_t
nbuf_uring_sender_unacked(const struct nbuf_uring_sender *s)
{
    return s ? s->unacked : 0;
}

NBUF_EXPORT unsigned
nbuf_uring_sender_copied(const struct nbuf_uring_sender *s)
{
    return s ? s->copied : 0;
}

NBUF_EXPORT int
nbuf_uring_sender_zerocopy(const struct nbuf_uring_sender *s)
{
    return s ? s->zc : -EINVAL;
}

NBUF_EXPORT int
nbuf_uring_sender_free(struct nbuf_uring_sender *s)
{
    if (!s)
        return -EINVAL;
    if (s->reqs || s->in_cb)
        return -EBUSY;
    s->u->attached--;
    free(s);
    return 0;
}
