/* SPDX-License-Identifier: MIT */
/*
 * Decay: free pages purged decay_ms after their chunk turned dirty, empty
 * chunks and aged stash pairs given back, huge extents expired, on a clock
 * the test drives (no sleeps), plus the background purger on the real one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static uint64_t fake_now = 1000000;

static uint64_t
fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

/* One arena, 4 KiB pages, 1 MiB chunks; bins only up to 4 KiB and no large
 * cache, so that a 32 KiB buffer goes straight back to its chunk. */
static struct nbuf_pool_config
decay_config(int decay_ms, unsigned flags)
{
    if (t_bypass())
        cr_skip("NBUF_BYPASS=1: no chunks to decay");
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = 4096;
    cfg.chunk_size = 1u << 20;
    cfg.arenas = 1;
    cfg.cache_max_size = 4096;
    cfg.cache_large_bytes = 0;
    cfg.decay_ms = decay_ms;
    cfg.flags = flags;
    return cfg;
}

/* A pool of decay_config on the test's clock. */
static struct nbuf_pool *
decay_pool_cfg(const struct nbuf_pool_config *cfg)
{
    struct nbuf_pool *p = t_pool_new(cfg);
    if (!p->can_purge)
        cr_skip("backing cannot purge");
    nbuf_pool_set_clock_(p, fake_clock, NULL);
    return p;
}

static struct nbuf_pool *
decay_pool_large(int decay_ms, unsigned flags, size_t cache_large_bytes)
{
    struct nbuf_pool_config cfg = decay_config(decay_ms, flags);
    cfg.cache_large_bytes = cache_large_bytes;
    return decay_pool_cfg(&cfg);
}

static struct nbuf_pool *
decay_pool(int decay_ms, unsigned flags)
{
    return decay_pool_large(decay_ms, flags, 0);
}

/* Whether any page of [addr, addr + len) is in RAM. */
static bool
any_resident(const void *addr, size_t len)
{
    long sys = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(sys - 1);
    size_t n = ((uintptr_t)addr + len - a + (size_t)sys - 1) / (size_t)sys;
    unsigned char *vec = malloc(n);
    cr_assert_not_null(vec);
    cr_assert_eq(mincore((void *)a, n * (size_t)sys, vec), 0, "mincore: %s", strerror(errno));
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any |= vec[i] & 1;
    free(vec);
    return any;
}

enum { BIG = 32 << 10, NBIG = 8 };

/* @n filled 32 KiB buffers, buffer i filled with pattern i. */
static void
fill_big(struct nbuf_pool *p, struct nbuf **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        v[i] = nbuf_alloc(p, BIG);
        cr_assert_not_null(v[i]);
        t_buf_fill(v[i], i);
    }
}

/* NBIG filled 32 KiB buffers; the first @nfree released again. */
static void
fill_and_free(struct nbuf_pool *p, struct nbuf **v, unsigned nfree)
{
    fill_big(p, v, NBIG);
    for (unsigned i = 0; i < nfree; i++) {
        nbuf_release(v[i]);
        v[i] = NULL;
    }
}

static void
release_all(struct nbuf **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        nbuf_release(v[i]);
}

Test(decay, free_pages_purged_once_the_period_has_passed)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NBIG];
    uint8_t *mem[NBIG];
    for (unsigned i = 0; i < NBIG; i++) {
        v[i] = nbuf_alloc(p, BIG);
        cr_assert_not_null(v[i]);
        t_buf_fill(v[i], i);
        mem[i] = v[i]->mem;
    }
    for (unsigned i = 0; i < 4; i++)
        nbuf_release(v[i]);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 4 * BIG, "dirty %llu", (unsigned long long)st.dirty_bytes);
    cr_assert(any_resident(mem[0], BIG));
    uint64_t t0 = fake_now;

    fake_now = t0 + 99; /* not yet */
    cr_assert_eq(nbuf_pool_decay_(p, fake_now), t0 + 100);
    cr_assert_eq(t_stats(p).dirty_bytes, 4 * BIG);

    fake_now = t0 + 100;
    cr_assert_eq(nbuf_pool_decay_(p, fake_now), NBUF_NEVER);
    st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_eq(st.purged_bytes, 4 * BIG);
    cr_assert_eq(st.purges, 1, "the four runs merged into one stretch: %llu calls",
                 (unsigned long long)st.purges);
    cr_assert_eq(st.resident_bytes, 4 * BIG, "the four live buffers");
    for (unsigned i = 0; i < 4; i++)
        cr_assert(!any_resident(mem[i], BIG), "buffer %u's pages are gone", i);
    /* The live ones are untouched. */
    for (unsigned i = 4; i < NBIG; i++)
        cr_assert(t_buf_verify(v[i], i));
    /* Purged memory serves new buffers like any other. */
    for (unsigned i = 0; i < 4; i++) {
        v[i] = nbuf_alloc(p, BIG);
        cr_assert_not_null(v[i]);
        t_buf_fill(v[i], 100 + i);
    }
    for (unsigned i = 0; i < 4; i++)
        cr_assert(t_buf_verify(v[i], 100 + i));
    release_all(v, NBIG);
    t_pool_done(p);
}

Test(decay, zero_purges_at_once)
{
    struct nbuf_pool *p = decay_pool(0, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, 4);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_eq(st.purged_bytes, 4 * BIG);
    release_all(v + 4, NBIG - 4);
    t_pool_done(p);
}

Test(decay, minus_one_never_purges_but_trim_does)
{
    struct nbuf_pool *p = decay_pool(-1, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, 4);
    fake_now += 1000u * 1000 * 1000;
    cr_assert_eq(nbuf_pool_decay_(p, fake_now), NBUF_NEVER);
    cr_assert_eq(t_stats(p).dirty_bytes, 4 * BIG);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_eq(st.purged_bytes, 4 * BIG);
    release_all(v + 4, NBIG - 4);
    t_pool_done(p);
}

/* Every other buffer of @n released: @n / 2 dirty runs that cannot merge,
 * in chunks that stay in use. */
static void
free_every_other(struct nbuf_pool *p, struct nbuf **v, unsigned n)
{
    fill_big(p, v, n);
    for (unsigned i = 0; i < n; i += 2) {
        nbuf_release(v[i]);
        v[i] = NULL;
    }
}

#define NBOUND 192 /* 6 MiB of 32 KiB buffers: 3 MiB freed, over the bound */

/* The dirty bound holds whatever the clock says: no decay pass ran (the
 * clock never moves), yet the arena keeps at most NBUF_DIRTY_MIN_BYTES
 * dirty (1/64 of 7 chunks is less), purged down to half of it. */
Test(decay, dirty_bound_purges_without_the_clock)
{
    struct nbuf_pool *p = decay_pool(3600 * 1000, 0);
    static struct nbuf *v[NBOUND];
    free_every_other(p, v, NBOUND);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_leq(st.dirty_bytes, NBUF_DIRTY_MIN_BYTES, "dirty %llu",
                  (unsigned long long)st.dirty_bytes);
    cr_assert_geq(st.purged_bytes, NBOUND / 2 * BIG - NBUF_DIRTY_MIN_BYTES, "purged %llu",
                  (unsigned long long)st.purged_bytes);
    cr_assert_eq(st.dirty_bytes + st.purged_bytes, NBOUND / 2 * BIG);
    cr_assert_gt(st.purges, 0);
    t_pool_check(p);
    /* The live ones are untouched, and the purged pages serve again. */
    for (unsigned i = 1; i < NBOUND; i += 2)
        cr_assert(t_buf_verify(v[i], i));
    for (unsigned i = 0; i < NBOUND; i += 2) {
        v[i] = nbuf_alloc(p, BIG);
        cr_assert_not_null(v[i]);
        t_buf_fill(v[i], 1000 + i);
    }
    for (unsigned i = 0; i < NBOUND; i += 2)
        cr_assert(t_buf_verify(v[i], 1000 + i));
    cr_assert_eq(t_stats(p).dirty_bytes, 0, "every free page reused");
    release_all(v, NBOUND);
    t_pool_done(p);
}

/* decay_ms -1 means never purge: not even over the bound. */
Test(decay, dirty_bound_off_with_minus_one)
{
    struct nbuf_pool *p = decay_pool(-1, 0);
    static struct nbuf *v[NBOUND];
    free_every_other(p, v, NBOUND);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, NBOUND / 2 * BIG);
    cr_assert_eq(st.purges, 0);
    for (unsigned i = 1; i < NBOUND; i += 2)
        nbuf_release(v[i]);
    t_pool_done(p);
}

Test(decay, slow_path_events_run_the_pass)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, 4);
    fake_now += 100;
    /* A 32 KiB allocation takes the arena lock: the pass runs there. It may
     * take a run from the dirty ones; the rest are purged. */
    struct nbuf *b = nbuf_alloc(p, BIG);
    cr_assert_not_null(b);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_geq(st.purged_bytes, 3 * BIG);
    nbuf_release(b);
    release_all(v + 4, NBIG - 4);
    t_pool_done(p);
}

Test(decay, empty_chunk_goes_back_after_the_period)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, NBIG);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.chunks, 1, "the reserve chunk stays at first");
    cr_assert_eq(st.empty_chunks, 1);
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    st = t_stats(p);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.backing_bytes, 0);
    cr_assert_eq(st.resident_bytes, 0);
    /* And a new one comes when needed. */
    fill_and_free(p, v, 0);
    cr_assert_eq(t_stats(p).chunks, 1);
    release_all(v, NBIG);
    t_pool_done(p);
}

/* 1 KiB buffers: 400 released fill the thread's bin (128) and overflow to
 * the arena's stash. */
enum { NSMALL = 400 };

static void
small_burst(struct nbuf_pool *p, struct nbuf **v)
{
    if (p->cfg.flags & (NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED))
        cr_skip("needs thread caches (they overflow to the stash)");
    for (unsigned i = 0; i < NSMALL; i++) {
        v[i] = nbuf_alloc(p, 1024);
        cr_assert_not_null(v[i]);
        t_buf_fill(v[i], i);
    }
    release_all(v, NSMALL);
}

static uint64_t
stashed(struct nbuf_pool *p)
{
    nbuf_arena_lock_(&p->arenas[0]);
    uint64_t n = p->arenas[0].stash_bytes;
    nbuf_arena_unlock_(&p->arenas[0]);
    return n;
}

Test(decay, stashed_pairs_unused_for_a_period_go_back)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NSMALL];
    small_burst(p, v);
    cr_assert_gt(stashed(p), 0, "released pairs overflow to the stash");
    /* First period: the stash's low-water mark is taken. */
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    cr_assert_gt(stashed(p), 0);
    /* Second: nothing took them meanwhile, so they go back to their chunk. */
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    cr_assert_eq(stashed(p), 0);
    /* Third: what they occupied is purged. Only this thread's bin remains. */
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.dirty_bytes, 0);
    cr_assert_leq(st.resident_bytes, st.cache_bound_bytes + (64u << 10),
                  "resident %llu, bound %llu", (unsigned long long)st.resident_bytes,
                  (unsigned long long)st.cache_bound_bytes);
    t_pool_done(p);
}

/* Pairs taken from the stash during a period keep the stash's size. */
Test(decay, stash_in_use_is_not_aged)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NSMALL];
    small_burst(p, v);
    uint64_t kept = stashed(p);
    cr_assert_gt(kept, 0);
    for (unsigned round = 0; round < 4; round++) {
        fake_now += 100;
        small_burst(p, v); /* refills from the stash, then overflows to it */
        nbuf_pool_decay_(p, fake_now);
        cr_assert_eq(stashed(p), kept, "round %u", round);
    }
    t_pool_done(p);
}

static void *
burst_and_exit(void *arg)
{
    struct nbuf_pool *p = arg;
    struct nbuf *v[64];
    for (unsigned i = 0; i < 64; i++) {
        v[i] = nbuf_alloc(p, 64 + i * 600);
        T_CHECK(v[i] != NULL);
        if (v[i])
            t_buf_fill(v[i], i);
    }
    for (unsigned i = 0; i < 64; i++)
        nbuf_release(v[i]);
    return NULL;
}

/* A thread bursts and exits: its cache goes to the arena, and decay takes
 * everything back within three periods with no call from anyone. */
Test(decay, thread_exit_then_idle_gives_everything_back)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    t_run_thread(burst_and_exit, p);
    t_thread_assert_ok();
    cr_assert_gt(t_stats(p).resident_bytes, 0);
    for (unsigned k = 0; k < 3; k++) {
        fake_now += 100;
        nbuf_pool_decay_(p, fake_now);
    }
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.cached_bytes, 0);
    cr_assert_eq(st.resident_bytes, 0, "resident %llu", (unsigned long long)st.resident_bytes);
    cr_assert_eq(st.chunks, 0);
    t_pool_done(p);
}

Test(decay, huge_extents_expire)
{
    /* cache_large_bytes also turns the huge-extent cache on. */
    struct nbuf_pool *p = decay_pool_large(100, 0, 4u << 20);
    if (!p->huge_cache.cap)
        cr_skip("no huge cache in this mode");
    struct nbuf *b = nbuf_alloc(p, 2u << 20);
    cr_assert_not_null(b);
    t_buf_fill(b, 7);
    nbuf_release(b);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_geq(st.cached_bytes, 2u << 20, "the extent is cached");
    cr_assert_geq(st.resident_bytes, 2u << 20, "and counted resident");
    fake_now += 99;
    nbuf_pool_decay_(p, fake_now);
    cr_assert_geq(t_stats(p).cached_bytes, 2u << 20);
    fake_now += 1;
    nbuf_pool_decay_(p, fake_now);
    st = t_stats(p);
    cr_assert_eq(st.cached_bytes, 0);
    cr_assert_eq(st.backing_bytes, 0);
    t_pool_done(p);
}

/* What decay gives back, memory_limit gets back: a full pool can allocate
 * again once its empty chunk decayed, without a trim. */
Test(decay, memory_limit_sees_returned_chunks)
{
    struct nbuf_pool_config cfg = decay_config(100, 0);
    cfg.memory_limit = 1u << 20;
    struct nbuf_pool *p = decay_pool_cfg(&cfg);
    struct nbuf *b = nbuf_alloc(p, 512u << 10);
    cr_assert_not_null(b);
    nbuf_release(b);
    cr_assert_eq(t_stats(p).backing_bytes, 1u << 20);
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    cr_assert_eq(t_stats(p).backing_bytes, 0);
    b = nbuf_alloc(p, 512u << 10);
    cr_assert_not_null(b);
    cr_assert_eq(t_stats(p).backing_bytes, 1u << 20);
    nbuf_release(b);
    t_pool_done(p);
}

Test(decay, zero_flag_reads_zero_after_a_purge)
{
    struct nbuf_pool *p = decay_pool(100, NBUF_POOL_ZERO);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, NBIG);
    fake_now += 100;
    for (unsigned i = 0; i < NBIG; i++) {
        v[i] = nbuf_alloc(p, BIG);
        cr_assert_not_null(v[i]);
        const uint8_t *w = nbuf_reserve(v[i], BIG);
        for (size_t k = 0; k < BIG; k++)
            cr_assert_eq(w[k], 0, "buffer %u byte %zu", i, k);
    }
    release_all(v, NBIG);
    t_pool_done(p);
}

Test(decay, config_and_environment)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cr_assert_eq(cfg.decay_ms, NBUF_DECAY_MS_DEFAULT);
    cfg.decay_ms = -2;
    errno = 0;
    cr_assert_null(nbuf_pool_new(&cfg));
    cr_assert_eq(errno, EINVAL);
    cr_assert_eq(nbuf_pool_background(NULL, 1), -EINVAL);
    /* Criterion runs each case in its own process: the default pool is
     * created here, from the environment. */
    setenv("NBUF_DECAY_MS", "-1", 1);
    struct nbuf_pool *d = nbuf_pool_default();
    cr_assert_not_null(d);
    cr_assert_eq(d->decay_ms, -1);
}

Test(decay, bad_environment_is_reported_and_ignored)
{
    t_capture_reports();
    setenv("NBUF_DECAY_MS", "soon", 1);
    struct nbuf_pool *d = nbuf_pool_default();
    cr_assert_not_null(d);
    cr_assert_eq(d->decay_ms, NBUF_DECAY_MS_DEFAULT);
    cr_assert_eq(t_reports(), 1);
    cr_assert(strstr(t_report_text(), "NBUF_DECAY_MS") != NULL);
}

Test(decay, stats_print_the_decay_figures)
{
    struct nbuf_pool *p = decay_pool(100, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, 4);
    fake_now += 100;
    nbuf_pool_decay_(p, fake_now);
    char *text = NULL, *json = NULL;
    size_t tn = 0, jn = 0;
    FILE *f = open_memstream(&text, &tn);
    cr_assert_eq(nbuf_pool_print_stats(p, f, NBUF_FORMAT_TEXT), 0);
    fclose(f);
    f = open_memstream(&json, &jn);
    cr_assert_eq(nbuf_pool_print_stats(p, f, NBUF_FORMAT_JSON), 0);
    fclose(f);
    cr_assert(strstr(text, "purged_bytes       131072") != NULL, "%s", text);
    cr_assert(strstr(text, "131072 purged bytes in 1 purges") != NULL, "%s", text);
    cr_assert(strstr(json, "\"dirty_bytes\":0") != NULL, "%s", json);
    cr_assert(strstr(json, "\"purged_bytes\":131072") != NULL, "%s", json);
    cr_assert(strstr(json, "\"cache_bound_bytes\":") != NULL, "%s", json);
    free(text);
    free(json);
    release_all(v + 4, NBIG - 4);
    t_pool_done(p);
}

/* ---- the background purger, on the real clock ---- */

static struct nbuf_pool *
real_clock_pool(int decay_ms, unsigned flags)
{
    struct nbuf_pool_config cfg = decay_config(decay_ms, flags);
    return t_pool_new(&cfg);
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

Test(decay, background_purger_empties_an_idle_pool)
{
    struct nbuf_pool *p = real_clock_pool(200, 0);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, NBIG);
    cr_assert_gt(t_stats(p).resident_bytes, 0);
    /* No call into the pool from here: only the purger can do it. Allow
     * for a loaded machine: up to 5 s for a 200 ms decay. */
    unsigned waited = 0;
    while (t_stats(p).chunks && waited < 5000) {
        sleep_ms(10);
        waited += 10;
    }
    cr_assert(nbuf_decay_purger_running_());
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.chunks, 0, "still %llu chunks after %u ms", (unsigned long long)st.chunks,
                 waited);
    cr_assert_eq(st.resident_bytes, 0);
    t_pool_done(p);
}

Test(decay, no_background_waits_for_the_next_event)
{
    struct nbuf_pool *p = real_clock_pool(20, NBUF_POOL_NO_BACKGROUND);
    struct nbuf *v[NBIG];
    fill_and_free(p, v, NBIG);
    sleep_ms(200);
    cr_assert_eq(t_stats(p).chunks, 1, "nobody purged");
    /* Turned on, it is picked up at once. */
    cr_assert_eq(nbuf_pool_background(p, 1), 0);
    cr_assert_eq(t_stats(p).chunks, 0, "due work runs when background purging is turned on");
    t_pool_done(p);
}
