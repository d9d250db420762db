/* SPDX-License-Identifier: MIT */
/*
 * nbuf-kv's entry point: options, the pool, signals. The server runs in
 * worker threads; this thread waits for SIGINT/SIGTERM, stops them, frees
 * the store and checks that nbuf_pool_free() finds no live buffer (exit
 * status 1 if it does, so tests catch leaks).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kv.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: nbuf-kv [options]\n"
               "  --bind ADDR         listen address (default 127.0.0.1)\n"
               "  --port N            TCP port, 0 = ephemeral (default 7379)\n"
               "  --threads N         event-loop threads (default 1)\n"
               "  --max-bulk SIZE     largest bulk string (default 512m, at most 1g)\n"
               "  --max-query SIZE    unparsed bytes per client before it is dropped "
               "(default 1g)\n"
               "  --max-clients N     connections (default 10000)\n"
               "  --copy-below SIZE   copy values (and per-read-buffer pieces of values)\n"
               "                      shorter than this, keep longer ones as slices of\n"
               "                      the request buffers (default 64k; 0 = slice all)\n"
               "  --inline-max SIZE   copied values shorter than this live in the key's\n"
               "                      entry (default 256, at most 4096)\n"
               "  --stats             print pool statistics at exit\n"
               "  --io-uring          connections through io_uring instead of epoll\n"
               "SIZE takes a k, m or g suffix. Prints 'nbuf-kv: listening on ADDR:PORT'.\n");
}

static bool
parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return false;
    switch (*end) {
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        end++;
        break;
    default: break;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end || v > SIZE_MAX)
        return false;
    *out = (size_t)v;
    return true;
}

static int
parse_args(int argc, char **argv, struct kv_config *cfg)
{
    enum {
        O_BIND = 1,
        O_PORT,
        O_THREADS,
        O_MAX_BULK,
        O_MAX_QUERY,
        O_MAX_CLIENTS,
        O_COPY_BELOW,
        O_INLINE_MAX,
        O_STATS,
        O_IO_URING,
        O_HELP
    };
    static const struct option opts[] = {
        {"bind", required_argument, NULL, O_BIND},
        {"port", required_argument, NULL, O_PORT},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-bulk", required_argument, NULL, O_MAX_BULK},
        {"max-query", required_argument, NULL, O_MAX_QUERY},
        {"max-clients", required_argument, NULL, O_MAX_CLIENTS},
        {"copy-below", required_argument, NULL, O_COPY_BELOW},
        {"inline-max", required_argument, NULL, O_INLINE_MAX},
        {"stats", no_argument, NULL, O_STATS},
        {"io-uring", no_argument, NULL, O_IO_URING},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    size_t v;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case O_BIND: cfg->bind = a; break;
        case O_PORT:
            if (!parse_size(a, &v) || v > 65535)
                goto out_bad;
            cfg->port = (unsigned)v;
            break;
        case O_THREADS:
            if (!parse_size(a, &v) || v < 1 || v > 256)
                goto out_bad;
            cfg->threads = (unsigned)v;
            break;
        case O_MAX_BULK:
            if (!parse_size(a, &cfg->max_bulk) || cfg->max_bulk > ((size_t)1 << 30))
                goto out_bad;
            break;
        case O_MAX_QUERY:
            if (!parse_size(a, &cfg->max_query) || cfg->max_query == 0)
                goto out_bad;
            break;
        case O_MAX_CLIENTS:
            if (!parse_size(a, &v) || v < 1 || v > 1000000)
                goto out_bad;
            cfg->max_clients = (unsigned)v;
            break;
        case O_COPY_BELOW:
            if (!parse_size(a, &cfg->copy_below))
                goto out_bad;
            break;
        case O_INLINE_MAX:
            if (!parse_size(a, &cfg->inline_max) || cfg->inline_max > 4096)
                goto out_bad;
            break;
        case O_STATS: cfg->stats = true; break;
        case O_IO_URING:
#if KV_HAVE_IO_URING
            cfg->io_uring = true;
            break;
#else
            fprintf(stderr, "nbuf-kv: --io-uring: not built in (libnbuf was built without "
                            "io_uring: liburing not found, or -Dio_uring=disabled)\n");
            return -EINVAL;
#endif
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return -EINVAL;
        }
        continue;
    out_bad:
        fprintf(stderr, "nbuf-kv: bad value '%s' for --%s\n", a, opts[c - 1].name);
        return -EINVAL;
    }
    if (optind < argc) {
        usage(stderr);
        return -EINVAL;
    }
    return 0;
}

/* Room for max_clients sockets, as Redis adjusts its open-file limit. */
static void
raise_fd_limit(const struct kv_config *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_clients + 32 + 2 * cfg->threads;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        fprintf(stderr, "nbuf-kv: warning: open-file limit %llu is below --max-clients\n",
                (unsigned long long)rl.rlim_cur);
}

int
main(int argc, char **argv)
{
    struct kv_config cfg = {
        .bind = "127.0.0.1",
        .port = 7379,
        .threads = 1,
        .max_bulk = KV_MAX_BULK_DEFAULT,
        .max_query = KV_MAX_QUERY_DEFAULT,
        .max_clients = KV_MAX_CLIENTS_DEFAULT,
        .copy_below = KV_COPY_BELOW_DEFAULT,
        .inline_max = KV_INLINE_MAX_DEFAULT,
    };
    struct nbuf_pool_config pc;
    struct nbuf_pool *pool;
    struct kv_server srv;
    sigset_t set;
    int sig = 0, r;

    if (parse_args(argc, argv, &cfg) != 0)
        return 2;
    raise_fd_limit(&cfg);

    /* Signals are taken by sigwait() below; the threads inherit the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    nbuf_pool_config_init(&pc);
    pool = nbuf_pool_new(&pc);
    if (!pool) {
        perror("nbuf-kv: nbuf_pool_new");
        return 1;
    }
    r = kv_server_start(&srv, &cfg, pool);
    if (r) {
        fprintf(stderr, "nbuf-kv: cannot listen on %s:%u: %s\n", cfg.bind, cfg.port, strerror(-r));
        nbuf_pool_free(pool);
        return 1;
    }
    printf("nbuf-kv: listening on %s:%u\n", cfg.bind, srv.port);
    fflush(stdout);

    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "nbuf-kv: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    kv_server_stop(&srv);

    if (cfg.stats) {
        fprintf(stderr, "nbuf-kv: protocol errors %llu\n",
                (unsigned long long)__atomic_load_n(&srv.protocol_errors, __ATOMIC_RELAXED));
        nbuf_pool_print_stats(pool, stderr, NBUF_FORMAT_TEXT);
    }
    r = nbuf_pool_free(pool);
    if (r != 0) {
        fprintf(stderr, "nbuf-kv: nbuf_pool_free: %s (buffers leaked)\n", strerror(-r));
        return 1;
    }
    return 0;
}
