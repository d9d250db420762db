/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/composite.h
 * @brief Composite buffers: chains of buffer slices and file regions read as
 * one logical buffer and flushed with writev/sendfile. (Issue 4.)
 */
#ifndef NBUF_COMPOSITE_H
#define NBUF_COMPOSITE_H

#include "buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque composite. */
struct nbuf_composite;

#ifdef __cplusplus
}
#endif

#endif /* NBUF_COMPOSITE_H */
