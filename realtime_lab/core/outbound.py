"""Message priorities and the per-connection outbound queue.

Each connection queues prebuilt frames (the same ``bytes`` object for every
subscriber of a broadcast) in four lanes, one per :class:`Priority`. A flush
takes frames control-first, so control and high messages overtake bulk ones.
Under pressure the hub evicts frames of droppable priority (``low`` by default),
oldest first; only when nothing droppable is left is the connection closed as a
slow consumer (close code 4100).
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Iterator


class Priority(enum.IntEnum):
    """Message priority: higher values are sent first and dropped last."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CONTROL = 3

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """``"low"``, ``"normal"``, ``"high"``, ``"control"``, an int or a Priority."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(
                    f"unknown priority {value!r}; expected low, normal, high or control"
                ) from None
        return cls(value)

    @property
    def label(self) -> str:
        return self.name.lower()


class OutboundQueue:
    """Frames waiting for one connection, by priority, with their total size in bytes.

    When everything queued fits in one write, frames go out in arrival order;
    when it does not, control first, then high, normal, low (arrival order within
    a priority). It behaves like the list it replaces for simple uses (``append``,
    ``len``, ``clear``, ``[i]``, ``==`` a list, iteration in arrival order).
    """

    __slots__ = ("lanes", "nbytes", "_seq")

    def __init__(self) -> None:
        self.lanes: tuple[deque[tuple[int, bytes]], ...] = (deque(), deque(), deque(), deque())
        self.nbytes = 0
        self._seq = 0

    def push(self, frame: bytes, priority: int = Priority.NORMAL) -> None:
        self._seq += 1
        self.lanes[priority].append((self._seq, frame))
        self.nbytes += len(frame)

    def append(self, frame: bytes) -> None:
        self.push(frame, Priority.NORMAL)

    def __len__(self) -> int:
        return sum(len(lane) for lane in self.lanes)

    def __bool__(self) -> bool:
        lanes = self.lanes
        return bool(lanes[0] or lanes[1] or lanes[2] or lanes[3])

    def __iter__(self) -> Iterator[bytes]:
        for _, frame in heapq.merge(*self.lanes):
            yield frame

    def __getitem__(self, index: int) -> bytes:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list | tuple | OutboundQueue):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<OutboundQueue {self.counts()} {self.nbytes} bytes>"

    def counts(self) -> dict[str, int]:
        return {Priority(i).label: len(lane) for i, lane in enumerate(self.lanes)}

    def clear(self) -> None:
        for lane in self.lanes:
            lane.clear()
        self.nbytes = 0

    def evict(self, max_priority: int) -> tuple[bytes, Priority] | None:
        """Remove the oldest frame of the lowest non-empty lane up to ``max_priority``."""
        for prio in range(0, max_priority + 1):
            lane = self.lanes[prio]
            if lane:
                frame = lane.popleft()[1]
                self.nbytes -= len(frame)
                return frame, Priority(prio)
        return None

    def take(self, budget: int) -> list[bytes]:
        """Frames to write now, up to ``budget`` bytes (at least one frame)."""
        if self.nbytes <= budget:
            busy = [lane for lane in self.lanes if lane]
            if len(busy) == 1:
                out = [frame for _, frame in busy[0]]
            else:
                out = [frame for _, frame in heapq.merge(*busy)]
            self.clear()
            return out
        out = []
        used = 0
        for lane in reversed(self.lanes):
            while lane:
                size = len(lane[0][1])
                if out and used + size > budget:
                    self.nbytes -= used
                    return out
                out.append(lane.popleft()[1])
                used += size
        self.nbytes -= used
        return out
