"""The write path of one Tornado WebSocket connection: :class:`TornadoPort`.

The hub hands a port whole frames (prebuilt, often shared by every subscriber of
a broadcast). The port sends what the kernel takes at once with one
``socket.send`` (plain TCP), gives IOStream the rest of the frame the kernel
stopped in, and holds the frames after it until IOStream has written that one.
So at any time the bytes not yet in the kernel are: at most one frame in
IOStream (begun, or the next to go), then whole frames held here. That is what
lets a slow consumer be closed properly (docs/architecture.md, "Slow
consumers"): :meth:`TornadoPort.discard_unsent` drops the held frames (never
half a frame), and :meth:`TornadoPort.close` sends the close frame once the
frame in flight is written, waiting at most ``close_flush_timeout`` for a
client that does not read.

Only public Tornado APIs here: ``IOStream.socket``, ``write`` (its Future says
when the bytes reached the kernel), ``writing()`` and ``closed()``. The backlog
the hub reads (:meth:`TornadoPort.buffered_bytes`) is counted by the port itself:
the frame in flight as it was handed to IOStream, until IOStream has written it,
plus the held frames.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketClosedError

from realtime_lab.protocol.wire import JSON_WIRE

if TYPE_CHECKING:
    from asyncio import Future

    from tornado.websocket import WebSocketHandler

PING_FRAME = b"\x89\x00"  # FIN, opcode 9 (ping), unmasked, empty: what handler.ping(b"") sends


def frame_end(data: bytes | memoryview, offset: int) -> int:
    """Where the frame holding byte ``offset`` of ``data`` (whole unmasked frames) ends;
    for an ``offset`` where a frame starts, where that frame ends. ``len(data)`` if
    the headers run past the end (not frames: nothing is split then)."""
    pos, size = 0, len(data)
    while pos < size:
        length = data[pos + 1] & 0x7F if pos + 1 < size else 0
        head = 2
        if length == 126:
            if pos + 4 > size:
                return size
            (length,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif length == 127:
            if pos + 10 > size:
                return size
            (length,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
        pos += head + length
        if pos > offset:
            return min(pos, size)
    return size


class TornadoPort:
    """The :class:`~realtime_lab.core.ports.ConnectionPort` of one Tornado connection."""

    __slots__ = ("close_timeout", "closing", "direct", "handler", "held", "in_flight", "remote",
                 "stream", "wire")

    def __init__(self, handler: WebSocketHandler, stream: IOStream, remote: str,
                 close_timeout: float = 10.0) -> None:
        self.handler = handler
        self.stream = stream
        self.wire = JSON_WIRE  # set from the handshake (subprotocol, permessage-deflate)
        self.remote = remote
        # Plain TCP streams only: TLS has its own buffering (SSLIOStream).
        self.direct = type(stream) is IOStream
        self.held: list[bytes | memoryview] | None = None  # whole frames behind the one in flight
        # (IOStream.write's Future, bytes handed to IOStream) of the frame in flight
        self.in_flight: tuple[Future[None], int] | None = None
        self.closing: object = None  # the close_flush_timeout timer, once close() waits
        self.close_timeout = close_timeout  # ServerOptions.close_flush_timeout

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | memoryview) -> None:
        """Send whole frames: now if the socket takes them, else in order behind the rest.

        While nothing waits, one non-blocking ``send()`` on the socket writes the
        bytes without IOStream's per-write Future and bookkeeping. What the kernel
        did not take: the rest of the frame it stopped in goes to ``IOStream.write``
        (which waits for the socket), the frames after it are held until IOStream
        has written it, then sent the same way. On a socket error the data goes to
        ``IOStream.write`` too, which meets the same error and closes the stream
        (``on_close`` then tells the hub).
        """
        held = self.held
        if held is not None:
            held.append(data)
            if self.stream.writing():  # the frame in flight is not written yet
                return
            # IOStream has written it and _written has not run yet: go on now, not a
            # loop turn later (a stale _written finds nothing held, or holds again)
            self.held = None
            data = b"".join(held)
        stream = self.stream
        if stream.closed():
            return
        if stream.writing():  # IOStream is still writing an earlier frame
            self._hold([data], stream.write(b""))
            return
        sent = 0
        if self.direct:
            try:
                sent = stream.socket.send(data)
            except OSError:  # EAGAIN or a dead socket: IOStream deals with it
                sent = 0
            if sent >= len(data):
                return
        end = frame_end(data, sent)
        view = memoryview(data)
        try:
            written = stream.write(view[sent:end])
        except StreamClosedError:  # on_close follows and tells the hub
            return
        self.in_flight = (written, end - sent)
        if end < len(data):
            self._hold([view[end:]], written)

    def _hold(self, frames: list[bytes | memoryview], written: Future[None]) -> None:
        self.held = frames
        written.add_done_callback(self._written)

    def _written(self, future: Future[None]) -> None:
        """IOStream has written what it had: send the held frames."""
        held, self.held = self.held, None
        if held is None or future.cancelled() or future.exception() is not None:
            return  # discarded, or the stream is closed
        self.write(held[0] if len(held) == 1 else b"".join(held))

    def buffered_bytes(self) -> int:
        """Bytes written but not yet accepted by the kernel: the frame in flight (as
        handed to IOStream, until IOStream has written all of it) and the held frames."""
        in_flight, held = self.in_flight, self.held
        size = 0
        if in_flight is not None:
            if in_flight[0].done():
                self.in_flight = None
            else:
                size = in_flight[1]
        return size + (sum(map(len, held)) if held else 0)

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written so far has reached the OS."""
        try:
            future = self.stream.write(b"")
        except StreamClosedError:
            return
        future.add_done_callback(lambda _f: self._drained(callback))

    def _drained(self, callback: Callable[[], None]) -> None:
        if not self.stream.closed() and (self.held is not None or self.stream.writing()):
            self.when_drained(callback)  # held frames went to IOStream meanwhile
        else:
            callback()

    def discard_unsent(self) -> int:
        """Drop the held frames, none of which the kernel has begun; return their bytes.

        The frame in IOStream (begun by the kernel, or the next to go) stays whole.
        """
        held, self.held = self.held, None
        return sum(map(len, held)) if held else 0

    # ------------------------------------------------------------------ control

    def ping(self) -> None:
        """An empty ping frame; on plain TCP written like any other bytes (see write)."""
        if not self.direct:
            with contextlib.suppress(WebSocketClosedError):
                self.handler.ping(b"")
            return
        conn = self.handler.ws_connection
        if conn is not None and not conn.is_closing():
            self.write(PING_FRAME)

    def close(self, code: int, reason: str) -> None:
        """Send the close frame after everything written so far.

        While the client has not read up to it, wait (the close frame would only
        queue behind the same bytes); after ``close_timeout`` seconds of that, drop
        the connection. Once the close frame is written, Tornado's closing handshake
        takes over (it drops the connection if the client does not answer in 5 s).
        """
        if self.closing is not None or self.stream.closed():
            return
        if self.held is None and not self.stream.writing():
            self.closing = True
            self.handler.close(code, reason)
            return
        loop = IOLoop.current()
        timer = self.closing = loop.call_later(self.close_timeout, self.abort)

        def flushed() -> None:
            loop.remove_timeout(timer)
            if not self.stream.closed():
                self.handler.close(code, reason)

        self.when_drained(flushed)

    def abort(self) -> None:
        """Drop the connection now (the client stopped reading)."""
        self.held = self.in_flight = None
        self.stream.close()


__all__ = ["PING_FRAME", "TornadoPort", "frame_end"]
