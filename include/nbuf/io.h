/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/io.h
 * @brief Moving bytes between file descriptors inside the kernel.
 *
 * For proxies: bytes arriving on one socket leave on another without being
 * copied to user space, through a pipe pair that each thread creates once
 * and keeps (HAProxy's and nginx's splice technique).
 */
#ifndef NBUF_IO_H
#define NBUF_IO_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Move up to @p len bytes from @p in_fd to @p out_fd with splice(2) through
 * the calling thread's cached pipe pair (created on first use, closed when
 * the thread exits).
 *
 * At most one pipe's worth (64 KiB by default) is taken from @p in_fd at a
 * time, and everything taken is delivered to @p out_fd before the call
 * returns: if @p out_fd is non-blocking and full, the call waits with poll()
 * for it to drain, so no byte is ever left behind in the pipe. Like read(),
 * the call moves what is available: it goes on only while @p in_fd fills
 * each request completely, and returns once @p len bytes moved or @p in_fd
 * gave less than asked, reached end of file, or has nothing right now
 * (-EAGAIN from a non-blocking @p in_fd; a blocking one is waited for). EINTR
 * is retried; SIGPIPE is never raised (blocked in the calling thread for the
 * call unless it is ignored anyway).
 *
 * Any pair that splice(2) serves through a pipe works: sockets, pipes, and
 * regular files as the source (read from their current file offset, which
 * advances).
 *
 * @param in_fd the descriptor to read from.
 * @param out_fd the descriptor to write to.
 * @param len the most bytes to move.
 * @return bytes moved (> 0); 0 at end of file of @p in_fd with nothing
 *         moved, or when @p len is 0 (no syscall); -EAGAIN when @p in_fd had
 *         nothing to read; -EBADF (negative descriptor), -EINVAL (a pair
 *         splice cannot serve); or another -errno of splice()/pipe2()
 *         (-EMFILE: no descriptors for the pipe pair). An error of @p out_fd
 *         (-EPIPE, -ECONNRESET) is returned even after some bytes moved,
 *         because bytes already taken from @p in_fd are then lost.
 */
ssize_t nbuf_splice(int in_fd, int out_fd, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_IO_H */
