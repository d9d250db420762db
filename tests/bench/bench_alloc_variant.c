/* SPDX-License-Identifier: MIT */
/*
 * Allocation benchmark, one allocator per executable. Built once per variant
 * (-DBENCH_NBUF, -DBENCH_GLIBC, -DBENCH_JEMALLOC, -DBENCH_TCMALLOC, -DBENCH_MIMALLOC) so each
 * links only its own malloc; -DBENCH_NBUF -DBENCH_NBUF_DEFAULT is nbuf on the default pool
 * (nbuf_alloc(NULL, n), as users call it) instead of a pool of its own; runs one workload per
 * invocation and prints "key value" lines for the driver (bench_alloc.c). It refuses to run when
 * malloc is served by another allocator than the one it was built for. Every variant replays the
 * same fixed-seed traces. With --series FILE, workload (d) also appends its RSS over the trace to
 * FILE (for the plots of tests/bench/report.sh). Workload (d) ends with an idle of 3 s (0.5 s in
 * quick mode, --idle MS to change) with no allocator call, to see what each allocator gives back
 * on its own, before the trim.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(BENCH_NBUF)
#include "internal.h" /* struct nbuf: touch b->mem with the same one store the peers do */
#ifdef NBUF_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif
#ifdef BENCH_NBUF_DEFAULT
#define VARIANT "nbuf-default"
#else
#define VARIANT "nbuf"
#endif
#ifdef NBUF_HAVE_JEMALLOC
#define EXPECT_MALLOC "jemalloc" /* libnbuf links jemalloc, which replaces malloc */
#else
#define EXPECT_MALLOC "glibc"
#endif
#elif defined(BENCH_GLIBC)
#include <malloc.h>
#define VARIANT "glibc"
#define EXPECT_MALLOC "glibc"
#elif defined(BENCH_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define VARIANT "jemalloc"
#define EXPECT_MALLOC "jemalloc"
#elif defined(BENCH_TCMALLOC)
#include <gperftools/malloc_extension_c.h>
#include <gperftools/tcmalloc.h>
#define VARIANT "tcmalloc"
#define EXPECT_MALLOC "tcmalloc"
#elif defined(BENCH_MIMALLOC)
#include <mimalloc.h>
#define VARIANT "mimalloc"
#define EXPECT_MALLOC "mimalloc"
#else
#error "define one of BENCH_NBUF, BENCH_GLIBC, BENCH_JEMALLOC, BENCH_TCMALLOC, BENCH_MIMALLOC"
#endif

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#define MIN_SIZE 64
#define MAX_SIZE 65536
#define LIVE_COUNT 1000
#define TRACE_LEN (1u << 20)
#define RING_SIZE 1024 /* power of two */
#define SEED 0x6e62756662656e63ull
#define IDLE_MS 3000      /* (d)'s idle before the trim: docs/api.md's "3 s of idle with no trim" */
#define IDLE_QUICK_MS 500 /* the same in quick mode: short, but still there */
#define IDLE_MAX_MS 60000
#define IDLE_STEP_MS 100 /* one RSS sample per step of the idle */

/* ---- the allocator under test: one object type, three calls ---- */

#if defined(BENCH_NBUF)
typedef struct nbuf obj;
static struct nbuf_pool *pool; /* the pool under test, for the checks, stats and trim */

static inline obj *
obj_alloc(size_t n)
{
#ifdef BENCH_NBUF_DEFAULT
    return nbuf_alloc(NULL, n); /* a constant NULL, as in users' code */
#else
    return nbuf_alloc(pool, n);
#endif
}

static inline void
obj_free(obj *o)
{
    nbuf_release(o);
}

static inline uint8_t *
obj_mem(obj *o)
{
    return o->mem;
}
#else
typedef void obj;

static inline obj *
obj_alloc(size_t n)
{
    return malloc(n);
}

static inline void
obj_free(obj *o)
{
    free(o);
}

static inline uint8_t *
obj_mem(obj *o)
{
    return o;
}
#endif

/* ---- helpers ---- */

static struct {
    bool quick;
    uint64_t iters;     /* 0: time-boxed */
    size_t size;        /* 0: every size of workload (a) */
    const char *series; /* (d): append RSS samples over the trace to this file */
    int idle_ms;        /* (d): the idle before the trim; -1: IDLE_MS (IDLE_QUICK_MS if quick) */
} opt = {.idle_ms = -1};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_alloc_" VARIANT ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static inline uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: tiny, good enough, and identical in every variant. */
static inline uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Log-uniform in [MIN_SIZE, MAX_SIZE]: as many 64-128 B requests as 32-64 KiB ones. */
static inline uint32_t
rng_size(uint64_t *s)
{
    double u = (double)(rng_next(s) >> 11) * 0x1.0p-53;
    uint32_t n = (uint32_t)(MIN_SIZE * exp2(u * log2((double)MAX_SIZE / MIN_SIZE)));
    return n < MIN_SIZE ? MIN_SIZE : n > MAX_SIZE ? MAX_SIZE : n;
}

/* VmRSS or VmHWM of this process, in bytes. */
static uint64_t
proc_status_bytes(const char *field)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    if (fd < 0)
        die("open /proc/self/status: %s", strerror(errno));
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        die("read /proc/self/status failed");
    buf[n] = 0;
    const char *p = strstr(buf, field);
    if (!p)
        die("no %s in /proc/self/status", field);
    return strtoull(p + strlen(field) + 1, NULL, 10) * 1024;
}

static double
mib(double bytes)
{
    return bytes / (1024.0 * 1024.0);
}

/* ---- RSS over the (d) trace, for --series: cheap samples from /proc/self/statm ---- */

static FILE *series;
static uint64_t series_t0;

/* Resident bytes: the second field of statm, in pages. */
static uint64_t
statm_rss_bytes(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        die("open /proc/self/statm: %s", strerror(errno));
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        die("read /proc/self/statm failed");
    buf[n] = 0;
    unsigned long long size = 0, resident = 0;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        die("cannot parse /proc/self/statm");
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void
series_open(void)
{
    if (!opt.series)
        return;
    series = fopen(opt.series, "a");
    if (!series)
        die("open %s: %s", opt.series, strerror(errno));
    series_t0 = now_ns();
}

/* One tab-separated line: rss, variant, phase, operation, ms since the start, RSS and live
 * requested MiB (RSS is the whole process: the baseline is in the "start" sample). */
static void
series_line(const char *phase, uint64_t op, uint64_t t_ns, uint64_t rss_bytes, uint64_t live_bytes)
{
    fprintf(series, "rss\t%s\t%s\t%llu\t%.3f\t%.3f\t%.3f\n", VARIANT, phase, (unsigned long long)op,
            (double)(t_ns - series_t0) / 1e6, mib((double)rss_bytes), mib((double)live_bytes));
}

static void
series_sample(const char *phase, uint64_t op, uint64_t live_bytes)
{
    if (series)
        series_line(phase, op, now_ns(), statm_rss_bytes(), live_bytes);
}

static void
series_close(void)
{
    if (series && fclose(series) != 0)
        die("write %s: %s", opt.series, strerror(errno));
    series = NULL;
}

static void
pin_to_nth_cpu(unsigned nth)
{
    cpu_set_t all, one;
    if (sched_getaffinity(0, sizeof(all), &all) != 0 || CPU_COUNT(&all) < 2)
        return;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &all) && nth-- == 0) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
            return;
        }
    }
}

/* ---- which allocator really serves malloc ---- */

/* True if @sym resolves into the object at @base. */
static bool
defined_in(const char *sym, const void *base)
{
    void *p = dlsym(RTLD_DEFAULT, sym);
    Dl_info di;
    return p && dladdr(p, &di) && di.dli_fbase == base;
}

/*
 * Resolve malloc the way the executable's PLT does (global scope), then name
 * the object that defines it by the marker only that allocator exports:
 * tc_malloc, mi_malloc, mallctl. tcmalloc and mimalloc also export
 * __libc_malloc, so glibc is the last guess, and only for libc itself.
 */
static const char *
malloc_owner(const char **file)
{
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    void *f = dlsym(RTLD_DEFAULT, "free");
    Dl_info mi, fi;
    *file = "?";
    if (!m || !f || !dladdr(m, &mi) || !dladdr(f, &fi))
        return "unknown";
    *file = mi.dli_fname;
    if (mi.dli_fbase != fi.dli_fbase)
        return "mixed"; /* malloc and free from different objects: never benchmark that */
    if (defined_in("tc_malloc", mi.dli_fbase))
        return "tcmalloc";
    if (defined_in("mi_malloc", mi.dli_fbase))
        return "mimalloc";
    if (defined_in("mallctl", mi.dli_fbase))
        return "jemalloc";
    if (m == dlsym(RTLD_DEFAULT, "__libc_malloc") && strstr(mi.dli_fname, "/libc.so"))
        return "glibc";
    return "unknown";
}

static void
allocator_version(char *out, size_t len)
{
#if defined(BENCH_GLIBC)
    snprintf(out, len, "%s", gnu_get_libc_version());
#elif defined(BENCH_JEMALLOC)
    const char *v = "?";
    size_t sz = sizeof(v);
    mallctl("version", &v, &sz, NULL, 0);
    snprintf(out, len, "%.20s", v);
#elif defined(BENCH_TCMALLOC)
    snprintf(out, len, "%s", tc_version(NULL, NULL, NULL));
#elif defined(BENCH_MIMALLOC)
    int v = mi_version();
    snprintf(out, len, "%d.%d.%d", v / 100, v / 10 % 10, v % 10);
#else
    snprintf(out, len, "%d.%d.%d", NBUF_VERSION_MAJOR, NBUF_VERSION_MINOR, NBUF_VERSION_PATCH);
#endif
}

#if defined(BENCH_NBUF)
/*
 * ---- nbuf internals: besides obj_mem's b->mem, the only code that looks inside the pool ----
 * (src/types.h and pool.c may change under it: adapt here only.)
 *
 * Refuses a pool whose fast paths are off: NBUF_* flags, leak tracking, a debug mode. Under
 * valgrind the pool sends every buffer through its annotated slow paths (for memcheck), but
 * callgrind must count the production fast path, so put back what nbuf_pool_new computes for
 * a pool without flags. Returns the backing's name.
 */
static const char *
check_pool_internals(struct nbuf_pool *p)
{
    /* NBUF_BYPASS and friends from the environment would measure something else. */
    if (p->cfg.flags)
        die("NBUF_* flags 0x%x set from the environment: refusing to report", p->cfg.flags);
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND && !p->leaks && p->ncached) {
        p->slow_alloc = 0;
        p->buf_slow = 0;
        p->fast_id = nbuf_pool_fast_id_(p);
        /* Natively the memcheck annotations are skipped: count that. */
        nbuf_on_valgrind_ = false;
        printf("# %s fast paths restored under valgrind\n", VARIANT);
    }
#endif
    if (p->slow_alloc || p->buf_slow || !nbuf_pool_fast_(p))
        die("nbuf's fast paths are off (NBUF_LEAK or a debug mode?): refusing to report");
    return p->cfg.backing == NBUF_BACKING_JEMALLOC ? "jemalloc" : "mmap";
}
/* ---- end of nbuf internals ---- */

/* The default pool takes its sizes from NBUF_* variables too: name them with the backing. */
static void
print_backing(const char *backing)
{
    printf("backing %s", backing);
#ifdef BENCH_NBUF_DEFAULT
    extern char **environ;
    const char *sep = " (from the environment:";
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "NBUF_", 5) == 0 && strncmp(*e, "NBUF_BENCH_", 11) != 0) {
            printf("%s %.60s", sep, *e);
            sep = "";
        }
    }
    if (!*sep)
        printf(")");
#endif
    printf("\n");
}
#endif

/* Refuse to report numbers for an allocator other than the one named. */
static void
check_allocator(void)
{
    const char *file;
    const char *owner = malloc_owner(&file);
    char ver[64];
    allocator_version(ver, sizeof(ver));
    printf("variant %s %s\n", VARIANT, ver);
    printf("malloc %s %s\n", owner, file);
    if (strcmp(owner, EXPECT_MALLOC) != 0)
        die("malloc is served by %s (%s), expected %s: refusing to report", owner, file,
            EXPECT_MALLOC);
#if defined(BENCH_NBUF_DEFAULT)
    pool = nbuf_pool_default(); /* what nbuf_alloc(NULL, n) allocates from */
    if (!pool)
        die("nbuf_pool_default: %s", strerror(errno));
    print_backing(check_pool_internals(pool));
#elif defined(BENCH_NBUF)
    pool = nbuf_pool_new(NULL);
    if (!pool)
        die("nbuf_pool_new: %s", strerror(errno));
    print_backing(check_pool_internals(pool));
#endif
    fflush(stdout);
}

/* Everything freed by the caller; give idle memory back to the OS now. */
static void
allocator_trim(void)
{
#if defined(BENCH_NBUF)
    nbuf_pool_trim(pool);
#elif defined(BENCH_GLIBC)
    malloc_trim(0);
#elif defined(BENCH_JEMALLOC)
    mallctl("arena.4096.purge", NULL, NULL, NULL, 0); /* 4096: MALLCTL_ARENAS_ALL */
#elif defined(BENCH_TCMALLOC)
    MallocExtension_MarkThreadIdle(); /* the thread cache back to the central lists first */
    MallocExtension_ReleaseFreeMemory();
#elif defined(BENCH_MIMALLOC)
    mi_collect(true);
#endif
}

/* nbuf only (either pool): where the memory is, as a "#" line the driver shows; NBUF_BENCH_STATS=1
 * adds the pool's own report with its chunk occupancy map on stderr. */
static void
print_pool_stats(const char *when)
{
#if defined(BENCH_NBUF)
    struct nbuf_pool_stats st;
    nbuf_pool_stats(pool, &st);
    printf("# %s %s: backing %.1f MiB, used %.1f MiB, requested %.1f MiB, cached %.1f MiB, "
           "%llu chunks\n",
           VARIANT, when, mib((double)st.backing_bytes), mib((double)st.used_bytes),
           mib((double)st.requested_bytes), mib((double)st.cached_bytes),
           (unsigned long long)st.chunks);
    const char *env = getenv("NBUF_BENCH_STATS");
    if (env && *env && strcmp(env, "0") != 0)
        nbuf_pool_print_stats(pool, stderr, NBUF_FORMAT_TEXT);
#else
    (void)when;
#endif
}

/* ---- (a) alloc + release pairs, same thread ---- */

/*
 * Callgrind counts the measured loops by name (bench_alloc --callgrind: --toggle-collect=run_pairs,
 * run_live), so those must stay functions of their own: out of line, never cloned (a .constprop
 * copy would escape the count), and never merged with the warm-up copies, which it must not count.
 */
#if defined(__clang__)
#define COUNTED __attribute__((noinline))
#else
#define COUNTED __attribute__((noinline, noclone, no_icf))
#endif

static inline __attribute__((always_inline)) void
pairs_loop(size_t size, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        obj *o = obj_alloc(size);
        if (unlikely(!o))
            die("allocation of %zu bytes failed", size);
        *(volatile uint8_t *)obj_mem(o) = (uint8_t)i;
        obj_free(o);
    }
}

static COUNTED void
run_pairs(size_t size, uint64_t n)
{
    pairs_loop(size, n);
}

static COUNTED void
warm_pairs(size_t size, uint64_t n)
{
    pairs_loop(size, n);
}

static void
workload_pairs(void)
{
    static const size_t sizes[] = {64, 1024, 4096, 16384, 65536, 1048576};
    const uint64_t batch = 4096;
    uint64_t cap = opt.quick ? 1000000 : 8000000;
    uint64_t budget = (opt.quick ? 10 : 50) * 1000000ull;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t size = sizes[k];
        if (opt.size && opt.size != size)
            continue;
        warm_pairs(size, batch); /* warm caches and page tables */
        uint64_t n = 0, t0 = now_ns(), t;
        if (opt.iters) {
            run_pairs(size, opt.iters);
            n = opt.iters;
            t = now_ns();
        } else {
            do {
                run_pairs(size, batch);
                n += batch;
                t = now_ns();
            } while (n < cap && t - t0 < budget);
        }
        printf("a.%zu %.3f\n", size, (double)(t - t0) / (double)n);
    }
}

/* ---- (b) 1000 live buffers replaced in random order ---- */

struct trace {
    uint16_t *slot;
    uint32_t *size;
    uint32_t len;
};

static void
trace_init(struct trace *tr, uint32_t len)
{
    uint64_t s = SEED;
    tr->len = len;
    tr->slot = malloc(len * sizeof(*tr->slot));
    tr->size = malloc(len * sizeof(*tr->size));
    if (!tr->slot || !tr->size)
        die("out of memory for the trace");
    for (uint32_t i = 0; i < len; i++) {
        tr->slot[i] = (uint16_t)(rng_next(&s) % LIVE_COUNT);
        tr->size[i] = rng_size(&s);
    }
}

static inline __attribute__((always_inline)) void
live_loop(obj **live, const struct trace *tr, uint32_t from, uint32_t n)
{
    for (uint32_t i = from; i < from + n; i++) {
        uint16_t j = tr->slot[i];
        obj_free(live[j]);
        obj *o = obj_alloc(tr->size[i]);
        if (unlikely(!o))
            die("allocation of %u bytes failed", tr->size[i]);
        *(volatile uint8_t *)obj_mem(o) = (uint8_t)i;
        live[j] = o;
    }
}

static COUNTED void
run_live(obj **live, const struct trace *tr, uint32_t from, uint32_t n)
{
    live_loop(live, tr, from, n);
}

static COUNTED void
warm_live(obj **live, const struct trace *tr, uint32_t from, uint32_t n)
{
    live_loop(live, tr, from, n);
}

static void
workload_live(void)
{
    struct trace tr;
    trace_init(&tr, TRACE_LEN);
    obj **live = malloc(LIVE_COUNT * sizeof(*live));
    if (!live)
        die("out of memory");
    for (uint32_t j = 0; j < LIVE_COUNT; j++) {
        live[j] = obj_alloc(tr.size[TRACE_LEN - 1 - j]);
        if (!live[j])
            die("allocation failed");
    }
    const uint32_t batch = 1000;
    uint64_t cap = opt.iters ? opt.iters : opt.quick ? 500000 : 4000000;
    uint64_t budget = opt.iters ? UINT64_MAX : (opt.quick ? 20 : 100) * 1000000ull;
    warm_live(live, &tr, 0, 50 * batch); /* warm up to the steady mix */
    uint64_t n = 0, t0 = now_ns(), t;
    uint32_t pos = 50 * batch;
    do {
        if (pos + batch > tr.len)
            pos = 0;
        run_live(live, &tr, pos, batch);
        pos += batch;
        n += batch;
        t = now_ns();
    } while (n < cap && t - t0 < budget);
    printf("b %.3f\n", (double)(t - t0) / (double)n);
    /* Release the rest in random order too. */
    uint64_t s = SEED ^ 1;
    for (uint32_t j = LIVE_COUNT; j > 1; j--) {
        uint32_t k = (uint32_t)(rng_next(&s) % j);
        obj *o = live[k];
        live[k] = live[j - 1];
        obj_free(o);
    }
    obj_free(live[0]);
    free(live);
    free(tr.slot);
    free(tr.size);
}

/* ---- (c) producer allocates, consumer releases, through an SPSC ring ---- */

struct ring {
    _Alignas(64) _Atomic uint64_t head; /* next slot the consumer takes */
    _Alignas(64) _Atomic uint64_t tail; /* next slot the producer fills */
    _Atomic bool done;                  /* tail is final */
    _Alignas(64) obj *slots[RING_SIZE];
    const struct trace *tr;
    uint64_t max_count; /* the producer stops here or when the budget runs out */
    uint64_t budget_ns;
    _Atomic int go;
    uint64_t t0;
    uint64_t bad;
};

/* Spin politely; after a while give the CPU away, so an overloaded machine
 * slows the benchmark down instead of stalling it a time slice at a time. */
static inline void
spin_wait(unsigned *spins)
{
    if (++*spins < 1024) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        sched_yield();
    }
}

static void *
producer(void *arg)
{
    struct ring *r = arg;
    const struct trace *tr = r->tr;
    pin_to_nth_cpu(0);
    uint64_t head = 0; /* a stale copy of r->head: reload only when the ring looks full */
    unsigned spins = 0;
    while (!atomic_load_explicit(&r->go, memory_order_acquire))
        spin_wait(&spins);
    uint64_t i;
    for (i = 0; i < r->max_count; i++) {
        if ((i & 4095) == 0 && i && now_ns() - r->t0 > r->budget_ns)
            break;
        obj *o = obj_alloc(tr->size[i & (TRACE_LEN - 1)]);
        if (unlikely(!o))
            die("allocation failed in the producer");
        obj_mem(o)[0] = (uint8_t)i;
        while (i - head == RING_SIZE) {
            head = atomic_load_explicit(&r->head, memory_order_acquire);
            if (i - head == RING_SIZE)
                spin_wait(&spins);
        }
        r->slots[i & (RING_SIZE - 1)] = o;
        atomic_store_explicit(&r->tail, i + 1, memory_order_release);
    }
    atomic_store_explicit(&r->done, true, memory_order_release);
    return NULL;
}

static void *
consumer(void *arg)
{
    struct ring *r = arg;
    pin_to_nth_cpu(1);
    uint64_t tail = 0, bad = 0;
    unsigned spins = 0;
    for (uint64_t i = 0;; i++) {
        while (i == tail) {
            /* done before tail: a tail read after done is final. */
            bool last = atomic_load_explicit(&r->done, memory_order_acquire);
            tail = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (i == tail && last)
                goto out;
            if (i == tail)
                spin_wait(&spins);
        }
        obj *o = r->slots[i & (RING_SIZE - 1)];
        bad += obj_mem(o)[0] != (uint8_t)i; /* read what the producer wrote: a real hand-off */
        obj_free(o);
        atomic_store_explicit(&r->head, i + 1, memory_order_release);
    }
out:
    r->bad = bad;
    return NULL;
}

static void
workload_pc(void)
{
    struct trace tr;
    trace_init(&tr, TRACE_LEN);
    struct ring *r = aligned_alloc(64, sizeof(*r));
    if (!r)
        die("out of memory");
    memset(r, 0, sizeof(*r));
    r->tr = &tr;
    r->max_count = opt.iters ? opt.iters : opt.quick ? 200000 : 2000000;
    r->budget_ns = opt.iters ? UINT64_MAX : (opt.quick ? 50 : 400) * 1000000ull;
    pthread_t tp, tc;
    if (pthread_create(&tc, NULL, consumer, r) || pthread_create(&tp, NULL, producer, r))
        die("pthread_create failed");
    usleep(10000); /* let both threads reach their spin */
    r->t0 = now_ns();
    atomic_store_explicit(&r->go, 1, memory_order_release);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
    uint64_t t = now_ns();
    if (r->bad)
        die("%llu buffers arrived corrupted", (unsigned long long)r->bad);
    uint64_t count = atomic_load(&r->tail);
    printf("c.mbps %.3f\n", (double)count * 1e3 / (double)(t - r->t0));
    printf("c.hwm %.2f\n", mib((double)proc_status_bytes("VmHWM:")));
    print_pool_stats("after producer/consumer");
    free(r);
    free(tr.slot);
    free(tr.size);
}

/* ---- (d) RSS over live requested bytes on a long random trace, then idle, then trim ---- */

/* Write every page of [p, p + n) as a user filling the buffer would. */
static void
touch_pages(uint8_t *p, size_t n)
{
    for (size_t off = 0; off < n; off += 4096)
        p[off] = 1;
    p[n - 1] = 1;
}

/*
 * (d)'s idle: @idle_ms of sleep with no allocator call at all, so what RSS comes back is what the
 * allocator returns by itself (a decay timer, a background thread), as a process that goes quiet
 * after a burst would see. Nothing here can allocate: the clock, clock_nanosleep and the /proc
 * reads (open, read, sscanf of integers) only; the samples wait in a static array and reach the
 * series file (phase "idle", operation @op) after the idle. Returns the VmRSS at its end.
 */
static uint64_t
idle_phase(unsigned idle_ms, uint64_t op)
{
    static struct {
        uint64_t t_ns, rss;
    } samples[IDLE_MAX_MS / IDLE_STEP_MS + 2];
    unsigned n = 0;
    uint64_t t0 = now_ns();
    for (unsigned ms = 0;; ms += IDLE_STEP_MS) {
        if (ms > idle_ms)
            ms = idle_ms;
        uint64_t due = t0 + (uint64_t)ms * 1000000u;
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
                              .tv_nsec = (long)(due % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        samples[n].t_ns = now_ns();
        samples[n++].rss = statm_rss_bytes();
        if (ms == idle_ms)
            break;
    }
    uint64_t rss = proc_status_bytes("VmRSS:");
    for (unsigned k = 0; series && k < n; k++)
        series_line("idle", op, samples[k].t_ns, samples[k].rss, 0);
    return rss;
}

static void
workload_rss(void)
{
    size_t target = (opt.quick ? 16u : 64u) << 20;
    uint64_t replacements = opt.iters ? opt.iters : opt.quick ? 100000 : 1000000;
    size_t cap = target / MIN_SIZE;
    obj **live = malloc(cap * sizeof(*live));
    uint32_t *sizes = malloc(cap * sizeof(*sizes));
    if (!live || !sizes)
        die("out of memory");
    memset(live, 0, cap * sizeof(*live));
    memset(sizes, 0, cap * sizeof(*sizes));
    obj *o = obj_alloc(1); /* initialise the allocator before the baseline */
    obj_free(o);
    series_open();
    uint64_t rss0 = proc_status_bytes("VmRSS:");
    series_sample("start", 0, 0);

    uint64_t s = SEED ^ 2, live_bytes = 0;
    size_t n = 0;
    while (live_bytes < target) {
        sizes[n] = rng_size(&s);
        live[n] = obj_alloc(sizes[n]);
        if (!live[n])
            die("allocation failed");
        touch_pages(obj_mem(live[n]), sizes[n]);
        live_bytes += sizes[n++];
        if (n % 64 == 0)
            series_sample("fill", n, live_bytes);
    }
    series_sample("fill", n, live_bytes);
    /* Sample in the second half only: by then every slot was replaced many times. */
    double worst = 0, sum = 0;
    unsigned nsamples = 0;
    uint64_t every = replacements / 20, series_every = replacements / 200;
    for (uint64_t i = 1; i <= replacements; i++) {
        size_t j = rng_next(&s) % n;
        live_bytes -= sizes[j];
        obj_free(live[j]);
        sizes[j] = rng_size(&s);
        live[j] = obj_alloc(sizes[j]);
        if (!live[j])
            die("allocation failed");
        touch_pages(obj_mem(live[j]), sizes[j]);
        live_bytes += sizes[j];
        if (i > replacements / 2 && i % every == 0) {
            double ratio = (double)(proc_status_bytes("VmRSS:") - rss0) / (double)live_bytes;
            worst = ratio > worst ? ratio : worst;
            sum += ratio;
            nsamples++;
        }
        if (series && series_every && i % series_every == 0)
            series_sample("replace", n + i, live_bytes);
    }
    print_pool_stats("rss steady state");
    uint64_t hwm = proc_status_bytes("VmHWM:");
    uint64_t left = live_bytes; /* live_bytes stays the steady-state figure for d.live */
    for (size_t j = 0; j < n; j++) {
        obj_free(live[j]);
        left -= sizes[j];
        if ((j + 1) % 64 == 0)
            series_sample("free", n + replacements + j + 1, left);
    }
    series_sample("free", n + replacements + n, 0);
    /* Everything released: the idle, with no trim call yet (and no allocator call at all). */
    unsigned idle_ms = opt.idle_ms >= 0 ? (unsigned)opt.idle_ms
                       : opt.quick      ? IDLE_QUICK_MS
                                        : IDLE_MS;
    uint64_t rss_idle = idle_ms ? idle_phase(idle_ms, n + replacements + n) : 0;
    if (idle_ms) {
        char when[96];
        snprintf(when, sizeof(when), "rss after free all + %.1f s idle, before the trim",
                 idle_ms / 1e3);
        print_pool_stats(when);
    }
    allocator_trim();
    uint64_t rss1 = proc_status_bytes("VmRSS:");
    series_sample("trim", n + replacements + n, 0);
    series_close();
    printf("d.ratio %.4f\n", worst);
    printf("d.ratio_mean %.4f\n", nsamples ? sum / nsamples : 0.0);
    printf("d.live %.2f\n", mib((double)live_bytes));
    printf("d.start %.2f\n", mib((double)rss0));
    printf("d.hwm %.2f\n", mib((double)hwm));
    if (idle_ms) {
        /* The idle's length first: the driver names d.idle by it (quick mode idles less). */
        printf("d.idle_s %.3f\n", idle_ms / 1e3);
        printf("d.idle %.2f\n", mib((double)rss_idle - (double)rss0));
        if (idle_ms != IDLE_MS)
            printf("# %s idled %.1f s, not the %.0f s of docs/api.md's targets (%s)\n", VARIANT,
                   idle_ms / 1e3, IDLE_MS / 1e3, opt.idle_ms >= 0 ? "--idle" : "quick mode");
    }
    printf("d.after %.2f\n", mib((double)rss1 - (double)rss0));
    free(live);
    free(sizes);
}

/* ---- main ---- */

static void
usage(void)
{
    fprintf(stderr, "usage: bench_alloc_" VARIANT " check|pairs|live|pc|rss [--quick] "
                    "[--iters N] [--size BYTES] [--series FILE] [--idle MS]\n"
                    "  --iters N  fixed count instead of a time budget (for callgrind)\n"
                    "  --series FILE  rss: append the RSS over the trace to FILE (TSV)\n"
                    "  --idle MS  rss: idle after free all, before the trim (default 3000, quick "
                    "500, 0: none)\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            opt.quick = true;
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            opt.iters = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            opt.size = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--series") == 0 && i + 1 < argc)
            opt.series = argv[++i];
        else if (strcmp(argv[i], "--idle") == 0 && i + 1 < argc) {
            char *end;
            long ms = strtol(argv[++i], &end, 10);
            if (end == argv[i] || *end || ms < 0 || ms > IDLE_MAX_MS)
                usage();
            opt.idle_ms = (int)ms;
        } else
            usage();
    }
    const char *env = getenv("NBUF_BENCH_QUICK");
    if (env && *env && strcmp(env, "0") != 0)
        opt.quick = true;
    check_allocator();
    const char *w = argv[1];
    if (strcmp(w, "check") == 0)
        ;
    else if (strcmp(w, "pairs") == 0)
        workload_pairs();
    else if (strcmp(w, "live") == 0)
        workload_live();
    else if (strcmp(w, "pc") == 0)
        workload_pc();
    else if (strcmp(w, "rss") == 0)
        workload_rss();
    else
        usage();
    fflush(stdout);
    return 0;
}
