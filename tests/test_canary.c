/* SPDX-License-Identifier: MIT */
/* Canaries (CHECKLIST G45): an overread into slack, a use after release, a
 * double release and a leak must each be *reported*: by AddressSanitizer
 * (ASan builds; the faulting access runs in a forked child whose stderr is
 * checked), by checked mode and by the leak detector (every build). */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

TestSuite(canary);

static struct nbuf_pool *child_pool;

static void
end_child(void)
{
    fflush(stderr);
    _exit(0);
}

/* Run @fn in a child with stderr captured into @text; returns the wait
 * status. */
static int
in_child(void (*fn)(void), char *text, size_t cap)
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
        atexit(end_child);
        child_pool = nbuf_pool_new(NULL);
        fn();
        fputs("canary: not detected\n", stderr);
        exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fds[0], text + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    text[len] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static void
skip_unless_asan(void)
{
#ifndef NBUF_ASAN
    cr_skip_test("needs an AddressSanitizer build");
#endif
    if (NBUF_RUNNING_ON_VALGRIND())
        cr_skip_test("not under valgrind");
}

/* The ASan report of a faulting child: killed or failed, with the kind. */
static void
expect_asan(int status, const char *text, const char *pooled_kind, const char *bypass_kind)
{
    cr_assert(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "child survived: %s", text);
    cr_assert(strstr(text, "ERROR: AddressSanitizer"), "no ASan report: %s", text);
    const char *kind = t_bypass() ? bypass_kind : pooled_kind;
    cr_assert(strstr(text, kind), "expected %s: %s", kind, text);
}

static volatile uint8_t sink;

/* A buffer whose max_capacity hides the class slack: one byte past it. */
static void
overread_slack(void)
{
    struct nbuf *b = nbuf_alloc_ex(child_pool, 100, 100, 0);
    nbuf_write(b, "x", 1);
    sink = nbuf_data(b)[100];
}

/* One byte past a full-class buffer, into its free neighbour. */
static void
overread_neighbour(void)
{
    struct nbuf *b = nbuf_alloc(child_pool, 64);
    if (nbuf_capacity(b) != 64)
        return;
    sink = nbuf_data(b)[64];
}

/* Memory still cached after its buffer was released. */
static void
use_after_release(void)
{
    struct nbuf *b = nbuf_alloc(child_pool, 300);
    nbuf_write(b, "secret", 6);
    const uint8_t *p = nbuf_data(b);
    nbuf_release(b);
    sink = p[0];
}

/* A large (page run) buffer written after release. */
static void
write_after_release(void)
{
    struct nbuf *b = nbuf_alloc(child_pool, 100000);
    uint8_t *p = nbuf_reserve(b, 10);
    nbuf_release(b);
    p[5] = 1;
}

/* A view's memory after the view and its root are gone. */
static void
view_after_release(void)
{
    struct nbuf *b = nbuf_alloc(child_pool, 1000);
    nbuf_write(b, "0123456789", 10);
    struct nbuf *s = nbuf_slice(b, 2, 3);
    const uint8_t *p = nbuf_data(s);
    nbuf_release(b);
    sink = p[0]; /* fine: the view keeps it */
    nbuf_release(s);
    sink = p[1];
}

Test(canary, asan_overread_into_slack)
{
    skip_unless_asan();
    static char text[1 << 16];
    int st = in_child(overread_slack, text, sizeof(text));
    expect_asan(st, text, "use-after-poison", "heap-buffer-overflow");
}

Test(canary, asan_overread_into_neighbour)
{
    skip_unless_asan();
    static char text[1 << 16];
    int st = in_child(overread_neighbour, text, sizeof(text));
    expect_asan(st, text, "use-after-poison", "heap-buffer-overflow");
}

Test(canary, asan_use_after_release)
{
    skip_unless_asan();
    static char text[1 << 16];
    int st = in_child(use_after_release, text, sizeof(text));
    expect_asan(st, text, "use-after-poison", "heap-use-after-free");
    st = in_child(write_after_release, text, sizeof(text));
    expect_asan(st, text, "use-after-poison", "heap-use-after-free");
    st = in_child(view_after_release, text, sizeof(text));
    expect_asan(st, text, "use-after-poison", "heap-use-after-free");
}

/* Checked mode: a double release and a use after release are refused and
 * reported with the buffer's history. */
Test(canary, checked_double_release_and_use)
{
    t_capture_reports();
    struct nbuf_pool_config cfg;
    nbuf_pool_config_init(&cfg);
    cfg.flags = NBUF_POOL_CHECKED;
    struct nbuf_pool *p = t_pool_new(&cfg);
    struct nbuf *b = nbuf_alloc(p, 100);
    nbuf_write(b, "data", 4);
    cr_assert_eq(nbuf_release(b), 1);
    cr_assert_eq(nbuf_release(b), -EINVAL);
    cr_assert_eq(t_reports(), 1);
    cr_assert(strstr(t_report_text(), "nbuf_release("), "%s", t_report_text());
    cr_assert(strstr(t_report_text(), "allocated (tracked"), "%s", t_report_text());
    cr_assert(strstr(t_report_text(), "released for the last time"), "%s", t_report_text());
    uint32_t v;
    cr_assert_eq(nbuf_read_u32(b, &v), -EINVAL);
    cr_assert_eq(t_reports(), 2);
    cr_assert(strstr(t_report_text(), "nbuf_read("), "%s", t_report_text());
    t_pool_done(p);
}

/* The leak detector names a leaked buffer. */
Test(canary, leak_reported)
{
    t_capture_reports();
    setenv("NBUF_LEAK", "full", 1);
    struct nbuf_pool *p = t_pool_new(NULL);
    unsetenv("NBUF_LEAK");
    struct nbuf *b = nbuf_alloc(p, 77);
    cr_assert_eq(nbuf_pool_free(p), -EBUSY);
    char ptr[32];
    snprintf(ptr, sizeof(ptr), "nbuf: leak: buffer %p", (void *)b);
    cr_assert(strstr(t_report_text(), ptr), "%s", t_report_text());
    cr_assert(strstr(t_report_text(), "requested 77) at:"), "%s", t_report_text());
    nbuf_release(b);
    t_pool_done(p);
}
