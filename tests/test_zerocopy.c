/* SPDX-License-Identifier: MIT */
/* MSG_ZEROCOPY senders: byte-exact streams over loopback TCP (where the
 * kernel copies and says so), slices held until their completion, ranges
 * completing out of order (injected error-queue messages), a peer closing
 * mid-send, a full non-blocking socket, refusals. */
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "nbuf/zerocopy.h"
#include "sysops.h"

static struct nbuf_pool *pool;

static void
setup(void)
{
    pool = t_pool_new(NULL);
}

static void
teardown(void)
{
    nbuf_sys_ = nbuf_sys_default_;
    t_pool_done(pool);
}

TestSuite(zerocopy, .init = setup, .fini = teardown, .timeout = 60);

/* Send all of @c (blocking socket), reaping as we go. */
static void
send_all(struct nbuf_zerocopy *z, struct nbuf_composite *c)
{
    while (nbuf_composite_readable(c) || nbuf_zerocopy_pending(z) > 0) {
        ssize_t r = nbuf_zerocopy_send(z, c);
        cr_assert(r >= 0 || r == -EAGAIN, "send: %zd", r);
        cr_assert_geq(nbuf_zerocopy_reap(z, r == 0 ? 10 : 0), 0);
    }
}

Test(zerocopy, tcp_round_trip_many_sizes)
{
    int sv[2];
    t_tcp_pair(sv);
    uint64_t seed = 11;
    size_t sizes[60], total = 0;
    for (int i = 0; i < 60; i++)
        total += sizes[i] = 1 + (size_t)(t_rand(&seed) % ((size_t)1 << (t_rand(&seed) % 21)));
    uint8_t *ref = malloc(total);
    t_pattern_fill(ref, total, 6);
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(sv[0]);
    cr_assert_not_null(z, "zerocopy_new: %s", strerror(errno));
    cr_assert_eq(nbuf_zerocopy_copied(z), 0);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = total};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    size_t off = 0;
    for (int i = 0; i < 60; i++) {
        struct nbuf_composite *c = t_frame_new(pool, ref + off, sizes[i], 65536, &seed);
        send_all(z, c);
        nbuf_composite_free(c);
        off += sizes[i];
    }
    /* Loopback copies, and says so in the completions. */
    cr_assert_eq(nbuf_zerocopy_copied(z), 1);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, total);
    cr_assert_not(rd.bad);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
}

/* The first send is zero-copy: its slice stays referenced (and the pool
 * refuses to go) until the completion is reaped; then released. */
Test(zerocopy, slice_held_until_completion)
{
    int sv[2];
    t_tcp_pair(sv);
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(sv[0]);
    cr_assert_not_null(z);
    size_t len = 65536;
    struct nbuf *b = nbuf_alloc(pool, len);
    t_buf_fill(b, 3);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, len), 0);
    cr_assert_eq(nbuf_zerocopy_send(z, c), (ssize_t)nbuf_readable(b));
    cr_assert_eq(nbuf_composite_readable(c), 0);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 2); /* the sender's, until the completion */
    cr_assert_eq(nbuf_zerocopy_pending(z), nbuf_readable(b));
    t_capture_reports();
    cr_assert_eq(nbuf_pool_free(pool), -EBUSY);
    nbuf_report_hook_ = NULL;
    cr_assert_eq(nbuf_zerocopy_free(z), -EBUSY);
    for (int i = 0; i < 100 && nbuf_zerocopy_pending(z); i++)
        cr_assert_geq(nbuf_zerocopy_reap(z, 100), 0);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(nbuf_zerocopy_copied(z), 1);
    /* Copying from now on: nothing is held after the send. */
    c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 1000), 0);
    cr_assert_eq(nbuf_zerocopy_send(z, c), 1000);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_composite_free(c);
    nbuf_release(b);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    close(sv[0]);
    close(sv[1]);
}

/* ---- injected error-queue messages: ranges out of order, not copied ---- */

static struct {
    uint32_t lo, hi;
    uint8_t code;
} fake[8];
static unsigned nfake, fake_at;

static ssize_t
fake_recvmsg(int fd, struct msghdr *m, int flags)
{
    if (!(flags & MSG_ERRQUEUE) || fake_at == nfake) {
        errno = EAGAIN;
        return -1;
    }
    struct cmsghdr *cm = CMSG_FIRSTHDR(m);
    cm->cmsg_level = SOL_IP;
    cm->cmsg_type = IP_RECVERR;
    cm->cmsg_len = CMSG_LEN(sizeof(struct sock_extended_err));
    struct sock_extended_err e = {.ee_origin = SO_EE_ORIGIN_ZEROCOPY,
                                  .ee_code = fake[fake_at].code,
                                  .ee_info = fake[fake_at].lo,
                                  .ee_data = fake[fake_at].hi};
    memcpy(CMSG_DATA(cm), &e, sizeof(e));
    m->msg_controllen = CMSG_SPACE(sizeof(e));
    fake_at++;
    return 0;
}

Test(zerocopy, ranges_release_what_they_cover)
{
    int sv[2];
    t_tcp_pair(sv);
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(sv[0]);
    cr_assert_not_null(z);
    struct nbuf *b[5];
    for (int i = 0; i < 5; i++) {
        b[i] = nbuf_alloc(pool, 4096);
        t_buf_fill(b[i], (uint64_t)i);
        struct nbuf_composite *c = nbuf_composite_new(pool);
        cr_assert_eq(nbuf_composite_add_slice(c, b[i], 0, 4096), 0);
        cr_assert_eq(nbuf_zerocopy_send(z, c), 4096); /* send number i */
        nbuf_composite_free(c);
        cr_assert_eq(nbuf_refcnt(b[i]), 2);
    }
    nbuf_sys_.recvmsg = fake_recvmsg;
    fake[0].lo = 2, fake[0].hi = 3;
    fake[1].lo = 0, fake[1].hi = 0;
    nfake = 2, fake_at = 0;
    cr_assert_eq(nbuf_zerocopy_reap(z, 0), 3);
    unsigned want[5] = {1, 2, 1, 1, 2};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(nbuf_refcnt(b[i]), want[i], "buffer %d", i);
    cr_assert_eq(nbuf_zerocopy_pending(z), 2 * 4096);
    cr_assert_eq(nbuf_zerocopy_copied(z), 0); /* real zero-copy: no code */
    fake[2].lo = 1, fake[2].hi = 1;
    fake[3].lo = 4, fake[3].hi = 4, fake[3].code = SO_EE_CODE_ZEROCOPY_COPIED;
    nfake = 4;
    cr_assert_eq(nbuf_zerocopy_reap(z, 0), 2);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(nbuf_release(b[i]), 1);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    cr_assert_eq(nbuf_zerocopy_copied(z), 1);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    close(sv[0]);
    close(sv[1]);
}

/* A non-blocking socket that fills: -EAGAIN, nothing lost; the rest goes
 * once the peer reads. */
Test(zerocopy, full_socket_eagain)
{
    int sv[2];
    t_tcp_pair(sv);
    cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    size_t total = 16 << 20;
    uint8_t *ref = malloc(total);
    t_pattern_fill(ref, total, 9);
    uint64_t seed = 5;
    struct nbuf_composite *c = t_frame_new(pool, ref, total, 1 << 18, &seed);
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(sv[0]);
    ssize_t r;
    size_t sent = 0;
    while ((r = nbuf_zerocopy_send(z, c)) > 0)
        sent += (size_t)r;
    cr_assert_eq(r, -EAGAIN);
    cr_assert_lt(sent, total);
    cr_assert_eq(nbuf_composite_readable(c) + nbuf_zerocopy_pending(z) >= total - sent, 1);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = total};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    while (sent < total) {
        r = nbuf_zerocopy_send(z, c);
        cr_assert(r > 0 || r == -EAGAIN, "send: %zd", r);
        if (r > 0)
            sent += (size_t)r;
        else
            nbuf_zerocopy_reap(z, 10);
    }
    for (int i = 0; i < 500 && nbuf_zerocopy_pending(z); i++)
        cr_assert_geq(nbuf_zerocopy_reap(z, 10), 0);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    cr_assert_eq(rd.got, total);
    cr_assert_not(rd.bad);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    free(ref);
    close(sv[0]);
    close(sv[1]);
}

/* The peer closes mid-send: the error comes back, and every slice is
 * still released through the completions. */
Test(zerocopy, peer_closes_mid_send)
{
    int sv[2];
    t_tcp_pair(sv);
    size_t total = 16 << 20;
    uint8_t *ref = malloc(total);
    t_pattern_fill(ref, total, 2);
    uint64_t seed = 3;
    struct nbuf_composite *c = t_frame_new(pool, ref, total, 1 << 16, &seed);
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(sv[0]);
    struct t_reader rd = {.fd = sv[1], .ref = ref, .want = total, .stop_after = 100000};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, t_reader_main, &rd), 0);
    ssize_t r;
    while ((r = nbuf_zerocopy_send(z, c)) > 0)
        nbuf_zerocopy_reap(z, 0);
    cr_assert(r == -EPIPE || r == -ECONNRESET, "send: %zd", r);
    pthread_join(th, NULL);
    cr_assert_not(rd.bad);
    nbuf_composite_free(c); /* what was never taken */
    for (int i = 0; i < 500 && nbuf_zerocopy_pending(z); i++)
        cr_assert_geq(nbuf_zerocopy_reap(z, 10), 0);
    cr_assert_eq(nbuf_zerocopy_pending(z), 0);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    free(ref);
    close(sv[0]);
}

/* ---- refusals ---- */

static int
fail_setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    errno = ENOPROTOOPT;
    return -1;
}

Test(zerocopy, refusals)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    errno = 0;
    cr_assert_null(nbuf_zerocopy_new(sv[0]));
    cr_assert_eq(errno, EOPNOTSUPP); /* AF_UNIX */
    cr_assert_null(nbuf_zerocopy_new(-1));
    cr_assert_eq(errno, EBADF);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_null(nbuf_zerocopy_new(pfd[0]));
    cr_assert_eq(errno, ENOTSOCK);
    int tv[2];
    t_tcp_pair(tv);
    nbuf_sys_.setsockopt = fail_setsockopt; /* a kernel before 4.14 */
    cr_assert_null(nbuf_zerocopy_new(tv[0]));
    cr_assert_eq(errno, EOPNOTSUPP);
    nbuf_sys_ = nbuf_sys_default_;
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(tv[0]);
    cr_assert_not_null(z);
    cr_assert_eq(nbuf_zerocopy_send(z, NULL), -EINVAL);
    cr_assert_eq(nbuf_zerocopy_send(NULL, NULL), -EINVAL);
    cr_assert_eq(nbuf_zerocopy_reap(NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_zerocopy_free(NULL), -EINVAL);
    cr_assert_eq(nbuf_zerocopy_copied(NULL), -EINVAL);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    cr_assert_eq(nbuf_zerocopy_send(z, c), 0);
    cr_assert_eq(nbuf_composite_add_file(c, pfd[0], 0, 10), 0);
    cr_assert_eq(nbuf_composite_add_copy(c, "abc", 3), 0);
    cr_assert_eq(nbuf_zerocopy_send(z, c), -EOPNOTSUPP);
    cr_assert_eq(nbuf_composite_readable(c), 13);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_zerocopy_reap(z, 0), 0);
    cr_assert_eq(nbuf_zerocopy_free(z), 0);
    for (int i = 0; i < 2; i++) {
        close(sv[i]);
        close(pfd[i]);
        close(tv[i]);
    }
}
