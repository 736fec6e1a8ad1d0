#!/usr/bin/env python3
"""End-to-end test of examples/file_server (sendfile), driven from outside
with plain sockets, Python's ssl module and curl-like requests by hand.

    file_server_e2e.py --server PATH

Every file served is checked byte for byte against the file on disk.
Prints `PASS name` / `FAIL name: reason` per test and `#` lines with
figures; exits 0 only if every test passed.
"""

import argparse
import array
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ARGS = None
MiB = 1024 * 1024
# Under the sanitizers (tests/sanitize.sh) freed memory waits in ASan's
# quarantine: the RSS bound is looser there.
RSS_LIMIT_MIB = int(os.environ.get("TACT_E2E_RSS_LIMIT_MIB", "32"))


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def make_file(path, size):
    """8-byte words, each its own offset: a misplaced byte shows."""
    with open(path, "wb") as f:
        step = 1 << 20
        for off in range(0, size, step):
            n = min(step, size - off)
            words = array.array("Q", range(off, off + ((n + 7) // 8) * 8, 8))
            f.write(words.tobytes()[:n])


class Server:
    def __init__(self, root, url):
        self.proc = subprocess.Popen([ARGS.server, root, url],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise Fail("did not start: %r %s" % (line,
                                                 self.proc.stderr.read()))
        self.url = line.split()[2]
        if self.url.startswith("unix://"):
            self.addr = self.url[len("unix://"):]
        else:
            host, port = self.url.split("://")[1].rsplit(":", 1)
            self.addr = (host, int(port))

    def connect(self, rcvbuf=None):
        fam = socket.AF_UNIX if isinstance(self.addr, str) else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(30)
        s.connect(self.addr)
        return s

    def rss_mib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Fail("file_server ignored SIGTERM")
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def recv_all(s):
    chunks = []
    while True:
        try:
            data = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def request(srv, text, sock=None):
    """Sends `text`, reads to EOF; returns (status, headers, body)."""
    s = sock or srv.connect()
    if text:
        s.sendall(text.encode() if isinstance(text, str) else text)
    raw = recv_all(s)
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    check(lines[0].startswith("HTTP/1.0 "), "status line %r" % lines[0])
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get(srv, path):
    return request(srv, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path)


def test_download_exact(root):
    """A 64 MiB file and a 3-byte one over TCP and over a Unix socket,
    byte for byte, with the right Content-Length; an empty file too."""
    with open(os.path.join(root, "big.bin"), "rb") as f:
        big = f.read()
    sock_dir = tempfile.mkdtemp(prefix="tact-fs-e2e-")
    try:
        for url in ("tcp://127.0.0.1:0",
                    "unix://%s/fs.sock" % sock_dir):
            with Server(root, url) as srv:
                t0 = time.monotonic()
                status, headers, body = get(srv, "/big.bin")
                secs = time.monotonic() - t0
                check(status == 200, "status %d" % status)
                check(headers.get("content-length") == str(len(big)),
                      "content-length %r" % headers.get("content-length"))
                check(len(body) == len(big), "%d of %d bytes"
                      % (len(body), len(big)))
                check(body == big, "the body differs from the file")
                print("# %s: 64 MiB in %.2f s" % (url.split(":")[0], secs))
                status, _, body = get(srv, "/sub/small.txt")
                check(status == 200 and body == b"abc",
                      "small: %d %r" % (status, body))
                status, headers, body = get(srv, "/empty")
                check(status == 200 and body == b""
                      and headers.get("content-length") == "0",
                      "empty: %d %r" % (status, body))
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_refusals(root):
    """HEAD sends the head only; a missing file is 404; `..` (plain or
    %-encoded), a symbolic link out of the root and a directory are 403;
    POST is 405; garbage and a bad escape are 400; a head over 8 KiB is
    431 (and costs the server no more than that)."""
    with Server(root, "tcp://127.0.0.1:0") as srv:
        status, headers, body = request(srv, "HEAD /big.bin HTTP/1.0\r\n\r\n")
        check(status == 200 and body == b""
              and headers.get("content-length") == str(64 * MiB),
              "HEAD: %d %r %r" % (status, headers, body[:40]))
        cases = [
            ("GET /nope HTTP/1.0\r\n\r\n", 404),
            ("GET /../etc/passwd HTTP/1.0\r\n\r\n", 403),
            ("GET /sub/../../etc/passwd HTTP/1.0\r\n\r\n", 403),
            ("GET /%2e%2e/etc/passwd HTTP/1.0\r\n\r\n", 403),
            ("GET /out HTTP/1.0\r\n\r\n", 403),
            ("GET /sub HTTP/1.0\r\n\r\n", 403),
            ("GET /sub/ HTTP/1.0\r\n\r\n", 403),
            ("POST /big.bin HTTP/1.0\r\n\r\n", 405),
            ("GET /big.bin%zz HTTP/1.0\r\n\r\n", 400),
            ("GET /a%00b HTTP/1.0\r\n\r\n", 400),
            ("hello\r\n\r\n", 400),
            ("GET big.bin HTTP/1.0\r\n\r\n", 400),
        ]
        for text, want in cases:
            status, _, body = request(srv, text)
            check(status == want, "%r: %d, not %d" % (text, status, want))
            check(b"root:" not in body, "%r leaked a file" % text)
        # The link target itself is readable: only the link is refused.
        check(os.path.exists(os.path.join(root, "out")), "no link")
        # A head that never ends.
        s = srv.connect()
        sent = 0
        try:
            while sent < 1 * MiB:
                s.sendall(b"GET /" + b"a" * 4095)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = request(srv, b"", sock=s)
        check(status == 431, "endless head: %d" % status)
        check(srv.rss_mib() < RSS_LIMIT_MIB, "RSS %.1f MiB" % srv.rss_mib())
        # A peer that sends half a head and its EOF.
        s = srv.connect()
        s.sendall(b"GET /big.bin HTTP/1.0\r\n")
        s.shutdown(socket.SHUT_WR)
        status, _, _ = request(srv, b"", sock=s)
        check(status == 400, "half a head then EOF: %d" % status)


def test_stalled_reader(root):
    """A client that asks for 64 MiB and reads nothing for 2 s costs the
    server no memory (the file waits in the kernel's page cache, not in a
    buffer) and stops no one else; then it gets every byte."""
    with open(os.path.join(root, "big.bin"), "rb") as f:
        big = f.read()
    with Server(root, "tcp://127.0.0.1:0") as srv:
        slow = srv.connect(rcvbuf=16384)
        slow.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        time.sleep(0.5)
        peak = srv.rss_mib()
        for _ in range(20):
            status, _, body = get(srv, "/sub/small.txt")
            check(status == 200 and body == b"abc", "other client: %d" % status)
        time.sleep(1.5)
        peak = max(peak, srv.rss_mib())
        print("# RSS while a 64 MiB reply waits: %.1f MiB" % peak)
        check(peak < RSS_LIMIT_MIB, "RSS %.1f MiB while the reader stalls"
              % peak)
        raw = recv_all(slow)
        slow.close()
        body = raw.partition(b"\r\n\r\n")[2]
        check(body == big, "the stalled reader got %d bytes, not the file"
              % len(body))


def test_reset_mid_file(root):
    """Peers that reset after 1 MiB of a 64 MiB file: the server carries
    on and serves the next ones whole."""
    with open(os.path.join(root, "sub", "small.txt"), "rb") as f:
        small = f.read()
    with Server(root, "tcp://127.0.0.1:0") as srv:
        for _ in range(5):
            s = srv.connect()
            s.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
            got = 0
            while got < MiB:
                got += len(s.recv(65536))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        status, _, body = get(srv, "/sub/small.txt")
        check(status == 200 and body == small, "after resets: %d" % status)
        check(srv.proc.poll() is None, "the server died")
        check(srv.stop() == 0, "exit status %r" % srv.proc.returncode)


def test_tls_download(root):
    """Over TLS the file goes in chunks through the TLS layer (sendfile's
    fallback): Python's ssl client gets the 64 MiB byte for byte."""
    with open(os.path.join(root, "big.bin"), "rb") as f:
        big = f.read()
    d = tempfile.mkdtemp(prefix="tact-fs-tls-")
    try:
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
        url = "tls://127.0.0.1:0?cert=%s&key=%s" % (cert, key)
        with Server(root, url) as srv:
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False
            with srv.connect() as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
                    data = []
                    while True:
                        chunk = s.recv(1 << 20)
                        if not chunk:
                            break
                        data.append(chunk)
            body = b"".join(data).partition(b"\r\n\r\n")[2]
            check(body == big, "TLS: %d bytes, not the file" % len(body))
    finally:
        shutil.rmtree(d, ignore_errors=True)


TESTS = [test_download_exact, test_refusals, test_stalled_reader,
         test_reset_mid_file, test_tls_download]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ARGS = ap.parse_args()
    root = tempfile.mkdtemp(prefix="tact-fs-root-")
    failed = 0
    try:
        make_file(os.path.join(root, "big.bin"), 64 * MiB)
        os.mkdir(os.path.join(root, "sub"))
        with open(os.path.join(root, "sub", "small.txt"), "wb") as f:
            f.write(b"abc")
        open(os.path.join(root, "empty"), "wb").close()
        outside = os.path.join(root + "-outside")
        with open(outside, "w") as f:
            f.write("root:x:0:0\n")
        os.symlink(outside, os.path.join(root, "out"))
        for t in TESTS:
            name = t.__name__[len("test_"):]
            try:
                t(root)
                print("PASS", name, flush=True)
            except Exception as ex:  # a failure or an unexpected error
                failed += 1
                print("FAIL %s: %s" % (name, ex), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        try:
            os.unlink(root + "-outside")
        except OSError:
            pass
    print("%d passed, %d failed" % (len(TESTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
