# SPDX-License-Identifier: MIT
"""Bare LF line ends (RFC 9112 section 2.2): requests whose lines end in LF
alone, or in a mix of LF and CRLF, are answered at once (not with a 408
after the header timeout), also pipelined and split at every byte; a bare
CR is still 400 and closes, every malformed, oversized or smuggling
request of test_malformed.py gets the same answer with LF line ends, and
random pipelines of CRLF, LF and CR line ends, cut at random, get the
answers of a Python model of the framing.

usage: test_lf.py path/to/nbuf-http [server options]"""

import itertools
import random
import re
import socket
import time

from httptest import Conn, check, request_bytes, run, serve_and_run, status_of
from test_malformed import BAD

PROMPT = 2.0  # seconds; the header timeout is 10
OK_LF = b"GET /a.txt HTTP/1.1\nHost: x\n\n"


def exchange(port, data, pause_after=None):
    """Send @data (with a pause of 0.2 s after the first @pause_after
    bytes) and read until the server closes or PROMPT passes. Returns
    (bytes, seconds, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=PROMPT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    if pause_after is None:
        s.sendall(data)
    else:
        s.sendall(data[:pause_after])
        time.sleep(0.2)
        s.sendall(data[pause_after:])
    out, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    s.close()
    return out, time.monotonic() - t0, closed


def expect_close(srv, data, status, what, pause_after=None):
    out, dt, closed = exchange(srv.port, data, pause_after)
    check(status_of(out) == status and out.count(b"HTTP/1.1 ") == 1 and closed and dt < PROMPT,
          f"{what}: {status} and closed in {dt:.2f}s")


def test_prompt(srv, root):
    c = Conn(srv.port, timeout=PROMPT)
    t0 = time.monotonic()
    r = c.request("/a.txt", eol="\n")
    dt = time.monotonic() - t0
    check(r.status == 200 and r.body == b"AAAA\n" and dt < 1.0,
          f"GET with bare LF line ends: 200 in {dt:.3f}s")
    r = c.request("/a.txt", method="HEAD", eol="\n")
    check(r.status == 200 and r.header("content-length") == "5", "HEAD with bare LF")
    r = c.request("/missing", eol="\n")
    check(r.status == 404, "404 with bare LF keeps the connection")
    check(c.request("/b.txt", eol="\n").body == b"BBBBBBBB\n", "and the next request is served")
    c.send(b"\n\r\n\n" + OK_LF)
    check(c.response().body == b"AAAA\n", "empty lines (LF and CRLF) before a request")
    c.close()
    out, dt, closed = exchange(srv.port, b"GET /a.txt HTTP/1.0\n\n")
    check(status_of(out) == 200 and out.endswith(b"AAAA\n") and closed and dt < PROMPT,
          "HTTP/1.0 with bare LF: 200, then closed")


def test_mixed(srv, root):
    """Every mix of LF and CRLF over the four line ends of a request."""
    c = Conn(srv.port, timeout=PROMPT)
    lines = ["GET /b.txt HTTP/1.1", "Host: x", "X-Mixed: yes", ""]
    n = 0
    for ends in itertools.product(["\r\n", "\n"], repeat=len(lines)):
        c.send("".join(line + e for line, e in zip(lines, ends)))
        r = c.response()
        if r.status != 200 or r.body != b"BBBBBBBB\n":
            check(False, f"mixed line ends {ends!r}: {r}")
        n += 1
    check(n == 16, "all 16 mixes of LF and CRLF in one request: 200")
    c.close()


def test_pipelined(srv, root):
    reqs = (request_bytes("/a.txt", eol="\n") + request_bytes("/b.txt", eol="\r\n") +
            b"GET /a.txt HTTP/1.1\r\nHost: x\n\r\n" + b"GET /b.txt HTTP/1.1\nHost: x\r\n\n" +
            request_bytes("/a.txt", method="HEAD", eol="\n"))
    want = [b"AAAA\n", b"BBBBBBBB\n"] * 2
    c = Conn(srv.port, timeout=PROMPT)
    c.send(reqs)
    got = [c.response().body for _ in range(4)]
    r = c.response(head=True)
    check(got == want and r.header("content-length") == "5",
          "5 pipelined requests, LF and mixed, in one write: in order")
    # Dribbled a byte at a time, so every line end (and each half of a
    # CRLF) falls at a read boundary.
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for ch in reqs:
        c.send(bytes([ch]))
        time.sleep(0.001)
    got = [c.response().body for _ in range(4)]
    c.response(head=True)
    check(got == want, "the same pipeline a byte at a time")
    n = 300
    c.send(OK_LF * n)
    check(all(c.response().body == b"AAAA\n" for _ in range(n)),
          f"{n} pipelined LF requests in one write")
    c.close()
    # The end of the header split right after its first LF, or before or
    # inside the CRLF of the empty line.
    for data, cut, what in [(OK_LF, len(OK_LF) - 1, "after the LF ending the last field"),
                            (b"GET /a.txt HTTP/1.1\nHost: x\n\r\n", 29, "inside the CRLF"),
                            (b"GET /a.txt HTTP/1.1\nHost: x\n\r\n", 28, "before the CRLF")]:
        c = Conn(srv.port, timeout=PROMPT)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(data[:cut])
        time.sleep(0.2)
        c.send(data[cut:])
        check(c.response().body == b"AAAA\n", f"header end split {what}")
        c.close()


def test_bare_cr(srv, root):
    for data, what in [
            (b"GET /a.txt HTTP/1.1\rHost: x\r\r", "CR-only line ends (no LF at all)"),
            (b"GET /a.txt HTTP/1.1\nHost: x\r\r\n\n", "CR CR LF after an LF line"),
            (b"GET /a.txt HTTP/1.1\nHost: x\n\r\r", "a bare CR where the empty line goes"),
            (b"GET /a.txt HTTP/1.1\nHost: x\rX: y\n\n", "a bare CR inside an LF header"),
    ]:
        expect_close(srv, data + OK_LF, 400, f"bare CR: {what}")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\n\r" + b"X" + OK_LF, 400,
                 "a CR at the end of a read, judged by the next byte", pause_after=29)


def test_malformed_lf(srv, root):
    """test_malformed.py's 400s, with every CRLF turned into an LF (those
    about a bare CR are sent as they are: the change could make them valid)."""
    n = 0
    for data, what in BAD:
        lf = (data if re.search("\r(?!\n)", data) else data.replace("\r\n", "\n")).encode()
        out, dt, closed = exchange(srv.port, lf + OK_LF)
        if not (status_of(out) == 400 and out.count(b"HTTP/1.1 ") == 1 and closed):
            check(False, f"{what} with LF line ends: {out[:40]!r} closed={closed}")
        n += 1
    check(n == len(BAD), f"all {n} malformed requests of test_malformed with LF: 400, closed")
    expect_close(srv, b"GET /a.txt HTTP/2.0\nHost: x\n\n" + OK_LF, 505, "HTTP/2.0 with LF")
    expect_close(srv, b"GET /a.txt HTTP/1.0\nTransfer-Encoding: chunked\n\n" + OK_LF, 400,
                 "Transfer-Encoding in HTTP/1.0 with LF")


def test_smuggling_lf(srv, root):
    # Bodies are refused and not read as requests, whatever the line ends.
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello" + OK_LF,
                 413, "Content-Length body with LF")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\nX: a\nTransfer-Encoding: chunked\n\n"
                 b"0\n\n" + OK_LF, 413, "Transfer-Encoding after an LF-ended field")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\r\nContent-Length: 0\n"
                 b"Transfer-Encoding: chunked\r\n\n" + OK_LF, 400,
                 "Content-Length with Transfer-Encoding, mixed line ends")
    # An empty LF line ends the block: what follows is the next request.
    out, dt, closed = exchange(srv.port, OK_LF + b"Content-Length: 5\n\nhello")
    check(status_of(out) == 200 and out.count(b"HTTP/1.1 ") == 2 and b" 400 " in out and
          closed, "a field after the empty LF line is the next request: 200, then 400")
    # Limits count the bytes of LF blocks as of CRLF ones.
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\n" + b"X: y\n" * 100 + b"\n", 431,
                 "100 LF header fields")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\nX: " + b"v" * 9000 + b"\n\n", 431,
                 "an LF header field over 8 KiB")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\nX: " + b"v" * 20000, 431,
                 "an unterminated LF header over 8 KiB")
    expect_close(srv, b"GET /a.txt HTTP/1.1\nHost: x\nX-A: 1\n  folded\n\n" + OK_LF, 400,
                 "obs-fold after an LF")


def model(stream):
    """The statuses nbuf-http answers @stream with (sent, then the write
    side shut), for requests made of the lines random_stream() uses: the
    framing of request.c written again in Python, independent of how the
    stream is cut into reads."""
    out, p = [], 0
    while True:
        while stream.startswith(b"\n", p) or stream.startswith(b"\r\n", p):
            p += 1 if stream[p] == 0x0a else 2
        rest, end, i = stream[p:], None, 0
        if not rest:
            return out
        while (i := rest.find(b"\n", i)) >= 0:
            nx = rest[i + 1:i + 3]
            if nx[:1] == b"\n" or nx == b"\r\n":
                end = i + 1 + (1 if nx[:1] == b"\n" else 2)
                break
            if len(nx) == 2 and nx[0] == 0x0d:
                return out + [400]  # "\n\r" and not an LF after it
            i += 1
        if end is None:  # incomplete: only a bare CR can be judged
            return out + [400] if re.search(rb"\r[^\n]", rest) else out
        lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in rest[:end].split(b"\n")][:-2]
        fields = lines[1:]
        if (lines[0] != b"GET /a.txt HTTP/1.1" or sum(f == b"Host: x" for f in fields) != 1 or
                not all(re.fullmatch(rb"(Host: x|X-\d: y)", f) for f in fields)):
            return out + [400]
        out.append(200)
        p += end


def random_stream(rnd):
    ends = [b"\r\n", b"\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]
    stream = b""
    for _ in range(rnd.randint(1, 3)):
        if rnd.random() < 0.2:
            stream += rnd.choice([b"\n", b"\r\n", b"\n\r\n"])
        lines = [b"GET /a.txt HTTP/1.1", b"Host: x"]
        lines += [b"X-%d: y" % j for j in range(rnd.randint(0, 2))] + [b""]
        stream += b"".join(line + rnd.choice(ends) for line in lines)
    return stream


def test_random_streams(srv, root):
    """Pipelines of requests with random line ends (CRLF, LF, CR, CR CR LF),
    sent in random pieces: the answers are the model's, whatever the cut."""
    rnd = random.Random(16)
    counts = {200: 0, 400: 0}
    for n in range(1, 501):
        stream = random_stream(rnd)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=PROMPT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        i = 0
        while i < len(stream):
            k = rnd.choice([1, 2, 3, 7, 50, 1000])
            s.sendall(stream[i:i + k])
            i += k
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        got = [int(r[:3]) for r in out.split(b"HTTP/1.1 ")[1:]]
        want = model(stream)
        if got != want:
            check(False, f"stream {n} {stream!r}: {got}, the model says {want}")
        for st in got:
            counts[st] += 1
    check(counts[200] > 100 and counts[400] > 100,
          f"500 random streams answered as the model says ({counts[200]} x 200, "
          f"{counts[400]} x 400)")


def main():
    serve_and_run("test_lf.py", {"a.txt": b"AAAA\n", "b.txt": b"BBBBBBBB\n"},
                  [test_prompt, test_mixed, test_pipelined, test_bare_cr, test_malformed_lf,
                   test_smuggling_lf, test_random_streams])


if __name__ == "__main__":
    run(main)
