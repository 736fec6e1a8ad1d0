"""How the kernel spreads connections over SO_REUSEPORT listeners: N
listeners on one port of 127.0.0.1, C connections, repeated R times;
prints how often each split came up (the figure docs/architecture.md
quotes for choosing one acceptor that hands connections to the least
loaded loop).

    python3 tests/bench/reuseport_split.py [--listeners 2] [--conns 16] [--runs 40]
"""

import argparse
import collections
import socket
import time


def one_run(listeners, conns):
    socks = []
    try:
        for _ in range(listeners):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            s.listen(conns)
            s.setblocking(False)
            socks.append(s)
        port = socks[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port))
                   for _ in range(conns)]
        time.sleep(0.05)
        counts = []
        for s in socks:
            n = 0
            while True:
                try:
                    c, _ = s.accept()
                except BlockingIOError:
                    break
                c.close()
                n += 1
            counts.append(n)
        for c in clients:
            c.close()
        return tuple(sorted(counts, reverse=True))
    finally:
        for s in socks:
            s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listeners", type=int, default=2)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--runs", type=int, default=40)
    opts = ap.parse_args()
    splits = collections.Counter(one_run(opts.listeners, opts.conns)
                                 for _ in range(opts.runs))
    for split, n in sorted(splits.items(), key=lambda kv: kv[0][0]):
        print("%-12s %d of %d runs" % ("/".join(map(str, split)), n, opts.runs))


if __name__ == "__main__":
    main()
