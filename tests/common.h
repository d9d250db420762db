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

#endif
