"""Servers under test, each a module runnable as ``python -m <module>``.

A server module binds 127.0.0.1 on an ephemeral port, prints ``PORT <n>`` on
stdout when it is ready, and stops when its stdin closes or on SIGTERM. It speaks
the subset of the native protocol the load generator uses: ``welcome`` on
connect, ``subscribe`` -> ``subscribed``, ``publish`` -> ``message`` to every
subscriber. To add a peer (``websockets`` broadcast(), python-socketio, ...),
write such a module and add a :class:`ServerSpec` to :data:`SERVERS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start one server under test."""

    name: str
    module: str
    description: str
    args: tuple[str, ...] = ()


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "realtime_lab",
            "benchmarks.servers.realtime_lab_server",
            "realtime_lab.serve(presence_channels=None): encode once, coalesced writes",
        ),
        ServerSpec(
            "tornado",
            "benchmarks.servers.tornado_server",
            "plain Tornado WebSocketHandler, write_message() per subscriber",
        ),
    )
}

__all__ = ["SERVERS", "ServerSpec"]
