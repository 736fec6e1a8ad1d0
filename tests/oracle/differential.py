#!/usr/bin/env python3
"""asyncio as the oracle: one scripted peer plays each scenario against a
recording server written with asyncio (record_server.py) and the same
server written with tact (record_server), and what each server recorded
(its callbacks and the bytes it received) and what the peer saw (the bytes
it received and how the stream ended) must match.

A scenario is a server configuration and a list of peer steps, composed by
a seeded random generator from: send, 1-byte trickle, 16 MiB burst, wait
for the greeting, and one ending (close, reset, half-close, read slowly
after the server stopped writing). The configurations cover: EOF answered
with close or with keep-open, a greeting (so that a close with it unread
resets), pause_reading inside data_received, a peer that stops reading
(watermarks), write_eof then more data from the peer, close and abort with
a full buffer.

Usage:

    differential.py --tact RECORD_SERVER [--seeds A:B] [--verbose]

Prints each mismatch and `N passed, M failed`; exit code 0 only if every
scenario matched. CTest runs seeds 0:300; `--seeds 0:10000` is the long run.
"""

import argparse
import os
import random
import select
import socket
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1024 * 1024

# name: (server options, what the peer may do)
CONFIGS = {
    "eof_closes": ([], "any"),
    "keep_open": (["--keep-open"], "any"),
    "greeting": (["--greeting", "hello\n"], "any"),
    "pause_first": (["--pause-first", "100"], "any"),
    "watermarks": (["--write-on-data", str(8 * MIB)], "reads"),
    "close_full": (["--write-on-data", str(MIB), "--then", "close"],
                   "one_send"),
    "abort_full": (["--write-on-data", str(MIB), "--then", "abort"],
                   "one_send"),
    "write_eof": (["--write-eof", "x"], "any"),
}


def crc(data):
    return zlib.crc32(data)


class Server:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError("no 'listening on' line from %r: %r"
                               % (argv, line))
        self.port = int(line.split()[-1].rsplit(":", 1)[1])

    def record(self, timeout=20):
        """The line the server printed for the last connection."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return "(no record within %d s)" % timeout
        return self.proc.stdout.readline().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def compose(seed):
    """A scenario: (config name, peer steps)."""
    rng = random.Random(seed)
    name = rng.choice(sorted(CONFIGS))
    _, allowed = CONFIGS[name]
    steps = []
    if name in ("greeting", "write_eof"):
        steps.append(("wait_greeting",))
    if allowed == "reads":
        # A peer that stops reading: one small send, then nothing read
        # while the server writes 8 MiB (it pauses), then all of it read
        # (it resumes) before our end.
        steps.append(("send", rng.randint(1, 1000)))
        steps.append(("nap", 200))
        steps.append((rng.choice(["read_8m_then_half",
                                  "read_8m_then_close"]),))
        return name, steps
    if allowed == "one_send":
        # The server acts on its first data_received: one small send, so
        # that the first read holds all of it in both implementations.
        steps.append(("send", rng.randint(1, 1000)))
        steps.append((rng.choice(["read_slow", "half"]),))
        return name, steps
    for _ in range(rng.randint(1, 4)):
        kind = rng.choices(["send", "trickle", "burst"], [12, 4, 1])[0]
        if kind == "send":
            steps.append(("send", rng.randint(1, 64 * 1024)))
        elif kind == "trickle":
            steps.append(("trickle", rng.randint(1, 40)))
        else:
            steps.append(("send", 16 * MIB))
        if rng.random() < 0.2:
            steps.append(("nap", rng.randint(1, 50)))
    ending = rng.choice(["close", "reset", "half", "read_slow"])
    steps.append((ending,))
    return name, steps


def play(port, steps, seed):
    """Runs the peer's steps; returns what it saw."""
    rng = random.Random(seed ^ 0x5eed)
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    sent = bytearray()
    got = bytearray()
    end = "open"

    def read_all():
        nonlocal end
        try:
            while True:
                b = s.recv(1 << 16)
                if not b:
                    end = "eof"
                    return
                got.extend(b)
        except ConnectionResetError:
            end = "reset"
        except socket.timeout:
            end = "timeout"

    try:
        for step in steps:
            op = step[0]
            if op == "wait_greeting":
                select.select([s], [], [], 10)
            elif op == "send":
                chunk = rng.randbytes(step[1])
                sent.extend(chunk)
                s.sendall(chunk)
            elif op == "trickle":
                for _ in range(step[1]):
                    chunk = rng.randbytes(1)
                    sent.extend(chunk)
                    s.sendall(chunk)
                    time.sleep(0.001)
            elif op.startswith("read_8m"):
                while len(got) < 8 * MIB:
                    b = s.recv(1 << 16)
                    if not b:
                        end = "eof"
                        break
                    got.extend(b)
                if op.endswith("half"):
                    s.shutdown(socket.SHUT_WR)
                    read_all()
                else:
                    s.close()
            elif op == "nap":
                time.sleep(step[1] / 1000)
            elif op == "close":
                s.close()
            elif op == "reset":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            elif op == "half":
                s.shutdown(socket.SHUT_WR)
                read_all()
            elif op == "read_slow":
                time.sleep(0.1)
                # A server that keeps the connection open waits for our EOF.
                s.setblocking(False)
                try:
                    while True:
                        b = s.recv(1 << 16)
                        if not b:
                            end = "eof"
                            break
                        got.extend(b)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    end = "reset"
                s.setblocking(True)
                s.settimeout(30)
                if end == "open":
                    s.shutdown(socket.SHUT_WR)
                    read_all()
    except (BrokenPipeError, ConnectionResetError):
        end = "reset"
    finally:
        s.close()
    return "%s n=%d h=%08x" % (end, len(got), crc(got)), bytes(sent)


def split(record):
    """(events, n, h) of a server record."""
    head, n, h = record.rsplit(" ", 2)
    return head, int(n[2:]), int(h[2:], 16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tact", required=True)
    ap.add_argument("--seeds", default="0:300")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    first, last = (int(x) for x in args.seeds.split(":"))
    servers = {}
    passed = failed = 0
    t0 = time.monotonic()
    try:
        for name, (opts, _) in CONFIGS.items():
            servers[name] = (
                Server([sys.executable, os.path.join(HERE, "record_server.py")]
                       + opts),
                Server([args.tact] + opts))
        for seed in range(first, last):
            name, steps = compose(seed)
            ref, impl = servers[name]
            seen = []
            for srv in (ref, impl):
                peer, sent = play(srv.port, steps, seed)
                seen.append((srv.record(), peer))
            (ref_rec, ref_peer), (impl_rec, impl_peer) = seen
            ok = ref_rec == impl_rec
            if not ok and "lost:reset" in ref_rec and "lost:reset" in impl_rec:
                # A reset drops what was still on its way: how much each
                # server read first is timing. The callbacks must match,
                # and each must have read a prefix of what was sent.
                try:
                    (re, rn, rh), (ie, i_n, ih) = split(ref_rec), split(impl_rec)
                    ok = (re == ie and rh == crc(sent[:rn])
                          and ih == crc(sent[:i_n]))
                except ValueError:
                    ok = False
            # After abort, how much of the buffer got out is timing.
            if name != "abort_full":
                ok = ok and ref_peer == impl_peer
            if ok:
                passed += 1
                if args.verbose:
                    print("ok %d %s %s: %s | %s" % (seed, name, steps,
                                                    ref_rec, ref_peer))
            else:
                failed += 1
                print("MISMATCH seed %d, %s, peer %s\n  asyncio: %s | %s\n"
                      "  tact:    %s | %s" % (seed, name, steps, ref_rec,
                                              ref_peer, impl_rec, impl_peer),
                      flush=True)
    finally:
        for pair in servers.values():
            for srv in pair:
                srv.stop()
    print("differential: %d scenarios in %.1f s" % (passed + failed,
                                                   time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
