"""What the core needs from the outside world: a connection port, a clock, a scheduler.

(The broadcast observer's port, ``BroadcastProbe``, is core/publish.py's: it speaks
of channels and sessions, which import this module.)

Transports implement :class:`ConnectionPort` (``realtime_lab.transports.pump``);
unit tests use the ports of ``realtime_lab.testing.ports``. Every method the core
calls on a port is declared here: the core never probes a port with ``getattr``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from realtime_lab.protocol.wire import WireFormat

Clock = Callable[[], float]
#: ``Hub(schedule=...)``: a ``loop.call_soon``-like callable (run ``callback`` soon).
Schedule = Callable[[Callable[[], None]], object]


class Timer(Protocol):
    """A delayed call that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not run the callback (nothing happens when it already ran)."""


class Scheduler(Protocol):
    """Runs callbacks later on the hub's thread; an asyncio event loop is one."""

    def call_soon(self, callback: Callable[[], None]) -> object:
        """Run ``callback`` in a later turn of the loop, after what is already due."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` after ``delay`` seconds."""


class SoonScheduler:
    """A :class:`Scheduler` from a ``call_soon``-like callable (``Hub(schedule=...)``).

    ``call_later`` goes to the running asyncio loop (a socketless test that uses
    timers runs one).
    """

    __slots__ = ("call_soon",)

    def __init__(self, schedule: Schedule) -> None:
        self.call_soon = schedule

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


def run_now(callback: Callable[[], None]) -> None:
    """The scheduler of a hub no loop drives (yet): run ``callback`` at once."""
    callback()


class ConnectionPort(Protocol):
    """One client connection as the hub sees it: bytes out, backlog, ping, close.

    ``remote`` is the client's address; ``wire`` the codec and compression agreed
    at the handshake (``realtime_lab.protocol.wire.JSON_WIRE`` for plain JSON).
    """

    remote: str
    wire: WireFormat

    def write(self, data: bytes) -> int:
        """Send already-built WebSocket frames (one or several, concatenated, whole);
        return the bytes still buffered after it (``buffered_bytes()`` now), which the
        hub keeps so that the next write needs no ``buffered_bytes()`` call.

        Nothing is sent once the connection is closing.
        """

    def buffered_bytes(self) -> int:
        """Bytes written but not yet accepted by the operating system."""

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written so far has reached the OS
        (soon, when nothing waits; never, once the connection is closed)."""

    def ping(self) -> None:
        """Send a WebSocket ping frame."""

    def discard_unsent(self) -> int:
        """Drop the frames written but not yet begun by the OS (never half a frame), so
        that a close frame written next goes right after what the client already has
        (a slow consumer); return the bytes dropped."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code``, after what was written; the
        transport later reports the connection closed."""

    def abort(self) -> None:
        """Drop the connection now, unsent frames and all (``LabServer.stop``: a client
        still not reading up to its close frame); the transport reports it closed."""
