/* SPDX-License-Identifier: MIT */
/*
 * Allocation benchmark driver. Runs the bench_alloc_<variant> executables (nbuf on a pool of
 * its own, nbuf-default on the default pool, and each peer allocator, one process per run so
 * that each links and serves only its own malloc) alternately, several repetitions of every
 * workload with the variant order rotated, and prints a Markdown table of medians with each nbuf
 * variant's ratio to the best peer and the verdict of each target of docs/api.md, "Performance
 * targets" (which holds the default pool and an explicit pool to the same targets; they are never
 * each other's peer).
 * Variants come from the command line, or are looked up next to this executable. With --tsv
 * FILE it also writes every repetition, the medians and the RSS over the (d) trace of each
 * variant as tab-separated records for tests/bench/report.py. With --callgrind it counts
 * instructions per operation of every variant under valgrind instead (see run_callgrind()).
 * Workload (d) ends with an idle before its trim (3 s, 0.5 s in quick mode; d.idle), which only the
 * first --idle-reps runs take, so that the idle does not dominate the time of a full run.
 */
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_VARIANTS 8
#define MAX_REPS 31
#define MAX_INFO 4 /* "# ..." lines kept per variant and workload */

static const char *const known_variants[] = {"nbuf",     "nbuf-default", "glibc",
                                             "jemalloc", "tcmalloc",     "mimalloc"};

enum better { LOWER, HIGHER };
enum target {
    T_NONE,     /* reported, no target */
    T_PEER,     /* nbuf no worse than the best peer */
    T_ABS,      /* nbuf's own value at most limit */
    T_ABS_PEER, /* both: at most limit, and no worse than the best peer */
};

struct row {
    const char *key;      /* as printed by the variant */
    const char *workload; /* variant argument that produces it */
    const char *label;
    const char *unit;
    enum better better;
    enum target target;
    double limit; /* T_ABS */
};

static const struct row rows[] = {
    {"a.64", "pairs", "(a) alloc+release pair, 64 B", "ns", LOWER, T_PEER, 0},
    {"a.1024", "pairs", "(a) pair, 1 KiB", "ns", LOWER, T_PEER, 0},
    {"a.4096", "pairs", "(a) pair, 4 KiB", "ns", LOWER, T_PEER, 0},
    {"a.16384", "pairs", "(a) pair, 16 KiB", "ns", LOWER, T_PEER, 0},
    {"a.65536", "pairs", "(a) pair, 64 KiB", "ns", LOWER, T_PEER, 0},
    {"a.1048576", "pairs", "(a) pair, 1 MiB", "ns", LOWER, T_NONE, 0},
    {"b", "live", "(b) 1000 live, 64 B-64 KiB, per replacement", "ns", LOWER, T_PEER, 0},
    {"c.mbps", "pc", "(c) producer -> consumer thread", "M buf/s", HIGHER, T_PEER, 0},
    {"c.hwm", "pc", "(c) peak RSS (VmHWM)", "MiB", LOWER, T_PEER, 0},
    {"d.ratio", "rss", "(d) RSS growth / live requested, steady", "x", LOWER, T_ABS_PEER, 1.15},
    /* The label names the idle the variants took: see row_label(). */
    {"d.idle", "rss", "(d) RSS after free all + idle, no trim, minus start", "MiB", LOWER, T_ABS,
     8.0},
    {"d.after", "rss", "(d) RSS after free all + trim, minus start", "MiB", LOWER, T_ABS, 8.0},
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static const char *const workloads[] = {"pairs", "live", "pc", "rss"};
#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

struct variant {
    const char *name;
    char path[PATH_MAX];
    char desc[512];                       /* "variant ..." and "malloc ..." lines */
    char info[NWORKLOADS][MAX_INFO][256]; /* per workload: the "# ..." lines of the first run */
    unsigned ninfo[NWORKLOADS];
    bool failed;
    double val[NROWS][MAX_REPS];
    unsigned nval[NROWS];
};

static struct variant variants[MAX_VARIANTS];
static unsigned nvariants;
static bool quick, verbose;
static unsigned reps = 7;
static const char *only;
static const char *tsv_path;       /* --tsv FILE */
static char series_path[PATH_MAX]; /* the variants append their (d) RSS samples here */
static unsigned idle_reps = 3;     /* (d): the runs that idle before the trim (the first ones) */
static double idle_s = -1;         /* (d): the idle the variants took (their d.idle_s), in s */

static void
add_variant(const char *name, const char *path)
{
    if (nvariants == MAX_VARIANTS)
        return;
    struct variant *v = &variants[nvariants++];
    v->name = name;
    snprintf(v->path, sizeof(v->path), "%s", path);
}

/* Name a variant by its executable: bench_alloc_<name>. */
static void
add_variant_path(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    const char *base = basename(tmp);
    for (size_t i = 0; i < sizeof(known_variants) / sizeof(known_variants[0]); i++) {
        const char *n = known_variants[i];
        if (strncmp(base, "bench_alloc_", 12) == 0 && strcmp(base + 12, n) == 0) {
            add_variant(n, path);
            return;
        }
    }
    fprintf(stderr, "bench_alloc: ignoring %s (not bench_alloc_<variant>)\n", path);
}

static void
find_variants_next_to_self(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return;
    self[n] = 0;
    const char *dir = dirname(self);
    for (size_t i = 0; i < sizeof(known_variants) / sizeof(known_variants[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/bench_alloc_%s", dir, known_variants[i]);
        if (access(path, X_OK) == 0)
            add_variant(known_variants[i], path);
    }
}

/* nbuf and nbuf-default: the allocators under test, the rest are their peers. */
static bool
is_nbuf(const struct variant *v)
{
    return strncmp(v->name, "nbuf", 4) == 0;
}

/* The row's label; d.idle's names the idle the variants took (shorter in quick mode). */
static const char *
row_label(size_t r)
{
    static char idle[128];
    if (strcmp(rows[r].key, "d.idle") != 0 || idle_s < 0)
        return rows[r].label;
    snprintf(idle, sizeof(idle), "(d) RSS after free all + %g s idle, no trim, minus start%s",
             idle_s, idle_s < 3 ? " (docs/api.md: 3 s)" : "");
    return idle;
}

static int
row_of(const char *key)
{
    for (size_t r = 0; r < NROWS; r++) {
        if (strcmp(rows[r].key, key) == 0)
            return (int)r;
    }
    return -1;
}

/* Run one variant on one workload and file its "key value" lines; @series (or NULL): the file
 * the variant appends its RSS samples of workload (d) to; @first: the first run of @workload, whose
 * "# ..." lines are kept; @idle: (d) idles before the trim (the variant's default length). */
static bool
run_variant(struct variant *v, const char *workload, const char *series, bool first, bool idle)
{
    size_t wi = NWORKLOADS;
    for (size_t w = 0; w < NWORKLOADS; w++) {
        if (strcmp(workloads[w], workload) == 0)
            wi = w;
    }
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        char *args[8], **a = args;
        *a++ = v->path;
        *a++ = (char *)workload;
        if (quick)
            *a++ = "--quick";
        if (!idle) {
            *a++ = "--idle";
            *a++ = "0";
        }
        if (series) {
            *a++ = "--series";
            *a++ = (char *)series;
        }
        *a = NULL;
        execv(v->path, args);
        fprintf(stderr, "bench_alloc: exec %s: %s\n", v->path, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (in && (len = getline(&line, &cap, in)) > 0) {
        if (line[len - 1] == '\n')
            line[len - 1] = 0;
        if (verbose)
            fprintf(stderr, "  %-8s %s\n", v->name, line);
        if (line[0] == '#') {
            if (first && wi < NWORKLOADS && v->ninfo[wi] < MAX_INFO)
                snprintf(v->info[wi][v->ninfo[wi]++], sizeof(v->info[wi][0]), "%s", line + 2);
            continue;
        }
        if (strncmp(line, "variant ", 8) == 0 || strncmp(line, "malloc ", 7) == 0 ||
            strncmp(line, "backing ", 8) == 0) {
            if (!strstr(v->desc, line) && strlen(v->desc) + strlen(line) + 3 < sizeof(v->desc)) {
                strcat(v->desc, v->desc[0] ? "; " : "");
                strcat(v->desc, line);
            }
            continue;
        }
        char key[64];
        double x;
        if (sscanf(line, "%63s %lf", key, &x) != 2)
            continue;
        if (strcmp(key, "d.idle_s") == 0) {
            idle_s = x;
            continue;
        }
        int r = row_of(key);
        if (r >= 0 && v->nval[r] < MAX_REPS)
            v->val[r][v->nval[r]++] = x;
    }
    free(line);
    if (in)
        fclose(in);
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_alloc: %s %s failed (status %d): its numbers are dropped\n", v->name,
                workload, status);
        return false;
    }
    return true;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of a variant's repetitions, or -1 when it has none. */
static double
median(const struct variant *v, size_t r)
{
    unsigned n = v->nval[r];
    if (n == 0 || v->failed)
        return -1;
    double tmp[MAX_REPS];
    memcpy(tmp, v->val[r], n * sizeof(double));
    qsort(tmp, n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static void
print_value(double x)
{
    if (x < 0)
        printf(" n/a |");
    else if (x >= 100)
        printf(" %.0f |", x);
    else if (x >= 10)
        printf(" %.1f |", x);
    else
        printf(" %.2f |", x);
}

/* The 1-minute load average: other work on the machine skews every number. */
static double
loadavg(void)
{
    double x = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &x) != 1)
            x = -1;
        fclose(f);
    }
    return x;
}

static double load_before, load_after;

static void
print_machine(void)
{
    char model[256] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(model, sizeof(model), "%s", p + 2);
                model[strcspn(model, "\n")] = 0;
            }
            break;
        }
    }
    if (f)
        fclose(f);
    struct utsname u;
    uname(&u);
    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d", localtime(&t));
    printf("Machine: %s, %ld CPUs, Linux %s; %s; %s mode, median of %u run%s per variant; "
           "load average %.2f before, %.2f after.\n\n",
           model, sysconf(_SC_NPROCESSORS_ONLN), u.release, date, quick ? "quick" : "full", reps,
           reps == 1 ? "" : "s", load_before, load_after);
}

/* A cost ratio either way: above 1.00 means worse than the best peer; -1 when not known. */
static double
cost_ratio(enum better better, double x, double best)
{
    if (x >= 0 && best > 0)
        return better == LOWER ? x / best : (x > 0 ? best / x : -1);
    if (x >= 0 && best == 0)
        return x == 0 ? 1 : -1;
    return -1;
}

/* One nbuf variant's ratio and verdict cells; returns 1 when it misses the target. */
static int
print_verdict(const struct row *row, double x, double ratio)
{
    if (ratio < 0)
        printf(" n/a |");
    else
        printf(" %.2f |", ratio);
    switch (row->target) {
    case T_NONE: printf(" (none) |"); break;
    case T_PEER:
        if (ratio < 0)
            printf(" n/a |");
        else if (ratio <= 1.0)
            printf(" meets |");
        else {
            printf(" **misses by %.0f%%** |", (ratio - 1) * 100);
            return 1;
        }
        break;
    case T_ABS:
        if (x < 0)
            printf(" n/a |");
        else if (x <= row->limit)
            printf(" meets (<= %g %s) |", row->limit, row->unit);
        else {
            printf(" **misses (> %g %s)** |", row->limit, row->unit);
            return 1;
        }
        break;
    case T_ABS_PEER:
        if (x < 0 || ratio < 0)
            printf(" n/a |");
        else if (x <= row->limit && ratio <= 1.0)
            printf(" meets (<= %g %s, <= best peer) |", row->limit, row->unit);
        else {
            printf(" **misses (");
            if (x > row->limit)
                printf("> %g %s%s", row->limit, row->unit, ratio > 1.0 ? "; " : "");
            if (ratio > 1.0)
                printf("best peer by %.0f%%", (ratio - 1) * 100);
            printf(")** |");
            return 1;
        }
        break;
    }
    return 0;
}

/* What the (d) rows are held to, in words, with the idle this run took. */
static void
print_rss_targets(void)
{
    unsigned n = idle_reps < reps ? idle_reps : reps;
    printf("(d) targets (docs/api.md): steady RSS growth / live requested <= 1.15 and no more than "
           "the "
           "best peer's in this run; after free all and an idle of 3 s with no trim call, within "
           "8 MiB of the start");
    if (idle_s < 0)
        printf(" (no run idled: no d.idle)");
    else
        printf(" (this run idled %g s%s; d.idle is ", idle_s,
               idle_s < 3 ? ", not 3 s: its verdict is not docs/api.md's" : "");
    if (idle_s >= 0 && n == 1)
        printf("from the first run)");
    else if (idle_s >= 0)
        printf("the median of the first %u runs)", n);
    printf("; after free all and the trim, within two chunks (8 MiB). ");
}

/* The table, with a ratio and a verdict per nbuf variant; @missed: the count per variant. */
static void
print_table(int missed[MAX_VARIANTS])
{
    printf("| workload | unit |");
    for (unsigned i = 0; i < nvariants; i++)
        printf(" %s |", variants[i].name);
    printf(" best peer |");
    for (unsigned i = 0; i < nvariants; i++) {
        if (is_nbuf(&variants[i]))
            printf(" %s / best | %s target |", variants[i].name, variants[i].name);
    }
    printf("\n|---|---|");
    for (unsigned i = 0; i < nvariants; i++)
        printf("---:|");
    printf("---|");
    for (unsigned i = 0; i < nvariants; i++) {
        if (is_nbuf(&variants[i]))
            printf("---:|---|");
    }
    printf("\n");
    for (size_t r = 0; r < NROWS; r++) {
        if (only && strcmp(only, rows[r].workload) != 0)
            continue;
        printf("| %s | %s |", row_label(r), rows[r].unit);
        double best = -1;
        const char *best_name = "n/a";
        for (unsigned i = 0; i < nvariants; i++) {
            double m = median(&variants[i], r);
            print_value(m);
            if (is_nbuf(&variants[i]) || m < 0)
                continue;
            bool better = rows[r].better == LOWER ? m < best : m > best;
            if (best < 0 || better) {
                best = m;
                best_name = variants[i].name;
            }
        }
        printf(" %s |", best_name);
        for (unsigned i = 0; i < nvariants; i++) {
            if (!is_nbuf(&variants[i]))
                continue;
            double x = median(&variants[i], r);
            missed[i] += print_verdict(&rows[r], x, cost_ratio(rows[r].better, x, best));
        }
        printf("\n");
    }
}

static const char *
tsv_text(const char *s)
{
    /* Tabs and newlines would break the record; the texts here have none, but be sure. */
    static char buf[1024];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *p = buf; *p; p++) {
        if (*p == '\t' || *p == '\n')
            *p = ' ';
    }
    return buf;
}

/*
 * --tsv FILE, one record per line, the kind first:
 *   meta <key> <value>   (idle_s: (d)'s idle in s; idle_reps: the runs that took it)
 *   variant <name> <description> <ok|failed> <nbuf|peer>
 *   info <variant> <workload> <text>
 *   row <key> <label> <unit> <lower|higher> <none|peer|abs|abs+peer> <limit>
 *   value <row key> <variant> <repetition> <value>
 *   median <row key> <variant> <value>
 *   rss <variant> <phase> <operation> <ms> <RSS MiB> <live requested MiB>
 */
static int
write_tsv(void)
{
    FILE *f = fopen(tsv_path, "w");
    if (!f) {
        fprintf(stderr, "bench_alloc: %s: %s\n", tsv_path, strerror(errno));
        return 1;
    }
    fprintf(f, "# bench_alloc --tsv: see the comment above write_tsv() in bench_alloc.c\n");
    fprintf(f, "meta\tmode\t%s\nmeta\treps\t%u\n", quick ? "quick" : "full", reps);
    fprintf(f, "meta\tload_before\t%.2f\nmeta\tload_after\t%.2f\n", load_before, load_after);
    if (idle_s >= 0)
        fprintf(f, "meta\tidle_s\t%g\nmeta\tidle_reps\t%u\n", idle_s,
                idle_reps < reps ? idle_reps : reps);
    for (unsigned i = 0; i < nvariants; i++) {
        const struct variant *v = &variants[i];
        fprintf(f, "variant\t%s\t%s\t%s\t%s\n", v->name, tsv_text(v->desc),
                v->failed ? "failed" : "ok", is_nbuf(v) ? "nbuf" : "peer");
        for (size_t w = 0; w < NWORKLOADS; w++) {
            for (unsigned k = 0; k < v->ninfo[w]; k++)
                fprintf(f, "info\t%s\t%s\t%s\n", v->name, workloads[w], tsv_text(v->info[w][k]));
        }
    }
    static const char *const target_names[] = {"none", "peer", "abs", "abs+peer"};
    for (size_t r = 0; r < NROWS; r++) {
        if (only && strcmp(only, rows[r].workload) != 0)
            continue;
        fprintf(f, "row\t%s\t%s\t%s\t%s\t%s\t%g\n", rows[r].key, row_label(r), rows[r].unit,
                rows[r].better == LOWER ? "lower" : "higher", target_names[rows[r].target],
                rows[r].limit);
        for (unsigned i = 0; i < nvariants; i++) {
            const struct variant *v = &variants[i];
            if (v->failed)
                continue;
            for (unsigned k = 0; k < v->nval[r]; k++)
                fprintf(f, "value\t%s\t%s\t%u\t%.6g\n", rows[r].key, v->name, k, v->val[r][k]);
            double m = median(v, r);
            if (m >= 0)
                fprintf(f, "median\t%s\t%s\t%.6g\n", rows[r].key, v->name, m);
        }
    }
    /* The variants' RSS samples, as they wrote them. */
    FILE *in = fopen(series_path, "r");
    char line[512];
    while (in && fgets(line, sizeof(line), in))
        fputs(line, f);
    if (in)
        fclose(in);
    unlink(series_path);
    if (fclose(f) != 0) {
        fprintf(stderr, "bench_alloc: writing %s failed\n", tsv_path);
        return 1;
    }
    return 0;
}

/* ---- --callgrind: instructions per operation, which do not move with the machine's load ---- */

/* One valgrind run per variant and workload, counting inside one function of the variant's. */
static const struct cg_run {
    const char *workload;
    const char *fn;      /* --toggle-collect: only this function and its callees count */
    bool per_call;       /* --dump-after: a dump per call, one measured call per key printed */
    unsigned long iters; /* operations per key */
} cg_runs[] = {
    {"pairs", "run_pairs", true, 200000}, /* each size of (a) in one call, dumped on its own */
    {"live", "run_live", false, 200000},  /* (b): batches of 1000, all of them counted */
};
#define NCG_RUNS (sizeof(cg_runs) / sizeof(cg_runs[0]))

static const struct cg_run *
cg_run_of(const char *workload)
{
    for (size_t w = 0; w < NCG_RUNS; w++) {
        if (strcmp(cg_runs[w].workload, workload) == 0)
            return &cg_runs[w];
    }
    return NULL;
}

/* The instruction total of a callgrind dump, or -1. */
static double
callgrind_total(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[256];
    double total = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "totals: %lf", &total) == 1)
            break;
    }
    if (f)
        fclose(f);
    return total;
}

static void
remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Runs @v's workload of @run under callgrind; files the instructions per operation of every key
 * it prints in @out (by row). False when valgrind or the variant failed, or the count is off. */
static bool
callgrind_variant(const struct variant *v, const struct cg_run *run, double out[NROWS])
{
    char dir[] = "/tmp/bench_alloc.callgrind.XXXXXX";
    if (!mkdtemp(dir))
        return false;
    char out_arg[PATH_MAX], toggle[64], dump[64], iters_s[32], path[PATH_MAX];
    snprintf(out_arg, sizeof(out_arg), "--callgrind-out-file=%s/out", dir);
    snprintf(toggle, sizeof(toggle), "--toggle-collect=%s", run->fn);
    snprintf(dump, sizeof(dump), "--dump-after=%s", run->fn);
    snprintf(iters_s, sizeof(iters_s), "%lu", run->iters);
    int fds[2];
    if (pipe(fds) != 0) {
        rmdir(dir);
        return false;
    }
    fflush(stdout); /* or the child flushes our buffer a second time */
    pid_t pid = fork();
    if (pid < 0) {
        rmdir(dir);
        return false;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (!freopen("/dev/null", "w", stderr)) /* valgrind's own report */
            _exit(127);
        char *args[12], **a = args;
        *a++ = "valgrind";
        *a++ = "--tool=callgrind";
        *a++ = out_arg;
        *a++ = toggle;
        if (run->per_call)
            *a++ = dump;
        *a++ = (char *)v->path;
        *a++ = (char *)run->workload;
        *a++ = "--iters";
        *a++ = iters_s;
        *a = NULL;
        execvp("valgrind", args);
        _exit(127);
    }
    close(fds[1]);
    /* The keys the variant prints, in the order of its measured calls (and so of the dumps). */
    int keys[NROWS];
    unsigned nkeys = 0;
    FILE *in = fdopen(fds[0], "r");
    char line[256], key[64];
    double x;
    while (in && fgets(line, sizeof(line), in)) {
        int r;
        if (sscanf(line, "%63s %lf", key, &x) == 2 && (r = row_of(key)) >= 0 &&
            strcmp(rows[r].workload, run->workload) == 0 && nkeys < NROWS)
            keys[nkeys++] = r;
    }
    if (in)
        fclose(in);
    int status = -1;
    bool ok = waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
              nkeys > 0 && (run->per_call || nkeys == 1);
    double got[NROWS];
    for (unsigned k = 0; ok && k < nkeys; k++) {
        if (run->per_call)
            snprintf(path, sizeof(path), "%s/out.%u", dir, k + 1);
        else
            snprintf(path, sizeof(path), "%s/out", dir);
        got[k] = callgrind_total(path);
        /* 0: no function of that name ran (inlined or cloned away), nothing was counted. */
        ok = got[k] > 0;
    }
    /* One dump too many: a call besides the measured ones was counted. */
    snprintf(path, sizeof(path), "%s/out.%u", dir, nkeys + 1);
    if (run->per_call && access(path, F_OK) == 0)
        ok = false;
    for (unsigned k = 0; ok && k < nkeys; k++)
        out[keys[k]] = got[k] / (double)run->iters;
    remove_dir(dir);
    if (!ok)
        fprintf(stderr, "bench_alloc: callgrind %s %s failed (status %d)\n", v->name, run->workload,
                status);
    return ok;
}

/*
 * Instructions per operation of every variant under callgrind: each size of (a) and (b), a
 * fixed count each, counted inside the benchmark loop only (run_pairs, run_live: the loop and
 * its one-byte store included, the warm-up not). With --tsv FILE, records:
 *   meta <key> <value>
 *   variant <name> <nbuf|peer> <ok|failed>
 *   op <row key> <label> <operations counted>
 *   callgrind <row key> <variant> <instructions per operation, or n/a>
 */
static int
run_callgrind(void)
{
    static double cg[MAX_VARIANTS][NROWS];
    bool failed[MAX_VARIANTS] = {false};
    int status = 0;
    for (unsigned i = 0; i < nvariants; i++) {
        for (size_t r = 0; r < NROWS; r++)
            cg[i][r] = -1;
        for (size_t w = 0; w < NCG_RUNS; w++) {
            if (only && strcmp(only, cg_runs[w].workload) != 0)
                continue;
            fprintf(stderr, "bench_alloc: callgrind %s %s\n", variants[i].name,
                    cg_runs[w].workload);
            if (!callgrind_variant(&variants[i], &cg_runs[w], cg[i])) {
                failed[i] = true;
                status = 1;
            }
        }
    }

    printf("Instructions per operation under callgrind (valgrind --tool=callgrind, counted inside "
           "the benchmark loop only, its loop and one-byte store included): %lu pairs per size "
           "for (a), %lu replacements for (b).\n\n",
           cg_run_of("pairs")->iters, cg_run_of("live")->iters);
    printf("| operation |");
    for (unsigned i = 0; i < nvariants; i++)
        printf(" %s |", variants[i].name);
    printf(" fewest peer |");
    for (unsigned i = 0; i < nvariants; i++) {
        if (is_nbuf(&variants[i]))
            printf(" %s / fewest |", variants[i].name);
    }
    printf("\n|---|");
    for (unsigned i = 0; i < nvariants; i++)
        printf("---:|");
    printf("---|");
    for (unsigned i = 0; i < nvariants; i++) {
        if (is_nbuf(&variants[i]))
            printf("---:|");
    }
    printf("\n");
    for (size_t r = 0; r < NROWS; r++) {
        if (!cg_run_of(rows[r].workload) || (only && strcmp(only, rows[r].workload) != 0))
            continue;
        printf("| %s |", rows[r].label);
        double best = -1;
        const char *best_name = "n/a";
        for (unsigned i = 0; i < nvariants; i++) {
            if (cg[i][r] < 0)
                printf(" n/a |");
            else
                printf(" %.1f |", cg[i][r]);
            if (!is_nbuf(&variants[i]) && cg[i][r] > 0 && (best < 0 || cg[i][r] < best)) {
                best = cg[i][r];
                best_name = variants[i].name;
            }
        }
        printf(" %s |", best_name);
        for (unsigned i = 0; i < nvariants; i++) {
            if (!is_nbuf(&variants[i]))
                continue;
            if (cg[i][r] < 0 || best < 0)
                printf(" n/a |");
            else
                printf(" %.2f |", cg[i][r] / best);
        }
        printf("\n");
    }
    printf("\n<nbuf variant> / fewest: its instructions over the fewest of any peer's; "
           "below 1.00 nbuf runs fewer.\n");

    if (!tsv_path)
        return status;
    FILE *tsv = fopen(tsv_path, "w");
    if (!tsv) {
        fprintf(stderr, "bench_alloc: %s: %s\n", tsv_path, strerror(errno));
        return 1;
    }
    fprintf(tsv, "# bench_alloc --callgrind --tsv: see the comment above run_callgrind() in "
                 "bench_alloc.c\nmeta\ttool\tcallgrind\n");
    for (unsigned i = 0; i < nvariants; i++)
        fprintf(tsv, "variant\t%s\t%s\t%s\n", variants[i].name,
                is_nbuf(&variants[i]) ? "nbuf" : "peer", failed[i] ? "failed" : "ok");
    for (size_t r = 0; r < NROWS; r++) {
        const struct cg_run *run = cg_run_of(rows[r].workload);
        if (!run || (only && strcmp(only, rows[r].workload) != 0))
            continue;
        fprintf(tsv, "op\t%s\t%s\t%lu\n", rows[r].key, rows[r].label, run->iters);
        for (unsigned i = 0; i < nvariants; i++) {
            if (cg[i][r] < 0)
                fprintf(tsv, "callgrind\t%s\t%s\tn/a\n", rows[r].key, variants[i].name);
            else
                fprintf(tsv, "callgrind\t%s\t%s\t%.1f\n", rows[r].key, variants[i].name, cg[i][r]);
        }
    }
    if (fclose(tsv) != 0) {
        fprintf(stderr, "bench_alloc: writing %s failed\n", tsv_path);
        return 1;
    }
    return status;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: bench_alloc [--quick] [--reps N] [--idle-reps N] [--only pairs|live|pc|rss] "
            "[--callgrind] [-v] [--tsv FILE] [bench_alloc_<variant>...]\n"
            "  Runs every variant alternately and prints a Markdown table of medians.\n"
            "  --idle-reps N: the first N runs of (d) idle before the trim (default 3; 3 s each,\n"
            "  0.5 s in quick mode), the others trim at once.\n"
            "  --callgrind: instructions per operation of each variant under valgrind instead\n"
            "  (each pair size of (a), and (b); --only pairs|live narrows it).\n"
            "  --tsv FILE: also write every run, the medians and the RSS over the (d) trace\n"
            "  (with --callgrind: the instruction counts) as tab-separated records for\n"
            "  tests/bench/report.py.\n"
            "  NBUF_BENCH_QUICK=1 is the same as --quick (one short run each).\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *env = getenv("NBUF_BENCH_QUICK");
    bool reps_set = false, callgrind = false;
    quick = env && *env && strcmp(env, "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else if (strcmp(argv[i], "--callgrind") == 0)
            callgrind = true;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = (unsigned)atoi(argv[++i]);
            reps_set = true;
        } else if (strcmp(argv[i], "--idle-reps") == 0 && i + 1 < argc)
            idle_reps = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--tsv") == 0 && i + 1 < argc)
            tsv_path = argv[++i];
        else if (argv[i][0] == '-')
            usage();
        else
            add_variant_path(argv[i]);
    }
    if (!reps_set && quick)
        reps = 1;
    if (reps < 1 || reps > MAX_REPS)
        usage();
    if (!nvariants)
        find_variants_next_to_self();
    if (!nvariants) {
        fprintf(stderr, "bench_alloc: no bench_alloc_<variant> executables found\n");
        return 1;
    }

    if (callgrind)
        return run_callgrind();
    load_before = loadavg();
    if (load_before > 0.5)
        fprintf(stderr, "bench_alloc: load average %.2f: other work will skew the numbers\n",
                load_before);
    /* Each variant names the allocator serving its malloc, or refuses. */
    int status = 0;
    for (unsigned i = 0; i < nvariants; i++) {
        if (!run_variant(&variants[i], "check", NULL, false, false)) {
            variants[i].failed = true;
            status = 1;
        }
    }
    if (tsv_path) {
        snprintf(series_path, sizeof(series_path), "%s.rss.%d", tsv_path, (int)getpid());
        unlink(series_path);
    }
    for (unsigned rep = 0; rep < reps; rep++) {
        for (size_t w = 0; w < NWORKLOADS; w++) {
            if (only && strcmp(only, workloads[w]) != 0)
                continue;
            fprintf(stderr, "bench_alloc: run %u/%u, %s\n", rep + 1, reps, workloads[w]);
            /* Rotate the order so no variant always runs first (or after the same one). */
            for (unsigned k = 0; k < nvariants; k++) {
                struct variant *v = &variants[(k + rep) % nvariants];
                /* One RSS series per variant: the first run of (d). */
                bool sample = tsv_path && rep == 0 && strcmp(workloads[w], "rss") == 0;
                if (!v->failed && !run_variant(v, workloads[w], sample ? series_path : NULL,
                                               rep == 0, rep < idle_reps)) {
                    v->failed = true;
                    status = 1;
                }
            }
        }
    }

    load_after = loadavg();
    print_machine();
    for (unsigned i = 0; i < nvariants; i++) {
        printf("- %s: %s%s\n", variants[i].name, variants[i].desc,
               variants[i].failed ? " (FAILED or refused: not reported)" : "");
        for (size_t w = 0; w < NWORKLOADS; w++) {
            for (unsigned k = 0; k < variants[i].ninfo[w]; k++)
                printf("  - %s\n", variants[i].info[w][k]);
        }
    }
    printf("\n");
    int missed[MAX_VARIANTS] = {0};
    print_table(missed);
    printf("\n<nbuf variant> / best: its cost relative to the best peer (time, 1 / throughput, "
           "RSS); <= 1.00 meets. ");
    if (!only || strcmp(only, "rss") == 0)
        print_rss_targets();
    if (status)
        printf("Some variants failed or refused: see above and stderr.\n");
    else {
        printf("Targets missed:");
        const char *sep = " ";
        for (unsigned i = 0; i < nvariants; i++) {
            if (is_nbuf(&variants[i])) {
                printf("%s%s %d", sep, variants[i].name, missed[i]);
                sep = ", ";
            }
        }
        printf(".\n");
    }
    if (tsv_path && write_tsv() != 0)
        status = 1;
    return status;
}
