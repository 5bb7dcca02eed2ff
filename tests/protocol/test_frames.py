"""Building and parsing WebSocket frames (RFC 6455)."""

from __future__ import annotations

import os
import struct

import pytest

from realtime_lab.protocol import frames
from realtime_lab.protocol.frames import Frame, build_frame, frame_header, parse_frames, text_frame


@pytest.mark.parametrize(("length", "header"), [
    (0, b"\x81\x00"),
    (125, b"\x81\x7d"),
    (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"),
    (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
    (1 << 32, b"\x81\x7f" + struct.pack("!Q", 1 << 32)),
])
def test_header_length_encodings(length: int, header: bytes) -> None:
    assert frame_header(frames.OP_TEXT, length) == header


def test_header_flags() -> None:
    assert frame_header(frames.OP_BINARY, 1, rsv1=True) == b"\xc2\x01"
    assert frame_header(frames.OP_CLOSE, 2) == b"\x88\x02"
    assert frame_header(frames.OP_PING, 0) == b"\x89\x00"


def test_text_frame_is_utf8() -> None:
    assert text_frame("é") == b"\x81\x02\xc3\xa9"
    assert build_frame(frames.OP_PONG, b"ab") == b"\x8a\x02ab"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_roundtrip_sizes(size: int) -> None:
    payload = os.urandom(size)
    parsed, rest = parse_frames(build_frame(frames.OP_BINARY, payload))
    assert rest == b""
    assert parsed == [Frame(frames.OP_BINARY, payload)]


def test_parse_several_frames_and_keep_the_partial_rest() -> None:
    data = text_frame("one") + text_frame("two") + build_frame(frames.OP_BINARY, b"x" * 300)
    parsed, rest = parse_frames(data + data[:4])
    assert [f.payload for f in parsed] == [b"one", b"two", b"x" * 300]
    assert rest == data[:4]
    # every cut point leaves a parseable rest
    for cut in range(len(data)):
        first, rest = parse_frames(data[:cut])
        second, rest2 = parse_frames(rest + data[cut:])
        assert [f.payload for f in first + second] == [b"one", b"two", b"x" * 300]
        assert rest2 == b""


def masked(opcode: int, payload: bytes, mask: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        head = bytes((first, 0x80 | len(payload)))
    elif len(payload) < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, len(payload))
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 5, 200, 70000])
def test_parse_masked_client_frames(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = masked(frames.OP_TEXT, payload, b"\x01\x02\x03\x04")
    parsed, rest = parse_frames(data)
    assert parsed == [Frame(frames.OP_TEXT, payload)] and rest == b""
    # truncated inside the mask
    head = 2 if size < 126 else (4 if size < 65536 else 10)
    assert parse_frames(data[: head + 2]) == ([], data[: head + 2])


def test_parse_fin_and_rsv1_bits() -> None:
    data = masked(frames.OP_TEXT, b"part", b"abcd", fin=False)
    data += bytes((0xC1, 0x01)) + b"z"  # FIN + RSV1, unmasked
    parsed, _ = parse_frames(data)
    assert parsed[0] == Frame(frames.OP_TEXT, b"part", fin=False, rsv1=False)
    assert parsed[1] == Frame(frames.OP_TEXT, b"z", fin=True, rsv1=True)


@pytest.mark.parametrize("data", [
    b"", b"\x81", b"\x81\x7e\x00", b"\x81\x7f\x00\x00", b"\x81\x05abc"])
def test_incomplete_input_is_left_alone(data: bytes) -> None:
    assert parse_frames(data) == ([], data)


def test_frame_end_finds_where_a_frame_ends_whatever_its_length_encoding() -> None:
    small, mid, big = (build_frame(frames.OP_TEXT, b"a" * n) for n in (10, 300, 70_000))
    data = small + mid + big
    assert frames.frame_end(data, 0) == len(small)
    assert frames.frame_end(data, len(small)) == len(small) + len(mid)
    assert frames.frame_end(data, len(small) + len(mid)) == len(data)
    assert frames.frame_end(data[:-1], len(small) + len(mid)) == len(data), "past a cut end"
