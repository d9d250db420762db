/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <pthread.h>

struct nbuf_pool *
t_pool_new(const struct nbuf_pool_config *cfg)
{
    struct nbuf_pool *p = nbuf_pool_new(cfg);
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
    cr_assert_eq(st.live_buffers, 0, "%llu buffers still live", (unsigned long long)st.live_buffers);
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
