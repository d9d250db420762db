/* SPDX-License-Identifier: MIT */
/*
 * fuzz_buf: typed reads and writes (every width, big- and little-endian),
 * get/set, cursors, skip, discard_read, reserve/commit, growth against
 * max_capacity, views, copies, wrapped and mapped memory, fd IO, compared
 * with a flat byte-array model of each buffer's whole capacity after every
 * operation. Views share their root's model bytes, so writes through one
 * show through the other exactly as in the library.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"

enum { NE = 8, MAX_BUFFER = 256u << 10, MAX_OPS = 1500, FILE_LEN = 3 * 4096 + 123 };

/* The bytes of one root buffer's memory (shared by its views). */
struct mroot {
    uint8_t *mem; /* [0, cap) mirrors the buffer's memory */
    size_t cap;
    unsigned holders; /* references on the root buffer: ours + one per view */
    bool viewed;      /* the library's nviews mark */
    bool growable;    /* pooled memory (not wrapped or mapped) */
    bool readonly;
    bool dirty; /* touched since the last full comparison */
    int wrap;   /* wrap record, or -1 */
};

struct ment {
    struct nbuf *b; /* NULL: free slot */
    int root;
    bool view;
    unsigned refs; /* our references on b */
    size_t off;    /* b's byte 0 is the root's byte off */
    size_t reader, writer, cap, maxcap;
};

struct wraprec {
    uint8_t *data;
    unsigned freed; /* free_fn calls */
    bool expected;  /* the model says the last reference went */
};

struct model {
    struct nbuf_pool *p;
    struct ment e[NE];
    struct mroot r[NE];
    struct wraprec w[NE * 4];
    unsigned nwrap;
    uint64_t seed;
};

static int mapped_fd = -1;
static uint8_t mapped_bytes[FILE_LEN];
static int pipe_rd = -1, pipe_wr = -1;

static void
setup_fds(void)
{
    if (mapped_fd >= 0)
        return;
    fz_pat_fill(mapped_bytes, FILE_LEN, 77, 0);
    mapped_fd = memfd_create("fuzz_buf", MFD_CLOEXEC);
    FZ_CHECK(mapped_fd >= 0);
    FZ_CHECK(write(mapped_fd, mapped_bytes, FILE_LEN) == FILE_LEN);
    int fds[2];
    FZ_CHECK(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    pipe_rd = fds[0];
    pipe_wr = fds[1];
}

static void
drain_pipe(void)
{
    uint8_t tmp[4096];
    while (read(pipe_rd, tmp, sizeof(tmp)) > 0)
        ;
}

static void
wrap_free(void *data, void *ctx)
{
    struct wraprec *w = ctx;
    FZ_CHECK(w->data == data);
    FZ_CHECK(w->expected);
    FZ_CHECK(w->freed == 0);
    w->freed++;
}

/* The model's bytes of entry @e: [0, e->cap). */
static uint8_t *
ment_mem(struct model *m, const struct ment *e)
{
    return m->r[e->root].mem + e->off;
}

static void
check_ent(struct model *m, const struct ment *e, bool bytes)
{
    const struct nbuf *b = e->b;
    FZ_CHECK(nbuf_reader_index(b) == e->reader);
    FZ_CHECK(nbuf_writer_index(b) == e->writer);
    FZ_CHECK(nbuf_capacity(b) == e->cap);
    FZ_CHECK(nbuf_max_capacity(b) == e->maxcap);
    FZ_CHECK(nbuf_readable(b) == e->writer - e->reader);
    FZ_CHECK(nbuf_writable(b) == e->cap - e->writer);
    FZ_CHECK(nbuf_refcnt(b) == (e->view ? e->refs : m->r[e->root].holders));
    FZ_CHECK(nbuf_buf_check_(b));
    /* The whole capacity, through the header (the model knows every byte). */
    if (bytes)
        FZ_CHECK(e->cap == 0 || memcmp(b->mem, ment_mem(m, e), e->cap) == 0);
    const uint8_t *d = nbuf_data(b);
    FZ_CHECK(d == b->mem + e->reader);
}

/* Cursors of every entry; bytes of the entries on roots an operation
 * touched (all of them when @all). */
static void
check_all(struct model *m, bool all)
{
    for (int i = 0; i < NE; i++)
        if (m->e[i].b)
            check_ent(m, &m->e[i], all || m->r[m->e[i].root].dirty);
    for (int i = 0; i < NE; i++)
        m->r[i].dirty = false;
    FZ_CHECK(nbuf_pool_check_(m->p));
}

static int
free_slot(struct model *m)
{
    for (int i = 0; i < NE; i++)
        if (!m->e[i].b)
            return i;
    return -1;
}

static int
free_root(struct model *m)
{
    for (int i = 0; i < NE; i++)
        if (m->r[i].holders == 0)
            return i;
    return -1;
}

static int
pick(struct model *m, struct fz *f)
{
    unsigned start = fz_u8(f) % NE;
    for (unsigned k = 0; k < NE; k++) {
        unsigned i = (start + k) % NE;
        if (m->e[i].b)
            return (int)i;
    }
    return -1;
}

/* After an operation on root entry @e: if its memory grew (moved), the
 * bytes past the writer are unknown: overwrite them with a pattern through
 * nbuf_set so the model knows every byte again. */
static void
sync_capacity(struct model *m, struct ment *e)
{
    size_t cap = nbuf_capacity(e->b);
    if (cap == e->cap)
        return;
    FZ_CHECK(!e->view && m->r[e->root].growable);
    FZ_CHECK(cap > e->cap && cap <= e->maxcap);
    struct mroot *r = &m->r[e->root];
    uint8_t *nm = realloc(r->mem, cap ? cap : 1);
    FZ_CHECK(nm != NULL);
    r->mem = nm;
    r->cap = cap;
    e->cap = cap;
    size_t n = cap - e->writer;
    fz_pat_fill(nm + e->writer, n, m->seed++, 0);
    FZ_CHECK(nbuf_set(e->b, e->writer, nm + e->writer, n) == 0);
}

/* What nbuf_ensure_writable(e, n) must return; applies the nviews reset. */
static int
expect_grow(struct model *m, struct ment *e, size_t n)
{
    struct mroot *r = &m->r[e->root];
    size_t need;
    if (r->readonly)
        return -EROFS;
    if (__builtin_add_overflow(e->writer, n, &need) || need > e->maxcap)
        return -ENOBUFS;
    if (need <= e->cap)
        return 0;
    if (e->view || !r->growable)
        return -ENOBUFS;
    if (r->viewed) {
        if (r->holders > 1)
            return -ENOBUFS;
        r->viewed = false;
    }
    return 0;
}

static void
encode(uint8_t *out, uint64_t v, unsigned w, bool le)
{
    for (unsigned i = 0; i < w; i++)
        out[le ? i : w - 1 - i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
trunc_w(uint64_t v, unsigned w)
{
    return w == 8 ? v : v & ((1ull << (8 * w)) - 1);
}

static int
typed_write(struct nbuf *b, unsigned w, bool le, uint64_t v)
{
    switch (w) {
    case 1: return nbuf_write_u8(b, (uint8_t)v);
    case 2: return le ? nbuf_write_u16_le(b, (uint16_t)v) : nbuf_write_u16(b, (uint16_t)v);
    case 4: return le ? nbuf_write_u32_le(b, (uint32_t)v) : nbuf_write_u32(b, (uint32_t)v);
    default: return le ? nbuf_write_u64_le(b, v) : nbuf_write_u64(b, v);
    }
}

static int
typed_set(struct nbuf *b, size_t i, unsigned w, bool le, uint64_t v)
{
    switch (w) {
    case 1: return nbuf_set_u8(b, i, (uint8_t)v);
    case 2: return le ? nbuf_set_u16_le(b, i, (uint16_t)v) : nbuf_set_u16(b, i, (uint16_t)v);
    case 4: return le ? nbuf_set_u32_le(b, i, (uint32_t)v) : nbuf_set_u32(b, i, (uint32_t)v);
    default: return le ? nbuf_set_u64_le(b, i, v) : nbuf_set_u64(b, i, v);
    }
}

/* Typed read (get = false) or get at @i; the value widened to 64 bits. */
static int
typed_take(struct nbuf *b, bool get, size_t i, unsigned w, bool le, uint64_t *out)
{
    int ret;
    uint8_t v8 = 0xcc;
    uint16_t v16 = 0xcccc;
    uint32_t v32 = 0xcccccccc;
    uint64_t v64 = 0xccccccccccccccccull;
    switch (w) {
    case 1: ret = get ? nbuf_get_u8(b, i, &v8) : nbuf_read_u8(b, &v8); break;
    case 2:
        ret = get ? (le ? nbuf_get_u16_le(b, i, &v16) : nbuf_get_u16(b, i, &v16))
                  : (le ? nbuf_read_u16_le(b, &v16) : nbuf_read_u16(b, &v16));
        break;
    case 4:
        ret = get ? (le ? nbuf_get_u32_le(b, i, &v32) : nbuf_get_u32(b, i, &v32))
                  : (le ? nbuf_read_u32_le(b, &v32) : nbuf_read_u32(b, &v32));
        break;
    default:
        ret = get ? (le ? nbuf_get_u64_le(b, i, &v64) : nbuf_get_u64(b, i, &v64))
                  : (le ? nbuf_read_u64_le(b, &v64) : nbuf_read_u64(b, &v64));
        break;
    }
    /* On failure the output is not written. */
    *out = w == 1 ? v8 : w == 2 ? v16 : w == 4 ? v32 : v64;
    if (ret)
        FZ_CHECK(trunc_w(*out, w) == trunc_w(0xccccccccccccccccull, w));
    return ret;
}

static uint64_t
decode(const uint8_t *in, unsigned w, bool le)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++)
        v |= (uint64_t)in[le ? i : w - 1 - i] << (8 * i);
    return v;
}

/* ---- creating entries ---- */

static void
new_root_entry(struct model *m, int slot, struct nbuf *b, bool growable, bool readonly, int wrap)
{
    int ri = free_root(m);
    FZ_CHECK(ri >= 0);
    size_t cap = nbuf_capacity(b);
    struct mroot *r = &m->r[ri];
    *r = (struct mroot){
        .holders = 1, .growable = growable, .readonly = readonly, .dirty = true, .wrap = wrap};
    r->mem = malloc(cap ? cap : 1);
    FZ_CHECK(r->mem != NULL);
    r->cap = cap;
    m->e[slot] = (struct ment){.b = b,
                               .root = ri,
                               .refs = 1,
                               .reader = nbuf_reader_index(b),
                               .writer = nbuf_writer_index(b),
                               .cap = cap,
                               .maxcap = nbuf_max_capacity(b)};
}

static void
op_alloc(struct model *m, struct fz *f)
{
    int slot = free_slot(m);
    uint8_t how = fz_u8(f);
    size_t cap = (how & 0x80) ? fz_u32(f) % 70000 : fz_u16(f) % 2048;
    size_t extra = fz_u16(f);
    if (slot < 0)
        return;
    struct nbuf *b;
    if (how & 1) {
        size_t maxcap = (how & 2) ? cap + extra % 5000 : MAX_BUFFER;
        b = nbuf_alloc_ex(m->p, cap, maxcap, (how >> 2) & (NBUF_ZERO | NBUF_ALIGN_PAGE));
    } else {
        b = nbuf_alloc(m->p, cap);
    }
    FZ_CHECK(b != NULL);
    new_root_entry(m, slot, b, true, false, -1);
    /* Unknown bytes: give every one a value the model knows. */
    struct ment *e = &m->e[slot];
    uint8_t *mem = m->r[e->root].mem;
    fz_pat_fill(mem, e->cap, m->seed++, 0);
    FZ_CHECK(nbuf_set(b, 0, mem, e->cap) == 0);
}

static void
op_wrap(struct model *m, struct fz *f)
{
    int slot = free_slot(m);
    size_t len = fz_u16(f) % 5000;
    if (slot < 0 || m->nwrap == sizeof(m->w) / sizeof(m->w[0]))
        return;
    struct wraprec *w = &m->w[m->nwrap];
    w->data = malloc(len ? len : 1);
    FZ_CHECK(w->data != NULL);
    fz_pat_fill(w->data, len, m->seed++, 0);
    struct nbuf *b = nbuf_wrap(w->data, len, wrap_free, w);
    FZ_CHECK(b != NULL);
    new_root_entry(m, slot, b, false, false, (int)m->nwrap++);
    memcpy(m->r[m->e[slot].root].mem, w->data, len);
}

static void
op_map(struct model *m, struct fz *f)
{
    int slot = free_slot(m);
    size_t off = fz_u16(f) % (FILE_LEN + 2);
    size_t len = fz_u16(f) % (FILE_LEN + 2);
    if (slot < 0)
        return;
    errno = 0;
    struct nbuf *b = nbuf_map_file(mapped_fd, (off_t)off, len);
    if (off + len > FILE_LEN) {
        FZ_CHECK(b == NULL && errno == EINVAL);
        return;
    }
    FZ_CHECK(b != NULL);
    new_root_entry(m, slot, b, false, true, -1);
    memcpy(m->r[m->e[slot].root].mem, mapped_bytes + off, len);
}

static void
op_view(struct model *m, struct ment *e, struct fz *f)
{
    int slot = free_slot(m);
    uint8_t kind = fz_u8(f) % 3;
    size_t a = fz_u32(f), c = fz_u32(f);
    if (slot < 0)
        return;
    struct nbuf *v;
    size_t off, len, reader = 0, writer;
    errno = 0;
    if (kind == 0) {
        off = a % (e->writer + 2);
        len = c % (e->writer + 2);
        v = nbuf_slice(e->b, off, len);
        if (off > e->writer || len > e->writer - off) {
            FZ_CHECK(v == NULL && errno == EINVAL);
            return;
        }
        writer = len;
    } else if (kind == 1) {
        size_t readable = e->writer - e->reader;
        len = a % (readable + 2);
        off = e->reader;
        v = nbuf_read_slice(e->b, len);
        if (len > readable) {
            FZ_CHECK(v == NULL && errno == ENODATA);
            return;
        }
        e->reader += len;
        writer = len;
    } else {
        off = 0;
        len = e->cap;
        reader = e->reader;
        writer = e->writer;
        v = nbuf_duplicate(e->b);
    }
    FZ_CHECK(v != NULL);
    struct mroot *r = &m->r[e->root];
    r->holders++;
    r->viewed = true;
    m->e[slot] = (struct ment){.b = v,
                               .root = e->root,
                               .view = true,
                               .refs = 1,
                               .off = e->off + off,
                               .reader = reader,
                               .writer = writer,
                               .cap = len,
                               .maxcap = len};
}

static void
op_copy(struct model *m, struct ment *e, struct fz *f)
{
    int slot = free_slot(m);
    size_t a = fz_u32(f), c = fz_u32(f);
    if (slot < 0)
        return;
    size_t off = a % (e->writer + 2);
    size_t len = c % (e->writer + 2);
    errno = 0;
    struct nbuf *b = nbuf_copy(e->b, off, len);
    if (off > e->writer || len > e->writer - off) {
        FZ_CHECK(b == NULL && errno == EINVAL);
        return;
    }
    FZ_CHECK(b != NULL);
    FZ_CHECK(nbuf_reader_index(b) == 0 && nbuf_writer_index(b) == len);
    FZ_CHECK(nbuf_refcnt(b) == 1);
    const uint8_t *src = ment_mem(m, e) + off;
    struct ment *ne = &m->e[slot];
    new_root_entry(m, slot, b, true, false, -1);
    uint8_t *mem = m->r[ne->root].mem;
    memcpy(mem, src, len);
    fz_pat_fill(mem + len, ne->cap - len, m->seed++, 0);
    FZ_CHECK(nbuf_set(b, len, mem + len, ne->cap - len) == 0);
}

/* ---- releasing ---- */

static void
drop_holder(struct model *m, int ri)
{
    struct mroot *r = &m->r[ri];
    FZ_CHECK(r->holders > 0);
    if (--r->holders == 0) {
        if (r->wrap >= 0)
            FZ_CHECK(m->w[r->wrap].freed == 1);
        free(r->mem);
        r->mem = NULL;
    } else if (r->wrap >= 0) {
        FZ_CHECK(m->w[r->wrap].freed == 0);
    }
}

static void
release_one(struct model *m, struct ment *e)
{
    struct mroot *r = &m->r[e->root];
    int want = e->view ? e->refs == 1 : r->holders == 1;
    if (!e->view && r->holders == 1 && r->wrap >= 0)
        m->w[r->wrap].expected = true;
    if (e->view && e->refs == 1 && r->holders == 1 && r->wrap >= 0)
        m->w[r->wrap].expected = true;
    FZ_CHECK(nbuf_release(e->b) == want);
    if (e->view) {
        if (--e->refs == 0) {
            drop_holder(m, e->root);
            e->b = NULL;
        }
    } else {
        drop_holder(m, e->root);
        if (--e->refs == 0)
            e->b = NULL;
    }
}

/* A growth result the model did not expect: say why before failing. */
static void
check_grow(struct model *m, const struct ment *e, const char *op, size_t n, int got, int want)
{
    if (got == want)
        return;
    const struct mroot *r = &m->r[e->root];
    fprintf(stderr,
            "%s(%zu) = %d, model %d: view %d growable %d readonly %d viewed %d holders %u "
            "refs %u | buffer: refcnt %u nviews %u kind %u reader %zu writer %zu cap %zu "
            "maxcap %zu | model: reader %zu writer %zu cap %zu maxcap %zu\n",
            op, n, got, want, e->view, r->growable, r->readonly, r->viewed, r->holders, e->refs,
            nbuf_refcnt(e->b), atomic_load(&e->b->nviews), e->b->kind, e->b->reader, e->b->writer,
            e->b->capacity, e->b->max_capacity, e->reader, e->writer, e->cap, e->maxcap);
    FZ_CHECK_EQ(got, want);
}

/* ---- operations on one entry ---- */

/* Bytes to write: from the input, or a pattern for long runs. */
static size_t
pick_bytes(struct model *m, struct fz *f, uint8_t *buf, size_t cap)
{
    uint8_t k = fz_u8(f);
    size_t n;
    if (k < 200) {
        n = k % 64;
        fz_bytes(f, buf, n);
    } else {
        n = fz_u16(f) % (k > 250 ? cap : 4096);
        fz_pat_fill(buf, n, m->seed++, 0);
    }
    return n;
}

static void
op_write(struct model *m, struct ment *e, struct fz *f, uint8_t *tmp, size_t tmpcap)
{
    size_t n = pick_bytes(m, f, tmp, tmpcap);
    size_t w0 = e->writer;
    int want = (n > e->cap - e->writer || m->r[e->root].readonly) ? expect_grow(m, e, n) : 0;
    int ret = nbuf_write(e->b, tmp, n);
    check_grow(m, e, "nbuf_write", n, ret, want);
    if (ret)
        return;
    e->writer += n;
    sync_capacity(m, e);
    memcpy(ment_mem(m, e) + w0, tmp, n);
}

static void
op_typed(struct model *m, struct ment *e, struct fz *f)
{
    uint8_t k = fz_u8(f);
    unsigned w = 1u << (k & 3);
    bool le = (k & 4) && w > 1;
    uint64_t v = fz_u64(f);
    size_t idx = fz_u32(f) % (e->cap + 10);
    uint8_t enc[8], got[8];
    uint64_t out;
    int ret, want;
    switch ((k >> 3) % 4) {
    case 0: /* write */
        want = (w > e->cap - e->writer || m->r[e->root].readonly) ? expect_grow(m, e, w) : 0;
        ret = typed_write(e->b, w, le, v);
        check_grow(m, e, "nbuf_write_uN", w, ret, want);
        if (!ret) {
            size_t w0 = e->writer;
            e->writer += w;
            sync_capacity(m, e);
            encode(ment_mem(m, e) + w0, v, w, le);
        }
        break;
    case 1: /* read */
        ret = typed_take(e->b, false, 0, w, le, &out);
        if (w > e->writer - e->reader) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(out == decode(ment_mem(m, e) + e->reader, w, le));
            e->reader += w;
        }
        break;
    case 2: /* get */
        ret = typed_take(e->b, true, idx, w, le, &out);
        if (idx > e->writer || w > e->writer - idx) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(out == decode(ment_mem(m, e) + idx, w, le));
            encode(got, out, w, le);
            FZ_CHECK(memcmp(got, ment_mem(m, e) + idx, w) == 0);
        }
        break;
    default: /* set */
        ret = typed_set(e->b, idx, w, le, v);
        if (m->r[e->root].readonly) {
            FZ_CHECK(ret == -EROFS);
        } else if (idx > e->cap || w > e->cap - idx) {
            FZ_CHECK(ret == -EINVAL);
        } else {
            FZ_CHECK(ret == 0);
            encode(enc, v, w, le);
            memcpy(ment_mem(m, e) + idx, enc, w);
        }
        break;
    }
}

static void
op_bulk(struct model *m, struct ment *e, struct fz *f, uint8_t *tmp, size_t tmpcap)
{
    uint8_t k = fz_u8(f) % 3;
    size_t idx = fz_u32(f) % (e->cap + 10);
    size_t n = fz_u16(f) % (e->cap + 10);
    if (n > tmpcap)
        n = tmpcap;
    int ret;
    switch (k) {
    case 0: /* read */
        ret = nbuf_read(e->b, tmp, n);
        if (n > e->writer - e->reader) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(n == 0 || memcmp(tmp, ment_mem(m, e) + e->reader, n) == 0);
            e->reader += n;
        }
        break;
    case 1: /* get */
        ret = nbuf_get(e->b, idx, tmp, n);
        if (idx > e->writer || n > e->writer - idx) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            FZ_CHECK(n == 0 || memcmp(tmp, ment_mem(m, e) + idx, n) == 0);
        }
        break;
    default: /* set */
        fz_pat_fill(tmp, n, m->seed++, 0);
        ret = nbuf_set(e->b, idx, tmp, n);
        if (m->r[e->root].readonly) {
            FZ_CHECK(ret == -EROFS);
        } else if (idx > e->cap || n > e->cap - idx) {
            FZ_CHECK(ret == -EINVAL);
        } else {
            FZ_CHECK(ret == 0);
            memcpy(ment_mem(m, e) + idx, tmp, n);
        }
        break;
    }
}

static void
op_cursor(struct model *m, struct ment *e, struct fz *f)
{
    uint8_t k = fz_u8(f) % 5;
    size_t a = fz_u32(f) % (e->cap + 3), c = fz_u32(f) % (e->cap + 3);
    int ret;
    switch (k) {
    case 0: /* skip */
        ret = nbuf_skip(e->b, a);
        if (a > e->writer - e->reader) {
            FZ_CHECK(ret == -ENODATA);
        } else {
            FZ_CHECK(ret == 0);
            e->reader += a;
        }
        break;
    case 1: /* set_indices */
        ret = nbuf_set_indices(e->b, a, c);
        if (a > c || c > e->cap) {
            FZ_CHECK(ret == -EINVAL);
        } else {
            FZ_CHECK(ret == 0);
            e->reader = a;
            e->writer = c;
        }
        break;
    case 2: /* clear */
        nbuf_clear(e->b);
        e->reader = e->writer = 0;
        break;
    case 3: /* commit */
        ret = nbuf_commit(e->b, a % 64);
        if (a % 64 > e->cap - e->writer) {
            FZ_CHECK(ret == -EINVAL);
        } else {
            FZ_CHECK(ret == 0);
            e->writer += a % 64;
        }
        break;
    default: { /* discard_read */
        ret = nbuf_discard_read(e->b);
        if (e->reader == 0) {
            FZ_CHECK(ret == 0);
        } else if (m->r[e->root].readonly) {
            FZ_CHECK(ret == -EROFS);
        } else {
            FZ_CHECK(ret == 0);
            uint8_t *mem = ment_mem(m, e);
            memmove(mem, mem + e->reader, e->writer - e->reader);
            e->writer -= e->reader;
            e->reader = 0;
        }
        break;
    }
    }
}

static void
op_reserve(struct model *m, struct ment *e, struct fz *f, uint8_t *tmp, size_t tmpcap)
{
    uint8_t k = fz_u8(f);
    size_t n = (k & 0x80) ? fz_u32(f) % (MAX_BUFFER + 100) : fz_u16(f) % 9000;
    size_t w0 = e->writer;
    int want = expect_grow(m, e, n);
    if (k & 1) {
        check_grow(m, e, "nbuf_ensure_writable", n, nbuf_ensure_writable(e->b, n), want);
        if (!want)
            sync_capacity(m, e);
        return;
    }
    errno = 0;
    uint8_t *p = nbuf_reserve(e->b, n);
    check_grow(m, e, "nbuf_reserve", n, p ? 0 : -errno, want);
    if (want)
        return;
    FZ_CHECK(p == e->b->mem + w0);
    sync_capacity(m, e);
    FZ_CHECK(nbuf_writable(e->b) >= n);
    /* Fill part of the room and commit it. */
    size_t fill = n < tmpcap ? n : tmpcap;
    fill = fill ? (k >> 1) % (fill + 1) : 0;
    fz_pat_fill(tmp, fill, m->seed++, 0);
    memcpy(p, tmp, fill);
    FZ_CHECK(nbuf_commit(e->b, fill) == 0);
    memcpy(ment_mem(m, e) + w0, tmp, fill);
    e->writer += fill;
}

static void
op_index_of(struct model *m, struct ment *e, struct fz *f)
{
    size_t from = fz_u32(f) % (e->cap + 3), to = fz_u32(f) % (e->cap + 3);
    uint8_t byte = fz_u8(f);
    if (fz_u8(f) & 1 && e->writer > e->reader)
        byte = ment_mem(m, e)[e->reader + (size_t)byte % (e->writer - e->reader)];
    ssize_t got = nbuf_index_of(e->b, from, to, byte);
    if (from > to) {
        FZ_CHECK(got == -EINVAL);
        return;
    }
    size_t end = to < e->writer ? to : e->writer;
    ssize_t want = -ENOENT;
    const uint8_t *mem = ment_mem(m, e);
    for (size_t i = from; i < end; i++) {
        if (mem[i] == byte) {
            want = (ssize_t)i;
            break;
        }
    }
    FZ_CHECK(got == want);
}

static void
op_fd(struct model *m, struct ment *e, struct fz *f, uint8_t *tmp, size_t tmpcap)
{
    uint8_t k = fz_u8(f);
    if (k & 1) {
        /* write_fd into an empty pipe, read back. */
        size_t readable = e->writer - e->reader;
        ssize_t r = nbuf_write_fd(e->b, pipe_wr);
        if (readable == 0) {
            FZ_CHECK(r == 0);
            return;
        }
        FZ_CHECK(r > 0 && (size_t)r <= readable);
        size_t got = 0;
        while (got < (size_t)r) {
            size_t want = (size_t)r - got < tmpcap ? (size_t)r - got : tmpcap;
            ssize_t n = read(pipe_rd, tmp, want);
            FZ_CHECK(n > 0);
            FZ_CHECK(memcmp(tmp, ment_mem(m, e) + e->reader + got, (size_t)n) == 0);
            got += (size_t)n;
        }
        e->reader += (size_t)r;
        return;
    }
    /* read_fd from a pipe holding @avail bytes. */
    size_t avail = fz_u16(f) % 3000;
    size_t max = fz_u16(f) % 5000;
    fz_pat_fill(tmp, avail, m->seed++, 0);
    if (avail)
        FZ_CHECK(write(pipe_wr, tmp, avail) == (ssize_t)avail);
    size_t w0 = e->writer;
    ssize_t want;
    if (max == 0) {
        want = -EINVAL;
    } else if (m->r[e->root].readonly) {
        want = -EROFS;
    } else {
        size_t room = e->cap - e->writer;
        int err = 0;
        size_t cap_after = e->cap;
        if (room < max) {
            size_t lim = e->maxcap - e->writer < max ? e->maxcap - e->writer : max;
            if (lim > room) {
                err = expect_grow(m, e, lim);
                if (!err)
                    cap_after = e->writer + lim; /* at least */
            }
        }
        size_t room_after = cap_after - e->writer;
        if (room_after == 0)
            want = err ? err : -ENOBUFS;
        else if (avail == 0)
            want = -EAGAIN;
        else
            want = (ssize_t)(room_after < max ? room_after : max); /* upper bound */
    }
    ssize_t r = nbuf_read_fd(e->b, pipe_rd, max);
    if (want <= 0) {
        FZ_CHECK(r == want);
    } else {
        /* Growth may give more room than asked for: at most max, at most
         * what the pipe held. */
        size_t lim = (size_t)want > avail ? avail : (size_t)want;
        FZ_CHECK(r > 0);
        FZ_CHECK((size_t)r >= lim && (size_t)r <= avail && (size_t)r <= max);
    }
    /* Growth happens even when the read then finds nothing. */
    if (r > 0)
        e->writer += (size_t)r;
    if (nbuf_capacity(e->b) != e->cap) {
        size_t keep = e->writer;
        e->writer = w0;
        /* Bytes [w0, w0 + r) came from the pipe: fix the model after the
         * capacity sync (which patterns [w0, cap) through nbuf_set). */
        sync_capacity(m, e);
        e->writer = keep;
        if (r > 0) {
            FZ_CHECK(nbuf_set(e->b, w0, tmp, (size_t)r) == 0);
        }
    }
    if (r > 0)
        memcpy(ment_mem(m, e) + w0, tmp, (size_t)r);
    drain_pipe();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t tmp[80000];
    struct fz f = {data, size};
    setup_fds();
    struct model *m = calloc(1, sizeof(*m));
    FZ_CHECK(m != NULL);
    m->p = fz_pool_new(&f, MAX_BUFFER, 0);
    m->seed = 1 + fz_u8(&f);
    for (unsigned n = 0; n < MAX_OPS && fz_more(&f); n++) {
        uint8_t op = fz_u8(&f);
        int i = pick(m, &f);
        struct ment *e = i >= 0 ? &m->e[i] : NULL;
        if (e)
            m->r[e->root].dirty = true;
        switch (op % 18) {
        case 0:
        case 1: op_alloc(m, &f); break;
        case 2: op_wrap(m, &f); break;
        case 3: op_map(m, &f); break;
        case 4:
            if (e)
                op_view(m, e, &f);
            break;
        case 5:
            if (e)
                op_copy(m, e, &f);
            break;
        case 6:
            if (e && e->refs < 6) {
                FZ_CHECK(nbuf_retain(e->b) == e->b);
                e->refs++;
                if (!e->view)
                    m->r[e->root].holders++;
            }
            break;
        case 7:
            if (e)
                release_one(m, e);
            break;
        case 8:
        case 9:
            if (e && e->writer < MAX_BUFFER)
                op_write(m, e, &f, tmp, sizeof(tmp));
            break;
        case 10:
        case 11:
        case 12:
            if (e)
                op_typed(m, e, &f);
            break;
        case 13:
            if (e)
                op_bulk(m, e, &f, tmp, sizeof(tmp));
            break;
        case 14:
            if (e)
                op_cursor(m, e, &f);
            break;
        case 15:
            if (e)
                op_reserve(m, e, &f, tmp, sizeof(tmp));
            break;
        case 16:
            if (e)
                op_index_of(m, e, &f);
            break;
        case 17:
            if (e)
                op_fd(m, e, &f, tmp, sizeof(tmp));
            break;
        }
        check_all(m, false);
    }
    check_all(m, true);
    for (int i = 0; i < NE; i++)
        while (m->e[i].b)
            release_one(m, &m->e[i]);
    for (unsigned k = 0; k < m->nwrap; k++) {
        FZ_CHECK(m->w[k].freed == 1);
        free(m->w[k].data);
    }
    struct nbuf_pool_stats st;
    FZ_CHECK(nbuf_pool_stats(m->p, &st) == 0);
    FZ_CHECK(st.live_buffers == 0 && st.views == 0);
    FZ_CHECK(nbuf_pool_free(m->p) == 0);
    free(m);
    return 0;
}
