/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/uring.h
 * @brief io_uring: receiving into pooled buffers, zero-copy sends.
 *
 * Installed only by a library built with io_uring (meson feature
 * `io_uring`, on when liburing is found); nbuf.h does not include it.
 * Nothing here needs <liburing.h>: the ring is nbuf's own.
 *
 * A struct nbuf_uring is one io_uring instance. Its requests complete in
 * nbuf_uring_run(), which calls your callbacks on the calling thread; an
 * event loop can watch nbuf_uring_fd() for readiness instead of blocking in
 * it. One thread at a time owns a ring and everything attached to it (as
 * with a composite); buffers it hands out are ordinary buffers, released
 * on any thread.
 *
 * Receiving. A buffer group (nbuf_uring_bufs_new) is a provided-buffer ring
 * that the kernel picks from when data arrives: @c count pooled buffers of
 * one size class, registered with the ring. A receive completion hands your
 * callback a struct nbuf that already holds the bytes, read by the kernel
 * straight into pooled memory: no copy, and no buffer pinned for an idle
 * connection. The group refills its ring from the calling thread's cache in
 * batches (a quarter of the group at a time), and a buffer you release goes
 * back to its pool like any other. nbuf_uring_recv() receives once;
 * nbuf_uring_recv_multishot() keeps receiving until end of file, an error
 * or a cancel (nbuf_uring_cancel_fd()).
 *
 * Sending. A sender (nbuf_uring_sender_new) flushes composites to one
 * socket with IORING_OP_SENDMSG_ZC: the kernel sends from the slices'
 * memory itself, so nbuf_uring_sender_flush() moves the composite's memory
 * into the sender, which keeps every slice referenced until the kernel's
 * notification says it no longer reads it; then the slices are released
 * and your callback runs. Any number of flushes may be in flight: their
 * bytes leave in flush order (one send at a time is in the kernel; a short
 * send goes on from the next byte) and their callbacks run in that order.
 * Where zero-copy cannot be had (AF_UNIX sockets, a kernel before 6.1) the
 * sender copies with IORING_OP_SENDMSG instead, with the same contract,
 * unless told NBUF_URING_SEND_ZC. Zero-copy pays for large frames (tens of
 * KiB and up): the notification and the page pinning cost more than a copy
 * of a small one.
 *
 * Teardown and pools. A buffer group holds pool buffers for the ring, so
 * nbuf_pool_free() of their pool refuses with -EBUSY (and its leak report)
 * until the group is freed; likewise a sender holds its pool's buffers
 * until the sends' notifications (nbuf_uring_sender_unacked() bytes). A
 * group cannot be freed while a receive is armed on it, a sender while it
 * holds anything, nor a ring while anything is attached or in flight: each
 * free returns -EBUSY. The order is: nbuf_uring_cancel_fd() (or let the
 * peer close), nbuf_uring_run() until nbuf_uring_pending() is 0, free the
 * groups, the ring, then the pool. nbuf_uring_drain() does the first two.
 *
 * Errors are negative errno values (NULL and errno for the constructors).
 * Where the kernel cannot do it: -ENOSYS (a kernel without io_uring),
 * -EPERM (io_uring forbidden: a seccomp filter, as in many containers, or
 * the sysctl kernel.io_uring_disabled), -EOPNOTSUPP (a kernel too old for
 * what is asked: provided-buffer rings need Linux 5.19, SEND_ZC 6.1;
 * multishot receive needs 6.0, and an older kernel fails it with -EINVAL),
 * -ENOMEM (no memory, or RLIMIT_MEMLOCK too low for the memory the
 * ring pins: raise `ulimit -l`). Nothing is lost on any error: what you
 * passed stays yours.
 */
#ifndef NBUF_URING_H
#define NBUF_URING_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "composite.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque io_uring instance. */
struct nbuf_uring;
/** Opaque provided-buffer group of a ring. */
struct nbuf_uring_bufs;
/** Opaque sender: composites to one socket through a ring. */
struct nbuf_uring_sender;

/** @name The ring */
/**@{*/
/**
 * Create a ring of @p entries submission slots (rounded up to a power of
 * two by the kernel).
 *
 * @param entries submission slots, 1 to 32768. When every slot is taken, a
 *        call that needs one submits what is queued first.
 * @return the ring, or NULL with errno = EINVAL (@p entries 0 or above
 *         32768), ENOSYS (no io_uring in this kernel), EPERM (io_uring
 *         forbidden by seccomp or kernel.io_uring_disabled), EOPNOTSUPP (a
 *         kernel without the receive opcode or the opcode probe: before
 *         5.6), ENOMEM (no memory, or RLIMIT_MEMLOCK too low for the ring),
 *         or another errno of io_uring_setup() (EMFILE: no descriptor left).
 * @see nbuf_uring_free
 */
struct nbuf_uring *nbuf_uring_new(unsigned entries);

/**
 * Destroy a ring (and close its file descriptor).
 *
 * @param u the ring.
 * @return 0 (gone); -EBUSY while a buffer group or sender is attached (not
 *         freed yet), a request is in flight (nbuf_uring_pending() > 0) or
 *         the call comes from a callback of this ring's nbuf_uring_run()
 *         (nothing changed); -EINVAL for NULL.
 */
int nbuf_uring_free(struct nbuf_uring *u);

/**
 * The ring's file descriptor, for an event loop: it polls readable when
 * completions are waiting. It stays the ring's (do not close it). Requests
 * queued outside nbuf_uring_run() (receives, flushes, cancels) reach the
 * kernel at the next nbuf_uring_run(), so run once after queuing before
 * waiting on it.
 *
 * @param u the ring.
 * @return the descriptor (>= 0); -EINVAL for NULL.
 */
int nbuf_uring_fd(const struct nbuf_uring *u);

/**
 * Submit what is queued, wait for at least @p wait_nr completions (0: do
 * not wait) for at most @p timeout_ms milliseconds (-1: no limit), then
 * handle every completion that is ready, calling the callbacks on this
 * thread. Callbacks may call any function of this header;
 * nbuf_uring_free() of the ring that runs them is refused (-EBUSY).
 *
 * @param u the ring.
 * @param wait_nr completions to wait for before handling (0: handle what
 *        is ready and return).
 * @param timeout_ms the longest wait in milliseconds (negative: no limit);
 *        unused when @p wait_nr is 0.
 * @return completions handled (>= 0: each receive arrival, send completion
 *         and zero-copy notification counts one; a timeout is not an
 *         error); -EINVAL (NULL); or the -errno of io_uring_enter() when
 *         submitting or waiting (-EINTR: a signal interrupted the wait;
 *         nothing handled). A submit refused with -EBUSY or -EAGAIN (the
 *         kernel cannot take more now) is not an error: the wait and the
 *         handling go on, and the next run submits again.
 */
int nbuf_uring_run(struct nbuf_uring *u, unsigned wait_nr, int timeout_ms);

/**
 * Requests of the ring whose last completion has not been handled yet
 * (armed receives, sends and their zero-copy notifications).
 *
 * @param u the ring, or NULL.
 * @return the count (0 for NULL).
 */
unsigned nbuf_uring_pending(const struct nbuf_uring *u);

/**
 * Cancel every request of the ring on @p fd. Their callbacks run in a later
 * nbuf_uring_run() with -ECANCELED (a send that already went out completes
 * as usual). Close the fd only after: a closed fd does not end a request.
 * A zero-copy notification cannot be cancelled: it comes when the kernel
 * lets go of the memory.
 *
 * @param u the ring.
 * @param fd the descriptor whose receives and sends to cancel.
 * @return 0 (the cancel is queued; the next nbuf_uring_run() submits it);
 *         -EINVAL (NULL), -EBADF (negative @p fd), -EBUSY (no submission
 *         slot even after submitting).
 */
int nbuf_uring_cancel_fd(struct nbuf_uring *u, int fd);

/**
 * Cancel every request of the ring, then run it until nothing is pending or
 * @p timeout_ms milliseconds passed (-1: no limit). Requests that callbacks
 * arm meanwhile are not cancelled (they keep the ring pending).
 *
 * @param u the ring.
 * @param timeout_ms the longest it runs, in milliseconds (negative: no
 *        limit; 0 does not run the ring: -ETIME at once if anything is
 *        pending, the cancel left queued for the next nbuf_uring_run()).
 * @return 0 (nothing pending, also at once when nothing was: no cancel is
 *         queued then); -ETIME (still pending after the timeout: zero-copy
 *         memory in the send queue of a socket whose peer does not read
 *         stays the kernel's until the connection ends); -EINVAL (NULL);
 *         -EBUSY (no submission slot for the cancel); or what
 *         nbuf_uring_run() returned (an error other than -EINTR, which is
 *         retried).
 */
int nbuf_uring_drain(struct nbuf_uring *u, int timeout_ms);
/**@}*/

/** @name Receiving into the pool */
/**@{*/
/** Callback flag: a multishot receive stays armed after this call. */
#define NBUF_URING_MORE (1u << 0)

/**
 * A receive completion. With @p res > 0, @p b holds exactly @p res bytes
 * (reader 0, writer @p res) and the reference is yours: release it when
 * done (its pool gets it back as usual). With @p res 0 (end of file) or
 * -errno (-ECANCELED, -ECONNRESET, -ENOBUFS when the group could not be
 * refilled, -EINVAL from a kernel without multishot receive...), @p b is
 * NULL. The receive is over unless @p flags has NBUF_URING_MORE; in its
 * last call it no longer counts as armed, so the callback may free the
 * group (if no other receive is armed on it).
 *
 * @param ctx what nbuf_uring_recv() or nbuf_uring_recv_multishot() got.
 * @param b the received bytes (a new reference), or NULL when @p res <= 0.
 * @param res bytes received (> 0), 0 at end of file, or -errno.
 * @param flags NBUF_URING_MORE while a multishot receive stays armed, else
 *        0.
 */
typedef void (*nbuf_uring_recv_fn)(void *ctx, struct nbuf *b, int res, unsigned flags);

/**
 * A provided-buffer group of @p count (a power of two, 1 to 32768) pooled
 * buffers of @p buf_size bytes (rounded up to its size class, below
 * 4 GiB), registered with @p u. The ring's memory is mapped page-aligned by
 * the group. All @p count buffers are allocated at once, on the calling
 * thread; refills (a quarter of the group at a time) come from the cache of
 * the thread that runs the ring.
 *
 * @param u the ring.
 * @param p the pool; NULL means nbuf_pool_default().
 * @param buf_size the bytes of each buffer, 1 to UINT32_MAX; a receive may
 *        fill the whole size class.
 * @param count the number of buffers: a power of two, 1 to 32768.
 * @return the group, or NULL with errno = EINVAL (NULL @p u, @p count not a
 *         power of two or above 32768, @p buf_size 0, above UINT32_MAX or
 *         above the pool's max_buffer_size), ENOMEM (no memory, the
 *         pool's memory_limit, or RLIMIT_MEMLOCK too low for registering),
 *         EOPNOTSUPP (a kernel without provided-buffer rings: before 5.19),
 *         ENOSPC (65536 groups and senders attached to @p u, or no group id
 *         left), another errno of the registration, or what
 *         nbuf_pool_default() set.
 * @see nbuf_uring_bufs_free
 */
struct nbuf_uring_bufs *nbuf_uring_bufs_new(struct nbuf_uring *u, struct nbuf_pool *p,
                                            size_t buf_size, unsigned count);

/**
 * Unregister a group and release the buffers it holds (those in the
 * kernel's ring: buffers handed to callbacks are their receivers').
 *
 * @param g the group.
 * @return 0; -EBUSY while a receive is armed on it (nothing changed:
 *         cancel, then run the ring until the receive's last call);
 *         -EINVAL for NULL.
 */
int nbuf_uring_bufs_free(struct nbuf_uring_bufs *g);

/**
 * Buffers of @p g in the kernel's ring now, ready for data: fewer than its
 * count while the ids receives used wait for the next refill (a quarter of
 * the group at a time), or while the pool cannot give buffers.
 *
 * @param g the group, or NULL.
 * @return the count (0 for NULL).
 */
unsigned nbuf_uring_bufs_ready(const struct nbuf_uring_bufs *g);

/**
 * Receive once from @p fd into a buffer of @p g; @p fn runs once, in a
 * later nbuf_uring_run(). When the group ran dry (-ENOBUFS) the receive is
 * refilled and armed again without calling @p fn.
 *
 * @param g the group the buffer comes from.
 * @param fd the socket to receive from; a closed descriptor or one that is
 *        not a socket is reported to @p fn (-EBADF, -ENOTSOCK).
 * @param fn the callback (not NULL).
 * @param ctx passed to @p fn.
 * @return 0 (armed; the next nbuf_uring_run() submits it); -EINVAL (NULL
 *         @p g or @p fn), -EBADF (negative fd), -ENOMEM, -EBUSY (no
 *         submission slot even after submitting).
 */
int nbuf_uring_recv(struct nbuf_uring_bufs *g, int fd, nbuf_uring_recv_fn fn, void *ctx);

/**
 * Receive from @p fd until end of file, an error or a cancel: @p fn runs
 * for each arrival with NBUF_URING_MORE, then once without it (res 0 or
 * -errno). When the kernel ends the receive early (the group ran dry, a
 * full completion queue), it is armed again without a final call; if that
 * finds no submission slot, the arrival it came with is the last call
 * (res > 0 without NBUF_URING_MORE). Needs Linux 6.0: an older kernel ends
 * it with -EINVAL.
 *
 * @param g the group the buffers come from.
 * @param fd the socket to receive from.
 * @param fn the callback (not NULL).
 * @param ctx passed to @p fn.
 * @return as nbuf_uring_recv().
 */
int nbuf_uring_recv_multishot(struct nbuf_uring_bufs *g, int fd, nbuf_uring_recv_fn fn, void *ctx);
/**@}*/

/** @name Sending composites */
/**@{*/
/** Sender flag: zero-copy or nothing (nbuf_uring_sender_new() fails with
 *  EOPNOTSUPP where it cannot be had, and so does a send the socket
 *  refuses it for). */
#define NBUF_URING_SEND_ZC (1u << 0)
/** Sender flag: always copy (IORING_OP_SENDMSG). */
#define NBUF_URING_SEND_COPY (1u << 1)

/**
 * A flush's piece is finished: @p res is its byte count, all sent, and the
 * kernel no longer reads its memory (the slices are already released); or
 * -errno (-EPIPE, -ECONNRESET, -ECANCELED...) when it could not be sent
 * (how much of it went out before is unknown; the sender is failed).
 * A flush of more than IOV_MAX (1024) iovecs' worth is several pieces.
 *
 * @param ctx what nbuf_uring_sender_new() got.
 * @param res the piece's bytes (> 0), or the error that failed the sender:
 *        a send's -errno, -EOPNOTSUPP (NBUF_URING_SEND_ZC and a socket
 *        without zero-copy), -EIO (the kernel took 0 bytes) or -EBUSY (no
 *        submission slot for the next send). Every piece not fully sent
 *        when the sender failed gets the same error.
 */
typedef void (*nbuf_uring_sent_fn)(void *ctx, ssize_t res);

/**
 * A sender of composites to the socket @p fd (left open; yours to close
 * after the sender is freed).
 *
 * @param u the ring the sends go through.
 * @param fd a connected socket: zero-copy for AF_INET and AF_INET6 (with
 *        a kernel that has SENDMSG_ZC), a copying send otherwise.
 * @param flags 0 (zero-copy where it can be had), NBUF_URING_SEND_ZC or
 *        NBUF_URING_SEND_COPY.
 * @param fn called for each finished piece (may be NULL).
 * @param ctx passed to @p fn.
 * @return the sender, or NULL with errno = EINVAL (NULL @p u, unknown or
 *         both flags), EBADF (negative or closed fd), ENOTSOCK, EOPNOTSUPP
 *         (NBUF_URING_SEND_ZC and a kernel without SENDMSG_ZC, before 6.1,
 *         or a socket that is not AF_INET/AF_INET6), ENOMEM, or another
 *         errno of getsockopt(SO_DOMAIN).
 * @see nbuf_uring_sender_free
 */
struct nbuf_uring_sender *nbuf_uring_sender_new(struct nbuf_uring *u, int fd, unsigned flags,
                                                nbuf_uring_sent_fn fn, void *ctx);

/**
 * Queue the memory of @p c for sending: it moves out of @p c (which is left
 * empty, or starting with the file region that stopped the flush) into the
 * sender, without a copy; the sends start at once (the next
 * nbuf_uring_run() submits them). File regions are not sent: a composite
 * that starts with one is refused (flush it with nbuf_composite_writev()).
 *
 * @param s the sender.
 * @param c the composite whose memory moves (its slices' references move
 *        with it; they are released when their piece is finished).
 * @return the bytes taken (0 when @p c is empty); -EINVAL (NULL),
 *         -EOPNOTSUPP (a file region first; nothing taken), -ENOMEM
 *         (nothing taken by this piece: when an earlier piece of the call
 *         was taken, the call returns its bytes instead and the rest stays
 *         in @p c), or the error that failed the sender before (-EPIPE,
 *         -ECONNRESET, -ECANCELED, -EIO, -EBUSY...; nothing taken: a
 *         failed sender takes nothing more).
 */
ssize_t nbuf_uring_sender_flush(struct nbuf_uring_sender *s, struct nbuf_composite *c);

/**
 * Bytes flushed whose memory the sender still holds (not sent yet, or
 * sent and waiting for the kernel's notification, or failed and not
 * finished yet: pieces finish in flush order, after the send in the
 * kernel).
 *
 * @param s the sender, or NULL.
 * @return the bytes (0 for NULL).
 */
size_t nbuf_uring_sender_unacked(const struct nbuf_uring_sender *s);

/**
 * Whether the sender sends zero-copy. Without NBUF_URING_SEND_ZC it turns
 * to copying for good when a send is refused with -EOPNOTSUPP, or when the
 * kernel reports that it copied a zero-copy send anyway (Linux 6.2 and
 * later report it: loopback, or a device without scatter-gather), as the
 * MSG_ZEROCOPY sender does: zero-copy then only adds its costs.
 *
 * @param s the sender.
 * @return 1 when the sender sends zero-copy, 0 when it copies; -EINVAL for
 *         NULL.
 */
int nbuf_uring_sender_zerocopy(const struct nbuf_uring_sender *s);

/**
 * How many zero-copy sends the kernel reported it copied (their
 * notifications carry IORING_NOTIF_USAGE_ZC_COPIED; 0 on kernels before
 * 6.2, which do not report). With NBUF_URING_SEND_ZC the sender keeps
 * sending zero-copy and this count keeps growing.
 *
 * @param s the sender.
 * @return the count (0 for NULL).
 */
unsigned nbuf_uring_sender_copied(const struct nbuf_uring_sender *s);

/**
 * Destroy a sender (the socket stays open).
 *
 * @param s the sender.
 * @return 0; -EBUSY while it holds bytes (nbuf_uring_sender_unacked() > 0:
 *         run the ring, or drain it) or when called from its own callback;
 *         -EINVAL for NULL.
 */
int nbuf_uring_sender_free(struct nbuf_uring_sender *s);
/**@}*/

#ifdef __cplusplus
}
#endif

#endif /* NBUF_URING_H */
