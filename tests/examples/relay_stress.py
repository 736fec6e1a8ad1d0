#!/usr/bin/env python3
"""Stress for stranded connections: many short connections through the relay
example, to a child per connection (`exec:cat`) and to a TCP echo server.
Each client sends 1 to 256 KiB (enough to fill a pipe and pause), reads the same bytes back, half-closes and
waits for the end; a connection that makes no progress for `--stall`
seconds is stranded.

Usage:

    relay_stress.py --relay RELAY --server ECHO_SERVER
                    [--connections N] [--concurrency C] [--target cat|tcp|both]

Prints one line per target (`relayed N, stranded S, wrong W, ... s`), then
`N passed, M failed`; exit code 0 only if no connection was stranded or
echoed wrongly. CTest runs a short version; the long one (100,000
connections) is the same command with `--connections 50000` per target.
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time


def start(argv):
    # The relay's complaints (an opener that failed) go to a file that is
    # printed when a target fails.
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                            text=True)
    proc.err = err
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError("no 'listening on' line from %s: %r"
                           % (argv[0], line))
    return proc, int(line.split()[-1].rsplit(":", 1)[1])


def stop(proc):
    """Stops `proc`; returns the first lines it wrote to stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.err.seek(0)
    lines = proc.err.read().splitlines()
    proc.err.close()
    return lines[:5]


async def one(port, rng, stall, tally):
    payload = rng.randbytes(rng.randint(1024, 256 * 1024))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), stall)
    except (OSError, asyncio.TimeoutError):
        tally["refused"] += 1
        return
    try:
        writer.write(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = await asyncio.wait_for(reader.read(65536), stall)
            if not chunk:
                break
            got += chunk
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), stall)
        if bytes(got) + rest != payload:
            tally["wrong"] += 1
        else:
            tally["ok"] += 1
    except asyncio.TimeoutError:
        tally["stranded"] += 1
    except OSError as e:
        tally["reset"] += 1
        tally.setdefault("why", repr(e))
    finally:
        writer.close()


async def run(port, total, concurrency, stall, seed):
    rng = random.Random(seed)
    tally = {"ok": 0, "stranded": 0, "wrong": 0, "reset": 0, "refused": 0}
    sem = asyncio.Semaphore(concurrency)

    async def guarded():
        async with sem:
            await one(port, rng, stall, tally)

    await asyncio.gather(*(guarded() for _ in range(total)))
    return tally


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--connections", type=int, default=1000,
                    help="per target")
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--stall", type=float, default=20.0)
    ap.add_argument("--target", default="both")
    args = ap.parse_args()
    targets = ["cat", "tcp"] if args.target == "both" else [args.target]
    passed = failed = 0
    echo = None
    try:
        for name in targets:
            target = "exec:cat"
            if name == "tcp":
                echo, echo_port = start([args.server, "tcp://127.0.0.1:0"])
                target = "tcp://127.0.0.1:%d" % echo_port
            relay, port = start([args.relay, "tcp://127.0.0.1:0", target])
            t0 = time.monotonic()
            complaints = []
            try:
                tally = asyncio.run(run(port, args.connections,
                                        args.concurrency, args.stall,
                                        os.getpid()))
            finally:
                complaints = stop(relay)
                if echo is not None:
                    stop(echo)
                    echo = None
            ok = tally["ok"] == args.connections
            print("%s %s: relayed %d, stranded %d, wrong %d, reset %d, "
                  "refused %d, %.1f s" % (
                      "PASS" if ok else "FAIL", name, tally["ok"],
                      tally["stranded"], tally["wrong"], tally["reset"],
                      tally["refused"], time.monotonic() - t0), flush=True)
            if not ok and "why" in tally:
                print("  first error: " + tally["why"])
            for line in ([] if ok else complaints):
                print("  relay: " + line)
            passed += ok
            failed += not ok
    finally:
        if echo is not None:
            stop(echo)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
