#!/usr/bin/env python3
"""End-to-end test of the relay example with independent peers: Python
sockets and asyncio, `openssl s_client`, the echo_server example and `cat`.

Usage:

    relay_e2e.py --relay RELAY --server ECHO_SERVER

Output: `PASS name` or `FAIL name: reason` per test (with the relay's
memory figures where measured), then `N passed, M failed`; exit code 0
only if every test passed.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time

import tls_e2e as tls
from tls_e2e import Fail, Server, check

ARGS = None
MIB = 1024 * 1024


def growth_limit_kib(default_mib):
    """How much the relay's RSS may grow; the sanitizer runs, where freed
    memory waits in a quarantine, raise it (TACT_E2E_RSS_LIMIT_MIB)."""
    return int(os.environ.get("TACT_E2E_RSS_LIMIT_MIB", default_mib)) * 1024


def relay(listen, target):
    return Server([ARGS.relay, listen, target])


def tls_listen():
    return "tls://127.0.0.1:0?cert=%s&key=%s" % (tls.PKI["server.pem"],
                                                tls.PKI["server.key"])


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """Samples a process's RSS every 10 ms in the background."""

    def __init__(self, pid):
        self.pid = pid
        self.start = rss_kib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except OSError:
                return

    def stop(self):
        self._stop.set()
        self._thread.join()
        return "RSS %.1f MiB at start, %.1f MiB at most" % (
            self.start / 1024, self.peak / 1024)


def exchange(sock, payload, timeout=60):
    """Sends `payload` while reading what comes back; half-closes after
    sending; returns everything read up to EOF."""
    sock.settimeout(timeout)
    got = bytearray()
    error = []

    def reader():
        try:
            while True:
                b = sock.recv(1 << 16)
                if not b:
                    return
                got.extend(b)
        except OSError as e:
            error.append(e)

    t = threading.Thread(target=reader)
    t.start()
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    t.join(timeout)
    check(not t.is_alive(), "no EOF within %d s (%d bytes read)"
          % (timeout, len(got)))
    check(not error, "read failed: %r" % error)
    return bytes(got)


def expect_closed(port):
    """A client of the relay at `port` gets no byte, only the end (EOF or
    a reset)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        try:
            check(s.recv(100) == b"", "data from a target that is not there")
        except ConnectionResetError:
            pass


# -- tests ----------------------------------------------------------------------


def exec_cat_is_an_echo_server():
    """`relay tcp://127.0.0.1:0 exec:cat`: 100 MiB each way at once, four
    clients side by side, each echoed byte-exact and ended with EOF."""
    with relay("tcp://127.0.0.1:0", "exec:cat") as r:
        watch = RssWatch(r.proc.pid)
        results = {}

        def client(i, size):
            payload = os.urandom(size)
            with socket.create_connection(("127.0.0.1", r.port)) as s:
                results[i] = exchange(s, payload) == payload

        threads = [threading.Thread(target=client, args=(0, 100 * MIB))]
        threads += [threading.Thread(target=client, args=(i, 5 * MIB))
                    for i in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        figure = watch.stop()
        check(results == {0: True, 1: True, 2: True, 3: True},
              "echo differs or missing: %r" % results)
        check(watch.peak - watch.start < growth_limit_kib(64),
              "memory grew: " + figure)
        return "100 MiB each way; " + figure


def tls_termination_for_s_client():
    """TLS on the relay, plain echo_server behind it: `openssl s_client`
    (TLS 1.2 and 1.3) gets its text back."""
    with Server([ARGS.server, "tcp://127.0.0.1:0"]) as echo, \
            relay(tls_listen(), echo.url) as r:
        for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            text = "relayed over %s\n" % name
            rc, out = tls.s_client(r.port, version, text)
            check(rc == 0, "s_client %s exited %d: %s" % (version, rc, out))
            check("Verify return code: 0 (ok)" in out, "not verified: " + out)
            check(name in out, "%s not negotiated: %s" % (name, out))
            check(text in out, "no echo: " + out)


def tls_termination_bulk():
    """Python's asyncio over TLS through the relay to echo_server: 100 MiB
    each way at once, byte-exact."""
    payload = os.urandom(100 * MIB)

    async def main(port):
        ctx = ssl.create_default_context(cafile=tls.PKI["ca.pem"])
        reader, writer = await asyncio.open_connection("localhost", port,
                                                       ssl=ctx)

        async def send():
            writer.write(payload)
            await writer.drain()
        sender = asyncio.ensure_future(send())
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 120)
        await sender
        check(got == payload, "echo differs")
        writer.close()
        await writer.wait_closed()

    with Server([ARGS.server, "tcp://127.0.0.1:0"]) as echo, \
            relay(tls_listen(), echo.url) as r:
        watch = RssWatch(r.proc.pid)
        asyncio.run(main(r.port))
        figure = watch.stop()
        check(watch.peak - watch.start < growth_limit_kib(64),
              "memory grew: " + figure)
        return figure


def unix_socket_on_tcp():
    """A Unix socket server exposed on TCP, half-close passed through."""
    d = tempfile.mkdtemp(prefix="tact-relay-e2e-")
    try:
        path = os.path.join(d, "echo.sock")
        with Server([ARGS.server, "unix://" + path]), \
                relay("tcp://127.0.0.1:0", "unix://" + path) as r:
            payload = os.urandom(3 * MIB)
            with socket.create_connection(("127.0.0.1", r.port)) as s:
                check(exchange(s, payload) == payload, "echo differs")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def verified_tls_target():
    """A TLS target verified against its CA; an untrusted one refused with
    a clear line, the client's connection closed, the relay serving on."""
    url = "tls://127.0.0.1:0?cert=%s&key=%s" % (tls.PKI["server.pem"],
                                                tls.PKI["server.key"])
    with Server([ARGS.server, url]) as echo:
        good = "tls://localhost:%d?ca=%s" % (echo.port, tls.PKI["ca.pem"])
        bad = "tls://localhost:%d?ca=%s" % (echo.port, tls.PKI["other_ca.pem"])
        with relay("tcp://127.0.0.1:0", good) as r:
            with socket.create_connection(("127.0.0.1", r.port)) as s:
                # TLS has no half-close: the echo comes back, then the
                # client closes.
                s.sendall(b"to a verified server")
                s.settimeout(10)
                got = b""
                while len(got) < 20:
                    b = s.recv(100)
                    check(b, "EOF after %r" % got)
                    got += b
                check(got == b"to a verified server", "got %r" % got)
        with relay("tcp://127.0.0.1:0", bad) as r:
            for _ in range(2):
                expect_closed(r.port)
            r.stop()
            err = r.proc.stderr.read()
            check(err.count("certificate verify failed") == 2,
                  "no clear error per connection: " + err)


def refused_target():
    """Nothing listens at the target: each client is closed, the relay says
    why and keeps serving."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with relay("tcp://127.0.0.1:0", "tcp://127.0.0.1:%d" % port) as r:
        for _ in range(3):
            expect_closed(r.port)
        r.stop()
        err = r.proc.stderr.read()
        check(err.count("connection_refused") == 3 or
              err.count("refused") >= 3, "no error per connection: " + err)


def bounded_while_client_stops_reading():
    """A client that sends without ever reading: the relay's memory stays
    flat while the echoes pile up behind it (exec:cat and a TCP target)."""
    figures = []
    for target in ("exec:cat", None):
        echo = None
        if target is None:
            echo = Server([ARGS.server, "tcp://127.0.0.1:0"])
            target = echo.url
        try:
            with relay("tcp://127.0.0.1:0", target) as r:
                watch = RssWatch(r.proc.pid)
                s = socket.create_connection(("127.0.0.1", r.port))
                s.setblocking(False)
                chunk = os.urandom(MIB)
                sent = 0
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    try:
                        sent += s.send(chunk)
                    except BlockingIOError:
                        time.sleep(0.01)
                figure = watch.stop()
                s.close()
                check(sent < 64 * MIB, "%d bytes accepted: nothing held "
                      "the client back" % sent)
                check(watch.peak - watch.start < growth_limit_kib(16),
                      "memory grew: " + figure)
                figures.append("%s: %.1f MiB sent before the client was "
                               "held back, %s" % (
                                   "exec:cat" if echo is None else "tcp",
                                   sent / MIB, figure))
        finally:
            if echo:
                echo.stop()
    return "; ".join(figures)


def idle_client_is_ended():
    """`relay --idle-timeout 0.5`: a client that talks keeps its
    connection; one that goes silent is ended (before, an idle client and
    a child that ignores stdin stayed for good)."""
    r = Server([ARGS.relay, "--idle-timeout", "0.5", "tcp://127.0.0.1:0",
                "exec:cat"])
    with r:
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            s.settimeout(10)
            for i in range(8):
                time.sleep(0.2)
                s.sendall(b"ping\n")
                check(s.recv(100) == b"ping\n", "no echo %d" % i)
            t0 = time.monotonic()
            try:
                end = s.recv(100)
            except ConnectionResetError:
                end = b""
            secs = time.monotonic() - t0
            check(end == b"", "data instead of the end: %r" % end)
            check(0.4 < secs < 5, "ended after %.1f s of silence" % secs)
        return "ended after %.2f s of silence" % secs


def child_of_a_silent_client_is_killed():
    """`relay --idle-timeout 0.5 exec:...`: a child that ignores its stdin
    and writes nothing outlives no client: once the client has gone (FIN,
    then nothing either way), the idle timeout ends the connection and the
    child is killed with it (asyncio's close of a subprocess transport)."""
    r = Server([ARGS.relay, "--idle-timeout", "0.5", "tcp://127.0.0.1:0",
                "exec:sh", "-c", "echo $$; exec sleep 60"])
    with r:
        s = socket.create_connection(("127.0.0.1", r.port))
        s.settimeout(10)
        pid = int(s.makefile("rb").readline())
        check(os.path.exists("/proc/%d" % pid), "no child %d" % pid)
        s.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
        secs = time.monotonic() - t0
        alive = False
        try:
            with open("/proc/%d/stat" % pid) as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            pass
        if alive:
            os.kill(pid, signal.SIGKILL)
        check(not alive, "the child %d still runs 10 s after its client "
              "left" % pid)
        return "child gone %.2f s after its client left" % secs


TESTS = [
    exec_cat_is_an_echo_server,
    tls_termination_for_s_client,
    tls_termination_bulk,
    unix_socket_on_tcp,
    verified_tls_target,
    refused_target,
    bounded_while_client_stops_reading,
    idle_client_is_ended,
    child_of_a_silent_client_is_killed,
]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", required=True)
    ap.add_argument("--server", required=True)
    ARGS = ap.parse_args()
    return tls.run_suite(TESTS)


if __name__ == "__main__":
    sys.exit(main())
