# SPDX-License-Identifier: MIT
"""Helpers for the nbuf-kv tests: start/stop servers on ephemeral loopback
ports (nbuf-kv and a real redis-server), a raw RESP connection that returns
each reply as its exact bytes, and bounded waits everywhere."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def log(*a):
    print(*a, flush=True)


def skip_unless(*tools):
    for t in tools:
        if shutil.which(t) is None:
            log(f"SKIP: {t} is not installed")
            sys.exit(SKIP)


class Server:
    """A server process and its port; stop() checks how it exited."""

    def __init__(self, proc, port, name):
        self.proc, self.port, self.name = proc, port, name

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        return self.proc.returncode


def start_kv(exe, *args, timeout=20):
    """nbuf-kv on 127.0.0.1 with an ephemeral port read from its first line;
    KV_EXTRA_ARGS (space-separated, e.g. --io-uring) go to every server."""
    args = (*args, *os.environ.get("KV_EXTRA_ARGS", "").split())
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    line = b""
    os.set_blocking(proc.stdout.fileno(), False)
    while not line.endswith(b"\n"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"nbuf-kv did not start (got {line!r})")
        try:
            chunk = os.read(proc.stdout.fileno(), 256)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        line += chunk
    text = line.decode().strip()
    prefix = "nbuf-kv: listening on 127.0.0.1:"
    assert text.startswith(prefix), text
    return Server(proc, int(text[len(prefix):]), "nbuf-kv " + " ".join(args))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis(timeout=20):
    """redis-server with no persistence on a free loopback port (retried if
    another process takes the port first)."""
    for _ in range(5):
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="kvtest-redis-")
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--databases", "1", "--dir", workdir, "--logfile", "",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                c = Conn(port, timeout=2)
                if c.cmd("PING") == b"+PONG\r\n":
                    c.close()
                    return Server(proc, port, "redis-server")
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    raise AssertionError("redis-server did not start")


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """A blocking RESP connection; read_reply() returns one reply's bytes."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                return i
            self._fill()

    def _need(self, end):
        while len(self.buf) < end:
            self._fill()

    def _reply_end(self, start):
        """Offset just past the reply that starts at @start (reads as needed)."""
        self._need(start + 1)
        i = self.buf.find(b"\r\n", start)
        while i < 0:
            self._fill()
            i = self.buf.find(b"\r\n", start)
        kind = self.buf[start:start + 1]
        if kind in (b"+", b"-", b":"):
            return i + 2
        n = int(self.buf[start + 1:i])
        if kind == b"$":
            if n < 0:
                return i + 2
            self._need(i + 2 + n + 2)
            return i + 2 + n + 2
        if kind == b"*":
            end = i + 2
            for _ in range(max(n, 0)):
                end = self._reply_end(end)
            return end
        raise AssertionError(f"bad reply type {bytes(self.buf[start:start + 40])!r}")

    def read_reply(self):
        if self.pos > (1 << 20):  # compact between replies only
            del self.buf[:self.pos]
            self.pos = 0
        end = self._reply_end(self.pos)
        out = bytes(self.buf[self.pos:end])
        self.pos = end
        return out

    def cmd(self, *args):
        self.send(encode(*args))
        return self.read_reply()

    def expect_eof(self, timeout=10):
        """The server closes the connection (after whatever it still sends)."""
        self.sock.settimeout(timeout)
        rest = bytes(self.buf[self.pos:])
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return rest
            if not chunk:
                return rest
            rest += chunk


class Checker:
    def __init__(self):
        self.failures = 0
        self.count = 0

    def eq(self, what, got, want):
        self.count += 1
        if got != want:
            self.failures += 1
            log(f"FAIL {what}: got {got[:200]!r}, want {want[:200]!r}")

    def true(self, what, cond, detail=""):
        self.count += 1
        if not cond:
            self.failures += 1
            log(f"FAIL {what} {detail}")

    def done(self):
        log(f"{self.count - self.failures}/{self.count} checks passed")
        sys.exit(1 if self.failures else 0)
