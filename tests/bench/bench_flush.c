/* SPDX-License-Identifier: MIT */
/*
 * Frame flush benchmark: a 16 B header + 64 KiB payload in slices of S bytes
 * sent through a UNIX socketpair drained by a reader thread, by memcpy into
 * one buffer + write, plain writev, libevent's evbuffer (add_reference +
 * evbuffer_write) and an nbuf composite (add_copy + add_slice + writev), in
 * one run, alternating; ns per frame (median of repetitions) and ratios.
 * Then: random nbuf_composite_get over 1..100000 components (the O(log n)
 * curve) and building + freeing a 1000-component composite.
 *
 * Usage: bench_flush [--quick] [--tsv FILE]   (or NBUF_BENCH_QUICK=1)
 *   --tsv FILE: also write every figure as tab-separated records (for tests/bench/report.py):
 *     meta <key> <value>
 *     frame_run <S> <strategy> <repetition> <wall ns/frame> <sending thread CPU ns/frame>
 *     frame <S> <strategy> <median wall ns/frame> <median CPU ns/frame>
 *     get <components> <ns/get>
 *     build <what> <ns per composite> <components> <ns per component>
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <nbuf.h>

#ifdef NBUF_HAVE_LIBEVENT
#include <event2/buffer.h>
#endif

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define HDR 16
#define PAYLOAD (64 * 1024)
#define NSIZES 7
static const size_t sizes[NSIZES] = {16, 64, 256, 1024, 4096, 16384, 65536};

static int quick;
static FILE *tsv; /* --tsv FILE, or NULL */

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

/* ---- the reader thread ---- */

static int sv[2];
static _Atomic uint64_t received;

static void *
reader(void *arg)
{
    (void)arg;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    for (;;) {
        ssize_t r = read(sv[1], buf, cap);
        if (r > 0) {
            atomic_fetch_add_explicit(&received, (uint64_t)r, memory_order_relaxed);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    free(buf);
    return NULL;
}

static void
wait_received(uint64_t target)
{
    while (atomic_load_explicit(&received, memory_order_relaxed) < target)
        ;
}

/* ---- the frame's parts ---- */

static uint8_t header[HDR];
/* Source bytes: slice i of size S comes from offset 2 * i * S, so no two
 * slices are adjacent (adjacent slices would merge into one iovec). */
static uint8_t *src_mem;
static struct nbuf *src_buf;
static size_t
nslices(size_t s)
{
    return PAYLOAD / s;
}
static size_t
slice_off(size_t s, size_t i)
{
    return 2 * i * s;
}

static void
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t r = write(fd, q, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        q += r;
        n -= (size_t)r;
    }
}

/* Strategy 1: memcpy everything into one buffer, one write. */
static uint8_t *flat;
static void
frame_memcpy(size_t s)
{
    size_t o = HDR;
    memcpy(flat, header, HDR);
    for (size_t i = 0; i < nslices(s); i++, o += s)
        memcpy(flat + o, src_mem + slice_off(s, i), s);
    write_all(sv[0], flat, o);
}

/* Strategy 2: plain writev, one iovec per piece, IOV_MAX at a time. */
static struct iovec *iovs;
static void
frame_writev(size_t s)
{
    size_t n = 0;
    iovs[n].iov_base = header;
    iovs[n++].iov_len = HDR;
    for (size_t i = 0; i < nslices(s); i++) {
        iovs[n].iov_base = src_mem + slice_off(s, i);
        iovs[n++].iov_len = s;
    }
    struct iovec *v = iovs;
    while (n) {
        int cnt = n < IOV_MAX ? (int)n : IOV_MAX;
        ssize_t r = writev(sv[0], v, cnt);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("writev");
        }
        size_t w = (size_t)r;
        while (n && w >= v->iov_len) {
            w -= v->iov_len;
            v++;
            n--;
        }
        if (w) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= w;
        }
    }
}

#ifdef NBUF_HAVE_LIBEVENT
/* Strategy 3: libevent evbuffer, references to the slices. */
static struct evbuffer *evb;
static void
frame_evbuffer(size_t s)
{
    evbuffer_add(evb, header, HDR);
    for (size_t i = 0; i < nslices(s); i++)
        evbuffer_add_reference(evb, src_mem + slice_off(s, i), s, NULL, NULL);
    while (evbuffer_get_length(evb))
        if (evbuffer_write(evb, sv[0]) < 0 && errno != EINTR)
            die("evbuffer_write");
}
#endif

/* Strategy 4: an nbuf composite. */
static struct nbuf_composite *comp;
static void
frame_nbuf(size_t s)
{
    if (nbuf_composite_add_copy(comp, header, HDR))
        die("add_copy");
    for (size_t i = 0; i < nslices(s); i++)
        if (nbuf_composite_add_slice(comp, src_buf, slice_off(s, i), s))
            die("add_slice");
    while (nbuf_composite_readable(comp)) {
        ssize_t r = nbuf_composite_writev(comp, sv[0]);
        if (r < 0) {
            errno = (int)-r;
            die("nbuf_composite_writev");
        }
    }
}

/* The same pieces in one call: small ones are copied as they are added. */
static struct iovec *pieces;
static void
frame_nbuf_iov(size_t s)
{
    if (nbuf_composite_add_copy(comp, header, HDR))
        die("add_copy");
    size_t n = nslices(s);
    for (size_t i = 0; i < n; i++) {
        pieces[i].iov_base = src_mem + slice_off(s, i);
        pieces[i].iov_len = s;
    }
    if (nbuf_composite_add_iov(comp, src_buf, pieces, (int)n))
        die("add_iov");
    while (nbuf_composite_readable(comp)) {
        ssize_t r = nbuf_composite_writev(comp, sv[0]);
        if (r < 0) {
            errno = (int)-r;
            die("nbuf_composite_writev");
        }
    }
}

/* Same, with adjacent slices (merged into one component as they come). */
static void
frame_nbuf_adjacent(size_t s)
{
    if (nbuf_composite_add_copy(comp, header, HDR))
        die("add_copy");
    for (size_t i = 0; i < nslices(s); i++)
        if (nbuf_composite_add_slice(comp, src_buf, i * s, s))
            die("add_slice");
    while (nbuf_composite_readable(comp))
        if (nbuf_composite_writev(comp, sv[0]) < 0)
            die("nbuf_composite_writev");
}

struct strategy {
    const char *name;
    void (*frame)(size_t s);
};

static const struct strategy strategies[] = {
    {"memcpy+write", frame_memcpy},
    {"writev", frame_writev},
#ifdef NBUF_HAVE_LIBEVENT
    {"evbuffer", frame_evbuffer},
#endif
    {"nbuf", frame_nbuf},
    {"nbuf-add_iov", frame_nbuf_iov},
    {"nbuf-adjacent", frame_nbuf_adjacent},
};
#define NSTRAT (sizeof(strategies) / sizeof(strategies[0]))

static size_t
strategy_index(const char *name)
{
    for (size_t k = 0; k < NSTRAT; k++)
        if (!strcmp(strategies[k].name, name))
            return k;
    abort();
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t
cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wall ns per frame of @st at slice size @s over @frames frames, and the
 * sending thread's CPU ns per frame (user + kernel: its own work, whatever
 * else the machine runs) in *@cpu. */
static double
run(const struct strategy *st, size_t s, int frames, double *cpu)
{
    uint64_t frame_bytes = HDR + nslices(s) * s;
    uint64_t start_rx = atomic_load(&received);
    uint64_t t0 = now_ns(), c0 = cpu_ns();
    for (int f = 0; f < frames; f++)
        st->frame(s);
    uint64_t c1 = cpu_ns();
    wait_received(start_rx + frame_bytes * (uint64_t)frames);
    if (cpu)
        *cpu = (double)(c1 - c0) / frames;
    return (double)(now_ns() - t0) / frames;
}

static double cpus[NSIZES][NSTRAT];

static void
print_row(size_t s, const double *m)
{
    double best = m[0] < m[1] ? m[0] : m[1];
    size_t nb = strategy_index("nbuf"), ni = strategy_index("nbuf-add_iov");
    printf("%7zu", s);
    for (size_t k = 0; k < NSTRAT; k++)
        printf(" %14.0f", m[k]);
    printf(" | %28.2f %8.2f", m[nb] / best, m[ni] / best);
#ifdef NBUF_HAVE_LIBEVENT
    size_t ne = strategy_index("evbuffer");
    printf(" | %18.2f %8.2f", m[nb] / m[ne], m[ni] / m[ne]);
#endif
    printf("\n");
}

static void
bench_frames(void)
{
    int reps = quick ? 3 : 15, frames = quick ? 200 : 1000;
    printf("Frame flush: %d B header + %d KiB payload in slices of S, UNIX socketpair,\n"
           "reader thread; ns per frame, median of %d runs (strategies alternate).\n\n",
           HDR, PAYLOAD / 1024, reps);
    if (tsv)
        fprintf(tsv, "meta\treps\t%d\nmeta\tframes\t%d\n", reps, frames);
    printf("%7s", "S");
    for (size_t k = 0; k < NSTRAT; k++)
        printf(" %14s", strategies[k].name);
    printf(" | vs best(memcpy,writev): nbuf  add_iov");
#ifdef NBUF_HAVE_LIBEVENT
    printf(" | vs evbuffer: nbuf  add_iov");
#endif
    printf("\n");
    for (int si = 0; si < NSIZES; si++) {
        size_t s = sizes[si];
        double res[NSTRAT][32], cres[NSTRAT][32];
        for (size_t k = 0; k < NSTRAT; k++)
            run(&strategies[k], s, frames / 10 + 1, NULL); /* warm up */
        for (int r = 0; r < reps; r++)
            for (size_t k = 0; k < NSTRAT; k++)
                res[k][r] = run(&strategies[(k + (size_t)r) % NSTRAT], s, frames, &cres[k][r]);
        /* undo the rotation */
        double med[NSTRAT];
        for (size_t k = 0; k < NSTRAT; k++) {
            double v[32], cv[32];
            int n = 0;
            for (int r = 0; r < reps; r++)
                for (size_t j = 0; j < NSTRAT; j++)
                    if ((j + (size_t)r) % NSTRAT == k) {
                        cv[n] = cres[j][r];
                        v[n++] = res[j][r];
                    }
            if (tsv) {
                for (int r = 0; r < n; r++)
                    fprintf(tsv, "frame_run\t%zu\t%s\t%d\t%.1f\t%.1f\n", s, strategies[k].name, r,
                            v[r], cv[r]);
            }
            med[k] = median(v, n);
            cpus[si][k] = median(cv, n);
            if (tsv)
                fprintf(tsv, "frame\t%zu\t%s\t%.1f\t%.1f\n", s, strategies[k].name, med[k],
                        cpus[si][k]);
        }
        print_row(s, med);
        fflush(stdout);
    }
    printf("\nSending thread's CPU time per frame (user + kernel), median: what each strategy\n"
           "costs, whatever else runs on the machine:\n");
    for (int si = 0; si < NSIZES; si++)
        print_row(sizes[si], cpus[si]);
    printf("\n(ratio < 1: nbuf faster. nbuf: one add_slice per slice; nbuf-add_iov: all slices in"
           "\none nbuf_composite_add_iov call; nbuf-adjacent: add_slice of slices laid out back to"
           "\nback, which the composite merges into one component.)\n\n");
}

/* ---- lookup and building ---- */

static uint64_t rng = 88172645463325252ull;
static uint64_t
xrand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void
bench_lookup(void)
{
    printf("Random nbuf_composite_get of 8 bytes at a random offset (components of 16 B):\n");
    printf("%12s %10s\n", "components", "ns/get");
    static const size_t counts[] = {1, 10, 100, 1000, 10000, 100000};
    struct nbuf *b = nbuf_alloc(NULL, 2 * 16 * 100000);
    if (!b)
        die("nbuf_alloc");
    memset(nbuf_reserve(b, 2 * 16 * 100000), 7, 2 * 16 * 100000);
    nbuf_commit(b, 2 * 16 * 100000);
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        struct nbuf_composite *c = nbuf_composite_new(NULL);
        for (size_t i = 0; i < counts[k]; i++)
            if (nbuf_composite_add_slice(c, b, 32 * i, 16))
                die("add_slice");
        size_t total = nbuf_composite_readable(c);
        int iters = quick ? 200000 : 2000000;
        uint64_t sink = 0;
        uint64_t t0 = now_ns();
        for (int i = 0; i < iters; i++) {
            uint64_t v;
            size_t off = (size_t)(xrand() % (total - 7));
            nbuf_composite_get(c, off, &v, 8);
            sink += v;
        }
        double ns = (double)(now_ns() - t0) / iters;
        printf("%12zu %10.1f%s\n", counts[k], ns, sink == 42 ? " " : "");
        if (tsv)
            fprintf(tsv, "get\t%zu\t%.2f\n", counts[k], ns);
        nbuf_composite_free(c);
    }
    nbuf_release(b);
    printf("\n");
}

static void
bench_build(void)
{
    int iters = quick ? 2000 : 20000;
    struct nbuf *b = nbuf_alloc(NULL, 2 * 64 * 1000);
    if (!b)
        die("nbuf_alloc");
    nbuf_commit(b, 2 * 64 * 1000);
    /* (a) 1000 slices of one buffer */
    uint64_t t0 = now_ns();
    for (int it = 0; it < iters; it++) {
        struct nbuf_composite *c = nbuf_composite_new(NULL);
        for (size_t i = 0; i < 1000; i++)
            nbuf_composite_add_slice(c, b, 128 * i, 64);
        nbuf_composite_free(c);
    }
    double a = (double)(now_ns() - t0) / iters;
    /* (b) 1000 fresh pooled buffers of 64 B, each taken by the composite */
    t0 = now_ns();
    for (int it = 0; it < iters; it++) {
        struct nbuf_composite *c = nbuf_composite_new(NULL);
        for (size_t i = 0; i < 1000; i++) {
            struct nbuf *x = nbuf_alloc(NULL, 64);
            nbuf_commit(x, 64);
            nbuf_composite_add(c, x);
        }
        nbuf_composite_free(c);
    }
    double bb = (double)(now_ns() - t0) / iters;
    /* (c) 10 fresh pooled buffers (folly's chain-building figure) */
    int iters10 = iters * 50;
    t0 = now_ns();
    for (int it = 0; it < iters10; it++) {
        struct nbuf_composite *c = nbuf_composite_new(NULL);
        for (size_t i = 0; i < 10; i++) {
            struct nbuf *x = nbuf_alloc(NULL, 64);
            nbuf_commit(x, 64);
            nbuf_composite_add(c, x);
        }
        nbuf_composite_free(c);
    }
    double cc = (double)(now_ns() - t0) / iters10;
    nbuf_release(b);
    printf("Building + freeing a composite:\n");
    printf("  1000 slices of one buffer (add_slice):        %9.0f ns  (%.1f ns/component)\n", a,
           a / 1000);
    printf("  1000 fresh pooled 64 B buffers (alloc + add): %9.0f ns  (%.1f ns/component)\n", bb,
           bb / 1000);
    printf("  10 fresh pooled 64 B buffers (alloc + add):   %9.0f ns  "
           "(folly IOBuf chain of 10: ~160-180 ns published)\n",
           cc);
    if (tsv) {
        fprintf(tsv, "build\tadd_slice\t%.0f\t1000\t%.2f\n", a, a / 1000);
        fprintf(tsv, "build\talloc+add\t%.0f\t1000\t%.2f\n", bb, bb / 1000);
        fprintf(tsv, "build\talloc+add\t%.0f\t10\t%.2f\n", cc, cc / 10);
    }
}

int
main(int argc, char **argv)
{
    const char *tsv_path = NULL;
    quick = getenv("NBUF_BENCH_QUICK") != NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--tsv") && i + 1 < argc)
            tsv_path = argv[++i];
        else {
            fprintf(stderr, "usage: bench_flush [--quick] [--tsv FILE]\n");
            return 2;
        }
    }
    if (tsv_path) {
        tsv = fopen(tsv_path, "w");
        if (!tsv)
            die(tsv_path);
        fprintf(tsv, "# bench_flush --tsv: records described at the top of bench_flush.c\n");
        fprintf(tsv, "meta\tmode\t%s\n", quick ? "quick" : "full");
        fprintf(tsv, "meta\theader\t%d\nmeta\tpayload\t%d\n", HDR, PAYLOAD);
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair");
    /* Room for a few frames in flight, so that the writer measures its own
     * work rather than the reader's wake-up latency (capped by wmem_max). */
    int bufsz = 4 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
    src_buf = nbuf_alloc(NULL, 2 * PAYLOAD + 65536);
    if (!src_buf)
        die("nbuf_alloc");
    src_mem = nbuf_reserve(src_buf, 2 * PAYLOAD);
    for (size_t i = 0; i < 2 * PAYLOAD; i++)
        src_mem[i] = (uint8_t)(i * 131 + 7);
    nbuf_commit(src_buf, 2 * PAYLOAD);
    memset(header, 0xab, HDR);
    flat = malloc(HDR + PAYLOAD);
    iovs = malloc((PAYLOAD / 16 + 1) * sizeof(*iovs));
    pieces = malloc((PAYLOAD / 16 + 1) * sizeof(*pieces));
    comp = nbuf_composite_new(NULL);
#ifdef NBUF_HAVE_LIBEVENT
    evb = evbuffer_new();
#endif
    if (!flat || !iovs || !comp)
        die("setup");
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);

    bench_frames();
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    bench_lookup();
    bench_build();

    nbuf_composite_free(comp);
#ifdef NBUF_HAVE_LIBEVENT
    evbuffer_free(evb);
#endif
    nbuf_release(src_buf);
    free(flat);
    free(iovs);
    free(pieces);
    close(sv[0]);
    close(sv[1]);
    if (tsv && fclose(tsv) != 0)
        die("writing the TSV");
    return 0;
}
