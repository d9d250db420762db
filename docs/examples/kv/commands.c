/* SPDX-License-Identifier: MIT */
/*
 * The command table and the string commands. Replies and error texts follow
 * Redis 7.0 (t_string.c, db.c, server.c) byte for byte, so that a client
 * cannot tell the two apart for these commands. Every command runs with the
 * shard locks of its keys held (ascending order for several keys), builds
 * its reply under them (slices are retained by the reply), then unlocks.
 */
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kv.h"

typedef int (*kv_cmd_fn)(struct kv_ctx *x);

struct kv_command {
    const char *name; /* lower case, as in Redis's error messages */
    int arity;        /* > 0: exactly; < 0: at least -arity (the name counts) */
    kv_cmd_fn fn;
    int8_t value_first; /* first argument that is a value (0: none) */
    int8_t value_step;  /* 0: only value_first; 2: every other one from it */
};

#define BUF_MAX ((size_t)1 << 30) /* the pool's default max_buffer_size */
#define APPEND_MAX_SEGS 256       /* past this, APPEND flattens the value */
#define INLINE_LIMIT 4096         /* hard cap of --inline-max */

#define STORE(x) ((x)->srv->store)
#define CFG(x) ((x)->srv->cfg)

static size_t command_count(void);

/* ---- helpers ---- */

static int
reply_syntax(struct kv_ctx *x)
{
    return kv_reply_error(x->out, "ERR syntax error");
}

static int
reply_not_int(struct kv_ctx *x)
{
    return kv_reply_error(x->out, "ERR value is not an integer or out of range");
}

static bool
arg_is(const struct kv_arg *a, const char *lit)
{
    size_t n = strlen(lit);
    if (!a->p || a->len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = a->p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c | 0x20);
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

static bool
arg_ll(const struct kv_ctx *x, int i, long long *v)
{
    const struct kv_arg *a = &x->argv[i];
    return a->p && kv_string2ll(a->p, a->len, v);
}

static uint64_t
arg_hash(const struct kv_ctx *x, int i)
{
    return kv_hash(STORE(x), x->argv[i].p, x->argv[i].len);
}

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

/* Bulk reply of an argument (PING, ECHO): its bytes or its segments. */
static int
reply_arg(struct kv_ctx *x, const struct kv_arg *a)
{
    char hdr[32];
    size_t h = 0;
    int r;

    if (!a->segs)
        return kv_reply_bulk(x->out, a->p, a->len);
    hdr[h++] = '$';
    h += kv_fmt_ll(hdr + h, (long long)a->len);
    hdr[h++] = '\r';
    hdr[h++] = '\n';
    if ((r = nbuf_composite_add_copy(x->out, hdr, h)))
        return r;
    for (uint32_t i = 0; i < a->nseg; i++) {
        struct nbuf *b = a->segs[i];
        if ((r = nbuf_composite_add_slice(x->out, b, nbuf_reader_index(b), nbuf_readable(b))))
            return r;
    }
    return nbuf_composite_add_copy(x->out, "\r\n", 2);
}

/* ---- connection and server commands ---- */

static int
cmd_ping(struct kv_ctx *x)
{
    if (x->argc > 2)
        return kv_reply_error(x->out, "ERR wrong number of arguments for 'ping' command");
    if (x->argc == 2)
        return reply_arg(x, &x->argv[1]);
    return kv_reply_raw(x->out, "+PONG\r\n", 7);
}

static int
cmd_echo(struct kv_ctx *x)
{
    return reply_arg(x, &x->argv[1]);
}

static int
cmd_quit(struct kv_ctx *x)
{
    x->close_after = true;
    return kv_reply_ok(x->out);
}

static int
cmd_select(struct kv_ctx *x)
{
    long long id;
    if (!arg_ll(x, 1, &id))
        return reply_not_int(x);
    if (id < INT_MIN || id > INT_MAX)
        return kv_reply_error(x->out, "ERR value is out of range, value must between %d and %d",
                              INT_MIN, INT_MAX);
    if (id != 0) /* one database, like redis-server --databases 1 */
        return kv_reply_error(x->out, "ERR DB index is out of range");
    return kv_reply_ok(x->out);
}

static int
cmd_dbsize(struct kv_ctx *x)
{
    return kv_reply_int(x->out, (long long)kv_store_size(STORE(x)));
}

static int
cmd_flushall(struct kv_ctx *x)
{
    if (x->argc > 2 ||
        (x->argc == 2 && !arg_is(&x->argv[1], "sync") && !arg_is(&x->argv[1], "async")))
        return reply_syntax(x);
    kv_store_flush(STORE(x));
    return kv_reply_ok(x->out);
}

static int
cmd_command(struct kv_ctx *x)
{
    const struct kv_arg *sub = &x->argv[1];
    if (x->argc == 1 || arg_is(sub, "docs") || arg_is(sub, "info") || arg_is(sub, "list"))
        return kv_reply_array(x->out, 0); /* no command metadata: tools fall back */
    if (arg_is(sub, "count"))
        return kv_reply_int(x->out, (long long)command_count());
    return kv_reply_error(x->out, "ERR unknown subcommand '%.128s'. Try COMMAND HELP.",
                          (const char *)sub->p);
}

/* The two settings redis-benchmark and redis-cli ask about. */
static const struct {
    const char *name;
    const char *value;
} config_table[] = {
    {"appendonly", "no"},
    {"save", ""},
};

static int
cmd_config(struct kv_ctx *x)
{
    const struct kv_arg *sub = &x->argv[1];
    bool hit[sizeof(config_table) / sizeof(config_table[0])] = {false};
    size_t n = 0;
    int r;

    if (arg_is(sub, "resetstat"))
        return kv_reply_ok(x->out);
    if (arg_is(sub, "set"))
        return kv_reply_error(x->out,
                              "ERR Unknown option or number of arguments for CONFIG SET - '%.128s'",
                              x->argc > 2 ? (const char *)x->argv[2].p : "");
    if (!arg_is(sub, "get"))
        return kv_reply_error(x->out, "ERR unknown subcommand '%.128s'. Try CONFIG HELP.",
                              (const char *)sub->p);
    if (x->argc < 3)
        return kv_reply_error(x->out, "ERR wrong number of arguments for 'config|get' command");
    for (int i = 2; i < x->argc; i++) {
        for (size_t j = 0; j < sizeof(config_table) / sizeof(config_table[0]); j++) {
            /* argv bytes are NUL-terminated in the scratch area (client.c). */
            if (!hit[j] &&
                fnmatch((const char *)x->argv[i].p, config_table[j].name, FNM_CASEFOLD) == 0) {
                hit[j] = true;
                n++;
            }
        }
    }
    if ((r = kv_reply_array(x->out, (long long)n * 2)))
        return r;
    for (size_t j = 0; j < sizeof(config_table) / sizeof(config_table[0]); j++) {
        if (!hit[j])
            continue;
        if ((r = kv_reply_bulk(x->out, config_table[j].name, strlen(config_table[j].name))) ||
            (r = kv_reply_bulk(x->out, config_table[j].value, strlen(config_table[j].value))))
            return r;
    }
    return 0;
}

static long long
rss_bytes(void)
{
    long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lld %lld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

/* INFO: the fields tools look for, plus the pool's own counters. */
static int
cmd_info(struct kv_ctx *x)
{
    struct nbuf_pool_stats st;
    uint64_t keys, expires;
    char buf[2048];
    int n;

    memset(&st, 0, sizeof(st));
    nbuf_pool_stats(x->srv->pool, &st);
    kv_store_counts(STORE(x), &keys, &expires);
    n = snprintf(buf, sizeof(buf),
                 "# Server\r\nredis_version:7.0.0\r\nnbuf_kv_version:0.1.0\r\n"
                 "redis_mode:standalone\r\nprocess_id:%ld\r\ntcp_port:%u\r\n"
                 "io_threads_active:%d\r\n\r\n"
                 "# Clients\r\nconnected_clients:%u\r\n\r\n"
                 "# Memory\r\nused_memory_rss:%lld\r\n"
                 "nbuf_backing_bytes:%llu\r\nnbuf_used_bytes:%llu\r\n"
                 "nbuf_requested_bytes:%llu\r\nnbuf_cached_bytes:%llu\r\n"
                 "nbuf_live_buffers:%llu\r\nnbuf_views:%llu\r\nnbuf_chunks:%llu\r\n"
                 "nbuf_allocations:%llu\r\nnbuf_remote_releases:%llu\r\n\r\n"
                 "# Stats\r\ntotal_protocol_errors:%llu\r\n\r\n"
                 "# Keyspace\r\ndb0:keys=%llu,expires=%llu,avg_ttl=0\r\n",
                 (long)getpid(), x->srv->port, x->srv->nworkers > 1,
                 __atomic_load_n(&x->srv->nclients, __ATOMIC_RELAXED), rss_bytes(),
                 (unsigned long long)st.backing_bytes, (unsigned long long)st.used_bytes,
                 (unsigned long long)st.requested_bytes, (unsigned long long)st.cached_bytes,
                 (unsigned long long)st.live_buffers, (unsigned long long)st.views,
                 (unsigned long long)st.chunks, (unsigned long long)st.allocations,
                 (unsigned long long)st.remote_releases,
                 (unsigned long long)__atomic_load_n(&x->srv->protocol_errors, __ATOMIC_RELAXED),
                 (unsigned long long)keys, (unsigned long long)expires);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -EOVERFLOW;
    return kv_reply_bulk(x->out, buf, (size_t)n);
}

/* ---- keys ---- */

static int
cmd_get(struct kv_ctx *x)
{
    uint64_t h = arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e;
    int r;

    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);
    kv_store_unlock(STORE(x), sh);
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

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL], parsed as
 * Redis's parseExtendedStringArgumentsOrReply (repeats allowed, conflicts a
 * syntax error, the last expire wins). */
static int
cmd_set(struct kv_ctx *x)
{
    unsigned flags = 0;
    int exp_i = -1;
    int64_t expire = 0;
    uint64_t h;
    unsigned sh;
    struct kv_entry *e = NULL;
    int r = 0;

    for (int j = 3; j < x->argc; j++) {
        const struct kv_arg *o = &x->argv[j];
        bool next = j < x->argc - 1;
        if (arg_is(o, "nx") && !(flags & SET_XX)) {
            flags |= SET_NX;
        } else if (arg_is(o, "xx") && !(flags & SET_NX)) {
            flags |= SET_XX;
        } else if (arg_is(o, "get")) {
            flags |= SET_GET;
        } else if (arg_is(o, "keepttl") && !(flags & SET_ANY_TTL)) {
            flags |= SET_KEEPTTL;
        } else if (arg_is(o, "ex") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_EX))) && next) {
            flags |= SET_EX;
            exp_i = ++j;
        } else if (arg_is(o, "px") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_PX))) && next) {
            flags |= SET_PX;
            exp_i = ++j;
        } else if (arg_is(o, "exat") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_EXAT))) &&
                   next) {
            flags |= SET_EXAT;
            exp_i = ++j;
        } else if (arg_is(o, "pxat") && !(flags & (SET_KEEPTTL | (SET_ANY_TTL & ~SET_PXAT))) &&
                   next) {
            flags |= SET_PXAT;
            exp_i = ++j;
        } else {
            return reply_syntax(x);
        }
    }
    if (exp_i >= 0) {
        long long ms;
        bool secs = flags & (SET_EX | SET_EXAT);
        if (!arg_ll(x, exp_i, &ms))
            return reply_not_int(x);
        if (ms <= 0 || (secs && ms > LLONG_MAX / 1000))
            goto out_bad_expire;
        if (secs)
            ms *= 1000;
        if (flags & (SET_EX | SET_PX)) {
            if (ms > LLONG_MAX - now_ms(x))
                goto out_bad_expire;
            ms += now_ms(x);
        }
        expire = ms;
    }

    h = arg_hash(x, 1);
    sh = kv_shard_of(h);
    kv_store_lock(STORE(x), sh);
    if (flags & (SET_NX | SET_XX | SET_GET))
        e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    if (flags & SET_GET)
        r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);
    if ((flags & SET_NX && e) || (flags & SET_XX && !e)) {
        if (!(flags & SET_GET))
            r = kv_reply_null(x->out);
        goto out_unlock;
    }
    if (!r)
        r = put_arg(x, h, 1, &x->argv[2], expire, flags & SET_KEEPTTL);
    if (!r && !(flags & SET_GET))
        r = kv_reply_ok(x->out);
out_unlock:
    kv_store_unlock(STORE(x), sh);
    return r;

out_bad_expire:
    return kv_reply_error(x->out, "ERR invalid expire time in 'set' command");
}

static uint64_t
keys_mask(const struct kv_ctx *x, int first, int step)
{
    uint64_t mask = 0;
    for (int i = first; i < x->argc; i += step)
        mask |= 1ull << kv_shard_of(arg_hash(x, i));
    return mask;
}

/* DEL and EXISTS: count the keys (EXISTS counts repeats, as Redis). */
static int
del_or_exists(struct kv_ctx *x, bool del)
{
    uint64_t mask = keys_mask(x, 1, 1);
    long long n = 0;

    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc; i++) {
        uint64_t h = arg_hash(x, i);
        if (del)
            n += kv_store_del_locked(STORE(x), h, x->argv[i].p, x->argv[i].len, now_ms(x));
        else
            n += kv_store_find_locked(STORE(x), h, x->argv[i].p, x->argv[i].len, now_ms(x)) != NULL;
    }
    kv_store_unlock_mask(STORE(x), mask);
    return kv_reply_int(x->out, n);
}

static int
cmd_del(struct kv_ctx *x)
{
    return del_or_exists(x, true);
}

static int
cmd_exists(struct kv_ctx *x)
{
    return del_or_exists(x, false);
}

static int
cmd_mset(struct kv_ctx *x)
{
    uint64_t mask;
    int r = 0;

    if (x->argc % 2 == 0)
        return kv_reply_error(x->out, "ERR wrong number of arguments for 'mset' command");
    mask = keys_mask(x, 1, 2);
    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc && !r; i += 2)
        r = put_arg(x, arg_hash(x, i), i, &x->argv[i + 1], 0, false);
    kv_store_unlock_mask(STORE(x), mask);
    return r ? r : kv_reply_ok(x->out);
}

static int
cmd_mget(struct kv_ctx *x)
{
    uint64_t mask = keys_mask(x, 1, 1);
    int r = kv_reply_array(x->out, x->argc - 1);

    kv_store_lock_mask(STORE(x), mask);
    for (int i = 1; i < x->argc && !r; i++) {
        struct kv_entry *e =
            kv_store_find_locked(STORE(x), arg_hash(x, i), x->argv[i].p, x->argv[i].len, now_ms(x));
        r = e ? kv_reply_entry(x->out, e, 0, e->vlen) : kv_reply_null(x->out);
    }
    kv_store_unlock_mask(STORE(x), mask);
    return r;
}

static int
cmd_strlen(struct kv_ctx *x)
{
    uint64_t h = arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e;
    long long n;

    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    n = e ? e->vlen : 0;
    kv_store_unlock(STORE(x), sh);
    return kv_reply_int(x->out, n);
}

/* TTL and PTTL: -2 missing, -1 persistent, else what is left (TTL rounds). */
static int
ttl_generic(struct kv_ctx *x, bool ms)
{
    uint64_t h = arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e;
    long long t;

    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    if (!e) {
        t = -2;
    } else if (!e->expire_ms) {
        t = -1;
    } else {
        t = e->expire_ms - now_ms(x);
        if (t < 0)
            t = 0;
        if (!ms)
            t = (t + 500) / 1000;
    }
    kv_store_unlock(STORE(x), sh);
    return kv_reply_int(x->out, t);
}

static int
cmd_ttl(struct kv_ctx *x)
{
    return ttl_generic(x, false);
}

static int
cmd_pttl(struct kv_ctx *x)
{
    return ttl_generic(x, true);
}

static int
cmd_getrange(struct kv_ctx *x)
{
    long long start, end, len;
    uint64_t h;
    unsigned sh;
    struct kv_entry *e;
    int r;

    if (!arg_ll(x, 2, &start) || !arg_ll(x, 3, &end))
        return reply_not_int(x);
    h = arg_hash(x, 1);
    sh = kv_shard_of(h);
    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
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
    kv_store_unlock(STORE(x), sh);
    return r;
}

static int
incr_by(struct kv_ctx *x, long long incr)
{
    uint64_t h = arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e;
    long long v = 0;
    char buf[24];
    struct kv_val val;
    int r;

    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
    if (e && (e->vlen >= 21 || kv_entry_copy(e, 0, buf, e->vlen) != e->vlen ||
              !kv_string2ll(buf, e->vlen, &v))) {
        r = reply_not_int(x);
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
    kv_store_unlock(STORE(x), sh);
    return r;
}

static int
cmd_incr(struct kv_ctx *x)
{
    return incr_by(x, 1);
}

static int
cmd_decr(struct kv_ctx *x)
{
    return incr_by(x, -1);
}

static int
cmd_incrby(struct kv_ctx *x)
{
    long long incr;
    if (!arg_ll(x, 2, &incr))
        return reply_not_int(x);
    return incr_by(x, incr);
}

static int
cmd_decrby(struct kv_ctx *x)
{
    long long incr;
    if (!arg_ll(x, 2, &incr))
        return reply_not_int(x);
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

static int
cmd_append(struct kv_ctx *x)
{
    struct kv_arg *a = &x->argv[2];
    uint64_t h = arg_hash(x, 1);
    unsigned sh = kv_shard_of(h);
    struct kv_entry *e;
    long long total;
    int r;

    kv_store_lock(STORE(x), sh);
    e = kv_store_find_locked(STORE(x), h, x->argv[1].p, x->argv[1].len, now_ms(x));
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
        r = a->len ? append_entry(x, h, e, a, (size_t)total) : 0;
    }
    if (!r)
        r = kv_reply_int(x->out, total);
out_unlock:
    kv_store_unlock(STORE(x), sh);
    return r;
}

/* ---- table and dispatch ---- */

static const struct kv_command commands[] = {
    {"get", 2, cmd_get, 0, 0},
    {"set", -3, cmd_set, 2, 0},
    {"ping", -1, cmd_ping, 1, 0},
    {"echo", 2, cmd_echo, 1, 0},
    {"del", -2, cmd_del, 0, 0},
    {"exists", -2, cmd_exists, 0, 0},
    {"incr", 2, cmd_incr, 0, 0},
    {"incrby", 3, cmd_incrby, 0, 0},
    {"decr", 2, cmd_decr, 0, 0},
    {"decrby", 3, cmd_decrby, 0, 0},
    {"append", 3, cmd_append, 2, 0},
    {"strlen", 2, cmd_strlen, 0, 0},
    {"mset", -3, cmd_mset, 2, 2},
    {"mget", -2, cmd_mget, 0, 0},
    {"getrange", 4, cmd_getrange, 0, 0},
    {"ttl", 2, cmd_ttl, 0, 0},
    {"pttl", 2, cmd_pttl, 0, 0},
    {"dbsize", 1, cmd_dbsize, 0, 0},
    {"flushall", -1, cmd_flushall, 0, 0},
    {"flushdb", -1, cmd_flushall, 0, 0},
    {"select", 2, cmd_select, 0, 0},
    {"quit", -1, cmd_quit, 0, 0},
    {"command", -1, cmd_command, 0, 0},
    {"config", -2, cmd_config, 0, 0},
    {"info", -1, cmd_info, 0, 0},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static size_t
command_count(void)
{
    return NCOMMANDS;
}

/* Commands by name length, for a lookup that compares few names. */
#define BY_LEN_SLOTS 16
static const struct kv_command *by_len[16][BY_LEN_SLOTS];

void
kv_commands_init(void)
{
    memset(by_len, 0, sizeof(by_len));
    for (size_t i = 0; i < NCOMMANDS; i++) {
        size_t len = strlen(commands[i].name), j = 0;
        while (j < BY_LEN_SLOTS && by_len[len][j])
            j++;
        if (len >= 16 || j == BY_LEN_SLOTS)
            abort(); /* the table above outgrew the index: widen it */
        by_len[len][j] = &commands[i];
    }
}

const struct kv_command *
kv_command_lookup(const void *name, size_t len)
{
    const unsigned char *s = name;
    if (len >= 16)
        return NULL;
    for (size_t j = 0; j < BY_LEN_SLOTS && by_len[len][j]; j++) {
        const char *n = by_len[len][j]->name;
        size_t i = 0;
        for (; i < len; i++) {
            unsigned char c = s[i];
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c | 0x20);
            if (c != (unsigned char)n[i])
                break;
        }
        if (i == len)
            return by_len[len][j];
    }
    return NULL;
}

bool
kv_command_is_value(const struct kv_command *cmd, int argc, int i)
{
    (void)argc;
    if (!cmd || !cmd->value_first || i < cmd->value_first)
        return false;
    if (!cmd->value_step)
        return i == cmd->value_first;
    return (i - cmd->value_first) % cmd->value_step == 0;
}

int
kv_command_run(const struct kv_command *cmd, struct kv_ctx *x)
{
    if ((cmd->arity > 0 && x->argc != cmd->arity) || (x->argc < -cmd->arity))
        return kv_reply_error(x->out, "ERR wrong number of arguments for '%s' command", cmd->name);
    return cmd->fn(x);
}

/* Redis's message: the name and the first 128 bytes of arguments, each
 * read as a C string (so it stops at a NUL byte). */
int
kv_command_unknown(struct kv_ctx *x)
{
    char args[160];
    size_t alen = 0;

    for (int i = 1; i < x->argc && alen < 128; i++) {
        const struct kv_arg *a = &x->argv[i];
        size_t room = 128 - alen;
        size_t n = a->len < room ? a->len : room;
        const unsigned char *nul = a->p ? memchr(a->p, 0, n) : NULL;
        if (nul)
            n = (size_t)(nul - a->p);
        args[alen++] = '\'';
        if (n)
            memcpy(args + alen, a->p, n);
        alen += n;
        args[alen++] = '\'';
        args[alen++] = ' ';
    }
    args[alen] = '\0';
    return kv_reply_error(x->out, "ERR unknown command '%.128s', with args beginning with: %s",
                          (const char *)x->argv[0].p, args);
}
