/* SPDX-License-Identifier: MIT */
/*
 * fuzz_composite: every composite operation of docs/api.md, Composites (add,
 * add_slice, add_iov, prepend, add_copy, add_file, append, split, read, skip,
 * get, typed reads, read_slice, flatten, find, index_of, discard_read, iov,
 * writev/writev_max into a non-blocking pipe read back, read_fd) across three
 * composites, each compared with a flat byte array after every step. Source
 * buffers are pooled, wrapped (their free callbacks must each run exactly
 * once) and views; backing faults may be armed (all or nothing on failure).
 */
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <unistd.h>

#include "composite_int.h"
#include "io_int.h"
#include "fuzz_common.h"

enum { NC = 3, NSRC = 10, NWRAP = 32, MAX_OPS = 1500, FILE_LEN = 20000 };
/* A composite's model stops growing here (each step stays cheap). */
#define MAX_TOTAL ((size_t)96 << 10)

struct flat {
    uint8_t *d;
    uint8_t *file; /* 1: the byte comes from a file region */
    size_t len, cap;
};

struct src {
    struct nbuf *b; /* NULL: free */
    uint8_t *bytes; /* model of [0, writer) */
    size_t reader, writer;
};

struct wraprec {
    uint8_t *data;
    size_t len;
    unsigned freed;
};

struct model {
    struct nbuf_pool *p;
    struct nbuf_composite *c[NC];
    struct flat f[NC];
    struct src s[NSRC];
    struct wraprec w[NWRAP];
    unsigned nwrap;
    uint64_t seed;
    bool faults;
};

static int file_fd = -1;
static uint8_t file_bytes[FILE_LEN];
/* Flush target (a small pipe, so writes are partial) and read_fd source. */
static int out_rd = -1, out_wr = -1, in_rd = -1, in_wr = -1;

static void
setup_fds(void)
{
    if (file_fd >= 0)
        return;
    fz_pat_fill(file_bytes, FILE_LEN, 99, 0);
    file_fd = memfd_create("fuzz_composite", MFD_CLOEXEC);
    FZ_CHECK(file_fd >= 0);
    FZ_CHECK(write(file_fd, file_bytes, FILE_LEN) == FILE_LEN);
    int fds[2];
    FZ_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    out_rd = fds[0];
    out_wr = fds[1];
    FZ_CHECK(fcntl(out_wr, F_SETPIPE_SZ, 4096) >= 4096);
    FZ_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    in_rd = fds[0];
    in_wr = fds[1];
}

static void
drain(int fd)
{
    uint8_t tmp[4096];
    while (read(fd, tmp, sizeof(tmp)) > 0)
        ;
}

static void
wrap_free(void *data, void *ctx)
{
    struct wraprec *w = ctx;
    FZ_CHECK(w->data == data);
    FZ_CHECK(w->freed == 0);
    w->freed++;
    /* Freed for real: a later read through a stale component is an ASan
     * report. */
    free(data);
    w->data = NULL;
}

/* ---- the flat model ---- */

static void
flat_reserve(struct flat *f, size_t more)
{
    if (f->d && f->len + more <= f->cap)
        return;
    size_t cap = f->cap ? f->cap : 256;
    while (cap < f->len + more)
        cap *= 2;
    f->d = realloc(f->d, cap);
    f->file = realloc(f->file, cap);
    FZ_CHECK(f->d && f->file);
    f->cap = cap;
}

static void
flat_insert(struct flat *f, size_t at, const uint8_t *src, size_t n, bool file)
{
    if (!n)
        return;
    flat_reserve(f, n);
    memmove(f->d + at + n, f->d + at, f->len - at);
    memmove(f->file + at + n, f->file + at, f->len - at);
    memcpy(f->d + at, src, n);
    memset(f->file + at, file, n);
    f->len += n;
}

static void
flat_append(struct flat *f, const uint8_t *src, size_t n, bool file)
{
    flat_insert(f, f->len, src, n, file);
}

static void
flat_consume(struct flat *f, size_t n)
{
    FZ_CHECK(n <= f->len);
    if (!n)
        return;
    memmove(f->d, f->d + n, f->len - n);
    memmove(f->file, f->file + n, f->len - n);
    f->len -= n;
}

/* Move the first @n bytes of @a to the end of @b. */
static void
flat_move(struct flat *a, struct flat *b, size_t n)
{
    if (!n)
        return;
    flat_reserve(b, n);
    memcpy(b->d + b->len, a->d, n);
    memcpy(b->file + b->len, a->file, n);
    b->len += n;
    flat_consume(a, n);
}

static void
check_comp(struct model *m, int k)
{
    static uint8_t tmp[MAX_TOTAL + 65536];
    struct nbuf_composite *c = m->c[k];
    struct flat *f = &m->f[k];
    FZ_CHECK(nbuf_composite_check_(c));
    FZ_CHECK(nbuf_composite_readable(c) == f->len);
    FZ_CHECK((nbuf_composite_count(c) == 0) == (f->len == 0));
    FZ_CHECK(f->len <= sizeof(tmp));
    FZ_CHECK(nbuf_composite_get(c, 0, tmp, f->len) == 0);
    FZ_CHECK(f->len == 0 || memcmp(tmp, f->d, f->len) == 0);
}

static void
check_all(struct model *m)
{
    for (int k = 0; k < NC; k++)
        check_comp(m, k);
    FZ_CHECK(nbuf_pool_check_(m->p));
    for (unsigned i = 0; i < m->nwrap; i++)
        FZ_CHECK(m->w[i].freed <= 1);
}

/* A failure the model allows: only an armed backing fault makes memory
 * run out. */
static void
check_enomem(struct model *m, long err)
{
    FZ_CHECK(err == -ENOMEM && m->faults);
}

/* ---- sources ---- */

static int
free_src(struct model *m)
{
    for (int i = 0; i < NSRC; i++)
        if (!m->s[i].b)
            return i;
    return -1;
}

static int
pick_src(struct model *m, struct fz *f)
{
    unsigned start = fz_u8(f) % NSRC;
    for (unsigned k = 0; k < NSRC; k++) {
        unsigned i = (start + k) % NSRC;
        if (m->s[i].b)
            return (int)i;
    }
    return -1;
}

/* Record @b (readable bytes known from its memory) as source @i. */
static void
src_adopt(struct model *m, int i, struct nbuf *b)
{
    struct src *s = &m->s[i];
    s->b = b;
    s->reader = nbuf_reader_index(b);
    s->writer = nbuf_writer_index(b);
    s->bytes = malloc(s->writer ? s->writer : 1);
    FZ_CHECK(s->bytes != NULL);
    if (s->writer)
        memcpy(s->bytes, b->mem, s->writer);
}

static void
src_drop(struct model *m, int i)
{
    struct src *s = &m->s[i];
    FZ_CHECK(nbuf_release(s->b) >= 0);
    free(s->bytes);
    *s = (struct src){0};
}

/* The caller's reference went into a composite: forget it. */
static void
src_forget(struct model *m, int i)
{
    free(m->s[i].bytes);
    m->s[i] = (struct src){0};
}

static void
op_new_src(struct model *m, struct fz *f)
{
    int i = free_src(m);
    uint8_t k = fz_u8(f);
    size_t len = (k & 0x80) ? fz_u32(f) % 70000 : fz_u16(f) % 3000;
    size_t skip = fz_u16(f);
    if (i < 0)
        return;
    struct nbuf *b;
    if ((k & 3) == 3 && m->nwrap < NWRAP) {
        struct wraprec *w = &m->w[m->nwrap];
        len %= 4000;
        w->data = malloc(len ? len : 1);
        FZ_CHECK(w->data != NULL);
        w->len = len;
        fz_pat_fill(w->data, len, m->seed++, 0);
        b = nbuf_wrap(w->data, len, wrap_free, w);
        FZ_CHECK(b != NULL);
        m->nwrap++;
    } else if ((k & 3) == 2) {
        /* A view of another source. */
        int j = pick_src(m, f);
        if (j < 0)
            return;
        size_t off = len % (m->s[j].writer + 1);
        size_t n = skip % (m->s[j].writer - off + 1);
        b = nbuf_slice(m->s[j].b, off, n);
        FZ_CHECK(b != NULL);
        src_adopt(m, i, b);
        return;
    } else {
        errno = 0;
        b = nbuf_alloc(m->p, len);
        if (!b) {
            check_enomem(m, -errno);
            return;
        }
        uint8_t *p = nbuf_reserve(b, len);
        FZ_CHECK(p != NULL);
        fz_pat_fill(p, len, m->seed++, 0);
        FZ_CHECK(nbuf_commit(b, len) == 0);
    }
    FZ_CHECK(nbuf_skip(b, len ? skip % (len + 1) : 0) == 0);
    src_adopt(m, i, b);
}

/* Keep a buffer a composite returned as a source, or release it. */
static void
keep_or_release(struct model *m, struct nbuf *b, bool keep)
{
    int i = free_src(m);
    if (keep && i >= 0)
        src_adopt(m, i, b);
    else
        FZ_CHECK(nbuf_release(b) >= 0);
}

/* ---- adding ---- */

static void
op_add(struct model *m, struct fz *f, int k)
{
    struct nbuf_composite *c = m->c[k];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    int i = pick_src(m, f);
    size_t a = fz_u32(f), b = fz_u32(f);
    if (i < 0)
        return;
    struct src *s = &m->s[i];
    size_t readable = s->writer - s->reader;
    int ret;
    switch (how % 4) {
    case 0:
    case 1: {
        /* add or prepend; give our reference away, or a second one. */
        bool front = how % 4 == 1;
        bool give = how & 4;
        if (fl->len + readable > MAX_TOTAL)
            return;
        if (!give)
            FZ_CHECK(nbuf_retain(s->b) == s->b);
        ret = front ? nbuf_composite_prepend(c, s->b) : nbuf_composite_add(c, s->b);
        FZ_CHECK(ret == 0);
        flat_insert(fl, front ? 0 : fl->len, s->bytes + s->reader, readable, false);
        if (give)
            src_forget(m, i);
        break;
    }
    case 2: {
        /* add_slice, sometimes out of range. */
        size_t off = a % (s->writer + 2), len = b % (s->writer + 2);
        if (fl->len + len > MAX_TOTAL)
            return;
        ret = nbuf_composite_add_slice(c, s->b, off, len);
        if (off > s->writer || len > s->writer - off) {
            FZ_CHECK(ret == -EINVAL);
            return;
        }
        FZ_CHECK(ret == 0);
        flat_append(fl, s->bytes + off, len, false);
        break;
    }
    default: {
        /* add_iov: pieces of the source, one sometimes out of range. */
        struct iovec iov[8];
        int n = (int)(a % 9);
        bool bad = false;
        size_t total = 0;
        uint8_t *base = s->b->mem;
        for (int j = 0; j < n; j++) {
            size_t off = fz_u16(f) % (s->writer + 1);
            size_t len = fz_u16(f) % (s->writer - off + 1);
            if (len > 300 && (b & 1))
                len %= 300;
            if ((fz_u8(f) & 31) == 31) {
                len = s->writer - off + 1;
                bad = true;
            }
            iov[j].iov_base = base + off;
            iov[j].iov_len = len;
            total += len;
        }
        if (fl->len + total > MAX_TOTAL)
            return;
        ret = nbuf_composite_add_iov(c, s->b, iov, n);
        if (bad && ret == -ENOMEM) {
            /* An injected allocation failure on an earlier piece can come
             * first: all or nothing either way. */
            check_enomem(m, ret);
            return;
        }
        if (bad) {
            FZ_CHECK(ret == -EINVAL);
            return;
        }
        if (ret == -ENOMEM) {
            check_enomem(m, ret);
            return;
        }
        FZ_CHECK(ret == 0);
        for (int j = 0; j < n; j++)
            flat_append(fl, s->bytes + ((uint8_t *)iov[j].iov_base - base), iov[j].iov_len, false);
        break;
    }
    }
}

static void
op_add_copy(struct model *m, struct fz *f, int k)
{
    uint8_t tmp[600];
    size_t n = fz_u16(f) % 600;
    if (n > 64 && (n & 1))
        n = 1 + n % 24;
    fz_bytes(f, tmp, n);
    if (m->f[k].len + n > MAX_TOTAL)
        return;
    int ret = nbuf_composite_add_copy(m->c[k], tmp, n);
    if (ret) {
        check_enomem(m, ret);
        return;
    }
    flat_append(&m->f[k], tmp, n, false);
}

static void
op_add_file(struct model *m, struct fz *f, int k)
{
    size_t off = fz_u16(f) % (FILE_LEN + 2), len = fz_u16(f) % (FILE_LEN + 2);
    if (m->f[k].len + len > MAX_TOTAL)
        return;
    int ret = nbuf_composite_add_file(m->c[k], file_fd, (off_t)off, len);
    if (off + len > FILE_LEN) {
        FZ_CHECK(ret == -EINVAL);
        return;
    }
    FZ_CHECK(ret == 0);
    flat_append(&m->f[k], file_bytes + off, len, true);
}

/* ---- moving between composites ---- */

static void
op_append_split(struct model *m, struct fz *f, int k)
{
    uint8_t how = fz_u8(f);
    int j = (int)(how >> 1) % NC;
    size_t n = fz_u32(f);
    int ret;
    if (how & 1) {
        if (j != k && m->f[j].len + m->f[k].len > MAX_TOTAL)
            return;
        ret = nbuf_composite_append(m->c[j], m->c[k]);
        if (j == k) {
            FZ_CHECK(ret == -EINVAL);
            return;
        }
        FZ_CHECK(ret == 0);
        flat_move(&m->f[k], &m->f[j], m->f[k].len);
        return;
    }
    n %= m->f[k].len + 2;
    if (j != k && n <= m->f[k].len && m->f[j].len + n > MAX_TOTAL)
        return;
    ret = nbuf_composite_split(m->c[k], n, m->c[j]);
    if (j == k) {
        FZ_CHECK(ret == -EINVAL);
    } else if (n > m->f[k].len) {
        FZ_CHECK(ret == -ENODATA);
    } else {
        FZ_CHECK(ret == 0);
        flat_move(&m->f[k], &m->f[j], n);
    }
}

/* ---- reading ---- */

static int
typed_take(struct nbuf_composite *c, bool get, size_t i, unsigned w, bool le, uint64_t *out)
{
    int ret;
    uint8_t v8 = 0;
    uint16_t v16 = 0;
    uint32_t v32 = 0;
    uint64_t v64 = 0;
    switch (w) {
    case 1: ret = get ? nbuf_composite_get_u8(c, i, &v8) : nbuf_composite_read_u8(c, &v8); break;
    case 2:
        ret =
            get ? (le ? nbuf_composite_get_u16_le(c, i, &v16) : nbuf_composite_get_u16(c, i, &v16))
                : (le ? nbuf_composite_read_u16_le(c, &v16) : nbuf_composite_read_u16(c, &v16));
        break;
    case 4:
        ret =
            get ? (le ? nbuf_composite_get_u32_le(c, i, &v32) : nbuf_composite_get_u32(c, i, &v32))
                : (le ? nbuf_composite_read_u32_le(c, &v32) : nbuf_composite_read_u32(c, &v32));
        break;
    default:
        ret =
            get ? (le ? nbuf_composite_get_u64_le(c, i, &v64) : nbuf_composite_get_u64(c, i, &v64))
                : (le ? nbuf_composite_read_u64_le(c, &v64) : nbuf_composite_read_u64(c, &v64));
        break;
    }
    *out = w == 1 ? v8 : w == 2 ? v16 : w == 4 ? v32 : v64;
    return ret;
}

static void
op_read(struct model *m, struct fz *f, int k)
{
    static uint8_t tmp[MAX_TOTAL + 16];
    struct nbuf_composite *c = m->c[k];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    size_t n = fz_u32(f) % (fl->len + 3);
    size_t idx = fz_u32(f) % (fl->len + 3);
    int ret;
    switch (how % 5) {
    case 0: /* read */
        ret = nbuf_composite_read(c, tmp, n);
        if (n > fl->len) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(n == 0 || memcmp(tmp, fl->d, n) == 0);
            flat_consume(fl, n);
        }
        break;
    case 1: /* skip */
        ret = nbuf_composite_skip(c, n);
        if (n > fl->len) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            flat_consume(fl, n);
        }
        break;
    case 2: /* get */
        ret = nbuf_composite_get(c, idx, tmp, n);
        if (idx > fl->len || n > fl->len - idx) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(n == 0 || memcmp(tmp, fl->d + idx, n) == 0);
        }
        break;
    default: { /* typed read or get */
        unsigned w = 1u << ((how >> 3) & 3);
        bool le = (how & 0x20) && w > 1;
        bool get = how % 5 == 4;
        uint64_t v, want = 0;
        ret = typed_take(c, get, idx, w, le, &v);
        size_t at = get ? idx : 0;
        if (at > fl->len || w > fl->len - at) {
            FZ_CHECK(ret == -ENODATA);
            break;
        }
        FZ_CHECK(ret == 0);
        for (unsigned i = 0; i < w; i++)
            want |= (uint64_t)fl->d[at + (le ? i : w - 1 - i)] << (8 * i);
        FZ_CHECK(v == want);
        if (!get)
            flat_consume(fl, w);
        break;
    }
    }
}

static void
op_frame(struct model *m, struct fz *f, int k)
{
    struct nbuf_composite *c = m->c[k];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    size_t n = fz_u32(f) % (fl->len + 3);
    struct nbuf *b;
    errno = 0;
    if (how & 1) {
        b = nbuf_composite_read_slice(c, n);
        if (n > fl->len) {
            FZ_CHECK(b == NULL && errno == ENODATA);
            return;
        }
    } else {
        b = nbuf_composite_flatten(c);
        n = fl->len;
    }
    if (!b) {
        check_enomem(m, -errno);
        return;
    }
    FZ_CHECK(nbuf_readable(b) == n);
    FZ_CHECK(n == 0 || memcmp(nbuf_data(b), fl->d, n) == 0);
    if (how & 1)
        flat_consume(fl, n);
    keep_or_release(m, b, how & 2);
}

static void
op_search(struct model *m, struct fz *f, int k)
{
    struct nbuf_composite *c = m->c[k];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    size_t from = fz_u32(f) % (fl->len + 2);
    uint8_t needle[24];
    size_t n = fz_u8(f) % sizeof(needle);
    if ((how & 2) && fl->len) {
        /* A needle taken from the bytes, so that it is found (maybe
         * across components). */
        size_t at = fz_u32(f) % fl->len;
        if (n > fl->len - at)
            n = fl->len - at;
        memcpy(needle, fl->d + at, n);
    } else {
        fz_bytes(f, needle, n);
    }
    ssize_t got, want = -ENOENT;
    if (how & 1) {
        got = nbuf_composite_find(c, from, needle, n);
        if (from > fl->len) {
            want = -EINVAL;
        } else if (n == 0) {
            want = (ssize_t)from;
        } else {
            for (size_t i = from; i + n <= fl->len; i++) {
                if (memcmp(fl->d + i, needle, n) == 0) {
                    want = (ssize_t)i;
                    break;
                }
            }
        }
    } else {
        uint8_t byte = n ? needle[0] : fz_u8(f);
        got = nbuf_composite_index_of(c, from, byte);
        if (from > fl->len) {
            want = -EINVAL;
        } else {
            const uint8_t *hit = memchr(fl->d + from, byte, fl->len - from);
            if (hit)
                want = hit - fl->d;
        }
    }
    FZ_CHECK(got == want);
}

static void
op_iov(struct model *m, struct fz *f, int k)
{
    struct iovec iov[16];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    int max = (how & 0x80) ? -1 : (int)(how % 17);
    size_t max_bytes = (how & 0x40) ? SIZE_MAX : fz_u32(f) % (fl->len + 2);
    int n = nbuf_composite_iov(m->c[k], iov, max, max_bytes);
    if (max < 0) {
        FZ_CHECK(n == -EINVAL);
        return;
    }
    FZ_CHECK(n >= 0 && n <= max);
    size_t lead = 0; /* memory bytes before the first file byte */
    while (lead < fl->len && !fl->file[lead])
        lead++;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        FZ_CHECK(iov[i].iov_len > 0);
        FZ_CHECK(off + iov[i].iov_len <= lead);
        FZ_CHECK(memcmp(iov[i].iov_base, fl->d + off, iov[i].iov_len) == 0);
        off += iov[i].iov_len;
    }
    FZ_CHECK(off <= max_bytes);
    if (n < max)
        FZ_CHECK(off == (lead < max_bytes ? lead : max_bytes));
}

static void
op_flush(struct model *m, struct fz *f, int k)
{
    static uint8_t tmp[MAX_TOTAL + 16];
    struct flat *fl = &m->f[k];
    uint8_t how = fz_u8(f);
    size_t max = fz_u32(f) % (fl->len + 2);
    ssize_t r = (how & 1) ? nbuf_composite_writev_max(m->c[k], out_wr, max)
                          : nbuf_composite_writev(m->c[k], out_wr);
    if (fl->len == 0 || ((how & 1) && max == 0)) {
        FZ_CHECK(r == 0);
        return;
    }
    if (r == -ENOMEM) {
        /* The staging copy failed: nothing written, nothing consumed. */
        check_enomem(m, r);
        FZ_CHECK(read(out_rd, tmp, 1) < 0 && errno == EAGAIN);
        return;
    }
    FZ_CHECK(r > 0 && (size_t)r <= fl->len);
    if (how & 1)
        FZ_CHECK((size_t)r <= max);
    size_t got = 0;
    while (got < (size_t)r) {
        ssize_t n = read(out_rd, tmp + got, (size_t)r - got);
        FZ_CHECK(n > 0);
        got += (size_t)n;
    }
    FZ_CHECK(read(out_rd, tmp + got, 1) < 0 && errno == EAGAIN);
    FZ_CHECK(memcmp(tmp, fl->d, got) == 0);
    flat_consume(fl, got);
}

static void
op_read_fd(struct model *m, struct fz *f, int k)
{
    uint8_t tmp[3000];
    size_t avail = fz_u16(f) % sizeof(tmp);
    size_t max = fz_u16(f) % 4000;
    if (m->f[k].len + avail > MAX_TOTAL)
        return;
    fz_pat_fill(tmp, avail, m->seed++, 0);
    if (avail)
        FZ_CHECK(write(in_wr, tmp, avail) == (ssize_t)avail);
    ssize_t r = nbuf_composite_read_fd(m->c[k], in_rd, max);
    if (r == -ENOMEM) {
        check_enomem(m, r);
    } else if (avail == 0) {
        FZ_CHECK(r == -EAGAIN);
    } else {
        FZ_CHECK(r > 0 && (size_t)r <= avail && (max == 0 || (size_t)r <= max));
        flat_append(&m->f[k], tmp, (size_t)r, false);
    }
    drain(in_rd);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    setup_fds();
    struct model *m = calloc(1, sizeof(*m));
    FZ_CHECK(m != NULL);
    m->p = fz_pool_new(&f, 1u << 20, 0);
    m->seed = 1 + fz_u8(&f);
    uint8_t coalesce = fz_u8(&f);
    size_t saved_coalesce = nbuf_flush_coalesce_max_;
    if (coalesce & 1)
        nbuf_flush_coalesce_max_ = coalesce >> 1;
    /* The add-time copy threshold too (0: every slice referenced), taken from
     * the seed so that the corpus keeps its byte layout. */
    size_t saved_copy = nbuf_composite_slice_copy_max_;
    if (m->seed & 2)
        nbuf_composite_slice_copy_max_ = ((size_t)m->seed * 37) % 2048;
    for (int k = 0; k < NC; k++) {
        flat_reserve(&m->f[k], 0); /* never a NULL model array */
        m->c[k] = nbuf_composite_new(m->p);
        FZ_CHECK(m->c[k] != NULL);
    }
    for (unsigned n = 0; n < MAX_OPS && fz_more(&f); n++) {
        uint8_t op = fz_u8(&f);
        int k = (op >> 5) % NC;
        switch (op % 16) {
        case 0:
        case 1: op_new_src(m, &f); break;
        case 2: {
            int i = pick_src(m, &f);
            if (i >= 0)
                src_drop(m, i);
            break;
        }
        case 3:
        case 4: op_add(m, &f, k); break;
        case 5: op_add_copy(m, &f, k); break;
        case 6: op_add_file(m, &f, k); break;
        case 7: op_append_split(m, &f, k); break;
        case 8:
        case 9: op_read(m, &f, k); break;
        case 10: op_frame(m, &f, k); break;
        case 11: op_search(m, &f, k); break;
        case 12: op_iov(m, &f, k); break;
        case 13: op_flush(m, &f, k); break;
        case 14: op_read_fd(m, &f, k); break;
        default: {
            uint8_t x = fz_u8(&f);
            if (x & 1) {
                FZ_CHECK(nbuf_composite_discard_read(m->c[k]) == 0);
            } else if (x & 2) {
                FZ_CHECK(nbuf_pool_trim(m->p) == 0);
            } else {
                long after = (x >> 2) % 6;
                nbuf_backing_fail_after_(m->p, after);
                m->faults = m->faults || after;
            }
            break;
        }
        }
        check_all(m);
    }
    nbuf_backing_fail_after_(m->p, 0);
    nbuf_flush_coalesce_max_ = saved_coalesce;
    nbuf_composite_slice_copy_max_ = saved_copy;
    for (int k = 0; k < NC; k++) {
        nbuf_composite_free(m->c[k]);
        free(m->f[k].d);
        free(m->f[k].file);
    }
    for (int i = 0; i < NSRC; i++)
        if (m->s[i].b)
            src_drop(m, i);
    for (unsigned i = 0; i < m->nwrap; i++)
        FZ_CHECK(m->w[i].freed == 1);
    struct nbuf_pool_stats st;
    FZ_CHECK(nbuf_pool_stats(m->p, &st) == 0);
    FZ_CHECK(st.live_buffers == 0 && st.views == 0);
    FZ_CHECK(nbuf_pool_free(m->p) == 0);
    free(m);
    return 0;
}
