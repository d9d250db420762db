/* SPDX-License-Identifier: MIT */
#include "common.h"

Test(size_class, lookup_matches_slow_path)
{
    for (size_t s = 0; s <= 1u << 20; s++) {
        unsigned i = nbuf_sz_index_(s);
        cr_assert_eq(i, nbuf_sz_index_slow_(s), "size %zu", s);
        cr_assert_geq(nbuf_sz_usize_(i), s, "size %zu in class %u", s, i);
        if (i > 0)
            cr_assert_lt(nbuf_sz_usize_(i - 1), s, "size %zu not in the smallest class", s);
    }
}

Test(size_class, boundaries_plus_minus_one)
{
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        size_t u = nbuf_sz_usize_(i);
        cr_assert_eq(nbuf_sz_index_(u), i, "class %u size %zu", i, u);
        if (i + 1 < NBUF_NCLASSES)
            cr_assert_eq(nbuf_sz_index_(u + 1), i + 1, "class %u size %zu + 1", i, u);
        if (u > 16)
            cr_assert_eq(nbuf_sz_index_(u - 1), i, "class %u size %zu - 1", i, u);
        if (i > 8) {
            /* At most a fifth wasted: 4 classes per doubling after 128 B. */
            size_t prev = nbuf_sz_usize_(i - 1);
            cr_assert_leq((u - prev) * 4, u, "class %u spacing", i);
        }
    }
    cr_assert_eq(nbuf_sz_usize_(NBUF_NCLASSES - 1), (size_t)1 << 30);
}

Test(size_class, run_bins_floor_and_ceil)
{
    for (uint32_t n = 1; n <= 65536; n++) {
        unsigned f = nbuf_run_bin_floor_(n), c = nbuf_run_bin_ceil_(n);
        cr_assert_lt(c, NBUF_RUN_BINS);
        cr_assert(f == c || f + 1 == c, "n %u floor %u ceil %u", n, f, c);
        /* Every run filed in bin >= ceil(m) is at least m pages. */
        if (n > 1)
            cr_assert_geq(nbuf_run_bin_floor_(n), nbuf_run_bin_floor_(n - 1));
    }
    for (uint32_t m = 1; m <= 4096; m++)
        for (uint32_t n = 1; n < m; n++)
            cr_assert_lt(nbuf_run_bin_floor_(n), nbuf_run_bin_ceil_(m), "run %u request %u", n, m);
}

Test(size_class, subpage_runs_waste_no_tail)
{
    size_t pages[] = {4096, 8192, 16384, 65536};
    for (unsigned k = 0; k < 4; k++) {
        for (unsigned i = 0; nbuf_sz_usize_(i) < 4 * pages[k]; i++) {
            size_t u = nbuf_sz_usize_(i);
            uint32_t n = nbuf_sz_run_pages_(u, pages[k]);
            cr_assert_leq(n, 7, "class %zu page %zu: %u pages", u, pages[k], n);
            cr_assert_eq((n * pages[k]) % u, 0);
        }
    }
}
