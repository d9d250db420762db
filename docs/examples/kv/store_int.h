/* SPDX-License-Identifier: MIT */
/*
 * The store's own layout, shared by store.c (the tables, entries, locks,
 * expiry) and watch.c (the WATCH registry) and by nothing else: the rest
 * of the server goes through the kv_store_* functions in kv.h.
 */
#ifndef NBUF_KV_STORE_INT_H
#define NBUF_KV_STORE_INT_H

#include "kv.h"

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

/* ---- store.c ---- */

struct kv_entry *kv_shard_find_locked(struct kv_shard *sh, uint32_t h32, const void *key,
                                      size_t klen, int64_t now_ms);

/* ---- watch.c ---- */

void kv_watch_touch_slow_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen);
void kv_watch_flush_locked(struct kv_shard *sh);

/* A key changed: its watchers' transactions will fail. One branch when the
 * shard has no watched key. */
static inline void
kv_watch_touch_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen)
{
    if (__builtin_expect(sh->watches != NULL, 0))
        kv_watch_touch_slow_locked(sh, h32, key, klen);
}

#endif /* NBUF_KV_STORE_INT_H */
