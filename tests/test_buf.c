/* SPDX-License-Identifier: MIT */
/* Buffers: allocation edge cases (CHECKLIST A), reference counting and
 * lifetime (B8-B14), cursors, bulk and typed access, growth, fd IO. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static struct nbuf_pool *pool;

static void
setup(void)
{
    pool = t_pool_new(NULL);
}

static void
teardown(void)
{
    t_pool_done(pool);
}

TestSuite(buf, .init = setup, .fini = teardown);

static bool
checked(const struct nbuf_pool *p)
{
    return (p->buf_flags & NBUF_F_CHECKED) != 0;
}

/* ---- A. sizes and arithmetic ---- */

/* A1: a zero-capacity buffer is a real, writable, releasable buffer. */
Test(buf, alloc_zero)
{
    struct nbuf *a = nbuf_alloc(pool, 0), *b = nbuf_alloc(pool, 0);
    cr_assert(a && b);
    cr_assert_neq(a, b, "never a shared sentinel");
    cr_assert(nbuf_buf_check_(a));
    cr_assert_eq(nbuf_readable(a), 0);
    cr_assert_eq(nbuf_write(a, "x", 1), 0, "grows on write");
    cr_assert_eq(nbuf_data(a)[0], 'x');
    cr_assert_eq(nbuf_release(a), 1);
    cr_assert_eq(nbuf_release(b), 1);
}

/* A2 and A7: absurd sizes and peer-declared lengths fail before any memory
 * is committed. */
Test(buf, alloc_too_big)
{
    struct nbuf_pool_stats s0 = t_stats(pool);
    size_t bad[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4096, ((size_t)1 << 30) + 1,
                    (size_t)4 << 30};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errno = 0;
        cr_assert_null(nbuf_alloc(pool, bad[i]), "size %zu", bad[i]);
        cr_assert_eq(errno, EINVAL, "size %zu: errno %d", bad[i], errno);
        cr_assert_null(nbuf_alloc_ex(pool, bad[i], bad[i], 0));
        cr_assert_null(nbuf_alloc_ex(pool, 1, bad[i], 0));
    }
    cr_assert_null(nbuf_alloc_ex(pool, 10, 5, 0), "capacity above max_capacity");
    cr_assert_null(nbuf_alloc_ex(pool, 10, 10, 1u << 7), "unknown flag");
    struct nbuf_pool_stats s1 = t_stats(pool);
    t_stats_assert_same(&s0, &s1);
    cr_assert_eq(s1.backing_bytes, s0.backing_bytes, "nothing taken from the backing");
    cr_assert_eq(s1.chunks, s0.chunks);

    /* A 4 GiB length prefix from a peer, on a buffer bounded by 1 MiB. */
    struct nbuf *b = nbuf_alloc_ex(pool, 64, 1 << 20, 0);
    s1 = t_stats(pool);
    uint64_t peer_len = (uint64_t)4 << 30;
    cr_assert_eq(nbuf_ensure_writable(b, (size_t)peer_len), -ENOBUFS);
    cr_assert_null(nbuf_reserve(b, (size_t)peer_len));
    cr_assert_eq(errno, ENOBUFS);
    cr_assert_leq(nbuf_capacity(b), 1 << 20);
    struct nbuf_pool_stats s2 = t_stats(pool);
    cr_assert_eq(s2.backing_bytes, s1.backing_bytes);
    nbuf_release(b);
}

/* A3: overflowing index + length arithmetic is refused, nothing moves. */
Test(buf, overflowing_offsets)
{
    struct nbuf *b = nbuf_alloc(pool, 64);
    nbuf_write(b, "0123456789", 10);
    uint8_t tmp[8];
    struct nbuf_pool_stats s0 = t_stats(pool);
    cr_assert_eq(nbuf_get(b, SIZE_MAX, tmp, 2), -ENODATA);
    cr_assert_eq(nbuf_get(b, 2, tmp, SIZE_MAX - 1), -ENODATA);
    cr_assert_eq(nbuf_get(b, 11, tmp, 0), -ENODATA);
    cr_assert_eq(nbuf_get(b, 10, tmp, 0), 0, "empty range at the writer");
    cr_assert_eq(nbuf_set(b, SIZE_MAX, tmp, 2), -EINVAL);
    cr_assert_eq(nbuf_set(b, 1, tmp, SIZE_MAX), -EINVAL);
    cr_assert_eq(nbuf_set(b, nbuf_capacity(b), tmp, 1), -EINVAL);
    cr_assert_eq(nbuf_get_u64(b, SIZE_MAX - 3, &(uint64_t){0}), -ENODATA);
    cr_assert_eq(nbuf_set_u32(b, SIZE_MAX - 1, 1), -EINVAL);
    cr_assert_eq(nbuf_commit(b, SIZE_MAX), -EINVAL);
    cr_assert_eq(nbuf_commit(b, SIZE_MAX - 5), -EINVAL);
    cr_assert_eq(nbuf_skip(b, SIZE_MAX), -ENODATA);
    cr_assert_eq(nbuf_set_indices(b, 1, SIZE_MAX), -EINVAL);
    cr_assert_eq(nbuf_set_indices(b, 5, 4), -EINVAL);
    cr_assert_eq(nbuf_ensure_writable(b, SIZE_MAX), -ENOBUFS);
    cr_assert_eq(nbuf_ensure_writable(b, SIZE_MAX - 9), -ENOBUFS);
    cr_assert_eq(nbuf_write(b, tmp, SIZE_MAX), -ENOBUFS);
    cr_assert_eq(nbuf_index_of(b, 5, 4, 'x'), -EINVAL);
    cr_assert_eq(nbuf_index_of(b, SIZE_MAX - 1, SIZE_MAX, '0'), -ENOENT);
    cr_assert_eq(nbuf_reader_index(b), 0);
    cr_assert_eq(nbuf_writer_index(b), 10);
    struct nbuf_pool_stats s1 = t_stats(pool);
    t_stats_assert_same(&s0, &s1);
    nbuf_release(b);
}

/* A5: every class boundary and its neighbours: usable >= request, and the
 * whole usable size can be written (ASan checks the unpoisoned range). */
Test(buf, class_boundaries)
{
    size_t page = pool->cfg.page_size, chunk = pool->cfg.chunk_size;
    size_t probes[] = {
        1,    15,       16,           17,       4095,         4096,      4097,  page - 1,
        page, page + 1, 4 * page - 1, 4 * page, 4 * page + 1, chunk - 1, chunk, chunk + 1};
    for (unsigned i = 0; i < pool->nclasses; i++) {
        size_t us = nbuf_sz_usize_(i);
        for (size_t n = us - 1; n <= us + 1; n++) {
            struct nbuf *b = nbuf_alloc(pool, n);
            cr_assert_not_null(b, "size %zu", n);
            cr_assert_geq(nbuf_capacity(b), n);
            memset(nbuf_reserve(b, nbuf_capacity(b)), 0x3c, nbuf_capacity(b));
            cr_assert_eq(nbuf_commit(b, nbuf_capacity(b)), 0);
            cr_assert(nbuf_buf_check_(b));
            nbuf_release(b);
        }
    }
    for (unsigned i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        struct nbuf *b = nbuf_alloc(pool, probes[i]);
        cr_assert_not_null(b);
        cr_assert_geq(nbuf_capacity(b), probes[i]);
        memset(nbuf_reserve(b, nbuf_capacity(b)), 0x3c, nbuf_capacity(b));
        nbuf_release(b);
    }
}

/* A max_capacity below the class size hides the slack. */
Test(buf, max_capacity_clamps)
{
    struct nbuf *b = nbuf_alloc_ex(pool, 100, 100, 0);
    cr_assert_eq(nbuf_capacity(b), 100);
    cr_assert_eq(nbuf_max_capacity(b), 100);
    memset(nbuf_reserve(b, 100), 1, 100);
    cr_assert_eq(nbuf_commit(b, 100), 0);
    cr_assert_eq(nbuf_write_u8(b, 1), -ENOBUFS);
    nbuf_release(b);
    /* Huge, clamped to a non page multiple: freed with its real size. */
    size_t huge = pool->cfg.chunk_size + 1;
    struct nbuf_pool_stats s0 = t_stats(pool);
    b = nbuf_alloc_ex(pool, huge, huge, 0);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_capacity(b), huge);
    cr_assert_eq(nbuf_release(b), 1);
    struct nbuf_pool_stats s1 = t_stats(pool);
    /* Uncharged, or cached with its real (page-multiple) size. */
    uint64_t cached = nbuf_huge_cached_bytes_(pool);
    cr_assert(cached == 0 || cached == nbuf_align_up_(huge, 4096));
    cr_assert_eq(s1.backing_bytes - cached, s0.backing_bytes, "huge memory fully uncharged");
}

/* A6: growth copies exactly the written bytes: a 10-byte buffer in the last
 * element of its chunk grows to 4 KiB (an over-long copy would read past the
 * chunk). Bytes past the writer are not carried over. */
Test(buf, growth_copies_written_bytes_only)
{
    if (t_bypass())
        cr_skip_test("layout test");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = 4096;
    cfg.chunk_size = 8 * 4096;
    cfg.arenas = 1;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf *keep[2048];
    unsigned n = 0;
    struct nbuf *last = NULL;
    while (n < 2048) {
        struct nbuf *b = nbuf_alloc(p, 16);
        cr_assert_not_null(b);
        struct nbuf_chunk *c = ((struct nbuf_subpage *)b->slab)->chunk;
        if (b->mem + 16 == c->base + cfg.chunk_size) {
            last = b;
            break;
        }
        keep[n++] = b;
    }
    cr_assert_not_null(last, "no buffer landed at the chunk's end");
    cr_assert_eq(nbuf_write(last, "0123456789", 10), 0);
    cr_assert_eq(nbuf_set(last, 10, "XXXXXX", 6), 0, "bytes past the writer");
    cr_assert_eq(nbuf_skip(last, 3), 0);
    cr_assert_eq(nbuf_ensure_writable(last, 4096 - 10), 0);
    cr_assert_geq(nbuf_capacity(last), 4096);
    cr_assert_eq(memcmp(nbuf_data(last), "3456789", 7), 0);
    cr_assert_eq(nbuf_reader_index(last), 3);
    uint8_t head[3];
    cr_assert_eq(nbuf_get(last, 0, head, 3), 0);
    cr_assert_eq(memcmp(head, "012", 3), 0, "discardable bytes kept for get");
    if (checked(p)) {
        /* Junk, not the old buffer's unwritten bytes. */
        for (unsigned i = 10; i < 16; i++)
            cr_assert_eq(last->mem[i], 0xa5, "byte %u", i);
    }
    nbuf_release(last);
    for (unsigned i = 0; i < n; i++)
        nbuf_release(keep[i]);
    t_pool_done(p);
}

/* ---- growth ---- */

Test(buf, growth_schedule)
{
    struct nbuf *b = nbuf_alloc(pool, 1);
    size_t prev = nbuf_capacity(b);
    const uint8_t *first = b->mem;
    /* In place while the class has room. */
    cr_assert_eq(nbuf_ensure_writable(b, prev), 0);
    cr_assert_eq(b->mem, first);
    cr_assert_eq(nbuf_capacity(b), prev);
    /* Then Netty's doubling from 64. */
    cr_assert_eq(nbuf_ensure_writable(b, 100), 0);
    cr_assert_geq(nbuf_capacity(b), 128);
    cr_assert_lt(nbuf_capacity(b), 160);
    nbuf_release(b);
    b = nbuf_alloc_ex(pool, 16, 20u << 20, 0);
    for (unsigned i = 0; i < 20; i++) {
        size_t want = (size_t)3000 << i;
        if (want > (20u << 20))
            break;
        cr_assert_eq(nbuf_ensure_writable(b, want), 0);
        size_t cap = nbuf_capacity(b);
        cr_assert_geq(cap, want);
        if (want <= (4u << 20))
            cr_assert_lt(cap, 2 * want + 4096, "doubling below 4 MiB: %zu for %zu", cap, want);
        else
            cr_assert_leq(cap, want + (4u << 20), "4 MiB steps: %zu for %zu", cap, want);
    }
    cr_assert_eq(nbuf_ensure_writable(b, (20u << 20) + 1), -ENOBUFS);
    cr_assert_eq(nbuf_ensure_writable(b, 20u << 20), 0, "exactly max_capacity");
    cr_assert_eq(nbuf_capacity(b), 20u << 20);
    nbuf_release(b);
}

Test(buf, growth_keeps_contents_and_identity)
{
    struct nbuf *b = nbuf_alloc(pool, 8);
    uint64_t seed = 42, v[2000];
    for (unsigned i = 0; i < 2000; i++) {
        v[i] = t_rand(&seed);
        cr_assert_eq(nbuf_write_u64(b, v[i]), 0);
    }
    cr_assert(nbuf_buf_check_(b));
    cr_assert_eq(nbuf_refcnt(b), 1);
    for (unsigned i = 0; i < 2000; i++) {
        uint64_t x;
        cr_assert_eq(nbuf_read_u64(b, &x), 0);
        cr_assert_eq(x, v[i]);
    }
    struct nbuf_pool_stats st = t_stats(pool);
    cr_assert_eq(st.live_buffers, 1, "the old memory went back");
    nbuf_release(b);
}

/* ---- cursors and bulk access ---- */

Test(buf, cursors)
{
    struct nbuf *b = nbuf_alloc(pool, 32);
    cr_assert_eq(nbuf_write(b, "abcdefgh", 8), 0);
    cr_assert_eq(nbuf_skip(b, 3), 0);
    cr_assert_eq(nbuf_skip(b, 6), -ENODATA);
    cr_assert_eq(nbuf_reader_index(b), 3, "nothing consumed");
    cr_assert_eq(nbuf_readable(b), 5);
    cr_assert_eq(nbuf_writable(b), nbuf_capacity(b) - 8);
    cr_assert_eq(nbuf_discard_read(b), 0);
    cr_assert_eq(nbuf_reader_index(b), 0);
    cr_assert_eq(nbuf_writer_index(b), 5);
    cr_assert_eq(memcmp(nbuf_data(b), "defgh", 5), 0);
    cr_assert_eq(nbuf_discard_read(b), 0, "nothing to discard");
    cr_assert_eq(nbuf_set_indices(b, 2, 4), 0);
    cr_assert_eq(memcmp(nbuf_data(b), "fg", 2), 0);
    cr_assert_eq(nbuf_set_indices(b, 0, nbuf_capacity(b)), 0);
    cr_assert_eq(nbuf_set_indices(b, 0, nbuf_capacity(b) + 1), -EINVAL);
    nbuf_clear(b);
    cr_assert_eq(nbuf_readable(b), 0);
    cr_assert_eq(nbuf_writer_index(b), 0);
    uint8_t *w = nbuf_reserve(b, 4);
    memcpy(w, "wxyz", 4);
    cr_assert_eq(nbuf_commit(b, 4), 0);
    cr_assert_eq(nbuf_commit(b, nbuf_capacity(b)), -EINVAL);
    cr_assert_eq(memcmp(nbuf_data(b), "wxyz", 4), 0);
    nbuf_release(b);
}

Test(buf, bulk)
{
    struct nbuf *b = nbuf_alloc(pool, 16);
    char out[32] = {0};
    cr_assert_eq(nbuf_write(b, "hello world", 11), 0);
    cr_assert_eq(nbuf_read(b, out, 12), -ENODATA);
    cr_assert_eq(nbuf_reader_index(b), 0, "a short read consumes nothing");
    cr_assert_eq(nbuf_read(b, out, 5), 0);
    cr_assert_eq(memcmp(out, "hello", 5), 0);
    cr_assert_eq(nbuf_get(b, 0, out, 11), 0, "get is absolute");
    cr_assert_eq(memcmp(out, "hello world", 11), 0);
    cr_assert_eq(nbuf_get(b, 6, out, 6), -ENODATA, "never past the writer");
    cr_assert_eq(nbuf_set(b, 6, "W", 1), 0);
    cr_assert_eq(nbuf_set(b, 11, "!!", 2), 0, "set reaches below capacity");
    cr_assert_eq(nbuf_writer_index(b), 11, "set moves no cursor");
    cr_assert_eq(nbuf_read(b, out, 6), 0);
    cr_assert_eq(memcmp(out, " World", 6), 0);
    cr_assert_eq(nbuf_read(b, out, 0), 0);
    cr_assert_eq(nbuf_write(b, NULL, 0), 0);
    cr_assert_eq(nbuf_write(b, NULL, 1), -EINVAL);
    cr_assert_eq(nbuf_read(b, NULL, 1), -EINVAL);
    cr_assert_eq(nbuf_write(NULL, "x", 1), -EINVAL);
    nbuf_release(b);
}

Test(buf, typed_big_and_little_endian)
{
    struct nbuf *b = nbuf_alloc(pool, 8);
    cr_assert_eq(nbuf_write_u8(b, 0x01), 0);
    cr_assert_eq(nbuf_write_u16(b, 0x0203), 0);
    cr_assert_eq(nbuf_write_u32(b, 0x04050607), 0);
    cr_assert_eq(nbuf_write_u64(b, 0x08090a0b0c0d0e0full), 0);
    cr_assert_eq(nbuf_write_u16_le(b, 0x1110), 0);
    cr_assert_eq(nbuf_write_u32_le(b, 0x15141312), 0);
    cr_assert_eq(nbuf_write_u64_le(b, 0x1d1c1b1a19181716ull), 0);
    cr_assert_eq(nbuf_readable(b), 29);
    for (unsigned i = 0; i < 29; i++)
        cr_assert_eq(nbuf_data(b)[i], i + 1, "byte %u", i);
    uint8_t a;
    uint16_t c;
    uint32_t d;
    uint64_t e;
    cr_assert_eq(nbuf_get_u16(b, 1, &c), 0);
    cr_assert_eq(c, 0x0203);
    cr_assert_eq(nbuf_get_u32_le(b, 17, &d), 0);
    cr_assert_eq(d, 0x15141312);
    cr_assert_eq(nbuf_get_u64(b, 7, &e), 0);
    cr_assert_eq(e, 0x08090a0b0c0d0e0full);
    cr_assert_eq(nbuf_get_u64_le(b, 22, &e), -ENODATA, "7 bytes left");
    cr_assert_eq(nbuf_read_u8(b, &a), 0);
    cr_assert_eq(a, 1);
    cr_assert_eq(nbuf_read_u16(b, &c), 0);
    cr_assert_eq(c, 0x0203);
    cr_assert_eq(nbuf_read_u32(b, &d), 0);
    cr_assert_eq(d, 0x04050607);
    cr_assert_eq(nbuf_read_u64(b, &e), 0);
    cr_assert_eq(e, 0x08090a0b0c0d0e0full);
    cr_assert_eq(nbuf_read_u16_le(b, &c), 0);
    cr_assert_eq(c, 0x1110);
    cr_assert_eq(nbuf_read_u32_le(b, &d), 0);
    cr_assert_eq(d, 0x15141312);
    cr_assert_eq(nbuf_read_u64_le(b, &e), 0);
    cr_assert_eq(e, 0x1d1c1b1a19181716ull);
    cr_assert_eq(nbuf_read_u8(b, &a), -ENODATA);
    cr_assert_eq(nbuf_read_u32(b, NULL), -EINVAL);
    /* set: absolute, below capacity, no cursor moves. */
    cr_assert_eq(nbuf_set_u16(b, 0, 0xbeef), 0);
    cr_assert_eq(nbuf_set_u32_le(b, 2, 0xcafef00d), 0);
    cr_assert_eq(nbuf_set_u64(b, 8, 0x1122334455667788ull), 0);
    cr_assert_eq(nbuf_set_u8(b, 16, 0x99), 0);
    cr_assert_eq(nbuf_set_u16_le(b, 17, 0xabcd), 0);
    cr_assert_eq(nbuf_set_u64_le(b, 19, 7), 0);
    cr_assert_eq(nbuf_set_u32(b, 27, 0x01020304), 0);
    cr_assert_eq(nbuf_writer_index(b), 29);
    cr_assert_eq(nbuf_get_u16(b, 0, &c), 0);
    cr_assert_eq(c, 0xbeef);
    cr_assert_eq(nbuf_get_u32_le(b, 2, &d), 0);
    cr_assert_eq(d, 0xcafef00d);
    cr_assert_eq(nbuf_get_u32(b, 2, &d), 0);
    cr_assert_eq(d, 0x0df0feca);
    cr_assert_eq(nbuf_get_u64(b, 8, &e), 0);
    cr_assert_eq(e, 0x1122334455667788ull);
    cr_assert_eq(nbuf_get_u8(b, 16, &a), 0);
    cr_assert_eq(a, 0x99);
    cr_assert_eq(nbuf_get_u16_le(b, 17, &c), 0);
    cr_assert_eq(c, 0xabcd);
    cr_assert_eq(nbuf_get_u64_le(b, 19, &e), 0);
    cr_assert_eq(e, 7);
    cr_assert_eq(nbuf_set_u64(b, nbuf_capacity(b) - 7, 1), -EINVAL);
    cr_assert_eq(nbuf_set_u64(b, nbuf_capacity(b) - 8, 1), 0);
    nbuf_release(b);
}

Test(buf, index_of)
{
    struct nbuf *b = nbuf_alloc(pool, 64);
    nbuf_write(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    cr_assert_eq(nbuf_index_of(b, 0, 27, '\n'), 15);
    cr_assert_eq(nbuf_index_of(b, 16, 27, '\n'), 24);
    cr_assert_eq(nbuf_index_of(b, 0, 15, '\n'), -ENOENT, "to is exclusive");
    cr_assert_eq(nbuf_index_of(b, 0, SIZE_MAX, 'z'), -ENOENT, "clamped to the writer");
    nbuf_set_u8(b, 40, 'z');
    cr_assert_eq(nbuf_index_of(b, 0, SIZE_MAX, 'z'), -ENOENT, "unwritten bytes never searched");
    cr_assert_eq(nbuf_index_of(b, 27, 27, 'G'), -ENOENT);
    cr_assert_eq(nbuf_index_of(b, 0, 1, 'G'), 0);
    nbuf_release(b);
}

/* ---- fd IO ---- */

Test(buf, read_fd_write_fd_pipe)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    struct nbuf *b = nbuf_alloc(pool, 16);
    nbuf_write(b, "ping pong", 9);
    nbuf_skip(b, 5);
    cr_assert_eq(nbuf_write_fd(b, fds[1]), 4, "not a socket: write()");
    cr_assert_eq(nbuf_readable(b), 0);
    cr_assert_eq(nbuf_write_fd(b, fds[1]), 0, "nothing readable");
    struct nbuf *r = nbuf_alloc_ex(pool, 2, 1 << 16, 0);
    cr_assert_eq(nbuf_read_fd(r, fds[0], 1000), 4, "grows to fit");
    cr_assert_eq(memcmp(nbuf_data(r), "pong", 4), 0);
    cr_assert_eq(nbuf_read_fd(r, fds[0], 0), -EINVAL);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    cr_assert_eq(nbuf_read_fd(r, fds[0], 100), -EAGAIN);
    close(fds[1]);
    cr_assert_eq(nbuf_read_fd(r, fds[0], 100), 0, "end of file");
    cr_assert_eq(nbuf_write_fd(b, -1), 0);
    nbuf_write(b, "x", 1);
    cr_assert_eq(nbuf_write_fd(b, -1), -EBADF);
    cr_assert_eq(nbuf_readable(b), 1, "nothing consumed on error");
    close(fds[0]);
    nbuf_release(b);
    nbuf_release(r);
}

Test(buf, read_fd_bounded)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    char big[300];
    memset(big, 'q', sizeof(big));
    cr_assert_eq(write(fds[1], big, sizeof(big)), (ssize_t)sizeof(big));
    struct nbuf *r = nbuf_alloc_ex(pool, 16, 100, 0);
    cr_assert_eq(nbuf_read_fd(r, fds[0], 1000), 100, "bounded by max_capacity");
    cr_assert_eq(nbuf_read_fd(r, fds[0], 1000), -ENOBUFS, "full");
    struct nbuf *small = nbuf_alloc_ex(pool, 16, 16, 0);
    cr_assert_eq(nbuf_read_fd(small, fds[0], 1000), 16);
    nbuf_release(small);
    close(fds[0]);
    close(fds[1]);
    nbuf_release(r);
}

Test(buf, write_fd_socket_no_sigpipe)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct nbuf *b = nbuf_alloc(pool, 64);
    nbuf_write(b, "frame", 5);
    cr_assert_eq(nbuf_write_fd(b, sv[0]), 5);
    struct nbuf *r = nbuf_alloc(pool, 64);
    cr_assert_eq(nbuf_read_fd(r, sv[1], 64), 5);
    cr_assert_eq(memcmp(nbuf_data(r), "frame", 5), 0);
    close(sv[1]);
    nbuf_write(b, "again", 5);
    /* The default SIGPIPE action would kill the test. */
    cr_assert_eq(nbuf_write_fd(b, sv[0]), -EPIPE);
    cr_assert_eq(nbuf_readable(b), 5);
    close(sv[0]);
    nbuf_release(b);
    nbuf_release(r);
}

/* ---- B. reference counting and lifetime ---- */

/* Tests that touch a released header: unpooled (bypass) headers are freed at
 * once, so those run on a checked pool, whose quarantine keeps them. */
static struct nbuf_pool *
lifetime_pool(void)
{
    if (!t_bypass() || checked(pool))
        return pool;
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags = NBUF_POOL_CHECKED;
    return t_pool_new(&cfg);
}

static void
lifetime_done(struct nbuf_pool *p)
{
    if (p != pool)
        t_pool_done(p);
}

/* B8: the second release is refused and reported; the pool counted one. */
Test(buf, double_release)
{
    t_capture_reports();
    struct nbuf_pool *p = lifetime_pool();
    struct nbuf *b = nbuf_alloc(p, 100);
    nbuf_retain(b);
    cr_assert_eq(nbuf_release(b), 0);
    struct nbuf_pool_stats s0 = t_stats(p);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(t_reports(), 0);
    cr_assert_eq(nbuf_release(b), -EINVAL);
    cr_assert_eq(t_reports(), 1);
    cr_assert(strstr(t_report_text(), "already released"), "%s", t_report_text());
    struct nbuf_pool_stats s1 = t_stats(p);
    cr_assert_eq(s1.releases, s0.releases + 1);
    struct nbuf *x = nbuf_alloc(p, 100), *y = nbuf_alloc(p, 100);
    cr_assert_neq(x, y);
    cr_assert_neq(x->mem, y->mem);
    nbuf_release(x);
    nbuf_release(y);
    cr_assert_eq(nbuf_release(NULL), 0);
    lifetime_done(p);
}

/* B9: in checked mode a stale release after the memory went to a new owner
 * is detected and leaves the new owner's count alone. */
Test(buf, stale_release_after_reuse_checked)
{
    t_capture_reports();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags = NBUF_POOL_CHECKED;
    struct nbuf_pool *p = t_pool_new(&cfg);
    for (int round = 0; round < 50; round++) {
        struct nbuf *old = nbuf_alloc(p, 200);
        uint8_t *mem = old->mem;
        cr_assert_eq(nbuf_release(old), 1);
        struct nbuf *fresh = nbuf_alloc(p, 200);
        if (!t_bypass())
            cr_assert_eq(fresh->mem, mem, "the memory is reused at once");
        cr_assert_neq(fresh, old, "but never the header");
        unsigned r0 = t_reports();
        cr_assert_eq(nbuf_release(old), -EINVAL);
        cr_assert_eq(t_reports(), r0 + 1);
        cr_assert_eq(nbuf_refcnt(fresh), 1, "the new owner's count is untouched");
        cr_assert_eq(nbuf_write(fresh, "ok", 2), 0);
        cr_assert_eq(nbuf_release(fresh), 1);
    }
    cr_assert(strstr(t_report_text(), "allocated"), "history in report: %s", t_report_text());
    cr_assert(strstr(t_report_text(), "released for the last time"));
    t_pool_done(p);
}

/* B10: reads, writes and views through a released buffer are refused. */
Test(buf, use_after_release)
{
    t_capture_reports();
    struct nbuf_pool *p = lifetime_pool();
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_write(b, "secret", 6);
    cr_assert_eq(nbuf_release(b), 1);
    uint8_t out[8];
    uint32_t v;
    cr_assert_eq(nbuf_read(b, out, 1), -EINVAL);
    cr_assert_eq(nbuf_get(b, 0, out, 1), -EINVAL);
    cr_assert_eq(nbuf_write(b, "x", 1), -EINVAL);
    cr_assert_eq(nbuf_set(b, 0, "x", 1), -EINVAL);
    cr_assert_eq(nbuf_read_u32(b, &v), -EINVAL);
    cr_assert_eq(nbuf_write_u32(b, 1), -EINVAL);
    cr_assert_eq(nbuf_skip(b, 0), -EINVAL);
    cr_assert_null(nbuf_slice(b, 0, 1));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_read_slice(b, 0));
    cr_assert_null(nbuf_duplicate(b));
    cr_assert_null(nbuf_copy(b, 0, 1));
    cr_assert_null(nbuf_data(b));
    cr_assert_null(nbuf_reserve(b, 1));
    cr_assert_eq(nbuf_index_of(b, 0, 6, 's'), -EINVAL);
    cr_assert_eq(nbuf_write_fd(b, 1), -EINVAL);
    cr_assert_geq(t_reports(), 15);
    cr_assert_eq(nbuf_refcnt(b), 0);
    lifetime_done(p);
}

/* B11: retain of a dead buffer fails; it stays dead. */
Test(buf, retain_dead)
{
    t_capture_reports();
    struct nbuf_pool *p = lifetime_pool();
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_release(b);
    errno = 0;
    cr_assert_null(nbuf_retain(b));
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(nbuf_refcnt(b), 0);
    cr_assert_eq(t_reports(), 1);
    cr_assert_null(nbuf_retain(NULL));
    lifetime_done(p);
}

/* B12: the count saturates: one retain too many fails and changes nothing. */
Test(buf, refcount_overflow)
{
    struct nbuf *b = nbuf_alloc(pool, 64);
    atomic_store(&b->refcnt, UINT32_MAX - 1);
    cr_assert_eq(nbuf_retain(b), b);
    cr_assert_eq(nbuf_refcnt(b), UINT32_MAX);
    errno = 0;
    cr_assert_null(nbuf_retain(b));
    cr_assert_eq(errno, EOVERFLOW);
    cr_assert_eq(nbuf_refcnt(b), UINT32_MAX);
    struct nbuf *s = nbuf_slice(b, 0, 0);
    cr_assert_null(s, "a view needs a reference too");
    cr_assert_eq(errno, EOVERFLOW);
    cr_assert_eq(atomic_load(&b->nviews), 0);
    atomic_store(&b->refcnt, 1);
    nbuf_release(b);
}

/* B13: threads retain and release one buffer; freed exactly once. */
static int frees;
static struct nbuf *shared;

static void
count_free(void *data, void *ctx)
{
    (void)data;
    (void)ctx;
    __atomic_fetch_add(&frees, 1, __ATOMIC_RELAXED);
}

static void *
churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        T_CHECK(nbuf_retain(shared) == shared);
        T_CHECK(nbuf_release(shared) == 0);
    }
    /* Drop this thread's own reference. */
    T_CHECK(nbuf_release(shared) >= 0);
    return NULL;
}

Test(buf, concurrent_release_frees_once)
{
    enum { N = 4 };
    static char data[16];
    for (int kind = 0; kind < 2; kind++) {
        frees = 0;
        struct nbuf_pool_stats s0 = t_stats(pool);
        shared = kind ? nbuf_alloc(pool, 1000) : nbuf_wrap(data, sizeof(data), count_free, NULL);
        cr_assert_not_null(shared);
        for (int i = 1; i < N; i++)
            nbuf_retain(shared);
        cr_assert_eq(nbuf_refcnt(shared), N);
        pthread_t t[N];
        for (int i = 0; i < N; i++)
            pthread_create(&t[i], NULL, churn, NULL);
        for (int i = 0; i < N; i++)
            pthread_join(t[i], NULL);
        t_thread_assert_ok();
        struct nbuf_pool_stats s1 = t_stats(pool);
        if (kind == 0)
            cr_assert_eq(frees, 1, "free_fn ran %d times", frees);
        else
            cr_assert_eq(s1.releases, s0.releases + 1);
        cr_assert_eq(s1.live_buffers, s0.live_buffers);
    }
}

/* B14: pointers nbuf never issued are reported and left alone. */
Test(buf, foreign_pointers)
{
    t_capture_reports();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags = NBUF_POOL_CHECKED;
    struct nbuf_pool *p = t_pool_new(&cfg);
    union {
        struct nbuf b;
        uint8_t raw[sizeof(struct nbuf)];
    } stack;
    memset(&stack, 0, sizeof(stack));
    cr_assert_eq(nbuf_release(&stack.b), -EINVAL, "stack object");
    uint8_t *heap = malloc(sizeof(struct nbuf));
    memset(heap, 0xff, sizeof(struct nbuf));
    cr_assert_eq(nbuf_release((struct nbuf *)heap), -EINVAL, "malloc'd object");
    for (size_t i = 0; i < sizeof(struct nbuf); i++)
        cr_assert_eq(heap[i], 0xff, "not written to");
    free(heap);
    /* Interior pointer: into a live buffer's memory (junk-filled in checked
     * mode, so its "count" is never 1). */
    struct nbuf *b = nbuf_alloc(p, 4096);
    cr_assert_eq(nbuf_release((struct nbuf *)(b->mem + 64)), -EINVAL, "interior pointer");
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(t_reports(), 3);
    cr_assert(strstr(t_report_text(), "not a buffer"), "%s", t_report_text());
    cr_assert_null(nbuf_retain(&stack.b));
    nbuf_release(b);
    t_pool_done(p);
}
