#!/usr/bin/env python3
"""End-to-end test of examples/run_command, driven from outside.

    run_command_e2e.py --run PATH

Prints `PASS name` / `FAIL name: reason` per test and `#` lines with
figures; exits 0 only if every test passed.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

MiB = 1024 * 1024
# What starting and stopping run_command costs on this machine, measured
# once: the time bounds below are what run_command adds on top of it.
BASE = 0.0
# Under the sanitizers (tests/sanitize.sh sets these) everything runs
# several times slower, and more so while the other tests load both
# cores: the bounds stretch by T there. The normal run keeps them tight.
SLOW = any(k in os.environ for k in ("TSAN_OPTIONS", "ASAN_OPTIONS"))
T = 4 if SLOW else 1


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def test_cat_100mib(run):
    """100 MiB through `run_command -- cat`, byte-exact, memory bounded."""
    size = 100 * MiB
    block = os.urandom(MiB)
    proc = subprocess.Popen([run, "--", "cat"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                with open("/proc/%d/status" % proc.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.02)

    def feed():
        for i in range(size // MiB):
            proc.stdin.write(bytes([i % 251]) + block[1:])
        proc.stdin.close()

    threading.Thread(target=watch, daemon=True).start()
    writer = threading.Thread(target=feed)
    writer.start()
    got = 0
    bad = 0
    i = 0
    pending = b""
    while True:
        chunk = proc.stdout.read(256 * 1024)
        if not chunk:
            break
        pending += chunk
        while len(pending) >= MiB:
            if pending[:MiB] != bytes([i % 251]) + block[1:]:
                bad += 1
            pending = pending[MiB:]
            i += 1
        got += len(chunk)
    writer.join()
    rc = proc.wait(30)
    done.set()
    err = proc.stderr.read()
    print("# cat_100mib: %d bytes back, %d bad blocks, peak RSS %.1f MiB"
          % (got, bad, peak[0] / 1024.0))
    check(rc == 0, "exit %d, stderr %r" % (rc, err))
    check(got == size and not pending, "%d of %d bytes back" % (got, size))
    check(bad == 0, "%d blocks differ" % bad)
    # A sanitizer build's quarantine holds freed memory: tests/sanitize.sh
    # sets a looser bound.
    limit_mib = int(os.environ.get("TACT_E2E_RSS_LIMIT_MIB", "64"))
    check(peak[0] < limit_mib * 1024, "peak RSS %d KiB" % peak[0])


def test_stdout_stderr_separate(run):
    out = subprocess.run([run, "--", "sh", "-c",
                          "echo to-out; echo to-err >&2; echo more-out"],
                         capture_output=True, text=True, timeout=20)
    check(out.returncode == 0, "exit %d" % out.returncode)
    check(out.stdout == "to-out\nmore-out\n", "stdout %r" % out.stdout)
    check(out.stderr == "to-err\n", "stderr %r" % out.stderr)


def test_exit_codes(run):
    out = subprocess.run([run, "--", "sh", "-c", "exit 7"],
                         capture_output=True, timeout=20)
    check(out.returncode == 7, "exit 7 gave %d" % out.returncode)
    out = subprocess.run([run, "--", "sh", "-c", "kill -9 $$"],
                         capture_output=True, timeout=20)
    check(out.returncode == 128 + 9, "SIGKILL gave %d" % out.returncode)
    out = subprocess.run([run, "--", "sh", "-c", "kill -15 $$"],
                         capture_output=True, timeout=20)
    check(out.returncode == 128 + 15, "SIGTERM gave %d" % out.returncode)


def test_timeout(run):
    t0 = time.monotonic()
    out = subprocess.run([run, "--timeout", "0.5", "--", "sleep", "30"],
                         capture_output=True, timeout=20)
    secs = time.monotonic() - t0
    check(out.returncode == 124, "exit %d" % out.returncode)
    check(secs < 2 * T + BASE, "took %.1f s" % secs)
    # A child that ignores SIGTERM gets SIGKILL two seconds later.
    t0 = time.monotonic()
    out = subprocess.run([run, "--timeout", "0.5", "--", "sh", "-c",
                          "trap '' TERM; exec sleep 30"],
                         capture_output=True, timeout=20)
    secs = time.monotonic() - t0
    print("# timeout: SIGTERM-proof child ended after %.1f s" % secs)
    check(out.returncode == 124, "exit %d" % out.returncode)
    check(2.3 < secs < 5 * T + BASE, "took %.1f s" % secs)


def shell_status(pipeline):
    """The exit status of the first command of a shell pipeline."""
    out = subprocess.run(["bash", "-c", "set -o pipefail; " + pipeline],
                         capture_output=True, timeout=20)
    return out.returncode


def test_reader_gone(run):
    """`run_command -- yes | head -c 1000000`: the reader leaving ends the
    run as it ends a shell pipeline (the child dies of SIGPIPE; the exit
    status is the shell's own for `yes | head`), at once, not spinning."""
    want = shell_status("yes | head -c 1000000 > /dev/null")
    check(want == 128 + 13, "the shell itself gave %d" % want)
    for stream in ("stdout", "stderr"):
        argv = [run, "--", "sh", "-c",
                "exec yes" + (" >&2" if stream == "stderr" else "")]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        pipe = p.stdout if stream == "stdout" else p.stderr
        other = p.stderr if stream == "stdout" else p.stdout
        got = 0
        while got < 1000000:
            b = pipe.read1(min(65536, 1000000 - got))
            if not b:
                break
            got += len(b)
        pipe.close()
        t0 = time.monotonic()
        try:
            code = p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise Fail("%s: still running 10 s after its reader left"
                       % stream)
        finally:
            other.close()
        secs = time.monotonic() - t0
        print("# reader of %s gone: exit %d after %.3f s" % (stream, code,
                                                            secs))
        check(got == 1000000, "%s: read %d bytes" % (stream, got))
        check(code == want, "%s: exit %d, the shell's is %d"
              % (stream, code, want))
        check(secs < 1 * T + BASE, "%s: exit took %.1f s" % (stream, secs))
    # The whole pipeline in a shell, as a user would write it.
    out = subprocess.run(["sh", "-c", "'%s' -- yes | head -c 1000000 | wc -c"
                          % run], capture_output=True, text=True, timeout=20)
    check(out.stdout.strip() == "1000000", "wc -c said %r" % out.stdout)


def gone(pid):
    """Whether process `pid` has ended (a zombie waiting for a reaper that
    is not ours counts as ended)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pid, secs=5):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


def test_timeout_reaches_grandchildren(run):
    """A timed-out child whose own child holds the pipes: the whole group
    is signalled, and the run ends within the kill grace, not when the
    grandchild would have."""
    t0 = time.monotonic()
    out = subprocess.run([run, "--timeout", "1", "--", "sh", "-c",
                          "sleep 15 & echo $!"], capture_output=True,
                         text=True, timeout=30)
    secs = time.monotonic() - t0
    print("# timeout with a grandchild holding the pipe: %.1f s" % secs)
    check(out.returncode == 124, "exit %d" % out.returncode)
    check(secs < 3 * T + BASE, "took %.1f s" % secs)
    grandchild = int(out.stdout.split()[0])
    check(wait_gone(grandchild), "the grandchild %d still runs" % grandchild)


def test_signals_reach_the_group(run):
    """SIGTERM or SIGINT to run_command goes to the child's process group;
    run_command exits after it, and no grandchild is left after SIGTERM.
    (A shell's background job ignores SIGINT, as it would under a
    terminal's Ctrl-C: run_command stops waiting for the pipe it holds
    2 s after the shell's end.)"""
    for sig in (signal.SIGTERM, signal.SIGINT):
        # The pause before `echo`: the shell's child sets SIGINT to be
        # ignored after the fork, and a signal sent as soon as the pid is
        # printed could come first (seen under ThreadSanitizer's load).
        p = subprocess.Popen([run, "--", "sh", "-c",
                              "sleep 30 & sleep 0.2; echo $!; wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        grandchild = int(p.stdout.readline())
        t0 = time.monotonic()
        p.send_signal(sig)
        try:
            code = p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            os.kill(grandchild, signal.SIGKILL)
            raise Fail("%s: run_command still runs 10 s later" % sig.name)
        finally:
            p.stdout.close()
            p.stderr.close()
        secs = time.monotonic() - t0
        print("# %s: run_command exited %d after %.3f s" % (sig.name, code,
                                                           secs))
        if sig == signal.SIGINT:
            ignored = not gone(grandchild)
            if ignored:
                os.kill(grandchild, signal.SIGKILL)
            check(ignored, "SIGINT reached the shell's background job")
            check(code == 128 + sig, "%s: exit %d" % (sig.name, code))
            check(secs < 3 * T + BASE, "%s: took %.1f s" % (sig.name, secs))
            continue
        check(wait_gone(grandchild), "%s: the grandchild %d still runs"
              % (sig.name, grandchild))
        check(code == 128 + sig, "%s: exit %d" % (sig.name, code))
        check(secs < 1 * T + BASE, "%s: took %.1f s" % (sig.name, secs))


def test_cannot_start(run):
    out = subprocess.run([run, "--", "tact-no-such-program"],
                         capture_output=True, text=True, timeout=20)
    lines = out.stderr.strip().splitlines()
    check(out.returncode == 127, "exit %d" % out.returncode)
    check(len(lines) == 1 and "tact-no-such-program" in lines[0],
          "stderr %r" % out.stderr)
    check(out.stdout == "", "stdout %r" % out.stdout)


TESTS = [test_cat_100mib, test_stdout_stderr_separate, test_exit_codes,
         test_timeout, test_reader_gone, test_timeout_reaches_grandchildren,
         test_signals_reach_the_group, test_cannot_start]


def fixed_cost(run):
    """The median wall time of `run_command -- true`, in seconds."""
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([run, "--", "true"], capture_output=True, timeout=60,
                       check=True)
        times.append(time.monotonic() - t0)
    return sorted(times)[1]


def main():
    global BASE
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    opts = ap.parse_args()
    BASE = fixed_cost(opts.run)
    print("# run_command -- true: %.3f s" % BASE)
    failed = 0
    for t in TESTS:
        name = t.__name__[len("test_"):]
        try:
            t(opts.run)
            print("PASS", name, flush=True)
        except Exception as ex:  # a failure or an unexpected error
            failed += 1
            print("FAIL %s: %s" % (name, ex), flush=True)
    print("%d passed, %d failed" % (len(TESTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
