/* SPDX-License-Identifier: MIT */
/*
 * The command table, dispatch (lookup, arity, subcommands, unknown
 * commands, queueing inside MULTI), helpers shared by all commands, and the
 * server commands (DBSIZE, FLUSHALL, COMMAND, CONFIG, INFO). Replies and error texts follow
 * Redis 7.0 byte for byte. Every command runs with the shard locks of its keys held (ascending
 * order for several keys), builds its reply under them (slices are retained by the reply), then
 * unlocks.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kv.h"

#define CMD_NOQUEUE 1u /* runs at once inside MULTI (MULTI, EXEC, DISCARD, WATCH, QUIT) */

struct kv_subcommand {
    const char *name; /* lower case */
    int arity;        /* as kv_command's, counting the command and subcommand names */
    kv_cmd_fn fn;
};

struct kv_command {
    const char *name;                 /* lower case, as in Redis's error messages */
    int arity;                        /* > 0: exactly; < 0: at least -arity (the name counts) */
    kv_cmd_fn fn;                     /* with subs: what runs without a subcommand */
    int8_t value_first;               /* first argument that is a value (0: none) */
    int8_t value_step;                /* 0: only value_first; 2: every other one from it */
    uint8_t flags;                    /* CMD_* */
    const struct kv_subcommand *subs; /* NULL-terminated, or NULL */
};

#define STORE(x) ((x)->srv->store)

static size_t command_count(void);

/* ---- helpers ---- */

int
kv_reply_syntax(struct kv_ctx *x)
{
    return kv_reply_error(x->out, "ERR syntax error");
}

int
kv_reply_not_int(struct kv_ctx *x)
{
    return kv_reply_error(x->out, "ERR value is not an integer or out of range");
}

bool
kv_arg_is(const struct kv_arg *a, const char *lit)
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

bool
kv_arg_ll(const struct kv_ctx *x, int i, long long *v)
{
    const struct kv_arg *a = &x->argv[i];
    return a->p && kv_string2ll(a->p, a->len, v);
}

uint64_t
kv_arg_hash(const struct kv_ctx *x, int i)
{
    return kv_hash(STORE(x), x->argv[i].p, x->argv[i].len);
}

/* Redis's addReplyHelp: the usage line, @p lines (NULL-terminated), HELP;
 * each a status reply in an array. */
int
kv_reply_help(struct kv_ctx *x, const char *const *lines)
{
    static const char usage[] = " <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n";
    static const char help[] = "+HELP\r\n+    Prints this help.\r\n";
    char name[16];
    size_t n = 0, i;
    int r;

    while (lines[n])
        n++;
    for (i = 0; i < sizeof(name) - 1 && i < x->argv[0].len; i++) {
        unsigned char c = x->argv[0].p[i];
        name[i] = (char)(c >= 'a' && c <= 'z' ? c & ~0x20 : c);
    }
    if ((r = kv_reply_array(x->out, (long long)n + 3)) || (r = kv_reply_raw(x->out, "+", 1)) ||
        (r = kv_reply_raw(x->out, name, i)) || (r = kv_reply_raw(x->out, usage, sizeof(usage) - 1)))
        return r;
    for (i = 0; i < n; i++) {
        if ((r = kv_reply_raw(x->out, "+", 1)) ||
            (r = kv_reply_raw(x->out, lines[i], strlen(lines[i]))) ||
            (r = kv_reply_raw(x->out, "\r\n", 2)))
            return r;
    }
    return kv_reply_raw(x->out, help, sizeof(help) - 1);
}

/* Release what the arguments still hold: buffer segments not moved into
 * the store (NULL ones were) and segment lists of their own. */
void
kv_args_release(struct kv_arg *argv, size_t argc)
{
    for (size_t i = 0; i < argc; i++) {
        struct kv_arg *a = &argv[i];
        for (uint32_t j = 0; j < a->nseg; j++)
            nbuf_release(a->segs[j]); /* NULL is a no-op */
        if (a->segs && a->segs != &a->seg1)
            free(a->segs);
    }
}

/* The shards of the keys at argv[first], argv[first + step], ... */
uint64_t
kv_keys_mask(const struct kv_ctx *x, int first, int step)
{
    uint64_t mask = 0;
    for (int i = first; i < x->argc; i += step)
        mask |= 1ull << kv_shard_of(kv_arg_hash(x, i));
    return mask;
}

/* ---- server commands ---- */

static int
cmd_dbsize(struct kv_ctx *x)
{
    return kv_reply_int(x->out, (long long)kv_store_size(STORE(x)));
}

static int
cmd_flushall(struct kv_ctx *x)
{
    if (x->argc > 2 ||
        (x->argc == 2 && !kv_arg_is(&x->argv[1], "sync") && !kv_arg_is(&x->argv[1], "async")))
        return kv_reply_syntax(x);
    kv_store_flush(STORE(x));
    return kv_reply_ok(x->out);
}

/* COMMAND, COMMAND DOCS|INFO|LIST: no command metadata, so tools fall back. */
static int
cmd_command(struct kv_ctx *x)
{
    return kv_reply_array(x->out, 0);
}

static int
cmd_command_count(struct kv_ctx *x)
{
    return kv_reply_int(x->out, (long long)command_count());
}

static int
cmd_command_help(struct kv_ctx *x)
{
    static const char *const lines[] = {
        "(no subcommand)",
        "    An empty array (nbuf-kv has no command metadata).",
        "COUNT",
        "    Return the total number of commands in this server.",
        "DOCS|INFO|LIST",
        "    An empty array.",
        NULL,
    };
    return kv_reply_help(x, lines);
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
cmd_config_resetstat(struct kv_ctx *x)
{
    return kv_reply_ok(x->out);
}

static int
cmd_config_help(struct kv_ctx *x)
{
    static const char *const lines[] = {
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values",
        "    (nbuf-kv has appendonly and save).",
        "SET <directive> <value>",
        "    Refused: nbuf-kv has no settable parameters.",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command (nothing to reset here).",
        NULL,
    };
    return kv_reply_help(x, lines);
}

static int
cmd_config_set(struct kv_ctx *x)
{
    return kv_reply_error(x->out,
                          "ERR Unknown option or number of arguments for CONFIG SET - '%.128s'",
                          (const char *)x->argv[2].p);
}

static int
cmd_config_get(struct kv_ctx *x)
{
    bool hit[sizeof(config_table) / sizeof(config_table[0])] = {false};
    size_t n = 0;
    int r;

    for (int i = 2; i < x->argc; i++) {
        for (size_t j = 0; j < sizeof(config_table) / sizeof(config_table[0]); j++) {
            const char *name = config_table[j].name;
            if (!hit[j] && kv_glob_match(x->argv[i].p, x->argv[i].len, name, strlen(name), true)) {
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
                 "# Server\r\nredis_version:" KV_REDIS_VERSION "\r\nnbuf_kv_version:0.1.0\r\n"
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

/* ---- table and dispatch ---- */

static const struct kv_subcommand command_subs[] = {
    {"count", 2, cmd_command_count}, {"docs", -2, cmd_command},     {"info", -2, cmd_command},
    {"list", -2, cmd_command},       {"help", 2, cmd_command_help}, {NULL, 0, NULL},
};

static const struct kv_subcommand config_subs[] = {
    {"get", -3, cmd_config_get},
    {"set", -4, cmd_config_set},
    {"resetstat", 2, cmd_config_resetstat},
    {"help", 2, cmd_config_help},
    {NULL, 0, NULL},
};

static const struct kv_subcommand client_subs[] = {
    {"id", 2, kv_cmd_client_id},
    {"getname", 2, kv_cmd_client_getname},
    {"setname", 3, kv_cmd_client_setname},
    {"help", 2, kv_cmd_client_help},
    {NULL, 0, NULL},
};

/* name, arity, function, first value, value step, flags, subcommands */
static const struct kv_command commands[] = {
    {"get", 2, kv_cmd_get, 0, 0, 0, NULL},
    {"set", -3, kv_cmd_set, 2, 0, 0, NULL},
    {"setnx", 3, kv_cmd_setnx, 2, 0, 0, NULL},
    {"getset", 3, kv_cmd_getset, 2, 0, 0, NULL},
    {"setex", 4, kv_cmd_setex, 3, 0, 0, NULL},
    {"psetex", 4, kv_cmd_psetex, 3, 0, 0, NULL},
    {"mset", -3, kv_cmd_mset, 2, 2, 0, NULL},
    {"mget", -2, kv_cmd_mget, 0, 0, 0, NULL},
    {"append", 3, kv_cmd_append, 2, 0, 0, NULL},
    {"strlen", 2, kv_cmd_strlen, 0, 0, 0, NULL},
    {"getrange", 4, kv_cmd_getrange, 0, 0, 0, NULL},
    {"incr", 2, kv_cmd_incr, 0, 0, 0, NULL},
    {"incrby", 3, kv_cmd_incrby, 0, 0, 0, NULL},
    {"decr", 2, kv_cmd_decr, 0, 0, 0, NULL},
    {"decrby", 3, kv_cmd_decrby, 0, 0, 0, NULL},
    {"del", -2, kv_cmd_del, 0, 0, 0, NULL},
    {"exists", -2, kv_cmd_exists, 0, 0, 0, NULL},
    {"type", 2, kv_cmd_type, 0, 0, 0, NULL},
    {"keys", 2, kv_cmd_keys, 0, 0, 0, NULL},
    {"expire", -3, kv_cmd_expire, 0, 0, 0, NULL},
    {"pexpire", -3, kv_cmd_pexpire, 0, 0, 0, NULL},
    {"expireat", -3, kv_cmd_expireat, 0, 0, 0, NULL},
    {"pexpireat", -3, kv_cmd_pexpireat, 0, 0, 0, NULL},
    {"persist", 2, kv_cmd_persist, 0, 0, 0, NULL},
    {"ttl", 2, kv_cmd_ttl, 0, 0, 0, NULL},
    {"pttl", 2, kv_cmd_pttl, 0, 0, 0, NULL},
    {"expiretime", 2, kv_cmd_expiretime, 0, 0, 0, NULL},
    {"pexpiretime", 2, kv_cmd_pexpiretime, 0, 0, 0, NULL},
    {"dbsize", 1, cmd_dbsize, 0, 0, 0, NULL},
    {"flushall", -1, cmd_flushall, 0, 0, 0, NULL},
    {"flushdb", -1, cmd_flushall, 0, 0, 0, NULL},
    {"multi", 1, kv_cmd_multi, 0, 0, CMD_NOQUEUE, NULL},
    {"exec", 1, kv_cmd_exec, 0, 0, CMD_NOQUEUE, NULL},
    {"discard", 1, kv_cmd_discard, 0, 0, CMD_NOQUEUE, NULL},
    {"watch", -2, kv_cmd_watch, 0, 0, CMD_NOQUEUE, NULL},
    {"unwatch", 1, kv_cmd_unwatch, 0, 0, 0, NULL},
    {"ping", -1, kv_cmd_ping, 1, 0, 0, NULL},
    {"echo", 2, kv_cmd_echo, 1, 0, 0, NULL},
    {"select", 2, kv_cmd_select, 0, 0, 0, NULL},
    {"quit", -1, kv_cmd_quit, 0, 0, CMD_NOQUEUE, NULL},
    {"hello", -1, kv_cmd_hello, 0, 0, 0, NULL},
    {"auth", -2, kv_cmd_auth, 0, 0, 0, NULL},
    {"client", -2, NULL, 0, 0, 0, client_subs},
    {"command", -1, cmd_command, 0, 0, 0, command_subs},
    {"config", -2, NULL, 0, 0, 0, config_subs},
    {"info", -1, cmd_info, 0, 0, 0, NULL},
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

/*
 * A command refused before it runs (arity, unknown subcommand): inside
 * MULTI this also dooms the transaction; a refused EXEC aborts it at once
 * (Redis's rejectCommand). @p msg is Redis's text without its "ERR ".
 */
static int
refuse(struct kv_ctx *x, const struct kv_command *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (cmd->fn == kv_cmd_exec)
        return kv_multi_abort(x, msg);
    if (x->sess->multi)
        x->sess->dirty_exec = true;
    return kv_reply_error(x->out, "ERR %s", msg);
}

static inline bool
arity_ok(int arity, int argc)
{
    return arity > 0 ? argc == arity : argc >= -arity;
}

/* The checks of kv_command_run for a command with subcommands, or a wrong
 * arity, or inside MULTI. The argument bytes are NUL-terminated (client.c),
 * so the %s below stop at a NUL as Redis's do. */
static __attribute__((noinline)) int
command_run_slow(const struct kv_command *cmd, struct kv_ctx *x)
{
    kv_cmd_fn fn = cmd->fn;

    if (!arity_ok(cmd->arity, x->argc))
        return refuse(x, cmd, "wrong number of arguments for '%s' command", cmd->name);
    if (cmd->subs && x->argc > 1) {
        const struct kv_subcommand *sub = cmd->subs;
        char upper[16];
        size_t i;

        while (sub->name && !kv_arg_is(&x->argv[1], sub->name))
            sub++;
        if (!sub->name) {
            for (i = 0; cmd->name[i] && i < sizeof(upper) - 1; i++)
                upper[i] = (char)(cmd->name[i] & ~0x20);
            upper[i] = '\0';
            return refuse(x, cmd, "unknown subcommand '%.128s'. Try %s HELP.",
                          (const char *)x->argv[1].p, upper);
        }
        if (!arity_ok(sub->arity, x->argc))
            return refuse(x, cmd, "wrong number of arguments for '%s|%s' command", cmd->name,
                          sub->name);
        fn = sub->fn;
    }
    if (x->sess->multi && !(cmd->flags & CMD_NOQUEUE))
        return kv_multi_queue(x, fn);
    return fn(x);
}

/* Check arity and subcommand, then run the command, or queue it inside
 * MULTI. The usual case (right arity, no subcommand, no MULTI) is one
 * predictable branch before the call. */
int
kv_command_run(const struct kv_command *cmd, struct kv_ctx *x)
{
    if (__builtin_expect(!arity_ok(cmd->arity, x->argc) || cmd->subs || x->sess->multi, 0))
        return command_run_slow(cmd, x);
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
    if (x->sess->multi)
        x->sess->dirty_exec = true;
    return kv_reply_error(x->out, "ERR unknown command '%.128s', with args beginning with: %s",
                          (const char *)x->argv[0].p, args);
}
