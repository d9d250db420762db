#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Differential test: one random pipelined command stream (binary values of
0 B - 256 KiB, numbers and their edge cases, option mixes, wrong arities,
unknown commands, some inline requests; the string and key commands, the
EXPIRE family, KEYS patterns, MULTI/EXEC/DISCARD blocks with WATCH, CLIENT
SETNAME/GETNAME, HELLO's and AUTH's errors) goes to nbuf-kv and to a real
redis-server, each cut at its own random byte boundaries as it is sent, and
the replies are compared byte for byte, one by one. Two kinds are compared
after a normalisation: KEYS (order: sorted) and TTL, PTTL, EXPIRETIME,
PEXPIRETIME (a positive value, which depends on when it ran, counts as
equal to any positive value). Expiry times are chosen so that no key
expires during the run and every NX/XX/GT/LT comparison has the same
outcome on both servers whenever it runs.

KV_DIFF_SEED picks the stream (printed), KV_DIFF_COMMANDS its length."""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import Conn, encode, log, skip_unless, start_kv, start_redis  # noqa: E402

TIME_LIMIT = 120  # seconds for the whole exchange, per server


# Relative expiries (ms from now) of every source are far apart and far from
# the absolute ones (2096 to 2100), so comparisons never depend on timing;
# GT and LT only go with the absolute forms (two equal relative times set
# at different moments compare by when they ran).
EXPIRE_SECS = [b"5000", b"50000000"]
PEXPIRE_MS = [b"20000000", b"30000000000"]
EXPIREAT_SECS = [b"4102444800", b"4000000000", b"1"]
PEXPIREAT_MS = [b"4102444800123", b"4000000000500", b"1000"]
BAD_TIMES = [b"0", b"-5", b"abc", b"", b"9223372036854775807", b"9223372036854775",
             b"-9223372036854775808", b"9223372036854"]
NORMALIZED = {b"KEYS", b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME"}


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.in_multi = False
        self.keys = [f"k{i}".encode() for i in range(24)]
        self.keys += [rng.randbytes(rng.randint(1, 24)) for _ in range(8)]
        self.keys += [b"big:" + rng.randbytes(rng.randint(1000, 5000)) for _ in range(2)]

    def key(self):
        return self.r.choice(self.keys)

    def value(self):
        r = self.r
        x = r.random()
        if x < 0.10:
            return r.choice([b"0", b"1", b"-1", b"42", b"9223372036854775807",
                             b"-9223372036854775808", b"01", b" 1", b"+1", b"-0", b"1a", b""])
        if x < 0.50:
            n = r.randint(0, 64)
        elif x < 0.70:
            n = r.randint(65, 1024)
        elif x < 0.85:
            n = r.randint(1025, 20 * 1024)
        elif x < 0.95:
            n = r.randint(20 * 1024, 100 * 1024)
        else:
            n = r.randint(100 * 1024, 256 * 1024)
        return r.randbytes(n)

    def integer(self):
        r = self.r
        return r.choice([
            str(r.randint(-1000, 1000)).encode(),
            str(r.randint(-2**63, 2**63 - 1)).encode(),
            b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
            b"abc", b"", b"1.5", b" 3", b"007",
        ])

    def index(self):
        r = self.r
        return str(r.choice([r.randint(-300, 300), r.randint(-300000, 300000), 0, -1,
                             2**62, -2**62])).encode()

    def set_options(self):
        r = self.r
        opts = []
        for _ in range(r.choice([0, 0, 0, 1, 1, 2, 3])):
            o = r.choice(["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "nx", "Get",
                          "ex", "FOO"])
            opts.append(o.encode())
            # Only expiries far in the future (or invalid ones): a key that
            # expires during the run would make DBSIZE depend on when each
            # server's periodic sweep runs.
            future = {"EX": [b"1000", b"100000000"], "PX": [b"1000000", b"100000000000"],
                      "EXAT": [b"4102444800"], "PXAT": [b"4102444800000"]}
            if o.upper() in future and r.random() < 0.95:
                opts.append(r.choice(future[o.upper()] + [b"0", b"-5", b"abc", b"",
                                                          b"9223372036854775807"]))
        return opts

    def pattern(self):
        r = self.r
        k = bytearray(self.key()[:8])
        for _ in range(r.randint(0, 3)):
            i = r.randint(0, len(k))
            k[i:i + r.randint(0, 2)] = r.choice([b"*", b"?", b"[k]", b"[^a]", b"[0-9]", b"\\",
                                                  b"[", b"**", b"k"])
        return bytes(k) if r.random() < 0.9 else r.choice([b"*", b"k*", b"big:*", b"k[1-2]*"])

    def expire(self):
        r = self.r
        name = r.choice([b"EXPIRE", b"PEXPIRE", b"EXPIREAT", b"PEXPIREAT"])
        at = name.endswith(b"AT")
        if r.random() < 0.1:
            t = r.choice(BAD_TIMES)
        else:
            t = r.choice({b"EXPIRE": EXPIRE_SECS, b"PEXPIRE": PEXPIRE_MS,
                          b"EXPIREAT": EXPIREAT_SECS, b"PEXPIREAT": PEXPIREAT_MS}[name])
        opts = [b"NX", b"XX", b"nx"] + ([b"GT", b"LT", b"gt"] if at else []) + [b"FOO"]
        return [name, self.key(), t] + [r.choice(opts) for _ in range(r.choice([0, 0, 1, 2]))]

    def command(self):
        r = self.r
        names = ["set", "get", "del", "exists", "incr", "decr", "incrby", "decrby", "append",
                 "strlen", "mset", "mget", "getrange", "dbsize", "ping", "echo", "select",
                 "unknown", "arity", "flushall", "setnx", "getset", "setex", "expire",
                 "persist", "type", "multi", "exec", "discard", "watch", "unwatch", "client",
                 "hello", "auth", "keys", "ttl"]
        weights = [25, 20, 4, 4, 4, 2, 3, 3, 6, 3, 4, 4, 5, 1, 2, 2, 1, 1, 2, 0.2, 2, 2, 2, 6,
                   2, 1, 2, 0.5, 0.3, 1.5, 0.5, 1, 0.3, 0.2, 1, 3]
        if self.in_multi:
            # Queued: nothing whose reply needs normalising (it would sit inside
            # EXEC's array); end the block soon.
            weights[names.index("exec")] = 10
            weights[names.index("discard")] = 2
            weights[names.index("keys")] = weights[names.index("ttl")] = 0
        c = r.choices(names, weights=weights)[0]
        if c in ("multi", "exec", "discard"):
            self.in_multi = c == "multi"
            return [c.upper().encode()]
        if c == "setnx":
            return [b"SETNX", self.key(), self.value()]
        if c == "getset":
            return [b"GETSET", self.key(), self.value()]
        if c == "setex":
            name = r.choice([b"SETEX", b"PSETEX"])
            t = r.choice(BAD_TIMES) if r.random() < 0.1 else (
                b"100000000" if name == b"SETEX" else b"100000000000")
            return [name, self.key(), t, self.value()]
        if c == "expire":
            return self.expire()
        if c in ("persist", "type"):
            return [c.upper().encode(), self.key()]
        if c == "ttl":
            return [r.choice([b"TTL", b"PTTL", b"EXPIRETIME", b"PEXPIRETIME"]), self.key()]
        if c == "keys":
            return [b"KEYS", self.pattern()]
        if c == "watch":
            return [b"WATCH"] + [self.key() for _ in range(r.randint(1, 3))]
        if c == "unwatch":
            return [b"UNWATCH"]
        if c == "client":
            return r.choice([[b"CLIENT", b"SETNAME", r.choice([b"conn-1", b"x", b"", b"a b",
                                                               b"\xff", b"n\nl"])],
                             [b"CLIENT", b"GETNAME"], [b"CLIENT", b"NOSUCH"],
                             [b"client", b"setname"], [b"CLIENT", b"GETNAME", b"x"]])
        if c == "hello":  # errors only: a real HELLO 3 would switch redis-server to RESP3
            return r.choice([[b"HELLO", b"x"], [b"HELLO", b"1"], [b"HELLO", b"4"],
                             [b"HELLO", b"2", b"FOO"], [b"HELLO", b"2", b"AUTH", b"u"],
                             [b"HELLO", b"2", b"SETNAME"], [b"HELLO", b"02"]])
        if c == "auth":
            return r.choice([[b"AUTH", b"pw"], [b"AUTH", b"a", b"b", b"c"]])
        if c == "set":
            return [b"SET", self.key(), self.value()] + self.set_options()
        if c == "get":
            return [b"GET", self.key()]
        if c in ("del", "exists"):
            return [c.upper().encode()] + [self.key() for _ in range(r.randint(1, 4))]
        if c in ("incr", "decr"):
            return [c.upper().encode(), self.key()]
        if c in ("incrby", "decrby"):
            return [c.upper().encode(), self.key(), self.integer()]
        if c == "append":
            return [b"APPEND", self.key(), self.value()]
        if c == "strlen":
            return [b"STRLEN", self.key()]
        if c == "mset":
            out = [b"MSET"]
            for _ in range(r.randint(1, 4)):
                out += [self.key(), self.value()]
            if r.random() < 0.05:
                out.append(self.key())  # odd: wrong number of arguments
            return out
        if c == "mget":
            return [b"MGET"] + [self.key() for _ in range(r.randint(1, 6))]
        if c == "getrange":
            return [b"GETRANGE", self.key(), self.index(),
                    self.index() if r.random() < 0.97 else b"x"]
        if c == "dbsize":
            return [b"DBSIZE"]
        if c == "ping":
            return [b"PING"] + ([self.value()] if r.random() < 0.5 else [])
        if c == "echo":
            return [b"ECHO", self.value()]
        if c == "select":
            return [b"SELECT", r.choice([b"0", b"1", b"-1", b"x", b"4294967296"])]
        if c == "unknown":
            return [r.choice([b"FOO", b"getx", b"x" * 200])] + [
                self.value()[:300] for _ in range(r.randint(0, 3))]
        if c == "arity":
            a = r.choice([[b"GET"], [b"GET", b"a", b"b"], [b"SET", b"a"], [b"INCR"],
                          [b"GETRANGE", b"a", b"1"], [b"ECHO"], [b"DBSIZE", b"x"],
                          [b"STRLEN"], [b"APPEND", b"a"], [b"MGET"], [b"PING", b"a", b"b"],
                          [b"EXPIRE", b"a"], [b"SETNX", b"a"], [b"TYPE"], [b"KEYS"],
                          [b"WATCH"], [b"CLIENT"], [b"UNWATCH", b"x"], [b"PERSIST"],
                          [b"MULTI", b"x"], [b"EXEC", b"x"], [b"DISCARD", b"x"],
                          [b"SETEX", b"a", b"1"]])
            if a[0] == b"EXEC":  # a refused EXEC discards the transaction
                self.in_multi = False
            return a
        return [b"FLUSHALL"] + ([r.choice([b"ASYNC", b"SYNC", b"x"])] if r.random() < 0.3 else [])


def normalize(reply):
    """KEYS: the elements sorted; TTL and the like: any positive value alike."""
    if reply.startswith(b":") and reply[1:2] not in (b"-", b"0"):
        return b":+\r\n"
    if not reply.startswith(b"*") or reply.startswith(b"*-1"):
        return reply
    i = reply.index(b"\r\n")
    n, pos, items = int(reply[1:i]), i + 2, []
    for _ in range(n):
        e = reply.index(b"\r\n", pos)
        ln = int(reply[pos + 1:e])
        items.append(reply[pos:e + 2 + ln + 2])
        pos = e + 4 + ln
    return reply[:i + 2] + b"".join(sorted(items))


def inline_ok(args):
    return all(a and all(c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-"
                         for c in a) for a in args)


def wire(rng, args):
    if rng.random() < 0.1 and inline_ok(args):
        return b" ".join(args) + rng.choice([b"\r\n", b"\n"])
    return encode(*args)


def exchange(port, stream, ncmds, rng):
    """Send the stream in random pieces from a thread; read ncmds replies."""
    c = Conn(port, timeout=60)
    err = []

    def sender():
        try:
            i, deadline = 0, time.monotonic() + TIME_LIMIT
            while i < len(stream) and time.monotonic() < deadline:
                n = rng.choice([1, 2, 5, 17, 100, 1000, 4096, 30000, 100000, 300000])
                c.send(stream[i:i + n])
                i += n
                if rng.random() < 0.01:
                    time.sleep(0.001)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=sender)
    t.start()
    replies = []
    deadline = time.monotonic() + TIME_LIMIT
    try:
        while len(replies) < ncmds and time.monotonic() < deadline:
            replies.append(c.read_reply())
    finally:
        t.join(TIME_LIMIT)
        c.close()
    if err:
        raise err[0]
    return replies


def main():
    skip_unless("redis-server")
    exe = sys.argv[1]
    extra = sys.argv[2:]
    seed = int(os.environ.get("KV_DIFF_SEED", "1"))
    n = int(os.environ.get("KV_DIFF_COMMANDS", "3000"))
    log(f"seed {seed} (KV_DIFF_SEED), {n} commands, nbuf-kv {' '.join(extra)}")
    rng = random.Random(seed)
    gen = Gen(rng)
    cmds = [gen.command() for _ in range(n)]
    if gen.in_multi:
        cmds[-1] = [b"EXEC"]
    stream = b"".join(wire(rng, a) for a in cmds)
    log(f"stream: {len(stream)} bytes")

    redis = start_redis()
    kv = start_kv(exe, *extra)
    failures = 0
    try:
        t0 = time.monotonic()
        want = exchange(redis.port, stream, n, random.Random(seed + 1))
        t1 = time.monotonic()
        got = exchange(kv.port, stream, n, random.Random(seed + 2))
        t2 = time.monotonic()
        log(f"redis-server {t1 - t0:.2f}s, nbuf-kv {t2 - t1:.2f}s")
        if len(want) != n or len(got) != n:
            log(f"FAIL: {len(want)} replies from redis, {len(got)} from nbuf-kv, {n} sent")
            failures += 1
        for i, (w, g) in enumerate(zip(want, got)):
            if cmds[i][0].upper() in NORMALIZED:
                w, g = normalize(w), normalize(g)
            if w != g:
                failures += 1
                if failures <= 10:
                    desc = b" ".join(a[:40] for a in cmds[i])[:200]
                    log(f"FAIL command {i}: {desc!r}\n"
                        f"  redis:   {w[:200]!r}\n  nbuf-kv: {g[:200]!r}")
    finally:
        rc = kv.stop()
        redis.stop()
    if rc != 0:
        log(f"FAIL: nbuf-kv exit status {rc}")
        failures += 1
    log(f"{n - failures}/{n} replies identical" if failures == 0 else f"{failures} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
