/* SPDX-License-Identifier: MIT */
/*
 * Transactions: MULTI queues a connection's commands (each keeps its own
 * copy of its arguments; large values keep their buffer references), EXEC
 * runs them in one go, DISCARD drops them; WATCH makes EXEC fail (a null
 * array) if a watched key changed since (store.c marks the watchers).
 * Atomicity: with one thread, EXEC runs within one event-loop step; with
 * several, EXEC holds every shard lock while the queue runs, so no other
 * client sees or makes a change in the middle (and WATCH is checked under
 * the same locks). Replies and errors are Redis 7.0's multi.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

/* One queued command. Invariants: argv holds argc arguments, then the
 * NUL-terminated bytes of those without segments (p points there); the
 * segments and segment lists are the queue's own. */
struct kv_queued {
    kv_cmd_fn fn;
    int argc;
    struct kv_arg *argv;
};

/* Move @p a's segments into @p d (a's list keeps NULLs, as when a command
 * moves them into the store). */
static int
steal_segs(struct kv_arg *d, struct kv_arg *a)
{
    if (a->nseg == 1) {
        d->seg1 = a->segs[0];
        d->segs = &d->seg1;
    } else {
        d->segs = malloc(a->nseg * sizeof(*d->segs));
        if (!d->segs)
            return -ENOMEM;
        memcpy(d->segs, a->segs, a->nseg * sizeof(*d->segs));
    }
    for (uint32_t j = 0; j < a->nseg; j++)
        a->segs[j] = NULL;
    return 0;
}

/*
 * Inside MULTI: keep the command to run at EXEC, reply +QUEUED. The queue
 * counts against --max-query like unparsed input: past it, the client is
 * dropped (-ENOBUFS), as Redis's client-query-buffer-limit does.
 */
int
kv_multi_queue(struct kv_ctx *x, kv_cmd_fn fn)
{
    struct kv_session *s = x->sess;
    size_t bytes = 0, held = 0;
    struct kv_queued *q;
    unsigned char *dst;
    int i, r;

    for (i = 0; i < x->argc; i++) {
        held += x->argv[i].len + sizeof(struct kv_arg);
        if (!x->argv[i].segs)
            bytes += x->argv[i].len + 1;
    }
    if (s->queued_bytes + held > x->srv->cfg->max_query)
        return -ENOBUFS;
    if (s->nqueued == s->queue_cap) {
        size_t cap = s->queue_cap ? s->queue_cap * 2 : 8;
        struct kv_queued *n = realloc(s->queue, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        s->queue = n;
        s->queue_cap = cap;
    }
    q = &s->queue[s->nqueued];
    q->argv = malloc((size_t)x->argc * sizeof(struct kv_arg) + bytes);
    if (!q->argv)
        return -ENOMEM;
    q->fn = fn;
    q->argc = x->argc;
    dst = (unsigned char *)(q->argv + x->argc);
    for (i = 0; i < x->argc; i++) {
        struct kv_arg *a = &x->argv[i], *d = &q->argv[i];
        *d = *a;
        if (a->segs) {
            if ((r = steal_segs(d, a)))
                goto out_undo;
            continue;
        }
        memcpy(dst, a->p, a->len);
        dst[a->len] = '\0';
        d->p = dst;
        dst += a->len + 1;
    }
    s->nqueued++;
    s->queued_bytes += held;
    return kv_reply_raw(x->out, "+QUEUED\r\n", 9);

out_undo:
    kv_args_release(q->argv, (size_t)i); /* the segments taken so far */
    free(q->argv);
    return r;
}

static void
queue_free(struct kv_session *s)
{
    for (size_t i = 0; i < s->nqueued; i++) {
        kv_args_release(s->queue[i].argv, (size_t)s->queue[i].argc);
        free(s->queue[i].argv);
    }
    s->nqueued = 0;
    s->queued_bytes = 0;
}

/* Redis's discardTransaction: queue, flags and watched keys go. */
void
kv_multi_discard(struct kv_ctx *x)
{
    struct kv_session *s = x->sess;

    queue_free(s);
    s->multi = s->dirty_exec = false;
    kv_store_unwatch_all(x->srv->store, &s->watches);
    __atomic_store_n(&s->dirty_cas, false, __ATOMIC_RELAXED);
}

/* The connection is going: nothing of its transaction may stay behind. */
void
kv_multi_fini(struct kv_session *s, struct kv_store *store)
{
    queue_free(s);
    free(s->queue);
    s->queue = NULL;
    s->queue_cap = 0;
    kv_store_unwatch_all(store, &s->watches);
}

/* EXEC refused before it ran (its arity): the transaction is discarded. */
int
kv_multi_abort(struct kv_ctx *x, const char *why)
{
    kv_multi_discard(x);
    return kv_reply_error(x->out, "EXECABORT Transaction discarded because of: %s", why);
}

int
kv_cmd_multi(struct kv_ctx *x)
{
    if (x->sess->multi)
        return kv_reply_error(x->out, "ERR MULTI calls can not be nested");
    x->sess->multi = true;
    return kv_reply_ok(x->out);
}

int
kv_cmd_discard(struct kv_ctx *x)
{
    if (!x->sess->multi)
        return kv_reply_error(x->out, "ERR DISCARD without MULTI");
    kv_multi_discard(x);
    return kv_reply_ok(x->out);
}

int
kv_cmd_exec(struct kv_ctx *x)
{
    struct kv_session *s = x->sess;
    struct kv_store *st = x->srv->store;
    int r;

    if (!s->multi)
        return kv_reply_error(x->out, "ERR EXEC without MULTI");
    if (s->dirty_exec) {
        kv_multi_discard(x);
        return kv_reply_error(x->out,
                              "EXECABORT Transaction discarded because of previous errors.");
    }
    kv_store_lock_all(st);
    kv_store_watch_expire_locked(st, s->watches, x->now_ms);
    if (__atomic_load_n(&s->dirty_cas, __ATOMIC_RELAXED)) {
        kv_store_unlock_all(st);
        kv_multi_discard(x);
        return kv_reply_raw(x->out, "*-1\r\n", 5);
    }
    kv_store_unwatch_all(st, &s->watches); /* its own writes below do not matter */
    s->multi = false;
    r = kv_reply_array(x->out, (long long)s->nqueued);
    for (size_t i = 0; i < s->nqueued && !r; i++) {
        struct kv_ctx q = *x;
        q.argc = s->queue[i].argc;
        q.argv = s->queue[i].argv;
        r = s->queue[i].fn(&q);
    }
    kv_store_unlock_all(st);
    kv_multi_discard(x);
    return r;
}

int
kv_cmd_watch(struct kv_ctx *x)
{
    struct kv_session *s = x->sess;
    int r;

    if (s->multi)
        return kv_reply_error(x->out, "ERR WATCH inside MULTI is not allowed");
    for (int i = 1; i < x->argc; i++) {
        r = kv_store_watch(x->srv->store, kv_arg_hash(x, i), x->argv[i].p, x->argv[i].len,
                           x->now_ms, &s->watches, &s->dirty_cas);
        if (r)
            return r;
    }
    return kv_reply_ok(x->out);
}

int
kv_cmd_unwatch(struct kv_ctx *x)
{
    kv_store_unwatch_all(x->srv->store, &x->sess->watches);
    __atomic_store_n(&x->sess->dirty_cas, false, __ATOMIC_RELAXED);
    return kv_reply_ok(x->out);
}
