/* SPDX-License-Identifier: MIT */
/* The flush (nbuf_composite_writev): partial writes resuming at the next
 * byte, EAGAIN/EINTR/errors, IOV_MAX and SSIZE_MAX batches, sendfile with
 * its fallback, truncated files, offsets past 4 GiB, SIGPIPE, coalescing
 * (CHECKLIST D23-D32). Syscalls are faked through nbuf_sys_ (sysops.h). */
#include "common.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "composite_int.h"
#include "io_int.h"
#include "sysops.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* ---- a scripted sink behind the syscall table ---- */

#define SCRIPT 64
static struct {
    uint8_t *out; /* bytes "written" */
    size_t n, cap;
    unsigned calls;    /* writev + sendmsg */
    unsigned sendmsgs; /* of which sendmsg */
    unsigned writevs;
    int max_iov;          /* most iovecs in one call */
    bool empty_iov;       /* an iovec of length 0 was offered */
    bool nosignal;        /* every sendmsg had MSG_NOSIGNAL */
    unsigned more_mask;   /* bit k: the k-th sendmsg had MSG_MORE */
    size_t max_bytes;     /* most bytes offered in one call */
    bool fake;            /* do not touch the memory (fake lengths) */
    size_t limit[SCRIPT]; /* bytes the k-th call accepts (0 = script over) */
    int err[SCRIPT];      /* errno the k-th call fails with */
    unsigned sendfiles;
    off_t sf_off[SCRIPT];
    size_t sf_count[SCRIPT];
    int sf_err;   /* every sendfile fails with this */
    bool sf_fake; /* sendfile: record and accept without IO */
} sink;

static size_t
iov_sum(const struct iovec *iov, int n)
{
    size_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (!iov[i].iov_len)
            sink.empty_iov = true;
        cr_assert(!__builtin_add_overflow(sum, iov[i].iov_len, &sum), "iovec sum overflows");
    }
    return sum;
}

static ssize_t
fake_writev(int fd, const struct iovec *iov, int n)
{
    (void)fd;
    unsigned k = sink.calls++;
    if (n > sink.max_iov)
        sink.max_iov = n;
    size_t sum = iov_sum(iov, n);
    if (sum > sink.max_bytes)
        sink.max_bytes = sum;
    if (k < SCRIPT && sink.err[k]) {
        errno = sink.err[k];
        return -1;
    }
    size_t take = sum;
    if (k < SCRIPT && sink.limit[k] && sink.limit[k] < take)
        take = sink.limit[k];
    if (take > SSIZE_MAX)
        take = SSIZE_MAX;
    if (!sink.fake) {
        if (sink.n + take > sink.cap) {
            sink.cap = (sink.n + take) * 2;
            sink.out = realloc(sink.out, sink.cap);
        }
        size_t left = take;
        for (int i = 0; i < n && left; i++) {
            size_t c = iov[i].iov_len < left ? iov[i].iov_len : left;
            memcpy(sink.out + sink.n, iov[i].iov_base, c);
            sink.n += c;
            left -= c;
        }
    } else {
        sink.n += take;
    }
    return (ssize_t)take;
}

static ssize_t
fake_writev_counted(int fd, const struct iovec *iov, int n)
{
    sink.writevs++;
    return fake_writev(fd, iov, n);
}

static ssize_t
fake_sendmsg(int fd, const struct msghdr *m, int flags)
{
    if ((flags & MSG_MORE) && sink.sendmsgs < 32)
        sink.more_mask |= 1u << sink.sendmsgs;
    sink.sendmsgs++;
    if (!(flags & MSG_NOSIGNAL))
        sink.nosignal = false;
    return fake_writev(fd, m->msg_iov, (int)m->msg_iovlen);
}

static ssize_t
fake_sendfile(int out, int in, off_t *off, size_t count)
{
    unsigned k = sink.sendfiles++;
    if (k < SCRIPT) {
        sink.sf_off[k] = *off;
        sink.sf_count[k] = count;
    }
    if (sink.sf_err) {
        errno = sink.sf_err;
        return -1;
    }
    if (sink.sf_fake) {
        *off += (off_t)count;
        return (ssize_t)count;
    }
    return sendfile(out, in, off, count);
}

/* Counting pass-throughs to the real calls. */
static unsigned real_sendmsgs, real_writevs;
static ssize_t
count_sendmsg(int fd, const struct msghdr *m, int flags)
{
    real_sendmsgs++;
    return sendmsg(fd, m, flags);
}
static ssize_t
count_writev(int fd, const struct iovec *iov, int n)
{
    real_writevs++;
    return writev(fd, iov, n);
}

static void
sink_reset(void)
{
    free(sink.out);
    memset(&sink, 0, sizeof(sink));
    sink.nosignal = true;
}

static size_t coalesce_default = SIZE_MAX;

static void
setup(void)
{
    if (coalesce_default == SIZE_MAX)
        coalesce_default = nbuf_flush_coalesce_max_;
    sink_reset();
    nbuf_sys_ = nbuf_sys_default_;
    nbuf_flush_coalesce_max_ = coalesce_default;
    nbuf_composite_slice_copy_max_ = NBUF_COMPOSITE_COPY_MAX;
    real_sendmsgs = real_writevs = 0;
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
}

static void
use_fake_sink(void)
{
    nbuf_sys_.writev = fake_writev_counted;
    nbuf_sys_.sendmsg = fake_sendmsg;
}

static void
teardown(void)
{
    nbuf_sys_ = nbuf_sys_default_;
    nbuf_flush_coalesce_max_ = coalesce_default;
    nbuf_composite_slice_copy_max_ = NBUF_COMPOSITE_COPY_MAX;
    free(sink.out);
    sink.out = NULL;
}

TestSuite(flush, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static unsigned frees[4096];
static void
wrap_free(void *data, void *ctx)
{
    frees[(uintptr_t)ctx]++;
    free(data);
}

static uint8_t
pat(size_t i)
{
    return (uint8_t)(i * 7 + (i >> 9));
}

/* @n components of @len bytes each, each its own wrapped buffer with a
 * counting free callback; the bytes read pat(0 .. n*len). */
static struct nbuf_composite *
wrapped_composite(struct nbuf_pool *p, unsigned n, size_t len)
{
    struct nbuf_composite *c = nbuf_composite_new(p);
    memset(frees, 0, sizeof(frees));
    for (unsigned i = 0; i < n; i++) {
        uint8_t *m = malloc(len);
        for (size_t k = 0; k < len; k++)
            m[k] = pat(i * len + k);
        struct nbuf *b = nbuf_wrap(m, len, wrap_free, (void *)(uintptr_t)i);
        cr_assert_eq(nbuf_composite_add(c, b), 0);
    }
    cr_assert_eq(nbuf_composite_count(c), n);
    return c;
}

static void
assert_sink_pattern(size_t from, size_t n)
{
    cr_assert_geq(sink.n, from + n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(sink.out[from + i], pat(from + i), "byte %zu", from + i);
}

static int
devnull(void)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    return fd;
}

/* ---- D23, D24: partial writes ---- */

Test(flush, partial_inside_component_37_D23)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    for (int coalesce = 0; coalesce < 2; coalesce++) {
        sink_reset();
        use_fake_sink();
        nbuf_flush_coalesce_max_ = coalesce ? coalesce_default : 0;
        struct nbuf_composite *c = wrapped_composite(p, 100, 100);
        sink.limit[0] = 37 * 100 + 42;
        cr_assert_eq(nbuf_composite_writev(c, fd), 37 * 100 + 42);
        for (unsigned i = 0; i < 100; i++)
            cr_assert_eq(frees[i], i < 37 ? 1 : 0, "component %u freed %u times", i, frees[i]);
        cr_assert_eq(nbuf_composite_readable(c), 10000 - 3742);
        cr_assert_eq(nbuf_composite_count(c), 63);
        assert_sink_pattern(0, 3742);
        cr_assert_eq(nbuf_composite_writev(c, fd), 10000 - 3742);
        assert_sink_pattern(0, 10000);
        cr_assert_eq(sink.n, 10000);
        cr_assert_eq(nbuf_composite_readable(c), 0);
        for (unsigned i = 0; i < 100; i++)
            cr_assert_eq(frees[i], 1);
        cr_assert(!sink.empty_iov);
        nbuf_composite_free(c);
        for (unsigned i = 0; i < 100; i++)
            cr_assert_eq(frees[i], 1, "released exactly once");
    }
    close(fd);
    t_pool_done(p);
}

Test(flush, partial_on_boundary_and_one_byte_D24)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    for (int coalesce = 0; coalesce < 2; coalesce++) {
        sink_reset();
        use_fake_sink();
        nbuf_flush_coalesce_max_ = coalesce ? coalesce_default : 0;
        struct nbuf_composite *c = wrapped_composite(p, 50, 64);
        sink.limit[0] = 10 * 64;
        cr_assert_eq(nbuf_composite_writev(c, fd), 640);
        cr_assert_eq(nbuf_composite_count(c), 40);
        for (unsigned i = 0; i < 50; i++)
            cr_assert_eq(frees[i], i < 10);
        /* Then one byte per call. */
        for (unsigned k = 1; k < SCRIPT; k++)
            sink.limit[k] = 1;
        for (unsigned k = 1; k < SCRIPT; k++) {
            cr_assert_eq(nbuf_composite_writev(c, fd), 1);
            cr_assert_eq(nbuf_composite_readable(c), 50 * 64 - 640 - k);
        }
        cr_assert_eq(frees[9], 1);
        cr_assert_eq(frees[10], 0, "63 of component 10's 64 bytes are written");
        cr_assert_eq(nbuf_composite_writev(c, fd), 50 * 64 - 640 - (SCRIPT - 1));
        assert_sink_pattern(0, 50 * 64);
        nbuf_composite_free(c);
        for (unsigned i = 0; i < 50; i++)
            cr_assert_eq(frees[i], 1);
    }
    close(fd);
    t_pool_done(p);
}

Test(flush, partial_writes_through_staging_resume_exactly)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    uint64_t s = 99;
    size_t N = 0;
    uint8_t *src = malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        src[i] = pat(i);
    struct nbuf *sb = nbuf_wrap(src, 200000, NULL, NULL);
    for (unsigned round = 0; round < 60; round++) {
        /* Odd rounds reference every slice, so the tiny ones are staged;
         * even rounds copy them when added. */
        nbuf_composite_slice_copy_max_ = round % 2 ? 0 : NBUF_COMPOSITE_COPY_MAX;
        sink_reset();
        use_fake_sink();
        /* Runs of tiny slices (staged), big slices and copies, mixed. */
        struct nbuf_composite *c = nbuf_composite_new(p);
        uint8_t *want = malloc(300000);
        N = 0;
        while (N < 150000) {
            size_t len = t_rand(&s) % 4 == 0 ? 1 + t_rand(&s) % 5000 : 1 + t_rand(&s) % 200;
            size_t off = t_rand(&s) % (200000 - len);
            if (t_rand(&s) % 10 == 0) {
                cr_assert_eq(nbuf_composite_add_copy(c, src + off, len), 0);
            } else {
                cr_assert_eq(nbuf_composite_add_slice(c, sb, off, len), 0);
            }
            memcpy(want + N, src + off, len);
            N += len;
        }
        for (unsigned k = 0; k < SCRIPT; k++)
            sink.limit[k] = 1 + t_rand(&s) % 20000;
        size_t total = 0;
        while (nbuf_composite_readable(c)) {
            ssize_t r = nbuf_composite_writev(c, fd);
            cr_assert_gt(r, 0);
            total += (size_t)r;
            cr_assert_eq(sink.n, total);
            cr_assert(nbuf_composite_check_(c));
        }
        cr_assert_eq(total, N);
        cr_assert_eq(memcmp(sink.out, want, N), 0, "round %u", round);
        cr_assert(!sink.empty_iov);
        cr_assert_leq(sink.max_iov, IOV_MAX);
        nbuf_composite_free(c);
        free(want);
    }
    nbuf_release(sb);
    free(src);
    close(fd);
    t_pool_done(p);
}

/* ---- D25: EAGAIN, EINTR, other errors ---- */

Test(flush, eagain_eintr_errors_D25)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    struct nbuf_composite *c = wrapped_composite(p, 20, 300);
    sink.err[0] = EAGAIN;
    cr_assert_eq(nbuf_composite_writev(c, fd), -EAGAIN);
    cr_assert_eq(nbuf_composite_readable(c), 6000);
    cr_assert_eq(nbuf_composite_count(c), 20);
    cr_assert_eq(frees[0], 0);
    /* EINTR is retried within the call. */
    sink.err[1] = EINTR;
    sink.err[2] = EINTR;
    sink.limit[3] = 1000;
    cr_assert_eq(nbuf_composite_writev(c, fd), 1000);
    cr_assert_eq(sink.calls, 4);
    /* Any other error: returned, nothing consumed. */
    sink.err[4] = ENOSPC;
    cr_assert_eq(nbuf_composite_writev(c, fd), -ENOSPC);
    cr_assert_eq(nbuf_composite_readable(c), 5000);
    cr_assert_eq(frees[3], 0);
    cr_assert_eq(frees[2], 1);
    cr_assert_eq(nbuf_composite_writev(c, fd), 5000);
    assert_sink_pattern(0, 6000);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

Test(flush, error_after_a_full_batch_comes_next_call)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    nbuf_flush_coalesce_max_ = 0;
    struct nbuf_composite *c = wrapped_composite(p, 1500, 10);
    sink.err[1] = ECONNRESET;
    cr_assert_eq(nbuf_composite_writev(c, fd), IOV_MAX * 10, "the first batch counts");
    cr_assert_eq(nbuf_composite_readable(c), (1500 - IOV_MAX) * 10);
    sink.err[2] = ECONNRESET;
    cr_assert_eq(nbuf_composite_writev(c, fd), -ECONNRESET);
    cr_assert_eq(nbuf_composite_writev(c, fd), (1500 - IOV_MAX) * 10);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

/* ---- D26, D27, D28: batch limits and empty composites ---- */

Test(flush, more_than_iov_max_components_D26)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    nbuf_flush_coalesce_max_ = 0;
    struct nbuf_composite *c = wrapped_composite(p, 2500, 3);
    cr_assert_eq(nbuf_composite_writev(c, fd), 7500);
    cr_assert_eq(sink.calls, 3, "2500 iovecs in %u calls", sink.calls);
    cr_assert_eq(sink.max_iov, IOV_MAX);
    assert_sink_pattern(0, 7500);
    nbuf_composite_free(c);
    /* Coalesced, the same tiny components take one call. */
    sink_reset();
    use_fake_sink();
    nbuf_flush_coalesce_max_ = coalesce_default;
    c = wrapped_composite(p, 2500, 3);
    cr_assert_eq(nbuf_composite_writev(c, fd), 7500);
    cr_assert_eq(sink.calls, 1);
    cr_assert_eq(sink.max_iov, 1);
    assert_sink_pattern(0, 7500);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

Test(flush, fake_lengths_past_ssize_max_D27)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    sink.fake = true;
    static uint8_t fake[3][1];
    struct nbuf_composite *c = nbuf_composite_new(p);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(nbuf_composite_add(c, nbuf_wrap(fake[i], SIZE_MAX / 4, NULL, NULL)), 0);
    size_t total = 3 * (SIZE_MAX / 4);
    cr_assert_eq(nbuf_composite_readable(c), total);
    ssize_t r = nbuf_composite_writev(c, fd);
    cr_assert_eq(r, SSIZE_MAX);
    cr_assert_leq(sink.max_bytes, SSIZE_MAX);
    cr_assert_eq(sink.calls, 1);
    r = nbuf_composite_writev(c, fd);
    cr_assert_eq((size_t)r, total - SSIZE_MAX);
    cr_assert_eq(nbuf_composite_readable(c), 0);
    nbuf_composite_free(c);
    /* One component longer than SSIZE_MAX: still offered, capped. */
    sink_reset();
    use_fake_sink();
    sink.fake = true;
    c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add(c, nbuf_wrap(fake[0], SIZE_MAX - 5, NULL, NULL)), 0);
    cr_assert_eq(nbuf_composite_writev(c, fd), SSIZE_MAX);
    cr_assert_eq(sink.max_iov, 1);
    cr_assert_eq(sink.max_bytes, SSIZE_MAX);
    cr_assert_eq((size_t)nbuf_composite_writev(c, fd), SIZE_MAX - 5 - SSIZE_MAX);
    /* And with a budget. */
    cr_assert_eq(nbuf_composite_add(c, nbuf_wrap(fake[0], SIZE_MAX - 5, NULL, NULL)), 0);
    cr_assert_eq(nbuf_composite_writev_max(c, fd, 12345), 12345);
    cr_assert_eq(sink.max_bytes, SSIZE_MAX);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

Test(flush, empty_composite_no_syscall_D28)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_writev(c, fd), 0);
    for (int i = 0; i < 10; i++) {
        nbuf_composite_add(c, nbuf_alloc(p, 10));
        nbuf_composite_add_copy(c, "", 0);
        nbuf_composite_add(c, nbuf_wrap(NULL, 0, NULL, NULL));
    }
    cr_assert_eq(nbuf_composite_count(c), 0);
    cr_assert_eq(nbuf_composite_writev(c, fd), 0);
    cr_assert_eq(nbuf_composite_writev_max(c, fd, 100), 0);
    nbuf_composite_add_copy(c, "abc", 3);
    cr_assert_eq(nbuf_composite_writev_max(c, fd, 0), 0);
    cr_assert_eq(sink.calls, 0);
    cr_assert_eq(nbuf_composite_writev_max(c, fd, 2), 2);
    cr_assert_eq(nbuf_composite_writev_max(c, fd, 2), 1);
    cr_assert_eq(sink.calls, 2);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

/* ---- files ---- */

static int
tmpfile_with(size_t n, uint64_t seed)
{
    char path[] = "/tmp/nbuf-flush-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    uint8_t *m = malloc(n);
    for (size_t i = 0; i < n; i++)
        m[i] = (uint8_t)(pat(i) ^ seed);
    cr_assert_eq(write(fd, m, n), (ssize_t)n);
    free(m);
    return fd;
}

/* Flush everything into a non-blocking pipe, draining it as we go. */
static void
flush_all_via_pipe(struct nbuf_composite *c, uint8_t *out, size_t n)
{
    int pp[2];
    cr_assert_eq(pipe2(pp, O_NONBLOCK), 0);
    size_t got = 0;
    while (nbuf_composite_readable(c)) {
        ssize_t r = nbuf_composite_writev(c, pp[1]);
        cr_assert(r > 0 || r == -EAGAIN, "flush: %zd", r);
        for (;;) {
            ssize_t k = read(pp[0], out + got, n - got);
            if (k <= 0)
                break;
            got += (size_t)k;
        }
    }
    cr_assert_eq(got, n);
    close(pp[0]);
    close(pp[1]);
}

Test(flush, file_regions_sendfile_and_memory)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = tmpfile_with(300000, 0x5a);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_composite_add_copy(c, "HEAD", 4);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 1000, 200000), 0);
    nbuf_composite_add_copy(c, "MID", 3);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 7, 5), 0);
    nbuf_composite_add_copy(c, "END", 3);
    close(fd);
    size_t n = nbuf_composite_readable(c);
    cr_assert_eq(n, 4 + 200000 + 3 + 5 + 3);
    uint8_t *want = malloc(n), *got = malloc(n);
    cr_assert_eq(nbuf_composite_get(c, 0, want, n), 0); /* via pread */
    cr_assert_eq(memcmp(want, "HEAD", 4), 0);
    cr_assert_eq(want[4], (uint8_t)(pat(1000) ^ 0x5a));
    nbuf_sys_.sendfile = fake_sendfile;
    flush_all_via_pipe(c, got, n);
    cr_assert_eq(memcmp(got, want, n), 0);
    cr_assert_geq(sink.sendfiles, 2);
    nbuf_composite_free(c);
    free(want);
    free(got);
    t_pool_done(p);
}

Test(flush, truncated_file_is_eio_D29)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    nbuf_sys_.sendfile = fake_sendfile; /* real sendfile, counted */
    for (int fallback = 0; fallback < 2; fallback++) {
        sink_reset();
        nbuf_sys_.sendfile = fake_sendfile;
        sink.sf_err = fallback ? ENOSYS : 0;
        int fd = tmpfile_with(10000, 1);
        struct nbuf_composite *c = nbuf_composite_new(p);
        nbuf_composite_add_copy(c, "hdr", 3);
        cr_assert_eq(nbuf_composite_add_file(c, fd, 0, 10000), 0);
        cr_assert_eq(ftruncate(fd, 5000), 0);
        int pp[2];
        cr_assert_eq(pipe2(pp, O_NONBLOCK), 0);
        ssize_t r = nbuf_composite_writev(c, pp[1]);
        cr_assert_eq(r, 3 + 5000, "the bytes the file still has: %zd", r);
        cr_assert_eq(nbuf_composite_writev(c, pp[1]), -EIO);
        cr_assert_eq(nbuf_composite_writev(c, pp[1]), -EIO, "every later call, without looping");
        cr_assert_eq(nbuf_composite_readable(c), 5000);
        cr_assert_leq(sink.sendfiles, 3);
        nbuf_composite_free(c);
        /* Truncated to nothing before the first byte. */
        c = nbuf_composite_new(p);
        cr_assert_eq(nbuf_composite_add_file(c, fd, 0, 5000), 0);
        cr_assert_eq(ftruncate(fd, 0), 0);
        cr_assert_eq(nbuf_composite_writev(c, pp[1]), -EIO);
        uint8_t x;
        cr_assert_eq(nbuf_composite_get(c, 0, &x, 1), -EIO);
        nbuf_composite_free(c);
        close(fd);
        close(pp[0]);
        close(pp[1]);
    }
    t_pool_done(p);
}

Test(flush, offsets_past_4gib_sparse_D30)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    char path[] = "/tmp/nbuf-sparse-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    const off_t G = (off_t)1 << 30;
    if (ftruncate(fd, 5 * G + 100) != 0)
        cr_skip_test("no sparse files in /tmp");
    const off_t at[] = {2 * G - 3, 4 * G - 3, 5 * G};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pwrite(fd, "MARKER!!", 8, at[i]), 8);
    struct nbuf_composite *c = nbuf_composite_new(p);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(nbuf_composite_add_file(c, fd, at[i] - 2, 12), 0);
    uint8_t got[36], want[36];
    for (int i = 0; i < 3; i++) {
        memcpy(want + 12 * i, "\0\0MARKER!!\0\0", 12);
    }
    cr_assert_eq(nbuf_composite_get(c, 0, got, 36), 0);
    cr_assert_eq(memcmp(got, want, 36), 0);
    flush_all_via_pipe(c, got, 36);
    cr_assert_eq(memcmp(got, want, 36), 0);
    nbuf_composite_free(c);
    /* A region larger than one sendfile call moves (0x7ffff000). */
    nbuf_sys_.sendfile = fake_sendfile;
    sink.sf_fake = true;
    c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_file(c, fd, G / 2, 4 * G + 7), 0);
    int out = devnull();
    cr_assert_eq(nbuf_composite_writev(c, out), 4 * G + 7);
    cr_assert_eq(sink.sendfiles, 3);
    off_t expect = G / 2;
    for (unsigned k = 0; k < sink.sendfiles; k++) {
        cr_assert_eq(sink.sf_off[k], expect, "call %u at %lld", k, (long long)sink.sf_off[k]);
        cr_assert_leq(sink.sf_count[k], 0x7ffff000);
        expect += (off_t)sink.sf_count[k];
    }
    cr_assert_eq(expect, G / 2 + 4 * G + 7);
    nbuf_composite_free(c);
    close(out);
    close(fd);
    t_pool_done(p);
}

Test(flush, sendfile_refused_falls_back_D31)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    static const int errs[] = {ENOSYS, EINVAL};
    for (int e = 0; e < 2; e++) {
        sink_reset();
        nbuf_sys_.sendfile = fake_sendfile;
        sink.sf_err = errs[e];
        int fd = tmpfile_with(250000, 3);
        struct nbuf_composite *c = nbuf_composite_new(p);
        nbuf_composite_add_copy(c, "<", 1);
        cr_assert_eq(nbuf_composite_add_file(c, fd, 17, 200000), 0);
        nbuf_composite_add_copy(c, ">", 1);
        cr_assert_eq(nbuf_composite_add_file(c, fd, 0, 10), 0);
        close(fd);
        size_t n = nbuf_composite_readable(c);
        uint8_t *want = malloc(n), *got = malloc(n);
        cr_assert_eq(nbuf_composite_get(c, 0, want, n), 0);
        flush_all_via_pipe(c, got, n);
        cr_assert_eq(memcmp(got, want, n), 0);
        cr_assert_geq(sink.sendfiles, 1, "tried, refused, then pread+write");
        nbuf_composite_free(c);
        free(want);
        free(got);
    }
    t_pool_done(p);
}

Test(flush, pipe_as_source_D31)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int src[2];
    cr_assert_eq(pipe(src), 0);
    cr_assert_eq(write(src[1], "hello, pipe world", 17), 17);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_composite_add_copy(c, "[", 1);
    cr_assert_eq(nbuf_composite_add_file(c, src[0], 0, 17), 0);
    nbuf_composite_add_copy(c, "]", 1);
    uint8_t x;
    cr_assert_eq(nbuf_composite_get(c, 1, &x, 1), -ESPIPE, "reading would consume the pipe");
    uint8_t got[19];
    flush_all_via_pipe(c, got, 19);
    cr_assert_eq(memcmp(got, "[hello, pipe world]", 19), 0);
    nbuf_composite_free(c);
    close(src[0]);
    close(src[1]);
    t_pool_done(p);
}

/* ---- D32: SIGPIPE ---- */

static bool
sigpipe_pending(void)
{
    sigset_t s;
    sigpending(&s);
    return sigismember(&s, SIGPIPE) == 1;
}

Test(flush, peer_closed_no_sigpipe_D32)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = tmpfile_with(5000, 9);
    /* SIGPIPE at its default (it would kill us) and ignored (as servers set
     * it: the guard is skipped); socket, pipe; memory then file region */
    for (int kind = 0; kind < 4; kind++) {
        signal(SIGPIPE, kind < 2 ? SIG_DFL : SIG_IGN);
        sigset_t mask_before, mask_after;
        pthread_sigmask(SIG_SETMASK, NULL, &mask_before);
        for (int file = 0; file < 2; file++) {
            int pair[2];
            bool sock = kind % 2 == 0;
            if (sock)
                cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
            else
                cr_assert_eq(pipe(pair), 0);
            int wr = sock ? pair[0] : pair[1], rd = sock ? pair[1] : pair[0];
            close(rd);
            struct nbuf_composite *c = wrapped_composite(p, 5, 100);
            if (file) {
                struct nbuf_composite *f = nbuf_composite_new(p);
                cr_assert_eq(nbuf_composite_add_file(f, fd, 0, 5000), 0);
                cr_assert_eq(nbuf_composite_append(f, c), 0);
                nbuf_composite_free(c);
                c = f;
            }
            ssize_t r = nbuf_composite_writev(c, wr);
            cr_assert(r == -EPIPE || r == -ECONNRESET, "kind %d file %d: %zd", kind, file, r);
            cr_assert(!sigpipe_pending(), "a SIGPIPE was left pending");
            pthread_sigmask(SIG_SETMASK, NULL, &mask_after);
            cr_assert_eq(sigismember(&mask_after, SIGPIPE), sigismember(&mask_before, SIGPIPE),
                         "the signal mask was not restored");
            cr_assert_eq(nbuf_composite_readable(c), file ? 5500 : 500);
            nbuf_composite_free(c);
            for (unsigned i = 0; i < 5; i++)
                cr_assert_eq(frees[i], 1);
            close(wr);
        }
    }
    signal(SIGPIPE, SIG_DFL);
    close(fd);
    t_pool_done(p);
}

/* ---- how the fd is written ---- */

/* Memory right before a file region goes with MSG_MORE (TCP packs it with
 * the file's first segment); the last write of a flush, or one the budget
 * ends, does not. */
Test(flush, msg_more_before_file_regions)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    use_fake_sink();
    nbuf_sys_.sendfile = fake_sendfile;
    sink.sf_fake = true;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int fd = tmpfile_with(100, 3);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_composite_add_copy(c, "HEAD", 4);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 0, 100), 0);
    nbuf_composite_add_copy(c, "MID", 3);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 10, 20), 0);
    nbuf_composite_add_copy(c, "END", 3);
    cr_assert_eq(nbuf_composite_writev(c, sv[0]), 4 + 100 + 3 + 20 + 3);
    cr_assert_eq(sink.sendmsgs, 3);
    cr_assert_eq(sink.sendfiles, 2);
    cr_assert_eq(sink.more_mask, 0x3, "MSG_MORE on HEAD and MID only: %#x", sink.more_mask);
    /* A budget that stops before the file: nothing follows, no MSG_MORE. */
    sink_reset();
    sink.sf_fake = true;
    nbuf_composite_add_copy(c, "HEAD", 4);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 0, 100), 0);
    cr_assert_eq(nbuf_composite_writev_max(c, sv[0], 4), 4);
    cr_assert_eq(sink.more_mask, 0);
    cr_assert_eq(nbuf_composite_writev(c, sv[0]), 100);
    nbuf_composite_free(c);
    close(fd);
    close(sv[0]);
    close(sv[1]);
    t_pool_done(p);
}

Test(flush, sockets_use_sendmsg_others_writev)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    nbuf_sys_.sendmsg = count_sendmsg;
    nbuf_sys_.writev = count_writev;
    int sv[2], pp[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(pipe(pp), 0);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_composite_add_copy(c, "abc", 3);
    cr_assert_eq(nbuf_composite_writev(c, sv[0]), 3);
    cr_assert_eq(real_sendmsgs, 1);
    cr_assert_eq(real_writevs, 0);
    nbuf_composite_add_copy(c, "defg", 4);
    cr_assert_eq(nbuf_composite_writev(c, pp[1]), 4);
    cr_assert_eq(real_sendmsgs, 2, "one ENOTSOCK probe");
    cr_assert_eq(real_writevs, 1);
    char buf[8];
    cr_assert_eq(read(sv[1], buf, 8), 3);
    cr_assert_eq(read(pp[0], buf, 8), 4);
    cr_assert_eq(memcmp(buf, "defg", 4), 0);
    nbuf_composite_free(c);
    close(sv[0]);
    close(sv[1]);
    close(pp[0]);
    close(pp[1]);
    t_pool_done(p);
}

Test(flush, budget_per_call)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int fd = devnull();
    use_fake_sink();
    struct nbuf_composite *c = wrapped_composite(p, 10, 1000);
    int fdf = tmpfile_with(5000, 4);
    nbuf_composite_add_file(c, fdf, 0, 5000);
    close(fdf);
    nbuf_sys_.sendfile = fake_sendfile;
    sink.sf_fake = true;
    size_t total = 0;
    while (nbuf_composite_readable(c)) {
        ssize_t r = nbuf_composite_writev_max(c, fd, 1500);
        cr_assert_gt(r, 0);
        cr_assert_leq(r, 1500);
        total += (size_t)r;
    }
    cr_assert_eq(total, 15000);
    assert_sink_pattern(0, 10000);
    for (unsigned k = 0; k < sink.sendfiles; k++)
        cr_assert_leq(sink.sf_count[k], 1500);
    nbuf_composite_free(c);
    close(fd);
    t_pool_done(p);
}

/* ---- end to end through a real non-blocking socket ---- */

struct drain_arg {
    int fd;
    uint8_t *out;
    size_t n;
};

static void *
drain(void *arg)
{
    struct drain_arg *d = arg;
    size_t got = 0;
    while (got < d->n) {
        ssize_t r = read(d->fd, d->out + got, d->n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    d->n = got;
    return NULL;
}

Test(flush, nonblocking_socket_end_to_end)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    int fd = tmpfile_with(1 << 20, 6);
    struct nbuf *src = nbuf_alloc(p, 1 << 20);
    t_buf_fill(src, 42);
    struct nbuf_composite *c = nbuf_composite_new(p);
    uint64_t s = 5;
    for (unsigned i = 0; i < 5000; i++) {
        size_t len = 1 + t_rand(&s) % (i % 50 == 0 ? 60000 : 300);
        size_t off = t_rand(&s) % ((1 << 20) - len);
        switch (t_rand(&s) % 8) {
        case 0: nbuf_composite_add_file(c, fd, (off_t)off, len); break;
        case 1: nbuf_composite_add_copy(c, nbuf_data(src) + off, len); break;
        default: nbuf_composite_add_slice(c, src, off, len); break;
        }
    }
    size_t n = nbuf_composite_readable(c);
    uint8_t *want = malloc(n);
    cr_assert_eq(nbuf_composite_get(c, 0, want, n), 0);
    struct drain_arg d = {sv[1], malloc(n), n};
    pthread_t th;
    pthread_create(&th, NULL, drain, &d);
    unsigned eagains = 0;
    while (nbuf_composite_readable(c)) {
        ssize_t r = nbuf_composite_writev(c, sv[0]);
        if (r == -EAGAIN) {
            eagains++;
            usleep(100);
            continue;
        }
        cr_assert_gt(r, 0, "flush: %zd", r);
    }
    pthread_join(th, NULL);
    cr_assert_eq(d.n, n);
    cr_assert_eq(memcmp(d.out, want, n), 0);
    nbuf_composite_free(c);
    nbuf_release(src);
    free(want);
    free(d.out);
    close(fd);
    close(sv[0]);
    close(sv[1]);
    t_pool_done(p);
}

/* ---- F40: a failed allocation in the middle changes nothing ---- */

Test(flush, allocation_failures_change_nothing_F40)
{
    if (t_bypass())
        cr_skip_test("unpooled buffers do not come from the backing");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = 4096;
    cfg.chunk_size = 32 << 10; /* so that big copies go to the backing */
    cfg.flags |= NBUF_POOL_NO_CACHE;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf_composite *c = nbuf_composite_new(p);
    int pp[2];
    cr_assert_eq(pipe2(pp, O_NONBLOCK), 0);
    /* read_fd: the bytes stay in the fd when there is nowhere to put them. */
    cr_assert_eq(write(pp[1], "hello", 5), 5);
    nbuf_backing_fail_after_(p, 1);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), -ENOMEM);
    cr_assert_eq(nbuf_composite_readable(c), 0);
    cr_assert_eq(nbuf_composite_read_fd(c, pp[0], 0), 5, "the fault is spent, the data waited");
    cr_assert_eq(nbuf_composite_skip(c, 5), 0);
    /* add_copy and add_iov needing a huge tail. */
    static uint8_t big[40000];
    nbuf_backing_fail_after_(p, 1);
    cr_assert_eq(nbuf_composite_add_copy(c, big, sizeof(big)), -ENOMEM);
    struct nbuf *b = nbuf_alloc(p, 20000);
    cr_assert_not_null(b);
    t_buf_fill(b, 3);
    struct iovec v[100];
    for (int i = 0; i < 100; i++) {
        v[i].iov_base = (void *)(nbuf_data(b) + i * 100);
        v[i].iov_len = 400;
    }
    nbuf_backing_fail_after_(p, 1);
    cr_assert_eq(nbuf_composite_add_iov(c, b, v, 100), -ENOMEM);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(nbuf_composite_readable(c), 0);
    cr_assert_eq(nbuf_composite_count(c), 0);
    /* The flush cannot get its staging buffer: plain iovecs instead (the
     * slices referenced, so that they are the flush's to stage). */
    nbuf_composite_slice_copy_max_ = 0;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(nbuf_composite_add_slice(c, b, (size_t)i * 200, 150), 0);
    size_t n = nbuf_composite_readable(c);
    nbuf_backing_fail_after_(p, 1);
    uint8_t *got = malloc(n);
    flush_all_via_pipe(c, got, n);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(memcmp(got + i * 150, nbuf_data(b) + i * 200, 150), 0);
    cr_assert_eq(atomic_load(&p->backing.fail_count), 4, "every fault fired");
    free(got);
    nbuf_release(b);
    nbuf_composite_free(c);
    close(pp[0]);
    close(pp[1]);
    t_pool_done(p);
}

/* A byte budget that ends inside a run of tiny (staged) components sends
 * exactly the budget, and the next call resumes at the next byte. */
static void
budget_ends_inside_tiny_run(void)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct nbuf *src = nbuf_alloc(p, 8192);
    for (unsigned i = 0; i < 8192; i++)
        nbuf_write_u8(src, (uint8_t)(i * 7 + i / 251));
    const uint8_t *m = nbuf_data(src);
    struct nbuf_composite *c = nbuf_composite_new(p);
    uint8_t want[4096];
    size_t n = 0;
    for (unsigned i = 0; i < 300; i++) {
        size_t off = (size_t)i * 27 % 8000, len = 1 + i % 13; /* never adjacent */
        cr_assert_eq(nbuf_composite_add_slice(c, src, off, len), 0);
        memcpy(want + n, m + off, len);
        n += len;
    }
    uint8_t got[4096];
    size_t have = 0;
    for (size_t budget = 1; nbuf_composite_readable(c); budget = budget % 41 + 1) {
        size_t before = nbuf_composite_readable(c);
        ssize_t r = nbuf_composite_writev_max(c, sv[0], budget);
        size_t expect = before < budget ? before : budget;
        cr_assert_eq(r, (ssize_t)expect, "budget %zu: wrote %zd", budget, r);
        cr_assert_eq(nbuf_composite_readable(c), before - expect);
        cr_assert(nbuf_composite_check_(c));
        while (have < n - nbuf_composite_readable(c)) {
            ssize_t k = read(sv[1], got + have, sizeof(got) - have);
            cr_assert_gt(k, 0);
            have += (size_t)k;
        }
    }
    cr_assert_eq(have, n);
    cr_assert_arr_eq(got, want, n);
    nbuf_composite_free(c);
    nbuf_release(src);
    close(sv[0]);
    close(sv[1]);
    t_pool_done(p);
}

/* The tiny slices staged by the flush (referenced), and copied when added. */
Test(flush, budget_ends_inside_tiny_run)
{
    nbuf_composite_slice_copy_max_ = 0;
    budget_ends_inside_tiny_run();
    nbuf_composite_slice_copy_max_ = NBUF_COMPOSITE_COPY_MAX;
    budget_ends_inside_tiny_run();
}
