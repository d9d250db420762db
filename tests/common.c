/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Test-only overrides, so that the suite can re-run in other pool shapes
 * (.ci/run): NBUF_TEST_ARENAS=n gives n arenas to every pool a test makes
 * with the default arena count (0); NBUF_TEST_CHUNK_SIZE=bytes ("64k") is
 * the chunk size of every pool made with the default chunk size (kept at 8
 * pages or more). Tests that ask for a layout keep it: they check figures
 * that follow from it. The library's NBUF_* flag variables (NBUF_NO_CACHE,
 * NBUF_BYPASS, ...) need no help: they apply to every pool.
 */
static const struct nbuf_pool_config *
test_overrides(const struct nbuf_pool_config *cfg, struct nbuf_pool_config *tmp)
{
    const char *arenas = getenv("NBUF_TEST_ARENAS");
    const char *chunk = getenv("NBUF_TEST_CHUNK_SIZE");
    if (!(arenas && *arenas) && !(chunk && *chunk))
        return cfg;
    struct nbuf_pool_config def;
    nbuf_pool_config_init(&def);
    *tmp = cfg ? *cfg : def;
    if (arenas && *arenas && tmp->arenas == 0)
        tmp->arenas = (unsigned)strtoul(arenas, NULL, 0);
    if (chunk && *chunk && tmp->chunk_size == def.chunk_size) {
        char *end;
        size_t size = strtoull(chunk, &end, 0);
        if (*end == 'k' || *end == 'K')
            size <<= 10;
        else if (*end == 'm' || *end == 'M')
            size <<= 20;
        tmp->chunk_size = size > 8 * tmp->page_size ? size : 8 * tmp->page_size;
    }
    return tmp;
}

struct nbuf_pool *
t_pool_new(const struct nbuf_pool_config *cfg)
{
    struct nbuf_pool_config tmp;
    struct nbuf_pool *p = nbuf_pool_new(test_overrides(cfg, &tmp));
    cr_assert_not_null(p, "nbuf_pool_new: %s", strerror(errno));
    return p;
}

void
t_pool_check(struct nbuf_pool *p)
{
    cr_assert(nbuf_pool_check_(p), "pool invariants violated");
}

void
t_pool_done(struct nbuf_pool *p)
{
    t_pool_check(p);
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(p, &st), 0);
    cr_assert_eq(st.live_buffers, 0, "%llu buffers still live",
                 (unsigned long long)st.live_buffers);
    cr_assert_eq(st.used_bytes, 0);
    cr_assert_eq(st.requested_bytes, 0);
    cr_assert_eq(st.views, 0);
    cr_assert_eq(nbuf_pool_free(p), 0);
}

bool
t_bypass(void)
{
    const char *v = getenv("NBUF_BYPASS");
    return v && *v && strcmp(v, "0") != 0;
}

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned report_count;
static char report_text[16384];

static void
capture(const char *msg)
{
    pthread_mutex_lock(&report_lock);
    report_count++;
    size_t len = strlen(report_text);
    snprintf(report_text + len, sizeof(report_text) - len, "%s", msg);
    pthread_mutex_unlock(&report_lock);
}

void
t_capture_reports(void)
{
    pthread_mutex_lock(&report_lock);
    report_count = 0;
    report_text[0] = 0;
    pthread_mutex_unlock(&report_lock);
    nbuf_report_hook_ = capture;
}

unsigned
t_reports(void)
{
    pthread_mutex_lock(&report_lock);
    unsigned n = report_count;
    pthread_mutex_unlock(&report_lock);
    return n;
}

const char *
t_report_text(void)
{
    return report_text;
}

/* ---- allocator-core helpers ---- */

struct nbuf_pool_stats
t_stats(struct nbuf_pool *p)
{
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(p, &st), 0);
    return st;
}

void
t_stats_assert_same(const struct nbuf_pool_stats *a, const struct nbuf_pool_stats *b)
{
#define SAME(f)                                                                                    \
    cr_assert_eq(a->f, b->f, #f ": %llu then %llu", (unsigned long long)a->f,                      \
                 (unsigned long long)b->f)
    SAME(chunks);
    SAME(backing_bytes);
    SAME(used_bytes);
    SAME(requested_bytes);
    SAME(live_buffers);
    SAME(allocations);
    SAME(releases);
    SAME(cache_hits);
    SAME(cache_misses);
    SAME(remote_releases);
    SAME(huge_allocations);
    SAME(views);
#undef SAME
}

static inline uint64_t
pattern_word(uint64_t seed, size_t k)
{
    uint64_t x = seed + (uint64_t)k * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return x * 0xbf58476d1ce4e5b9ull;
}

void
t_pattern_fill(void *dst, size_t n, uint64_t seed)
{
    uint8_t *d = dst;
    size_t k = 0;
    for (; (k + 1) * 8 <= n; k++) {
        uint64_t w = pattern_word(seed, k);
        memcpy(d + k * 8, &w, 8);
    }
    uint64_t w = pattern_word(seed, k);
    memcpy(d + k * 8, &w, n - k * 8);
}

size_t
t_pattern_bad(const void *src, size_t n, uint64_t seed)
{
    const uint8_t *s = src;
    size_t k = 0;
    for (; (k + 1) * 8 <= n; k++) {
        uint64_t w = pattern_word(seed, k);
        if (memcmp(s + k * 8, &w, 8) != 0)
            break;
    }
    uint64_t w = pattern_word(seed, k);
    const uint8_t *wb = (const uint8_t *)&w;
    for (size_t i = k * 8; i < n; i++) {
        if (s[i] != wb[i - k * 8])
            return i;
        if (i - k * 8 == 7) {
            k++;
            w = pattern_word(seed, k);
        }
    }
    return SIZE_MAX;
}

void
t_buf_fill(struct nbuf *b, uint64_t seed)
{
    size_t n = nbuf_writable(b);
    uint8_t *w = nbuf_reserve(b, n);
    cr_assert_not_null(w, "nbuf_reserve(%zu): %s", n, strerror(errno));
    t_pattern_fill(w, n, seed);
    cr_assert_eq(nbuf_commit(b, n), 0);
}

bool
t_buf_verify(const struct nbuf *b, uint64_t seed)
{
    return t_pattern_bad(nbuf_data(b), nbuf_readable(b), seed) == SIZE_MAX;
}

static _Atomic unsigned thread_failures;
static char thread_failure_text[512];

void
t_thread_fail_(const char *file, int line, const char *expr)
{
    if (atomic_fetch_add(&thread_failures, 1) == 0)
        snprintf(thread_failure_text, sizeof(thread_failure_text), "%s:%d: %s", file, line, expr);
}

void
t_thread_assert_ok(void)
{
    unsigned n = atomic_load(&thread_failures);
    cr_assert_eq(n, 0, "%u failed checks on worker threads, first: %s", n, thread_failure_text);
}

void
t_run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fn, arg), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

void
t_tcp_pair(int sv[2])
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(ls, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(ls, 1), 0);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(sv[0], (struct sockaddr *)&a, sizeof(a)), 0);
    sv[1] = accept(ls, NULL, NULL);
    cr_assert_geq(sv[1], 0);
    close(ls);
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

#if NBUF_HAVE_IO_URING
#include "nbuf/uring.h"

struct nbuf_uring *
t_ring_or_skip(void)
{
    struct nbuf_uring *u = nbuf_uring_new(64);
    if (!u)
        cr_skip_test("no io_uring here: %s", strerror(errno));
    return u;
}
#endif

void *
t_reader_main(void *arg)
{
    struct t_reader *r = arg;
    uint8_t *buf = malloc(1 << 16);
    for (;;) {
        ssize_t n = read(r->fd, buf, 1 << 16);
        if (n <= 0)
            break;
        if (r->got + (size_t)n > r->want || memcmp(buf, r->ref + r->got, (size_t)n) != 0)
            r->bad = true;
        r->got += (size_t)n;
        if (r->stop_after && r->got >= r->stop_after)
            break;
    }
    free(buf);
    if (r->stop_after)
        close(r->fd);
    return NULL;
}

struct nbuf_composite *
t_frame_new(struct nbuf_pool *p, const uint8_t *ref, size_t len, size_t piece, uint64_t *seed)
{
    struct nbuf_composite *c = nbuf_composite_new(p);
    cr_assert_not_null(c);
    for (size_t off = 0; off < len;) {
        size_t k = 1 + (size_t)(t_rand(seed) % piece);
        if (k > len - off)
            k = len - off;
        struct nbuf *b = nbuf_alloc(p, k);
        cr_assert_eq(nbuf_write(b, ref + off, k), 0);
        cr_assert_eq(nbuf_composite_add(c, b), 0); /* the reference moves */
        off += k;
    }
    return c;
}
