/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test suites: pools that check themselves on the way
 * out, a report capture, and a deterministic PRNG. */
#ifndef NBUF_TEST_COMMON_H
#define NBUF_TEST_COMMON_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* A pool with the given config (NULL: defaults); aborts the test on failure. */
struct nbuf_pool *t_pool_new(const struct nbuf_pool_config *cfg);
/* Asserts the invariant checkers pass, no buffer is live, then frees. */
void t_pool_done(struct nbuf_pool *p);
/* Asserts that the pool's invariant checkers pass now. */
void t_pool_check(struct nbuf_pool *p);
/* Whether NBUF_BYPASS is set (pooled-layout tests skip themselves). */
bool t_bypass(void);

/* Capture nbuf's reports (double releases, leaks...) instead of stderr. */
void t_capture_reports(void);
/* Number of reports captured and the concatenated text (cleared by start). */
unsigned t_reports(void);
const char *t_report_text(void);

/* xorshift64*: deterministic per seed. */
static inline uint64_t
t_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* ---- allocator-core helpers (test_backing ... test_stress) ---- */

/* A snapshot of @p's counters (asserts that nbuf_pool_stats succeeds). */
struct nbuf_pool_stats t_stats(struct nbuf_pool *p);
/* Assert two snapshots agree on every counter that an allocation or a
 * release moves (limit_failures, threads and cached_bytes excluded). */
void t_stats_assert_same(const struct nbuf_pool_stats *a, const struct nbuf_pool_stats *b);

/* A pattern derived from @seed over [0, n); _bad returns the first offset that
 * differs, or SIZE_MAX. */
void t_pattern_fill(void *dst, size_t n, uint64_t seed);
size_t t_pattern_bad(const void *src, size_t n, uint64_t seed);
/* Write @b's whole writable room with the pattern and commit it; verify that
 * every readable byte reads back (false on the first wrong byte). */
void t_buf_fill(struct nbuf *b, uint64_t seed);
bool t_buf_verify(const struct nbuf *b, uint64_t seed);

/* Checks for any thread: Criterion's asserts abort the test only from its
 * own thread, so workers record failures and the test thread reports them. */
#define T_CHECK(cond) ((cond) ? (void)0 : t_thread_fail_(__FILE__, __LINE__, #cond))
void t_thread_fail_(const char *file, int line, const char *expr);
/* Asserts (on the test's thread) that no T_CHECK has failed. */
void t_thread_assert_ok(void);
/* Run fn(arg) on a new thread and join it. */
void t_run_thread(void *(*fn)(void *), void *arg);

/* A connected loopback TCP pair (TCP_NODELAY on both ends), blocking. */
void t_tcp_pair(int sv[2]);

/* A thread body (t_reader_main(&r)) that reads @fd to end of file, or
 * until stop_after bytes and then closes @fd, comparing with ref[0, want). */
struct t_reader {
    int fd;
    const uint8_t *ref;
    size_t want, got, stop_after;
    bool bad;
};
void *t_reader_main(void *arg);

/* A composite of ref[0, len) in pooled pieces of 1 to @piece bytes, each
 * its own buffer (so each is a component). */
struct nbuf_composite *t_frame_new(struct nbuf_pool *p, const uint8_t *ref, size_t len,
                                   size_t piece, uint64_t *seed);

#if NBUF_HAVE_IO_URING
/* An io_uring of 64 entries, or the test is skipped when this kernel or
 * sandbox refuses one. */
struct nbuf_uring *t_ring_or_skip(void);
#endif

/* Tests that write pooled memory outside any buffer (chunk runs, raw pairs)
 * unpoison it first (ASan builds poison memory no buffer owns) and poison it
 * again before giving it back. */
#ifdef NBUF_UNPOISON
#define T_UNPOISON(p, n) NBUF_UNPOISON(p, n)
#define T_POISON(p, n) NBUF_POISON(p, n)
#else
#define T_UNPOISON(p, n) ((void)(p), (void)(n))
#define T_POISON(p, n) ((void)(p), (void)(n))
#endif

#endif
