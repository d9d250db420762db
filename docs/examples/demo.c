/* SPDX-License-Identifier: MIT */
/*
 * nbuf demo: compose protocol frames from a small header and slices of a
 * payload buffer, flush them through a socketpair with nbuf_composite_writev,
 * verify the bytes on the other side, print the pool's statistics, then time
 * the same framing against the classic malloc + memcpy + write and print a
 * small table.
 *
 * The timing is a fair race: both ways build the same frames (the reader
 * checks every header and, byte for byte, the first bodies of every round
 * and one in SAMPLE_EVERY after), through the same socketpair, in rounds that
 * alternate between the two; a round ends when the reader has every byte.
 * The table shows the median round of each way, and as the speedup the
 * median of the ratios of neighbouring rounds (a busy machine slows both
 * rounds of a pair alike).
 *
 * The nbuf way is the one composite.h recommends: the header with
 * nbuf_composite_add_copy, each slice with nbuf_composite_add_slice (which
 * copies slices of at most NBUF_COMPOSITE_COPY_MAX bytes into the
 * composite's pooled tail and references longer ones). For slices of at most
 * TINY_SLICE bytes a call per slice costs more than copying the slice, so
 * there the nbuf way copies them into one pooled buffer itself; the demo
 * times add_slice per slice too and prints it under the table.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nbuf.h>

#define PAYLOAD_SIZE (256u << 10)
#define HEADER_SIZE 8
#define BODY_SIZE (64u << 10)
#define VERIFY_FRAMES 2000
#define FIRST_CHECKED 8 /* bodies checked at the start of each round */
#define SAMPLE_EVERY 64 /* and then one in this many */
#define MAX_ROUNDS 256

static uint8_t expect_payload[PAYLOAD_SIZE];

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

/* Frame seq: header (u32 body length, u32 seq, big-endian) then `nslices`
 * slices of `slice` bytes taken from the payload at a seq-dependent offset. */
static size_t
slice_offset(uint32_t seq, unsigned k, size_t slice)
{
    return ((size_t)seq * 7919 + (size_t)k * 104729) % (PAYLOAD_SIZE - slice);
}

static void
put_header(uint8_t *hdr, uint32_t len, uint32_t seq)
{
    hdr[0] = (uint8_t)(len >> 24), hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8), hdr[3] = (uint8_t)len;
    hdr[4] = (uint8_t)(seq >> 24), hdr[5] = (uint8_t)(seq >> 16);
    hdr[6] = (uint8_t)(seq >> 8), hdr[7] = (uint8_t)seq;
}

static void
write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, -1);
            continue;
        }
        if (w < 0)
            die("write");
        b += w;
        n -= (size_t)w;
    }
}

/* Flush a composite completely, waiting for the socket when it is full. */
static void
flush_all(struct nbuf_composite *c, int fd)
{
    while (nbuf_composite_readable(c)) {
        ssize_t w = nbuf_composite_writev(c, fd);
        if (w == -EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, -1);
        } else if (w < 0) {
            errno = (int)-w;
            die("nbuf_composite_writev");
        }
    }
}

/* The receiving side of one connection: reads frame after frame, checks
 * each header and the sampled bodies, and counts what arrived. */
struct reader {
    int fd;
    size_t slice, nslices;
    _Atomic uint32_t check_from; /* frames from here on have their body checked */
    _Atomic uint64_t frames;     /* frames received so far */
    int bad;
};

/* Read one frame of @n bytes; false at the end of the stream. */
static bool
read_frame(int fd, uint8_t *dst, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, dst + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 && got == 0)
            return false;
        if (r <= 0)
            die("read");
        got += (size_t)r;
    }
    return true;
}

static bool
frame_ok(const struct reader *rd, const uint8_t *frame, uint32_t seq, bool body)
{
    uint32_t len = (uint32_t)frame[0] << 24 | frame[1] << 16 | frame[2] << 8 | frame[3];
    uint32_t got = (uint32_t)frame[4] << 24 | frame[5] << 16 | frame[6] << 8 | frame[7];
    if (len != rd->slice * rd->nslices || got != seq)
        return false;
    for (size_t k = 0; body && k < rd->nslices; k++) {
        const uint8_t *want = expect_payload + slice_offset(seq, (unsigned)k, rd->slice);
        if (memcmp(frame + HEADER_SIZE + k * rd->slice, want, rd->slice) != 0)
            return false;
    }
    return true;
}

static void *
reader_main(void *arg)
{
    struct reader *rd = arg;
    size_t size = HEADER_SIZE + rd->slice * rd->nslices;
    uint8_t *frame = malloc(size);
    if (!frame)
        die("malloc");
    for (uint32_t seq = 0; read_frame(rd->fd, frame, size); seq++) {
        uint32_t from = atomic_load(&rd->check_from);
        bool body = seq - from < FIRST_CHECKED || seq % SAMPLE_EVERY == 0;
        if (!frame_ok(rd, frame, seq, body))
            rd->bad++;
        atomic_store(&rd->frames, (uint64_t)seq + 1);
    }
    free(frame);
    return NULL;
}

/* One connection: a socketpair whose far end a reader thread drains. */
struct conn {
    int fd;
    int sv[2];
    pthread_t thread;
    struct reader rd;
    uint32_t seq; /* the next frame's */
};

static void
conn_open(struct conn *cn, size_t slice, size_t nslices)
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, cn->sv) != 0)
        die("socketpair");
    cn->fd = cn->sv[0];
    cn->seq = 0;
    cn->rd = (struct reader){.fd = cn->sv[1], .slice = slice, .nslices = nslices};
    if (pthread_create(&cn->thread, NULL, reader_main, &cn->rd) != 0)
        die("pthread_create");
}

static void
conn_close(struct conn *cn)
{
    shutdown(cn->fd, SHUT_WR);
    pthread_join(cn->thread, NULL);
    close(cn->sv[0]);
    close(cn->sv[1]);
    if (cn->rd.bad) {
        fprintf(stderr, "demo: %d frames arrived corrupted\n", cn->rd.bad);
        exit(1);
    }
}

/* Wait until the reader has every frame sent so far. */
static void
conn_wait(struct conn *cn)
{
    while (atomic_load(&cn->rd.frames) < cn->seq)
        sched_yield();
}

/* The ways of sending a frame. */
enum way { WAY_MALLOC, WAY_NBUF, WAY_NBUF_BODY, NWAYS };

/* Slices of at most this many bytes cost more to add one call at a time
 * than to copy (a call to add_slice, checks included, about 4 ns; a memcpy
 * of 64 bytes about 2 ns, measured), so the nbuf way copies them into one
 * pooled buffer itself: the copy add_slice would make, without the call. */
#define TINY_SLICE 64

/* One frame the nbuf way: header copied into pooled tail space, payload
 * slices added with nbuf_composite_add_slice (slices of at most
 * NBUF_COMPOSITE_COPY_MAX bytes are copied into the composite's pooled tail,
 * longer ones referenced, each run of them holding the payload buffer
 * alive), one gathering write. */
static void
send_nbuf(struct nbuf_composite *c, struct nbuf *payload, uint32_t seq, size_t slice,
          size_t nslices, int fd)
{
    uint8_t hdr[HEADER_SIZE];
    put_header(hdr, (uint32_t)(slice * nslices), seq);
    if (nbuf_composite_add_copy(c, hdr, sizeof(hdr)) != 0)
        die("nbuf_composite_add_copy");
    for (size_t k = 0; k < nslices; k++) {
        int err =
            nbuf_composite_add_slice(c, payload, slice_offset(seq, (unsigned)k, slice), slice);
        if (err) {
            errno = -err;
            die("nbuf_composite_add_slice");
        }
    }
    flush_all(c, fd);
}

/* One frame of tiny slices the nbuf way: header copied into pooled tail
 * space, the slices copied into one pooled body buffer that the composite
 * takes, one gathering write. */
static void
send_nbuf_body(struct nbuf_composite *c, struct nbuf_pool *pool, const struct nbuf *payload,
               uint32_t seq, size_t slice, size_t nslices, int fd)
{
    uint8_t hdr[HEADER_SIZE];
    size_t body = slice * nslices;
    put_header(hdr, (uint32_t)body, seq);
    if (nbuf_composite_add_copy(c, hdr, sizeof(hdr)) != 0)
        die("nbuf_composite_add_copy");
    struct nbuf *b = nbuf_alloc(pool, body);
    uint8_t *p = b ? nbuf_reserve(b, body) : NULL;
    if (!p)
        die("nbuf_alloc");
    const uint8_t *src = nbuf_data(payload);
    for (size_t k = 0; k < nslices; k++)
        memcpy(p + k * slice, src + slice_offset(seq, (unsigned)k, slice), slice);
    if (nbuf_commit(b, body) != 0 || nbuf_composite_add(c, b) != 0)
        die("nbuf_composite_add");
    flush_all(c, fd);
}

/* The same frame the classic way: malloc, memcpy header and slices, write. */
static void
send_malloc(const uint8_t *payload, uint32_t seq, size_t slice, size_t nslices, int fd)
{
    size_t body = slice * nslices;
    uint8_t *frame = malloc(HEADER_SIZE + body);
    if (!frame)
        die("malloc");
    put_header(frame, (uint32_t)body, seq);
    for (size_t k = 0; k < nslices; k++)
        memcpy(frame + HEADER_SIZE + k * slice, payload + slice_offset(seq, (unsigned)k, slice),
               slice);
    write_all(fd, frame, HEADER_SIZE + body);
    free(frame);
}

struct side {
    double us[MAX_ROUNDS];  /* per frame delivered, each round */
    double cpu[MAX_ROUNDS]; /* the sending thread's CPU per frame */
    int rounds;
};

/* One round: frames sent one way for `budget` seconds, then timed until the
 * reader has them all. */
static void
round_run(struct conn *cn, struct nbuf_composite *c, struct nbuf_pool *pool, struct nbuf *payload,
          enum way way, double budget, struct side *out)
{
    size_t slice = cn->rd.slice, nslices = cn->rd.nslices;
    atomic_store(&cn->rd.check_from, cn->seq);
    double start = now(), cpu = thread_cpu();
    uint32_t first = cn->seq;
    do {
        for (int k = 0; k < 8; k++, cn->seq++) {
            if (way == WAY_NBUF)
                send_nbuf(c, payload, cn->seq, slice, nslices, cn->fd);
            else if (way == WAY_NBUF_BODY)
                send_nbuf_body(c, pool, payload, cn->seq, slice, nslices, cn->fd);
            else
                send_malloc(expect_payload, cn->seq, slice, nslices, cn->fd);
        }
    } while (now() - start < budget);
    double sent_cpu = thread_cpu() - cpu;
    conn_wait(cn);
    double frames = (double)(cn->seq - first);
    if (out && out->rounds < MAX_ROUNDS) {
        out->us[out->rounds] = (now() - start) * 1e6 / frames;
        out->cpu[out->rounds++] = sent_cpu * 1e6 / frames;
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (0.5: the median) of v[0, n). Sorts v. */
static double
quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[(int)(q * (n - 1) + 0.5)];
}

int
main(int argc, char **argv)
{
    double total = argc > 1 ? atof(argv[1]) : 5.0; /* seconds of timing */
    struct nbuf_pool *pool = nbuf_pool_new(NULL);
    if (!pool)
        die("nbuf_pool_new");

    /* The payload: one pooled buffer, filled once, sliced many times. */
    struct nbuf *payload = nbuf_alloc(pool, PAYLOAD_SIZE);
    if (!payload)
        die("nbuf_alloc");
    for (size_t i = 0; i < PAYLOAD_SIZE; i++)
        expect_payload[i] = (uint8_t)(i * 131 + (i >> 9));
    if (nbuf_write(payload, expect_payload, PAYLOAD_SIZE) != 0)
        die("nbuf_write");
    struct nbuf_composite *c = nbuf_composite_new(pool);
    if (!c)
        die("nbuf_composite_new");

    /* 1. Correctness: frames of 16 slices of 1 KiB, every byte verified. */
    struct conn cn;
    conn_open(&cn, 1024, 16);
    for (uint32_t i = 0; i < VERIFY_FRAMES; i++, cn.seq++)
        send_nbuf(c, payload, cn.seq, 1024, 16, cn.fd);
    conn_wait(&cn);
    conn_close(&cn);
    printf("demo: %d frames (8 B header + 16 slices of 1 KiB) flushed through a socketpair "
           "with writev and verified\n\n",
           VERIFY_FRAMES);
    nbuf_pool_print_stats(pool, stdout, NBUF_FORMAT_TEXT);

    /* 2. Timing against malloc + memcpy + write, in alternating rounds. For
     * tiny slices the table's nbuf way is the pooled body buffer, and
     * add_slice per slice is timed too, for the note below the table. */
    static const size_t slices[] = {64, 1024, 16384};
    enum { NROWS = sizeof(slices) / sizeof(slices[0]) };
    int nways[NROWS], total_ways = 0;
    for (int i = 0; i < NROWS; i++)
        total_ways += nways[i] = slices[i] <= TINY_SLICE ? 3 : 2;
    const double round_s = 0.02;
    int rounds = (int)(total / total_ways / round_s);
    if (rounds < 3)
        rounds = 3;
    if (rounds > MAX_ROUNDS)
        rounds = MAX_ROUNDS;
    double per = total / total_ways / rounds;
    printf("\nframe = 8 B header + 64 KiB body in slices of S; %d rounds of %.0f ms each way, "
           "alternating, every frame's header and a sample of bodies checked; us/frame: the "
           "median round, speedup: the median over rounds of malloc's time / nbuf's in the "
           "round next to it\n",
           rounds, per * 1e3);
    printf("|       S | malloc+memcpy+write | nbuf composite writev | speedup | nbuf composes "
           "the body from  |\n");
    printf("|--------:|--------------------:|----------------------:|--------:|:------------"
           "-----------------|\n");
    static struct side sides[NWAYS];
    static double pair[MAX_ROUNDS];
    double med[NROWS][NWAYS], speedup[NROWS][NWAYS], spread[NROWS][NWAYS], cpu[NROWS][NWAYS];
    enum way table_way[NROWS];
    for (int i = 0; i < NROWS; i++) {
        size_t n = BODY_SIZE / slices[i];
        enum way ways[3] = {WAY_MALLOC, WAY_NBUF, WAY_NBUF_BODY};
        table_way[i] = nways[i] == 3 ? WAY_NBUF_BODY : WAY_NBUF;
        conn_open(&cn, slices[i], n);
        memset(sides, 0, sizeof(sides));
        for (int w = 0; w < nways[i]; w++) /* warm-up, not counted */
            round_run(&cn, c, pool, payload, ways[w], per / 4, NULL);
        for (int r = 0; r < rounds; r++)
            for (int w = 0; w < nways[i]; w++) /* alternate: ABAB... */
                round_run(&cn, c, pool, payload, ways[w], per, &sides[ways[w]]);
        conn_close(&cn);
        /* Ratios of neighbouring rounds first (a busy machine slows both
         * alike), then the medians (quantile sorts). */
        for (int w = 1; w < nways[i]; w++) {
            struct side *m = &sides[WAY_MALLOC], *sd = &sides[ways[w]];
            for (int r = 0; r < rounds; r++)
                pair[r] = m->us[r] / sd->us[r];
            speedup[i][ways[w]] = quantile(pair, rounds, 0.5);
            /* Half the interquartile range of the ratios. */
            spread[i][ways[w]] = (quantile(pair, rounds, 0.75) - quantile(pair, rounds, 0.25)) / 2;
        }
        for (int w = 0; w < nways[i]; w++) {
            struct side *sd = &sides[ways[w]];
            med[i][ways[w]] = quantile(sd->us, sd->rounds, 0.5);
            cpu[i][ways[w]] = quantile(sd->cpu, sd->rounds, 0.5);
        }
        const char *how = table_way[i] == WAY_NBUF_BODY          ? "one pooled buffer (memcpy)"
                          : slices[i] <= NBUF_COMPOSITE_COPY_MAX ? "add_slice: copied to the tail"
                                                                 : "add_slice: referenced";
        printf("| %5zu B | %10.1f us/frame | %12.1f us/frame | %6.2fx | %-29s |\n", slices[i],
               med[i][WAY_MALLOC], med[i][table_way[i]], speedup[i][table_way[i]], how);
    }
    for (int i = 0; i < NROWS; i++) {
        if (table_way[i] != WAY_NBUF_BODY)
            continue;
        printf("\n%zu B slices: nbuf copies them into one pooled buffer (nbuf_alloc, "
               "nbuf_reserve, memcpy, then nbuf_composite_add), the copy "
               "nbuf_composite_add_slice would make of each without a call per slice. With "
               "one nbuf_composite_add_slice per slice: %.1f us/frame (%.2fx), since a call "
               "costs more than copying %zu bytes.\n",
               slices[i], med[i][WAY_NBUF], speedup[i][WAY_NBUF], slices[i]);
    }
    for (int i = 0; i < NROWS; i++) {
        enum way w = table_way[i];
        if (speedup[i][w] >= 1.0)
            continue;
        printf("\nnbuf loses the %zu B row by %.0f%%: ", slices[i], (1 / speedup[i][w] - 1) * 100);
        if (1 - speedup[i][w] < spread[i][w])
            printf("less than the spread of its rounds (+-%.2f): a busy machine, run it again "
                   "on a quiet one\n",
                   spread[i][w]);
        else if (cpu[i][w] > cpu[i][WAY_MALLOC])
            printf("its sending thread used more CPU per frame (%.1f us, malloc+memcpy+write "
                   "%.1f us): composing %zu slices costs more than the copy it saves\n",
                   cpu[i][w], cpu[i][WAY_MALLOC], BODY_SIZE / slices[i]);
        else
            printf("its sending thread used less CPU per frame (%.1f us, malloc+memcpy+write "
                   "%.1f us) but waited longer on the socket and the reader\n",
                   cpu[i][w], cpu[i][WAY_MALLOC]);
    }

    nbuf_composite_free(c);
    nbuf_release(payload);
    int rc = nbuf_pool_free(pool);
    printf("\nnbuf_pool_free: %d (%s)\n", rc, rc == 0 ? "no buffer leaked" : strerror(-rc));
    return rc == 0 ? 0 : 1;
}
