#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Runs every benchmark in one go and writes the report: docs/benchmarks.md
# with its plots in docs/benchmarks/*.png.
#
#   1. installs what is missing (apt-get, only when dpkg says a package is
#      not installed): gnuplot, the peer allocators, libevent, redis, nginx,
#      wrk, valgrind and the build tools;
#   2. configures its own release build (build-report: --buildtype=release,
#      the project's default options, -Dbench=true -Dexamples=true) and builds only the
#      benchmarks and the two example servers;
#   3. runs, one after the other: tests/bench/bench_alloc (nbuf against
#      glibc, jemalloc, tcmalloc and mimalloc, plus instructions per operation
#      under callgrind), tests/bench/bench_flush (frame flush against
#      memcpy+write, writev and libevent; composite lookup and building),
#      docs/examples/kv/bench.sh (nbuf-kv against redis-server) and
#      docs/examples/http/bench.sh (nbuf-http against nginx), each with
#      --tsv so that nothing is scraped from their human output;
#   4. tests/bench/report.py turns the TSVs into tables, gnuplot plots and
#      the Markdown page.
#
# usage: bash tests/bench/report.sh [--quick] [--no-install] [--build DIR] [--out FILE.md]
#   --quick       a smoke run (about a minute, most of it callgrind) written to
#                 DIR/report-quick/benchmarks.md unless --out says otherwise, so
#                 the committed report is not replaced by quick figures
#   --no-install  never call apt-get (fail if something is missing)
#   --build DIR   build directory (default build-report)
#   --out FILE    the Markdown file; its plots go to FILE's directory/<name>/
#                 (default docs/benchmarks.md, plots in docs/benchmarks/)
# The raw output of every benchmark (human text and TSV) is kept in DIR/report/
# (DIR/report-quick/ with --quick); report.py can redraw the page from it.
# Full mode takes about 7 minutes of benchmarks on a 2-vCPU machine (the 3 s idles
# of workload (d), 3 runs of 6 variants, are about one of them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

QUICK=0
INSTALL=1
BUILD=build-report
OUT=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --build) BUILD=${2:?--build needs a directory}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    -h | --help) sed -n '3,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "report.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then DATA=$BUILD/report-quick; else DATA=$BUILD/report; fi
if [ -z "$OUT" ]; then
    if [ "$QUICK" = 1 ]; then OUT=$DATA/benchmarks.md; else OUT=docs/benchmarks.md; fi
fi

log() { printf '[report %s] %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }

# ---- 1. dependencies ----
PKGS=(meson ninja-build pkg-config gcc python3 libjemalloc-dev libcriterion-dev
    libmimalloc-dev libgoogle-perftools-dev libevent-dev gnuplot-nox valgrind
    redis-server redis-tools wrk nginx)
MISSING=()
for p in "${PKGS[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    if [ "$INSTALL" = 0 ] || [ "$(id -u)" != 0 ]; then
        echo "report.sh: missing packages: ${MISSING[*]} (run as root, or install them)" >&2
        exit 1
    fi
    log "installing ${MISSING[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${MISSING[@]}"
fi
# The Debian nginx package starts a daemon on port 80; the benchmark runs its own.

# ---- machine and start ----
rm -rf "$DATA"
mkdir -p "$DATA"
T0=$(date +%s)
M=$DATA/machine.tsv
kv() { printf '%s\t%s\n' "$1" "$2" >>"$M"; }
: >"$M"
kv mode "$([ "$QUICK" = 1 ] && echo quick || echo full)"
kv date_start "$(date -u '+%Y-%m-%d %H:%M UTC')"
kv load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
kv cpu "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
kv cpus "$(nproc)"
kv mem_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
kv kernel "$(uname -sr)"
kv arch "$(uname -m)"
kv debian "$(cat /etc/debian_version 2>/dev/null || echo '?')"
kv glibc "$(ldd --version | head -1 | awk '{print $NF}')"
kv git_commit "$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
kv git_subject "$(git log -1 --format=%s 2>/dev/null | cut -c1-100 || echo '?')"
# What the build is made of beyond the commit (other work in progress in the tree).
kv git_dirty "$(git status --porcelain --untracked-files=no -- src include meson.build \
    meson_options.txt tests/bench docs/examples 2>/dev/null | awk '{print $2}' | tr '\n' ' ')"

# ---- 2. build ----
OPTS=(--buildtype=release -Ddebug_checks=1 -Dbench=true -Dexamples=true)
build_failed() {
    tail -n 30 "$DATA/build.log" >&2
    echo "report.sh: the build failed (log: $DATA/build.log)" >&2
    exit 1
}
if [ -d "$BUILD/meson-private" ]; then
    meson configure "$BUILD" "${OPTS[@]}" >"$DATA/build.log" 2>&1 || build_failed
else
    meson setup "$BUILD" "${OPTS[@]}" >"$DATA/build.log" 2>&1 || build_failed
fi
TARGETS=$(ninja -C "$BUILD" -t targets all |
    sed -n 's/^\(tests\/bench\/bench_\(alloc\|alloc_[a-z-]*\|flush\)\|docs\/examples\/\(kv\/nbuf-kv\|http\/nbuf-http\)\): .*/\1/p' |
    sort -u)
log "building $(echo "$TARGETS" | wc -l) targets in $BUILD"
# shellcheck disable=SC2086 # a list of targets
ninja -C "$BUILD" $TARGETS >>"$DATA/build.log" 2>&1 || build_failed
kv compiler "$(sed -n 's/^C compiler for the host machine: .*"\(.*\)").*/\1/p' \
    "$BUILD/meson-logs/meson-log.txt" | tail -1)"
kv buildtype "release, default options: debug_checks=1 (meson $(meson --version))"

# ---- 3. the benchmarks ----
B=$BUILD/tests/bench
run() { # name command... -> DATA/name.txt (stdout), DATA/name.err; records status and seconds
    local name=$1 t st=0
    shift
    log "$name: $*"
    t=$(date +%s)
    "$@" >"$DATA/$name.txt" 2>"$DATA/$name.err" || st=$?
    kv "status_$name" "$st"
    kv "seconds_$name" "$(($(date +%s) - t))"
    [ "$st" = 0 ] || log "$name exited with status $st (see $DATA/$name.err)"
}

if [ "$QUICK" = 1 ]; then
    run alloc "$B/bench_alloc" --quick --tsv "$DATA/alloc.tsv"
    run callgrind "$B/bench_alloc" --callgrind --tsv "$DATA/callgrind.tsv"
    run flush "$B/bench_flush" --quick --tsv "$DATA/flush.tsv"
    run kv env N=50000 REPS=1 \
        MEMORY_SPECS="100:10000:50000 1000:10000:50000 20000:500:5000 100000:200:2000" \
        bash docs/examples/kv/bench.sh --tsv "$DATA/kv.tsv" "$BUILD/docs/examples/kv/nbuf-kv"
    run http env DURATION=1 REPS=1 \
        bash docs/examples/http/bench.sh --tsv "$DATA/http.tsv" "$BUILD/docs/examples/http/nbuf-http"
else
    run alloc "$B/bench_alloc" --reps 15 --idle-reps 3 --tsv "$DATA/alloc.tsv"
    run callgrind "$B/bench_alloc" --callgrind --tsv "$DATA/callgrind.tsv"
    run flush "$B/bench_flush" --tsv "$DATA/flush.tsv"
    run kv env N=500000 REPS=7 \
        bash docs/examples/kv/bench.sh --tsv "$DATA/kv.tsv" "$BUILD/docs/examples/kv/nbuf-kv"
    run http env DURATION=3 REPS=11 \
        bash docs/examples/http/bench.sh --tsv "$DATA/http.tsv" "$BUILD/docs/examples/http/nbuf-http"
fi

kv load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
kv date_end "$(date -u '+%Y-%m-%d %H:%M UTC')"
kv seconds_total "$(($(date +%s) - T0))"

# ---- 4. the report ----
log "writing $OUT"
python3 tests/bench/report.py --data "$DATA" --out "$OUT"
log "done in $(($(date +%s) - T0)) s: $OUT"
