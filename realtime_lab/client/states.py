"""Client connection states and the transition events a user can observe.

::

    IDLE -> CONNECTING -> OPEN -> (connection lost) -> RECONNECTING -> CONNECTING -> OPEN
                                                  \\-> CLOSED (reconnect off, or STOP advice)
    any state -> CLOSING -> CLOSED                 (close() by the user)

``RECONNECTING`` carries the attempt number and the delay before that attempt;
``CLOSED`` carries the close code and the reason; the ``OPEN`` that ends a
reconnection carries ``downtime``, the seconds since the connection was lost.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class ClientState(enum.Enum):
    """States of a :class:`~realtime_lab.client.Client`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One transition of a client's state.

    Attributes:
        state: the new state.
        previous: the state before.
        at: ``time.monotonic()`` of the transition (the asyncio loop's clock).
        attempt: reconnect attempt number (0 for the first connection).
        delay: seconds until the attempt, for ``RECONNECTING``.
        code: close code of the connection that ended (None when it was lost
            without a close frame, or never opened).
        reason: why the connection ended or why the client stopped.
        downtime: for the ``OPEN`` after a reconnection, seconds without a connection.
        unsent: for ``CLOSED``, messages that were buffered and never sent.
    """

    state: ClientState
    previous: ClientState
    at: float = field(default_factory=time.monotonic)
    attempt: int = 0
    delay: float | None = None
    code: int | None = None
    reason: str = ""
    downtime: float | None = None
    unsent: int = 0

    @property
    def reconnected(self) -> bool:
        """True for the ``OPEN`` that ends a reconnection."""
        return self.state is ClientState.OPEN and self.downtime is not None

    def as_dict(self) -> dict[str, object]:
        """A flat dict (for a pandas DataFrame)."""
        return {
            "state": self.state.value, "previous": self.previous.value, "at": self.at,
            "attempt": self.attempt, "delay": self.delay, "code": self.code,
            "reason": self.reason, "downtime": self.downtime, "unsent": self.unsent,
        }
