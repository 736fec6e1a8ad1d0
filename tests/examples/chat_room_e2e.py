#!/usr/bin/env python3
"""End-to-end test of examples/chat_room.cpp (connections are coroutines,
the room a behaviour), driven by plain socket clients.

    chat_room_e2e.py --server PATH

Prints PASS/FAIL per test; exit code 0 only if all passed.
"""

import argparse
import re
import signal
import socket
import subprocess
import sys
import time

FAILED = []


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else ": " + detail),
          flush=True)
    if not cond:
        FAILED.append(name)


class Client:
    def __init__(self, port, name, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(1)
        self.buf = b""
        self.seen = b""
        self.carol_left = False
        assert self.read_until(b"name? ")
        self.sock.sendall(name.encode() + b"\n")

    def read_until(self, text, timeout=10):
        """Reads until `text` has come; keeps only what follows it (and,
        while waiting, only a tail as long as `text`, so that a long wait
        costs no more than the bytes read)."""
        deadline = time.time() + timeout
        while text not in self.buf and time.time() < deadline:
            self.buf = self.buf[-len(text):]
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                break
            self.buf += chunk
            self.seen = (self.seen + chunk)[-(1 << 16):]
            if b"* carol left\n" in self.seen:
                self.carol_left = True
        if text in self.buf:
            self.buf = self.buf[self.buf.index(text) + len(text):]
            return True
        return False

    def say(self, line):
        self.sock.sendall(line.encode() + b"\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True)
    args = ap.parse_args()
    proc = subprocess.Popen([args.server, "tcp://127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        m = re.match(r"listening on tcp://127.0.0.1:(\d+)",
                     proc.stdout.readline())
        port = int(m.group(1))
        alice = Client(port, "alice")
        time.sleep(0.1)
        bob = Client(port, "bob")
        check("a join is announced to the others",
              alice.read_until(b"* bob joined\n"))
        bob.say("hi")
        check("a line goes to the others with its author",
              alice.read_until(b"bob: hi\n"))
        alice.say("hello bob")
        check("and the other way", bob.read_until(b"alice: hello bob\n"))

        # A client that reads nothing while a lot is said: it is dropped,
        # and the others carry on. 16 MB: more than the kernel's socket
        # buffers on both sides can hold (4 MiB or so), and the 1 MiB the
        # room lets wait in the transport.
        carol = Client(port, "carol", rcvbuf=4096)
        check("carol's join", bob.read_until(b"* carol joined\n"))
        line = "x" * 1000
        # Bob reads while Alice writes (a thread), or both would block.
        import threading
        def talk():
            for _ in range(16000):
                alice.say(line)
            alice.say("end")
        t = threading.Thread(target=talk)
        t.start()
        check("a reader keeps up with 16 MB of lines",
              bob.read_until(b"alice: end\n", timeout=60))
        t.join()
        check("a client that does not read is dropped",
              bob.carol_left or bob.read_until(b"* carol left\n", timeout=30))

        alice.sock.close()
        check("a leave is announced", bob.read_until(b"* alice left\n"))
        bob.sock.close()
        carol.sock.close()
        proc.send_signal(signal.SIGTERM)
        check("exits 0 on SIGTERM", proc.wait(10) == 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print("%d failed" % len(FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
