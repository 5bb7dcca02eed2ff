"""Pumps: move bytes between a socket and a sans-I/O :class:`ServerConnection`.

A pump is the :class:`~realtime_lab.core.ports.ConnectionPort` of one WebSocket
connection. It feeds the bytes it reads to the connection, hands the events to an
:class:`Endpoint` (the hub, or the echo of conformance runs), and writes what the
hub and the connection give it. All the protocol lives in
:mod:`realtime_lab.protocol.connection`; here there is only I/O, on public APIs:

* :class:`SocketPump` (plain TCP): the socket of the detached Tornado stream,
  with ``loop.add_reader`` while open and ``loop.add_writer`` only while the
  kernel's buffer is full. A write is one non-blocking ``socket.send``; what the
  kernel does not take waits in a :class:`SendBuffer` of whole frames. An idle
  connection keeps no Task, coroutine or Future: a reader callback, a socket and
  two small objects.
* :class:`StreamPump` (TLS, or an event loop without ``add_reader``): the same
  on Tornado's ``IOStream`` public methods (``read_bytes(partial=True)``, ``write``).

Closing: the close frame goes out after what was written before it, or next
when ``discard_unsent`` dropped the frames not started yet (what the hub does
for a slow consumer, so that it sees its close code, not a stalled stream). The
client has ``flush_timeout`` seconds to read up to the close frame, then
``close_timeout`` seconds to answer it; the pump reads on meanwhile and closes
the socket when the handshake is over or a timeout passed (the server closes TCP
first, RFC 6455 7.1.1). The endpoint hears ``closed`` once, however the
connection ended.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from tornado.iostream import IOStream, StreamClosedError

from realtime_lab.logthrottle import LogThrottle
from realtime_lab.protocol.connection import (
    BinaryMessage,
    ConnectionState,
    Pong,
    ServerConnection,
    TextMessage,
)
from realtime_lab.protocol.sendbuffer import SendBuffer
from realtime_lab.protocol.wire import JSON_WIRE, WireFormat

log = logging.getLogger("realtime_lab.transports")
_throttle = LogThrottle(log)

READ_SIZE = 64 * 1024  # per recv (below the allocator's mmap threshold)
#: Yield to the event loop after this much work (message bytes, plus a fixed cost
#: per event) read without waiting, so one flooding client cannot hog the loop.
YIELD_WORK = 256 * 1024
EVENT_COST = 1024
_IOV_MAX = 64  # chunks per sendmsg
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED


class Endpoint(Protocol):
    """What a pump reports to: :class:`~realtime_lab.core.hub.Hub` has these methods."""

    def receive_text(self, session: Any, text: str) -> Awaitable[None] | None: ...

    def receive_binary(self, session: Any, data: bytes) -> Awaitable[None] | None: ...

    def pong(self, session: Any) -> None: ...

    def closed(self, session: Any, code: int | None, reason: str) -> None: ...


class Pump:
    """What both pumps share: events to the endpoint, the closing handshake, drains.

    Subclasses do the I/O: ``_transmit`` (write or queue bytes), ``_reading``
    (start or stop reading), ``discard_unsent`` and ``_shut`` (close the transport).
    """

    __slots__ = ("close_timeout", "conn", "endpoint", "flush_timeout", "loop", "remote",
                 "session", "wire", "_answer_due", "_done", "_drains", "_paused", "_reported",
                 "_timer", "_waiting")

    def __init__(self, conn: ServerConnection, remote: str, *, close_timeout: float,
                 flush_timeout: float = 10.0, wire: WireFormat = JSON_WIRE) -> None:
        self.conn = conn
        self.remote = remote
        self.wire = wire
        self.close_timeout = close_timeout  # for the client's answer to our close frame
        self.flush_timeout = flush_timeout  # for the client to read up to our close frame
        self.loop = asyncio.get_running_loop()
        self.endpoint: Endpoint | None = None  # set by start()
        self.session: Any = None  # what the endpoint knows this connection as
        self._done = False  # the transport is closed
        self._reported = False  # the endpoint heard closed()
        self._waiting = False  # an asynchronous handler runs: read nothing more
        self._paused = False  # the rest of what was read waits for the next loop turn
        self._timer: asyncio.TimerHandle | None = None  # bounds the closing
        self._answer_due = False  # the close frame is written: waiting for the answer
        self._drains: list[Callable[[], None]] | None = None

    # ------------------------------------------------------------ ConnectionPort

    def write(self, data: bytes) -> int:
        """Send frames built by the hub (nothing once the connection is closing); return
        the bytes still buffered (the hub keeps it: no ``buffered_bytes()`` call per write)."""
        if self.conn.state is _OPEN:
            return self._transmit(data)
        return self.buffered_bytes()

    def buffered_bytes(self) -> int:
        """Bytes written but not yet taken by the operating system."""
        raise NotImplementedError

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written so far reached the OS (never
        once the connection is closed)."""
        if self._done:
            return
        if not self.buffered_bytes():
            self.loop.call_soon(callback)
            return
        if self._drains is None:
            self._drains = []
        self._drains.append(callback)

    def ping(self) -> None:
        data = self.conn.send_ping()
        if data:
            self._transmit(data)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake: the close frame after what was written (see
        :meth:`discard_unsent`); the client has ``flush_timeout`` to read up to it and
        ``close_timeout`` to answer."""
        data = self.conn.send_close(code, reason)
        if data and not self._done:
            self._transmit(data)
            self._after_events()

    def discard_unsent(self) -> int:
        """Drop the frames written but not started yet (never half a frame); return
        their bytes. A close frame written next goes right after what the OS has."""
        raise NotImplementedError

    # ------------------------------------------------------------ the endpoint

    def start(self, endpoint: Endpoint | None, session: Any,
              pending: Awaitable[Any] | None = None) -> None:
        """Deliver events to ``endpoint`` from now on; ``pending`` (an asynchronous
        admission) is awaited before the first one."""
        self.endpoint = endpoint
        self.session = session
        if pending is not None:
            self._wait(pending)
        self._process()

    def send_message(self, message: str | bytes) -> None:
        """Frame one message with the connection (compressed as agreed) and send it."""
        conn = self.conn
        data = conn.send_text(message) if isinstance(message, str) else conn.send_binary(message)
        if data:
            self._transmit(data)

    def _process(self) -> None:
        """Hand the endpoint the events read so far, within one loop turn's budget."""
        conn = self.conn
        work = 0
        while not self._waiting and not self._done:
            event = conn.next_event()
            out = conn.data_to_send()
            if out:
                self._transmit(out)
            if event is None:
                break
            work += EVENT_COST + self._dispatch(event)
            if work >= YIELD_WORK and conn.buffered:
                self._paused = True
                self.loop.call_soon(self._resume)
                break
        if not self._done:
            self._reading(not (self._waiting or self._paused))
            self._after_events()

    def _resume(self, _future: Any = None) -> None:
        self._paused = False
        self._process()

    def _received(self, data: bytes) -> None:
        """Bytes read from the transport: to the connection, then the events out."""
        try:
            self.conn.receive_data(data)
            self._process()
        except Exception:  # a bug, never the client's bytes: drop this connection only
            _throttle.log("pump_failed", logging.ERROR, "WebSocket connection of %s failed",
                          self.remote, exc_info=True)
            self.abort()

    def _dispatch(self, event: object) -> int:
        """Deliver one event; return its size (work done)."""
        endpoint = self.endpoint
        if endpoint is None:
            return 0
        try:
            if isinstance(event, TextMessage):
                result = endpoint.receive_text(self.session, event.data)
                size = len(event.data)
            elif isinstance(event, BinaryMessage):
                result = endpoint.receive_binary(self.session, event.data)
                size = len(event.data)
            else:
                if isinstance(event, Pong):
                    endpoint.pong(self.session)
                return 0
        except Exception:
            _throttle.log("endpoint_failed", logging.ERROR,
                          "failed to handle a message from %s", self.remote, exc_info=True)
            self.abort()
            return 0
        if result is not None and inspect.isawaitable(result):
            self._wait(result)
        return size

    def _wait(self, awaitable: Awaitable[Any]) -> None:
        """Read nothing more until ``awaitable`` is done (keeps each connection in order)."""
        self._waiting = True
        future = asyncio.ensure_future(awaitable)
        future.add_done_callback(self._waited)

    def _waited(self, future: asyncio.Future[Any]) -> None:
        self._waiting = False
        if not future.cancelled() and future.exception() is not None:
            _throttle.log("handler_failed", logging.ERROR, "asynchronous handler failed for %s",
                          self.remote, exc_info=future.exception())
        if not self._done:
            self._process()

    # ------------------------------------------------------------ closing

    def _after_events(self) -> None:
        """Act on the connection's state once it is closing: close the transport when
        CLOSED and everything is written; bound each wait with a timer."""
        state = self.conn.state
        if state is _OPEN or self._done:
            return
        if self.buffered_bytes():  # the client has not read up to our last frame yet
            if self._timer is None:
                self._timer = self.loop.call_later(self.flush_timeout, self.abort)
            return
        if state is _CLOSED:
            self._shut()
        elif not self._answer_due:  # our close frame is out: wait for the answer
            self._answer_due = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(self.close_timeout, self.abort)

    def _drained(self) -> None:
        """The OS took everything: run the drain callbacks; closing, maybe close."""
        drains, self._drains = self._drains, None
        self._after_events()
        if self._done:
            return
        for callback in drains or ():
            callback()

    def abort(self) -> None:
        """Close the transport now, whatever is unsent (timeout, failure)."""
        if not self._done:
            self._shut()

    def _eof(self) -> None:
        """The client closed its side without (or after) a close frame."""
        self.conn.receive_eof()
        self._shut()

    def _closed(self) -> None:
        """Called by ``_shut``: forget timers and callbacks, tell the endpoint once."""
        self._done = True
        self._drains = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reported:
            return
        self._reported = True
        endpoint, session = self.endpoint, self.session
        self.endpoint = self.session = None  # break pump -> session -> pump
        if endpoint is not None:
            conn = self.conn
            try:
                endpoint.closed(session, conn.close_code, conn.close_reason)
            except Exception:
                _throttle.log("closed_failed", logging.ERROR, "closing %s failed", self.remote,
                              exc_info=True)

    # ------------------------------------------------------------ I/O (subclasses)

    def _transmit(self, data: bytes) -> int:
        """Write or queue ``data``; return the bytes buffered after it."""
        raise NotImplementedError

    def _reading(self, on: bool) -> None:
        raise NotImplementedError

    def _shut(self) -> None:
        raise NotImplementedError


class SocketPump(Pump):
    """A pump on a plain TCP socket, driven by the event loop's reader and writer callbacks."""

    __slots__ = ("sock", "_fd", "_out", "_read_on", "_write_on")

    def __init__(self, sock: socket.socket, conn: ServerConnection, remote: str, *,
                 close_timeout: float, flush_timeout: float = 10.0,
                 wire: WireFormat = JSON_WIRE, answer: bytes = b"", early: bytes = b"") -> None:
        super().__init__(conn, remote, close_timeout=close_timeout, flush_timeout=flush_timeout,
                         wire=wire)
        sock.setblocking(False)
        self.sock = sock
        self._fd = sock.fileno()
        self._out: SendBuffer | None = None  # made when the kernel does not take it all
        self._read_on = False
        self._write_on = False
        if answer:
            self._transmit(answer, frames=False)
        if early:  # bytes the HTTP server read past the upgrade request
            conn.receive_data(early)

    def buffered_bytes(self) -> int:
        out = self._out
        return out.nbytes if out is not None else 0

    def _transmit(self, data: bytes, frames: bool = True) -> int:
        """One ``socket.send`` when nothing waits; what the kernel does not take is queued.
        Returns the bytes buffered after it."""
        if self._done:
            return 0
        out = self._out
        if out is not None:
            out.append(data, frames=frames)
            return out.nbytes
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost()
            return 0
        if sent < len(data):
            self._queue(data, sent, frames)
            return len(data) - sent
        return 0

    def _queue(self, data: bytes, sent: int, frames: bool) -> None:
        out = self._out = SendBuffer()
        out.append(data, frames=frames)
        out.advance(sent)
        if not self._write_on:
            self._write_on = True
            self.loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        out = self._out
        sock = self.sock
        while out:
            try:
                sent = sock.sendmsg(out.chunks(_IOV_MAX)) if _SENDMSG else sock.send(out.peek())
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lost()
                return
            out.advance(sent)
        self._out = None
        self._write_on = False
        self.loop.remove_writer(self._fd)
        self._drained()

    def discard_unsent(self) -> int:
        return self._out.drop_frames() if self._out is not None else 0

    def _reading(self, on: bool) -> None:
        if on != self._read_on:
            self._read_on = on
            if on:
                self.loop.add_reader(self._fd, self._on_readable)
            else:
                self.loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost()
            return
        if not data:
            self._eof()
            return
        self._received(data)

    def _lost(self) -> None:
        """A socket error: the connection is gone (reported on the next loop turn, so a
        write inside the hub's flush never re-enters the hub)."""
        if not self._done:
            self._close_socket()
            self.loop.call_soon(self._closed)

    def _shut(self) -> None:
        if not self._done:
            self._close_socket()
            self._closed()

    def _close_socket(self) -> None:
        self._done = True
        if self._read_on:
            self._read_on = False
            self.loop.remove_reader(self._fd)
        if self._write_on:
            self._write_on = False
            self.loop.remove_writer(self._fd)
        self._out = None
        self.sock.close()


_SENDMSG = hasattr(socket.socket, "sendmsg")


class StreamPump(Pump):
    """A pump on a Tornado ``IOStream`` (TLS), through its public methods only.

    One frame at a time is handed to ``IOStream.write`` (which cannot take bytes
    back); the rest waits in a :class:`SendBuffer`, so at a close only the frame
    under way is finished and the frames after it can still be dropped.
    """

    __slots__ = ("stream", "_flight", "_out", "_read_on", "_read_pending")

    def __init__(self, stream: IOStream, conn: ServerConnection, remote: str, *,
                 close_timeout: float, flush_timeout: float = 10.0,
                 wire: WireFormat = JSON_WIRE, answer: bytes = b"") -> None:
        super().__init__(conn, remote, close_timeout=close_timeout, flush_timeout=flush_timeout,
                         wire=wire)
        self.stream = stream
        self._flight = 0  # bytes handed to IOStream.write not yet written
        self._out = SendBuffer()
        self._read_on = False
        self._read_pending = False
        stream.set_close_callback(self._stream_closed)
        if answer:
            self._out.append(answer, frames=False)
            self._pump_out()

    def buffered_bytes(self) -> int:
        return self._flight + self._out.nbytes

    def _transmit(self, data: bytes) -> int:
        if not self._done:
            self._out.append(data)
            if not self._flight:
                self._pump_out()
        return self.buffered_bytes()

    def _pump_out(self) -> None:
        out = self._out
        if not out or self._done:
            return
        chunk = bytes(out.next_frame())  # one frame: the next ones stay droppable
        out.advance(len(chunk))
        self._flight = len(chunk)
        try:
            future = self.stream.write(chunk)
        except StreamClosedError:
            return  # the close callback tells the rest
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._flight = 0
        if future.exception() is not None or self._done:
            return
        if self._out:
            self._pump_out()
        else:
            self._drained()

    def discard_unsent(self) -> int:
        return self._out.drop_frames()

    def _reading(self, on: bool) -> None:
        self._read_on = on
        if on and not self._read_pending and not self._done:
            self._read_pending = True
            try:
                future = cast("asyncio.Future[bytes]",
                              self.stream.read_bytes(READ_SIZE, partial=True))
            except StreamClosedError:
                return
            future.add_done_callback(self._on_read)

    def _on_read(self, future: asyncio.Future[bytes]) -> None:
        self._read_pending = False
        if future.exception() is not None:  # StreamClosedError: the close callback runs
            return
        self._received(future.result())

    def _stream_closed(self) -> None:
        if not self._done:
            self.conn.receive_eof()
            self._closed()

    def _shut(self) -> None:
        if not self._done:
            self._done = True
            self.stream.close()
            self._closed()


__all__ = ["Endpoint", "Pump", "SocketPump", "StreamPump"]
