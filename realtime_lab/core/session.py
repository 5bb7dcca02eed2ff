"""A server-side connection: its state, subscriptions and bounded outbound queue."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from realtime_lab.core.outbound import OutboundQueue
from realtime_lab.protocol.wire import JSON_WIRE, WireFormat

if TYPE_CHECKING:
    from realtime_lab.core.ports import ConnectionPort


class ConnectionState(enum.Enum):
    """Server-side connection states (docs/protocol.md, "Connection states").

    CONNECTING -> OPEN -> CLOSING -> CLOSED; any state may go straight to CLOSED
    when the socket is lost.
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(eq=False, slots=True)
class SessionStats:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    dropped: int = 0


@dataclass(eq=False, slots=True)
class Session:
    """One connection. The hub owns it; the transport holds it to report events.

    ``pending`` holds frames waiting for the end of the event-loop turn, when they
    are written in one call, in priority lanes (:class:`OutboundQueue`).
    ``pending_bytes`` plus what the transport still buffers (``backlog``, as last
    seen) is bounded by ``ServerOptions.max_outbound_bytes``.
    """

    id: str
    user: str
    port: ConnectionPort
    connected_at: float
    state: ConnectionState = ConnectionState.CONNECTING
    subscriptions: set[str] = field(default_factory=set)
    pending: OutboundQueue = field(default_factory=OutboundQueue)
    backlog: int = 0
    awaiting_drain: bool = False
    dirty: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    remote: str = ""
    last_activity: float = 0.0
    last_seen: float = 0.0
    ping_sent_at: float | None = None
    last_ping_at: float = 0.0
    rtt: float | None = None
    ping_factor: float = 1.0
    close_code: int | None = None
    close_reason: str = ""
    stats: SessionStats = field(default_factory=SessionStats)
    #: times of recent invalid messages, for ``error_limit`` (core/error_limit.py)
    invalid_times: deque[float] | None = None
    #: Codec and outbound compression agreed at the handshake (protocol/wire.py).
    wire: WireFormat = JSON_WIRE
    #: Whether this connection gets its own publishes back (None: the server's
    #: ``echo_to_sender``). A protocol adapter sets it: a Pusher connection never does.
    echo: bool | None = None
    #: The channel authorizer of this connection, ``(session, channel, auth) -> verdict``
    #: as ``ServerOptions.authorizer``, used instead of the server's channel secret and
    #: authorizer (core/authz.py). A protocol adapter sets it: a Pusher connection's
    #: checks its app's HMAC signature (realtime_lab/pusher/auth.py).
    authorizer: Callable[..., object] | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes queued in ``pending`` (not yet handed to the transport)."""
        return self.pending.nbytes

    @pending_bytes.setter
    def pending_bytes(self, value: int) -> None:
        self.pending.nbytes = value

    @property
    def is_open(self) -> bool:
        return self.state is ConnectionState.OPEN

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for the HTTP API and the lab."""
        return {
            "session": self.id,
            "user": self.user,
            "remote": self.port.remote,
            "state": self.state.value,
            "subscriptions": sorted(self.subscriptions),
            "messages_in": self.stats.messages_in,
            "messages_out": self.stats.messages_out,
            "pending_bytes": self.pending_bytes,
            "rtt": self.rtt,
        }
