#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Clients that do not read their replies: pipelined GETs of a 200 KB value
pile up past the reply pause (1 MiB); the server must keep serving other
clients, release everything when such a client closes mid-stream, and
still exit cleanly (no leaked buffer) with one left connected."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvtest import Checker, Conn, encode, start_kv  # noqa: E402

ck = Checker()
VALUE = b"v" * 200_000


def flood(port, n=200):
    """A connection that sends n GETs of the big value and reads nothing."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.5)
    req = encode("GET", "big") * n
    try:
        s.sendall(req)
    except (socket.timeout, BlockingIOError):
        pass  # the server stopped reading: that is the backpressure
    return s


def main():
    s = start_kv(sys.argv[1], *sys.argv[2:])
    try:
        c = Conn(s.port)
        ck.eq("set", c.cmd("SET", "big", VALUE), b"+OK\r\n")
        stuck = [flood(s.port) for _ in range(3)]
        time.sleep(0.3)
        ck.eq("others served", c.cmd("PING"), b"+PONG\r\n")
        got = c.cmd("GET", "big")
        ck.eq("big get", got, b"$200000\r\n" + VALUE + b"\r\n")
        # One reads a little then closes with replies still queued.
        stuck[0].settimeout(5)
        ck.true("some reply arrived", len(stuck[0].recv(65536)) > 0)
        stuck[0].close()
        stuck[1].close()
        time.sleep(0.3)
        ck.eq("still serving", c.cmd("PING"), b"+PONG\r\n")
        c.close()
        # stuck[2] stays connected, not reading, through shutdown.
    finally:
        ck.eq("exit status (pool freed cleanly)", s.stop(), 0)
    ck.done()


if __name__ == "__main__":
    main()
