"""SendBuffer: unsent bytes kept as whole frames, so frames not started can be dropped."""

from __future__ import annotations

import pytest

from realtime_lab.protocol.frames import OP_CLOSE, build_frame, parse_frames, text_frame
from realtime_lab.protocol.sendbuffer import SendBuffer


def drain(buf: SendBuffer, step: int | None = None) -> bytes:
    out = b""
    while buf:
        chunk = bytes(buf.peek())
        if step is not None:
            chunk = chunk[:step]
        out += chunk
        buf.advance(len(chunk))
    return out


def test_bytes_come_out_in_order_whatever_the_write_sizes() -> None:
    for step in (None, 1, 3, 1000):
        buf = SendBuffer()
        buf.append(b"HTTP/1.1 101\r\n\r\n", frames=False)
        buf.append(text_frame("a") + text_frame("b"))
        buf.append(memoryview(text_frame("c")))
        assert len(buf) == 16 + 9
        assert drain(buf, step) == b"HTTP/1.1 101\r\n\r\n" + text_frame("a") + text_frame(
            "b") + text_frame("c")
        assert len(buf) == 0 and not buf


def test_next_frame_hands_out_one_frame_at_a_time_and_the_rest_stays_droppable() -> None:
    answer = b"HTTP/1.1 101\r\n\r\n"
    frames = [text_frame(str(i) * n) for i, n in enumerate((10, 300, 70_000))]
    buf = SendBuffer()
    buf.append(answer, frames=False)
    buf.append(b"".join(frames))
    buf.append(text_frame("last"))
    handed = []
    for _ in range(2):  # the answer whole, then the first frame alone
        piece = bytes(buf.next_frame())
        handed.append(piece)
        buf.advance(len(piece))
    assert handed == [answer, frames[0]]
    assert buf.drop_frames() == len(frames[1]) + len(frames[2]) + len(text_frame("last"))
    assert not buf
    buf.append(b"".join(frames))
    out = []
    while buf:
        out.append(bytes(buf.next_frame()))
        buf.advance(len(out[-1]))
    assert out == frames


def test_chunks_for_a_gathering_write() -> None:
    buf = SendBuffer()
    for word in ("one", "two", "three"):
        buf.append(text_frame(word))
    buf.advance(2)
    views = buf.chunks(2)
    assert [bytes(v) for v in views] == [b"one", text_frame("two")]
    buf.advance(sum(len(v) for v in views))
    assert bytes(buf.peek()) == text_frame("three")


def test_drop_keeps_the_rest_of_the_frame_under_way_and_drops_the_others() -> None:
    big = build_frame(0x2, b"x" * 70_000)  # a 64-bit length header
    buf = SendBuffer()
    buf.append(text_frame("first") + big + text_frame("third"))
    buf.append(text_frame("fourth"))
    buf.advance(len(text_frame("first")) + 100)  # inside the big frame
    dropped = buf.drop_frames()
    assert dropped == len(text_frame("third")) + len(text_frame("fourth"))
    buf.append(build_frame(OP_CLOSE, b"\x10\x04"))  # 4100 goes next
    rest = drain(buf)
    frames, tail = parse_frames(big[:100] + rest)
    assert [f.opcode for f in frames] == [0x2, OP_CLOSE] and tail == b""


@pytest.mark.parametrize("sent", [0, 7])
def test_drop_at_a_frame_boundary_drops_everything(sent: int) -> None:
    buf = SendBuffer()
    buf.append(text_frame("first"))  # 7 bytes
    buf.append(text_frame("second"))
    buf.advance(sent)
    buf.drop_frames()
    assert len(buf) == 0 and not buf
    buf.append(text_frame("close"))
    assert drain(buf) == text_frame("close")


def test_bytes_that_are_not_frames_are_never_dropped() -> None:
    buf = SendBuffer()
    buf.append(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", frames=False)
    buf.append(text_frame("welcome"))
    buf.advance(5)
    buf.drop_frames()
    assert drain(buf) == b"1.1 101 Switching Protocols\r\n\r\n"
    with pytest.raises(ValueError):
        buf.append(text_frame("x"))
        buf.append(b"raw", frames=False)


def test_clear() -> None:
    buf = SendBuffer()
    buf.append(text_frame("x"))
    buf.advance(1)
    buf.clear()
    assert len(buf) == 0
    buf.append(text_frame("y"))
    assert drain(buf) == text_frame("y")
