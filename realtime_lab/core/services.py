"""The services the hub is made of (``hub.services``), each with its own state and API.

:func:`~realtime_lab.core.assembly.build_services` (called by
:class:`~realtime_lab.core.hub.Hub`) builds them and passes each the others it needs
(constructor arguments, typed by small ``Protocol`` s or callables); the hub's public
methods delegate to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime_lab.core.backplane import Backplane
    from realtime_lab.core.commands import Commands
    from realtime_lab.core.connections import Connections
    from realtime_lab.core.history import HistoryService
    from realtime_lab.core.liveness import Liveness
    from realtime_lab.core.membership import MembershipService
    from realtime_lab.core.outbox import Outbox
    from realtime_lab.core.presence import PresenceService
    from realtime_lab.core.publish import PublishPath
    from realtime_lab.core.registry import ChannelRegistry


@dataclass(frozen=True, slots=True)
class Services:
    """The services of one hub (``hub.services``)."""

    #: Admission, the welcome, refusals, closing (core/connections.py).
    connections: Connections
    #: The inbound path: decode, middleware, hooks, handlers, errors (core/commands.py).
    commands: Commands
    #: Subscribe and leave, the ``subscribed`` reply, recovery on subscribe (core/membership.py).
    membership: MembershipService
    #: Heartbeat pings and idle checks (core/liveness.py).
    liveness: Liveness
    #: The channels, their metadata and rules (core/registry.py).
    registry: ChannelRegistry
    #: Per-connection queues, one write per turn, fan-outs, slow consumers (core/outbox.py).
    outbox: Outbox
    #: History and recovery (core/history.py).
    history: HistoryService
    #: publish -> backplane -> on_publication -> outbox (core/publish.py).
    publisher: PublishPath
    #: Presence: one truth for every reader, for one server and many (core/presence.py).
    presence: PresenceService
    #: How a publication reaches every node (core/backplane.py).
    backplane: Backplane


__all__ = ["Services"]
