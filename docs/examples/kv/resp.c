/* SPDX-License-Identifier: MIT */
/*
 * The RESP2 request parser: multibulk (*N / $len) and inline commands, read
 * straight from the input composite across component boundaries with
 * nbuf_composite_get/index_of. It never consumes: it reports where the
 * arguments lie and where the command ends, and keeps its progress so a
 * command that arrives in many reads is scanned once. Errors and limits
 * follow Redis 7.0's processMultibulkBuffer/processInlineBuffer.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

#define LINE_PEEK 32 /* bytes fetched at once for a *N or $N line */

/* Redis's string2ll: no spaces, no '+', no leading zeros, no "-0", < 21 chars. */
bool
kv_string2ll(const void *str, size_t slen, long long *out)
{
    const unsigned char *p = str;
    size_t i = 0;
    bool neg = false;
    unsigned long long v;

    if (slen == 0 || slen >= 21)
        return false;
    if (slen == 1 && p[0] == '0') {
        *out = 0;
        return true;
    }
    if (p[0] == '-') {
        neg = true;
        if (++i == slen)
            return false;
    }
    if (p[i] < '1' || p[i] > '9')
        return false;
    v = (unsigned long long)(p[i++] - '0');
    for (; i < slen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        if (v > ULLONG_MAX / 10)
            return false;
        v *= 10;
        if (v > ULLONG_MAX - (unsigned long long)(p[i] - '0'))
            return false;
        v += (unsigned long long)(p[i] - '0');
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return false;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return false;
        *out = (long long)v;
    }
    return true;
}

void
resp_parser_init(struct resp_parser *p, size_t max_bulk)
{
    memset(p, 0, sizeof(*p));
    p->bulklen = -1;
    p->max_bulk = max_bulk;
}

void
resp_parser_fini(struct resp_parser *p)
{
    free(p->args);
    p->args = NULL;
    p->cap = 0;
}

void
resp_parser_reset(struct resp_parser *p)
{
    p->kind = 0;
    p->nargs = 0;
    p->pos = 0;
    p->bulklen = -1;
    p->nparsed = 0;
    p->line_len = 0;
    if (p->cap > 4096) { /* a huge command passed: give its array back */
        free(p->args);
        p->args = NULL;
        p->cap = 0;
    }
}

static enum resp_status
proto_error(struct resp_parser *p, const char *msg)
{
    snprintf(p->err, sizeof(p->err), "Protocol error: %s", msg);
    return RESP_ERROR;
}

/*
 * Locate the line starting at @p from: on success *cr is the offset of its
 * '\r' and, when the line is short, @p buf holds its bytes. As Redis, a line
 * is complete once its '\r' and one more byte are there (that byte is
 * skipped unchecked). Returns RESP_COMMAND when found, RESP_AGAIN, or
 * RESP_ERROR when no '\r' shows within 64 KiB.
 */
static enum resp_status
find_line(struct resp_parser *p, const struct nbuf_composite *in, size_t avail, size_t from,
          char buf[LINE_PEEK], size_t *cr, const char *too_big)
{
    size_t peek = avail - from < LINE_PEEK ? avail - from : LINE_PEEK;
    const char *hit;
    ssize_t r;

    if (nbuf_composite_get(in, from, buf, peek) != 0)
        return proto_error(p, "internal read error");
    hit = memchr(buf, '\r', peek);
    if (hit) {
        *cr = from + (size_t)(hit - buf);
    } else if (peek == avail - from) {
        return RESP_AGAIN; /* all we have is a line start */
    } else {
        r = nbuf_composite_index_of(in, from + peek, '\r');
        if (r < 0) {
            if (avail - from > KV_INLINE_LINE_MAX)
                return proto_error(p, too_big);
            return RESP_AGAIN;
        }
        *cr = (size_t)r;
    }
    if (*cr + 2 > avail)
        return RESP_AGAIN; /* the byte after '\r' is not there yet */
    return RESP_COMMAND;
}

/* The number between the line's type byte and its '\r'. */
static bool
line_number(const struct nbuf_composite *in, size_t from, size_t cr, const char buf[LINE_PEEK],
            long long *out)
{
    size_t len = cr - from - 1;
    if (len >= 21)
        return false;
    if (cr - from < LINE_PEEK)
        return kv_string2ll(buf + 1, len, out);
    char tmp[24];
    if (nbuf_composite_get(in, from + 1, tmp, len) != 0)
        return false;
    return kv_string2ll(tmp, len, out);
}

static int
push_arg(struct resp_parser *p, size_t off, size_t len)
{
    if (p->nparsed == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 16;
        struct resp_span *n = realloc(p->args, ncap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        p->args = n;
        p->cap = ncap;
    }
    p->args[p->nparsed].off = off;
    p->args[p->nparsed].len = len;
    p->nparsed++;
    return 0;
}

static enum resp_status
parse_inline(struct resp_parser *p, const struct nbuf_composite *in, size_t avail)
{
    ssize_t nl = nbuf_composite_index_of(in, 0, '\n');
    unsigned char prev;

    if (nl < 0) {
        if (avail > KV_INLINE_LINE_MAX)
            return proto_error(p, "too big inline request");
        return RESP_AGAIN;
    }
    p->line_len = (size_t)nl;
    if (nl > 0 && nbuf_composite_get(in, (size_t)nl - 1, &prev, 1) == 0 && prev == '\r')
        p->line_len--;
    p->pos = (size_t)nl + 1;
    return RESP_INLINE;
}

enum resp_status
resp_parse(struct resp_parser *p, const struct nbuf_composite *in)
{
    size_t avail = nbuf_composite_readable(in);
    char buf[LINE_PEEK];
    enum resp_status st;
    long long ll;
    size_t cr;

    if (p->kind == 0) {
        unsigned char c0;
        if (avail == 0 || nbuf_composite_get(in, 0, &c0, 1) != 0)
            return RESP_AGAIN;
        p->kind = c0 == '*' ? '*' : 'i';
    }
    if (p->kind == 'i')
        return parse_inline(p, in, avail);

    if (p->nargs == 0) {
        st = find_line(p, in, avail, 0, buf, &cr, "too big mbulk count string");
        if (st != RESP_COMMAND)
            return st;
        if (!line_number(in, 0, cr, buf, &ll) || ll > INT_MAX)
            return proto_error(p, "invalid multibulk length");
        p->pos = cr + 2;
        if (ll <= 0)
            return RESP_EMPTY;
        p->nargs = ll;
    }
    while ((long long)p->nparsed < p->nargs) {
        if (p->bulklen < 0) {
            st = find_line(p, in, avail, p->pos, buf, &cr, "too big bulk count string");
            if (st != RESP_COMMAND)
                return st;
            if (buf[0] != '$') {
                char msg[64];
                char c = buf[0] == '\r' || buf[0] == '\n' ? ' ' : buf[0];
                snprintf(msg, sizeof(msg), "expected '$', got '%c'", c);
                return proto_error(p, msg);
            }
            if (!line_number(in, p->pos, cr, buf, &ll) || ll < 0 ||
                (unsigned long long)ll > p->max_bulk)
                return proto_error(p, "invalid bulk length");
            p->pos = cr + 2;
            p->bulklen = ll;
        }
        /* The bulk and the two bytes after it (skipped unchecked, as Redis). */
        if (avail - p->pos < (size_t)p->bulklen + 2)
            return RESP_AGAIN;
        if (push_arg(p, p->pos, (size_t)p->bulklen) != 0)
            return proto_error(p, "out of memory");
        p->pos += (size_t)p->bulklen + 2;
        p->bulklen = -1;
    }
    return RESP_COMMAND;
}

static inline int
at(const unsigned char *s, size_t len, size_t i)
{
    return i < len ? s[i] : 0;
}

static inline bool
is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline bool
is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline int
hex_val(int c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/*
 * Split an inline line like Redis's sdssplitargs (quotes, \xHH and \n-style
 * escapes; the line ends at its first NUL as the C string it is there).
 * Unquoted bytes go to @p out (at least @p len bytes), spans index into it.
 * @return the number of arguments, -EINVAL for unbalanced quotes, -ENOMEM.
 */
int
resp_split_inline(const unsigned char *line, size_t len, unsigned char *out,
                  struct resp_span **spans, size_t *nspans, size_t *cap)
{
    const unsigned char *nul = memchr(line, 0, len);
    size_t i = 0, o = 0;

    if (nul)
        len = (size_t)(nul - line);
    *nspans = 0;
    for (;;) {
        while (i < len && is_space(line[i]))
            i++;
        if (i >= len)
            return (int)*nspans;
        size_t start = o;
        bool inq = false, insq = false, done = false;
        while (!done) {
            int c = at(line, len, i);
            if (inq) {
                if (c == '\\' && at(line, len, i + 1) == 'x' && is_hex(at(line, len, i + 2)) &&
                    is_hex(at(line, len, i + 3))) {
                    out[o++] = (unsigned char)(hex_val(line[i + 2]) * 16 + hex_val(line[i + 3]));
                    i += 3;
                } else if (c == '\\' && at(line, len, i + 1)) {
                    i++;
                    switch (line[i]) {
                    case 'n': out[o++] = '\n'; break;
                    case 'r': out[o++] = '\r'; break;
                    case 't': out[o++] = '\t'; break;
                    case 'b': out[o++] = '\b'; break;
                    case 'a': out[o++] = '\a'; break;
                    default: out[o++] = line[i]; break;
                    }
                } else if (c == '"') {
                    /* A closing quote must be followed by a space or the end. */
                    if (at(line, len, i + 1) && !is_space(at(line, len, i + 1)))
                        return -EINVAL;
                    done = true;
                } else if (!c) {
                    return -EINVAL;
                } else {
                    out[o++] = (unsigned char)c;
                }
            } else if (insq) {
                if (c == '\\' && at(line, len, i + 1) == '\'') {
                    i++;
                    out[o++] = '\'';
                } else if (c == '\'') {
                    if (at(line, len, i + 1) && !is_space(at(line, len, i + 1)))
                        return -EINVAL;
                    done = true;
                } else if (!c) {
                    return -EINVAL;
                } else {
                    out[o++] = (unsigned char)c;
                }
            } else {
                switch (c) {
                case ' ':
                case '\n':
                case '\r':
                case '\t':
                case '\0': done = true; break;
                case '"': inq = true; break;
                case '\'': insq = true; break;
                default: out[o++] = (unsigned char)c; break;
                }
            }
            if (at(line, len, i))
                i++;
        }
        if (*nspans == *cap) {
            size_t ncap = *cap ? *cap * 2 : 8;
            struct resp_span *n = realloc(*spans, ncap * sizeof(*n));
            if (!n)
                return -ENOMEM;
            *spans = n;
            *cap = ncap;
        }
        (*spans)[*nspans].off = start;
        (*spans)[*nspans].len = o - start;
        (*nspans)++;
        if (*nspans > INT_MAX / 2)
            return -ENOMEM;
    }
}
