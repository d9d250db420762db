/* SPDX-License-Identifier: MIT */
/*
 * Reporting: every diagnostic nbuf prints (double releases, leaks, limit
 * failures, failed asserts) goes through nbuf_report_, which writes to stderr
 * or, in tests, to a hook that captures the text.
 * Layer: base; calls nothing.
 */
#include <stdarg.h>

#include "internal.h"

/* Tests set this to capture reports instead of printing them. */
void (*nbuf_report_hook_)(const char *msg);

void
nbuf_report_(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    void (*hook)(const char *) = __atomic_load_n(&nbuf_report_hook_, __ATOMIC_ACQUIRE);
    if (hook)
        hook(msg);
    else
        fputs(msg, stderr);
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
