#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""redis-cli against nbuf-kv: commands as arguments, as lines on stdin (also
a MULTI/EXEC block), -x (a binary value from stdin) with --raw read-back, -r
repeats, --pipe mass insertion (RESP on stdin), and error display."""

import os
import random
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import Checker, encode, log, skip_unless, start_kv  # noqa: E402

ck = Checker()


def cli(port, *args, stdin=b"", raw=False):
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + (["--raw"] if raw else []) + list(
        args)
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    return p.returncode, p.stdout


def main():
    skip_unless("redis-cli")
    s = start_kv(sys.argv[1])
    port = s.port
    try:
        ck.eq("ping", cli(port, "PING"), (0, b"PONG\n"))
        ck.eq("set", cli(port, "SET", "greeting", "hello world"), (0, b"OK\n"))
        ck.eq("get", cli(port, "GET", "greeting"), (0, b"hello world\n"))
        ck.eq("missing", cli(port, "--no-raw", "GET", "nope"), (0, b"(nil)\n"))
        ck.eq("incr", cli(port, "--no-raw", "INCRBY", "n", "5"), (0, b"(integer) 5\n"))
        ck.eq("mget", cli(port, "--no-raw", "MGET", "greeting", "nope", "n"),
              (0, b'1) "hello world"\n2) (nil)\n3) "5"\n'))
        ck.eq("error", cli(port, "--no-raw", "INCR", "greeting"),
              (0, b"(error) ERR value is not an integer or out of range\n"))
        ck.eq("unknown", cli(port, "--no-raw", "NOSUCH", "x"),
              (0, b"(error) ERR unknown command 'NOSUCH', with args beginning with: 'x' \n"))
        ck.eq("config get", cli(port, "CONFIG", "GET", "appendonly"), (0, b"appendonly\nno\n"))
        ck.eq("repeat", cli(port, "-r", "7", "INCR", "rep")[0], 0)
        ck.eq("repeat result", cli(port, "GET", "rep"), (0, b"7\n"))

        # Commands as lines on stdin (redis-cli splits them like inline args).
        rc, out = cli(port, stdin=b'SET q "a b"\nAPPEND q c\nGET q\nSTRLEN q\n')
        ck.eq("stdin lines", (rc, out), (0, b"OK\n4\na bc\n4\n"))

        # A transaction and the key commands, typed as lines (one connection).
        rc, out = cli(port, "--no-raw", stdin=b"MULTI\nSET t 1\nINCR t\nEXPIRE t 100\nEXEC\n"
                      b"TTL t\nKEYS t*\nCLIENT SETNAME cli\nCLIENT GETNAME\n")
        ck.eq("multi/exec lines", (rc, out),
              (0, b'OK\nQUEUED\nQUEUED\nQUEUED\n1) OK\n2) (integer) 2\n3) (integer) 1\n'
                  b'(integer) 100\n1) "t"\nOK\n"cli"\n'))
        ck.eq("del t", cli(port, "DEL", "t"), (0, b"1\n"))

        # -x: the last argument from stdin, binary; read back with --raw.
        blob = random.Random(7).randbytes(300000)
        ck.eq("-x set", cli(port, "-x", "SET", "blob", stdin=blob), (0, b"OK\n"))
        rc, out = cli(port, "GET", "blob", raw=True)
        ck.eq("raw get", (rc, out[:-1] if out.endswith(b"\n") else out), (0, blob))
        ck.eq("strlen", cli(port, "STRLEN", "blob"), (0, b"300000\n"))
        ck.eq("getrange", cli(port, "GETRANGE", "blob", "100", "109", raw=True),
              (0, blob[100:110] + b"\n"))

        # --pipe: 20000 RESP commands on stdin, counted by redis-cli.
        with tempfile.TemporaryFile() as f:
            for i in range(20000):
                f.write(encode("SET", f"pipe:{i}", f"value-{i}" * (1 + i % 40)))
            f.seek(0)
            p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                               stdin=f, capture_output=True, timeout=120)
        ck.true("pipe mode", p.returncode == 0 and b"errors: 0, replies: 20000" in p.stdout,
                repr(p.stdout[-200:]))
        ck.eq("pipe value", cli(port, "GET", "pipe:12345"), (0, b"value-12345" * 26 + b"\n"))
        ck.eq("dbsize", cli(port, "DBSIZE"), (0, b"20005\n"))  # 20000 + 5 earlier keys
        ck.eq("flushall", cli(port, "FLUSHALL"), (0, b"OK\n"))
        ck.eq("dbsize 0", cli(port, "DBSIZE"), (0, b"0\n"))
    finally:
        ck.eq("exit status", s.stop(), 0)
    ck.done()


if __name__ == "__main__":
    main()
