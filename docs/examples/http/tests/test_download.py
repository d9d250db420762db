# SPDX-License-Identifier: MIT
"""Byte-exact downloads with curl (small, 50 MiB, empty, a sparse file past
4 GiB by Range), HEAD, Content-Type, Last-Modified and If-Modified-Since,
single Range requests (206, 416, open-ended, suffix; several ranges give
200), directory index and the trailing-slash redirect.

usage: test_download.py path/to/nbuf-http [server options]"""

import email.utils
import os
import sys
import tempfile
import time

from httptest import Conn, Root, Server, check, curl, log, run, sha256_file, skip_unless

LARGE = 50 << 20
SPARSE = (5 << 30) + 12345          # > 4 GiB, costs no disk
MARKS = [(4 << 30) - 8, SPARSE - 100]  # where real bytes are written in it


def make_root():
    root = Root()
    root.write("small.txt", b"hello, nbuf-http\n")
    root.write("empty.txt", b"")
    root.write("dir/index.html", b"<p>index</p>\n")
    root.write("dir/sub/style.css", b"p { color: red }\n")
    root.write("noindex/x.bin", bytes(range(256)))
    # 50 MiB of varied bytes, written 1 MiB at a time.
    with open(root.path("large.bin"), "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(LARGE >> 20):
            f.write(bytes([i & 0xff]) + block[1:])
    with open(root.path("sparse.bin"), "wb") as f:
        f.truncate(SPARSE)
        for off in MARKS:
            f.seek(off)
            f.write(b"MARK@%d" % off)
    os.utime(root.path("small.txt"), (1_000_000_000, 1_000_000_000))
    return root


def expected(path, start, length):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)


def test_downloads(srv, root, tmp):
    for name in ["small.txt", "large.bin", "empty.txt"]:
        out = os.path.join(tmp, name)
        rc, _, err = curl("-f", "-o", out, srv.url("/" + name))
        check(rc == 0, f"curl GET /{name} succeeds ({err.strip()})")
        check(sha256_file(out) == sha256_file(root.path(name)), f"/{name} is byte-exact")

    # The same large file on one keep-alive connection three times, and a
    # ranged middle slice: every flush resumes at the right byte.
    c = Conn(srv.port, timeout=60)
    for _ in range(3):
        r = c.request("/large.bin")
        check(r.status == 200 and len(r.body) == LARGE and
              r.body[:1] == b"\0" and r.body == expected(root.path("large.bin"), 0, LARGE),
              "raw GET /large.bin is byte-exact")
    c.close()


def test_sparse(srv, root):
    rc, out, err = curl("-sI", srv.url("/sparse.bin"))
    check(rc == 0 and f"Content-Length: {SPARSE}\r\n".encode() in out,
          f"HEAD /sparse.bin says Content-Length: {SPARSE}")
    for off in MARKS:
        lo, hi = off - 100, off + 200
        rc, body, err = curl("-f", "-r", f"{lo}-{hi}", srv.url("/sparse.bin"))
        check(rc == 0 and body == expected(root.path("sparse.bin"), lo, hi - lo + 1),
              f"Range {lo}-{hi} of the sparse file is byte-exact")
    c = Conn(srv.port)
    r = c.request("/sparse.bin", headers={"Range": "bytes=-50"})
    check(r.status == 206 and r.header("content-range") ==
          f"bytes {SPARSE - 50}-{SPARSE - 1}/{SPARSE}" and
          r.body == expected(root.path("sparse.bin"), SPARSE - 50, 50),
          "suffix Range of the sparse file past 4 GiB")
    r = c.request("/sparse.bin", headers={"Range": f"bytes={(4 << 30) + 1}-"}, method="HEAD")
    check(r.status == 206 and
          r.header("content-length") == str(SPARSE - (4 << 30) - 1),
          "HEAD with an open-ended Range past 4 GiB: 64-bit lengths")
    c.close()


def test_head_and_types(srv, root):
    c = Conn(srv.port)
    r = c.request("/small.txt", method="HEAD")
    check(r.status == 200 and r.body == b"" and r.header("content-length") == "17",
          "HEAD: status, Content-Length, no body")
    check(r.header("content-type") == "text/plain; charset=utf-8", "Content-Type of .txt")
    check(r.header("last-modified") == "Sun, 09 Sep 2001 01:46:40 GMT",
          "Last-Modified is the file's mtime as an IMF-fixdate")
    check(r.header("accept-ranges") == "bytes", "Accept-Ranges: bytes")
    date = email.utils.parsedate_to_datetime(r.header("date"))
    check(date is not None and r.header("date").endswith(" GMT"), "Date header")
    r2 = c.request("/small.txt")
    check(r2.body == b"hello, nbuf-http\n" and r2.headers["content-length"] == "17",
          "GET after HEAD on the same connection")
    r = c.request("/dir/sub/style.css")
    check(r.status == 200 and r.header("content-type") == "text/css; charset=utf-8",
          "Content-Type of .css")
    r = c.request("/large.bin", method="HEAD")
    check(r.header("content-type") == "application/octet-stream",
          "unknown extension: application/octet-stream")
    c.close()


def test_conditional(srv):
    c = Conn(srv.port)
    for ims, want in [("Sun, 09 Sep 2001 01:46:40 GMT", 304),
                      ("Sunday, 09-Sep-01 01:46:40 GMT", 304),
                      ("Sun Sep  9 01:46:40 2001", 304),
                      ("Sun, 09 Sep 2001 01:46:39 GMT", 200),
                      ("Fri, 31 Dec 9999 23:59:59 GMT", 200),
                      ("not a date", 200)]:
        r = c.request("/small.txt", headers={"If-Modified-Since": ims})
        check(r.status == want, f"If-Modified-Since {ims!r}: {want}")
        if want == 304:
            check(r.body == b"" and r.header("content-length") is None and
                  r.header("last-modified") == "Sun, 09 Sep 2001 01:46:40 GMT",
                  "304 has no body")
    rc, out, err = curl("-z", "Sun, 09 Sep 2001 01:46:40 GMT", "-w", "%{http_code}",
                        srv.url("/small.txt"))
    check(rc == 0 and out == b"304", "curl -z gets 304")
    c.close()


def test_ranges(srv, root):
    c = Conn(srv.port)
    body = b"hello, nbuf-http\n"
    cases = [
        ("bytes=0-4", 206, body[0:5], "bytes 0-4/17"),
        ("bytes=7-", 206, body[7:], "bytes 7-16/17"),
        ("bytes=-5", 206, body[-5:], "bytes 12-16/17"),
        ("bytes=-100", 206, body, "bytes 0-16/17"),
        ("bytes=5-1000", 206, body[5:], "bytes 5-16/17"),
        ("bytes=16-16", 206, body[16:], "bytes 16-16/17"),
        ("bytes=17-", 416, b"", "bytes */17"),
        ("bytes=100-200", 416, b"", "bytes */17"),
        ("bytes=-0", 416, b"", "bytes */17"),
        ("bytes=0-1,3-4", 200, body, None),      # several ranges: the whole file
        ("bytes=5-1", 200, body, None),          # invalid: ignored
        ("items=0-1", 200, body, None),          # unknown unit: ignored
        ("bytes=abc", 200, body, None),
    ]
    for rng, status, want, cr in cases:
        r = c.request("/small.txt", headers={"Range": rng})
        check(r.status == status and r.body == want and r.header("content-range") == cr,
              f"Range {rng}: {status} {cr}")
    r = c.request("/empty.txt", headers={"Range": "bytes=0-"})
    check(r.status == 416 and r.header("content-range") == "bytes */0", "Range of empty: 416")
    r = c.request("/small.txt", headers={"Range": "bytes=0-4",
                                         "If-Range": "Sun, 09 Sep 2001 01:46:40 GMT"})
    check(r.status == 206, "If-Range with the Last-Modified date: 206")
    r = c.request("/small.txt", headers={"Range": "bytes=0-4", "If-Range": '"etag"'})
    check(r.status == 200 and r.body == body, "If-Range that does not match: 200")
    # A large middle range with curl.
    lo, hi = 12_345_678, 40_000_000
    rc, out, err = curl("-f", "-r", f"{lo}-{hi}", srv.url("/large.bin"))
    check(rc == 0 and out == expected(root.path("large.bin"), lo, hi - lo + 1),
          "curl -r of /large.bin is byte-exact")
    c.close()


def test_dirs(srv):
    c = Conn(srv.port)
    r = c.request("/dir/")
    check(r.status == 200 and r.body == b"<p>index</p>\n" and
          r.header("content-type").startswith("text/html"), "directory: index.html")
    r = c.request("/dir?x=1")
    check(r.status == 301 and r.header("location") == "/dir/?x=1",
          "directory without '/': 301 to the slash, query kept")
    r = c.request("/noindex/")
    check(r.status == 403, "directory without index.html: 403")
    r = c.request("/")
    check(r.status == 403, "root without index.html: 403")
    r = c.request("/missing.txt")
    check(r.status == 404 and r.body == b"404 Not Found\n", "missing file: 404")
    r = c.request("/small.txt/x")
    check(r.status == 404, "a file used as a directory: 404")
    r = c.request("/small.txt/")
    check(r.status == 404, "a file named with a trailing '/': 404")
    r = c.request("/sm%61ll.txt?q=%00")
    check(r.status == 200 and r.body.startswith(b"hello"),
          "percent-decoding; the query is not part of the path")
    r = c.request("http://example.com/small.txt")
    check(r.status == 200 and r.body.startswith(b"hello"), "absolute-form target")
    c.close()


def test_changes(srv, root, cache_s):
    """A replaced file is served new once the open-file cache lets go of
    it (at once with --file-cache 0)."""
    c = Conn(srv.port)
    root.write("change.txt", b"version 1\n")
    check(c.request("/change.txt").body == b"version 1\n", "file before the change")
    tmp = root.write("change.tmp", b"version two\n")
    os.rename(tmp, root.path("change.txt"))
    if cache_s:
        time.sleep(cache_s + 0.2)
    r = c.request("/change.txt")
    check(r.body == b"version two\n" and r.header("content-length") == "12",
          f"replaced file served new after {cache_s}s")
    os.unlink(root.path("change.txt"))
    if cache_s:
        time.sleep(cache_s + 0.2)
    check(c.request("/change.txt").status == 404, "deleted file: 404")
    c.close()


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_download.py nbuf-http [options]")
    skip_unless("curl")
    root = make_root()
    srv = Server(sys.argv[1], root.dir, *sys.argv[2:])
    try:
        with tempfile.TemporaryDirectory(prefix="nbuf-http-dl-") as tmp:
            test_downloads(srv, root, tmp)
        test_sparse(srv, root)
        test_head_and_types(srv, root)
        test_conditional(srv)
        test_ranges(srv, root)
        test_dirs(srv)
        cache = 1.0
        if "--file-cache" in sys.argv:
            cache = float(sys.argv[sys.argv.index("--file-cache") + 1])
        test_changes(srv, root, cache)
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
