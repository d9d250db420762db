/* SPDX-License-Identifier: MIT */
/*
 * nbuf demo: a producer thread allocates and fills buffers, a consumer thread
 * checks and releases them (cross-thread release), then the pool's
 * statistics are printed. The full framing demo replaces this (issue 6).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbuf.h>

#define RING 256
#define COUNT 200000

static struct nbuf *_Atomic ring[RING];

static void *
producer(void *arg)
{
    struct nbuf_pool *pool = arg;
    for (uint32_t i = 0; i < COUNT; i++) {
        size_t size = 64u << (i % 8); /* 64 B .. 8 KiB */
        struct nbuf *b = nbuf_alloc(pool, size);
        if (!b) {
            perror("nbuf_alloc");
            exit(1);
        }
        for (size_t k = 0; k + 4 <= size; k += 4)
            nbuf_write(b, &i, 4);
        struct nbuf *expect = NULL;
        while (!atomic_compare_exchange_weak(&ring[i % RING], &expect, b))
            expect = NULL;
    }
    return NULL;
}

static void *
consumer(void *arg)
{
    (void)arg;
    for (uint32_t i = 0; i < COUNT; i++) {
        struct nbuf *b;
        while (!(b = atomic_exchange(&ring[i % RING], NULL)))
            ;
        uint32_t v;
        memcpy(&v, nbuf_data(b), 4);
        if (v != i || nbuf_readable(b) != ((64u << (i % 8)) & ~3u)) {
            fprintf(stderr, "demo: buffer %u corrupted\n", i);
            exit(1);
        }
        nbuf_release(b);
    }
    return NULL;
}

int
main(void)
{
    struct nbuf_pool *pool = nbuf_pool_new(NULL);
    if (!pool) {
        perror("nbuf_pool_new");
        return 1;
    }
    pthread_t pt, ct;
    pthread_create(&pt, NULL, producer, pool);
    pthread_create(&ct, NULL, consumer, NULL);
    pthread_join(pt, NULL);
    pthread_join(ct, NULL);
    printf("demo: %d buffers of 64 B..8 KiB passed from a producer to a consumer thread\n", COUNT);
    nbuf_pool_print_stats(pool, stdout, NBUF_FORMAT_TEXT);
    int rc = nbuf_pool_free(pool);
    printf("nbuf_pool_free: %d\n", rc);
    return rc == 0 ? 0 : 1;
}
