# SPDX-License-Identifier: MIT
"""Entity tags and If-None-Match (RFC 9110 sections 8.8.3, 13.1.2): a
strong ETag "<mtime ns hex>-<size hex>" on 200, 206, HEAD and 304, the same
on every request until the file changes and new once the open-file cache
lets go of it (at once with --file-cache 0); If-None-Match with the tag, a
W/ tag, "*", a list or several fields is 304 with no body, a mismatch or a
malformed list 200; it takes precedence over If-Modified-Since; If-Range
with the tag applies the Range (strong comparison: not a W/ tag).

usage: test_etag.py path/to/nbuf-http [server options]"""

import os
import re
import shutil
import sys
import time

from httptest import Conn, check, curl, log, run, serve_and_run

BODY = b"hello, etag\n"
OLD = "Sun, 09 Sep 2001 01:46:40 GMT"  # the files' mtime, as set below
LATER = "Mon, 10 Sep 2001 01:46:40 GMT"
EARLIER = "Sat, 08 Sep 2001 01:46:40 GMT"
WEDNESDAY = "Wed, 12 Sep 2001 01:46:40 GMT"  # f.txt's mtime


def tag_of(path):
    st = os.stat(path)
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def cache_seconds():
    if "--file-cache" in sys.argv:
        return float(sys.argv[sys.argv.index("--file-cache") + 1])
    return 1.0


def set_mtime(root, rel, ns):
    os.utime(root.path(rel), ns=(ns, ns))


def test_present(srv, root):
    want = tag_of(root.path("e.txt"))
    c = Conn(srv.port)
    r = c.request("/e.txt")
    etag = r.header("etag")
    check(r.status == 200 and r.body == BODY and etag == want,
          f"200 carries the strong ETag {want} (mtime ns and size in hex)")
    check(re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', etag) is not None, "ETag syntax: quoted, strong")
    check(c.request("/e.txt").header("etag") == etag, "the same ETag on the next request")
    check(Conn(srv.port).request("/e.txt").header("etag") == etag, "and on another connection")
    r = c.request("/e.txt", method="HEAD")
    check(r.status == 200 and r.header("etag") == etag, "HEAD carries the same ETag")
    r = c.request("/e.txt", headers={"Range": "bytes=0-4"})
    check(r.status == 206 and r.body == BODY[:5] and r.header("etag") == etag,
          "206 carries the same ETag")
    r = c.request("/dir/")
    check(r.status == 200 and r.header("etag") == tag_of(root.path("dir/index.html")),
          "a directory's index.html: its own ETag")
    r = c.request("/f.txt")
    check(r.header("etag") != etag, "another file of another size: another ETag")
    r = c.request("/missing")
    check(r.status == 404 and r.header("etag") is None, "no ETag on a 404")
    c.close()


def test_if_none_match(srv, root):
    etag = tag_of(root.path("e.txt"))
    weak = "W/" + etag
    c = Conn(srv.port)
    cases = [
        (etag, 304, "the current tag"),
        (weak, 304, "the tag marked weak (weak comparison)"),
        ("*", 304, "*"),
        (f'"nope", {etag}', 304, "a list with the tag second"),
        (f'"a",W/"b" ,  {weak}', 304, "a list, OWS and a weak tag"),
        (f'{etag}, "x"', 304, "a list with the tag first"),
        ('"nope"', 200, "another tag"),
        ('"nope", W/"other"', 200, "a list of other tags"),
        (etag[:-2] + '"', 200, "a tag one digit short"),
        (etag.strip('"'), 200, "the tag without quotes (malformed)"),
        (f'{etag}, garbage', 200, "a malformed list, even with the tag in it"),
        (f'w/{etag}', 200, "w/ (the weak marker is case-sensitive)"),
        ("", 200, "an empty value"),
        ("*, " + etag, 200, "* in a list (malformed)"),
    ]
    for value, status, what in cases:
        r = c.request("/e.txt", headers={"If-None-Match": value})
        check(r.status == status, f"If-None-Match {value!r}: {status} ({what})")
        if status == 304:
            if (r.body != b"" or r.header("content-length") is not None or
                    r.header("etag") != etag or r.header("last-modified") != OLD or
                    r.header("date") is None):
                check(False, f"304 headers: {r.headers}")
        else:
            check(r.body == BODY and r.header("etag") == etag, "the whole file, with its ETag")
    check(True, "every 304: no body, no Content-Length; ETag, Last-Modified, Date")

    r = c.request("/e.txt", method="HEAD", headers={"If-None-Match": etag})
    check(r.status == 304 and r.header("etag") == etag, "HEAD with the tag: 304")
    r = c.request("/e.txt", method="HEAD", headers={"If-None-Match": '"nope"'})
    check(r.status == 200 and r.header("content-length") == str(len(BODY)),
          "HEAD with another tag: 200")
    # Several fields make one list (RFC 9110 section 5.3).
    c.send(f"GET /e.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\n"
           f"If-None-Match: {etag}\r\n\r\n")
    check(c.response().status == 304, "two If-None-Match fields, the second matching: 304")
    # A 304 keeps the connection, also pipelined.
    c.send(f"GET /e.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
           "GET /f.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    r1, r2 = c.response(), c.response()
    check(r1.status == 304 and r2.status == 200 and r2.body == b"F\n",
          "a pipelined 304 then a 200 on one connection")
    r = c.request("/missing", headers={"If-None-Match": "*"})
    check(r.status == 404, "If-None-Match: * on a missing file: 404")
    r = c.request("/e.txt", method="POST", headers={"If-None-Match": etag})
    check(r.status == 405, "If-None-Match on a POST: still 405")
    c.close()
    if shutil.which("curl"):
        rc, out, err = curl("-H", f"If-None-Match: {etag}", "-w", "%{http_code}",
                            srv.url("/e.txt"))
        check(rc == 0 and out == b"304", "curl with If-None-Match gets 304")


def test_precedence(srv, root):
    etag = tag_of(root.path("e.txt"))
    c = Conn(srv.port)
    r = c.request("/e.txt", headers={"If-Modified-Since": OLD})
    check(r.status == 304 and r.header("etag") == etag,
          "If-Modified-Since alone still gives 304, now with the ETag")
    r = c.request("/e.txt", headers={"If-None-Match": '"nope"', "If-Modified-Since": LATER})
    check(r.status == 200 and r.body == BODY,
          "If-None-Match that fails wins over an If-Modified-Since that holds: 200")
    r = c.request("/e.txt", headers={"If-None-Match": etag, "If-Modified-Since": EARLIER})
    check(r.status == 304, "If-None-Match that matches wins over a failing If-Modified-Since")
    r = c.request("/e.txt", headers={"If-None-Match": "", "If-Modified-Since": LATER})
    check(r.status == 200, "even an empty If-None-Match makes If-Modified-Since ignored")
    c.close()


def test_if_range(srv, root):
    etag = tag_of(root.path("e.txt"))
    c = Conn(srv.port)
    for value, status, what in [
            (etag, 206, "the current tag"),
            ('"nope"', 200, "another tag"),
            ("W/" + etag, 200, "the tag marked weak (strong comparison)"),
            (OLD, 206, "the Last-Modified date"),
            (EARLIER, 200, "another date")]:
        r = c.request("/e.txt", headers={"Range": "bytes=0-4", "If-Range": value})
        want = BODY[:5] if status == 206 else BODY
        check(r.status == status and r.body == want, f"If-Range {value!r}: {status} ({what})")
    r = c.request("/f.txt", headers={"Range": "bytes=0-0", "If-Range": WEDNESDAY})
    check(r.status == 206 and r.body == b"F", "If-Range with a date on a W-day is a date: 206")
    r = c.request("/e.txt", headers={"Range": "bytes=0-4", "If-Range": etag,
                                     "If-None-Match": etag})
    check(r.status == 304, "If-None-Match is answered before Range: 304")
    c.close()


def wait_cache(cache_s):
    if cache_s:
        time.sleep(cache_s + 0.2)


def test_changes(srv, root):
    """The tag follows the file: rewritten in place (another size), touched
    (same size, another mtime), replaced by a rename; each seen once the
    open-file cache lets go of the old one."""
    cache_s = cache_seconds()
    c = Conn(srv.port)
    path = root.path("e.txt")
    old = c.request("/e.txt").header("etag")
    seen = {old}

    with open(path, "wb") as f:         # in place: same inode, new size
        f.write(b"a longer version of the file\n")
    set_mtime(root, "e.txt", 1_000_000_100 * 10**9)
    wait_cache(cache_s)
    r = c.request("/e.txt", headers={"If-None-Match": old})
    new = r.header("etag")
    check(r.status == 200 and r.body == b"a longer version of the file\n" and
          new == tag_of(path) and new not in seen,
          f"rewritten in place: a new ETag after {cache_s}s, the old tag gets 200")
    check(c.request("/e.txt", headers={"If-None-Match": new}).status == 304,
          "and the new tag gets 304")
    seen.add(new)

    set_mtime(root, "e.txt", 1_000_000_100 * 10**9 + 1000)  # 1 us later, same size
    if tag_of(path) in seen:
        log("# the file system keeps no sub-second mtime: same-size change not checked")
    else:
        wait_cache(cache_s)
        r = c.request("/e.txt", headers={"If-None-Match": new})
        new = r.header("etag")
        check(r.status == 200 and new == tag_of(path) and new not in seen,
              "same size, mtime 1 us later: a new ETag")
        seen.add(new)

    tmp = root.write("e.tmp", BODY)      # replaced by a rename: a new inode
    os.utime(tmp, ns=(1_000_000_200 * 10**9, 1_000_000_200 * 10**9))
    os.rename(tmp, path)
    wait_cache(cache_s)
    r = c.request("/e.txt", headers={"If-None-Match": ", ".join(sorted(seen))})
    new = r.header("etag")
    check(r.status == 200 and r.body == BODY and new == tag_of(path) and new not in seen,
          "replaced by a rename: a new ETag; every older tag gets 200")
    c.close()


def set_dates(root):
    for rel in ["e.txt", "dir/index.html"]:
        set_mtime(root, rel, 1_000_000_000 * 10**9)
    set_mtime(root, "f.txt", (1_000_000_000 + 3 * 86400) * 10**9)


def main():
    files = {"e.txt": BODY, "f.txt": b"F\n", "dir/index.html": b"<p>i</p>\n"}
    serve_and_run("test_etag.py", files,
                  [test_present, test_if_none_match, test_precedence, test_if_range, test_changes],
                  setup=set_dates)


if __name__ == "__main__":
    run(main)
