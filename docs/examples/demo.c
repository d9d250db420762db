/* SPDX-License-Identifier: MIT */
/*
 * nbuf demo: compose protocol frames from a small header and slices of a
 * payload buffer (no copy of the payload), flush them through a socketpair
 * with nbuf_composite_writev, verify every byte on the other side, print the
 * pool's statistics, then time the same framing against the classic
 * malloc + memcpy + write for about five seconds and print a small table.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
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
#define VERIFY_FRAMES 2000

static uint8_t expect_payload[PAYLOAD_SIZE];

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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

struct reader {
    int fd;
    int verify; /* frames to check byte for byte; then just drain */
    size_t slice, nslices;
    _Atomic int stop;
    uint64_t bytes;
    int bad;
};

static void
read_exact(int fd, uint8_t *dst, size_t n)
{
    while (n) {
        ssize_t r = read(fd, dst, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read");
        dst += r;
        n -= (size_t)r;
    }
}

static void *
reader_main(void *arg)
{
    struct reader *rd = arg;
    size_t body = rd->slice * rd->nslices;
    uint8_t *frame = malloc(HEADER_SIZE + body);
    if (!frame)
        die("malloc");
    for (int seq = 0; seq < rd->verify; seq++) {
        read_exact(rd->fd, frame, HEADER_SIZE + body);
        uint32_t len = (uint32_t)frame[0] << 24 | frame[1] << 16 | frame[2] << 8 | frame[3];
        uint32_t got_seq = (uint32_t)frame[4] << 24 | frame[5] << 16 | frame[6] << 8 | frame[7];
        if (len != body || got_seq != (uint32_t)seq) {
            rd->bad++;
            continue;
        }
        for (size_t k = 0; k < rd->nslices; k++) {
            const uint8_t *want =
                expect_payload + slice_offset((uint32_t)seq, (unsigned)k, rd->slice);
            if (memcmp(frame + HEADER_SIZE + k * rd->slice, want, rd->slice) != 0) {
                rd->bad++;
                break;
            }
        }
    }
    free(frame);
    uint8_t sink[65536];
    for (;;) {
        ssize_t r = read(rd->fd, sink, sizeof(sink));
        if (r > 0)
            rd->bytes += (uint64_t)r;
        else if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    return NULL;
}

/* One frame the nbuf way: header copied into pooled tail space, payload
 * slices referenced (each holds the payload buffer alive), one writev. */
static void
send_nbuf(struct nbuf_composite *c, struct nbuf *payload, uint32_t seq, size_t slice,
          size_t nslices, int fd)
{
    uint8_t hdr[HEADER_SIZE];
    uint32_t len = (uint32_t)(slice * nslices);
    hdr[0] = (uint8_t)(len >> 24), hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8), hdr[3] = (uint8_t)len;
    hdr[4] = (uint8_t)(seq >> 24), hdr[5] = (uint8_t)(seq >> 16);
    hdr[6] = (uint8_t)(seq >> 8), hdr[7] = (uint8_t)seq;
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

/* The same frame the classic way: malloc, memcpy header and slices, write. */
static void
send_malloc(const uint8_t *payload, uint32_t seq, size_t slice, size_t nslices, int fd)
{
    size_t body = slice * nslices;
    uint8_t *frame = malloc(HEADER_SIZE + body);
    if (!frame)
        die("malloc");
    uint32_t len = (uint32_t)body;
    frame[0] = (uint8_t)(len >> 24), frame[1] = (uint8_t)(len >> 16);
    frame[2] = (uint8_t)(len >> 8), frame[3] = (uint8_t)len;
    frame[4] = (uint8_t)(seq >> 24), frame[5] = (uint8_t)(seq >> 16);
    frame[6] = (uint8_t)(seq >> 8), frame[7] = (uint8_t)seq;
    for (size_t k = 0; k < nslices; k++)
        memcpy(frame + HEADER_SIZE + k * slice, payload + slice_offset(seq, (unsigned)k, slice),
               slice);
    write_all(fd, frame, HEADER_SIZE + body);
    free(frame);
}

struct run {
    double seconds;
    uint64_t frames;
};

/* Send frames for `budget` seconds with one strategy through a fresh
 * socketpair drained by a reader thread (verifying the first frames). */
static struct run
timed(struct nbuf_pool *pool, struct nbuf *payload, size_t slice, size_t nslices, bool use_nbuf,
      double budget, int verify)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair");
    struct reader rd = {.fd = sv[1], .verify = verify, .slice = slice, .nslices = nslices};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &rd);
    struct nbuf_composite *c = nbuf_composite_new(pool);
    if (!c)
        die("nbuf_composite_new");
    struct run r = {0};
    double start = now();
    uint32_t seq = 0;
    for (;; seq++) {
        if (use_nbuf)
            send_nbuf(c, payload, seq, slice, nslices, sv[0]);
        else
            send_malloc(expect_payload, seq, slice, nslices, sv[0]);
        if ((int)seq + 1 >= verify && (seq & 15) == 15 && now() - start >= budget)
            break;
    }
    r.seconds = now() - start;
    r.frames = seq + 1;
    nbuf_composite_free(c);
    shutdown(sv[0], SHUT_WR);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    if (rd.bad) {
        fprintf(stderr, "demo: %d frames arrived corrupted\n", rd.bad);
        exit(1);
    }
    return r;
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

    /* 1. Correctness: frames of 16 slices of 1 KiB, every byte verified. */
    timed(pool, payload, 1024, 16, true, 0.0, VERIFY_FRAMES);
    printf("demo: %d frames (8 B header + 16 slices of 1 KiB) flushed through a socketpair "
           "with writev and verified byte for byte\n\n",
           VERIFY_FRAMES);
    nbuf_pool_print_stats(pool, stdout, NBUF_FORMAT_TEXT);

    /* 2. Timing against malloc + memcpy + write, alternating. */
    static const size_t slices[] = {64, 1024, 16384};
    const size_t body = 64u << 10;
    double per = total / (2.0 * 3.0);
    printf("\nframe = 8 B header + 64 KiB body in slices of S, %.1f s per cell\n", per);
    printf("|       S | malloc+memcpy+write | nbuf composite writev | speedup |\n");
    printf("|--------:|--------------------:|----------------------:|--------:|\n");
    for (unsigned i = 0; i < 3; i++) {
        size_t n = body / slices[i];
        struct run m = timed(pool, payload, slices[i], n, false, per / 2, 16);
        struct run b = timed(pool, payload, slices[i], n, true, per / 2, 16);
        struct run m2 = timed(pool, payload, slices[i], n, false, per / 2, 16);
        struct run b2 = timed(pool, payload, slices[i], n, true, per / 2, 16);
        double mus_m = (m.seconds + m2.seconds) * 1e6 / (double)(m.frames + m2.frames);
        double mus_b = (b.seconds + b2.seconds) * 1e6 / (double)(b.frames + b2.frames);
        printf("| %5zu B | %10.1f us/frame | %12.1f us/frame | %6.2fx |\n", slices[i], mus_m, mus_b,
               mus_m / mus_b);
    }

    nbuf_release(payload);
    int rc = nbuf_pool_free(pool);
    printf("\nnbuf_pool_free: %d (%s)\n", rc, rc == 0 ? "no buffer leaked" : strerror(-rc));
    return rc == 0 ? 0 : 1;
}
