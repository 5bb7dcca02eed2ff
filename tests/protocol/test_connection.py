"""The sans-I/O WebSocket server connection, driven with bytes built by hand."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib

import pytest

from realtime_lab.protocol.codec import encode
from realtime_lab.protocol.connection import (
    BinaryMessage,
    CloseReceived,
    ConnectionState,
    Ping,
    Pong,
    ServerConnection,
    TextMessage,
    max_frames_for,
)
from realtime_lab.protocol.deflate import CompressionPolicy, DeflateParams, deflater_for
from realtime_lab.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    apply_mask,
    parse_frames,
    text_frame,
)
from realtime_lab.protocol.handshake import agree
from realtime_lab.protocol.wire import FrameVariants

OPEN, CLOSING, CLOSED = ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED
DEFLATE = DeflateParams(client_no_context_takeover=False)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bytes | None = None, masked: bool = True) -> bytes:
    """A client frame (masked unless ``masked=False``); ``rsv`` is 0x40, 0x20 or 0x10."""
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4) if mask is None else mask
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def deflated(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]


def feed(conn: ServerConnection, *chunks: bytes) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        events += conn.events()
    return events


def sent(conn: ServerConnection) -> list[Frame]:
    frames, rest = parse_frames(conn.data_to_send())
    assert rest == b""
    return frames


def close_code_sent(conn: ServerConnection) -> int:
    (closing,) = sent(conn)
    assert closing.opcode == OP_CLOSE
    return int(struct.unpack("!H", closing.payload[:2])[0])


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_single_frame_messages_of_every_length_encoding(size: int) -> None:
    conn = ServerConnection(max_message_bytes=1 << 20)
    text = "é" * (size // 2) + "x" * (size % 2)
    payload = os.urandom(size)
    assert feed(conn, frame(OP_TEXT, text.encode()), frame(OP_BINARY, payload)) == [
        TextMessage(text), BinaryMessage(payload)]
    assert conn.state is OPEN and conn.data_to_send() == b"" and conn.buffered == 0


def test_mask_applies_to_every_byte_whatever_the_mask() -> None:
    payload = bytes(range(256)) * 3
    for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"):
        assert feed(ServerConnection(), frame(OP_BINARY, payload, mask=mask)) == [
            BinaryMessage(payload)]
    assert apply_mask(apply_mask(payload, b"abcd"), b"abcd") == payload


def test_fragmented_messages_with_control_frames_between_the_fragments() -> None:
    conn = ServerConnection()
    events = feed(conn,
                  frame(OP_TEXT, b"he", fin=False), frame(OP_PING, b"p1"),
                  frame(OP_CONTINUATION, b"", fin=False), frame(OP_PONG, b"q"),
                  frame(OP_CONTINUATION, b"llo"),
                  frame(OP_BINARY, b"\x00", fin=False), frame(OP_CONTINUATION, b"\x01"))
    assert events == [Ping(b"p1"), Pong(b"q"), TextMessage("hello"), BinaryMessage(b"\x00\x01")]
    assert [(f.opcode, f.payload) for f in sent(conn)] == [(OP_PONG, b"p1")]


def test_every_split_point_gives_the_same_events() -> None:
    stream = (frame(OP_TEXT, "añb€".encode(), fin=False) + frame(OP_PING, b"x")
              + frame(OP_CONTINUATION, "ç😀".encode()) + frame(OP_BINARY, b"z" * 300)
              + close_frame(1000, b"done"))
    expected = [Ping(b"x"), TextMessage("añb€ç😀"), BinaryMessage(b"z" * 300),
                CloseReceived(1000, "done")]
    for cut in range(len(stream) + 1):
        for second in (cut, min(len(stream), cut + 7)):
            conn = ServerConnection()
            assert feed(conn, stream[:cut], stream[cut:second], stream[second:]) == expected
            assert conn.state is CLOSED


def test_one_byte_at_a_time() -> None:
    stream = frame(OP_TEXT, b"x" * 200, fin=False) + frame(OP_CONTINUATION, b"y" * 70_000)
    conn = ServerConnection()
    events = feed(conn, *(stream[i:i + 1] for i in range(len(stream))))
    assert events == [TextMessage("x" * 200 + "y" * 70_000)]


def test_next_event_returns_one_at_a_time_and_keeps_the_rest() -> None:
    conn = ServerConnection()
    third = frame(OP_TEXT, b"c")
    conn.receive_data(frame(OP_TEXT, b"a") + frame(OP_TEXT, b"b") + third[:3])
    assert conn.next_event() == TextMessage("a")
    assert conn.buffered > 0
    conn.receive_data(b"")  # nothing new
    assert conn.next_event() == TextMessage("b")
    assert conn.next_event() is None and conn.buffered == 3
    conn.receive_data(third[3:])
    assert conn.next_event() == TextMessage("c")
    assert conn.state is OPEN and conn.buffered == 0


# ---------------------------------------------------------------- control frames


def test_ping_is_answered_with_the_same_payload() -> None:
    conn = ServerConnection()
    assert feed(conn, frame(OP_PING, b"12345" * 25)) == [Ping(b"12345" * 25)]
    assert sent(conn) == [Frame(OP_PONG, b"12345" * 25)]


def test_no_pong_after_the_close_frame_was_sent() -> None:
    conn = ServerConnection()
    assert conn.send_close(4100, "slow") != b""
    assert feed(conn, frame(OP_PING, b"late")) == []
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frames_of_126_bytes_or_fragmented_fail_1002(opcode: int) -> None:
    for bad in (frame(opcode, b"x" * 126), frame(opcode, b"", fin=False)):
        conn = ServerConnection()
        assert feed(conn, bad) == []
        assert close_code_sent(conn) == 1002 and conn.state is CLOSED


# ---------------------------------------------------------------- closing


def test_client_close_is_echoed_and_ends_the_connection() -> None:
    conn = ServerConnection()
    assert feed(conn, close_frame(4000, "bye é".encode())) == [CloseReceived(4000, "bye é")]
    assert sent(conn) == [Frame(OP_CLOSE, struct.pack("!H", 4000))]
    assert conn.state is CLOSED and (conn.close_code, conn.close_reason) == (4000, "bye é")
    assert feed(conn, frame(OP_TEXT, b"after")) == []  # nothing after the close
    assert conn.send_text("late") == b"" and conn.send_frames(b"\x81\x00") == b""


def test_empty_close_is_answered_with_an_empty_close() -> None:
    conn = ServerConnection()
    assert feed(conn, close_frame(None)) == [CloseReceived(None, "")]
    assert sent(conn) == [Frame(OP_CLOSE, b"")]
    assert conn.close_code is None and conn.state is CLOSED


def test_server_close_waits_for_the_client_and_drops_data_meanwhile() -> None:
    conn = ServerConnection()
    assert conn.send_close(4100, "slow consumer") == (
        b"\x88\x0f" + struct.pack("!H", 4100) + b"slow consumer")
    assert conn.state is CLOSING and conn.send_close(1000) == b""
    assert conn.send_frames(b"\x81\x01x") == b"" and conn.send_ping() == b""
    events = feed(conn, frame(OP_TEXT, b"dropped"), frame(OP_BINARY, b"x", fin=False),
                  frame(OP_CONTINUATION, b"y"), close_frame(4100))
    assert events == [CloseReceived(4100, "")]
    assert conn.data_to_send() == b"", "no second close frame"
    assert conn.state is CLOSED and (conn.close_code, conn.close_reason) == (4100, "slow consumer")


def test_close_reason_is_cut_to_fit_a_control_frame_on_a_character_boundary() -> None:
    data = ServerConnection().send_close(1000, "é" * 100)
    (closing,), _ = parse_frames(data)
    assert len(closing.payload) == 124  # 2 + 61 two-byte characters
    closing.payload[2:].decode("utf-8")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(code: int) -> None:
    conn = ServerConnection()
    assert feed(conn, close_frame(code)) == [CloseReceived(code, "")]
    assert close_code_sent(conn) == code


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_fail_1002(code: int) -> None:
    conn = ServerConnection()
    assert feed(conn, close_frame(code)) == []
    assert close_code_sent(conn) == 1002 and conn.state is CLOSED


def test_bad_close_payloads() -> None:
    conn = ServerConnection()
    feed(conn, frame(OP_CLOSE, b"\x03"))
    assert close_code_sent(conn) == 1002 and conn.state is CLOSED
    conn = ServerConnection()
    feed(conn, close_frame(1000, b"\xff"))
    assert close_code_sent(conn) == 1007 and conn.state is CLOSED


def test_eof_ends_the_connection_without_a_close_code() -> None:
    conn = ServerConnection()
    conn.receive_data(frame(OP_TEXT, b"half")[:4])
    conn.receive_eof()
    assert conn.state is CLOSED and conn.close_code is None and conn.next_event() is None


def test_fail_sends_one_close_frame_and_closes() -> None:
    conn = ServerConnection()
    assert parse_frames(conn.fail(1011, "oops"))[0] == [
        Frame(OP_CLOSE, struct.pack("!H", 1011) + b"oops")]
    assert conn.state is CLOSED and conn.fail(1002) == b""


# ---------------------------------------------------------------- violations


@pytest.mark.parametrize(("data", "why"), [
    (frame(3, b""), "reserved opcode 3"),
    (frame(7, b""), "reserved opcode 7"),
    (frame(0xB, b""), "reserved opcode 0xB"),
    (frame(0xF, b""), "reserved opcode 0xF"),
    (frame(OP_TEXT, b"x", rsv=0x20), "RSV2"),
    (frame(OP_TEXT, b"x", rsv=0x10), "RSV3"),
    (frame(OP_TEXT, deflated(b"x"), rsv=0x40), "RSV1 without permessage-deflate"),
    (frame(OP_TEXT, b"x", masked=False), "unmasked"),
    (frame(OP_CONTINUATION, b"orphan"), "continuation without a message"),
    (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), "new message inside a fragmented"),
    (b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"mask", "64-bit length with the top bit"),
])
def test_protocol_violations_fail_1002_at_once(data: bytes, why: str) -> None:
    conn = ServerConnection()
    assert feed(conn, data, frame(OP_TEXT, b"never delivered")) == [], why
    assert close_code_sent(conn) == 1002, why
    assert conn.state is CLOSED and conn.close_code == 1002


def test_violation_is_found_from_the_first_two_bytes() -> None:
    conn = ServerConnection()
    assert feed(conn, b"\x83\x80") == []  # reserved opcode; no length or mask yet
    assert close_code_sent(conn) == 1002


def test_rsv1_on_control_and_continuation_frames_fails_even_with_deflate() -> None:
    for data in (frame(OP_PING, b"x", rsv=0x40),
                 frame(OP_TEXT, deflated(b"ab"), fin=False, rsv=0x40)
                 + frame(OP_CONTINUATION, b"", rsv=0x40)):
        conn = ServerConnection(deflate=DEFLATE)
        feed(conn, data)
        assert close_code_sent(conn) == 1002


# ---------------------------------------------------------------- UTF-8


def test_invalid_utf8_in_one_frame_fails_1007_and_waits_for_the_client_close() -> None:
    conn = ServerConnection()
    assert feed(conn, frame(OP_TEXT, b'{"x":"\xff\xfe"}')) == []
    assert close_code_sent(conn) == 1007 and conn.state is CLOSING
    assert feed(conn, frame(OP_TEXT, b"dropped"), close_frame(1007)) == [CloseReceived(1007, "")]
    assert conn.state is CLOSED and conn.close_code == 1007 and conn.data_to_send() == b""


def test_invalid_utf8_fails_fast_at_the_fragment_that_breaks_it() -> None:
    conn = ServerConnection()
    assert feed(conn, frame(OP_TEXT, "κόσμε".encode(), fin=False)) == []
    assert conn.data_to_send() == b""
    assert feed(conn, frame(OP_CONTINUATION, b"\xed\xa0\x80", fin=False)) == []  # a surrogate
    assert close_code_sent(conn) == 1007 and conn.state is CLOSING
    # the rest of the message and the client's close still finish cleanly
    assert feed(conn, frame(OP_CONTINUATION, b"tail"), close_frame(1000)) == [
        CloseReceived(1000, "")]


def test_invalid_utf8_fails_fast_inside_a_frame_still_arriving() -> None:
    payload = b"a" * 1000 + b"\xf8" + b"b" * 5000
    data = frame(OP_TEXT, payload)
    conn = ServerConnection()
    assert feed(conn, data[:1100]) == []
    assert close_code_sent(conn) == 1007, "before the frame is complete"
    assert feed(conn, data[1100:], frame(OP_PING, b"dropped"), close_frame(1000)) == [
        CloseReceived(1000, "")]


def test_utf8_sequences_split_across_fragments_are_fine() -> None:
    raw = "€😀".encode()
    for cut in range(1, len(raw)):
        conn = ServerConnection()
        assert feed(conn, frame(OP_TEXT, raw[:cut], fin=False),
                    frame(OP_CONTINUATION, raw[cut:])) == [TextMessage("€😀")]


def test_utf8_cut_short_at_the_end_of_the_message_fails_1007() -> None:
    conn = ServerConnection()
    feed(conn, frame(OP_TEXT, b"ok", fin=False), frame(OP_CONTINUATION, b"\xe2\x82"))
    assert close_code_sent(conn) == 1007


def test_binary_messages_are_not_utf8_checked() -> None:
    assert feed(ServerConnection(), frame(OP_BINARY, b"\xff\xfe", fin=False),
                frame(OP_CONTINUATION, b"\xed")) == [BinaryMessage(b"\xff\xfe\xed")]


# ---------------------------------------------------------------- limits


def test_message_at_the_limit_is_accepted_one_byte_more_fails_1009() -> None:
    conn = ServerConnection(max_message_bytes=100)
    assert feed(conn, frame(OP_BINARY, b"x" * 100)) == [BinaryMessage(b"x" * 100)]
    assert feed(conn, frame(OP_BINARY, b"x" * 101)) == []
    assert close_code_sent(conn) == 1009 and conn.state is CLOSED


def test_fragmented_message_over_the_limit_fails_1009_before_its_payload() -> None:
    conn = ServerConnection(max_message_bytes=100)
    head = frame(OP_CONTINUATION, b"y" * 51)[:6]  # header and mask only
    assert feed(conn, frame(OP_TEXT, b"y" * 50, fin=False), head) == []
    assert close_code_sent(conn) == 1009 and conn.state is CLOSED


def test_huge_announced_length_fails_1009_without_waiting() -> None:
    conn = ServerConnection(max_message_bytes=1 << 20)
    feed(conn, b"\x82\xff" + struct.pack("!Q", 1 << 40))
    assert close_code_sent(conn) == 1009


def test_control_frames_do_not_count_toward_the_message() -> None:
    conn = ServerConnection(max_message_bytes=10)
    assert feed(conn, frame(OP_TEXT, b"x" * 10, fin=False), frame(OP_PING, b"p" * 100),
                frame(OP_CONTINUATION, b"")) == [Ping(b"p" * 100), TextMessage("x" * 10)]


def test_too_many_frames_in_one_message_fail_1009() -> None:
    assert max_frames_for(64 * 1024) == 1024 and max_frames_for(100) == 16
    conn = ServerConnection(max_message_bytes=1 << 20, max_message_frames=100)
    empty = frame(OP_CONTINUATION, b"", fin=False)
    feed(conn, frame(OP_BINARY, b"", fin=False), empty * 99)
    assert conn.data_to_send() == b"" and conn.state is OPEN  # 100 frames: allowed
    feed(conn, empty)
    assert close_code_sent(conn) == 1009


def test_empty_continuation_frames_do_not_grow_memory() -> None:
    """Issue 13 point 3: a message that never ends, fed 6-byte empty frames."""
    conn = ServerConnection(max_message_bytes=64 * 1024, max_message_frames=10**9)
    feed(conn, frame(OP_BINARY, b"start", fin=False))
    chunk = frame(OP_CONTINUATION, b"", fin=False, mask=b"abcd") * 10_000  # 60 KB
    feed(conn, chunk)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3):  # 30,000 frames (a list of parts would grow by 240 KB)
            feed(conn, chunk)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert conn.state is OPEN
    assert grown < 16 * 1024, f"memory grew by {grown} bytes"
    assert feed(conn, frame(OP_CONTINUATION, b"end")) == [BinaryMessage(b"startend")]


def test_default_frame_bound_closes_an_endless_message() -> None:
    conn = ServerConnection(max_message_bytes=64 * 1024)
    empty = frame(OP_CONTINUATION, b"", fin=False, mask=b"abcd")
    feed(conn, frame(OP_TEXT, b"x", fin=False), empty * 2000)
    assert close_code_sent(conn) == 1009 and conn.state is CLOSED


# ---------------------------------------------------------------- permessage-deflate


def test_compressed_messages_whole_and_fragmented() -> None:
    conn = ServerConnection(deflate=DEFLATE)
    text = "compress me " * 500
    body = deflated(text.encode())
    third = len(body) // 3
    events = feed(conn, frame(OP_TEXT, body, rsv=0x40),
                  frame(OP_BINARY, deflated(b"\x00" * 5000), rsv=0x40),
                  frame(OP_TEXT, body[:third], fin=False, rsv=0x40),
                  frame(OP_PING, b"between"),
                  frame(OP_CONTINUATION, body[third:2 * third], fin=False),
                  frame(OP_CONTINUATION, body[2 * third:]),
                  frame(OP_TEXT, b"plain on a deflate connection"))
    assert events == [TextMessage(text), BinaryMessage(b"\x00" * 5000), Ping(b"between"),
                      TextMessage(text), TextMessage("plain on a deflate connection")]


def test_client_context_takeover_is_kept_between_messages() -> None:
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = (comp.compress(b"hello hello hello") + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    second = (comp.compress(b"hello hello hello") + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    conn = ServerConnection(deflate=DEFLATE)
    assert feed(conn, frame(OP_TEXT, first, rsv=0x40), frame(OP_TEXT, second, rsv=0x40)) == [
        TextMessage("hello hello hello")] * 2


def test_corrupt_deflate_data_fails_1002_cleanly() -> None:
    conn = ServerConnection(deflate=DEFLATE)
    assert feed(conn, frame(OP_TEXT, b"\xff\xff\xff\xffnot deflate", rsv=0x40)) == []
    assert close_code_sent(conn) == 1002 and conn.state is CLOSING
    assert feed(conn, close_frame(1002)) == [CloseReceived(1002, "")]


def test_decompression_bomb_fails_1009_without_inflating_it() -> None:
    bomb = deflated(b"\x00" * (64 << 20))
    assert len(bomb) < 100_000
    for data in (frame(OP_BINARY, bomb, rsv=0x40),
                 frame(OP_BINARY, bomb[:50_000], fin=False, rsv=0x40)
                 + frame(OP_CONTINUATION, bomb[50_000:])):
        conn = ServerConnection(max_message_bytes=1 << 20, deflate=DEFLATE)
        tracemalloc.start()
        try:
            assert feed(conn, data) == []
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert close_code_sent(conn) == 1009
        assert peak < 4 * (1 << 20), f"peak {peak} bytes"


def test_invalid_utf8_inside_compressed_text_fails_1007() -> None:
    conn = ServerConnection(deflate=DEFLATE)
    feed(conn, frame(OP_TEXT, deflated(b"ok \xff"), rsv=0x40))
    assert close_code_sent(conn) == 1007


def test_send_compresses_above_the_threshold_and_frames_pass_as_they_are() -> None:
    policy = CompressionPolicy(threshold=100)
    conn = ServerConnection(deflate=DEFLATE, deflater=deflater_for(DEFLATE, policy))
    (small,), _ = parse_frames(conn.send_text("short"))
    (large,), _ = parse_frames(conn.send_binary(b"z" * 1000))
    assert (small.rsv1, small.payload) == (False, b"short")
    assert large.rsv1 and zlib.decompressobj(-15).decompress(
        large.payload + b"\x00\x00\xff\xff") == b"z" * 1000
    shared = b"\xc1\x03abc"  # a frame built once for many connections
    assert conn.send_frames(shared) is shared


def test_a_shared_compressed_broadcast_frame_reads_the_same_on_every_connection() -> None:
    """The hub compresses a broadcast once (``FrameVariants``) and every connection that
    agreed the same permessage-deflate sends those bytes as they are. The server always
    answers ``server_no_context_takeover``, so the frame depends on no connection's
    compressor state: a client that keeps its inflate context (as browsers do) reads it
    between the connection's own compressed messages, one with a fresh context per
    message reads it too, and a client that did not agree deflate never gets it."""
    offer = "permessage-deflate; client_max_window_bits"
    policy = CompressionPolicy(threshold=0)
    agreements = [agree({"Sec-WebSocket-Extensions": offer}, policy) for _ in range(3)]
    conns = [a.connection(max_message_bytes=1 << 20) for a in agreements]
    assert agreements[0].wire is agreements[1].wire, "same agreement, one interned wire"
    message = {"type": "message", "channel": "room", "data": "broadcast " * 200}
    variants = FrameVariants(text_frame(encode(message)), message)
    shared = variants.get(agreements[0].wire)
    assert shared[0] & 0x40 and len(shared) < len(variants.json_frame) // 5
    for conn, agreement in zip(conns, agreements, strict=True):
        assert variants.get(agreement.wire) is shared  # built once, for every subscriber
        assert conn.send_frames(shared) is shared
    assert variants.built() == 2  # the plain JSON frame and the compressed one

    def client_reads(data: bytes, inflate: object) -> list[bytes]:
        frames, rest = parse_frames(data)
        assert rest == b"" and all(f.rsv1 for f in frames)
        return [inflate(f.payload) for f in frames]  # type: ignore[operator]

    own = "own message " * 100
    stream = conns[0].send_text(own) + shared + conns[0].send_text(own) + shared
    keeper = zlib.decompressobj(-15)  # one context for the whole connection
    expected = [own.encode(), encode(message).encode()] * 2
    assert client_reads(stream, lambda p: keeper.decompress(p + b"\x00\x00\xff\xff")) == expected
    assert client_reads(stream, lambda p: zlib.decompressobj(-15).decompress(
        p + b"\x00\x00\xff\xff")) == expected
    plain = agree({}, policy)  # no offer: the plain frame, never the compressed one
    assert variants.get(plain.wire) == variants.json_frame
    closed = conns[2]
    closed.send_close(1000)
    assert closed.send_frames(shared) == b""  # nothing more once closing


def test_send_ping_pong_and_their_limits() -> None:
    conn = ServerConnection()
    assert conn.send_ping() == b"\x89\x00" and conn.send_pong(b"x") == b"\x8a\x01x"
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        ServerConnection(max_message_bytes=0)
