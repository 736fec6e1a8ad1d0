"""The echo as a coroutine beside the echo as a class protocol, in one run:
CPU per request (server pinned to core 0, echo_load to core 1) and
user-space instructions per request (callgrind), 1 KiB requests over 100
connections. Rewrites the coroutine section of docs/performance.md.
Started by tests/bench/coroutine_bench.sh, which builds first.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_section import replace_section  # noqa: E402
from run import Server, fmt, load, machine, perf_works  # noqa: E402
import instructions  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "## The echo as a coroutine"
END = "<!-- end of the coroutine section -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--requests", type=int, default=20000,
                    help="callgrind: requests of the shorter run")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                  "performance.md"))
    opts = ap.parse_args()
    build = os.path.abspath(opts.build)
    echo = os.path.join(build, "examples", "echo_server")
    servers = [("class protocol", [echo]),
               ("coroutine", [echo, "--coroutine"])]
    use_perf = perf_works()
    cpu = {name: [] for name, _ in servers}
    rps = {name: [] for name, _ in servers}
    instr = {name: [] for name, _ in servers}
    for rep in range(opts.reps):
        # Each repetition runs both, in turn; which goes first alternates.
        for name, argv in (servers if rep % 2 == 0 else servers[::-1]):
            with Server(argv) as s:
                r = load(build,
                         ["--url", s.url, "--conns", str(opts.conns),
                          "--size", str(opts.size), "--warmup", "1",
                          "--duration", str(opts.duration),
                          "--server-pid", str(s.proc.pid)],
                         s.proc.pid, use_perf)
            cpu[name].append(r["cpu_us_per_req"])
            rps[name].append(r["rps"])
            print("rep %d %-15s %8.0f req/s %6.2f us CPU/req"
                  % (rep + 1, name, r["rps"], r["cpu_us_per_req"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="tact-coro-") as workdir:
        for rep in range(opts.reps):
            for i, (name, argv) in enumerate(servers):
                server = " ".join(argv)
                n = opts.requests
                a = instructions.run_once(server, n, opts.conns, opts.size,
                                          workdir, "a%d%d" % (rep, i))
                b = instructions.run_once(server, 2 * n, opts.conns,
                                          opts.size, workdir,
                                          "b%d%d" % (rep, i))
                # The thread whose count grew most with the requests: the loop.
                loop = max(b[t] - a.get(t, 0) for t in b) / n
                instr[name].append(loop)
                print("rep %d %-15s %6.0f instructions/req (loop thread)"
                      % (rep + 1, name, loop), flush=True)

    med = statistics.median
    base, coro = (n for n, _ in servers)
    lines = [BEGIN, ""]
    add = lines.append
    add("`tests/bench/coroutine_bench.sh`: `echo_server` with its class "
        "protocol and with `--coroutine` (`examples/echo_server.cpp`), "
        "taking turns, %d repetitions; %d B requests over %d connections, "
        "server on core 0, `echo_load` on core 1; instructions counted by "
        "callgrind on the loop thread (%d and %d requests, the difference "
        "per request). %s."
        % (opts.reps, opts.size, opts.conns, opts.requests,
           2 * opts.requests, machine()))
    add("")
    add("| echo | CPU µs per request | requests/s | instructions per request |")
    add("|---|---|---|---|")
    for name, _ in servers:
        add("| %s | %s | %s | %s |" % (name, fmt(cpu[name], 2),
                                       fmt(rps[name], 0), fmt(instr[name], 0)))
    def paired(x):
        return med(c / b for c, b in zip(x[coro], x[base]))

    add("| ratio of the medians, coroutine / class | %.3f | %.3f | %.3f |"
        % (med(cpu[coro]) / med(cpu[base]), med(rps[coro]) / med(rps[base]),
           med(instr[coro]) / med(instr[base])))
    add("| ratio within each repetition, median | %.3f | %.3f | %.3f |"
        % (paired(cpu), paired(rps), paired(instr)))
    add("")
    add("CPU time on a virtual machine moves between repetitions by more "
        "than the two servers differ (the ranges above), so the CPU ratio "
        "to read is the one within each repetition, where both servers ran "
        "one after the other (which first alternates). The instruction "
        "counts do not move, and they are user space only: the system "
        "calls, the same for both, are not in them.")
    add("")
    add(END)
    replace_section(opts.out, BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
