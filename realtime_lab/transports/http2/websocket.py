"""A WebSocket on one HTTP/2 stream (RFC 8441): the hub's connection port for that stream.

:class:`WebSocketStream` is a :class:`~realtime_lab.transports.pump.Pump`, like
the pumps of HTTP/1.1 sockets: the same sans-I/O
:class:`~realtime_lab.protocol.connection.ServerConnection` reads the client's
frames and the same closing handshake runs. Only the I/O differs: frames go out
as DATA on the stream through the :class:`~.session.H2Session` (flow control,
round robin, the per-stream cap), and received DATA is fed to the connection
only while the pump reads, then acknowledged as the connection consumes it: a
stream whose handler is busy (an asynchronous hook) or whose client floods it
holds back its own client, not the other streams.

END_STREAM from the client is the TCP FIN of RFC 6455 (the connection ends,
1006 when no close frame came); RST_STREAM is an abort. Our END_STREAM follows
the last frame once the closing handshake is over; an abort (timeouts) sends
RST_STREAM ``CANCEL``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from realtime_lab.protocol.connection import ConnectionState, ServerConnection
from realtime_lab.protocol.wire import JSON_WIRE, WireFormat
from realtime_lab.transports.pump import Pump

if TYPE_CHECKING:
    from realtime_lab.transports.http2.session import H2Session


class WebSocketStream(Pump):
    """A WebSocket on ``stream_id`` of ``session``, after its ``:status 200``."""

    __slots__ = ("h2", "stream_id", "_acked", "_armed", "_ended", "_fed", "_feeding", "_inbox",
                 "_read_on", "_remote_done")

    def __init__(self, session: H2Session, stream_id: int, conn: ServerConnection, remote: str,
                 *, close_timeout: float, flush_timeout: float = 10.0,
                 wire: WireFormat = JSON_WIRE) -> None:
        super().__init__(conn, remote, close_timeout=close_timeout, flush_timeout=flush_timeout,
                         wire=wire)
        self.h2 = session
        self.stream_id = stream_id
        self._inbox: deque[bytes] = deque()  # DATA received, not fed to the connection yet
        self._fed = 0  # bytes fed to the connection
        self._acked = 0  # of which acknowledged to the client (consumed)
        self._read_on = False
        self._feeding = False
        self._ended = False  # the client's END_STREAM arrived (after what is in the inbox)
        self._remote_done = False  # END_STREAM or RST_STREAM from the client
        self._armed = False  # the session will call _fire when the stream drains

    # ------------------------------------------------------------ the session's calls

    def data_received(self, data: bytes, flow: int) -> None:
        """DATA on the stream: ``flow`` counts padding too (acknowledged at once)."""
        if flow > len(data):
            self.h2.acknowledge(self.stream_id, flow - len(data))
        if self._done:
            self.h2.acknowledge(self.stream_id, len(data))
            return
        if data:
            self._inbox.append(data)
        if self._read_on:
            self._feed()

    def end_received(self) -> None:
        self._ended = self._remote_done = True
        if self._read_on:
            self._feed()

    def reset_received(self) -> None:
        """RST_STREAM from the client, or the connection is gone: an abort (1006)."""
        self._remote_done = True
        if not self._done:
            self._inbox.clear()
            self.conn.receive_eof()
            self._closed()

    # ------------------------------------------------------------ Pump I/O

    def buffered_bytes(self) -> int:
        return self.h2.unsent(self.stream_id)

    def discard_unsent(self) -> int:
        return self.h2.drop_unsent(self.stream_id)

    def when_drained(self, callback: Callable[[], None]) -> None:
        super().when_drained(callback)
        if self._drains:
            self._arm()

    def _transmit(self, data: bytes) -> int:
        if self._done:
            return 0
        self.h2.send(self.stream_id, data)
        if self.conn.state is not ConnectionState.OPEN:  # closing: _drained decides
            self._arm()
        return self.h2.unsent(self.stream_id)

    def _after_events(self) -> None:
        if self.conn.state is not ConnectionState.OPEN and not self._done \
                and self.buffered_bytes():
            self._arm()  # closing behind frames still unsent: wait for them to go
        super()._after_events()

    def _arm(self) -> None:
        """Have the session call ``_drained`` when the stream has nothing unsent (only
        when someone waits for that: a write per turn costs no callback)."""
        if not self._armed:
            self._armed = True
            self.h2.when_drained(self.stream_id, self._fire)

    def _fire(self) -> None:
        self._armed = False
        self._drained()

    def _reading(self, on: bool) -> None:
        self._read_on = on
        if on and not self._feeding and (self._inbox or self._ended):
            self._feed()

    def _feed(self) -> None:
        """Feed the inbox to the connection while the pump reads; acknowledge what it took."""
        self._feeding = True
        try:
            while self._inbox and self._read_on and not self._done:
                data = self._inbox.popleft()
                self._fed += len(data)
                self._received(data)
                self._acknowledge()
            if self._ended and not self._inbox and not self._done and self._read_on:
                self._ended = False
                self._eof()
        finally:
            self._feeding = False

    def _acknowledge(self) -> None:
        conn = self.conn
        pending = conn.buffered if conn.state is not ConnectionState.CLOSED else 0
        consumed = self._fed - pending - self._acked
        if consumed > 0:
            self._acked += consumed
            self.h2.acknowledge(self.stream_id, consumed)

    def abort(self) -> None:
        """RST_STREAM (CANCEL) now, whatever is unsent."""
        if not self._done:
            self.h2.reset(self.stream_id, ErrorCodes.CANCEL)
            self._release()
            self._closed()

    def _shut(self) -> None:
        """The WebSocket is over: END_STREAM after the last frame (and RST_STREAM
        ``NO_ERROR`` when the client has not ended its side: nothing more is read)."""
        if self._done:
            return
        if self._remote_done:
            self.h2.end_stream(self.stream_id)
        else:
            self.h2.end_stream(self.stream_id)
            self.h2.when_drained(self.stream_id,
                                 lambda: self.h2.reset(self.stream_id, ErrorCodes.NO_ERROR))
        self._release()
        self._closed()

    def _release(self) -> None:
        """Give the client back the window of what it sent and nobody will read."""
        rest = sum(len(d) for d in self._inbox) + (self._fed - self._acked)
        self._inbox.clear()
        self._fed = self._acked = 0
        if rest > 0:
            self.h2.acknowledge(self.stream_id, rest)


__all__ = ["WebSocketStream"]
