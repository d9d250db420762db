#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# nbuf-kv against redis-server in one run, same machine, same client:
#  1. throughput: redis-benchmark -t set,get -P 16 -c 50 -n N -q, servers
#     alternated REPS times (median reported), and each server's peak RSS
#     (VmHWM) over the whole run;
#  2. memory: many distinct keys (-r) overwritten at random, per value size,
#     for redis-server and nbuf-kv under both value policies (copy small
#     values, the default; slice every value: --copy-below 0 --inline-max 0),
#     with RSS after the run.
#
# usage: docs/examples/kv/bench.sh [--tsv FILE] [path/to/nbuf-kv]
#   (build it with: meson setup build-release --buildtype=release
#    -Ddebug_checks=0 && ninja -C build-release)
#   --tsv FILE: also write the figures as tab-separated records (for
#   tests/bench/report.py), one per line, the kind first:
#     meta <key> <value>
#     run <redis-server|nbuf-kv> <repetition> <SET ops/s> <GET ops/s>
#     cpu <server> <server CPU ns per request, over all repetitions>
#     hwm <server> <peak RSS KiB>
#     memory <value size> <keys> <requests> <redis|default|copy16k|slice-all> <server>
#            <ops/s> <keys stored> <RSS KiB> <peak KiB>
# env: N (500000), REPS (3), MEMORY=0 to skip part 2, KV_ARGS (extra nbuf-kv options),
#      MEMORY_SPECS (part 2's SIZE:KEYS:REQUESTS list, default
#      "100:100000:1000000 1000:100000:1000000 20000:5000:50000 100000:1000:10000")
set -euo pipefail

TSV=
while [ $# -gt 0 ]; do
    case $1 in
    --tsv) TSV=${2:?--tsv needs a file}; shift 2 ;;
    --tsv=*) TSV=${1#--tsv=}; shift ;;
    -h | --help) sed -n '3,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) break ;;
    esac
done
KV=${1:-build-release/docs/examples/kv/nbuf-kv}
N=${N:-500000}
REPS=${REPS:-3}
MEMORY=${MEMORY:-1}
KV_ARGS=${KV_ARGS:-}
MEMORY_SPECS=${MEMORY_SPECS:-100:100000:1000000 1000:100000:1000000 20000:5000:50000 100000:1000:10000}

for t in redis-server redis-benchmark redis-cli python3; do
    command -v "$t" >/dev/null || { echo "bench.sh: $t is not installed" >&2; exit 77; }
done
[ -x "$KV" ] || { echo "bench.sh: no nbuf-kv at $KV" >&2; exit 2; }

# tsv FIELD... -> one tab-separated record in $TSV (nothing without --tsv)
tsv() {
    [ -n "$TSV" ] || return 0
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$TSV"
}
if [ -n "$TSV" ]; then
    echo "# docs/examples/kv/bench.sh --tsv: records described at the top of the script" >"$TSV"
fi
tsv meta n "$N"
tsv meta reps "$REPS"
tsv meta kv_args "$KV_ARGS"
tsv meta redis_version "$(redis-server --version | awk '{print $3}' | sed 's/^v=//')"
tsv meta load_before "$(cut -d' ' -f1 /proc/loadavg)"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# start_redis -> sets PID and PORT
start_redis() {
    PORT=$(free_port)
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --databases 1 \
        --dir "$WORK" --logfile "$WORK/redis.log" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench.sh: redis-server did not start" >&2
    exit 1
}

# start_kv [options] -> sets PID and PORT
NKV=0
start_kv() {
    NKV=$((NKV + 1))
    local out="$WORK/kv.$NKV.out"
    # shellcheck disable=SC2086 # KV_ARGS is a list of options
    "$KV" --port 0 $KV_ARGS "$@" >"$out" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        if grep -q listening "$out" 2>/dev/null; then
            PORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$out")
            return 0
        fi
        sleep 0.05
    done
    echo "bench.sh: nbuf-kv did not start" >&2
    exit 1
}

stop() { # pid
    kill -TERM "$1"
    wait "$1" || { echo "bench.sh: server $1 exited with status $?" >&2; exit 1; }
}

kib() { awk -v k="$2" '$1 == k ":" {print $2}' "/proc/$1/status"; }

# rps PORT TEST -> "SET GET" requests per second
rps() {
    redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -P 16 -c 50 -n "$N" -q 2>/dev/null |
        tr '\r' '\n' | awk '/per second/ && /^SET:/{s=$2} /per second/ && /^GET:/{g=$2}
            END{printf "%d %d\n", s, g}'
}

# cpu_ticks PID -> utime + stime in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "# nbuf-kv vs redis-server"
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "machine: $(uname -srm), $(nproc) CPUs, $CPU"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "redis-server: $(redis-server --version | awk '{print $3, $4, $6}')"
echo "nbuf-kv: $KV $KV_ARGS"
echo

start_redis; RPID=$PID; RPORT=$PORT
start_kv; KPID=$PID; KPORT=$PORT
: >"$WORK/r.txt"; : >"$WORK/k.txt"
RT=0; KT=0
for i in $(seq "$REPS"); do
    t=$(cpu_ticks "$RPID"); rps "$RPORT" >>"$WORK/r.txt"; RT=$((RT + $(cpu_ticks "$RPID") - t))
    t=$(cpu_ticks "$KPID"); rps "$KPORT" >>"$WORK/k.txt"; KT=$((KT + $(cpu_ticks "$KPID") - t))
    # shellcheck disable=SC2046 # two fields: SET and GET
    tsv run redis-server "$i" $(tail -n 1 "$WORK/r.txt")
    # shellcheck disable=SC2046
    tsv run nbuf-kv "$i" $(tail -n 1 "$WORK/k.txt")
done
HZ=$(getconf CLK_TCK)
# server CPU time per request, in ns (steadier than ops/s on a shared machine)
RNS=$((RT * 1000000000 / HZ / (2 * N * REPS))); KNS=$((KT * 1000000000 / HZ / (2 * N * REPS)))
RHWM=$(kib "$RPID" VmHWM); KHWM=$(kib "$KPID" VmHWM)
stop "$KPID"; stop "$RPID"
tsv cpu redis-server "$RNS"
tsv cpu nbuf-kv "$KNS"
tsv hwm redis-server "$RHWM"
tsv hwm nbuf-kv "$KHWM"

echo "## Throughput: redis-benchmark -t set,get -P 16 -c 50 -n $N -q (median of $REPS, alternated)"
echo
echo "| server | SET ops/s | GET ops/s | server CPU per request | peak RSS (VmHWM) |"
echo "|---|---:|---:|---:|---:|"
printf "| redis-server | %s | %s | %s ns | %s KiB |\n" "$(cut -d' ' -f1 "$WORK/r.txt" | median)" \
    "$(cut -d' ' -f2 "$WORK/r.txt" | median)" "$RNS" "$RHWM"
printf "| nbuf-kv | %s | %s | %s ns | %s KiB |\n" "$(cut -d' ' -f1 "$WORK/k.txt" | median)" \
    "$(cut -d' ' -f2 "$WORK/k.txt" | median)" "$KNS" "$KHWM"
echo
echo "runs (SET GET): redis-server $(tr '\n' ';' <"$WORK/r.txt")"
echo "runs (SET GET): nbuf-kv $(tr '\n' ';' <"$WORK/k.txt")"
echo

if [ "$MEMORY" != 1 ]; then
    tsv meta load_after "$(cut -d' ' -f1 /proc/loadavg)"
    exit 0
fi

echo "## Memory: redis-benchmark -t set -P 16 -c 50 -r KEYS -d SIZE -n REQUESTS"
echo
echo "| value size | keys (-r) | requests | server | ops/s | keys stored | RSS after | peak RSS |"
echo "|---:|---:|---:|---|---:|---:|---:|---:|"
for spec in $MEMORY_SPECS; do
    IFS=: read -r size keys reqs <<<"$spec"
    for srv in redis default copy16k slice-all; do
        case $srv in
        redis) start_redis ;;
        default) start_kv ;;
        copy16k) start_kv --copy-below 16k ;;
        slice-all) start_kv --copy-below 0 --inline-max 0 ;;
        esac
        ops=$(redis-benchmark -h 127.0.0.1 -p "$PORT" -t set -P 16 -c 50 -r "$keys" -d "$size" \
            -n "$reqs" -q 2>/dev/null | tr '\r' '\n' |
            awk '/per second/ && /^SET:/{s=$2} END{printf "%d", s}')
        stored=$(redis-cli -p "$PORT" dbsize)
        rss=$(kib "$PID" VmRSS); hwm=$(kib "$PID" VmHWM)
        case $srv in
        redis) name=redis-server ;;
        default) name="nbuf-kv (default: copy < 64 KiB)" ;;
        copy16k) name="nbuf-kv (--copy-below 16k)" ;;
        *) name="nbuf-kv (slice all)" ;;
        esac
        printf "| %s B | %s | %s | %s | %s | %s | %s KiB | %s KiB |\n" \
            "$size" "$keys" "$reqs" "$name" "$ops" "$stored" "$rss" "$hwm"
        tsv memory "$size" "$keys" "$reqs" "$srv" "$name" "$ops" "$stored" "$rss" "$hwm"
        stop "$PID"
    done
done
tsv meta load_after "$(cut -d' ' -f1 /proc/loadavg)"
