"""A sans-I/O WebSocket server connection: RFC 6455 framing and permessage-deflate (RFC 7692).

Bytes in, events out; events in, bytes out. No socket, no event loop, no
Tornado: a socket pump (``realtime_lab/transports``), an HTTP/2 stream
(RFC 8441) or a test hands it the bytes it received and writes the bytes it
gets back::

    conn = ServerConnection(max_message_bytes=65536)
    conn.receive_data(data)                 # bytes from the client
    while (event := conn.next_event()) is not None:
        ...                                 # TextMessage, BinaryMessage, Ping, Pong, CloseReceived
    out = conn.data_to_send()               # what it wrote by itself: pongs, close frames
    out += conn.send_text("hello")          # what you ask for comes back as bytes

The connection starts OPEN: the opening handshake (an HTTP/1.1 upgrade or an
HTTP/2 extended CONNECT) is done before it, with :mod:`realtime_lab.protocol.handshake`.

Reading is strict. Every violation fails the connection with a close frame and
its code: 1002 (reserved bits or opcodes, unmasked or malformed frames, bad
control or close frames, continuation without a message, corrupt DEFLATE data),
1007 (invalid UTF-8, found as soon as the bytes cannot begin valid UTF-8, frame
by frame and inside a frame still arriving), 1009 (a message longer than
``max_message_bytes``, counted after decompression and never inflated past it,
or sent in more than ``max_message_frames`` frames). A message's memory is its
payload bytes whatever the number of frames: fragments are appended to one
buffer, so empty continuation frames cost nothing (and count as frames).

Sending: ``send_frames`` takes frames built elsewhere as they are (the hub
builds a broadcast frame once, compressed once, for every subscriber: the server
always answers ``server_no_context_takeover``, so no frame depends on a
connection's compressor state).
"""

from __future__ import annotations

import codecs
import enum
from collections.abc import Iterator
from dataclasses import dataclass

from realtime_lab.protocol.close_codes import CloseCode, valid_close_code
from realtime_lab.protocol.deflate import (
    DeflateError,
    DeflateParams,
    Deflater,
    Inflater,
    InflateTooBig,
)
from realtime_lab.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    build_frame,
    close_payload,
    frame_header,
)

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
#: A fragmented message may have at most max_message_bytes / this many frames
#: (and at least MIN_MESSAGE_FRAMES), e.g. 1024 frames for 64 KiB.
BYTES_PER_FRAME = 64
MIN_MESSAGE_FRAMES = 16

_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class ConnectionState(enum.Enum):
    """Where a connection is in its life (it starts OPEN, after the handshake)."""

    OPEN = "open"
    #: A close frame was sent (or the connection failed in a way the client can
    #: still answer): reading goes on until the client's close frame.
    CLOSING = "closing"
    #: Nothing more is read or sent: write what ``data_to_send`` returns, then
    #: close the transport (the server closes TCP first, RFC 6455 7.1.1).
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message (already valid UTF-8)."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping from the client; the connection has queued the pong already."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong from the client."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The client's valid close frame (``code`` None: it carried no status code).

    The connection has queued its answer (the same code) if it had not sent a
    close frame yet; it is CLOSED now.
    """

    code: int | None
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived


def max_frames_for(max_message_bytes: int) -> int:
    """The default frame bound of a message of at most ``max_message_bytes``."""
    return max(MIN_MESSAGE_FRAMES, max_message_bytes // BYTES_PER_FRAME)


class ServerConnection:
    """The server side of one WebSocket connection, after the opening handshake.

    Args:
        max_message_bytes: the largest message accepted (after decompression).
        max_message_frames: the most frames one message may arrive in
            (default :func:`max_frames_for`).
        deflate: the permessage-deflate parameters agreed at the handshake, or
            None: frames with RSV1 are then refused with 1002.
        deflater: compresses what :meth:`send_text` and :meth:`send_binary` send
            (payloads under its threshold go uncompressed); None sends them plain.

    ``close_code`` and ``close_reason`` tell why the connection is closing: the
    code of the first close frame, sent (by :meth:`send_close` or a failure) or
    received; ``close_code`` stays None when the connection ended without any
    close frame (the transport calls that 1006).
    """

    __slots__ = (
        "max_message_bytes", "max_message_frames", "state", "close_code", "close_reason",
        "close_sent", "close_received", "_deflate", "_deflater", "_inflater", "_discard",
        "_buf", "_pos", "_out",
        # the frame being read: opcode, fin, compressed, mask, payload bytes left, seen
        "_op", "_fin", "_rsv1", "_mask", "_left", "_seen",
        # the data message being read: opcode (0: none), compressed, size, frames, data
        "_msg_op", "_msg_compressed", "_msg_size", "_msg_frames", "_msg_data", "_utf8",
    )

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_message_frames: int | None = None, deflate: DeflateParams | None = None,
                 deflater: Deflater | None = None) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes!r}")
        self.max_message_bytes = max_message_bytes
        self.max_message_frames = (max_frames_for(max_message_bytes)
                                   if max_message_frames is None else max_message_frames)
        self.state = ConnectionState.OPEN
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_sent = False
        self.close_received = False
        self._deflate = deflate
        self._deflater = deflater
        self._inflater: Inflater | None = None  # made on the first compressed message
        self._discard = False  # closing: data frames are read but not delivered
        self._buf = b""
        self._pos = 0
        self._out = b""
        self._op = 0
        self._fin = False
        self._rsv1 = False
        self._mask = b""
        self._left = -1  # -1: between frames (the next bytes are a header)
        self._seen = 0
        self._reset_message()

    def _reset_message(self) -> None:
        self._msg_op = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._msg_data: bytearray | None = None
        self._utf8: codecs.IncrementalDecoder | None = None

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> None:
        """Bytes received from the client; read them with :meth:`next_event`."""
        if self.state is ConnectionState.CLOSED or not data:
            return
        if self._pos >= len(self._buf):
            self._buf, self._pos = data, 0
        else:
            self._buf, self._pos = self._buf[self._pos:] + data, 0

    def receive_eof(self) -> None:
        """The client closed its side of the transport: nothing more will arrive."""
        self.state = ConnectionState.CLOSED
        self._buf, self._pos = b"", 0
        self._reset_message()

    @property
    def buffered(self) -> int:
        """Received bytes not read yet (events still to come, or an incomplete header)."""
        return len(self._buf) - self._pos

    def events(self) -> Iterator[Event]:
        """Every event the received bytes make, in order."""
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        """The next event, or None when more bytes are needed (or the connection is closed).

        Reading one event at a time lets a transport stop in the middle of a
        chunk (an asynchronous handler, a budget per loop turn) and go on later.
        """
        while self.state is not ConnectionState.CLOSED:
            if self._left < 0 and not self._read_header():
                return None
            event = self._read_payload()
            if event is not None:
                return event
            if self._left >= 0:
                return None  # the frame's payload is still arriving
        return None

    def _read_header(self) -> bool:
        """Parse and check the next frame header; False when incomplete or refused."""
        buf, pos = self._buf, self._pos
        have = len(buf) - pos
        if have < 2:
            return False
        b0, b1 = buf[pos], buf[pos + 1]
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        length = b1 & 0x7F
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            return self._refuse(CloseCode.PROTOCOL_ERROR, "reserved opcode")
        rsv = b0 & 0x70
        if rsv and not (rsv == 0x40 and self._deflate is not None
                        and opcode in (OP_TEXT, OP_BINARY)):
            return self._refuse(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if not b1 & 0x80:
            return self._refuse(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        control = opcode >= 0x8
        if control and (length > 125 or not fin):
            return self._refuse(CloseCode.PROTOCOL_ERROR, "bad control frame")
        if not control:
            if opcode == OP_CONTINUATION and not self._msg_op:
                return self._refuse(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            if opcode != OP_CONTINUATION and self._msg_op:
                return self._refuse(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        start = 2
        if length == 126:
            if have < 4:
                return False
            length = int.from_bytes(buf[pos + 2:pos + 4], "big")
            start = 4
        elif length == 127:
            if have < 10:
                return False
            length = int.from_bytes(buf[pos + 2:pos + 10], "big")
            if length >> 63:
                return self._refuse(CloseCode.PROTOCOL_ERROR, "frame length over 2^63")
            start = 10
        if not control:
            size = (self._msg_size if opcode == OP_CONTINUATION else 0) + length
            frames = (self._msg_frames if opcode == OP_CONTINUATION else 0) + 1
            if size > self.max_message_bytes:
                return self._refuse(CloseCode.MESSAGE_TOO_BIG, "message too big")
            if frames > self.max_message_frames:
                return self._refuse(CloseCode.MESSAGE_TOO_BIG, "message in too many fragments")
        if have < start + 4:
            return False
        self._mask = buf[pos + start:pos + start + 4]
        self._pos = pos + start + 4
        self._op = opcode
        self._fin = fin
        self._rsv1 = bool(rsv)
        self._left = length
        self._seen = 0
        if not control:
            if opcode != OP_CONTINUATION:
                self._msg_op = opcode
                self._msg_compressed = bool(rsv)
                self._msg_size = 0
                self._msg_frames = 0
            self._msg_size += length
            self._msg_frames += 1
        return True

    def _refuse(self, code: int, reason: str) -> bool:
        self._fail(code, reason)
        return False

    def _take(self, count: int) -> bytes:
        """The next ``count`` received bytes (at most what is there), unmasked."""
        pos = self._pos
        raw = self._buf[pos:pos + count]
        self._pos = pos + len(raw)
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        mask = self._mask
        rot = self._seen & 3
        if rot:
            mask = mask[rot:] + mask[:rot]
        self._seen += len(raw)
        self._left -= len(raw)
        return apply_mask(raw, mask)

    def _read_payload(self) -> Event | None:
        """Read what has arrived of the current frame's payload; the event it completes."""
        left = self._left
        opcode = self._op
        if opcode >= 0x8:  # a control frame is handled whole (at most 125 bytes)
            if len(self._buf) - self._pos < left:
                return None
            payload = self._take(left)
            self._left = -1
            return self._control(opcode, payload)
        if self._discard:  # closing: drop data, keep track of the frames
            self._take(left)
            if self._left == 0:
                self._end_frame()
            return None
        if (opcode != OP_CONTINUATION and self._fin and not self._seen
                and len(self._buf) - self._pos >= left):  # a whole message in one frame
            payload = self._take(left)
            self._left = -1
            self._reset_message()
            return self._whole_message(opcode, payload)
        return self._fragment()

    def _end_frame(self) -> None:
        self._left = -1
        if self._fin:
            self._reset_message()

    def _whole_message(self, opcode: int, payload: bytes) -> Event | None:
        try:
            if self._rsv1:
                inflater = self._get_inflater()
                payload = inflater.feed(payload) + inflater.finish()
            if opcode == OP_TEXT:
                return TextMessage(payload.decode("utf-8"))
        except (DeflateError, InflateTooBig, UnicodeDecodeError) as exc:
            self._payload_error(exc)
            return None
        return BinaryMessage(payload)

    def _fragment(self) -> Event | None:
        """Part of a message arriving in pieces (fragments, or one frame still arriving)."""
        data = self._take(self._left)
        try:
            if self._msg_data is None:
                self._msg_data = bytearray()
                if self._msg_op == OP_TEXT:
                    self._utf8 = _Utf8Decoder()
            if self._msg_compressed:
                data = self._get_inflater().feed(data)
            if self._utf8 is not None:
                self._utf8.decode(data)  # raises as soon as the bytes cannot be UTF-8
            self._msg_data += data
            if self._left or not self._fin:
                if not self._left:
                    self._left = -1
                return None
            self._left = -1
            if self._msg_compressed:
                tail = self._get_inflater().finish()
                if self._utf8 is not None:
                    self._utf8.decode(tail)
                self._msg_data += tail
            message = self._msg_data
            text = self._msg_op == OP_TEXT
            if self._utf8 is not None:
                self._utf8.decode(b"", final=True)
        except (DeflateError, InflateTooBig, UnicodeDecodeError) as exc:
            self._payload_error(exc)
            return None
        self._reset_message()
        if text:
            return TextMessage(message.decode("utf-8"))
        return BinaryMessage(bytes(message))

    def _get_inflater(self) -> Inflater:
        inflater = self._inflater
        if inflater is None:
            params = self._deflate
            assert params is not None  # RSV1 is refused without it
            inflater = self._inflater = Inflater(
                self.max_message_bytes, persistent=not params.client_no_context_takeover)
        return inflater

    def _payload_error(self, exc: Exception) -> None:
        """A message whose payload is wrong (read whole: the client can still close cleanly)."""
        if isinstance(exc, DeflateError):
            code, reason = CloseCode.PROTOCOL_ERROR, str(exc)[:100]
        elif isinstance(exc, InflateTooBig):
            code, reason = CloseCode.MESSAGE_TOO_BIG, "message too big after decompression"
        else:
            code, reason = CloseCode.INVALID_PAYLOAD, "invalid UTF-8 in a text message"
        self._fail(code, reason, wait=True)

    def _control(self, opcode: int, payload: bytes) -> Event | None:
        if opcode == OP_CLOSE:
            return self._close_frame(payload)
        if self._discard:
            return None
        if opcode == OP_PING:
            if self.state is ConnectionState.OPEN:
                self._out += build_frame(OP_PONG, payload)
            return Ping(payload)
        return Pong(payload)

    def _close_frame(self, payload: bytes) -> Event | None:
        # The client's close frame ends its side whatever we think of it: a
        # failure here closes at once after our answer.
        self.close_received = True
        if len(payload) == 1:
            self._fail(CloseCode.PROTOCOL_ERROR, "close frame of one byte")
            return None
        code: int | None = None
        reason = ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                self._fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
                return None
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_PAYLOAD, "close reason is not UTF-8")
                return None
        if not self.close_sent:  # the client started the closing handshake: echo its code
            self.close_sent = True
            self.close_code, self.close_reason = code, reason
            self._out += build_frame(OP_CLOSE, close_payload(code))
        self.state = ConnectionState.CLOSED
        self._buf, self._pos = b"", 0
        return CloseReceived(code, reason)

    def _fail(self, code: int, reason: str, *, wait: bool = False) -> None:
        """Fail the connection with a close frame carrying ``code`` (RFC 6455 7.1.7).

        ``wait``: the bad frame was read whole, so reading goes on (data
        dropped) until the client's close frame: a clean closing handshake.
        Otherwise the position in the stream is lost: CLOSED at once.
        """
        if not self.close_sent:
            self.close_sent = True
            self.close_code, self.close_reason = code, reason
            self._out += build_frame(OP_CLOSE, close_payload(code, reason))
        self._discard = True
        self._msg_data = None
        self._utf8 = None
        if wait and not self.close_received:
            if self.state is ConnectionState.OPEN:
                self.state = ConnectionState.CLOSING
            if self._left <= 0:  # the bad frame is over (or was whole)
                self._end_frame()
        else:
            self.state = ConnectionState.CLOSED
            self._buf, self._pos = b"", 0

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """The bytes the connection wrote by itself (pongs, close frames) since the last call."""
        out = self._out
        if out:
            self._out = b""
        return out

    @property
    def open(self) -> bool:
        """Whether data frames may still be sent (no close frame sent or received)."""
        return self.state is ConnectionState.OPEN

    def send_frames(self, frames: bytes) -> bytes:
        """Complete frames built elsewhere (a shared broadcast frame), as they are.

        Returns ``frames``, or ``b""`` once the connection no longer sends data.
        """
        return frames if self.state is ConnectionState.OPEN else b""

    def send_text(self, text: str) -> bytes:
        """One text message as a frame (compressed by the deflater when large enough)."""
        return self._message(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> bytes:
        """One binary message as a frame (compressed by the deflater when large enough)."""
        return self._message(OP_BINARY, data)

    def _message(self, opcode: int, payload: bytes) -> bytes:
        if self.state is not ConnectionState.OPEN:
            return b""
        deflater = self._deflater
        if deflater is not None and len(payload) >= deflater.threshold:
            payload = deflater.compress(payload)
            return frame_header(opcode, len(payload), rsv1=True) + payload
        return frame_header(opcode, len(payload)) + payload

    def send_ping(self, payload: bytes = b"") -> bytes:
        """A ping frame (``b""`` once the connection is closing)."""
        return self._control_frame(OP_PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        """An unsolicited pong frame (pings are answered without being asked)."""
        return self._control_frame(OP_PONG, payload)

    def _control_frame(self, opcode: int, payload: bytes) -> bytes:
        if len(payload) > 125:
            raise ValueError("a control frame carries at most 125 bytes")
        return build_frame(opcode, payload) if self.state is ConnectionState.OPEN else b""

    def send_close(self, code: int | None = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake: the close frame (``b""`` if one was already sent).

        The connection is then CLOSING: it reads on, dropping data, until the
        client's close frame (the transport bounds the wait with a timer).
        """
        if self.close_sent or self.state is ConnectionState.CLOSED:
            return b""
        self.close_sent = True
        self.close_code, self.close_reason = code, reason
        self.state = ConnectionState.CLOSING
        self._discard = True
        return build_frame(OP_CLOSE, close_payload(code, reason))

    def fail(self, code: int, reason: str = "") -> bytes:
        """Fail the connection at once: the close frame to send; the state is CLOSED."""
        self._fail(code, reason)
        return self.data_to_send()


__all__ = [
    "BYTES_PER_FRAME",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BinaryMessage",
    "CloseReceived",
    "ConnectionState",
    "Event",
    "MIN_MESSAGE_FRAMES",
    "Ping",
    "Pong",
    "ServerConnection",
    "TextMessage",
    "max_frames_for",
]
