/* SPDX-License-Identifier: MIT */
/*
 * Reporting: every diagnostic nbuf prints (double releases, leaks, limit
 * failures, failed asserts) goes through nbuf_report_, which writes to stderr
 * or the user's report function, rate-limited per kind, or, in tests, to a
 * hook that captures the text.
 * Layer: base; calls nothing.
 */
#include <stdarg.h>
#include <time.h>

#include "internal.h"

/* Tests set this to capture every report, unlimited, instead of the sink. */
void (*nbuf_report_hook_)(const char *msg);

/* The user's sink (nbuf_set_report_fn) and the rate limiter, keyed by the
 * format string: a kind of report. All under report_lock (reports are slow
 * paths), which also makes the sink see one call at a time. */
#define REPORT_KINDS 16
#define REPORT_BURST 10
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*report_fn)(const char *msg, void *ctx);
static void *report_ctx;
static struct {
    const char *fmt;
    time_t window; /* the second its count is for */
    unsigned count;
    unsigned long long dropped;
} kinds[REPORT_KINDS];
static unsigned next_kind;

NBUF_EXPORT void
nbuf_set_report_fn(void (*fn)(const char *msg, void *ctx), void *ctx)
{
    pthread_mutex_lock(&report_lock);
    report_fn = fn;
    report_ctx = ctx;
    pthread_mutex_unlock(&report_lock);
}

static void
sink(const char *msg)
{
    if (report_fn)
        report_fn(msg, report_ctx);
    else
        fputs(msg, stderr);
}

/* Whether a report of this kind may go out now (report_lock held); first
 * tells the sink how many of the kind were dropped in earlier seconds. */
static bool
admit(const char *fmt)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    unsigned i = 0;
    while (i < REPORT_KINDS && kinds[i].fmt != fmt)
        i++;
    if (i == REPORT_KINDS) { /* a new kind takes the oldest slot */
        i = next_kind++ % REPORT_KINDS;
        kinds[i].fmt = fmt;
        kinds[i].window = ts.tv_sec;
        kinds[i].count = 0;
        kinds[i].dropped = 0;
    }
    if (kinds[i].window != ts.tv_sec) {
        if (kinds[i].dropped) {
            char note[128];
            snprintf(note, sizeof(note),
                     "nbuf: %llu more reports like the next one were left out\n", kinds[i].dropped);
            sink(note);
        }
        kinds[i].window = ts.tv_sec;
        kinds[i].count = 0;
        kinds[i].dropped = 0;
    }
    if (kinds[i].count >= REPORT_BURST) {
        kinds[i].dropped++;
        return false;
    }
    kinds[i].count++;
    return true;
}

void
nbuf_report_(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    void (*hook)(const char *) = __atomic_load_n(&nbuf_report_hook_, __ATOMIC_ACQUIRE);
    if (hook) {
        hook(msg);
        return;
    }
    pthread_mutex_lock(&report_lock);
    if (admit(fmt))
        sink(msg);
    pthread_mutex_unlock(&report_lock);
}

/* fork: the child must not inherit report_lock held by another thread. */
void
nbuf_report_fork_prepare_(void)
{
    pthread_mutex_lock(&report_lock);
}

void
nbuf_report_fork_parent_(void)
{
    pthread_mutex_unlock(&report_lock);
}

void
nbuf_report_fork_child_(void)
{
    pthread_mutex_unlock(&report_lock);
}

void
nbuf_assert_fail_(const char *expr, const char *file, int line)
{
    nbuf_report_("nbuf: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

#ifdef NBUF_HAVE_VALGRIND
/* See NBUF_RUNNING_ON_VALGRIND: asked once, before any pool exists. */
bool nbuf_on_valgrind_;

__attribute__((constructor(101))) static void
valgrind_probe(void)
{
    nbuf_on_valgrind_ = RUNNING_ON_VALGRIND != 0;
}
#endif
