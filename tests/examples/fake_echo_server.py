#!/usr/bin/env python3
"""Reference implementation of the ``echo_server`` example CLI, in asyncio.

It is NOT part of the library.  It exists to document the contract that
``echo_e2e.py`` checks and to let anyone validate the test script itself:

    python3 tests/examples/echo_e2e.py \
        --server "python3 tests/examples/fake_echo_server.py" \
        --client "python3 tests/examples/fake_echo_client.py"

Contract (what the real ``examples/echo_server`` must do as well):

* ``echo_server URL...`` where URL is ``tcp://HOST:PORT`` (IPv6 literal as
  ``tcp://[::1]:PORT``, port 0 = pick a free one) or ``unix://PATH``.
* For every listener, exactly one line ``listening on URL`` on stdout, with the
  real port, flushed immediately.
* Every byte of every connection is echoed back.
* Flow control: when the write side is backed up (pause_writing) the server
  stops reading from that connection until resume_writing, so a peer that sends
  without reading cannot make the server buffer without bound.
* Half-close: on the peer's EOF the connection stays half-open until all data
  has been written back, then the server closes it.
* SIGINT / SIGTERM: exit code 0 within one second (also with open connections).
* A bad URL: exactly one line on stderr, exit code 2 (nothing is started).

Deliberately broken variants, to check that the e2e test notices (pass any of
these before the URLs; they are not part of the contract):

    --bug no-flow-control   ignore pause_writing (unbounded buffering)
    --bug close-on-eof      close at once on EOF, dropping unsent echo data
    --bug leak-fds          dup() every accepted socket and never close it
    --bug slow-exit         take 3 s to exit on SIGINT/SIGTERM
    --bug sigpipe           die of SIGPIPE when writing to a reset connection

Tuning knob (not part of the contract either):

    --high-water BYTES      per-connection write buffer high-water mark
                            (default: asyncio's 64 KiB); a larger one makes
                            a close-on-eof bug show up over TCP as well
"""

import asyncio
import os
import re
import signal
import socket
import sys
import time

BUGS = set()
HIGH_WATER = None

_TCP_RE = re.compile(r"^tcp://(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]/]+)):([0-9]+)$")


class BadUrl(Exception):
    pass


def parse_url(url):
    """Return ('tcp', host, port) or ('unix', path, None); raise BadUrl."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path:
            raise BadUrl("empty unix socket path in %r" % url)
        return ("unix", path, None)
    if url.startswith("tcp://"):
        m = _TCP_RE.match(url)
        if not m:
            raise BadUrl("expected tcp://HOST:PORT, got %r" % url)
        host = m.group(1) if m.group(1) is not None else m.group(2)
        port = int(m.group(3))
        if port > 65535:
            raise BadUrl("port out of range in %r" % url)
        if m.group(1) is not None:
            try:
                socket.inet_pton(socket.AF_INET6, host)
            except OSError:
                raise BadUrl("bad IPv6 address in %r" % url)
        return ("tcp", host, port)
    raise BadUrl("unsupported URL %r (use tcp://HOST:PORT or unix://PATH)" % url)


class Echo(asyncio.Protocol):
    connections = set()

    def connection_made(self, transport):
        self.transport = transport
        if HIGH_WATER is not None:
            transport.set_write_buffer_limits(high=HIGH_WATER)
        Echo.connections.add(transport)
        if "leak-fds" in BUGS:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                os.dup(sock.fileno())  # never closed: an fd leak

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        if "no-flow-control" not in BUGS:
            self.transport.pause_reading()

    def resume_writing(self):
        if "no-flow-control" not in BUGS:
            self.transport.resume_reading()

    def eof_received(self):
        if "close-on-eof" in BUGS:
            self.transport.abort()
            return False
        # Keep the connection half-open; close() flushes everything still in
        # the write buffer and only then closes the socket.
        self.transport.close()
        return True

    def connection_lost(self, exc):
        Echo.connections.discard(self.transport)


def format_tcp(host, port):
    if ":" in host:
        return "tcp://[%s]:%d" % (host, port)
    return "tcp://%s:%d" % (host, port)


async def serve(specs):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    servers = []
    unix_paths = []
    try:
        for kind, where, port in specs:
            try:
                if kind == "tcp":
                    srv = await loop.create_server(
                        Echo, host=where, port=port, reuse_address=True,
                        backlog=1024)
                    bound = srv.sockets[0].getsockname()
                    line = format_tcp(where, bound[1])
                else:
                    srv = await loop.create_unix_server(Echo, path=where,
                                                        backlog=1024)
                    unix_paths.append(where)
                    line = "unix://" + where
            except OSError as e:
                print("echo_server: cannot listen on %s: %s"
                      % (format_tcp(where, port) if kind == "tcp"
                         else "unix://" + where, e.strerror or e),
                      file=sys.stderr, flush=True)
                return 1
            servers.append(srv)
            print("listening on " + line, flush=True)

        await stop.wait()
        if "slow-exit" in BUGS:
            await asyncio.sleep(3)
        return 0
    finally:
        for srv in servers:
            srv.close()
        for t in list(Echo.connections):
            t.abort()
        for path in unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def main(argv):
    args = list(argv[1:])
    global HIGH_WATER
    while len(args) >= 2 and args[0] in ("--bug", "--high-water"):
        if args[0] == "--bug":
            BUGS.add(args[1])
        else:
            HIGH_WATER = int(args[1])
        del args[:2]
    if "sigpipe" in BUGS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not args:
        print("usage: echo_server URL...", file=sys.stderr)
        return 2
    try:
        specs = [parse_url(u) for u in args]
    except BadUrl as e:
        print("echo_server: %s" % e, file=sys.stderr)
        return 2
    return asyncio.run(serve(specs))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
