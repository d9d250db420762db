/* SPDX-License-Identifier: MIT */
/*
 * IO layer: the flush, a composite's readable bytes to an fd (writev_max,
 * writev). Calls the composite through composite_io.h, buffers, copy.h,
 * sysops.
 *
 * Memory goes out in batches of <= IOV_MAX iovecs and <= SSIZE_MAX bytes
 * (sendmsg+MSG_NOSIGNAL on sockets, writev otherwise), runs of tiny
 * components through a pooled staging copy; file regions by sendfile or
 * pread+write. Written bytes are consumed from the front, so a partial
 * write resumes at the next byte.
 */
#include <limits.h>
#include <sys/stat.h>

#include "composite_io.h"
#include "io_int.h"
#include "sysops.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Linux moves at most this much per read/write/sendfile call. */
#define RW_MAX ((size_t)0x7ffff000)
/* Largest staging copy per batch; bigger runs of tiny components take more
 * batches (each a full write, so rarely). */
#define STAGE_MAX ((size_t)256 << 10)
/* Bytes read per pread+write fallback step. */
#define PULL_MAX ((size_t)64 << 10)

/*
 * Components of at most this many bytes are copied into the staging buffer
 * when a neighbour is tiny too. Measured on a quiet machine (UNIX socketpair,
 * 64 KiB frames of S-byte slices, CPU time, staged / iovecs): 0.51 at 64 B,
 * 0.86 at 128, 0.94 at 192, 0.99 at 256, 1.05 at 384, 0.99-1.12 from 512
 * (see docs/design.md).
 */
size_t nbuf_flush_coalesce_max_ = 256;

/* ---- the flush ---- */

enum fd_mode { FD_UNKNOWN = 0, FD_SOCK, FD_PIPE, FD_OTHER };

struct flush {
    struct nbuf_composite *c;
    int fd;
    enum fd_mode mode;
    bool no_sendfile;   /* sendfile refused once in this call */
    bool short_write;   /* the last write took less than offered */
    struct nbuf *stage; /* pooled staging copy, taken on first use */
    struct nbuf_sigpipe_guard_ guard;
    struct iovec iov[IOV_MAX];
};

static void
detect_mode(struct flush *f)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        f->mode = FD_OTHER; /* the write reports the error */
    else if (S_ISSOCK(st.st_mode))
        f->mode = FD_SOCK;
    else if (S_ISFIFO(st.st_mode))
        f->mode = FD_PIPE;
    else
        f->mode = FD_OTHER;
}

/* One gathering write; sockets learn they are sockets from sendmsg. @more:
 * a file region follows at once (TCP then packs these bytes with its first
 * segment instead of sending a short one, as nginx's TCP_NOPUSH does). */
static ssize_t
write_iov(struct flush *f, int n, bool more)
{
    for (;;) {
        ssize_t r;
        if (f->mode == FD_UNKNOWN || f->mode == FD_SOCK) {
            struct msghdr m = {.msg_iov = f->iov, .msg_iovlen = (size_t)n};
            r = nbuf_sys_.sendmsg(f->fd, &m, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
            if (r < 0 && errno == ENOTSOCK && f->mode == FD_UNKNOWN) {
                detect_mode(f);
                if (f->mode == FD_SOCK)
                    f->mode = FD_OTHER;
                continue;
            }
            if (r >= 0)
                f->mode = FD_SOCK;
        } else {
            if (f->mode == FD_PIPE)
                nbuf_sigpipe_enter_(&f->guard);
            r = nbuf_sys_.writev(f->fd, f->iov, n);
        }
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EPIPE)
            f->guard.epipe = true;
        return -errno;
    }
}

/*
 * One batch of memory components from the front, within @budget bytes.
 * Adjacent memory shares an iovec; a run of two or more tiny components is
 * copied into one stretch of the staging buffer. Bytes written or -errno.
 */
static ssize_t
flush_mem(struct flush *f, size_t budget)
{
    struct nbuf_composite *c = f->c;
    struct iovec *iov = f->iov;
    const size_t tiny = nbuf_flush_coalesce_max_;
    size_t offered = 0, staged = 0;
    int n = 0;
    struct nbuf_comp_iter_ it;
    struct iovec cur; /* the component at hand, not offered yet */
    nbuf_composite_iov_begin_(c, &it);
    bool have = nbuf_composite_iov_next_(&it, &cur);
    while (have && offered < budget) {
        uint8_t *p = cur.iov_base;
        size_t k = cur.iov_len < budget - offered ? cur.iov_len : budget - offered;
        if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == (uintptr_t)p) {
            iov[n - 1].iov_len += k; /* adjacent memory */
            offered += k;
            have = nbuf_composite_iov_next_(&it, &cur);
            continue;
        }
        if (n == IOV_MAX)
            break;
        /* cur.iov_len, not k: the run below stages whole tiny components
         * only, so a big one the budget cuts short must go as a plain
         * iovec. A peek of 0 (no memory next) wraps above tiny. */
        if (cur.iov_len <= tiny && nbuf_composite_iov_peek_(&it) - 1 < tiny) {
            if (!f->stage) {
                size_t total = nbuf_composite_readable_(c);
                size_t want = total < budget ? total : budget;
                f->stage = nbuf_alloc(nbuf_composite_pool_(c), want < STAGE_MAX ? want : STAGE_MAX);
            }
            if (f->stage) {
                /* Copy the run: cheaper than an iovec per component. */
                uint8_t *dst = f->stage->mem + staged;
                size_t room = f->stage->capacity - staged, run = 0;
                size_t rest = budget - offered; /* the budget left */
                size_t lim = rest < room ? rest : room;
                for (; have; have = nbuf_composite_iov_next_(&it, &cur)) {
                    size_t len = cur.iov_len;
                    if (len > tiny || len > lim - run)
                        break;
                    nbuf_copy_small_(dst + run, cur.iov_base, len);
                    run += len;
                }
                /* The budget ends inside this tiny component: send its
                 * head (the stage had room for all of the budget). */
                if (have && cur.iov_len <= tiny && lim == rest && run < rest) {
                    nbuf_copy_small_(dst + run, cur.iov_base, rest - run);
                    run = rest;
                    have = nbuf_composite_iov_next_(&it, &cur);
                }
                if (!run)
                    break; /* the stage is full: write this batch first */
                iov[n].iov_base = dst;
                iov[n++].iov_len = run;
                staged += run;
                offered += run;
                continue;
            }
            /* No staging memory: plain iovecs still work. */
        }
        iov[n].iov_base = p;
        iov[n++].iov_len = k;
        offered += k;
        have = nbuf_composite_iov_next_(&it, &cur);
    }
    nbuf_assert(n > 0 && offered > 0);
    /* Stopped at a file region with budget left: it goes right after. */
    bool more = !have && nbuf_composite_iov_at_file_(&it) && offered < budget;
    ssize_t r = write_iov(f, n, more);
    if (r >= 0 && (size_t)r < offered)
        f->short_write = true;
    return r;
}

/*
 * sendfile refused: read the front of the file region @fs into pooled
 * memory that takes its place (so a partial write later loses nothing), and
 * let the memory path write it. 0 or -errno (-EIO when the file ended early).
 */
static int
pull_file(struct flush *f, const struct nbuf_file_seg_ *fs, size_t budget)
{
    struct nbuf_composite *c = f->c;
    size_t want = fs->len < budget ? fs->len : budget;
    if (want > PULL_MAX)
        want = PULL_MAX;
    /* Room for the memory in front, taken before a read that a pipe would
     * not give back. */
    int err = nbuf_composite_reserve_(c, 1);
    if (err)
        return err;
    struct nbuf *b = nbuf_alloc(nbuf_composite_pool_(c), want);
    if (!b)
        return -errno;
    ssize_t r;
    for (;;) {
        r = nbuf_sys_.pread(fs->fd, b->mem, want, (off_t)fs->off);
        if (r < 0 && errno == ESPIPE) /* a pipe or socket: its next bytes */
            r = nbuf_sys_.read(fs->fd, b->mem, want);
        if (r >= 0 || errno != EINTR)
            break;
    }
    if (r <= 0) {
        err = r < 0 ? -errno : -EIO;
        nbuf_release(b);
        return err;
    }
    b->writer = (size_t)r;
    /* The bytes leave the region and come back in front as memory. */
    nbuf_composite_replace_front_(c, b);
    return 0;
}

/* The file region @fs at the front: bytes sent, 0 after pulling it into
 * memory, or -errno. */
static ssize_t
flush_file(struct flush *f, const struct nbuf_file_seg_ *fs, size_t budget)
{
    size_t k = fs->len < budget ? fs->len : budget;
    if (k > RW_MAX)
        k = RW_MAX;
    if (!f->no_sendfile) {
        if (f->mode == FD_UNKNOWN)
            detect_mode(f);
        if (f->mode != FD_OTHER) /* sendfile has no MSG_NOSIGNAL */
            nbuf_sigpipe_enter_(&f->guard);
        off_t off = (off_t)fs->off;
        ssize_t r;
        do
            r = nbuf_sys_.sendfile(f->fd, fs->fd, &off, k);
        while (r < 0 && errno == EINTR);
        if (r > 0) {
            if ((size_t)r < k)
                f->short_write = true;
            return r;
        }
        if (r == 0)
            return -EIO; /* the file ended inside the region */
        if (errno != EINVAL && errno != ENOSYS && errno != ESPIPE && errno != EOPNOTSUPP) {
            if (errno == EPIPE)
                f->guard.epipe = true;
            return -errno;
        }
        f->no_sendfile = true;
    }
    int err = pull_file(f, fs, budget);
    return err ? err : 0;
}

NBUF_EXPORT ssize_t
nbuf_composite_writev_max(struct nbuf_composite *c, int fd, size_t max_bytes)
{
    if (unlikely(!c))
        return -EINVAL;
    if (unlikely(fd < 0))
        return -EBADF;
    if (!nbuf_composite_readable_(c) || !max_bytes)
        return 0;
    if (max_bytes > SSIZE_MAX)
        max_bytes = SSIZE_MAX;
    struct flush f;
    f.c = c;
    f.fd = fd;
    f.mode = FD_UNKNOWN;
    f.no_sendfile = false;
    f.stage = NULL;
    f.guard = (struct nbuf_sigpipe_guard_){.checked = false};
    size_t done = 0;
    ssize_t err = 0;
    while (nbuf_composite_readable_(c) && done < max_bytes) {
        struct nbuf_file_seg_ fs;
        ssize_t r;
        f.short_write = false;
        if (nbuf_composite_front_file_(c, &fs)) {
            r = flush_file(&f, &fs, max_bytes - done);
            if (r == 0)
                continue; /* pulled into memory: write it */
        } else {
            r = flush_mem(&f, max_bytes - done);
        }
        if (r < 0) {
            err = r;
            break;
        }
        nbuf_composite_consume_(c, (size_t)r);
        done += (size_t)r;
        if (f.short_write)
            break; /* the fd is full (or the file short): come back later */
    }
    nbuf_release(f.stage);
    nbuf_sigpipe_leave_(&f.guard);
    return done ? (ssize_t)done : err;
}

NBUF_EXPORT ssize_t
nbuf_composite_writev(struct nbuf_composite *c, int fd)
{
    return nbuf_composite_writev_max(c, fd, SIZE_MAX);
}
