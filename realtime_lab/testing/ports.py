"""Connection ports without a socket, for hub unit tests, lessons and benchmarks.

:class:`RecordingPort` keeps what the hub writes (and parses it back into
messages); :class:`NullPort` throws it away. Both implement
:class:`~realtime_lab.core.ports.ConnectionPort`.
"""

from __future__ import annotations

import json
from typing import Any

from realtime_lab.protocol.frames import parse_frames


class RecordingPort:
    """Records writes, pings and closes; ``buffered`` is what ``buffered_bytes`` reports."""

    def __init__(self, remote: str = "127.0.0.1") -> None:
        self.remote = remote
        self.writes: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.pings = 0
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def buffered_bytes(self) -> int:
        return self.buffered

    def ping(self) -> None:
        self.pings += 1

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON message written so far."""
        frames, _ = parse_frames(b"".join(self.writes))
        return [json.loads(f.payload) for f in frames]

    def take(self) -> list[dict[str, Any]]:
        """The messages written since the last take()."""
        messages = self.messages()
        self.writes.clear()
        return messages


class NullPort:
    """Accepts and discards every write (counts them in ``writes``)."""

    def __init__(self, remote: str = "127.0.0.1") -> None:
        self.remote = remote
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def buffered_bytes(self) -> int:
        return 0

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass
