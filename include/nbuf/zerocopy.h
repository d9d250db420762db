/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/zerocopy.h
 * @brief MSG_ZEROCOPY: composites to plain sockets, released on completion.
 *
 * With MSG_ZEROCOPY (TCP since Linux 4.14, UDP since 5.0) sendmsg()
 * returns as soon as the kernel has pinned the pages, and keeps reading
 * them until the data has left; it tells you so later, on the socket's
 * error queue, as ranges of send numbers (SO_EE_ORIGIN_ZEROCOPY). A
 * pooled, referenced slice is exactly the memory that may be pinned that
 * long: a struct nbuf_zerocopy sends a composite's memory, keeps each
 * slice referenced until the completion that covers its send, then
 * releases it.
 *
 * Use: nbuf_zerocopy_new() on a connected socket; nbuf_zerocopy_send() the
 * composites, in order, as you would nbuf_composite_writev() (the socket
 * may be non-blocking: -EAGAIN, then again when writable); and
 * nbuf_zerocopy_reap() when the socket polls POLLERR (or with a timeout)
 * to release what the kernel has finished with. A send takes the memory
 * of up to IOV_MAX (1024) iovecs out of the composite at a time; what the
 * socket did not accept yet stays in the sender and goes first next call.
 *
 * When the kernel reports that it copied after all (SO_EE_CODE_ZEROCOPY_
 * COPIED: loopback, or a device without scatter-gather), zero-copy only
 * costs: the sender notes it (nbuf_zerocopy_copied()) and sends by plain
 * sendmsg() from then on, releasing at once.
 *
 * Zero-copy pays for large sends (tens of KiB and up); below that the
 * page pinning and the completions cost more than the copy.
 *
 * Teardown: a sender holds pool buffers until their completions, so
 * nbuf_pool_free() of their pool refuses with -EBUSY meanwhile, and
 * nbuf_zerocopy_free() too. Memory in the socket's send queue is the
 * kernel's until the peer took it or the connection ended: after close()
 * of the socket no completion can be read any more, so reap until
 * nbuf_zerocopy_pending() is 0 first. shutdown() does not end a connection
 * whose peer does not read; a reset does (connect() with AF_UNSPEC, or
 * TCP_USER_TIMEOUT), then one more nbuf_zerocopy_send() drops what was not
 * sent.
 *
 * One sender per socket, for the socket's life: the sender numbers its
 * sends from 0, as the kernel does for a new socket, so the socket must
 * carry no other MSG_ZEROCOPY send, before or during (an earlier sender's
 * included). One thread at a time owns a sender.
 */
#ifndef NBUF_ZEROCOPY_H
#define NBUF_ZEROCOPY_H

#include <stddef.h>
#include <sys/types.h>

#include "composite.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque MSG_ZEROCOPY sender for one socket. */
struct nbuf_zerocopy;

/**
 * A sender for @p fd: sets SO_ZEROCOPY on it.
 *
 * @param fd a connected TCP or UDP socket (AF_INET, AF_INET6); it stays
 *        open, with SO_ZEROCOPY set, after nbuf_zerocopy_free().
 * @return the sender, or NULL with errno = EBADF (negative or closed fd),
 *         ENOTSOCK, EOPNOTSUPP (a socket without zero-copy, such as
 *         AF_UNIX, or a kernel before 4.14), ENOMEM, or another errno of
 *         setsockopt(SO_ZEROCOPY).
 * @see nbuf_zerocopy_free
 */
struct nbuf_zerocopy *nbuf_zerocopy_new(int fd);

/**
 * Send the memory of @p c with sendmsg(MSG_ZEROCOPY | MSG_NOSIGNAL), as
 * much as the socket accepts. The bytes taken leave @p c (no copy); the
 * slices stay referenced until their completion is reaped.
 *
 * @param z the sender.
 * @param c the composite whose memory is sent: up to IOV_MAX iovecs of it
 *        at a time move into the sender, the rest stays in @p c.
 * @return bytes sent (> 0, counting what the sender held from the last
 *         call, which goes first); 0 when neither @p c nor the sender has
 *         anything to send; -EAGAIN (nothing accepted; nothing lost);
 *         -EINVAL (NULL); -EOPNOTSUPP (a file region at the front of @p c:
 *         flush it with nbuf_composite_writev()); -ENOBUFS (too many sends
 *         waiting for completions even after reaping: reap, then retry);
 *         -ENOMEM; or the error of sendmsg (-EPIPE, -ECONNRESET...).
 *         An error after some bytes went out returns that count; the
 *         next call reports it (sending nothing). After an error of the
 *         socket, the bytes of the current batch it had not taken are
 *         dropped (released with their batch); what is still in @p c stays
 *         there.
 */
ssize_t nbuf_zerocopy_send(struct nbuf_zerocopy *z, struct nbuf_composite *c);

/**
 * Read the completions waiting on the socket's error queue and release
 * the slices of the sends they cover. Waits up to @p timeout_ms
 * milliseconds for one (0: do not wait; -1: no limit) when sends are
 * pending. Other errors queued on the error queue are read and dropped.
 *
 * @param z the sender.
 * @param timeout_ms the longest wait for the error queue (poll() for
 *        POLLERR) in milliseconds: 0 does not wait, negative has no limit.
 *        Nothing waits when no send is waiting for its completion.
 * @return sends completed (>= 0: each sendmsg() that took bytes counts
 *         one; 0 also after a timeout); -EINVAL (NULL); or the -errno of
 *         poll() (-EINTR) or of recvmsg() (when sends completed before the
 *         error, their count instead).
 */
int nbuf_zerocopy_reap(struct nbuf_zerocopy *z, int timeout_ms);

/**
 * Bytes the sender holds: sent and not completed, or not sent yet.
 *
 * @param z the sender, or NULL.
 * @return the bytes (0 for NULL).
 */
size_t nbuf_zerocopy_pending(const struct nbuf_zerocopy *z);

/**
 * Whether the kernel reported that it copied (SO_EE_CODE_ZEROCOPY_COPIED):
 * from then on the sender sends by plain sendmsg() and releases at once.
 *
 * @param z the sender.
 * @return 1 once the kernel reported that it copied (later sends copy); 0
 *         if not; -EINVAL for NULL.
 */
int nbuf_zerocopy_copied(const struct nbuf_zerocopy *z);

/**
 * Destroy a sender (the socket stays open).
 *
 * @param z the sender.
 * @return 0; -EBUSY while it holds bytes (nbuf_zerocopy_pending() > 0:
 *         send what is not sent yet, with any composite, even an empty one,
 *         and reap); -EINVAL for NULL.
 */
int nbuf_zerocopy_free(struct nbuf_zerocopy *z);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_ZEROCOPY_H */
