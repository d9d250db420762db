/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/debug.h
 * @brief Leak reports and the debugging switches.
 *
 * nbuf protects against the classic pooled-buffer bugs with switches that
 * cost nothing when off (each moves the pools onto their slow paths):
 *
 * - `NBUF_LEAK=off|sample|full` (environment, read when a pool is created):
 *   `sample` tracks about 1 buffer in 128, `full` every buffer. A tracked
 *   buffer records the backtrace of its allocation (glibc backtrace(); link
 *   with `-rdynamic` to see function names) and, in `full`, its last four
 *   retain/release sites. Live tracked buffers are reported by
 *   nbuf_pool_free() (-EBUSY), at exit for the default pool, and on demand
 *   by nbuf_pool_leak_report().
 * - Checked mode (`NBUF_CHECK=1` or NBUF_POOL_CHECKED): every buffer is
 *   tracked as in `full`; released headers wait in a FIFO quarantine
 *   (`NBUF_QUARANTINE` headers, default 4096) before reuse while their
 *   memory is recycled under a fresh header, so a double or stale release,
 *   or any use through a released buffer, is refused with -EINVAL and
 *   reported with the buffer's history instead of touching the memory's new
 *   owner. Memory is filled with 0xa5 on allocation and 0x5a on release.
 * - AddressSanitizer builds poison pool memory no live buffer owns (cached,
 *   stashed, never handed out, and the slack past a buffer's capacity); under
 *   valgrind the same is done with client requests. `NBUF_BYPASS=1` gives
 *   every buffer its own malloc() so the tools see each one.
 *
 * Reports go to stderr.
 */
#ifndef NBUF_DEBUG_H
#define NBUF_DEBUG_H

#include <stdio.h>

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Write a report of @p p's live tracked buffers (each with its kind, size,
 * reference count, allocation backtrace and, when recorded, its last
 * retain/release sites) to @p out. Only buffers chosen by NBUF_LEAK or
 * checked mode are tracked; with tracking off nothing is written.
 *
 * @param p the pool; NULL means nbuf_pool_default().
 * @param out where to write; NULL just counts.
 * @return the number of live tracked buffers (0 with tracking off), or
 *         -errno if the default pool cannot be created.
 */
int nbuf_pool_leak_report(struct nbuf_pool *p, FILE *out);

/**
 * Send nbuf's diagnostics (double releases, leak reports, memory_limit
 * failures, ignored NBUF_* values, failed asserts) to @p fn instead of
 * stderr, like jemalloc's malloc_message or mimalloc's mi_register_output.
 * @p fn gets one report at a time, a NUL-terminated text ending in a
 * newline, and @p ctx; it may be called from any thread, at most one call
 * at a time, and must not call back into nbuf. @p msg is nbuf's, valid
 * only during the call; @p ctx stays the caller's (nbuf only passes it on).
 * NULL restores stderr. The setting is process-wide, for every pool.
 *
 * Repeats are rate-limited whichever the sink: after 10 reports of the same
 * kind within a second, further ones are counted instead, and the next one
 * after the second is over says how many were left out.
 *
 * @param fn the sink, or NULL for stderr.
 * @param ctx passed to @p fn with every report.
 */
void nbuf_set_report_fn(void (*fn)(const char *msg, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_DEBUG_H */
