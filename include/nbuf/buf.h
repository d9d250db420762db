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
 * Kinds. Pooled buffers come from a pool (nbuf_alloc). Views (nbuf_slice,
 * nbuf_read_slice, nbuf_duplicate) share the memory of their parent.
 * Wrapped buffers (nbuf_wrap) and mapped files (nbuf_map_file) use memory
 * the pool does not own; they take part in no pool's buffer counters (their
 * headers are recycled through the default pool's header cache). Views count
 * in their pool's `views` statistic.
 *
 * Ownership: every function that returns a new buffer or view returns a
 * reference the caller must give back with nbuf_release(). Nothing else in
 * this header takes or gives references. A view holds one reference on the
 * buffer that owns the memory (a view of a view holds the original owner), so
 * the memory lives until the owner and all its views are released, in any
 * order. A view has its own cursors and its own reference count and cannot
 * grow past its own length; a buffer whose memory views may still share
 * cannot grow past its capacity either (its memory must not move).
 *
 * Thread safety: retain and release may be called from any thread at any time.
 * Reading or changing the bytes or cursors of one buffer (creating views
 * included) needs one owner at a time (the caller's job, as with any object).
 *
 * Errors: functions that act return 0 or -errno; functions that return a
 * pointer return NULL and set errno; IO functions return a byte count or
 * -errno. Every outcome is listed at each function. Every function that reads
 * or writes bytes or cursors refuses a NULL or already released buffer with
 * -EINVAL (or NULL and errno = EINVAL) and reports the use on stderr (with
 * the buffer's history in checked mode); only the plain size getters do not
 * check. After its last release a buffer's header may be reused by the pool,
 * so such a use is only reliably caught in checked mode (see nbuf/debug.h).
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
 * max_capacity is the pool's max_buffer_size. The bytes are not initialised
 * (unless the pool zeroes, or junk-fills in checked mode). A capacity of 0
 * gives a real, writable buffer of the smallest class.
 *
 * @param p the pool; NULL means nbuf_pool_default().
 * @param capacity the bytes wanted at least (0: the smallest class).
 * @return a new reference, or NULL with errno = ENOMEM (no memory, or the
 *         pool's memory_limit reached after trimming), EINVAL (@p capacity
 *         above the pool's max_buffer_size, so a length taken from a peer can
 *         never commit memory), or why the default pool could not be made.
 * @see nbuf_release
 */
struct nbuf *nbuf_alloc(struct nbuf_pool *p, size_t capacity);

/**
 * Allocate with a growth bound and flags. A @p max_capacity below the size
 * class hides the class's slack: the capacity is exactly @p max_capacity.
 *
 * @param p the pool; NULL means nbuf_pool_default().
 * @param capacity the bytes wanted at least (rounded up to the size class,
 *        then clamped to @p max_capacity).
 * @param max_capacity the most the buffer may grow to (>= @p capacity, <= the
 *        pool's max_buffer_size).
 * @param flags NBUF_ZERO, NBUF_ALIGN_PAGE.
 * @return a new reference, or NULL with errno = ENOMEM, or EINVAL (unknown
 *         flag, @p capacity > @p max_capacity, or above max_buffer_size).
 * @see nbuf_release
 */
struct nbuf *nbuf_alloc_ex(struct nbuf_pool *p, size_t capacity, size_t max_capacity,
                           unsigned flags);

/**
 * Wrap external memory. The buffer's readable bytes are @p data[0, len); its
 * capacity is @p len and it cannot grow; nbuf_set() and writes after
 * nbuf_clear() modify your memory. @p free_fn (may be NULL) runs exactly once,
 * with @p data and @p ctx, on the thread that drops the last reference to the
 * buffer or any of its views. Until then the memory must stay valid.
 *
 * @param data the memory (may be NULL only when @p len is 0).
 * @param len its length: the buffer's capacity and readable bytes.
 * @param free_fn called once with @p data and @p ctx after the last
 *        release; NULL for none.
 * @param ctx passed to @p free_fn.
 * @return a new reference, or NULL with errno = EINVAL (@p data NULL with
 *         @p len > 0) or ENOMEM; on failure @p free_fn is not called and the
 *         memory stays the caller's.
 * @see nbuf_release
 */
struct nbuf *nbuf_wrap(void *data, size_t len, void (*free_fn)(void *data, void *ctx), void *ctx);

/**
 * Map @p len bytes of the file @p fd from @p off, read-only (any offset: the
 * mapping is page-aligned underneath). The file may be closed afterwards; the
 * mapping goes away with the last reference (of the buffer and its views).
 * Writing fails with -EROFS; views of it are read-only too. As with any
 * mapping, truncating the file under it makes later reads fault (SIGBUS).
 * An empty range (@p len 0, @p off <= size) gives an empty buffer.
 *
 * @param fd an open descriptor of the file, readable.
 * @param off the offset of the first byte (any, not only page-aligned).
 * @param len the bytes to map.
 * @return a new reference, or NULL with errno = EINVAL (negative offset, or
 *         the range overflows or lies past the end of the file), EBADF (not
 *         an open descriptor), ENOMEM, or what fstat()/mmap() reported (for
 *         example EACCES for a descriptor not open for reading, ENODEV for a
 *         file that cannot be mapped).
 * @see nbuf_release
 */
struct nbuf *nbuf_map_file(int fd, off_t off, size_t len);

/**
 * Take one more reference to @p b. The buffer is not copied: every holder
 * sees the same bytes and cursors.
 *
 * @param b the buffer or view.
 * @return @p b; or NULL with errno = EINVAL if @p b is NULL, already fully
 *         released (reported; it stays dead) or not a buffer nbuf issued
 *         (reported, not touched), or EOVERFLOW if the count is at its
 *         maximum (UINT32_MAX; nothing changed).
 * @see nbuf_release
 */
struct nbuf *nbuf_retain(struct nbuf *b);

/**
 * Drop one reference; the last one frees the buffer: pooled memory goes back
 * to its pool (scrubbed with NBUF_POOL_SCRUB), a view drops its hold on the
 * memory's owner, a wrapped buffer calls its free_fn once no view is left, a
 * mapped one is unmapped. The caller's reference is gone in every case.
 *
 * @param b the buffer or view (NULL is a no-op).
 * @return 1 if this call freed the buffer; 0 if references remain (or @p b is
 *         NULL); -EINVAL if @p b was already fully released, or is a pointer
 *         nbuf never issued (stack, malloc'd, interior): detected as far as
 *         possible, reported on stderr (with its history in checked mode),
 *         nothing is freed twice. In checked mode a stale release after the
 *         memory went to a new owner never touches the new owner's count.
 * @see nbuf_retain
 */
int nbuf_release(struct nbuf *b);

/**
 * The reference count: only meaningful while you hold a reference. A view's
 * own references count here, not those of its parent.
 *
 * @param b the buffer or view.
 * @return the current count; 0 for NULL (0 also for a released buffer whose
 *         header is still parked).
 */
unsigned nbuf_refcnt(const struct nbuf *b);

/** @name Cursors and sizes
 *  The getters take a live, non-NULL buffer and cannot fail. */
/**@{*/
/**
 * @param b a live buffer (not NULL, not released).
 * @return the bytes the buffer can hold without growing.
 */
size_t nbuf_capacity(const struct nbuf *b);
/**
 * @param b a live buffer (not NULL, not released).
 * @return the most nbuf_ensure_writable() may grow the capacity to (for
 *         views, wrapped and mapped buffers: their capacity).
 */
size_t nbuf_max_capacity(const struct nbuf *b);
/**
 * @param b a live buffer (not NULL, not released).
 * @return the reader index.
 */
size_t nbuf_reader_index(const struct nbuf *b);
/**
 * @param b a live buffer (not NULL, not released).
 * @return the writer index.
 */
size_t nbuf_writer_index(const struct nbuf *b);
/**
 * @param b a live buffer (not NULL, not released).
 * @return writer_index - reader_index.
 */
size_t nbuf_readable(const struct nbuf *b);
/**
 * @param b a live buffer (not NULL, not released).
 * @return capacity - writer_index (room without growing).
 */
size_t nbuf_writable(const struct nbuf *b);
/**
 * Set both cursors at once (no byte is touched).
 * @param b the buffer.
 * @param reader the new reader index.
 * @param writer the new writer index.
 * @return 0; -EINVAL unless reader <= writer <= capacity (nothing changed),
 *         or if @p b is NULL or released.
 */
int nbuf_set_indices(struct nbuf *b, size_t reader, size_t writer);
/**
 * Set both cursors to 0 (the bytes are kept). A NULL or released buffer is
 * reported and left alone.
 * @param b the buffer.
 */
void nbuf_clear(struct nbuf *b);
/**
 * Consume @p n readable bytes without copying them.
 * @param b the buffer.
 * @param n the bytes to skip.
 * @return 0; -ENODATA if fewer than @p n are readable (nothing consumed);
 *         -EINVAL if @p b is NULL or released.
 */
int nbuf_skip(struct nbuf *b, size_t n);
/**
 * Move the readable bytes to index 0 (memmove), reclaiming the read ones:
 * reader becomes 0, writer shrinks by the old reader. On a view this moves
 * bytes of the shared memory, which the parent and other views see.
 * @param b the buffer.
 * @return 0 (also when nothing was read); -EROFS for a read-only buffer with
 *         discardable bytes; -EINVAL if @p b is NULL or released.
 */
int nbuf_discard_read(struct nbuf *b);
/**@}*/

/** @name Direct access */
/**@{*/
/**
 * The readable bytes, for reading in place.
 * @param b the buffer.
 * @return a pointer to the readable bytes (at the reader index), valid until
 *         the buffer grows or its last reference goes; NULL with errno =
 *         EINVAL if @p b is NULL or released (reported).
 */
const uint8_t *nbuf_data(const struct nbuf *b);
/**
 * Ensure @p n writable bytes (growing if needed, see nbuf_ensure_writable())
 * and return a pointer at the writer index. Fill them, then nbuf_commit() how
 * many you wrote. The pointer is valid until the buffer grows again.
 * @param b the buffer.
 * @param n the bytes to make writable.
 * @return the pointer, or NULL with errno = ENOBUFS (would pass max_capacity,
 *         or the memory cannot move), ENOMEM, EROFS (read-only buffer),
 *         EINVAL (NULL or released buffer).
 */
uint8_t *nbuf_reserve(struct nbuf *b, size_t n);
/**
 * Advance the writer index by @p n (after writing through nbuf_reserve()).
 * @param b the buffer.
 * @param n the bytes written.
 * @return 0; -EINVAL if that would pass the capacity (nothing changed), or if
 *         @p b is NULL or released.
 */
int nbuf_commit(struct nbuf *b, size_t n);
/**
 * Grow so that @p n bytes are writable. In place while the size class has
 * room; else into a larger class copying only the written bytes [0, writer)
 * (the buffer keeps its identity: references, cursors and leak record stay;
 * pointers from nbuf_data()/nbuf_reserve() go stale). Capacity doubles from
 * 64 up to 4 MiB, then grows in 4 MiB steps, never past max_capacity.
 * Memory never moves under a view: a buffer that has had views cannot move
 * while its reference count is above 1 (every live view holds one).
 * @param b the buffer.
 * @param n the bytes that must be writable past the writer index.
 * @return 0 (nothing moved if the room was there); -ENOBUFS (past
 *         max_capacity, writer + @p n overflows, a view, wrapped or mapped
 *         memory, or memory views may share); -ENOMEM (the buffer is
 *         unchanged); -EROFS (read-only); -EINVAL (NULL or released).
 */
int nbuf_ensure_writable(struct nbuf *b, size_t n);
/**@}*/

/** @name Bulk access */
/**@{*/
/**
 * Append @p n bytes from @p src at the writer index, growing if needed.
 * @param b the buffer.
 * @param src the bytes (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -ENOBUFS, -ENOMEM, -EROFS (nothing written); -EINVAL if @p src
 *         is NULL with @p n > 0, or @p b is NULL or released.
 */
int nbuf_write(struct nbuf *b, const void *src, size_t n);
/**
 * Consume @p n bytes from the reader index into @p dst.
 * @param b the buffer.
 * @param dst where the bytes go (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -ENODATA if fewer are readable (nothing consumed); -EINVAL if
 *         @p dst is NULL with @p n > 0, or @p b is NULL or released.
 */
int nbuf_read(struct nbuf *b, void *dst, size_t n);
/**
 * Copy bytes [index, index + n) (absolute, must lie at or below the writer
 * index; never unwritten bytes) into @p dst; no cursor moves.
 * @param b the buffer.
 * @param index the absolute index of the first byte.
 * @param dst where the bytes go (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -ENODATA if out of range or overflowing; -EINVAL if @p dst is
 *         NULL with @p n > 0, or @p b is NULL or released.
 */
int nbuf_get(const struct nbuf *b, size_t index, void *dst, size_t n);
/**
 * Overwrite bytes [index, index + n) (absolute, below the capacity) with
 * @p src; no cursor moves, nothing grows.
 * @param b the buffer.
 * @param index the absolute index of the first byte.
 * @param src the bytes (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -EINVAL if out of range or overflowing, if @p src is NULL with
 *         @p n > 0, or if @p b is NULL or released; -EROFS (read-only).
 */
int nbuf_set(struct nbuf *b, size_t index, const void *src, size_t n);
/**@}*/

/** @name Typed writes: big-endian (network order); _le = little-endian
 *  Each name's width: u8 1 byte, u16 2, u32 4, u64 8. */
/**@{*/
/**
 * Append @p v at the writer index in the name's width and byte order,
 * growing as nbuf_write() does.
 * @param b the buffer.
 * @param v the value.
 * @return 0; -ENOBUFS, -ENOMEM, -EROFS (nothing written); -EINVAL if @p b
 *         is NULL or released.
 */
int nbuf_write_u8(struct nbuf *b, uint8_t v);
int nbuf_write_u16(struct nbuf *b, uint16_t v);
int nbuf_write_u32(struct nbuf *b, uint32_t v);
int nbuf_write_u64(struct nbuf *b, uint64_t v);
int nbuf_write_u16_le(struct nbuf *b, uint16_t v);
int nbuf_write_u32_le(struct nbuf *b, uint32_t v);
int nbuf_write_u64_le(struct nbuf *b, uint64_t v);
/**@}*/

/** @name Typed reads: big-endian (network order); _le = little-endian */
/**@{*/
/**
 * Consume one value of the name's width and byte order from the reader
 * index, as nbuf_read() does.
 * @param b the buffer.
 * @param out where the value goes (not written on failure).
 * @return 0; -ENODATA if fewer bytes are readable (nothing consumed);
 *         -EINVAL if @p b is NULL or released or @p out is NULL.
 */
int nbuf_read_u8(struct nbuf *b, uint8_t *out);
int nbuf_read_u16(struct nbuf *b, uint16_t *out);
int nbuf_read_u32(struct nbuf *b, uint32_t *out);
int nbuf_read_u64(struct nbuf *b, uint64_t *out);
int nbuf_read_u16_le(struct nbuf *b, uint16_t *out);
int nbuf_read_u32_le(struct nbuf *b, uint32_t *out);
int nbuf_read_u64_le(struct nbuf *b, uint64_t *out);
/**@}*/

/** @name Typed gets: big-endian (network order); _le = little-endian */
/**@{*/
/**
 * Copy one value of the name's width and byte order from the absolute
 * @p index (its bytes at or below the writer index), as nbuf_get() does;
 * no cursor moves.
 * @param b the buffer.
 * @param index the absolute index of the value's first byte.
 * @param out where the value goes (not written on failure).
 * @return 0; -ENODATA if out of range; -EINVAL if @p b is NULL or released
 *         or @p out is NULL.
 */
int nbuf_get_u8(const struct nbuf *b, size_t index, uint8_t *out);
int nbuf_get_u16(const struct nbuf *b, size_t index, uint16_t *out);
int nbuf_get_u32(const struct nbuf *b, size_t index, uint32_t *out);
int nbuf_get_u64(const struct nbuf *b, size_t index, uint64_t *out);
int nbuf_get_u16_le(const struct nbuf *b, size_t index, uint16_t *out);
int nbuf_get_u32_le(const struct nbuf *b, size_t index, uint32_t *out);
int nbuf_get_u64_le(const struct nbuf *b, size_t index, uint64_t *out);
/**@}*/

/** @name Typed sets: big-endian (network order); _le = little-endian */
/**@{*/
/**
 * Overwrite the bytes at the absolute @p index (below the capacity) with
 * @p v in the name's width and byte order, as nbuf_set() does; no cursor
 * moves, nothing grows.
 * @param b the buffer.
 * @param index the absolute index of the value's first byte.
 * @param v the value.
 * @return 0; -EINVAL if out of range, or if @p b is NULL or released;
 *         -EROFS (read-only).
 */
int nbuf_set_u8(struct nbuf *b, size_t index, uint8_t v);
int nbuf_set_u16(struct nbuf *b, size_t index, uint16_t v);
int nbuf_set_u32(struct nbuf *b, size_t index, uint32_t v);
int nbuf_set_u64(struct nbuf *b, size_t index, uint64_t v);
int nbuf_set_u16_le(struct nbuf *b, size_t index, uint16_t v);
int nbuf_set_u32_le(struct nbuf *b, size_t index, uint32_t v);
int nbuf_set_u64_le(struct nbuf *b, size_t index, uint64_t v);
/**@}*/

/** @name Views and copies
 *  A view is a new buffer header (recycled, no malloc) over [part of] the
 *  memory of @p b: writes through either are seen by both; its cursors and
 *  reference count are its own; its capacity and max_capacity are its length
 *  (it never grows); it is read-only if @p b is. It holds one reference on
 *  the memory's owner until it is released itself, and counts in the owner's
 *  pool's `views` statistic. */
/**@{*/
/**
 * A view of bytes [off, off + len) of @p b (absolute, within [0, writer]:
 * never unwritten bytes or class slack). Its readable bytes are exactly
 * those; an empty view (@p len 0, @p off <= writer) is valid.
 * @param b the buffer (or view) whose memory the view shares.
 * @param off the absolute index of the first byte.
 * @param len the bytes of the view.
 * @return a new reference, or NULL with errno = EINVAL (out of range or
 *         overflowing; or @p b NULL or released), EOVERFLOW (the owner's
 *         reference count is at its maximum) or ENOMEM.
 * @see nbuf_release
 */
struct nbuf *nbuf_slice(struct nbuf *b, size_t off, size_t len);
/**
 * A view of the next @p n readable bytes; advances @p b's reader index by
 * @p n on success only.
 * @param b the buffer (or view) whose memory the view shares.
 * @param n the bytes of the view.
 * @return a new reference, or NULL with errno = ENODATA (fewer readable;
 *         nothing consumed), EINVAL (@p b NULL or released), EOVERFLOW or
 *         ENOMEM.
 * @see nbuf_release
 */
struct nbuf *nbuf_read_slice(struct nbuf *b, size_t n);
/**
 * A view of all of @p b's capacity with @p b's cursors (independent after).
 * Its writable room is @p b's: writes through it land in @p b's memory.
 * @param b the buffer (or view) whose memory the view shares.
 * @return a new reference, or NULL with errno = EINVAL (@p b NULL or
 *         released), EOVERFLOW or ENOMEM.
 * @see nbuf_release
 */
struct nbuf *nbuf_duplicate(struct nbuf *b);
/**
 * A deep copy of bytes [off, off + len) (within [0, writer]) into a new
 * buffer of @p b's pool (the owner's pool for a view; the default pool for
 * wrapped and mapped memory): readable = @p len, cursors at 0 and @p len,
 * growable up to the pool's max_buffer_size. It shares nothing with @p b.
 * @param b the buffer (or view) to copy from.
 * @param off the absolute index of the first byte.
 * @param len the bytes to copy.
 * @return a new reference, or NULL with errno = EINVAL (out of range or
 *         overflowing; @p b NULL or released; or @p len above the pool's
 *         max_buffer_size) or ENOMEM.
 * @see nbuf_release
 */
struct nbuf *nbuf_copy(const struct nbuf *b, size_t off, size_t len);
/**@}*/

/**
 * Find @p byte in the absolute range [from, to), clamped to the writer index
 * (unwritten bytes are never searched).
 * @param b the buffer.
 * @param from the absolute index where the search starts.
 * @param to the absolute index where it ends (exclusive).
 * @param byte the byte to find.
 * @return its absolute index; -ENOENT if absent (or the clamped range is
 *         empty); -EINVAL if @p from > @p to, or @p b is NULL or released.
 */
ssize_t nbuf_index_of(const struct nbuf *b, size_t from, size_t to, uint8_t byte);

/** @name IO */
/**@{*/
/**
 * One read() from @p fd into the writable space, first growing so that up to
 * @p max bytes fit (bounded by max_capacity; when growth is impossible, into
 * what room there is). EINTR is retried. The writer advances by what was
 * read.
 * @param b the buffer.
 * @param fd the descriptor to read from.
 * @param max the most bytes to read (not 0).
 * @return bytes read (> 0); 0 at end of file; -EAGAIN (non-blocking, nothing
 *         to read); -ENOBUFS if there is no room and none can be made;
 *         -ENOMEM; -EROFS (read-only); -EINVAL (@p max 0, or @p b NULL or
 *         released); another -errno from read() (nothing changed).
 */
ssize_t nbuf_read_fd(struct nbuf *b, int fd, size_t max);
/**
 * One write of the readable bytes to @p fd: send(MSG_NOSIGNAL) on sockets,
 * so a closed peer gives -EPIPE and never SIGPIPE; write() on anything else
 * (a pipe whose reader is gone raises SIGPIPE there as write() does: ignore
 * it if that can happen). EINTR is retried. The reader advances by what was
 * written; a partial write leaves the rest readable.
 * @param b the buffer.
 * @param fd the descriptor to write to.
 * @return bytes written (0, without a syscall, if nothing was readable);
 *         -EAGAIN (non-blocking, nothing accepted); -EINVAL (@p b NULL or
 *         released); another -errno from send()/write() (nothing consumed).
 */
ssize_t nbuf_write_fd(struct nbuf *b, int fd);
/**@}*/

#ifdef __cplusplus
}
#endif

#endif /* NBUF_BUF_H */
