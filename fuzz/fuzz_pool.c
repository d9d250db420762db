/* SPDX-License-Identifier: MIT */
/*
 * fuzz_pool: alloc / alloc_ex / release / retain / slice / duplicate /
 * read_slice / copy / skip / trim / backing faults, as an operation stream
 * against a table of live allocations. Every buffer's bytes are a pattern
 * keyed by its root's seed and verified on release, so a pair handed out
 * twice or memory reused under a live buffer shows. nbuf_pool_check_ and the
 * pool's counters are checked against the model after every operation.
 */
#include "fuzz_common.h"

enum { NSLOT = 48, MAX_BUFFER = 512u << 10, MAX_OPS = 2000 };

/* The memory of a pooled buffer, alive while any holder remains. */
struct root {
    unsigned holders; /* references on the root buffer: ours and one per view */
    uint64_t seed;
    size_t poff; /* pattern offset of the root's byte 0 */
    size_t requested;
};

/* A reference we hold: a root buffer or a view of one. */
struct ent {
    struct nbuf *b; /* NULL: free slot */
    int root;
    bool view;
    unsigned refs; /* our references on b */
    size_t off;    /* b's byte 0 is the root's byte off */
    size_t len;    /* b's writer index (everything below it is written) */
    size_t reader;
};

struct model {
    struct nbuf_pool *p;
    struct ent e[NSLOT];
    struct root r[NSLOT];
    uint64_t allocs, releases, live, views, requested;
    uint64_t next_seed;
    bool faults; /* a backing fault may be armed: allocations may fail */
};

static int
free_root(struct model *m)
{
    for (int i = 0; i < NSLOT; i++)
        if (m->r[i].holders == 0)
            return i;
    return -1;
}

static int
free_slot(struct model *m)
{
    for (int i = 0; i < NSLOT; i++)
        if (!m->e[i].b)
            return i;
    return -1;
}

static int
pick_slot(struct model *m, struct fz *f)
{
    unsigned start = fz_u8(f) % NSLOT;
    for (unsigned k = 0; k < NSLOT; k++) {
        unsigned i = (start + k) % NSLOT;
        if (m->e[i].b)
            return (int)i;
    }
    return -1;
}

static void
check_pool(struct model *m)
{
    FZ_CHECK(nbuf_pool_check_(m->p));
    struct nbuf_pool_stats st;
    FZ_CHECK(nbuf_pool_stats(m->p, &st) == 0);
    FZ_CHECK(st.live_buffers == m->live);
    FZ_CHECK(st.views == m->views);
    FZ_CHECK(st.requested_bytes == m->requested);
    FZ_CHECK(st.allocations == m->allocs);
    FZ_CHECK(st.releases == m->releases);
    FZ_CHECK(st.used_bytes >= st.requested_bytes);
    FZ_CHECK(m->p->cfg.memory_limit == 0 || st.backing_bytes <= m->p->cfg.memory_limit);
}

static void
check_ent(struct model *m, const struct ent *e)
{
    const struct root *r = &m->r[e->root];
    FZ_CHECK(nbuf_writer_index(e->b) == e->len);
    FZ_CHECK(nbuf_reader_index(e->b) == e->reader);
    FZ_CHECK(nbuf_capacity(e->b) >= e->len);
    const uint8_t *d = nbuf_data(e->b);
    FZ_CHECK(d != NULL);
    FZ_CHECK(fz_pat_bad(d, e->len - e->reader, r->seed, r->poff + e->off + e->reader) == SIZE_MAX);
    unsigned want = e->view ? e->refs : r->holders;
    FZ_CHECK(nbuf_refcnt(e->b) == want);
}

/* A new root entry around a freshly allocated @b of @requested bytes. */
static void
adopt_root(struct model *m, int slot, struct nbuf *b, size_t requested, uint64_t seed, size_t poff,
           size_t written)
{
    int ri = free_root(m);
    FZ_CHECK(ri >= 0);
    m->r[ri] = (struct root){.holders = 1, .seed = seed, .poff = poff, .requested = requested};
    m->e[slot] = (struct ent){.b = b, .root = ri, .refs = 1, .len = written};
    m->allocs++;
    m->live++;
    m->requested += requested;
}

static void
drop_root_holder(struct model *m, int ri)
{
    struct root *r = &m->r[ri];
    FZ_CHECK(r->holders > 0);
    if (--r->holders == 0) {
        m->releases++;
        m->live--;
        m->requested -= r->requested;
    }
}

static size_t
pick_size(struct model *m, struct fz *f, bool *oversize)
{
    struct nbuf_pool *p = m->p;
    *oversize = false;
    switch (fz_u8(f) % 8) {
    case 0: return fz_u8(f) % 65;
    case 1:
    case 2: return fz_u16(f) % (4 * p->cfg.page_size);
    case 3: return fz_u32(f) % (p->cfg.chunk_size + 1);
    case 4: return p->cfg.chunk_size + 1 + fz_u32(f) % (4 * p->cfg.chunk_size);
    case 5: {
        /* A class boundary, -1 / exact / +1. */
        unsigned k = fz_u8(f) % p->nclasses;
        size_t s = nbuf_sz_usize_(k);
        return s + (size_t)(fz_u8(f) % 3) - 1;
    }
    case 6: {
        /* Around max_buffer_size and the overflow edges. */
        uint8_t k = fz_u8(f);
        size_t s = (k & 1) ? SIZE_MAX - (k >> 1) : p->cfg.max_buffer_size + (k >> 1);
        *oversize = s > p->cfg.max_buffer_size;
        return s;
    }
    default: return fz_u16(f) % 2048;
    }
}

static void
op_alloc(struct model *m, struct fz *f)
{
    int slot = free_slot(m);
    bool oversize;
    size_t size = pick_size(m, f, &oversize);
    uint8_t how = fz_u8(f);
    if (slot < 0)
        return;
    struct nbuf_pool_stats before;
    FZ_CHECK(nbuf_pool_stats(m->p, &before) == 0);
    size_t maxcap = m->p->cfg.max_buffer_size;
    unsigned flags = 0;
    struct nbuf *b;
    errno = 0;
    if (how & 1) {
        flags = (how >> 1) & (NBUF_ZERO | NBUF_ALIGN_PAGE);
        if (how & 8) {
            /* A growth bound: exactly the size, or a little above. */
            size_t extra = (how >> 4) * 97u;
            if (!oversize)
                maxcap = size + extra < maxcap ? size + extra : maxcap;
        }
        b = nbuf_alloc_ex(m->p, size, maxcap, flags);
    } else {
        b = nbuf_alloc(m->p, size);
    }
    if (!b) {
        if (oversize || size > maxcap) {
            FZ_CHECK(errno == EINVAL);
        } else {
            /* Only a fault or the memory limit may refuse a valid size. */
            FZ_CHECK(errno == ENOMEM);
            FZ_CHECK(m->faults || m->p->cfg.memory_limit);
        }
        struct nbuf_pool_stats after;
        FZ_CHECK(nbuf_pool_stats(m->p, &after) == 0);
        FZ_CHECK(after.live_buffers == before.live_buffers);
        FZ_CHECK(after.allocations == before.allocations);
        FZ_CHECK(after.requested_bytes == before.requested_bytes);
        return;
    }
    FZ_CHECK(!oversize);
    size_t cap = nbuf_capacity(b);
    FZ_CHECK(cap >= size);
    FZ_CHECK(cap <= maxcap);
    FZ_CHECK(nbuf_max_capacity(b) == maxcap);
    FZ_CHECK(nbuf_reader_index(b) == 0 && nbuf_writer_index(b) == 0);
    FZ_CHECK(nbuf_refcnt(b) == 1);
    uint8_t *w = nbuf_reserve(b, cap);
    FZ_CHECK(w != NULL);
    FZ_CHECK(nbuf_capacity(b) == cap); /* the room was there: no growth */
    if (flags & NBUF_ALIGN_PAGE)
        FZ_CHECK(((uintptr_t)w & (m->p->cfg.page_size - 1)) == 0);
    if ((flags & NBUF_ZERO) || (m->p->cfg.flags & NBUF_POOL_ZERO))
        FZ_CHECK(fz_all_zero(w, cap));
    uint64_t seed = m->next_seed++;
    /* Every usable byte is written: the class size must really be ours. */
    fz_pat_fill(w, cap, seed, 0);
    FZ_CHECK(nbuf_commit(b, cap) == 0);
    adopt_root(m, slot, b, size, seed, 0, cap);
}

/* Drop one of our references on @e, checking what nbuf_release reports. */
static void
release_one(struct model *m, struct ent *e)
{
    int want = e->view ? e->refs == 1 : m->r[e->root].holders == 1;
    FZ_CHECK(nbuf_release(e->b) == want);
    if (e->view) {
        if (--e->refs == 0) {
            m->views--;
            drop_root_holder(m, e->root);
            e->b = NULL;
        }
    } else {
        drop_root_holder(m, e->root);
        if (--e->refs == 0)
            e->b = NULL;
    }
}

static void
op_release(struct model *m, struct fz *f)
{
    int i = pick_slot(m, f);
    if (i < 0)
        return;
    check_ent(m, &m->e[i]);
    release_one(m, &m->e[i]);
}

static void
op_retain(struct model *m, struct fz *f)
{
    int i = pick_slot(m, f);
    if (i < 0)
        return;
    struct ent *e = &m->e[i];
    if (e->refs >= 8)
        return;
    FZ_CHECK(nbuf_retain(e->b) == e->b);
    e->refs++;
    if (!e->view)
        m->r[e->root].holders++;
    check_ent(m, e);
}

static void
op_view(struct model *m, struct fz *f)
{
    int i = pick_slot(m, f);
    int slot = free_slot(m);
    uint8_t kind = fz_u8(f) % 3;
    size_t a = fz_u32(f), c = fz_u32(f);
    if (i < 0 || slot < 0)
        return;
    struct ent *e = &m->e[i];
    struct nbuf *v;
    size_t off, len, reader = 0;
    errno = 0;
    if (kind == 0) {
        /* Sometimes out of range: must be refused. */
        off = a % (e->len + 2);
        len = c % (e->len + 2);
        v = nbuf_slice(e->b, off, len);
        if (off > e->len || len > e->len - off) {
            FZ_CHECK(v == NULL && errno == EINVAL);
            return;
        }
    } else if (kind == 1) {
        size_t readable = e->len - e->reader;
        len = a % (readable + 2);
        off = e->reader;
        v = nbuf_read_slice(e->b, len);
        if (len > readable) {
            FZ_CHECK(v == NULL && errno == ENODATA);
            FZ_CHECK(nbuf_reader_index(e->b) == e->reader);
            return;
        }
        if (v)
            e->reader += len;
    } else {
        /* A duplicate's capacity is all of e's: e's writer is its capacity
         * only for a root filled whole, so duplicate those and views. */
        off = 0;
        len = nbuf_capacity(e->b);
        if (len != e->len)
            return;
        reader = e->reader;
        v = nbuf_duplicate(e->b);
    }
    FZ_CHECK(v != NULL);
    FZ_CHECK(nbuf_capacity(v) == len && nbuf_max_capacity(v) == len);
    m->e[slot] = (struct ent){.b = v,
                              .root = e->root,
                              .view = true,
                              .refs = 1,
                              .off = e->off + off,
                              .len = len,
                              .reader = reader};
    m->r[e->root].holders++;
    m->views++;
    check_ent(m, &m->e[slot]);
    check_ent(m, e);
    /* A view never grows. */
    if (fz_u8(f) & 1)
        FZ_CHECK(nbuf_ensure_writable(v, nbuf_writable(v) + 1) == -ENOBUFS);
}

static void
op_copy(struct model *m, struct fz *f)
{
    int i = pick_slot(m, f);
    int slot = free_slot(m);
    size_t a = fz_u32(f), c = fz_u32(f);
    if (i < 0 || slot < 0)
        return;
    struct ent *e = &m->e[i];
    size_t off = a % (e->len + 1);
    size_t len = c % (e->len - off + 1);
    errno = 0;
    struct nbuf *b = nbuf_copy(e->b, off, len);
    if (!b) {
        FZ_CHECK(errno == ENOMEM && (m->faults || m->p->cfg.memory_limit));
        return;
    }
    FZ_CHECK(nbuf_writer_index(b) == len && nbuf_reader_index(b) == 0);
    FZ_CHECK(nbuf_max_capacity(b) == m->p->cfg.max_buffer_size);
    const struct root *r = &m->r[e->root];
    adopt_root(m, slot, b, len, r->seed, r->poff + e->off + off, len);
    check_ent(m, &m->e[slot]);
}

static void
op_skip(struct model *m, struct fz *f)
{
    int i = pick_slot(m, f);
    size_t a = fz_u32(f);
    if (i < 0)
        return;
    struct ent *e = &m->e[i];
    size_t readable = e->len - e->reader;
    size_t n = a % (readable + 2);
    int ret = nbuf_skip(e->b, n);
    if (n > readable) {
        FZ_CHECK(ret == -ENODATA);
    } else {
        FZ_CHECK(ret == 0);
        e->reader += n;
    }
    check_ent(m, e);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    uint8_t lim = fz_u8(&f);
    /* Sometimes a memory limit of a few chunks: trim, retry, ENOMEM. */
    size_t limit = (lim & 3) == 3 ? (size_t)(2 + (lim >> 2) % 8) * (64u << 10) : 0;
    struct model *m = calloc(1, sizeof(*m));
    FZ_CHECK(m != NULL);
    m->p = fz_pool_new(&f, MAX_BUFFER, limit);
    m->next_seed = 1 + fz_u8(&f);
    check_pool(m);
    for (unsigned n = 0; n < MAX_OPS && fz_more(&f); n++) {
        uint8_t op = fz_u8(&f);
        switch (op % 11) {
        case 0:
        case 1:
        case 2: op_alloc(m, &f); break;
        case 3:
        case 4: op_release(m, &f); break;
        case 5: op_retain(m, &f); break;
        case 6: op_view(m, &f); break;
        case 7: op_copy(m, &f); break;
        case 8: op_skip(m, &f); break;
        case 9: FZ_CHECK(nbuf_pool_trim(m->p) == 0); break;
        case 10: {
            /* Arm (or clear) a backing fault on the Nth call from now. */
            long k = fz_u8(&f) % 9;
            nbuf_backing_fail_after_(m->p, k);
            m->faults = m->faults || k;
            break;
        }
        }
        check_pool(m);
    }
    nbuf_backing_fail_after_(m->p, 0);
    /* Release everything, views first half the time. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < NSLOT; i++) {
            struct ent *e = &m->e[i];
            if (!e->b || (pass == 0 && !e->view && (m->next_seed & 1)))
                continue;
            check_ent(m, e);
            while (e->b)
                release_one(m, e);
        }
    }
    check_pool(m);
    FZ_CHECK(m->live == 0 && m->views == 0 && m->requested == 0);
    FZ_CHECK(nbuf_pool_trim(m->p) == 0);
    if (!(m->p->cfg.flags & NBUF_POOL_BYPASS)) {
        struct nbuf_pool_stats st;
        FZ_CHECK(nbuf_pool_stats(m->p, &st) == 0);
        FZ_CHECK(st.chunks == 0 && st.backing_bytes == 0);
    }
    FZ_CHECK(nbuf_pool_free(m->p) == 0);
    free(m);
    return 0;
}
