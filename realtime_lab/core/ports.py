"""What the core needs from the outside world: a connection port, a clock, a scheduler.

Transports implement :class:`ConnectionPort`; unit tests use fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
Scheduler = Callable[[Callable[[], None]], object]


class ConnectionPort(Protocol):
    """One client connection as the hub sees it: bytes out, ping, close."""

    remote: str

    def write(self, data: bytes) -> None:
        """Send already-built WebSocket frames (one or several, concatenated)."""

    def buffered_bytes(self) -> int:
        """Bytes written but not yet accepted by the operating system."""

    def ping(self) -> None:
        """Send a WebSocket ping frame."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code``; the transport later reports it closed."""
