/* SPDX-License-Identifier: MIT */
/* io_uring: receiving into pooled buffers (buffer groups, one-shot and
 * multishot receives), teardown rules, the kernel's refusals by injection,
 * a ring used and left by a thread that exits. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "uring_int.h"

static struct nbuf_pool *pool;

static void
setup(void)
{
    pool = t_pool_new(NULL);
}

static void
teardown(void)
{
    nbuf_uring_ops_ = nbuf_uring_ops_default_;
    t_pool_done(pool);
}

TestSuite(uring, .init = setup, .fini = teardown, .timeout = 60);

/* ---- a writer thread: frames of many sizes, a pattern per frame ---- */

struct writer {
    int fd;
    unsigned frames;
    uint64_t seed;
    size_t total;
    bool close_early; /* stop half way (a peer closing mid-stream) */
};

/* Frame i's size: 1 byte to 256 KiB, skewed small. */
static size_t
frame_size(uint64_t *s)
{
    uint64_t r = t_rand(s);
    unsigned lg = (unsigned)(r % 19);
    return 1 + (size_t)((r >> 8) % ((size_t)1 << lg));
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    uint64_t s = w->seed;
    size_t off = 0;
    uint8_t *buf = malloc(1 << 18);
    unsigned n = w->close_early ? w->frames / 2 : w->frames;
    for (unsigned i = 0; i < n; i++) {
        size_t len = frame_size(&s);
        t_pattern_fill(buf, len, w->seed + off);
        for (size_t done = 0; done < len;) {
            ssize_t r = write(w->fd, buf + done, len - done);
            T_CHECK(r > 0);
            if (r <= 0)
                goto out;
            done += (size_t)r;
        }
        off += len;
    }
out:
    w->total = off;
    free(buf);
    shutdown(w->fd, SHUT_WR);
    return NULL;
}

/* ---- what the receiver collects ---- */

struct sink {
    struct nbuf_composite *got;
    unsigned calls, more_calls;
    int final_res;
    bool done;
    bool keep; /* keep the buffers (in the composite), else release */
    struct nbuf_uring_bufs *g;
    int fd;
    bool rearm; /* one-shot: arm again from the callback */
};

static void
sink_fn(void *ctx, struct nbuf *b, int res, unsigned flags)
{
    struct sink *k = ctx;
    k->calls++;
    if (flags & NBUF_URING_MORE)
        k->more_calls++;
    if (res > 0) {
        T_CHECK(b && nbuf_readable(b) == (size_t)res && nbuf_reader_index(b) == 0);
        T_CHECK(nbuf_refcnt(b) == 1);
        T_CHECK(nbuf_composite_add(k->got, b) == 0); /* the reference moves */
        if (!(flags & NBUF_URING_MORE) && k->rearm)
            T_CHECK(nbuf_uring_recv(k->g, k->fd, sink_fn, k) == 0);
        else if (!(flags & NBUF_URING_MORE))
            k->done = true;
        return;
    }
    T_CHECK(b == NULL);
    T_CHECK(!(flags & NBUF_URING_MORE));
    k->final_res = res;
    k->done = true;
}

static void
run_until(struct nbuf_uring *u, bool *done)
{
    for (int i = 0; i < 1000000 && !*done; i++)
        cr_assert_geq(nbuf_uring_run(u, 1, 100), 0);
    cr_assert(*done, "the receive never finished");
}

/* Check the composite holds the writer's bytes: frame by frame patterns. */
static void
check_stream(struct nbuf_composite *c, uint64_t seed, unsigned frames, size_t total)
{
    cr_assert_eq(nbuf_composite_readable(c), total);
    uint64_t s = seed;
    size_t off = 0;
    uint8_t *buf = malloc(1 << 18);
    for (unsigned i = 0; i < frames && off < total; i++) {
        size_t len = frame_size(&s);
        cr_assert_eq(nbuf_composite_read(c, buf, len), 0);
        cr_assert_eq(t_pattern_bad(buf, len, seed + off), SIZE_MAX, "frame %u differs", i);
        off += len;
    }
    free(buf);
    cr_assert_eq(off, total);
}

static void
round_trip(int sv[2], size_t buf_size, unsigned count, bool multishot, uint64_t seed)
{
    struct nbuf_uring *u = t_ring_or_skip();
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, buf_size, count);
    cr_assert_not_null(g, "bufs_new: %s", strerror(errno));
    cr_assert_eq(nbuf_uring_bufs_ready(g), count);
    struct sink k = {.got = nbuf_composite_new(pool), .g = g, .fd = sv[1], .rearm = !multishot};
    struct writer w = {.fd = sv[0], .frames = 300, .seed = seed};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    if (multishot)
        cr_assert_eq(nbuf_uring_recv_multishot(g, sv[1], sink_fn, &k), 0);
    else
        cr_assert_eq(nbuf_uring_recv(g, sv[1], sink_fn, &k), 0);
    run_until(u, &k.done);
    pthread_join(th, NULL);
    t_thread_assert_ok();
    cr_assert_eq(k.final_res, 0, "end of file expected, got %d", k.final_res);
    if (multishot)
        cr_assert_eq(k.more_calls, k.calls - 1);
    check_stream(k.got, seed, w.frames, w.total);
    nbuf_composite_free(k.got);
    cr_assert_eq(nbuf_uring_pending(u), 0);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    close(sv[0]);
    close(sv[1]);
}

Test(uring, recv_multishot_socketpair)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    round_trip(sv, 4096, 16, true, 1);
}

Test(uring, recv_multishot_tcp)
{
    int sv[2];
    t_tcp_pair(sv);
    round_trip(sv, 16384, 8, true, 2);
}

Test(uring, recv_oneshot_tcp)
{
    int sv[2];
    t_tcp_pair(sv);
    round_trip(sv, 2048, 4, false, 3);
}

Test(uring, recv_oneshot_socketpair_small_class)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    round_trip(sv, 1000, 2, false, 4);
}

/* One buffer in the group: the ring runs dry after each arrival and the
 * receive is refilled and armed again without the callback seeing it. */
Test(uring, recv_runs_dry_and_refills)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    round_trip(sv, 1024, 1, true, 5);
}

/* The buffers are the pool's: live while in the ring or held, back when
 * released, none after the group is freed. nbuf_pool_free refuses while a
 * group holds buffers. */
Test(uring, buffers_are_pool_buffers)
{
    struct nbuf_uring *u = t_ring_or_skip();
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 4096, 8);
    cr_assert_not_null(g);
    struct nbuf_pool_stats st = t_stats(pool);
    cr_assert_eq(st.live_buffers, 8);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sink k = {.got = nbuf_composite_new(pool)};
    cr_assert_eq(nbuf_uring_recv_multishot(g, sv[1], sink_fn, &k), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(write(sv[0], "hello", 5), 5);
        while (k.calls < (unsigned)i + 1)
            cr_assert_geq(nbuf_uring_run(u, 1, 1000), 0);
    }
    cr_assert_eq(nbuf_composite_readable(k.got), 15);
    /* Three handed out, not refilled yet (the batch is 2 of 8... refilled
     * once 2 were free): the ring plus the composite's, no more. */
    st = t_stats(pool);
    cr_assert_eq(st.live_buffers, nbuf_uring_bufs_ready(g) + 3);
    cr_assert_eq(nbuf_uring_bufs_free(g), -EBUSY); /* armed */
    t_capture_reports();
    cr_assert_eq(nbuf_pool_free(pool), -EBUSY);
    nbuf_report_hook_ = NULL;
    nbuf_composite_free(k.got); /* the three go back */
    st = t_stats(pool);
    cr_assert_eq(st.live_buffers, nbuf_uring_bufs_ready(g));
    cr_assert_eq(nbuf_uring_free(u), -EBUSY);
    cr_assert_eq(nbuf_uring_cancel_fd(u, sv[1]), 0);
    run_until(u, &k.done);
    cr_assert_eq(k.final_res, -ECANCELED);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    st = t_stats(pool);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    close(sv[0]);
    close(sv[1]);
}

/* A peer that closes mid-stream: the bytes it sent arrive, then end of
 * file; drain cancels what is left. */
Test(uring, recv_peer_closes_mid_stream)
{
    struct nbuf_uring *u = t_ring_or_skip();
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 8192, 4);
    cr_assert_not_null(g);
    int sv[2];
    t_tcp_pair(sv);
    struct sink k = {.got = nbuf_composite_new(pool)};
    struct writer w = {.fd = sv[0], .frames = 100, .seed = 9, .close_early = true};
    cr_assert_eq(nbuf_uring_recv_multishot(g, sv[1], sink_fn, &k), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    pthread_join(th, NULL);
    close(sv[0]);
    run_until(u, &k.done);
    cr_assert_eq(k.final_res, 0);
    check_stream(k.got, 9, w.frames, w.total);
    nbuf_composite_free(k.got);
    cr_assert_eq(nbuf_uring_drain(u, 1000), 0);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    close(sv[1]);
}

/* Drain with a receive armed and nothing coming: cancelled, then free. */
Test(uring, drain_cancels_armed_receives)
{
    struct nbuf_uring *u = t_ring_or_skip();
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 512, 2);
    cr_assert_not_null(g);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct sink a = {.got = nbuf_composite_new(pool)}, b = {.got = nbuf_composite_new(pool)};
    cr_assert_eq(nbuf_uring_recv(g, sv[1], sink_fn, &a), 0);
    cr_assert_eq(nbuf_uring_recv_multishot(g, sv[0], sink_fn, &b), 0);
    cr_assert_eq(nbuf_uring_pending(u), 2);
    cr_assert_eq(nbuf_uring_drain(u, 2000), 0);
    cr_assert(a.done && b.done);
    cr_assert_eq(a.final_res, -ECANCELED);
    cr_assert_eq(b.final_res, -ECANCELED);
    nbuf_composite_free(a.got);
    nbuf_composite_free(b.got);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    close(sv[0]);
    close(sv[1]);
}

Test(uring, bad_arguments)
{
    errno = 0;
    cr_assert_null(nbuf_uring_new(0));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_uring_new(65536));
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(nbuf_uring_free(NULL), -EINVAL);
    cr_assert_eq(nbuf_uring_fd(NULL), -EINVAL);
    cr_assert_eq(nbuf_uring_run(NULL, 0, 0), -EINVAL);
    cr_assert_eq(nbuf_uring_cancel_fd(NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_uring_drain(NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_uring_bufs_free(NULL), -EINVAL);
    struct nbuf_uring *u = t_ring_or_skip();
    cr_assert_geq(nbuf_uring_fd(u), 0);
    cr_assert_eq(nbuf_uring_cancel_fd(u, -1), -EBADF);
    cr_assert_null(nbuf_uring_bufs_new(NULL, pool, 4096, 4));
    cr_assert_null(nbuf_uring_bufs_new(u, pool, 4096, 3));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_uring_bufs_new(u, pool, 4096, 65536));
    cr_assert_null(nbuf_uring_bufs_new(u, pool, 0, 4));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_uring_bufs_new(u, pool, (size_t)1 << 33, 4));
    cr_assert_eq(errno, EINVAL);
    struct nbuf_pool_stats st = t_stats(pool);
    cr_assert_eq(st.live_buffers, 0);
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 4096, 4);
    cr_assert_not_null(g);
    struct sink k = {0};
    cr_assert_eq(nbuf_uring_recv(NULL, 0, sink_fn, &k), -EINVAL);
    cr_assert_eq(nbuf_uring_recv(g, 0, NULL, &k), -EINVAL);
    cr_assert_eq(nbuf_uring_recv(g, -1, sink_fn, &k), -EBADF);
    cr_assert_eq(nbuf_uring_recv_multishot(g, -1, sink_fn, &k), -EBADF);
    cr_assert_eq(nbuf_uring_pending(u), 0);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
}

/* A pool whose memory_limit cannot hold the group: ENOMEM, nothing kept. */
Test(uring, group_larger_than_memory_limit)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    struct nbuf_uring *u = t_ring_or_skip();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.memory_limit = 4 << 20;
    struct nbuf_pool *small = t_pool_new(&cfg);
    errno = 0;
    cr_assert_null(nbuf_uring_bufs_new(u, small, 1 << 20, 8));
    cr_assert_eq(errno, ENOMEM);
    t_pool_done(small);
    cr_assert_eq(nbuf_uring_free(u), 0);
}

/* ---- the kernel's refusals, injected ---- */

static int inject_err;

static int
fail_queue_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    return -inject_err;
}

static struct io_uring_probe *
no_probe(struct io_uring *ring)
{
    return NULL;
}

static int
fail_register(struct io_uring *ring, struct io_uring_buf_reg *reg, unsigned flags)
{
    return -inject_err;
}

/* io_uring_setup refused: the errno comes through as it is. */
static void
setup_fails(int err)
{
    nbuf_uring_ops_.queue_init = fail_queue_init;
    inject_err = err;
    errno = 0;
    cr_assert_null(nbuf_uring_new(8));
    cr_assert_eq(errno, err);
}

/* A kernel without io_uring. */
Test(uring, no_io_uring_enosys)
{
    setup_fails(ENOSYS);
}

/* A seccomp filter (Docker's default profile) or kernel.io_uring_disabled. */
Test(uring, seccomp_eperm)
{
    setup_fails(EPERM);
}

/* Before 5.12 the rings were charged to RLIMIT_MEMLOCK. */
Test(uring, memlock_at_setup_enomem)
{
    setup_fails(ENOMEM);
}

/* A kernel before 5.6 has no probe (or no IORING_OP_RECV). */
Test(uring, old_kernel_without_probe)
{
    nbuf_uring_ops_.get_probe = no_probe;
    errno = 0;
    cr_assert_null(nbuf_uring_new(8));
    cr_assert_eq(errno, EOPNOTSUPP);
}

/* Registration refused: a kernel before 5.19 (EINVAL) is EOPNOTSUPP, a
 * low RLIMIT_MEMLOCK (ENOMEM) stays ENOMEM; no buffer is kept either way. */
static void
register_fails(int kernel_err, int want)
{
    struct nbuf_uring *u = t_ring_or_skip();
    nbuf_uring_ops_.register_buf_ring = fail_register;
    inject_err = kernel_err;
    errno = 0;
    cr_assert_null(nbuf_uring_bufs_new(u, pool, 4096, 16));
    cr_assert_eq(errno, want);
    struct nbuf_pool_stats st = t_stats(pool);
    cr_assert_eq(st.live_buffers, 0);
    nbuf_uring_ops_ = nbuf_uring_ops_default_;
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 4096, 16);
    cr_assert_not_null(g);
    cr_assert_eq(nbuf_uring_bufs_free(g), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
}

Test(uring, old_kernel_no_buffer_rings)
{
    register_fails(EINVAL, EOPNOTSUPP);
}

Test(uring, memlock_at_registration)
{
    register_fails(ENOMEM, ENOMEM);
}

/* ---- a thread that used a ring exits; its buffers live on ---- */

struct thread_job {
    int fd;
    struct nbuf *held[4];
    unsigned nheld;
};

static void
hold_fn(void *ctx, struct nbuf *b, int res, unsigned flags)
{
    struct thread_job *j = ctx;
    if (res > 0 && j->nheld < 4)
        j->held[j->nheld++] = b;
    else
        nbuf_release(b);
}

static void *
ring_thread(void *arg)
{
    struct thread_job *j = arg;
    struct nbuf_uring *u = nbuf_uring_new(16);
    T_CHECK(u != NULL);
    if (!u)
        return NULL;
    struct nbuf_uring_bufs *g = nbuf_uring_bufs_new(u, pool, 1000, 4);
    T_CHECK(g != NULL);
    T_CHECK(nbuf_uring_recv_multishot(g, j->fd, hold_fn, j) == 0);
    for (int i = 0; i < 100 && j->nheld < 4; i++)
        T_CHECK(nbuf_uring_run(u, 1, 100) >= 0);
    T_CHECK(nbuf_uring_drain(u, 1000) == 0);
    T_CHECK(nbuf_uring_bufs_free(g) == 0);
    T_CHECK(nbuf_uring_free(u) == 0);
    return NULL;
}

Test(uring, thread_exits_holding_buffers)
{
    struct nbuf_uring *probe = t_ring_or_skip();
    nbuf_uring_free(probe);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(write(sv[0], "abcdefgh", (size_t)i + 1), i + 1);
    struct thread_job j = {.fd = sv[1]};
    t_run_thread(ring_thread, &j);
    t_thread_assert_ok();
    cr_assert_eq(j.nheld, 4);
    for (unsigned i = 0; i < 4; i++) {
        cr_assert_eq(nbuf_readable(j.held[i]), i + 1);
        cr_assert_eq(memcmp(nbuf_data(j.held[i]), "abcdefgh", i + 1), 0);
        cr_assert_eq(nbuf_release(j.held[i]), 1); /* freed, after its thread exited */
    }
    close(sv[0]);
    close(sv[1]);
}
