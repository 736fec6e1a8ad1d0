#!/usr/bin/env python3
"""Reference implementation of the ``echo_client`` example CLI (test aid only).

    echo_client URL [--message TEXT]

Connects to ``tcp://HOST:PORT`` / ``tcp://[v6]:PORT`` / ``unix://PATH``, sends
TEXT (default "hello"), half-closes, prints everything echoed back to stdout
and exits 0.  If the connection fails: one line on stderr, non-zero exit.
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_echo_server import BadUrl, parse_url  # noqa: E402


def main(argv):
    args = list(argv[1:])
    message = "hello"
    url = None
    while args:
        a = args.pop(0)
        if a == "--message" and args:
            message = args.pop(0)
        elif a.startswith("--message="):
            message = a[len("--message="):]
        elif url is None:
            url = a
        else:
            print("usage: echo_client URL [--message TEXT]", file=sys.stderr)
            return 2
    if url is None:
        print("usage: echo_client URL [--message TEXT]", file=sys.stderr)
        return 2
    try:
        kind, where, port = parse_url(url)
    except BadUrl as e:
        print("echo_client: %s" % e, file=sys.stderr)
        return 2
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(where)
        else:
            sock = socket.create_connection((where, port), timeout=10)
        with sock:
            sock.sendall(message.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                b = sock.recv(65536)
                if not b:
                    break
                chunks.append(b)
    except OSError as e:
        print("echo_client: %s: %s" % (url, e.strerror or e), file=sys.stderr)
        return 1
    sys.stdout.write(b"".join(chunks).decode(errors="replace") + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
