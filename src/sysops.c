/* SPDX-License-Identifier: MIT */
/*
 * Base layer: the system calls of the IO paths, the table they go through
 * (libc by default; tests swap entries) and the SIGPIPE guard of writes
 * that have no MSG_NOSIGNAL. Calls libc only.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sysops.h"

/* ---- the syscall table ---- */

static ssize_t
sys_sendfile(int out_fd, int in_fd, off_t *off, size_t count)
{
    return sendfile(out_fd, in_fd, off, count);
}

static ssize_t
sys_splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned flags)
{
    return splice(fd_in, (loff_t *)off_in, fd_out, (loff_t *)off_out, len, flags);
}

#define SYS_DEFAULTS                                                                               \
    {                                                                                              \
        .writev = writev, .sendmsg = sendmsg, .sendfile = sys_sendfile, .read = read,              \
        .readv = readv, .pread = pread, .write = write, .splice = sys_splice, .recvmsg = recvmsg,  \
        .setsockopt = setsockopt,                                                                  \
    }
const struct nbuf_sys_ops_ nbuf_sys_default_ = SYS_DEFAULTS;
struct nbuf_sys_ops_ nbuf_sys_ = SYS_DEFAULTS;

/* ---- SIGPIPE ---- */

void
nbuf_sigpipe_block_(struct nbuf_sigpipe_guard_ *g)
{
    g->checked = true;
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
        return; /* a write's SIGPIPE is discarded anyway */
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    g->epipe = false;
    g->active = pthread_sigmask(SIG_BLOCK, &set, &g->old) == 0;
}

void
nbuf_sigpipe_restore_(struct nbuf_sigpipe_guard_ *g)
{
    int saved = errno;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (g->epipe && !g->was_pending) {
        /* The SIGPIPE our write raised is pending on this thread: take it. */
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    g->active = false;
    errno = saved;
}
