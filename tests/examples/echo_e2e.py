#!/usr/bin/env python3
"""End-to-end test of the echo_server / echo_client examples, driven from the
outside as an independent client (Python 3.9+, standard library only).

Usage:

    echo_e2e.py --server PATH --client PATH [--only NAME[,NAME...]] [--seed N]
                [--total-timeout SECONDS] [--list]

PATH may be a command with arguments (it is split with shlex unless it names
an existing file), e.g.
``--server "python3 tests/examples/fake_echo_server.py"``.  The URLs are
appended to the server command, ``URL --message TEXT`` to the client command.
The server's PID (for /proc/PID/status and /proc/PID/fd, and for signals) is
the PID of the started command itself, so do not wrap it in a shell script
that forks.

Output: one line ``PASS name`` or ``FAIL name: reason`` per test, lines
starting with ``#`` for information (figures, skipped parts), and finally
``N passed, M failed``.  Exit code 0 only if every selected test passed.

The contract is documented in fake_echo_server.py (a reference server used to
validate this script).  Linux only (uses /proc).
"""

import argparse
import asyncio
import os
import queue
import random
import re
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

MiB = 1024 * 1024
KiB = 1024
CHUNK = 64 * KiB

# --------------------------------------------------------------------------
# Infrastructure
# --------------------------------------------------------------------------


class Fail(Exception):
    """A test assertion failed."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def info(msg):
    print("# " + msg, flush=True)


class Config:
    server_cmd = []
    client_cmd = []
    seed = 0
    ipv6 = False


CFG = Config()

_procs_lock = threading.Lock()
_procs = set()  # every child process still possibly alive


def spawn(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    with _procs_lock:
        _procs.add(p)
    return p


def reap(p, timeout=5.0):
    """Kill p (if still running) and wait for it.  Never raises."""
    try:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=timeout)
    except Exception:
        pass
    with _procs_lock:
        _procs.discard(p)


def reap_all():
    with _procs_lock:
        procs = list(_procs)
    for p in procs:
        reap(p)


def run_cmd(argv, timeout):
    """Run a short-lived command; kill it on timeout.  Returns
    (returncode, stdout, stderr) as text, or raises Fail on timeout."""
    p = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    try:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail("%s did not exit within %.0f s"
                       % (shlex.join(argv), timeout))
        return (p.returncode, out.decode(errors="replace"),
                err.decode(errors="replace"))
    finally:
        reap(p)


def short(text, limit=200):
    text = " | ".join(line for line in text.strip().splitlines())
    return text if len(text) <= limit else text[:limit] + "..."


class TempDir:
    """A temporary directory with a short path (unix socket paths are limited
    to ~107 bytes)."""

    def __enter__(self):
        base = tempfile.gettempdir()
        if len(base) > 60:
            base = "/tmp"
        self.path = tempfile.mkdtemp(prefix="tact-e2e-", dir=base)
        with _procs_lock:
            _tmpdirs.add(self.path)
        return self.path

    def __exit__(self, *exc):
        remove_tmpdir(self.path)
        return False


_tmpdirs = set()  # removed at exit even if a test thread is stuck


def remove_tmpdir(path):
    shutil.rmtree(path, ignore_errors=True)
    with _procs_lock:
        _tmpdirs.discard(path)


def remove_all_tmpdirs():
    with _procs_lock:
        paths = list(_tmpdirs)
    for p in paths:
        remove_tmpdir(p)


_LISTEN_RE = re.compile(r"^listening on (\S+)\s*$")
_TCP_RE = re.compile(r"^tcp://(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]/]+)):([0-9]+)$")


def same_host(a, b):
    """Compare host names / IP literals (::1 == 0:0:0:0:0:0:0:1)."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, a) == socket.inet_pton(fam, b)
        except OSError:
            continue
    return a == b


def parse_url(url):
    """('tcp', host, port) or ('unix', path, None); raises Fail."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        check(path, "empty unix path in %r" % url)
        return ("unix", path, None)
    m = _TCP_RE.match(url)
    check(m is not None, "cannot parse URL %r" % url)
    host = m.group(1) if m.group(1) is not None else m.group(2)
    return ("tcp", host, int(m.group(3)))


class Server:
    """A running echo_server child process."""

    def __init__(self, urls):
        self.urls = list(urls)
        self.argv = CFG.server_cmd + self.urls
        self.lines = queue.Queue()
        self.stderr_chunks = []
        self.proc = spawn(self.argv, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.listening = []  # URLs from "listening on" lines, in order

    @property
    def pid(self):
        return self.proc.pid

    def _read_stdout(self):
        try:
            for raw in iter(self.proc.stdout.readline, b""):
                self.lines.put(raw.decode(errors="replace").rstrip("\r\n"))
        except Exception:
            pass
        self.lines.put(None)

    def _read_stderr(self):
        try:
            for raw in iter(self.proc.stderr.readline, b""):
                self.stderr_chunks.append(raw.decode(errors="replace"))
        except Exception:
            pass

    def stderr_text(self):
        return "".join(self.stderr_chunks)

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self, when):
        rc = self.proc.poll()
        check(rc is None, "server died %s (exit code %s, stderr: %s)"
              % (when, rc, short(self.stderr_text())))

    def wait_listening(self, timeout=10.0):
        """Collect one 'listening on URL' line per requested URL."""
        deadline = time.monotonic() + timeout
        eof = False
        while len(self.listening) < len(self.urls):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("only %d of %d 'listening on' lines within %.0f s "
                           "(is stdout flushed?); got %r"
                           % (len(self.listening), len(self.urls), timeout,
                              self.listening))
            try:
                line = self.lines.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if line is None:
                eof = True
                break
            m = _LISTEN_RE.match(line)
            if m:
                self.listening.append(m.group(1))
        if eof:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            raise Fail("server closed stdout / exited (code %s) before "
                       "printing all listening lines; stderr: %s"
                       % (self.proc.poll(), short(self.stderr_text())))
        return list(self.listening)

    def extra_listening_lines(self, grace=0.2):
        """Drain stdout for `grace` seconds; return extra listening lines."""
        extra = []
        deadline = time.monotonic() + grace
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return extra
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return extra
            if line is None:
                return extra
            if _LISTEN_RE.match(line):
                extra.append(line)

    def url_for(self, requested):
        """Find the listening URL that corresponds to a requested URL."""
        kind, where, _ = parse_url(requested)
        found = []
        for u in self.listening:
            k, w, p = parse_url(u)
            if k != kind:
                continue
            if kind == "unix":
                if w == where or os.path.realpath(w) == os.path.realpath(where):
                    found.append(u)
            elif same_host(w, where):
                found.append(u)
        check(len(found) == 1, "expected exactly one listening line for %s, "
              "found %r (all: %r)" % (requested, found, self.listening))
        return found[0]

    def rss_bytes(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    parts = line.split()
                    return int(parts[1]) * 1024
        raise Fail("no VmRSS in /proc/%d/status" % self.pid)

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self):
        reap(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def start_server(urls, timeout=10.0):
    srv = Server(urls)
    try:
        srv.wait_listening(timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


def connect(url, timeout=5.0, rcvbuf=None):
    """Connected blocking socket with a timeout.  `rcvbuf` fixes SO_RCVBUF
    (which also turns off the kernel's receive buffer autotuning)."""
    kind, where, port = parse_url(url)
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = where
    else:
        fam = socket.AF_INET6 if ":" in where else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        addr = (where, port)
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def pump(sock, data, shut_wr=True, until_eof=True, timeout=15.0,
         read_delay=0.0, read_rate=None):
    """Send `data` and receive concurrently (non-blocking, never deadlocks on
    flow control).  After everything is sent, shutdown(SHUT_WR) if `shut_wr`.
    Reading starts `read_delay` seconds after the start and, if `read_rate`
    (bytes/s) is given, is throttled to that rate, so the server's output
    side stays backed up.  Stops when EOF is read (until_eof) or when
    len(data) bytes were received.  Returns (received: bytes, eof: bool)."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    view = memoryview(data)
    sent = 0
    got = bytearray()
    eof = False
    shut_done = False
    start = time.monotonic()
    deadline = start + timeout
    read_at = start + read_delay
    registered = 0
    try:
        while True:
            if sent == len(data) and shut_wr and not shut_done:
                sock.shutdown(socket.SHUT_WR)
                shut_done = True
            now = time.monotonic()
            want_read = not eof and (until_eof or len(got) < len(data))
            want_write = sent < len(data)
            if not want_read and not want_write:
                break
            if now >= deadline:
                raise Fail("timed out after %.1f s: sent %d/%d bytes, "
                           "received %d%s" % (timeout, sent, len(data),
                                               len(got),
                                               "" if not until_eof or eof
                                               else ", no EOF"))
            read_wait = read_at - now  # > 0: not allowed to read yet
            if read_rate is not None and read_wait <= 0:
                read_wait = ((len(got) - read_rate * (now - read_at))
                             / read_rate)
            reading_now = want_read and read_wait <= 0
            mask = ((selectors.EVENT_READ if reading_now else 0)
                    | (selectors.EVENT_WRITE if want_write else 0))
            wait = deadline - now
            if want_read and not reading_now:
                wait = min(wait, read_wait)
            if mask == 0:
                time.sleep(max(0.0, wait))
                continue
            if registered == 0:
                sel.register(sock, mask)
            elif registered != mask:
                sel.modify(sock, mask)
            registered = mask
            rsize = 256 * KiB if read_rate is None else 16 * KiB
            for _key, ev in sel.select(timeout=max(0.0, wait)):
                if ev & selectors.EVENT_WRITE and sent < len(data):
                    try:
                        sent += sock.send(view[sent:sent + 256 * KiB])
                    except (BlockingIOError, InterruptedError):
                        pass
                if ev & selectors.EVENT_READ:
                    try:
                        b = sock.recv(rsize)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if b:
                        got += b
                    else:
                        eof = True
    finally:
        sel.close()
    return bytes(got), eof


def echo_check(url, payload, timeout=15.0, read_delay=0.0, read_rate=None,
               rcvbuf=None, what=""):
    """Connect, send payload, half-close, expect exactly payload back then
    EOF."""
    s = connect(url, rcvbuf=rcvbuf)
    try:
        got, eof = pump(s, payload, timeout=timeout, read_delay=read_delay,
                        read_rate=read_rate)
    finally:
        s.close()
    label = "%s%s" % (url, (" (" + what + ")") if what else "")
    compare(payload, got, label)
    check(eof, "%s: no EOF after echo" % label)


def compare(expected, got, label):
    if got == expected:
        return
    n = min(len(expected), len(got))
    block = 0  # find the first differing 64 KiB block, then the byte
    while (block < n and
           expected[block:block + CHUNK] == got[block:block + CHUNK]):
        block += CHUNK
    first = next((i for i in range(block, min(n, block + CHUNK))
                  if expected[i] != got[i]), n)
    raise Fail("%s: echoed %d bytes, expected %d; first difference at "
               "offset %d" % (label, len(got), len(expected), first))


def recv_exactly(sock, n, label):
    """Receive exactly n bytes (blocking socket with a timeout)."""
    got = bytearray()
    while len(got) < n:
        try:
            b = sock.recv(n - len(got))
        except socket.timeout:
            raise Fail("%s: no data for %.0f s after %d of %d bytes"
                       % (label, sock.gettimeout(), len(got), n))
        check(b, "%s: EOF after %d of %d bytes" % (label, len(got), n))
        got += b
    return bytes(got)


def recv_until_eof(sock, label, limit=64 * MiB):
    got = bytearray()
    while True:
        try:
            b = sock.recv(65536)
        except socket.timeout:
            raise Fail("%s: no data / no EOF for %.0f s after %d bytes"
                       % (label, sock.gettimeout(), len(got)))
        if not b:
            return bytes(got)
        got += b
        check(len(got) <= limit, "%s: more than %d bytes" % (label, limit))


def free_tcp_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def rst_close(sock):
    """Close with RST (SO_LINGER {1,0}) for TCP; plain close for unix (a unix
    socket closed with unread data resets the peer as well)."""
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("ii", 1, 0))
    finally:
        sock.close()


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

TESTS = []


def test(limit):
    """Register a test with a hard time limit (seconds)."""
    def deco(fn):
        TESTS.append((fn.__name__, fn, limit))
        return fn
    return deco


@test(30)
def listening_line_tcp_unix_ipv6():
    rng = random.Random(CFG.seed ^ 1)
    with TempDir() as tmp:
        unix_url = "unix://" + os.path.join(tmp, "s.sock")
        urls = ["tcp://127.0.0.1:0", unix_url]
        if CFG.ipv6:
            urls.append("tcp://[::1]:0")
        else:
            info("listening_line_tcp_unix_ipv6: ::1 not available here, "
                 "IPv6 listener skipped")
        with start_server(urls) as srv:
            check(len(srv.listening) == len(urls), "listening lines: %r"
                  % srv.listening)
            extra = srv.extra_listening_lines()
            check(not extra, "more listening lines than listeners: %r"
                  % (srv.listening + extra))
            for req in urls:
                got = srv.url_for(req)
                kind, where, port = parse_url(got)
                if kind == "tcp":
                    check(1 <= port <= 65535 and port != 0,
                          "bad port in %r" % got)
                else:
                    check(os.path.exists(where),
                          "%s: socket file does not exist" % got)
                payload = rng.randbytes(rng.randint(1, 200 * KiB))
                echo_check(got, payload)
                echo_check(got, b"x", what="1 byte")
            srv.check_alive("after the echoes")


@test(100)
def concurrent_200():
    n_conns = 200
    rng = random.Random(CFG.seed ^ 2)
    plans = []
    for _ in range(n_conns):
        msgs = []
        for _ in range(rng.randint(2, 5)):
            # log-uniform 1 B .. 64 KiB
            size = max(1, min(64 * KiB, int(round(
                (64 * KiB) ** rng.random()))))
            msgs.append(rng.randbytes(size))
        plans.append(msgs)
    plans[0][0] = rng.randbytes(64 * KiB)  # make sure both extremes occur
    plans[1][0] = rng.randbytes(1)
    total = sum(len(m) for msgs in plans for m in msgs)
    with start_server(["tcp://127.0.0.1:0"]) as srv:
        _, host, port = parse_url(srv.url_for("tcp://127.0.0.1:0"))

        async def one(i, reader, writer):
            msgs = plans[i]

            async def send():
                for m in msgs:
                    writer.write(m)
                    await writer.drain()
                    await asyncio.sleep(0)
                writer.write_eof()

            async def receive():
                for k, m in enumerate(msgs):
                    try:
                        got = await reader.readexactly(len(m))
                    except asyncio.IncompleteReadError as e:
                        raise Fail("conn %d msg %d: EOF after %d of %d bytes"
                                   % (i, k, len(e.partial), len(m)))
                    compare(m, got, "conn %d msg %d" % (i, k))
                rest = await reader.read(65536)
                check(rest == b"", "conn %d: %d unexpected extra bytes "
                      "instead of EOF" % (i, len(rest)))

            st = asyncio.ensure_future(send())
            try:
                await receive()
                await st
            finally:
                st.cancel()

        async def main():
            conns = []
            try:
                opened = await asyncio.wait_for(asyncio.gather(
                    *[asyncio.open_connection(host, port)
                      for _ in range(n_conns)], return_exceptions=True), 30)
                for r in opened:
                    if isinstance(r, BaseException):
                        raise Fail("connect failed: %r" % (r,))
                    conns.append(r)
                # all 200 are open at the same time before any data flows
                results = await asyncio.wait_for(asyncio.gather(
                    *[one(i, r, w) for i, (r, w) in enumerate(conns)],
                    return_exceptions=True), 60)
                errors = [(i, e) for i, e in enumerate(results)
                          if isinstance(e, BaseException)]
                if errors:
                    i, e = errors[0]
                    raise Fail("%d of %d connections failed; first (conn %d):"
                               " %s: %s" % (len(errors), n_conns, i,
                                            type(e).__name__, e))
            except asyncio.TimeoutError:
                raise Fail("timed out (connect 30 s / transfer 60 s)")
            finally:
                for _r, w in conns:
                    w.close()

        t0 = time.monotonic()
        asyncio.run(main())
        info("concurrent_200: %d connections, %.1f MiB echoed in %.2f s"
             % (n_conns, total / MiB, time.monotonic() - t0))
        srv.check_alive("after the test")


def pattern_chunk(seed, i):
    """Deterministic pseudo-random 64 KiB chunk number i."""
    return random.Random((seed << 32) ^ i).randbytes(CHUNK)


@test(60)
def bounded_memory_64mib():
    total = 64 * MiB
    n_chunks = total // CHUNK
    seed = CFG.seed & 0xFFFFFFFF
    # A sanitizer build keeps freed memory in quarantine for a while; its
    # run sets its own bound (tests/sanitize.sh).
    limit = int(os.environ.get("TACT_E2E_RSS_LIMIT_MIB", "32")) * MiB
    budget_deadline = time.monotonic() + 50
    with start_server(["tcp://127.0.0.1:0"]) as srv:
        url = srv.url_for("tcp://127.0.0.1:0")
        # warm-up, then the baseline
        rng = random.Random(CFG.seed ^ 3)
        for _ in range(3):
            echo_check(url, rng.randbytes(256 * KiB))
        time.sleep(0.2)
        baseline = srv.rss_bytes()

        sock = connect(url, timeout=40)
        progress = [0]
        sender_err = []
        sender_done = threading.Event()

        def sender():
            try:
                for i in range(n_chunks):
                    sock.sendall(pattern_chunk(seed, i))
                    progress[0] += CHUNK
                sock.shutdown(socket.SHUT_WR)
            except BaseException as e:  # reported by the main thread
                sender_err.append(e)
            finally:
                sender_done.set()

        peak = [baseline]
        sampling = threading.Event()
        sampling.set()

        def sampler():
            while sampling.is_set():
                try:
                    peak[0] = max(peak[0], srv.rss_bytes())
                except (OSError, Fail):
                    return
                time.sleep(0.005)

        st = threading.Thread(target=sender, daemon=True)
        sp = threading.Thread(target=sampler, daemon=True)
        try:
            st.start()
            sp.start()
            # Phase 1: nobody reads.  Wait until the sender is stuck (no
            # progress for 0.5 s) or done, then keep sampling a little.
            last, last_change = -1, time.monotonic()
            phase1_end = time.monotonic() + 20
            while not sender_done.is_set():
                now = time.monotonic()
                if progress[0] != last:
                    last, last_change = progress[0], now
                elif now - last_change > 0.5:
                    break
                check(now < phase1_end, "sender never blocked in 20 s")
                srv.check_alive("while the client was not reading")
                time.sleep(0.01)
            time.sleep(0.5)
            srv.check_alive("while the client was not reading")
            accepted = progress[0]
            peak_unread = peak[0]
            if sender_err:
                raise Fail("send failed: %r" % sender_err[0])

            # Phase 2: read everything back and verify it.
            pending = bytearray()
            idx = 0
            received = 0
            buf = bytearray(MiB)
            while received < total:
                check(time.monotonic() < budget_deadline,
                      "read-back too slow: %d of %d MiB after 50 s"
                      % (received // MiB, total // MiB))
                try:
                    n = sock.recv_into(buf)
                except socket.timeout:
                    raise Fail("no data for 40 s after %d bytes" % received)
                if n == 0:
                    raise Fail("EOF after %d of %d bytes" % (received, total))
                received += n
                pending += buf[:n]
                while len(pending) >= CHUNK:
                    if pending[:CHUNK] != pattern_chunk(seed, idx):
                        exp = pattern_chunk(seed, idx)
                        off = next(j for j in range(CHUNK)
                                   if pending[j] != exp[j])
                        raise Fail("echoed data differs at offset %d"
                                   % (idx * CHUNK + off))
                    del pending[:CHUNK]
                    idx += 1
            check(received == total and not pending,
                  "received %d bytes, expected %d" % (received, total))
            check(sender_done.wait(10), "sender did not finish")
            if sender_err:
                raise Fail("send failed: %r" % sender_err[0])
            try:
                tail = sock.recv(1)
            except socket.timeout:
                raise Fail("no EOF after the echo of the half-closed stream")
            check(tail == b"", "got extra bytes after 64 MiB")
        finally:
            sampling.clear()
            sock.close()
            st.join(5)
            sp.join(2)
        srv.check_alive("after the test")
        growth = peak[0] - baseline
        info("bounded_memory_64mib: baseline RSS %.1f MiB, peak RSS %.1f MiB "
             "(+%.1f MiB; +%.1f MiB while not reading); %.1f MiB accepted "
             "before the sender blocked"
             % (baseline / MiB, peak[0] / MiB, growth / MiB,
                (peak_unread - baseline) / MiB, accepted / MiB))
        check(growth < limit, "server RSS grew by %.1f MiB (limit %d MiB): "
              "baseline %.1f MiB, peak %.1f MiB"
              % (growth / MiB, limit // MiB, baseline / MiB, peak[0] / MiB))


@test(40)
def reset_mid_echo():
    rng = random.Random(CFG.seed ^ 4)
    with TempDir() as tmp:
        urls = ["tcp://127.0.0.1:0", "unix://" + os.path.join(tmp, "r.sock")]
        with start_server(urls) as srv:
            tcp = srv.url_for(urls[0])
            unix = srv.url_for(urls[1])
            for rnd in range(2):
                socks = []
                try:
                    for k in range(12):
                        url = tcp if k % 3 else unix
                        s = connect(url)
                        socks.append(s)
                        if k % 4 == 3:
                            continue  # reset right after connect
                        payload = rng.randbytes(4 * MiB)
                        # push as much as fits without reading: the server is
                        # then busy echoing into our full receive buffer
                        s.settimeout(0.3)
                        try:
                            s.sendall(payload)
                        except socket.timeout:
                            pass
                        if k % 2 == 0:
                            # read a part of the echo to be sure it flows
                            s.settimeout(5)
                            got = recv_exactly(s, 64 * KiB,
                                               "%s (partial echo)" % url)
                            compare(payload[:len(got)], got,
                                    "%s (partial echo)" % url)
                finally:
                    for s in socks:
                        rst_close(s)
                time.sleep(0.3)
                srv.check_alive("after %d resets (round %d)"
                                % (len(socks), rnd + 1))
                for url in (tcp, unix):
                    echo_check(url, rng.randbytes(300 * KiB),
                               what="fresh connection after resets")
            srv.check_alive("after the test")


@test(60)
def fd_stability_1000():
    rng = random.Random(CFG.seed ^ 5)
    with TempDir() as tmp:
        urls = ["tcp://127.0.0.1:0", "unix://" + os.path.join(tmp, "f.sock")]
        with start_server(urls) as srv:
            targets = [srv.url_for(u) for u in urls]

            def cycle(i):
                url = targets[i % 2]
                msg = rng.randbytes(rng.randint(1, 512))
                label = "cycle %d (%s)" % (i, url)
                try:
                    s = connect(url)
                except OSError as e:
                    raise Fail("%s: connect failed: %s" % (label, e))
                try:
                    s.sendall(msg)
                    compare(msg, recv_exactly(s, len(msg), label), label)
                finally:
                    s.close()

            def settle(timeout):
                """fd count after it stopped changing (or timeout)."""
                prev = srv.fd_count()
                end = time.monotonic() + timeout
                while time.monotonic() < end:
                    time.sleep(0.1)
                    cur = srv.fd_count()
                    if cur == prev:
                        return cur
                    prev = cur
                return prev

            for i in range(40):
                cycle(i)
            baseline = settle(2.0)
            t0 = time.monotonic()
            for i in range(1000):
                cycle(i)
            elapsed = time.monotonic() - t0
            end = time.monotonic() + 2.0
            count = srv.fd_count()
            while count > baseline and time.monotonic() < end:
                time.sleep(0.05)
                count = srv.fd_count()
            info("fd_stability_1000: baseline %d fds, %d fds after 1000 "
                 "cycles (%.1f s)" % (baseline, count, elapsed))
            check(count <= baseline, "server has %d open fds after 1000 "
                  "connections, baseline was %d" % (count, baseline))
            srv.check_alive("after the test")


@test(40)
def half_close():
    rng = random.Random(CFG.seed ^ 6)
    with TempDir() as tmp:
        urls = ["tcp://127.0.0.1:0", "unix://" + os.path.join(tmp, "h.sock")]
        with start_server(urls) as srv:
            for url in (srv.url_for(u) for u in urls):
                # small: write, shutdown(SHUT_WR), read all back, then EOF
                s = connect(url)
                try:
                    msg = b"half-close test \x00\xff" + rng.randbytes(100)
                    s.sendall(msg)
                    s.shutdown(socket.SHUT_WR)
                    got = recv_until_eof(s, "%s (small)" % url)
                    compare(msg, got, "%s (small)" % url)
                finally:
                    s.close()
                # large, read concurrently
                echo_check(url, rng.randbytes(8 * MiB + rng.randint(1, 9999)),
                           timeout=20, what="8 MiB then half-close")
                # lazy reader with a small receive buffer: the client sends
                # everything (more than the kernel buffers towards it hold)
                # and its EOF before reading anything; whatever the server
                # has not written yet when it sees the EOF must still arrive
                echo_check(url, rng.randbytes(12 * MiB + rng.randint(1, 9999)),
                           timeout=20, read_delay=0.7, rcvbuf=64 * KiB,
                           what="12 MiB, half-close, reader starts late")
                # slow reader with a small receive buffer: the server's
                # output is backed up the whole time
                echo_check(url, rng.randbytes(16 * MiB + rng.randint(1, 9999)),
                           timeout=20, read_rate=32 * MiB, rcvbuf=64 * KiB,
                           what="16 MiB, half-close, reader at 32 MiB/s")
            srv.check_alive("after the test")


@test(20)
def signal_exit():
    for signame, idle in (("SIGTERM", False), ("SIGINT", True)):
        sig = getattr(signal, signame)
        with TempDir() as tmp:
            urls = ["tcp://127.0.0.1:0",
                    "unix://" + os.path.join(tmp, "g.sock")]
            with start_server(urls) as srv:
                url = srv.url_for(urls[0])
                echo_check(url, b"ping")
                conn = None
                try:
                    if idle:
                        conn = connect(url)
                        conn.sendall(b"idle")
                        got = recv_exactly(conn, 4, "idle connection")
                        check(got == b"idle", "idle connection: echoed %r"
                              % got)
                    t0 = time.monotonic()
                    os.kill(srv.pid, sig)
                    # A sanitizer build runs several times slower: its run
                    # allows more (tests/sanitize.sh).
                    limit = float(os.environ.get("TACT_E2E_EXIT_LIMIT_S", "1"))
                    try:
                        rc = srv.proc.wait(timeout=limit)
                    except subprocess.TimeoutExpired:
                        raise Fail("%s: still running %g s after the signal%s"
                                   % (signame, limit,
                                      " (with an idle connection)"
                                      if idle else ""))
                    dt = time.monotonic() - t0
                    check(rc == 0, "%s: exit code %s, expected 0 (stderr: %s)"
                          % (signame, rc, short(srv.stderr_text())))
                    info("signal_exit: %s%s -> exit 0 after %.0f ms"
                         % (signame, " with an idle connection" if idle
                            else "", dt * 1000))
                finally:
                    if conn is not None:
                        conn.close()


BAD_URLS = [
    ["tcp://nohostport"],
    ["ftp://x"],
    ["tcp://127.0.0.1:99999"],
    ["tcp://127.0.0.1:abc"],
    ["tcp://127.0.0.1:0", "ftp://x"],  # one good, one bad: still an error
]


@test(40)
def bad_url():
    for urls in BAD_URLS:
        rc, out, err = run_cmd(CFG.server_cmd + urls, timeout=5)
        label = " ".join(urls)
        check(rc == 2, "%s: exit code %s, expected 2 (stderr: %s)"
              % (label, rc, short(err)))
        lines = err.strip("\n").split("\n")
        check(err.strip() and len(lines) == 1 and lines[0].strip(),
              "%s: expected exactly one non-empty line on stderr, got %r"
              % (label, err))


@test(40)
def client_echo():
    with TempDir() as tmp:
        urls = ["tcp://127.0.0.1:0", "unix://" + os.path.join(tmp, "c.sock")]
        if CFG.ipv6:
            urls.append("tcp://[::1]:0")
        with start_server(urls) as srv:
            text = "some text"
            for req in urls:
                url = srv.url_for(req)
                rc, out, err = run_cmd(CFG.client_cmd +
                                       [url, "--message", text], timeout=10)
                check(rc == 0, "client %s --message %r: exit code %s "
                      "(stderr: %s)" % (url, text, rc, short(err)))
                check(text in out, "client %s: %r not in stdout %r"
                      % (url, text, out))
            # default message: just has to work and print the echo
            url = srv.url_for(urls[0])
            rc, out, err = run_cmd(CFG.client_cmd + [url], timeout=10)
            check(rc == 0, "client %s (default message): exit code %s "
                  "(stderr: %s)" % (url, rc, short(err)))
            check(out.strip(), "client %s (default message): empty stdout"
                  % url)
            srv.check_alive("after the clients")


@test(30)
def client_refused():
    with TempDir() as tmp:
        port = free_tcp_port()
        targets = ["tcp://127.0.0.1:%d" % port,
                   "unix://" + os.path.join(tmp, "missing.sock")]
        for url in targets:
            rc, out, err = run_cmd(CFG.client_cmd + [url, "--message", "x"],
                                   timeout=10)
            check(rc != 0, "client %s: exit code 0 although nothing listens"
                  % url)
            check(rc > 0, "client %s: killed by signal %d instead of exiting"
                  % (url, -rc))
            lines = err.strip("\n").split("\n")
            check(err.strip() and len(lines) == 1 and lines[0].strip(),
                  "client %s: expected a one-line reason on stderr, got %r"
                  % (url, err))


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


def run_one(name, fn, limit):
    result = {}

    def body():
        try:
            fn()
            result["ok"] = True
        except Fail as e:
            result["err"] = str(e)
        except socket.timeout as e:
            tb = traceback.extract_tb(e.__traceback__)
            result["err"] = "socket operation timed out (%s) at line %d" % (
                e, tb[-1].lineno if tb else 0)
        except BaseException as e:
            tb = traceback.extract_tb(e.__traceback__)
            where = ("%s:%d" % (os.path.basename(tb[-1].filename),
                                tb[-1].lineno)) if tb else "?"
            result["err"] = "%s: %s (at %s)" % (type(e).__name__, e, where)

    t = threading.Thread(target=body, name=name, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        # kill the children so that blocked sockets/pipes wake up
        reap_all()
        t.join(10)
        return "test exceeded its time limit of %.0f s" % limit
    reap_all()  # nothing may survive a test
    if result.get("ok"):
        return None
    return " ".join(result.get("err", "unknown error").split())


def resolve(cmd, what):
    def usage_error(msg):
        print("echo_e2e: " + msg, file=sys.stderr)
        sys.exit(2)

    if os.path.isfile(cmd):
        return [cmd]  # a plain path, possibly with spaces
    argv = shlex.split(cmd)
    if not argv:
        usage_error("empty %s command" % what)
    exe = argv[0]
    if os.sep in exe:
        if not os.path.isfile(exe):
            usage_error("%s %r not found" % (what, exe))
    elif shutil.which(exe) is None:
        usage_error("%s %r not found in PATH" % (what, exe))
    return argv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True,
                    help="echo_server executable (or command, shlex-split)")
    ap.add_argument("--client", required=True,
                    help="echo_client executable (or command, shlex-split)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only this test (repeatable, or comma-separated)")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (default: random, printed)")
    ap.add_argument("--total-timeout", type=float, default=240,
                    help="overall time limit in seconds (default 240); "
                    "tests not started by then fail")
    ap.add_argument("--list", action="store_true", help="list test names")
    args = ap.parse_args()

    names = [n for n, _, _ in TESTS]
    if args.list:
        print("\n".join(names))
        return 0
    only = [n for o in args.only for n in o.split(",") if n]
    for n in only:
        if n not in names:
            print("echo_e2e: unknown test %r (known: %s)"
                  % (n, ", ".join(names)), file=sys.stderr)
            return 2

    CFG.server_cmd = resolve(args.server, "server")
    CFG.client_cmd = resolve(args.client, "client")
    CFG.seed = (args.seed if args.seed is not None
                else random.SystemRandom().randrange(1 << 31))
    CFG.ipv6 = ipv6_loopback_available()
    info("seed %d (rerun with --seed %d)" % (CFG.seed, CFG.seed))

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_sigterm)  # so that finally: cleans up

    passed = failed = 0
    t_start = time.monotonic()
    try:
        for name, fn, limit in TESTS:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            left = args.total_timeout - (t0 - t_start)
            if left < 1:
                err = "not run: overall time limit of %.0f s reached" % (
                    args.total_timeout)
            else:
                err = run_one(name, fn, min(limit, left))
            dt = time.monotonic() - t0
            if err is None:
                passed += 1
                print("PASS %s" % name, flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, err), flush=True)
            info("%s took %.1f s" % (name, dt))
    except KeyboardInterrupt as e:
        print("interrupted (%s); %d passed, %d failed so far"
              % (e or "SIGINT", passed, failed), file=sys.stderr, flush=True)
        return 130
    finally:
        reap_all()
        remove_all_tmpdirs()
    info("total %.1f s" % (time.monotonic() - t_start))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
