/* SPDX-License-Identifier: MIT */
/* io_uring senders (suite uring): composites to sockets by SENDMSG_ZC or
 * copying SENDMSG; byte-exact streams with many flushes in flight, partial
 * sends, slices held until the notification, a peer that closes, a pool
 * freed with sends in flight, an old kernel by injection. */
#include <fcntl.h>
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
    nbuf_uring_send_cap_ = 0;
    t_pool_done(pool);
}

TestSuite(uring, .init = setup, .fini = teardown, .timeout = 60);

/* ---- a reader thread that checks the stream against the reference ---- */

/* ---- what the sender reports ---- */

struct acks {
    unsigned calls, errors;
    size_t bytes;
    ssize_t expect[64]; /* per piece, in order (-1: do not check) */
    bool order_bad;
    struct nbuf *watch; /* its refcount must be 1 in every callback */
    bool watch_bad;
};

static void
ack_fn(void *ctx, ssize_t res)
{
    struct acks *a = ctx;
    if (a->calls < 64 && a->expect[a->calls] >= 0 && res >= 0 && a->expect[a->calls] != res)
        a->order_bad = true;
    if (a->watch && nbuf_refcnt(a->watch) != 1)
        a->watch_bad = true;
    a->calls++;
    if (res < 0)
        a->errors++;
    else
        a->bytes += (size_t)res;
}

static void
run_until(struct nbuf_uring *u, const unsigned *calls, unsigned want)
{
    for (int i = 0; i < 100000 && *calls < want; i++)
        cr_assert_geq(nbuf_uring_run(u, 1, 100), 0);
    cr_assert_eq(*calls, want, "%u of %u pieces finished", *calls, want);
}

/* @nflush frames of random sizes (1 B to 1 MiB), all flushed before the
 * ring runs, over @sv; the reader checks every byte. */
static void
stream(int sv[2], unsigned nflush, size_t piece, unsigned flags, int want_zc)
{
    struct nbuf_uring *u = t_ring_or_skip();
    uint64_t seed = 77;
    size_t sizes[64], total = 0;
    cr_assert_leq(nflush, 64);
    for (unsigned i = 0; i < nflush; i++) {
        sizes[i] = 1 + (size_t)(t_rand(&seed) % ((size_t)1 << (t_rand(&seed) % 21)));
        total += sizes[i];
    }
    uint8_t *ref = malloc(total);
    t_pattern_fill(ref, total, 5);
    struct acks a;
    memset(&a, 0, sizeof(a));
    memset(a.expect, 0xff, sizeof(a.expect)); /* -1: any size */
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], flags, ack_fn, &a);
    cr_assert_not_null(s, "sender_new: %s", strerror(errno));
    if (want_zc >= 0)
        cr_assert_eq(nbuf_uring_sender_zerocopy(s), want_zc);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = total};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    size_t off = 0;
    for (unsigned i = 0; i < nflush; i++) {
        struct nbuf_composite *c = t_frame_new(pool, ref + off, sizes[i], piece, &seed);
        /* Frames of more than IOV_MAX pieces finish as several. */
        a.expect[i] = piece >= 4096 ? (ssize_t)sizes[i] : -1;
        cr_assert_eq(nbuf_uring_sender_flush(s, c), (ssize_t)sizes[i]);
        cr_assert_eq(nbuf_composite_readable(c), 0);
        nbuf_composite_free(c); /* the sender holds the slices */
        off += sizes[i];
    }
    cr_assert_eq(nbuf_uring_sender_unacked(s), total);
    if (piece >= 4096)
        run_until(u, &a.calls, nflush);
    for (int i = 0; i < 100000 && a.bytes < total && !a.errors; i++)
        cr_assert_geq(nbuf_uring_run(u, 1, 100), 0);
    cr_assert_eq(a.errors, 0);
    cr_assert_not(a.order_bad, "pieces finished out of order");
    cr_assert_eq(a.bytes, total);
    cr_assert_eq(nbuf_uring_sender_unacked(s), 0);
    cr_assert_eq(nbuf_uring_pending(u), 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, total);
    cr_assert_not(rd.bad, "the stream differs");
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
}

Test(uring, send_zc_tcp_many_in_flight)
{
    int sv[2];
    t_tcp_pair(sv);
    stream(sv, 40, 65536, 0, 1);
}

Test(uring, send_zc_tcp_small_pieces)
{
    int sv[2];
    t_tcp_pair(sv);
    stream(sv, 20, 512, NBUF_URING_SEND_ZC, 1);
}

/* AF_UNIX has no zero-copy: the sender copies, same contract. */
Test(uring, send_socketpair_copies)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    stream(sv, 40, 65536, 0, 0);
}

Test(uring, send_copy_flag_tcp)
{
    int sv[2];
    t_tcp_pair(sv);
    stream(sv, 10, 65536, NBUF_URING_SEND_COPY, 0);
}

/* Each submission offers at most 1000 bytes: every send is short, and the
 * rest goes from the next byte. */
Test(uring, send_partial_sends_resume)
{
    nbuf_uring_send_cap_ = 1000;
    int sv[2];
    t_tcp_pair(sv);
    stream(sv, 12, 3000, 0, 1);
}

Test(uring, send_partial_sends_resume_copying)
{
    nbuf_uring_send_cap_ = 777;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    stream(sv, 12, 3000, 0, 0);
}

/* More than IOV_MAX components: several pieces, in order. */
Test(uring, send_more_than_iov_max)
{
    struct nbuf_uring *u = t_ring_or_skip();
    int sv[2];
    t_tcp_pair(sv);
    size_t total = 2500 * 64;
    uint8_t *ref = malloc(total);
    t_pattern_fill(ref, total, 8);
    struct acks a = {.expect = {1024 * 64, 1024 * 64, 452 * 64}};
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], 0, ack_fn, &a);
    cr_assert_not_null(s);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    for (size_t off = 0; off < total; off += 64) {
        struct nbuf *b = nbuf_alloc(pool, 64);
        nbuf_write(b, ref + off, 64);
        cr_assert_eq(nbuf_composite_add(c, b), 0);
    }
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = total};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    cr_assert_eq(nbuf_uring_sender_flush(s, c), (ssize_t)total);
    nbuf_composite_free(c);
    run_until(u, &a.calls, 3);
    cr_assert_not(a.order_bad);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, total);
    cr_assert_not(rd.bad);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
}

/* A slice stays referenced until the piece is finished (the notification
 * came), and is released before the callback runs. nbuf_pool_free refuses
 * with sends in flight; after the ring ran it succeeds (teardown). */
Test(uring, slices_held_until_notification)
{
    struct nbuf_uring *u = t_ring_or_skip();
    int sv[2];
    t_tcp_pair(sv);
    size_t len = 8 << 20;
    uint8_t *ref = malloc(len);
    t_pattern_fill(ref, len, 3);
    struct nbuf *big = nbuf_alloc(pool, len);
    cr_assert_eq(nbuf_write(big, ref, len), 0);
    struct acks a = {.expect = {(ssize_t)len}, .watch = big};
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], NBUF_URING_SEND_ZC, ack_fn, &a);
    cr_assert_not_null(s);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_composite_add_slice(c, big, 0, len), 0); /* retains big */
    cr_assert_eq(nbuf_refcnt(big), 2);
    cr_assert_eq(nbuf_uring_sender_flush(s, c), (ssize_t)len);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(big), 2); /* the sender's */
    /* Nobody reads yet: 8 MiB do not fit the socket buffers. */
    cr_assert_geq(nbuf_uring_run(u, 0, 0), 0);
    cr_assert_eq(nbuf_refcnt(big), 2);
    cr_assert_eq(nbuf_uring_sender_unacked(s), len);
    t_capture_reports();
    cr_assert_eq(nbuf_pool_free(pool), -EBUSY);
    nbuf_report_hook_ = NULL;
    cr_assert_eq(nbuf_uring_sender_free(s), -EBUSY);
    cr_assert_eq(nbuf_uring_free(u), -EBUSY);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = len};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    run_until(u, &a.calls, 1);
    cr_assert_eq(a.errors, 0);
    cr_assert_not(a.watch_bad, "a callback ran with the slice still held");
    cr_assert_eq(nbuf_refcnt(big), 1);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, len);
    cr_assert_not(rd.bad);
    cr_assert_eq(nbuf_release(big), 1);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
}

/* The peer reads a little, then closes: the sends fail (-EPIPE or
 * -ECONNRESET), every piece still finishes once and releases its slices,
 * and the sender refuses more. */
static void
peer_closes(int sv[2])
{
    struct nbuf_uring *u = t_ring_or_skip();
    size_t frame = 1 << 20;
    uint8_t *ref = malloc(16 * frame);
    t_pattern_fill(ref, 16 * frame, 4);
    struct acks a;
    memset(&a, 0, sizeof(a));
    memset(a.expect, 0xff, sizeof(a.expect)); /* -1: any size */
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], 0, ack_fn, &a);
    cr_assert_not_null(s);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = 16 * frame, .stop_after = 100000};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    uint64_t seed = 1;
    for (unsigned i = 0; i < 16; i++) {
        struct nbuf_composite *c = t_frame_new(pool, ref + i * frame, frame, 65536, &seed);
        cr_assert_eq(nbuf_uring_sender_flush(s, c), (ssize_t)frame);
        nbuf_composite_free(c);
    }
    run_until(u, &a.calls, 16);
    pthread_join(th, NULL);
    cr_assert_gt(a.errors, 0);
    cr_assert_not(rd.bad);
    cr_assert_eq(nbuf_uring_sender_unacked(s), 0);
    struct nbuf_composite *c = t_frame_new(pool, ref, 100, 10, &seed);
    ssize_t r = nbuf_uring_sender_flush(s, c);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "flush after the failure: %zd", r);
    cr_assert_eq(nbuf_composite_readable(c), 100); /* nothing taken */
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
    close(sv[0]);
}

Test(uring, send_peer_closes_mid_send_tcp)
{
    int sv[2];
    t_tcp_pair(sv);
    peer_closes(sv);
}

Test(uring, send_peer_closes_mid_send_socketpair)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    peer_closes(sv);
}

/* Drain with sends stuck (nobody reads): the send in the kernel is
 * cancelled and the queued ones fail, but zero-copy memory already in the
 * socket's send queue is the kernel's until the connection lets go of it:
 * drain times out, then succeeds once the sockets are closed. */
Test(uring, drain_cancels_stuck_sends)
{
    struct nbuf_uring *u = t_ring_or_skip();
    int sv[2];
    t_tcp_pair(sv);
    struct acks a;
    memset(&a, 0, sizeof(a));
    memset(a.expect, 0xff, sizeof(a.expect));
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], 0, ack_fn, &a);
    uint8_t *ref = malloc(4 << 20);
    t_pattern_fill(ref, 4 << 20, 1);
    uint64_t seed = 2;
    for (int i = 0; i < 4; i++) {
        struct nbuf_composite *c = t_frame_new(pool, ref, 4 << 20, 1 << 16, &seed);
        cr_assert_eq(nbuf_uring_sender_flush(s, c), 4 << 20);
        nbuf_composite_free(c);
    }
    cr_assert_geq(nbuf_uring_run(u, 0, 0), 0);
    int r = nbuf_uring_drain(u, 300);
    cr_assert(r == 0 || r == -ETIME, "drain: %d", r);
    close(sv[1]);
    close(sv[0]);
    cr_assert_eq(nbuf_uring_drain(u, 5000), 0);
    cr_assert_eq(a.calls, 4);
    cr_assert_gt(a.errors, 0);
    cr_assert_eq(nbuf_uring_sender_unacked(s), 0);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
}

/* ---- an old kernel (no SENDMSG_ZC), bad input ---- */

static struct io_uring_probe *
probe_without_zc(struct io_uring *ring)
{
    struct io_uring_probe *p = io_uring_get_probe_ring(ring);
    if (p && p->ops_len > IORING_OP_SENDMSG_ZC)
        p->ops[IORING_OP_SENDMSG_ZC].flags = 0;
    return p;
}

Test(uring, old_kernel_without_send_zc)
{
    nbuf_uring_ops_.get_probe = probe_without_zc;
    int sv[2];
    t_tcp_pair(sv);
    struct nbuf_uring *u = t_ring_or_skip();
    errno = 0;
    cr_assert_null(nbuf_uring_sender_new(u, sv[0], NBUF_URING_SEND_ZC, NULL, NULL));
    cr_assert_eq(errno, EOPNOTSUPP);
    cr_assert_eq(nbuf_uring_free(u), 0);
    stream(sv, 8, 65536, 0, 0); /* copies instead */
}

Test(uring, send_bad_arguments)
{
    struct nbuf_uring *u = t_ring_or_skip();
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    errno = 0;
    cr_assert_null(nbuf_uring_sender_new(NULL, sv[0], 0, NULL, NULL));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_uring_sender_new(u, sv[0], 4, NULL, NULL));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(
        nbuf_uring_sender_new(u, sv[0], NBUF_URING_SEND_ZC | NBUF_URING_SEND_COPY, NULL, NULL));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_uring_sender_new(u, -1, 0, NULL, NULL));
    cr_assert_eq(errno, EBADF);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_null(nbuf_uring_sender_new(u, pfd[1], 0, NULL, NULL));
    cr_assert_eq(errno, ENOTSOCK);
    cr_assert_null(nbuf_uring_sender_new(u, sv[0], NBUF_URING_SEND_ZC, NULL, NULL));
    cr_assert_eq(errno, EOPNOTSUPP); /* AF_UNIX */
    cr_assert_eq(nbuf_uring_sender_free(NULL), -EINVAL);
    cr_assert_eq(nbuf_uring_sender_zerocopy(NULL), -EINVAL);
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], 0, NULL, NULL);
    cr_assert_not_null(s);
    cr_assert_eq(nbuf_uring_sender_flush(s, NULL), -EINVAL);
    cr_assert_eq(nbuf_uring_sender_flush(NULL, NULL), -EINVAL);
    /* A file region first: refused, nothing taken. */
    struct nbuf_composite *c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_composite_add_file(c, pfd[0], 0, 10), 0);
    cr_assert_eq(nbuf_composite_add_copy(c, "abc", 3), 0);
    cr_assert_eq(nbuf_uring_sender_flush(s, c), -EOPNOTSUPP);
    cr_assert_eq(nbuf_composite_readable(c), 13);
    nbuf_composite_free(c);
    struct nbuf_composite *e = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_uring_sender_flush(s, e), 0);
    nbuf_composite_free(e);
    cr_assert_eq(nbuf_uring_sender_unacked(s), 0);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    close(pfd[0]);
    close(pfd[1]);
    close(sv[0]);
    close(sv[1]);
}

/* A flush that finds no submission slot fails the sender, and its pieces
 * finish in the flush: the callback gets -EBUSY, the slices are released
 * and the sender can be freed (they were held forever before). */
Test(uring, flush_without_a_slot_finishes_its_pieces)
{
    int sv[2];
    t_tcp_pair(sv);
    struct nbuf_uring *u = t_ring_or_skip();
    struct acks a = {.expect = {-1}};
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], 0, ack_fn, &a);
    cr_assert_not_null(s);
    struct nbuf *b = nbuf_alloc(pool, 4096);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_write(b, "0123456789", 10), 0);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 10), 0);
    nbuf_uring_sqe_refuse_ = 1;
    cr_assert_eq(nbuf_uring_sender_flush(s, c), 10, "the bytes were taken");
    nbuf_uring_sqe_refuse_ = 0;
    cr_assert_eq(a.calls, 1, "the failed piece finished in the flush");
    cr_assert_eq(a.errors, 1);
    cr_assert_eq(nbuf_uring_sender_unacked(s), 0);
    cr_assert_eq(nbuf_refcnt(b), 1, "the slice was released");
    cr_assert_eq(nbuf_uring_sender_flush(s, c), -EBUSY, "a failed sender takes nothing more");
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    nbuf_composite_free(c);
    nbuf_release(b);
    close(sv[0]);
    close(sv[1]);
}

struct free_in_cb {
    struct nbuf_uring *u;
    struct nbuf_uring_bufs *g;
    int bufs_free, ring_free;
    unsigned calls;
};

/* A one-shot receive's callback frees its group, then the ring. */
static void
free_in_cb_fn(void *ctx, struct nbuf *b, int res, unsigned flags)
{
    struct free_in_cb *f = ctx;
    (void)res, (void)flags;
    if (b)
        nbuf_release(b);
    f->calls++;
    f->bufs_free = nbuf_uring_bufs_free(f->g);
    f->ring_free = nbuf_uring_free(f->u);
}

/* Freeing the ring from a callback is refused even when nothing else is
 * attached or pending: the run that called the callback still reads it. */
Test(uring, ring_free_from_a_callback_is_refused)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct nbuf_uring *u = t_ring_or_skip();
    struct free_in_cb f = {.u = u};
    f.g = nbuf_uring_bufs_new(u, pool, 4096, 2);
    cr_assert_not_null(f.g);
    cr_assert_eq(nbuf_uring_recv(f.g, sv[1], free_in_cb_fn, &f), 0);
    cr_assert_eq(write(sv[0], "hello", 5), 5);
    for (int i = 0; i < 1000 && !f.calls; i++)
        cr_assert_geq(nbuf_uring_run(u, 1, 100), 0);
    cr_assert_eq(f.calls, 1);
    cr_assert_eq(f.bufs_free, 0, "the group had nothing armed any more");
    cr_assert_eq(f.ring_free, -EBUSY);
    cr_assert_eq(nbuf_uring_pending(u), 0);
    cr_assert_eq(nbuf_uring_free(u), 0, "after the run it goes");
    close(sv[0]);
    close(sv[1]);
}

/* Frames of 256 KiB over loopback TCP with @flags: loopback copies the
 * pinned pages, and Linux 6.2+ says so in each notification. Returns the
 * sender's nbuf_uring_sender_zerocopy() after the frames finished and
 * stores its copied count in @copied. */
static int
zc_after_loopback(unsigned flags, unsigned *copied)
{
    int sv[2];
    t_tcp_pair(sv);
    struct nbuf_uring *u = t_ring_or_skip();
    enum { NFRAMES = 4, FRAME = 256 << 10 };
    uint8_t *ref = malloc(NFRAMES * FRAME);
    cr_assert_not_null(ref);
    t_pattern_fill(ref, NFRAMES * FRAME, 9);
    struct acks a = {0};
    memset(a.expect, 0xff, sizeof(a.expect));
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(u, sv[0], flags, ack_fn, &a);
    cr_assert_not_null(s, "sender_new: %s", strerror(errno));
    cr_assert_eq(nbuf_uring_sender_zerocopy(s), 1);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = NFRAMES * FRAME};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    uint64_t seed = 3;
    for (unsigned i = 0; i < NFRAMES; i++) {
        /* One frame at a time: each zero-copy send has its notification
         * before the next is flushed. */
        struct nbuf_composite *c = t_frame_new(pool, ref + (size_t)i * FRAME, FRAME, 65536, &seed);
        cr_assert_eq(nbuf_uring_sender_flush(s, c), FRAME);
        nbuf_composite_free(c);
        run_until(u, &a.calls, i + 1);
    }
    cr_assert_eq(a.errors, 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, (size_t)NFRAMES * FRAME);
    cr_assert_not(rd.bad, "the stream differs");
    int zc = nbuf_uring_sender_zerocopy(s);
    *copied = nbuf_uring_sender_copied(s);
    cr_assert_eq(nbuf_uring_sender_free(s), 0);
    cr_assert_eq(nbuf_uring_free(u), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
    return zc;
}

/* A sender that may copy stops paying for zero-copy once the kernel says it
 * copied; one that requires zero-copy keeps it and counts the reports. */
Test(uring, copied_report_turns_to_copying)
{
    unsigned copied;
    int zc = zc_after_loopback(0, &copied);
    if (copied == 0)
        cr_skip("this kernel does not report copied zero-copy sends (before 6.2)");
    cr_assert_eq(zc, 0, "copies after the kernel reported copying");
    cr_assert_eq(copied, 1, "one report, then no more zero-copy sends");
    zc = zc_after_loopback(NBUF_URING_SEND_ZC, &copied);
    cr_assert_eq(zc, 1, "zero-copy required: kept");
    cr_assert_geq(copied, 4, "every frame reported: %u", copied);
}
