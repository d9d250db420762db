/* SPDX-License-Identifier: MIT */
/* Statistics: every counter against what the test did (single thread, remote
 * releases, exited threads), and nbuf_pool_print_stats as text and JSON. */
#include "common.h"

#include <ctype.h>
#include <sched.h>

static struct nbuf_pool *
pool_with(unsigned arenas, unsigned flags)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.arenas = arenas;
    cfg.flags = flags;
    return t_pool_new(&cfg);
}

/* What the pool charges for a buffer of @size (its used_bytes). */
static uint64_t
charged(struct nbuf_pool *p, size_t size)
{
    if (p->cfg.flags & NBUF_POOL_BYPASS)
        return size;
    if (size > p->cfg.chunk_size)
        return nbuf_align_up_(size, 4096);
    return nbuf_sz_usize_(nbuf_sz_index_(size));
}

Test(stats, null_arguments)
{
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf_pool_stats st;
    cr_assert_eq(nbuf_pool_stats(NULL, &st), -EINVAL);
    cr_assert_eq(nbuf_pool_stats(p, NULL), -EINVAL);
    cr_assert_eq(nbuf_pool_print_stats(NULL, stdout, NBUF_FORMAT_TEXT), -EINVAL);
    cr_assert_eq(nbuf_pool_print_stats(p, NULL, NBUF_FORMAT_TEXT), -EINVAL);
    cr_assert_eq(nbuf_pool_print_stats(p, stdout, 7), -EINVAL);
    cr_assert_eq(nbuf_pool_print_stats(p, stdout, -1), -EINVAL);
    t_pool_done(p);
}

Test(stats, fresh_pool_is_zero)
{
    struct nbuf_pool *p = pool_with(3, 0);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.backing_bytes, 0);
    cr_assert_eq(st.used_bytes, 0);
    cr_assert_eq(st.requested_bytes, 0);
    cr_assert_eq(st.cached_bytes, 0);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.allocations, 0);
    cr_assert_eq(st.releases, 0);
    cr_assert_eq(st.cache_hits, 0);
    cr_assert_eq(st.cache_misses, 0);
    cr_assert_eq(st.remote_releases, 0);
    cr_assert_eq(st.limit_failures, 0);
    cr_assert_eq(st.huge_allocations, 0);
    cr_assert_eq(st.arenas, 3);
    cr_assert_eq(st.threads, 0);
    cr_assert_eq(st.empty_chunks, 0);
    cr_assert_eq(st.views, 0);
    t_pool_done(p);
}

/* Allocations, releases, live, used and requested bytes, hits and misses. */
Test(stats, counters_follow_one_thread)
{
    struct nbuf_pool *p = pool_with(1, 0);
    bool pooled = !(p->cfg.flags & (NBUF_POOL_BYPASS | NBUF_POOL_NO_CACHE | NBUF_POOL_CHECKED));
    static const size_t sizes[] = {100, 100, 1000, 100000, 5u << 20, 0, 64u << 10};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    struct nbuf *v[N];
    uint64_t used = 0, req = 0;
    for (unsigned i = 0; i < N; i++) {
        v[i] = nbuf_alloc(p, sizes[i]);
        cr_assert_not_null(v[i]);
        used += charged(p, sizes[i]);
        req += sizes[i];
        struct nbuf_pool_stats st = t_stats(p);
        cr_assert_eq(st.allocations, i + 1);
        cr_assert_eq(st.live_buffers, i + 1);
        cr_assert_eq(st.used_bytes, used, "after %u: used %llu, want %llu", i,
                     (unsigned long long)st.used_bytes, (unsigned long long)used);
        cr_assert_eq(st.requested_bytes, req);
        cr_assert_eq(st.releases, 0);
    }
    struct nbuf_pool_stats st = t_stats(p);
    if (!t_bypass()) {
        cr_assert_eq(st.huge_allocations, 1);
        cr_assert_eq(st.chunks, 1);
        cr_assert_eq(st.backing_bytes, (4u << 20) + (5u << 20));
        cr_assert_geq(st.used_bytes, st.requested_bytes);
    }
    if (pooled) {
        /* Misses: 100 (fills a batch), 1000, 100000 (not cached), 0 (class
         * 16), 64 KiB; the second 100 is a hit; the huge buffer is neither. */
        cr_assert_eq(st.cache_misses, 5);
        cr_assert_eq(st.cache_hits, 1);
        cr_assert_gt(st.cached_bytes, 0);
        cr_assert_eq(st.threads, 1);
    }
    cr_assert_eq(st.cache_hits + st.cache_misses + st.huge_allocations, st.allocations);
    for (unsigned i = 0; i < N; i++) {
        cr_assert_eq(nbuf_release(v[i]), 1);
        used -= charged(p, sizes[i]);
        req -= sizes[i];
        st = t_stats(p);
        cr_assert_eq(st.releases, i + 1);
        cr_assert_eq(st.live_buffers, N - i - 1);
        cr_assert_eq(st.used_bytes, used);
        cr_assert_eq(st.requested_bytes, req);
    }
    cr_assert_eq(st.remote_releases, 0);
    if (!t_bypass())
        cr_assert_eq(st.backing_bytes, (4u << 20) + nbuf_huge_cached_bytes_(p),
                     "the huge buffer's bytes were not given back or cached");
    /* Allocation again: the pool's own cache serves it. */
    struct nbuf *b = nbuf_alloc(p, 100);
    if (pooled)
        cr_assert_eq(t_stats(p).cache_hits, 2);
    nbuf_release(b);
    t_pool_done(p);
}

/* Class slack hidden by max_capacity is accounted as what the buffer shows. */
Test(stats, clipped_capacity_accounting)
{
    struct nbuf_pool *p = pool_with(1, 0);
    struct nbuf *b = nbuf_alloc_ex(p, 100, 100, 0);
    cr_assert_not_null(b);
    cr_assert_eq(nbuf_capacity(b), 100);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.requested_bytes, 100);
    cr_assert_eq(st.used_bytes, 100);
    nbuf_release(b);
    st = t_stats(p);
    cr_assert_eq(st.used_bytes, 0);
    cr_assert_eq(st.requested_bytes, 0);
    t_pool_done(p);
}

struct rel_arg {
    struct nbuf **v;
    unsigned n;
};

static void *
release_all(void *arg)
{
    struct rel_arg *ra = arg;
    for (unsigned i = 0; i < ra->n; i++)
        T_CHECK(nbuf_release(ra->v[i]) == 1);
    return NULL;
}

static void *
alloc_release_local(void *arg)
{
    struct nbuf_pool *p = arg;
    for (unsigned i = 0; i < 50; i++)
        T_CHECK(nbuf_release(nbuf_alloc(p, 10 + i * 300)) == 1);
    return NULL;
}

Test(stats, remote_releases_counted)
{
    if (t_bypass())
        cr_skip("bypass buffers carry no allocating thread");
    struct nbuf_pool *p = pool_with(2, 0);
    static const size_t sizes[] = {1, 100, 2000, 65536, 65537, 1u << 20, 5u << 20};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    struct nbuf *v[N];
    for (unsigned i = 0; i < N; i++)
        v[i] = nbuf_alloc(p, sizes[i]);
    struct rel_arg ra = {v, N};
    t_run_thread(release_all, &ra);
    t_run_thread(alloc_release_local, p);
    t_thread_assert_ok();
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.remote_releases, N, "remote releases %llu of %u",
                 (unsigned long long)st.remote_releases, N);
    cr_assert_eq(st.allocations, N + 50);
    cr_assert_eq(st.releases, N + 50);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.used_bytes, 0);
    cr_assert_eq(st.requested_bytes, 0);
    cr_assert_eq(st.threads, 1, "exited threads still counted");
    t_pool_done(p);
}

struct hold_arg {
    struct nbuf_pool *p;
    pthread_barrier_t *in, *out;
};

static void *
hold_thread(void *arg)
{
    struct hold_arg *ha = arg;
    struct nbuf *b = nbuf_alloc(ha->p, 500);
    T_CHECK(b != NULL);
    pthread_barrier_wait(ha->in);
    pthread_barrier_wait(ha->out);
    T_CHECK(nbuf_release(b) == 1);
    return NULL;
}

Test(stats, threads_and_live_across_threads)
{
    struct nbuf_pool *p = pool_with(4, 0);
    enum { T = 3 };
    pthread_barrier_t in, out;
    pthread_barrier_init(&in, NULL, T + 1);
    pthread_barrier_init(&out, NULL, T + 1);
    struct hold_arg ha = {p, &in, &out};
    pthread_t th[T];
    for (unsigned i = 0; i < T; i++)
        pthread_create(&th[i], NULL, hold_thread, &ha);
    pthread_barrier_wait(&in);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.threads, T);
    cr_assert_eq(st.live_buffers, T);
    cr_assert_eq(st.requested_bytes, T * 500);
    pthread_barrier_wait(&out);
    for (unsigned i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    t_thread_assert_ok();
    st = t_stats(p);
    cr_assert_eq(st.threads, 0);
    cr_assert_eq(st.allocations, T);
    cr_assert_eq(st.releases, T);
    cr_assert_eq(st.remote_releases, 0);
    pthread_barrier_destroy(&in);
    pthread_barrier_destroy(&out);
    t_pool_done(p);
}

Test(stats, cached_and_empty_chunks)
{
    if (t_bypass())
        cr_skip("pooled layout");
    struct nbuf_pool *p = pool_with(1, NBUF_POOL_NO_CACHE);
    struct nbuf *b = nbuf_alloc(p, 4u << 20);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.chunks, 1);
    cr_assert_eq(st.empty_chunks, 0);
    cr_assert_eq(st.cached_bytes, 0);
    nbuf_release(b);
    st = t_stats(p);
    cr_assert_eq(st.chunks, 1);
    cr_assert_eq(st.empty_chunks, 1);
    cr_assert_eq(nbuf_pool_trim(p), 0);
    st = t_stats(p);
    cr_assert_eq(st.chunks, 0);
    cr_assert_eq(st.empty_chunks, 0);
    t_pool_done(p);
}

/* ---- printing ---- */

static char *
print_to_string(struct nbuf_pool *p, int format)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cr_assert_eq(nbuf_pool_print_stats(p, f, format), 0);
    fclose(f);
    cr_assert_gt(len, 0);
    return text;
}

/* A live set that shows every kind of page: a run, full and partial
 * subpages, free pages. */
static void
make_live_set(struct nbuf_pool *p, struct nbuf **v, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        size_t size = i == 0 ? 300000 : i < 9 ? 8192 : 100;
        v[i] = nbuf_alloc(p, size);
        cr_assert_not_null(v[i]);
    }
}

Test(stats, print_text)
{
    struct nbuf_pool *p = pool_with(1, NBUF_POOL_NO_CACHE);
    struct nbuf *v[20];
    make_live_set(p, v, 20);
    char *text = print_to_string(p, NBUF_FORMAT_TEXT);
    cr_assert(strstr(text, "nbuf pool") == text, "text: %s", text);
    static const char *fields[] = {
        "chunks",          "backing_bytes",  "used_bytes",       "requested_bytes", "cached_bytes",
        "live_buffers",    "allocations",    "releases",         "cache_hits",      "cache_misses",
        "remote_releases", "limit_failures", "huge_allocations", "arenas",          "threads",
        "empty_chunks",    "views"};
    for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char line[64];
        snprintf(line, sizeof(line), "  %-18s ", fields[i]);
        cr_assert(strstr(text, line) != NULL, "no line for %s in:\n%s", fields[i], text);
    }
    char *live = strstr(text, "  live_buffers");
    unsigned long long n = 0;
    cr_assert_eq(sscanf(live, " live_buffers %llu", &n), 1);
    cr_assert_eq(n, 20);
    if (!t_bypass()) {
        /* The occupancy map: a 40-page run (300000 B), eight full one-page
         * subpages (8 KiB elements), a 7-page subpage run of 112 B elements
         * under a tenth used, free pages. */
        cr_assert(strstr(text, "chunk 0 at") != NULL, "no chunk in:\n%s", text);
        cr_assert(strstr(text, "########################################") != NULL,
                  "no run in:\n%s", text);
        cr_assert(strstr(text, "ssssssss") != NULL, "no full subpages in:\n%s", text);
        cr_assert(strstr(text, "0000000") != NULL, "no partial subpage in:\n%s", text);
        cr_assert(strstr(text, "....") != NULL, "no free pages in:\n%s", text);
    }
    free(text);
    for (unsigned i = 0; i < 20; i++)
        nbuf_release(v[i]);
    t_pool_done(p);
}

/* ---- a small JSON validator ---- */

struct json {
    const char *s;
    int depth;
};

static void
j_ws(struct json *j)
{
    while (*j->s == ' ' || *j->s == '\n' || *j->s == '\t' || *j->s == '\r')
        j->s++;
}

static bool j_value(struct json *j);

static bool
j_string(struct json *j)
{
    if (*j->s != '"')
        return false;
    for (j->s++; *j->s != '"'; j->s++) {
        if ((unsigned char)*j->s < 0x20)
            return false;
        if (*j->s == '\\') {
            j->s++;
            if (!strchr("\"\\/bfnrtu", *j->s) || !*j->s)
                return false;
        }
    }
    j->s++;
    return true;
}

static bool
j_number(struct json *j)
{
    const char *start = j->s;
    if (*j->s == '-')
        j->s++;
    if (!isdigit((unsigned char)*j->s))
        return false;
    if (*j->s == '0' && isdigit((unsigned char)j->s[1]))
        return false;
    while (isdigit((unsigned char)*j->s))
        j->s++;
    if (*j->s == '.') {
        j->s++;
        if (!isdigit((unsigned char)*j->s))
            return false;
        while (isdigit((unsigned char)*j->s))
            j->s++;
    }
    return j->s > start;
}

static bool
j_seq(struct json *j, char close, bool object)
{
    j->s++;
    if (++j->depth > 64)
        return false;
    j_ws(j);
    if (*j->s == close) {
        j->s++;
        j->depth--;
        return true;
    }
    for (;;) {
        j_ws(j);
        if (object) {
            if (!j_string(j))
                return false;
            j_ws(j);
            if (*j->s++ != ':')
                return false;
        }
        if (!j_value(j))
            return false;
        j_ws(j);
        if (*j->s == ',') {
            j->s++;
            continue;
        }
        if (*j->s++ != close)
            return false;
        j->depth--;
        return true;
    }
}

static bool
j_value(struct json *j)
{
    j_ws(j);
    switch (*j->s) {
    case '{': return j_seq(j, '}', true);
    case '[': return j_seq(j, ']', false);
    case '"': return j_string(j);
    case 't': return strncmp(j->s, "true", 4) == 0 ? (j->s += 4, true) : false;
    case 'f': return strncmp(j->s, "false", 5) == 0 ? (j->s += 5, true) : false;
    case 'n': return strncmp(j->s, "null", 4) == 0 ? (j->s += 4, true) : false;
    default: return j_number(j);
    }
}

static bool
json_valid(const char *text)
{
    struct json j = {text, 0};
    if (!j_value(&j))
        return false;
    j_ws(&j);
    return *j.s == 0;
}

/* The value of a top-level numeric member. */
static unsigned long long
json_num(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *at = strstr(text, pat);
    cr_assert_not_null(at, "no \"%s\" in %s", key, text);
    return strtoull(at + strlen(pat), NULL, 10);
}

Test(stats, json_validator_self_check)
{
    cr_assert(json_valid("{\"a\":[1,2,{\"b\":\"x\\\"y\"}],\"c\":-0.5,\"d\":true}"));
    cr_assert_not(json_valid("{\"a\":1,}"));
    cr_assert_not(json_valid("{\"a\":1"));
    cr_assert_not(json_valid("[1,2]]"));
    cr_assert_not(json_valid("{a:1}"));
    cr_assert_not(json_valid("{\"a\":01}"));
}

Test(stats, print_json)
{
    struct nbuf_pool *p = pool_with(2, NBUF_POOL_NO_CACHE);
    struct nbuf *v[20];
    make_live_set(p, v, 20);
    char *text = print_to_string(p, NBUF_FORMAT_JSON);
    cr_assert(json_valid(text), "invalid JSON:\n%s", text);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(json_num(text, "page_size"), p->cfg.page_size);
    cr_assert_eq(json_num(text, "chunk_size"), p->cfg.chunk_size);
    cr_assert_eq(json_num(text, "live_buffers"), 20);
    cr_assert_eq(json_num(text, "allocations"), st.allocations);
    cr_assert_eq(json_num(text, "chunks"), st.chunks);
    cr_assert_eq(json_num(text, "used_bytes"), st.used_bytes);
    cr_assert_eq(json_num(text, "requested_bytes"), st.requested_bytes);
    cr_assert_eq(json_num(text, "arenas"), 2);
    static const char *keys[] = {
        "backing_bytes", "cached_bytes",    "releases",       "cache_hits",
        "cache_misses",  "remote_releases", "limit_failures", "huge_allocations",
        "threads",       "empty_chunks",    "views",          "arena_list"};
    for (unsigned i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char pat[64];
        snprintf(pat, sizeof(pat), "\"%s\":", keys[i]);
        cr_assert(strstr(text, pat) != NULL, "no %s in %s", keys[i], text);
    }
    if (!t_bypass()) {
        /* One chunk with a map of one character per page. */
        const char *map = strstr(text, "\"map\":\"");
        cr_assert_not_null(map, "no chunk map in %s", text);
        map += 7;
        size_t len = strcspn(map, "\"");
        cr_assert_eq(len, p->chunk_pages);
        cr_assert_eq(strspn(map, ".#s"), len);
        cr_assert_eq(json_num(text, "pages"), p->chunk_pages);
    }
    free(text);
    for (unsigned i = 0; i < 20; i++)
        nbuf_release(v[i]);
    /* Empty pool: still valid. */
    cr_assert_eq(nbuf_pool_trim(p), 0);
    text = print_to_string(p, NBUF_FORMAT_JSON);
    cr_assert(json_valid(text), "invalid JSON:\n%s", text);
    free(text);
    t_pool_done(p);
}

Test(stats, print_to_failing_stream)
{
    FILE *f = fopen("/dev/full", "w");
    if (!f)
        cr_skip("no /dev/full");
    struct nbuf_pool *p = t_pool_new(NULL);
    struct nbuf *b = nbuf_alloc(p, 10);
    cr_assert_eq(nbuf_pool_print_stats(p, f, NBUF_FORMAT_TEXT), -EIO);
    clearerr(f);
    cr_assert_eq(nbuf_pool_print_stats(p, f, NBUF_FORMAT_JSON), -EIO);
    fclose(f);
    nbuf_release(b);
    t_pool_done(p);
}

/* Snapshots while threads work never see more releases than allocations
 * and end exact. */
static void *
busy_thread(void *arg)
{
    struct nbuf_pool *p = arg;
    uint64_t s = (uint64_t)(uintptr_t)&s;
    struct nbuf *v[32] = {0};
    for (unsigned i = 0; i < 20000; i++) {
        unsigned k = (unsigned)(t_rand(&s) % 32);
        if (v[k]) {
            nbuf_release(v[k]);
            v[k] = NULL;
        } else {
            v[k] = nbuf_alloc(p, 1 + t_rand(&s) % 5000);
            T_CHECK(v[k] != NULL);
        }
    }
    for (unsigned k = 0; k < 32; k++)
        nbuf_release(v[k]);
    return NULL;
}

Test(stats, snapshots_while_busy)
{
    struct nbuf_pool *p = pool_with(2, 0);
    pthread_t th[3];
    for (unsigned i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, busy_thread, p);
    for (unsigned i = 0; i < 200; i++) {
        /* A snapshot of busy threads may over-count live buffers (it sums
         * releases before allocations) but never wraps below zero. */
        struct nbuf_pool_stats st = t_stats(p);
        cr_assert_leq(st.live_buffers, st.allocations, "%llu live of %llu allocations",
                      (unsigned long long)st.live_buffers, (unsigned long long)st.allocations);
        if (i % 50 == 0) {
            char *text = print_to_string(p, NBUF_FORMAT_JSON);
            cr_assert(json_valid(text));
            free(text);
        }
    }
    for (unsigned i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    t_thread_assert_ok();
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.live_buffers, 0);
    cr_assert_eq(st.allocations, st.releases);
    t_pool_done(p);
}

/* A producer allocates, a consumer releases (each in its own cache; the
 * consumer's cache is created first). A snapshot never shows more releases
 * than allocations: live_buffers and the byte gauges never wrap below 0. */
struct ring {
    struct nbuf_pool *p;
    _Atomic(struct nbuf *) slot[8];
    _Atomic int phase; /* 1: consumer has a cache; 2: stop producing; 3: drain */
};

static void *
ring_consumer(void *arg)
{
    struct ring *r = arg;
    nbuf_release(nbuf_alloc(r->p, 100));
    atomic_store(&r->phase, 1);
    for (;;) {
        /* Phase 3: the producer has exited; one last sweep. */
        bool last = atomic_load(&r->phase) == 3;
        for (unsigned i = 0; i < 8; i++) {
            struct nbuf *b = atomic_exchange(&r->slot[i], NULL);
            if (b)
                T_CHECK(nbuf_release(b) == 1);
        }
        if (last)
            return NULL;
    }
}

static void *
ring_producer(void *arg)
{
    struct ring *r = arg;
    while (atomic_load(&r->phase) < 2) {
        for (unsigned i = 0; i < 8; i++) {
            if (atomic_load(&r->slot[i]))
                continue;
            struct nbuf *b = nbuf_alloc(r->p, 200);
            T_CHECK(b != NULL);
            atomic_store(&r->slot[i], b);
        }
    }
    return NULL;
}

Test(stats, snapshot_never_wraps_below_zero, .timeout = 60)
{
    struct nbuf_pool *p = pool_with(2, 0);
    struct ring r = {.p = p};
    pthread_t c, pr;
    pthread_create(&c, NULL, ring_consumer, &r);
    while (atomic_load(&r.phase) < 1)
        sched_yield();
    pthread_create(&pr, NULL, ring_producer, &r);
    /* Releases are summed before allocations, so a snapshot taken while the
     * threads run may over-count live buffers (allocations made while it
     * reads) but must never under-count: a gauge below zero would show as a
     * value above the allocation count of the same snapshot. */
    bool wrapped = false;
    struct nbuf_pool_stats bad = {0};
    for (unsigned i = 0; i < 20000 && !wrapped; i++) {
        struct nbuf_pool_stats st = t_stats(p);
        if (st.live_buffers > st.allocations || st.used_bytes > (1ull << 62) ||
            st.requested_bytes > (1ull << 62)) {
            wrapped = true;
            bad = st;
        }
    }
    atomic_store(&r.phase, 2);
    pthread_join(pr, NULL);
    atomic_store(&r.phase, 3);
    pthread_join(c, NULL);
    t_thread_assert_ok();
    cr_assert(!wrapped, "a snapshot wrapped below zero: live %llu of %llu allocations, used %llu",
              (unsigned long long)bad.live_buffers, (unsigned long long)bad.allocations,
              (unsigned long long)bad.used_bytes);
    struct nbuf_pool_stats st = t_stats(p);
    cr_assert_eq(st.live_buffers, 0);
    if (!t_bypass()) /* bypass buffers may carry no allocating thread */
        cr_assert_eq(st.remote_releases, st.allocations - 1);
    t_pool_done(p);
}
