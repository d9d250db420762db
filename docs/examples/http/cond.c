/* SPDX-License-Identifier: MIT */
/*
 * Conditional requests (RFC 9110 section 13): the validators of a served
 * file, its entity tag and its Last-Modified date, and the preconditions a
 * GET or HEAD is answered by: If-None-Match, which takes precedence over
 * If-Modified-Since, for 304, and If-Range for a Range. The tag is derived
 * from the same fstat snapshot as Content-Length and Last-Modified (the one
 * the open-file cache keeps), so the three always describe one version.
 */
#include <string.h>

#include "http.h"

/* Lower-case hex digits of @p v, no leading zeros. @return their count. */
static size_t
put_hex(char *out, uint64_t v)
{
    char tmp[16];
    size_t n = 0;

    do
        tmp[n++] = "0123456789abcdef"[v & 15];
    while ((v >>= 4) != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/*
 * The strong entity tag of @p f, quotes included: "<mtime>-<size>", both
 * in hex, the mtime in nanoseconds since the epoch (nginx's form, whose
 * mtime is in seconds; nanoseconds also tell apart two versions of one
 * size written within a second). @return its length.
 */
size_t
http_etag_format(const struct http_file *f, char out[HTTP_ETAG_MAX])
{
    uint64_t ns = (uint64_t)f->mtime * 1000000000u + (uint64_t)f->mtime_nsec;
    size_t n = 0;

    out[n++] = '"';
    n += put_hex(out + n, ns); /* wraps before 1970 or after 2554: still a tag */
    out[n++] = '-';
    n += put_hex(out + n, (uint64_t)f->size);
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

/* etagc of RFC 9110 section 8.8.3: VCHAR but DQUOTE, or obs-text. */
static bool
is_etagc(unsigned char ch)
{
    return ch == 0x21 || (ch >= 0x23 && ch != 0x7f);
}

/*
 * Does the If-None-Match value @p v match the tag @p tag[0, tl)? "*"
 * matches any current file; a list of entity tags matches when one of
 * them does by the weak comparison (RFC 9110 section 8.8.3.2: the opaque
 * tags are equal, either may be marked W/). A malformed list matches
 * nothing, so the file is sent: never a 304 on a guess.
 */
static bool
inm_matches(const char *v, size_t n, const char *tag, size_t tl)
{
    bool hit = false;
    size_t i = 0;

    if (n == 1 && v[0] == '*')
        return true;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i == n)
            break;
        if (n - i >= 2 && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        if (i == n || v[i] != '"')
            return false;
        size_t s = i++;
        while (i < n && is_etagc((unsigned char)v[i]))
            i++;
        if (i == n || v[i] != '"')
            return false;
        i++;
        hit |= i - s == tl && memcmp(v + s, tag, tl) == 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] != ',')
            return false;
    }
    return hit;
}

/*
 * Is @p f unchanged for the client, so that a GET or HEAD is answered 304
 * (RFC 9110 section 13.2.2)? With If-None-Match fields: when one matches
 * @p etag, and If-Modified-Since is then not looked at (section 13.1.3).
 * Otherwise If-Modified-Since: when the file's mtime is not later than the
 * date (an invalid date, or one in the future, is ignored).
 */
bool
http_cond_not_modified(const struct http_request *req, const struct http_file *f, const char *etag,
                       size_t etl)
{
    time_t t;

    if (req->inm_count) {
        unsigned kept = req->inm_count < HTTP_INM_FIELDS ? req->inm_count : HTTP_INM_FIELDS;
        for (unsigned k = 0; k < kept; k++)
            if (inm_matches(req->inm[k].v, req->inm[k].n, etag, etl))
                return true;
        return false; /* fields past HTTP_INM_FIELDS: at worst a 200 */
    }
    if (!req->ims || http_date_parse(req->ims, req->ims_len, &t) != 0)
        return false;
    return t <= time(NULL) && f->mtime <= t;
}

/*
 * Does the Range of @p req apply (RFC 9110 section 13.1.5)? Without
 * If-Range, yes. With an entity tag: only if it equals @p etag by the
 * strong comparison (so a W/ tag never does). With a date: only if it is
 * exactly the file's Last-Modified.
 */
bool
http_cond_range_applies(const struct http_request *req, const struct http_file *f, const char *etag,
                        size_t etl)
{
    const char *v = req->if_range;
    size_t n = req->if_range_len;
    time_t t;

    if (!v)
        return true;
    if (n > 0 && (v[0] == '"' || (n >= 2 && v[0] == 'W' && v[1] == '/')))
        return n == etl && memcmp(v, etag, etl) == 0;
    return http_date_parse(v, n, &t) == 0 && t == f->mtime;
}
