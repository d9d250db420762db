#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""nbuf-kv on an ephemeral loopback port, no other program needed: replies,
pipelining, requests split at every byte, large values across many reads
(copied and sliced policies, one and two threads), protocol errors, limits
(bulk length, query buffer, clients), expiry (lazy and swept), the key
commands (SETNX, SETEX, GETSET, TYPE, KEYS globs, the EXPIRE family, PERSIST),
transactions (MULTI/EXEC/DISCARD, WATCH, EXEC's atomicity with threads),
CLIENT, HELLO and AUTH, QUIT, and a clean exit (nbuf_pool_free finds no live
buffer) after SIGTERM."""

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
    ck.eq(t + " setex", c.cmd("SETEX", "x", "100", big), b"+OK\r\n")
    ck.eq(t + " setex value", c.cmd("GET", "x"), b"$%d\r\n%s\r\n" % (len(big), big))
    ck.eq(t + " setex ttl", c.cmd("TTL", "x"), b":100\r\n")
    ck.eq(t + " psetex", c.cmd("PSETEX", "x", "100000", "v"), b"+OK\r\n")
    ck.true(t + " psetex pttl", 99000 < int(c.cmd("PTTL", "x")[1:-2]) <= 100000)
    ck.eq(t + " setex 0", c.cmd("SETEX", "x", "0", "v"),
          b"-ERR invalid expire time in 'setex' command\r\n")
    ck.eq(t + " psetex overflow", c.cmd("PSETEX", "x", "9223372036854775807", "v"),
          b"-ERR invalid expire time in 'psetex' command\r\n")
    ck.eq(t + " setex not int", c.cmd("SETEX", "x", "1.5", "v"),
          b"-ERR value is not an integer or out of range\r\n")
    ck.eq(t + " setex arity", c.cmd("SETEX", "x", "1"),
          b"-ERR wrong number of arguments for 'setex' command\r\n")
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


def hello_reply(cid):
    return (b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"
            b"$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:%d\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
            b"$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n" % cid)


def connection_commands(port, tag):
    """CLIENT ID/SETNAME/GETNAME/HELP and their errors, HELLO, AUTH."""
    t = f"[{tag}]"
    c, d = Conn(port), Conn(port)
    cid, did = int(c.cmd("CLIENT", "ID")[1:-2]), int(d.cmd("CLIENT", "ID")[1:-2])
    ck.true(t + " client ids differ", cid > 0 and did > 0 and cid != did, f"{cid} {did}")
    ck.eq(t + " getname unset", c.cmd("CLIENT", "GETNAME"), b"$-1\r\n")
    ck.eq(t + " setname", c.cmd("CLIENT", "SETNAME", "worker-1"), b"+OK\r\n")
    ck.eq(t + " getname", c.cmd("client", "getname"), b"$8\r\nworker-1\r\n")
    ck.eq(t + " name is per connection", d.cmd("CLIENT", "GETNAME"), b"$-1\r\n")
    for bad in ("a b", "a\nb", "a\x7fb", "a\x01b", "caf\xc3\xa9"):
        ck.eq(f"{t} setname {bad!r}", c.cmd("CLIENT", "SETNAME", bad.encode("latin1")),
              b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n")
    ck.eq(t + " bad name keeps the old", c.cmd("CLIENT", "GETNAME"), b"$8\r\nworker-1\r\n")
    ck.eq(t + " setname empty clears", c.cmd("CLIENT", "SETNAME", ""), b"+OK\r\n")
    ck.eq(t + " cleared", c.cmd("CLIENT", "GETNAME"), b"$-1\r\n")
    ck.eq(t + " client arity", c.cmd("CLIENT"),
          b"-ERR wrong number of arguments for 'client' command\r\n")
    ck.eq(t + " setname arity", c.cmd("CLIENT", "SETNAME"),
          b"-ERR wrong number of arguments for 'client|setname' command\r\n")
    ck.eq(t + " id arity", c.cmd("CLIENT", "ID", "x"),
          b"-ERR wrong number of arguments for 'client|id' command\r\n")
    ck.eq(t + " client list unknown", c.cmd("CLIENT", "LIST"),
          b"-ERR unknown subcommand 'LIST'. Try CLIENT HELP.\r\n")
    ck.eq(t + " client setinfo unknown", c.cmd("CLIENT", "SETINFO", "LIB-NAME", "x"),
          b"-ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.\r\n")
    ck.true(t + " client help", c.cmd("CLIENT", "HELP").startswith(
        b"*9\r\n+CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n+GETNAME"))
    ck.eq(t + " config set arity", c.cmd("CONFIG", "SET", "a"),
          b"-ERR wrong number of arguments for 'config|set' command\r\n")

    ck.eq(t + " hello", c.cmd("HELLO"), hello_reply(cid))
    ck.eq(t + " hello 2", c.cmd("HELLO", "2"), hello_reply(cid))
    ck.eq(t + " hello 3", c.cmd("HELLO", "3"), b"-NOPROTO unsupported protocol version\r\n")
    ck.eq(t + " hello 1", c.cmd("HELLO", "1"), b"-NOPROTO unsupported protocol version\r\n")
    ck.eq(t + " hello x", c.cmd("HELLO", "x"),
          b"-ERR Protocol version is not an integer or out of range\r\n")
    ck.eq(t + " hello setname", c.cmd("HELLO", "2", "SETNAME", "h1"), hello_reply(cid))
    ck.eq(t + " hello named", c.cmd("CLIENT", "GETNAME"), b"$2\r\nh1\r\n")
    ck.eq(t + " hello bad name", c.cmd("HELLO", "2", "setname", "a b"),
          b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n")
    ck.eq(t + " hello option", c.cmd("HELLO", "2", "FOO"),
          b"-ERR Syntax error in HELLO option 'FOO'\r\n")
    ck.eq(t + " hello setname alone", c.cmd("HELLO", "2", "SETNAME"),
          b"-ERR Syntax error in HELLO option 'SETNAME'\r\n")
    ck.eq(t + " hello auth short", c.cmd("HELLO", "2", "AUTH", "u"),
          b"-ERR Syntax error in HELLO option 'AUTH'\r\n")
    no_auth = (b"-ERR AUTH <password> called without any password configured for the default "
               b"user. Are you sure your configuration is correct?\r\n")
    ck.eq(t + " hello auth", c.cmd("HELLO", "2", "AUTH", "default", "pw", "SETNAME", "h2"), no_auth)
    ck.eq(t + " hello auth sets no name", c.cmd("CLIENT", "GETNAME"), b"$2\r\nh1\r\n")
    ck.eq(t + " auth", c.cmd("AUTH", "pw"), no_auth)
    ck.eq(t + " auth user", c.cmd("AUTH", "u", "pw"), no_auth)
    ck.eq(t + " auth syntax", c.cmd("AUTH", "a", "b", "c"), b"-ERR syntax error\r\n")
    ck.eq(t + " auth arity", c.cmd("AUTH"),
          b"-ERR wrong number of arguments for 'auth' command\r\n")
    c.close()
    d.close()


def transactions(port, tag, threaded):
    """MULTI/EXEC/DISCARD and their errors (Redis's texts), EXECABORT on a
    command refused while queueing, queued large values, isolation from
    other clients, WATCH (changes by others, expiry, FLUSHALL, UNWATCH), and
    with threads EXEC's atomicity against concurrent readers."""
    t = f"[{tag}]"
    c, o = Conn(port), Conn(port)
    c.cmd("FLUSHALL")
    ck.eq(t + " exec alone", c.cmd("EXEC"), b"-ERR EXEC without MULTI\r\n")
    ck.eq(t + " discard alone", c.cmd("DISCARD"), b"-ERR DISCARD without MULTI\r\n")
    ck.eq(t + " multi", c.cmd("MULTI"), b"+OK\r\n")
    ck.eq(t + " nested", c.cmd("MULTI"), b"-ERR MULTI calls can not be nested\r\n")
    ck.eq(t + " queued", c.cmd("SET", "a", "x"), b"+QUEUED\r\n")
    ck.eq(t + " queued 2", c.cmd("INCR", "a"), b"+QUEUED\r\n")
    ck.eq(t + " watch inside", c.cmd("WATCH", "a"), b"-ERR WATCH inside MULTI is not allowed\r\n")
    ck.eq(t + " queued 3", c.cmd("GET", "a"), b"+QUEUED\r\n")
    ck.eq(t + " not yet visible", o.cmd("GET", "a"), b"$-1\r\n")
    ck.eq(t + " exec", c.cmd("EXEC"),
          b"*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n$1\r\nx\r\n")
    ck.eq(t + " visible", o.cmd("GET", "a"), b"$1\r\nx\r\n")
    ck.eq(t + " empty exec", (c.cmd("MULTI"), c.cmd("EXEC"))[1], b"*0\r\n")
    # A refused command (arity, unknown, subcommand) dooms the transaction.
    for bad, err in ((["GET"], b"-ERR wrong number of arguments for 'get' command\r\n"),
                     (["NOSUCH", "k"], b"-ERR unknown command 'NOSUCH', with args beginning "
                                       b"with: 'k' \r\n"),
                     (["CLIENT", "FOO"], b"-ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n"),
                     (["DISCARD", "x"], b"-ERR wrong number of arguments for 'discard' command\r\n"),
                     (["MULTI", "x"], b"-ERR wrong number of arguments for 'multi' command\r\n")):
        c.cmd("MULTI")
        ck.eq(f"{t} queue {bad[0]}", c.cmd("SET", "b", "1"), b"+QUEUED\r\n")
        ck.eq(f"{t} refused {bad[0]}", c.cmd(*bad), err)
        ck.eq(f"{t} execabort {bad[0]}", c.cmd("EXEC"),
              b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        ck.eq(f"{t} nothing ran {bad[0]}", c.cmd("GET", "b"), b"$-1\r\n")
    c.cmd("MULTI")
    c.cmd("SET", "b", "1")
    ck.eq(t + " exec arity aborts", c.cmd("EXEC", "x"),
          b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' "
          b"command\r\n")
    ck.eq(t + " exec arity discarded", c.cmd("EXEC"), b"-ERR EXEC without MULTI\r\n")
    ck.eq(t + " discard", (c.cmd("MULTI"), c.cmd("SET", "b", "1"), c.cmd("DISCARD"))[2],
          b"+OK\r\n")
    ck.eq(t + " discarded", c.cmd("GET", "b"), b"$-1\r\n")
    # Queued values of every size keep their bytes (large ones their buffers).
    vals = [rng.randbytes(n) for n in (0, 10, 300, 70000, 300000)]
    c.cmd("MULTI")
    for i, v in enumerate(vals):
        c.cmd("SET", f"v{i}", v)
    c.cmd("APPEND", "v1", vals[3])
    c.cmd("MSET", "m1", vals[4], "m2", vals[2])
    c.cmd("CLIENT", "SETNAME", "in-exec")
    want = b"*%d\r\n" % (len(vals) + 3) + b"+OK\r\n" * len(vals) + b":%d\r\n+OK\r\n+OK\r\n" % (
        len(vals[1]) + len(vals[3]))
    ck.eq(t + " exec values", c.cmd("EXEC"), want)
    for i, v in enumerate(vals):
        if i != 1:
            ck.eq(f"{t} queued value {len(v)}", c.cmd("GET", f"v{i}"),
                  b"$%d\r\n%s\r\n" % (len(v), v))
    ck.eq(t + " queued append", c.cmd("GET", "v1"), b"$%d\r\n%s\r\n" % (
        len(vals[1]) + len(vals[3]), vals[1] + vals[3]))
    ck.eq(t + " queued mset", c.cmd("MGET", "m1", "m2"), b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(vals[4]), vals[4], len(vals[2]), vals[2]))
    ck.eq(t + " queued setname", c.cmd("CLIENT", "GETNAME"), b"$7\r\nin-exec\r\n")
    # A transaction left open, with large values queued, when the client goes.
    k = Conn(port)
    k.cmd("WATCH", "a")
    k.cmd("MULTI")
    k.cmd("SET", "never", rng.randbytes(200000))
    k.close()

    # WATCH.
    def watched_exec(conn):
        conn.cmd("MULTI")
        conn.cmd("SET", "w", "mine")
        return conn.cmd("EXEC")
    c.cmd("SET", "w", "0")
    c.cmd("WATCH", "w")
    ck.eq(t + " watch untouched", watched_exec(c), b"*1\r\n+OK\r\n")
    c.cmd("WATCH", "w", "w2")
    o.cmd("SET", "w", "theirs")
    ck.eq(t + " watch changed", watched_exec(c), b"*-1\r\n")
    ck.eq(t + " watch changed kept", c.cmd("GET", "w"), b"$6\r\ntheirs\r\n")
    ck.eq(t + " watch cleared by exec", watched_exec(c), b"*1\r\n+OK\r\n")
    c.cmd("WATCH", "w")
    o.cmd("GET", "w")
    o.cmd("SETNX", "w", "x")       # no change
    o.cmd("DEL", "nosuch")         # no change
    ck.eq(t + " watch reads only", watched_exec(c), b"*1\r\n+OK\r\n")
    for name, change in (("del", ["DEL", "w"]), ("expire", ["EXPIRE", "w", "100"]),
                         ("append", ["APPEND", "w", "!"]), ("incr", ["INCR", "n"]),
                         ("flushall", ["FLUSHALL"]), ("getset", ["GETSET", "w", "g"])):
        c.cmd("SET", "w", "1")
        c.cmd("SET", "n", "1")
        c.cmd("WATCH", "w", "n")
        o.cmd(*change)
        ck.eq(f"{t} watch sees {name}", watched_exec(c), b"*-1\r\n")
    c.cmd("DEL", "w")
    c.cmd("WATCH", "w")
    o.cmd("SET", "w", "new")
    ck.eq(t + " watch missing then created", watched_exec(c), b"*-1\r\n")
    c.cmd("WATCH", "w")
    ck.eq(t + " unwatch", c.cmd("UNWATCH"), b"+OK\r\n")
    o.cmd("SET", "w", "again")
    ck.eq(t + " unwatched", watched_exec(c), b"*1\r\n+OK\r\n")
    c.cmd("WATCH", "w")
    o.cmd("SET", "w", "again")
    ck.eq(t + " discard unwatches", (c.cmd("MULTI"), c.cmd("DISCARD"))[1], b"+OK\r\n")
    ck.eq(t + " after discard", watched_exec(c), b"*1\r\n+OK\r\n")
    c.cmd("SET", "e", "v", "PX", "100")
    c.cmd("WATCH", "e")
    time.sleep(0.25)
    ck.eq(t + " watched key expired", watched_exec(c), b"*-1\r\n")
    c.cmd("WATCH", "w")
    c.cmd("SET", "w", "self")       # the watcher's own change counts too
    ck.eq(t + " own change", watched_exec(c), b"*-1\r\n")
    ck.eq(t + " watch arity", c.cmd("WATCH"),
          b"-ERR wrong number of arguments for 'watch' command\r\n")
    ck.eq(t + " quit inside multi", (c.cmd("MULTI"), c.cmd("QUIT"))[1], b"+OK\r\n")
    ck.eq(t + " quit closes", c.expect_eof(), b"")
    c.close()
    o.close()
    if threaded:
        exec_atomic(port, t)


def exec_atomic(port, t):
    """One client runs MULTI INCR a (SETs) INCR b EXEC; readers on other
    connections (so, likely, other threads) must never see a != b."""
    w = Conn(port)
    w.cmd("MSET", "ta", "0", "tb", "0")
    readers = [Conn(port) for _ in range(3)]
    stop, seen, torn = [False], [0], []

    def read(conn):
        mget = encode("MGET", "ta", "tb") * 20
        while not stop[0]:
            conn.send(mget)
            for _ in range(20):
                r = conn.read_reply()
                vals = r.split(b"\r\n")
                if vals[2] != vals[4]:
                    torn.append(r)
                seen[0] += 1
    import threading
    ths = [threading.Thread(target=read, args=(r,)) for r in readers]
    for th in ths:
        th.start()
    # Store work between the two INCRs widens the window a torn read needs.
    n, pad = 2000, 20
    batch = (encode("MULTI") + encode("INCR", "ta") + encode("SET", "tpad", "p" * 100) * pad +
             encode("INCR", "tb") + encode("EXEC"))
    for i in range(0, n, 100):
        w.send(batch * 100)
        for _ in range(100 * (pad + 4)):
            w.read_reply()
    stop[0] = True
    for th in ths:
        th.join(30)
    ck.eq(t + " exec atomic", torn[:1], [])
    ck.eq(t + " exec atomic result", w.cmd("MGET", "ta", "tb"),
          b"*2\r\n$4\r\n%d\r\n$4\r\n%d\r\n" % (n, n))
    log(f"{t} exec atomicity: {seen[0]} reads during {n} transactions")
    for r in readers:
        r.close()
    w.close()


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
        # Queued MULTI commands count against --max-query too.
        c = Conn(s.port)
        c.cmd("MULTI")
        try:
            for _ in range(250):
                c.send(encode("SET", "q", b"z" * 1000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        rest = c.expect_eof()
        ck.true("max-query bounds the MULTI queue",
                rest.count(b"+QUEUED\r\n") < 250 and rest.replace(b"+QUEUED\r\n", b"") == b"",
                repr(rest[-40:]))
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
            connection_commands(s.port, " ".join(args) or "defaults")
            transactions(s.port, " ".join(args) or "defaults", "--threads" in args)
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
