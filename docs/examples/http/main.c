/* SPDX-License-Identifier: MIT */
/*
 * nbuf-http's entry point: options, the pool, signals. The server runs in
 * worker threads; this thread waits for SIGINT/SIGTERM, stops them and
 * checks that nbuf_pool_free() finds no live buffer (exit status 1 if it
 * does, so tests catch leaks).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "http.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: nbuf-http --root DIR [options]\n"
               "  --root DIR            directory to serve (required)\n"
               "  --bind ADDR           listen address (default 127.0.0.1)\n"
               "  --port N              TCP port, 0 = ephemeral (default 8080)\n"
               "  --threads N           event-loop threads, one listener each (default 1)\n"
               "  --max-conns N         open connections; more get 503 (default 10000)\n"
               "  --header-max SIZE     request line + headers; more is 431 (default 8k)\n"
               "  --header-timeout SEC  time for a request's headers to arrive (default 10)\n"
               "  --idle-timeout SEC    keep-alive wait, and write stall limit (default 60)\n"
               "  --file-cache SEC      reuse an open file this long; 0 = open per request\n"
               "                        (default 1)\n"
               "  --no-openat2          confine with realpath() even where openat2 works\n"
               "  --stats               print counters and pool statistics at exit\n"
               "SIZE takes a k or m suffix; SEC may have a fraction.\n"
               "Prints 'nbuf-http: listening on ADDR:PORT' once ready.\n");
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
    default: break;
    }
    if (*end || v > SIZE_MAX)
        return false;
    *out = (size_t)v;
    return true;
}

static bool
parse_seconds(const char *s, int64_t *ms)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400.0 * 365)
        return false;
    *ms = (int64_t)(v * 1000.0 + 0.999); /* rounded up to whole ms */
    return true;
}

static int
parse_args(int argc, char **argv, struct http_config *cfg)
{
    enum {
        O_ROOT = 1,
        O_BIND,
        O_PORT,
        O_THREADS,
        O_MAX_CONNS,
        O_HEADER_MAX,
        O_HEADER_TIMEOUT,
        O_IDLE_TIMEOUT,
        O_FILE_CACHE,
        O_NO_OPENAT2,
        O_STATS,
        O_HELP
    };
    static const struct option opts[] = {
        {"root", required_argument, NULL, O_ROOT},
        {"bind", required_argument, NULL, O_BIND},
        {"port", required_argument, NULL, O_PORT},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-conns", required_argument, NULL, O_MAX_CONNS},
        {"header-max", required_argument, NULL, O_HEADER_MAX},
        {"header-timeout", required_argument, NULL, O_HEADER_TIMEOUT},
        {"idle-timeout", required_argument, NULL, O_IDLE_TIMEOUT},
        {"file-cache", required_argument, NULL, O_FILE_CACHE},
        {"no-openat2", no_argument, NULL, O_NO_OPENAT2},
        {"stats", no_argument, NULL, O_STATS},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    size_t v;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case O_ROOT: cfg->root = a; break;
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
        case O_MAX_CONNS:
            if (!parse_size(a, &v) || v < 1 || v > 1000000)
                goto out_bad;
            cfg->max_conns = (unsigned)v;
            break;
        case O_HEADER_MAX:
            if (!parse_size(a, &cfg->header_max) || cfg->header_max < 64 ||
                cfg->header_max > (1u << 20))
                goto out_bad;
            break;
        case O_HEADER_TIMEOUT:
            if (!parse_seconds(a, &cfg->header_timeout_ms))
                goto out_bad;
            break;
        case O_IDLE_TIMEOUT:
            if (!parse_seconds(a, &cfg->idle_timeout_ms))
                goto out_bad;
            break;
        case O_FILE_CACHE:
            if (strcmp(a, "0") == 0)
                cfg->file_cache_ms = 0;
            else if (!parse_seconds(a, &cfg->file_cache_ms))
                goto out_bad;
            break;
        case O_NO_OPENAT2: cfg->no_openat2 = true; break;
        case O_STATS: cfg->stats = true; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return -EINVAL;
        }
        continue;
    out_bad:
        fprintf(stderr, "nbuf-http: bad value '%s' for --%s\n", a, opts[c - 1].name);
        return -EINVAL;
    }
    if (optind < argc || !cfg->root) {
        usage(stderr);
        return -EINVAL;
    }
    return 0;
}

/* Room for max_conns sockets plus one open file each (a queued response
 * holds its file until it is sent). */
static void
raise_fd_limit(const struct http_config *cfg)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)cfg->max_conns * 2 + 64 + 4 * cfg->threads;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)cfg->max_conns + 64)
        fprintf(stderr, "nbuf-http: warning: open-file limit %llu is low for --max-conns\n",
                (unsigned long long)rl.rlim_cur);
}

static void
print_counters(const struct http_counters *n)
{
    fprintf(stderr,
            "nbuf-http: connections %llu accepted, %llu refused, %llu timed out\n"
            "nbuf-http: requests %llu: 2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu\n",
            (unsigned long long)n->accepted, (unsigned long long)n->refused,
            (unsigned long long)n->timeouts, (unsigned long long)n->requests,
            (unsigned long long)n->status[2], (unsigned long long)n->status[3],
            (unsigned long long)n->status[4], (unsigned long long)n->status[5]);
}

int
main(int argc, char **argv)
{
    struct http_config cfg = {
        .bind = "127.0.0.1",
        .port = 8080,
        .threads = 1,
        .max_conns = HTTP_MAX_CONNS_DEFAULT,
        .header_max = HTTP_HEADER_MAX_DEFAULT,
        .header_timeout_ms = HTTP_HEADER_TIMEOUT_MS,
        .idle_timeout_ms = HTTP_IDLE_TIMEOUT_MS,
        .file_cache_ms = HTTP_FILE_CACHE_MS,
    };
    struct http_counters sum;
    struct nbuf_pool_config pc;
    struct nbuf_pool *pool;
    struct http_server srv;
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
        perror("nbuf-http: nbuf_pool_new");
        return 1;
    }
    r = http_server_start(&srv, &cfg, pool);
    if (r) {
        nbuf_pool_free(pool);
        return 1;
    }
    printf("nbuf-http: listening on %s:%u\n", cfg.bind, srv.port);
    fflush(stdout);

    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "nbuf-http: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    http_server_stop(&srv, &sum);

    if (cfg.stats) {
        print_counters(&sum);
        nbuf_pool_print_stats(pool, stderr, NBUF_FORMAT_TEXT);
    }
    r = nbuf_pool_free(pool);
    if (r != 0) {
        fprintf(stderr, "nbuf-http: nbuf_pool_free: %s (buffers leaked)\n", strerror(-r));
        return 1;
    }
    return 0;
}
