/* SPDX-License-Identifier: MIT */
/* The public API as a user sees it: only <nbuf.h>, linked against the shared
 * library. A tour of buffers, views, wrapping, mapping, fd IO and the leak
 * report; each test leaves its pool empty. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <nbuf.h>

static struct nbuf_pool *pool;

static void
setup(void)
{
    pool = nbuf_pool_new(NULL);
    cr_assert_not_null(pool);
}

static void
teardown(void)
{
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(pool, &st), 0);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.views, 0);
    cr_assert_eq(nbuf_pool_free(pool), 0);
}

TestSuite(api, .init = setup, .fini = teardown);

Test(api, frame_round_trip)
{
    struct nbuf *b = nbuf_alloc(pool, 0);
    cr_assert_not_null(b);
    const char body[] = "hello";
    cr_assert_eq(nbuf_write_u8(b, 0x7e), 0);
    cr_assert_eq(nbuf_write_u16(b, 0x0102), 0);
    cr_assert_eq(nbuf_write_u32_le(b, sizeof(body) - 1), 0);
    cr_assert_eq(nbuf_write(b, body, sizeof(body) - 1), 0);
    cr_assert_eq(nbuf_write_u64(b, 42), 0);
    cr_assert_eq(nbuf_readable(b), 1 + 2 + 4 + 5 + 8);
    uint8_t magic;
    uint16_t ver;
    uint32_t len;
    uint64_t tail;
    cr_assert_eq(nbuf_read_u8(b, &magic), 0);
    cr_assert_eq(nbuf_read_u16(b, &ver), 0);
    cr_assert_eq(nbuf_read_u32_le(b, &len), 0);
    cr_assert_eq(magic, 0x7e);
    cr_assert_eq(ver, 0x0102);
    cr_assert_eq(len, 5);
    struct nbuf *payload = nbuf_read_slice(b, len);
    cr_assert_not_null(payload);
    cr_assert_eq(memcmp(nbuf_data(payload), "hello", 5), 0);
    cr_assert_eq(nbuf_read_u64(b, &tail), 0);
    cr_assert_eq(tail, 42);
    cr_assert_eq(nbuf_read_u8(b, &magic), -ENODATA);
    cr_assert_eq(nbuf_release(b), 0, "the payload view holds it");
    cr_assert_eq(nbuf_release(payload), 1);
}

Test(api, indices_and_access)
{
    struct nbuf *b = nbuf_alloc_ex(pool, 16, 64, NBUF_ZERO);
    cr_assert_eq(nbuf_max_capacity(b), 64);
    cr_assert_eq(nbuf_writable(b), nbuf_capacity(b));
    uint8_t *w = nbuf_reserve(b, 8);
    memcpy(w, "abcdefgh", 8);
    cr_assert_eq(nbuf_commit(b, 8), 0);
    cr_assert_eq(nbuf_skip(b, 2), 0);
    cr_assert_eq(nbuf_reader_index(b), 2);
    cr_assert_eq(nbuf_writer_index(b), 8);
    cr_assert_eq(nbuf_index_of(b, 0, 8, 'e'), 4);
    cr_assert_eq(nbuf_discard_read(b), 0);
    cr_assert_eq(nbuf_index_of(b, 0, 8, 'e'), 2);
    char out[4];
    cr_assert_eq(nbuf_get(b, 0, out, 4), 0);
    cr_assert_eq(memcmp(out, "cdef", 4), 0);
    cr_assert_eq(nbuf_set(b, 0, "C", 1), 0);
    cr_assert_eq(nbuf_read(b, out, 2), 0);
    cr_assert_eq(memcmp(out, "Cd", 2), 0);
    cr_assert_eq(nbuf_set_indices(b, 1, 3), 0);
    cr_assert_eq(nbuf_readable(b), 2);
    nbuf_clear(b);
    cr_assert_eq(nbuf_readable(b), 0);
    cr_assert_eq(nbuf_ensure_writable(b, 65), -ENOBUFS);
    cr_assert_eq(nbuf_ensure_writable(b, 64), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(nbuf_retain(b), b);
    cr_assert_eq(nbuf_release(b), 0);
    cr_assert_eq(nbuf_release(b), 1);
}

Test(api, views_and_copies)
{
    struct nbuf *b = nbuf_alloc(pool, 32);
    nbuf_write(b, "0123456789", 10);
    struct nbuf *s = nbuf_slice(b, 3, 4);
    struct nbuf *d = nbuf_duplicate(b);
    struct nbuf *c = nbuf_copy(b, 0, 10);
    cr_assert(s && d && c);
    struct nbuf_pool_stats st;
    nbuf_pool_stats(pool, &st);
    cr_assert_eq(st.views, 2);
    cr_assert_eq(st.live_buffers, 2);
    cr_assert_null(nbuf_slice(b, 8, 3));
    cr_assert_eq(errno, EINVAL);
    nbuf_release(b);
    cr_assert_eq(memcmp(nbuf_data(s), "3456", 4), 0);
    cr_assert_eq(nbuf_readable(d), 10);
    cr_assert_eq(nbuf_release(s), 1);
    cr_assert_eq(nbuf_release(d), 1);
    cr_assert_eq(memcmp(nbuf_data(c), "0123456789", 10), 0);
    cr_assert_eq(nbuf_release(c), 1);
}

static int freed;

static void
on_free(void *data, void *ctx)
{
    free(data);
    *(int *)ctx += 1;
}

Test(api, wrap_and_map)
{
    char *mem = malloc(6);
    memcpy(mem, "wrap!", 6);
    freed = 0;
    struct nbuf *w = nbuf_wrap(mem, 5, on_free, &freed);
    struct nbuf *v = nbuf_slice(w, 0, 4);
    nbuf_release(w);
    cr_assert_eq(freed, 0);
    cr_assert_eq(memcmp(nbuf_data(v), "wrap", 4), 0);
    nbuf_release(v);
    cr_assert_eq(freed, 1);

    char path[] = "/tmp/nbuf-api-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    cr_assert_eq(write(fd, "0123456789abcdef", 16), 16);
    struct nbuf *m = nbuf_map_file(fd, 10, 6);
    cr_assert_not_null(m);
    close(fd);
    cr_assert_eq(memcmp(nbuf_data(m), "abcdef", 6), 0);
    cr_assert_eq(nbuf_write_u8(m, 0), -EROFS);
    cr_assert_eq(nbuf_release(m), 1);
}

Test(api, fd_io)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct nbuf *out = nbuf_alloc(pool, 64), *in = nbuf_alloc(pool, 8);
    nbuf_write(out, "over the wire", 13);
    cr_assert_eq(nbuf_write_fd(out, sv[0]), 13);
    cr_assert_eq(nbuf_read_fd(in, sv[1], 100), 13);
    cr_assert_eq(memcmp(nbuf_data(in), "over the wire", 13), 0);
    close(sv[0]);
    close(sv[1]);
    nbuf_release(out);
    nbuf_release(in);
}

Test(api, leak_report)
{
    /* Without NBUF_LEAK nothing is tracked (unless the suite runs checked). */
    struct nbuf *b = nbuf_alloc(pool, 10);
    int n = nbuf_pool_leak_report(pool, NULL);
    cr_assert(n == 0 || n == 1);
    cr_assert_eq(nbuf_pool_free(pool), -EBUSY);
    nbuf_release(b);
    cr_assert_eq(nbuf_pool_leak_report(pool, NULL), 0);
    cr_assert_eq(nbuf_release(NULL), 0);
}
