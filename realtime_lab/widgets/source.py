"""What the widgets read, and only through public calls: a LabServer, or a bare Hub.

A :class:`LabServer` is read through its public API: ``channels()`` and
``presence(channel)`` (both cluster-wide with a broker), ``inspect()`` and ``on()``.
A bare :class:`~realtime_lab.core.hub.Hub` (socketless tests) answers the same
calls through its own public methods and :mod:`realtime_lab.inspection`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from realtime_lab import inspection

if TYPE_CHECKING:
    from realtime_lab.core.events import Event, Subscription
    from realtime_lab.inspection import ServerSnapshot


class Source:
    """Adapts a LabServer (or a Hub) to the few reads the widgets make."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.is_server = hasattr(target, "inspect") and hasattr(target, "hub")

    @property
    def options(self) -> Any:
        return self.target.options

    @property
    def default_state(self) -> str:
        states = getattr(self.options, "presence_states", ("online",))
        return str(states[0]) if states else "online"

    @property
    def running(self) -> bool:
        return bool(getattr(self.target, "running", True))

    @property
    def url(self) -> str:
        if not self.is_server:
            return ""
        try:
            return str(self.target.url)
        except Exception:  # noqa: BLE001 - not started yet
            return ""

    def channels(self) -> list[dict[str, Any]]:
        if self.is_server:
            return list(self.target.channels())
        return list(self.target.channel_list())

    def presence(self, channel: str) -> dict[str, dict[str, Any]]:
        return dict(self.target.presence(channel))

    def inspect(self, connections: bool | int = True) -> ServerSnapshot:
        if self.is_server:
            snap: ServerSnapshot = self.target.inspect(connections=connections)
            return snap
        return inspection.inspect(self.target, connections=connections)

    def on(self, types: tuple[str, ...], handler: Callable[[Event], object]) -> Subscription:
        if self.is_server:
            sub: Subscription = self.target.on(types, handler)
            return sub
        return self.target.bus.subscribe(handler, types)
