/* SPDX-License-Identifier: MIT */
/*
 * A plugin host: dlopen()s libnbuf.so (argv[1]) at run time, as a language
 * binding or a plugin loader would, and uses it through dlsym. Exit 0 when
 * the library loads (no "cannot allocate memory in static TLS block") and a
 * buffer round-trips on the default pool and on a pool of its own.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

struct nbuf;
struct nbuf_pool;

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s path/to/libnbuf.so\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    struct nbuf *(*alloc)(struct nbuf_pool *, size_t) =
        (struct nbuf * (*)(struct nbuf_pool *, size_t)) dlsym(lib, "nbuf_alloc");
    int (*release)(struct nbuf *) = (int (*)(struct nbuf *))dlsym(lib, "nbuf_release");
    int (*append)(struct nbuf *, const void *, size_t) =
        (int (*)(struct nbuf *, const void *, size_t))dlsym(lib, "nbuf_write");
    const void *(*data)(const struct nbuf *) =
        (const void *(*)(const struct nbuf *))dlsym(lib, "nbuf_data");
    struct nbuf_pool *(*pool_new)(const void *) =
        (struct nbuf_pool * (*)(const void *)) dlsym(lib, "nbuf_pool_new");
    int (*pool_free)(struct nbuf_pool *) =
        (int (*)(struct nbuf_pool *))dlsym(lib, "nbuf_pool_free");
    if (!alloc || !release || !append || !data || !pool_new || !pool_free) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    struct nbuf_pool *own = pool_new(NULL);
    struct nbuf_pool *pools[] = {NULL, own};
    for (unsigned i = 0; i < 2; i++) {
        for (unsigned k = 0; k < 1000; k++) {
            struct nbuf *b = alloc(pools[i], 100 + k * 70);
            if (!b || append(b, "plugin", 6) != 0 || memcmp(data(b), "plugin", 6) != 0) {
                fprintf(stderr, "round trip %u/%u failed\n", i, k);
                return 1;
            }
            release(b);
        }
    }
    if (!own || pool_free(own) != 0) {
        fprintf(stderr, "own pool\n");
        return 1;
    }
    printf("dlopen %s: ok\n", argv[1]);
    return 0;
}
