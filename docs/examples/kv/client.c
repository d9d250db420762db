/* SPDX-License-Identifier: MIT */
/*
 * One connection: requests are read with nbuf_composite_read_fd into pooled
 * buffers (the input composite), parsed in place, and their arguments taken
 * out: small ones copied into a scratch area, large values as retained
 * slices of the request buffers (see take_value for the copy rule). Replies
 * accumulate in the output composite and go out with one
 * nbuf_composite_writev per wakeup; EAGAIN waits for EPOLLOUT. The
 * io_uring loop (uring.c) feeds the same parsing (kv_client_process) with
 * the buffers its receives fill, and hands the output to a sender.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "kv.h"

#define UNKNOWN_ARG_COPY 256 /* bytes kept of each argument of an unknown command */
#define SCRATCH_KEEP (1u << 20)
#define ARGV_KEEP 4096

static int
ensure_scratch(struct kv_client *cl, size_t need)
{
    if (need <= cl->scratch_cap)
        return 0;
    size_t cap = cl->scratch_cap ? cl->scratch_cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *n = malloc(cap);
    if (!n)
        return -ENOMEM;
    free(cl->scratch);
    cl->scratch = n;
    cl->scratch_cap = cap;
    return 0;
}

static int
ensure_argv(struct kv_client *cl, size_t argc)
{
    if (argc <= cl->argv_cap)
        return 0;
    size_t cap = cl->argv_cap ? cl->argv_cap : 16;
    while (cap < argc)
        cap *= 2;
    struct kv_arg *n = realloc(cl->argv, cap * sizeof(*n));
    if (!n)
        return -ENOMEM;
    cl->argv = n;
    cl->argv_cap = cap;
    return 0;
}

/* Drop what a command left in its arguments and oversized work areas. */
static void
release_args(struct kv_client *cl, size_t argc)
{
    kv_args_release(cl->argv, argc);
    if (cl->scratch_cap > SCRATCH_KEEP) {
        free(cl->scratch);
        cl->scratch = NULL;
        cl->scratch_cap = 0;
    }
    if (cl->argv_cap > ARGV_KEEP) {
        free(cl->argv);
        cl->argv = NULL;
        cl->argv_cap = 0;
    }
}

/* Consume the next @p n bytes of the input into a pooled buffer of n bytes. */
static struct nbuf *
copy_out(struct kv_client *cl, size_t n)
{
    struct nbuf *b = nbuf_alloc(cl->w->srv->pool, n);
    uint8_t *dst = b ? nbuf_reserve(b, n) : NULL;

    if (!dst || nbuf_composite_read(cl->in, dst, n) != 0 || nbuf_commit(b, n) != 0) {
        nbuf_release(b);
        return NULL;
    }
    return b;
}

/*
 * Take a value of @p len bytes at the input's reader into @p a.
 *
 * The copy rule: a slice pins the whole buffer it points into, and the
 * composite reads into pooled buffers of at most KV_READ_MAX (64 KiB). So a
 * value shorter than copy_below (default: 64 KiB, one whole read buffer) is
 * copied into a pooled buffer of its own size, and a longer one is taken
 * piece by piece, one piece per read buffer it spans: a piece of at least
 * copy_below bytes (a whole read buffer) is kept as a retained view (zero
 * copy; it pins no byte that is not its own), shorter pieces (the value's
 * edges) are copied, consecutive ones together. Measured (docs/kv.md): with
 * copy_below 16 KiB, 20 KB values cost 1.5x the RSS of redis-server because
 * their slices pin partly used 64 KiB buffers; with 64 KiB they cost less
 * than redis-server. Values shorter than inline_max never get here
 * (client_run_multibulk leaves them in the scratch area and the store puts
 * them inside the key's entry).
 */
static int
take_value(struct kv_client *cl, struct kv_arg *a, size_t len)
{
    const struct kv_config *cfg = cl->w->srv->cfg;
    struct iovec stack_iov[16], *iov = stack_iov;
    size_t cnt, run = 0, got = 0;
    uint32_t nseg = 0;
    int n, r = 0;

    a->owned = true;
    if (len < cfg->copy_below) {
        if (!(a->seg1 = copy_out(cl, len)))
            return -ENOMEM;
        a->segs = &a->seg1;
        a->nseg = 1;
        return 0;
    }
    cnt = nbuf_composite_count(cl->in);
    if (cnt > INT_MAX)
        cnt = INT_MAX;
    if (cnt > 16 && !(iov = malloc(cnt * sizeof(*iov))))
        return -ENOMEM;
    n = nbuf_composite_iov(cl->in, iov, (int)cnt, len);
    for (int i = 0; i < n; i++)
        got += iov[i].iov_len;
    if (n <= 0 || got != len) {
        /* Not all memory (cannot happen for socket input): one copy. */
        if (!(a->seg1 = nbuf_composite_read_slice(cl->in, len)))
            r = -ENOMEM;
        a->segs = &a->seg1;
        a->nseg = r ? 0 : 1;
        goto out_free;
    }
    a->segs = n == 1 ? &a->seg1 : calloc((size_t)n, sizeof(*a->segs));
    if (!a->segs) {
        r = -ENOMEM;
        goto out_free;
    }
    for (int i = 0; i < n; i++) {
        size_t piece = iov[i].iov_len;
        if (piece < cfg->copy_below) {
            run += piece;
            continue;
        }
        if (run) {
            if (!(a->segs[nseg] = copy_out(cl, run))) {
                r = -ENOMEM;
                goto out_free;
            }
            nseg++;
            a->nseg = nseg;
            run = 0;
        }
        /* One component: a zero-copy view that now holds the request buffer. */
        if (!(a->segs[nseg] = nbuf_composite_read_slice(cl->in, piece))) {
            r = -ENOMEM;
            goto out_free;
        }
        nseg++;
        a->nseg = nseg;
        a->owned = false;
    }
    if (run) {
        if (!(a->segs[nseg] = copy_out(cl, run))) {
            r = -ENOMEM;
            goto out_free;
        }
        a->nseg = ++nseg;
        a->owned = true;
    }
out_free:
    if (iov != stack_iov)
        free(iov);
    return r;
}

static int
run_command(struct kv_client *cl, const struct kv_command *cmd, size_t argc)
{
    struct kv_ctx x = {
        .srv = cl->w->srv,
        .sess = &cl->sess,
        .out = cl->out,
        .argc = (int)argc,
        .argv = cl->argv,
        .now_ms = cl->w->now_ms,
    };
    int r = cmd ? kv_command_run(cmd, &x) : kv_command_unknown(&x);
    if (x.close_after)
        cl->closing = true;
    return r;
}

/* A complete multibulk command: take the arguments out, consume it, run it. */
static int
client_run_multibulk(struct kv_client *cl)
{
    struct resp_parser *p = &cl->parser;
    const struct kv_config *cfg = cl->w->srv->cfg;
    size_t argc = p->nparsed, need = 0, so = 0, consumed = 0, done = 0;
    size_t cut = cfg->inline_max < cfg->copy_below ? cfg->inline_max : cfg->copy_below;
    const struct kv_command *cmd = NULL;
    unsigned char name[16];
    int r;

    if ((r = ensure_argv(cl, argc)))
        return r;
    if (p->args[0].len < sizeof(name) &&
        nbuf_composite_get(cl->in, p->args[0].off, name, p->args[0].len) == 0)
        cmd = kv_command_lookup(name, p->args[0].len);
    for (size_t i = 0; i < argc; i++) {
        size_t len = p->args[i].len;
        if (kv_command_is_value(cmd, (int)argc, (int)i) && len && len >= cut)
            continue;
        need += (cmd || len < UNKNOWN_ARG_COPY ? len : UNKNOWN_ARG_COPY) + 1;
    }
    if ((r = ensure_scratch(cl, need)))
        return r;
    for (size_t i = 0; i < argc; i++) {
        struct kv_arg *a = &cl->argv[i];
        size_t off = p->args[i].off, len = p->args[i].len;

        memset(a, 0, sizeof(*a));
        a->len = len;
        done = i + 1;
        if (kv_command_is_value(cmd, (int)argc, (int)i) && len && len >= cut) {
            if ((r = nbuf_composite_skip(cl->in, off - consumed)))
                goto out_release;
            consumed = off + len;
            if ((r = take_value(cl, a, len)))
                goto out_release;
            continue;
        }
        size_t copy = cmd || len < UNKNOWN_ARG_COPY ? len : UNKNOWN_ARG_COPY;
        if ((r = nbuf_composite_get(cl->in, off - consumed, cl->scratch + so, copy)))
            goto out_release;
        cl->scratch[so + copy] = '\0'; /* C-string views for messages and fnmatch */
        a->p = cl->scratch + so;
        so += copy + 1;
    }
    if ((r = nbuf_composite_skip(cl->in, p->pos - consumed)))
        goto out_release;
    resp_parser_reset(p);
    r = run_command(cl, cmd, argc);
out_release:
    release_args(cl, done);
    return r;
}

/* A complete inline command: split it like Redis, consume it, run it. */
static int
client_run_inline(struct kv_client *cl)
{
    struct resp_parser *p = &cl->parser;
    size_t len = p->line_len, nspans = 0, so;
    unsigned char *line, *split;
    int n, r;

    /* Line, split output, then NUL-terminated arguments (at most 2 * len). */
    if ((r = ensure_scratch(cl, 4 * len + 16)))
        return r;
    line = cl->scratch;
    split = line + len;
    if ((r = nbuf_composite_get(cl->in, 0, line, len)) || (r = nbuf_composite_skip(cl->in, p->pos)))
        return r;
    resp_parser_reset(p);
    n = resp_split_inline(line, len, split, &cl->ispans, &nspans, &cl->ispans_cap);
    if (n == -EINVAL) {
        cl->closing = true;
        return kv_reply_error(cl->out, "ERR Protocol error: unbalanced quotes in request");
    }
    if (n <= 0)
        return n;
    if ((r = ensure_argv(cl, (size_t)n)))
        return r;
    so = 2 * len;
    for (int i = 0; i < n; i++) {
        struct kv_arg *a = &cl->argv[i];
        memset(a, 0, sizeof(*a));
        memcpy(cl->scratch + so, split + cl->ispans[i].off, cl->ispans[i].len);
        cl->scratch[so + cl->ispans[i].len] = '\0';
        a->p = cl->scratch + so;
        a->len = cl->ispans[i].len;
        so += a->len + 1;
    }
    r = run_command(cl, kv_command_lookup(cl->argv[0].p, cl->argv[0].len), (size_t)n);
    release_args(cl, (size_t)n);
    return r;
}

/* Reply bytes queued and not sent yet (io_uring: held by the sender too). */
static size_t
client_backlog(const struct kv_client *cl)
{
    size_t n = nbuf_composite_readable(cl->out);
#if KV_HAVE_IO_URING
    if (cl->sender)
        n += kv_uring_unsent(cl);
#endif
    return n;
}

/* Start sending what is queued: writev (epoll), or hand it to the sender. */
static int
client_push(struct kv_client *cl)
{
#if KV_HAVE_IO_URING
    if (cl->sender)
        return kv_uring_push(cl);
#endif
    ssize_t n = nbuf_composite_writev(cl->out, cl->fd);
    return n < 0 && n != -EAGAIN ? (int)n : 0;
}

/* Parse and run what is buffered, until more input is needed, the reply
 * queue is long enough to wait for the peer, or the client is closing.
 * Shared by both loops. */
int
kv_client_process(struct kv_client *cl)
{
    const struct kv_config *cfg = cl->w->srv->cfg;
    int r = 0;

    while (!cl->closing && !r) {
        if (client_backlog(cl) >= KV_OUT_PAUSE) {
            if ((r = client_push(cl)))
                return r;
            if (client_backlog(cl) >= KV_OUT_PAUSE)
                break;
        }
        switch (resp_parse(&cl->parser, cl->in)) {
        case RESP_AGAIN:
            /* Like client-query-buffer-limit: drop a client that piles up. */
            if (nbuf_composite_readable(cl->in) > cfg->max_query)
                return -ENOBUFS;
            return 0;
        case RESP_EMPTY:
            r = nbuf_composite_skip(cl->in, cl->parser.pos);
            resp_parser_reset(&cl->parser);
            break;
        case RESP_ERROR:
            __atomic_fetch_add(&cl->w->srv->protocol_errors, 1, __ATOMIC_RELAXED);
            cl->closing = true;
            r = kv_reply_error(cl->out, "ERR %s", cl->parser.err);
            break;
        case RESP_COMMAND: r = client_run_multibulk(cl); break;
        case RESP_INLINE: r = client_run_inline(cl); break;
        }
    }
    return r;
}

/* Write what is queued and watch for what comes next. @return 0, or < 0 to
 * close the connection (an error, or a closing client whose replies are out). */
static int
client_flush(struct kv_client *cl)
{
    size_t pending = nbuf_composite_readable(cl->out);
    uint32_t want = 0;

    if (pending) {
        ssize_t n = nbuf_composite_writev(cl->out, cl->fd);
        if (n < 0 && n != -EAGAIN)
            return (int)n;
        pending = nbuf_composite_readable(cl->out);
    }
    if (!pending && cl->closing)
        return -ECONNRESET;
    if (pending)
        want |= EPOLLOUT;
    if (!cl->closing && pending < KV_OUT_PAUSE)
        want |= EPOLLIN;
    if (want != cl->events) {
        int r = kv_worker_watch(cl->w, cl->fd, cl, want, false);
        if (r)
            return r;
        cl->events = want;
    }
    return 0;
}

int
kv_client_on_event(struct kv_client *cl, uint32_t events)
{
    bool eof = false;
    int r;

    if (events & EPOLLERR)
        return -EIO;
    if ((cl->events & EPOLLIN) && (events & (EPOLLIN | EPOLLHUP))) {
        size_t total = 0;
        ssize_t n;
        /* One read per wakeup, unless reads come back big (a large value
         * in transit): then keep reading, up to KV_READ_BURST per wakeup,
         * to save the epoll round trips between 64 KiB reads. */
        do {
            n = nbuf_composite_read_fd(cl->in, cl->fd, KV_READ_MAX);
            if (n == 0) {
                if (!total)
                    return -ECONNRESET; /* the peer is gone: so are its replies */
                eof = true;             /* run what came before the end, as Redis does */
                break;
            }
            if (n < 0 && n != -EAGAIN)
                return (int)n;
            total += n > 0 ? (size_t)n : 0;
        } while (n >= (ssize_t)KV_READ_BIG && total < KV_READ_BURST);
        cl->w->now_ms = kv_now_ms();
    }
    if ((r = kv_client_process(cl)) || (r = client_flush(cl)))
        return r;
    return eof ? -ECONNRESET : 0;
}

/* Start watching (epoll) or receiving (io_uring) for a new connection. */
static int
client_attach(struct kv_client *cl)
{
#if KV_HAVE_IO_URING
    if (cl->w->ring)
        return kv_uring_attach(cl);
#endif
    return kv_worker_watch(cl->w, cl->fd, cl, cl->events, true);
}

struct kv_client *
kv_client_new(struct kv_worker *w, int fd)
{
    struct kv_client *cl = calloc(1, sizeof(*cl));

    if (!cl)
        return NULL;
    cl->w = w;
    cl->fd = fd;
    kv_session_init(&cl->sess, w->srv);
    resp_parser_init(&cl->parser, w->srv->cfg->max_bulk);
    cl->in = nbuf_composite_new(w->srv->pool);
    cl->out = nbuf_composite_new(w->srv->pool);
    if (!cl->in || !cl->out)
        goto out_free;
    cl->events = EPOLLIN;
    if (client_attach(cl) != 0)
        goto out_free;
    cl->next = w->clients;
    if (w->clients)
        w->clients->prev = cl;
    w->clients = cl;
    return cl;

out_free:
    nbuf_composite_free(cl->in);
    nbuf_composite_free(cl->out);
    free(cl);
    return NULL;
}

void
kv_client_free(struct kv_client *cl)
{
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        cl->w->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
#if KV_HAVE_IO_URING
    if (cl->sender)
        kv_uring_detach(cl);
#endif
    close(cl->fd); /* also leaves the epoll set */
    kv_session_fini(&cl->sess, cl->w->srv);
    nbuf_composite_free(cl->in);
    nbuf_composite_free(cl->out);
    resp_parser_fini(&cl->parser);
    free(cl->scratch);
    free(cl->ispans);
    free(cl->argv);
    __atomic_fetch_sub(&cl->w->srv->nclients, 1, __ATOMIC_RELAXED);
    free(cl);
}

void
kv_client_free_all(struct kv_worker *w)
{
    while (w->clients)
        kv_client_free(w->clients);
}
