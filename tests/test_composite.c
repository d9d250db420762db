/* SPDX-License-Identifier: MIT */
/* Composites: adding, ownership, lookups, reads, searching, framing, and a
 * small differential test against a flat byte array (CHECKLIST C16-C22,
 * A4). */
#include "common.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "composite_int.h"
#include "sysops.h"

/* ---- helpers ---- */

static uint8_t
pat(uint64_t seed, size_t i)
{
    return (uint8_t)((seed * 131 + i * 7 + (i >> 8)) ^ (seed >> 3));
}

/* A buffer of @n readable pattern bytes. */
static struct nbuf *
mkbuf(struct nbuf_pool *p, size_t n, uint64_t seed)
{
    struct nbuf *b = nbuf_alloc(p, n);
    cr_assert_not_null(b);
    uint8_t *w = nbuf_reserve(b, n);
    cr_assert(w || !n);
    for (size_t i = 0; i < n; i++)
        w[i] = pat(seed, i);
    cr_assert_eq(nbuf_commit(b, n), 0);
    return b;
}

/* Every test starts with add_slice's default copy threshold. */
static void
copy_default(void)
{
    nbuf_composite_slice_copy_max_ = NBUF_COMPOSITE_COPY_MAX;
}

TestSuite(composite, .init = copy_default);

/* Reference every slice, however small: for the tests of reference sharing,
 * merging and component layout, which small slices would skip by being
 * copied. */
static void
refs_only(void)
{
    nbuf_composite_slice_copy_max_ = 0;
}

/* A growable flat reference. */
struct flat {
    uint8_t *d;
    size_t n, cap;
};

static void
flat_push(struct flat *f, const void *src, size_t n)
{
    if (!n)
        return;
    if (f->n + n > f->cap) {
        f->cap = (f->n + n) * 2 + 64;
        f->d = realloc(f->d, f->cap);
        cr_assert_not_null(f->d);
    }
    memcpy(f->d + f->n, src, n);
    f->n += n;
}

static void
flat_prepend(struct flat *f, const void *src, size_t n)
{
    if (!n)
        return;
    flat_push(f, src, n); /* grow */
    memmove(f->d + n, f->d, f->n - n);
    memcpy(f->d, src, n);
}

static void
flat_consume(struct flat *f, size_t n)
{
    if (!n)
        return;
    memmove(f->d, f->d + n, f->n - n);
    f->n -= n;
}

/* The composite reads exactly @f's bytes and its invariants hold. */
static void
assert_same(const struct nbuf_composite *c, const struct flat *f)
{
    cr_assert(nbuf_composite_check_(c), "composite invariants");
    cr_assert_eq(nbuf_composite_readable(c), f->n, "readable %zu, expected %zu",
                 nbuf_composite_readable(c), f->n);
    if (!f->n)
        return;
    uint8_t *tmp = malloc(f->n);
    cr_assert_eq(nbuf_composite_get(c, 0, tmp, f->n), 0);
    for (size_t i = 0; i < f->n; i++)
        cr_assert_eq(tmp[i], f->d[i], "byte %zu: %u, expected %u", i, tmp[i], f->d[i]);
    free(tmp);
}

static unsigned wrap_frees;
static void
wrap_free(void *data, void *ctx)
{
    (void)ctx;
    wrap_frees++;
    free(data);
}

/* ---- adding and ownership ---- */

Test(composite, new_free_empty)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_not_null(c);
    cr_assert_eq(nbuf_composite_readable(c), 0);
    cr_assert_eq(nbuf_composite_count(c), 0);
    cr_assert(nbuf_composite_check_(c));
    nbuf_composite_free(c);
    nbuf_composite_free(NULL);
    cr_assert_eq(nbuf_composite_readable(NULL), 0);
    cr_assert_eq(nbuf_composite_count(NULL), 0);
    t_pool_done(p);
}

Test(composite, add_takes_and_reads_across_boundaries)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct flat f = {0};
    for (unsigned i = 0; i < 10; i++) {
        struct nbuf *b = mkbuf(p, 10 + i, i);
        flat_push(&f, nbuf_data(b), nbuf_readable(b));
        cr_assert_eq(nbuf_composite_add(c, b), 0);
        cr_assert_eq(nbuf_refcnt(b), 1); /* the reference moved in */
    }
    cr_assert_eq(nbuf_composite_count(c), 10);
    assert_same(c, &f);
    uint8_t tmp[40];
    cr_assert_eq(nbuf_composite_read(c, tmp, 25), 0);
    cr_assert_eq(memcmp(tmp, f.d, 25), 0);
    flat_consume(&f, 25);
    assert_same(c, &f);
    cr_assert_eq(nbuf_composite_count(c), 8, "emptied components are released");
    cr_assert_eq(nbuf_composite_read(c, tmp, f.n + 1), -ENODATA);
    assert_same(c, &f);
    cr_assert_eq(nbuf_composite_skip(c, f.n + 1), -ENODATA);
    cr_assert_eq(nbuf_composite_skip(c, 30), 0);
    flat_consume(&f, 30);
    assert_same(c, &f);
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

Test(composite, add_respects_reader_index_and_empty_buffers)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 100, 1);
    cr_assert_eq(nbuf_skip(b, 40), 0);
    struct flat f = {0};
    flat_push(&f, nbuf_data(b), 60);
    cr_assert_eq(nbuf_composite_add(c, b), 0);
    struct nbuf *e = nbuf_alloc(p, 16); /* empty: released at once */
    cr_assert_eq(nbuf_composite_add(c, e), 0);
    cr_assert_eq(nbuf_composite_prepend(c, nbuf_alloc(p, 8)), 0);
    cr_assert_eq(nbuf_composite_count(c), 1);
    assert_same(c, &f);
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

Test(composite, bad_arguments)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 10, 1);
    cr_assert_eq(nbuf_composite_add(NULL, b), -EINVAL);
    cr_assert_eq(nbuf_composite_add(c, NULL), -EINVAL);
    cr_assert_eq(nbuf_composite_add_slice(c, NULL, 0, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_prepend(c, NULL), -EINVAL);
    cr_assert_eq(nbuf_composite_add_copy(c, NULL, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_add_copy(c, NULL, 0), 0);
    cr_assert_eq(nbuf_composite_append(c, NULL), -EINVAL);
    cr_assert_eq(nbuf_composite_read(NULL, NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_skip(NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_get(NULL, 0, NULL, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_index_of(NULL, 0, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_find(NULL, 0, "a", 1), -EINVAL);
    cr_assert_eq(nbuf_composite_split(c, 0, c), -EINVAL);
    cr_assert_eq(nbuf_composite_discard_read(NULL), -EINVAL);
    cr_assert_eq(nbuf_composite_iov(c, NULL, 1, 10), -EINVAL);
    cr_assert_eq(nbuf_composite_iov(c, NULL, -1, 10), -EINVAL);
    cr_assert_eq(nbuf_composite_writev(NULL, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_writev(c, -1), -EBADF);
    cr_assert_eq(nbuf_composite_read_fd(NULL, 0, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_read_fd(c, -1, 0), -EBADF);
    errno = 0;
    cr_assert_null(nbuf_composite_read_slice(NULL, 1));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(nbuf_composite_flatten(NULL));
    uint32_t v;
    cr_assert_eq(nbuf_composite_read_u32(c, NULL), -EINVAL);
    cr_assert_eq(nbuf_composite_read_u32(NULL, &v), -EINVAL);
    cr_assert_eq(nbuf_composite_get_u32(c, 0, &v), -ENODATA);
    cr_assert_eq(nbuf_composite_count(c), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    nbuf_composite_free(c);
    t_pool_done(p);
}

Test(composite, add_slice_ranges_C16)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 100, 3);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 101, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 50, 51), -EINVAL);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 2, SIZE_MAX), -EINVAL);
    cr_assert_eq(nbuf_composite_add_slice(c, b, SIZE_MAX, 2), -EINVAL);
    /* Never into the slack past the writer index. */
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, nbuf_capacity(b)),
                 nbuf_capacity(b) > 100 ? -EINVAL : 0);
    nbuf_composite_skip(c, nbuf_composite_readable(c));
    cr_assert_eq(nbuf_composite_add_slice(c, b, 100, 0), 0);
    cr_assert_eq(nbuf_composite_count(c), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 10, 20), 0);
    cr_assert_eq(nbuf_refcnt(b), 1, "a copied slice takes no reference");
    refs_only();
    cr_assert_eq(nbuf_composite_add_slice(c, b, 10, 20), 0);
    cr_assert_eq(nbuf_refcnt(b), 2);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    t_pool_done(p);
}

Test(composite, same_buffer_twice_C18)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 64, 4);
    struct flat f = {0};
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 64), 0);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 64), 0);
    flat_push(&f, nbuf_data(b), 64);
    flat_push(&f, nbuf_data(b), 64);
    cr_assert_eq(nbuf_composite_count(c), 2);
    /* Consecutive slices of one buffer share one reference. */
    cr_assert_eq(nbuf_refcnt(b), 2);
    nbuf_retain(b);
    cr_assert_eq(nbuf_composite_add(c, b), 0); /* and the same buffer, taken */
    flat_push(&f, nbuf_data(b), 64);
    cr_assert_eq(nbuf_refcnt(b), 3);
    cr_assert_eq(nbuf_composite_count(c), 3);
    assert_same(c, &f);
    /* Reading past the first slice must not drop the shared reference. */
    cr_assert_eq(nbuf_composite_skip(c, 64), 0);
    cr_assert_eq(nbuf_refcnt(b), 3);
    flat_consume(&f, 64);
    assert_same(c, &f);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1, "exactly the composite's own references released");
    nbuf_release(b);
    free(f.d);
    t_pool_done(p);
}

Test(composite, adjacent_slices_merge)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 1000, 5);
    for (size_t i = 0; i < 100; i++)
        cr_assert_eq(nbuf_composite_add_slice(c, b, i * 10, 10), 0);
    cr_assert_eq(nbuf_composite_count(c), 1);
    cr_assert_eq(nbuf_composite_readable(c), 1000);
    cr_assert_eq(nbuf_refcnt(b), 2);
    /* Taken buffer adjacent to the last component: merged, reference dropped. */
    struct nbuf *v = nbuf_slice(b, 0, 1000);
    struct nbuf_composite *c2 = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_slice(c2, v, 0, 500), 0);
    nbuf_retain(v);
    cr_assert_eq(nbuf_skip(v, 500), 0);
    cr_assert_eq(nbuf_composite_add(c2, v), 0);
    cr_assert_eq(nbuf_composite_count(c2), 1);
    cr_assert_eq(nbuf_refcnt(v), 2);
    struct flat f = {0};
    flat_push(&f, nbuf_data(b), 1000);
    assert_same(c2, &f);
    nbuf_release(v);
    nbuf_composite_free(c2);
    nbuf_composite_free(c);
    nbuf_release(b);
    free(f.d);
    t_pool_done(p);
}

Test(composite, released_buffer_is_refused_C10)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags |= NBUF_POOL_CHECKED; /* released headers are quarantined, not reused */
    struct nbuf_pool *p = t_pool_new(&cfg);
    t_capture_reports();
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 10, 1);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_add(c, b), -EINVAL);
    cr_assert_eq(nbuf_composite_prepend(c, b), -EINVAL);
    cr_assert_geq(t_reports(), 3, "each use reported: %s", t_report_text());
    cr_assert_eq(nbuf_composite_count(c), 0);
    nbuf_composite_free(c);
    nbuf_report_hook_ = NULL;
    t_pool_done(p);
}

Test(composite, prepend_order_and_merge)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct flat f = {0};
    struct nbuf *a = mkbuf(p, 30, 1), *b = mkbuf(p, 20, 2);
    flat_push(&f, nbuf_data(a), 30);
    cr_assert_eq(nbuf_composite_add(c, a), 0);
    flat_prepend(&f, nbuf_data(b), 20);
    cr_assert_eq(nbuf_composite_prepend(c, b), 0);
    assert_same(c, &f);
    /* Partly read front, then prepend: the new bytes come before the unread. */
    cr_assert_eq(nbuf_composite_skip(c, 5), 0);
    flat_consume(&f, 5);
    struct nbuf *d = mkbuf(p, 7, 3);
    flat_prepend(&f, nbuf_data(d), 7);
    cr_assert_eq(nbuf_composite_prepend(c, d), 0);
    assert_same(c, &f);
    /* The bytes just before the front component of the same buffer merge. */
    struct nbuf *m = mkbuf(p, 40, 9);
    struct nbuf_composite *c2 = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_slice(c2, m, 25, 15), 0);
    cr_assert_eq(nbuf_set_indices(m, 0, 25), 0);
    cr_assert_eq(nbuf_composite_prepend(c2, nbuf_retain(m)), 0);
    cr_assert_eq(nbuf_composite_count(c2), 1);
    cr_assert_eq(nbuf_composite_readable(c2), 40);
    cr_assert_eq(nbuf_refcnt(m), 2);
    uint8_t got[40];
    cr_assert_eq(nbuf_composite_get(c2, 0, got, 40), 0);
    for (size_t i = 0; i < 40; i++)
        cr_assert_eq(got[i], pat(9, i));
    cr_assert(nbuf_composite_check_(c2));
    nbuf_release(m);
    nbuf_composite_free(c2);
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

Test(composite, add_copy_packs)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct flat f = {0};
    uint8_t hdr[16];
    for (unsigned i = 0; i < 16; i++) {
        for (unsigned k = 0; k < 16; k++)
            hdr[k] = (uint8_t)(i * 16 + k);
        cr_assert_eq(nbuf_composite_add_copy(c, hdr, 16), 0);
        flat_push(&f, hdr, 16);
    }
    cr_assert_eq(nbuf_composite_count(c), 1, "consecutive copies share one component");
    assert_same(c, &f);
    /* A slice in between, then more copies: packed into the same tail. */
    struct nbuf *b = mkbuf(p, 50, 7);
    cr_assert_eq(nbuf_composite_add(c, b), 0);
    flat_push(&f, nbuf_data(b), 50);
    cr_assert_eq(nbuf_composite_add_copy(c, "abc", 3), 0);
    cr_assert_eq(nbuf_composite_add_copy(c, "defg", 4), 0);
    flat_push(&f, "abcdefg", 7);
    cr_assert_eq(nbuf_composite_count(c), 3);
    assert_same(c, &f);
    /* A big copy. */
    uint8_t *big = malloc(100000);
    for (size_t i = 0; i < 100000; i++)
        big[i] = (uint8_t)(i * 3);
    cr_assert_eq(nbuf_composite_add_copy(c, big, 100000), 0);
    flat_push(&f, big, 100000);
    assert_same(c, &f);
    /* The composite's copies survive the source. */
    memset(big, 0, 100000);
    assert_same(c, &f);
    /* Read everything, then copy again. */
    cr_assert_eq(nbuf_composite_skip(c, f.n), 0);
    flat_consume(&f, f.n);
    cr_assert_eq(nbuf_composite_add_copy(c, "xyz", 3), 0);
    flat_push(&f, "xyz", 3);
    assert_same(c, &f);
    nbuf_composite_free(c);
    free(big);
    free(f.d);
    t_pool_done(p);
}

Test(composite, add_iov_copies_small_references_big)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 10000, 8);
    const uint8_t *m = nbuf_data(b);
    struct flat f = {0};
    /* small, small, big, big (adjacent), small, empty, big, big (not adjacent) */
    const size_t M = NBUF_COMPOSITE_COPY_MAX;
    struct iovec iov[] = {
        {(void *)(m + 1), 5},         {(void *)(m + 100), 16},
        {(void *)(m + 200), M + 100}, {(void *)(m + 200 + M + 100), M + 1},
        {(void *)(m + 3), M},         {(void *)(m + 50), 0},
        {(void *)(m + 5000), M + 1},  {(void *)(m + 6000), M + 1000},
    };
    for (unsigned i = 0; i < 8; i++)
        flat_push(&f, iov[i].iov_base, iov[i].iov_len);
    cr_assert_eq(nbuf_composite_add_copy(c, "H", 1), 0);
    flat_prepend(&f, "H", 1);
    cr_assert_eq(nbuf_composite_add_iov(c, b, iov, 8), 0);
    assert_same(c, &f);
    /* [H (+ 5 + 16 packed when the tail has room)] [200.. merged] [M copied]
     * [M + 1] [M + 1000] */
    cr_assert(nbuf_composite_count(c) == 5 || nbuf_composite_count(c) == 6);
    cr_assert_eq(nbuf_refcnt(b), 3, "one reference per run of referenced pieces");
    /* The copies do not follow later changes to b; the references do. */
    nbuf_set_u8(b, 1, 0xee);
    nbuf_set_u8(b, 200, 0xee);
    f.d[1 + 5 + 16] = 0xee; /* referenced: changed */
    assert_same(c, &f);
    /* Errors change nothing. */
    size_t n0 = nbuf_composite_count(c), r0 = nbuf_composite_readable(c);
    struct iovec bad[] = {{(void *)(m + 1), 5}, {(void *)(m + 9999), 2}};
    cr_assert_eq(nbuf_composite_add_iov(c, b, bad, 2), -EINVAL);
    struct iovec bad2[] = {{(void *)(m - 1), 5}};
    cr_assert_eq(nbuf_composite_add_iov(c, b, bad2, 1), -EINVAL);
    /* Fails after a referenced piece, a copy and a new tail were taken. */
    struct iovec bad3[] = {{(void *)(m + 0), M + 100},
                           {(void *)(m + 1), 5},
                           {(void *)(m + 2000), M},
                           {(void *)(m + 7000), 2 * M},
                           {(void *)(m + 9000), 1001}};
    cr_assert_eq(nbuf_composite_add_iov(c, b, bad3, 5), -EINVAL);
    struct iovec slack[] = {{(void *)(m + 10000), 1}}; /* past the writer index */
    cr_assert_eq(nbuf_composite_add_iov(c, b, slack, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_add_iov(c, b, NULL, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_add_iov(c, b, iov, -1), -EINVAL);
    cr_assert_eq(nbuf_composite_add_iov(c, b, iov, 0), 0);
    cr_assert_eq(nbuf_composite_count(c), n0);
    cr_assert_eq(nbuf_composite_readable(c), r0);
    cr_assert_eq(nbuf_refcnt(b), 3);
    assert_same(c, &f);
    /* Many tiny pieces: packed into one component, no reference taken. */
    struct iovec *many = malloc(4096 * sizeof(*many));
    for (unsigned i = 0; i < 4096; i++) {
        many[i].iov_base = (void *)(m + (i * 7) % 9000);
        many[i].iov_len = 1 + i % 16;
        flat_push(&f, many[i].iov_base, many[i].iov_len);
    }
    cr_assert_eq(nbuf_composite_add_iov(c, b, many, 4096), 0);
    cr_assert_eq(nbuf_composite_count(c), n0 + 1);
    cr_assert_eq(nbuf_refcnt(b), 3);
    assert_same(c, &f);
    /* And packed behind them next time. */
    cr_assert_eq(nbuf_composite_add_iov(c, b, many, 3), 0);
    for (unsigned i = 0; i < 3; i++)
        flat_push(&f, many[i].iov_base, many[i].iov_len);
    if (!t_bypass()) /* unpooled buffers have no class slack to pack into */
        cr_assert_eq(nbuf_composite_count(c), n0 + 1);
    assert_same(c, &f);
    free(many);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    free(f.d);
    t_pool_done(p);
}

Test(composite, add_file_checks)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    char path[] = "/tmp/nbuf-comp-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    cr_assert_eq(write(fd, "0123456789", 10), 10);
    cr_assert_eq(nbuf_composite_add_file(c, -1, 0, 1), -EBADF);
    cr_assert_eq(nbuf_composite_add_file(c, 1000000, 0, 1), -EBADF);
    cr_assert_eq(nbuf_composite_add_file(c, fd, -1, 1), -EINVAL);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 5, 6), -EINVAL);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 11, 0), -EINVAL);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 0, SIZE_MAX), -EINVAL);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 10, 0), 0);
    cr_assert_eq(nbuf_composite_count(c), 0);
    cr_assert_eq(nbuf_composite_add_file(c, fd, 2, 5), 0);
    close(fd); /* the composite has its own dup */
    cr_assert_eq(nbuf_composite_add_copy(c, "!", 1), 0);
    uint8_t got[6];
    cr_assert_eq(nbuf_composite_get(c, 0, got, 6), 0);
    cr_assert_eq(memcmp(got, "23456!", 6), 0);
    cr_assert_eq(nbuf_composite_index_of(c, 0, '5'), 3);
    cr_assert_eq(nbuf_composite_find(c, 0, "56!", 3), 3);
    uint16_t v;
    cr_assert_eq(nbuf_composite_read_u16(c, &v), 0);
    cr_assert_eq(v, ('2' << 8) | '3');
    struct nbuf *s = nbuf_composite_read_slice(c, 3);
    cr_assert_not_null(s);
    cr_assert_eq(memcmp(nbuf_data(s), "456", 3), 0);
    nbuf_release(s);
    cr_assert(nbuf_composite_check_(c));
    nbuf_composite_free(c);
    t_pool_done(p);
}

Test(composite, append_moves_C19)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *a = nbuf_composite_new(p), *b = nbuf_composite_new(p);
    struct flat f = {0};
    for (unsigned i = 0; i < 6; i++) {
        struct nbuf *x = mkbuf(p, 11 + i, i);
        flat_push(&f, nbuf_data(x), nbuf_readable(x));
        cr_assert_eq(nbuf_composite_add(i < 3 ? a : b, x), 0);
    }
    cr_assert_eq(nbuf_composite_add_copy(b, "tail", 4), 0);
    flat_push(&f, "tail", 4);
    cr_assert_eq(nbuf_composite_append(a, a), -EINVAL);
    cr_assert_eq(nbuf_composite_count(a), 3);
    cr_assert_eq(nbuf_composite_append(a, b), 0);
    cr_assert_eq(nbuf_composite_readable(b), 0);
    cr_assert_eq(nbuf_composite_count(b), 0);
    cr_assert(nbuf_composite_check_(b));
    assert_same(a, &f);
    /* The tail moved along: the next copy packs behind "tail". */
    size_t n = nbuf_composite_count(a);
    cr_assert_eq(nbuf_composite_add_copy(a, "++", 2), 0);
    flat_push(&f, "++", 2);
    cr_assert_eq(nbuf_composite_count(a), n);
    assert_same(a, &f);
    /* b is still usable. */
    cr_assert_eq(nbuf_composite_add_copy(b, "x", 1), 0);
    cr_assert_eq(nbuf_composite_readable(b), 1);
    cr_assert_eq(nbuf_composite_append(a, b), 0);
    flat_push(&f, "x", 1);
    assert_same(a, &f);
    nbuf_composite_free(a);
    nbuf_composite_free(b);
    free(f.d);
    t_pool_done(p);
}

Test(composite, total_overflow_A4)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    static uint8_t fake[1];
    /* Fake lengths: nothing here reads these bytes. */
    struct nbuf *h1 = nbuf_wrap(fake, SIZE_MAX / 2, NULL, NULL);
    struct nbuf *h2 = nbuf_wrap(fake, SIZE_MAX / 2, NULL, NULL);
    cr_assert_eq(nbuf_composite_add(c, h1), 0);
    cr_assert_eq(nbuf_composite_add(c, h2), 0);
    size_t total = nbuf_composite_readable(c);
    cr_assert_eq(total, SIZE_MAX - 1);
    /* One byte fits, two do not. */
    struct nbuf *one = mkbuf(p, 2, 1);
    cr_assert_eq(nbuf_composite_add_slice(c, one, 0, 2), -EOVERFLOW);
    cr_assert_eq(nbuf_composite_add_copy(c, "ab", 2), -EOVERFLOW);
    cr_assert_eq(nbuf_composite_prepend(c, nbuf_retain(one)), -EOVERFLOW);
    nbuf_release(one); /* the failed prepend left the reference with us */
    cr_assert_eq(nbuf_composite_add(c, nbuf_retain(one)), -EOVERFLOW);
    nbuf_release(one);
    cr_assert_eq(nbuf_composite_readable(c), SIZE_MAX - 1, "unchanged");
    cr_assert_eq(nbuf_composite_count(c), 2);
    cr_assert_eq(nbuf_refcnt(one), 1);
    struct nbuf_composite *o = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_slice(o, one, 0, 2), 0);
    cr_assert_eq(nbuf_composite_append(c, o), -EOVERFLOW);
    cr_assert_eq(nbuf_composite_readable(o), 2);
    cr_assert_eq(nbuf_composite_add_slice(c, one, 0, 1), 0);
    cr_assert_eq(nbuf_composite_readable(c), SIZE_MAX);
    cr_assert_eq(nbuf_composite_add_file(c, 0, 0, 1), -EOVERFLOW);
    cr_assert_eq(nbuf_composite_read_fd(c, 0, 0), -EOVERFLOW);
    /* split into a full composite */
    cr_assert_eq(nbuf_composite_split(o, 1, c), -EOVERFLOW);
    cr_assert(nbuf_composite_check_(c));
    nbuf_composite_free(o);
    nbuf_composite_free(c);
    nbuf_release(one);
    t_pool_done(p);
}

/* ---- reading ---- */

Test(composite, typed_reads_across_boundaries)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    uint8_t bytes[64];
    for (unsigned i = 0; i < 64; i++)
        bytes[i] = (uint8_t)(0x10 + i);
    /* Every split point of the 8 bytes at offset 0 over two components. */
    for (unsigned cut = 1; cut < 8; cut++) {
        struct nbuf_composite *c = nbuf_composite_new(p);
        struct nbuf *a = nbuf_alloc(p, 8), *b = nbuf_alloc(p, 56);
        nbuf_write(a, bytes, cut);
        nbuf_write(b, bytes + cut, 64 - cut);
        nbuf_composite_add(c, a);
        nbuf_composite_add(c, b);
        uint64_t v64;
        uint32_t v32;
        uint16_t v16;
        uint8_t v8;
        cr_assert_eq(nbuf_composite_get_u64(c, 0, &v64), 0);
        cr_assert_eq(v64, 0x1011121314151617ull);
        cr_assert_eq(nbuf_composite_get_u64_le(c, 0, &v64), 0);
        cr_assert_eq(v64, 0x1716151413121110ull);
        cr_assert_eq(nbuf_composite_get_u32(c, cut - 1, &v32), 0);
        cr_assert_eq(v32, 0x10101010u + 0x00010203u + (cut - 1) * 0x01010101u);
        cr_assert_eq(nbuf_composite_get_u16_le(c, cut - 1, &v16), 0);
        cr_assert_eq(v16, (uint16_t)(((0x10 + cut) << 8) | (0x10 + cut - 1)));
        cr_assert_eq(nbuf_composite_read_u16(c, &v16), 0);
        cr_assert_eq(v16, 0x1011);
        cr_assert_eq(nbuf_composite_read_u8(c, &v8), 0);
        cr_assert_eq(v8, 0x12);
        cr_assert_eq(nbuf_composite_read_u32_le(c, &v32), 0);
        cr_assert_eq(v32, 0x16151413u);
        cr_assert_eq(nbuf_composite_read_u64(c, &v64), 0);
        cr_assert_eq(v64, 0x1718191a1b1c1d1eull);
        cr_assert_eq(nbuf_composite_read_u16_le(c, &v16), 0);
        cr_assert_eq(v16, 0x201f);
        cr_assert_eq(nbuf_composite_read_u32(c, &v32), 0);
        cr_assert_eq(v32, 0x21222324u);
        cr_assert_eq(nbuf_composite_read_u64_le(c, &v64), 0);
        cr_assert_eq(v64, 0x2c2b2a2928272625ull);
        cr_assert_eq(nbuf_composite_readable(c), 64 - 29);
        cr_assert_eq(nbuf_composite_skip(c, 64 - 29 - 3), 0);
        cr_assert_eq(nbuf_composite_read_u32(c, &v32), -ENODATA);
        cr_assert_eq(nbuf_composite_get_u32(c, 0, &v32), -ENODATA);
        cr_assert_eq(nbuf_composite_get_u16(c, 2, &v16), -ENODATA);
        cr_assert_eq(nbuf_composite_get_u8(c, SIZE_MAX, &v8), -ENODATA);
        cr_assert_eq(nbuf_composite_readable(c), 3, "nothing consumed");
        nbuf_composite_free(c);
    }
    t_pool_done(p);
}

Test(composite, get_range_checks)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    nbuf_composite_add(c, mkbuf(p, 10, 1));
    uint8_t d[16];
    cr_assert_eq(nbuf_composite_get(c, 0, d, 11), -ENODATA);
    cr_assert_eq(nbuf_composite_get(c, 10, d, 1), -ENODATA);
    cr_assert_eq(nbuf_composite_get(c, 10, d, 0), 0);
    cr_assert_eq(nbuf_composite_get(c, 11, d, 0), -ENODATA);
    cr_assert_eq(nbuf_composite_get(c, SIZE_MAX, d, 2), -ENODATA);
    cr_assert_eq(nbuf_composite_get(c, 9, d, 1), 0);
    cr_assert_eq(d[0], pat(1, 9));
    nbuf_composite_free(c);
    t_pool_done(p);
}

Test(composite, index_of_and_find_span_components)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    const char *parts[] = {"GET / HTTP/1.1\r", "\n", "Host: x\r\n\r", "\n", "body\r\n\r\nmore"};
    struct flat f = {0};
    for (unsigned i = 0; i < 5; i++) {
        struct nbuf *b = nbuf_alloc(p, 32);
        nbuf_write(b, parts[i], strlen(parts[i]));
        flat_push(&f, parts[i], strlen(parts[i]));
        nbuf_composite_add(c, b);
    }
    cr_assert_eq(nbuf_composite_find(c, 0, "\r\n\r\n", 4), 23);
    cr_assert_eq(nbuf_composite_find(c, 24, "\r\n\r\n", 4), 31);
    cr_assert_eq(nbuf_composite_find(c, 32, "\r\n\r\n", 4), -ENOENT);
    cr_assert_eq(nbuf_composite_find(c, 0, "1.1\r\nHost", 9), 11);
    cr_assert_eq(nbuf_composite_find(c, 0, "more", 4), (ssize_t)f.n - 4);
    cr_assert_eq(nbuf_composite_find(c, 0, "moreX", 5), -ENOENT);
    cr_assert_eq(nbuf_composite_find(c, 0, f.d, f.n), 0);
    cr_assert_eq(nbuf_composite_find(c, 1, f.d, f.n), -ENOENT);
    cr_assert_eq(nbuf_composite_find(c, 5, "", 0), 5);
    cr_assert_eq(nbuf_composite_find(c, f.n, "", 0), (ssize_t)f.n);
    cr_assert_eq(nbuf_composite_find(c, f.n + 1, "", 0), -EINVAL);
    cr_assert_eq(nbuf_composite_index_of(c, 0, '\n'), 15);
    cr_assert_eq(nbuf_composite_index_of(c, 16, '\n'), 24);
    cr_assert_eq(nbuf_composite_index_of(c, 0, 'Z'), -ENOENT);
    cr_assert_eq(nbuf_composite_index_of(c, f.n, 'm'), -ENOENT);
    cr_assert_eq(nbuf_composite_index_of(c, f.n + 1, 'm'), -EINVAL);
    /* Brute force over every needle of the flat bytes. */
    for (size_t len = 1; len <= 6; len++)
        for (size_t at = 0; at + len <= f.n; at++) {
            ssize_t want = (ssize_t)((uint8_t *)memmem(f.d, f.n, f.d + at, len) - f.d);
            cr_assert_eq(nbuf_composite_find(c, 0, f.d + at, len), want, "at %zu len %zu", at, len);
        }
    /* After consuming, offsets are relative to the reader. */
    nbuf_composite_skip(c, 20);
    cr_assert_eq(nbuf_composite_find(c, 0, "\r\n\r\n", 4), 3);
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

Test(composite, find_many_tiny_components)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct flat f = {0};
    uint64_t s = 7;
    for (unsigned i = 0; i < 500; i++) {
        uint8_t x[3];
        size_t n = 1 + t_rand(&s) % 3;
        for (size_t k = 0; k < n; k++)
            x[k] = (uint8_t)('a' + t_rand(&s) % 3);
        struct nbuf *b = nbuf_alloc(p, 4);
        nbuf_write(b, x, n);
        nbuf_composite_add(c, b);
        flat_push(&f, x, n);
    }
    for (unsigned t = 0; t < 300; t++) {
        size_t len = 1 + t_rand(&s) % 12;
        uint8_t nd[12];
        for (size_t k = 0; k < len; k++)
            nd[k] = (uint8_t)('a' + t_rand(&s) % 3);
        size_t from = t_rand(&s) % f.n;
        uint8_t *hit = memmem(f.d + from, f.n - from, nd, len);
        ssize_t want = hit ? (ssize_t)(hit - f.d) : -ENOENT;
        cr_assert_eq(nbuf_composite_find(c, from, nd, len), want);
        uint8_t *h1 = memchr(f.d + from, nd[0], f.n - from);
        cr_assert_eq(nbuf_composite_index_of(c, from, nd[0]), h1 ? (ssize_t)(h1 - f.d) : -ENOENT);
    }
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

/* ---- framing ---- */

Test(composite, read_slice_view_or_copy)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *a = mkbuf(p, 100, 1), *b = mkbuf(p, 100, 2);
    const uint8_t *a_mem = nbuf_data(a);
    nbuf_composite_add(c, a);
    nbuf_composite_add(c, b);
    /* Within one component: a view of the same memory. */
    struct nbuf *v = nbuf_composite_read_slice(c, 40);
    cr_assert_not_null(v);
    cr_assert_eq(nbuf_data(v), a_mem);
    cr_assert_eq(nbuf_readable(v), 40);
    /* Spanning: a copy of just those bytes. */
    struct nbuf *k = nbuf_composite_read_slice(c, 70);
    cr_assert_not_null(k);
    cr_assert_eq(nbuf_readable(k), 70);
    for (size_t i = 0; i < 60; i++)
        cr_assert_eq(nbuf_data(k)[i], pat(1, 40 + i));
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(nbuf_data(k)[60 + i], pat(2, i));
    cr_assert_eq(nbuf_composite_readable(c), 90);
    errno = 0;
    cr_assert_null(nbuf_composite_read_slice(c, 91));
    cr_assert_eq(errno, ENODATA);
    cr_assert_eq(nbuf_composite_readable(c), 90);
    struct nbuf *z = nbuf_composite_read_slice(c, 0);
    cr_assert_not_null(z);
    cr_assert_eq(nbuf_readable(z), 0);
    /* The view outlives the composite (C17). */
    nbuf_composite_free(c);
    for (size_t i = 0; i < 40; i++)
        cr_assert_eq(nbuf_data(v)[i], pat(1, i));
    nbuf_release(v);
    nbuf_release(k);
    nbuf_release(z);
    t_pool_done(p);
}

Test(composite, split_zero_copy)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    for (size_t n = 0; n <= 60; n++) {
        struct nbuf_composite *c = nbuf_composite_new(p), *o = nbuf_composite_new(p);
        struct flat f = {0}, fo = {0};
        struct nbuf *bufs[3];
        for (unsigned i = 0; i < 3; i++) {
            bufs[i] = mkbuf(p, 20, i);
            flat_push(&f, nbuf_data(bufs[i]), 20);
            cr_assert_eq(nbuf_composite_add_slice(c, bufs[i], 0, 20), 0);
        }
        cr_assert_eq(nbuf_composite_add_copy(o, "pre", 3), 0);
        flat_push(&fo, "pre", 3);
        cr_assert_eq(nbuf_composite_split(c, n, o), 0);
        flat_push(&fo, f.d, n);
        flat_consume(&f, n);
        assert_same(c, &f);
        assert_same(o, &fo);
        /* A cut component is referenced by both sides. */
        for (unsigned i = 0; i < 3; i++) {
            unsigned want = 1 + (n > i * 20) + (n < (i + 1) * 20);
            cr_assert_eq(nbuf_refcnt(bufs[i]), want, "n %zu buf %u: refcnt %u", n, i,
                         nbuf_refcnt(bufs[i]));
        }
        cr_assert_eq(nbuf_composite_split(c, f.n + 1, o), -ENODATA);
        nbuf_composite_free(c);
        nbuf_composite_free(o);
        for (unsigned i = 0; i < 3; i++) {
            cr_assert_eq(nbuf_refcnt(bufs[i]), 1);
            nbuf_release(bufs[i]);
        }
        free(f.d);
        free(fo.d);
    }
    t_pool_done(p);
}

Test(composite, split_shared_reference_runs)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = mkbuf(p, 1000, 3);
    struct nbuf_composite *c = nbuf_composite_new(p), *o = nbuf_composite_new(p);
    struct flat f = {0}, fo = {0};
    /* Ten non-adjacent slices sharing one reference. */
    for (size_t i = 0; i < 10; i++) {
        cr_assert_eq(nbuf_composite_add_slice(c, b, i * 50, 10), 0);
        flat_push(&f, nbuf_data(b) + i * 50, 10);
    }
    cr_assert_eq(nbuf_refcnt(b), 2);
    cr_assert_eq(nbuf_composite_split(c, 30, o), 0); /* on a boundary */
    flat_push(&fo, f.d, 30);
    flat_consume(&f, 30);
    assert_same(c, &f);
    assert_same(o, &fo);
    cr_assert_eq(nbuf_refcnt(b), 3);
    nbuf_composite_free(c); /* o's part must stay valid */
    assert_same(o, &fo);
    cr_assert_eq(nbuf_refcnt(b), 2);
    nbuf_composite_free(o);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    free(f.d);
    free(fo.d);
    t_pool_done(p);
}

Test(composite, flatten)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *e = nbuf_composite_flatten(c);
    cr_assert_not_null(e);
    cr_assert_eq(nbuf_readable(e), 0);
    nbuf_release(e);
    struct nbuf *a = mkbuf(p, 50, 1);
    nbuf_composite_add(c, nbuf_retain(a));
    struct nbuf *v = nbuf_composite_flatten(c);
    cr_assert_eq(nbuf_data(v), nbuf_data(a), "one component: a view");
    nbuf_release(v);
    nbuf_composite_add_copy(c, "xyz", 3);
    struct nbuf *k = nbuf_composite_flatten(c);
    cr_assert_eq(nbuf_readable(k), 53);
    cr_assert_eq(memcmp(nbuf_data(k), nbuf_data(a), 50), 0);
    cr_assert_eq(memcmp(nbuf_data(k) + 50, "xyz", 3), 0);
    cr_assert_eq(nbuf_composite_readable(c), 53, "flatten consumes nothing");
    nbuf_release(k);
    nbuf_release(a);
    nbuf_composite_free(c);
    t_pool_done(p);
}

Test(composite, iov_export)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *a = mkbuf(p, 100, 1);
    nbuf_composite_add_slice(c, a, 0, 10);
    nbuf_composite_add_slice(c, a, 20, 10);
    nbuf_composite_add_copy(c, "hello", 5);
    char path[] = "/tmp/nbuf-iov-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    cr_assert_eq(write(fd, "file", 4), 4);
    nbuf_composite_add_file(c, fd, 0, 4);
    nbuf_composite_add_slice(c, a, 50, 10);
    close(fd);
    struct iovec iov[8];
    cr_assert_eq(nbuf_composite_iov(c, iov, 8, SIZE_MAX), 3, "stops at the file region");
    cr_assert_eq(iov[0].iov_base, (void *)nbuf_data(a));
    cr_assert_eq(iov[0].iov_len, 10);
    cr_assert_eq(iov[1].iov_len, 10);
    cr_assert_eq(iov[2].iov_len, 5);
    cr_assert_eq(nbuf_composite_iov(c, iov, 2, SIZE_MAX), 2);
    cr_assert_eq(nbuf_composite_iov(c, iov, 8, 15), 2);
    cr_assert_eq(iov[1].iov_len, 5);
    cr_assert_eq(nbuf_composite_iov(c, iov, 8, 0), 0);
    cr_assert_eq(nbuf_composite_iov(c, iov, 0, 100), 0);
    /* Adjacent slices share an iovec. */
    struct nbuf_composite *d = nbuf_composite_new(p);
    struct nbuf *v1 = nbuf_slice(a, 0, 30), *v2 = nbuf_slice(a, 30, 30);
    nbuf_composite_add(d, v1);
    nbuf_composite_add(d, v2);
    cr_assert_eq(nbuf_composite_count(d), 2);
    cr_assert_eq(nbuf_composite_iov(d, iov, 8, SIZE_MAX), 1);
    cr_assert_eq(iov[0].iov_len, 60);
    nbuf_composite_free(d);
    nbuf_composite_free(c);
    nbuf_release(a);
    t_pool_done(p);
}

Test(composite, zero_length_components_never_iovecs_C20)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    static const unsigned marks[] = {0, 1, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025};
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *src = mkbuf(p, 4096, 2);
    struct flat f = {0};
    unsigned pos = 0, m = 0;
    for (unsigned i = 0; i < 1100; i++) {
        if (m < sizeof(marks) / sizeof(marks[0]) && marks[m] == pos) {
            /* Empty buffers, empty slices and empty copies at this position. */
            cr_assert_eq(nbuf_composite_add(c, nbuf_alloc(p, 8)), 0);
            cr_assert_eq(nbuf_composite_add_slice(c, src, 7, 0), 0);
            cr_assert_eq(nbuf_composite_add_copy(c, "", 0), 0);
            cr_assert_eq(nbuf_composite_prepend(c, nbuf_alloc(p, 8)), 0);
            m++;
        }
        /* Non-adjacent slices so that each is its own component. */
        cr_assert_eq(nbuf_composite_add_slice(c, src, (i * 3) % 4000, 1), 0);
        flat_push(&f, nbuf_data(src) + (i * 3) % 4000, 1);
        pos++;
    }
    cr_assert_eq(nbuf_composite_add(c, nbuf_alloc(p, 8)), 0); /* tail */
    cr_assert_eq(nbuf_composite_count(c), 1100);
    assert_same(c, &f);
    struct iovec *iov = malloc(2000 * sizeof(*iov));
    int n = nbuf_composite_iov(c, iov, 2000, SIZE_MAX);
    cr_assert_gt(n, 0);
    for (int i = 0; i < n; i++)
        cr_assert_gt(iov[i].iov_len, 0, "iovec %d is empty", i);
    free(iov);
    nbuf_composite_free(c);
    nbuf_release(src);
    free(f.d);
    t_pool_done(p);
}

static void
counts_around_thresholds(void)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    static const size_t counts[] = {1,   2,    3,    4,    5,    7,    8,    9,    15,   16,  17,
                                    63,  64,   65,   127,  128,  129,  255,  256,  257,  511, 512,
                                    513, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097};
    uint64_t s = 11;
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        struct nbuf_composite *c = nbuf_composite_new(p);
        struct nbuf *src = mkbuf(p, 8192, k);
        struct flat f = {0};
        for (size_t i = 0; i < counts[k]; i++) {
            size_t len = 1 + t_rand(&s) % 3, off = (i * 2) % 8000;
            if (i % 3 == 0) {
                cr_assert_eq(nbuf_composite_add_slice(c, src, off, len), 0);
                flat_push(&f, nbuf_data(src) + off, len);
            } else if (i % 3 == 1) {
                struct nbuf *b = mkbuf(p, len, i);
                flat_push(&f, nbuf_data(b), len);
                cr_assert_eq(nbuf_composite_add(c, b), 0);
            } else {
                struct nbuf *b = mkbuf(p, len, i + 1);
                flat_prepend(&f, nbuf_data(b), len);
                cr_assert_eq(nbuf_composite_prepend(c, b), 0);
            }
        }
        assert_same(c, &f);
        /* Random gets against the flat bytes (lookups by binary search). */
        for (unsigned t = 0; t < 200; t++) {
            size_t off = t_rand(&s) % f.n, n = 1 + t_rand(&s) % (f.n - off);
            if (n > 64)
                n = 64;
            uint8_t got[64];
            cr_assert_eq(nbuf_composite_get(c, off, got, n), 0);
            cr_assert_eq(memcmp(got, f.d + off, n), 0, "count %zu off %zu n %zu", counts[k], off,
                         n);
        }
        /* Consume in random steps, comparing as we go. */
        while (f.n) {
            size_t n = 1 + t_rand(&s) % (f.n < 50 ? f.n : 50);
            uint8_t got[50];
            cr_assert_eq(nbuf_composite_read(c, got, n), 0);
            cr_assert_eq(memcmp(got, f.d, n), 0);
            flat_consume(&f, n);
            if (t_rand(&s) % 8 == 0)
                assert_same(c, &f);
        }
        cr_assert_eq(nbuf_composite_count(c), 0);
        cr_assert_eq(nbuf_composite_discard_read(c), 0);
        cr_assert(nbuf_composite_check_(c));
        nbuf_composite_free(c);
        nbuf_release(src);
        free(f.d);
    }
    t_pool_done(p);
}

/* With small slices copied (fewer, packed components) and referenced (one
 * component each). */
Test(composite, counts_around_thresholds_C21)
{
    counts_around_thresholds();
    refs_only();
    counts_around_thresholds();
}

Test(composite, many_components_linear_and_discard_shrinks)
{
    refs_only();
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *src = mkbuf(p, 2 * 100000, 5);
    for (size_t i = 0; i < 100000; i++)
        cr_assert_eq(nbuf_composite_add_slice(c, src, 2 * i, 1), 0);
    cr_assert_eq(nbuf_composite_count(c), 100000);
    cr_assert_eq(nbuf_refcnt(src), 2);
    uint64_t s = 3;
    for (unsigned t = 0; t < 1000; t++) {
        size_t off = t_rand(&s) % 100000;
        uint8_t v;
        cr_assert_eq(nbuf_composite_get_u8(c, off, &v), 0);
        cr_assert_eq(v, pat(5, 2 * off));
    }
    cr_assert_eq(nbuf_composite_skip(c, 99990), 0);
    size_t cap = c->mask + 1;
    cr_assert_eq(nbuf_composite_discard_read(c), 0);
    cr_assert_lt(c->mask + 1, cap);
    cr_assert(nbuf_composite_check_(c));
    cr_assert_eq(nbuf_composite_skip(c, 8), 0);
    cr_assert_eq(nbuf_composite_discard_read(c), 0);
    cr_assert_eq(c->comps, c->inl);
    uint8_t v;
    cr_assert_eq(nbuf_composite_read_u8(c, &v), 0);
    cr_assert_eq(v, pat(5, 2 * 99998));
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(src), 1);
    nbuf_release(src);
    t_pool_done(p);
}

/* ---- a small differential test (the full fuzzer lives in fuzz/) ---- */

#define NC 3

static void
drain_pipe(int rd, struct flat *out)
{
    uint8_t tmp[65536];
    for (;;) {
        ssize_t r = read(rd, tmp, sizeof(tmp));
        if (r <= 0)
            break;
        flat_push(out, tmp, (size_t)r);
    }
}

Test(composite, differential_vs_flat_C22)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c[NC];
    struct flat f[NC] = {{0}};
    for (int i = 0; i < NC; i++)
        c[i] = nbuf_composite_new(p);
    int pp[2];
    cr_assert_eq(pipe2(pp, O_NONBLOCK), 0);
    uint64_t s = 0x5eed;
    unsigned wraps = 0;
    wrap_frees = 0;
    struct nbuf *shared = mkbuf(p, 4096, 77);
    for (unsigned step = 0; step < 6000; step++) {
        int i = (int)(t_rand(&s) % NC), j = (int)(t_rand(&s) % NC);
        /* Copied and referenced slices, interleaved in one composite. */
        if (step % 97 == 0)
            nbuf_composite_slice_copy_max_ = t_rand(&s) % 3 ? NBUF_COMPOSITE_COPY_MAX : 0;
        size_t n = t_rand(&s) % 300;
        uint8_t tmp[600];
        switch (t_rand(&s) % 14) {
        case 0: { /* add (takes) */
            struct nbuf *b = mkbuf(p, n, step);
            flat_push(&f[i], nbuf_data(b), n);
            cr_assert_eq(nbuf_composite_add(c[i], b), 0);
            break;
        }
        case 1: { /* prepend (takes) */
            struct nbuf *b = mkbuf(p, n, step);
            flat_prepend(&f[i], nbuf_data(b), n);
            cr_assert_eq(nbuf_composite_prepend(c[i], b), 0);
            break;
        }
        case 2: { /* add_slice of a shared buffer */
            size_t off = t_rand(&s) % 4096;
            if (n > 4096 - off)
                n = 4096 - off;
            flat_push(&f[i], nbuf_data(shared) + off, n);
            cr_assert_eq(nbuf_composite_add_slice(c[i], shared, off, n), 0);
            break;
        }
        case 3: /* add_copy */
            for (size_t k = 0; k < n % 40; k++)
                tmp[k] = (uint8_t)(step + k);
            flat_push(&f[i], tmp, n % 40);
            cr_assert_eq(nbuf_composite_add_copy(c[i], tmp, n % 40), 0);
            break;
        case 4: { /* wrapped memory with a free callback */
            uint8_t *m = malloc(n + 1);
            for (size_t k = 0; k < n; k++)
                m[k] = (uint8_t)(k ^ step);
            struct nbuf *w = nbuf_wrap(m, n, wrap_free, NULL);
            cr_assert_not_null(w);
            wraps++;
            flat_push(&f[i], m, n);
            cr_assert_eq(nbuf_composite_add(c[i], w), 0);
            break;
        }
        case 5: /* split */
            if (i == j)
                break;
            n = f[i].n ? n % (f[i].n + 1) : 0;
            cr_assert_eq(nbuf_composite_split(c[i], n, c[j]), 0);
            flat_push(&f[j], f[i].d, n);
            flat_consume(&f[i], n);
            break;
        case 6: /* read */
            if (n > f[i].n) {
                cr_assert_eq(nbuf_composite_read(c[i], tmp, n), -ENODATA);
                break;
            }
            cr_assert_eq(nbuf_composite_read(c[i], tmp, n), 0);
            cr_assert(n == 0 || memcmp(tmp, f[i].d, n) == 0);
            flat_consume(&f[i], n);
            break;
        case 7: /* skip */
            n = f[i].n ? n % (f[i].n + 1) : 0;
            cr_assert_eq(nbuf_composite_skip(c[i], n), 0);
            flat_consume(&f[i], n);
            break;
        case 8: { /* read_slice */
            n = f[i].n ? n % (f[i].n + 1) : 0;
            struct nbuf *b = nbuf_composite_read_slice(c[i], n);
            cr_assert_not_null(b);
            cr_assert_eq(nbuf_readable(b), n);
            cr_assert(n == 0 || memcmp(nbuf_data(b), f[i].d, n) == 0);
            flat_consume(&f[i], n);
            nbuf_release(b);
            break;
        }
        case 9: { /* flatten */
            struct nbuf *b = nbuf_composite_flatten(c[i]);
            cr_assert_not_null(b);
            cr_assert_eq(nbuf_readable(b), f[i].n);
            cr_assert(f[i].n == 0 || memcmp(nbuf_data(b), f[i].d, f[i].n) == 0);
            nbuf_release(b);
            break;
        }
        case 10: /* append */
            if (i == j) {
                cr_assert_eq(nbuf_composite_append(c[i], c[j]), -EINVAL);
                break;
            }
            cr_assert_eq(nbuf_composite_append(c[i], c[j]), 0);
            flat_push(&f[i], f[j].d, f[j].n);
            f[j].n = 0;
            break;
        case 11: { /* flush to a non-blocking pipe */
            struct flat out = {0};
            ssize_t w = nbuf_composite_writev_max(c[i], pp[1], 1 + t_rand(&s) % 100000);
            if (!f[i].n)
                cr_assert_eq(w, 0);
            else
                cr_assert(w > 0 || w == -EAGAIN, "flush: %zd", w);
            drain_pipe(pp[0], &out);
            cr_assert_eq(out.n, w > 0 ? (size_t)w : 0);
            if (out.n)
                cr_assert_eq(memcmp(out.d, f[i].d, out.n), 0);
            flat_consume(&f[i], out.n);
            free(out.d);
            break;
        }
        case 13: { /* add_iov: pieces of the shared buffer */
            struct iovec v[8];
            int nv = (int)(t_rand(&s) % 8);
            for (int k = 0; k < nv; k++) {
                size_t len = t_rand(&s) % 3 ? t_rand(&s) % 200 : t_rand(&s) % 2000;
                size_t off = t_rand(&s) % (4096 - len);
                v[k].iov_base = (void *)(nbuf_data(shared) + off);
                v[k].iov_len = len;
                flat_push(&f[i], v[k].iov_base, len);
            }
            cr_assert_eq(nbuf_composite_add_iov(c[i], shared, v, nv), 0);
            break;
        }
        case 12: { /* find a needle taken from the bytes */
            if (f[i].n < 2)
                break;
            size_t at = t_rand(&s) % (f[i].n - 1), len = 1 + t_rand(&s) % 8;
            if (len > f[i].n - at)
                len = f[i].n - at;
            uint8_t *h = memmem(f[i].d, f[i].n, f[i].d + at, len);
            cr_assert_eq(nbuf_composite_find(c[i], 0, f[i].d + at, len), (ssize_t)(h - f[i].d));
            break;
        }
        }
        assert_same(c[i], &f[i]);
        assert_same(c[j], &f[j]);
    }
    for (int i = 0; i < NC; i++) {
        nbuf_composite_free(c[i]);
        free(f[i].d);
    }
    nbuf_release(shared);
    cr_assert_eq(wrap_frees, wraps, "every free callback ran exactly once: %u of %u", wrap_frees,
                 wraps);
    close(pp[0]);
    close(pp[1]);
    t_pool_done(p);
}

/* More copied bytes than one tail holds (64 KiB): several tails, each
 * sized from a sample of the pieces, every byte in order. */
Test(composite, add_iov_many_tails)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = nbuf_alloc(p, 4096);
    for (unsigned i = 0; i < 4096; i++)
        nbuf_write_u8(b, (uint8_t)(i * 13 + 5));
    const uint8_t *m = nbuf_data(b);
    enum { N = 20000 };
    struct iovec *iov = malloc(N * sizeof(*iov));
    uint8_t *want = malloc((size_t)N * 64);
    size_t n = 0;
    for (unsigned i = 0; i < N; i++) {
        /* Mostly 16 B, with runs of 1 B and 64 B so the sample misjudges. */
        size_t len = (i / 3000) % 3 == 0 ? 16 : (i / 3000) % 3 == 1 ? 1 : 64;
        iov[i].iov_base = (void *)(m + (size_t)i * 37 % 4000);
        iov[i].iov_len = len;
        memcpy(want + n, iov[i].iov_base, len);
        n += len;
    }
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_iov(c, b, iov, N), 0);
    cr_assert_eq(nbuf_composite_readable(c), n);
    cr_assert_eq(nbuf_refcnt(b), 1, "copied pieces took a reference");
    cr_assert(nbuf_composite_check_(c));
    uint8_t *got = malloc(n);
    cr_assert_eq(nbuf_composite_get(c, 0, got, n), 0);
    cr_assert_arr_eq(got, want, n);
    free(got);
    free(want);
    free(iov);
    nbuf_composite_free(c);
    nbuf_release(b);
    t_pool_done(p);
}

/* ---- small slices copied when added (issue #13) ---- */

/* Slices of every size around the threshold, from two buffers, adjacent and
 * not, between copies and taken buffers: the bytes match a flat reference,
 * through reads and through a flush, and no reference is left behind. */
Test(composite, small_slices_copied_bytes_match)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *a = mkbuf(p, 20000, 21), *b = mkbuf(p, 20000, 22);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct flat f = {0};
    uint64_t s = 42;
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    for (unsigned round = 0; round < 40; round++) {
        for (unsigned k = 0; k < 50; k++) {
            struct nbuf *src = t_rand(&s) % 2 ? a : b;
            size_t len = t_rand(&s) % 4 ? 1 + t_rand(&s) % (2 * NBUF_COMPOSITE_COPY_MAX)
                                        : 1 + t_rand(&s) % 3000;
            size_t off = t_rand(&s) % (20000 - len);
            switch (t_rand(&s) % 8) {
            case 0: { /* a header */
                uint8_t h[24];
                size_t n = 1 + t_rand(&s) % sizeof(h);
                t_pattern_fill(h, n, round * 100 + k);
                cr_assert_eq(nbuf_composite_add_copy(c, h, n), 0);
                flat_push(&f, h, n);
                break;
            }
            case 1: { /* a small buffer, taken */
                struct nbuf *x = mkbuf(p, 1 + t_rand(&s) % 100, round + k);
                flat_push(&f, nbuf_data(x), nbuf_readable(x));
                cr_assert_eq(nbuf_composite_add(c, x), 0);
                break;
            }
            case 2: /* the bytes right after the last slice of src */
                if (f.n && off + 2 * len < 20000)
                    off += len;
                /* fall through */
            default:
                cr_assert_eq(nbuf_composite_add_slice(c, src, off, len), 0);
                flat_push(&f, nbuf_data(src) + off, len);
                if (t_rand(&s) % 3 == 0) { /* and the next bytes too */
                    size_t n2 = 1 + t_rand(&s) % 40;
                    if (off + len + n2 <= 20000) {
                        cr_assert_eq(nbuf_composite_add_slice(c, src, off + len, n2), 0);
                        flat_push(&f, nbuf_data(src) + off + len, n2);
                    }
                }
            }
        }
        assert_same(c, &f);
        if (round % 2) {
            /* Read some, then flush the rest through a socket. */
            size_t n = t_rand(&s) % (f.n + 1);
            uint8_t *tmp = malloc(n + 1);
            cr_assert_eq(nbuf_composite_read(c, tmp, n), 0);
            cr_assert(n == 0 || memcmp(tmp, f.d, n) == 0);
            flat_consume(&f, n);
            free(tmp);
            while (f.n) {
                ssize_t w = nbuf_composite_writev(c, sv[0]);
                cr_assert_gt(w, 0);
                uint8_t *got = malloc((size_t)w);
                for (size_t have = 0; have < (size_t)w;) {
                    ssize_t r = read(sv[1], got + have, (size_t)w - have);
                    cr_assert_gt(r, 0);
                    have += (size_t)r;
                }
                cr_assert_eq(memcmp(got, f.d, (size_t)w), 0, "round %u: flushed bytes", round);
                flat_consume(&f, (size_t)w);
                free(got);
            }
            assert_same(c, &f);
        }
    }
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(a), 1);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(a);
    nbuf_release(b);
    close(sv[0]);
    close(sv[1]);
    free(f.d);
    t_pool_done(p);
}

/* A copied slice does not hold its buffer alive: the refcount stays, the
 * buffer may be changed or released at once, the composite keeps the bytes
 * as they were when added. */
Test(composite, small_slice_holds_no_reference)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 4096, 31);
    struct flat f = {0};
    for (size_t i = 0; i < 30; i++) {
        cr_assert_eq(nbuf_composite_add_slice(c, b, i * 131, 1 + i * 9), 0);
        flat_push(&f, nbuf_data(b) + i * 131, 1 + i * 9);
    }
    cr_assert_eq(nbuf_refcnt(b), 1, "copies hold no reference");
    cr_assert_lt(nbuf_composite_count(c), 30, "packed into tail components");
    /* Later writes to the buffer do not show. */
    memset(nbuf_reserve(b, 0) - nbuf_writer_index(b), 0xee, 4096);
    assert_same(c, &f);
    /* Nor does releasing it, and memory reused by a new buffer. */
    cr_assert_eq(nbuf_release(b), 1, "the caller's reference was the last");
    struct nbuf *x = nbuf_alloc(p, 4096);
    memset(nbuf_reserve(x, 4096), 0x55, 4096);
    assert_same(c, &f);
    nbuf_release(x);
    nbuf_composite_free(c);
    free(f.d);
    t_pool_done(p);
}

/* The threshold, +-1: NBUF_COMPOSITE_COPY_MAX bytes are copied (no
 * reference, no iovec into the buffer), one more byte is referenced (a
 * reference and a component of its own, pointing into the buffer). */
Test(composite, copy_threshold_boundary)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = mkbuf(p, 4 * NBUF_COMPOSITE_COPY_MAX, 41);
    const size_t lens[] = {NBUF_COMPOSITE_COPY_MAX - 1, NBUF_COMPOSITE_COPY_MAX,
                           NBUF_COMPOSITE_COPY_MAX + 1};
    for (unsigned k = 0; k < 3; k++) {
        bool copied = lens[k] <= NBUF_COMPOSITE_COPY_MAX;
        struct nbuf_composite *c = nbuf_composite_new(p);
        struct flat f = {0};
        cr_assert_eq(nbuf_composite_add_copy(c, "hdr", 3), 0);
        flat_push(&f, "hdr", 3);
        cr_assert_eq(nbuf_composite_add_slice(c, b, 7, lens[k]), 0);
        flat_push(&f, nbuf_data(b) + 7, lens[k]);
        assert_same(c, &f);
        cr_assert_eq(nbuf_refcnt(b), copied ? 1 : 2, "len %zu", lens[k]);
        struct iovec iov[4];
        int n = nbuf_composite_iov(c, iov, 4, SIZE_MAX);
        cr_assert_gt(n, 0);
        const uint8_t *lo = nbuf_data(b), *hi = lo + nbuf_capacity(b);
        unsigned inside = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *q = iov[i].iov_base;
            if (q >= lo && q < hi) {
                cr_assert_eq(q, lo + 7, "referenced in place");
                cr_assert_eq(iov[i].iov_len, lens[k]);
                inside++;
            }
        }
        cr_assert_eq(inside, copied ? 0 : 1, "len %zu", lens[k]);
        nbuf_composite_free(c);
        cr_assert_eq(nbuf_refcnt(b), 1);
        free(f.d);
    }
    nbuf_release(b);
    t_pool_done(p);
}

/* Merging comes first: a small slice that continues a referenced one of
 * the same buffer extends it (no copy); one that does not is copied. */
Test(composite, small_slice_extends_adjacent_reference)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 8000, 51);
    struct flat f = {0};
    cr_assert_eq(nbuf_composite_add_slice(c, b, 0, 2000), 0);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 2000, 10), 0);
    flat_push(&f, nbuf_data(b), 2010);
    cr_assert_eq(nbuf_composite_count(c), 1, "extended");
    cr_assert_eq(nbuf_refcnt(b), 2);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 5000, 10), 0);
    flat_push(&f, nbuf_data(b) + 5000, 10);
    cr_assert_eq(nbuf_composite_count(c), 2, "copied into the tail");
    cr_assert_eq(nbuf_refcnt(b), 2);
    assert_same(c, &f);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    free(f.d);
    t_pool_done(p);
}

/* Once nothing references the tail's bytes the next copies reuse them from
 * the start; a view of copied bytes keeps them from being overwritten. */
Test(composite, idle_tail_packed_again_views_respected)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 4096, 61);
    struct iovec iov[2];
    cr_assert_eq(nbuf_composite_add_slice(c, b, 100, 40), 0);
    cr_assert_eq(nbuf_composite_iov(c, iov, 2, SIZE_MAX), 1);
    void *first = iov[0].iov_base;
    cr_assert_eq(nbuf_composite_skip(c, 40), 0);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 300, 40), 0);
    cr_assert_eq(nbuf_composite_iov(c, iov, 2, SIZE_MAX), 1);
    cr_assert_eq(iov[0].iov_base, first, "the idle tail is packed from its start again");
    /* A view of those 40 copied bytes: the next copies must go elsewhere. */
    struct nbuf *v = nbuf_composite_read_slice(c, 40);
    cr_assert_not_null(v);
    cr_assert_eq((void *)nbuf_data(v), first, "a zero-copy view of the tail");
    for (size_t i = 0; i < 50; i++)
        cr_assert_eq(nbuf_composite_add_slice(c, b, 1000 + i * 7, 30), 0);
    cr_assert_eq(memcmp(nbuf_data(v), nbuf_data(b) + 300, 40), 0, "view bytes intact");
    struct flat f = {0};
    for (size_t i = 0; i < 50; i++)
        flat_push(&f, nbuf_data(b) + 1000 + i * 7, 30);
    assert_same(c, &f);
    nbuf_release(v);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    free(f.d);
    t_pool_done(p);
}

/* A composite emptied after many copies gives its grown tail back to the
 * pool; one that only packed headers keeps its small tail. */
Test(composite, drained_composite_returns_big_tail)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_composite *c = nbuf_composite_new(p);
    struct nbuf *b = mkbuf(p, 65536, 71);
    uint64_t live = t_stats(p).live_buffers;
    for (size_t i = 0; i < 2000; i++)
        cr_assert_eq(nbuf_composite_add_slice(c, b, i * 31, 64), 0);
    cr_assert_eq(nbuf_refcnt(b), 1);
    cr_assert_gt(t_stats(p).live_buffers, live, "the copies are in tails");
    cr_assert_eq(nbuf_composite_skip(c, nbuf_composite_readable(c)), 0);
    cr_assert_null(c->tail, "the grown tail went back to the pool");
    cr_assert_eq(t_stats(p).live_buffers, live);
    cr_assert(nbuf_composite_check_(c));
    /* Headers alone: the small tail stays for the next ones. */
    struct nbuf_composite *h = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_copy(h, "0123456789", 10), 0);
    cr_assert_eq(nbuf_composite_skip(h, 10), 0);
    cr_assert_not_null(h->tail);
    nbuf_composite_free(h);
    nbuf_composite_free(c);
    nbuf_release(b);
    t_pool_done(p);
}

/* No pool memory for a tail: the small slice is referenced instead, and
 * add_slice still succeeds. */
Test(composite, small_slice_without_memory_is_referenced)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    t_capture_reports();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = 4096;
    cfg.chunk_size = 32u << 10;
    cfg.arenas = 1;
    cfg.memory_limit = 32u << 10;
    cfg.flags |= NBUF_POOL_NO_CACHE;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf *b = mkbuf(p, 1000, 81);
    /* Fill what the limit allows. */
    struct nbuf *fill[4096];
    unsigned nfill = 0;
    static const size_t sizes[] = {4096, 256, 16};
    for (unsigned k = 0; k < 3; k++) {
        struct nbuf *x;
        while (nfill < 4096 && (x = nbuf_alloc(p, sizes[k])))
            fill[nfill++] = x;
    }
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 10, 20), 0);
    cr_assert_eq(nbuf_refcnt(b), 2, "referenced: no tail memory");
    struct flat f = {0};
    flat_push(&f, nbuf_data(b) + 10, 20);
    assert_same(c, &f);
    /* With memory back, small slices are copied again. */
    for (unsigned i = 0; i < nfill; i++)
        nbuf_release(fill[i]);
    cr_assert_eq(nbuf_composite_add_slice(c, b, 500, 20), 0);
    flat_push(&f, nbuf_data(b) + 500, 20);
    cr_assert_eq(nbuf_refcnt(b), 2, "copied: no second reference");
    assert_same(c, &f);
    nbuf_composite_free(c);
    cr_assert_eq(nbuf_refcnt(b), 1);
    nbuf_release(b);
    free(f.d);
    nbuf_report_hook_ = NULL;
    t_pool_done(p);
}
