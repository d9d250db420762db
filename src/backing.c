/* SPDX-License-Identifier: MIT */
/*
 * The backing: where chunks and huge buffers come from. The only file that
 * talks to jemalloc or mmap. Three kinds: a dedicated jemalloc arena (one per
 * process, shared by all pools, aligned mallocx without tcache so chunks never
 * sit in jemalloc's caches), anonymous mmap (optionally MADV_HUGEPAGE), or the
 * user's callbacks. A countdown lets tests make the Nth call fail.
 * Layer: backing; calls only the system (jemalloc, mmap, madvise).
 */
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifdef NBUF_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

static unsigned jemalloc_arena;
static int jemalloc_arena_err;
static pthread_once_t jemalloc_once = PTHREAD_ONCE_INIT;

static void
jemalloc_arena_create(void)
{
    size_t sz = sizeof(jemalloc_arena);
    jemalloc_arena_err = mallctl("arenas.create", &jemalloc_arena, &sz, NULL, 0);
}

static int
jemalloc_flags(size_t align)
{
    return MALLOCX_ALIGN(align) | MALLOCX_ARENA(jemalloc_arena) | MALLOCX_TCACHE_NONE;
}
#endif

bool
nbuf_backing_has_jemalloc_(void)
{
#ifdef NBUF_HAVE_JEMALLOC
    return true;
#else
    return false;
#endif
}

int
nbuf_backing_init_(struct nbuf_backing *bk, const struct nbuf_pool_config *cfg)
{
    memset(bk, 0, sizeof(*bk));
    bk->kind = cfg->backing;
    bk->huge_pages = cfg->huge_pages;
    switch (cfg->backing) {
    case NBUF_BACKING_JEMALLOC:
#ifdef NBUF_HAVE_JEMALLOC
        pthread_once(&jemalloc_once, jemalloc_arena_create);
        return jemalloc_arena_err ? -ENOMEM : 0;
#else
        return -EINVAL;
#endif
    case NBUF_BACKING_MMAP: return 0;
    case NBUF_BACKING_CUSTOM:
        if (!cfg->chunk_alloc || !cfg->chunk_free)
            return -EINVAL;
        bk->chunk_alloc = cfg->chunk_alloc;
        bk->chunk_free = cfg->chunk_free;
        bk->ctx = cfg->backing_ctx;
        return 0;
    }
    return -EINVAL;
}

/* mmap size + align and cut both ends so the result is aligned. */
static void *
mmap_aligned(size_t size, size_t align, int huge_pages)
{
    size_t sys_page = (size_t)sysconf(_SC_PAGESIZE);
    size_t slack = align > sys_page ? align : 0;
    size_t total;
    if (nbuf_add_overflow_(size, slack, &total))
        return NULL;
    uint8_t *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uint8_t *aligned = (uint8_t *)nbuf_align_up_((uintptr_t)p, align > sys_page ? align : sys_page);
    if (aligned > p)
        munmap(p, (size_t)(aligned - p));
    size_t tail = (size_t)((p + total) - (aligned + size));
    if (tail)
        munmap(aligned + size, tail);
#ifdef MADV_HUGEPAGE
    if (huge_pages)
        madvise(aligned, size, MADV_HUGEPAGE);
#else
    (void)huge_pages;
#endif
    return aligned;
}

void *
nbuf_backing_alloc_(struct nbuf_backing *bk, size_t size, size_t align)
{
    long n = atomic_load_explicit(&bk->fail_countdown, memory_order_relaxed);
    if (unlikely(n > 0)) {
        if (atomic_fetch_sub(&bk->fail_countdown, 1) == 1) {
            atomic_fetch_add(&bk->fail_count, 1);
            errno = ENOMEM;
            return NULL;
        }
    }
    void *p = NULL;
    switch (bk->kind) {
    case NBUF_BACKING_JEMALLOC:
#ifdef NBUF_HAVE_JEMALLOC
        p = mallocx(size, jemalloc_flags(align));
#endif
        break;
    case NBUF_BACKING_MMAP: p = mmap_aligned(size, align, bk->huge_pages); break;
    case NBUF_BACKING_CUSTOM:
        p = bk->chunk_alloc(size, align, bk->ctx);
        if (p && ((uintptr_t)p & (align - 1))) {
            /* A misaligned chunk would break page alignment: refuse it. */
            nbuf_report_("nbuf: chunk_alloc returned %p, not aligned to %zu\n", p, align);
            bk->chunk_free(p, size, bk->ctx);
            p = NULL;
        }
        break;
    }
    if (!p)
        errno = ENOMEM;
    return p;
}

void
nbuf_backing_free_(struct nbuf_backing *bk, void *ptr, size_t size, size_t align)
{
    switch (bk->kind) {
    case NBUF_BACKING_JEMALLOC:
#ifdef NBUF_HAVE_JEMALLOC
        /* Sized free with the same flags: alignment can change the class. */
        sdallocx(ptr, size, jemalloc_flags(align));
#else
        (void)align;
#endif
        break;
    case NBUF_BACKING_MMAP:
        munmap(ptr, size);
        (void)align;
        break;
    case NBUF_BACKING_CUSTOM: bk->chunk_free(ptr, size, bk->ctx); break;
    }
}

bool
nbuf_backing_can_discard_(const struct nbuf_backing *bk)
{
    /* A custom backing may hand out memory madvise() must not touch (shared
     * or file mappings, a caller's arena): its pages are never purged. */
    return bk->kind != NBUF_BACKING_CUSTOM;
}

/* Drop the pages of [addr, addr + len) (page-aligned) from RSS; they read as
 * zeros when next touched. MADV_DONTNEED rather than MADV_FREE: MADV_FREE
 * leaves the pages in RSS until the kernel is short of memory, so neither
 * RSS nor a container's memory limit would see them go. */
int
nbuf_backing_discard_(struct nbuf_backing *bk, void *addr, size_t len)
{
    (void)bk;
    return madvise(addr, len, MADV_DONTNEED);
}

/* Ask the backing to return freed pages to the OS now. */
void
nbuf_backing_purge_(struct nbuf_backing *bk)
{
#ifdef NBUF_HAVE_JEMALLOC
    if (bk->kind == NBUF_BACKING_JEMALLOC) {
        char name[64];
        snprintf(name, sizeof(name), "arena.%u.purge", jemalloc_arena);
        mallctl(name, NULL, NULL, NULL, 0);
    }
#else
    (void)bk;
#endif
}

void
nbuf_backing_fail_after_(struct nbuf_pool *p, long n)
{
    atomic_store(&p->backing.fail_countdown, n);
}
