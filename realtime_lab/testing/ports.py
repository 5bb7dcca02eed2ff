"""Connection ports without a socket, for hub unit tests, lessons and benchmarks.

:class:`RecordingPort` keeps what the hub writes (and parses it back into
messages); :class:`SlowPort` also keeps it "unsent" (in ``buffered``) until
:meth:`SlowPort.drain`, like a client that reads only when told; :class:`NullPort`
throws it away. All implement :class:`~realtime_lab.core.ports.ConnectionPort`.
``wire`` picks the connection's wire format as a handshake would
(``wire_format("msgpack")``: a binary client).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from realtime_lab.protocol.frames import OP_BINARY, parse_frames
from realtime_lab.protocol.wire import JSON_WIRE, WireFormat

if TYPE_CHECKING:
    from realtime_lab.core.ports import ConnectionPort


class RecordingPort:
    """Records writes, pings and closes; ``buffered`` is what ``buffered_bytes`` reports.

    ``when_drained`` callbacks wait until :meth:`drain` (the client read everything).
    """

    def __init__(self, remote: str = "127.0.0.1", *, wire: WireFormat = JSON_WIRE) -> None:
        self.remote = remote
        self.wire = wire
        self.writes: list[bytes] = []
        self.closes: list[tuple[int, str]] = []
        self.pings = 0
        self.buffered = 0
        self.drains: list[Callable[[], None]] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return self.buffered

    def buffered_bytes(self) -> int:
        return self.buffered

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drains.append(callback)

    def discard_unsent(self) -> int:
        """The test's ``buffered`` bytes are all dropped (as frames not begun)."""
        dropped, self.buffered = self.buffered, 0
        return dropped

    def drain(self) -> None:
        """The transport wrote its backlog: ``buffered`` is 0 and the callbacks run."""
        self.buffered = 0
        callbacks, self.drains = self.drains, []
        for callback in callbacks:
            callback()

    def ping(self) -> None:
        self.pings += 1

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def abort(self) -> None:
        """Dropped at once: recorded as a close with code 1006 (abnormal closure)."""
        self.closes.append((1006, "aborted"))

    def messages(self) -> list[dict[str, Any]]:
        """Every message written so far (JSON text, or MessagePack binary frames)."""
        frames, _ = parse_frames(b"".join(self.writes))
        return [_unpack(f.payload) if f.opcode == OP_BINARY else json.loads(f.payload)
                for f in frames]

    def take(self) -> list[dict[str, Any]]:
        """The messages written since the last take()."""
        messages = self.messages()
        self.writes.clear()
        return messages


class SlowPort(RecordingPort):
    """A RecordingPort whose writes wait in the backlog (``buffered``) until
    :meth:`~RecordingPort.drain`, like a client that reads only when told."""

    def write(self, data: bytes) -> int:
        super().write(data)
        self.buffered += len(data)
        return self.buffered


class NullPort:
    """Accepts and discards every write (counts them in ``writes``); never backlogged."""

    def __init__(self, remote: str = "127.0.0.1", *, wire: WireFormat = JSON_WIRE) -> None:
        self.remote = remote
        self.wire = wire
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        return 0

    def buffered_bytes(self) -> int:
        return 0

    def when_drained(self, callback: Callable[[], None]) -> None:
        callback()  # nothing ever waits

    def discard_unsent(self) -> int:
        return 0

    def ping(self) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> None:
        pass


def _unpack(payload: bytes) -> Any:
    from realtime_lab.protocol import msgpack_codec

    return msgpack_codec.decode(payload)


if TYPE_CHECKING:  # mypy checks that each port implements the whole ConnectionPort
    def _ports(a: RecordingPort, b: SlowPort, c: NullPort) -> list[ConnectionPort]:
        return [a, b, c]
