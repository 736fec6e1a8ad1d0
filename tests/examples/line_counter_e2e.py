#!/usr/bin/env python3
"""End-to-end test of examples/line_counter: a class protocol that asks a
counter actor for each line's number and closes an idle connection with a
call_later timer.

Usage:

    line_counter_e2e.py --server PATH

Output: `PASS name` or `FAIL name: reason` per test, then `N passed, M
failed`; exit code 0 only if every test passed.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ARGS = None
# Under the sanitizers (tests/sanitize.sh sets these) waits stretch.
T = 4 if any(k in os.environ for k in ("TSAN_OPTIONS", "ASAN_OPTIONS")) \
    else 1


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen([ARGS.server, *args],
                                     stdout=subprocess.PIPE, text=True)
        self.urls = []
        for _ in [a for a in args if "://" in a]:
            line = self.proc.stdout.readline()
            check(line.startswith("listening on "), "no listening line: %r"
                  % line)
            self.urls.append(line.split()[-1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10 * T)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def connect(url):
    if url.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(url[len("unix://"):])
    else:
        host, port = re.match(r"tcp://\[?([^\]]*)\]?:(\d+)", url).groups()
        s = socket.create_connection((host, int(port)))
    s.settimeout(10 * T)
    return s


def read_lines(s, n):
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode().splitlines()


def test_lines_are_counted_across_connections():
    d = tempfile.mkdtemp(prefix="tact-lines-")
    path = os.path.join(d, "lines.sock")
    try:
        with Server("tcp://127.0.0.1:0", "unix://" + path) as srv:
            a, b = connect(srv.urls[0]), connect(srv.urls[1])
            a.sendall(b"one\ntwo\r\n")
            check(read_lines(a, 2) == ["1: one", "2: two"], "a's answers")
            b.sendall(b"three\n")
            check(read_lines(b, 1) == ["3: three"], "b's answer")
            # 200 lines in one write, in order.
            a.sendall(b"".join(b"l%d\n" % i for i in range(200)))
            got = read_lines(a, 200)
            check(got == ["%d: l%d" % (i + 4, i) for i in range(200)],
                  "200 pipelined lines: %r" % got[:3])
            a.close()
            b.close()
            check(srv.stop() == 0, "exit status")
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(d)
    return "across TCP and Unix connections, in order"


def test_idle_connection_is_closed_and_busy_one_is_not():
    idle = 0.3
    with Server("--idle", str(idle), "tcp://127.0.0.1:0") as srv:
        busy, quiet = connect(srv.urls[0]), connect(srv.urls[0])
        quiet.sendall(b"hello\n")
        check(read_lines(quiet, 1) == ["1: hello"], "quiet's answer")
        t0 = time.monotonic()
        # The busy one sends a line every idle/3 for three idle periods.
        n = 0
        while time.monotonic() - t0 < 3 * idle:
            busy.sendall(b"tick\n")
            n += 1
            time.sleep(idle / 3)
        bye = b""
        while True:
            chunk = quiet.recv(4096)
            if not chunk:
                break
            bye += chunk
        took = time.monotonic() - t0
        check(bye == b"idle for 0.3 s, bye\n", "quiet got %r" % bye)
        got = read_lines(busy, n)
        check(len(got) == n, "busy got %d of %d answers" % (len(got), n))
        busy.sendall(b"still\n")
        check(read_lines(busy, 1)[0].endswith(": still"),
              "busy was closed too")
        busy.close()
        quiet.close()
        check(srv.stop() == 0, "exit status")
    return "busy one kept open over %d lines; idle one told and closed" % n


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    ARGS = p.parse_args()
    tests = [test_lines_are_counted_across_connections,
             test_idle_connection_is_closed_and_busy_one_is_not]
    passed = failed = 0
    for test in tests:
        try:
            note = test()
            passed += 1
            print("PASS %s%s" % (test.__name__, ": " + note if note else ""),
                  flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            detail = str(e) if isinstance(e, Fail) else traceback.format_exc()
            print("FAIL %s: %s" % (test.__name__, detail), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
