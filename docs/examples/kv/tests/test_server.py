#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""nbuf-kv on an ephemeral loopback port, no other program needed: replies,
pipelining, requests split at every byte, large values across many reads
(copied and sliced policies, one and two threads), protocol errors, limits
(bulk length, query buffer, clients), expiry (lazy and swept), the key
commands (SETNX, GETSET, TYPE, KEYS globs, the EXPIRE family, PERSIST), QUIT, and a
clean exit (nbuf_pool_free finds no live buffer) after SIGTERM."""

import os
import random
import socket
import sys
import time
import traceback

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import Checker, Conn, encode, log, start_kv  # noqa: E402

EXE = sys.argv[1]
ck = Checker()
rng = random.Random(int(os.environ.get("KV_TEST_SEED", "12345")))


def basics(port, tag):
    c = Conn(port)
    t = f"[{tag}]"
    ck.eq(t + " ping", c.cmd("PING"), b"+PONG\r\n")
    ck.eq(t + " set", c.cmd("SET", "a", "hello"), b"+OK\r\n")
    ck.eq(t + " get", c.cmd("GET", "a"), b"$5\r\nhello\r\n")
    ck.eq(t + " get missing", c.cmd("GET", "nope"), b"$-1\r\n")
    ck.eq(t + " append", c.cmd("APPEND", "a", " world"), b":11\r\n")
    ck.eq(t + " getrange", c.cmd("GETRANGE", "a", "-5", "-1"), b"$5\r\nworld\r\n")
    ck.eq(t + " incr", c.cmd("INCRBY", "n", "41"), b":41\r\n")
    ck.eq(t + " incr", c.cmd("INCR", "n"), b":42\r\n")
    ck.eq(t + " incr bad", c.cmd("INCR", "a"),
          b"-ERR value is not an integer or out of range\r\n")
    ck.eq(t + " mset", c.cmd("MSET", "x", "1", "y", "2"), b"+OK\r\n")
    ck.eq(t + " mget", c.cmd("MGET", "x", "nope", "y"), b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n")
    ck.eq(t + " exists", c.cmd("EXISTS", "x", "x", "nope"), b":2\r\n")
    ck.eq(t + " del", c.cmd("DEL", "x", "y", "nope"), b":2\r\n")
    ck.eq(t + " arity", c.cmd("GET"), b"-ERR wrong number of arguments for 'get' command\r\n")
    ck.eq(t + " unknown", c.cmd("FOO", "a b"),
          b"-ERR unknown command 'FOO', with args beginning with: 'a b' \r\n")
    ck.eq(t + " select", c.cmd("SELECT", "0"), b"+OK\r\n")
    ck.eq(t + " inline", (c.send(b"ECHO \"x\\x41 y\"\r\n"), c.read_reply())[1], b"$4\r\nxA y\r\n")

    # 1000 pipelined commands in one write.
    c.send(b"".join(encode("INCR", "p") for _ in range(1000)))
    last = [c.read_reply() for _ in range(1000)][-1]
    ck.eq(t + " pipeline", last, b":1000\r\n")

    # One request sent a byte at a time.
    req = encode("SET", "split", "abcdefghij")
    for i in range(len(req)):
        c.send(req[i:i + 1])
        time.sleep(0.001)
    ck.eq(t + " byte by byte", c.read_reply(), b"+OK\r\n")
    ck.eq(t + " byte by byte get", c.cmd("GET", "split"), b"$10\r\nabcdefghij\r\n")

    # Large binary values cut at random boundaries, then read back whole.
    for size in (0, 1, 255, 256, 16383, 16384, 70000, 256 * 1024, 3 * 1024 * 1024):
        val = rng.randbytes(size)
        req = encode("SET", f"big{size}", val)
        i = 0
        while i < len(req):
            n = rng.choice((1, 7, 100, 1500, 40000, 200000))
            c.send(req[i:i + n])
            i += n
        ck.eq(f"{t} set {size}", c.read_reply(), b"+OK\r\n")
        ck.eq(f"{t} get {size}", c.cmd("GET", f"big{size}"), b"$%d\r\n%s\r\n" % (size, val))
        ck.eq(f"{t} strlen {size}", c.cmd("STRLEN", f"big{size}"), b":%d\r\n" % size)
        if size > 10:
            ck.eq(f"{t} getrange {size}", c.cmd("GETRANGE", f"big{size}", "3", "-4"),
                  b"$%d\r\n%s\r\n" % (size - 6, val[3:-3]))
    # Appends onto a sliced value, small and large.
    base = rng.randbytes(100000)
    c.cmd("SET", "ap", base)
    tail = b"".join(rng.randbytes(rng.choice((1, 10, 300, 20000))) for _ in range(50))
    pieces, i = [], 0
    while i < len(tail):
        n = rng.choice((1, 10, 300, 20000))
        pieces.append(tail[i:i + n])
        i += n
    for p in pieces:
        c.send(encode("APPEND", "ap", p))
    for _ in pieces:
        c.read_reply()
    ck.eq(t + " appends", c.cmd("GET", "ap"), b"$%d\r\n%s\r\n" % (len(base + tail), base + tail))

    # Expiry: lazily on access, and by the sweep (DBSIZE looks at no key).
    c.cmd("FLUSHALL")
    ck.eq(t + " px", c.cmd("SET", "e", "v", "PX", "100"), b"+OK\r\n")
    ck.true(t + " pttl", 0 < int(c.cmd("PTTL", "e")[1:-2]) <= 100)
    time.sleep(0.25)
    ck.eq(t + " expired", c.cmd("GET", "e"), b"$-1\r\n")
    c.send(b"".join(encode("SET", f"s{i}", "v", "PX", "50") for i in range(200)))
    for _ in range(200):
        c.read_reply()
    ck.eq(t + " dbsize before sweep", c.cmd("DBSIZE"), b":200\r\n")
    deadline = time.monotonic() + 5
    while c.cmd("DBSIZE") != b":0\r\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    ck.eq(t + " swept", c.cmd("DBSIZE"), b":0\r\n")

    # A batch followed by a half-close: every command still runs and answers.
    h = Conn(port)
    h.send(b"".join(encode("SET", f"h{i}", "x" * 100) for i in range(2000)) + encode("DBSIZE"))
    h.sock.shutdown(socket.SHUT_WR)
    rest = h.expect_eof()
    ck.true(t + " half-close", rest.count(b"+OK\r\n") == 2000 and rest.endswith(b":2000\r\n"),
            repr(rest[-20:]))
    h.close()

    ck.eq(t + " quit", c.cmd("QUIT"), b"+OK\r\n")
    ck.eq(t + " quit closes", c.expect_eof(), b"")
    c.close()


def keyspace(c):
    """INFO's db0 line: (keys, expires)."""
    info = c.cmd("INFO")
    line = next(x for x in info.split(b"\r\n") if x.startswith(b"db0:"))
    f = dict(kv.split(b"=") for kv in line[4:].split(b","))
    return int(f[b"keys"]), int(f[b"expires"])


def key_commands(port, tag):
    """SETNX, GETSET, TYPE, KEYS (Redis's glob), the EXPIRE family with its
    options and errors, PERSIST, TTL/PTTL/EXPIRETIME, and the expires count."""
    c = Conn(port)
    t = f"[{tag}]"
    c.cmd("FLUSHALL")
    ck.eq(t + " setnx new", c.cmd("SETNX", "n", "1"), b":1\r\n")
    ck.eq(t + " setnx old", c.cmd("SETNX", "n", "2"), b":0\r\n")
    ck.eq(t + " setnx kept", c.cmd("GET", "n"), b"$1\r\n1\r\n")
    ck.eq(t + " setnx arity", c.cmd("SETNX", "n"),
          b"-ERR wrong number of arguments for 'setnx' command\r\n")
    ck.eq(t + " getset missing", c.cmd("GETSET", "g", "a"), b"$-1\r\n")
    c.cmd("EXPIRE", "g", "100")
    ck.eq(t + " getset old", c.cmd("GETSET", "g", "b"), b"$1\r\na\r\n")
    ck.eq(t + " getset drops ttl", c.cmd("TTL", "g"), b":-1\r\n")
    big = rng.randbytes(200000)
    ck.eq(t + " getset big", c.cmd("GETSET", "g", big), b"$1\r\nb\r\n")
    ck.eq(t + " getset big back", c.cmd("GETSET", "g", "c"), b"$%d\r\n%s\r\n" % (len(big), big))
    ck.eq(t + " type string", c.cmd("TYPE", "g"), b"+string\r\n")
    ck.eq(t + " type none", c.cmd("TYPE", "nope"), b"+none\r\n")
    ck.eq(t + " type arity", c.cmd("TYPE"),
          b"-ERR wrong number of arguments for 'type' command\r\n")

    c.cmd("FLUSHALL")
    for k in ("hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "", "a[b"):
        c.cmd("SET", k, "v")

    def keys(pat):
        r = c.cmd("KEYS", pat)
        n = int(r[1:r.index(b"\r\n")])
        items, pos = [], r.index(b"\r\n") + 2
        for _ in range(n):
            e = r.index(b"\r\n", pos)
            ln = int(r[pos + 1:e])
            items.append(r[e + 2:e + 2 + ln])
            pos = e + 4 + ln
        return sorted(items)
    ck.eq(t + " keys *", keys("*"),
          sorted([b"hello", b"hallo", b"hxllo", b"hllo", b"heeeello", b"h*llo", b"", b"a[b"]))
    ck.eq(t + " keys h?llo", keys("h?llo"), [b"h*llo", b"hallo", b"hello", b"hxllo"])
    ck.eq(t + " keys h*llo", keys("h*llo"),
          [b"h*llo", b"hallo", b"heeeello", b"hello", b"hllo", b"hxllo"])
    ck.eq(t + " keys h[ae]llo", keys("h[ae]llo"), [b"hallo", b"hello"])
    ck.eq(t + " keys h[^e]llo", keys("h[^e]llo"), [b"h*llo", b"hallo", b"hxllo"])
    ck.eq(t + " keys h[a-b]llo", keys("h[a-b]llo"), [b"hallo"])
    ck.eq(t + " keys h[z-a]llo", keys("h[z-w]llo"), [b"hxllo"])
    ck.eq(t + " keys escaped star", keys("h\\*llo"), [b"h*llo"])
    ck.eq(t + " keys escape in set", keys("a[\\[]b"), [b"a[b"])
    ck.eq(t + " keys ** skips empty", keys("**"), sorted([b"hello", b"hallo", b"hxllo", b"hllo",
                                                           b"heeeello", b"h*llo", b"a[b"]))
    ck.eq(t + " keys none", keys("zz*"), [])
    ck.eq(t + " keys case", keys("HELLO"), [])
    ck.eq(t + " keys arity", c.cmd("KEYS"),
          b"-ERR wrong number of arguments for 'keys' command\r\n")
    # A pattern Redis 7.0.9 made linear (skipLongerMatches): answers at once.
    t0 = time.monotonic()
    ck.eq(t + " keys many stars", keys("*a" * 40 + "b"), [])
    ck.true(t + " keys many stars fast", time.monotonic() - t0 < 2)

    c.cmd("FLUSHALL")
    c.cmd("SET", "a", "1")
    ck.eq(t + " expire", c.cmd("EXPIRE", "a", "100"), b":1\r\n")
    ck.eq(t + " ttl", c.cmd("TTL", "a"), b":100\r\n")
    ck.eq(t + " expire nx", c.cmd("EXPIRE", "a", "100", "NX"), b":0\r\n")
    ck.eq(t + " expire xx", c.cmd("EXPIRE", "a", "200", "xx"), b":1\r\n")
    ck.eq(t + " expire gt no", c.cmd("EXPIRE", "a", "50", "GT"), b":0\r\n")
    ck.eq(t + " expire lt", c.cmd("EXPIRE", "a", "50", "LT"), b":1\r\n")
    ck.eq(t + " ttl 50", c.cmd("TTL", "a"), b":50\r\n")
    pttl = int(c.cmd("PTTL", "a")[1:-2])
    ck.true(t + " pttl", 49000 < pttl <= 50000, str(pttl))
    ck.eq(t + " expire nx xx", c.cmd("EXPIRE", "a", "5", "NX", "XX"),
          b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n")
    ck.eq(t + " expire gt lt", c.cmd("EXPIRE", "a", "5", "GT", "LT"),
          b"-ERR GT and LT options at the same time are not compatible\r\n")
    ck.eq(t + " expire bad option", c.cmd("EXPIRE", "a", "x", "FOO"),
          b"-ERR Unsupported option FOO\r\n")
    ck.eq(t + " expire not int", c.cmd("EXPIRE", "a", "x"),
          b"-ERR value is not an integer or out of range\r\n")
    ck.eq(t + " expire overflow", c.cmd("EXPIRE", "a", "9223372036854775"),
          b"-ERR invalid expire time in 'expire' command\r\n")
    ck.eq(t + " pexpire overflow", c.cmd("PEXPIRE", "a", "9223372036854775807"),
          b"-ERR invalid expire time in 'pexpire' command\r\n")
    ck.eq(t + " expireat overflow", c.cmd("EXPIREAT", "a", "9223372036854775807"),
          b"-ERR invalid expire time in 'expireat' command\r\n")
    ck.eq(t + " expire arity", c.cmd("EXPIRE", "a"),
          b"-ERR wrong number of arguments for 'expire' command\r\n")
    ck.eq(t + " expire missing", c.cmd("EXPIRE", "nope", "10"), b":0\r\n")
    ck.eq(t + " persist", c.cmd("PERSIST", "a"), b":1\r\n")
    ck.eq(t + " persist again", c.cmd("PERSIST", "a"), b":0\r\n")
    ck.eq(t + " persist missing", c.cmd("PERSIST", "nope"), b":0\r\n")
    ck.eq(t + " ttl persistent", c.cmd("TTL", "a"), b":-1\r\n")
    ck.eq(t + " ttl missing", c.cmd("PTTL", "nope"), b":-2\r\n")
    ck.eq(t + " expire gt on persistent", c.cmd("EXPIRE", "a", "100", "GT"), b":0\r\n")
    ck.eq(t + " expire lt on persistent", c.cmd("EXPIRE", "a", "100", "LT"), b":1\r\n")
    ck.eq(t + " pexpireat", c.cmd("PEXPIREAT", "a", "4102444800600"), b":1\r\n")
    ck.eq(t + " pexpiretime", c.cmd("PEXPIRETIME", "a"), b":4102444800600\r\n")
    ck.eq(t + " expiretime rounds", c.cmd("EXPIRETIME", "a"), b":4102444801\r\n")
    ck.eq(t + " expiretime none", c.cmd("EXPIRETIME", "nope"), b":-2\r\n")
    ck.eq(t + " expire 0 deletes", c.cmd("EXPIRE", "a", "0"), b":1\r\n")
    ck.eq(t + " expire 0 deleted", c.cmd("EXISTS", "a"), b":0\r\n")
    c.cmd("SET", "b", "1")
    ck.eq(t + " expireat past deletes", c.cmd("EXPIREAT", "b", "1"), b":1\r\n")
    ck.eq(t + " expireat past deleted", c.cmd("GET", "b"), b"$-1\r\n")
    c.cmd("SET", "b", "1")
    ck.eq(t + " negative xx refused", c.cmd("PEXPIRE", "b", "-1", "XX"), b":0\r\n")
    ck.eq(t + " negative xx kept", c.cmd("EXISTS", "b"), b":1\r\n")

    # Expiry counts: INFO's expires follows EXPIRE, PERSIST, SET and deletes.
    c.cmd("FLUSHALL")
    for i in range(10):
        c.cmd("SET", f"x{i}", "v")
    for i in range(6):
        c.cmd("EXPIRE", f"x{i}", "1000")
    c.cmd("PERSIST", "x0")
    c.cmd("SET", "x1", "w")          # SET drops the TTL
    c.cmd("SET", "x2", "w", "KEEPTTL")
    c.cmd("DEL", "x3")
    c.cmd("EXPIRE", "x4", "-1")      # deleted
    ck.eq(t + " keyspace counts", keyspace(c), (8, 2))

    # Short TTLs through EXPIRE/PEXPIRE: lazily on access and by the sweep.
    c.cmd("SET", "s", "v")
    ck.eq(t + " pexpire short", c.cmd("PEXPIRE", "s", "100"), b":1\r\n")
    time.sleep(0.25)
    ck.eq(t + " pexpired", c.cmd("GET", "s"), b"$-1\r\n")
    ck.eq(t + " pexpired ttl", c.cmd("TTL", "s"), b":-2\r\n")
    c.cmd("FLUSHALL")
    c.send(b"".join(encode("SET", f"e{i}", "v" * 300) for i in range(300)))
    c.send(b"".join(encode("PEXPIRE", f"e{i}", "60") for i in range(300)))
    for _ in range(600):
        c.read_reply()
    ck.eq(t + " expiring counted", keyspace(c), (300, 300))
    c.cmd("PERSIST", "e7")
    deadline = time.monotonic() + 5
    while keyspace(c) != (1, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    ck.eq(t + " swept after expire", keyspace(c), (1, 0))
    ck.eq(t + " persisted survives", c.cmd("GET", "e7"), b"$300\r\n" + b"v" * 300 + b"\r\n")
    c.close()


def protocol_errors(port):
    bystander = Conn(port)
    bystander.cmd("SET", "keep", "me")
    cases = [
        (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*2147483648\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*1\r\n$04\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"PING\r\n*1\r\n$x\r\n", b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
        (b"echo \"a\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"*1\r\n" + b"1" * 70000, b"-ERR Protocol error: too big bulk count string\r\n"),
        (b"*" + b"1" * 70000, b"-ERR Protocol error: too big mbulk count string\r\n"),
        (b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
    ]
    for req, want in cases:
        c = Conn(port)
        c.send(req)
        ck.eq(f"protocol error {req[:20]!r}", c.expect_eof(), want)
        c.close()
    # Empty multibulk and blank lines are ignored, like Redis.
    c = Conn(port)
    c.send(b"*0\r\n*-1\r\n\r\n   \n")
    ck.eq("empty requests ignored", c.cmd("PING"), b"+PONG\r\n")
    c.close()
    ck.eq("bystander unaffected", bystander.cmd("GET", "keep"), b"$2\r\nme\r\n")
    bystander.close()


def limits(exe):
    s = start_kv(exe, "--max-bulk", "1000", "--max-query", "200000", "--max-clients", "3")
    try:
        c = Conn(s.port)
        ck.eq("max-bulk ok", c.cmd("SET", "a", b"x" * 1000), b"+OK\r\n")
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1001\r\n")
        ck.eq("max-bulk refused", c.expect_eof(), b"-ERR Protocol error: invalid bulk length\r\n")
        c.close()
        # A command still incomplete when its bytes pass --max-query drops
        # the client (like client-query-buffer-limit: no reply).
        c = Conn(s.port)
        try:
            c.send(b"*1000\r\n")
            arg = b"$500\r\n" + b"y" * 500 + b"\r\n"
            for _ in range(450):
                c.send(arg)
        except (BrokenPipeError, ConnectionResetError):
            pass
        ck.eq("max-query drops", c.expect_eof(), b"")
        c.close()
        conns = [Conn(s.port) for _ in range(3)]
        for i, k in enumerate(conns):
            ck.eq(f"client {i}", k.cmd("PING"), b"+PONG\r\n")
        extra = Conn(s.port)
        ck.eq("max-clients", extra.expect_eof(), b"-ERR max number of clients reached\r\n")
        extra.close()
        conns[0].close()
        time.sleep(0.2)
        again = Conn(s.port)
        ck.eq("slot freed", again.cmd("PING"), b"+PONG\r\n")
        again.close()
        for k in conns[1:]:
            k.close()
    finally:
        ck.eq("limits server exit status", s.stop(), 0)


def shutdown_with_clients(exe):
    s = start_kv(exe, "--stats")
    c = Conn(s.port)
    c.cmd("SET", "big", rng.randbytes(500000))
    c.send(encode("GET", "big"))  # reply possibly still queued at shutdown
    c2 = Conn(s.port)
    c2.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc")  # half a request
    time.sleep(0.2)
    ck.eq("exit with clients connected", s.stop(), 0)
    c.close()
    c2.close()


def main():
    for args in ([], ["--copy-below", "0", "--inline-max", "0"],
                 ["--threads", "2", "--copy-below", "1k", "--inline-max", "16"]):
        s = start_kv(EXE, *args)
        log(f"server {' '.join(args) or '(defaults)'} on port {s.port}")
        try:
            basics(s.port, " ".join(args) or "defaults")
            key_commands(s.port, " ".join(args) or "defaults")
            protocol_errors(s.port)
        except (OSError, EOFError, AssertionError) as e:
            traceback.print_exc()
            ck.true("no exception", False, repr(e))
        finally:
            ck.eq(f"exit status ({' '.join(args)})", s.stop(), 0)
    limits(EXE)
    shutdown_with_clients(EXE)
    ck.done()


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
