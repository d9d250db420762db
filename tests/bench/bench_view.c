/* SPDX-License-Identifier: MIT */
/*
 * View costs: slice+release, read_slice+release, duplicate+release and
 * retain+release of a pooled buffer, next to alloc+release of 64 B, in ns per
 * pair (median of 7 runs). folly IOBuf's published figure for clone() +
 * destruction is about 25 ns per clone (it mallocs a new IOBuf).
 *
 * Not registered in meson: build by hand against a release build, e.g.
 *   cc -O2 -Iinclude tests/bench/bench_view.c build-rel/src/libnbuf.a \
 *      -ljemalloc -lpthread -o /tmp/bench_view
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <nbuf.h>

/* Pairs per run; BENCH_ITERS overrides (debug modes are slow). */
static long iters = 2000000;
#define RUNS 7

static double
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static struct nbuf_pool *pool;
static struct nbuf *root;
static volatile size_t sink;

static void
op_slice(void)
{
    struct nbuf *s = nbuf_slice(root, 16, 100);
    sink += nbuf_readable(s);
    nbuf_release(s);
}

static void
op_read_slice(void)
{
    nbuf_set_indices(root, 0, 1000);
    struct nbuf *s = nbuf_read_slice(root, 100);
    sink += nbuf_readable(s);
    nbuf_release(s);
}

static void
op_duplicate(void)
{
    struct nbuf *s = nbuf_duplicate(root);
    sink += nbuf_readable(s);
    nbuf_release(s);
}

static void
op_retain(void)
{
    nbuf_retain(root);
    nbuf_release(root);
}

static void
op_alloc64(void)
{
    struct nbuf *b = nbuf_alloc(pool, 64);
    sink += nbuf_capacity(b);
    nbuf_release(b);
}

/* folly's clone on this machine: malloc a 56-byte IOBuf, bump the shared
 * count atomically; destruction: drop it atomically, free the IOBuf. */
struct fake_iobuf {
    void *data;
    size_t len, cap;
    void *next, *prev;
    _Atomic unsigned *shared;
    unsigned flags;
};
static _Atomic unsigned fake_shared = 1;

static void
op_folly_like(void)
{
    struct fake_iobuf *c = malloc(sizeof(*c));
    __asm__ volatile("" : : "r"(c) : "memory");
    c->data = root;
    c->len = 100;
    c->shared = &fake_shared;
    atomic_fetch_add_explicit(c->shared, 1, memory_order_acq_rel);
    sink += c->len;
    atomic_fetch_sub_explicit(c->shared, 1, memory_order_acq_rel);
    free(c);
}

static double
measure(void (*op)(void))
{
    double runs[RUNS];
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++)
            op();
        runs[r] = (now_ns() - t0) / (double)iters;
    }
    qsort(runs, RUNS, sizeof(runs[0]), cmp);
    return runs[RUNS / 2];
}

int
main(void)
{
    const char *it = getenv("BENCH_ITERS");
    if (it && atol(it) > 0)
        iters = atol(it);
    pool = nbuf_pool_new(NULL);
    root = nbuf_alloc(pool, 4096);
    if (!pool || !root || nbuf_reserve(root, 1000) == NULL || nbuf_commit(root, 1000) != 0)
        return 1;
    /* Warm the caches. */
    measure(op_slice);
    struct {
        const char *name;
        void (*op)(void);
    } cases[] = {
        {"slice + release", op_slice},
        {"read_slice + release", op_read_slice},
        {"duplicate + release", op_duplicate},
        {"retain + release (count 1 -> 2 -> 1)", op_retain},
        {"alloc(64) + release (reference)", op_alloc64},
        {"folly-like clone emulation (malloc+2 atomics)", op_folly_like},
    };
    printf("%-46s %8s %14s\n", "operation", "ns/pair", "vs folly 25 ns");
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double ns = measure(cases[i].op);
        printf("%-46s %8.1f %13.2fx\n", cases[i].name, ns, ns / 25.0);
    }
    nbuf_release(root);
    return nbuf_pool_free(pool) == 0 ? 0 : 1;
}
