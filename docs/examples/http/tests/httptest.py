# SPDX-License-Identifier: MIT
"""Helpers for the nbuf-http tests: a document root in a temp directory,
the server on an ephemeral loopback port (stopped with SIGTERM, its exit
status checked so leaked buffers fail the test), curl with bounded time, and
a raw HTTP/1.1 connection that returns each response exactly."""

import hashlib
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


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log("ok -", what)


def sha256_file(path, start=0, length=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


class Root:
    """A temporary document root, removed by cleanup()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nbuf-http-root-")

    def path(self, rel):
        return os.path.join(self.dir, rel)

    def write(self, rel, data):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """nbuf-http on 127.0.0.1 with an ephemeral port read from its first line."""

    def __init__(self, exe, root, *args, timeout=20):
        self.args = [exe, "--root", root, "--bind", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        line = b""
        os.set_blocking(self.proc.stdout.fileno(), False)
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"nbuf-http did not start (got {line!r})")
            try:
                chunk = os.read(self.proc.stdout.fileno(), 256)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            line += chunk
        text = line.decode().strip()
        prefix = "nbuf-http: listening on 127.0.0.1:"
        assert text.startswith(prefix), text
        self.port = int(text[len(prefix):])
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path):
        return self.base + path

    def stop(self, timeout=20):
        """SIGTERM; the exit status must be 0 (no buffer leaked)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"nbuf-http did not exit within {timeout}s of SIGTERM")
        self.proc.stdout.close()
        rc = self.proc.returncode
        check(rc == 0, f"server exited cleanly (status {rc}, pool freed)")
        return rc

    def kill(self):
        """Cleanup after a failure: say if the server had died already."""
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
            self.proc.wait(5)
        elif rc != 0 and not self.proc.stdout.closed:
            log(f"# nbuf-http had exited with status {rc}" +
                (f" (signal {-rc})" if rc < 0 else ""))


def curl(*args, timeout=120):
    """Run curl; returns (exit status, stdout bytes, stderr text)."""
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 10)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.raw_head = raw_head

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return f"<{self.status} {self.reason} {self.headers} {len(self.body)} B>"


def request_bytes(path, method="GET", headers=None, version="1.1", eol="\r\n"):
    """A request with Host (unless @headers sets it to None), every line
    ended by @eol, the header block by an empty line."""
    hdrs = {"Host": "localhost"}
    hdrs.update(headers or {})
    lines = [f"{method} {path} HTTP/{version}"]
    lines += [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    return (eol.join(lines) + eol + eol).encode()


class Conn:
    """A blocking raw connection: send() bytes, response() parses one
    response (the body by Content-Length; none for HEAD, 304 and 1xx)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def response(self, head=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        raw = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = raw.split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            assert name.lower() not in headers, f"duplicate {name}"
            headers[name.lower()] = value.strip()
        status = int(status)
        length = 0
        if not head and status != 304 and status >= 200:
            length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return Response(status, reason, headers, body, raw)

    def request(self, path, method="GET", headers=None, version="1.1", eol="\r\n"):
        """Send one request (lines ended by @eol) and read its response."""
        self.send(request_bytes(path, method, headers, version, eol))
        return self.response(head=(method == "HEAD"))

    def closed(self, timeout=5):
        """True if the server closes (EOF or reset) within @timeout seconds
        with no more bytes sent."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return not self.buf
                self.buf += chunk
        except ConnectionResetError:
            return not self.buf
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def raw_exchange(port, data, timeout=10, half_close=True):
    """Send @data on a fresh connection, shut the write side (unless
    @half_close is false: then the server must close by itself), and return
    all the bytes the server sends until it closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if isinstance(data, str):
        data = data.encode()
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except ConnectionResetError:
        pass
    s.close()
    return out


def status_of(raw):
    """The status code of the first response in @raw (0 when none)."""
    if not raw.startswith(b"HTTP/1.1 "):
        return 0
    return int(raw[9:12])


def serve_and_run(name, files, tests, args=None, setup=None):
    """The body of a test file's main(): a root holding @files (name ->
    bytes), @setup(root) if given, the server on it with the command
    line's options, each of @tests called with (server, root), then the
    clean stop checked."""
    args = sys.argv if args is None else args
    if len(args) < 2:
        sys.exit(f"usage: {name} nbuf-http [options]")
    root = Root()
    for rel, data in files.items():
        root.write(rel, data)
    if setup:
        setup(root)
    srv = Server(args[1], root.dir, *args[2:])
    try:
        for t in tests:
            t(srv, root)
        srv.stop()
    finally:
        srv.kill()
        root.cleanup()


def run(main):
    """Run a test body, report failures as exit status 1."""
    try:
        main()
    except AssertionError as e:
        log("FAIL:", e)
        sys.exit(1)
    log("PASS")
