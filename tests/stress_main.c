/* SPDX-License-Identifier: MIT */
/*
 * A standalone stress driver (no Criterion, whose runner cannot start under
 * ThreadSanitizer here): the mimalloc-style transfer stress of test_stress.c
 * (threads recreated over rounds, an atomic transfer array, cookie-checked
 * buffers, a concurrent trimmer), shared retain/release of one buffer and
 * views released on other threads. Exit status 0 when every check held.
 * Usage: stress_main [scale] (default 1; iterations scale linearly).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static _Atomic unsigned failures;

#define CHECK(e)                                                                                   \
    do {                                                                                           \
        if (!(e)) {                                                                                \
            if (atomic_fetch_add(&failures, 1) < 10)                                               \
                fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #e);              \
        }                                                                                          \
    } while (0)

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* The cookie of a buffer: from its address and length, so a buffer handed
 * to two owners or memory reused under a live buffer shows. */
static uint8_t
cookie_byte(const struct nbuf *b, size_t i)
{
    uint64_t x = ((uint64_t)(uintptr_t)nbuf_data(b) + i) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static void
cookie_fill(struct nbuf *b)
{
    size_t n = nbuf_readable(b);
    uint8_t *d = (uint8_t *)nbuf_data(b);
    /* Sparse: first, last and every 64th byte (keeps TSan runs short). */
    for (size_t i = 0; i < n; i += 64)
        d[i] = cookie_byte(b, i);
    if (n)
        d[n - 1] = cookie_byte(b, n - 1);
}

static bool
cookie_ok(const struct nbuf *b)
{
    size_t n = nbuf_readable(b);
    const uint8_t *d = nbuf_data(b);
    for (size_t i = 0; i < n; i += 64)
        if (d[i] != cookie_byte(b, i))
            return false;
    return n == 0 || d[n - 1] == cookie_byte(b, n - 1);
}

/* ---- transfer stress ---- */

enum { TRANSFER = 256, LOCAL = 32, THREADS = 4 };

struct stress {
    struct nbuf_pool *p;
    _Atomic(struct nbuf *) transfer[TRANSFER];
    unsigned iters;
    _Atomic bool stop;
};

static struct nbuf *
make(struct stress *st, uint64_t *s)
{
    uint64_t r = rnd(s) % 1000;
    size_t size = r < 800 ? 1 + rnd(s) % 1024 : r < 990 ? 1 + rnd(s) % 32768 : 1 + rnd(s) % 300000;
    struct nbuf *b = nbuf_alloc(st->p, size);
    CHECK(b != NULL);
    if (!b)
        return NULL;
    CHECK(nbuf_reserve(b, size) != NULL);
    CHECK(nbuf_commit(b, size) == 0);
    cookie_fill(b);
    return b;
}

static void
drop(struct nbuf *b)
{
    if (!b)
        return;
    CHECK(cookie_ok(b));
    CHECK(nbuf_release(b) == 1);
}

struct worker {
    struct stress *st;
    uint64_t seed;
};

static void *
worker(void *arg)
{
    struct worker *w = arg;
    struct stress *st = w->st;
    uint64_t s = w->seed;
    struct nbuf *local[LOCAL] = {0};
    for (unsigned i = 0; i < st->iters; i++) {
        unsigned k = (unsigned)(rnd(&s) % LOCAL);
        uint64_t op = rnd(&s) % 100;
        if (op < 40) {
            drop(local[k]);
            local[k] = make(st, &s);
        } else if (op < 55) {
            drop(local[k]);
            local[k] = NULL;
        } else if (op < 65 && local[k]) {
            /* A view, handed over instead of the buffer. */
            struct nbuf *b = local[k];
            size_t n = nbuf_readable(b);
            struct nbuf *v = nbuf_slice(b, 0, n);
            CHECK(v != NULL);
            /* 0 for a buffer (the view holds it); 1 for a view (a view of a
             * view holds the original owner, not the view). */
            CHECK(nbuf_release(b) >= 0);
            local[k] = v;
            CHECK(cookie_ok(v));
        } else {
            unsigned t = (unsigned)(rnd(&s) % TRANSFER);
            struct nbuf *mine = local[k] ? local[k] : make(st, &s);
            struct nbuf *theirs = atomic_exchange(&st->transfer[t], mine);
            if (theirs)
                CHECK(cookie_ok(theirs));
            local[k] = theirs;
        }
    }
    for (unsigned k = 0; k < LOCAL; k++) {
        if (k % 2 && local[k])
            drop(atomic_exchange(&st->transfer[rnd(&s) % TRANSFER], local[k]));
        else
            drop(local[k]);
    }
    return NULL;
}

static void *
trimmer(void *arg)
{
    struct stress *st = arg;
    while (!atomic_load(&st->stop)) {
        CHECK(nbuf_pool_trim(st->p) == 0);
        struct nbuf_pool_stats s;
        CHECK(nbuf_pool_stats(st->p, &s) == 0);
        CHECK(nbuf_pool_check_(st->p));
        usleep(3000);
    }
    return NULL;
}

static void
transfer_stress(const char *name, size_t page, size_t chunk, unsigned arenas, unsigned flags,
                unsigned rounds, unsigned iters)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.page_size = page;
    cfg.chunk_size = chunk;
    cfg.arenas = arenas;
    cfg.flags = flags;
    struct stress *st = calloc(1, sizeof(*st));
    CHECK(st != NULL);
    st->p = nbuf_pool_new(&cfg);
    CHECK(st->p != NULL);
    if (!st || !st->p)
        return;
    st->iters = iters;
    pthread_t trim;
    CHECK(pthread_create(&trim, NULL, trimmer, st) == 0);
    for (unsigned r = 0; r < rounds; r++) {
        pthread_t th[THREADS];
        struct worker w[THREADS];
        for (unsigned i = 0; i < THREADS; i++) {
            w[i] = (struct worker){st, (r * THREADS + i + 1) * 0x2545f4914f6cdd1dull};
            CHECK(pthread_create(&th[i], NULL, worker, &w[i]) == 0);
        }
        for (unsigned i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        CHECK(nbuf_pool_check_(st->p));
    }
    atomic_store(&st->stop, true);
    pthread_join(trim, NULL);
    for (unsigned t = 0; t < TRANSFER; t++)
        drop(atomic_exchange(&st->transfer[t], NULL));
    struct nbuf_pool_stats s;
    CHECK(nbuf_pool_stats(st->p, &s) == 0);
    CHECK(s.live_buffers == 0 && s.views == 0);
    CHECK(s.allocations == s.releases);
    CHECK(nbuf_pool_free(st->p) == 0);
    free(st);
    printf("stress: %s: done\n", name);
}

/* ---- one buffer shared by many threads ---- */

struct shared {
    struct nbuf *b;
    unsigned per_thread;
    _Atomic unsigned frees;
};

static void
count_free(void *data, void *ctx)
{
    (void)data;
    struct shared *sh = ctx;
    atomic_fetch_add(&sh->frees, 1);
}

static void *
sharer(void *arg)
{
    struct shared *sh = arg;
    for (unsigned i = 0; i < 200; i++) {
        CHECK(nbuf_retain(sh->b) == sh->b);
        struct nbuf *v = nbuf_slice(sh->b, 1, 10);
        CHECK(v != NULL);
        CHECK(nbuf_release(sh->b) == 0);
        CHECK(nbuf_release(v) == 1);
    }
    /* Each thread owns per_thread references and drops them all. */
    for (unsigned i = 0; i < sh->per_thread; i++)
        CHECK(nbuf_release(sh->b) >= 0);
    return NULL;
}

static void
shared_release(unsigned rounds)
{
    static uint8_t mem[64];
    for (unsigned r = 0; r < rounds; r++) {
        struct shared sh = {.per_thread = 3};
        sh.b = nbuf_wrap(mem, sizeof(mem), count_free, &sh);
        CHECK(sh.b != NULL);
        for (unsigned i = 1; i < THREADS * sh.per_thread; i++)
            CHECK(nbuf_retain(sh.b) == sh.b);
        pthread_t th[THREADS];
        for (unsigned i = 0; i < THREADS; i++)
            CHECK(pthread_create(&th[i], NULL, sharer, &sh) == 0);
        for (unsigned i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        CHECK(atomic_load(&sh.frees) == 1);
    }
    printf("stress: shared retain/release: done\n");
}

int
main(int argc, char **argv)
{
    unsigned scale = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
    if (scale == 0)
        scale = 1;
    setvbuf(stdout, NULL, _IONBF, 0);
    transfer_stress("default", 8192, 4u << 20, 0, 0, 3, 3000 * scale);
    transfer_stress("one arena", 8192, 1u << 20, 1, 0, 3, 3000 * scale);
    transfer_stress("no cache", 8192, 1u << 20, 2, NBUF_POOL_NO_CACHE, 2, 2000 * scale);
    transfer_stress("tiny chunks", 4096, 64u << 10, 2, 0, 3, 3000 * scale);
    transfer_stress("checked", 4096, 64u << 10, 2, NBUF_POOL_CHECKED, 2, 1000 * scale);
    shared_release(20 * scale);
    unsigned f = atomic_load(&failures);
    printf("stress: %u failed checks\n", f);
    return f ? 1 : 0;
}
