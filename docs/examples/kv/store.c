/* SPDX-License-Identifier: MIT */
/*
 * The keyspace: 64 shards, each a chained hash table with its own lock (taken
 * only when the server runs several threads) and simple doubling/halving
 * resize. An entry (entry.c) holds its key and either its value inline
 * (small values) or references to nbuf buffers whose readable bytes are the
 * value. Expiry is lazy on lookup plus a bounded periodic sweep
 * (kv_store_sweep). Each shard also lists the keys connections WATCH: every
 * change to a key (put, delete, expiry, a new TTL, a flush) marks its
 * watchers dirty, at the cost of one branch per change while no key of the
 * shard is watched.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "kv.h"

#define KV_MIN_BUCKETS 16u

/*
 * One watched key. Invariants: it is on the list of shard `shard` (next,
 * pprev) and on its connection's list (sess_next) until
 * kv_store_unwatch_all; dirty points into that connection's session, which
 * outlives the record. Synchronization: the shard's lock for next, pprev
 * and *dirty; the owning connection's thread for sess_next.
 */
struct kv_watch {
    struct kv_watch *next, **pprev; /* the shard's list */
    struct kv_watch *sess_next;     /* the connection's list */
    bool *dirty;                    /* set (atomically) when the key changes */
    uint32_t hash;                  /* low 32 bits, as in kv_entry */
    unsigned shard;
    uint32_t klen;
    unsigned char key[];
};

/*
 * One shard. Invariants: nbuckets = mask + 1 is a power of two >= 16; every
 * entry sits in bucket (hash & mask); count is the number of entries and
 * nexpires those with expire_ms != 0; watches lists the kv_watch records of
 * this shard's keys. Synchronization: lock (if the store is locked), else
 * the single event-loop thread. The fields a lookup reads come first, in the
 * first cache line with the lock's own word.
 */
struct kv_shard {
    struct kv_entry **buckets;
    uint32_t mask;
    uint32_t sweep_cursor;
    uint64_t count;
    uint64_t nexpires;
    struct kv_watch *watches;
    pthread_mutex_t lock;
} __attribute__((aligned(64)));

struct kv_store {
    struct kv_shard shards[KV_SHARDS];
    uint64_t seed;
    bool locked;
};

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

unsigned
kv_shard_of(uint64_t hash)
{
    return (unsigned)(hash >> 58) & (KV_SHARDS - 1);
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

/* ---- watched keys ---- */

static void
touch_slow_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen)
{
    for (struct kv_watch *w = sh->watches; w; w = w->next)
        if (w->hash == h32 && w->klen == klen && memcmp(w->key, key, klen) == 0)
            __atomic_store_n(w->dirty, true, __ATOMIC_RELAXED);
}

/* A key changed: its watchers' transactions will fail. One branch when the
 * shard has no watched key. */
static inline void
touch_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen)
{
    if (__builtin_expect(sh->watches != NULL, 0))
        touch_slow_locked(sh, h32, key, klen);
}

void
kv_store_touch_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen)
{
    touch_locked(&s->shards[kv_shard_of(hash)], (uint32_t)hash, key, klen);
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
    touch_locked(sh, e->hash, e->data, e->klen);
    kv_entry_free(e);
}

/* The link that points at the live entry for key, or at the chain's NULL
 * end; expired entries met on the way are removed. */
static struct kv_entry **
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
    struct kv_entry *e = kv_entry_new((uint32_t)hash, key, klen, v);

    if (!e)
        return -errno;
    e->expire_ms = expire_ms;
    if (old && keep_ttl && !expire_ms)
        e->expire_ms = old->expire_ms;
    if (e->expire_ms)
        sh->nexpires++;
    touch_locked(sh, (uint32_t)hash, key, klen);
    if (old) {
        e->next = old->next;
        *link = e;
        if (old->expire_ms)
            sh->nexpires--;
        kv_entry_free(old);
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
    touch_locked(sh, e->hash, e->data, e->klen);
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

/*
 * WATCH: add @p key to the connection's @p list (once) and to its shard's,
 * so that a change to it sets *dirty. A key already expired is deleted
 * first: it is watched as missing, as Redis treats an expired key.
 */
int
kv_store_watch(struct kv_store *s, uint64_t hash, const void *key, size_t klen, int64_t now_ms,
               struct kv_watch **list, bool *dirty)
{
    unsigned shard = kv_shard_of(hash);
    struct kv_shard *sh = &s->shards[shard];
    struct kv_watch *w;

    for (w = *list; w; w = w->sess_next)
        if (w->shard == shard && w->hash == (uint32_t)hash && w->klen == klen &&
            memcmp(w->key, key, klen) == 0)
            return 0;
    if (klen > UINT32_MAX)
        return -E2BIG;
    if (!(w = malloc(sizeof(*w) + klen)))
        return -ENOMEM;
    w->dirty = dirty;
    w->hash = (uint32_t)hash;
    w->shard = shard;
    w->klen = (uint32_t)klen;
    memcpy(w->key, key, klen);
    kv_store_lock(s, shard);
    find_link_locked(sh, (uint32_t)hash, key, klen, now_ms);
    w->next = sh->watches;
    if (w->next)
        w->next->pprev = &w->next;
    w->pprev = &sh->watches;
    sh->watches = w;
    kv_store_unlock(s, shard);
    w->sess_next = *list;
    *list = w;
    return 0;
}

void
kv_store_unwatch_all(struct kv_store *s, struct kv_watch **list)
{
    struct kv_watch *w;

    while ((w = *list)) {
        *list = w->sess_next;
        kv_store_lock(s, w->shard);
        *w->pprev = w->next;
        if (w->next)
            w->next->pprev = w->pprev;
        kv_store_unlock(s, w->shard);
        free(w);
    }
}

/* EXEC, under every shard lock: a watched key that has expired since WATCH
 * is deleted now, which marks its watchers (Redis 7.0 fails such an EXEC). */
void
kv_store_watch_expire_locked(struct kv_store *s, struct kv_watch *list, int64_t now_ms)
{
    for (struct kv_watch *w = list; w; w = w->sess_next)
        find_link_locked(&s->shards[w->shard], w->hash, w->key, w->klen, now_ms);
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
    /* A flush changes every watched key that exists (expired or not). */
    for (struct kv_watch *w = sh->watches; w; w = w->next) {
        for (struct kv_entry *e = sh->buckets[w->hash & sh->mask]; e; e = e->next) {
            if (e->hash == w->hash && e->klen == w->klen && memcmp(e->data, w->key, w->klen) == 0) {
                __atomic_store_n(w->dirty, true, __ATOMIC_RELAXED);
                break;
            }
        }
    }
    for (uint32_t i = 0; i <= sh->mask; i++) {
        struct kv_entry *e = sh->buckets[i];
        while (e) {
            struct kv_entry *next = e->next;
            kv_entry_free(e);
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
