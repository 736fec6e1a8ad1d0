"""Side-by-side echo benchmarks: tact's echo_server against a plain epoll
server in C, asyncio and uvloop, in one run. Writes docs/performance.md and
docs/performance.png. Started by tests/bench/run.sh, which builds first.

Every server runs pinned to core 0 and every client to core 1. Within a
repetition the servers take turns on each workload, so slow drift of the
machine hits them alike; the report gives the median and the min-max over
the repetitions.
"""

import argparse
import datetime
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"

SIZES = [64, 1024, 16384]
CONNS = [10, 100, 1000]


def servers(build):
    echo_py = os.path.join(ROOT, "tests", "bench", "asyncio_echo.py")
    return [
        ("tact", [os.path.join(build, "examples", "echo_server")]),
        ("tact behaviour",
         [os.path.join(build, "examples", "echo_behavior")]),
        ("epoll (C)", [os.path.join(build, "tests", "bench", "epoll_echo")]),
        ("uvloop", [PY, echo_py, "--uvloop"]),
        ("asyncio", [PY, echo_py]),
    ]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """One server process pinned to `cpus` (core 0 by default), from start
    to its `listening on` line."""

    def __init__(self, argv, cpus="0"):
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus] + argv + ["tcp://127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=raise_nofile)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on (\S+)", line)
        if not m:
            self.stop()
            raise RuntimeError("%s did not start: %r %s"
                               % (argv, line, self.proc.stderr.read()))
        self.url = m.group(1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def client(build, prog, args):
    """Runs a client on core 1; returns its key=value line as a dict."""
    out = subprocess.run(
        ["taskset", "-c", "1", os.path.join(build, "tests", "bench", prog)]
        + args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("%s %s failed: %s%s"
                           % (prog, args, out.stdout, out.stderr))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out.stdout)}


def perf_works():
    """Whether `perf stat` can count instructions and cycles here."""
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "instructions,cycles",
                              "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "not supported" not in out.stderr \
        and re.search(r"^\d+,,instructions", out.stderr, re.M) is not None


def load(build, args, pid, use_perf):
    """Runs echo_load on core 1; with `use_perf`, counts the server's
    instructions and cycles (user and kernel) during the measured window
    and adds them per request."""
    cl = subprocess.Popen(
        ["taskset", "-c", "1", os.path.join(build, "tests", "bench", "echo_load")]
        + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    perf = None
    lines = []
    for line in cl.stdout:
        if line.startswith("measuring") and use_perf:
            perf = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "instructions,cycles",
                 "-p", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elif line.startswith("measured") and perf is not None:
            perf.send_signal(signal.SIGINT)
        else:
            lines.append(line)
    err = cl.stderr.read()
    if cl.wait() != 0:
        raise RuntimeError("echo_load %s failed: %s%s" % (args, "".join(lines), err))
    r = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", "".join(lines))}
    if perf is not None:
        counts = perf.communicate(timeout=30)[1]
        for event in ("instructions", "cycles"):
            # value,unit,event,run time in ns,percentage,...
            m = re.search(r"^(\d+),[^,]*,%s[^,]*,(\d+)," % event, counts, re.M)
            if m and r.get("rps"):
                per_second = float(m.group(1)) / (float(m.group(2)) / 1e9)
                r[event + "_per_req"] = per_second / r["rps"]
    return r


def summary(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, digits=1):
    med, lo, hi = summary(values)
    return "%.*f (%.*f–%.*f)" % (digits, med, digits, lo, digits, hi)


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    uvloop = subprocess.run([PY, "-c", "import uvloop; print(uvloop.__version__)"],
                            capture_output=True, text=True).stdout.strip()
    pyver = subprocess.run([PY, "-c", "import sys; print(sys.version.split()[0])"],
                           capture_output=True, text=True).stdout.strip()
    gcc = subprocess.run(["g++", "-dumpfullversion"], capture_output=True,
                         text=True).stdout.strip()
    return ("%s, %d cores, %.0f GiB RAM; Linux %s; g++ %s (Release); "
            "Python %s, uvloop %s"
            % (model, os.cpu_count(), mem_kib / 2**20, platform.release(), gcc,
               pyver, uvloop))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true",
                    help="one repetition of 1.5 s per workload")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--baseline", metavar="BUILD",
                    help="also tact's echo_server from another build tree "
                         "(an older commit), named 'tact (baseline)'")
    ap.add_argument("--servers", metavar="NAMES",
                    help="only these servers (comma-separated names); the "
                         "figures are printed, no report is written (it "
                         "compares against uvloop and epoll)")
    opts = ap.parse_args()
    if (opts.baseline or opts.servers) and opts.out == os.path.join(ROOT,
                                                                    "docs"):
        opts.out = "/tmp"
    if opts.quick:
        opts.reps, opts.duration = 1, 1.5
    if opts.quick and opts.out == os.path.join(ROOT, "docs"):
        opts.out = "/tmp"
    build = os.path.abspath(opts.build)
    srv = servers(build)
    if opts.baseline:
        srv.insert(1, ("tact (baseline)",
                       [os.path.join(os.path.abspath(opts.baseline),
                                     "examples", "echo_server")]))
    if opts.servers:
        wanted = opts.servers.split(",")
        srv = [x for x in srv if x[0] in wanted or
               (opts.baseline and x[0] == "tact (baseline)")]
    names = [n for n, _ in srv]
    use_perf = perf_works()
    started = time.time()

    # echo[(name, size, conns)] = list of result dicts, one per repetition
    echo = {}
    bulk = {}
    idle = {}
    for rep in range(opts.reps):
        for size in SIZES:
            for conns in CONNS:
                for name, argv in srv:
                    with Server(argv) as s:
                        r = load(build,
                                 ["--url", s.url, "--conns", str(conns),
                                  "--size", str(size), "--warmup", "1",
                                  "--duration", str(opts.duration),
                                  "--server-pid", str(s.proc.pid)],
                                 s.proc.pid, use_perf)
                    echo.setdefault((name, size, conns), []).append(r)
                    print("rep %d %-14s %6d B x %4d: %8.0f req/s, %6.2f us CPU/req,"
                          " %6.0f instructions/req"
                          % (rep + 1, name, size, conns, r["rps"],
                             r["cpu_us_per_req"],
                             r.get("instructions_per_req", 0)), flush=True)
        for name, argv in srv:
            with Server(argv) as s:
                r = client(build, "echo_bulk",
                           ["--url", s.url, "--bytes", str(2 << 30),
                            "--server-pid", str(s.proc.pid)])
            bulk.setdefault(name, []).append(r)
            print("rep %d %-10s bulk: %.2f GB/s, %.3f s CPU/GB"
                  % (rep + 1, name, r["gbps"], r["cpu_s_per_gb"]), flush=True)
    # RSS is deterministic enough that one run per server tells.
    for name, argv in srv:
        with Server(argv) as s:
            r = client(build, "idle_conns",
                       ["--url", s.url, "--conns", "10000",
                        "--server-pid", str(s.proc.pid)])
        idle[name] = r
        print("%-10s idle: %.0f bytes/connection" % (name, r["bytes_per_conn"]),
              flush=True)

    minutes = (time.time() - started) / 60
    if opts.servers:
        return
    write_report(opts, names, echo, bulk, idle, minutes, use_perf)
    write_plot(opts, names, echo)


def cpu(echo, name, size, conns):
    return [r["cpu_us_per_req"] for r in echo[(name, size, conns)]]


def write_report(opts, names, echo, bulk, idle, minutes, use_perf):
    med = lambda xs: statistics.median(xs)
    lines = []
    add = lines.append
    add("# tact performance")
    add("")
    add("Reproduce (fresh Debian bookworm, as root; about 25 minutes):")
    add("")
    add("    ./tests/bench/run.sh")
    add("")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                            "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    add("Written by `tests/bench/run.py` on %s, from one run of %.0f minutes, "
        "at commit %s%s."
        % (datetime.date.today().isoformat(), minutes, commit or "unknown",
           " with local changes" if dirty else ""))
    add("")
    add("Machine: %s." % machine())
    add("")
    add("Method: every server runs alone, pinned to core 0 "
        "(`taskset -c 0`); the load client runs on core 1. "
        "`echo_load` keeps one request in flight per connection (closed loop), "
        "checks every echoed byte, warms up for 1 s and measures for %.1f s; "
        "server CPU is the sum of the server's threads' run time "
        "(`/proc/PID/task/*/schedstat`) over the measured interval, divided by "
        "the requests answered in it. %d repetitions, the servers taking turns "
        "on each workload; figures are medians with the min–max range in "
        "brackets. `tact` is `examples/echo_server` (a class protocol); "
        "`tact behaviour` is `examples/echo_behavior`, the same echo written "
        "as a CAF behaviour, whose every read and write is a message. "
        "The epoll server (`tests/bench/epoll_echo.c`) does one "
        "`read` and one `write` per request and nothing else: it is the floor."
        % (opts.duration, opts.reps))
    add("")
    add("![server CPU per request](performance.png)")
    add("")
    add("## Server CPU per request (µs), by message size and connections")
    add("")
    add("| size | conns | " + " | ".join(names)
        + " | tact / uvloop | tact / epoll |")
    add("|---|---|" + "---|" * (len(names) + 2))
    for size in SIZES:
        for conns in CONNS:
            row = [fmt(cpu(echo, n, size, conns), 2) for n in names]
            t = med(cpu(echo, "tact", size, conns))
            u = med(cpu(echo, "uvloop", size, conns))
            e = med(cpu(echo, "epoll (C)", size, conns))
            add("| %s | %d | %s | %.2f | %.2f |"
                % (size_name(size), conns, " | ".join(row), t / u, t / e))
    if use_perf:
        add("")
        add("## Server instructions and cycles per request, by message size "
            "and connections")
        add("")
        add("Counted by `perf stat -p PID -e instructions,cycles` over the "
            "same measured window, user and kernel together, divided by the "
            "requests answered. Instructions per request vary by a percent or "
            "two between repetitions where CPU time varies by a third, so "
            "they are the figure to compare when the ranges above overlap; "
            "cycles move with CPU time. Medians; thousands.")
        add("")
        add("| size | conns | " + " | ".join(
            "%s instr · cycles" % n for n in names)
            + " | tact / uvloop (instr) | tact / epoll (instr) |")
        add("|---|---|" + "---|" * (len(names) + 2))
        for size in SIZES:
            for conns in CONNS:
                cells = []
                for n in names:
                    rs = echo[(n, size, conns)]
                    cells.append("%.1f · %.1f" % (
                        med([r.get("instructions_per_req", 0) for r in rs]) / 1e3,
                        med([r.get("cycles_per_req", 0) for r in rs]) / 1e3))
                ins = lambda n: med([r.get("instructions_per_req", 0)
                                     for r in echo[(n, size, conns)]])
                add("| %s | %d | %s | %.2f | %.2f |" % (
                    size_name(size), conns, " | ".join(cells),
                    ins("tact") / ins("uvloop"), ins("tact") / ins("epoll (C)")))
    add("")
    add("## Requests per second and latency (medians)")
    add("")
    add("The client is on one core too, so requests per second is bounded by "
        "it as much as by the server; CPU per request above is the figure "
        "that compares servers.")
    add("")
    add("| size | conns | " + " | ".join(
        "%s req/s · p99 µs" % n for n in names) + " |")
    add("|---|---|" + "---|" * len(names))
    for size in SIZES:
        for conns in CONNS:
            cells = []
            for n in names:
                rs = echo[(n, size, conns)]
                cells.append("%.0f · %.0f" % (med([r["rps"] for r in rs]),
                                              med([r["p99_us"] for r in rs])))
            add("| %s | %d | %s |" % (size_name(size), conns, " | ".join(cells)))
    add("")
    add("## Bulk: one connection streaming 2 GiB each way")
    add("")
    add("| server | GB/s each way | server CPU s per GB | GB/s vs epoll |")
    add("|---|---|---|---|")
    e = med([r["gbps"] for r in bulk["epoll (C)"]])
    for n in names:
        g = [r["gbps"] for r in bulk[n]]
        add("| %s | %s | %s | %.2f |" % (
            n, fmt(g, 2), fmt([r["cpu_s_per_gb"] for r in bulk[n]], 3),
            med(g) / e))
    add("")
    add("## Memory: 10,000 idle connections")
    add("")
    add("Each connection echoes one byte (so the server has set it up "
        "completely) and then stays open; the figure is the growth of the "
        "server's RSS divided by 10,000. Kernel socket buffers are not in "
        "RSS and are the same for every server.")
    add("")
    add("| server | RSS before (KiB) | RSS after (KiB) | bytes per connection |")
    add("|---|---|---|---|")
    for n in names:
        r = idle[n]
        add("| %s | %.0f | %.0f | %.0f |" % (
            n, r["rss_before_kib"], r["rss_after_kib"], r["bytes_per_conn"]))
    add("")
    add("## Reading these figures")
    add("")
    add("See `docs/architecture.md` (\"Where the syscalls run, and why\") "
        "for what tact does per request and why it costs what it costs.")
    add("")
    path = os.path.join(opts.out, "performance.md")
    # The sections the other benchmarks wrote (redis_bench.py,
    # sendfile_bench.py) and what follows them: kept.
    kept = kept_section(os.path.join(ROOT, "docs", "performance.md"))
    with open(path, "w") as f:
        f.write("\n".join(lines))
        if kept:
            f.write("\n" + kept + "\n")
    print("wrote", path)


def kept_section(path):
    """What follows this script's part of `path`: from the first section
    another benchmark wrote (`<!-- NAME.py: begin -->`) to the end."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    m = re.search(r"<!-- \w+\.py: begin -->", text)
    return text[m.start():].rstrip("\n") if m else ""


def size_name(size):
    return "%d KiB" % (size // 1024) if size >= 1024 else "%d B" % size


def write_plot(opts, names, echo):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CONNS), figsize=(13, 4.2), sharey=True)
    width = 0.8 / len(names)
    for ax, conns in zip(axes, CONNS):
        for i, n in enumerate(names):
            meds, los, his = [], [], []
            for size in SIZES:
                m, lo, hi = summary(cpu(echo, n, size, conns))
                meds.append(m)
                los.append(m - lo)
                his.append(hi - m)
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(SIZES))]
            ax.bar(xs, meds, width, yerr=[los, his], capsize=2, label=n)
        ax.set_xticks(range(len(SIZES)))
        ax.set_xticklabels([size_name(s) for s in SIZES])
        ax.set_title("%d connections" % conns)
        ax.set_xlabel("message size")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("server CPU µs per request (lower is better)")
    axes[0].legend()
    fig.suptitle("Echo, one request in flight per connection (median, min–max)")
    fig.tight_layout()
    path = os.path.join(opts.out, "performance.png")
    fig.savefig(path, dpi=100)
    print("wrote", path)


if __name__ == "__main__":
    sys.exit(main())
