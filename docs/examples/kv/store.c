/* SPDX-License-Identifier: MIT */
/*
 * The keyspace: 64 shards, each a chained hash table with its own lock (taken
 * only when the server runs several threads) and simple doubling/halving
 * resize. An entry holds its key and either its value inline
 * (small values) or references to nbuf buffers whose readable bytes are the
 * value. Expiry is lazy on lookup plus a bounded periodic sweep
 * (kv_store_sweep). Every change to a key (put, delete, expiry, a new TTL,
 * a flush) tells the WATCH registry (watch.c), at the cost of one branch
 * while no key of the shard is watched.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "kv.h"
#include "store_int.h"

#define KV_MIN_BUCKETS 16u

/* kv_store_lock_all's depth on this thread: while it is held, the single
 * and mask locks are no-ops for this thread (EXEC runs commands under it). */
static _Thread_local unsigned all_held;

/* ---- hashing: a small wyhash-style multiply-mix, seeded per process ---- */

static inline uint64_t
mix(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t
rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint64_t
kv_hash(const struct kv_store *s, const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = s->seed ^ mix(klen, 0xa0761d6478bd642full);
    size_t n = klen;
    uint64_t a, b;

    while (n > 16) {
        h = mix(rd64(p) ^ 0xe7037ed1a0b428dbull, rd64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    if (n >= 8) {
        a = rd64(p);
        b = rd64(p + n - 8);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        a = x;
        b = y;
    } else if (n > 0) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
        b = 0;
    } else {
        a = b = 0;
    }
    return mix(a ^ 0x8ebc6af09c88c6e3ull, b ^ h ^ 0x589965cc75374cc3ull);
}

/* ---- locking ---- */

void
kv_store_lock(struct kv_store *s, unsigned shard)
{
    if (s->locked && !all_held)
        pthread_mutex_lock(&s->shards[shard].lock);
}

void
kv_store_unlock(struct kv_store *s, unsigned shard)
{
    if (s->locked && !all_held)
        pthread_mutex_unlock(&s->shards[shard].lock);
}

/* Several shards at once, always in ascending order (no deadlock). */
void
kv_store_lock_mask(struct kv_store *s, uint64_t mask)
{
    if (!s->locked || all_held)
        return;
    for (unsigned i = 0; i < KV_SHARDS; i++)
        if (mask & (1ull << i))
            pthread_mutex_lock(&s->shards[i].lock);
}

void
kv_store_unlock_mask(struct kv_store *s, uint64_t mask)
{
    if (!s->locked || all_held)
        return;
    for (unsigned i = KV_SHARDS; i-- > 0;)
        if (mask & (1ull << i))
            pthread_mutex_unlock(&s->shards[i].lock);
}

/* Every shard (ascending), for a whole transaction or a scan of all keys;
 * nests on one thread, and the other lock calls of this thread do nothing
 * until the outermost kv_store_unlock_all. */
void
kv_store_lock_all(struct kv_store *s)
{
    if (!s->locked)
        return;
    if (all_held == 0) /* before the count: lock_mask does nothing while held */
        kv_store_lock_mask(s, ~0ull);
    all_held++;
}

void
kv_store_unlock_all(struct kv_store *s)
{
    if (s->locked && --all_held == 0)
        kv_store_unlock_mask(s, ~0ull);
}

/* ---- entries ---- */

static void
entry_free(struct kv_entry *e)
{
    uint32_t n = kv_entry_nseg(e);
    struct nbuf **segs = kv_entry_segs(e);
    for (uint32_t i = 0; i < n; i++)
        nbuf_release(segs[i]);
    free(e);
}

/* A new entry; takes v's segment references (on success only). */
static struct kv_entry *
entry_new(uint32_t hash, const void *key, size_t klen, const struct kv_val *v)
{
    size_t size = sizeof(struct kv_entry);
    struct kv_entry *e;

    if (klen > UINT32_MAX || v->len > UINT32_MAX || v->nseg > KV_NSEG_MASK) {
        errno = E2BIG;
        return NULL;
    }
    if (v->nseg == 0)
        size += klen + v->len;
    else
        size += ((klen + 7) & ~(size_t)7) + (size_t)v->nseg * sizeof(struct nbuf *);
    e = malloc(size);
    if (!e)
        return NULL;
    e->next = NULL;
    e->expire_ms = 0;
    e->hash = hash;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)v->len;
    e->nseg = v->nseg;
    memcpy(e->data, key, klen);
    if (v->nseg == 0) {
        if (v->len)
            memcpy(e->data + klen, v->p, v->len);
    } else {
        /* The references move into the entry here. */
        memcpy(kv_entry_segs(e), v->segs, v->nseg * sizeof(struct nbuf *));
        if (v->tail_owned)
            e->nseg |= KV_TAIL_OWNED;
    }
    return e;
}

size_t
kv_entry_copy(struct kv_entry *e, size_t off, void *dst, size_t n)
{
    uint32_t nseg = kv_entry_nseg(e);
    unsigned char *d = dst;
    size_t done = 0;

    if (off >= e->vlen)
        return 0;
    if (n > e->vlen - off)
        n = e->vlen - off;
    if (nseg == 0) {
        memcpy(d, kv_entry_inline(e) + off, n);
        return n;
    }
    struct nbuf **segs = kv_entry_segs(e);
    for (uint32_t i = 0; i < nseg && done < n; i++) {
        size_t len = nbuf_readable(segs[i]);
        if (off >= len) {
            off -= len;
            continue;
        }
        size_t take = len - off < n - done ? len - off : n - done;
        memcpy(d + done, nbuf_data(segs[i]) + off, take);
        done += take;
        off = 0;
    }
    return done;
}

/* ---- tables ---- */

static int
shard_resize_locked(struct kv_shard *sh, uint32_t nbuckets)
{
    struct kv_entry **nb = calloc(nbuckets, sizeof(*nb));
    if (!nb)
        return -ENOMEM;
    for (uint32_t i = 0; i <= sh->mask; i++) {
        struct kv_entry *e = sh->buckets[i];
        while (e) {
            struct kv_entry *next = e->next;
            uint32_t b = e->hash & (nbuckets - 1);
            e->next = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(sh->buckets);
    sh->buckets = nb;
    sh->mask = nbuckets - 1;
    sh->sweep_cursor = 0;
    return 0;
}

static void
shard_maybe_shrink_locked(struct kv_shard *sh)
{
    uint32_t n = sh->mask + 1;
    if (n > KV_MIN_BUCKETS && sh->count * 8 < n) {
        uint32_t want = KV_MIN_BUCKETS;
        while (want < sh->count * 2)
            want <<= 1;
        shard_resize_locked(sh, want); /* failure keeps the bigger table */
    }
}

static void
unlink_free_locked(struct kv_shard *sh, struct kv_entry **link, struct kv_entry *e)
{
    *link = e->next;
    sh->count--;
    if (e->expire_ms)
        sh->nexpires--;
    kv_watch_touch_locked(sh, e->hash, e->data, e->klen);
    entry_free(e);
}

/* The link that points at the live entry for key, or at the chain's NULL
 * end; expired entries met on the way are removed. */
static inline __attribute__((always_inline)) struct kv_entry **
find_link_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen, int64_t now_ms)
{
    struct kv_entry **link = &sh->buckets[h32 & sh->mask];
    struct kv_entry *e;

    while ((e = *link)) {
        if (e->hash == h32 && e->klen == klen && memcmp(e->data, key, klen) == 0) {
            if (kv_entry_expired(e, now_ms)) {
                unlink_free_locked(sh, link, e);
                continue; /* *link is now the next entry */
            }
            return link;
        }
        link = &e->next;
    }
    return link;
}

/* For watch.c: what find_link_locked finds (expired entries deleted). */
struct kv_entry *
kv_shard_find_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen,
                     int64_t now_ms)
{
    return *find_link_locked(sh, h32, key, klen, now_ms);
}

struct kv_entry *
kv_store_find_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen,
                     int64_t now_ms)
{
    struct kv_shard *sh = &s->shards[kv_shard_of(hash)];
    return *find_link_locked(sh, (uint32_t)hash, key, klen, now_ms);
}

int
kv_store_put_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen,
                    const struct kv_val *v, int64_t expire_ms, bool keep_ttl, int64_t now_ms)
{
    struct kv_shard *sh = &s->shards[kv_shard_of(hash)];
    struct kv_entry **link = find_link_locked(sh, (uint32_t)hash, key, klen, now_ms);
    struct kv_entry *old = *link;
    struct kv_entry *e = entry_new((uint32_t)hash, key, klen, v);

    if (!e)
        return -errno;
    e->expire_ms = expire_ms;
    if (old && keep_ttl && !expire_ms)
        e->expire_ms = old->expire_ms;
    if (e->expire_ms)
        sh->nexpires++;
    kv_watch_touch_locked(sh, (uint32_t)hash, key, klen);
    if (old) {
        e->next = old->next;
        *link = e;
        if (old->expire_ms)
            sh->nexpires--;
        entry_free(old);
        return 0;
    }
    *link = e;
    sh->count++;
    if (sh->count > (uint64_t)sh->mask + 1 && sh->mask < (UINT32_MAX >> 1))
        shard_resize_locked(sh, (sh->mask + 1) * 2); /* failure: longer chains */
    return 0;
}

int
kv_store_del_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen, int64_t now_ms)
{
    struct kv_shard *sh = &s->shards[kv_shard_of(hash)];
    struct kv_entry **link = find_link_locked(sh, (uint32_t)hash, key, klen, now_ms);

    if (!*link)
        return 0;
    unlink_free_locked(sh, link, *link);
    shard_maybe_shrink_locked(sh);
    return 1;
}

/* Give entry @p e (found under @p hash) the absolute expiry @p expire_ms
 * (0: none). An expiry already past is the caller's to delete instead. */
void
kv_store_expire_locked(struct kv_store *s, uint64_t hash, struct kv_entry *e, int64_t expire_ms)
{
    struct kv_shard *sh = &s->shards[kv_shard_of(hash)];

    if (e->expire_ms && !expire_ms)
        sh->nexpires--;
    else if (!e->expire_ms && expire_ms)
        sh->nexpires++;
    e->expire_ms = expire_ms;
    kv_watch_touch_locked(sh, e->hash, e->data, e->klen);
}

/* Call @p fn on every live entry (all shards locked by the caller, with
 * kv_store_lock_all) until it returns nonzero. @return that value, or 0. */
int
kv_store_each_locked(struct kv_store *s, int64_t now_ms, kv_entry_fn fn, void *arg)
{
    for (unsigned i = 0; i < KV_SHARDS; i++) {
        struct kv_shard *sh = &s->shards[i];
        for (uint32_t b = 0; b <= sh->mask; b++) {
            for (struct kv_entry *e = sh->buckets[b]; e; e = e->next) {
                int r = kv_entry_expired(e, now_ms) ? 0 : fn(e, arg);
                if (r)
                    return r;
            }
        }
    }
    return 0;
}

/* Shard by shard (one lock at a time): under concurrent writes the sum is
 * a moment's approximation, as for any size read while others write. */
uint64_t
kv_store_size(struct kv_store *s)
{
    uint64_t keys, expires;
    kv_store_counts(s, &keys, &expires);
    return keys;
}

void
kv_store_counts(struct kv_store *s, uint64_t *keys, uint64_t *expires)
{
    *keys = *expires = 0;
    for (unsigned i = 0; i < KV_SHARDS; i++) {
        kv_store_lock(s, i);
        *keys += s->shards[i].count;
        *expires += s->shards[i].nexpires;
        kv_store_unlock(s, i);
    }
}

static void
shard_clear_locked(struct kv_shard *sh)
{
    if (sh->watches)
        kv_watch_flush_locked(sh);
    for (uint32_t i = 0; i <= sh->mask; i++) {
        struct kv_entry *e = sh->buckets[i];
        while (e) {
            struct kv_entry *next = e->next;
            entry_free(e);
            e = next;
        }
        sh->buckets[i] = NULL;
    }
    sh->count = 0;
    sh->nexpires = 0;
    shard_maybe_shrink_locked(sh);
}

/* Shard by shard, so other threads wait for one shard at most (a write that
 * lands in a shard already cleared survives, as if it came after). */
void
kv_store_flush(struct kv_store *s)
{
    for (unsigned i = 0; i < KV_SHARDS; i++) {
        kv_store_lock(s, i);
        shard_clear_locked(&s->shards[i]);
        kv_store_unlock(s, i);
    }
}

/* Scan up to budget buckets of one shard from where the last sweep stopped
 * and drop expired entries. @return the number dropped. */
size_t
kv_store_sweep(struct kv_store *s, unsigned shard, int64_t now_ms, unsigned budget)
{
    struct kv_shard *sh = &s->shards[shard];
    size_t dropped = 0;

    kv_store_lock(s, shard);
    if (sh->nexpires == 0)
        goto out_unlock;
    if (budget > sh->mask + 1)
        budget = sh->mask + 1;
    for (unsigned i = 0; i < budget; i++) {
        uint32_t b = (sh->sweep_cursor + i) & sh->mask;
        struct kv_entry **link = &sh->buckets[b];
        struct kv_entry *e;
        while ((e = *link)) {
            if (kv_entry_expired(e, now_ms)) {
                unlink_free_locked(sh, link, e);
                dropped++;
            } else {
                link = &e->next;
            }
        }
    }
    sh->sweep_cursor = (sh->sweep_cursor + budget) & sh->mask;
    if (dropped)
        shard_maybe_shrink_locked(sh);
out_unlock:
    kv_store_unlock(s, shard);
    return dropped;
}

struct kv_store *
kv_store_new(bool locked)
{
    struct kv_store *s = aligned_alloc(64, sizeof(*s));
    unsigned i;

    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->locked = locked;
    if (getrandom(&s->seed, sizeof(s->seed), 0) != sizeof(s->seed))
        s->seed = (uint64_t)(uintptr_t)s ^ 0x9e3779b97f4a7c15ull;
    for (i = 0; i < KV_SHARDS; i++) {
        struct kv_shard *sh = &s->shards[i];
        sh->buckets = calloc(KV_MIN_BUCKETS, sizeof(*sh->buckets));
        if (!sh->buckets)
            goto out_free;
        sh->mask = KV_MIN_BUCKETS - 1;
        pthread_mutex_init(&sh->lock, NULL);
    }
    return s;

out_free:
    while (i-- > 0) {
        free(s->shards[i].buckets);
        pthread_mutex_destroy(&s->shards[i].lock);
    }
    free(s);
    return NULL;
}

void
kv_store_free(struct kv_store *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < KV_SHARDS; i++) {
        struct kv_shard *sh = &s->shards[i];
        shard_clear_locked(sh);
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(s);
}
