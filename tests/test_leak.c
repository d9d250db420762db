/* SPDX-License-Identifier: MIT */
/* Leak detection: NBUF_LEAK=off|sample|full, the registry of live tracked
 * buffers, reports at nbuf_pool_free, on demand and at exit (CHECKLIST B15). */
#include <stdio.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

TestSuite(leak);

/* A pool whose leak mode is @mode (NBUF_LEAK is read at creation). */
static struct nbuf_pool *
pool_with(const char *mode)
{
    setenv("NBUF_LEAK", mode, 1);
    struct nbuf_pool *p = t_pool_new(NULL);
    unsetenv("NBUF_LEAK");
    return p;
}

/* The report nbuf_pool_leak_report() writes, as a string (caller frees). */
static char *
report_of(struct nbuf_pool *p, int *count)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    *count = nbuf_pool_leak_report(p, f);
    fclose(f);
    return text;
}

/* B15: three buffers, two released: nbuf_pool_free refuses and names the
 * live one with its allocation site; the pool stays usable. */
Test(leak, pool_free_names_the_leak)
{
    t_capture_reports();
    struct nbuf_pool *p = pool_with("full");
    struct nbuf *a = nbuf_alloc(p, 100), *b = nbuf_alloc(p, 2000), *c = nbuf_alloc(p, 30);
    nbuf_write(b, "leaked!", 7);
    nbuf_release(a);
    nbuf_release(c);
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    const char *text = t_report_text();
    char ptr[32];
    snprintf(ptr, sizeof(ptr), "%p", (void *)b);
    cr_assert(strstr(text, "1 tracked buffer of pool"), "%s", text);
    cr_assert(strstr(text, ptr), "names the buffer: %s", text);
    cr_assert(strstr(text, "capacity"), "%s", text);
    cr_assert(strstr(text, "readable 7"), "%s", text);
    cr_assert(strstr(text, "allocated (tracked allocation #2"), "%s", text);
    cr_assert(strstr(text, "#0 "), "with frames: %s", text);
    cr_assert_null(strstr(text, "#1,"), "only the live one");
    int n;
    char *r = report_of(p, &n);
    cr_assert_eq(n, 1);
    cr_assert(strstr(r, ptr));
    free(r);
    /* Still usable. */
    struct nbuf *d = nbuf_alloc(p, 10);
    cr_assert_not_null(d);
    nbuf_release(d);
    cr_assert(nbuf_leak_check_(p));
    nbuf_release(b);
    cr_assert(nbuf_leak_check_(p));
    r = report_of(p, &n);
    cr_assert_eq(n, 0);
    cr_assert_eq(strlen(r), 0, "nothing to say: %s", r);
    free(r);
    t_pool_done(p);
}

/* A static function: only libdw (the symbol table, not dladdr's dynamic
 * one) can name it. The write after the allocation keeps it off a tail call. */
static __attribute__((noinline)) struct nbuf *
leaky_helper(struct nbuf_pool *p)
{
    struct nbuf *b = nbuf_alloc(p, 100);
    cr_assert_not_null(b);
    nbuf_write(b, "x", 1);
    return b;
}

/* Issue 16, point 8: frames carry function names and, with debug info,
 * file:line; without libdw, the object and exported names as before. */
Test(leak, report_frames_name_functions_and_lines)
{
    struct nbuf_pool *p = pool_with("full");
    struct nbuf *b = leaky_helper(p);
    int n;
    char *r = report_of(p, &n);
    cr_assert_eq(n, 1);
#if NBUF_HAVE_LIBDW
    cr_assert(strstr(r, "leaky_helper+0x"), "names a static function: %s", r);
    cr_assert(strstr(r, "report_frames_name_functions_and_lines"), "and its caller: %s", r);
    cr_assert(strstr(r, "(test_leak)"), "and the object: %s", r);
#if T_DEBUG_INFO
    cr_assert(strstr(r, "leaky_helper+0x") &&
                  strstr(strstr(r, "leaky_helper+0x"), " at test_leak.c:"),
              "with its file:line: %s", r);
#endif
    /* Local debug info only: libdw's debuginfod client (libcurl, network
     * fetches) must not come in with a report. */
    cr_assert_null(dlopen("libdebuginfod.so.1", RTLD_NOW | RTLD_NOLOAD));
#else
    /* dladdr's form: object(exported name+0xoff) [address]; the main
     * program's object name is its argv[0] (Criterion's worker's). */
    cr_assert(strstr(r, "(+0x") && strstr(r, ") [0x"), "dladdr's frames: %s", r);
    cr_assert(strstr(r, "libcriterion.so.3(criterion_internal_test_main+0x"),
              "an exported name: %s", r);
#endif
    free(r);
    nbuf_release(b);
    t_pool_done(p);
}

/* The symbolizer's session outlives a report; a forked child reads its own
 * maps, and a report in the child still names frames. */
Test(leak, report_frames_named_in_a_forked_child)
{
    struct nbuf_pool *p = pool_with("full");
    struct nbuf *b = leaky_helper(p);
    int n;
    free(report_of(p, &n));
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct nbuf *c = leaky_helper(p);
        char *r = report_of(p, &n);
        int ok = n == 2 && strstr(r, "allocated (tracked allocation #2");
#if NBUF_HAVE_LIBDW
        ok = ok && strstr(r, "leaky_helper+0x");
#endif
        if (!ok)
            fprintf(stderr, "child report: %s\n", r);
        free(r);
        nbuf_release(c);
        _exit(ok ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    nbuf_release(b);
    t_pool_done(p);
}

Test(leak, full_mode_records_retain_release_sites)
{
    struct nbuf_pool *p = pool_with("full");
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_retain(b);
    nbuf_retain(b);
    nbuf_release(b);
    int n;
    char *r = report_of(p, &n);
    cr_assert_eq(n, 1);
    cr_assert(strstr(r, "retain (count then 2)"), "%s", r);
    cr_assert(strstr(r, "retain (count then 3)"), "%s", r);
    cr_assert(strstr(r, "release (count then 2)"), "%s", r);
    cr_assert(strstr(r, "last 3 of 3 retain/release sites"), "%s", r);
    free(r);
    /* The ring keeps the last four. */
    for (int i = 0; i < 10; i++) {
        nbuf_retain(b);
        nbuf_release(b);
    }
    r = report_of(p, &n);
    cr_assert(strstr(r, "last 4 of 23 retain/release sites"), "%s", r);
    free(r);
    nbuf_release(b);
    nbuf_release(b);
    cr_assert_eq(nbuf_pool_leak_report(p, NULL), 0);
    t_pool_done(p);
}

Test(leak, views_and_wraps_are_tracked)
{
    struct nbuf_pool *p = pool_with("full");
    struct nbuf *b = nbuf_alloc(p, 64);
    nbuf_write(b, "abcdef", 6);
    struct nbuf *s = nbuf_slice(b, 1, 2);
    nbuf_release(b);
    int n;
    char *r = report_of(p, &n);
    cr_assert_eq(n, 2, "the view and the root it keeps alive");
    cr_assert(strstr(r, "view, capacity 2"), "%s", r);
    cr_assert(strstr(r, ", capacity 64, refcount 1, readable 6"), "the root: %s", r);
    free(r);
    nbuf_release(s);
    cr_assert_eq(nbuf_pool_leak_report(p, NULL), 0);
    /* Growth keeps the header (and its record). */
    b = nbuf_alloc(p, 16);
    for (int i = 0; i < 1000; i++)
        nbuf_write_u32(b, (uint32_t)i);
    cr_assert_eq(nbuf_pool_leak_report(p, NULL), 1);
    nbuf_release(b);
    cr_assert_eq(nbuf_pool_leak_report(p, NULL), 0);
    t_pool_done(p);
}

Test(leak, sample_mode_tracks_about_one_in_128)
{
    struct nbuf_pool *p = pool_with("sample");
    if (p->leaks->checked) {
        t_pool_done(p);
        cr_skip_test("checked mode tracks every buffer");
    }
    enum { N = 128 * 40 };
    struct nbuf **v = malloc(N * sizeof(*v));
    for (int i = 0; i < N; i++)
        v[i] = nbuf_alloc(p, (size_t)(16 + i % 3000));
    cr_assert(nbuf_leak_check_(p));
    int n = nbuf_pool_leak_report(p, NULL);
    cr_assert(n >= 12 && n <= 90, "%d of %d tracked (expect about 40)", n, N);
    char *r = report_of(p, &n);
    cr_assert(strstr(r, "sampled"), "%s", r);
    free(r);
    for (int i = 0; i < N; i++)
        nbuf_release(v[i]);
    free(v);
    cr_assert_eq(nbuf_pool_leak_report(p, NULL), 0);
    t_pool_done(p);
}

Test(leak, off_mode_tracks_nothing)
{
    t_capture_reports();
    struct nbuf_pool *p = pool_with("off");
    if (p->cfg.flags & NBUF_POOL_CHECKED) {
        t_pool_done(p);
        cr_skip_test("checked mode tracks every buffer");
    }
    cr_assert_null(p->leaks);
    if (!t_bypass() && !NBUF_RUNNING_ON_VALGRIND())
        cr_assert(nbuf_pool_fast_(p), "fast paths stay on");
    struct nbuf *b = nbuf_alloc(p, 64);
    cr_assert_eq(nbuf_pool_leak_report(p, stderr), 0);
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    cr_assert(strstr(t_report_text(), "1 live buffers"), "%s", t_report_text());
    cr_assert(strstr(t_report_text(), "NBUF_LEAK=full"), "%s", t_report_text());
    nbuf_release(b);
    t_pool_done(p);
}

Test(leak, invalid_setting_is_reported)
{
    t_capture_reports();
    struct nbuf_pool *p = pool_with("sometimes");
    cr_assert(strstr(t_report_text(), "ignoring NBUF_LEAK=sometimes"), "%s", t_report_text());
    t_pool_done(p);
}

static void
end_child(void)
{
    fflush(stderr);
    _exit(0);
}

/* Run @fn in a child whose stderr is captured; returns the text (free it). */
static char *
child_stderr(void (*fn)(void), int *status)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        /* Registered before nbuf's handler, so it runs after it: ends the
         * child before LeakSanitizer's exit-time check adds its noise. */
        atexit(end_child);
        fn();
        exit(0); /* atexit handlers run */
    }
    close(fds[1]);
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    ssize_t r;
    while ((r = read(fds[0], text + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    text[len] = 0;
    close(fds[0]);
    waitpid(pid, status, 0);
    return text;
}

static void
leak_from_default_pool(void)
{
    setenv("NBUF_LEAK", "full", 1);
    struct nbuf *b = nbuf_alloc(NULL, 123);
    nbuf_write(b, "bye", 3);
    struct nbuf *ok = nbuf_alloc(NULL, 5);
    nbuf_release(ok);
}

static void
no_leak_from_default_pool(void)
{
    setenv("NBUF_LEAK", "full", 1);
    nbuf_release(nbuf_alloc(NULL, 123));
    static char data[4];
    nbuf_release(nbuf_wrap(data, 4, NULL, NULL));
}

Test(leak, default_pool_reports_at_exit)
{
    int status;
    static char copy[1 << 16];
    char *text = child_stderr(leak_from_default_pool, &status);
    snprintf(copy, sizeof(copy), "%s", text);
    free(text);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert(strstr(copy, "nbuf: at exit: 1 tracked buffer of pool"), "%s", copy);
    cr_assert(strstr(copy, "readable 3"), "%s", copy);
    text = child_stderr(no_leak_from_default_pool, &status);
    snprintf(copy, sizeof(copy), "%s", text);
    free(text);
    cr_assert_eq(strlen(copy), 0, "silent without leaks: %s", copy);
}
