"""tact's relay beside haproxy, in one run; writes its section of
docs/performance.md. Started by tests/bench/relay_bench.sh, which installs
and builds first.

Both relays forward to the same plain epoll echo server (tests/bench/
epoll_echo.c). The relay under test runs pinned to core 0; the echo
server and the load client share core 1. haproxy runs with `nbthread 1`
in `mode tcp`. Two workloads, the relays taking turns within each
repetition:
- churn: 50 slots, each connecting, sending 1 KiB, reading it back and
  closing, again and again (tests/bench/churn_load.cpp): the relay's CPU
  time per relayed connection;
- steady: 100 kept connections, 1 KiB requests (tests/bench/echo_load.cpp):
  the relay's CPU time per request.
CPU time is the relay process's user + system time over the measured
window, from /proc (schedstat). The report gives medians, min-max and the
ratio tact / haproxy.
"""

import argparse
import datetime
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
BEGIN = "<!-- relay_bench.py: begin -->"
END = "<!-- relay_bench.py: end -->"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("a server exited early (%d)" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("nothing listens on %d" % port)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def haproxy_argv(port, backend, workdir):
    """haproxy relaying 127.0.0.1:port to backend: one thread, TCP mode."""
    cfg = os.path.join(workdir, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write("global\n  nbthread 1\n  maxconn 8000\n"
                "defaults\n  mode tcp\n  timeout connect 5s\n"
                "  timeout client 60s\n  timeout server 60s\n"
                "frontend relay\n  bind 127.0.0.1:%d\n"
                "  default_backend echo\n"
                "backend echo\n  server echo 127.0.0.1:%d\n"
                % (port, backend))
    return ["haproxy", "-db", "-f", cfg]


def start_relay(name, build, backend, workdir):
    port = free_port()
    if name == "tact":
        argv = [os.path.join(build, "examples", "relay"),
                "tcp://127.0.0.1:%d" % port, "tcp://127.0.0.1:%d" % backend]
    else:
        argv = haproxy_argv(port, backend, workdir)
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port


def run_client(argv):
    out = subprocess.run(["taskset", "-c", "1"] + argv, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        sys.exit("client failed: %s %s" % (out.stdout, out.stderr))
    fields = dict(kv.split("=", 1) for kv in out.stdout.split()
                  if "=" in kv)
    return fields


def measure(name, build, backend, workdir, workload, duration):
    proc, port = start_relay(name, build, backend, workdir)
    try:
        url = "tcp://127.0.0.1:%d" % port
        if workload == "churn":
            f = run_client([os.path.join(build, "tests", "bench",
                                         "churn_load"),
                            "--url", url, "--conns", "50", "--size", "1024",
                            "--warmup", "1", "--duration", str(duration),
                            "--server-pid", str(proc.pid)])
            return float(f["cpu_us_per_conn"]), float(f["cps"])
        f = run_client([os.path.join(build, "tests", "bench", "echo_load"),
                        "--url", url, "--conns", "100", "--size", "1024",
                        "--warmup", "1", "--duration", str(duration),
                        "--server-pid", str(proc.pid)])
        return float(f["cpu_us_per_req"]), float(f["rps"])
    finally:
        stop(proc)


def section(results, reps, duration):
    lines = [BEGIN, "",
             "## The relay beside haproxy",
             "",
             "`tests/bench/relay_bench.sh`, %s, %s; %d repetitions of %g s "
             "per workload, the relays taking turns. The relay under test on "
             "core 0; the echo server behind it and the load client on "
             "core 1. haproxy %s with `nbthread 1`, `mode tcp`."
             % (datetime.date.today().isoformat(), platform.machine(), reps,
                duration, haproxy_version()),
             "",
             "| workload | relay | CPU per unit, µs (median, min-max) "
             "| rate (median) |",
             "|---|---|---|---|"]
    for workload, unit in (("churn", "connection/s"), ("steady", "request/s")):
        for name in ("tact", "haproxy"):
            cpu = [r[0] for r in results[workload][name]]
            rate = [r[1] for r in results[workload][name]]
            lines.append("| %s | %s | %.1f (%.1f-%.1f) | %.0f %s |" % (
                workload, name, statistics.median(cpu), min(cpu), max(cpu),
                statistics.median(rate), unit))
    lines.append("")
    for workload, what in (("churn", "per relayed connection"),
                           ("steady", "per 1 KiB request")):
        t = statistics.median(r[0] for r in results[workload]["tact"])
        h = statistics.median(r[0] for r in results[workload]["haproxy"])
        lines.append("- %s: tact's CPU %s is %.2f× haproxy's."
                     % (workload, what, t / h))
    lines += ["", "churn: 50 slots, each connecting, sending 1 KiB, reading "
              "it back and closing (`churn_load`); steady: 100 kept "
              "connections, one 1 KiB request in flight on each "
              "(`echo_load`). CPU is the relay process's user + system time "
              "over the measured window.", "", END]
    return "\n".join(lines)


def haproxy_version():
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", out.stdout)
    return m.group(1) if m else "?"


def write_report(text, path):
    replace_section(path, BEGIN, END, text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build-bench")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                 "performance.md"))
    opts = p.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy is not installed (relay_bench.sh installs it)")
    workdir = tempfile.mkdtemp(prefix="tact-relay-bench-")
    backend_port = free_port()
    backend = subprocess.Popen(
        ["taskset", "-c", "1",
         os.path.join(opts.build, "tests", "bench", "epoll_echo"),
         "tcp://127.0.0.1:%d" % backend_port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {w: {"tact": [], "haproxy": []} for w in ("churn", "steady")}
    try:
        wait_port(backend_port, backend)
        for rep in range(opts.reps):
            for workload in ("churn", "steady"):
                order = ("tact", "haproxy") if rep % 2 == 0 else ("haproxy",
                                                                  "tact")
                for name in order:
                    r = measure(name, opts.build, backend_port, workdir,
                                workload, opts.duration)
                    results[workload][name].append(r)
                    print("rep %d %s %s: %.1f µs CPU, %.0f/s"
                          % (rep + 1, workload, name, r[0], r[1]),
                          flush=True)
    finally:
        stop(backend)
        shutil.rmtree(workdir, ignore_errors=True)
    write_report(section(results, opts.reps, opts.duration), opts.out)


if __name__ == "__main__":
    main()
