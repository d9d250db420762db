/* SPDX-License-Identifier: MIT */
/**
 * @file nbuf/composite.h
 * @brief Composite buffers: chains of buffer slices and file regions read as
 * one logical buffer and flushed with writev/sendfile.
 *
 * A composite is an ordered sequence of *components*. Each is either len
 * bytes of a buffer (a reference to the buffer, an offset into its memory and
 * a length) or a region of a file (the composite's own dup of the fd, an
 * offset and a length). Together they read as one buffer of
 * nbuf_composite_readable() bytes, consumed from the front:
 *
 *     component:  [hdr 16 B][ payload slice ][ payload slice ][ file region ]
 *     offsets:     0         16               4112             8208      end
 *                  ^ reader (offsets of get/find/... are relative to it)
 *
 * so a protocol frame is composed from a header copied in place
 * (nbuf_composite_add_copy) and payload slices of the buffers it came in
 * (nbuf_composite_add_slice), and sent with one call,
 * nbuf_composite_writev(), that gathers them with writev()/sendmsg() and
 * sends file regions with sendfile(), resuming at exactly the next byte
 * after a partial write. Incoming bytes are read with
 * nbuf_composite_read_fd() and cut into frames with read_slice/split.
 *
 * Costs: adding a component is O(1) amortized (a ring of components that
 * grows by doubling, so N adds cost O(N) and consuming from the front never
 * moves the rest); finding the component of an offset is O(log n) with a
 * fast path for the component last looked up and its successor. Adjacent
 * slices of one buffer are merged into one component, consecutive slices
 * of one buffer share one reference (no atomic per slice), and consecutive
 * small slices and copies are packed into one component of the tail.
 *
 * The bytes are shared, not copied: the composite reads a buffer's memory at
 * the offsets it was given when it reads or flushes, so changes to those
 * bytes show through, and a buffer whose bytes sit in a composite must not be
 * grown past its capacity, compacted (nbuf_discard_read) or rewound over
 * them: take a view (nbuf_slice) of what you hand over if you keep writing
 * to the buffer, since a view pins the memory. The exception is small
 * slices: nbuf_composite_add_slice() and nbuf_composite_add_iov() copy a
 * slice of at most NBUF_COMPOSITE_COPY_MAX bytes into the composite's pooled
 * tail at once (cheaper than a component and an iovec each), so it holds no
 * reference on its buffer and later changes to its bytes do not show. File
 * regions are read when they are flushed; a file that shrinks meanwhile
 * makes the flush fail with -EIO.
 *
 * Ownership: "takes" means the caller's reference moves into the composite
 * on success only (on failure the caller still owns it). Every buffer
 * returned is a new reference the caller releases. Components are released
 * as soon as they are fully consumed (read, skipped, split off, written), so
 * read bytes never pin memory. nbuf_composite_free() releases every
 * remaining one.
 *
 * Thread safety: a composite has one owner at a time (no locking inside).
 * Buffers in it may be shared with other threads and composites as usual.
 *
 * Errors: functions that act return 0 or -errno; IO functions return a byte
 * count or -errno; functions that return a pointer return NULL and set
 * errno. On failure nothing has changed unless stated. Common codes:
 * -EINVAL (NULL composite or other bad argument, or a buffer that was
 * already fully released: also reported), -ENOMEM, -EOVERFLOW (the readable
 * total would pass SIZE_MAX), -ENODATA (fewer readable bytes than asked).
 * Reading a file region copies it with pread(): such reads can also fail
 * with -EIO (the file is shorter than the region) or -ESPIPE (a pipe or
 * socket region, which only the flush can send).
 */
#ifndef NBUF_COMPOSITE_H
#define NBUF_COMPOSITE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque composite. */
struct nbuf_composite;

/** @name Life cycle */
/**@{*/
/**
 * Create an empty composite.
 *
 * @param p the pool that copies (add_copy, read_fd, read_slice, flatten)
 *        come from; NULL means nbuf_pool_default(). Components may be
 *        buffers of any pool.
 * @return the composite, or NULL with errno = ENOMEM, or what
 *         nbuf_pool_default() set.
 * @see nbuf_composite_free
 */
struct nbuf_composite *nbuf_composite_new(struct nbuf_pool *p);

/**
 * Release every component (each buffer reference and file dup the composite
 * holds, exactly once) and free the composite. NULL is a no-op.
 *
 * @param c the composite, or NULL.
 */
void nbuf_composite_free(struct nbuf_composite *c);
/**@}*/

/** @name Adding */
/**@{*/
/**
 * Add @p b's readable bytes, [reader_index, writer_index), at the end.
 * Takes @p b. An empty @p b is released at once and adds no component.
 * The bytes are always referenced, whatever their size (the flush copies
 * tiny neighbours into one iovec).
 *
 * @param c the composite.
 * @param b the buffer (or view) whose reference moves in on success.
 * @return 0; -EINVAL (NULL, or @p b already released: reported),
 *         -EOVERFLOW (readable total would pass SIZE_MAX), -ENOMEM. On
 *         failure the caller keeps its reference and nothing changed.
 */
int nbuf_composite_add(struct nbuf_composite *c, struct nbuf *b);

/** Largest slice nbuf_composite_add_slice() and nbuf_composite_add_iov()
 *  copy rather than reference: a slice copied when added costs neither a
 *  component nor an iovec, which pays up to about this size (measured; see
 *  docs/design.md). */
#define NBUF_COMPOSITE_COPY_MAX 1024

/**
 * Add bytes [off, off + len) of @p b (absolute offsets, within [0,
 * writer_index], as for nbuf_slice()) at the end. @p len 0 adds nothing.
 *
 * - A slice that starts where the last component ends in the same buffer
 *   extends that component, whatever its size.
 * - Otherwise a slice of at most NBUF_COMPOSITE_COPY_MAX bytes is copied at
 *   once into the composite's pooled tail, packed behind the previous copy
 *   (as by nbuf_composite_add_copy()). The copy takes no reference: the
 *   refcount of @p b is unchanged, the composite does not keep @p b alive,
 *   and the caller may release, reuse or overwrite @p b right after the
 *   call without changing what the composite holds. When the pool cannot
 *   give tail memory, the slice is referenced instead, as below.
 * - A longer slice is referenced: @p b is retained (the caller keeps its own
 *   reference), one reference shared among consecutive referenced slices of
 *   the same buffer, and the composite reads those bytes when it reads or
 *   flushes them.
 *
 * @param c the composite.
 * @param b the buffer (or view) the bytes are in; the caller keeps its
 *        reference.
 * @param off the absolute index of the first byte in @p b.
 * @param len the bytes to add.
 * @return 0; -EINVAL (NULL, range outside [0, writer_index] or overflowing,
 *         or @p b already released: reported), -EOVERFLOW (total),
 *         -ENOMEM; or what nbuf_retain() reports (-EOVERFLOW at the maximum
 *         count). Nothing changed on failure.
 */
int nbuf_composite_add_slice(struct nbuf_composite *c, struct nbuf *b, size_t off, size_t len);

/**
 * Add many pieces of @p b at once, in order: @p iov[0, n) point into @p b's
 * bytes [0, writer_index] (for instance fields a parser found). Pieces of at
 * most NBUF_COMPOSITE_COPY_MAX bytes are copied into the composite's tail
 * space, packed as by nbuf_composite_add_copy() (so later changes to those
 * bytes of @p b do not show); longer pieces are referenced as by
 * nbuf_composite_add_slice(), consecutive ones sharing one reference and
 * adjacent ones merged. A frame of many small pieces is composed this way at
 * close to the cost of a memcpy loop, where one add_slice() per piece costs a
 * call and a component each. Empty pieces are skipped.
 *
 * @param c the composite.
 * @param b the buffer (or view) every piece points into; the caller keeps
 *        its reference.
 * @param iov the pieces, in order.
 * @param n how many (>= 0).
 * @return 0; -EINVAL (NULL @p c or @p b, @p n < 0, NULL @p iov with @p n >
 *         0, a piece outside [0, writer_index] of @p b, or @p b already
 *         released: reported), -EOVERFLOW (total), -ENOMEM; or what
 *         nbuf_retain() reports. All or nothing: nothing changed on failure.
 */
int nbuf_composite_add_iov(struct nbuf_composite *c, struct nbuf *b, const struct iovec *iov,
                           int n);

/**
 * Add @p b's readable bytes in front of the readable bytes. Takes @p b
 * (an empty @p b is released at once).
 *
 * @param c the composite.
 * @param b the buffer (or view) whose reference moves in on success.
 * @return 0; -EINVAL, -EOVERFLOW, -ENOMEM as for nbuf_composite_add().
 */
int nbuf_composite_prepend(struct nbuf_composite *c, struct nbuf *b);

/**
 * Copy @p n bytes (typically a small header) to the end. The bytes go into
 * pooled tail space the composite keeps: consecutive copies (and small
 * slices) are packed behind each other into one component. A new tail
 * buffer, 256 B doubling up to 64 KiB, or @p n if larger, is taken when the
 * current one is full; the tail is packed again from its start once nothing
 * references its bytes, and a composite that empties keeps a tail of at
 * most 4 KiB.
 *
 * @param c the composite.
 * @param src the bytes (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0 (also for @p n 0); -EINVAL (NULL @p src with @p n > 0, or @p n
 *         above the pool's max_buffer_size), -EOVERFLOW, -ENOMEM. Nothing
 *         changed on failure.
 */
int nbuf_composite_add_copy(struct nbuf_composite *c, const void *src, size_t n);

/**
 * Add @p len bytes of the file @p fd from offset @p off at the end. The
 * composite keeps its own dup of @p fd (close-on-exec), so the caller may
 * close @p fd at once; the bytes are read only when flushed (sendfile) or
 * read. For a regular file the range must lie within the file's current
 * size. A pipe, socket or character device is accepted too: its region is
 * the next @p len bytes read from it (@p off is ignored) and only the flush
 * can send it. @p len 0 adds nothing (the range is still checked).
 *
 * @param c the composite.
 * @param fd the file (or pipe, socket, character device); the composite
 *        keeps its own dup.
 * @param off the offset of the region in a regular file (>= 0).
 * @param len the bytes of the region.
 * @return 0; -EBADF (@p fd negative or not open), -EINVAL (negative @p off,
 *         @p off + @p len past the end of the regular file or past the
 *         largest off_t), -EOVERFLOW (total), -EMFILE (no descriptor left
 *         for the dup), -ENOMEM. Nothing changed on failure.
 */
int nbuf_composite_add_file(struct nbuf_composite *c, int fd, off_t off, size_t len);

/**
 * Move all of @p src's components to the end of @p c, without copying a
 * byte or taking a reference; @p src is left empty (and still usable).
 *
 * @param c the composite to append to.
 * @param src the composite whose components move (not @p c).
 * @return 0; -EINVAL (NULL, or @p c == @p src: appending a composite to
 *         itself), -EOVERFLOW (total), -ENOMEM. Nothing changed on failure.
 */
int nbuf_composite_append(struct nbuf_composite *c, struct nbuf_composite *src);
/**@}*/

/** @name Sizes */
/**@{*/
/**
 * @param c the composite, or NULL.
 * @return readable bytes (0 for NULL).
 */
size_t nbuf_composite_readable(const struct nbuf_composite *c);
/**
 * Empty components are never stored, and merged neighbours count once.
 * @param c the composite, or NULL.
 * @return number of components holding readable bytes (0 for NULL).
 */
size_t nbuf_composite_count(const struct nbuf_composite *c);
/**@}*/

/** @name Reading across component boundaries
 * Offsets are relative to the reader (offset 0 is the next byte to read).
 * Consuming functions release the components they empty. */
/**@{*/
/**
 * Consume @p n bytes into @p dst.
 * @param c the composite.
 * @param dst where the bytes go (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -ENODATA if fewer than @p n are readable; -EINVAL; -EIO or
 *         -ESPIPE from a file region. Nothing is consumed on failure.
 */
int nbuf_composite_read(struct nbuf_composite *c, void *dst, size_t n);

/**
 * Copy bytes [index, index + n) into @p dst without consuming them.
 * @param c the composite.
 * @param index the offset of the first byte from the reader.
 * @param dst where the bytes go (may be NULL only when @p n is 0).
 * @param n how many.
 * @return 0; -ENODATA if the range is not all readable (or overflows);
 *         -EINVAL; -EIO or -ESPIPE from a file region.
 */
int nbuf_composite_get(const struct nbuf_composite *c, size_t index, void *dst, size_t n);

/**
 * Consume @p n bytes without copying them.
 * @param c the composite.
 * @param n how many.
 * @return 0; -ENODATA if fewer are readable (nothing consumed); -EINVAL.
 */
int nbuf_composite_skip(struct nbuf_composite *c, size_t n);
/**@}*/

/** @name Typed reads: big-endian (network order); _le = little-endian
 *  Each name's width: u8 1 byte, u16 2, u32 4, u64 8. */
/**@{*/
/**
 * Consume one value of the name's width and byte order, across component
 * boundaries.
 * @param c the composite.
 * @param out where the value goes (not written on failure).
 * @return 0; -ENODATA (fewer readable: nothing consumed); -EINVAL (NULL
 *         @p c or @p out); -EIO or -ESPIPE (file region).
 */
int nbuf_composite_read_u8(struct nbuf_composite *c, uint8_t *out);
int nbuf_composite_read_u16(struct nbuf_composite *c, uint16_t *out);
int nbuf_composite_read_u32(struct nbuf_composite *c, uint32_t *out);
int nbuf_composite_read_u64(struct nbuf_composite *c, uint64_t *out);
int nbuf_composite_read_u16_le(struct nbuf_composite *c, uint16_t *out);
int nbuf_composite_read_u32_le(struct nbuf_composite *c, uint32_t *out);
int nbuf_composite_read_u64_le(struct nbuf_composite *c, uint64_t *out);
/**@}*/

/** @name Typed gets: big-endian (network order); _le = little-endian */
/**@{*/
/**
 * Copy one value of the name's width and byte order at an offset from the
 * reader, consuming nothing.
 * @param c the composite.
 * @param index the offset of the value's first byte from the reader.
 * @param out where the value goes (not written on failure).
 * @return 0; -ENODATA (not all readable); -EINVAL (NULL @p c or @p out);
 *         -EIO or -ESPIPE (file region).
 */
int nbuf_composite_get_u8(const struct nbuf_composite *c, size_t index, uint8_t *out);
int nbuf_composite_get_u16(const struct nbuf_composite *c, size_t index, uint16_t *out);
int nbuf_composite_get_u32(const struct nbuf_composite *c, size_t index, uint32_t *out);
int nbuf_composite_get_u64(const struct nbuf_composite *c, size_t index, uint64_t *out);
int nbuf_composite_get_u16_le(const struct nbuf_composite *c, size_t index, uint16_t *out);
int nbuf_composite_get_u32_le(const struct nbuf_composite *c, size_t index, uint32_t *out);
int nbuf_composite_get_u64_le(const struct nbuf_composite *c, size_t index, uint64_t *out);
/**@}*/

/** @name Searching */
/**@{*/
/**
 * Find @p byte at or after offset @p from.
 * @param c the composite.
 * @param from the offset from the reader where the search starts.
 * @param byte the byte to find.
 * @return its offset from the reader; -ENOENT if absent; -EINVAL (NULL, or
 *         @p from > readable); -EIO or -ESPIPE from a file region. Only the
 *         first SSIZE_MAX bytes are searched.
 */
ssize_t nbuf_composite_index_of(const struct nbuf_composite *c, size_t from, uint8_t byte);

/**
 * Find the first occurrence of @p needle[0, n) that starts at or after
 * offset @p from; a match may span any number of components. An empty
 * needle matches at @p from.
 * @param c the composite.
 * @param from the offset from the reader where a match may start.
 * @param needle the bytes to find (may be NULL only when @p n is 0).
 * @param n the needle's length.
 * @return its offset from the reader; -ENOENT; -EINVAL (NULL, or @p from >
 *         readable); -EIO or -ESPIPE from a file region.
 */
ssize_t nbuf_composite_find(const struct nbuf_composite *c, size_t from, const void *needle,
                            size_t n);
/**@}*/

/** @name Framing */
/**@{*/
/**
 * Consume the next @p n bytes as one buffer: a zero-copy view (nbuf_slice)
 * when they lie in one buffer component, otherwise a pooled copy of just
 * those @p n bytes (from @p c's pool). @p n 0 gives an empty buffer.
 *
 * @param c the composite.
 * @param n the bytes to consume.
 * @return a new reference, or NULL with errno = ENODATA (fewer readable;
 *         nothing consumed), EINVAL (NULL, or @p n above the pool's
 *         max_buffer_size for a copy), ENOMEM, EIO/ESPIPE (file region).
 */
struct nbuf *nbuf_composite_read_slice(struct nbuf_composite *c, size_t n);

/**
 * Move the next @p n bytes of @p c to the end of @p out without copying: the
 * components that lie wholly in them move, and the one the boundary cuts is
 * split in two (both halves referencing the same buffer or file).
 *
 * @param c the composite to take the bytes from.
 * @param n how many.
 * @param out the composite they go to (not @p c).
 * @return 0; -ENODATA (fewer readable), -EINVAL (NULL, or @p out == @p c),
 *         -EOVERFLOW (@p out's total), -ENOMEM; or what nbuf_retain()
 *         reports. Nothing changed in either composite on failure.
 */
int nbuf_composite_split(struct nbuf_composite *c, size_t n, struct nbuf_composite *out);

/**
 * All readable bytes as one buffer, without consuming them (the composite
 * is unchanged; follow with nbuf_composite_skip() to consume). A view when
 * there is one buffer component, else a pooled copy.
 *
 * @param c the composite.
 * @return a new reference (empty when nothing is readable), or NULL with
 *         errno = EINVAL (NULL, or more than the pool's max_buffer_size),
 *         ENOMEM, EIO/ESPIPE (file region).
 */
struct nbuf *nbuf_composite_flatten(const struct nbuf_composite *c);

/**
 * Release fully read components and give back component-array capacity a
 * burst left unused. Since consuming calls already release what they empty,
 * this only shrinks the array (Netty's discardReadComponents).
 * @param c the composite.
 * @return 0; -EINVAL for NULL.
 */
int nbuf_composite_discard_read(struct nbuf_composite *c);

/**
 * Describe the readable memory as iovecs (for your own writev or
 * io_uring), from the reader: at most @p max iovecs and @p max_bytes bytes,
 * stopping before the first file region. Adjacent memory shares an iovec;
 * no iovec is empty. Nothing is consumed: call nbuf_composite_skip() with
 * what you wrote. The pointers stay valid until those bytes are consumed.
 *
 * @param c the composite.
 * @param iov where the iovecs go.
 * @param max the most iovecs to fill (>= 0).
 * @param max_bytes the most bytes to describe.
 * @return the number of iovecs filled (0 if nothing is readable or a file
 *         region comes first); -EINVAL (NULL @p c, @p max < 0, NULL @p iov
 *         with @p max > 0).
 */
int nbuf_composite_iov(const struct nbuf_composite *c, struct iovec *iov, int max,
                       size_t max_bytes);
/**@}*/

/** @name IO */
/**@{*/
/**
 * The flush: write the readable bytes to @p fd, as many as it accepts.
 *
 * Memory is gathered into writev()-style batches of at most IOV_MAX iovecs
 * and SSIZE_MAX bytes (sendmsg() with MSG_NOSIGNAL on sockets, writev()
 * otherwise); runs of small components are copied into one pooled staging
 * buffer when that is cheaper than one iovec each (and adjacent memory
 * shares an iovec). File regions go with sendfile(), or pread()+write when
 * sendfile refuses the pair (EINVAL, ENOSYS, ESPIPE: a pipe as the source,
 * read with read()). Batches continue while @p fd accepts all that is
 * offered; EINTR is retried. SIGPIPE is never raised (for pipes and
 * sendfile it is blocked in the calling thread for the call, and one the
 * call caused is discarded; nothing is blocked when SIGPIPE is ignored).
 * Memory written just before a file region goes with MSG_MORE, so on TCP a
 * header shares the file's first segment.
 *
 * Written bytes are consumed and fully written components released, so after
 * a partial write the next call resumes at exactly the next byte. With a
 * blocking @p fd the call returns when all is written.
 *
 * @param c the composite.
 * @param fd the descriptor to write to (a socket, pipe or file).
 * @return bytes written (> 0); 0 with no syscall when nothing is readable;
 *         -EAGAIN when @p fd accepted nothing (nothing consumed); -EIO when a
 *         regular file is shorter than its queued region (the region stays
 *         queued: every later call fails the same way, without looping);
 *         -EINVAL (NULL), -EBADF (negative fd), -ENOMEM; or the error of the
 *         write (-EPIPE, -ECONNRESET, ...) with nothing consumed. When an
 *         error follows some bytes written in the same call, the call
 *         returns that count and the next call reports the error.
 * @see nbuf_composite_writev_max
 */
ssize_t nbuf_composite_writev(struct nbuf_composite *c, int fd);

/**
 * The flush with a byte budget: like nbuf_composite_writev() but writes at
 * most @p max_bytes in this call, so that one connection with a long queue
 * cannot starve the others of an event loop (nginx's sendfile_max_chunk).
 *
 * @param c the composite.
 * @param fd the descriptor to write to.
 * @param max_bytes the most bytes to write in this call.
 * @return as nbuf_composite_writev(); 0 with no syscall when @p max_bytes is
 *         0.
 */
ssize_t nbuf_composite_writev_max(struct nbuf_composite *c, int fd, size_t max_bytes);

/**
 * Read from @p fd with readv() into pooled memory appended to @p c: the
 * free room behind the last read (or add_copy) first, then a fresh pooled
 * buffer. The size offered adapts like Netty's AdaptiveRecvByteBufAllocator:
 * it starts at 2 KiB, grows fourfold after a read that filled the offer, and
 * shrinks by half after two reads in a row that would have fit the smaller
 * size (64 B .. 64 KiB). EINTR is retried.
 *
 * @param c the composite.
 * @param fd the descriptor to read from.
 * @param max at most this many bytes in this call; 0 = no limit beyond the
 *        adaptive size.
 * @return bytes read (> 0); 0 at end of file; -EAGAIN; -EINVAL (NULL),
 *         -EBADF (negative fd), -EOVERFLOW (total), -ENOMEM; or another
 *         -errno of readv(). Nothing is added on failure.
 */
ssize_t nbuf_composite_read_fd(struct nbuf_composite *c, int fd, size_t max);
/**@}*/

#ifdef __cplusplus
}
#endif

#endif /* NBUF_COMPOSITE_H */
