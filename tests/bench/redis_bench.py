"""redis-benchmark against kv_cluster's gateway and against redis-server, in
one run, with the same clients; writes its section of docs/performance.md.
Started by tests/bench/redis_bench.sh, which installs and builds first.

The servers (redis-server; the launcher, gateway and three shards of
kv_cluster) run pinned to core 0 and redis-benchmark to core 1. Within a
repetition the two servers take turns on each workload; the report gives
the median and the min-max over the repetitions, and the servers' CPU time
per request (user + system, from /proc).
"""

import argparse
import csv
import datetime
import glob
import io
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from report_section import replace_section

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "<!-- redis_bench.py: begin -->"
END = "<!-- redis_bench.py: end -->"
TESTS = ["SET", "GET", "INCR"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def children(pid):
    """`pid` and its descendants (children of any of its threads)."""
    out = [pid]
    for task in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(task) as f:
                for c in f.read().split():
                    out += children(int(c))
        except OSError:
            pass
    return out


class RedisServer:
    """redis-server; `aof`: its append-only file, fsync everysec."""

    def __init__(self, aof=False):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-bench-")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
             "--appendonly", "yes" if aof else "no",
             "--appendfsync", "everysec",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.pids = [self.proc.pid]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """kv_cluster's launcher; `extra` goes on its command line."""

    def __init__(self, exe, extra=()):
        self.dir = tempfile.mkdtemp(prefix="kv-bench-")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", exe, "--shards", "3", "--port", "0",
             "--data-dir", self.dir, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            m = re.match(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            raise RuntimeError("kv_cluster did not start")
        # Every node is up once the gateway listens.
        self.pids = children(self.proc.pid)
        if len(self.pids) < 5:
            raise RuntimeError("kv_cluster has %d processes" % len(self.pids))
        # Keep reading its output so that the pipe never fills.
        import threading
        threading.Thread(target=lambda: [None for _ in self.proc.stdout],
                         daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench(server, test, pipeline, opts):
    argv = ["taskset", "-c", "1", "redis-benchmark", "-p", str(server.port),
            "-c", str(opts.clients), "-n", str(opts.requests),
            "-P", str(pipeline), "-r", "100000", "-t", test.lower(), "--csv"]
    cpu0 = cpu_seconds(server.pids)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    cpu1 = cpu_seconds(server.pids)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    if r.returncode != 0 or not rows:
        raise RuntimeError("redis-benchmark %s: %s %s"
                           % (argv, r.stdout, r.stderr))
    row = rows[0]
    return {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
            "p99": float(row["p99_latency_ms"]),
            "cpu_us": (cpu1 - cpu0) * 1e6 / opts.requests}


def fmt(values, digits=0):
    med = statistics.median(values)
    if len(values) == 1:
        return "%.*f" % (digits, med)
    return "%.*f (%.*f–%.*f)" % (digits, med, digits, min(values), digits,
                                 max(values))


def report(opts, results, names):
    lines = [BEGIN, "", "## kv_cluster against redis-server (redis-benchmark)",
             ""]
    lines.append(
        "`tests/bench/redis_bench.sh` runs `redis-benchmark -c %d -n %d -r "
        "100000` for each command, with no pipelining (`-P 1`) and with 16 "
        "commands in flight per connection (`-P 16`), against redis-server "
        "(without persistence, and with its append-only file synced every "
        "second) and against kv_cluster's gateway in front of three shard "
        "processes (every write copied to a second shard before it is "
        "acknowledged): as it runs by default (TLS 1.3 links between the "
        "nodes, each shard logging its writes with `--fsync everysec`), "
        "with `--fsync always`, without the log (`--appendonly no`), and "
        "with neither the log nor TLS (`--insecure --appendonly no`, how it "
        "ran before both). The servers are pinned to core 0 and "
        "redis-benchmark to core 1; %d repetitions, median and min–max. "
        "CPU is the user + system time of every server process per request."
        % (opts.clients, opts.requests, opts.reps))
    lines.append("")
    lines.append("Run on %s, %s, %d cores, Linux %s."
                 % (datetime.date.today().isoformat(), platform.processor()
                    or platform.machine(), os.cpu_count(), platform.release()))
    lines.append("")
    lines.append("| command | -P | server | requests/s | p50 ms | p99 ms | "
                 "server CPU µs/request |")
    lines.append("|---|---|---|---|---|---|---|")
    for test in TESTS:
        for pipeline in opts.pipelines:
            for n in names:
                rs = results[(n, test, pipeline)]
                lines.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                    test, pipeline, n, fmt([r["rps"] for r in rs]),
                    fmt([r["p50"] for r in rs], 3),
                    fmt([r["p99"] for r in rs], 3),
                    fmt([r["cpu_us"] for r in rs], 1)))
    lines.append("")
    lines.append(
        "What a kv_cluster request costs beyond redis-server's: two more "
        "hops on loopback (gateway to shard, and for writes shard to "
        "shard), each through CAF's BASP with its serialization and its "
        "middleman thread, and actor messages on both sides of each hop. "
        "redis-server answers from the thread that read the command. What "
        "the TLS links cost is the difference between the last two "
        "kv_cluster rows: an encryption and a decryption of each BASP "
        "message on each hop, on the middleman's thread. What the log costs "
        "is the difference between the default row and the one without "
        "it: a write(2) per batch of commands or copies on each of the two "
        "shards that hold the key, and an fdatasync a second from a thread "
        "of the log; with `--fsync always`, an fdatasync per batch on both "
        "shards before the answer. GET writes nothing to the log.")
    lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_report(text, path):
    replace_section(path, BEGIN, END, text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build-bench")
    p.add_argument("--requests", type=int, default=100000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pipelines", default="1,16")
    p.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                 "performance.md"))
    opts = p.parse_args()
    opts.pipelines = [int(x) for x in opts.pipelines.split(",")]
    exe = os.path.join(opts.build, "examples", "kv_cluster")
    # The anchors (redis-server with and without its AOF), the cluster as
    # it runs by default, with every write synced, without its log, and
    # without log and TLS (as it ran before both): the differences are
    # what each costs.
    makers = [RedisServer, lambda: RedisServer(aof=True),
              lambda: Cluster(exe),
              lambda: Cluster(exe, ["--fsync", "always"]),
              lambda: Cluster(exe, ["--appendonly", "no"]),
              lambda: Cluster(exe, ["--insecure", "--appendonly", "no"])]
    names = ["redis-server", "redis-server (AOF, fsync everysec)",
             "kv_cluster (TLS links, log fsync everysec: default)",
             "kv_cluster (TLS links, log fsync always)",
             "kv_cluster (TLS links, no log)",
             "kv_cluster (plain links, no log)"]
    results = {}
    for rep in range(opts.reps):
        for make, name in zip(makers, names):
            server = make()
            try:
                for test in TESTS:
                    for pipeline in opts.pipelines:
                        r = bench(server, test, pipeline, opts)
                        results.setdefault((name, test, pipeline), []).append(r)
                        print("rep %d %-22s %-4s -P %-2d %9.0f req/s  p50 "
                              "%.3f ms  %.1f µs CPU/req" % (
                                  rep + 1, name, test, pipeline, r["rps"],
                                  r["p50"], r["cpu_us"]), flush=True)
            finally:
                server.stop()
    write_report(report(opts, results, names), opts.out)


if __name__ == "__main__":
    sys.exit(main())
