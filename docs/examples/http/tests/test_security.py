# SPDX-License-Identifier: MIT
"""No request escapes the root: '..' segments (plain, percent-encoded,
mixed case, inside other segments), NUL bytes, encoded slashes, symlinks
leading out of the root (to a directory and to a file), non-regular files.
Symlinks that stay inside the root work. Run once with openat2 and once
with --no-openat2 (the realpath fallback).

usage: test_security.py path/to/nbuf-http [server options]"""

import os
import sys

from httptest import Conn, Root, Server, check, curl, log, raw_exchange, run, skip_unless, \
    status_of

SECRET = b"outside the root\n"


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_security.py nbuf-http [options]")
    skip_unless("curl")
    outer = Root()          # holds the root and a secret next to it
    outer.write("secret.txt", SECRET)
    outer.write("www/index.html", b"<p>home</p>\n")
    outer.write("www/a/b.txt", b"inside\n")
    www = outer.path("www")
    os.symlink("/etc", os.path.join(www, "etc"))                   # out, absolute
    os.symlink("../secret.txt", os.path.join(www, "leak.txt"))     # out, relative
    os.symlink("../..", os.path.join(www, "a", "up"))              # out through a dir
    os.symlink("a/b.txt", os.path.join(www, "alias.txt"))          # in
    os.symlink("a", os.path.join(www, "adir"))                     # in, a directory
    os.mkfifo(os.path.join(www, "fifo"))
    srv = Server(sys.argv[1], www, *sys.argv[2:])
    mode = "realpath" if "--no-openat2" in sys.argv else "openat2"
    log(f"# confinement: {mode}")
    try:
        c = Conn(srv.port)
        forbidden = [
            "/../secret.txt", "/..", "/../", "/a/../../secret.txt", "/a/b.txt/../../../x",
            "/%2e%2e/secret.txt", "/%2E%2E/%2e%2e/etc/passwd", "/.%2e/secret.txt",
            "/a/%2e%2e/%2e%2e/secret.txt",
            "/etc/passwd", "/etc/", "/leak.txt", "/a/up/secret.txt", "/fifo",
        ]
        for path in forbidden:
            r = c.request(path)
            check(r.status == 403 and SECRET not in r.body and b"root:" not in r.body,
                  f"{path}: 403")
        for path in ["/a/./b.txt", "/a/../a/b.txt", "/./a//b.txt", "/alias.txt",
                     "/adir/b.txt", "/a/%62.txt", "/x/../a/b.txt"]:
            r = c.request(path)
            check(r.status == 200 and r.body == b"inside\n", f"{path}: 200 (inside the root)")
        r = c.request("/adir")
        check(r.status == 301, "a symlinked directory without '/' redirects")
        c.close()

        # Requests that cannot be paths at all: 400, and the connection closes.
        for path in ["/a%00.txt", "/a/b.txt%00.html", "/a%2fb.txt", "/a%2Fb.txt", "/%",
                     "/%zz", "/a%2", "a/b.txt", "*"]:
            out = raw_exchange(srv.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n",
                               half_close=False)
            check(status_of(out) == 400, f"{path}: 400")
        out = raw_exchange(srv.port, b"GET /a/b.txt\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
        check(status_of(out) == 400, "raw NUL in the target: 400")
        out = raw_exchange(srv.port, "GET /a/b%252e%252e/x HTTP/1.1\r\nHost: x\r\n\r\n")
        check(status_of(out) == 404, "double encoding is decoded once: 404")

        # curl (with --path-as-is so it does not squash the dots itself).
        for path in ["/../secret.txt", "/../../../../etc/passwd", "/%2e%2e/secret.txt"]:
            rc, out, err = curl("--path-as-is", "-w", "%{http_code}", "-o", "/dev/null",
                                srv.url(path))
            check(rc == 0 and out == b"403", f"curl --path-as-is {path}: 403")
        srv.stop()
    finally:
        srv.kill()
        outer.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
