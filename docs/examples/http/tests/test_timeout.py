# SPDX-License-Identifier: MIT
"""Slow and idle clients, and the connection limit, with short timeouts
(--header-timeout 1 --idle-timeout 2 --max-conns 8): a header dribbled
slower than its timeout gets 408 and is closed even though bytes keep
coming (slowloris), a silent connection is closed, a keep-alive connection
is closed after the idle timeout but not before, a client that does not
read a large response is dropped, and connections beyond the limit get
503 while the others keep working.

usage: test_timeout.py path/to/nbuf-http"""

import os
import socket
import struct
import sys
import time

from httptest import Conn, Root, Server, check, log, run, status_of

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
MAX_CONNS = 8


def closed_within(c, lo, hi, what):
    t0 = time.monotonic()
    ok = c.closed(timeout=hi + 2)
    dt = time.monotonic() - t0
    check(ok and dt <= hi + 1.5, f"{what}: closed after {dt:.2f}s")
    return dt


def test_slowloris(srv):
    c = Conn(srv.port)
    t0 = time.monotonic()
    c.sock.settimeout(0.2)
    head = b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100
    got = b""
    for ch in head:                       # a byte every 50 ms, for up to 5 s
        try:
            c.send(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            chunk = c.sock.recv(4096)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            break
        if time.monotonic() - t0 > 5:
            break
    dt = time.monotonic() - t0
    check(dt < HEADER_TIMEOUT + 1.5, f"slow header cut off after {dt:.2f}s")
    check(status_of(got) in (408, 0), f"slow header: 408 or a plain close ({got[:12]!r})")
    c.close()


def test_silent(srv):
    c = Conn(srv.port)
    closed_within(c, HEADER_TIMEOUT, HEADER_TIMEOUT, "silent new connection")
    c.close()


def test_idle(srv):
    c = Conn(srv.port)
    r = c.request("/a.txt")
    check(r.status == 200, "request before idling")
    time.sleep(HEADER_TIMEOUT + 0.3)      # past the header timeout, within idle
    r = c.request("/a.txt")
    check(r.status == 200, "keep-alive connection outlives the header timeout")
    t0 = time.monotonic()
    ok = c.closed(timeout=IDLE_TIMEOUT + 2)
    dt = time.monotonic() - t0
    check(ok and IDLE_TIMEOUT - 0.3 <= dt <= IDLE_TIMEOUT + 1.5,
          f"idle keep-alive connection closed after {dt:.2f}s")
    c.close()


def open_fds(srv):
    """The server's open sockets (files may stay in its open-file cache)."""
    d = f"/proc/{srv.proc.pid}/fd"
    n = 0
    for fd in os.listdir(d):
        try:
            n += os.readlink(os.path.join(d, fd)).startswith("socket:")
        except OSError:
            pass
    return n


def test_stalled_reader(srv):
    base = open_fds(srv)
    c = Conn(srv.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    during = open_fds(srv)
    check(during == base + 1, f"a stalled response holds its socket ({during - base})")
    time.sleep(IDLE_TIMEOUT + 1)          # read nothing
    after = open_fds(srv)
    check(after == base, f"a reader that stalls is dropped ({after - base} sockets left)")
    # Reset rather than drain the orphaned send queue through a tiny window.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_max_conns(srv):
    conns = [Conn(srv.port) for _ in range(MAX_CONNS)]
    for c in conns[:2]:
        check(c.request("/a.txt").status == 200, "connection under the limit works")
    extra = Conn(srv.port)
    extra.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = extra.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    check(status_of(data) in (503, 0), f"connection over the limit: 503 and closed ({data[:12]!r})")
    extra.close()
    check(conns[0].request("/a.txt").status == 200, "connections under the limit keep working")
    for c in conns:
        c.close()
    time.sleep(0.3)
    c = Conn(srv.port)
    check(c.request("/a.txt").status == 200, "a new connection works once others closed")
    c.close()


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: test_timeout.py nbuf-http")
    root = Root()
    root.write("a.txt", b"AAAA\n")
    with open(root.path("big.bin"), "wb") as f:
        f.truncate(64 << 20)
    srv = Server(sys.argv[1], root.dir, "--header-timeout", str(HEADER_TIMEOUT),
                 "--idle-timeout", str(IDLE_TIMEOUT), "--max-conns", str(MAX_CONNS),
                 *sys.argv[2:])
    try:
        test_slowloris(srv)
        test_silent(srv)
        test_idle(srv)
        test_stalled_reader(srv)
        test_max_conns(srv)
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()
    log("done")


if __name__ == "__main__":
    run(main)
