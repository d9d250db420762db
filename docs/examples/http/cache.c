/* SPDX-License-Identifier: MIT */
/*
 * The open-file cache (nginx's open_file_cache): per worker, no lock. A
 * normalized path maps to the regular file it resolved to, open, with its
 * size, mtime and type, for --file-cache seconds after the open; then it is
 * resolved and opened again, so renames, new permissions and replaced
 * symlinks show within that time. Least recently used entries are closed
 * when the cache is full. Only successes are cached.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"

/*
 * One cached file. Invariants: linked in bucket hash & mask of its cache
 * and in the LRU list (most recent at the head); fd is open.
 */
struct http_fcache_entry {
    struct http_fcache_entry *hnext;         /* bucket chain */
    struct http_fcache_entry *lprev, *lnext; /* LRU list */
    uint64_t hash;
    int64_t expires_ms;
    struct http_file file;
    size_t klen;
    char key[]; /* the normalized path, then a '/' if it named a directory */
};

static uint64_t
hash_key(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 0x100000001b3ull;
    return h;
}

static void
lru_unlink(struct http_fcache *fc, struct http_fcache_entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        fc->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        fc->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void
lru_push_head(struct http_fcache *fc, struct http_fcache_entry *e)
{
    e->lprev = NULL;
    e->lnext = fc->lru_head;
    if (fc->lru_head)
        fc->lru_head->lprev = e;
    else
        fc->lru_tail = e;
    fc->lru_head = e;
}

static void
entry_remove(struct http_fcache *fc, struct http_fcache_entry *e)
{
    struct http_fcache_entry **pp = &fc->buckets[e->hash & fc->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(fc, e);
    close(e->file.fd);
    free(e);
    fc->count--;
}

/*
 * Set up a cache of at most @p capacity files kept for @p valid_ms each.
 * @p capacity 0 or @p valid_ms 0 is a disabled cache (every call misses).
 * @return 0 or -ENOMEM.
 */
int
http_fcache_init(struct http_fcache *fc, unsigned capacity, int64_t valid_ms)
{
    size_t nb = 16;

    memset(fc, 0, sizeof(*fc));
    fc->capacity = valid_ms > 0 ? capacity : 0;
    fc->valid_ms = valid_ms;
    if (!fc->capacity)
        return 0;
    while (nb < (size_t)capacity * 2)
        nb *= 2;
    fc->buckets = calloc(nb, sizeof(*fc->buckets));
    if (!fc->buckets)
        return -ENOMEM;
    fc->mask = nb - 1;
    return 0;
}

void
http_fcache_fini(struct http_fcache *fc)
{
    while (fc->lru_head)
        entry_remove(fc, fc->lru_head);
    free(fc->buckets);
    fc->buckets = NULL;
}

/*
 * The cached file for @p key, if it was opened less than valid_ms before
 * @p now_ms (an older entry is closed). The fd stays the cache's.
 * @return true with @p f filled (f->cached set), or false.
 */
bool
http_fcache_get(struct http_fcache *fc, const char *key, size_t klen, int64_t now_ms,
                struct http_file *f)
{
    if (!fc->capacity)
        return false;
    uint64_t h = hash_key(key, klen);
    for (struct http_fcache_entry *e = fc->buckets[h & fc->mask]; e; e = e->hnext) {
        if (e->hash != h || e->klen != klen || memcmp(e->key, key, klen) != 0)
            continue;
        if (now_ms >= e->expires_ms) {
            entry_remove(fc, e);
            return false;
        }
        if (fc->lru_head != e) {
            lru_unlink(fc, e);
            lru_push_head(fc, e);
        }
        *f = e->file;
        f->cached = true;
        return true;
    }
    return false;
}

/*
 * Keep the freshly opened @p f under @p key. On success the cache takes
 * f->fd (and sets f->cached); on failure (no memory, cache disabled)
 * nothing changes and the caller still owns it.
 */
void
http_fcache_put(struct http_fcache *fc, const char *key, size_t klen, int64_t now_ms,
                struct http_file *f)
{
    struct http_fcache_entry *e;

    if (!fc->capacity)
        return;
    if (fc->count >= fc->capacity)
        entry_remove(fc, fc->lru_tail);
    e = malloc(sizeof(*e) + klen);
    if (!e)
        return;
    e->hash = hash_key(key, klen);
    e->expires_ms = now_ms + fc->valid_ms;
    e->file = *f;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->hnext = fc->buckets[e->hash & fc->mask];
    fc->buckets[e->hash & fc->mask] = e;
    lru_push_head(fc, e);
    fc->count++;
    f->cached = true;
}
