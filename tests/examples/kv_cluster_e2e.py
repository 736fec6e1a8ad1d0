#!/usr/bin/env python3
"""End-to-end test of examples/kv_cluster: a launcher with three shard
processes and a gateway on loopback, driven by `redis-cli` and by a Python
RESP client.

Usage:

    kv_cluster_e2e.py --cluster KV_CLUSTER [--redis-cli PATH]

Output: `PASS name` or `FAIL name: reason` per test (with figures where
measured), then `N passed, M failed`; exit code 0 only if every test
passed.

Under ThreadSanitizer the node processes print their reports to files
instead of dying on them: libcaf is not instrumented, so TSan reports races
inside CAF's own serialization that it cannot see synchronised. A report
with a frame in tact's or kv_cluster's code still fails the run.
"""

import argparse
import csv
import io
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ARGS = None
SHARDS = 3
TSAN_DIR = None
# Under the sanitizers (tests/sanitize.sh sets these) CAF's serialization
# runs many times slower: the gateway waits longer for a shard.
SLOW = any(k in os.environ for k in ("TSAN_OPTIONS", "ASAN_OPTIONS"))
# Waits stretch by this much there.
T = 4 if SLOW else 1


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def primary_of(key, shards=SHARDS):
    """The gateway's placement (FNV-1a 64 of the key, modulo the shards)."""
    h = 14695981039346656037
    for b in key.encode():
        h ^= b
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % shards


def key_on(primary, prefix="k"):
    """A key whose primary is `primary`."""
    i = 0
    while primary_of("%s%d" % (prefix, i)) != primary:
        i += 1
    return "%s%d" % (prefix, i)


class Cluster:
    """`kv_cluster --shards 3 --port 0`, its output collected line by line.
    The shards' logs go to `data_dir`, or to a directory of the cluster's
    own, removed when it stops. `session`: the launcher leads a process
    group of its own, which holds every node (for `kill_all`)."""

    def __init__(self, *extra, data_dir=None, session=False):
        self.own_data = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="tact-kv-data-")
        extra = ("--data-dir", self.data_dir) + extra
        if SLOW and "--timeout-ms" not in extra:
            extra = ("--timeout-ms", "30000") + extra
        # A node under a sanitizer on a busy machine may take more than
        # the default 5 s to end after SIGTERM.
        if SLOW:
            extra = ("--stop-grace-ms", "20000") + extra
        env = dict(os.environ)
        # The nodes' leak suppressions add CAF's openssl module's
        # (tests/sanitizers/lsan_cluster.supp says why).
        if "LSAN_OPTIONS" in env:
            env["LSAN_OPTIONS"] = re.sub(
                r"(?:^|(?<=:))suppressions=[^:]*",
                "suppressions=" + os.path.join(
                    os.path.dirname(os.path.abspath(__file__)), "..",
                    "sanitizers", "lsan_cluster.supp"),
                env["LSAN_OPTIONS"])
        if TSAN_DIR and "TSAN_OPTIONS" in env:
            env["TSAN_OPTIONS"] += ":halt_on_error=0:exitcode=0:log_path=" \
                + os.path.join(TSAN_DIR, "tsan")
        self.proc = subprocess.Popen(
            [ARGS.cluster, "--shards", str(SHARDS), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, start_new_session=session)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            line = self.wait_for(r"^listening on tcp://", timeout=60 * T)
            self.port = int(line.rsplit(":", 1)[1])
        except Fail:
            self.stop()
            raise

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern, count=1, timeout=30):
        """The `count`th line matching `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * T
        with self.cond:
            while True:
                hits = [ln for ln in self.lines if rx.search(ln)]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None
                                 and not self.reader.is_alive()):
                    raise Fail("no %r (#%d) in the cluster's output:\n%s"
                               % (pattern, count, "\n".join(self.lines)))
                self.cond.wait(min(left, 0.2))

    def pid(self, node):
        """The pid of the newest start of `node` ("shard 1", "gateway")."""
        line = None
        with self.cond:
            for ln in self.lines:
                if ln.startswith("launcher: started %s (pid " % node):
                    line = ln
        check(line, "no start line for %s" % node)
        return int(line.rsplit("pid ", 1)[1].rstrip(")"))

    def node_pids(self):
        with self.cond:
            return [int(m.group(1)) for ln in self.lines
                    for m in [re.search(r"started .* \(pid (\d+)\)", ln)]
                    if m]

    def kill_all(self):
        """SIGKILL to the launcher and every node at once (one kill(2) to
        the process group); then removes what the launcher would have
        removed at its exit (the run's certificates)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(5)
        self._remove_pki()
        deadline = time.monotonic() + 5
        for pid in self.node_pids():
            while time.monotonic() < deadline:
                try:
                    with open("/proc/%d/stat" % pid) as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            break
                except OSError:
                    break
                time.sleep(0.05)
            else:
                raise Fail("node %d outlived SIGKILL of its group" % pid)

    def _remove_pki(self):
        """The run's certificates, which a launcher that did not end by
        itself left behind."""
        with self.cond:
            for ln in self.lines:
                m = re.search(r"certificates are in (\S+) \(removed", ln)
                if m:
                    shutil.rmtree(m.group(1), ignore_errors=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20 * T)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        self._remove_pki()
        if self.own_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.proc.returncode

    def check_stopped(self, what="the launcher's exit status"):
        """Stops the cluster; fails with the end of its output unless the
        launcher (and so every node) ended with status 0."""
        status = self.stop()
        with self.cond:
            tail = "\n".join(self.lines[-40:])
        check(status == 0, "%s: %s; the output ended with:\n%s"
              % (what, status, tail))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Client:
    """A RESP client on a plain socket."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, *cmds):
        out = []
        for cmd in cmds:
            out.append(b"*%d\r\n" % len(cmd))
            for arg in cmd:
                arg = arg if isinstance(arg, bytes) else str(arg).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """The next reply: str for +, int for :, bytes or None for $,
        list for *, an Exception instance for -."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("connection closed")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise Fail("bad reply line %r" % line)

    def call(self, *cmd):
        self.send(cmd)
        return self.reply()


def cli(cluster, *args, stdin=None):
    r = subprocess.run([ARGS.redis_cli, "-p", str(cluster.port), *args],
                       input=stdin, capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0, "redis-cli %s: %s" % (args, r.stderr))
    return r.stdout


def check_read_back(cl, acked, when=""):
    """Every key of `acked` has its value, read 500 at a time."""
    keys = sorted(acked)
    lost = []
    for start in range(0, len(keys), 500):
        batch = keys[start:start + 500]
        cl.send(*[("GET", k) for k in batch])
        for k in batch:
            r = cl.reply()
            if r != acked[k].encode():
                lost.append((k, r))
    check(not lost, "%d of %d acknowledged writes lost or wrong%s, e.g. %r"
          % (len(lost), len(keys), when, lost[:5]))


class Writers:
    """`n` clients, one command at a time each: a SET of a fresh key, an
    INCR of a counter of its own, a SET of a key of its own overwritten,
    and again, until `stop()`. Records what was acknowledged. `killed`:
    connections will be cut (the whole cluster is killed), which ends a
    writer instead of counting as an error."""

    def __init__(self, port, n=4, prefix="w", killed=False):
        self.port, self.prefix, self.killed = port, prefix, killed
        self.acked = {}            # fresh key -> value
        self.ack_times = []        # (time, key) of each acknowledged SET
        self.incrs = {}            # writer -> [acknowledged, unknown]
        self.last_overwrite = {}   # writer -> last acknowledged value
        self.refused = []          # error replies
        self.errors = []           # what no writer should see
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,))
                        for w in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, wid):
        cl = Client(self.port, timeout=30 * T)
        self.incrs[wid] = counts = [0, 0]
        i = 0
        try:
            while not self.done.is_set():
                key = "%s%d:%d" % (self.prefix, wid, i)
                value = "value-%d-%d-%s" % (wid, i, "x" * (i % 50))
                r = cl.call("SET", key, value)
                if r == "OK":
                    with self.lock:
                        self.acked[key] = value
                        self.ack_times.append((time.monotonic(), key))
                elif isinstance(r, Exception):
                    self.refused.append(str(r))
                else:
                    self.errors.append("SET answered %r" % (r,))
                # In flight: its outcome is unknown until it is answered.
                counts[1] += 1
                r = cl.call("INCR", "%scnt:%d" % (self.prefix, wid))
                if isinstance(r, int):
                    counts[1] -= 1
                    counts[0] += 1
                    check(r >= counts[0], "INCR went back: %d" % r)
                elif "may or may not" not in str(r):
                    counts[1] -= 1
                    self.refused.append(str(r))
                r = cl.call("SET", "%sow:%d" % (self.prefix, wid), str(i))
                if r == "OK":
                    self.last_overwrite[wid] = i
                i += 1
        except (EOFError, OSError) as e:
            if not self.killed:
                self.errors.append("writer %d: %r" % (wid, e))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append("writer %d: %r" % (wid, e))
        finally:
            cl.close()

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(60 * T)

    def check_read_back(self, cl, when=""):
        """Every acknowledged write is there: the fresh keys with their
        values, each counter within its acknowledged and unknown INCRs,
        each overwritten key at least at its last acknowledged value."""
        check_read_back(cl, self.acked, when)
        for wid, (ok, unknown) in self.incrs.items():
            r = cl.call("GET", "%scnt:%d" % (self.prefix, wid))
            n = int(r) if isinstance(r, bytes) else -1
            check(ok <= n <= ok + unknown,
                  "counter %d is %r%s after %d acknowledged INCRs (%d "
                  "unknown)" % (wid, r, when, ok, unknown))
            if wid in self.last_overwrite:
                r = cl.call("GET", "%sow:%d" % (self.prefix, wid))
                check(isinstance(r, bytes)
                      and int(r) >= self.last_overwrite[wid],
                      "overwritten key %d is %r%s, last acknowledged %d"
                      % (wid, r, when, self.last_overwrite[wid]))


# -- tests ----------------------------------------------------------------------------


def test_redis_cli_commands():
    with Cluster() as c:
        check(cli(c, "PING") == "PONG\n", "PING")
        check(cli(c, "SET", "greeting", "hello world") == "OK\n", "SET")
        check(cli(c, "GET", "greeting") == "hello world\n", "GET")
        check(cli(c, "GET", "nothing-here") == "\n", "GET of a missing key")
        check(cli(c, "INCR", "counter") == "1\n", "INCR new")
        check(cli(c, "INCR", "counter") == "2\n", "INCR again")
        check(cli(c, "EXISTS", "greeting", "counter", "nope") == "2\n",
              "EXISTS of three keys")
        check(cli(c, "DBSIZE") == "2\n", "DBSIZE")  # greeting, counter
        check(cli(c, "DEL", "greeting", "nope") == "1\n", "DEL")
        check(cli(c, "GET", "greeting") == "\n", "GET after DEL")
        check(cli(c, "DBSIZE") == "1\n", "DBSIZE after DEL")
        cli(c, "DEL", "counter")
        # The errors real clients expect, in Redis's words.
        out = cli(c, "INCR", "counter", "extra")
        check("ERR wrong number of arguments for 'incr' command" in out, out)
        out = cli(c, "FLY", "away")
        check("ERR unknown command 'FLY'" in out, out)
        cli(c, "SET", "text", "abc")
        out = cli(c, "INCR", "text")
        check("ERR value is not an integer or out of range" in out, out)
        cli(c, "SET", "big", str(2**63 - 1))
        out = cli(c, "INCR", "big")
        check("ERR increment or decrement would overflow" in out, out)
        # A value of 1 MiB (more than one read of the gateway), binary.
        big = bytes(range(256)) * 4096
        cl = Client(c.port)
        check(cl.call("SET", "big", big) == "OK", "SET of 1 MiB")
        check(cl.call("GET", "big") == big, "GET of 1 MiB")
        cl.close()
        # redis-cli reading commands from a pipe.
        script = "".join("SET key:%d value-%d\n" % (i, i) for i in range(500))
        out = cli(c, stdin=script)
        check(out == "OK\n" * 500, "500 piped SETs: %r" % out[:200])
        out = cli(c, stdin="".join("GET key:%d\n" % i for i in range(500)))
        check(out == "".join("value-%d\n" % i for i in range(500)),
              "500 piped GETs")
        c.check_stopped()
        return "every shard used: %s" % sorted(
            {primary_of("key:%d" % i) for i in range(500)})


def test_redis_benchmark():
    """redis-benchmark, Redis's own load generator, with and without
    pipelining: every request answered, no error."""
    bench = shutil.which("redis-benchmark")
    check(bench, "redis-benchmark is missing (Debian package redis-tools)")
    with Cluster() as c:
        figures = []
        for pipeline in (1, 16):
            r = subprocess.run(
                [bench, "-p", str(c.port), "-c", "10", "-n", "2000", "-P",
                 str(pipeline), "-t", "set,get,incr", "--csv"],
                capture_output=True, text=True, timeout=120 * T)
            check(r.returncode == 0, "redis-benchmark -P %d: %s %s"
                  % (pipeline, r.stdout, r.stderr))
            rows = list(csv.DictReader(io.StringIO(r.stdout)))
            check([row["test"] for row in rows] == ["SET", "GET", "INCR"],
                  "redis-benchmark -P %d ran %s" % (pipeline, r.stdout))
            check("ERR" not in r.stderr and "error" not in r.stderr.lower(),
                  "redis-benchmark -P %d: %s" % (pipeline, r.stderr))
            figures += ["%s -P %d %.0f/s" % (row["test"], pipeline,
                                             float(row["rps"]))
                        for row in rows]
        # What it wrote is there (without -r its keys are fixed): 2000
        # INCRs of its counter, twice, none lost or counted twice.
        cl = Client(c.port)
        check(cl.call("GET", "counter:__rand_int__") == b"4000",
              "redis-benchmark's counter after 4000 INCRs")
        cl.close()
        c.check_stopped()
        return ", ".join(figures)


def test_pipelining_keeps_order():
    with Cluster() as c:
        cl = Client(c.port)
        # 3000 commands in one write, on keys of every shard; the answers
        # come back in the order asked even though the shards answer in
        # any order.
        cmds = []
        for i in range(1000):
            cmds.append(("SET", "p%d" % i, "v%d" % i))
            cmds.append(("GET", "p%d" % i))
            cmds.append(("INCR", "n%d" % (i % 7)))
        cl.send(*cmds)
        counts = {}
        for i, cmd in enumerate(cmds):
            r = cl.reply()
            if cmd[0] == "SET":
                check(r == "OK", "reply %d: %r" % (i, r))
            elif cmd[0] == "GET":
                check(r == cmd[1].replace("p", "v").encode(),
                      "reply %d to %s: %r" % (i, cmd, r))
            else:
                counts[cmd[1]] = counts.get(cmd[1], 0) + 1
                check(r == counts[cmd[1]], "reply %d to %s: %r" % (i, cmd, r))
        # A protocol error ends the connection after an error reply.
        cl.sock.sendall(b"*1\r\n$4\r\nPING\r\n*x\r\n")
        check(cl.reply() == "PONG", "PING before the bad request")
        r = cl.reply()
        check(isinstance(r, Exception) and "Protocol error" in str(r),
              "protocol error reply: %r" % r)
        try:
            cl.reply()
            raise Fail("the connection stayed open after a protocol error")
        except (EOFError, ConnectionResetError):
            pass
        cl.close()
        # A client that sends its commands and then EOF (shutdown of its
        # writing side) gets every answer, then the end of the connection;
        # a command cut short by EOF is dropped.
        cl = Client(c.port)
        cl.send(*[("GET", "p%d" % i) for i in range(200)])
        cl.sock.sendall(b"*2\r\n$3\r\nGET\r\n")
        cl.sock.shutdown(socket.SHUT_WR)
        for i in range(200):
            r = cl.reply()
            check(r == b"v%d" % i, "answer %d after EOF: %r" % (i, r))
        try:
            r = cl.reply()
            raise Fail("an answer to a command cut short: %r" % (r,))
        except EOFError:
            pass
        cl.close()
        # Inline commands, as typed into telnet.
        cl = Client(c.port)
        cl.sock.sendall(b"PING\r\nECHO hi\r\n")
        check(cl.reply() == "PONG" and cl.reply() == b"hi", "inline commands")
        cl.close()
        return "3000 commands in one write"


def test_sigkill_loses_no_acknowledged_write():
    """Four clients write while shard 1 and then shard 2 are killed. Each
    one SETs fresh keys, INCRs a counter of its own and overwrites a key of
    its own, one command at a time; what was acknowledged must all be
    there at the end."""
    with Cluster() as c:
        refused = []
        stop = threading.Event()
        errors = []
        hot = key_on(1, "hot")
        pipelined = {"batches": 0, "last": 0}

        def pipeliner():
            """INCRs of one key of shard 1 and a SET then GET of another,
            20 at a time in one write: across the switch from replica to
            primary, the INCRs must count up one by one and each GET must
            see the SET before it."""
            cl = Client(c.port, timeout=30 * T)
            rw = key_on(1, "rw")
            last = 0
            try:
                while not stop.is_set():
                    n = pipelined["batches"]
                    cl.send(*[("INCR", hot)] * 20, ("SET", rw, str(n)),
                            ("GET", rw))
                    answers = [cl.reply() for _ in range(22)]
                    for r in answers[:20]:
                        if isinstance(r, int):
                            check(r > last, "INCR %s answered %d after %d: "
                                  "an acknowledged increment was lost"
                                  % (hot, r, last))
                            last = r
                        elif "may or may not" not in str(r):
                            refused.append(str(r))
                    if answers[20] == "OK":
                        check(answers[21] == str(n).encode(),
                              "GET after SET %s: %r" % (n, answers[21]))
                    pipelined["batches"] = n + 1
                    pipelined["last"] = last
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("pipeliner: %r" % (e,))
            finally:
                cl.close()

        writers = Writers(c.port)
        threads = [threading.Thread(target=pipeliner)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            victim = c.pid("shard 1")
            os.kill(victim, signal.SIGKILL)
            t_kill = time.monotonic()
            c.wait_for(r"shard 1 \(pid %d\) killed by signal 9" % victim)
            c.wait_for(r"^\[shard 1\] shard 1 serving", count=2)
            t_back = time.monotonic()
            # The gateway's link to the new shard 1, then more writes.
            c.wait_for(r"^\[gateway\] gateway: shard 1 at", count=2)
            time.sleep(0.5)
            # The other copies of shard 1's keys were on shard 2 (its
            # replica) and shard 0 (whose replica it is): kill shard 2 as
            # well, so that shard 1's own keys can only come from what it
            # fetched.
            second = c.pid("shard 2")
            os.kill(second, signal.SIGKILL)
            c.wait_for(r"shard 2 \(pid %d\) killed by signal 9" % second)
            c.wait_for(r"^\[gateway\] gateway: shard 2 is down")
            time.sleep(0.5)
        finally:
            stop.set()
            writers.stop()
            for t in threads:
                t.join(60 * T)
        errors += writers.errors
        refused += writers.refused
        check(not errors, "client errors: %s" % errors[:5])
        outage = [k for t, k in writers.ack_times
                  if t_kill < t < t_back and primary_of(k) == 1]
        check(outage, "no write to shard 1's keys was acknowledged while it "
              "was down (refusals: %s)" % refused[:5])
        cl = Client(c.port, timeout=30 * T)
        writers.check_read_back(cl)
        r = cl.call("GET", hot)
        check(isinstance(r, bytes) and int(r) >= pipelined["last"],
              "%s is %r after the answer %d" % (hot, r, pipelined["last"]))
        cl.close()
        c.check_stopped()
        return ("%d acknowledged SETs (%d to shard 1's keys while it was "
                "down), %d INCRs, all read back after SIGKILL of shard 1 "
                "then shard 2; shard 1 served again %.2f s after its kill; "
                "%d commands refused; %d pipelined batches of 20 INCRs" % (
                    len(writers.acked), len(outage),
                    sum(v[0] for v in writers.incrs.values()), t_back - t_kill,
                    len(refused), pipelined["batches"]))


def test_unreachable_node_gives_an_error():
    timeout_ms = 500 * T
    with Cluster("--timeout-ms", str(timeout_ms)) as c:
        cl = Client(c.port, timeout=20)
        k1 = key_on(1)   # held by shards 1 and 2
        k0 = key_on(0)   # held by shards 0 and 1
        check(cl.call("SET", k1, "one") == "OK", "SET before")
        check(cl.call("SET", k0, "zero") == "OK", "SET before")
        frozen = [c.pid("shard 1"), c.pid("shard 2")]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = cl.call("GET", k1)
            took = time.monotonic() - t0
            check(isinstance(r, Exception) and "CLUSTERDOWN" in str(r),
                  "GET with both holders frozen: %r" % (r,))
            check(took < 10 * T, "the error took %.1f s" % took)
            r = cl.call("SET", k1, "again")
            check(isinstance(r, Exception), "SET with both holders frozen")
            # Shard 0 still answers for its keys.
            check(cl.call("GET", k0) == b"zero", "GET from shard 0")
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        # Back: the same connection works again. The SET that failed was
        # not acknowledged: the frozen shard may still apply it once it
        # runs, as with any request whose answer timed out.
        deadline = time.monotonic() + 20 * T
        while True:
            r = cl.call("GET", k1)
            if r in (b"one", b"again"):
                break
            check(time.monotonic() < deadline, "GET after SIGCONT: %r" % (r,))
            time.sleep(0.2)
        cl.close()
        c.check_stopped()
        return "CLUSTERDOWN after %.2f s with --timeout-ms %d" % (took,
                                                                 timeout_ms)


def test_gateway_restart_and_clean_stop():
    with Cluster() as c:
        cl = Client(c.port)
        check(cl.call("SET", "x", "1") == "OK", "SET")
        cl.close()
        gw = c.pid("gateway")
        os.kill(gw, signal.SIGKILL)
        c.wait_for(r"^listening on tcp://127\.0\.0\.1:%d$" % c.port, count=2)
        cl = Client(c.port)
        check(cl.call("GET", "x") == b"1", "GET through the new gateway")
        cl.close()
        pids = c.node_pids()
        c.check_stopped("the launcher's exit status (1: a node needed "
                         "SIGKILL)")
        # Every node ended on SIGTERM with status 0 (a sanitizer report at
        # exit would make it non-zero).
        with c.cond:
            at = max(i for i, ln in enumerate(c.lines)
                     if "stopping the nodes" in ln)
            ends = [ln for ln in c.lines[at:] if "exited with status" in ln
                    or "killed by signal" in ln]
            # What a node said before it died (a sanitizer report, an
            # uncaught exception), for the failure message.
            why = [ln for ln in c.lines if re.search(
                r"ERROR|Sanitizer|terminate|runtime error|Assertion|#\d+ 0x",
                ln)][:40]
        check(len(ends) == SHARDS + 1 and all(
            ln.endswith("exited with status 0") for ln in ends),
            "how the nodes ended: %s; what they said: %s" % (ends, why))
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        check(not alive, "nodes left after the launcher stopped: %s" % alive)
        return "a restarted gateway took the same port; %d nodes ended" \
            % len(pids)


def node_ports(c):
    """{name: port} of the directory and every shard, from their lines."""
    ports = {}
    line = c.wait_for(r"cluster directory on ")
    ports["directory"] = int(re.search(r"directory on \S+:(\d+)",
                                       line).group(1))
    for i in range(SHARDS):
        line = c.wait_for(r"shard %d published on " % i)
        ports["shard %d" % i] = int(line.rsplit(":", 1)[1])
    return ports


def foreign_identity(d):
    """A CA of another cluster and a node certificate it signed (made with
    the openssl command): what a node of another cluster would hold."""
    ca, (cert, key) = own_ca(d, ("shard-0", "URI:kv-cluster:shard-0"))
    return [ca, cert, key]


def check_as(cluster_args, port):
    """`kv_cluster --role check` against 127.0.0.1:`port`: (reached, output)."""
    out = subprocess.run([ARGS.cluster, "--role", "check", "--join",
                          "127.0.0.1:%d" % port, *cluster_args],
                         capture_output=True, text=True, timeout=60 * T)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def own_ca(d, *nodes):
    """A CA made with the openssl command and, for each (name, subject alt
    names) of `nodes`, a certificate it signed: [ca, (cert, key), ...]."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True,
                       capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=kv cluster CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    out = [os.path.join(d, "ca.pem")]
    for name, alt in nodes:
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % alt)
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=kv_cluster " + name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-out", name + ".pem",
                "-days", "2", "-extfile", name + ".ext")
        out.append((os.path.join(d, name + ".pem"),
                    os.path.join(d, name + ".key")))
    return out


def test_certificate_proves_the_shard():
    """A node of the cluster claims to be shard 1 with a certificate that
    does not name it (the gateway's): the directory refuses its
    registration and shard 0 refuses it shard 1's entries; shard 1's own
    certificate is accepted, but not its signature for another claim.
    Then a cluster on a CA of its own, whose one machine certificate names
    the three shards in subjectAltName URIs, serves; a certificate naming
    shard 0 alone cannot claim shard 1."""
    with Cluster() as c:
        k = key_on(1)
        check(cli(c, "SET", k, "mine") == "OK\n", "SET")
        ports = node_ports(c)
        pki = re.search(r"certificates are in (\S+) ",
                        c.wait_for(r"certificates are in ")).group(1)

        def as_node(name):
            return ["--ca", os.path.join(pki, "ca.pem"),
                    "--cert", os.path.join(pki, name + ".pem"),
                    "--key", os.path.join(pki, name + ".key")]
        claims = [
            ("gateway", ["--claim-shard", "1"], "directory", False,
             "does not name shard 1"),
            ("gateway", ["--claim-shard", "1", "--claim", "fetch", "--from",
                         "0"], "shard 0", False, "does not name shard 1"),
            ("shard-2", ["--claim-shard", "1", "--claim", "fetch", "--from",
                         "0"], "shard 0", False, "does not name shard 1"),
            # Shard 1's proof for a fetch from shard 2, shown to shard 0.
            ("shard-1", ["--claim-shard", "1", "--claim", "fetch", "--from",
                         "2"], "shard 0", False, "signature"),
            ("shard-1", ["--claim-shard", "1", "--claim", "fetch", "--from",
                         "0"], "shard 0", True, "claim accepted"),
        ]
        for who, claim, port, accepted, words in claims:
            ok, out = check_as(as_node(who) + claim, ports[port])
            check(ok == accepted and words in out,
                  "%s's certificate, %s at the %s: %s" % (who, claim, port,
                                                          out))
        check(cli(c, "GET", k) == "mine\n", "GET after the claims")
        with c.cond:
            moved = [ln for ln in c.lines if "127.0.0.1:1\b" in ln
                     or "shard 1 at 127.0.0.1:1" in ln]
        check(not moved, "the directory listed a claimant: %s" % moved)
        c.check_stopped()
    d = tempfile.mkdtemp(prefix="tact-kv-ca-")
    try:
        ca, machine, lone = own_ca(
            d, ("machine", ",".join("URI:kv-cluster:shard-%d" % i
                                    for i in range(SHARDS))),
            ("lone", "URI:kv-cluster:shard-0"))
        with Cluster("--ca", ca, "--cert", machine[0], "--key",
                     machine[1]) as c:
            for i in range(SHARDS):
                c.wait_for(r"shard %d serving" % i)
            check(cli(c, "SET", "x", "1") == "OK\n", "SET on the own CA")
            ports = node_ports(c)
            ok, out = check_as(["--ca", ca, "--cert", lone[0], "--key",
                                lone[1], "--claim-shard", "1"],
                               ports["directory"])
            check(not ok and "does not name shard 1" in out,
                  "a certificate naming shard 0 claimed shard 1: %s" % out)
            c.check_stopped()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return "4 false claims refused, shard 1's own accepted; a machine " \
        "certificate naming 3 shards by subjectAltName serves them"


def test_strangers_get_no_actor():
    """Every node port (the directory's and each shard's) gives a stranger
    no actor: not one speaking plain BASP, not one with a certificate from
    another CA. One with the cluster's own certificate gets in."""
    d = tempfile.mkdtemp(prefix="tact-kv-foreign-")
    try:
        ca, cert, key = foreign_identity(d)
        with Cluster() as c:
            ports = node_ports(c)
            # The cluster's own certificates, where the launcher made them.
            pki = c.wait_for(r"certificates are in ").rsplit(" in ", 1)[1]
            pki = pki.split()[0]
            member = ["--ca", os.path.join(pki, "ca.pem"),
                      "--cert", os.path.join(pki, "gateway.pem"),
                      "--key", os.path.join(pki, "gateway.key")]
            for name, port in ports.items():
                reached, out = check_as(member, port)
                check(reached, "the cluster's own certificate did not reach "
                      "%s: %s" % (name, out))
                reached, out = check_as(["--insecure"], port)
                check(not reached, "plain BASP reached %s: %s" % (name, out))
                reached, out = check_as(["--ca", ca, "--cert", cert,
                                         "--key", key], port)
                check(not reached, "another CA's node reached %s: %s"
                      % (name, out))
            cl = Client(c.port)
            check(cl.call("SET", "after", "strangers") == "OK",
                  "SET after the strangers")
            check(cl.call("GET", "after") == b"strangers", "GET")
            cl.close()
            c.check_stopped()
        return "%d node ports refused plain BASP and another CA" % len(ports)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sniff_loopback(stop, out):
    """TCP payloads seen on lo until `stop` is set: (sport, dport, bytes)
    tuples appended to `out` (IPv4 only; an AF_PACKET socket, root)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind(("lo", 0))
    s.settimeout(0.2)
    try:
        while not stop.is_set():
            try:
                frame, meta = s.recvfrom(70000)
            except socket.timeout:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # each loopback packet is seen twice
            ip = frame[14:]
            if len(ip) < 20 or ip[9] != 6:
                continue
            ihl = (ip[0] & 0x0F) * 4
            total = int.from_bytes(ip[2:4], "big")
            tcp = ip[ihl:total]
            if len(tcp) < 20:
                continue
            sport = int.from_bytes(tcp[0:2], "big")
            dport = int.from_bytes(tcp[2:4], "big")
            off = (tcp[12] >> 4) * 4
            if len(tcp) > off:
                out.append((sport, dport, bytes(tcp[off:])))
    finally:
        s.close()


def test_no_cleartext_between_nodes():
    """Keys and values written through the gateway cross the node links
    (gateway to shard, shard to shard) only encrypted: captured on lo, no
    link carries them, while the client's own connection to the gateway
    (Redis's protocol, in clear) shows the sniffer sees them."""
    marker_key = "secret-key-%d" % os.getpid()
    marker_value = "secret-value-%d" % os.getpid()
    with Cluster() as c:
        ports = node_ports(c)
        stop = threading.Event()
        seen = []
        sniffer = threading.Thread(target=sniff_loopback, args=(stop, seen))
        sniffer.start()
        try:
            time.sleep(0.3)
            cl = Client(c.port)
            for i in range(20):
                check(cl.call("SET", "%s-%d" % (marker_key, i),
                              marker_value) == "OK", "SET %d" % i)
            for i in range(20):
                check(cl.call("GET", "%s-%d" % (marker_key, i))
                      == marker_value.encode(), "GET %d" % i)
            cl.close()
            time.sleep(0.5)
        finally:
            stop.set()
            sniffer.join()
        c.check_stopped()
    client = [p for sp, dp, p in seen if c.port in (sp, dp)]
    links = [p for sp, dp, p in seen if c.port not in (sp, dp)
             and (set(ports.values()) & {sp, dp} or sp > 1024 and dp > 1024)]
    check(any(marker_value.encode() in p for p in client),
          "the sniffer saw no value on the client's connection (%d packets)"
          % len(seen))
    link_bytes = b"".join(links)
    check(link_bytes, "no bytes between the nodes were captured")
    for marker in (marker_key.encode(), marker_value.encode()):
        check(marker not in link_bytes, "%r in clear text between the nodes"
              % marker)
    return "%d KiB captured between the nodes, no key or value in it" \
        % (len(link_bytes) // 1024)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_basp_bomb_costs_nothing():
    """A BASP header announcing a 4 GiB payload, sent twice to every node
    port (it made the launcher allocate 8 GB and wiped the cluster): each
    node stays within a few MiB, no node restarts, no key is lost."""
    with Cluster() as c:
        ports = node_ports(c)
        cl = Client(c.port)
        for i in range(100):
            check(cl.call("SET", "bomb-%d" % i, str(i)) == "OK", "SET %d" % i)
        pids = {"directory": c.proc.pid}
        for i in range(SHARDS):
            pids["shard %d" % i] = c.pid("shard %d" % i)
        before = {n: rss_kib(p) for n, p in pids.items()}
        starts = len(c.node_pids())
        header = bytes(4) + b"\xff\xff\xff\xff" + bytes(24)
        for name, port in ports.items():
            for _ in range(2):
                with socket.create_connection(("127.0.0.1", port), 10) as s:
                    s.settimeout(10)
                    try:
                        s.sendall(header)
                        s.recv(4096)
                    except (ConnectionResetError, socket.timeout):
                        pass
        time.sleep(1)
        grown = {n: rss_kib(p) - before[n] for n, p in pids.items()}
        for n, kib in grown.items():
            check(kib < 8 * 1024, "%s grew by %d KiB" % (n, kib))
        for i in range(100):
            check(cl.call("GET", "bomb-%d" % i) == str(i).encode(),
                  "GET bomb-%d" % i)
        cl.close()
        check(len(c.node_pids()) == starts, "a node restarted")
        c.check_stopped()
        return "largest growth %d KiB" % max(grown.values())


def test_client_that_never_reads_is_cut_off():
    """A client that sends GETs of a 1 MiB value and never reads (it made
    the gateway grow to 5 GB): the gateway and the shards stay under
    256 MiB, the client is disconnected with a log line (here past 8 MiB
    unread for 1 s), and the others are served throughout."""
    # Under the sanitizers a shard takes seconds per MiB it answers: the
    # value is 256 KiB there, and the soft limit 2 MiB.
    size, soft = (256 * 1024, 2 * 1024 * 1024) if SLOW else (1024 * 1024,
                                                           8 * 1024 * 1024)
    with Cluster("--client-output-limit", "67108864,%d,1" % soft) as c:
        cl = Client(c.port, timeout=30)
        value = os.urandom(size)
        check(cl.call("SET", "big", value) == "OK", "SET big")
        pids = [c.pid("gateway")] + [c.pid("shard %d" % i)
                                     for i in range(SHARDS)]
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(("127.0.0.1", c.port))
        hog.settimeout(2)
        gets = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 100
        sent = [0]
        done = threading.Event()

        def flood():
            try:
                while not done.is_set() and sent[0] < 3000:
                    hog.sendall(gets)
                    sent[0] += 100
            except OSError:
                pass
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        peak = 0
        deadline = time.monotonic() + 20 * T
        cut = None
        while time.monotonic() < deadline:
            peak = max(peak, max(rss_kib(p) for p in pids))
            # The others are served meanwhile.
            r = cl.call("GET", "big")
            # Under the sanitizers a shard takes seconds per 1 MiB answer:
            # the other client's GET may time out behind the hog's, and is
            # checked once the hog is gone.
            check(r == value or (SLOW and isinstance(r, Exception)),
                  "GET by another client: %r"
                  % (r if not isinstance(r, bytes) else "%d bytes" % len(r)))
            with c.cond:
                cut = next((ln for ln in c.lines
                            if "output limit" in ln), None)
            if cut:
                break
            time.sleep(0.05)
        done.set()
        for _ in range(10):
            peak = max(peak, max(rss_kib(p) for p in pids))
            time.sleep(0.05)
        check(cut, "the client was not disconnected (%d GETs sent)" % sent[0])
        try:
            got = 0
            while True:
                data = hog.recv(1 << 20)
                if not data:
                    break
                got += len(data)
        except (ConnectionResetError, socket.timeout):
            pass
        hog.close()
        # 256 MiB. Under the sanitizers the bound says only that the 3 GiB
        # asked for never piled up: ASan's quarantine keeps freed memory,
        # and TSan's shadow memory is several times what the nodes touch
        # (592 MiB seen for the 131 MiB of a normal build).
        limit = 1536 if SLOW else 256
        check(peak < limit * 1024, "RSS reached %d MiB" % (peak // 1024))
        # Served again once the hog is gone (under the sanitizers the shard
        # may still be busy with the hog's answers for a while).
        deadline = time.monotonic() + 30 * T
        while True:
            r = cl.call("GET", "big")
            if r == value:
                break
            check(SLOW and isinstance(r, Exception)
                  and time.monotonic() < deadline,
                  "GET after: %r" % (r if not isinstance(r, bytes)
                                     else "%d bytes" % len(r)))
            time.sleep(0.5)
        cl.close()
        c.check_stopped()
        return "%s; peak RSS %d MiB; %d GETs sent" % (
            cut.split("gateway: ", 1)[-1], peak // 1024, sent[0])


class Peak:
    """The peak RSS of some processes, sampled every 20 ms, in KiB."""

    def __init__(self, pids):
        self.pids = pids
        self.peak = {p: 0 for p in pids}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_kib(p))
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def test_bounds_across_clients():
    """One command with 1,048,575 keys is refused with an error and the
    connection goes on. 50 clients each send EXISTS with 65,536 keys while
    the shards are stopped: the keys in flight across clients are bounded
    (131,072 by default), every client is answered once the shards go on,
    and the gateway stays small (1.7 GiB without the bound). Four clients
    each leave a SET of a 100 MiB value unfinished after 24 MiB, with
    --max-query-bytes 64 MiB: those holding the most are disconnected, and
    the gateway grows by about the limit."""
    bound = ("--max-keys-in-flight", "8192") if SLOW else ()
    # Under ThreadSanitizer each 256 KiB read of a value that the session
    # copies is a (suppressed) report it takes seconds to make: less data.
    query_limit, held_mib = (8 << 20, 3) if SLOW else (64 << 20, 24)
    with Cluster("--timeout-ms", "60000", "--max-query-bytes",
                 str(query_limit), *bound) as c:
        gw = c.pid("gateway")
        shards = [c.pid("shard %d" % i) for i in range(SHARDS)]
        base = rss_kib(gw)
        cl = Client(c.port, timeout=60 * T)
        # One key over the limit is enough under the sanitizers, where
        # parsing a million keys takes minutes.
        many = 65537 if SLOW else 1048575
        r = cl.call("EXISTS", *("big-%d" % i for i in range(many)))
        check(isinstance(r, RuntimeError) and "too many arguments" in str(r),
              "EXISTS with %d keys: %r" % (many, r))
        check(cl.call("PING") == "PONG", "PING after the refusal")
        one = rss_kib(gw) - base
        check(one < 96 * 1024 * T, "the refused command grew the gateway by "
              "%d MiB" % (one // 1024))
        peak = Peak([gw] + shards)
        for p in shards:
            os.kill(p, signal.SIGSTOP)
        clients = []
        # Under the sanitizers the shards take minutes for 3.3 million
        # keys, and their links time out meanwhile: fewer and smaller
        # commands against a smaller bound (--max-keys-in-flight below).
        conns, keys = (10, 4096) if SLOW else (50, 65536)
        try:
            senders = []
            for n in range(conns):
                x = Client(c.port, timeout=120 * T)
                cmd = ["EXISTS"] + ["key-%d-%d" % (n, i) for i in range(keys)]
                t = threading.Thread(target=x.send, args=(cmd,), daemon=True)
                t.start()
                senders.append(t)
                clients.append(x)
            time.sleep(2)
        finally:
            for p in shards:
                os.kill(p, signal.SIGCONT)
        answers = [x.reply() for x in clients]
        for t in senders:
            t.join(60 * T)
        peaks = peak.stop()
        for x in clients:
            x.close()
        check(answers == [0] * conns,
              "answers: %s" % sorted(set(map(repr, answers))))
        gw_peak = peaks[gw] // 1024
        shard_peak = max(peaks[p] for p in shards) // 1024
        if not SLOW:
            check(gw_peak < 512, "gateway peak RSS %d MiB with 50 clients of "
                  "65,536 keys each" % gw_peak)
        # Unfinished values, over the query bytes all clients may hold.
        base = rss_kib(gw)
        peak = Peak([gw])
        holders = []
        for n in range(4):
            x = Client(c.port, timeout=60 * T)
            x.sock.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n$%d\r\n"
                           % (100 << 20))
            chunk = b"v" * (1 << 20)
            try:
                for _ in range(held_mib):
                    x.sock.sendall(chunk)
            except OSError:
                pass  # disconnected meanwhile
            holders.append(x)
            time.sleep(0.2)
        # Cut ones get their answer once the gateway has read enough of the
        # values (under the sanitizers that takes a while); the others wait
        # for the rest of theirs.
        cut = 0
        pending = list(holders)
        deadline = time.monotonic() + 30 * T
        while pending and (cut == 0 or time.monotonic() < deadline - 28 * T) \
                and time.monotonic() < deadline:
            for x in list(pending):
                x.sock.settimeout(0.5)
                try:
                    r = x.reply()
                    check(isinstance(r, RuntimeError)
                          and "query buffer limit of all clients" in str(r),
                          "a holder got %r" % (r,))
                    cut += 1
                    pending.remove(x)
                except socket.timeout:
                    pass
                except (EOFError, OSError):
                    cut += 1
                    pending.remove(x)
        growth = (peak.stop()[gw] - base) // 1024
        check(1 <= cut <= 3, "%d of 4 holders were disconnected" % cut)
        other = Client(c.port, timeout=30 * T)
        check(other.call("PING") == "PONG", "PING beside the holders")
        other.close()
        for x in holders:
            x.close()
        if not SLOW:
            check(growth < 128, "the gateway grew by %d MiB with 96 MiB of "
                  "unfinished values against a 64 MiB limit" % growth)
        with c.cond:
            said = [ln for ln in c.lines if "the most of all clients" in ln]
        check(said, "no log line for the disconnection")
        c.check_stopped()
    return "%d keys refused (+%d MiB); %d x %d keys: gateway " \
        "peak %d MiB, shards %d MiB, all answered; %d of 4 unfinished " \
        "values cut, gateway +%d MiB" % (many, one // 1024, conns, keys,
                                        gw_peak, shard_peak, cut, growth)


def test_requirepass_auth_and_info():
    """--requirepass-file: every command but AUTH, HELLO and QUIT answers
    NOAUTH until AUTH (or HELLO 2 AUTH) gives the password, with Redis's
    error texts; redis-cli -a works. INFO shows the shards, their links and
    keys, the clients, and a keyspace total equal to DBSIZE."""
    d = tempfile.mkdtemp(prefix="tact-kv-pass-")
    try:
        path = os.path.join(d, "pass")
        with open(path, "w") as f:
            f.write("s3cret pass\n")
        os.chmod(path, 0o600)
        with Cluster("--requirepass-file", path) as c:
            cl = Client(c.port)
            r = cl.call("GET", "x")
            check(isinstance(r, Exception)
                  and str(r) == "NOAUTH Authentication required.",
                  "GET before AUTH: %r" % (r,))
            r = cl.call("AUTH", "wrong")
            check(isinstance(r, Exception) and str(r).startswith("WRONGPASS"),
                  "AUTH wrong: %r" % (r,))
            check(cl.call("AUTH", "s3cret pass") == "OK", "AUTH")
            check(cl.call("SET", "x", "1") == "OK", "SET after AUTH")
            check(cl.call("AUTH", "default", "s3cret pass") == "OK",
                  "AUTH default")
            r = cl.call("HELLO", "3")
            check(isinstance(r, Exception) and str(r).startswith("NOPROTO"),
                  "HELLO 3: %r" % (r,))
            cl.close()
            cl = Client(c.port)
            r = cl.call("HELLO", "2", "AUTH", "default", "s3cret pass")
            check(isinstance(r, list) and b"server" in r, "HELLO: %r" % (r,))
            check(cl.call("GET", "x") == b"1", "GET after HELLO AUTH")
            cl.close()
            out = subprocess.run([ARGS.redis_cli, "-p", str(c.port), "GET",
                                  "x"], capture_output=True, text=True,
                                 timeout=10)
            check("NOAUTH" in out.stdout + out.stderr,
                  "redis-cli without -a: %r" % out.stdout)
            base = [ARGS.redis_cli, "-p", str(c.port), "-a", "s3cret pass",
                    "--no-auth-warning"]
            for i in range(10):
                subprocess.run(base + ["SET", "k%d" % i, "v"], check=True,
                               capture_output=True, timeout=10)
            dbsize = int(subprocess.run(base + ["DBSIZE"], capture_output=True,
                                        text=True, timeout=10).stdout)
            info = subprocess.run(base + ["INFO"], capture_output=True,
                                  text=True, timeout=10).stdout
            check("shards:%d" % SHARDS in info, "INFO: %r" % info)
            for i in range(SHARDS):
                check(re.search(r"shard%d:link=up,address=\S+,keys=\d+" % i,
                                info), "INFO shard %d: %r" % (i, info))
            check(re.search(r"connected_clients:[1-9]", info), "clients")
            check("db0:keys=%d" % dbsize in info,
                  "keyspace vs DBSIZE %d: %r" % (dbsize, info))
            c.check_stopped()
        return "DBSIZE %d, INFO agrees" % dbsize
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sigkill_of_every_node_loses_nothing():
    """With --fsync always, four clients write (fresh keys, a counter
    each) while the launcher and every node get SIGKILL at once; a new
    launcher on the same data directory must serve every acknowledged
    write (the logs are all there is: every copy of every key died)."""
    data = tempfile.mkdtemp(prefix="tact-kv-data-")
    try:
        c = Cluster("--fsync", "always", data_dir=data, session=True)
        try:
            writers = Writers(c.port, prefix="all", killed=True)
            time.sleep(2.0 * T)
            before = len(writers.acked)
            c.kill_all()
        finally:
            writers.stop()
            c.stop()
        check(not writers.errors and not writers.refused,
              "client errors before the kill: %s"
              % (writers.errors + writers.refused)[:5])
        check(before >= 20, "only %d writes acknowledged in 2 s" % before)
        sizes = sorted(os.path.getsize(f)
                       for f in glob.glob(os.path.join(data, "*.aof")))
        c = Cluster("--fsync", "always", data_dir=data)
        try:
            replayed = [c.wait_for(r"^\[shard %d\] shard %d: replayed" % (i, i))
                        for i in range(SHARDS)]
            cl = Client(c.port, timeout=30 * T)
            writers.check_read_back(cl, " after the restart")
            cl.close()
            c.check_stopped()
        finally:
            c.stop()
        return "%d SETs and %d INCRs acknowledged before SIGKILL of all %d " \
            "processes; all read back from the logs (%s bytes); e.g. %s" % (
                len(writers.acked),
                sum(v[0] for v in writers.incrs.values()), SHARDS + 2,
                "/".join(str(x) for x in sizes),
                replayed[0].split("] ", 1)[1])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_log_rewrite_and_torn_tail():
    """One key overwritten until its shard's log passes 1 MiB and twice the
    live data: the log is rewritten. Then the cluster stops, a torn record
    is appended to a log (as a crash mid-write leaves it), and the cluster
    starts again on the same directory: the shard cuts the torn tail and
    every key reads back. Last, a byte of another log's first record is
    flipped: that shard keeps the log aside, cuts it, and gets its keys
    back from its neighbours."""
    data = tempfile.mkdtemp(prefix="tact-kv-data-")
    try:
        hot = key_on(0, "rw")
        with Cluster(data_dir=data) as c:
            cl = Client(c.port, timeout=30 * T)
            for i in range(100):
                check(cl.call("SET", "keep-%d" % i, str(i)) == "OK", "SET")
            value = "y" * 1000
            for i in range(3000):
                cl.send(("SET", hot, "%d:%s" % (i, value)))
                if i % 100 == 99:
                    for _ in range(100):
                        check(cl.reply() == "OK", "SET %s" % hot)
            rewrite = c.wait_for(r"^\[shard 0\] shard 0: log rewritten")
            cl.close()
            c.check_stopped()
        m = re.search(r"from (\d+) to (\d+) bytes", rewrite)
        check(int(m.group(2)) < 64 * 1024,
              "the rewrite kept %s bytes for about 100 KiB of live data"
              % m.group(2))
        # 3 MB were written to it; what stays is under the 1 MiB at which
        # a rewrite is due, plus the last batch.
        path = os.path.join(data, "shard-0.aof")
        size = os.path.getsize(path)
        check(size < (1 << 20) + 200 * 1024, "shard 0's log is %d bytes "
              "after 3 MB of writes" % size)
        with open(path, "ab") as f:
            f.write(b"\x40\x00\x00\x00" + b"\x01" * 20)
        with Cluster(data_dir=data) as c:
            note = c.wait_for(r"^\[shard 0\] shard 0: log .*: cut a torn")
            cl = Client(c.port, timeout=30 * T)
            for i in range(100):
                check(cl.call("GET", "keep-%d" % i) == str(i).encode(),
                      "GET keep-%d after the restart" % i)
            r = cl.call("GET", hot)
            check(r == ("2999:" + value).encode(), "GET %s: %r" % (hot, r))
            cl.close()
            c.check_stopped()
        # A flipped byte in the first record of shard 1's log: not a torn
        # tail. The log is kept aside, cut there, and the neighbours give
        # back what followed.
        path = os.path.join(data, "shard-1.aof")
        with open(path, "r+b") as f:
            f.seek(len(b"kv_cluster aof 1\n") + 8 + 12 + 5)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        with Cluster(data_dir=data) as c:
            damaged = c.wait_for(r"^\[shard 1\] shard 1: log .*: a damaged "
                                 r"record at byte 25 after 0 records")
            check(os.path.exists(path + ".damaged"), "no copy of the "
                  "damaged log")
            cl = Client(c.port, timeout=30 * T)
            for i in range(100):
                check(cl.call("GET", "keep-%d" % i) == str(i).encode(),
                      "GET keep-%d after the damage" % i)
            cl.close()
            c.check_stopped()
        return "%s; %s; %s" % (rewrite.split("] ", 1)[1],
                               note.split(": ", 2)[2],
                               damaged.split(": ", 2)[2].split(":")[0])
    finally:
        shutil.rmtree(data, ignore_errors=True)


def gone_within(pids, seconds):
    """Seconds until every one of `pids` has ended (reaped or a zombie),
    or None after `seconds`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        alive = 0
        for pid in pids:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    alive += f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                pass
        if not alive:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def test_nodes_exit_promptly():
    """A shard ends soon after SIGTERM, also after it was stopped for 13 s
    (it once hung for good in its runtime's shutdown then); every node
    ends soon after its launcher is killed."""
    figures = []
    with Cluster(session=True) as c:
        check(cli(c, "SET", "a", "1") == "OK\n", "SET")
        pid = c.pid("shard 0")
        os.kill(pid, signal.SIGTERM)
        took = gone_within([pid], 5 * T)
        check(took is not None, "shard 0 still runs 5 s after SIGTERM")
        figures.append("SIGTERM %.0f ms" % (took * 1000))
        c.wait_for(r"^\[shard 0\] shard 0 serving", count=2)
        pid = c.pid("shard 1")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(13)
        os.kill(pid, signal.SIGCONT)
        # Its links timed out meanwhile: it sees them go, links again.
        c.wait_for(r"^\[shard 1\] .*(lost the directory|rejoined)",
                   timeout=10)
        time.sleep(1)
        os.kill(pid, signal.SIGTERM)
        took = gone_within([pid], 5 * T)
        check(took is not None, "shard 1, stopped for 13 s, still runs 5 s "
              "after SIGTERM")
        figures.append("after a 13 s stop %.0f ms" % (took * 1000))
        c.wait_for(r"^\[shard 1\] shard 1 serving", count=2)
        time.sleep(0.5)
        nodes = [c.pid("shard %d" % i) for i in range(SHARDS)] + \
            [c.pid("gateway")]
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait()
        took = gone_within(nodes, 5 * T)
        check(took is not None, "nodes still run 5 s after their launcher "
              "was killed")
        figures.append("launcher killed: all %d nodes gone in %.0f ms"
                       % (len(nodes), took * 1000))
    return ", ".join(figures)


def test_launcher_blink_loses_nothing():
    """The launcher (the directory) stopped with SIGSTOP for 30 s, then
    SIGCONT: the nodes lose it (BASP's heartbeat gives up after 10 s) and
    keep serving reads and writes meanwhile; they rejoin it after; no node
    restarts and every key written before and during the stop reads back.
    (Every node exited and came back empty before.)"""
    with Cluster() as c:
        cl = Client(c.port, timeout=30 * T)
        for i in range(200):
            check(cl.call("SET", "before-%d" % i, str(i)) == "OK",
                  "SET before-%d" % i)
        starts = len(c.node_pids())
        os.kill(c.proc.pid, signal.SIGSTOP)
        during = 0
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                r = cl.call("SET", "during-%d" % during, str(during))
                check(r == "OK", "SET during the stop (%.0f s in): %r"
                      % (time.monotonic() - t0, r))
                r = cl.call("GET", "before-%d" % (during % 200))
                check(r == str(during % 200).encode(),
                      "GET during the stop: %r" % (r,))
                during += 1
                time.sleep(0.1)
        finally:
            os.kill(c.proc.pid, signal.SIGCONT)
        c.wait_for(r"gateway: rejoined the directory", timeout=30)
        for i in range(SHARDS):
            c.wait_for(r"shard %d registered again" % i, timeout=30)
        for i in range(200):
            check(cl.call("GET", "before-%d" % i) == str(i).encode(),
                  "GET before-%d after" % i)
        for i in range(during):
            check(cl.call("GET", "during-%d" % i) == str(i).encode(),
                  "GET during-%d after" % i)
        check(cl.call("SET", "after", "1") == "OK", "SET after")
        cl.close()
        check(len(c.node_pids()) == starts, "a node restarted")
        with c.cond:
            lost = sum(1 for ln in c.lines if "lost the directory" in ln)
        c.check_stopped()
        return "%d nodes lost the directory and rejoined; %d writes during " \
            "the stop, all read back" % (lost, during)


def tsan_reports_in_our_code():
    """TSan report files whose access or allocation stacks name tact's or
    kv_cluster's code. Where the threads were created does not count: every
    thread of a node is started from its main (a race inside CAF's
    serialization between two of CAF's own threads names
    `kv::run_launcher` only there)."""
    bad = []
    for path in glob.glob(os.path.join(TSAN_DIR, "tsan*")):
        with open(path, errors="replace") as f:
            text = f.read()
        for report in text.split("==================")[1:]:
            stacks = re.split(r"\n  Thread T\d+ ", report)[0]
            if re.search(r"\b(tact|kv)::", stacks):
                bad.append("%s:\n%s" % (path, report))
    return bad


def main():
    global ARGS, TSAN_DIR
    p = argparse.ArgumentParser()
    p.add_argument("--cluster", required=True)
    p.add_argument("--redis-cli", default=shutil.which("redis-cli"))
    p.add_argument("--only", help="run only the tests whose name has this")
    ARGS = p.parse_args()
    if not ARGS.redis_cli:
        print("FAIL setup: redis-cli is missing (Debian package redis-tools)")
        return 1
    TSAN_DIR = tempfile.mkdtemp(prefix="tact-kv-tsan-")
    tests = [test_redis_cli_commands, test_redis_benchmark,
             test_pipelining_keeps_order,
             test_sigkill_loses_no_acknowledged_write,
             test_unreachable_node_gives_an_error,
             test_gateway_restart_and_clean_stop,
             test_strangers_get_no_actor, test_certificate_proves_the_shard,
             test_no_cleartext_between_nodes,
             test_basp_bomb_costs_nothing,
             test_client_that_never_reads_is_cut_off,
             test_bounds_across_clients,
             test_requirepass_auth_and_info,
             test_launcher_blink_loses_nothing, test_nodes_exit_promptly,
             test_sigkill_of_every_node_loses_nothing,
             test_log_rewrite_and_torn_tail]
    if ARGS.only:
        tests = [t for t in tests if ARGS.only in t.__name__]
    passed = failed = 0
    try:
        for test in tests:
            t0 = time.monotonic()
            try:
                note = test()
                passed += 1
                print("PASS %s (%.1f s)%s" % (test.__name__,
                                              time.monotonic() - t0,
                                              ": " + note if note else ""),
                      flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure
                failed += 1
                detail = str(e) if isinstance(e, Fail) else \
                    traceback.format_exc()
                print("FAIL %s: %s" % (test.__name__, detail), flush=True)
        reports = len(glob.glob(os.path.join(TSAN_DIR, "tsan*")))
        if reports:
            ours = tsan_reports_in_our_code()
            print("TSan: %d report file(s) from the nodes, %d naming tact or "
                  "kv_cluster code" % (reports, len(ours)))
            for r in ours:
                print(r)
            if ours:
                failed += 1
    finally:
        shutil.rmtree(TSAN_DIR, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
