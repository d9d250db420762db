# SPDX-License-Identifier: MIT
"""Connection handling: curl reuses one connection for two URLs,
pipelined requests (in one write, and split at every byte) answered in
order, Connection: close and HTTP/1.0 (close unless keep-alive is asked),
a half-closed client still gets its responses, empty lines before a
request are ignored.

usage: test_keepalive.py path/to/nbuf-http [server options]"""

import socket
import sys
import threading
import time

from httptest import Conn, Root, Server, check, curl, log, raw_exchange, run, skip_unless


def test_curl_reuse(srv):
    rc, out, err = curl("-v", srv.url("/a.txt"), srv.url("/b.txt"))
    check(rc == 0 and out == b"AAAA\nBBBBBBBB\n", "curl fetches two URLs")
    check("Re-using existing connection" in err, "curl re-used the connection")
    check(err.count("Connected to") == 1, "one TCP connection for both")


def test_pipelining(srv):
    c = Conn(srv.port)
    reqs = "".join(f"GET /{n}.txt HTTP/1.1\r\nHost: x\r\n\r\n" for n in "abab")
    reqs += "HEAD /b.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
    c.send(reqs)
    bodies = [c.response().body for _ in range(4)]
    check(bodies == [b"AAAA\n", b"BBBBBBBB\n"] * 2, "4 pipelined GETs answered in order")
    r = c.response(head=True)
    check(r.status == 200 and r.header("content-length") == "9", "pipelined HEAD")
    r = c.response()
    check(r.status == 404, "pipelined 404 keeps the connection")
    check(c.request("/a.txt").body == b"AAAA\n", "connection still usable")

    # The same pipeline dribbled a byte at a time: header ends split across reads.
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for ch in reqs.encode():
        c.send(bytes([ch]))
    bodies = [c.response().body for _ in range(4)]
    check(bodies == [b"AAAA\n", b"BBBBBBBB\n"] * 2, "byte-at-a-time pipeline")
    c.response(head=True)
    c.response()

    # A deep pipeline (more than a batch and a wakeup's budget).
    n = 600
    c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n" * n)
    got = [c.response().body for _ in range(n)]
    check(got == [b"AAAA\n"] * n, f"{n} pipelined requests in one go")
    c.close()

    # A flood: 20000 requests sent by a thread while this one reads. The
    # server reads ahead only so far, then lets TCP flow control hold the
    # sender, and serves them all in order.
    n = 20000
    c = Conn(srv.port, timeout=60)
    sender = threading.Thread(
        target=c.send, args=("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n" * (n - 1) +
                             "GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n",))
    sender.start()
    ok = all(c.response().body == b"AAAA\n" for _ in range(n - 1))
    last = c.response().body
    sender.join(60)
    check(ok and last == b"BBBBBBBB\n" and not sender.is_alive(),
          f"{n} requests flooded while reading: all answered in order")
    c.close()

    # A large file between small ones: ordering across file regions.
    c = Conn(srv.port)
    c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
           "GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    r1, r2, r3 = c.response(), c.response(), c.response()
    check(r1.body == b"AAAA\n" and len(r2.body) == 3 << 20 and r3.body == b"BBBBBBBB\n",
          "small, large, small pipelined")
    c.close()


def test_close(srv):
    c = Conn(srv.port)
    r = c.request("/a.txt", headers={"Connection": "close"})
    check(r.status == 200 and r.header("connection") == "close", "Connection: close echoed")
    check(c.closed(), "server closes after Connection: close")
    c.close()

    c = Conn(srv.port)
    r = c.request("/a.txt", version="1.0", headers={})
    check(r.status == 200 and r.header("connection") == "close", "HTTP/1.0: Connection: close")
    check(c.closed(), "HTTP/1.0 without keep-alive: closed")
    c.close()

    c = Conn(srv.port)
    r = c.request("/a.txt", version="1.0", headers={"Connection": "keep-alive"})
    check(r.header("connection") == "keep-alive", "HTTP/1.0 keep-alive: acknowledged")
    r = c.request("/b.txt", version="1.0", headers={"Connection": "keep-alive"})
    check(r.body == b"BBBBBBBB\n", "HTTP/1.0 keep-alive: second request")
    c.close()

    # HTTP/1.0 without Host is fine.
    out = raw_exchange(srv.port, "GET /a.txt HTTP/1.0\r\n\r\n")
    check(out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\nAAAA\n"),
          "HTTP/1.0 without Host: 200")

    # Pipelined after a Connection: close request: the rest is not served.
    out = raw_exchange(srv.port, "GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       "GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    check(out.count(b"HTTP/1.1 ") == 1 and out.endswith(b"AAAA\n"),
          "nothing served after Connection: close")

    # Half-close: the client shuts its write side after pipelining.
    out = raw_exchange(srv.port, "\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    check(out.count(b"HTTP/1.1 200 ") == 2 and out.endswith(b"BBBBBBBB\n"),
          "half-closed client gets both responses; leading empty lines ignored")


def test_many_connections(srv):
    conns = [Conn(srv.port) for _ in range(50)]
    for i, c in enumerate(conns):
        c.send(f"GET /{'ab'[i % 2]}.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    ok = all(c.response().body == (b"AAAA\n" if i % 2 == 0 else b"BBBBBBBB\n")
             for i, c in enumerate(conns))
    check(ok, "50 concurrent connections")
    for c in conns:
        c.close()
    time.sleep(0.1)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_keepalive.py nbuf-http [options]")
    skip_unless("curl")
    root = Root()
    root.write("a.txt", b"AAAA\n")
    root.write("b.txt", b"BBBBBBBB\n")
    root.write("big.bin", bytes(range(256)) * (3 << 12))
    srv = Server(sys.argv[1], root.dir, *sys.argv[2:])
    try:
        test_curl_reuse(srv)
        test_pipelining(srv)
        test_close(srv)
        test_many_connections(srv)
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
