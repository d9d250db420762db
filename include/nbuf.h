/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf.h
 * @brief nbuf: pooled, reference-counted IO buffers and zero-copy composites.
 *
 * The only header users need. See nbuf/pool.h for pools, nbuf/buf.h for
 * buffers and views, nbuf/composite.h for composites and the flush,
 * nbuf/io.h for fd-to-fd moves, nbuf/zerocopy.h for MSG_ZEROCOPY sends,
 * nbuf/stats.h for statistics, nbuf/debug.h for leak reports and the report
 * sink. nbuf/uring.h (io_uring receives and sends, in a build with io_uring)
 * is not included: include it yourself. docs/api.md gathers the contract of
 * every header (errors, ownership, thread safety, environment) in one place.
 */
#ifndef NBUF_H
#define NBUF_H

/** Major version of these headers. */
#define NBUF_VERSION_MAJOR 0
/** Minor version of these headers. */
#define NBUF_VERSION_MINOR 1
/** Patch version of these headers. */
#define NBUF_VERSION_PATCH 0
/** The version these headers belong to, as nbuf_version() returns it. */
#define NBUF_VERSION (NBUF_VERSION_MAJOR * 10000 + NBUF_VERSION_MINOR * 100 + NBUF_VERSION_PATCH)

#include "nbuf/pool.h"
#include "nbuf/stats.h"
#include "nbuf/buf.h"
#include "nbuf/composite.h"
#include "nbuf/io.h"
#include "nbuf/zerocopy.h"
#include "nbuf/debug.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The version of the library running: compare it with NBUF_VERSION to tell
 * the headers a program was built with from the shared library it loaded.
 *
 * @return major * 10000 + minor * 100 + patch of the library (never fails).
 */
unsigned nbuf_version(void);

#ifdef __cplusplus
}
#endif

#endif /* NBUF_H */
