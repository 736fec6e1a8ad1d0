#!/usr/bin/env python3
"""What one relayed connection costs the relay: user-space instructions
(callgrind) or system calls (strace -c), tact's relay beside haproxy.

CPU time per connection moves by several per cent between runs (see
relay_bench.py); these counts do not, so they show where a change went:

    relay_cost.py --build build-bench [--mode callgrind|strace]
                  [--connections 1000] [--relay tact --relay haproxy]

The relay runs under the tool twice, churned by N and by 2N connections
(each connects, sends 1 KiB, reads it back and closes; one at a time);
what the two runs differ by, divided by N, is the cost of one relayed
connection with start-up and shutdown taken out. The target is the plain
epoll echo server (tests/bench/epoll_echo.c). Needs valgrind or strace,
and haproxy for `--relay haproxy`.
"""

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_bench import free_port, haproxy_argv, wait_port  # noqa: E402


def churn(port, n, size=1024):
    payload = bytes(i & 0xFF for i in range(size))
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(payload)
            got = b""
            while len(got) < size:
                data = s.recv(65536)
                if not data:
                    raise RuntimeError("the relay closed early")
                got += data
            if got != payload:
                raise RuntimeError("wrong bytes back")


def relay_argv(name, build, port, backend, workdir):
    if name == "tact":
        return [os.path.join(build, "examples", "relay"),
                "tcp://127.0.0.1:%d" % port, "tcp://127.0.0.1:%d" % backend]
    return haproxy_argv(port, backend, workdir)


def run_once(mode, name, build, backend, n, workdir, tag):
    port = free_port()
    prefix = os.path.join(workdir, "%s-%s" % (name, tag))
    if mode == "callgrind":
        tool = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                "--callgrind-out-file=" + prefix + ".out"]
    else:
        tool = ["strace", "-f", "-c", "-o", prefix + ".strace"]
    proc = subprocess.Popen(tool + relay_argv(name, build, port, backend,
                                              workdir),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, timeout=120)
        churn(port, n)
        time.sleep(0.5)
        # The relay itself, not strace, gets the signal.
        target = proc.pid
        if mode == "strace":
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)],
                                  capture_output=True, text=True).stdout
            target = int(kids.split()[0])
        os.kill(target, signal.SIGINT if name == "tact" else signal.SIGUSR1)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return prefix


def callgrind_totals(prefix):
    totals = {}
    for path in glob.glob(prefix + ".out*"):
        with open(path) as f:
            for line in f:
                m = re.match(r"^(?:summary|totals):\s+(\d+)", line)
                if m:
                    totals[path[len(prefix):]] = int(m.group(1))
                    break
    return totals


def syscall_counts(prefix):
    counts = {}
    with open(prefix + ".strace") as f:
        for line in f:
            fields = line.split()
            if (len(fields) >= 5 and fields[0][0].isdigit()
                    and fields[-1] != "total"):
                counts[fields[-1]] = int(fields[3])
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True,
                    help="a build with examples/relay and "
                         "tests/bench/epoll_echo")
    ap.add_argument("--mode", choices=("callgrind", "strace"),
                    default="callgrind")
    ap.add_argument("--relay", action="append", choices=("tact", "haproxy"))
    ap.add_argument("--connections", type=int, default=1000)
    args = ap.parse_args()
    relays = args.relay or ["tact", "haproxy"]
    tool = "valgrind" if args.mode == "callgrind" else "strace"
    if shutil.which(tool) is None:
        sys.exit("%s is not installed" % tool)
    workdir = tempfile.mkdtemp(prefix="tact-relay-cost-")
    backend_port = free_port()
    backend = subprocess.Popen(
        [os.path.join(args.build, "tests", "bench", "epoll_echo"),
         "tcp://127.0.0.1:%d" % backend_port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = args.connections
    try:
        wait_port(backend_port, backend)
        for name in relays:
            a = run_once(args.mode, name, args.build, backend_port, n,
                         workdir, "a")
            b = run_once(args.mode, name, args.build, backend_port, 2 * n,
                         workdir, "b")
            if args.mode == "callgrind":
                ta, tb = callgrind_totals(a), callgrind_totals(b)
                grown = {t: tb[t] - ta.get(t, 0) for t in tb}
                print("%s: %.0f user instructions per relayed connection "
                      "(all threads), %.0f on its busiest thread" % (
                          name, sum(grown.values()) / n,
                          max(grown.values()) / n))
            else:
                ca, cb = syscall_counts(a), syscall_counts(b)
                per = {k: (cb.get(k, 0) - ca.get(k, 0)) / n
                       for k in set(ca) | set(cb)}
                shown = sorted((k for k in per if per[k] >= 0.05),
                               key=lambda k: -per[k])
                print("%s: %.1f system calls per relayed connection: %s" % (
                    name, sum(per[k] for k in shown),
                    ", ".join("%s %.2f" % (k, per[k]) for k in shown)))
    finally:
        backend.terminate()
        backend.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
