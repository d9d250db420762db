/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/io.h
 * @brief Moving bytes between file descriptors inside the kernel. (Issue 4.)
 */
#ifndef NBUF_IO_H
#define NBUF_IO_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif /* NBUF_IO_H */
