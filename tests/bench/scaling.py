"""Several loops: tact's echo server with 1, 2, 4, ... loops beside a plain
epoll echo server with as many threads (one epoll and one SO_REUSEPORT
listener each), run the same way. The servers get the first half of the
CPUs (at least one), the load clients the rest, one echo_load per CPU,
each pinned; 1 KiB requests over 100 connections by default. Prints
requests per second, server CPU per request, and how the server's CPU
splits over its loop threads; rewrites the scaling section of
docs/performance.md. Started by tests/bench/scaling.sh, which builds
first.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_section import replace_section  # noqa: E402
from run import Server, machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "## Several loops"
END = "<!-- end of the scaling section -->"


def cpus():
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def threads_cpu(pid):
    """CPU seconds of each thread of `pid`: {tid: (name, seconds)}."""
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/comm" % (base, tid)) as f:
                name = f.read().strip()
            with open("%s/%s/schedstat" % (base, tid)) as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        out[tid] = (name, ns / 1e9)
    return out


def measure(build, server, load_cpus, opts):
    """Runs one echo_load per load CPU against `server`; returns requests
    per second (all clients), server CPU per request (µs) over the window
    in which every client measured, and the CPU seconds of each of the
    server's threads named tact-loop in that window."""
    per = [opts.conns // len(load_cpus)] * len(load_cpus)
    for i in range(opts.conns % len(load_cpus)):
        per[i] += 1
    clients = []
    for cpu, conns in zip(load_cpus, per):
        clients.append(subprocess.Popen(
            ["taskset", "-c", str(cpu),
             os.path.join(build, "tests", "bench", "echo_load"),
             "--url", server.url, "--conns", str(conns),
             "--size", str(opts.size), "--warmup", "1",
             "--duration", str(opts.duration)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    # Every client prints `measuring` when its window opens: the server's
    # CPU is read once all have, and again when the first one closes.
    for c in clients:
        for line in c.stdout:
            if line.startswith("measuring"):
                break
    before, t0 = threads_cpu(server.proc.pid), time.monotonic()
    lines = [[] for _ in clients]
    first = True
    for i, c in enumerate(clients):
        for line in c.stdout:
            if line.startswith("measured"):
                if first:
                    after, t1 = threads_cpu(server.proc.pid), time.monotonic()
                    first = False
                continue
            lines[i].append(line)
    rps = 0.0
    for i, c in enumerate(clients):
        err = c.stderr.read()
        if c.wait() != 0:
            raise RuntimeError("echo_load failed: %s%s" % ("".join(lines[i]), err))
        r = {k: float(v) for k, v in
             re.findall(r"(\w+)=([\d.]+)", "".join(lines[i]))}
        if r.get("errors", 0) > 0:
            raise RuntimeError("echo_load saw errors: %s" % "".join(lines[i]))
        rps += r["rps"]
    used = sum(after[t][1] - before[t][1] for t in after if t in before)
    loops = sorted((after[t][1] - before[t][1] for t in after
                    if t in before and after[t][0] == "tact-loop"),
                   reverse=True)
    requests = rps * (t1 - t0)
    return rps, used * 1e6 / requests, loops


def churn(build, server, load_cpus, opts):
    """Connections opened, echoed once and closed per second by one
    churn_load per load CPU, and the server's CPU per connection (µs):
    what accepting and handing a connection to a loop costs."""
    per = max(1, opts.churn_conns // len(load_cpus))
    clients = [subprocess.Popen(
        ["taskset", "-c", str(cpu),
         os.path.join(build, "tests", "bench", "churn_load"),
         "--url", server.url, "--conns", str(per), "--size", "64",
         "--warmup", "1", "--duration", str(opts.duration),
         "--server-pid", str(server.proc.pid)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cpu in load_cpus]
    rate, cpu = 0.0, []
    for c in clients:
        out, err = c.communicate(timeout=120)
        if c.returncode != 0:
            raise RuntimeError("churn_load failed: %s%s" % (out, err))
        r = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}
        rate += r["cps"]
        cpu.append(r["cpu_us_per_conn"])
    # Each client divides the server's whole CPU by its own connections.
    return rate, statistics.mean(cpu) / len(load_cpus)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--churn-conns", type=int, default=50,
                    help="connections churned at once (the churn rows)")
    ap.add_argument("--loops", default="",
                    help="comma-separated loop counts (default: 1, 2, 4, "
                         "... up to the server CPUs, and always 2)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                  "performance.md"),
                    help="the report to rewrite ('-': none)")
    opts = ap.parse_args()
    build = os.path.abspath(opts.build)
    all_cpus = cpus()
    n_server = max(1, len(all_cpus) // 2)
    server_cpus = all_cpus[:n_server]
    load_cpus = all_cpus[n_server:] or all_cpus[:1]
    if opts.loops:
        counts = [int(x) for x in opts.loops.split(",")]
    else:
        counts, n = [], 1
        while n <= n_server:
            counts.append(n)
            n *= 2
        if 2 not in counts:
            counts.append(2)
        counts.sort()
    cpu_list = ",".join(str(c) for c in server_cpus)
    echo = os.path.join(build, "examples", "echo_server")
    epoll = os.path.join(build, "tests", "bench", "epoll_echo")
    print("server CPUs %s, load CPUs %s, loops %s"
          % (cpu_list, ",".join(map(str, load_cpus)), counts), flush=True)
    results = {}  # (server, loops) -> {"rps": [], "cpu": [], "split": []}
    # Each repetition runs every loop count of one server back to back, so
    # that the ratio to one loop is also taken within the repetition (this
    # machine's CPU time moves in steps between runs); the order reverses
    # every other repetition.
    runs = [(name, n) for name in ("tact", "epoll") for n in counts]
    for rep in range(opts.reps):
        for name, n in (runs if rep % 2 == 0 else runs[::-1]):
            argv = ([echo, "--loops", str(n)] if name == "tact"
                    else [epoll, "--threads", str(n)])
            with Server(argv, cpu_list) as s:
                rps, cpu, split = measure(build, s, load_cpus, opts)
                cps, cpc = churn(build, s, load_cpus, opts)
            r = results.setdefault((name, n),
                                   {"rps": [], "cpu": [], "split": [],
                                    "cps": [], "cpc": []})
            r["rps"].append(rps)
            r["cpu"].append(cpu)
            r["cps"].append(cps)
            r["cpc"].append(cpc)
            total = sum(split)
            if total > 0:
                r["split"].append([x / total for x in split])
            shares = ("  loop threads " + "/".join(
                "%.0f%%" % (100 * x / total) for x in split)
                if name == "tact" and total > 0 else "")
            print("rep %d %-5s %2d: %8.0f req/s %6.2f us CPU/req, "
                  "%6.0f conn/s %6.1f us CPU/conn%s"
                  % (rep + 1, name, n, rps, cpu, cps, cpc, shares),
                  flush=True)
    rows = []
    for n in counts:
        t, e = results[("tact", n)], results[("epoll", n)]
        one = results[("tact", counts[0])]
        split = ""
        if t["split"] and n > 1:
            shares = [statistics.median(s[i] for s in t["split"])
                      for i in range(len(t["split"][0]))]
            split = "/".join("%.0f" % (100 * x) for x in shares)
        paired = statistics.median(
            x / y for x, y in zip(t["cpu"], one["cpu"]))
        rows.append((n, statistics.median(t["rps"]), statistics.median(t["cpu"]),
                     statistics.median(t["cpu"]) / statistics.median(one["cpu"]),
                     paired, split, statistics.median(e["rps"]),
                     statistics.median(e["cpu"]),
                     statistics.median(t["cpu"]) / statistics.median(e["cpu"])))
    header = ("| loops | tact req/s | tact µs CPU/req | vs %d loop(s), "
              "medians | vs %d loop(s), within each repetition | loop "
              "threads, %% of their CPU | epoll req/s | epoll µs CPU/req "
              "| tact vs epoll |" % (counts[0], counts[0]))
    table = [header, "|---|---|---|---|---|---|---|---|---|"]
    for n, trps, tcpu, vs_one, paired, split, erps, ecpu, vs_epoll in rows:
        table.append("| %d | %.0f | %.2f | %.3f | %.3f | %s | %.0f | %.2f "
                     "| %.3f |"
                     % (n, trps, tcpu, vs_one, paired, split or "—", erps,
                        ecpu, vs_epoll))
    churn_table = [
        "| loops | tact connections/s | tact µs CPU/connection | epoll "
        "connections/s | epoll µs CPU/connection | tact vs epoll |",
        "|---|---|---|---|---|---|"]
    for n in counts:
        t, e = results[("tact", n)], results[("epoll", n)]
        churn_table.append("| %d | %.0f | %.1f | %.0f | %.1f | %.3f |" % (
            n, statistics.median(t["cps"]), statistics.median(t["cpc"]),
            statistics.median(e["cps"]), statistics.median(e["cpc"]),
            statistics.median(t["cpc"]) / statistics.median(e["cpc"])))
    table += ["", "Connections opened, echoed once (64 B) and closed, "
              "%d at a time (`churn_load`, one per load CPU): what accepting "
              "a connection and handing it to a loop costs." % opts.churn_conns,
              ""] + churn_table
    print("\n".join(table))
    if opts.out == "-":
        return
    text = "\n".join([
        BEGIN,
        "",
        "`tests/bench/scaling.sh` (`--reps %d --duration %g`): %d B requests "
        "over %d connections; servers pinned to CPUs %s, one `echo_load` per "
        "remaining CPU (%s), each pinned. `tact` is `echo_server --loops N`; "
        "`epoll` is `tests/bench/epoll_echo --threads N` (one epoll and one "
        "`SO_REUSEPORT` listener per thread). Server CPU is the sum over the "
        "server's threads while every client measured; medians of %d "
        "repetitions, each running one server's loop counts back to back "
        "(the order reversed every other repetition), so that the ratio to "
        "one loop is also taken within each repetition: this machine's CPU "
        "time moves in steps between runs. The split column is each loop "
        "thread's share of the loop threads' CPU."
        % (opts.reps, opts.duration, opts.size, opts.conns, cpu_list,
           ",".join(map(str, load_cpus)), opts.reps),
        "",
        "Machine: %s." % machine(),
        "",
    ] + table + ["", END])
    replace_section(opts.out, BEGIN, END, text)


if __name__ == "__main__":
    main()
