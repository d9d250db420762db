/* SPDX-License-Identifier: MIT */
/* Reading into composites (nbuf_composite_read_fd, adaptive sizes) and
 * fd-to-fd splicing through the per-thread pipe (nbuf_splice). */
#include "common.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "composite_int.h"
#include "io_int.h"
#include "sysops.h"

static void
setup(void)
{
    nbuf_sys_ = nbuf_sys_default_;
    signal(SIGPIPE, SIG_DFL);
}

static void
teardown(void)
{
    nbuf_sys_ = nbuf_sys_default_;
}

TestSuite(io, .init = setup, .fini = teardown);

static uint8_t
pat(size_t i)
{
    return (uint8_t)(i * 13 + (i >> 10));
}

static void
write_pattern(int fd, size_t from, size_t n)
{
    uint8_t tmp[4096];
    while (n) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        for (size_t i = 0; i < k; i++)
            tmp[i] = pat(from + i);
        ssize_t w = write(fd, tmp, k);
        cr_assert_gt(w, 0);
        from += (size_t)w;
        n -= (size_t)w;
    }
}

static void
assert_pattern(const struct nbuf_composite *c, size_t from, size_t n)
{
    cr_assert_eq(nbuf_composite_readable(c), n);
    uint8_t *tmp = malloc(n + 1);
    cr_assert_eq(nbuf_composite_get(c, 0, tmp, n), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(tmp[i], pat(from + i), "byte %zu", i);
    free(tmp);
    cr_assert(nbuf_composite_check_(c));
}

/* ---- read_fd ---- */

Test(io, read_fd_appends_and_eof)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int pp[2];
    cr_assert_eq(pipe2(pp, O_NONBLOCK), 0);
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), -EAGAIN);
    cr_assert_eq(nbuf_composite_readable(c), 0);
    write_pattern(pp[1], 0, 100);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), 100);
    write_pattern(pp[1], 100, 50);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), 50);
    /* Small reads pack behind each other. */
    cr_assert_eq(nbuf_composite_count(c), 1);
    assert_pattern(c, 0, 150);
    write_pattern(pp[1], 150, 10);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 4), 4, "max bounds one call");
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 4), 4);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 4), 2);
    assert_pattern(c, 0, 160);
    close(pp[1]);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), 0, "end of file");
    assert_pattern(c, 0, 160);
    close(pp[0]);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), -EBADF);
    nbuf_composite_free(c);
    t_pool_done(p);
}

Test(io, read_fd_mixed_with_copies_and_framing)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct nbuf_composite *c = nbuf_composite_new(p);
    size_t sent = 0, got = 0, framed = 0;
    uint64_t s = 1;
    while (sent < 300000) {
        size_t n = 1 + t_rand(&s) % 9000;
        write_pattern(sv[1], sent, n);
        sent += n;
        while (got < sent) {
            ssize_t r = nbuf_composite_read_fd(c, sv[0], 0);
            cr_assert_gt(r, 0);
            got += (size_t)r;
        }
        /* Cut frames off the front as a protocol decoder would. */
        while (nbuf_composite_readable(c) > 700) {
            size_t len = 1 + t_rand(&s) % 700;
            struct nbuf *f = nbuf_composite_read_slice(c, len);
            cr_assert_not_null(f);
            for (size_t i = 0; i < len; i++)
                cr_assert_eq(nbuf_data(f)[i], pat(framed + i));
            framed += len;
            nbuf_release(f);
        }
        cr_assert(nbuf_composite_check_(c));
    }
    assert_pattern(c, framed, sent - framed);
    nbuf_composite_free(c);
    close(sv[0]);
    close(sv[1]);
    t_pool_done(p);
}

Test(io, read_fd_adaptive_size)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int big = 4 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    struct nbuf_composite *c = nbuf_composite_new(p);
    size_t first = nbuf_composite_next_read_size_(c);
    cr_assert_eq(first, 2048);
    /* Full reads: grow to the maximum. */
    size_t sent = 0;
    for (int i = 0; i < 6; i++) {
        size_t want = nbuf_composite_next_read_size_(c);
        write_pattern(sv[1], sent, want);
        sent += want;
        cr_assert_eq(nbuf_composite_read_fd(c, sv[0], 0), (ssize_t)want);
        cr_assert_geq(nbuf_composite_next_read_size_(c), want);
    }
    cr_assert_eq(nbuf_composite_next_read_size_(c), 65536);
    nbuf_composite_skip(c, nbuf_composite_readable(c));
    /* Repeated small reads: shrink, one step per two. */
    for (int i = 0; i < 40; i++) {
        write_pattern(sv[1], sent, 10);
        sent += 10;
        cr_assert_eq(nbuf_composite_read_fd(c, sv[0], 0), 10);
    }
    cr_assert_eq(nbuf_composite_next_read_size_(c), 64);
    /* One small read alone does not shrink; a full one grows again. */
    write_pattern(sv[1], sent, 64);
    sent += 64;
    cr_assert_eq(nbuf_composite_read_fd(c, sv[0], 0), 64);
    cr_assert_eq(nbuf_composite_next_read_size_(c), 256);
    nbuf_composite_free(c);
    close(sv[0]);
    close(sv[1]);
    t_pool_done(p);
}

static int eintr_left;
static ssize_t
readv_eintr(int fd, const struct iovec *iov, int n)
{
    if (eintr_left > 0) {
        eintr_left--;
        errno = EINTR;
        return -1;
    }
    return readv(fd, iov, n);
}

static ssize_t
readv_fail(int fd, const struct iovec *iov, int n)
{
    (void)fd;
    (void)iov;
    (void)n;
    errno = ECONNRESET;
    return -1;
}

Test(io, read_fd_eintr_and_errors)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int pp[2];
    cr_assert_eq(pipe(pp), 0);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_sys_.readv = readv_eintr;
    eintr_left = 3;
    write_pattern(pp[1], 0, 33);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), 33);
    cr_assert_eq(eintr_left, 0);
    nbuf_sys_.readv = readv_fail;
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), -ECONNRESET);
    assert_pattern(c, 0, 33);
    nbuf_composite_free(c);
    close(pp[0]);
    close(pp[1]);
    t_pool_done(p);
}

/* ---- splice ---- */

struct reader_arg {
    int fd;
    size_t want, got;
    bool ok;
};

static void *
reader(void *arg)
{
    struct reader_arg *r = arg;
    uint8_t tmp[65536];
    r->ok = true;
    while (r->got < r->want) {
        ssize_t n = read(r->fd, tmp, sizeof(tmp));
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            if (tmp[i] != pat(r->got + (size_t)i))
                r->ok = false;
        r->got += (size_t)n;
    }
    return NULL;
}

Test(io, splice_pipe_to_socket)
{
    int in[2], sv[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    write_pattern(in[1], 0, 5000);
    cr_assert_eq(nbuf_splice(in[0], sv[0], 0), 0, "len 0");
    cr_assert_eq(nbuf_splice(in[0], sv[0], 3000), 3000);
    cr_assert_eq(nbuf_splice(in[0], sv[0], 10000), 2000);
    uint8_t buf[5000];
    size_t got = 0;
    while (got < 5000) {
        ssize_t r = read(sv[1], buf + got, 5000 - got);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    for (size_t i = 0; i < 5000; i++)
        cr_assert_eq(buf[i], pat(i));
    close(in[1]);
    cr_assert_eq(nbuf_splice(in[0], sv[0], 100), 0, "end of file");
    cr_assert_eq(nbuf_splice(-1, sv[0], 100), -EBADF);
    cr_assert_eq(nbuf_splice(in[0], -1, 100), -EBADF);
    close(in[0]);
    close(sv[0]);
    close(sv[1]);
}

Test(io, splice_nonblocking_source_eagain)
{
    int in[2], out[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, in), 0);
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(fcntl(in[0], F_SETFL, O_NONBLOCK), 0);
    cr_assert_eq(nbuf_splice(in[0], out[1], 100), -EAGAIN);
    write_pattern(in[1], 0, 70);
    cr_assert_eq(nbuf_splice(in[0], out[1], 100), 70, "what is there, then EAGAIN");
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
}

Test(io, splice_file_to_full_nonblocking_socket)
{
    char path[] = "/tmp/nbuf-splice-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    size_t n = 3 << 20;
    write_pattern(fd, 0, n);
    lseek(fd, 0, SEEK_SET);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    struct reader_arg ra = {.fd = sv[1], .want = n};
    pthread_t th;
    pthread_create(&th, NULL, reader, &ra);
    /* The socket fills up: splice waits instead of leaving bytes behind. */
    size_t moved = 0;
    while (moved < n) {
        ssize_t r = nbuf_splice(fd, sv[0], n - moved);
        cr_assert_gt(r, 0, "splice: %zd", r);
        moved += (size_t)r;
    }
    pthread_join(th, NULL);
    cr_assert_eq(ra.got, n);
    cr_assert(ra.ok);
    close(fd);
    close(sv[0]);
    close(sv[1]);
}

Test(io, splice_peer_closed_no_sigpipe)
{
    int in[2], sv[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    write_pattern(in[1], 0, 1000);
    ssize_t r = nbuf_splice(in[0], sv[0], 1000);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "splice: %zd", r);
    sigset_t s;
    sigpending(&s);
    cr_assert(!sigismember(&s, SIGPIPE));
    /* The thread's pipe was replaced: a later splice sees no stale bytes. */
    int sv2[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
    write_pattern(in[1], 0, 10);
    close(in[1]);
    cr_assert_eq(nbuf_splice(in[0], sv2[0], 100), 10);
    uint8_t buf[32];
    cr_assert_eq(read(sv2[1], buf, sizeof(buf)), 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(buf[i], pat((size_t)i));
    close(in[0]);
    close(sv[0]);
    close(sv2[0]);
    close(sv2[1]);
}

static void *
splice_thread(void *arg)
{
    int *fds = arg;
    ssize_t r = nbuf_splice(fds[0], fds[1], 100);
    T_CHECK(r == 100);
    return NULL;
}

Test(io, splice_per_thread_pipes)
{
    int in[2], out[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(pipe(out), 0);
    write_pattern(in[1], 0, 300);
    int fds[2] = {in[0], out[1]};
    for (int i = 0; i < 3; i++)
        t_run_thread(splice_thread, fds); /* each creates and closes its pipe */
    t_thread_assert_ok();
    uint8_t buf[300];
    cr_assert_eq(read(out[0], buf, 300), 300);
    for (int i = 0; i < 300; i++)
        cr_assert_eq(buf[i], pat((size_t)i));
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
}
