/* SPDX-License-Identifier: MIT */
/* Checked mode (junk fill, quarantine, reports with history), zeroing and
 * scrubbing (CHECKLIST G46), and the environment switches. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common.h"

TestSuite(debug);

static struct nbuf_pool *
pool_flags(unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags = flags;
    return t_pool_new(&cfg);
}

/* Under valgrind, memory handed out again is "undefined" whatever it holds:
 * say the test knows what it reads. */
static void
known(const void *mem, size_t n)
{
#ifdef NBUF_HAVE_VALGRIND
    VALGRIND_MAKE_MEM_DEFINED(mem, n);
#else
    (void)mem;
    (void)n;
#endif
}

/* Peek at pool memory nobody owns (poisoned under ASan and valgrind). */
static bool
all_bytes(const uint8_t *mem, size_t n, uint8_t v)
{
    NBUF_UNPOISON((void *)mem, n);
    known(mem, n);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = mem[i] == v;
    NBUF_POISON((void *)mem, n);
    return ok;
}

static const size_t sizes[] = {1, 100, 5000, 40000, 300000, (5u << 20) + 3};

Test(debug, checked_junk_on_alloc_and_release)
{
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    bool zero = p->cfg.flags & NBUF_POOL_ZERO;
    for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct nbuf *b = nbuf_alloc(p, sizes[i]);
        cr_assert_not_null(b);
        for (size_t k = 0; k < nbuf_capacity(b); k++)
            cr_assert_eq(b->mem[k], zero ? 0 : 0xa5, "size %zu byte %zu", sizes[i], k);
        memset(b->mem, 0x11, nbuf_capacity(b));
        bool pooled = b->kind == NBUF_KIND_SMALL || b->kind == NBUF_KIND_RUN;
        const uint8_t *mem = b->mem;
        size_t usize = pooled ? nbuf_sz_usize_(b->szind) : 0;
        bool scrub = b->flags & NBUF_F_SCRUB;
        nbuf_release(b);
        if (pooled)
            cr_assert(all_bytes(mem, usize, scrub ? 0 : 0x5a), "size %zu: junk on release",
                      sizes[i]);
    }
    t_pool_done(p);
}

/* Released headers wait in a FIFO of NBUF_QUARANTINE before reuse; the
 * memory goes on at once under a fresh header. */
Test(debug, quarantine_fifo)
{
    setenv("NBUF_QUARANTINE", "8", 1);
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    unsetenv("NBUF_QUARANTINE");
    struct nbuf_leak_registry *reg = p->leaks;
    cr_assert_not_null(reg);
    cr_assert_eq(reg->qcap, 8);
    struct nbuf *first = nbuf_alloc(p, 64);
    nbuf_release(first);
    cr_assert_eq(reg->qcount, 1);
    cr_assert_eq(nbuf_refcnt(first), 0);
    cr_assert_not_null(first->ext, "history kept while quarantined");
    for (int i = 0; i < 7; i++) {
        struct nbuf *b = nbuf_alloc(p, 64);
        cr_assert_neq(b, first, "round %d: header reused from quarantine", i);
        nbuf_release(b);
    }
    cr_assert_eq(reg->qcount, 8);
    cr_assert(nbuf_leak_check_(p));
    cr_assert_eq(reg->quarantine[reg->qhead], first, "oldest first");
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_release(b); /* evicts first */
    cr_assert_neq(reg->quarantine[reg->qhead], first);
    if (!t_bypass()) /* bypass headers are freed on eviction */
        cr_assert_null(first->ext, "history dropped on eviction");
    t_pool_done(p);
}

Test(debug, quarantine_off)
{
    setenv("NBUF_QUARANTINE", "0", 1);
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    unsetenv("NBUF_QUARANTINE");
    for (int i = 0; i < 100; i++)
        nbuf_release(nbuf_alloc(p, 64));
    cr_assert_eq(p->leaks->qcount, 0);
    t_pool_done(p);
}

/* A double release in checked mode reports the whole history. */
Test(debug, checked_report_has_history)
{
    t_capture_reports();
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_retain(b);
    nbuf_release(b);
    nbuf_release(b);
    cr_assert_eq(t_reports(), 0);
    cr_assert_eq(nbuf_release(b), -EINVAL);
    cr_assert_eq(t_reports(), 1, "one report per event");
    const char *t = t_report_text();
    cr_assert(strstr(t, "nbuf_release("), "%s", t);
    cr_assert(strstr(t, "already released"), "%s", t);
    cr_assert(strstr(t, "allocated (tracked allocation #1"), "%s", t);
    cr_assert(strstr(t, "retain (count then 2)"), "%s", t);
    cr_assert(strstr(t, "release (count then 1)"), "%s", t);
    cr_assert(strstr(t, "released for the last time at"), "%s", t);
    t_pool_done(p);
}

/* Views, wraps and maps of a checked pool are quarantined too. */
Test(debug, checked_views)
{
    t_capture_reports();
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_write(b, "abc", 3);
    struct nbuf *s = nbuf_slice(b, 0, 2);
    cr_assert(s->flags & NBUF_F_CHECKED);
    cr_assert_eq(nbuf_release(s), 1);
    cr_assert_eq(nbuf_release(s), -EINVAL);
    cr_assert_eq(nbuf_refcnt(b), 1, "the root lost exactly one reference");
    cr_assert_null(nbuf_slice(s, 0, 1));
    cr_assert_eq(t_reports(), 2);
    cr_assert(strstr(t_report_text(), "view, capacity 2"), "%s", t_report_text());
    cr_assert(nbuf_leak_check_(p));
    nbuf_release(b);
    cr_assert(nbuf_leak_check_(p));
    t_pool_done(p);
}

/* Growth in checked mode: new room is junk, not stale bytes. */
Test(debug, checked_growth)
{
    struct nbuf_pool *p = pool_flags(NBUF_POOL_CHECKED);
    if (p->cfg.flags & NBUF_POOL_ZERO) {
        t_pool_done(p);
        cr_skip_test("zeroing wins over junk");
    }
    struct nbuf *b = nbuf_alloc(p, 16);
    nbuf_write(b, "0123456789abcdef", 16);
    nbuf_write(b, "!", 1);
    cr_assert_geq(nbuf_capacity(b), 17);
    cr_assert_eq(memcmp(b->mem, "0123456789abcdef!", 17), 0);
    for (size_t i = 17; i < nbuf_capacity(b); i++)
        cr_assert_eq(b->mem[i], 0xa5);
    nbuf_release(b);
    t_pool_done(p);
}

/* G46: with NBUF_POOL_ZERO a fresh buffer never shows a previous owner's
 * bytes, whichever path it comes from. */
Test(debug, pool_zero)
{
    struct nbuf_pool *p = pool_flags(NBUF_POOL_ZERO);
    for (int round = 0; round < 3; round++) {
        for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            struct nbuf *b = nbuf_alloc(p, sizes[i]);
            for (size_t k = 0; k < nbuf_capacity(b); k++)
                cr_assert_eq(b->mem[k], 0, "size %zu byte %zu", sizes[i], k);
            memset(b->mem, 0xee, nbuf_capacity(b));
            nbuf_release(b);
        }
    }
    t_pool_done(p);
}

/* G46: NBUF_POOL_SCRUB zeroes on release, so the allocation fast path hands
 * out zeroed memory. */
Test(debug, pool_scrub)
{
    struct nbuf_pool *p = pool_flags(NBUF_POOL_SCRUB);
    /* Checked mode junk-fills on allocation: never the old bytes either. */
    uint8_t fresh =
        (p->cfg.flags & (NBUF_POOL_CHECKED | NBUF_POOL_ZERO)) == NBUF_POOL_CHECKED ? 0xa5 : 0;
    for (int round = 0; round < 3; round++) {
        for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            struct nbuf *b = nbuf_alloc(p, sizes[i]);
            known(b->mem, nbuf_capacity(b));
            if (round > 0 && b->kind != NBUF_KIND_HUGE && b->kind != NBUF_KIND_BYPASS)
                for (size_t k = 0; k < nbuf_capacity(b); k++)
                    cr_assert_eq(b->mem[k], fresh, "size %zu byte %zu", sizes[i], k);
            memset(b->mem, 0xee, nbuf_capacity(b));
            bool pooled = b->kind == NBUF_KIND_SMALL || b->kind == NBUF_KIND_RUN;
            const uint8_t *mem = b->mem;
            size_t usize = pooled ? nbuf_sz_usize_(b->szind) : 0;
            nbuf_release(b);
            if (pooled)
                cr_assert(all_bytes(mem, usize, 0), "scrubbed on release");
        }
    }
    t_pool_done(p);
}

/* NBUF_ZERO on one allocation, also after a previous owner. */
Test(debug, alloc_zero_flag)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = nbuf_alloc(p, 1000);
    memset(b->mem, 0xee, nbuf_capacity(b));
    nbuf_release(b);
    b = nbuf_alloc_ex(p, 1000, 1 << 20, NBUF_ZERO);
    for (size_t k = 0; k < nbuf_capacity(b); k++)
        cr_assert_eq(b->mem[k], 0);
    nbuf_release(b);
    t_pool_done(p);
}

/* The environment reaches every pool. */
Test(debug, environment_flags)
{
    setenv("NBUF_CHECK", "1", 1);
    setenv("NBUF_ZERO", "yes", 1);
    setenv("NBUF_SCRUB", "1", 1);
    struct nbuf_pool *p = t_pool_new(NULL);
    unsetenv("NBUF_CHECK");
    unsetenv("NBUF_ZERO");
    unsetenv("NBUF_SCRUB");
    cr_assert(p->cfg.flags & NBUF_POOL_CHECKED);
    cr_assert(p->cfg.flags & NBUF_POOL_ZERO);
    cr_assert(p->cfg.flags & NBUF_POOL_SCRUB);
    cr_assert(!nbuf_pool_fast_(p), "slow paths only");
    cr_assert_not_null(p->leaks);
    struct nbuf *b = nbuf_alloc(p, 10);
    cr_assert(b->slow);
    cr_assert(b->flags & NBUF_F_TRACKED);
    nbuf_release(b);
    t_pool_done(p);
    if (NBUF_RUNNING_ON_VALGRIND() || t_bypass())
        return;
    setenv("NBUF_CHECK", "0", 1);
    unsetenv("NBUF_LEAK");
    p = t_pool_new(NULL);
    unsetenv("NBUF_CHECK");
    cr_assert_eq(p->cfg.flags & NBUF_POOL_CHECKED, 0);
    cr_assert(nbuf_pool_fast_(p));
    t_pool_done(p);
}

/* Under valgrind every buffer takes the annotated slow paths. */
Test(debug, valgrind_takes_slow_paths)
{
    if (!NBUF_RUNNING_ON_VALGRIND())
        cr_skip_test("not running on valgrind");
    struct nbuf_pool *p = t_pool_new(NULL);
    cr_assert(!nbuf_pool_fast_(p));
    cr_assert(p->buf_slow);
    t_pool_done(p);
}

/* The invariant checker accepts every kind of buffer nbuf makes. */
Test(debug, buf_check_every_kind)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    static char data[32];
    struct nbuf *v[] = {
        nbuf_alloc(p, 10),
        nbuf_alloc(p, 100000),
        nbuf_alloc(p, p->cfg.chunk_size + 1),
        nbuf_wrap(data, sizeof(data), NULL, NULL),
    };
    for (unsigned i = 0; i < 4; i++) {
        cr_assert_not_null(v[i]);
        nbuf_write(v[i], "x", i < 3);
        cr_assert(nbuf_buf_check_(v[i]), "kind %u", v[i]->kind);
        struct nbuf *s = nbuf_slice(v[i], 0, 1);
        cr_assert(nbuf_buf_check_(s));
        nbuf_release(s);
        nbuf_release(v[i]);
    }
    t_pool_done(p);
}

/* ---- the report sink and its rate limit (issue 16) ---- */

static char sink_text[8192];
static unsigned sink_calls;

static void
sink_fn(const char *msg, void *ctx)
{
    cr_assert_eq(ctx, (void *)&sink_calls);
    sink_calls++;
    strncat(sink_text, msg, sizeof(sink_text) - strlen(sink_text) - 1);
}

static void
next_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    time_t now = ts.tv_sec;
    while (ts.tv_sec == now) {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    }
}

Test(debug, report_fn_gets_reports_rate_limited)
{
    next_second(); /* the burst below fits one second */
    nbuf_set_report_fn(sink_fn, &sink_calls);
    for (unsigned i = 0; i < 1000; i++)
        nbuf_report_("nbuf: test report %u\n", i);
    cr_assert_eq(sink_calls, 10, "%u calls", sink_calls);
    cr_assert(strstr(sink_text, "test report 9\n") != NULL, "%s", sink_text);
    cr_assert(strstr(sink_text, "test report 10\n") == NULL, "%s", sink_text);
    /* Another kind is not held back by the first. */
    nbuf_report_("nbuf: another kind\n");
    cr_assert_eq(sink_calls, 11);
    /* A second later the next one says how many were left out. */
    next_second();
    sink_text[0] = 0;
    nbuf_report_("nbuf: test report %u\n", 1000u);
    cr_assert(strstr(sink_text, "990 more reports like the next one were left out") != NULL, "%s",
              sink_text);
    cr_assert(strstr(sink_text, "test report 1000\n") != NULL, "%s", sink_text);
    /* NULL restores stderr: nothing more reaches the function. */
    nbuf_set_report_fn(NULL, NULL);
    unsigned calls = sink_calls;
    nbuf_report_("nbuf: to stderr\n");
    cr_assert_eq(sink_calls, calls);
}

/* A real source of repeats: 1000 allocations refused by memory_limit give
 * at most a burst of reports, not 1000 lines. */
Test(debug, repeated_limit_failures_are_limited)
{
    if (t_bypass())
        cr_skip("bypass: the system allocator ignores memory_limit");
    next_second();
    nbuf_set_report_fn(sink_fn, &sink_calls);
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.memory_limit = 1u << 20;
    struct nbuf_pool *p = t_pool_new(&cfg);
    for (unsigned i = 0; i < 1000; i++)
        cr_assert_null(nbuf_alloc(p, 2u << 20));
    cr_assert_leq(sink_calls, 10, "%u reports", sink_calls);
    cr_assert_gt(sink_calls, 0);
    nbuf_set_report_fn(NULL, NULL);
    t_pool_done(p);
}
