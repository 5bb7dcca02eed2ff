"""Building and parsing WebSocket frames (RFC 6455), sans-I/O.

The server builds each broadcast frame once and writes the same bytes to every
subscriber; these helpers are the only place that knows the frame layout.
Server-to-client frames are never masked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_FIN = 0x80
_RSV1 = 0x40


def frame_header(opcode: int, length: int, *, rsv1: bool = False) -> bytes:
    """Header of an unmasked, final frame carrying ``length`` payload bytes."""
    first = _FIN | opcode | (_RSV1 if rsv1 else 0)
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def build_frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """A complete unmasked, final frame."""
    return frame_header(opcode, len(payload), rsv1=rsv1) + payload


def text_frame(text: str) -> bytes:
    return build_frame(OP_TEXT, text.encode("utf-8"))


def close_payload(code: int | None, reason: str = "") -> bytes:
    """The payload of a close frame: the code and as much of ``reason`` as fits.

    ``code`` None gives the empty payload (no status). A control frame carries at
    most 125 bytes, so the UTF-8 reason is cut to 123 bytes, on a character boundary.
    """
    if code is None:
        return b""
    data = reason.encode("utf-8")
    if len(data) > 123:
        data = data[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + data


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 5.3); masks and unmasks.

    Done on whole integers, so the work is a few passes in C whatever the length.
    """
    n = len(data)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def frame_end(data: bytes | bytearray | memoryview, pos: int) -> int:
    """Where the unmasked frame that starts at ``pos`` in ``data`` ends.

    For frames this module built (server frames are never masked); the result
    may lie past the end of ``data`` when the frame is incomplete there.
    """
    length = data[pos + 1] & 0x7F
    if length == 126:
        return pos + 4 + int.from_bytes(data[pos + 2:pos + 4], "big")
    if length == 127:
        return pos + 10 + int.from_bytes(data[pos + 2:pos + 10], "big")
    return pos + 2 + length


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split a byte stream into frames; return them and the unparsed remainder.

    Handles masked and unmasked frames, so it can read either direction. It is
    used by tests and tools; the server reads through its transport.
    """
    frames: list[Frame] = []
    pos = 0
    size = len(data)
    while size - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if size - pos < 4:
                break
            (length,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif length == 127:
            if size - pos < 10:
                break
            (length,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
        mask = b""
        if masked:
            if size - pos < head + 4:
                break
            mask = data[pos + head : pos + head + 4]
            head += 4
        if size - pos < head + length:
            break
        payload = data[pos + head : pos + head + length]
        if masked:
            payload = apply_mask(payload, mask)
        frames.append(Frame(b0 & 0x0F, payload, bool(b0 & _FIN), bool(b0 & _RSV1)))
        pos += head + length
    return frames, data[pos:]
