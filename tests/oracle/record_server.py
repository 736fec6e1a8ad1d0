#!/usr/bin/env python3
"""The asyncio half of the differential test: the same server as
record_server.cpp (same options, same output), written with asyncio's
transports and protocols. differential.py plays one peer against both.

asyncio has no framing layer: with --lines, `Lines` splits the stream into
lines for the recorder and ends each line it writes, as tact's line
framing does (a last line without its delimiter comes as a frame at EOF;
a pause stops the frames already split)."""

import argparse
import asyncio
import signal
import ssl
import sys
import zlib


def reason_class(exc):
    if exc is None:
        return "none"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "pipe"
    return "other:" + type(exc).__name__


class Lines(asyncio.Protocol):
    """Line framing in front of `inner`, which sees a transport of frames."""

    def __init__(self, inner):
        self.inner = inner
        self.buf = bytearray()
        self.paused = False
        self.eof = False
        self.done = False

    # The transport `inner` sees.
    def write(self, frame):
        self.t.write(frame + b"\n")

    def write_eof(self):
        self.t.write_eof()

    # After close() or abort(), as on asyncio's transports, the protocol
    # gets no more data: frames split already are dropped.
    def close(self):
        self.done = True
        self.t.close()

    def abort(self):
        self.done = True
        self.t.abort()

    def pause_reading(self):
        self.paused = True
        self.t.pause_reading()

    def resume_reading(self):
        self.paused = False
        self.t.resume_reading()
        self.pump()

    # The protocol of the transport below.
    def connection_made(self, transport):
        self.t = transport
        self.inner.connection_made(self)

    def data_received(self, data):
        self.buf += data
        self.pump()

    def pump(self):
        while not self.paused and not self.done:
            at = self.buf.find(b"\n")
            if at < 0:
                break
            frame = bytes(self.buf[:at])
            del self.buf[:at + 1]
            self.inner.data_received(frame)
        if self.eof and not self.paused and not self.done:
            self.done = True
            if self.buf:
                frame, self.buf = bytes(self.buf), bytearray()
                self.inner.data_received(frame)
            if not self.inner.eof_received():
                self.t.close()

    def eof_received(self):
        self.eof = True
        self.pump()
        return True

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()

    def connection_lost(self, exc):
        self.inner.connection_lost(exc)


class Recorder(asyncio.Protocol):
    def __init__(self, opts, loop):
        self.opts = opts
        self.loop = loop
        self.events = []
        self.n = 0
        self.h = 0
        self.first = True

    def add(self, event):
        if event == "data" and self.events and self.events[-1] == "data":
            return
        self.events.append(event)

    def connection_made(self, transport):
        self.t = transport
        self.add("made")
        if self.opts.greeting:
            transport.write(self.opts.greeting.encode())
        if self.opts.write_eof is not None:
            transport.write(self.opts.write_eof.encode())
            transport.write_eof()

    def data_received(self, data):
        self.add("data")
        if self.opts.lines:
            # A frame is counted with its delimiter, so that n and h are
            # those of the stream's prefix.
            data = data + b"\n"
        self.n += len(data)
        self.h = zlib.crc32(data, self.h)
        if self.first:
            self.first = False
            if self.opts.pause_first >= 0:
                self.t.pause_reading()
                self.loop.call_later(self.opts.pause_first / 1000,
                                     self.t.resume_reading)
            if self.opts.write_on_data > 0:
                chunk = b"w" * (16 * 1024)
                done = 0
                while done < self.opts.write_on_data:
                    self.t.write(chunk[:self.opts.write_on_data - done])
                    done += len(chunk)
                if self.opts.then == "close":
                    self.t.close()
                elif self.opts.then == "abort":
                    self.t.abort()

    def eof_received(self):
        self.add("eof")
        if self.opts.keep_open:
            self.t.write(b"bye" if self.opts.lines else b"bye\n")
            self.t.close()
        return self.opts.keep_open

    def pause_writing(self):
        self.add("pause_writing")

    def resume_writing(self):
        self.add("resume_writing")

    def connection_lost(self, exc):
        self.add("lost:" + reason_class(exc))
        print("%sn=%d h=%08x" % ("".join(e + " " for e in self.events),
                                 self.n, self.h), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", nargs=2)
    ap.add_argument("--greeting", default="")
    ap.add_argument("--keep-open", action="store_true")
    ap.add_argument("--pause-first", type=int, default=-1)
    ap.add_argument("--write-on-data", type=int, default=0)
    ap.add_argument("--then", default="")
    ap.add_argument("--write-eof")
    ap.add_argument("--lines", action="store_true")
    opts = ap.parse_args()
    loop = asyncio.get_running_loop()
    ctx = None
    if opts.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*opts.tls)
    def factory():
        if opts.lines:
            return Lines(Recorder(opts, loop))
        return Recorder(opts, loop)

    srv = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx)
    port = srv.sockets[0].getsockname()[1]
    print("listening on tcp://127.0.0.1:%d" % port, flush=True)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    await stop
    srv.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
