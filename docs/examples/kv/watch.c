/* SPDX-License-Identifier: MIT */
/*
 * The WATCH registry: each shard lists the keys connections watch (struct
 * kv_watch, store_int.h), each connection its own records. The store calls
 * kv_watch_touch_locked on every change to a key (a branch while its shard
 * has no watched key), which marks the watchers of that key dirty, and
 * kv_watch_flush_locked before a flush. Records live from WATCH until
 * EXEC, DISCARD, UNWATCH or the connection's end (kv_store_unwatch_all).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "store_int.h"

void
kv_watch_touch_slow_locked(struct kv_shard *sh, uint32_t h32, const void *key, size_t klen)
{
    for (struct kv_watch *w = sh->watches; w; w = w->next)
        if (w->hash == h32 && w->klen == klen && memcmp(w->key, key, klen) == 0)
            __atomic_store_n(w->dirty, true, __ATOMIC_RELAXED);
}

/* A flush changes every watched key that exists (expired or not). */
void
kv_watch_flush_locked(struct kv_shard *sh)
{
    for (struct kv_watch *w = sh->watches; w; w = w->next) {
        for (struct kv_entry *e = sh->buckets[w->hash & sh->mask]; e; e = e->next) {
            if (e->hash == w->hash && e->klen == w->klen && memcmp(e->data, w->key, w->klen) == 0) {
                __atomic_store_n(w->dirty, true, __ATOMIC_RELAXED);
                break;
            }
        }
    }
}

/* A change the store does not make itself (APPEND writing into a value's
 * own tail buffer, an empty APPEND). */
void
kv_store_touch_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen)
{
    kv_watch_touch_locked(&s->shards[kv_shard_of(hash)], (uint32_t)hash, key, klen);
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
    kv_shard_find_locked(sh, (uint32_t)hash, key, klen, now_ms);
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
        kv_shard_find_locked(&s->shards[w->shard], w->hash, w->key, w->klen, now_ms);
}
