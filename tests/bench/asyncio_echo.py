"""Reference echo servers for the benchmarks: asyncio's Protocol echo, and
the same on uvloop with --uvloop. Prints `listening on URL` like
echo_server, honours flow control, exits on SIGINT/SIGTERM.

    python3 asyncio_echo.py [--uvloop] tcp://127.0.0.1:0 | unix://PATH
"""

import asyncio
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        self.transport.close()
        return True


async def main(url):
    loop = asyncio.get_running_loop()
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        server = await loop.create_unix_server(Echo, path, backlog=1024)
        shown = url
    else:
        host, port = url[len("tcp://"):].rsplit(":", 1)
        server = await loop.create_server(Echo, host, int(port), backlog=1024)
        shown = "tcp://%s:%d" % server.sockets[0].getsockname()[:2]
    print("listening on", shown, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    server.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--uvloop":
        import uvloop
        uvloop.install()
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(args[0]))
