"""One HTTP/2 connection: the ``h2`` state machine on a Tornado ``IOStream``.

:class:`H2Session` reads bytes from the stream, gives them to ``h2`` and hands
each HTTP/2 stream's events to its owner: an :class:`~.request.H2Request` (an
ordinary request served by the Tornado application through
``httputil.HTTPConnection``) or, after an accepted extended CONNECT (RFC 8441),
a :class:`~.websocket.WebSocketStream` (the hub's connection port).

The session owns flow control and the outgoing bytes of every stream:

* Inbound: each stream's window is :data:`STREAM_WINDOW`, the connection's
  :data:`MAX_STREAMS` times that, and received data is acknowledged (WINDOW_UPDATE)
  only when the stream's owner consumed it, so a stream whose application stops
  reading stops its client alone.
* Outbound: a :class:`~.sender.DataSender` frames each write as DATA at once
  when the windows allow it; what they do not allow waits per stream and is
  framed round robin as they open. Everything framed in a loop turn goes out in
  one socket write. A stream with more than :data:`STREAM_SEND_CAP` unsent bytes
  behind the chunk under way is reset (``CANCEL``) alone. While the socket has more than
  :data:`WRITE_HIGH_WATER` bytes not yet written, nothing more is framed and
  nothing more is read.

Protocol errors (a bad frame, a bad header block, a flow-control violation)
are answered by ``h2`` with GOAWAY and their RFC 9113 code, then the
connection closes; stream errors reset that stream only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from tornado.iostream import IOStream
from tornado.iostream import StreamClosedError as IOStreamClosed

from realtime_lab.logthrottle import LogThrottle
from realtime_lab.transports.http2.sender import STREAM_SEND_CAP, DataSender

log = logging.getLogger("realtime_lab.transports")
_throttle = LogThrottle(log, interval=60.0)

#: Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE): what a client may
#: send on one stream before the application consumed it.
STREAM_WINDOW = 256 * 1024
#: SETTINGS_MAX_CONCURRENT_STREAMS: streams one client may have open at once.
MAX_STREAMS = 128
#: The connection's receive window: every stream can fill its own window.
CONNECTION_WINDOW = STREAM_WINDOW * MAX_STREAMS
#: Bytes handed to the socket but not written yet above which the session stops
#: framing DATA and reading.
WRITE_HIGH_WATER = 256 * 1024
READ_SIZE = 64 * 1024
#: Seconds a closing connection (GOAWAY sent) is read and discarded before it is closed.
LINGER = 2.0
_DEFAULT_WINDOW = 65535


class StreamOwner(Protocol):
    """What the session tells the owner of one stream (a request or a WebSocket)."""

    def data_received(self, data: bytes, flow: int) -> None: ...

    def end_received(self) -> None: ...

    def reset_received(self) -> None: ...


class RequestFactory(Protocol):
    """Makes the owner of a new stream (:class:`~.request.RequestRouter`)."""

    def __call__(self, session: H2Session, stream_id: int,
                 headers: list[tuple[str, str]]) -> StreamOwner | None: ...


class FrameGuard:
    """Finds frame headers in the bytes a client sends, so that a frame longer than
    SETTINGS_MAX_FRAME_SIZE is refused at its header (``h2`` would first buffer its
    whole body, up to 16 MiB)."""

    __slots__ = ("max_size", "_head", "_skip")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._skip = 24  # the connection preface (h2 checks it)
        self._head = b""

    def too_large(self, data: bytes) -> bool:
        """Follow ``data``; True once a frame header announces more than ``max_size``."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = 9 - len(self._head)
            self._head += data[pos:pos + need]
            pos += need
            if len(self._head) < 9:
                return False
            length = int.from_bytes(self._head[:3], "big")
            self._head = b""
            if length > self.max_size:
                return True
            self._skip = length
        return False


class H2Session:
    """The server side of one HTTP/2 connection (see the module docstring)."""

    def __init__(self, stream: IOStream, remote: str, make_owner: RequestFactory, *,
                 websockets: bool = True, max_header_bytes: int = 64 * 1024,
                 on_close: Callable[[H2Session], None] | None = None) -> None:
        self.stream = stream
        self.remote = remote
        self.websockets = websockets
        self.make_owner = make_owner
        self.on_close = on_close
        self.loop = asyncio.get_running_loop()
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_bytes,
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 1 if websockets else 0,
        })
        self.owners: dict[int, StreamOwner] = {}
        self.sender = DataSender(self.h2)
        self._flush_due = False
        self._reading = False
        self._read_blocked = False
        self._written = 0  # bytes handed to IOStream.write
        self._landed = 0  # of which written to the socket
        self._goaway = False  # closing: GOAWAY sent, reading only to discard
        self._sending = True  # h2's connection is open: DATA may be framed
        self._peer_reset: set[int] = set()  # streams reset by the events being handled
        self._guard = FrameGuard(self.h2.max_inbound_frame_size)
        self.closed = False
        self.requests = 0  # streams opened by the client (for tests and inspection)

    # ------------------------------------------------------------ life

    def start(self, early: bytes = b"") -> H2Session:
        """Send the server preface (SETTINGS with ENABLE_CONNECT_PROTOCOL) and read."""
        self.stream.set_close_callback(self._stream_closed)
        self.stream.set_nodelay(True)  # small frames (WINDOW_UPDATE, pongs) go out at once
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._write_pending()
        if early:
            self._receive(early)
        self._read()
        return self

    def close(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY with ``code``, then close the connection once it is written (the
        server is stopping: no lingering)."""
        if self.closed:
            return
        if not self._goaway and self._settle():
            self._stop_sending()
            self.h2.close_connection(error_code=code)
            self._write_pending()
        self._goaway = True
        try:
            self.stream.write(b"").add_done_callback(lambda _f: self.stream.close())
        except IOStreamClosed:
            return

    def _close_after_write(self) -> None:
        """Once our last frame (GOAWAY) is written, shut our side and read on, discarding,
        until the client closes or :data:`LINGER` seconds pass: closing a socket with
        unread input sends a TCP reset, which can destroy the GOAWAY in flight."""
        if self.closed or self._goaway:
            return
        self._goaway = True
        self._stop_sending()
        self.loop.call_later(LINGER, self.stream.close)
        if self._written == self._landed:
            self._shut_write()
            return
        try:
            future = self.stream.write(b"")
        except IOStreamClosed:
            return
        future.add_done_callback(lambda _f: self._shut_write())

    def _shut_write(self) -> None:
        sock = self.stream.socket
        if sock is None or self.stream.closed():
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.stream.close()
            return
        self._read_blocked = False
        self._read()

    def _stream_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        owners, self.owners = self.owners, {}
        self.sender.clear()
        for owner in owners.values():
            try:
                owner.reset_received()
            except Exception:
                _throttle.log("h2_owner_failed", logging.ERROR, "closing an HTTP/2 stream of %s "
                              "failed", self.remote, exc_info=True)
        if self.on_close is not None:
            self.on_close(self)

    # ------------------------------------------------------------ reading

    def _read(self) -> None:
        if self._reading or self.closed:
            return
        if self._written - self._landed > WRITE_HIGH_WATER:
            self._read_blocked = True  # the client does not read what we send: wait
            return
        self._reading = True
        try:
            future = cast("asyncio.Future[bytes]", self.stream.read_bytes(READ_SIZE, partial=True))
        except IOStreamClosed:
            return
        future.add_done_callback(self._on_read)

    def _on_read(self, future: asyncio.Future[bytes]) -> None:
        self._reading = False
        if future.exception() is not None:  # closed: the close callback tells the owners
            return
        self._receive(future.result())
        self._read()

    def _receive(self, data: bytes) -> None:
        if self._goaway:  # closing: what the client still sends is discarded
            return
        if not self._settle():
            return
        if self._guard.too_large(data):
            _throttle.log("h2_frame_size", logging.INFO, "HTTP/2 frame over %d bytes from %s",
                          self._guard.max_size, self.remote)
            self.h2.close_connection(error_code=ErrorCodes.FRAME_SIZE_ERROR)
            self._write_pending()
            self._close_after_write()
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:  # h2 queued GOAWAY with the error's code
            _throttle.log("h2_protocol_error", logging.INFO, "HTTP/2 protocol error from %s: %s",
                          self.remote, exc)
            self._write_pending()
            self._close_after_write()
            return
        for event in events:  # what h2 closed already: nothing more is framed there
            if isinstance(event, StreamReset):
                self._peer_reset.add(event.stream_id)
                self.sender.forget(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self._stop_sending()
        for event in events:
            try:
                self._handle(event)
            except Exception:  # a bug: this stream only (never a client's doing)
                sid = getattr(event, "stream_id", 0) or 0
                _throttle.log("h2_event_failed", logging.ERROR, "HTTP/2 event %s from %s failed",
                              type(event).__name__, self.remote, exc_info=True)
                if sid:
                    self.reset(sid, ErrorCodes.INTERNAL_ERROR)
        self._peer_reset.clear()
        self._write_pending()

    def _handle(self, event: object) -> None:
        if isinstance(event, DataReceived):
            owner = self.owners.get(event.stream_id)
            if owner is None:  # a stream we already left: give the window back
                self.acknowledge(event.stream_id, event.flow_controlled_length)
            else:
                owner.data_received(event.data, event.flow_controlled_length)
        elif isinstance(event, RequestReceived):
            self.requests += 1
            headers = [(str(name), str(value)) for name, value in event.headers or ()]
            owner = self.make_owner(self, event.stream_id, headers)
            if owner is not None:
                self.owners[event.stream_id] = owner
        elif isinstance(event, StreamEnded):  # also after DataReceived / RequestReceived
            self._ended(event.stream_id)
        elif isinstance(event, StreamReset):
            self._forget(event.stream_id)
            owner = self.owners.pop(event.stream_id, None)
            if owner is not None:
                owner.reset_received()
        elif isinstance(event, WindowUpdated):
            self.sender.window_opened(event.stream_id, event.delta)
            self._schedule_flush()
        elif isinstance(event, RemoteSettingsChanged):
            self._schedule_flush()
        elif isinstance(event, TrailersReceived):
            self.reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)  # none of ours take trailers
        elif isinstance(event, ConnectionTerminated):
            self._close_after_write()

    def _ended(self, stream_id: int) -> None:
        owner = self.owners.get(stream_id)
        if owner is not None:
            owner.end_received()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """``size`` flow-controlled bytes of ``stream_id`` were consumed: open the windows."""
        if size > 0 and not self.closed:
            self.h2.acknowledge_received_data(size, stream_id)
            self._write_soon()

    # ------------------------------------------------------------ writing

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]],
                     end_stream: bool = False) -> bool:
        """Answer a stream's request head; False when the stream is gone."""
        if self.closed or not self._settle():
            return False
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except (StreamClosedError, ProtocolError):
            return False
        self._write_soon()
        return True

    def send(self, stream_id: int, data: bytes, frames: bool = True) -> None:
        """Send ``data`` on ``stream_id``: framed as DATA now if the windows allow,
        else when they open; the stream is reset when too much waits."""
        if not self._sending or stream_id not in self.owners or (
                self._peer_reset and stream_id in self._peer_reset):
            return
        if not self.sender.queue(stream_id, data, frames=frames, frame_now=self._may_frame()):
            _throttle.log("h2_send_cap", logging.WARNING, "reset an HTTP/2 stream of %s: more "
                          "than %d bytes unsent (STREAM_SEND_CAP)", self.remote, STREAM_SEND_CAP)
            owner = self.owners.get(stream_id)
            self.reset(stream_id, ErrorCodes.CANCEL)
            if owner is not None:
                owner.reset_received()
            return
        self._schedule_flush()

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM after what is queued on ``stream_id``; the session forgets its owner."""
        self.owners.pop(stream_id, None)
        if self._sending:
            self.sender.end(stream_id)
            self._schedule_flush()

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """RST_STREAM ``stream_id`` now, dropping what it had unsent; forget its owner."""
        self.owners.pop(stream_id, None)
        self.sender.forget(stream_id)
        if self.closed or not self._settle():
            return
        try:
            self.h2.reset_stream(stream_id, error_code=code)
        except (StreamClosedError, ProtocolError):
            return
        self._write_soon()

    def unsent(self, stream_id: int) -> int:
        return self.sender.unsent(stream_id)

    def drop_unsent(self, stream_id: int) -> int:
        return self.sender.drop_unsent(stream_id)

    def when_drained(self, stream_id: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``stream_id`` has nothing unsent (soon, if so now)."""
        if not self.sender.drained(stream_id, callback):
            self.loop.call_soon(callback)

    def _forget(self, stream_id: int) -> None:
        self.sender.forget(stream_id)

    def _may_frame(self) -> bool:
        """Below :data:`WRITE_HIGH_WATER` bytes framed but not written to the socket."""
        return self._written - self._landed + self.sender.output_bytes <= WRITE_HIGH_WATER

    def _settle(self) -> bool:
        """Bring h2's windows up to date (before any call into h2 that looks at them or
        at a stream's state); False, and the connection closing, if h2 refused that."""
        try:
            self.sender.settle()
        except (ProtocolError, StreamClosedError):  # a bug of ours, never the client's doing
            self._out_of_step()
            return False
        return True

    def _out_of_step(self) -> None:
        _throttle.log("h2_settle_failed", logging.ERROR, "HTTP/2 flow control of %s out of step",
                      self.remote, exc_info=True)
        self._stop_sending()
        self.h2.close_connection(error_code=ErrorCodes.INTERNAL_ERROR)
        self._write_pending()
        self._close_after_write()

    def _stop_sending(self) -> None:
        """h2's connection is closed (GOAWAY sent or received): no more DATA."""
        self._sending = False
        self.sender.clear()

    def _schedule_flush(self) -> None:
        if not self._flush_due and not self.closed:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _write_soon(self) -> None:
        self.sender.collect()  # h2's frames, in order with the DATA framed after them
        self._schedule_flush()

    def _flush(self) -> None:
        """Frame what waits within the windows, round robin; one socket write."""
        self._flush_due = False
        if self.closed:
            return
        sender = self.sender
        try:
            while sender.ready and self._sending and self._may_frame():
                if not sender.frame_ready():
                    break
        except (ProtocolError, StreamClosedError):  # settling before an END_STREAM failed
            self._out_of_step()
            return
        self._write_pending()

    def _write_pending(self) -> None:
        data = self.sender.take()
        if not data or self.closed:
            return
        try:
            future = self.stream.write(data)
        except IOStreamClosed:
            return
        self._written += len(data)
        future.add_done_callback(functools.partial(self._landed_upto, self._written))

    def _landed_upto(self, end: int, future: asyncio.Future[Any]) -> None:
        if future.exception() is not None or self.closed:
            return
        self._landed = max(self._landed, end)
        if self.sender.ready:
            self._schedule_flush()
        if self._read_blocked and self._written - self._landed <= WRITE_HIGH_WATER:
            self._read_blocked = False
            self._read()


__all__ = ["CONNECTION_WINDOW", "H2Session", "MAX_STREAMS", "STREAM_SEND_CAP", "STREAM_WINDOW",
           "StreamOwner"]
