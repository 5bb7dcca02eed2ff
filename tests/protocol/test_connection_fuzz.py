"""Property tests of the sans-I/O connection: any chunking of a valid stream gives the
same events; any bytes at all give events or a close frame with a documented code."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime_lab.protocol.connection import (
    BinaryMessage,
    CloseReceived,
    ConnectionState,
    Ping,
    Pong,
    ServerConnection,
    TextMessage,
)
from realtime_lab.protocol.deflate import DeflateParams
from realtime_lab.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    parse_frames,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def frame(opcode: int, payload: bytes, mask: bytes, *, fin: bool = True,
          rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0xFE, n)
    else:
        head = struct.pack("!BBQ", first, 0xFF, n)
    return head + mask + apply_mask(payload, mask)


masks = st.binary(min_size=4, max_size=4)
controls = st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.binary(max_size=125), masks)
messages = st.tuples(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)),
    st.integers(min_value=1, max_value=4),  # fragments
    st.booleans(),  # compressed
    st.lists(controls, max_size=2),  # control frames between the fragments
    masks,
)


@st.composite
def streams(draw: Any) -> tuple[bytes, list[object], bool]:
    """A valid client stream, the events it must give, and whether it negotiated deflate."""
    deflate = draw(st.booleans())
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = b""
    expected: list[object] = []
    for body, parts, compressed, between, mask in draw(st.lists(messages, max_size=6)):
        text = isinstance(body, str)
        raw = body.encode("utf-8") if text else body
        compressed = compressed and deflate
        if compressed:
            raw = (comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
        size = -(-len(raw) // parts) if raw else 0
        pieces = [raw[i * size:(i + 1) * size] for i in range(parts)] if size else [b""] * parts
        for i, piece in enumerate(pieces):
            opcode = (OP_TEXT if text else OP_BINARY) if i == 0 else OP_CONTINUATION
            data += frame(opcode, piece, mask, fin=i == parts - 1, rsv1=compressed and i == 0)
            if i < len(between) and i < parts - 1:
                op, payload, cmask = between[i]
                data += frame(op, payload, cmask)
                expected.append(Ping(payload) if op == OP_PING else Pong(payload))
        expected.append(TextMessage(body) if text else BinaryMessage(body))
    data += frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye", b"\x01\x02\x03\x04")
    expected.append(CloseReceived(1000, "bye"))
    return data, expected, deflate


@SETTINGS
@given(streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_chunking_of_a_valid_stream_gives_the_same_events(
        stream: tuple[bytes, list[object], bool], cuts: list[int]) -> None:
    data, expected, deflate = stream
    params = DeflateParams(client_no_context_takeover=False) if deflate else None
    conn = ServerConnection(max_message_bytes=1 << 20, deflate=params)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    events: list[object] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        conn.receive_data(data[start:end])
        events += conn.events()
    assert events == expected
    assert conn.state is ConnectionState.CLOSED
    pongs = [p for p in expected if isinstance(p, Ping)]
    frames, _ = parse_frames(conn.data_to_send())
    assert [f.opcode for f in frames] == [OP_PONG] * len(pongs) + [OP_CLOSE]


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20), st.booleans())
def test_any_bytes_give_events_or_a_documented_close(chunks: list[bytes], deflate: bool) -> None:
    """Hostile input is normal input: no exception, and every refusal has its code."""
    params = DeflateParams() if deflate else None
    conn = ServerConnection(max_message_bytes=256, deflate=params)
    for chunk in chunks:
        conn.receive_data(chunk)
        for event in conn.events():
            assert isinstance(event, TextMessage | BinaryMessage | Ping | Pong | CloseReceived)
    frames, rest = parse_frames(conn.data_to_send())
    assert rest == b""
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    assert len(closes) <= 1
    if closes and conn.close_received is False:
        code = struct.unpack("!H", closes[0].payload[:2])[0]
        assert code in (1002, 1007, 1009)
        assert conn.state is not ConnectionState.OPEN
