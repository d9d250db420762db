/* SPDX-License-Identifier: MIT */
/*
 * RESP2 replies, appended to a client's output composite. Headers and small
 * values are copied (nbuf_composite_add_copy packs consecutive copies into
 * one pooled tail buffer); values kept as buffers are added as slices, so a
 * GET of a large value copies nothing but its "$len\r\n" header.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kv.h"

#define SMALL_BULK 512 /* bulk replies up to this size are built in one copy */

size_t
kv_fmt_ll(char *dst, long long v)
{
    char tmp[24];
    size_t n = 0, len;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[n++] = '-';
    len = n;
    for (size_t i = 0; i < len; i++)
        dst[i] = tmp[len - 1 - i];
    return len;
}

int
kv_reply_raw(struct nbuf_composite *out, const void *p, size_t n)
{
    return nbuf_composite_add_copy(out, p, n);
}

int
kv_reply_ok(struct nbuf_composite *out)
{
    return nbuf_composite_add_copy(out, "+OK\r\n", 5);
}

int
kv_reply_null(struct nbuf_composite *out)
{
    return nbuf_composite_add_copy(out, "$-1\r\n", 5);
}

static int
reply_prefixed(struct nbuf_composite *out, char type, long long v)
{
    char buf[32];
    size_t n = 0;
    buf[n++] = type;
    n += kv_fmt_ll(buf + n, v);
    buf[n++] = '\r';
    buf[n++] = '\n';
    return nbuf_composite_add_copy(out, buf, n);
}

int
kv_reply_int(struct nbuf_composite *out, long long v)
{
    return reply_prefixed(out, ':', v);
}

int
kv_reply_array(struct nbuf_composite *out, long long n)
{
    return reply_prefixed(out, '*', n);
}

int
kv_reply_bulk(struct nbuf_composite *out, const void *p, size_t n)
{
    char buf[SMALL_BULK + 32];
    size_t h = 0;
    int r;

    buf[h++] = '$';
    h += kv_fmt_ll(buf + h, (long long)n);
    buf[h++] = '\r';
    buf[h++] = '\n';
    if (n <= SMALL_BULK) {
        if (n)
            memcpy(buf + h, p, n);
        memcpy(buf + h + n, "\r\n", 2);
        return nbuf_composite_add_copy(out, buf, h + n + 2);
    }
    if ((r = nbuf_composite_add_copy(out, buf, h)) || (r = nbuf_composite_add_copy(out, p, n)))
        return r;
    return nbuf_composite_add_copy(out, "\r\n", 2);
}

/* "-<message>\r\n" with CR and LF in the message turned into spaces, as
 * Redis does so that an error can never break the protocol. */
int
kv_reply_error(struct nbuf_composite *out, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n;

    buf[0] = '-';
    va_start(ap, fmt);
    n = vsnprintf(buf + 1, sizeof(buf) - 3, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n > sizeof(buf) - 4)
        n = (int)(sizeof(buf) - 4);
    for (int i = 1; i <= n; i++)
        if (buf[i] == '\r' || buf[i] == '\n')
            buf[i] = ' ';
    buf[n + 1] = '\r';
    buf[n + 2] = '\n';
    return nbuf_composite_add_copy(out, buf, (size_t)n + 3);
}

/* Bulk reply of bytes [off, off + len) of a stored value: inline bytes are
 * copied, buffer segments are added as slices (each retained by @p out). */
int
kv_reply_entry(struct nbuf_composite *out, struct kv_entry *e, size_t off, size_t len)
{
    uint32_t nseg = kv_entry_nseg(e);
    struct nbuf **segs;
    char hdr[32];
    size_t h = 0;
    int r;

    if (nseg == 0)
        return kv_reply_bulk(out, kv_entry_inline(e) + off, len);
    hdr[h++] = '$';
    h += kv_fmt_ll(hdr + h, (long long)len);
    hdr[h++] = '\r';
    hdr[h++] = '\n';
    if ((r = nbuf_composite_add_copy(out, hdr, h)))
        return r;
    segs = kv_entry_segs(e);
    for (uint32_t i = 0; i < nseg && len; i++) {
        size_t slen = nbuf_readable(segs[i]);
        if (off >= slen) {
            off -= slen;
            continue;
        }
        size_t take = slen - off < len ? slen - off : len;
        r = nbuf_composite_add_slice(out, segs[i], nbuf_reader_index(segs[i]) + off, take);
        if (r)
            return r;
        len -= take;
        off = 0;
    }
    return nbuf_composite_add_copy(out, "\r\n", 2);
}
