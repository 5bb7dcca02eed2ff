"""Outgoing bytes a transport could not write yet, kept as whole frames (sans-I/O).

A transport writes at once what the socket takes; only the rest waits here,
in the chunks it was handed (each chunk one or several whole frames, as the hub
and :class:`~realtime_lab.protocol.connection.ServerConnection` build them).
Because chunk boundaries are frame boundaries, :meth:`SendBuffer.drop_frames`
can throw away every frame not started yet and keep only the rest of the one
being written: what a slow consumer's connection does before its close frame
(so the client sees the close code, not a stalled stream and then an EOF).
Bytes that are not frames (the handshake answer) are appended ``frames=False``
and never dropped.
"""

from __future__ import annotations

from collections import deque

from realtime_lab.protocol.frames import frame_end

Chunk = bytes | bytearray | memoryview


class SendBuffer:
    """A queue of chunks with the number of bytes of the first one already sent."""

    __slots__ = ("_chunks", "_sent", "_pinned", "nbytes")

    def __init__(self) -> None:
        self._chunks: deque[Chunk] = deque()
        self._sent = 0  # bytes of the first chunk already written
        self._pinned = 0  # leading chunks that are not frames (never dropped)
        self.nbytes = 0  # bytes not written yet

    def __len__(self) -> int:
        return self.nbytes

    def __bool__(self) -> bool:
        return self.nbytes > 0

    def append(self, data: Chunk, *, frames: bool = True) -> None:
        """Queue ``data``: whole frames (the default), or bytes that are not frames."""
        if not data:
            return
        if not frames:
            if len(self._chunks) > self._pinned:
                raise ValueError("bytes that are not frames go before any frame")
            self._pinned += 1
        self._chunks.append(data)
        self.nbytes += len(data)

    def peek(self) -> memoryview:
        """The next bytes to write (the rest of the first chunk)."""
        return memoryview(self._chunks[0])[self._sent:]

    def next_frame(self) -> memoryview:
        """The next frame to write (or the rest of the first chunk, if it is not frames).

        For a transport that cannot take bytes back once handed on (Tornado's
        ``IOStream``): handing it one frame at a time keeps every later frame
        here, where :meth:`drop_frames` can still drop it. Expects the first
        chunk to be written a frame at a time (as this method hands it out).
        """
        first = self._chunks[0]
        if self._pinned:
            return memoryview(first)[self._sent:]
        return memoryview(first)[self._sent:min(frame_end(first, self._sent), len(first))]

    def chunks(self, limit: int) -> list[memoryview]:
        """The next chunks to write, up to ``limit`` of them (for ``sendmsg``)."""
        out = [self.peek()]
        for i in range(1, min(limit, len(self._chunks))):
            out.append(memoryview(self._chunks[i]))
        return out

    def advance(self, count: int) -> None:
        """``count`` bytes were written."""
        self.nbytes -= count
        chunks = self._chunks
        sent = self._sent + count
        while chunks and sent >= len(chunks[0]):
            sent -= len(chunks.popleft())
            if self._pinned:
                self._pinned -= 1
        self._sent = sent

    def drop_frames(self) -> int:
        """Drop every frame not started yet; return the bytes dropped.

        What is kept: the bytes that are not frames, and the rest of the frame
        being written (a frame cannot be cut: the client would misread all that
        follows).
        """
        chunks = self._chunks
        keep = self._pinned
        before = self.nbytes
        partial: Chunk | None = None
        if len(chunks) > keep and keep == 0 and self._sent:  # the first chunk is under way
            first = chunks[0]
            end = 0
            while end < self._sent:
                end = frame_end(first, end)
            if end > self._sent:
                partial = first[:end] if end < len(first) else first
        while len(chunks) > keep:
            chunks.pop()
        if partial is not None:
            chunks.append(partial)
        elif keep == 0:
            self._sent = 0
        self.nbytes = sum(len(c) for c in chunks) - self._sent
        return before - self.nbytes

    def clear(self) -> None:
        self._chunks.clear()
        self._sent = self._pinned = self.nbytes = 0


__all__ = ["SendBuffer"]
