/* SPDX-License-Identifier: MIT */
/*
 * Pools: configuration and its validation, creation and teardown, the
 * process-wide default pool (configured from NBUF_* environment variables),
 * trimming (also the budget's reclaim hook) and the background switch.
 * Layer: pool; calls every allocator layer below, registry.c and leak.c.
 */
#include <ctype.h>
#include <limits.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

static _Atomic uint64_t next_pool_id = 1;

/* A NULL pool before the default pool exists (see nbuf_pool_resolve_). */
struct nbuf_pool nbuf_no_pool_ = {.id = NBUF_KEY_NONE, .fast_id = NBUF_KEY_NONE};
struct nbuf_pool *_Atomic nbuf_default_pool_ = &nbuf_no_pool_;

NBUF_EXPORT void
nbuf_pool_config_init(struct nbuf_pool_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->size = sizeof(*cfg);
    cfg->page_size = 8192;
    cfg->chunk_size = 4u << 20;
    cfg->arenas = 0;
    cfg->cache_small_count = 128;
    cfg->cache_normal_count = 16;
    cfg->cache_max_size = 64u << 10;
    cfg->cache_large_bytes = 4u << 20;
    cfg->decay_ms = NBUF_DECAY_MS_DEFAULT;
    cfg->cache_thread_bytes = 12u << 20;
    cfg->memory_limit = 0;
    cfg->max_buffer_size = (size_t)1 << 30;
    cfg->flags = 0;
    cfg->backing = nbuf_backing_has_jemalloc_() ? NBUF_BACKING_JEMALLOC : NBUF_BACKING_MMAP;
}

static bool
is_pow2(size_t x)
{
    return x && !(x & (x - 1));
}

static bool
config_valid(const struct nbuf_pool_config *c)
{
    const unsigned known = NBUF_POOL_ZERO | NBUF_POOL_SCRUB | NBUF_POOL_NO_CACHE |
                           NBUF_POOL_BYPASS | NBUF_POOL_CHECKED | NBUF_POOL_NO_BACKGROUND;
    if (!is_pow2(c->page_size) || c->page_size < 4096 || c->page_size > (1u << 20))
        return false;
    if (!is_pow2(c->chunk_size) || c->chunk_size < 8 * c->page_size ||
        c->chunk_size / c->page_size > 65536 || c->chunk_size > ((size_t)1 << NBUF_LG_MAX_CHUNK))
        return false;
    if (c->arenas > 1024 || c->cache_small_count > 65536 || c->cache_normal_count > 65536)
        return false;
    if (c->max_buffer_size == 0 || c->max_buffer_size > (SIZE_MAX >> 2))
        return false;
    if (c->flags & ~known)
        return false;
    if (c->backing == NBUF_BACKING_CUSTOM && (!c->chunk_alloc || !c->chunk_free))
        return false;
    if ((unsigned)c->backing > NBUF_BACKING_CUSTOM)
        return false;
    if (c->decay_ms < -1)
        return false;
    return true;
}

/* Derive the class split for this page and chunk size. */
static void
pool_classes(struct nbuf_pool *p)
{
    size_t page = p->cfg.page_size;
    p->lg_page = (unsigned)__builtin_ctzll(page);
    p->chunk_pages = (unsigned)(p->cfg.chunk_size >> p->lg_page);
    p->nsmall = 0;
    p->nclasses = 0;
    p->ncached = 0;
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        size_t usize = nbuf_sz_usize_(i);
        if (usize > p->cfg.chunk_size)
            break;
        p->nclasses = i + 1;
        if (usize < 4 * page) {
            p->nsmall = i + 1;
            p->run_pages[i] = nbuf_sz_run_pages_(usize, page);
            p->run_elems[i] = (uint32_t)(((size_t)p->run_pages[i] << p->lg_page) / usize);
        }
        if (usize <= p->cfg.cache_max_size)
            p->ncached = i + 1;
    }
    for (unsigned i = 0; i < NBUF_NCLASSES; i++) {
        p->cache_cap[i] = nbuf_pool_cache_cap_(p, i);
        p->stash_cap[i] = nbuf_pool_stash_cap_(p, i);
    }
    /* The bins' byte budget per thread (tcache.c): at least their start. */
    p->cache_budget = p->cfg.cache_thread_bytes;
    if (p->cache_budget < nbuf_tcache_min_budget_(p))
        p->cache_budget = nbuf_tcache_min_budget_(p);
    /* The large cache takes what the bins do not, up to the chunk size. */
    p->large_max = 0;
    if (p->cfg.cache_large_bytes && !(p->cfg.flags & NBUF_POOL_NO_CACHE) &&
        p->nclasses > p->ncached) {
        p->large_max =
            p->cfg.chunk_size < p->cfg.max_buffer_size ? p->cfg.chunk_size : p->cfg.max_buffer_size;
        if (p->large_max > p->cfg.cache_large_bytes)
            p->large_max = p->cfg.cache_large_bytes;
    }
}

/* Free the first @n arenas. Every one is trimmed before any frees its header
 * blocks: headers migrate between arenas (growth keeps a header and takes
 * memory from the growing thread's arena; bare headers go back to arena 0),
 * so one arena's stash may hold headers from another's blocks. */
static void
arenas_destroy(struct nbuf_pool *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        nbuf_arena_trim_(&p->arenas[i], 0);
    for (unsigned i = 0; i < n; i++)
        nbuf_arena_fini_(&p->arenas[i]);
    free(p->arenas);
}

NBUF_EXPORT struct nbuf_pool *
nbuf_pool_new(const struct nbuf_pool_config *user_cfg)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    if (user_cfg) {
        /* A caller built against older headers has fewer fields: the rest
         * keep their defaults. A newer one's fields we cannot honour. */
        if (user_cfg->size < offsetof(struct nbuf_pool_config, page_size) + sizeof(size_t) ||
            user_cfg->size > sizeof(cfg)) {
            errno = EINVAL;
            return NULL;
        }
        memcpy(&cfg, user_cfg, user_cfg->size);
        cfg.size = sizeof(cfg);
    }
    cfg.flags |= nbuf_pool_env_flags_();
    if (!config_valid(&cfg)) {
        errno = EINVAL;
        return NULL;
    }
    if (cfg.arenas == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.arenas = (unsigned)(ncpu > 0 ? 2 * ncpu : 2);
        if (cfg.arenas > 1024)
            cfg.arenas = 1024;
    }
    struct nbuf_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    p->cfg = cfg;
    p->id = atomic_fetch_add(&next_pool_id, 1);
    pool_classes(p);
    int err = nbuf_backing_init_(&p->backing, &cfg);
    if (err)
        goto out_pool;
    err = -ENOMEM;
    if (pthread_mutex_init(&p->lock, NULL) != 0)
        goto out_pool;
    if (pthread_key_create(&p->tsd_key, nbuf_tcache_destructor_) != 0) {
        err = -EAGAIN;
        goto out_lock;
    }
    p->narenas = cfg.arenas;
    p->arenas = calloc(p->narenas, sizeof(*p->arenas));
    if (!p->arenas)
        goto out_key;
    unsigned i;
    for (i = 0; i < p->narenas; i++) {
        if (nbuf_arena_init_(&p->arenas[i], p, i) != 0)
            goto out_arenas;
    }
    /* Anything that must see every allocation or release leaves the fast
     * paths: zeroing, bypass, checked mode, scrubbing. */
    p->slow_alloc = (cfg.flags & (NBUF_POOL_ZERO | NBUF_POOL_BYPASS | NBUF_POOL_CHECKED)) != 0;
    p->buf_flags = (uint8_t)(((cfg.flags & NBUF_POOL_CHECKED) ? NBUF_F_CHECKED : 0) |
                             ((cfg.flags & NBUF_POOL_SCRUB) ? NBUF_F_SCRUB : 0));
    p->buf_slow = p->buf_flags != 0;
    /* NBUF_LEAK, checked mode, valgrind: may force the slow paths. */
    err = nbuf_debug_pool_init_(p);
    if (err)
        goto out_arenas;
    p->fast_id = nbuf_pool_fast_id_(p);
    p->decay_ms = cfg.decay_ms;
    p->reclaim = nbuf_pool_trim_all_;
    p->can_purge = nbuf_backing_can_discard_(&p->backing);
    atomic_init(&p->background, !(cfg.flags & NBUF_POOL_NO_BACKGROUND));
    err = nbuf_huge_cache_init_(p);
    if (err)
        goto out_debug;
    err = nbuf_registry_add_(p);
    if (err)
        goto out_huge;
    return p;

out_huge:
    nbuf_huge_cache_fini_(p);
out_debug:
    nbuf_debug_pool_fini_(p);

out_arenas:
    arenas_destroy(p, i);
out_key:
    pthread_key_delete(p->tsd_key);
out_lock:
    pthread_mutex_destroy(&p->lock);
out_pool:
    free(p);
    errno = -err;
    return NULL;
}

/* Besides the entry counts, a bin holds at most this many bytes (and at
 * least 4 entries), so a cache of 28 KiB or 64 KiB buffers cannot pin
 * megabytes per thread: a per-class byte bound as in jemalloc's tcache. */
#define CACHE_CLASS_BYTES ((size_t)512 << 10)

static uint32_t
cache_cap(const struct nbuf_pool *p, unsigned szind)
{
    if (szind >= p->ncached)
        return 0;
    uint32_t count = szind < p->nsmall ? p->cfg.cache_small_count : p->cfg.cache_normal_count;
    size_t by_bytes = CACHE_CLASS_BYTES / nbuf_sz_usize_(szind);
    if (by_bytes < 4)
        by_bytes = 4;
    return count < by_bytes ? count : (uint32_t)by_bytes;
}

uint32_t
nbuf_pool_cache_cap_(const struct nbuf_pool *p, unsigned szind)
{
    return (p->cfg.flags & NBUF_POOL_NO_CACHE) ? 0 : cache_cap(p, szind);
}

/* The arena stash of a class holds two thread-cache bins' worth (also with
 * NBUF_POOL_NO_CACHE: it is shared, behind the arena lock). */
uint32_t
nbuf_pool_stash_cap_(const struct nbuf_pool *p, unsigned szind)
{
    return 2 * cache_cap(p, szind);
}

uint64_t
nbuf_pool_fast_id_(const struct nbuf_pool *p)
{
    /* The fast path serves every request up to NBUF_FAST_MAX from a bin
     * (uncached classes have empty bins), so the pool's own limit must not
     * be below it. */
    if (p->slow_alloc || p->cfg.max_buffer_size < NBUF_FAST_MAX)
        return NBUF_KEY_NONE;
    return p->id;
}

int
nbuf_pool_trim_all_(struct nbuf_pool *p)
{
    if (nbuf_tls_.pool_id == p->id && nbuf_tls_.tc)
        nbuf_tcache_flush_(nbuf_tls_.tc);
    else {
        struct nbuf_tcache *tc = pthread_getspecific(p->tsd_key);
        if (tc)
            nbuf_tcache_flush_(tc);
    }
    /* Other threads flush at their next cache miss or GC pass. */
    atomic_fetch_add(&p->trim_epoch, 1);
    for (unsigned i = 0; i < p->narenas; i++)
        nbuf_arena_trim_(&p->arenas[i], 0);
    nbuf_huge_trim_(p);
    nbuf_backing_purge_(&p->backing);
    return 0;
}

/* The API entry lives here, where a NULL pool is resolved; leak.c writes. */
NBUF_EXPORT int
nbuf_pool_leak_report(struct nbuf_pool *p, FILE *out)
{
    if (!(p = nbuf_pool_resolve_(p)))
        return -errno;
    uint64_t n = nbuf_leak_report_stream_(p, out);
    return n > INT_MAX ? INT_MAX : (int)n;
}

NBUF_EXPORT int
nbuf_pool_background(struct nbuf_pool *p, int on)
{
    if (!p)
        return -EINVAL;
    atomic_store(&p->background, on != 0);
    if (on)
        nbuf_decay_wake_(p, nbuf_pool_decay_(p, nbuf_decay_now_(p)));
    return 0;
}

void
nbuf_pool_set_clock_(struct nbuf_pool *p, uint64_t (*clock_ms)(void *ctx), void *ctx)
{
    p->clock_ctx = ctx;
    p->clock_ms = clock_ms;
}

NBUF_EXPORT int
nbuf_pool_trim(struct nbuf_pool *p)
{
    if (!p)
        return -EINVAL;
    return nbuf_pool_trim_all_(p);
}

NBUF_EXPORT int
nbuf_pool_free(struct nbuf_pool *p)
{
    if (!p || p->is_default)
        return -EINVAL;
    struct nbuf_pool_stats st;
    nbuf_pool_stats(p, &st);
    if (st.live_buffers || st.views) {
        nbuf_report_("nbuf: nbuf_pool_free(%p): %llu live buffers (%llu bytes requested) and "
                     "%llu live views\n",
                     (void *)p, (unsigned long long)st.live_buffers,
                     (unsigned long long)st.requested_bytes, (unsigned long long)st.views);
        nbuf_leak_report_pool_(p);
        return -EBUSY;
    }
    nbuf_registry_remove_(p);
    /* No buffer is live, so caches hold only idle pairs: take them all. The
     * owning threads never touch them again: their thread-local names this
     * pool's id, which is never reused. */
    pthread_mutex_lock(&p->lock);
    struct nbuf_tcache *tc = p->tcaches;
    p->tcaches = NULL;
    pthread_mutex_unlock(&p->lock);
    while (tc) {
        struct nbuf_tcache *next = tc->next;
        nbuf_tcache_flush_(tc);
        if (nbuf_tls_.tc == tc)
            memset(&nbuf_tls_, 0, sizeof(nbuf_tls_));
        free(tc);
        tc = next;
    }
    pthread_key_delete(p->tsd_key);
    nbuf_debug_pool_fini_(p);
    nbuf_huge_cache_fini_(p);
    arenas_destroy(p, p->narenas);
    nbuf_backing_purge_(&p->backing);
    pthread_mutex_destroy(&p->lock);
    free(p);
    return 0;
}

bool
nbuf_pool_check_(struct nbuf_pool *p)
{
    for (unsigned i = 0; i < p->narenas; i++) {
        struct nbuf_arena *a = &p->arenas[i];
        nbuf_arena_lock_(a);
        bool ok = nbuf_arena_check_(a);
        nbuf_arena_unlock_(a);
        if (!ok)
            return false;
    }
    if (nbuf_tls_.pool_id == p->id && nbuf_tls_.tc && !nbuf_tcache_check_(nbuf_tls_.tc))
        return false;
    if (p->cfg.memory_limit && atomic_load(&p->backing_bytes) > p->cfg.memory_limit)
        return false;
    return true;
}

/* ---- environment ---- */

/* A boolean variable: 1/on/yes/true or 0/off/no/false (any case); unset
 * or empty is false, anything else is reported and taken as false. */
static bool
env_true(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return false;
    static const char *const yes[] = {"1", "on", "yes", "true"};
    static const char *const no[] = {"0", "off", "no", "false"};
    for (unsigned i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return true;
        if (strcasecmp(v, no[i]) == 0)
            return false;
    }
    nbuf_report_("nbuf: ignoring %s=%s (1, on, yes, true or 0, off, no, false)\n", name, v);
    return false;
}

/* Flags that apply to every pool, so a whole test suite can run checked or
 * unpooled: NBUF_BYPASS, NBUF_CHECK, NBUF_ZERO, NBUF_SCRUB, NBUF_NO_CACHE. */
unsigned
nbuf_pool_env_flags_(void)
{
    unsigned f = 0;
    if (env_true("NBUF_BYPASS"))
        f |= NBUF_POOL_BYPASS;
    if (env_true("NBUF_CHECK"))
        f |= NBUF_POOL_CHECKED;
    if (env_true("NBUF_ZERO"))
        f |= NBUF_POOL_ZERO;
    if (env_true("NBUF_SCRUB"))
        f |= NBUF_POOL_SCRUB;
    if (env_true("NBUF_NO_CACHE"))
        f |= NBUF_POOL_NO_CACHE;
    const char *bg = getenv("NBUF_BACKGROUND");
    if (bg && *bg && !env_true("NBUF_BACKGROUND"))
        f |= NBUF_POOL_NO_BACKGROUND;
    return f;
}

/* "64k", "4M", "1g" or plain bytes; false (and *out untouched) if invalid. */
static bool
parse_size(const char *s, size_t *out)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '-' || *s == '+')
        return false; /* strtoull would wrap "-1" to SIZE_MAX */
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned shift = 0;
    switch (tolower((unsigned char)*end)) {
    case 'k':
        shift = 10;
        end++;
        break;
    case 'm':
        shift = 20;
        end++;
        break;
    case 'g':
        shift = 30;
        end++;
        break;
    default: break;
    }
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (*end || (shift && v > (ULLONG_MAX >> shift)) || (v << shift) > SIZE_MAX)
        return false;
    *out = (size_t)(v << shift);
    return true;
}

static void
env_size(const char *name, size_t *field)
{
    const char *v = getenv(name);
    if (v && !parse_size(v, field))
        nbuf_report_("nbuf: ignoring %s=%s (not a size)\n", name, v);
}

static void
env_unsigned(const char *name, unsigned *field)
{
    size_t v = *field;
    env_size(name, &v);
    if (v > UINT32_MAX)
        nbuf_report_("nbuf: ignoring %s=%s (too large)\n", name, getenv(name));
    else
        *field = (unsigned)v;
}

/* An integer of milliseconds, or -1. */
static void
env_decay(const char *name, int *field)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return;
    char *end;
    errno = 0;
    long ms = strtol(v, &end, 10);
    if (errno || *end || ms < -1 || ms > INT_MAX)
        nbuf_report_("nbuf: ignoring %s=%s (milliseconds, or -1 for never)\n", name, v);
    else
        *field = (int)ms;
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int default_errno;

static void
default_pool_create(void)
{
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    /* One variable at a time: a value the configuration cannot take (alone
     * or with the ones before it) is reported by name and dropped, and the
     * others still apply. */
#define APPLY(parse, name, field)                                                                  \
    do {                                                                                           \
        struct nbuf_pool_config before = cfg;                                                      \
        parse(name, &cfg.field);                                                                   \
        if (!config_valid(&cfg)) {                                                                 \
            nbuf_report_("nbuf: ignoring %s=%s (out of range, or not with the other settings)\n",  \
                         name, getenv(name));                                                      \
            cfg = before;                                                                          \
        }                                                                                          \
    } while (0)
    APPLY(env_size, "NBUF_PAGE_SIZE", page_size);
    APPLY(env_size, "NBUF_CHUNK_SIZE", chunk_size);
    APPLY(env_unsigned, "NBUF_ARENAS", arenas);
    APPLY(env_unsigned, "NBUF_CACHE_SMALL", cache_small_count);
    APPLY(env_unsigned, "NBUF_CACHE_NORMAL", cache_normal_count);
    APPLY(env_size, "NBUF_CACHE_MAX_SIZE", cache_max_size);
    APPLY(env_size, "NBUF_CACHE_LARGE", cache_large_bytes);
    APPLY(env_decay, "NBUF_DECAY_MS", decay_ms);
    APPLY(env_size, "NBUF_CACHE_THREAD", cache_thread_bytes);
    APPLY(env_size, "NBUF_MEMORY_LIMIT", memory_limit);
    APPLY(env_size, "NBUF_MAX_BUFFER_SIZE", max_buffer_size);
#undef APPLY
    const char *bk = getenv("NBUF_BACKING");
    if (bk && strcasecmp(bk, "mmap") == 0)
        cfg.backing = NBUF_BACKING_MMAP;
    else if (bk && strcasecmp(bk, "jemalloc") == 0 && nbuf_backing_has_jemalloc_())
        cfg.backing = NBUF_BACKING_JEMALLOC;
    else if (bk && *bk)
        nbuf_report_("nbuf: ignoring NBUF_BACKING=%s (mmap%s)\n", bk,
                     nbuf_backing_has_jemalloc_() ? " or jemalloc"
                                                  : "; this build has no jemalloc backing");
    cfg.huge_pages = env_true("NBUF_HUGE_PAGES");
    struct nbuf_pool *p = nbuf_pool_new(&cfg);
    if (!p) {
        nbuf_report_("nbuf: default pool: invalid NBUF_* settings, using defaults\n");
        p = nbuf_pool_new(NULL);
    }
    if (!p) {
        default_errno = errno;
        return;
    }
    p->is_default = true;
    nbuf_leak_default_pool_(p);
    atomic_store_explicit(&nbuf_default_pool_, p, memory_order_release);
}

NBUF_EXPORT unsigned
nbuf_version(void)
{
    return NBUF_VERSION;
}

NBUF_EXPORT struct nbuf_pool *
nbuf_pool_default(void)
{
    struct nbuf_pool *p = atomic_load_explicit(&nbuf_default_pool_, memory_order_acquire);
    if (likely(p != &nbuf_no_pool_))
        return p;
    pthread_once(&default_once, default_pool_create);
    p = atomic_load_explicit(&nbuf_default_pool_, memory_order_acquire);
    if (p != &nbuf_no_pool_)
        return p;
    errno = default_errno;
    return NULL;
}
