/* SPDX-License-Identifier: MIT */
/*
 * kernel layer: MSG_ZEROCOPY senders, a composite's memory to a socket with
 * each slice held until the error queue's completion covers its send.
 * Calls composites through the public API and composite_io.h, sysops.
 *
 * Memory moves from the composite into batches (<= IOV_MAX iovecs each,
 * split off before the send, so nothing allocates once bytes are out);
 * each sendmsg that took bytes is a record numbered as the kernel numbers
 * it. A batch is freed, releasing its slices, once fully sent and every
 * record of it completed.
 */
#include <errno.h>
#include <limits.h>
#include <time.h> /* before linux/errqueue.h, which needs struct timespec */
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>

#include "composite_io.h"
#include "internal.h"
#include "nbuf/zerocopy.h"
#include "sysops.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

struct zc_batch {
    struct zc_batch *next;
    struct nbuf_composite *data; /* holds the slices */
    size_t len, sent;
    unsigned recs; /* records not completed */
};

struct zc_rec {
    struct zc_rec *next;
    uint32_t seq; /* the kernel's number of this sendmsg */
    struct zc_batch *batch;
};

/*
 * Invariants: batches in send order; cur is the last one if it is not fully
 * sent, else NULL; every record names a batch of the list; pending is the
 * sum of the batches' len. Synchronization: the owning thread.
 */
struct nbuf_zerocopy {
    int fd;
    uint32_t next_seq;
    bool copied;
    int err; /* an error after bytes went out, for the next call */
    struct zc_batch *head, *tail, *cur;
    struct zc_rec *recs, *recs_tail;
    size_t pending;
};

NBUF_EXPORT struct nbuf_zerocopy *
nbuf_zerocopy_new(int fd)
{
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    int one = 1;
    if (nbuf_sys_.setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0) {
        if (errno == ENOPROTOOPT) /* a kernel before 4.14 */
            errno = EOPNOTSUPP;
        return NULL;
    }
    struct nbuf_zerocopy *z = calloc(1, sizeof(*z));
    if (!z) {
        errno = ENOMEM;
        return NULL;
    }
    z->fd = fd;
    return z;
}

/* Free the batches at the front that are sent and completed. */
static void
zc_release(struct nbuf_zerocopy *z)
{
    struct zc_batch **pb = &z->head, *last = NULL;
    while (*pb) {
        struct zc_batch *b = *pb;
        if (b != z->cur && !b->recs && b->sent == b->len) {
            *pb = b->next;
            z->pending -= b->len;
            nbuf_composite_free(b->data); /* the kernel is done with them */
            free(b);
        } else {
            last = b;
            pb = &b->next;
        }
    }
    z->tail = last;
}

/* A new batch of the next <= IOV_MAX memory components of @c. */
static int
zc_take(struct nbuf_zerocopy *z, struct nbuf_composite *c)
{
    struct nbuf_comp_iter_ it;
    struct iovec v;
    size_t bytes = 0;
    int n = 0;
    nbuf_composite_iov_begin_(c, &it);
    while (n < IOV_MAX && nbuf_composite_iov_next_(&it, &v)) {
        bytes += v.iov_len;
        n++;
    }
    if (!n)
        return -EOPNOTSUPP; /* a file region */
    struct zc_batch *b = calloc(1, sizeof(*b));
    struct nbuf_composite *data = b ? nbuf_composite_new(nbuf_composite_pool_(c)) : NULL;
    int err = data ? nbuf_composite_split(c, bytes, data) : -ENOMEM;
    if (err) {
        nbuf_composite_free(data);
        free(b);
        return err;
    }
    b->data = data; /* the slices' references moved here */
    b->len = bytes;
    if (z->tail)
        z->tail->next = b;
    else
        z->head = b;
    z->tail = z->cur = b;
    z->pending += bytes;
    return 0;
}

/* One sendmsg of what is left of the current batch. */
static ssize_t
zc_send_batch(struct nbuf_zerocopy *z, struct iovec *iov)
{
    struct zc_batch *b = z->cur;
    int n = nbuf_composite_iov(b->data, iov, IOV_MAX, SIZE_MAX);
    size_t skip = b->sent;
    int at = 0;
    while (skip && skip >= iov[at].iov_len)
        skip -= iov[at++].iov_len;
    iov[at].iov_base = (char *)iov[at].iov_base + skip;
    iov[at].iov_len -= skip;
    struct zc_rec *rec = z->copied ? NULL : malloc(sizeof(*rec));
    if (!z->copied && !rec)
        return -ENOMEM;
    struct msghdr m = {.msg_iov = iov + at, .msg_iovlen = (size_t)(n - at)};
    ssize_t r;
    bool reaped = false;
    for (;;) {
        r = nbuf_sys_.sendmsg(z->fd, &m, MSG_NOSIGNAL | (z->copied ? 0 : MSG_ZEROCOPY));
        if (r >= 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == ENOBUFS && !reaped && !z->copied) {
            /* The socket's option memory is full of completions: read them. */
            reaped = true;
            if (nbuf_zerocopy_reap(z, 0) > 0)
                continue;
        }
        r = -errno;
        break;
    }
    if (r <= 0) {
        free(rec);
        return r ? r : -EAGAIN;
    }
    if (rec) {
        *rec = (struct zc_rec){.seq = z->next_seq++, .batch = b};
        if (z->recs_tail)
            z->recs_tail->next = rec;
        else
            z->recs = rec;
        z->recs_tail = rec;
        b->recs++;
    }
    b->sent += (size_t)r;
    if (b->sent == b->len)
        z->cur = NULL;
    return r;
}

NBUF_EXPORT ssize_t
nbuf_zerocopy_send(struct nbuf_zerocopy *z, struct nbuf_composite *c)
{
    if (!z || !c)
        return -EINVAL;
    if (z->err) {
        int err = z->err;
        z->err = 0;
        return err;
    }
    struct iovec iov[IOV_MAX];
    size_t done = 0;
    ssize_t err = 0;
    for (;;) {
        if (!z->cur) {
            if (!nbuf_composite_readable(c))
                break;
            if ((err = zc_take(z, c)))
                break;
        }
        size_t want = z->cur->len - z->cur->sent;
        ssize_t r = zc_send_batch(z, iov);
        if (r < 0) {
            err = r;
            break;
        }
        done += (size_t)r;
        if ((size_t)r < want)
            break; /* the socket is full */
    }
    if (err && err != -EAGAIN && err != -EOPNOTSUPP && err != -ENOMEM && err != -ENOBUFS &&
        z->cur) {
        /* The socket failed: what it did not take never will be sent. */
        z->cur->sent = z->cur->len;
        z->cur = NULL;
    }
    zc_release(z); /* copied sends are finished at once */
    if (done && err && err != -EAGAIN && err != -EOPNOTSUPP)
        z->err = (int)err;
    return done ? (ssize_t)done : err;
}

/* The records numbered [lo, hi] (mod 2^32) are complete. */
static int
zc_complete(struct nbuf_zerocopy *z, uint32_t lo, uint32_t hi)
{
    int n = 0;
    struct zc_rec **pr = &z->recs, *last = NULL;
    while (*pr) {
        struct zc_rec *r = *pr;
        if ((uint32_t)(r->seq - lo) <= (uint32_t)(hi - lo)) {
            *pr = r->next;
            r->batch->recs--;
            free(r);
            n++;
        } else {
            last = r;
            pr = &r->next;
        }
    }
    z->recs_tail = last;
    return n;
}

NBUF_EXPORT int
nbuf_zerocopy_reap(struct nbuf_zerocopy *z, int timeout_ms)
{
    if (!z)
        return -EINVAL;
    int done = 0;
    if (z->recs && timeout_ms != 0) {
        struct pollfd pfd = {.fd = z->fd, .events = 0};
        if (poll(&pfd, 1, timeout_ms) < 0)
            return -errno;
    }
    while (z->recs) {
        char control[128];
        struct msghdr m = {.msg_control = control, .msg_controllen = sizeof(control)};
        if (nbuf_sys_.recvmsg(z->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            zc_release(z);
            return done ? done : -errno;
        }
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                  (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
                continue;
            const struct sock_extended_err *e = (const void *)CMSG_DATA(cm);
            if (e->ee_origin != SO_EE_ORIGIN_ZEROCOPY || e->ee_errno != 0)
                continue;
            if (e->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
                z->copied = true; /* zero-copy only costs here: copy from now */
            done += zc_complete(z, e->ee_info, e->ee_data);
        }
    }
    zc_release(z);
    return done;
}

NBUF_EXPORT size_t
nbuf_zerocopy_pending(const struct nbuf_zerocopy *z)
{
    return z ? z->pending : 0;
}

NBUF_EXPORT int
nbuf_zerocopy_copied(const struct nbuf_zerocopy *z)
{
    return z ? z->copied : -EINVAL;
}

NBUF_EXPORT int
nbuf_zerocopy_free(struct nbuf_zerocopy *z)
{
    if (!z)
        return -EINVAL;
    if (z->head)
        return -EBUSY;
    free(z);
    return 0;
}
