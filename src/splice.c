/* SPDX-License-Identifier: MIT */
/*
 * IO layer: nbuf_splice, fd -> fd inside the kernel through a per-thread
 * pipe pair. Calls sysops only.
 *
 * Each thread creates its pipe on first use and closes it at exit.
 * Invariant: the pipe is empty between calls (whatever a call takes from
 * in_fd it delivers, or on an out_fd error the pipe is thrown away), so
 * calls for different fds never see each other's bytes.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include "internal.h"
#include "sysops.h"

struct splice_pipe {
    int rd, wr;
    size_t cap; /* bytes the pipe holds */
};

static __thread struct splice_pipe *tls_pipe;
static pthread_key_t pipe_key;
static pthread_once_t pipe_once = PTHREAD_ONCE_INIT;
static int pipe_key_err;

static void
pipe_destroy(void *arg)
{
    struct splice_pipe *sp = arg;
    if (!sp)
        return;
    close(sp->rd);
    close(sp->wr);
    free(sp);
}

static void
pipe_key_create(void)
{
    pipe_key_err = pthread_key_create(&pipe_key, pipe_destroy);
}

static struct splice_pipe *
pipe_get(int *err)
{
    struct splice_pipe *sp = tls_pipe;
    if (likely(sp))
        return sp;
    pthread_once(&pipe_once, pipe_key_create);
    if (pipe_key_err) {
        *err = -pipe_key_err;
        return NULL;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        *err = -errno;
        return NULL;
    }
    sp = malloc(sizeof(*sp));
    if (!sp) {
        close(fds[0]);
        close(fds[1]);
        *err = -ENOMEM;
        return NULL;
    }
    sp->rd = fds[0];
    sp->wr = fds[1];
    int cap = fcntl(fds[1], F_GETPIPE_SZ);
    sp->cap = cap > 0 ? (size_t)cap : 65536;
    if (pthread_setspecific(pipe_key, sp)) {
        pipe_destroy(sp);
        *err = -ENOMEM;
        return NULL;
    }
    tls_pipe = sp;
    return sp;
}

/* Bytes are stuck in the pipe after an out_fd error: drop the pipe. */
static void
pipe_discard(void)
{
    pthread_setspecific(pipe_key, NULL);
    pipe_destroy(tls_pipe);
    tls_pipe = NULL;
}

NBUF_EXPORT ssize_t
nbuf_splice(int in_fd, int out_fd, size_t len)
{
    if (in_fd < 0 || out_fd < 0)
        return -EBADF;
    if (!len)
        return 0;
    if (len > SSIZE_MAX)
        len = SSIZE_MAX;
    int err = 0;
    struct splice_pipe *sp = pipe_get(&err);
    if (!sp)
        return err;
    struct nbuf_sigpipe_guard_ g = {.checked = false};
    size_t total = 0;
    while (total < len) {
        size_t want = len - total < sp->cap ? len - total : sp->cap;
        /* The pipe is empty, so filling it never blocks; in_fd's own mode
         * decides whether this waits for data. */
        ssize_t r = nbuf_sys_.splice(in_fd, NULL, sp->wr, NULL, want, SPLICE_F_MOVE);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (r == 0)
            break; /* end of file */
        size_t in_pipe = (size_t)r;
        /* Less than asked: in_fd has nothing more right now, so stop after
         * delivering this (read() semantics: never wait for more). */
        bool more = (size_t)r == want;
        while (in_pipe) {
            nbuf_sigpipe_enter_(&g);
            ssize_t w = nbuf_sys_.splice(sp->rd, NULL, out_fd, NULL, in_pipe, SPLICE_F_MOVE);
            if (w > 0) {
                in_pipe -= (size_t)w;
                total += (size_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                /* Deliver what we took: wait for out_fd to drain. */
                struct pollfd pfd = {.fd = out_fd, .events = POLLOUT};
                if (poll(&pfd, 1, -1) >= 0 || errno == EINTR)
                    continue;
            }
            err = w < 0 ? -errno : -EIO;
            if (err == -EPIPE)
                g.epipe = true;
            pipe_discard();
            nbuf_sigpipe_leave_(&g);
            return err; /* in_pipe bytes from in_fd are lost: say so */
        }
        if (!more)
            break;
    }
    nbuf_sigpipe_leave_(&g);
    return total ? (ssize_t)total : err;
}
