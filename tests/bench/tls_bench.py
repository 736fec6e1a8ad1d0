"""TLS echo side by side, in one run: tact's echo_server over TLS, haproxy
terminating TLS in front of the plain epoll echo server, and the floor, an
echo server on epoll and OpenSSL alone (tests/bench/tls_epoll_echo.c).
Writes its section of docs/performance.md and its plot,
docs/performance-tls.png. Started by
tests/bench/tls_bench.sh, which installs and builds first.

Each server runs pinned to core 0, the load client (tests/bench/tls_load.cpp)
on core 1 (with haproxy's backend). One ECDSA P-256 certificate, made for
the run. Workloads, the servers taking turns within each repetition:
- steady-1k: 100 kept connections, 1 KiB requests: CPU per request;
- steady-16k: 100 kept connections, 16 KiB requests: CPU per request;
- bulk: one connection, 256 KiB requests: MiB/s each way;
- handshake: 50 slots, a new connection with a full handshake per 1 KiB
  message: CPU per connection;
- resumed: as handshake, each connection resuming its slot's last session.
CPU time is the server process's user + system time over the measured
window, from /proc. The report gives medians, min-max and ratios.
"""

import argparse
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay_bench import free_port, haproxy_version, wait_port  # noqa: E402
from report_section import replace_section  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "<!-- tls_bench.py: begin -->"
END = "<!-- tls_bench.py: end -->"

# name: (tls_load mode, connections, message size, reported unit)
WORKLOADS = {
    "steady-1k": ("steady", 100, 1024, "request"),
    "steady-16k": ("steady", 100, 16384, "request"),
    "bulk": ("steady", 1, 262144, "MiB/s"),
    "handshake": ("churn", 50, 1024, "connection"),
    "resumed": ("resume", 50, 1024, "connection"),
}
SERVERS = ("tact", "haproxy", "floor")
PLOT = "performance-tls.png"


def make_certificate(workdir):
    cert = os.path.join(workdir, "server.pem")
    key = os.path.join(workdir, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    combined = os.path.join(workdir, "combined.pem")
    with open(combined, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, combined


def server_argv(name, build, port, backend, workdir, cert, key, combined):
    if name == "tact":
        return [os.path.join(build, "examples", "echo_server"),
                "tls://127.0.0.1:%d?cert=%s&key=%s" % (port, cert, key)]
    if name == "floor":
        return [os.path.join(build, "tests", "bench", "tls_epoll_echo"),
                "tcp://127.0.0.1:%d" % port, cert, key]
    cfg = os.path.join(workdir, "haproxy-tls.cfg")
    with open(cfg, "w") as f:
        f.write("global\n  nbthread 1\n  maxconn 8000\n"
                "defaults\n  mode tcp\n  timeout connect 5s\n"
                "  timeout client 60s\n  timeout server 60s\n"
                "frontend tls\n  bind 127.0.0.1:%d ssl crt %s\n"
                "  default_backend echo\n"
                "backend echo\n  server echo 127.0.0.1:%d\n"
                % (port, combined, backend))
    return ["haproxy", "-db", "-f", cfg]


def measure(name, workload, opts, backend, workdir, files):
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0"] + server_argv(name, opts.build, port, backend,
                                             workdir, *files),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        mode, conns, size, unit = WORKLOADS[workload]
        out = subprocess.run(
            ["taskset", "-c", "1",
             os.path.join(opts.build, "tests", "bench", "tls_load"),
             "--url", "tcp://127.0.0.1:%d" % port, "--mode", mode,
             "--conns", str(conns), "--size", str(size), "--warmup", "1",
             "--duration", str(opts.duration), "--server-pid", str(proc.pid)],
            capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            sys.exit("%s %s: %s %s" % (name, workload, out.stdout,
                                       out.stderr))
        f = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
        if unit == "MiB/s":
            return float(f["mib_per_s"]), float(f["cpu_us_per_req"])
        if unit == "request":
            return float(f["cpu_us_per_req"]), float(f["rps"])
        return float(f["cpu_us_per_conn"]), float(f["cps"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1 if name == "haproxy"
                             else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def section(results, reps, duration):
    lines = [BEGIN, "",
             "## TLS beside haproxy and the OpenSSL floor",
             "",
             "`tests/bench/tls_bench.sh`, %s, %s; %d repetitions of %g s per "
             "workload, the servers taking turns. Each server on core 0, the "
             "load client (`tls_load`) and haproxy's plain backend (the epoll "
             "echo server) on core 1; an ECDSA P-256 certificate; %s. "
             "tact: `echo_server tls://`; haproxy %s: `nbthread 1`, `mode "
             "tcp`, `bind ... ssl` in front of the epoll echo server; floor: "
             "`tls_epoll_echo`, epoll and OpenSSL alone."
             % (datetime.date.today().isoformat(), platform.machine(), reps,
                duration, openssl_version(), haproxy_version()),
             "",
             "![TLS: CPU per request and per connection, bulk throughput]"
             "(%s)" % PLOT,
             "",
             "| workload | server | median (min-max) | rate (median) |",
             "|---|---|---|---|"]
    for workload, (_, conns, size, unit) in WORKLOADS.items():
        for name in SERVERS:
            vals = [r[0] for r in results[workload][name]]
            rates = [r[1] for r in results[workload][name]]
            if unit == "MiB/s":
                lines.append("| %s | %s | %.0f MiB/s (%.0f-%.0f) | %.0f µs "
                             "CPU per 256 KiB |" % (
                                 workload, name, statistics.median(vals),
                                 min(vals), max(vals),
                                 statistics.median(rates)))
            else:
                lines.append("| %s | %s | %.1f µs CPU per %s (%.1f-%.1f) | "
                             "%.0f %s/s |" % (
                                 workload, name, statistics.median(vals),
                                 unit, min(vals), max(vals),
                                 statistics.median(rates), unit))
    lines.append("")
    for workload, (_, _, _, unit) in WORKLOADS.items():
        t = statistics.median(r[0] for r in results[workload]["tact"])
        h = statistics.median(r[0] for r in results[workload]["haproxy"])
        f = statistics.median(r[0] for r in results[workload]["floor"])
        if unit == "MiB/s":
            lines.append("- %s: tact moves %.2f× the floor's bytes per second "
                         "(haproxy %.2f×)." % (workload, t / f, h / f))
        else:
            lines.append("- %s: tact's CPU per %s is %.2f× haproxy's and "
                         "%.2f× the floor's." % (workload, unit, t / h, t / f))
    lines += ["", "haproxy relays each connection to its backend, which the "
              "other two do not: its figures include that hop.", "", END]
    return "\n".join(lines)


def write_plot(results, path):
    """Three panels: CPU per request, CPU per connection, bulk MiB/s; bars
    are medians, whiskers min-max."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("server CPU µs per request (lower is better)",
               ["steady-1k", "steady-16k"]),
              ("server CPU µs per connection (lower is better)",
               ["handshake", "resumed"]),
              ("MiB/s on one connection (higher is better)", ["bulk"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.2),
                             gridspec_kw={"width_ratios": [2, 2, 1]})
    width = 0.8 / len(SERVERS)
    for ax, (label, workloads) in zip(axes, panels):
        for i, name in enumerate(SERVERS):
            meds, los, his = [], [], []
            for w in workloads:
                vals = [r[0] for r in results[w][name]]
                m = statistics.median(vals)
                meds.append(m)
                los.append(m - min(vals))
                his.append(max(vals) - m)
            xs = [j + (i - (len(SERVERS) - 1) / 2) * width
                  for j in range(len(workloads))]
            ax.bar(xs, meds, width, yerr=[los, his], capsize=2, label=name)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("TLS echo: tact, haproxy in front of the epoll echo server, "
                 "and the epoll + OpenSSL floor (median, min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("wrote", path)


def openssl_version():
    out = subprocess.run(["openssl", "version"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "OpenSSL"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build-bench")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                 "performance.md"))
    opts = p.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy is not installed (tls_bench.sh installs it)")
    workdir = tempfile.mkdtemp(prefix="tact-tls-bench-")
    backend_port = free_port()
    backend = subprocess.Popen(
        ["taskset", "-c", "1",
         os.path.join(opts.build, "tests", "bench", "epoll_echo"),
         "tcp://127.0.0.1:%d" % backend_port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {w: {n: [] for n in SERVERS} for w in WORKLOADS}
    try:
        files = make_certificate(workdir)
        wait_port(backend_port, backend)
        for rep in range(opts.reps):
            for workload in WORKLOADS:
                order = SERVERS[rep % 3:] + SERVERS[:rep % 3]
                for name in order:
                    r = measure(name, workload, opts, backend_port, workdir,
                                files)
                    results[workload][name].append(r)
                    print("rep %d %s %s: %.1f, %.0f" % (rep + 1, workload,
                                                        name, r[0], r[1]),
                          flush=True)
    finally:
        if backend.poll() is None:
            backend.kill()
            backend.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    replace_section(opts.out, BEGIN, END,
                    section(results, opts.reps, opts.duration))
    write_plot(results, os.path.join(os.path.dirname(os.path.abspath(
        opts.out)), PLOT))


if __name__ == "__main__":
    main()
