/* SPDX-License-Identifier: MIT */
/*
 * IO layer: the internals tests and fuzzers reach, the flush's staging
 * threshold (flush.c) and read_fd's next read size (composite_recv.c).
 */
#ifndef NBUF_IO_INT_H
#define NBUF_IO_INT_H

#include <stddef.h>

struct nbuf_composite;

/* ---- flush.c ---- */
/* Components up to this many bytes are coalesced by the flush (tests may
 * change it; 0 disables coalescing). */
extern size_t nbuf_flush_coalesce_max_;

/* ---- composite_recv.c ---- */
/* Test hook: the size the next read_fd offers. */
size_t nbuf_composite_next_read_size_(struct nbuf_composite *c);

#endif /* NBUF_IO_INT_H */
