#!/usr/bin/env python3
"""End-to-end test of echo_server and echo_client over UDP, driven from
outside with Python's socket module as the independent peer.

    udp_e2e.py --server PATH --client PATH

Prints `PASS name` / `FAIL name: reason` per test and `#` lines with
figures; exits 0 only if every test passed.
"""

import argparse
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Server:
    def __init__(self, path, urls):
        self.proc = subprocess.Popen([path] + urls, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.listening = []
        for _ in urls:
            line = self.proc.stdout.readline()
            m = re.match(r"listening on udp://(?:\[([^\]]+)\]|([^:]+)):(\d+)$",
                         line.strip())
            if not m:
                self.stop()
                raise Fail("bad listening line %r (stderr: %s)"
                           % (line, self.proc.stderr.read()))
            self.listening.append((m.group(1) or m.group(2), int(m.group(3))))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def sender(addr, sender_id, count, rng, results, lock):
    """Sends `count` datagrams, one in flight, each `id seq body`; waits for
    the exact echo, resending after a timeout (UDP may drop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    ok = resent = bad = 0
    try:
        for seq in range(count):
            body = rng.randbytes(rng.randint(0, 1992))
            msg = struct.pack("!II", sender_id, seq) + body
            for attempt in range(10):
                sock.sendto(msg, addr)
                try:
                    while True:
                        reply, src = sock.recvfrom(65536)
                        if reply[:8] == msg[:8]:
                            break
                        # a late echo of an earlier attempt: skip it
                except socket.timeout:
                    resent += 1
                    continue
                if reply == msg and src == addr:
                    ok += 1
                else:
                    bad += 1
                break
    finally:
        sock.close()
    with lock:
        results.append((ok, resent, bad))


def test_concurrent_senders(server, client):
    srv = Server(server, ["udp://127.0.0.1:0"])
    try:
        addr = srv.listening[0]
        results, lock = [], threading.Lock()
        seed = random.randrange(1 << 30)
        threads = [threading.Thread(target=sender,
                                    args=(addr, i, 200, random.Random(seed + i),
                                          results, lock))
                   for i in range(50)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        secs = time.monotonic() - t0
        ok = sum(r[0] for r in results)
        resent = sum(r[1] for r in results)
        bad = sum(r[2] for r in results)
        print("# concurrent_senders: 50 senders, %d of 10000 datagrams echoed "
              "exactly in %.1f s, %d resent after a timeout, %d wrong (seed %d)"
              % (ok, secs, resent, bad, seed))
        check(len(results) == 50, "a sender thread did not finish")
        check(bad == 0, "%d echoes differ from what was sent" % bad)
        check(ok == 10000, "only %d of 10000 datagrams echoed" % ok)
        check(srv.alive(), "server died")
    finally:
        check(srv.stop() == 0, "server did not exit 0 on SIGTERM")


def test_large_datagram(server, client):
    srv = Server(server, ["udp://127.0.0.1:0"])
    try:
        addr = srv.listening[0]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.settimeout(5.0)
        payload = os.urandom(65000)
        sock.sendto(payload, addr)
        reply, _ = sock.recvfrom(65536)
        check(reply == payload, "65,000-byte datagram came back as %d bytes"
              % len(reply))
        # The largest IPv4 UDP payload.
        payload = os.urandom(65507)
        sock.sendto(payload, addr)
        reply, _ = sock.recvfrom(65536)
        check(reply == payload, "65,507-byte datagram came back wrong")
        sock.close()
        check(srv.alive(), "server died")
    finally:
        check(srv.stop() == 0, "server did not exit 0 on SIGTERM")


def test_vanishing_peers(server, client):
    """Peers that send and close at once: the server's replies hit closed
    ports (ICMP port unreachable); it keeps answering others."""
    srv = Server(server, ["udp://127.0.0.1:0"])
    try:
        addr = srv.listening[0]
        for i in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"gone %d" % i, addr)
            s.close()
        time.sleep(0.3)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5.0)
        sock.sendto(b"still there?", addr)
        reply, _ = sock.recvfrom(100)
        check(reply == b"still there?", "wrong echo %r" % reply)
        sock.close()
        check(srv.alive(), "server died")
    finally:
        check(srv.stop() == 0, "server did not exit 0 on SIGTERM")


def test_client(server, client):
    srv = Server(server, ["udp://127.0.0.1:0"])
    try:
        host, port = srv.listening[0]
        out = subprocess.run([client, "udp://%s:%d" % (host, port),
                              "--message", "hello over udp"],
                             capture_output=True, text=True, timeout=20)
        check(out.returncode == 0, "client exit %d: %s"
              % (out.returncode, out.stderr))
        check("received: hello over udp" in out.stdout,
              "client printed %r" % out.stdout)
    finally:
        srv.stop()
    # Nothing listens: ICMP port unreachable reaches the connected client.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = subprocess.run([client, "udp://127.0.0.1:%d" % port, "--message", "x"],
                         capture_output=True, text=True, timeout=20)
    lines = out.stderr.strip().splitlines()
    check(out.returncode == 1, "client to a closed port: exit %d"
          % out.returncode)
    check(len(lines) == 1 and "refused" in lines[0],
          "client to a closed port: stderr %r" % out.stderr)


TESTS = [test_concurrent_senders, test_large_datagram, test_vanishing_peers,
         test_client]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--client", required=True)
    opts = ap.parse_args()
    failed = 0
    for t in TESTS:
        name = t.__name__[len("test_"):]
        try:
            t(opts.server, opts.client)
            print("PASS", name, flush=True)
        except Exception as ex:  # a failure or an unexpected error
            failed += 1
            print("FAIL %s: %s" % (name, ex), flush=True)
    print("%d passed, %d failed" % (len(TESTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
