# SPDX-License-Identifier: MIT
"""Malformed and oversized requests over raw sockets: each gets its status
(400, 405, 413, 431, 505) and, where the stream cannot be trusted any
more, the connection closes after it; the server keeps serving others.

usage: test_malformed.py path/to/nbuf-http [server options]"""

import sys

from httptest import Conn, Root, Server, check, log, raw_exchange, run, status_of

OK = "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"

# 400 and closed: each is sent followed by OK, which must not be served.
# (test_lf.py sends them again with bare LF line ends.)
BAD = [
    ("garbage\r\n\r\n", "garbage request line"),
    ("GET\r\n\r\n", "request line without target"),
    ("GET /a.txt\r\n\r\n", "HTTP/0.9-style request"),
    ("GET  /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", "two spaces"),
    ("GET /a.txt HTTP/1.1 \r\nHost: x\r\n\r\n", "trailing space"),
    ("GET /a.txt FOO/1.1\r\nHost: x\r\n\r\n", "not HTTP"),
    ("GET /a.txt HTTP/1.x\r\nHost: x\r\n\r\n", "bad version digits"),
    ("G(T /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", "method not a token"),
    ("GET /a.txt HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "two Hosts"),
    ("GET /a.txt HTTP/1.1\r\nHost : x\r\n\r\n", "space before the colon"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "obs-fold"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", "field without colon"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", "bare CR"),
    ("GET /a.txt HTTP/1.1\rHost: x\r\r", "bare CR line ends"),
    ("GET /a.txt HTTP/1.1\r\r\nHost: x\r\n\r\n", "CR CR LF after the request line"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\r\n\r\n", "CR CR LF after a field"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\r\n", "CR CR LF as the empty line"),
    ("\rGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", "a bare CR before the request"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\x01\r\n\r\n", "control byte in a value"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", "bad length"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     "conflicting lengths"),
    ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
     "Transfer-Encoding: chunked\r\n\r\n", "Content-Length with Transfer-Encoding"),
]


def expect(srv, data, status, what):
    out = raw_exchange(srv.port, data, half_close=False)
    check(status_of(out) == status and out.count(b"HTTP/1.1 ") == 1,
          f"{what}: {status}, then closed")
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_malformed.py nbuf-http [options]")
    root = Root()
    root.write("a.txt", b"AAAA\n")
    srv = Server(sys.argv[1], root.dir, *sys.argv[2:])
    try:
        for data, what in BAD:
            expect(srv, data + OK, 400, what)
        expect(srv, "GET /a.txt HTTP/2.0\r\nHost: x\r\n\r\n" + OK, 505, "HTTP/2.0")

        # Oversized: a long target, many or long header fields, no end at all.
        expect(srv, "GET /" + "a" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 431,
               "request line over 8 KiB")
        expect(srv, "GET /a.txt HTTP/1.1\r\nHost: x\r\nX: " + "v" * 9000 + "\r\n\r\n", 431,
               "header field over 8 KiB")
        expect(srv, "GET /a.txt HTTP/1.1\r\nHost: x\r\n" + "X: y\r\n" * 100 + "\r\n", 431,
               "100 header fields")
        expect(srv, "GET /a.txt HTTP/1.1\r\nHost: x\r\nX: " + "v" * 20000, 431,
               "unterminated header over 8 KiB")

        # Bodies are refused with 413 and not read.
        expect(srv, "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + OK,
               413, "GET with a body")
        expect(srv, "POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n", 413, "chunked body")
        big = expect(srv, "PUT /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" +
                     "z" * 1000000, 413, "1 MB body (the reply survives the unread bytes)")

        # 405 keeps the connection (the request itself was well-formed).
        c = Conn(srv.port)
        for m in ["POST", "PUT", "DELETE", "OPTIONS", "BREW"]:
            r = c.request("/a.txt", method=m)
            check(r.status == 405 and r.header("allow") == "GET, HEAD", f"{m}: 405 with Allow")
        r = c.request("/a.txt", method="get")
        check(r.status == 405, "methods are case-sensitive")
        check(c.request("/a.txt").body == b"AAAA\n", "connection still usable after 405")
        r = c.request("/a.txt", headers={"Content-Length": "0", "X-Empty": ""})
        check(r.status == 200, "Content-Length: 0 and an empty field are fine")
        c.close()
        del big
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
