"""Counters a hub keeps since it started."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HubStats:
    """Counters since the hub started."""

    connections_opened: int = 0
    connections_closed: int = 0
    messages_in: int = 0
    published: int = 0
    deliveries: int = 0
    errors_sent: int = 0
    slow_consumers: int = 0
    heartbeat_timeouts: int = 0
    dropped: int = 0  # messages not delivered, for any reason (MessageDropped events)
    refused: int = 0
    idle_timeouts: int = 0
    too_many_errors: int = 0
    dropped_by_hook: int = 0  # the part of ``dropped`` an on_message hook refused
    #: The part of ``dropped`` an inbound middleware did not pass on.
    dropped_by_middleware: int = 0
    #: ``internal_error`` replies: the server failed on a message (a bug, never the input).
    internal_errors: int = 0
    #: Broadcasts dropped because their fan-out raised (a bug; later ones go on).
    fanouts_failed: int = 0
