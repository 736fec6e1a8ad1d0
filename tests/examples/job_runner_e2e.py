#!/usr/bin/env python3
"""End-to-end test of a job runner (examples/job_runner.cpp, the coroutine
form, and examples/job_runner_callbacks.cpp, the same service with
callbacks), driven by a plain socket client.

    job_runner_e2e.py --server PATH [--server PATH ...]
                      [--lines CORO_SOURCE CALLBACK_SOURCE]

Each server gets the same tests; with --lines, the coroutine source must
be at most half the code lines (not blank, not only a comment) of the
callback one. Prints PASS/FAIL per test; exit code 0 only if all passed.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

FAILED = []


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + detail),
          flush=True)
    if not cond:
        FAILED.append(name)


class Server:
    def __init__(self, path, urls):
        self.proc = subprocess.Popen([path] + urls, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.urls = []
        for _ in urls:
            line = self.proc.stdout.readline()
            m = re.match(r"listening on (\S+)", line)
            if not m:
                self.stop()
                raise RuntimeError("no listening line: %r" % line)
            self.urls.append(m.group(1))

    def connect(self, i=0):
        url = self.urls[i]
        if url.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(url[len("unix://"):])
        else:
            host, port = re.match(r"tcp://\[?([^\]]+?)\]?:(\d+)$", url).groups()
            s = socket.create_connection((host, int(port)))
        s.settimeout(20)
        return s

    def children(self):
        pids = []
        for task in os.listdir("/proc/%d/task" % self.proc.pid):
            try:
                with open("/proc/%d/task/%s/children" % (self.proc.pid, task)) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        return pids

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def read_until_eof(s, limit=64 << 20):
    data = b""
    while len(data) <= limit:
        chunk = s.recv(1 << 16)
        if not chunk:
            return data
        data += chunk
    return data


def exchange(srv, send, i=0):
    with srv.connect(i) as s:
        s.sendall(send)
        s.shutdown(socket.SHUT_WR)
        return read_until_eof(s)


def run_tests(path):
    tag = os.path.basename(path)
    tmp = tempfile.mkdtemp(prefix="tact-jobs-")
    sock = os.path.join(tmp, "jobs.sock")
    srv = Server(path, ["tcp://127.0.0.1:0", "unix://" + sock])
    try:
        got = exchange(srv, b"echo hello\n")
        check(tag + ": a command's output, then its exit code",
              got == b"hello\nexit 0\n", repr(got))
        got = exchange(srv, b"echo oops >&2; exit 3\n", 1)
        check(tag + ": stderr too, and the exit code, over a Unix socket",
              got == b"oops\nexit 3\n", repr(got))
        got = exchange(srv, b"echo a\necho b\nfalse\nnonexistent-command-x 2>/dev/null\n")
        check(tag + ": lines sent at once run one after another",
              got == b"a\nexit 0\nb\nexit 0\nexit 1\nexit 127\n", repr(got))
        got = exchange(srv, b"x" * 70000)
        check(tag + ": a line over 64 KiB is refused",
              got == b"error: line too long\n", repr(got[:80]))

        # 32 MB of output to a client that reads nothing for a second: the
        # runner holds a bounded part of it (the child blocks meanwhile).
        before = srv.rss()
        with srv.connect() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"head -c 32000000 /dev/zero\n")
            time.sleep(1.0)
            grown = srv.rss() - before
            s.shutdown(socket.SHUT_WR)
            got = read_until_eof(s, 40 << 20)
        # (Under the sanitizers freed memory waits in a quarantine: the
        # bound is looser there, TACT_E2E_RSS_LIMIT_MIB.)
        limit = int(os.environ.get("TACT_E2E_RSS_LIMIT_MIB", "16")) << 20
        check(tag + ": 32 MB to a slow client, with bounded memory",
              got == b"\0" * 32000000 + b"exit 0\n" and grown < limit,
              "%d bytes, tail %r, grew %d bytes" % (len(got), got[-10:], grown))

        # A client that leaves while its job writes: the job is killed.
        with srv.connect() as s:
            s.sendall(b"yes\n")
            s.recv(65536)
            deadline = time.time() + 5
            while not srv.children() and time.time() < deadline:
                time.sleep(0.05)
            had_child = bool(srv.children())
        deadline = time.time() + 10
        while srv.children() and time.time() < deadline:
            time.sleep(0.05)
        check(tag + ": a job whose client left is ended",
              had_child and not srv.children(), "children: %r" % srv.children())

        code = srv.stop()
        check(tag + ": exits 0 on SIGTERM", code == 0, "exit %r" % code)
    finally:
        srv.stop()
        try:
            os.unlink(sock)
        except OSError:
            pass
        os.rmdir(tmp)


def code_lines(path):
    n = 0
    with open(path) as f:
        for line in f:
            text = line.strip()
            if text and not text.startswith("//"):
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", action="append", required=True)
    ap.add_argument("--lines", nargs=2, metavar=("CORO", "CALLBACKS"))
    args = ap.parse_args()
    for path in args.server:
        run_tests(path)
    if args.lines:
        coro, callbacks = (code_lines(p) for p in args.lines)
        print("# code lines: coroutine %d, callbacks %d (%.2f)"
              % (coro, callbacks, coro / callbacks))
        check("the coroutine job runner is at most half the callback one",
              2 * coro <= callbacks, "%d against %d" % (coro, callbacks))
    print("%d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
