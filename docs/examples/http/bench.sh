#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# nbuf-http against nginx in one run, same machine, same client (wrk), the
# same number of workers, on a 1 KiB and a 1 MiB file. nginx runs in the
# foreground from a generated config in a temp dir (daemon off,
# master_process on, sendfile on, tcp_nopush on, access_log off). The
# servers are alternated REPS times per file and the median of each is
# reported, with the server's CPU time per request (user + system, read
# from /proc): a figure that holds even when the machine is busy.
#
# usage: docs/examples/http/bench.sh [--tsv FILE] [path/to/nbuf-http]
#   (build it with: meson setup build-release --buildtype=release
#    -Ddebug_checks=0 && ninja -C build-release)
#   --tsv FILE: also write the figures as tab-separated records (for
#   tests/bench/report.py), one per line, the kind first:
#     meta <key> <value>
#     run <nginx|nbuf-http> <file> <repetition> <req/s> <server CPU µs per request>
# env: WORKERS (1), CONNS (50), WRK_THREADS (2), DURATION (seconds, 5),
#      REPS (3), NH_ARGS (extra nbuf-http options), NGINX_EXTRA (extra
#      directives in nginx's http block), FILES ("1k 1m")
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
NH=${1:-build-release/docs/examples/http/nbuf-http}
WORKERS=${WORKERS:-1}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-2}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
NH_ARGS=${NH_ARGS:-}
NGINX_EXTRA=${NGINX_EXTRA:-}
FILES=${FILES:-1k 1m}

for t in wrk nginx python3; do
    command -v "$t" >/dev/null || {
        echo "bench.sh: $t is not installed" >&2
        exit 77
    }
done
[ -x "$NH" ] || { echo "bench.sh: no nbuf-http at $NH" >&2; exit 2; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# tsv FIELD... -> one tab-separated record in $TSV (nothing without --tsv)
tsv() {
    [ -n "$TSV" ] || return 0
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$TSV"
}
if [ -n "$TSV" ]; then
    echo "# docs/examples/http/bench.sh --tsv: records described at the top of the script" >"$TSV"
fi
tsv meta workers "$WORKERS"
tsv meta conns "$CONNS"
tsv meta wrk_threads "$WRK_THREADS"
tsv meta duration "$DURATION"
tsv meta reps "$REPS"
tsv meta nh_args "$NH_ARGS"
tsv meta nginx_extra "$NGINX_EXTRA"
tsv meta nginx_version "$(nginx -v 2>&1 | sed 's/.*: //')"
tsv meta load_before "${LOAD_BEFORE%% *}"
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

wait_port() { # port
    for _ in $(seq 200); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" \
            2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "bench.sh: nothing listens on port $1" >&2
    exit 1
}

# The files, readable by nginx's workers whatever user they run as.
mkdir -p "$WORK/root"
head -c 1024 /dev/urandom >"$WORK/root/1k.bin"
head -c $((1 << 20)) /dev/urandom >"$WORK/root/1m.bin"
chmod -R a+rX "$WORK"

# nginx, in the foreground, everything under $WORK.
NGX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    $NGINX_EXTRA
    server {
        listen 127.0.0.1:$NGX_PORT;
        root $WORK/root;
    }
}
EOF
nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_port "$NGX_PORT"

# shellcheck disable=SC2086 # NH_ARGS is a list of options
"$NH" --root "$WORK/root" --port 0 --threads "$WORKERS" $NH_ARGS >"$WORK/nh.out" &
NH_PID=$!
PIDS+=("$NH_PID")
for _ in $(seq 200); do grep -qs listening "$WORK/nh.out" && break; sleep 0.05; done
NH_PORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$WORK/nh.out")
[ -n "$NH_PORT" ] || { echo "bench.sh: nbuf-http did not start" >&2; exit 1; }
wait_port "$NH_PORT"

# CPU ticks (user + system) of a process and its children processes'
# threads: nginx's workers are children of its master.
cpu_ticks() { # pid
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        for s in /proc/"$p"/task/*/stat; do
            total=$((total + $(awk '{print $14 + $15}' "$s" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# run_wrk name pid port file rep -> appends "rps cpu_us_per_request" to $WORK/name.file
run_wrk() {
    local name=$1 pid=$2 port=$3 file=$4 rep=$5 out t0 t1 n rps
    t0=$(cpu_ticks "$pid")
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$port/$file.bin")
    t1=$(cpu_ticks "$pid")
    if grep -qE "Socket errors|Non-2xx" <<<"$out"; then
        echo "bench.sh: $name $file: errors:" >&2
        echo "$out" >&2
    fi
    n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
    awk -v r="$rps" -v n="$n" -v d=$((t1 - t0)) -v hz="$HZ" \
        'BEGIN { printf "%.0f %.2f\n", r, n ? d * 1e6 / hz / n : 0 }' >>"$WORK/$name.$file"
    # shellcheck disable=SC2046 # two fields: req/s and CPU µs per request
    tsv run "$name" "$file" "$rep" $(tail -n 1 "$WORK/$name.$file")
    printf '  %-9s %-3s  %8.0f req/s\n' "$name" "$file" "$rps" >&2
}

# Warm both (page cache, connection setup) before measuring.
for f in $FILES; do
    wrk -t1 -c4 -d1s "http://127.0.0.1:$NGX_PORT/$f.bin" >/dev/null
    wrk -t1 -c4 -d1s "http://127.0.0.1:$NH_PORT/$f.bin" >/dev/null
done

for rep in $(seq "$REPS"); do
    echo "rep $rep/$REPS" >&2
    for f in $FILES; do
        # Alternate who goes first, so drift in the machine's load is shared.
        if [ $((rep % 2)) = 1 ]; then
            run_wrk nginx "$NGX_PID" "$NGX_PORT" "$f" "$rep"
            run_wrk nbuf-http "$NH_PID" "$NH_PORT" "$f" "$rep"
        else
            run_wrk nbuf-http "$NH_PID" "$NH_PORT" "$f" "$rep"
            run_wrk nginx "$NGX_PID" "$NGX_PORT" "$f" "$rep"
        fi
    done
done

median() { # file column
    sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' \
    /proc/cpuinfo | head -1); Linux $(uname -r); $(nginx -v 2>&1 | sed 's/.*: //');" \
    "wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, $WORKERS worker(s) each, median of $REPS;" \
    "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '| file  | nginx req/s | nbuf-http req/s | ratio of medians | median of ratios |'
printf ' nginx CPU µs/req | nbuf-http CPU µs/req |\n'
printf '|-------|------------:|----------------:|-----------------:|-----------------:|'
printf '%s\n' '-----------------:|---------------------:|'
for f in $FILES; do
    a=$(median "$WORK/nginx.$f" 1)
    b=$(median "$WORK/nbuf-http.$f" 1)
    ca=$(median "$WORK/nginx.$f" 2)
    cb=$(median "$WORK/nbuf-http.$f" 2)
    # Each rep ran the two servers back to back: their ratio is less
    # exposed to the machine's drift than either figure.
    paste "$WORK/nginx.$f" "$WORK/nbuf-http.$f" | awk '{ printf "%.4f\n", $3 / $1 }' \
        >"$WORK/ratio.$f"
    r=$(median "$WORK/ratio.$f" 1)
    awk -v f="$f" -v a="$a" -v b="$b" -v ca="$ca" -v cb="$cb" -v r="$r" 'BEGIN {
        size = f == "1k" ? "1 KiB" : f == "1m" ? "1 MiB" : f
        printf "| %-5s | %11d | %15d | %16.2f | %16.2f | %16.2f | %20.2f |\n",
            size, a, b, b / a, r, ca, cb }'
done

tsv meta load_after "$(cut -d' ' -f1 /proc/loadavg)"

kill -TERM "$NH_PID"
wait "$NH_PID" || { echo "bench.sh: nbuf-http exited with status $?" >&2; exit 1; }
