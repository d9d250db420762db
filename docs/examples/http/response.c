/* SPDX-License-Identifier: MIT */
/*
 * Responses: what to answer a parsed request (method, body, path, the
 * preconditions of cond.c, Range) and its composition into the output
 * composite: the header block formatted on the stack and copied in with
 * nbuf_composite_add_copy (so pipelined headers pack into one buffer), the
 * body as a file region (nbuf_composite_add_file) that the flush sends
 * with sendfile.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"

/* The header block being formatted. Every fixed header set fits in
 * HTTP_HEAD_MAX (the longest is about 400 bytes); hb_put truncates
 * rather than overflow, and the response is then refused. */
struct hb {
    size_t n;
    bool overflow;
    char b[HTTP_HEAD_MAX];
};

static void
hb_put(struct hb *h, const char *s, size_t n)
{
    if (n > sizeof(h->b) - h->n) {
        h->overflow = true;
        return;
    }
    memcpy(h->b + h->n, s, n);
    h->n += n;
}

static void
hb_str(struct hb *h, const char *s)
{
    hb_put(h, s, strlen(s));
}

#define HB_LIT(h, lit) hb_put((h), (lit), sizeof(lit) - 1)

static void
hb_u64(struct hb *h, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do
        tmp[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    hb_put(h, tmp + i, sizeof(tmp) - i);
}

const char *
http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Status line, Server and Date. */
static void
head_start(struct hb *h, struct http_worker *w, int status)
{
    HB_LIT(h, "HTTP/1.1 ");
    hb_u64(h, (uint64_t)status);
    HB_LIT(h, " ");
    hb_str(h, http_status_text(status));
    HB_LIT(h, "\r\nServer: nbuf-http\r\nDate: ");
    hb_put(h, http_worker_date(w), HTTP_DATE_LEN);
    HB_LIT(h, "\r\n");
}

/* Connection (when it differs from the version's default) and the empty
 * line. */
static void
head_end(struct hb *h, bool keep_alive, unsigned version)
{
    if (!keep_alive)
        HB_LIT(h, "Connection: close\r\n");
    else if (version == 10)
        HB_LIT(h, "Connection: keep-alive\r\n");
    HB_LIT(h, "\r\n");
}

static int
hb_flush(struct hb *h, struct nbuf_composite *out)
{
    if (h->overflow)
        return -ENOBUFS;
    return nbuf_composite_add_copy(out, h->b, h->n);
}

/* A short text body saying what the status is: "404 Not Found\n". */
static void
error_body(char *body, size_t cap, size_t *len, int status)
{
    const char *text = http_status_text(status);
    size_t tl = strlen(text);

    body[0] = (char)('0' + status / 100);
    body[1] = (char)('0' + status / 10 % 10);
    body[2] = (char)('0' + status % 10);
    body[3] = ' ';
    if (tl > cap - 5)
        tl = cap - 5;
    memcpy(body + 4, text, tl);
    body[4 + tl] = '\n';
    *len = tl + 5;
}

static int
respond_error_v(struct http_worker *w, struct nbuf_composite *out, int status, bool head,
                bool keep_alive, unsigned version)
{
    struct hb h = {0};
    char body[64];
    size_t bl;

    error_body(body, sizeof(body), &bl, status);
    head_start(&h, w, status);
    if (status == 405)
        HB_LIT(&h, "Allow: GET, HEAD\r\n");
    HB_LIT(&h, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    hb_u64(&h, bl);
    HB_LIT(&h, "\r\n");
    head_end(&h, keep_alive, version);
    if (!head)
        hb_put(&h, body, bl);
    int r = hb_flush(&h, out);
    return r ? r : status;
}

/*
 * Queue an error response (a short text/plain body unless @p head).
 * @return @p status; -ENOMEM and the like from the composite.
 */
int
http_respond_error(struct http_worker *w, struct nbuf_composite *out, int status, bool head,
                   bool keep_alive)
{
    return respond_error_v(w, out, status, head, keep_alive, 11);
}

/* 301 to the target with a '/' after its path (before any query). */
static int
respond_redirect(struct http_worker *w, struct nbuf_composite *out, const struct http_request *req,
                 bool keep_alive)
{
    static const char body[] = "301 Moved Permanently\n";
    const char *t = req->target, *q = memchr(t, '?', req->target_len);
    size_t pl = q ? (size_t)(q - t) : req->target_len;
    struct hb h = {0}, tail = {0};
    int r;

    head_start(&h, w, 301);
    HB_LIT(&h, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    hb_u64(&h, sizeof(body) - 1);
    HB_LIT(&h, "\r\nLocation: ");
    /* The target is checked visible ASCII (no CR, LF or space) by the
     * parser, so echoing it cannot split the header. */
    HB_LIT(&tail, "/");
    if (q)
        hb_put(&tail, q, req->target_len - pl);
    HB_LIT(&tail, "\r\n");
    head_end(&tail, keep_alive, req->version);
    if (req->method == HTTP_M_GET)
        HB_LIT(&tail, body);
    if (h.overflow || tail.overflow)
        return -ENOBUFS;
    if ((r = hb_flush(&h, out)) || (r = nbuf_composite_add_copy(out, t, pl)) ||
        (r = hb_flush(&tail, out)))
        return r;
    return 301;
}

/* Digits with saturation at UINT64_MAX; false if there are none. */
static bool
range_num(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;

    for (; *p < end && **p >= '0' && **p <= '9'; (*p)++) {
        unsigned d = (unsigned)(**p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    return *p > s;
}

enum range_kind { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

/*
 * A single byte range of RFC 9110 section 14.1.2 against a file of @p size
 * bytes: "bytes=first-last", "bytes=first-", "bytes=-suffix". Multiple
 * ranges and anything unparsable are ignored (RANGE_NONE: the whole file,
 * which RFC 9110 allows). On RANGE_OK, [*start, *start + *len).
 */
static enum range_kind
parse_range(const char *v, size_t n, uint64_t size, uint64_t *start, uint64_t *len)
{
    const char *p = v, *end = v + n;
    uint64_t first, last;

    if (n < 6 || strncasecmp(v, "bytes", 5) != 0)
        return RANGE_NONE;
    p += 5;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p == end || *p++ != '=')
        return RANGE_NONE;
    if (memchr(p, ',', (size_t)(end - p)))
        return RANGE_NONE; /* several ranges: the whole file */
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p < end && *p == '-') { /* suffix */
        p++;
        if (!range_num(&p, end, &last))
            return RANGE_NONE;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p != end)
            return RANGE_NONE;
        if (last == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *len = last < size ? last : size;
        *start = size - *len;
        return RANGE_OK;
    }
    if (!range_num(&p, end, &first) || p == end || *p++ != '-')
        return RANGE_NONE;
    if (!range_num(&p, end, &last))
        last = UINT64_MAX;
    else if (last < first)
        return RANGE_NONE; /* invalid: ignored */
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p != end)
        return RANGE_NONE;
    if (first >= size)
        return RANGE_UNSATISFIABLE;
    if (last >= size)
        last = size - 1;
    *start = first;
    *len = last - first + 1;
    return RANGE_OK;
}

/* Last-Modified and ETag: the validators of a file. */
static void
head_validators(struct hb *h, const char *lm, const char *etag, size_t etl)
{
    HB_LIT(h, "Last-Modified: ");
    hb_put(h, lm, HTTP_DATE_LEN);
    HB_LIT(h, "\r\nETag: ");
    hb_put(h, etag, etl);
    HB_LIT(h, "\r\n");
}

/* Compose the response for the open file @p f. */
static int
respond_file(struct http_worker *w, struct nbuf_composite *out, const struct http_request *req,
             const struct http_file *f, bool keep_alive)
{
    char lm[HTTP_DATE_LEN + 1], etag[HTTP_ETAG_MAX];
    uint64_t size = (uint64_t)f->size, start = 0, len = size;
    size_t etl = http_etag_format(f, etag);
    struct hb h = {0};
    int status = 200, r;

    http_date_format(f->mtime, lm);
    if (http_cond_not_modified(req, f, etag, etl)) {
        /* No body and no Content-Length; the validators a 200 would
         * carry, so a cache can update its copy (RFC 9110 15.4.5). */
        head_start(&h, w, 304);
        head_validators(&h, lm, etag, etl);
        head_end(&h, keep_alive, req->version);
        r = hb_flush(&h, out);
        return r ? r : 304;
    }
    if (req->range && http_cond_range_applies(req, f, etag, etl)) {
        switch (parse_range(req->range, req->range_len, size, &start, &len)) {
        case RANGE_OK: status = 206; break;
        case RANGE_UNSATISFIABLE:
            head_start(&h, w, 416);
            HB_LIT(&h, "Content-Range: bytes */");
            hb_u64(&h, size);
            HB_LIT(&h, "\r\nContent-Length: 0\r\n");
            head_end(&h, keep_alive, req->version);
            r = hb_flush(&h, out);
            return r ? r : 416;
        case RANGE_NONE: break;
        }
    }
    head_start(&h, w, status);
    HB_LIT(&h, "Content-Type: ");
    hb_str(&h, f->mime);
    HB_LIT(&h, "\r\nContent-Length: ");
    hb_u64(&h, len);
    HB_LIT(&h, "\r\n");
    head_validators(&h, lm, etag, etl);
    HB_LIT(&h, "Accept-Ranges: bytes\r\n");
    if (status == 206) {
        HB_LIT(&h, "Content-Range: bytes ");
        hb_u64(&h, start);
        HB_LIT(&h, "-");
        hb_u64(&h, start + len - 1);
        HB_LIT(&h, "/");
        hb_u64(&h, size);
        HB_LIT(&h, "\r\n");
    }
    head_end(&h, keep_alive, req->version);
    if ((r = hb_flush(&h, out)))
        return r;
    /* The body: a file region, sent by sendfile when the flush reaches it.
     * The composite keeps its own dup of the fd. If the file shrank since
     * fstat the headers are already queued: the caller closes the
     * connection, as it does when the flush meets a shrunk file (-EIO). */
    if (req->method == HTTP_M_GET && len > 0 &&
        (r = nbuf_composite_add_file(out, f->fd, (off_t)start, (size_t)len)))
        return r;
    return status;
}

/*
 * Queue the response to @p req on @p out. @p keep_alive comes in as the
 * request's wish and goes out as the decision (false after a request with
 * a body, which is refused with 413 and not read).
 *
 * @return the status sent; or -errno from the composite (-ENOMEM, -EINVAL
 *         when the file shrank), after which the connection must close.
 */
int
http_respond(struct http_worker *w, struct nbuf_composite *out, const struct http_request *req,
             bool *keep_alive)
{
    struct http_file f;
    bool head = req->method == HTTP_M_HEAD;
    int status;

    if (req->has_body) {
        *keep_alive = false; /* its bytes would be read as the next request */
        return respond_error_v(w, out, 413, head, false, req->version);
    }
    if (req->method == HTTP_M_OTHER)
        return respond_error_v(w, out, 405, false, *keep_alive, req->version);
    status = http_path_open(&w->srv->root, &w->files, w->now_ms, req->target, req->target_len, &f);
    if (status == HTTP_PATH_REDIRECT)
        return respond_redirect(w, out, req, *keep_alive);
    if (status) {
        if (status == 400 || status == 414)
            *keep_alive = false;
        return respond_error_v(w, out, status, head, *keep_alive, req->version);
    }
    status = respond_file(w, out, req, &f, *keep_alive);
    if (!f.cached)
        close(f.fd);
    return status;
}
