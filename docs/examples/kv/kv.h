/* SPDX-License-Identifier: MIT */
/*
 * nbuf-kv: a RESP2 (Redis protocol) key-value server built on nbuf.
 *
 * Shared types and prototypes, by file: config (main.c), the store
 * (store.c; WATCH: watch.c; the layout they share: store_int.h), the
 * request parser (resp.c), replies (reply.c), commands (commands.c: table,
 * dispatch, server commands; strings.c: the string commands; keys.c: key
 * and expiry commands; glob.c: KEYS patterns; multi.c: transactions;
 * session.c: PING, ECHO, QUIT, SELECT, CLIENT, HELLO, AUTH), connections
 * (client.c) and the event loops (server.c).
 */
#ifndef NBUF_KV_H
#define NBUF_KV_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <nbuf.h>

#define KV_SHARDS 64                      /* store shards (one lock each); a power of two */
#define KV_INLINE_MAX_DEFAULT 256         /* values shorter than this live inside the entry */
#define KV_READ_MAX (64u * 1024)          /* most bytes one read_fd offers (the composite's cap) */
#define KV_READ_BIG (16u * 1024)          /* a read this big suggests more is waiting */
#define KV_READ_BURST (1u << 20)          /* most bytes read per wakeup */
#define KV_COPY_BELOW_DEFAULT KV_READ_MAX /* shorter values (and pieces) are copied */
#define KV_MAX_BULK_DEFAULT (512u * 1024 * 1024)
#define KV_MAX_QUERY_DEFAULT (1024u * 1024 * 1024)
#define KV_MAX_CLIENTS_DEFAULT 10000
#define KV_INLINE_LINE_MAX (64 * 1024) /* Redis's PROTO_INLINE_MAX_SIZE */
#define KV_OUT_PAUSE (1u << 20)        /* stop parsing while this much reply is queued */
#define KV_PROTO_ERR_MAX 192           /* longest protocol error message */
#define KV_REDIS_VERSION "7.0.0"       /* the Redis version INFO and HELLO report */

/* Command-line configuration, filled by main.c and read-only afterwards. */
struct kv_config {
    const char *bind;
    unsigned port;
    unsigned threads;
    size_t max_bulk;  /* largest bulk string accepted ($N), like proto-max-bulk-len */
    size_t max_query; /* unparsed bytes per client before it is dropped */
    unsigned max_clients;
    size_t copy_below; /* request values shorter than this are copied */
    size_t inline_max; /* copied values shorter than this go inside the entry */
    bool stats;
    bool io_uring; /* connections through an nbuf_uring ring instead of epoll */
};

/* ---- store.c ------------------------------------------------------------ */

/*
 * One key. Invariants: the key bytes start at data[0]; when nseg == 0 the
 * value (vlen bytes) follows the key inline, otherwise data holds, 8-byte
 * aligned after the key, nseg buffer references whose readable bytes,
 * concatenated, are the value (their lengths add up to vlen). expire_ms 0
 * means no expiry. Synchronization: the shard's lock (when the store is
 * locked).
 */
struct kv_entry {
    struct kv_entry *next; /* hash chain */
    int64_t expire_ms;     /* absolute Unix time in ms, 0 = persistent */
    uint32_t hash;         /* low 32 bits of the key hash (bucket index) */
    uint32_t klen;
    uint32_t vlen;
    uint32_t nseg; /* KV_TAIL_OWNED | number of buffer segments */
    unsigned char data[];
};

/* The last segment is a buffer the store allocated itself (not a view of a
 * request), so APPEND may write into its free room when nobody else holds it. */
#define KV_TAIL_OWNED 0x80000000u
#define KV_NSEG_MASK 0x7fffffffu

/* A value handed to the store: inline bytes (nseg 0) or buffer segments
 * whose references the store takes on success. */
struct kv_val {
    const unsigned char *p;
    size_t len;
    struct nbuf **segs;
    uint32_t nseg;
    bool tail_owned;
};

struct kv_store;
struct kv_watch; /* one key one connection WATCHes (store.c) */

typedef int (*kv_entry_fn)(struct kv_entry *e, void *arg);

struct kv_store *kv_store_new(bool locked);
void kv_store_free(struct kv_store *s);
uint64_t kv_hash(const struct kv_store *s, const void *key, size_t klen);
void kv_store_lock(struct kv_store *s, unsigned shard);
void kv_store_unlock(struct kv_store *s, unsigned shard);
void kv_store_lock_mask(struct kv_store *s, uint64_t mask);
void kv_store_unlock_mask(struct kv_store *s, uint64_t mask);
void kv_store_lock_all(struct kv_store *s);
void kv_store_unlock_all(struct kv_store *s);
struct kv_entry *kv_store_find_locked(struct kv_store *s, uint64_t hash, const void *key,
                                      size_t klen, int64_t now_ms);
int kv_store_put_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen,
                        const struct kv_val *v, int64_t expire_ms, bool keep_ttl, int64_t now_ms);
int kv_store_del_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen,
                        int64_t now_ms);
void kv_store_expire_locked(struct kv_store *s, uint64_t hash, struct kv_entry *e,
                            int64_t expire_ms);
void kv_store_touch_locked(struct kv_store *s, uint64_t hash, const void *key, size_t klen);
int kv_store_each_locked(struct kv_store *s, int64_t now_ms, kv_entry_fn fn, void *arg);
int kv_store_watch(struct kv_store *s, uint64_t hash, const void *key, size_t klen, int64_t now_ms,
                   struct kv_watch **list, bool *dirty);
void kv_store_unwatch_all(struct kv_store *s, struct kv_watch **list);
void kv_store_watch_expire_locked(struct kv_store *s, struct kv_watch *list, int64_t now_ms);
uint64_t kv_store_size(struct kv_store *s);
void kv_store_counts(struct kv_store *s, uint64_t *keys, uint64_t *expires);
void kv_store_flush(struct kv_store *s);
size_t kv_store_sweep(struct kv_store *s, unsigned shard, int64_t now_ms, unsigned budget);

/* The shard of a key: the top bits of its hash (the bucket uses the low ones). */
static inline unsigned
kv_shard_of(uint64_t hash)
{
    return (unsigned)(hash >> 58) & (KV_SHARDS - 1);
}

static inline const unsigned char *
kv_entry_inline(const struct kv_entry *e)
{
    return e->data + e->klen;
}

static inline struct nbuf **
kv_entry_segs(struct kv_entry *e)
{
    size_t off = ((size_t)e->klen + 7) & ~(size_t)7;
    return (struct nbuf **)(void *)(e->data + off);
}

static inline uint32_t
kv_entry_nseg(const struct kv_entry *e)
{
    return e->nseg & KV_NSEG_MASK;
}

/* As Redis: a key is expired once now is past its expire time. */
static inline bool
kv_entry_expired(const struct kv_entry *e, int64_t now_ms)
{
    return e->expire_ms != 0 && now_ms > e->expire_ms;
}

size_t kv_entry_copy(struct kv_entry *e, size_t off, void *dst, size_t n);

/* ---- resp.c ------------------------------------------------------------- */

/* Where one argument lies in the input composite (offsets from its reader). */
struct resp_span {
    size_t off;
    size_t len;
};

enum resp_status {
    RESP_AGAIN = 0, /* need more bytes */
    RESP_COMMAND,   /* a multibulk command: spans in p->args, ends at p->pos */
    RESP_INLINE,    /* an inline command: line [0, p->line_len), ends at p->pos */
    RESP_EMPTY,     /* nothing to run (*0, *-1, blank line): consume p->pos */
    RESP_ERROR,     /* protocol error: p->err holds the message */
};

/*
 * Incremental RESP2 request parser over a composite. Nothing is consumed
 * while a command is incomplete, so offsets stay valid between reads and a
 * long command is scanned once, not once per read.
 */
struct resp_parser {
    int kind;          /* 0 before the first byte, '*' multibulk, 'i' inline */
    long long nargs;   /* declared argument count */
    size_t pos;        /* next byte to look at */
    long long bulklen; /* -1 while reading a $ line */
    struct resp_span *args;
    size_t nparsed;
    size_t cap;
    size_t line_len; /* RESP_INLINE: bytes of the line without its ending */
    size_t max_bulk;
    char err[KV_PROTO_ERR_MAX];
};

void resp_parser_init(struct resp_parser *p, size_t max_bulk);
void resp_parser_fini(struct resp_parser *p);
void resp_parser_reset(struct resp_parser *p);
enum resp_status resp_parse(struct resp_parser *p, const struct nbuf_composite *in);
int resp_split_inline(const unsigned char *line, size_t len, unsigned char *out,
                      struct resp_span **spans, size_t *nspans, size_t *cap);
bool kv_string2ll(const void *s, size_t len, long long *out);

/* ---- reply.c ------------------------------------------------------------ */

int kv_reply_raw(struct nbuf_composite *out, const void *p, size_t n);
int kv_reply_ok(struct nbuf_composite *out);
int kv_reply_null(struct nbuf_composite *out);
int kv_reply_int(struct nbuf_composite *out, long long v);
int kv_reply_array(struct nbuf_composite *out, long long n);
int kv_reply_bulk(struct nbuf_composite *out, const void *p, size_t n);
int kv_reply_error(struct nbuf_composite *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int kv_reply_entry(struct nbuf_composite *out, struct kv_entry *e, size_t off, size_t len);
size_t kv_fmt_ll(char *dst, long long v);

/* ---- commands.c --------------------------------------------------------- */

/* One argument of the running command. Contiguous bytes (p) for every
 * argument except large values, which arrive as buffer segments (segs)
 * that the command may move into the store (setting them to NULL). */
struct kv_arg {
    const unsigned char *p;
    size_t len;
    struct nbuf **segs;
    uint32_t nseg;
    bool owned;        /* segs[0] is a pooled copy (not a view of a request) */
    struct nbuf *seg1; /* storage for the common single segment */
};

struct kv_server;
struct kv_command;
struct kv_queued; /* one command queued by MULTI (multi.c) */

/*
 * What a connection keeps between its commands. Synchronization: its worker
 * thread, except dirty_cas, which a change to a watched key sets from any
 * thread under that key's shard lock (atomically; EXEC reads it under every
 * shard lock).
 */
struct kv_session {
    uint64_t id;     /* CLIENT ID: unique for the server's life, from 1 */
    char *name;      /* CLIENT SETNAME, NUL-terminated; NULL = none */
    bool multi;      /* between MULTI and EXEC or DISCARD */
    bool dirty_exec; /* a command was refused while queueing: EXEC aborts */
    bool dirty_cas;  /* a WATCHed key changed: EXEC answers a null array */
    struct kv_queued *queue;
    size_t nqueued, queue_cap;
    size_t queued_bytes;      /* argument bytes held by the queue */
    struct kv_watch *watches; /* the keys this connection WATCHes */
};

struct kv_ctx {
    struct kv_server *srv;
    struct kv_session *sess;
    struct nbuf_composite *out;
    int argc;
    struct kv_arg *argv;
    int64_t now_ms;
    bool close_after; /* QUIT */
};

typedef int (*kv_cmd_fn)(struct kv_ctx *x);

const struct kv_command *kv_command_lookup(const void *name, size_t len);
bool kv_command_is_value(const struct kv_command *cmd, int argc, int i);
int kv_command_run(const struct kv_command *cmd, struct kv_ctx *x);
int kv_command_unknown(struct kv_ctx *x);
void kv_commands_init(void);
int kv_reply_syntax(struct kv_ctx *x);
int kv_reply_not_int(struct kv_ctx *x);
bool kv_arg_is(const struct kv_arg *a, const char *lit);
bool kv_arg_ll(const struct kv_ctx *x, int i, long long *v);
uint64_t kv_arg_hash(const struct kv_ctx *x, int i);
uint64_t kv_keys_mask(const struct kv_ctx *x, int first, int step);
void kv_args_release(struct kv_arg *argv, size_t argc);
int kv_reply_help(struct kv_ctx *x, const char *const *lines);

/* ---- strings.c ---------------------------------------------------------- */

int kv_cmd_get(struct kv_ctx *x);
int kv_cmd_set(struct kv_ctx *x);
int kv_cmd_setnx(struct kv_ctx *x);
int kv_cmd_setex(struct kv_ctx *x);
int kv_cmd_psetex(struct kv_ctx *x);
int kv_cmd_getset(struct kv_ctx *x);
int kv_cmd_mset(struct kv_ctx *x);
int kv_cmd_mget(struct kv_ctx *x);
int kv_cmd_strlen(struct kv_ctx *x);
int kv_cmd_getrange(struct kv_ctx *x);
int kv_cmd_incr(struct kv_ctx *x);
int kv_cmd_decr(struct kv_ctx *x);
int kv_cmd_incrby(struct kv_ctx *x);
int kv_cmd_decrby(struct kv_ctx *x);
int kv_cmd_append(struct kv_ctx *x);

/* ---- keys.c ------------------------------------------------------------- */

int kv_cmd_del(struct kv_ctx *x);
int kv_cmd_exists(struct kv_ctx *x);
int kv_cmd_type(struct kv_ctx *x);
int kv_cmd_keys(struct kv_ctx *x);
int kv_cmd_expire(struct kv_ctx *x);
int kv_cmd_pexpire(struct kv_ctx *x);
int kv_cmd_expireat(struct kv_ctx *x);
int kv_cmd_pexpireat(struct kv_ctx *x);
int kv_cmd_persist(struct kv_ctx *x);
int kv_cmd_ttl(struct kv_ctx *x);
int kv_cmd_pttl(struct kv_ctx *x);
int kv_cmd_expiretime(struct kv_ctx *x);
int kv_cmd_pexpiretime(struct kv_ctx *x);

/* ---- glob.c ------------------------------------------------------------- */

bool kv_glob_match(const void *pattern, size_t plen, const void *str, size_t slen, bool nocase);

/* ---- multi.c ------------------------------------------------------------ */

int kv_multi_queue(struct kv_ctx *x, kv_cmd_fn fn);
int kv_multi_abort(struct kv_ctx *x, const char *why);
void kv_multi_discard(struct kv_ctx *x);
void kv_multi_fini(struct kv_session *s, struct kv_store *store);
int kv_cmd_multi(struct kv_ctx *x);
int kv_cmd_exec(struct kv_ctx *x);
int kv_cmd_discard(struct kv_ctx *x);
int kv_cmd_watch(struct kv_ctx *x);
int kv_cmd_unwatch(struct kv_ctx *x);

/* ---- session.c ---------------------------------------------------------- */

void kv_session_init(struct kv_session *s, struct kv_server *srv);
int kv_cmd_ping(struct kv_ctx *x);
int kv_cmd_echo(struct kv_ctx *x);
int kv_cmd_quit(struct kv_ctx *x);
int kv_cmd_select(struct kv_ctx *x);
void kv_session_fini(struct kv_session *s, struct kv_server *srv);
int kv_cmd_client_id(struct kv_ctx *x);
int kv_cmd_client_getname(struct kv_ctx *x);
int kv_cmd_client_setname(struct kv_ctx *x);
int kv_cmd_client_help(struct kv_ctx *x);
int kv_cmd_hello(struct kv_ctx *x);
int kv_cmd_auth(struct kv_ctx *x);

/* ---- client.c ----------------------------------------------------------- */

struct kv_worker;
struct nbuf_uring;
struct nbuf_uring_bufs;
struct nbuf_uring_sender;

/* One connection. Synchronization: owned by its worker thread alone. */
struct kv_client {
    struct kv_client *prev, *next; /* the worker's list */
    struct kv_worker *w;
    int fd;
    uint32_t events; /* what epoll watches now */
    bool closing;    /* QUIT or protocol error: close once the replies are out */
    struct nbuf_composite *in, *out;
    struct resp_parser parser;
    unsigned char *scratch;
    size_t scratch_cap;
    struct resp_span *ispans;
    size_t ispans_cap;
    struct kv_arg *argv;
    size_t argv_cap;
    struct kv_session sess; /* name, id, MULTI queue, WATCHed keys */
    /* io_uring loop only (NULL/false with epoll): */
    struct nbuf_uring_sender *sender;
    bool recv_armed; /* the multishot receive has not ended */
    bool dying;      /* cancelled: freed once nothing is in flight */
    bool cancelled;  /* nbuf_uring_cancel_fd went in */
};

struct kv_client *kv_client_new(struct kv_worker *w, int fd);
void kv_client_free(struct kv_client *cl);
void kv_client_free_all(struct kv_worker *w);
int kv_client_on_event(struct kv_client *cl, uint32_t events);
int kv_client_process(struct kv_client *cl);

/* ---- uring.c (with io_uring only) ---------------------------------------- */

#if KV_HAVE_IO_URING
int kv_uring_init(struct kv_worker *w);
void kv_uring_poll(struct kv_worker *w);
void kv_uring_shutdown(struct kv_worker *w);
void kv_uring_fini(struct kv_worker *w);
int kv_uring_attach(struct kv_client *cl);
void kv_uring_detach(struct kv_client *cl);
int kv_uring_push(struct kv_client *cl);
size_t kv_uring_unsent(const struct kv_client *cl);
#endif

/* ---- server.c ----------------------------------------------------------- */

/* One event loop thread. Owns its epoll fd, its listener (SO_REUSEPORT),
 * its ring (--io-uring) and its clients; nothing here is touched by other
 * threads. */
struct kv_worker {
    struct kv_server *srv;
    unsigned id;
    int epfd;
    int lfd;
    pthread_t thread;
    struct kv_client *clients;    /* doubly linked list of live connections */
    struct nbuf_uring *ring;      /* --io-uring: the connections' ring, else NULL */
    struct nbuf_uring_bufs *bufs; /* --io-uring: the buffers receives fill */
    unsigned ndying;              /* --io-uring: clients waiting to be freed */
    int64_t now_ms;               /* clock snapshot of this loop iteration */
    int64_t next_sweep_ms;
    int error;
};

struct kv_server {
    const struct kv_config *cfg;
    struct nbuf_pool *pool;
    struct kv_store *store;
    struct kv_worker *workers;
    unsigned nworkers;
    int stop_fd;              /* eventfd: readable once shutdown begins */
    unsigned nclients;        /* atomically updated */
    unsigned port;            /* bound port */
    uint64_t protocol_errors; /* counters, atomically updated */
    uint64_t commands;
    uint64_t next_client_id; /* atomically updated */
};

/* Lock the shard of key argument @p i and look the key up (NULL: missing
 * or expired); *hp gets its hash, for kv_key_unlock and other store calls. */
static inline struct kv_entry *
kv_key_lock_find(struct kv_ctx *x, int i, uint64_t *hp)
{
    uint64_t h = kv_arg_hash(x, i);
    *hp = h;
    kv_store_lock(x->srv->store, kv_shard_of(h));
    return kv_store_find_locked(x->srv->store, h, x->argv[i].p, x->argv[i].len, x->now_ms);
}

static inline void
kv_key_unlock(struct kv_ctx *x, uint64_t h)
{
    kv_store_unlock(x->srv->store, kv_shard_of(h));
}

int kv_server_start(struct kv_server *srv, const struct kv_config *cfg, struct nbuf_pool *pool);
void kv_server_stop(struct kv_server *srv);
int64_t kv_now_ms(void);
int kv_worker_watch(struct kv_worker *w, int fd, struct kv_client *cl, uint32_t events, bool add);

#endif /* NBUF_KV_H */
