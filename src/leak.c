/* SPDX-License-Identifier: MIT */
/*
 * Debugging: leak tracking (NBUF_LEAK=off|sample|full) and the checked-mode
 * quarantine. A tracked buffer carries a history record (allocation
 * backtrace, the last retain/release sites, the final release) and sits on
 * its pool's registry while live; reports name each live tracked buffer.
 * Checked mode tracks every buffer and parks released headers in a FIFO so
 * that stale releases and uses find them dead. Nothing here is on a fast
 * path: pools with a registry take the slow paths (see nbuf_debug_pool_init_).
 * Layer: pool (an observer the buffer layer calls at its events); calls
 * debug.c and the thread cache's key helper.
 */
#include <execinfo.h>
#include <limits.h>
#include <stdarg.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

enum nbuf_leak_mode { LEAK_OFF = 0, LEAK_SAMPLE = 1, LEAK_FULL = 2 };

/* Sample mode tracks about one buffer in SAMPLE_RATE (a power of two). */
#define SAMPLE_RATE 128
#define QUARANTINE_DEFAULT 4096
#define QUARANTINE_MAX (1u << 24)

static const char *const kind_names[] = {"small", "run",  "huge",  "bypass",
                                         "view",  "wrap", "mapped"};

static const char *
kind_name(unsigned kind)
{
    return kind < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[kind] : "?";
}

static int
leak_mode_from_env(void)
{
    const char *v = getenv("NBUF_LEAK");
    if (!v || !*v || strcmp(v, "0") == 0 || strcasecmp(v, "off") == 0)
        return LEAK_OFF;
    if (strcasecmp(v, "sample") == 0 || strcmp(v, "1") == 0)
        return LEAK_SAMPLE;
    if (strcasecmp(v, "full") == 0 || strcmp(v, "2") == 0)
        return LEAK_FULL;
    nbuf_report_("nbuf: ignoring NBUF_LEAK=%s (off, sample or full)\n", v);
    return LEAK_OFF;
}

static uint32_t
quarantine_from_env(void)
{
    const char *v = getenv("NBUF_QUARANTINE");
    if (!v)
        return QUARANTINE_DEFAULT;
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (end == v || *end || n > QUARANTINE_MAX) {
        nbuf_report_("nbuf: ignoring NBUF_QUARANTINE=%s (0..%u headers)\n", v, QUARANTINE_MAX);
        return QUARANTINE_DEFAULT;
    }
    return (uint32_t)n;
}

int
nbuf_debug_pool_init_(struct nbuf_pool *p)
{
    /* Under valgrind every buffer goes through the slow paths, which
     * annotate memory with client requests. */
    if (NBUF_RUNNING_ON_VALGRIND()) {
        p->slow_alloc = 1;
        p->buf_slow = 1;
    }
    int mode = leak_mode_from_env();
    bool checked = (p->cfg.flags & NBUF_POOL_CHECKED) != 0;
    if (mode == LEAK_OFF && !checked)
        return 0;
    struct nbuf_leak_registry *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return -ENOMEM;
    if (pthread_mutex_init(&reg->lock, NULL) != 0)
        goto out_reg;
    reg->mode = mode;
    reg->checked = checked;
    if (checked) {
        reg->qcap = quarantine_from_env();
        if (reg->qcap && !(reg->quarantine = calloc(reg->qcap, sizeof(*reg->quarantine))))
            goto out_lock;
    }
    /* backtrace() loads libgcc_s on first use: do it now, not under a lock. */
    void *pc[2];
    backtrace(pc, 2);
    p->leaks = reg;
    /* Every allocation through alloc_slow, where tracking is decided. */
    p->slow_alloc = 1;
    return 0;

out_lock:
    pthread_mutex_destroy(&reg->lock);
out_reg:
    free(reg);
    return -ENOMEM;
}

/* ---- history records ---- */

#define EXT_PER_BLOCK 64

struct ext_block {
    struct ext_block *next;
    struct nbuf_header_ext recs[EXT_PER_BLOCK];
};

static struct nbuf_header_ext *
ext_alloc_locked(struct nbuf_leak_registry *reg)
{
    if (!reg->free_ext) {
        struct ext_block *blk = malloc(sizeof(*blk));
        if (!blk)
            return NULL;
        blk->next = reg->ext_blocks;
        reg->ext_blocks = blk;
        for (unsigned i = 0; i < EXT_PER_BLOCK; i++) {
            blk->recs[i].next = reg->free_ext;
            reg->free_ext = &blk->recs[i];
        }
    }
    struct nbuf_header_ext *e = reg->free_ext;
    reg->free_ext = e->next;
    memset(e, 0, sizeof(*e));
    return e;
}

static void
ext_free_locked(struct nbuf_leak_registry *reg, struct nbuf_header_ext *e)
{
    e->next = reg->free_ext;
    e->prev = NULL;
    e->buf = NULL;
    reg->free_ext = e;
}

/* Detach and recycle @h's record (if any); takes the lock. */
static void
ext_drop(struct nbuf_leak_registry *reg, struct nbuf *h)
{
    if (!h->ext)
        return;
    pthread_mutex_lock(&reg->lock);
    ext_free_locked(reg, h->ext);
    pthread_mutex_unlock(&reg->lock);
    h->ext = NULL;
}

/* A header leaving the quarantine (its record is recycled already): back to
 * its cache. */
static void
header_evict(struct nbuf *h)
{
    h->flags = 0;
    if (h->pool)
        nbuf_header_free_(h);
    else
        free(h);
}

void
nbuf_debug_pool_fini_(struct nbuf_pool *p)
{
    struct nbuf_leak_registry *reg = p->leaks;
    if (!reg)
        return;
    /* Pooled headers die with the arenas' header blocks; bypass ones were
     * calloc'd one by one. */
    for (uint32_t i = 0; i < reg->qcount; i++) {
        struct nbuf *h = reg->quarantine[(reg->qhead + i) % reg->qcap];
        h->ext = NULL;
        if (p->cfg.flags & NBUF_POOL_BYPASS)
            free(h);
    }
    /* Nothing is live when a pool is freed; detach stray records anyway. */
    for (struct nbuf_header_ext *e = reg->live; e; e = e->next)
        e->buf->ext = NULL;
    for (struct ext_block *blk = reg->ext_blocks, *next; blk; blk = next) {
        next = blk->next;
        free(blk);
    }
    free(reg->quarantine);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
    p->leaks = NULL;
}

/* ---- tracking ---- */

static bool
sample_this(void)
{
    static __thread uint64_t state;
    if (!state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state =
            ((uint64_t)(uintptr_t)&state ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32)) | 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return ((state * 2685821657736338717ull) >> 40) % SAMPLE_RATE == 0;
}

void
nbuf_leak_track_(struct nbuf_pool *p, struct nbuf *b)
{
    struct nbuf_leak_registry *reg = p->leaks;
    if (!reg->checked && (reg->mode == LEAK_OFF || (reg->mode == LEAK_SAMPLE && !sample_this())))
        return;
    void *pc[NBUF_BT_DEPTH];
    int depth = backtrace(pc, NBUF_BT_DEPTH); /* outside the lock: it is slow */
    pthread_mutex_lock(&reg->lock);
    struct nbuf_header_ext *e = ext_alloc_locked(reg);
    if (!e) {
        pthread_mutex_unlock(&reg->lock);
        return; /* tracking is best effort */
    }
    e->alloc_depth = depth > 0 ? (uint32_t)depth : 0;
    memcpy(e->alloc_pc, pc, e->alloc_depth * sizeof(void *));
    e->buf = b;
    e->capacity = b->capacity;
    e->requested = b->kind <= NBUF_KIND_BYPASS ? b->requested : b->capacity;
    e->kind = b->kind;
    e->live = true;
    e->serial = ++reg->serial;
    e->next = reg->live;
    if (e->next)
        e->next->prev = e;
    reg->live = e;
    reg->nlive++;
    pthread_mutex_unlock(&reg->lock);
    b->ext = e;
    b->flags |= NBUF_F_TRACKED;
    nbuf_buf_set_slow_(b, 1); /* the final release must come through nbuf_leak_untrack_ */
}

void
nbuf_leak_record_(struct nbuf *b, enum nbuf_site_op op)
{
    struct nbuf_header_ext *e = b->ext;
    struct nbuf_leak_registry *reg = b->pool->leaks;
    if (!e || (reg->mode != LEAK_FULL && !reg->checked))
        return;
    void *pc[NBUF_SITE_DEPTH + 1];
    int depth = backtrace(pc, NBUF_SITE_DEPTH + 1);
    uint32_t r = atomic_load_explicit(&b->refcnt, memory_order_relaxed);
    pthread_mutex_lock(&reg->lock);
    struct nbuf_site *s = &e->sites[e->nsites++ % NBUF_NSITES];
    s->op = (uint8_t)op;
    /* A release is recorded before its decrement (while the caller still
     * holds its reference), so report the count it leaves. */
    s->refcnt = op == NBUF_OP_RELEASE && r ? r - 1 : r;
    s->depth = depth > 1 ? (uint32_t)depth - 1 : 0; /* frame 0 is this function */
    memcpy(s->pc, pc + 1, s->depth * sizeof(void *));
    pthread_mutex_unlock(&reg->lock);
}

void
nbuf_leak_untrack_(struct nbuf *b)
{
    struct nbuf_header_ext *e = b->ext;
    struct nbuf_leak_registry *reg = b->pool->leaks;
    bool keep = reg->checked && (b->flags & NBUF_F_CHECKED);
    void *pc[NBUF_BT_DEPTH];
    int depth = 0;
    if (e->live && (keep || reg->mode == LEAK_FULL))
        depth = backtrace(pc, NBUF_BT_DEPTH);
    pthread_mutex_lock(&reg->lock);
    if (e->live) {
        e->free_depth = depth > 0 ? (uint32_t)depth : 0;
        memcpy(e->free_pc, pc, e->free_depth * sizeof(void *));
        if (e->prev)
            e->prev->next = e->next;
        else
            reg->live = e->next;
        if (e->next)
            e->next->prev = e->prev;
        e->next = e->prev = NULL;
        e->live = false;
        reg->nlive--;
    }
    /* Checked mode keeps the history with the quarantined header. */
    if (!keep)
        ext_free_locked(reg, e);
    pthread_mutex_unlock(&reg->lock);
    b->flags &= (uint8_t)~NBUF_F_TRACKED;
    if (!keep)
        b->ext = NULL;
}

/* ---- quarantine ---- */

void
nbuf_quarantine_push_(struct nbuf *h)
{
    struct nbuf_leak_registry *reg = h->pool ? h->pool->leaks : NULL;
    struct nbuf *evict = h;
    if (reg) {
        pthread_mutex_lock(&reg->lock);
        if (reg->qcap == 0) {
            /* No quarantine: straight back. */
        } else if (reg->qcount == reg->qcap) {
            evict = reg->quarantine[reg->qhead];
            reg->quarantine[reg->qhead] = h;
            reg->qhead = (reg->qhead + 1) % reg->qcap;
        } else {
            reg->quarantine[(reg->qhead + reg->qcount) % reg->qcap] = h;
            reg->qcount++;
            evict = NULL;
        }
        if (evict && evict->ext) {
            ext_free_locked(reg, evict->ext);
            evict->ext = NULL;
        }
        pthread_mutex_unlock(&reg->lock);
    }
    if (evict)
        header_evict(evict);
}

struct nbuf *
nbuf_quarantine_swap_(struct nbuf *b)
{
    struct nbuf *h = nbuf_header_alloc_(b->pool);
    if (!h) {
        /* No header to spare: recycle b itself, without its history. */
        ext_drop(b->pool->leaks, b);
        return b;
    }
    h->mem = b->mem;
    h->capacity = b->capacity;
    h->kind = b->kind;
    h->szind = b->szind;
    h->slab = b->slab;
    h->handle = b->handle;
    h->pool = b->pool;
    h->key = b->key;
    h->tid = b->tid;
    h->requested = b->requested;
    h->flags = b->flags & (uint8_t)~NBUF_F_TRACKED;
    h->slow = b->slow;
    h->root = NULL;
    h->ext = NULL;
    atomic_store_explicit(&h->nviews, 0, memory_order_relaxed);
    atomic_store_explicit(&h->refcnt, 0, memory_order_relaxed);
    nbuf_quarantine_push_(b);
    return h;
}

bool
nbuf_leak_check_(struct nbuf_pool *p)
{
    struct nbuf_leak_registry *reg = p->leaks;
    if (!reg)
        return true;
    bool ok = true;
    uint64_t n = 0;
    pthread_mutex_lock(&reg->lock);
    for (const struct nbuf_header_ext *e = reg->live; e && ok; e = e->next, n++)
        ok = e->live && e->buf->ext == e && (!e->next || e->next->prev == e) &&
             atomic_load_explicit(&e->buf->refcnt, memory_order_relaxed) > 0;
    ok = ok && n == reg->nlive && reg->qcount <= reg->qcap;
    for (uint32_t i = 0; i < reg->qcount && ok; i++) {
        const struct nbuf *h = reg->quarantine[(reg->qhead + i) % reg->qcap];
        ok = atomic_load_explicit(&((struct nbuf *)h)->refcnt, memory_order_relaxed) == 0 &&
             (h->flags & NBUF_F_CHECKED) && h->pool == p;
    }
    pthread_mutex_unlock(&reg->lock);
    return ok;
}

/* ---- reports ---- */

/* Where a report goes: the caller's stream, or one nbuf_report_-style
 * message assembled in memory (so a report is one event for the hook). */
struct sink {
    FILE *out;
    char *buf;
    size_t len;
};

static void
sink_open(struct sink *s, FILE *out)
{
    s->buf = NULL;
    s->len = 0;
    s->out = out ? out : open_memstream(&s->buf, &s->len);
}

static void
sink_close(struct sink *s, FILE *out)
{
    if (out) {
        fflush(out);
        return;
    }
    if (!s->out)
        return;
    fclose(s->out);
    if (s->len) {
        /* nbuf_report_ truncates long messages: deliver the same way whole. */
        void (*hook)(const char *) = __atomic_load_n(&nbuf_report_hook_, __ATOMIC_ACQUIRE);
        if (hook)
            hook(s->buf);
        else
            fputs(s->buf, stderr);
    }
    free(s->buf);
}

static void emit(struct sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
emit(struct sink *s, const char *fmt, ...)
{
    va_list ap;
    if (!s->out)
        return;
    va_start(ap, fmt);
    vfprintf(s->out, fmt, ap);
    va_end(ap);
}

static void
emit_frames(struct sink *s, struct nbuf_symbolizer *sy, void *const *pc, uint32_t depth,
            const char *indent)
{
    char name[512];
    for (uint32_t i = 0; i < depth; i++) {
        nbuf_symbolize_(sy, pc[i], name, sizeof(name));
        emit(s, "%s#%u %s\n", indent, i, name);
    }
}

/* One line per site: the innermost few frames joined by " <- ". */
static void
emit_site(struct sink *s, struct nbuf_symbolizer *sy, const struct nbuf_site *site)
{
    char line[900], name[512];
    size_t len = 0;
    line[0] = 0;
    for (uint32_t i = 0; i < site->depth && len < sizeof(line) - 1; i++) {
        nbuf_symbolize_(sy, site->pc[i], name, sizeof(name));
        int n = snprintf(line + len, sizeof(line) - len, "%s%s", i ? " <- " : "", name);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    emit(s, "nbuf:     %s (count then %u) at %s\n",
         site->op == NBUF_OP_RETAIN ? "retain" : "release", site->refcnt, line);
}

/* History of a record; the registry lock is held. */
static void
emit_history_locked(struct sink *s, const struct nbuf_header_ext *e)
{
    /* The symbolizer's lock is taken under this registry's lock only. */
    struct nbuf_symbolizer *sy = nbuf_symbolizer_open_();
    emit(s, "nbuf:   allocated (tracked allocation #%llu, %s, capacity %zu, requested %zu) at:\n",
         (unsigned long long)e->serial, kind_name(e->kind), e->capacity, e->requested);
    emit_frames(s, sy, e->alloc_pc, e->alloc_depth, "nbuf:     ");
    uint32_t n = e->nsites < NBUF_NSITES ? e->nsites : NBUF_NSITES;
    if (n) {
        emit(s, "nbuf:   last %u of %u retain/release sites, oldest first:\n", n, e->nsites);
        for (uint32_t i = e->nsites - n; i < e->nsites; i++)
            emit_site(s, sy, &e->sites[i % NBUF_NSITES]);
    }
    if (!e->live && e->free_depth) {
        emit(s, "nbuf:   released for the last time at:\n");
        emit_frames(s, sy, e->free_pc, e->free_depth, "nbuf:     ");
    }
    nbuf_symbolizer_close_(sy);
}

void
nbuf_report_buf_(const struct nbuf *b, const char *fmt, ...)
{
    struct nbuf_leak_registry *reg = b->ext && b->pool ? b->pool->leaks : NULL;
    struct sink s;
    va_list ap;
    sink_open(&s, NULL);
    if (!s.out)
        return;
    va_start(ap, fmt);
    vfprintf(s.out, fmt, ap);
    va_end(ap);
    if (reg) {
        pthread_mutex_lock(&reg->lock);
        if (b->ext)
            emit_history_locked(&s, b->ext);
        pthread_mutex_unlock(&reg->lock);
    }
    sink_close(&s, NULL);
}

static uint64_t
report(struct nbuf_pool *p, struct sink *s, const char *when)
{
    struct nbuf_leak_registry *reg = p->leaks;
    if (!reg)
        return 0;
    pthread_mutex_lock(&reg->lock);
    uint64_t n = reg->nlive;
    if (n)
        emit(s, "nbuf: %s: %llu tracked buffer%s of pool %p still live%s:\n", when,
             (unsigned long long)n, n == 1 ? "" : "s", (void *)p,
             reg->mode == LEAK_SAMPLE && !reg->checked ? " (sampled: about 1 in 128 is tracked)"
                                                       : "");
    for (const struct nbuf_header_ext *e = reg->live; e; e = e->next) {
        const struct nbuf *b = e->buf;
        emit(s, "nbuf: leak: buffer %p: %s, capacity %zu, refcount %u, readable %zu\n",
             (const void *)b, kind_name(b->kind), b->capacity,
             atomic_load_explicit(&((struct nbuf *)b)->refcnt, memory_order_relaxed),
             b->writer - b->reader);
        emit_history_locked(s, e);
    }
    pthread_mutex_unlock(&reg->lock);
    return n;
}

uint64_t
nbuf_leak_report_stream_(struct nbuf_pool *p, FILE *out)
{
    struct sink s = {.out = out};
    uint64_t n = report(p, &s, "leak report");
    if (out)
        fflush(out);
    return n;
}

void
nbuf_leak_report_pool_(struct nbuf_pool *p)
{
    struct sink s;
    if (!p->leaks) {
        nbuf_report_("nbuf: set NBUF_LEAK=full (or use checked mode) to see where the live "
                     "buffers were allocated\n");
        return;
    }
    sink_open(&s, NULL);
    report(p, &s, "nbuf_pool_free");
    sink_close(&s, NULL);
}

static struct nbuf_pool *exit_pool;

static void
report_at_exit(void)
{
    struct sink s;
    if (!exit_pool)
        return;
    sink_open(&s, NULL);
    report(exit_pool, &s, "at exit");
    sink_close(&s, NULL);
}

void
nbuf_leak_default_pool_(struct nbuf_pool *p)
{
    if (!p->leaks || p->leaks->mode == LEAK_OFF)
        return;
    exit_pool = p;
    atexit(report_at_exit);
}
