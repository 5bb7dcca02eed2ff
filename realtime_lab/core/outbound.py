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
    """Frames waiting for one connection, with their priorities and total size in bytes.

    When everything queued fits in one write, frames go out in arrival order;
    when it does not, control first, then high, normal, low (arrival order within
    a priority). It behaves like the list it replaces for simple uses (``append``,
    ``len``, ``clear``, ``[i]``, ``==`` a list, iteration in arrival order).

    Cheap in the common case: frames live in one list, and the parallel list of
    priorities is only created once a frame of other than normal priority is
    queued, so an idle connection costs one empty list and a normal delivery one
    ``list.append`` (no tuple or deque per frame).
    """

    __slots__ = ("frames", "nbytes", "prios")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.prios: list[int] | None = None
        self.nbytes = 0

    def push(self, frame: bytes, priority: int = Priority.NORMAL) -> None:
        self.frames.append(frame)
        self.nbytes += len(frame)
        prios = self.prios
        if prios is not None:
            prios.append(priority)
        elif priority != Priority.NORMAL:
            self.prios = [Priority.NORMAL] * (len(self.frames) - 1) + [priority]

    def append(self, frame: bytes) -> None:
        self.push(frame, Priority.NORMAL)

    def __len__(self) -> int:
        return len(self.frames)

    def __bool__(self) -> bool:
        return bool(self.frames)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.frames)

    def __getitem__(self, index: int) -> bytes:
        return self.frames[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list | tuple | OutboundQueue):
            return self.frames == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<OutboundQueue {self.counts()} {self.nbytes} bytes>"

    def counts(self) -> dict[str, int]:
        """Queued frames per priority label."""
        counts = {p.label: 0 for p in Priority}
        if self.prios is None:
            counts[Priority.NORMAL.label] = len(self.frames)
        else:
            for prio in self.prios:
                counts[Priority(prio).label] += 1
        return counts

    def clear(self) -> None:
        self.frames = []
        self.prios = None
        self.nbytes = 0

    def evict(self, max_priority: int) -> tuple[bytes, Priority] | None:
        """Remove the oldest frame of the lowest priority present, up to ``max_priority``."""
        if not self.frames:
            return None
        prios = self.prios
        if prios is None:
            if max_priority < Priority.NORMAL:
                return None
            index, prio = 0, Priority.NORMAL
        else:
            lowest = min(prios)
            if lowest > max_priority:
                return None
            index, prio = prios.index(lowest), Priority(lowest)
            del prios[index]
        frame = self.frames.pop(index)
        self.nbytes -= len(frame)
        if not self.frames:
            self.prios = None
        return frame, prio

    def take(self, budget: int) -> list[bytes]:
        """Frames to write now, up to ``budget`` bytes (at least one frame)."""
        frames = self.frames
        if self.nbytes <= budget:
            self.clear()
            return frames
        prios = self.prios
        order = (range(len(frames)) if prios is None
                 else sorted(range(len(frames)), key=lambda i: -prios[i]))
        chosen: list[int] = []
        used = 0
        for i in order:
            size = len(frames[i])
            if chosen and used + size > budget:
                break
            chosen.append(i)
            used += size
        out = [frames[i] for i in chosen]
        taken = set(chosen)
        self.frames = [f for i, f in enumerate(frames) if i not in taken]
        if prios is not None:
            self.prios = [p for i, p in enumerate(prios) if i not in taken] or None
        self.nbytes -= used
        if not self.frames:
            self.prios = None
        return out
