"""The DATA frames of one HTTP/2 connection: framed by us, accounted by ``h2``.

``h2``'s ``send_data`` costs several microseconds a frame (its connection and
stream state machines, a ``hyperframe`` object, its serialization), and a fan-out
sends one DATA frame per stream per loop turn: on a connection of 100 WebSocket
streams that was most of the cost of a delivery. :class:`DataSender` writes
DATA frames itself (a 9-byte header and the payload, without flags or padding:
the bytes ``h2`` would write) and tells ``h2`` about them later, in one
``send_data`` call per stream and up to 16 KiB, whose frames it throws away
(``clear_outbound_data_buffer``): **deferred accounting**.

Why this is sound (``h2``'s own state is exact whenever ``h2`` looks at it):

* Sending DATA without END_STREAM changes no state in ``h2`` but the two
  outbound windows (stream and connection); the stream state machine stays
  OPEN or HALF_CLOSED_REMOTE, the connection OPEN.
* The windows only grow inside ``receive_data`` (WINDOW_UPDATE, SETTINGS), and
  a stream only closes there or by our own ``end_stream`` / ``reset_stream``.
  The session calls :meth:`settle` before each of those calls (and before
  ``send_headers`` and ``close_connection``), so ``h2`` never checks a window,
  applies an increment (its 2^31-1 guard) or closes a stream with bytes it was
  not told about. If our budget were ever wrong, ``h2`` would say so there
  (``FlowControlError``).
* Between two settles the windows only shrink, by what we frame. Our budget
  for a stream is ``min(C, W - owed)``: ``W`` is ``h2``'s
  ``local_flow_control_window`` as of the first frame after the last settle
  (``h2`` counts neither that stream's nor the other streams' bytes since, so
  ``W - owed`` never falls below the stream's true window), ``C`` the connection
  window, kept from ``WindowUpdated`` events on stream 0 minus what we frame
  (RFC 9113 6.9; ``h2`` has no public getter for it). So the budget is exactly
  the window ``h2`` itself would allow.
* Order: ``h2``'s own frames (HEADERS, WINDOW_UPDATE, RST_STREAM...) are taken
  with :meth:`collect` right after the call that made them, before any DATA
  framed later, so the bytes leave in the order they were made.

Each stream's bytes wait in a :class:`SendBuffer` only while its window (or the
socket) is full: a write that fits is framed at once, so the hub sees no backlog
on a stream that keeps up, as on an HTTP/1.1 socket.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from h2.connection import H2Connection
from h2.exceptions import ProtocolError, StreamClosedError

from realtime_lab.protocol.sendbuffer import SendBuffer

#: Bytes one stream may have waiting behind the chunk being sent before it is reset
#: (CANCEL): any one write goes out whole (messages are bounded by max_message_bytes),
#: what piles up behind it is bounded by this.
STREAM_SEND_CAP = 8 * 1024 * 1024
#: DATA bytes one stream sends per round before the next stream's turn.
QUANTUM = 64 * 1024
#: The connection's send window before the client's first WINDOW_UPDATE (RFC 9113 6.9.2:
#: SETTINGS_INITIAL_WINDOW_SIZE does not change it).
INITIAL_CONNECTION_WINDOW = 65535
_DATA_HEAD = struct.Struct(">IBI")  # length << 8 | type DATA (0), flags (none), stream id
_SETTLE_CHUNK = 16384  # the smallest SETTINGS_MAX_FRAME_SIZE there is
_ZEROS = bytes(_SETTLE_CHUNK)


class _Outbound:
    """One stream's bytes not framed yet, whether END_STREAM follows, drain callbacks."""

    __slots__ = ("buffer", "drains", "end")

    def __init__(self) -> None:
        self.buffer = SendBuffer()
        self.end = False
        self.drains: list[Callable[[], None]] = []


class DataSender:
    """Frames the streams' bytes as DATA within the windows (see the module docstring).

    The session hands it the bytes (:meth:`queue`), frames what waits once per loop
    turn (:meth:`frame_ready`), calls :meth:`settle` before any other call into
    ``h2`` that looks at windows or stream states, and writes :meth:`take`.
    """

    def __init__(self, h2: H2Connection) -> None:
        self.h2 = h2
        self.output: list[bytes] = []  # frames made, in order, not taken yet
        self.output_bytes = 0
        self.connection_window = INITIAL_CONNECTION_WINDOW
        self._out: dict[int, _Outbound] = {}
        self._ready: dict[int, None] = {}  # streams with bytes to frame, in order
        self._owed: dict[int, int] = {}  # bytes framed by us that h2 was not told of
        self._windows: dict[int, int] = {}  # h2's window per stream since the last settle

    # ------------------------------------------------------------ streams

    def queue(self, stream_id: int, data: bytes, *, frames: bool = True,
              frame_now: bool = True) -> bool:
        """Send ``data`` on ``stream_id``: framed at once as far as the window allows
        (``frame_now``), the rest when it opens. False (and nothing queued) when the
        stream would have more than :data:`STREAM_SEND_CAP` bytes waiting."""
        out = self._out.get(stream_id)
        if out is None:
            out = self._out[stream_id] = _Outbound()
        buffer = out.buffer
        if not buffer and frame_now and len(data) <= QUANTUM:
            budget = self._budget(stream_id)
            if len(data) <= budget and len(data) <= self.h2.max_outbound_frame_size:
                self._frame(stream_id, data)  # the common case: one write, one frame
                return True
        buffer.append(data, frames=frames)
        if buffer.nbytes > STREAM_SEND_CAP and buffer.nbytes - len(buffer.peek()) > STREAM_SEND_CAP:
            self.forget(stream_id)
            return False
        if frame_now and stream_id not in self._ready:
            self._send_some(stream_id, out)
        if buffer:
            self._ready[stream_id] = None
        return True

    def end(self, stream_id: int) -> None:
        """END_STREAM after what is queued on ``stream_id`` (see :meth:`frame_ready`)."""
        out = self._out.get(stream_id)
        if out is None:
            out = self._out[stream_id] = _Outbound()
        out.end = True
        self._ready[stream_id] = None

    def forget(self, stream_id: int) -> None:
        """Drop what ``stream_id`` has unsent (it is reset, or gone)."""
        self._out.pop(stream_id, None)
        self._ready.pop(stream_id, None)

    def unsent(self, stream_id: int) -> int:
        out = self._out.get(stream_id)
        return out.buffer.nbytes if out is not None else 0

    def drop_unsent(self, stream_id: int) -> int:
        out = self._out.get(stream_id)
        return out.buffer.drop_frames() if out is not None else 0

    def drained(self, stream_id: int, callback: Callable[[], None]) -> bool:
        """Keep ``callback`` for when ``stream_id`` has nothing unsent; False if it has
        nothing unsent now (the caller calls it soon)."""
        out = self._out.get(stream_id)
        if out is None or not out.buffer:
            return False
        out.drains.append(callback)
        return True

    def clear(self) -> None:
        self._out.clear()
        self._ready.clear()

    @property
    def ready(self) -> bool:
        """Streams have bytes (or an END_STREAM) waiting."""
        return bool(self._ready)

    # ------------------------------------------------------------ framing

    def frame_ready(self) -> bool:
        """One round: up to :data:`QUANTUM` bytes of each waiting stream within the
        windows, END_STREAM and drain callbacks for the streams left empty. True if
        any byte was framed."""
        progress = False
        for sid in list(self._ready):
            out = self._out.get(sid)
            if out is None:
                del self._ready[sid]
                continue
            progress = self._send_some(sid, out) > 0 or progress
            if not out.buffer:
                del self._ready[sid]
                self._finish(sid, out)
        return progress

    def window_opened(self, stream_id: int, delta: int) -> None:
        """A ``WindowUpdated`` event: the client gave ``delta`` more bytes."""
        if stream_id == 0:
            self.connection_window += delta

    def _budget(self, stream_id: int) -> int:
        window = self._windows.get(stream_id)
        if window is None:
            window = self._windows[stream_id] = self.h2.local_flow_control_window(stream_id)
        return min(self.connection_window, window - self._owed.get(stream_id, 0))

    def _frame(self, stream_id: int, data: bytes) -> None:
        size = len(data)
        self.output.append(_DATA_HEAD.pack(size << 8, 0, stream_id))
        self.output.append(data)
        self.output_bytes += size + 9
        self.connection_window -= size
        owed = self._owed
        owed[stream_id] = owed.get(stream_id, 0) + size

    def _send_some(self, sid: int, out: _Outbound) -> int:
        """Frame up to QUANTUM bytes of one stream; the bytes framed."""
        buffer = out.buffer
        if not buffer:
            return 0
        window = self._budget(sid)
        frame_max = self.h2.max_outbound_frame_size
        sent = 0
        while buffer and sent < QUANTUM and window > 0:
            size = min(window, frame_max, QUANTUM - sent)
            chunk = bytes(buffer.peek()[:size])
            self._frame(sid, chunk)
            buffer.advance(len(chunk))
            sent += len(chunk)
            window -= len(chunk)
        return sent

    def _finish(self, sid: int, out: _Outbound) -> None:
        if out.end:
            del self._out[sid]
            self.settle()
            with contextlib.suppress(StreamClosedError, ProtocolError):
                self.h2.end_stream(sid)
            self.collect()
        drains, out.drains = out.drains, []
        for callback in drains:
            callback()

    # ------------------------------------------------------------ h2's accounts

    def settle(self) -> None:
        """Tell ``h2`` about every byte framed by us since the last settle (its windows
        are exact again); its copies of those frames are thrown away."""
        owed = self._owed
        self._windows.clear()
        if not owed:
            return
        self.collect()  # h2's own frames so far stay, in order
        h2 = self.h2
        self._owed = {}
        try:
            for sid, size in owed.items():
                while size > 0:
                    step = min(size, _SETTLE_CHUNK)
                    h2.send_data(sid, _ZEROS if step == _SETTLE_CHUNK else _ZEROS[:step])
                    size -= step
        finally:  # h2 raising here is our bug (the session closes): never send its copies
            h2.clear_outbound_data_buffer()

    def collect(self) -> None:
        """Take the frames ``h2`` made (after a call into it), behind ours so far."""
        data = self.h2.data_to_send()
        if data:
            self.output.append(data)
            self.output_bytes += len(data)

    def take(self) -> bytes:
        """Every frame made so far, in order; nothing is left behind."""
        self.collect()
        output = self.output
        if not output:
            return b""
        self.output = []
        self.output_bytes = 0
        return output[0] if len(output) == 1 else b"".join(output)


__all__ = ["DataSender", "INITIAL_CONNECTION_WINDOW", "QUANTUM", "STREAM_SEND_CAP"]
