/* SPDX-License-Identifier: MIT */
/*
 * Base layer: the syscall table of the IO paths (flush, composite reads,
 * read_fd, splice, MSG_ZEROCOPY) and the SIGPIPE guard, defined in sysops.c. Calls libc.
 *
 * Tests inject partial writes, EAGAIN, EINTR, a refusing sendfile or huge
 * fake lengths through the table. It defaults to libc; an indirect call
 * costs about a nanosecond next to a syscall's ~80 ns.
 */
#ifndef NBUF_SYSOPS_H
#define NBUF_SYSOPS_H

#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/*
 * Synchronization: written only by tests, while no IO runs; read with plain
 * loads on every call.
 */
struct nbuf_sys_ops_ {
    ssize_t (*writev)(int fd, const struct iovec *iov, int iovcnt);
    ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
    ssize_t (*sendfile)(int out_fd, int in_fd, off_t *off, size_t count);
    ssize_t (*read)(int fd, void *buf, size_t count);
    ssize_t (*readv)(int fd, const struct iovec *iov, int iovcnt);
    ssize_t (*pread)(int fd, void *buf, size_t count, off_t off);
    ssize_t (*write)(int fd, const void *buf, size_t count);
    ssize_t (*splice)(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
                      unsigned flags);
    ssize_t (*recvmsg)(int fd, struct msghdr *msg, int flags);
    int (*setsockopt)(int fd, int level, int name, const void *val, socklen_t len);
};

extern struct nbuf_sys_ops_ nbuf_sys_;
/* The libc defaults (tests restore the table from this). */
extern const struct nbuf_sys_ops_ nbuf_sys_default_;

/*
 * SIGPIPE suppression for writes that have no MSG_NOSIGNAL (writev to a pipe,
 * sendfile and splice to a socket or pipe): SIGPIPE is blocked in the calling
 * thread for the duration, and a SIGPIPE the write raised is consumed before
 * the old mask comes back. Enter lazily (once per call), leave once. When
 * SIGPIPE is ignored (as servers usually set it) enter costs one sigaction
 * query instead of three signal-mask calls. Zero-initialize before use.
 */
struct nbuf_sigpipe_guard_ {
    bool checked;     /* enter ran once */
    bool active;      /* SIGPIPE blocked by enter */
    bool was_pending; /* a SIGPIPE was already pending before: leave it */
    bool epipe;       /* a write failed with EPIPE while active */
    sigset_t old;
};

/* The work of enter and leave (sysops.c), once per call each at most. */
void nbuf_sigpipe_block_(struct nbuf_sigpipe_guard_ *g);
void nbuf_sigpipe_restore_(struct nbuf_sigpipe_guard_ *g);

/* Inline tests, so a call that needed no guard pays no call for it. */
static inline void
nbuf_sigpipe_enter_(struct nbuf_sigpipe_guard_ *g)
{
    if (!g->checked)
        nbuf_sigpipe_block_(g);
}

static inline void
nbuf_sigpipe_leave_(struct nbuf_sigpipe_guard_ *g)
{
    if (g->active)
        nbuf_sigpipe_restore_(g);
}

#endif /* NBUF_SYSOPS_H */
