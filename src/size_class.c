/* SPDX-License-Identifier: MIT */
/*
 * The size-class table and its O(1) lookup.
 *
 * Classes follow jemalloc: a 16-byte quantum up to 128 B, then four classes
 * per doubling, so a request wastes at most 1/5 of its class (about 10 % on
 * average for log-uniform sizes):
 *
 *   szind   0..7   16  32  48  64  80  96 112 128        (16 B steps)
 *   szind   8..11  160 192 224 256                       (32 B steps)
 *   szind  12..15  320 384 448 512                       (64 B steps)
 *   ...    8+4g+k  2^(g+7) + (k+1) * 2^(g+5),  g >= 0, k in 0..3
 *   szind  99      1 GiB
 *
 * Every class is (4 + k) * 2^m, so classes of 4 pages and up are whole page
 * multiples (page runs), and smaller ones (below 4 pages: 28 KiB with 8 KiB
 * pages) are subpage elements. A subpage run has the fewest pages that hold a
 * whole number of elements: (4 + k) has an odd factor of at most 7, so a run
 * is at most 7 pages and wastes no tail.
 *
 * Free page runs are binned the same way over page counts: 8 exact bins for
 * 1..8 pages, then four per doubling.
 * Layer: base; calls nothing.
 */
#include "internal.h"

/* (size + 15) / 16 -> szind, for size <= NBUF_LOOKUP_MAX. Built at load. */
uint8_t nbuf_sz_lookup_[NBUF_LOOKUP_MAX / NBUF_QUANTUM + 1];
/* ceil(size / 1 KiB) -> szind, for 4 KiB < size <= 64 KiB. */
uint8_t nbuf_sz_lookup2_[NBUF_LOOKUP2_MAX / 1024 + 1];

size_t nbuf_sz_usize_table_[NBUF_NCLASSES];

size_t
nbuf_sz_usize_slow_(unsigned szind)
{
    if (szind < 8)
        return (size_t)(szind + 1) << NBUF_LG_QUANTUM;
    unsigned g = (szind - 8) / 4, k = (szind - 8) % 4;
    return ((size_t)1 << (g + 7)) + ((size_t)(k + 1) << (g + 5));
}

/* Smallest class >= size, for 0 < size <= 2^30 (0 maps to class 0). */
unsigned
nbuf_sz_index_slow_(size_t size)
{
    if (size <= 128)
        return size == 0 ? 0 : (unsigned)((size - 1) >> NBUF_LG_QUANTUM);
    size_t x = size - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)x);
    return 8 + (lg - 7) * 4 + (unsigned)((x >> (lg - 2)) & 3);
}

/* Same scheme over page counts, with 8 exact bins: the smallest bin b whose
 * lower bound is >= npages, i.e. every run in bins >= b fits a request. */
static uint32_t
run_bin_size(unsigned bin)
{
    if (bin < 8)
        return bin + 1;
    unsigned g = (bin - 8) / 4, k = (bin - 8) % 4;
    return (1u << (g + 3)) + ((uint32_t)(k + 1) << (g + 1));
}

unsigned
nbuf_run_bin_ceil_(uint32_t npages)
{
    if (npages <= 8)
        return npages == 0 ? 0 : npages - 1;
    uint32_t x = npages - 1;
    unsigned lg = 31u - (unsigned)__builtin_clz(x);
    return 8 + (lg - 3) * 4 + ((x >> (lg - 2)) & 3);
}

/* Largest bin whose lower bound is <= npages: where a free run lives. */
unsigned
nbuf_run_bin_floor_(uint32_t npages)
{
    unsigned b = nbuf_run_bin_ceil_(npages);
    return run_bin_size(b) == npages ? b : b - 1;
}

uint32_t
nbuf_sz_run_pages_(size_t usize, size_t page_size)
{
    uint32_t n = 1;
    while ((n * page_size) % usize != 0)
        n++;
    return n;
}

/* First among the constructors: others may look classes up. */
__attribute__((constructor(101))) static void
size_class_build_lookup(void)
{
    for (unsigned i = 0; i < NBUF_NCLASSES; i++)
        nbuf_sz_usize_table_[i] = nbuf_sz_usize_slow_(i);
    for (size_t i = 0; i <= NBUF_LOOKUP_MAX / NBUF_QUANTUM; i++)
        nbuf_sz_lookup_[i] = (uint8_t)nbuf_sz_index_slow_(i << NBUF_LG_QUANTUM);
    for (size_t i = 0; i <= NBUF_LOOKUP2_MAX / 1024; i++)
        nbuf_sz_lookup2_[i] = (uint8_t)nbuf_sz_index_slow_(i << 10);
}
