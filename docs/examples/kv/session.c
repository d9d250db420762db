/* SPDX-License-Identifier: MIT */
/*
 * The connection commands: PING, ECHO, QUIT, SELECT, and the connection's
 * identity and handshake: its id and name (CLIENT ID, GETNAME, SETNAME,
 * HELP), HELLO (RESP2 only: HELLO 3 is refused, so clients stay on RESP2)
 * and AUTH (no authentication is configured, so every attempt gets Redis's
 * error for that case). Replies and errors follow Redis 7.0's
 * networking.c, server.c and acl.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

#define NO_PASSWORD_ERR                                                                            \
    "ERR AUTH <password> called without any password configured for the default user. Are "        \
    "you sure your configuration is correct?"

void
kv_session_init(struct kv_session *s, struct kv_server *srv)
{
    memset(s, 0, sizeof(*s));
    s->id = __atomic_add_fetch(&srv->next_client_id, 1, __ATOMIC_RELAXED);
}

void
kv_session_fini(struct kv_session *s, struct kv_server *srv)
{
    kv_multi_fini(s, srv->store);
    free(s->name);
    s->name = NULL;
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

int
kv_cmd_ping(struct kv_ctx *x)
{
    if (x->argc > 2)
        return kv_reply_error(x->out, "ERR wrong number of arguments for 'ping' command");
    if (x->argc == 2)
        return reply_arg(x, &x->argv[1]);
    return kv_reply_raw(x->out, "+PONG\r\n", 7);
}

int
kv_cmd_echo(struct kv_ctx *x)
{
    return reply_arg(x, &x->argv[1]);
}

int
kv_cmd_quit(struct kv_ctx *x)
{
    x->close_after = true;
    return kv_reply_ok(x->out);
}

int
kv_cmd_select(struct kv_ctx *x)
{
    long long id;
    if (!kv_arg_ll(x, 1, &id))
        return kv_reply_not_int(x);
    if (id < INT_MIN || id > INT_MAX)
        return kv_reply_error(x->out, "ERR value is out of range, value must between %d and %d",
                              INT_MIN, INT_MAX);
    if (id != 0) /* one database, like redis-server --databases 1 */
        return kv_reply_error(x->out, "ERR DB index is out of range");
    return kv_reply_ok(x->out);
}

/* Redis's clientSetName: an empty name clears it; bytes outside '!'..'~'
 * (spaces, newlines, control and non-ASCII bytes) are refused.
 * @return 0, 1 after replying the refusal, or -ENOMEM. */
static int
set_name(struct kv_ctx *x, const struct kv_arg *a)
{
    char *name = NULL;

    for (size_t i = 0; i < a->len; i++) {
        if (a->p[i] < '!' || a->p[i] > '~') {
            int r = kv_reply_error(
                x->out, "ERR Client names cannot contain spaces, newlines or special characters.");
            return r ? r : 1;
        }
    }
    if (a->len) {
        if (!(name = malloc(a->len + 1)))
            return -ENOMEM;
        memcpy(name, a->p, a->len);
        name[a->len] = '\0';
    }
    free(x->sess->name);
    x->sess->name = name;
    return 0;
}

static int
bulk_str(struct kv_ctx *x, const char *s)
{
    return kv_reply_bulk(x->out, s, strlen(s));
}

int
kv_cmd_client_id(struct kv_ctx *x)
{
    return kv_reply_int(x->out, (long long)x->sess->id);
}

int
kv_cmd_client_getname(struct kv_ctx *x)
{
    return x->sess->name ? bulk_str(x, x->sess->name) : kv_reply_null(x->out);
}

int
kv_cmd_client_setname(struct kv_ctx *x)
{
    int r = set_name(x, &x->argv[2]);
    return r ? (r < 0 ? r : 0) : kv_reply_ok(x->out);
}

/* Only what nbuf-kv has; any other subcommand is "unknown subcommand". */
int
kv_cmd_client_help(struct kv_ctx *x)
{
    static const char *const lines[] = {
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        NULL,
    };
    return kv_reply_help(x, lines);
}

/* HELLO's reply, RESP2: the map as a flat array of name, value pairs. */
static int
hello_reply(struct kv_ctx *x)
{
    int r;

    if ((r = kv_reply_array(x->out, 14)) || (r = bulk_str(x, "server")) ||
        (r = bulk_str(x, "redis")) || (r = bulk_str(x, "version")) ||
        (r = bulk_str(x, KV_REDIS_VERSION)) || (r = bulk_str(x, "proto")) ||
        (r = kv_reply_int(x->out, 2)) || (r = bulk_str(x, "id")) ||
        (r = kv_reply_int(x->out, (long long)x->sess->id)) || (r = bulk_str(x, "mode")) ||
        (r = bulk_str(x, "standalone")) || (r = bulk_str(x, "role")) ||
        (r = bulk_str(x, "master")) || (r = bulk_str(x, "modules")))
        return r;
    return kv_reply_array(x->out, 0);
}

/*
 * HELLO [protover [AUTH username password] [SETNAME clientname]], parsed as
 * Redis's helloCommand: the version (2 here; 3 and anything else is
 * NOPROTO), then the options, then AUTH, then SETNAME, then the reply.
 */
int
kv_cmd_hello(struct kv_ctx *x)
{
    const struct kv_arg *name = NULL;
    bool auth = false;
    long long ver;
    int r;

    if (x->argc >= 2) {
        if (!kv_arg_ll(x, 1, &ver))
            return kv_reply_error(x->out, "ERR Protocol version is not an integer or out of range");
        if (ver != 2) /* Redis also takes 3; nbuf-kv speaks RESP2 only */
            return kv_reply_error(x->out, "NOPROTO unsupported protocol version");
    }
    for (int j = 2; j < x->argc; j++) {
        int more = x->argc - 1 - j;
        if (kv_arg_is(&x->argv[j], "auth") && more >= 2) {
            auth = true;
            j += 2;
        } else if (kv_arg_is(&x->argv[j], "setname") && more >= 1) {
            name = &x->argv[++j];
        } else {
            return kv_reply_error(x->out, "ERR Syntax error in HELLO option '%s'",
                                  (const char *)x->argv[j].p);
        }
    }
    if (auth)
        return kv_reply_error(x->out, NO_PASSWORD_ERR);
    if (name && (r = set_name(x, name)))
        return r < 0 ? r : 0;
    return hello_reply(x);
}

/* AUTH [username] password: nbuf-kv has no users or passwords. */
int
kv_cmd_auth(struct kv_ctx *x)
{
    if (x->argc > 3)
        return kv_reply_syntax(x);
    return kv_reply_error(x->out, NO_PASSWORD_ERR);
}
