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
import socket
import statistics
import subprocess
import sys
import time

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
    name = "redis-server"

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
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


class Cluster:
    """kv_cluster's launcher; `extra` goes on its command line."""

    def __init__(self, exe, extra=()):
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", exe, "--shards", "3", "--port", "0",
             *extra],
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
        "(no persistence) and against kv_cluster's gateway in front of "
        "three shard processes (every write copied to a second shard before "
        "it is acknowledged), once with its default TLS 1.3 links between "
        "the nodes and once with plain BASP links (`--insecure`, how it ran "
        "before its links were secured). The servers are pinned to core 0 and "
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
        "the TLS links cost is the difference between the two kv_cluster "
        "rows: an encryption and a decryption of each BASP message on each "
        "hop, on the middleman's thread.")
    lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_report(text, path):
    try:
        with open(path) as f:
            doc = f.read()
    except OSError:
        doc = "# tact performance\n"
    start, end = doc.find(BEGIN), doc.find(END)
    if start >= 0 and end > start:
        doc = doc[:start] + text + doc[end + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(doc)
    print("wrote", path)


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
    # The cluster as it runs by default (TLS 1.3 links between the nodes,
    # certificates both ways) and with plain BASP links (--insecure, as it
    # ran before): the difference is what TLS costs.
    makers = [RedisServer, lambda: Cluster(exe),
              lambda: Cluster(exe, ["--insecure"])]
    names = [RedisServer.name, "kv_cluster (3 shards, TLS links)",
             "kv_cluster (3 shards, plain links)"]
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
