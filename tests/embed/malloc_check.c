/* SPDX-License-Identifier: MIT */
/*
 * Linked with libnbuf (shared or static, as meson builds it), this program
 * checks that its malloc is still the C library's: nbuf must never replace
 * the host's allocator (an unprefixed jemalloc linked in would). Exit 0 when
 * malloc comes from libc and no jemalloc entry point is in the process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, for a parent project that does not set it */
#endif
#include <dlfcn.h>
#include <nbuf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A sanitizer build's malloc is the sanitizer's, in the executable, by
 * design: there only the absence of jemalloc is checked. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

int
main(void)
{
    /* Use nbuf, so the link keeps it. */
    struct nbuf *b = nbuf_alloc(NULL, 1000);
    if (!b || nbuf_write(b, "x", 1) != 0)
        return 1;
    nbuf_release(b);
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    if (!m || !dladdr(m, &info) || !info.dli_fname) {
        fprintf(stderr, "cannot tell where malloc comes from\n");
        return 1;
    }
    if (!SANITIZED && !strstr(info.dli_fname, "libc.so")) {
        fprintf(stderr, "malloc comes from %s, not libc\n", info.dli_fname);
        return 1;
    }
    if (dlsym(RTLD_DEFAULT, "mallctl") || dlsym(RTLD_DEFAULT, "mallocx")) {
        fprintf(stderr, "a jemalloc is linked into the program\n");
        return 1;
    }
    printf("malloc from %s: ok\n", info.dli_fname);
    return 0;
}
