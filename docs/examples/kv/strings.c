/* SPDX-License-Identifier: MIT */
/*
 * The string commands: GET, SET, SETNX, SETEX, PSETEX, GETSET, MSET, MGET,
 * STRLEN, GETRANGE, INCR/DECR[BY], APPEND. Replies and errors follow Redis
 * 7.0's t_string.c byte for byte. Values move between request, store and reply as
 * buffer references wherever they are large (see client.c for the copy rule).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

#define BUF_MAX ((size_t)1 << 30) /* the pool's default max_buffer_size */
#define APPEND_MAX_SEGS 256       /* past this, APPEND flattens the value */
#define INLINE_LIMIT 4096         /* hard cap of --inline-max */

#define STORE(x) ((x)->srv->store)
#define CFG(x) ((x)->srv->cfg)

/* ---- values ---- */

static int64_t
now_ms(const struct kv_ctx *x)
{
    return x->now_ms;
}

/* Capacity for a buffer that will be appended to again: Redis's sds
 * greediness (double below 1 MiB, then +1 MiB), bounded by the pool. */
static size_t
greedy(size_t n)
{
    size_t g = n < ((size_t)1 << 20) ? n * 2 : n + ((size_t)1 << 20);
    if (g < 64)
        g = 64;
    return g > BUF_MAX ? (n > BUF_MAX ? n : BUF_MAX) : g;
}

static struct nbuf *
buf_with(struct kv_ctx *x, size_t cap, const void *p, size_t n)
{
    struct nbuf *b = nbuf_alloc(x->srv->pool, cap);
    if (!b)
        return NULL;
    if (n && nbuf_write(b, p, n) != 0) {
        nbuf_release(b);
        errno = ENOMEM;
        return NULL;
    }
    return b;
}

/* The argument's segments now belong to the store. */
static void
arg_taken(struct kv_arg *a)
{
    for (uint32_t i = 0; i < a->nseg; i++)
        a->segs[i] = NULL;
}

/*
 * A store value for argument @p a: its segments (large values, moved on
 * success), the bytes inline (small), or a pooled copy in *tmp (contiguous
 * bytes too long to inline: inline commands).
 */
static int
val_from_arg(struct kv_ctx *x, struct kv_arg *a, struct kv_val *v, struct nbuf **tmp)
{
    memset(v, 0, sizeof(*v));
    v->len = a->len;
    *tmp = NULL;
    if (a->segs) {
        v->segs = a->segs;
        v->nseg = a->nseg;
        v->tail_owned = a->owned;
        return 0;
    }
    if (a->len < CFG(x)->inline_max || a->len == 0) {
        v->p = a->p;
        return 0;
    }
    if (!(*tmp = buf_with(x, a->len, a->p, a->len)))
        return -errno;
    v->segs = tmp;
    v->nseg = 1;
    v->tail_owned = true;
    return 0;
}

/* Store argument @p a under key argument @p k; ownership of its buffers
 * moves to the store on success. */
static int
put_arg(struct kv_ctx *x, uint64_t h, int k, struct kv_arg *a, int64_t expire_ms, bool keep_ttl)
{
    struct kv_val v;
    struct nbuf *tmp;
    int r = val_from_arg(x, a, &v, &tmp);
    if (r)
        return r;
    r = kv_store_put_locked(STORE(x), h, x->argv[k].p, x->argv[k].len, &v, expire_ms, keep_ttl,
                            now_ms(x));
    if (r) {
        nbuf_release(tmp);
        return r;
    }
    if (!tmp)
        arg_taken(a);
    return 0;
}

/* ---- keys ---- */

int
kv_cmd_get(struct kv_ctx *x)
{
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    int r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);

    kv_key_unlock(x, h);
    return r;
}

#define SET_NX (1u << 0)
#define SET_XX (1u << 1)
#define SET_GET (1u << 2)
#define SET_KEEPTTL (1u << 3)
#define SET_EX (1u << 4)
#define SET_PX (1u << 5)
#define SET_EXAT (1u << 6)
#define SET_PXAT (1u << 7)
#define SET_ANY_TTL (SET_EX | SET_PX | SET_EXAT | SET_PXAT)

/* The write after SET's options, of value argument @p vi (SET_* flags, an
 * absolute @p expire or 0): the old value first for GET, nothing when NX or
 * XX says no. @p setnx answers :1 / :0 instead of +OK / nil. */
static inline __attribute__((always_inline)) int
set_generic(struct kv_ctx *x, int vi, unsigned flags, int64_t expire, bool setnx)
{
    uint64_t h = kv_arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e = NULL;
    int r = 0;

    kv_store_lock(STORE(x), sh);
    if (flags & (SET_NX | SET_XX | SET_GET))
        e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    if (flags & SET_GET)
        r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);
    if ((flags & SET_NX && e) || (flags & SET_XX && !e)) {
        if (!(flags & SET_GET))
            r = setnx ? kv_reply_int(x->out, 0) : kv_reply_null(x->out);
        goto out_unlock;
    }
    if (!r)
        r = put_arg(x, h, 1, &x->argv[vi], expire, flags & SET_KEEPTTL);
    if (!r && !(flags & SET_GET))
        r = setnx ? kv_reply_int(x->out, 1) : kv_reply_ok(x->out);
out_unlock:
    kv_store_unlock(STORE(x), sh);
    return r;
}

/* Redis's getExpireMillisecondsOrReply: argument @p i (> 0, in seconds if
 * @p secs, from now if @p relative) as an absolute time in ms in *out, or
 * an error replied (*replied set; @return the reply's result). */
static int
expire_arg(struct kv_ctx *x, int i, bool secs, bool relative, const char *name, int64_t *out,
           bool *replied)
{
    long long ms;

    *replied = true;
    if (!kv_arg_ll(x, i, &ms))
        return kv_reply_not_int(x);
    if (ms <= 0 || (secs && ms > LLONG_MAX / 1000))
        goto out_bad;
    if (secs)
        ms *= 1000;
    if (relative) {
        if (ms > LLONG_MAX - now_ms(x))
            goto out_bad;
        ms += now_ms(x);
    }
    *replied = false;
    *out = ms;
    return 0;

out_bad:
    return kv_reply_error(x->out, "ERR invalid expire time in '%s' command", name);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL], parsed as
 * Redis's parseExtendedStringArgumentsOrReply (repeats allowed, conflicts a
 * syntax error, the last expire wins). */
int
kv_cmd_set(struct kv_ctx *x)
{
    unsigned flags = 0;
    int exp_i = -1;
    int64_t expire = 0;

    for (int j = 3; j < x->argc; j++) {
        const struct kv_arg *o = &x->argv[j];
        bool next = j < x->argc - 1;
        if (kv_arg_is(o, "nx") && !(flags & SET_XX)) {
            flags |= SET_NX;
        } else if (kv_arg_is(o, "xx") && !(flags & SET_NX)) {
            flags |= SET_XX;
        } else if (kv_arg_is(o, "get")) {
            flags |= SET_GET;
        } else if (kv_arg_is(o, "keepttl") && !(flags & SET_ANY_TTL)) {
            flags |= SET_KEEPTTL;
        } else if (kv_arg_is(o, "ex") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_EX))) &&
                   next) {
            flags |= SET_EX;
            exp_i = ++j;
        } else if (kv_arg_is(o, "px") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_PX))) &&
                   next) {
            flags |= SET_PX;
            exp_i = ++j;
        } else if (kv_arg_is(o, "exat") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_EXAT))) &&
                   next) {
            flags |= SET_EXAT;
            exp_i = ++j;
        } else if (kv_arg_is(o, "pxat") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_PXAT))) &&
                   next) {
            flags |= SET_PXAT;
            exp_i = ++j;
        } else {
            return kv_reply_syntax(x);
        }
    }
    if (exp_i >= 0) {
        bool replied;
        int r = expire_arg(x, exp_i, flags & (SET_EX | SET_EXAT), flags & (SET_EX | SET_PX), "set",
                           &expire, &replied);
        if (replied)
            return r;
    }
    return set_generic(x, 2, flags, expire, false);
}

/* SETEX key seconds value, PSETEX key milliseconds value. */
static int
setex_generic(struct kv_ctx *x, bool secs, const char *name)
{
    int64_t expire;
    bool replied;
    int r = expire_arg(x, 2, secs, true, name, &expire, &replied);

    if (replied)
        return r;
    return set_generic(x, 3, secs ? SET_EX : SET_PX, expire, false);
}

int
kv_cmd_setex(struct kv_ctx *x)
{
    return setex_generic(x, true, "setex");
}

int
kv_cmd_psetex(struct kv_ctx *x)
{
    return setex_generic(x, false, "psetex");
}

/* SETNX key value: SET NX answering 1 (set) or 0. */
int
kv_cmd_setnx(struct kv_ctx *x)
{
    return set_generic(x, 2, SET_NX, 0, true);
}

/* GETSET key value: SET GET (the TTL goes, as with SET). */
int
kv_cmd_getset(struct kv_ctx *x)
{
    return set_generic(x, 2, SET_GET, 0, false);
}

int
kv_cmd_mset(struct kv_ctx *x)
{
    uint64_t mask;
    int r = 0;

    if (x->argc % 2 == 0)
        return kv_reply_error(x->out, "ERR wrong number of arguments for 'mset' command");
    mask = kv_keys_mask(x, 1, 2);
    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc && !r; i += 2)
        r = put_arg(x, kv_arg_hash(x, i), i, &x->argv[i + 1], 0, false);
    kv_store_unlock_mask(STORE(x), mask);
    return r ? r : kv_reply_ok(x->out);
}

int
kv_cmd_mget(struct kv_ctx *x)
{
    uint64_t mask = kv_keys_mask(x, 1, 1);
    int r = kv_reply_array(x->out, x->argc - 1);

    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc && !r; i++) {
        struct kv_entry *e = kv_store_find_locked(STORE(x), kv_arg_hash(x, i), x->argv[i].p,
                                                  x->argv[i].len, now_ms(x));
        r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);
    }
    kv_store_unlock_mask(STORE(x), mask);
    return r;
}

int
kv_cmd_strlen(struct kv_ctx *x)
{
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    long long n = e ? e->vlen : 0;

    kv_key_unlock(x, h);
    return kv_reply_int(x->out, n);
}

int
kv_cmd_getrange(struct kv_ctx *x)
{
    long long start, end, len;
    uint64_t h;
    struct kv_entry *e;
    int r;

    if (!kv_arg_ll(x, 2, &start) || !kv_arg_ll(x, 3, &end))
        return kv_reply_not_int(x);
    e = kv_key_lock_find(x, 1, &h);
    len = e ? e->vlen : 0;
    /* Redis's getrangeCommand index arithmetic, step by step. */
    if (!e || (start < 0 && end < 0 && start > end)) {
        r = kv_reply_raw(x->out, "$0\r\n\r\n", 6);
        goto out_unlock;
    }
    if (start < 0)
        start = len + start;
    if (end < 0)
        end = len + end;
    if (start < 0)
        start = 0;
    if (end < 0)
        end = 0;
    if (end >= len)
        end = len - 1;
    if (start > end || len == 0)
        r = kv_reply_raw(x->out, "$0\r\n\r\n", 6);
    else
        r = kv_reply_entry(x->out, e, (size_t)start, (size_t)(end - start + 1));
out_unlock:
    kv_key_unlock(x, h);
    return r;
}

static int
incr_by(struct kv_ctx *x, long long incr)
{
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    long long v = 0;
    char buf[24];
    struct kv_val val;
    int r;

    if (e && (e->vlen >= 21 || kv_entry_copy(e, 0, buf, e->vlen) != e->vlen ||
              !kv_string2ll(buf, e->vlen, &v))) {
        r = kv_reply_not_int(x);
        goto out_unlock;
    }
    if ((incr < 0 && v < 0 && incr < LLONG_MIN - v) ||
        (incr > 0 && v > 0 && incr > LLONG_MAX - v)) {
        r = kv_reply_error(x->out, "ERR increment or decrement would overflow");
        goto out_unlock;
    }
    v += incr;
    memset(&val, 0, sizeof(val));
    val.p = (const unsigned char *)buf;
    val.len = kv_fmt_ll(buf, v);
    r = kv_store_put_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, &val, 0, true, now_ms(x));
    if (!r)
        r = kv_reply_int(x->out, v);
out_unlock:
    kv_key_unlock(x, h);
    return r;
}

int
kv_cmd_incr(struct kv_ctx *x)
{
    return incr_by(x, 1);
}

int
kv_cmd_decr(struct kv_ctx *x)
{
    return incr_by(x, -1);
}

int
kv_cmd_incrby(struct kv_ctx *x)
{
    long long incr;
    if (!kv_arg_ll(x, 2, &incr))
        return kv_reply_not_int(x);
    return incr_by(x, incr);
}

int
kv_cmd_decrby(struct kv_ctx *x)
{
    long long incr;
    if (!kv_arg_ll(x, 2, &incr))
        return kv_reply_not_int(x);
    if (incr == LLONG_MIN)
        return kv_reply_error(x->out, "ERR decrement would overflow");
    return incr_by(x, -incr);
}

/* Copy an argument's bytes (contiguous or segments) to @p dst. */
static void
arg_copy(const struct kv_arg *a, unsigned char *dst)
{
    if (!a->segs) {
        memcpy(dst, a->p, a->len);
        return;
    }
    for (uint32_t i = 0; i < a->nseg; i++) {
        size_t n = nbuf_readable(a->segs[i]);
        memcpy(dst, nbuf_data(a->segs[i]), n);
        dst += n;
    }
}

static void
release_all(struct nbuf **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        nbuf_release(v[i]);
}

/*
 * APPEND to an existing value @p e (total bytes after it). In order of
 * preference: a small result stays inline; bytes go into the free room of a
 * tail buffer the store owns and nobody else holds (amortized like sds);
 * otherwise a new entry lists the old segments (retained, not copied) plus
 * the new bytes: the argument's own segments, or a greedy tail buffer.
 */
static int
append_entry(struct kv_ctx *x, uint64_t h, struct kv_entry *e, struct kv_arg *a, size_t total)
{
    uint32_t nseg = kv_entry_nseg(e);
    struct nbuf **old = kv_entry_segs(e);
    struct nbuf **list;
    struct kv_val v;
    size_t n = 0, nmoved = 0, cap;
    bool owned = true;
    int r;

    if (total < CFG(x)->inline_max) {
        unsigned char buf[INLINE_LIMIT];
        kv_entry_copy(e, 0, buf, e->vlen);
        arg_copy(a, buf + e->vlen);
        memset(&v, 0, sizeof(v));
        v.p = buf;
        v.len = total;
        return kv_store_put_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, &v, 0, true,
                                   now_ms(x));
    }
    if (nseg && (e->nseg & KV_TAIL_OWNED) && !a->segs) {
        struct nbuf *t = old[nseg - 1];
        /* Only we hold it: no reply is reading it, so writing is safe. */
        if (nbuf_refcnt(t) == 1 && nbuf_writable(t) >= a->len) {
            if ((r = nbuf_write(t, a->p, a->len)))
                return r;
            e->vlen = (uint32_t)total;
            kv_store_touch_locked(STORE(x), h, x->argv[1].p, x->argv[1].len);
            return 0;
        }
    }

    cap = (size_t)nseg + (a->segs ? a->nseg : 0) + 1;
    if (!(list = malloc(cap * sizeof(*list))))
        return -ENOMEM;
    if (nseg == 0) {
        /* An inline old value opens the first buffer (with the new bytes too
         * when they are contiguous). */
        size_t c = a->segs ? e->vlen : greedy(total);
        if (!(list[n] = buf_with(x, c, kv_entry_inline(e), e->vlen)))
            goto out_nomem;
        n++;
        if (!a->segs && (r = nbuf_write(list[0], a->p, a->len)))
            goto out_release;
    } else {
        for (uint32_t i = 0; i < nseg; i++) {
            if (!(list[n] = nbuf_retain(old[i]))) {
                r = -EOVERFLOW;
                goto out_release;
            }
            n++;
        }
        if (!a->segs) {
            size_t want = total < ((size_t)1 << 20) ? total : ((size_t)1 << 20);
            if (!(list[n] = buf_with(x, a->len > want ? a->len : want, a->p, a->len)))
                goto out_nomem;
            n++;
        }
    }
    if (a->segs) {
        /* The argument's segments go last; they move only if the put succeeds. */
        for (uint32_t i = 0; i < a->nseg; i++)
            list[n + i] = a->segs[i];
        nmoved = a->nseg;
        owned = a->owned;
    }
    if (n + nmoved > APPEND_MAX_SEGS) {
        struct nbuf *flat = nbuf_alloc(x->srv->pool, greedy(total));
        uint8_t *dst = flat ? nbuf_reserve(flat, total) : NULL;
        if (!dst) {
            nbuf_release(flat);
            goto out_nomem;
        }
        for (size_t i = 0; i < n + nmoved; i++) {
            size_t len = nbuf_readable(list[i]);
            memcpy(dst, nbuf_data(list[i]), len);
            dst += len;
        }
        nbuf_commit(flat, total);
        release_all(list, n); /* the argument's segments stay with the argument */
        list[0] = flat;
        n = 1;
        nmoved = 0;
        owned = true;
    }
    memset(&v, 0, sizeof(v));
    v.len = total;
    v.segs = list;
    v.nseg = (uint32_t)(n + nmoved);
    v.tail_owned = owned;
    r = kv_store_put_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, &v, 0, true, now_ms(x));
    if (r)
        goto out_release;
    if (nmoved)
        arg_taken(a);
    free(list);
    return 0;

out_nomem:
    r = -ENOMEM;
out_release:
    release_all(list, n);
    free(list);
    return r;
}

int
kv_cmd_append(struct kv_ctx *x)
{
    struct kv_arg *a = &x->argv[2];
    uint64_t h;
    struct kv_entry *e = kv_key_lock_find(x, 1, &h);
    long long total;
    int r = 0;

    if (!e) {
        total = (long long)a->len;
        r = put_arg(x, h, 1, a, 0, false);
    } else {
        total = (long long)e->vlen + (long long)a->len;
        if ((size_t)total > CFG(x)->max_bulk) {
            r = kv_reply_error(x->out,
                               "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
            goto out_unlock;
        }
        if (a->len)
            r = append_entry(x, h, e, a, (size_t)total);
        else /* Redis counts an empty APPEND as a change (WATCH) */
            kv_store_touch_locked(STORE(x), h, x->argv[1].p, x->argv[1].len);
    }
    if (!r)
        r = kv_reply_int(x->out, total);
out_unlock:
    kv_key_unlock(x, h);
    return r;
}
