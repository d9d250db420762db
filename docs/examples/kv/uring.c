/* SPDX-License-Identifier: MIT */
/*
 * The --io-uring loop: each worker keeps its epoll set for the listener and
 * the shutdown eventfd (accept is the epoll path's), plus its ring's fd,
 * and its connections go through an nbuf_uring ring. Each connection has a
 * multishot receive on the worker's buffer group (64 KiB pooled buffers the
 * kernel fills; an arrival of 16 KiB or more is added to the input
 * composite by reference, a smaller one copied into its tail and the
 * buffer released at once)
 * and a copying sender (IORING_OP_SENDMSG): replies are mostly a few bytes,
 * for which zero-copy's page pinning and notification cost more than the
 * copy. Parsing and commands are client.c's (kv_client_process).
 *
 * Backpressure: past KV_OUT_PAUSE bytes of unsent replies a connection
 * stops parsing; what keeps arriving is held (the multishot receive cannot
 * be paused alone), and a connection holding more than --max-query is
 * dropped. Closing cancels the fd's requests; the client is freed once its
 * receive has ended and its sender holds nothing (kv_uring_poll).
 */
#include "kv.h"

#if KV_HAVE_IO_URING
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include <nbuf/uring.h>

#define RING_ENTRIES 512
#define GROUP_BUFS 64               /* per worker; refilled a quarter at a time */
#define DRAIN_MS 10000              /* shutdown: longest wait for cancelled requests */
#define RECV_COPY_BELOW KV_READ_BIG /* smaller arrivals are copied (16 KiB) */

size_t
kv_uring_unsent(const struct kv_client *cl)
{
    return nbuf_uring_sender_unacked(cl->sender);
}

int
kv_uring_push(struct kv_client *cl)
{
    if (nbuf_composite_readable(cl->out)) {
        ssize_t n = nbuf_uring_sender_flush(cl->sender, cl->out);
        if (n < 0)
            return (int)n;
    }
    return 0;
}

/* Cancel what the connection has in the ring; kv_uring_poll frees it. */
static void
client_doom(struct kv_client *cl)
{
    if (!cl->dying) {
        cl->dying = true;
        cl->closing = true;
        cl->w->ndying++;
    }
    if (!cl->cancelled && nbuf_uring_cancel_fd(cl->w->ring, cl->fd) == 0)
        cl->cancelled = true;
}

/* Run what is buffered and send the replies; close a closing client once
 * its replies are out, and one that piles up input while paused. */
static void
client_step(struct kv_client *cl)
{
    int r = kv_client_process(cl);

    if (!r)
        r = kv_uring_push(cl);
    if (r || (cl->closing && !kv_uring_unsent(cl)) ||
        nbuf_composite_readable(cl->in) > cl->w->srv->cfg->max_query)
        client_doom(cl);
}

static void
on_recv(void *ctx, struct nbuf *b, int res, unsigned flags)
{
    struct kv_client *cl = ctx;

    if (!(flags & NBUF_URING_MORE))
        cl->recv_armed = false;
    if (res <= 0) {
        /* End of file: send what was answered, then close (a peer that
         * never reads is closed at shutdown). Errors: close now. */
        if (res < 0 || cl->dying || !kv_uring_unsent(cl))
            client_doom(cl);
        else
            cl->closing = true;
        return;
    }
    if (cl->dying || cl->closing) {
        nbuf_release(b);
        return;
    }
    /* A small arrival is copied into the input's tail, so that an
     * incomplete command does not hold a 64 KiB buffer per few bytes. */
    if ((size_t)res < RECV_COPY_BELOW) {
        int r = nbuf_composite_add_copy(cl->in, nbuf_data(b), (size_t)res);
        nbuf_release(b);
        if (r) {
            client_doom(cl);
            return;
        }
    } else if (nbuf_composite_add(cl->in, b) != 0) {
        nbuf_release(b);
        client_doom(cl);
        return;
    }
    cl->w->now_ms = kv_now_ms();
    client_step(cl);
}

static void
on_sent(void *ctx, ssize_t res)
{
    struct kv_client *cl = ctx;

    if (cl->dying)
        return;
    if (res < 0) {
        client_doom(cl);
        return;
    }
    /* Below the pause mark again: run what waited, or finish closing. */
    if (cl->closing || (nbuf_composite_readable(cl->in) &&
                        kv_uring_unsent(cl) + nbuf_composite_readable(cl->out) < KV_OUT_PAUSE))
        client_step(cl);
}

int
kv_uring_attach(struct kv_client *cl)
{
    struct kv_worker *w = cl->w;
    int r;

    cl->sender = nbuf_uring_sender_new(w->ring, cl->fd, NBUF_URING_SEND_COPY, on_sent, cl);
    if (!cl->sender)
        return -errno;
    if ((r = nbuf_uring_recv_multishot(w->bufs, cl->fd, on_recv, cl)) != 0) {
        nbuf_uring_sender_free(cl->sender);
        cl->sender = NULL;
        return r;
    }
    cl->recv_armed = true;
    return 0;
}

/* Before close(fd): only for a client with nothing in flight. */
void
kv_uring_detach(struct kv_client *cl)
{
    int r = nbuf_uring_sender_free(cl->sender);
    if (r)
        fprintf(stderr, "nbuf-kv: nbuf_uring_sender_free: %s\n", strerror(-r));
    cl->sender = NULL;
}

static void
reap(struct kv_worker *w)
{
    struct kv_client *cl = w->clients, *next;

    for (; cl && w->ndying; cl = next) {
        next = cl->next;
        if (!cl->dying)
            continue;
        if (cl->recv_armed || kv_uring_unsent(cl)) {
            /* Cancel again: the first found no slot, or the library armed
             * the receive again (its group ran dry) after it. */
            cl->cancelled = false;
            client_doom(cl);
            continue;
        }
        w->ndying--;
        kv_client_free(cl);
    }
}

/* After the epoll events: submit, handle completions until none are ready,
 * free the connections that finished closing. */
void
kv_uring_poll(struct kv_worker *w)
{
    int n;

    do
        n = nbuf_uring_run(w->ring, 0, 0);
    while (n > 0);
    if (n < 0 && n != -EINTR && n != -EAGAIN && n != -EBUSY)
        w->error = n;
    if (w->ndying)
        reap(w);
}

/* On the worker thread as its loop ends: cancel every connection's
 * requests and wait for them, so that kv_client_free_all can free all. */
void
kv_uring_shutdown(struct kv_worker *w)
{
    int r;

    for (struct kv_client *cl = w->clients; cl; cl = cl->next)
        client_doom(cl);
    if ((r = nbuf_uring_drain(w->ring, DRAIN_MS)) != 0)
        fprintf(stderr, "nbuf-kv: nbuf_uring_drain: %s\n", strerror(-r));
    reap(w);
    kv_uring_fini(w);
}

void
kv_uring_fini(struct kv_worker *w)
{
    int r;

    if (w->bufs && (r = nbuf_uring_bufs_free(w->bufs)) != 0)
        fprintf(stderr, "nbuf-kv: nbuf_uring_bufs_free: %s\n", strerror(-r));
    else
        w->bufs = NULL;
    if (!w->bufs && w->ring && (r = nbuf_uring_free(w->ring)) != 0)
        fprintf(stderr, "nbuf-kv: nbuf_uring_free: %s\n", strerror(-r));
    else if (!w->bufs)
        w->ring = NULL;
}

int
kv_uring_init(struct kv_worker *w)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->ring};
    int r;

    if (!(w->ring = nbuf_uring_new(RING_ENTRIES)))
        goto out_errno;
    if (!(w->bufs = nbuf_uring_bufs_new(w->ring, w->srv->pool, KV_READ_MAX, GROUP_BUFS)))
        goto out_errno;
    ev.data.ptr = &w->ring;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, nbuf_uring_fd(w->ring), &ev) != 0)
        goto out_errno;
    return 0;

out_errno:
    r = -errno;
    fprintf(stderr, "nbuf-kv: io_uring unavailable: %s%s\n", strerror(-r),
            r == -ENOMEM ? " (raise ulimit -l?)" : "");
    kv_uring_fini(w);
    return r;
}
#endif
