/* SPDX-License-Identifier: MIT */
/*
 * The key commands: DEL, EXISTS, TYPE, KEYS, and expiry: EXPIRE, PEXPIRE,
 * EXPIREAT, PEXPIREAT (with NX, XX, GT, LT), PERSIST, TTL, PTTL,
 * EXPIRETIME, PEXPIRETIME. Replies and errors follow Redis 7.0's db.c and
 * expire.c byte for byte. Expiry times are absolute Unix milliseconds in
 * the entry (0: none); the clock is the event loop's snapshot (x->now_ms).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "kv.h"

#define STORE(x) ((x)->srv->store)

#define EXPIRE_NX (1u << 0)
#define EXPIRE_XX (1u << 1)
#define EXPIRE_GT (1u << 2)
#define EXPIRE_LT (1u << 3)

/* DEL and EXISTS: count the keys (EXISTS counts repeats, as Redis). */
static int
del_or_exists(struct kv_ctx *x, bool del)
{
    uint64_t mask = kv_keys_mask(x, 1, 1);
    long long n = 0;

    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc; i++) {
        uint64_t h = kv_arg_hash(x, i);
        if (del)
            n += kv_store_del_locked(STORE(x), h, x->argv[i].p, x->argv[i].len, x->now_ms);
        else
            n += kv_store_find_locked(STORE(x), h, x->argv[i].p, x->argv[i].len, x->now_ms) != NULL;
    }
    kv_store_unlock_mask(STORE(x), mask);
    return kv_reply_int(x->out, n);
}

int
kv_cmd_del(struct kv_ctx *x)
{
    return del_or_exists(x, true);
}

int
kv_cmd_exists(struct kv_ctx *x)
{
    return del_or_exists(x, false);
}

int
kv_cmd_type(struct kv_ctx *x)
{
    uint64_t h;
    bool found = kv_key_lock_find(x, 1, &h) != NULL;

    kv_key_unlock(x, h);
    return found ? kv_reply_raw(x->out, "+string\r\n", 9) : kv_reply_raw(x->out, "+none\r\n", 7);
}

struct keys_scan {
    const struct kv_arg *pattern;
    bool all; /* "*": every key, even the empty one (as Redis) */
    struct kv_entry **v;
    size_t n, cap;
};

static int
keys_collect(struct kv_entry *e, void *arg)
{
    struct keys_scan *k = arg;

    if (!k->all && !kv_glob_match(k->pattern->p, k->pattern->len, e->data, e->klen, false))
        return 0;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct kv_entry **v = realloc(k->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n++] = e;
    return 0;
}

/* KEYS pattern: every live key that matches, in table order, under every
 * shard lock (a snapshot, as Redis's single thread gives). */
int
kv_cmd_keys(struct kv_ctx *x)
{
    struct keys_scan k = {.pattern = &x->argv[1]};
    int r;

    k.all = x->argv[1].len == 1 && x->argv[1].p[0] == '*';
    kv_store_lock_all(STORE(x));
    r = kv_store_each_locked(STORE(x), x->now_ms, keys_collect, &k);
    if (!r)
        r = kv_reply_array(x->out, (long long)k.n);
    for (size_t i = 0; i < k.n && !r; i++)
        r = kv_reply_bulk(x->out, k.v[i]->data, k.v[i]->klen);
    kv_store_unlock_all(STORE(x));
    free(k.v);
    return r;
}

/* Redis's parseExtendedExpireArgumentsOrReply: the flags in *fp, or an
 * error replied (*replied set; @return the reply's result). */
static int
expire_flags(struct kv_ctx *x, unsigned *fp, bool *replied)
{
    unsigned f = 0;

    *replied = true;
    for (int j = 3; j < x->argc; j++) {
        const struct kv_arg *o = &x->argv[j];
        if (kv_arg_is(o, "nx"))
            f |= EXPIRE_NX;
        else if (kv_arg_is(o, "xx"))
            f |= EXPIRE_XX;
        else if (kv_arg_is(o, "gt"))
            f |= EXPIRE_GT;
        else if (kv_arg_is(o, "lt"))
            f |= EXPIRE_LT;
        else
            return kv_reply_error(x->out, "ERR Unsupported option %s", (const char *)o->p);
    }
    if ((f & EXPIRE_NX) && (f & (EXPIRE_XX | EXPIRE_GT | EXPIRE_LT)))
        return kv_reply_error(
            x->out, "ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((f & EXPIRE_GT) && (f & EXPIRE_LT))
        return kv_reply_error(x->out, "ERR GT and LT options at the same time are not compatible");
    *replied = false;
    *fp = f;
    return 0;
}

/* Whether the options let a key whose expiry is @p cur (-1: none) get @p when. */
static bool
expire_allowed(unsigned f, long long cur, long long when)
{
    if ((f & EXPIRE_NX) && cur != -1)
        return false;
    if ((f & EXPIRE_XX) && cur == -1)
        return false;
    if ((f & EXPIRE_GT) && (cur == -1 || when <= cur)) /* no expiry is infinite */
        return false;
    if ((f & EXPIRE_LT) && cur != -1 && when >= cur)
        return false;
    return true;
}

/* Redis's expireGenericCommand: @p base_ms is now for EXPIRE/PEXPIRE and 0
 * for the AT forms; a time already past deletes the key (reply 1). */
static int
expire_generic(struct kv_ctx *x, long long base_ms, bool secs, const char *name)
{
    unsigned f = 0;
    bool replied;
    long long when;
    uint64_t h;
    struct kv_entry *e;
    int r = expire_flags(x, &f, &replied);

    if (replied)
        return r;
    if (!kv_arg_ll(x, 2, &when))
        return kv_reply_not_int(x);
    if (secs) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000)
            goto out_bad_time;
        when *= 1000;
    }
    if (when > LLONG_MAX - base_ms)
        goto out_bad_time;
    when += base_ms;

    e = kv_key_lock_find(x, 1, &h);
    if (!e || !expire_allowed(f, e->expire_ms ? e->expire_ms : -1, when)) {
        r = kv_reply_int(x->out, 0);
    } else {
        if (when <= x->now_ms)
            kv_store_del_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, x->now_ms);
        else
            kv_store_expire_locked(STORE(x), h, e, when);
        r = kv_reply_int(x->out, 1);
    }
    kv_key_unlock(x, h);
    return r;

out_bad_time:
    return kv_reply_error(x->out, "ERR invalid expire time in '%s' command", name);
}

int
kv_cmd_expire(struct kv_ctx *x)
{
    return expire_generic(x, x->now_ms, true, "expire");
}

int
kv_cmd_pexpire(struct kv_ctx *x)
{
    return expire_generic(x, x->now_ms, false, "pexpire");
}

int
kv_cmd_expireat(struct kv_ctx *x)
{
    return expire_generic(x, 0, true, "expireat");
}

int
kv_cmd_pexpireat(struct kv_ctx *x)
{
    return expire_generic(x, 0, false, "pexpireat");
}

int
kv_cmd_persist(struct kv_ctx *x)
{
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    bool had = e && e->expire_ms;

    if (had)
        kv_store_expire_locked(STORE(x), h, e, 0);
    kv_key_unlock(x, h);
    return kv_reply_int(x->out, had);
}

/* TTL, PTTL, EXPIRETIME, PEXPIRETIME: -2 missing, -1 persistent, else what
 * is left (@p abs: the expiry itself); seconds round to nearest, as Redis. */
static int
ttl_generic(struct kv_ctx *x, bool ms, bool abs)
{
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    long long t;

    if (!e) {
        t = -2;
    } else if (!e->expire_ms) {
        t = -1;
    } else {
        t = abs ? e->expire_ms : e->expire_ms - x->now_ms;
        if (t < 0)
            t = 0;
        if (!ms)
            t = (t + 500) / 1000;
    }
    kv_key_unlock(x, h);
    return kv_reply_int(x->out, t);
}

int
kv_cmd_ttl(struct kv_ctx *x)
{
    return ttl_generic(x, false, false);
}

int
kv_cmd_pttl(struct kv_ctx *x)
{
    return ttl_generic(x, true, false);
}

int
kv_cmd_expiretime(struct kv_ctx *x)
{
    return ttl_generic(x, false, true);
}

int
kv_cmd_pexpiretime(struct kv_ctx *x)
{
    return ttl_generic(x, true, true);
}
