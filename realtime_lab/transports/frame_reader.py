"""The strict, callback-stepped RFC 6455 frame reader of :class:`LabWebSocketProtocol`.

:class:`FrameReaderMixin` replaces Tornado's ``WebSocketProtocol13`` reader
(``ws_protocol.py`` keeps the handshake, the negotiation and Tornado's writer,
ping and close machinery). Every protocol violation fails the connection with
a close frame and its code: 1002 (reserved bits or opcodes, unmasked or
malformed frames, bad close frames, invalid close codes, corrupt DEFLATE data),
1007 (invalid UTF-8, found as soon as the bytes cannot start valid UTF-8,
fragment by fragment), 1009 (message too big, measured after decompression,
never inflated past the limit; or in more than ``max_message_fragments`` frames).
A message being received is kept in one buffer, so its memory is bounded by
``max_message_bytes`` whatever its number of frames (an empty frame costs nothing).
"""

from __future__ import annotations

import codecs
import functools
import logging
import struct
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketProtocol13

from realtime_lab.protocol.close_codes import CloseCode, valid_close_code
from realtime_lab.protocol.deflate import DeflateError, Inflater, InflateTooBig
from realtime_lab.protocol.frames import OP_BINARY, OP_TEXT
from realtime_lab.transports.slim import release_http_state, slim_stream

if TYPE_CHECKING:
    _ProtocolBase = WebSocketProtocol13
else:
    _ProtocolBase = object

log = logging.getLogger("realtime_lab.transports")

_FIN, _RSV1, _RSV_MASK = 0x80, 0x40, 0x70
_DATA_OPCODES = (0x0, 0x1, 0x2)
_CONTROL_OPCODES = (0x8, 0x9, 0xA)
# As Tornado's reader: yield to the event loop after this much work (bytes, plus a
# fixed cost per frame) read without waiting, so one flooding client cannot hog it.
_YIELD_THRESHOLD = 256 * 1024
_FRAME_YIELD_COST = 1024
#: Frames one message may have (ServerOptions.max_message_fragments, Application
#: setting ``websocket_max_message_fragments``); Autobahn 9.5.x sends 16,384.
DEFAULT_MAX_MESSAGE_FRAGMENTS = 65536


class _Message:
    """A data message being received (its first frame arrived, its last not yet).

    Its payload so far (inflated, for a compressed one) is kept in ``data``, one
    buffer; a text message's UTF-8 is checked as it arrives (``utf8``) and the
    text is decoded once, when the last frame arrives.
    """

    __slots__ = ("compressed", "data", "frames", "opcode", "utf8", "wire")

    def __init__(self, opcode: int, compressed: bool) -> None:
        self.opcode = opcode
        self.compressed = compressed
        self.data = bytearray()
        self.frames = 1
        self.wire = 0
        self.utf8: codecs.IncrementalDecoder | None = None

    def text(self, last: str) -> str:
        """The whole text: ``last`` (the decoder's output for the final bytes, not
        added to ``data``) when no earlier byte was kept, else ``data`` decoded."""
        return last if len(self.data) == 0 else self.data.decode("utf-8")


class FrameReaderMixin(_ProtocolBase):
    """The reader half of :class:`~realtime_lab.transports.ws_protocol.LabWebSocketProtocol`.

    Mixed in before ``WebSocketProtocol13``, whose reader it overrides; it uses
    the protocol's ``handler``, ``stream``, ``params`` and Tornado's writer and
    close machinery. Its state is class defaults, set on the instance only
    when it changes (see ``PROTOCOL_ATTRIBUTES`` in ws_protocol.py).
    """

    # Tornado's frame reader state (its reader is replaced): class defaults, never set.
    _final_frame = False
    _frame_opcode = _masked_frame = _frame_mask = _frame_length = None
    _fragmented_message_buffer = _fragmented_message_opcode = None
    _frame_compressed = _decompressor = None
    # Ours, set on the instance only when they change.
    _inflater: Inflater | None = None
    _failed = False
    _msg: _Message | None = None  # the data message being received
    # Tornado 6.4's pinging state (6.5 replaced it by _ping_coroutine and
    # _received_pong): class defaults, so close() finds ping_callback; set on the
    # instance only by its start_pinging (websocket_ping_interval configured).
    ping_callback: Any = None
    last_ping = last_pong = 0.0

    def _reset_message(self) -> None:
        if self._msg is not None:
            self._msg = None

    def _fail(self, code: int, reason: str, *, in_sync: bool = False) -> None:
        """Fail the connection: send a close frame with ``code`` and deliver nothing more.

        When the frame was read whole (``in_sync``) the reader goes on until the
        client's close frame (a clean closing handshake, Tornado's close timer
        as the bound); otherwise the stream position is lost and the socket is
        closed at once after the close frame.
        """
        if log.isEnabledFor(logging.DEBUG):
            log.debug("failing WebSocket connection: %s %s", code, reason)
        self._failed = True
        self._reset_message()
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.close(code, reason)
        if not in_sync:
            self._abort()

    # The reader. Tornado awaits each frame in a coroutine running for the whole
    # connection (with the handler's request coroutines above it and a Task):
    # about 3.5 KB per idle connection. Here an idle connection waits with a
    # done-callback on the read Future of the next frame header; the rest of
    # the frame runs as a coroutine stepped by _step, usually to completion at
    # once (the frame is already buffered), otherwise resumed by callbacks.

    async def _receive_frame_loop(self) -> None:
        """Called by Tornado after ``open()``: start reading and return at once."""
        release_http_state(self.handler)
        slim_stream(self.stream)
        self._read_next()

    def _read_next(self) -> None:
        """Handle the frames already buffered, then wait for the next header."""
        work = 0
        while not self.client_terminated:
            try:
                future = self._stream().read_bytes(2)
            except StreamClosedError:
                self._abort()
                break
            if not future.done():
                future.add_done_callback(self._on_header)
                return
            start = self._wire_bytes_in
            if not self._start_frame(future):
                return  # the frame waits for bytes (or an async on_message)
            work += _FRAME_YIELD_COST + self._wire_bytes_in - start
            if work >= _YIELD_THRESHOLD:
                IOLoop.current().add_callback(self._read_next)
                return
        self._reader_done()

    def _on_header(self, future: Any) -> None:
        if self._start_frame(future):
            self._read_next()

    def _start_frame(self, future: Any) -> bool:
        """Run one frame from its two header bytes; True when it is already done."""
        # Not future.result(): re-raising the read's error here would chain this
        # frame into its traceback, which the future keeps: a cycle (future ->
        # error -> traceback -> frame -> future) that holds the whole connection
        # until the cycle collector runs, or forever with gc_freeze.
        error = future.exception()
        if error is None:
            head = future.result()
        else:
            if not isinstance(error, StreamClosedError):  # log like an uncaught reader error
                self.handler.log_exception(type(error), error, error.__traceback__)
            self._abort()
            head = None
        if head is None:
            self._reader_done()
            return False
        self._wire_bytes_in += 2
        return self._step(self._frame(head))

    def _step(self, coro: Coroutine[Any, Any, None], _done: Any = None) -> bool:
        """Run ``coro`` until it waits (resumed later by a callback) or ends (True)."""
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except StreamClosedError:
            self._abort()
        except Exception:
            self.handler.log_exception(*sys.exc_info())
            self._abort()
        else:
            resume = functools.partial(self._resume, coro)
            if waiting is None:  # a bare yield (asyncio.sleep(0))
                IOLoop.current().add_callback(resume)
            else:  # an asyncio Future, as a Task would see it
                waiting._asyncio_future_blocking = False
                waiting.add_done_callback(resume)
            return False
        self._reader_done()
        return False

    def _resume(self, coro: Coroutine[Any, Any, None], _done: Any = None) -> None:
        if self._step(coro):
            self._read_next()

    def _reader_done(self) -> None:
        """The reader stopped (closing handshake over, or the socket is gone)."""
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def _stream(self) -> Any:
        stream = self.stream
        assert stream is not None
        return stream

    async def _receive_frame(self) -> None:
        """Read and handle one frame (the reader above reads the header itself)."""
        await self._frame(await self._read_bytes(2))

    async def _frame(self, head: bytes) -> None:
        b0, b1 = head[0], head[1]
        fin = bool(b0 & _FIN)
        rsv = b0 & _RSV_MASK
        opcode = b0 & 0x0F
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            return self._fail(CloseCode.PROTOCOL_ERROR, "reserved opcode")
        control = opcode >= 0x8
        compressed = False
        if rsv:
            if rsv == _RSV1 and self._inflater is not None and opcode in (OP_TEXT, OP_BINARY):
                compressed = True
            else:
                return self._fail(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if not b1 & 0x80:
            return self._fail(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        length = b1 & 0x7F
        if control and (length > 125 or not fin):
            return self._fail(CloseCode.PROTOCOL_ERROR, "bad control frame")
        if length == 126:
            length = struct.unpack("!H", await self._read_bytes(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self._read_bytes(8))[0]
        msg = self._msg
        if not control:
            if opcode == 0 and msg is None:
                return self._fail(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            if opcode != 0 and msg is not None:
                return self._fail(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            if (msg.wire if msg else 0) + length > self.params.max_message_size:
                return self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
            if msg is not None:
                if msg.frames >= self._max_fragments():
                    return self._fail(CloseCode.MESSAGE_TOO_BIG,
                                      "message in too many fragments")
                msg.frames += 1
        mask = await self._read_bytes(4)
        if (not control and not compressed and not self._failed and not self.server_terminated
                and (opcode == OP_TEXT or (opcode == 0 and msg is not None
                                           and msg.opcode == OP_TEXT and not msg.compressed))):
            return await self._text_frame(opcode == 0, mask, length, fin)
        data = _websocket_mask(mask, await self._read_bytes(length)) if length else b""
        if control:
            return self._control(opcode, data)
        if self._failed or self.server_terminated:
            return None  # closing: data frames are read but not delivered
        if opcode != 0:
            msg = self._msg = _Message(opcode, compressed)
            if opcode == OP_TEXT and not (fin and not compressed):
                msg.utf8 = codecs.getincrementaldecoder("utf-8")()
        assert msg is not None
        msg.wire += length
        try:
            message = self._data(msg, data, fin)
        except DeflateError as exc:
            return self._fail(CloseCode.PROTOCOL_ERROR, str(exc)[:100], in_sync=True)
        except InflateTooBig:
            return self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big after decompression",
                              in_sync=True)
        except UnicodeDecodeError:
            return self._fail(CloseCode.INVALID_PAYLOAD, "invalid UTF-8 in a text message",
                              in_sync=True)
        if message is None:
            return None
        return await self._deliver(msg, message)

    def _max_fragments(self) -> int:
        settings: dict[str, Any] = getattr(self.handler, "settings", {})
        limit = settings.get("websocket_max_message_fragments")
        return DEFAULT_MAX_MESSAGE_FRAGMENTS if limit is None else int(limit)

    async def _deliver(self, msg: _Message, message: str | bytes) -> None:
        self._message_bytes_in += msg.wire
        self._reset_message()
        future = self._run_callback(self.handler.on_message, message)
        if future is not None:
            await future

    async def _text_frame(self, continuation: bool, mask: bytes, length: int, fin: bool) -> None:
        """An uncompressed text frame, UTF-8 checked as its bytes arrive.

        Invalid UTF-8 fails the connection (1007) at once, even in the middle of a
        frame still arriving; the rest of that frame is read and dropped so the
        closing handshake can finish cleanly.
        """
        msg = self._msg
        if not continuation or msg is None:
            msg = self._msg = _Message(OP_TEXT, False)
        if msg.utf8 is None:
            msg.utf8 = codecs.getincrementaldecoder("utf-8")()
        decoder = msg.utf8
        stream = self._stream()
        got = 0
        bad = False
        last = ""  # the decoder's output for the last chunk
        while got < length or (length == 0 and not bad and got == 0 and fin):
            if length:
                chunk = await stream.read_bytes(length - got, partial=True)
                self._wire_bytes_in += len(chunk)
                rot = got % 4
                chunk = _websocket_mask(mask[rot:] + mask[:rot], chunk)
                got += len(chunk)
            else:
                chunk, got = b"", 1
            if bad:
                continue
            final = fin and got >= length
            try:
                last = decoder.decode(chunk, final=final)
            except UnicodeDecodeError:
                bad = True
                self._fail(CloseCode.INVALID_PAYLOAD, "invalid UTF-8 in a text message",
                           in_sync=True)
                continue
            if not final or msg.data:
                msg.data += chunk
        if bad or self._failed:
            return None
        msg.wire += length
        if not fin:
            return None
        return await self._deliver(msg, msg.text(last))

    def _data(self, msg: _Message, data: bytes, fin: bool) -> str | bytes | None:
        """Add one data frame to the current message; return the message once complete."""
        if msg.compressed:
            assert self._inflater is not None
            data = self._inflater.feed(data)
            if fin:
                data += self._inflater.finish()
        if msg.opcode == OP_TEXT:
            if msg.utf8 is None:  # single uncompressed frame: decode at once
                return data.decode("utf-8")
            last = msg.utf8.decode(data, final=fin)
            if fin and not msg.data:
                return last  # the whole text was in this frame
            msg.data += data
            return msg.data.decode("utf-8") if fin else None
        if fin and not msg.data:
            return data
        msg.data += data
        return bytes(msg.data) if fin else None

    if not hasattr(WebSocketProtocol13, "_send_pong"):  # Tornado < 6.6: answer every ping
        def _send_pong(self, data: bytes) -> None:
            if self.server_terminated:
                return  # no frames after a close frame
            try:
                self._write_frame(True, 0xA, data)
            except StreamClosedError:
                self._abort()

    def _control(self, opcode: int, data: bytes) -> None:
        if opcode == 0x8:
            # The peer's close frame ends its side whatever we think of it, so
            # a failure below closes the socket right after our answer.
            self.client_terminated = True
            if len(data) == 1:
                return self._fail(CloseCode.PROTOCOL_ERROR, "close frame of one byte", in_sync=True)
            code: int | None = None
            reason = ""
            if len(data) >= 2:
                code = struct.unpack("!H", data[:2])[0]
                if not valid_close_code(code):
                    return self._fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}",
                                      in_sync=True)
                try:
                    reason = data[2:].decode("utf-8")
                except UnicodeDecodeError:
                    return self._fail(CloseCode.INVALID_PAYLOAD, "close reason is not UTF-8",
                                      in_sync=True)
            if self.close_code is None or not self._failed:
                self.close_code = code
                self.close_reason = reason
            self.close(code)
            return None
        if self._failed:
            return None
        if opcode == 0x9:
            self._send_pong(data)
            self._run_callback(self.handler.on_ping, data)
        else:
            self._received_pong = True
            if self.ping_callback is not None:  # Tornado 6.4 pinging: it reads last_pong
                self.last_pong = IOLoop.current().time()
            self._run_callback(self.handler.on_pong, data)
        return None



__all__ = ["FrameReaderMixin", "valid_close_code"]
