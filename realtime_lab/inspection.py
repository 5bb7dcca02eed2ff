"""Read-only snapshots of a running server: counters, connections and their queues.

``server.inspect()`` (:meth:`realtime_lab.server.LabServer.inspect`) returns a
:class:`ServerSnapshot`: immutable values copied from the hub at one instant, so
a dashboard, a recorder or a test can look inside without holding (or
mutating) the hub's objects. This module is the one place outside ``core/``
that reads the hub's connections; when the core is redesigned into services,
only this module changes.

Snapshots are local to this server (node): ``server.presence(channel)`` is the
call for cluster-wide presence.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from realtime_lab.core.hub import Hub
    from realtime_lab.core.publish import BroadcastProbe
    from realtime_lab.core.session import Session


class ConnectionSnapshot(NamedTuple):
    """One connection at one instant (a named tuple: immutable and cheap to build).

    ``queued_bytes`` counts the hub's outbound queue plus what the transport has
    not yet handed to the operating system; ``queue_fill`` is that divided by
    ``ServerOptions.max_outbound_bytes`` (1.0 = the slow-consumer limit).
    """

    session: str
    user: str
    remote: str
    state: str
    channels: tuple[str, ...]
    connected_at: float
    rtt_ms: float | None
    queued_frames: int
    queued_bytes: int
    queue_fill: float
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    wire: str


AT_RISK_FILL = 0.5
"""A connection whose queue holds this share of ``max_outbound_bytes`` is "at risk"."""


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """Counters, queues and connections of one server (node) at one instant.

    Attributes:
        at: when the snapshot was taken (``time.monotonic()``, seconds).
        counters: the hub's counters since it started (``HubStats`` fields).
        connection_count: open connections.
        channel_count: channels with at least one subscriber here.
        queued_bytes: bytes waiting to be sent, all connections together (None when
            the snapshot was taken with ``connections=False``: then nothing is
            computed per connection, and the snapshot costs the same at any size).
        queued_frames: frames waiting in the hub's queues, all connections together.
        max_queue_fill: the fullest queue, as a share of ``max_outbound_bytes``.
        at_risk: connections whose queue holds at least ``AT_RISK_FILL`` of the limit.
        max_outbound_bytes: the per-connection queue limit (the slow-consumer threshold).
        connections: :class:`ConnectionSnapshot` of every connection, or of the ``n``
            with the largest queues (``inspect(connections=n)``), largest first.
        recorder: the metrics recorder attached to the server, or None.
    """

    at: float
    counters: Mapping[str, int]
    connection_count: int
    channel_count: int
    queued_bytes: int | None
    queued_frames: int | None
    max_queue_fill: float | None
    at_risk: int | None
    max_outbound_bytes: int
    connections: tuple[ConnectionSnapshot, ...] = ()
    recorder: BroadcastProbe | None = None


def counters(hub: Hub) -> Mapping[str, int]:
    """The hub's counters as a read-only mapping (a copy)."""
    stats = hub.stats
    return MappingProxyType({f.name: int(getattr(stats, f.name))
                             for f in dataclasses.fields(stats)})


def _queued(session: Session) -> int:
    try:
        buffered = session.port.buffered_bytes()
    except Exception:  # noqa: BLE001 - a closing transport may fail here
        buffered = 0
    return session.pending.nbytes + buffered


def _snapshot(s: Session, queued: int, limit: int) -> ConnectionSnapshot:
    st = s.stats
    return ConnectionSnapshot(
        s.id, s.user, s.remote or s.port.remote, s.state.value, tuple(sorted(s.subscriptions)),
        s.connected_at, None if s.rtt is None else s.rtt * 1e3, len(s.pending), queued,
        queued / limit, st.messages_in, st.messages_out, st.bytes_in, st.bytes_out,
        s.wire.label())


def inspect(hub: Hub, *, connections: bool | int = True) -> ServerSnapshot:
    """A :class:`ServerSnapshot` of ``hub``.

    ``connections``: True for every connection (in the hub's order), an integer
    ``n`` for the queue totals and the ``n`` connections with the largest queues
    (largest first; 0 for the totals only), False for neither (counters only: a
    constant cost however many connections there are).
    """
    limit = max(1, hub.options.max_outbound_bytes)
    sessions = list(hub.sessions.values())
    base = partial(ServerSnapshot, at=time.monotonic(), counters=counters(hub),
                   connection_count=len(sessions), channel_count=len(hub.channels),
                   max_outbound_bytes=hub.options.max_outbound_bytes, recorder=hub.recorder)
    if connections is False:
        return base(queued_bytes=None, queued_frames=None, max_queue_fill=None, at_risk=None)
    queued: list[int] = []
    frames = at_risk = 0
    risky = AT_RISK_FILL * limit
    for s in sessions:  # one pass, no object per connection
        q = _queued(s)
        queued.append(q)
        frames += len(s.pending)
        if q >= risky:
            at_risk += 1
    if connections is True:
        chosen = list(zip(queued, sessions, strict=True))
    else:
        chosen = heapq.nlargest(int(connections), zip(queued, sessions, strict=True),
                                key=lambda pair: pair[0])
    return base(
        queued_bytes=sum(queued), queued_frames=frames,
        max_queue_fill=max(queued, default=0) / limit, at_risk=at_risk,
        connections=tuple(_snapshot(s, q, limit) for q, s in chosen))


__all__ = ["AT_RISK_FILL", "ConnectionSnapshot", "ServerSnapshot", "counters", "inspect"]
