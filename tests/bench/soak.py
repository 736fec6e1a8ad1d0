#!/usr/bin/env python3
"""Soak test: minutes of connection churn and streaming against echo_server
over TCP, Unix sockets and TLS, checking every byte.

Usage (after building):

    python3 tests/bench/soak.py --server build/examples/echo_server --minutes 30

Per transport it runs `--churn` tasks that each connect, send a random
payload (1 B to 256 KiB), read the echo back, compare and close, over and
over; and `--streams` long-lived connections that stream random 1 MiB
blocks and compare their echo. Once a minute, and at the end, it prints
the bytes verified, connections made, errors, and the server's RSS and
open descriptors. Exit status 0 only with no error and no mismatch.

Not part of the test suite (it runs for minutes); results go in
docs/reliability.md.
"""

import argparse
import asyncio
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time

KiB = 1024
MiB = 1024 * KiB


def make_cert(d):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", "key.pem", "-out",
         "cert.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True)
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


class Stats:
    def __init__(self):
        self.bytes = 0
        self.connections = 0
        self.errors = 0
        self.mismatches = 0
        self.last_error = ""


def proc_info(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * KiB
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


async def open_conn(kind, target, ctx):
    if kind == "unix":
        return await asyncio.open_unix_connection(target)
    host, port = target
    return await asyncio.open_connection(
        host, port, ssl=ctx, server_hostname="localhost" if ctx else None)


async def exchange(reader, writer, payload):
    async def send():
        writer.write(payload)
        await writer.drain()
    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
    await sender
    return got


async def churn(kind, target, ctx, stats, deadline, rng):
    while time.monotonic() < deadline:
        payload = rng.randbytes(rng.choice((1, 100, 4 * KiB, 64 * KiB,
                                            rng.randrange(1, 256 * KiB))))
        try:
            reader, writer = await open_conn(kind, target, ctx)
            stats.connections += 1
            got = await exchange(reader, writer, payload)
            if got != payload:
                stats.mismatches += 1
            else:
                stats.bytes += len(payload)
            writer.close()
            await writer.wait_closed()
        except Exception as e:  # noqa: BLE001 - every failure counts
            stats.errors += 1
            stats.last_error = "%s churn: %r" % (kind, e)


async def stream(kind, target, ctx, stats, deadline, rng):
    try:
        reader, writer = await open_conn(kind, target, ctx)
        stats.connections += 1
        while time.monotonic() < deadline:
            block = rng.randbytes(MiB)
            got = await exchange(reader, writer, block)
            if got != block:
                stats.mismatches += 1
            else:
                stats.bytes += len(block)
        writer.close()
        await writer.wait_closed()
    except Exception as e:  # noqa: BLE001 - every failure counts
        stats.errors += 1
        stats.last_error = "%s stream: %r" % (kind, e)


def report(t0, pid, stats, label):
    rss, fds = proc_info(pid)
    total_bytes = sum(s.bytes for s in stats.values())
    print("%s %5.1f min  verified %8.1f MiB  connections %7d  errors %d  "
          "mismatches %d  server RSS %6.1f MiB  fds %d" % (
              label, (time.monotonic() - t0) / 60, total_bytes / MiB,
              sum(s.connections for s in stats.values()),
              sum(s.errors for s in stats.values()),
              sum(s.mismatches for s in stats.values()), rss / MiB, fds),
          flush=True)
    return rss, fds


async def main_async(args, urls, targets, ctx, pid):
    stats = {k: Stats() for k in targets}
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    tasks = []
    for kind, target in targets.items():
        c = ctx if kind == "tls" else None
        for _ in range(args.churn):
            tasks.append(asyncio.ensure_future(churn(
                kind, target, c, stats[kind], deadline,
                random.Random(rng.random()))))
        for _ in range(args.streams):
            tasks.append(asyncio.ensure_future(stream(
                kind, target, c, stats[kind], deadline,
                random.Random(rng.random()))))
    start = report(t0, pid, stats, "start")
    marks = [start]
    next_mark = t0 + 60
    while not all(t.done() for t in tasks):
        await asyncio.sleep(1)
        if time.monotonic() >= next_mark:
            next_mark += 60
            marks.append(report(t0, pid, stats, "     "))
    await asyncio.gather(*tasks)
    await asyncio.sleep(1)  # let the server finish closing
    end = report(t0, pid, stats, "end  ")
    for kind, s in stats.items():
        print("  %-4s verified %.1f MiB over %d connections, %d errors, "
              "%d mismatches%s" % (kind, s.bytes / MiB, s.connections,
                                   s.errors, s.mismatches,
                                   ("; last: " + s.last_error)
                                   if s.last_error else ""))
    after_warmup = marks[1] if len(marks) > 1 else start
    print("server RSS: %.1f MiB at start, %.1f MiB after the first minute, "
          "%.1f MiB at the end; fds %d at start, %d at the end" % (
              start[0] / MiB, after_warmup[0] / MiB, end[0] / MiB, start[1],
              end[1]))
    bad = sum(s.errors + s.mismatches for s in stats.values())
    return 0 if bad == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="echo_server executable")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--churn", type=int, default=4,
                    help="churning tasks per transport (default 4)")
    ap.add_argument("--streams", type=int, default=2,
                    help="streaming connections per transport (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="tact-soak-")
    try:
        cert, key = make_cert(d)
        sock = os.path.join(d, "echo.sock")
        proc = subprocess.Popen(
            [args.server, "tcp://127.0.0.1:0", "unix://" + sock,
             "tls://127.0.0.1:0?cert=%s&key=%s" % (cert, key)],
            stdout=subprocess.PIPE, text=True)
        urls = [proc.stdout.readline().split()[-1] for _ in range(3)]
        targets = {}
        for url in urls:
            if url.startswith("unix://"):
                targets["unix"] = url[len("unix://"):]
            else:
                scheme, rest = url.split("://")
                host, port = rest.rsplit(":", 1)
                targets[scheme] = (host, int(port))
        ctx = ssl.create_default_context(cafile=cert)
        try:
            rc = asyncio.run(main_async(args, urls, targets, ctx, proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
        print("server exit status %d" % proc.returncode)
        return rc if proc.returncode == 0 else 1
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
