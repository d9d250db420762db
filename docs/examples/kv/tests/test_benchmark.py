#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A short redis-benchmark run against nbuf-kv must complete: pipelined
SET/GET, inline and multibulk PING, INCR and MSET, then random keys with
1 KiB values; the server must exit cleanly afterwards (no leaked buffer)."""

import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import Checker, log, skip_unless, start_kv  # noqa: E402

ck = Checker()


def bench(port, *args):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q"] + list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    out = p.stdout.decode(errors="replace")
    log(out.replace("\r", "\n").strip().splitlines()[-6:] and "\n".join(
        line for line in out.replace("\r", "\n").splitlines() if "per second" in line))
    return p.returncode == 0, out


def main():
    skip_unless("redis-benchmark")
    s = start_kv(sys.argv[1], *sys.argv[2:])
    try:
        ok, out = bench(s.port, "-n", "20000", "-P", "16", "-c", "20", "-t", "set,get")
        ck.true("set,get completes", ok and "SET:" in out and "GET:" in out, out[-300:])
        ok, out = bench(s.port, "-n", "20000", "-P", "16", "-c", "20", "-t", "ping,incr,mset")
        ck.true("ping,incr,mset completes", ok and "PING_INLINE:" in out and "MSET" in out,
                out[-300:])
        ok, out = bench(s.port, "-n", "20000", "-c", "50", "-r", "10000", "-d", "1024", "-t",
                        "set,get")
        ck.true("random keys, 1 KiB values", ok and "GET:" in out, out[-300:])
    finally:
        ck.eq("exit status", s.stop(), 0)
    ck.done()


if __name__ == "__main__":
    main()
