/* SPDX-License-Identifier: MIT */
/*
 * Base layer: small memory copies of the composite and IO paths (add_iov,
 * add_slice, the flush's staging copy). Calls memcpy only.
 *
 * 1-64 bytes take fixed-size moves, larger ones a plain memcpy call.
 */
#ifndef NBUF_COPY_H
#define NBUF_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* 1 <= n <= 64 bytes: two overlapping fixed-size moves, no loop, no call. */
static inline void
nbuf_copy_1_64_(uint8_t *d, const uint8_t *s, size_t n)
{
    if (n >= 16) {
        if (n > 32) {
            memcpy(d, s, 32);
            memcpy(d + n - 32, s + n - 32, 32);
        } else {
            memcpy(d, s, 16);
            memcpy(d + n - 16, s + n - 16, 16);
        }
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

/* Out of line, so a copy loop keeps its registers for the common case (a
 * copy in each file that calls it: a jump to memcpy). */
static __attribute__((noinline, unused)) void
nbuf_copy_call_(uint8_t *d, const uint8_t *s, size_t n)
{
    memcpy(d, s, n);
}

/* Any n, tuned for n <= 64. */
static inline void
nbuf_copy_small_(uint8_t *d, const uint8_t *s, size_t n)
{
    if (__builtin_expect(n - 1 < 64, 1))
        nbuf_copy_1_64_(d, s, n);
    else if (n)
        nbuf_copy_call_(d, s, n);
}

#endif /* NBUF_COPY_H */
