/* SPDX-License-Identifier: MIT */
/*
 * Zero-copy send benchmark (issue 15, point 7): frames of 4 KiB, 64 KiB and
 * 1 MiB, each a composite of slices (16 KiB, or the whole frame if smaller)
 * of one pooled source buffer, sent over loopback TCP to a reader thread
 * that counts the bytes, by
 *   copy          nbuf_composite_writev() (the normal flush: the kernel copies),
 *   SEND_ZC       an nbuf_uring_sender with NBUF_URING_SEND_ZC, up to 8 frames
 *                 unacked, completions reaped with nbuf_uring_run(),
 *   MSG_ZEROCOPY  nbuf_zerocopy_send(), up to 8 frames unacked, completions
 *                 reaped from the error queue with nbuf_zerocopy_reap().
 * Each measurement is a fresh connection (SO_SNDBUF = SO_RCVBUF = 4 MiB,
 * TCP_NODELAY, the same for all) moving ~256 MiB (--quick: ~16 MiB); the
 * strategies alternate within a round, and the table gives medians of the
 * rounds (7; --quick: 1) of throughput (MB/s of payload, until the reader
 * has it all) and of each thread's CPU time (CLOCK_THREAD_CPUTIME_ID, user
 * + kernel) per KiB. The reader checks the byte count of every connection
 * and the bytes of the first frame once per strategy and frame size.
 *
 * Usage: bench_zerocopy [--quick] [--tsv FILE]   (or NBUF_BENCH_QUICK=1)
 *   --tsv FILE: also write every figure as tab-separated records:
 *     meta <key> <value>
 *     zc_run <frame B> <strategy> <round> <MB/s> <tx ns/KiB> <rx ns/KiB> <copied 0/1>
 *     zc <frame B> <strategy> <median MB/s> <median tx ns/KiB> <median rx ns/KiB>
 *        <runs reported copied> <runs>
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <nbuf.h>
#include <nbuf/zerocopy.h>
#if defined(NBUF_HAVE_IO_URING) && NBUF_HAVE_IO_URING
#include <nbuf/uring.h>
#define HAVE_URING 1
#else
#define HAVE_URING 0
#endif

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)
#define SLICE (16 * KiB)
#define SRC_SIZE (2 * MiB) /* slice i at 2 * i * SLICE: no two adjacent */
#define INFLIGHT 8         /* frames unacked at most (both zero-copy kinds) */
#define NSIZES 3
#define NSTRAT 3
#define MAXROUNDS 32
static const size_t sizes[NSIZES] = {4 * KiB, 64 * KiB, MiB};
static const char *const names[NSTRAT] = {"copy", "SEND_ZC", "MSG_ZEROCOPY"};

static int quick;
static FILE *tsv;
static int bufsz = 4 << 20;
static struct nbuf *src_buf;
static uint8_t *src_mem;

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

static void
die_err(const char *what, long neg)
{
    errno = (int)-neg;
    die(what);
}

static uint64_t
clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- frames ---- */

static size_t
slice_len(size_t frame)
{
    return frame < SLICE ? frame : SLICE;
}

static void
build(struct nbuf_composite *c, size_t frame)
{
    size_t s = slice_len(frame);
    for (size_t i = 0; i < frame / s; i++)
        if (nbuf_composite_add_slice(c, src_buf, 2 * i * s, s))
            die("nbuf_composite_add_slice");
}

/* The bytes of a frame, as the reader must see them. */
static uint8_t *
expected_frame(size_t frame)
{
    uint8_t *e = malloc(frame);
    size_t s = slice_len(frame);
    if (!e)
        die("malloc");
    for (size_t i = 0; i < frame / s; i++)
        memcpy(e + i * s, src_mem + 2 * i * s, s);
    return e;
}

/* ---- the reader thread: one per connection ---- */

struct conn {
    int fd;
    uint64_t expect;      /* bytes the sender sends */
    const uint8_t *check; /* the first frame's bytes, or NULL */
    size_t check_len;
    uint64_t got, done_ns, cpu_ns;
    int bad; /* first frame differs */
};

static void *
reader(void *arg)
{
    struct conn *c = arg;
    size_t cap = MiB;
    uint8_t *buf = malloc(cap);
    if (!buf)
        die("malloc");
    uint64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    for (;;) {
        ssize_t r = read(c->fd, buf, cap);
        if (r > 0) {
            if (c->check && c->got < c->check_len) {
                size_t n = c->check_len - c->got < (size_t)r ? c->check_len - c->got : (size_t)r;
                if (memcmp(buf, c->check + c->got, n))
                    c->bad = 1;
            }
            c->got += (uint64_t)r;
            if (c->got >= c->expect && !c->done_ns)
                c->done_ns = clock_ns(CLOCK_MONOTONIC);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read");
        break;
    }
    c->cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    free(buf);
    return NULL;
}

static int lfd = -1;
static struct sockaddr_in laddr;

static void
set_bufs(int fd)
{
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz)) ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz)))
        die("setsockopt SO_SNDBUF/SO_RCVBUF");
}

static void
listen_loopback(void)
{
    socklen_t len = sizeof(laddr);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    set_bufs(lfd); /* inherited by the accepted sockets */
    laddr.sin_family = AF_INET;
    laddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&laddr, sizeof(laddr)) || listen(lfd, 8) ||
        getsockname(lfd, (struct sockaddr *)&laddr, &len))
        die("bind/listen");
}

/* A connected pair: *tx (the sender's), *rx (the reader's). */
static void
connect_pair(int *tx, int *rx)
{
    int one = 1;
    *tx = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*tx < 0)
        die("socket");
    set_bufs(*tx);
    if (connect(*tx, (struct sockaddr *)&laddr, sizeof(laddr)))
        die("connect");
    *rx = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (*rx < 0)
        die("accept");
    setsockopt(*tx, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- the strategies: send @frames frames of @frame bytes on @fd ---- */

struct timing {
    uint64_t t0, c0, c1; /* wall start, CPU start, CPU end (all released) */
    int copied;          /* the kernel reported COPIED (-1: not known) */
};

static void
start(struct timing *t)
{
    t->t0 = clock_ns(CLOCK_MONOTONIC);
    t->c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static int
send_copy(int fd, struct nbuf_composite *c, size_t frame, long frames, struct timing *t)
{
    start(t);
    for (long f = 0; f < frames; f++) {
        build(c, frame);
        while (nbuf_composite_readable(c)) {
            ssize_t r = nbuf_composite_writev(c, fd);
            if (r < 0)
                die_err("nbuf_composite_writev", r);
        }
    }
    t->c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    t->copied = -1;
    return 0;
}

#if HAVE_URING
static struct nbuf_uring *ring;
static int uring_err;

static void
on_sent(void *ctx, ssize_t res)
{
    (void)ctx;
    if (res < 0 && !uring_err)
        uring_err = (int)-res;
}

/* Run the ring until the sender holds at most @limit bytes. */
static void
run_until(struct nbuf_uring_sender *s, size_t limit)
{
    while (nbuf_uring_sender_unacked(s) > limit) {
        int r = nbuf_uring_run(ring, 1, 10000);
        if (r == -EINTR)
            continue;
        if (r < 0)
            die_err("nbuf_uring_run", r);
        if (r == 0) {
            fprintf(stderr, "SEND_ZC: no completion in 10 s\n");
            exit(1);
        }
        if (uring_err)
            die_err("SEND_ZC send", -uring_err);
    }
}

static int
send_uring(int fd, struct nbuf_composite *c, size_t frame, long frames, struct timing *t)
{
    struct nbuf_uring_sender *s =
        ring ? nbuf_uring_sender_new(ring, fd, NBUF_URING_SEND_ZC, on_sent, NULL) : NULL;
    if (!s)
        return -1;
    uring_err = 0;
    start(t);
    for (long f = 0; f < frames; f++) {
        build(c, frame);
        run_until(s, (INFLIGHT - 1) * frame);
        ssize_t r = nbuf_uring_sender_flush(s, c);
        if (r < 0)
            die_err("nbuf_uring_sender_flush", r);
        r = nbuf_uring_run(ring, 0, 0); /* submit, reap what is ready */
        if (r < 0 && r != -EINTR)
            die_err("nbuf_uring_run", r);
    }
    run_until(s, 0);
    t->c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    t->copied = -1; /* the sender does not ask for IORING_SEND_ZC_REPORT_USAGE */
    if (nbuf_uring_sender_free(s))
        die("nbuf_uring_sender_free");
    return 0;
}
#endif

static void
zc_reap(struct nbuf_zerocopy *z, size_t limit)
{
    while (nbuf_zerocopy_pending(z) > limit) {
        int r = nbuf_zerocopy_reap(z, 10000);
        if (r < 0 && r != -EINTR)
            die_err("nbuf_zerocopy_reap", r);
        if (r == 0 && nbuf_zerocopy_pending(z) > limit) {
            fprintf(stderr, "MSG_ZEROCOPY: no completion in 10 s\n");
            exit(1);
        }
    }
}

static int
send_msgzc(int fd, struct nbuf_composite *c, size_t frame, long frames, struct timing *t)
{
    struct nbuf_zerocopy *z = nbuf_zerocopy_new(fd);
    if (!z)
        return -1;
    start(t);
    for (long f = 0; f < frames; f++) {
        build(c, frame);
        for (;;) {
            ssize_t r = nbuf_zerocopy_send(z, c);
            if (r == 0)
                break;
            if (r == -ENOBUFS) /* too many completions waiting */
                zc_reap(z, nbuf_zerocopy_pending(z) / 2);
            else if (r < 0 && r != -EINTR)
                die_err("nbuf_zerocopy_send", r);
        }
        if (nbuf_zerocopy_pending(z) && nbuf_zerocopy_reap(z, 0) < 0)
            die("nbuf_zerocopy_reap");
        zc_reap(z, (INFLIGHT - 1) * frame);
    }
    zc_reap(z, 0);
    t->c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    t->copied = nbuf_zerocopy_copied(z);
    if (nbuf_zerocopy_free(z))
        die("nbuf_zerocopy_free");
    return 0;
}

typedef int (*send_fn)(int, struct nbuf_composite *, size_t, long, struct timing *);
static send_fn senders[NSTRAT] = {
    send_copy,
#if HAVE_URING
    send_uring,
#else
    NULL,
#endif
    send_msgzc,
};
static const char *skipped[NSTRAT]; /* why a strategy does not run */

/* ---- measuring ---- */

struct meas {
    double mbps, tx, rx; /* MB/s; CPU ns per KiB of the sender, the reader */
    int copied;
};

static int
measure(int k, size_t frame, long frames, const uint8_t *check, struct meas *m)
{
    int tx, rx;
    connect_pair(&tx, &rx);
    struct conn cn = {.fd = rx, .expect = (uint64_t)frame * (uint64_t)frames};
    if (check) {
        cn.check = check;
        cn.check_len = frame;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, reader, &cn))
        die("pthread_create");
    struct nbuf_composite *c = nbuf_composite_new(NULL);
    if (!c)
        die("nbuf_composite_new");
    struct timing t;
    int rc = senders[k](tx, c, frame, frames, &t);
    if (rc < 0 && !skipped[k])
        skipped[k] = strerror(errno);
    shutdown(tx, SHUT_WR);
    pthread_join(th, NULL);
    nbuf_composite_free(c);
    close(tx);
    close(rx);
    if (rc < 0)
        return -1;
    if (cn.got != cn.expect || cn.bad) {
        fprintf(stderr, "%s, %zu B frames: received %llu of %llu bytes%s\n", names[k], frame,
                (unsigned long long)cn.got, (unsigned long long)cn.expect,
                cn.bad ? ", first frame differs" : "");
        exit(1);
    }
    double kib = (double)cn.expect / KiB;
    m->mbps = (double)cn.expect / 1e6 / ((double)(cn.done_ns - t.t0) / 1e9);
    m->tx = (double)(t.c1 - t.c0) / kib;
    m->rx = (double)cn.cpu_ns / kib;
    m->copied = t.copied;
    return 0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
median(const double *in, int n)
{
    double v[MAXROUNDS];
    memcpy(v, in, (size_t)n * sizeof(*v));
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void
loadavg(char *out, size_t n)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (!f || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(out, n, "unknown");
    else
        snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
    if (f)
        fclose(f);
}

static void
probe_uring(void)
{
#if HAVE_URING
    ring = nbuf_uring_new(64);
    if (!ring) {
        skipped[1] = strerror(errno);
        return;
    }
    int tx, rx;
    connect_pair(&tx, &rx);
    struct nbuf_uring_sender *s = nbuf_uring_sender_new(ring, tx, NBUF_URING_SEND_ZC, NULL, NULL);
    if (!s)
        skipped[1] = strerror(errno);
    else if (nbuf_uring_sender_free(s))
        die("nbuf_uring_sender_free");
    close(tx);
    close(rx);
#else
    skipped[1] = "built without liburing (meson feature io_uring)";
#endif
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
            fprintf(stderr, "usage: bench_zerocopy [--quick] [--tsv FILE]\n");
            return 2;
        }
    }
    int rounds = quick ? 1 : 7;
    size_t target = quick ? 16 * MiB : 256 * MiB;
    char load0[64], load1[64];
    loadavg(load0, sizeof(load0));

    src_buf = nbuf_alloc(NULL, SRC_SIZE);
    if (!src_buf)
        die("nbuf_alloc");
    src_mem = nbuf_reserve(src_buf, SRC_SIZE);
    for (size_t i = 0; i < SRC_SIZE; i++)
        src_mem[i] = (uint8_t)(i * 131 + (i >> 12) + 7);
    nbuf_commit(src_buf, SRC_SIZE);
    listen_loopback();
    probe_uring();

    int sndbuf = 0, rcvbuf = 0, tx, rx;
    socklen_t sl = sizeof(int);
    connect_pair(&tx, &rx);
    getsockopt(tx, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl);
    sl = sizeof(int);
    getsockopt(rx, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &sl);
    close(tx);
    close(rx);
    struct utsname u;
    uname(&u);

    printf("Zero-copy send: frames of slices of one pooled buffer over loopback TCP (127.0.0.1)\n"
           "to a reader thread; Linux %s; SO_SNDBUF %d, SO_RCVBUF %d (as the kernel reports\n"
           "them); up to %d frames unacked for SEND_ZC and MSG_ZEROCOPY; ~%zu MiB per\n"
           "measurement, median of %d round%s (strategies alternate); %s mode;\n"
           "load average %s at the start.\n\n",
           u.release, sndbuf, rcvbuf, INFLIGHT, target / MiB, rounds, rounds > 1 ? "s" : "",
           quick ? "quick" : "full", load0);
    for (int k = 0; k < NSTRAT; k++)
        if (skipped[k])
            printf("%s: skipped (%s)\n\n", names[k], skipped[k]);
    if (tsv_path) {
        tsv = fopen(tsv_path, "w");
        if (!tsv)
            die(tsv_path);
        fprintf(tsv, "# bench_zerocopy --tsv: records described at the top of bench_zerocopy.c\n");
        fprintf(tsv, "meta\tmode\t%s\nmeta\trounds\t%d\nmeta\tbytes\t%zu\n",
                quick ? "quick" : "full", rounds, target);
        fprintf(tsv, "meta\tkernel\t%s\nmeta\tsndbuf\t%d\nmeta\trcvbuf\t%d\n", u.release, sndbuf,
                rcvbuf);
        for (int k = 0; k < NSTRAT; k++)
            if (skipped[k])
                fprintf(tsv, "meta\tskipped\t%s: %s\n", names[k], skipped[k]);
    }

    static struct meas res[NSIZES][NSTRAT][MAXROUNDS];
    for (int si = 0; si < NSIZES; si++) {
        size_t frame = sizes[si];
        long frames = (long)(target / frame);
        uint8_t *check = expected_frame(frame);
        struct meas warm;
        for (int k = 0; k < NSTRAT; k++) /* warm up; the first frame checked here */
            if (!skipped[k] && measure(k, frame, frames / 8 + 1, check, &warm))
                printf("%s: skipped (%s)\n", names[k], skipped[k]);
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < NSTRAT; j++) {
                int k = (j + r) % NSTRAT;
                if (!skipped[k] && measure(k, frame, frames, NULL, &res[si][k][r]))
                    printf("%s: skipped (%s)\n", names[k], skipped[k]);
            }
        free(check);
    }
    loadavg(load1, sizeof(load1));

    printf("| frame | strategy | MB/s | sender CPU ns/KiB | reader CPU ns/KiB | MB/s vs copy | "
           "sender CPU vs copy | kernel reported COPIED |\n"
           "|---:|---|---:|---:|---:|---:|---:|---|\n");
    for (int si = 0; si < NSIZES; si++) {
        double base_mbps = 0, base_tx = 0;
        for (int k = 0; k < NSTRAT; k++) {
            char fr[16];
            snprintf(fr, sizeof(fr), sizes[si] >= MiB ? "%zu MiB" : "%zu KiB",
                     sizes[si] >= MiB ? sizes[si] / MiB : sizes[si] / KiB);
            if (skipped[k]) {
                printf("| %s | %s | skipped | | | | | |\n", fr, names[k]);
                continue;
            }
            double mb[MAXROUNDS], tx_[MAXROUNDS], rx_[MAXROUNDS];
            int ncopied = 0, nknown = 0;
            for (int r = 0; r < rounds; r++) {
                const struct meas *m = &res[si][k][r];
                mb[r] = m->mbps;
                tx_[r] = m->tx;
                rx_[r] = m->rx;
                nknown += m->copied >= 0;
                ncopied += m->copied > 0;
                if (tsv)
                    fprintf(tsv, "zc_run\t%zu\t%s\t%d\t%.1f\t%.2f\t%.2f\t%d\n", sizes[si], names[k],
                            r, m->mbps, m->tx, m->rx, m->copied);
            }
            double mm = median(mb, rounds), mt = median(tx_, rounds), mr = median(rx_, rounds);
            if (k == 0) {
                base_mbps = mm;
                base_tx = mt;
            }
            char cp[48];
            if (nknown)
                snprintf(cp, sizeof(cp), "%d of %d runs", ncopied, rounds);
            else
                snprintf(cp, sizeof(cp), k == 0 ? "(copies by design)" : "not reported");
            printf("| %s | %s | %.0f | %.1f | %.1f | %.2f | %.2f | %s |\n", fr, names[k], mm, mt,
                   mr, base_mbps > 0 ? mm / base_mbps : 0, base_tx > 0 ? mt / base_tx : 0, cp);
            if (tsv)
                fprintf(tsv, "zc\t%zu\t%s\t%.1f\t%.2f\t%.2f\t%d\t%d\n", sizes[si], names[k], mm, mt,
                        mr, nknown ? ncopied : -1, rounds);
        }
    }
    printf("\nLoad average %s at the end. MB/s: payload bytes until the reader has them all.\n"
           "CPU ns/KiB: CLOCK_THREAD_CPUTIME_ID (user + kernel) of the sending thread around\n"
           "its loop (building frames, sending, reaping until every slice is released), and of\n"
           "the reader thread. On loopback the kernel cannot hand pinned pages to a local\n"
           "receiver: it copies them on delivery, so zero-copy only adds pinning and\n"
           "completions here. MSG_ZEROCOPY: the kernel then reports SO_EE_CODE_ZEROCOPY_COPIED\n"
           "and nbuf_zerocopy switches the socket to plain sendmsg (the COPIED column: runs\n"
           "in which it was reported); SEND_ZC: the sender does not ask for the kernel's\n"
           "report (IORING_SEND_ZC_REPORT_USAGE), so it keeps paying for zero-copy.\n",
           load1);
#if HAVE_URING
    if (ring && nbuf_uring_free(ring))
        die("nbuf_uring_free");
#endif
    nbuf_release(src_buf);
    close(lfd);
    if (tsv && fclose(tsv) != 0)
        die("writing the TSV");
    return 0;
}
