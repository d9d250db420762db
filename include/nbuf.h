/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf.h
 * @brief nbuf: pooled, reference-counted IO buffers and zero-copy composites.
 *
 * The only header users need. See nbuf/pool.h for pools, nbuf/buf.h for
 * buffers and views, nbuf/composite.h for composites and the flush,
 * nbuf/io.h for fd-to-fd moves, nbuf/stats.h for statistics.
 */
#ifndef NBUF_H
#define NBUF_H

#define NBUF_VERSION_MAJOR 0
#define NBUF_VERSION_MINOR 1
#define NBUF_VERSION_PATCH 0

#include "nbuf/pool.h"
#include "nbuf/stats.h"
#include "nbuf/buf.h"
#include "nbuf/composite.h"
#include "nbuf/io.h"
#include "nbuf/debug.h"

#endif /* NBUF_H */
