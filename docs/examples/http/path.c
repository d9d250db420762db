/* SPDX-License-Identifier: MIT */
/*
 * Root confinement: a request target becomes a path relative to the root
 * (percent-decoded, '.' and '..' resolved lexically, never above the root),
 * which is opened beneath the root: openat2(RESOLVE_BENEATH) where the
 * kernel has it, which also refuses symlinks that lead out, else realpath()
 * checked against the canonical root and opened with O_NOFOLLOW.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define HAVE_OPEN_HOW 1
#endif
#endif

#include "http.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef HAVE_OPEN_HOW
struct open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_BENEATH 0x08
#endif

#define OPEN_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
#define OPENAT2_RETRIES 8 /* EAGAIN: a rename raced the lookup */
#define INDEX_NAME "index.html"

static int
sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how = {.flags = flags, .resolve = resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int
http_root_open(struct http_root *r, const char *dir, bool no_openat2)
{
    int err;

    memset(r, 0, sizeof(*r));
    r->fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (r->fd < 0)
        return -errno;
    r->real = realpath(dir, NULL);
    if (!r->real) {
        err = -errno;
        goto out_close;
    }
    r->real_len = strlen(r->real);
    r->use_openat2 = false;
    if (!no_openat2) {
        int fd = sys_openat2(r->fd, ".", O_PATH | O_CLOEXEC, RESOLVE_BENEATH);
        if (fd >= 0) {
            close(fd);
            r->use_openat2 = true;
        }
    }
    return 0;

out_close:
    close(r->fd);
    r->fd = -1;
    return err;
}

void
http_root_close(struct http_root *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r->real);
    r->fd = -1;
    r->real = NULL;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * Turn the request target @p target[0, n) into a path relative to the root
 * in @p out (no leading '/', "." for the root itself). The path part of an
 * absolute-form target (http://host/path) is used; the query is dropped.
 * Percent-encoding is decoded per segment, so an encoded '/' never splits
 * one; '.' segments are dropped and '..' removes the segment before it.
 * @p dir tells whether the target names a directory (ends with '/', '.' or
 * '..').
 *
 * @return 0; 400 (not origin- or absolute-form, bad or NUL or '/'
 *         percent-escape), 403 ('..' above the root), 414 (longer than
 *         @p cap).
 */
int
http_path_normalize(const char *target, size_t n, char *out, size_t cap, bool *dir)
{
    const char *p = target, *end = target + n;
    size_t len = 0, seg = 0; /* seg: where the current segment starts in out */

    size_t skip = n >= 7 && strncasecmp(p, "http://", 7) == 0    ? 7
                  : n >= 8 && strncasecmp(p, "https://", 8) == 0 ? 8
                                                                 : 0;
    if (skip) {
        p = memchr(p + skip, '/', n - skip);
        if (!p)
            p = end;
    } else if (n == 0 || *p != '/') {
        return 400;
    }
    for (const char *q = p; q < end; q++) {
        if (*q == '?' || *q == '#') {
            end = q;
            break;
        }
    }
    *dir = true;
    while (p < end) {
        if (*p == '/') {
            p++;
            continue;
        }
        /* One segment, decoded into out[seg, len). */
        if (len) {
            if (len + 1 >= cap)
                return 414;
            out[len++] = '/';
        }
        seg = len;
        while (p < end && *p != '/') {
            char ch = *p++;
            if (ch == '%') {
                int hi = end - p >= 2 ? hexval(p[0]) : -1;
                int lo = hi >= 0 ? hexval(p[1]) : -1;
                if (lo < 0)
                    return 400;
                ch = (char)(hi << 4 | lo);
                p += 2;
                if (ch == '\0' || ch == '/')
                    return 400; /* NUL, or a slash that would not split */
            }
            if (len + 1 >= cap)
                return 414;
            out[len++] = ch;
        }
        size_t sl = len - seg;
        if (sl == 1 && out[seg] == '.') {
            len = seg ? seg - 1 : 0; /* drop it and its '/' */
            *dir = true;
        } else if (sl == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 0)
                return 403; /* above the root */
            len = seg - 1;
            while (len > 0 && out[len - 1] != '/')
                len--;
            len = len ? len - 1 : 0; /* drop the parent and its '/' */
            *dir = true;
        } else {
            *dir = p < end; /* a '/' follows */
        }
    }
    if (len == 0)
        out[len++] = '.';
    out[len] = '\0';
    return 0;
}

static int
status_of_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR: return 404;
    case EXDEV: /* openat2: the path leads out of the root */
    case ELOOP: /* a symlink loop, or O_NOFOLLOW met a symlink */
    case EACCES:
    case EPERM:
    case ENXIO: /* a socket or a device without a driver */
    case ENODEV: return 403;
    case ENAMETOOLONG: return 414;
    default: return 500;
    }
}

/* Open @p rel beneath the root. The fd, or -(HTTP status). */
static int
open_beneath(const struct http_root *r, const char *rel)
{
    int fd;

    if (r->use_openat2) {
        for (int i = 0; i < OPENAT2_RETRIES; i++) {
            fd = sys_openat2(r->fd, rel, OPEN_FLAGS, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
            if (fd >= 0)
                return fd;
            if (errno != EAGAIN && errno != EINTR)
                break;
        }
        return -status_of_errno(errno);
    }

    /*
     * The fallback: resolve every symlink, check that the result lies under
     * the canonical root, and open the resolved name refusing a symlink in
     * its last component. A directory swapped for a symlink between the
     * check and the open is not caught (openat2 has no such window).
     */
    char full[PATH_MAX], real[PATH_MAX];
    size_t rl = strlen(rel);
    if (r->real_len + 1 + rl >= sizeof(full))
        return -414;
    memcpy(full, r->real, r->real_len);
    full[r->real_len] = '/';
    memcpy(full + r->real_len + 1, rel, rl + 1);
    if (!realpath(full, real))
        return -status_of_errno(errno);
    if (r->real_len > 1 && (strncmp(real, r->real, r->real_len) != 0 ||
                            (real[r->real_len] != '\0' && real[r->real_len] != '/')))
        return -403;
    fd = open(real, OPEN_FLAGS | O_NOFOLLOW);
    return fd >= 0 ? fd : -status_of_errno(errno);
}

/* Open the regular file @p rel names (an index.html for a directory). */
static int
open_regular(const struct http_root *r, char *rel, size_t cap, bool dir, struct http_file *f)
{
    struct stat st;
    size_t rl;
    bool is_index = false;
    int fd = open_beneath(r, rel), status;

    if (fd < 0)
        return -fd;
    if (fstat(fd, &st) != 0) {
        status = 500;
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        if (!dir)
            return HTTP_PATH_REDIRECT;
        rl = strlen(rel);
        if (rl + 1 + sizeof(INDEX_NAME) > cap)
            return 414;
        if (rl == 1 && rel[0] == '.')
            rl = 0;
        else
            rel[rl++] = '/';
        memcpy(rel + rl, INDEX_NAME, sizeof(INDEX_NAME));
        is_index = true;
        fd = open_beneath(r, rel);
        if (fd < 0)
            return -fd == 404 ? 403 : -fd; /* a directory without an index */
        if (fstat(fd, &st) != 0) {
            status = 500;
            goto out_close;
        }
    }
    if (!S_ISREG(st.st_mode)) {
        status = 403;
        goto out_close;
    }
    if (dir && !is_index) {
        status = 404; /* "file/": as open(2) says, not a directory */
        goto out_close;
    }
    f->fd = fd;
    f->cached = false;
    f->size = st.st_size;
    f->mtime = st.st_mtim.tv_sec;
    f->mtime_nsec = st.st_mtim.tv_nsec;
    f->mime = http_mime_type(rel, strlen(rel));
    return 0;

out_close:
    close(fd);
    return status;
}

/*
 * Open the file a request target names, confined to the root, through the
 * open-file cache @p fc (which may be disabled).
 *
 * @return 0 with @p f filled (the caller closes f->fd unless f->cached);
 *         an HTTP status (400, 403, 404, 414, 500) or HTTP_PATH_REDIRECT (a
 *         directory named without a trailing '/').
 */
int
http_path_open(const struct http_root *r, struct http_fcache *fc, int64_t now_ms,
               const char *target, size_t n, struct http_file *f)
{
    char rel[PATH_MAX], key[PATH_MAX + 1];
    bool dir;
    size_t kl;
    int status = http_path_normalize(target, n, rel, sizeof(rel), &dir);

    if (status)
        return status;
    /* The key: the normalized path, and whether it named a directory. */
    kl = strlen(rel);
    memcpy(key, rel, kl);
    if (dir)
        key[kl++] = '/';
    if (http_fcache_get(fc, key, kl, now_ms, f))
        return 0;
    status = open_regular(r, rel, sizeof(rel), dir, f);
    if (status == 0)
        http_fcache_put(fc, key, kl, now_ms, f);
    return status;
}
