/* SPDX-License-Identifier: MIT */
/*
 * Shared by the fuzz targets: a reader that turns the fuzzer's bytes into
 * operation codes and arguments (zeros once the input runs out), the check
 * macro (report and abort, so libFuzzer and the replayer both see a crash),
 * a position-keyed byte pattern, and the small-chunk pool every target uses.
 */
#ifndef NBUF_FUZZ_COMMON_H
#define NBUF_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    const uint8_t *p;
    size_t n;
};

static inline bool
fz_more(const struct fz *f)
{
    return f->n > 0;
}

static inline uint8_t
fz_u8(struct fz *f)
{
    if (!f->n)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint16_t
fz_u16(struct fz *f)
{
    uint16_t v = fz_u8(f);
    return (uint16_t)(v | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t
fz_u32(struct fz *f)
{
    uint32_t v = fz_u16(f);
    return v | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t
fz_u64(struct fz *f)
{
    uint64_t v = fz_u32(f);
    return v | (uint64_t)fz_u32(f) << 32;
}

/* A value in [0, n) (n > 0), one or two input bytes. */
static inline size_t
fz_below(struct fz *f, size_t n)
{
    return (n <= 256 ? fz_u8(f) : fz_u16(f)) % n;
}

/* Up to @n bytes of input into @dst (zeros past the end); returns @n. */
static inline size_t
fz_bytes(struct fz *f, void *dst, size_t n)
{
    size_t k = n < f->n ? n : f->n;
    memcpy(dst, f->p, k);
    memset((uint8_t *)dst + k, 0, n - k);
    f->p += k;
    f->n -= k;
    return n;
}

__attribute__((noreturn)) static inline void
fz_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

#define FZ_CHECK(e)                                                                                \
    do {                                                                                           \
        if (!(e))                                                                                  \
            fz_fail(__FILE__, __LINE__, #e);                                                       \
    } while (0)

/* Equality with both values in the report. */
#define FZ_CHECK_EQ(a, b)                                                                          \
    do {                                                                                           \
        long long fz_a_ = (long long)(a), fz_b_ = (long long)(b);                                  \
        if (fz_a_ != fz_b_) {                                                                      \
            fprintf(stderr, "%s:%d: %s = %lld, expected %s = %lld\n", __FILE__, __LINE__, #a,      \
                    fz_a_, #b, fz_b_);                                                             \
            fz_fail(__FILE__, __LINE__, #a " == " #b);                                             \
        }                                                                                          \
    } while (0)

/*
 * The pattern: byte @i of pattern @seed is a byte of a fixed random table of
 * prime length, from an offset chosen by @seed, so every position differs
 * from its neighbours (a wrong offset, a lost or a duplicated byte shows) and
 * filling or checking is a memcpy/memcmp (cheap under ASan).
 */
#define FZ_PAT_LEN 65521u
static uint8_t fz_pat_table[2 * FZ_PAT_LEN];

static inline size_t
fz_pat_start(uint64_t seed, size_t from)
{
    static bool ready;
    if (!ready) {
        /* Twice the same table, so any FZ_PAT_LEN bytes from an offset below
         * FZ_PAT_LEN are contiguous. */
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i < FZ_PAT_LEN; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            fz_pat_table[i] = (uint8_t)(x >> 24);
        }
        memcpy(fz_pat_table + FZ_PAT_LEN, fz_pat_table, FZ_PAT_LEN);
        ready = true;
    }
    return (size_t)(((seed % FZ_PAT_LEN) * 7919u + from % FZ_PAT_LEN) % FZ_PAT_LEN);
}

static inline uint8_t
fz_pat(uint64_t seed, size_t i)
{
    return fz_pat_table[fz_pat_start(seed, i)];
}

static inline void
fz_pat_fill(uint8_t *dst, size_t n, uint64_t seed, size_t from)
{
    size_t at = fz_pat_start(seed, from);
    while (n) {
        size_t k = n < FZ_PAT_LEN ? n : FZ_PAT_LEN;
        memcpy(dst, fz_pat_table + at, k);
        dst += k;
        n -= k;
        at = (at + k) % FZ_PAT_LEN;
    }
}

/* Offset of the first byte of @src[0, n) that differs, or SIZE_MAX. */
static inline size_t
fz_pat_bad(const uint8_t *src, size_t n, uint64_t seed, size_t from)
{
    size_t at = fz_pat_start(seed, from), done = 0;
    while (done < n) {
        size_t k = n - done < FZ_PAT_LEN ? n - done : FZ_PAT_LEN;
        if (memcmp(src + done, fz_pat_table + at, k) != 0) {
            for (size_t i = 0; i < k; i++)
                if (src[done + i] != fz_pat_table[at + i])
                    return done + i;
        }
        done += k;
        at = (at + k) % FZ_PAT_LEN;
    }
    return SIZE_MAX;
}

static inline bool
fz_all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* nbuf's reports (memory_limit reached, ...) are expected here: count them
 * instead of flooding the fuzzer's log, unless FUZZ_VERBOSE is set. */
static unsigned long fz_nreports;

static inline void
fz_report_sink(const char *msg)
{
    (void)msg;
    fz_nreports++;
}

static inline void
fz_quiet(void)
{
    if (!getenv("FUZZ_VERBOSE"))
        nbuf_report_hook_ = fz_report_sink;
}

/*
 * A pool with 4 KiB pages and 64 KiB chunks (so huge buffers are cheap), its
 * flags and shape from one input byte: no cache, zero, scrub, checked, one
 * or two arenas, tiny thread caches, mmap backing.
 */
static inline struct nbuf_pool *
fz_pool_new(struct fz *f, size_t max_buffer_size, size_t memory_limit)
{
    uint8_t m = fz_u8(f);
    fz_quiet();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = 4096;
    cfg.chunk_size = (m & 0x80) ? 32u << 10 : 64u << 10;
    cfg.arenas = 1 + ((m >> 5) & 1);
    cfg.max_buffer_size = max_buffer_size;
    cfg.memory_limit = memory_limit;
    if (m & 1)
        cfg.flags |= NBUF_POOL_NO_CACHE;
    if (m & 2)
        cfg.flags |= NBUF_POOL_ZERO;
    if (m & 4)
        cfg.flags |= NBUF_POOL_SCRUB;
    if ((m & 0x18) == 0x18)
        cfg.flags |= NBUF_POOL_CHECKED;
    if ((m & 0x18) == 0x10) {
        cfg.cache_small_count = 2;
        cfg.cache_normal_count = 1;
    }
    if ((m & 0x48) == 0x48)
        cfg.backing = NBUF_BACKING_MMAP;
    struct nbuf_pool *p = nbuf_pool_new(&cfg);
    FZ_CHECK(p != NULL);
    return p;
}

#endif /* NBUF_FUZZ_COMMON_H */
