/* SPDX-License-Identifier: MIT */
/* Views (slice, read_slice, duplicate), deep copies, wrapped and mapped
 * buffers: ranges, ownership, lifetime, recycling of view headers. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
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

TestSuite(view, .init = setup, .fini = teardown);

/* A buffer holding "0123456789". */
static struct nbuf *
digits(void)
{
    struct nbuf *b = nbuf_alloc(pool, 64);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_write(b, "0123456789", 10), 0);
    return b;
}

Test(view, slice_shares_memory)
{
    struct nbuf *b = digits();
    struct nbuf *s = nbuf_slice(b, 2, 5);
    cr_assert_not_null(s);
    cr_assert(nbuf_buf_check_(s));
    cr_assert_eq(nbuf_readable(s), 5);
    cr_assert_eq(nbuf_capacity(s), 5);
    cr_assert_eq(nbuf_max_capacity(s), 5);
    cr_assert_eq(memcmp(nbuf_data(s), "23456", 5), 0);
    cr_assert_eq(nbuf_data(s), nbuf_data(b) + 2, "zero copy");
    /* The view holds one reference on its root. */
    cr_assert_eq(nbuf_refcnt(b), 2);
    cr_assert_eq(nbuf_refcnt(s), 1);
    /* A write through the view is seen by the parent. */
    cr_assert_eq(nbuf_set_u8(s, 0, 'x'), 0);
    cr_assert_eq(nbuf_data(b)[2], 'x');
    /* Cursors are the view's own. */
    uint8_t c;
    cr_assert_eq(nbuf_read_u8(s, &c), 0);
    cr_assert_eq(nbuf_reader_index(b), 0);
    struct nbuf_pool_stats st;
    nbuf_pool_stats(pool, &st);
    cr_assert_eq(st.views, 1);
    cr_assert_eq(st.live_buffers, 1, "views are not buffers of the pool's counters");
    cr_assert_eq(nbuf_release(s), 1);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(nbuf_release(b), 1);
}

/* CHECKLIST C16: out of range or overflowing offsets; empty view at the end;
 * never into the unwritten tail or class slack. */
Test(view, slice_ranges)
{
    struct nbuf *b = digits();
    struct nbuf_pool_stats before;
    nbuf_pool_stats(pool, &before);
    errno = 0;
    cr_assert_null(nbuf_slice(b, 11, 0));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_slice(b, 5, 6));
    cr_assert_null(nbuf_slice(b, 0, 11), "past the writer index (unwritten bytes)");
    cr_assert_null(nbuf_slice(b, 1, SIZE_MAX), "off + len overflows");
    cr_assert_null(nbuf_slice(b, SIZE_MAX, 2));
    cr_assert_null(nbuf_slice(b, 0, nbuf_capacity(b)), "class slack");
    cr_assert_null(nbuf_copy(b, 9, 2));
    cr_assert_null(nbuf_copy(b, 2, SIZE_MAX - 1));
    cr_assert_null(nbuf_read_slice(b, 11));
    cr_assert_eq(errno, ENODATA);
    cr_assert_eq(nbuf_reader_index(b), 0, "nothing consumed");
    cr_assert_null(nbuf_slice(NULL, 0, 0));
    cr_assert_eq(nbuf_refcnt(b), 1, "failed views took no reference");
    struct nbuf_pool_stats after;
    nbuf_pool_stats(pool, &after);
    cr_assert_eq(after.views, before.views);

    struct nbuf *e = nbuf_slice(b, 10, 0);
    cr_assert_not_null(e, "an empty view at the end is valid");
    cr_assert_eq(nbuf_readable(e), 0);
    cr_assert_eq(nbuf_writable(e), 0);
    cr_assert_eq(nbuf_write_u8(e, 1), -ENOBUFS, "a view cannot grow");
    struct nbuf *all = nbuf_slice(b, 0, 10);
    cr_assert_not_null(all);
    cr_assert_eq(nbuf_ensure_writable(all, 1), -ENOBUFS);
    cr_assert_null(nbuf_reserve(all, 1));
    cr_assert_eq(errno, ENOBUFS);
    nbuf_release(e);
    nbuf_release(all);
    nbuf_release(b);
}

Test(view, read_slice_advances)
{
    struct nbuf *b = digits();
    struct nbuf *h = nbuf_read_slice(b, 3);
    struct nbuf *t = nbuf_read_slice(b, 7);
    cr_assert(h && t);
    cr_assert_eq(nbuf_readable(b), 0);
    cr_assert_eq(memcmp(nbuf_data(h), "012", 3), 0);
    cr_assert_eq(memcmp(nbuf_data(t), "3456789", 7), 0);
    struct nbuf *z = nbuf_read_slice(b, 0);
    cr_assert_not_null(z);
    cr_assert_eq(nbuf_refcnt(b), 4);
    nbuf_release(b);
    /* The views hold the memory alive. */
    cr_assert_eq(memcmp(nbuf_data(t), "3456789", 7), 0);
    nbuf_release(z);
    nbuf_release(h);
    nbuf_release(t);
}

Test(view, duplicate_has_own_cursors)
{
    struct nbuf *b = digits();
    nbuf_skip(b, 4);
    struct nbuf *d = nbuf_duplicate(b);
    cr_assert_not_null(d);
    cr_assert_eq(nbuf_reader_index(d), 4);
    cr_assert_eq(nbuf_writer_index(d), 10);
    cr_assert_eq(nbuf_capacity(d), nbuf_capacity(b));
    cr_assert_eq(nbuf_skip(d, 6), 0);
    cr_assert_eq(nbuf_reader_index(b), 4);
    /* Writable room of a duplicate is the root's memory: no growth. */
    cr_assert_eq(nbuf_write(d, "ab", 2), 0);
    cr_assert_eq(nbuf_get_u8(b, 10, &(uint8_t){0}), -ENODATA, "b's writer did not move");
    uint8_t c;
    nbuf_set_indices(b, 0, 12);
    cr_assert_eq(nbuf_get_u8(b, 11, &c), 0);
    cr_assert_eq(c, 'b');
    cr_assert_eq(nbuf_ensure_writable(d, nbuf_capacity(d)), -ENOBUFS);
    nbuf_release(d);
    nbuf_release(b);
}

Test(view, view_of_view_points_at_root)
{
    struct nbuf *b = digits();
    struct nbuf *s1 = nbuf_slice(b, 2, 6);  /* 234567 */
    struct nbuf *s2 = nbuf_slice(s1, 1, 3); /* 345 */
    struct nbuf *d2 = nbuf_duplicate(s2);
    cr_assert(s1 && s2 && d2);
    cr_assert_eq(s2->root, b);
    cr_assert_eq(d2->root, b);
    cr_assert_eq(atomic_load(&b->nviews), 1, "marked as viewed");
    cr_assert_eq(nbuf_refcnt(b), 4);
    cr_assert_eq(nbuf_refcnt(s1), 1, "a view of a view holds the root, not the view");
    cr_assert_eq(memcmp(nbuf_data(s2), "345", 3), 0);
    cr_assert_eq(nbuf_release(s1), 1);
    cr_assert_eq(memcmp(nbuf_data(d2), "345", 3), 0);
    cr_assert_eq(nbuf_release(b), 0);
    cr_assert_eq(nbuf_release(s2), 1);
    cr_assert_eq(nbuf_release(d2), 1, "the last view frees the root");
    struct nbuf_pool_stats st;
    nbuf_pool_stats(pool, &st);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.views, 0);
}

/* CHECKLIST C17: a view keeps its parent's memory alive. */
Test(view, keeps_parent_alive)
{
    struct nbuf *b = nbuf_alloc(pool, 5000);
    for (unsigned i = 0; i < 5000; i++)
        nbuf_write_u8(b, (uint8_t)i);
    struct nbuf *s = nbuf_slice(b, 1000, 3000);
    cr_assert_eq(nbuf_release(b), 0, "the view still holds it");
    struct nbuf_pool_stats st;
    nbuf_pool_stats(pool, &st);
    cr_assert_eq(st.live_buffers, 1);
    /* Churn the pool: the memory must not be handed out again. */
    struct nbuf *other[32];
    for (int i = 0; i < 32; i++) {
        other[i] = nbuf_alloc(pool, 5000);
        memset(nbuf_reserve(other[i], 5000), 0xee, 5000);
    }
    for (unsigned i = 0; i < 3000; i++)
        cr_assert_eq(nbuf_data(s)[i], (uint8_t)(i + 1000));
    for (int i = 0; i < 32; i++)
        nbuf_release(other[i]);
    cr_assert_eq(nbuf_release(s), 1);
    nbuf_pool_stats(pool, &st);
    cr_assert_eq(st.live_buffers, 0);
}

Test(view, parent_cannot_grow_under_views)
{
    struct nbuf *b = nbuf_alloc_ex(pool, 16, 1 << 20, 0);
    nbuf_write(b, "abcdefghijklmnop", 16);
    struct nbuf *s = nbuf_slice(b, 0, 4);
    cr_assert_eq(nbuf_ensure_writable(b, 1000), -ENOBUFS, "memory shared with a view cannot move");
    cr_assert_eq(memcmp(nbuf_data(s), "abcd", 4), 0);
    /* Another reference (not a view) still pins a viewed buffer: growth
     * cannot tell it from a view. */
    nbuf_retain(b);
    nbuf_release(s);
    cr_assert_eq(nbuf_ensure_writable(b, 1000), -ENOBUFS);
    nbuf_release(b);
    cr_assert_eq(nbuf_ensure_writable(b, 1000), 0, "free to grow once the views are gone");
    cr_assert_eq(memcmp(nbuf_data(b), "abcdefghijklmnop", 16), 0);
    nbuf_release(b);
}

Test(view, copy_is_deep)
{
    struct nbuf *b = digits();
    struct nbuf *c = nbuf_copy(b, 3, 4);
    cr_assert_not_null(c);
    cr_assert_eq(c->kind == NBUF_KIND_VIEW, false);
    cr_assert_eq(nbuf_readable(c), 4);
    cr_assert_eq(memcmp(nbuf_data(c), "3456", 4), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_set_u8(b, 3, 'z');
    cr_assert_eq(nbuf_data(c)[0], '3');
    cr_assert_eq(nbuf_write(c, "more bytes than four", 20), 0, "a copy can grow");
    struct nbuf *e = nbuf_copy(b, 10, 0);
    cr_assert_not_null(e);
    cr_assert_eq(nbuf_readable(e), 0);
    nbuf_release(e);
    nbuf_release(c);
    nbuf_release(b);
}

/* Views are cheap: the header of a released view is the next one handed out
 * (thread cache of bare headers, no malloc). */
Test(view, headers_are_recycled)
{
    if (t_bypass())
        cr_skip_test("bypass mode mallocs every header");
    if (pool->buf_flags & NBUF_F_CHECKED)
        cr_skip_test("checked mode quarantines released headers");
    struct nbuf *b = digits();
    struct nbuf *s = nbuf_slice(b, 0, 1);
    struct nbuf *first = s;
    nbuf_release(s);
    for (int i = 0; i < 1000; i++) {
        s = nbuf_slice(b, 0, 1);
        cr_assert_eq(s, first);
        nbuf_release(s);
    }
    nbuf_release(b);
}

static int wrap_frees;
static void *wrap_data;
static void *wrap_ctx;

static void
count_free(void *data, void *ctx)
{
    wrap_frees++;
    wrap_data = data;
    wrap_ctx = ctx;
}

Test(view, wrap_free_fn_once_after_last_view)
{
    static char text[] = "hello, wrapped world";
    wrap_frees = 0;
    struct nbuf *w = nbuf_wrap(text, sizeof(text) - 1, count_free, &wrap_frees);
    cr_assert_not_null(w);
    cr_assert(nbuf_buf_check_(w));
    cr_assert_eq(nbuf_readable(w), sizeof(text) - 1);
    cr_assert_eq(nbuf_capacity(w), sizeof(text) - 1);
    cr_assert_eq(nbuf_data(w), (const uint8_t *)text);
    struct nbuf *s = nbuf_slice(w, 7, 7);
    struct nbuf *d = nbuf_duplicate(s);
    cr_assert(s && d);
    cr_assert_eq(memcmp(nbuf_data(d), "wrapped", 7), 0);
    cr_assert_eq(nbuf_write_u8(w, 1), -ENOBUFS, "wrapped memory cannot grow");
    cr_assert_eq(nbuf_release(w), 0);
    cr_assert_eq(nbuf_release(s), 1, "the view itself goes");
    cr_assert_eq(wrap_frees, 0, "d still holds the memory");
    cr_assert_eq(nbuf_release(d), 1);
    cr_assert_eq(wrap_frees, 1);
    cr_assert_eq(wrap_data, text);
    cr_assert_eq(wrap_ctx, &wrap_frees);
    /* Copies of wrapped memory are pooled (default pool) and independent. */
    w = nbuf_wrap(text, 5, NULL, NULL);
    struct nbuf *c = nbuf_copy(w, 0, 5);
    cr_assert_eq(nbuf_release(w), 1);
    cr_assert_eq(memcmp(nbuf_data(c), "hello", 5), 0);
    nbuf_release(c);
}

static void
free_data(void *data, void *ctx)
{
    (void)ctx;
    free(data);
}

Test(view, wrap_arguments)
{
    errno = 0;
    cr_assert_null(nbuf_wrap(NULL, 1, count_free, NULL));
    cr_assert_eq(errno, EINVAL);
    wrap_frees = 0;
    struct nbuf *w = nbuf_wrap(NULL, 0, count_free, NULL);
    cr_assert_not_null(w, "an empty wrap is valid");
    cr_assert_eq(nbuf_readable(w), 0);
    cr_assert_eq(nbuf_release(w), 1);
    cr_assert_eq(wrap_frees, 1);
    /* free_fn may release the memory it was given. */
    char *heap = malloc(100);
    memset(heap, 'q', 100);
    w = nbuf_wrap(heap, 100, free_data, NULL);
    struct nbuf *s = nbuf_slice(w, 50, 50);
    nbuf_release(w);
    cr_assert_eq(nbuf_data(s)[49], 'q');
    nbuf_release(s);
}

static int
temp_file(size_t size)
{
    char path[] = "/tmp/nbuf-view-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    for (size_t i = 0; i < size; i++) {
        uint8_t c = (uint8_t)(i * 7 + i / 251);
        cr_assert_eq(write(fd, &c, 1), 1);
    }
    return fd;
}

Test(view, map_file_any_offset)
{
    size_t size = 3 * 4096 + 123;
    int fd = temp_file(size);
    off_t offs[] = {0, 1, 4095, 4096, 4097, (off_t)size - 1};
    for (unsigned k = 0; k < sizeof(offs) / sizeof(offs[0]); k++) {
        size_t len = size - (size_t)offs[k];
        struct nbuf *m = nbuf_map_file(fd, offs[k], len);
        cr_assert_not_null(m, "offset %lld: %s", (long long)offs[k], strerror(errno));
        cr_assert(nbuf_buf_check_(m));
        cr_assert_eq(nbuf_readable(m), len);
        for (size_t i = 0; i < len; i++) {
            size_t at = i + (size_t)offs[k];
            cr_assert_eq(nbuf_data(m)[i], (uint8_t)(at * 7 + at / 251));
        }
        nbuf_release(m);
    }
    close(fd);
}

Test(view, map_file_read_only_and_views)
{
    int fd = temp_file(10000);
    struct nbuf *m = nbuf_map_file(fd, 100, 5000);
    close(fd); /* the mapping outlives the descriptor */
    cr_assert_not_null(m);
    cr_assert_eq(nbuf_write_u8(m, 1), -EROFS);
    cr_assert_eq(nbuf_set_u8(m, 0, 1), -EROFS);
    cr_assert_null(nbuf_reserve(m, 1));
    cr_assert_eq(errno, EROFS);
    cr_assert_eq(nbuf_skip(m, 10), 0);
    cr_assert_eq(nbuf_discard_read(m), -EROFS);
    uint32_t v;
    cr_assert_eq(nbuf_read_u32(m, &v), 0, "reading is fine");
    struct nbuf *s = nbuf_slice(m, 4000, 1000);
    cr_assert_not_null(s);
    cr_assert_eq(nbuf_set_u8(s, 0, 1), -EROFS, "views of read-only memory are read-only");
    const uint8_t *p = nbuf_data(s);
    uint8_t expect = nbuf_data(m)[4000 - nbuf_reader_index(m)];
    nbuf_release(m);
    cr_assert_eq(p[0], expect, "the view keeps the mapping");
    struct nbuf *c = nbuf_copy(s, 0, 1000);
    cr_assert_eq(nbuf_set_u8(c, 0, 1), 0, "a copy is writable");
    nbuf_release(c);
    nbuf_release(s);
}

Test(view, map_file_errors)
{
    int fd = temp_file(1000);
    errno = 0;
    cr_assert_null(nbuf_map_file(fd, 0, 1001));
    cr_assert_eq(errno, EINVAL, "past end of file");
    cr_assert_null(nbuf_map_file(fd, 1000, 1));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_map_file(fd, -1, 1));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_map_file(fd, 1, SIZE_MAX));
    cr_assert_eq(errno, EINVAL, "offset + length overflows");
    cr_assert_null(nbuf_map_file(-1, 0, 1));
    cr_assert_eq(errno, EBADF);
    struct nbuf *e = nbuf_map_file(fd, 1000, 0);
    cr_assert_not_null(e, "an empty range at the end is valid");
    cr_assert_eq(nbuf_readable(e), 0);
    nbuf_release(e);
    close(fd);
    cr_assert_null(nbuf_map_file(fd, 0, 1));
    cr_assert_eq(errno, EBADF);
}

/* The mapping goes away with the last reference. */
Test(view, map_file_unmapped_on_release)
{
    int fd = temp_file(3 * 4096);
    struct nbuf *m = nbuf_map_file(fd, 5, 2 * 4096);
    close(fd);
    uintptr_t page = (uintptr_t)nbuf_data(m) & ~(uintptr_t)4095;
    unsigned char vec[1];
    cr_assert_eq(mincore((void *)page, 4096, vec), 0, "mapped");
    nbuf_release(m);
    cr_assert_eq(mincore((void *)page, 4096, vec), -1, "unmapped");
    cr_assert_eq(errno, ENOMEM);
}

/* Views of pooled buffers work in every mode, from several threads. */
static struct nbuf *shared_root;

static void *
slicer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        struct nbuf *s = nbuf_slice(shared_root, (size_t)(i % 10), 1);
        T_CHECK(s != NULL);
        if (!s)
            break;
        T_CHECK(nbuf_data(s)[0] == (uint8_t)('0' + i % 10));
        T_CHECK(nbuf_release(s) == 1);
    }
    return NULL;
}

Test(view, slices_from_threads)
{
    shared_root = digits();
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, slicer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    t_thread_assert_ok();
    cr_assert_eq(nbuf_refcnt(shared_root), 1);
    cr_assert_eq(nbuf_ensure_writable(shared_root, 10000), 0, "no view left: free to move");
    cr_assert_eq(atomic_load(&shared_root->nviews), 0);
    cr_assert_eq(memcmp(nbuf_data(shared_root), "0123456789", 10), 0);
    nbuf_release(shared_root);
}
