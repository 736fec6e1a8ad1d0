#!/usr/bin/env python3
"""Instructions per echo request, counted by callgrind (valgrind).

Where the CPU's counters are not available (`perf stat -e instructions`
says `<not supported>`, as on most virtual machines), CPU time is too noisy
to compare two builds within a few per cent. Callgrind counts the
instructions a program executes, whatever the machine's load, so one can
compare builds on any machine:

    instructions.py --server build-bench/examples/echo_server \
                    --server OTHER/examples/echo_server [--requests 20000]

Each server runs under callgrind, once with N and once with 2N requests of
`--size` bytes from `--conns` connections (a closed loop: each connection
sends its next request once the echo of the last one is back), and is
stopped with SIGINT. What the runs differ by, divided by N, is the cost of
one request with start-up and shutdown taken out. With `--reps R` the
servers take turns R times and the medians are given: how many events one
epoll_wait returns varies with timing, which moves the figures by about
1% from run to run. The figures are given for
the whole process and for the thread whose count grew most with the
requests (the loop).
Callgrind runs the threads one at a time, so idle threads that spin count
in the whole-process figure; the loop thread's is the one to compare.
"""

import argparse
import glob
import os
import re
import selectors
import shlex
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %d" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not listen on %d" % port)


def drive(port, conns, size, requests):
    """Closed loop: `requests` echoes in all, spread over `conns`."""
    sel = selectors.DefaultSelector()
    payload = bytes((i * 7) & 0xFF for i in range(size))
    left = {}
    socks = []
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        n = requests // conns + (1 if i < requests % conns else 0)
        left[s] = [n, 0]
        socks.append(s)
        if n:
            s.sendall(payload)
            sel.register(s, selectors.EVENT_READ)
    active = sum(1 for s in socks if left[s][0])
    while active:
        for key, _ in sel.select(timeout=60):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                raise RuntimeError("server closed a connection")
            st = left[s]
            st[1] += len(data)
            if st[1] > size:
                raise RuntimeError("more bytes than were sent")
            if st[1] == size:
                st[0] -= 1
                st[1] = 0
                if st[0]:
                    s.setblocking(True)
                    s.sendall(payload)
                    s.setblocking(False)
                else:
                    sel.unregister(s)
                    active -= 1
    for s in socks:
        s.close()


def instructions(out_prefix):
    """Totals by thread number (callgrind numbers threads as they start)."""
    totals = {}
    for path in glob.glob(out_prefix + "*"):
        thread = path.rsplit("-", 1)[-1] if "-" in path[len(out_prefix):] \
            else "1"
        with open(path) as f:
            for line in f:
                m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
                if m:
                    totals[thread] = int(m.group(1))
                    break
    return totals


def run_once(server, requests, conns, size, workdir, tag):
    port = free_port()
    prefix = os.path.join(workdir, tag + ".out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes",
         "--callgrind-out-file=" + prefix] + shlex.split(server)
        + ["tcp://127.0.0.1:%d" % port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, time.monotonic() + 120)
        drive(port, conns, size, requests)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    totals = instructions(prefix)
    if not totals:
        raise RuntimeError("callgrind wrote no totals for " + server)
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", action="append", required=True,
                    help="an echo server taking a tcp:// URL, a binary "
                         "with its options (\"echo_server --coroutine\"); "
                         "give it twice to compare")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=1,
                    help="runs per server, taking turns (medians shown)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep callgrind's output files in DIR (for "
                         "callgrind_annotate) instead of removing them")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        workdir = args.keep
    else:
        workdir = tempfile.mkdtemp(prefix="tact-instr-")
    samples = [[] for _ in args.server]
    try:
        for r in range(args.reps):
            for i, server in enumerate(args.server):
                n = args.requests
                tag = "s%d-r%d" % (i, r)
                a = run_once(server, n, args.conns, args.size, workdir,
                             tag + "-a")
                b = run_once(server, 2 * n, args.conns, args.size, workdir,
                             tag + "-b")
                grown = {t: b[t] - a.get(t, 0) for t in b}
                samples[i].append(((sum(b.values()) - sum(a.values())) / n,
                                   max(grown.values()) / n))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = [(server, statistics.median(x[0] for x in runs),
             statistics.median(x[1] for x in runs),
             [x[1] for x in runs])
            for server, runs in zip(args.server, samples)]
    print("conns=%d size=%d requests=%d and %d" % (
        args.conns, args.size, args.requests, 2 * args.requests))
    print("%-50s %14s %14s" % ("server", "instr/req all", "instr/req loop"))
    for server, all_, loop, loops in rows:
        print("%-50s %14.0f %14.0f" % (server, all_, loop))
        if len(loops) > 1:
            print("  loop, each run: " + " ".join("%.0f" % x for x in loops))
    if len(rows) == 2:
        print("ratio (first/second): all %.3f, loop %.3f" % (
            rows[0][1] / rows[1][1], rows[0][2] / rows[1][2]))


if __name__ == "__main__":
    main()
