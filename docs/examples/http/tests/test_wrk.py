# SPDX-License-Identifier: MIT
"""A short wrk run (wrk -t2 -c20 -d3s) on a small and a 256 KiB file: it
completes with no socket errors and no non-2xx answers, and the server
still answers and exits cleanly afterwards. Not a benchmark (see
bench.sh).

usage: test_wrk.py path/to/nbuf-http [server options]"""

import re
import subprocess
import sys

from httptest import Conn, Root, Server, check, log, run, skip_unless


def wrk(url, seconds=3):
    p = subprocess.run(["wrk", "-t2", "-c20", f"-d{seconds}s", "--timeout", "5s", url],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 60)
    out = p.stdout.decode(errors="replace")
    log(out)
    return p.returncode, out


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_wrk.py nbuf-http [options]")
    skip_unless("wrk")
    root = Root()
    root.write("small.html", b"<p>" + b"x" * 1000 + b"</p>\n")
    root.write("mid.bin", bytes(range(256)) * 1024)
    srv = Server(sys.argv[1], root.dir, *sys.argv[2:])
    try:
        for path in ["/small.html", "/mid.bin"]:
            rc, out = wrk(srv.url(path))
            m = re.search(r"(\d+) requests in", out)
            check(rc == 0 and m and int(m.group(1)) > 0, f"wrk {path}: {m and m.group(1)} requests")
            check("Socket errors" not in out, f"wrk {path}: no socket errors")
            check("Non-2xx" not in out, f"wrk {path}: only 2xx answers")
        c = Conn(srv.port)
        check(c.request("/small.html").status == 200, "server answers after the runs")
        c.close()
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
