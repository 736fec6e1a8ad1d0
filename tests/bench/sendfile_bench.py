"""One large file over HTTP/1.0, side by side: tact's examples/file_server
(runtime sendfile), nginx (`sendfile on`) and a blocking C server that
calls sendfile(2) in a loop (tests/bench/sendfile_server.c, the floor).
Started by tests/bench/sendfile_bench.sh, which builds first; rewrites the
sendfile section of docs/performance.md.

Each server runs pinned to core 0, the client (tests/bench/sendfile_get.c,
which checks every 8-byte word of the body) to core 1. The servers take
turns within each repetition; the report gives medians and min-max.
"""

import argparse
import datetime
import glob
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from report_section import replace_section

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN = "<!-- sendfile_bench.py: begin -->"
END = "<!-- sendfile_bench.py: end -->"
GiB = 1 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """Time on CPU of a process's threads, in seconds (schedstat counts
    nanoseconds; /proc/PID/stat's ticks are too coarse for a second's
    work)."""
    total = 0
    for task in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(task) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


class Server:
    """A server on core 0; `port` is where it listens."""

    def __init__(self, name, argv, port, wait_line=True):
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if wait_line:
            line = self.proc.stdout.readline()
            m = re.search(r":(\d+)\s*$", line)
            if not m:
                self.stop()
                raise RuntimeError("%s did not start: %r" % (name, line))
            self.port = int(m.group(1))
        else:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError("%s did not start: %s"
                                           % (name, self.proc.stderr.read()))
                    time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def nginx_conf(d, port):
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write("""daemon off;
master_process off;
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/nginx.err;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:%(port)d;
        root %(d)s/www;
    }
}
""" % {"d": d, "port": port})
    return path


def get(build, port):
    out = subprocess.run(
        ["taskset", "-c", "1", os.path.join(build, "tests", "bench",
                                            "sendfile_get"),
         "127.0.0.1", str(port), "/big.bin"],
        capture_output=True, text=True, timeout=600)
    fields = dict(kv.split("=") for kv in out.stdout.split())
    if out.returncode != 0 or fields.get("ok") != "1":
        raise RuntimeError("download failed: %s %s" % (out.stdout, out.stderr))
    return int(fields["bytes"]), float(fields["seconds"])


def fmt(values, digits):
    med = statistics.median(values)
    return "%.*f (%.*f–%.*f)" % (digits, med, digits, min(values), digits,
                                 max(values))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build-bench")
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "docs",
                                                 "performance.md"))
    opts = p.parse_args()
    build = os.path.abspath(opts.build)
    d = tempfile.mkdtemp(prefix="tact-sendfile-bench-")
    try:
        www = os.path.join(d, "www")
        os.mkdir(www)
        size = opts.size_mib * 1024 * 1024
        subprocess.run([os.path.join(build, "tests", "bench", "sendfile_get"),
                        "--make", os.path.join(www, "big.bin"), str(size)],
                       check=True)
        nginx_port = free_port()
        conf = nginx_conf(d, nginx_port)
        servers = [
            ("tact file_server", [os.path.join(build, "examples",
                                               "file_server"),
                                  www, "tcp://127.0.0.1:0"], 0, True),
            ("nginx", ["nginx", "-c", conf], nginx_port, False),
            ("sendfile (C)", [os.path.join(build, "tests", "bench",
                                           "sendfile_server"),
                              os.path.join(www, "big.bin"),
                              "tcp://127.0.0.1:0"], 0, True),
        ]
        names = [s[0] for s in servers]
        results = {n: {"gbps": [], "cpu": []} for n in names}
        started = time.time()
        for rep in range(opts.reps):
            for name, argv, port, wait_line in servers:
                srv = Server(name, argv, port, wait_line)
                try:
                    get(build, srv.port)  # warm the page cache and the server
                    cpu0 = cpu_seconds(srv.proc.pid)
                    got, secs = get(build, srv.port)
                    cpu1 = cpu_seconds(srv.proc.pid)
                finally:
                    srv.stop()
                if got != size:
                    raise RuntimeError("%s sent %d of %d bytes"
                                       % (name, got, size))
                results[name]["gbps"].append(got / secs / 1e9)
                results[name]["cpu"].append((cpu1 - cpu0) / (got / GiB))
                print("rep %d %-16s %.2f GB/s, %.3f s CPU/GiB"
                      % (rep + 1, name, results[name]["gbps"][-1],
                         results[name]["cpu"][-1]), flush=True)
        elapsed = time.time() - started
    finally:
        shutil.rmtree(d, ignore_errors=True)
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True,
                                   text=True).stderr.strip()
    floor = statistics.median(results["sendfile (C)"]["gbps"])
    lines = [BEGIN, "", "## sendfile: one %d MiB file over HTTP/1.0"
             % opts.size_mib, "",
             "`tests/bench/sendfile_bench.sh` serves one file of %d MiB "
             "from the page cache to one client over loopback TCP: tact's "
             "`examples/file_server` (`transport::sendfile`), %s "
             "(`sendfile on`, one worker), and a blocking C server that "
             "calls sendfile(2) in a loop (`tests/bench/sendfile_server.c`, "
             "the floor). Servers on core 0, the client "
             "(`tests/bench/sendfile_get.c`, which checks every 8-byte word "
             "of the body) on core 1. %d repetitions, the servers taking "
             "turns; each repetition downloads the file once to warm up, "
             "then once measured. Median and min–max. Server CPU is the "
             "time on CPU of the server's threads (`/proc/PID/task/*/"
             "schedstat`) per GiB sent."
             % (opts.size_mib, nginx_version.replace("nginx version: ", ""),
                opts.reps),
             "",
             "Run on %s, %s, %d cores, Linux %s, in %.0f s."
             % (datetime.date.today().isoformat(), platform.machine(),
                os.cpu_count(), platform.release(), elapsed),
             "",
             "| server | GB/s | vs the C floor | server CPU s/GiB |",
             "|---|---|---|---|"]
    for name in names:
        r = results[name]
        lines.append("| %s | %s | %.2f | %s |"
                     % (name, fmt(r["gbps"], 2),
                        statistics.median(r["gbps"]) / floor,
                        fmt(r["cpu"], 3)))
    lines += ["", "All three hand the file to the kernel with sendfile(2); "
              "what differs is the work around it (tact: a message to the "
              "transport actor and one sendfile(2) per writable event of "
              "at most the socket's free space). The spread is the machine's: all three move within the same range from one repetition to the next.", "", END]
    text = "\n".join(lines)
    print(text)
    replace_section(opts.out, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
