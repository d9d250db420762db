/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/buf.h
 * @brief Reference-counted IO buffers.
 *
 * A buffer is a byte array with two cursors, as in Netty's ByteBuf:
 *
 *     0 <= reader_index <= writer_index <= capacity <= max_capacity
 *
 *     +-------------------+------------------+------------------+
 *     | discardable bytes |  readable bytes  |  writable bytes  |
 *     +-------------------+------------------+------------------+
 *     0            reader_index        writer_index          capacity
 *
 * Writes append at the writer index (growing the buffer up to max_capacity),
 * reads consume from the reader index. get/set take absolute indices and move
 * no cursor: get never returns bytes past the writer index, set may write
 * anywhere below the capacity.
 *
 * Ownership: every function that returns a new buffer or view returns a
 * reference the caller must give back with nbuf_release(). A view (slice,
 * duplicate) shares the memory of its parent and keeps it alive; it has its
 * own cursors and its own reference count and cannot grow past its own length.
 *
 * Thread safety: retain and release may be called from any thread at any time.
 * Reading or changing the bytes or cursors of one buffer needs one owner at a
 * time (the caller's job, as with any object).
 *
 * Errors: functions that act return 0 or -errno; functions that return a
 * pointer return NULL and set errno; IO functions return a byte count or
 * -errno. Every outcome is listed at each function.
 */
#ifndef NBUF_BUF_H
#define NBUF_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque buffer or view. */
struct nbuf;

/** @name Allocation flags (nbuf_alloc_ex) */
/**@{*/
/** Zero the capacity before returning it. */
#define NBUF_ZERO (1u << 0)
/** Start the memory on a page boundary (the pool's page size). */
#define NBUF_ALIGN_PAGE (1u << 1)
/**@}*/

/**
 * Allocate a buffer of at least @p capacity bytes (rounded up to its size
 * class; nbuf_capacity() tells the real figure). Both cursors start at 0.
 * max_capacity is the pool's max_buffer_size.
 *
 * @param p the pool; NULL means nbuf_pool_default().
 * @return a new reference, or NULL with errno = ENOMEM (no memory, or the
 *         pool's memory_limit reached after trimming), EINVAL (@p capacity
 *         above the pool's max_buffer_size, so a length taken from a peer can
 *         never commit memory).
 * @see nbuf_release
 */
struct nbuf *nbuf_alloc(struct nbuf_pool *p, size_t capacity);

/**
 * Allocate with a growth bound and flags.
 *
 * @param max_capacity the most the buffer may grow to (>= @p capacity, <= the
 *        pool's max_buffer_size).
 * @param flags NBUF_ZERO, NBUF_ALIGN_PAGE.
 * @return a new reference, or NULL with errno = ENOMEM, or EINVAL (unknown
 *         flag, @p capacity > @p max_capacity, or above max_buffer_size).
 */
struct nbuf *nbuf_alloc_ex(struct nbuf_pool *p, size_t capacity, size_t max_capacity,
                           unsigned flags);

/**
 * Wrap external memory. The buffer's readable bytes are @p data[0, len); its
 * capacity is @p len and it cannot grow. @p free_fn (may be NULL) runs exactly
 * once, on the thread that drops the last reference to the buffer or any of
 * its views.
 *
 * @return a new reference, or NULL with errno = EINVAL (@p data NULL with
 *         @p len > 0) or ENOMEM; on failure @p free_fn is not called and the
 *         memory stays the caller's.
 */
struct nbuf *nbuf_wrap(void *data, size_t len, void (*free_fn)(void *data, void *ctx), void *ctx);

/**
 * Map @p len bytes of the file @p fd from @p off, read-only (any offset: the
 * mapping is page-aligned underneath). The file may be closed afterwards; the
 * mapping goes away with the last reference. Writing to the buffer fails with
 * -EROFS.
 *
 * @return a new reference, or NULL with errno = EINVAL (negative offset, or
 *         the range overflows or lies past the end of the file), EBADF, or
 *         what fstat()/mmap() reported.
 */
struct nbuf *nbuf_map_file(int fd, off_t off, size_t len);

/**
 * Take one more reference to @p b.
 *
 * @return @p b; or NULL with errno = EINVAL if @p b is NULL or already fully
 *         released (reported; it stays dead), or EOVERFLOW if the count is at
 *         its maximum (nothing changed).
 * @see nbuf_release
 */
struct nbuf *nbuf_retain(struct nbuf *b);

/**
 * Drop one reference; the last one frees the buffer (and, for a view, drops
 * its hold on the parent's memory).
 *
 * @return 1 if this call freed the buffer; 0 if references remain (or @p b is
 *         NULL); -EINVAL if @p b was already fully released: detected,
 *         reported on stderr (with its history in checked mode), nothing is
 *         freed twice.
 */
int nbuf_release(struct nbuf *b);

/** @return the current reference count (0 for a released buffer still in a
 *  cache: only meaningful while you hold a reference). */
unsigned nbuf_refcnt(const struct nbuf *b);

/** @name Cursors and sizes */
/**@{*/
size_t nbuf_capacity(const struct nbuf *b);
size_t nbuf_max_capacity(const struct nbuf *b);
size_t nbuf_reader_index(const struct nbuf *b);
size_t nbuf_writer_index(const struct nbuf *b);
/** @return writer_index - reader_index. */
size_t nbuf_readable(const struct nbuf *b);
/** @return capacity - writer_index (room without growing). */
size_t nbuf_writable(const struct nbuf *b);
/**
 * Set both cursors at once.
 * @return 0; -EINVAL unless reader <= writer <= capacity (nothing changed).
 */
int nbuf_set_indices(struct nbuf *b, size_t reader, size_t writer);
/** Set both cursors to 0 (the bytes are kept). */
void nbuf_clear(struct nbuf *b);
/**
 * Consume @p n readable bytes without copying them.
 * @return 0; -ENODATA if fewer than @p n are readable (nothing consumed).
 */
int nbuf_skip(struct nbuf *b, size_t n);
/**
 * Move the readable bytes to index 0 (memmove), reclaiming the read ones.
 * @return 0; -EROFS for a read-only buffer with discardable bytes.
 */
int nbuf_discard_read(struct nbuf *b);
/**@}*/

/** @name Direct access */
/**@{*/
/** @return a pointer to the readable bytes (at the reader index). */
const uint8_t *nbuf_data(const struct nbuf *b);
/**
 * Ensure @p n writable bytes (growing if needed) and return a pointer at the
 * writer index. Fill them, then nbuf_commit() how many you wrote.
 * @return the pointer, or NULL with errno = ENOBUFS (would pass max_capacity),
 *         ENOMEM, EROFS (read-only buffer).
 */
uint8_t *nbuf_reserve(struct nbuf *b, size_t n);
/**
 * Advance the writer index by @p n.
 * @return 0; -EINVAL if that would pass the capacity (nothing changed).
 */
int nbuf_commit(struct nbuf *b, size_t n);
/**
 * Grow so that @p n bytes are writable. In place while the size class has
 * room, else into a larger class copying only the written bytes; capacity
 * doubles up to 4 MiB, then grows in 4 MiB steps, never past max_capacity.
 * @return 0; -ENOBUFS (past max_capacity, or a view), -ENOMEM, -EROFS.
 */
int nbuf_ensure_writable(struct nbuf *b, size_t n);
/**@}*/

/** @name Bulk access */
/**@{*/
/** Append @p n bytes. @return 0; -ENOBUFS, -ENOMEM, -EROFS (nothing written). */
int nbuf_write(struct nbuf *b, const void *src, size_t n);
/** Consume @p n bytes into @p dst. @return 0; -ENODATA if fewer readable
 *  (nothing consumed). */
int nbuf_read(struct nbuf *b, void *dst, size_t n);
/** Copy bytes [index, index + n) (absolute, must lie below the writer index)
 *  into @p dst. @return 0; -ENODATA if out of range. */
int nbuf_get(const struct nbuf *b, size_t index, void *dst, size_t n);
/** Overwrite bytes [index, index + n) (absolute, below the capacity); no
 *  cursor moves. @return 0; -EINVAL if out of range; -EROFS. */
int nbuf_set(struct nbuf *b, size_t index, const void *src, size_t n);
/**@}*/

/** @name Typed access: big-endian (network order); _le = little-endian.
 *  write: 0 / -ENOBUFS / -ENOMEM / -EROFS. read: 0 / -ENODATA (nothing
 *  consumed). get: 0 / -ENODATA. set: 0 / -EINVAL / -EROFS. */
/**@{*/
int nbuf_write_u8(struct nbuf *b, uint8_t v);
int nbuf_write_u16(struct nbuf *b, uint16_t v);
int nbuf_write_u32(struct nbuf *b, uint32_t v);
int nbuf_write_u64(struct nbuf *b, uint64_t v);
int nbuf_write_u16_le(struct nbuf *b, uint16_t v);
int nbuf_write_u32_le(struct nbuf *b, uint32_t v);
int nbuf_write_u64_le(struct nbuf *b, uint64_t v);
int nbuf_read_u8(struct nbuf *b, uint8_t *out);
int nbuf_read_u16(struct nbuf *b, uint16_t *out);
int nbuf_read_u32(struct nbuf *b, uint32_t *out);
int nbuf_read_u64(struct nbuf *b, uint64_t *out);
int nbuf_read_u16_le(struct nbuf *b, uint16_t *out);
int nbuf_read_u32_le(struct nbuf *b, uint32_t *out);
int nbuf_read_u64_le(struct nbuf *b, uint64_t *out);
int nbuf_get_u8(const struct nbuf *b, size_t index, uint8_t *out);
int nbuf_get_u16(const struct nbuf *b, size_t index, uint16_t *out);
int nbuf_get_u32(const struct nbuf *b, size_t index, uint32_t *out);
int nbuf_get_u64(const struct nbuf *b, size_t index, uint64_t *out);
int nbuf_get_u16_le(const struct nbuf *b, size_t index, uint16_t *out);
int nbuf_get_u32_le(const struct nbuf *b, size_t index, uint32_t *out);
int nbuf_get_u64_le(const struct nbuf *b, size_t index, uint64_t *out);
int nbuf_set_u8(struct nbuf *b, size_t index, uint8_t v);
int nbuf_set_u16(struct nbuf *b, size_t index, uint16_t v);
int nbuf_set_u32(struct nbuf *b, size_t index, uint32_t v);
int nbuf_set_u64(struct nbuf *b, size_t index, uint64_t v);
int nbuf_set_u16_le(struct nbuf *b, size_t index, uint16_t v);
int nbuf_set_u32_le(struct nbuf *b, size_t index, uint32_t v);
int nbuf_set_u64_le(struct nbuf *b, size_t index, uint64_t v);
/**@}*/

/** @name Views and copies */
/**@{*/
/**
 * A view of bytes [off, off + len) of @p b (absolute, within [0, writer]).
 * The view's readable bytes are exactly those; it cannot grow.
 * @return a new reference that keeps @p b's memory alive, or NULL with
 *         errno = EINVAL (out of range or overflowing) or ENOMEM.
 */
struct nbuf *nbuf_slice(struct nbuf *b, size_t off, size_t len);
/**
 * A view of the next @p n readable bytes; advances @p b's reader index.
 * @return a new reference, or NULL with errno = ENODATA (fewer readable;
 *         nothing consumed) or ENOMEM.
 */
struct nbuf *nbuf_read_slice(struct nbuf *b, size_t n);
/**
 * A view of all of @p b's capacity with @p b's cursors (independent after).
 * @return a new reference, or NULL with errno = ENOMEM.
 */
struct nbuf *nbuf_duplicate(struct nbuf *b);
/**
 * A deep copy of bytes [off, off + len) into a new pooled buffer of @p b's
 * pool (readable = len).
 * @return a new reference, or NULL with errno = EINVAL (out of range) or
 *         ENOMEM.
 */
struct nbuf *nbuf_copy(const struct nbuf *b, size_t off, size_t len);
/**@}*/

/**
 * Find @p byte in absolute range [from, to) (clamped to the writer index).
 * @return its absolute index, or -ENOENT; -EINVAL if @p from > @p to.
 */
ssize_t nbuf_index_of(const struct nbuf *b, size_t from, size_t to, uint8_t byte);

/** @name IO */
/**@{*/
/**
 * read() from @p fd into the writable space, first growing so that up to
 * @p max bytes fit (bounded by max_capacity). EINTR is retried.
 * @return bytes read; 0 at end of file; -EAGAIN; -ENOBUFS if no room can be
 *         made; another -errno from read().
 */
ssize_t nbuf_read_fd(struct nbuf *b, int fd, size_t max);
/**
 * write() the readable bytes to @p fd and advance the reader by what was
 * written. EINTR is retried; SIGPIPE is never raised on sockets.
 * @return bytes written (0 if nothing was readable); -EAGAIN; another -errno.
 */
ssize_t nbuf_write_fd(struct nbuf *b, int fd);
/**@}*/

#ifdef __cplusplus
}
#endif

#endif /* NBUF_BUF_H */
