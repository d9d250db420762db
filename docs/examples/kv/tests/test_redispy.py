#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""redis-py (the `redis` module) against nbuf-kv, as an application uses it:
redis.Redis(client_name=...) (CLIENT SETNAME on connect), client_getname/
client_id, the default transactional pipeline() (MULTI ... EXEC) with
several commands and execute(), errors inside a transaction (at run time and
at queue time), optimistic locking with transaction()/WATCH (also from
several threads at once), a WatchError, expiry with short TTLs (SET PX,
PEXPIRE, SETEX), KEYS, HELLO, and the error a password gets.

Skips (77) when the module is missing. Debian's python3-redis installs it
for /usr/bin/python3: when the python3 running this is another one (pyenv,
a virtualenv) that lacks it, the test re-runs itself with /usr/bin/python3."""

import os
import subprocess
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import SKIP, Checker, log, start_kv  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
ck = Checker()


def import_redis():
    try:
        import redis
        return redis
    except ImportError:
        pass
    if (os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)
            and os.access(SYSTEM_PYTHON, os.X_OK) and "KV_REDISPY_REEXEC" not in os.environ
            and subprocess.run([SYSTEM_PYTHON, "-c", "import redis"],
                               capture_output=True).returncode == 0):
        log(f"the redis module is not installed for {sys.executable}; "
            f"running with {SYSTEM_PYTHON}, which has it")
        os.environ["KV_REDISPY_REEXEC"] = "1"
        sys.stdout.flush()
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
    log(f"SKIP: the redis module (redis-py) is not installed for {sys.executable} "
        "(Debian: apt-get install python3-redis)")
    sys.exit(SKIP)


def raises(what, fn, exc, text=None):
    """fn() raises exc (a class or a tuple of classes) with text in its message."""
    want = " or ".join(e.__name__ for e in (exc if isinstance(exc, tuple) else (exc,)))
    try:
        fn()
    except exc as e:
        ck.true(what, text is None or text in str(e), f"{type(e).__name__}: {e}")
        return
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        ck.true(what, False, f"raised {type(e).__name__}: {e}, want {want}")
        return
    ck.true(what, False, f"no {want} raised")


def run(redis, port, tag):
    t = f"[{tag}]"

    def client(name="x"):
        return redis.Redis(host="127.0.0.1", port=port, client_name=name, socket_timeout=20)

    r = client()
    ck.eq(t + " ping", r.ping(), True)
    ck.eq(t + " client_getname", r.client_getname(), "x")
    cid = r.client_id()
    ck.true(t + " client_id", isinstance(cid, int) and cid > 0, repr(cid))
    r.flushall()

    # The default pipeline is a transaction: MULTI, the commands, EXEC.
    p = r.pipeline()
    p.set("a", 1).incr("a").get("a").expire("a", 100).ttl("a")
    p.setnx("a", 5).getset("a", "z").type("a").persist("a").ttl("a").exists("a", "nope")
    # (GETSET drops the TTL, so PERSIST finds none: False, as redis-server answers)
    ck.eq(t + " pipeline", p.execute(),
          [True, 2, b"2", True, 100, False, b"2", b"string", False, -1, 1])
    with r.pipeline() as p:
        p.mset({"m1": "one", "m2": b"\x00two"}).mget("m1", "m2", "m3").delete("m1", "m3")
        p.keys("m*").append("m2", "!").strlen("m2")
        ck.eq(t + " pipeline 2", p.execute(),
              [True, [b"one", b"\x00two", None], 1, [b"m2"], 5, 5])
    big = os.urandom(300000)
    ck.eq(t + " pipeline big value", r.pipeline().set("big", big).get("big").execute(),
          [True, big])
    # A run-time error inside EXEC answers in its place; the rest runs.
    p = r.pipeline()
    p.set("s", "x").incr("s").get("s")
    res = p.execute(raise_on_error=False)
    ck.true(t + " runtime error in exec", len(res) == 3 and res[0] is True and
            isinstance(res[1], redis.ResponseError) and res[2] == b"x", repr(res))
    # An error while queueing: EXECABORT, and redis-py raises the first error.
    p = r.pipeline()
    p.set("q", 1)
    p.execute_command("NOSUCH", "k")
    raises(t + " queue-time error", p.execute, redis.ResponseError, "unknown command 'NOSUCH'")
    ck.eq(t + " nothing ran", r.get("q"), None)
    # Not a transaction: plain pipelining.
    ck.eq(t + " non-transactional pipeline",
          r.pipeline(transaction=False).set("nt", 1).incr("nt").execute(), [True, 2])

    # Optimistic locking: transaction() WATCHes, reads, then MULTI/EXEC.
    def incr_counter(pipe):
        v = int(pipe.get("counter") or 0)
        pipe.multi()
        pipe.set("counter", v + 1)
    for _ in range(20):
        r.transaction(incr_counter, "counter")
    ck.eq(t + " transaction()", r.get("counter"), b"20")
    # Several clients at once: each increment lands once (retries on conflict).
    retries = [0]

    def worker(name):
        c = client(name)

        def incr(pipe):
            v = int(pipe.get("shared") or 0)
            pipe.multi()
            pipe.set("shared", v + 1)
        for _ in range(50):
            while True:
                try:
                    with c.pipeline() as pipe:
                        pipe.watch("shared")
                        incr(pipe)
                        pipe.execute()
                    break
                except redis.WatchError:
                    retries[0] += 1
        c.close()
    ths = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    ck.eq(t + " concurrent transactions", r.get("shared"), b"200")
    log(f"{t} 200 concurrent WATCH increments, {retries[0]} retries")
    # A watched key changed by another client: WatchError, nothing written.
    other = client("other")
    r.set("w", "0")
    with r.pipeline() as pipe:
        pipe.watch("w")
        other.set("w", "theirs")
        pipe.multi()
        pipe.set("w", "mine")
        raises(t + " WatchError", pipe.execute, redis.WatchError)
    ck.eq(t + " watched key kept", r.get("w"), b"theirs")
    ck.eq(t + " other's name", other.client_getname(), "other")
    other.close()

    # Expiry with short TTLs.
    r.set("e1", "v", px=150)
    pttl = r.pttl("e1")
    ck.true(t + " pttl", 0 < pttl <= 150, repr(pttl))
    r.set("e2", "v")
    ck.eq(t + " pexpire", r.pexpire("e2", 150), True)
    ck.eq(t + " setex", r.setex("e3", 1, "v"), True)
    ck.eq(t + " psetex", r.psetex("e4", 150, "v"), True)
    r.set("e5", "v", px=150)
    ck.eq(t + " persist", r.persist("e5"), True)
    ck.eq(t + " ttl persisted", r.ttl("e5"), -1)
    ck.eq(t + " keys before", sorted(r.keys("e*")), [b"e1", b"e2", b"e3", b"e4", b"e5"])
    time.sleep(0.3)
    ck.eq(t + " expired get", [r.get(k) for k in ("e1", "e2", "e4")], [None, None, None])
    ck.eq(t + " not yet expired", r.get("e3"), b"v")
    ck.eq(t + " keys after", sorted(r.keys("e*")), [b"e3", b"e5"])
    time.sleep(1.0)
    ck.eq(t + " setex expired", r.exists("e3"), 0)
    ck.eq(t + " expire in pipeline", r.pipeline().set("e6", "v").pexpire("e6", 100).execute(),
          [True, True])
    time.sleep(0.25)
    ck.eq(t + " expired after pipeline", r.get("e6"), None)

    hello = r.execute_command("HELLO")
    ck.true(t + " hello", isinstance(hello, list) and hello[4:6] == [b"proto", 2] and
            hello[6:8] == [b"id", cid], repr(hello))
    raises(t + " hello 3", lambda: r.execute_command("HELLO", 3), redis.ResponseError,
           "NOPROTO")
    raises(t + " client list", r.client_list, redis.ResponseError, "unknown subcommand")
    # Redis's own error for a password when none is set: redis-py 4 raises it
    # as a ResponseError, redis-py 5 as an AuthenticationError.
    raises(t + " password", lambda: redis.Redis(host="127.0.0.1", port=port, password="pw",
                                                 socket_timeout=20).ping(),
           (redis.ResponseError, redis.AuthenticationError),
           "called without any password configured")
    r.close()


def main():
    redis = import_redis()
    log(f"redis-py {redis.__version__} ({sys.executable})")
    exe = sys.argv[1]
    for args in ([], ["--threads", "2", "--copy-below", "1k", "--inline-max", "16"]):
        s = start_kv(exe, *args)
        try:
            run(redis, s.port, " ".join(args) or "defaults")
        except Exception as e:  # noqa: BLE001 - any failure is a failed check
            traceback.print_exc()
            ck.true("no exception", False, repr(e))
        finally:
            ck.eq(f"exit status ({' '.join(args)})", s.stop(), 0)
    ck.done()


if __name__ == "__main__":
    main()
