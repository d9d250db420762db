/* SPDX-License-Identifier: MIT */
/*
 * The request parser: framing (where a header block ends in the input) and
 * one complete header block (request line, header fields, the empty line)
 * in contiguous memory, checked strictly against RFC 9112 (CRLF or bare LF
 * line ends, never a bare CR; token names, no whitespace before the colon,
 * no obs-fold, no control bytes in values) and reduced to the few fields a
 * static-file server acts on. Nothing is copied: the result points into the
 * block.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "http.h"

/* tchar of RFC 9110 section 5.6.2. */
static bool
is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && memchr(extra, ch, sizeof(extra) - 1));
}

/* A byte allowed in a field value (VCHAR, obs-text, SP, HTAB). */
static bool
is_field_byte(unsigned char ch)
{
    return ch >= 0x20 ? ch != 0x7f : ch == '\t';
}

/* The line end at @p p[i]: 2 for CRLF, 1 for a bare LF (RFC 9112 section
 * 2.2 lets a recipient take it as a line end), 0 for anything else,
 * including a bare CR. */
static size_t
eol_len(const char *p, size_t i, size_t n)
{
    if (i < n && p[i] == '\n')
        return 1;
    if (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n')
        return 2;
    return 0;
}

static bool
name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(name, lit, n) == 0;
}

/* Does the comma-separated token list @p v contain @p tok? */
static bool
list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;

    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

/* Content-Length: 1*DIGIT, also as a list of equal values ("5, 5"). */
static int
parse_length(const char *v, size_t n, uint64_t *out)
{
    uint64_t first = 0;
    bool have = false;
    size_t i = 0;

    while (i < n) {
        uint64_t x = 0;
        size_t digits = 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        for (; i < n && v[i] >= '0' && v[i] <= '9'; i++, digits++) {
            if (x > (UINT64_MAX - 9) / 10)
                return -ERANGE;
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (!digits || (i < n && v[i] != ','))
            return -EINVAL;
        if (have && x != first)
            return -EINVAL;
        first = x;
        have = true;
        if (i < n)
            i++; /* the comma */
    }
    if (!have)
        return -EINVAL;
    *out = first;
    return 0;
}

/* Consume the empty lines before a request line (RFC 9112 section 2.2:
 * "ignore at least one empty line"), CRLF or LF. */
static void
skip_empty_lines(struct nbuf_composite *in, struct http_scan *s)
{
    uint8_t two[2];
    size_t n;

    while ((n = nbuf_composite_readable(in)) > 0) {
        if (nbuf_composite_get(in, 0, two, n < 2 ? 1 : 2) != 0)
            return;
        size_t k = two[0] == '\n' ? 1 : n >= 2 && two[0] == '\r' && two[1] == '\n' ? 2 : 0;
        if (!k)
            return;
        nbuf_composite_skip(in, k);
        *s = (struct http_scan){0};
    }
}

/* Is there a CR not followed by an LF in [s->cr_from, n)? A CR at the very
 * end is judged when the next byte comes. */
static int
find_bare_cr(const struct nbuf_composite *in, size_t n, struct http_scan *s)
{
    for (;;) {
        ssize_t cr = nbuf_composite_index_of(in, s->cr_from, '\r');
        uint8_t next;

        if (cr == -ENOENT) {
            s->cr_from = n;
            return 0;
        }
        if (cr < 0)
            return (int)cr;
        if ((size_t)cr + 1 == n) {
            s->cr_from = (size_t)cr;
            return 0;
        }
        int r = nbuf_composite_get_u8(in, (size_t)cr + 1, &next);
        if (r)
            return r;
        if (next != '\n')
            return 400;
        s->cr_from = (size_t)cr + 2;
    }
}

/*
 * Frame the next request in @p in: drop the empty lines before it, then
 * find the end of its header block, the first empty line ("\n" or "\r\n"
 * right after an LF; a bare LF ends a line as CRLF does). @p s says where
 * the search resumes; reset it (zero) once the block is consumed.
 *
 * @return 0 with *len the block's length (with the empty line), or *len 0
 *         when it is not complete yet; 400 when a bare CR makes it invalid
 *         whatever follows; -errno from the composite.
 */
int
http_request_frame(struct nbuf_composite *in, struct http_scan *s, size_t *len)
{
    size_t n;

    *len = 0;
    skip_empty_lines(in, s);
    n = nbuf_composite_readable(in);
    while (s->lf_from < n) {
        ssize_t lf = nbuf_composite_index_of(in, s->lf_from, '\n');
        uint8_t next[2];

        if (lf == -ENOENT)
            break;
        if (lf < 0)
            return (int)lf;
        size_t k = (size_t)lf + 1, avail = n - k;
        int r = avail ? nbuf_composite_get(in, k, next, avail < 2 ? 1 : 2) : 0;
        if (r)
            return r;
        if (avail == 0 || (next[0] == '\r' && avail == 1)) {
            s->lf_from = (size_t)lf; /* judged when the next byte comes */
            return find_bare_cr(in, n, s);
        }
        if (next[0] == '\n' || next[0] == '\r') {
            if (next[0] == '\r' && next[1] != '\n')
                return 400; /* a bare CR where the empty line would be */
            *len = k + (next[0] == '\r' ? 2 : 1);
            return 0;
        }
        s->lf_from = k;
    }
    s->lf_from = n;
    return find_bare_cr(in, n, s);
}

/* The request line: method SP request-target SP HTTP-version. Bytes or
 * -(HTTP status). */
static int
parse_request_line(const char *p, size_t n, struct http_request *req)
{
    size_t i = 0, s;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return -400;
    if (i == 3 && memcmp(p, "GET", 3) == 0)
        req->method = HTTP_M_GET;
    else if (i == 4 && memcmp(p, "HEAD", 4) == 0)
        req->method = HTTP_M_HEAD;
    else
        req->method = HTTP_M_OTHER;
    s = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == s || i >= n || p[i] != ' ')
        return -400;
    req->target = p + s;
    req->target_len = i - s;
    i++;
    if (n - i < 9 || memcmp(p + i, "HTTP/", 5) != 0)
        return -400;
    char maj = p[i + 5], min = p[i + 7];
    size_t eol = eol_len(p, i + 8, n);
    if (maj < '0' || maj > '9' || p[i + 6] != '.' || min < '0' || min > '9' || !eol)
        return -400;
    if (maj != '1')
        return -505;
    req->version = min == '0' ? 10 : 11;
    return (int)(i + 8 + eol);
}

/*
 * Parse the header block @p p[0, n), which ends with the empty line.
 *
 * @return 0 with @p req filled; an HTTP status to answer with: 400
 *         (malformed, no Host in HTTP/1.1, two Hosts, bad Content-Length,
 *         both Content-Length and Transfer-Encoding), 431 (more than
 *         HTTP_MAX_HEADERS fields), 505 (not HTTP/1.x).
 */
int
http_request_parse(const char *p, size_t n, struct http_request *req)
{
    bool conn_close = false, conn_keep = false, te = false, cl = false;
    unsigned hosts = 0, fields = 0;
    uint64_t length = 0;
    int r;

    memset(req, 0, sizeof(*req));
    r = parse_request_line(p, n, req);
    if (r < 0)
        return -r;
    size_t i = (size_t)r;
    for (;;) {
        size_t ls = i, colon, eol;
        if (i >= n)
            return 400;
        if (eol_len(p, i, n))
            break; /* the empty line */
        if (++fields > HTTP_MAX_HEADERS)
            return 431;
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        if (i == ls || i >= n || p[i] != ':')
            return 400; /* no name, obs-fold, or whitespace before the colon */
        colon = i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t vs = i;
        while (i < n && is_field_byte((unsigned char)p[i]))
            i++;
        if (!(eol = eol_len(p, i, n)))
            return 400; /* a bare CR, or a control byte */
        size_t ve = i;
        while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
            ve--;
        i += eol;

        const char *name = p + ls, *v = p + vs;
        size_t nl = colon - ls, vl = ve - vs;
        switch (name[0] | 0x20) {
        case 'h':
            if (name_is(name, nl, "host"))
                hosts++;
            break;
        case 'c':
            if (name_is(name, nl, "connection")) {
                conn_close |= list_has(v, vl, "close");
                conn_keep |= list_has(v, vl, "keep-alive");
            } else if (name_is(name, nl, "content-length")) {
                uint64_t x;
                if (parse_length(v, vl, &x) != 0 || (cl && x != length))
                    return 400;
                cl = true;
                length = x;
            }
            break;
        case 't':
            if (name_is(name, nl, "transfer-encoding"))
                te = true;
            break;
        case 'r':
            if (name_is(name, nl, "range")) {
                req->range = v;
                req->range_len = vl;
            }
            break;
        case 'i':
            if (name_is(name, nl, "if-modified-since")) {
                req->ims = v;
                req->ims_len = vl;
            } else if (name_is(name, nl, "if-none-match")) {
                if (req->inm_count < HTTP_INM_FIELDS) {
                    req->inm[req->inm_count].v = v;
                    req->inm[req->inm_count].n = vl;
                }
                req->inm_count++;
            } else if (name_is(name, nl, "if-range")) {
                req->if_range = v;
                req->if_range_len = vl;
            }
            break;
        default: break;
        }
    }
    if (hosts > 1 || (req->version == 11 && hosts == 0))
        return 400;
    if (te && (cl || req->version == 10))
        return 400; /* a smuggling attempt, or TE where 1.0 has none */
    req->has_body = te || length > 0;
    req->keep_alive = req->version == 11 ? !conn_close : conn_keep && !conn_close;
    return 0;
}
