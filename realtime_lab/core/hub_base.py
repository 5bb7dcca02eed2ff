"""The state and methods that the hub's parts share (see core/hub.py).

:class:`~realtime_lab.core.hub.Hub` is one class split by concern into mixins
(membership; presence is a service, core/presence.py); each inherits this base, which only declares
what ``Hub.__init__`` sets and which methods live in another part, so that each
module type-checks on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from realtime_lab.core.outbound import Priority

if TYPE_CHECKING:
    from realtime_lab.core.backplane import Cluster
    from realtime_lab.core.channels import Channel
    from realtime_lab.core.events import EventBus
    from realtime_lab.core.hooks import Hooks, MaybeAwaitable
    from realtime_lab.core.options import ServerOptions
    from realtime_lab.core.ports import Clock
    from realtime_lab.core.presence_batch import PresenceBatcher
    from realtime_lab.core.presence_sync import PresencePager
    from realtime_lab.core.requests import Request
    from realtime_lab.core.services import Services
    from realtime_lab.core.session import Session
    from realtime_lab.errors import ProtocolError


class HubBase:
    """Declarations only: the hub's shared attributes and cross-part methods."""

    options: ServerOptions
    bus: EventBus
    hooks: Hooks
    clock: Clock
    cluster: Cluster | None
    services: Services  # core/services.py
    presence_pager: PresencePager  # core/presence_sync.py
    presence_batch: PresenceBatcher  # core/presence_batch.py

    if TYPE_CHECKING:  # implemented in hub.py (some by the services) and membership.py
        @property
        def channels(self) -> dict[str, Channel]: ...  # hub.services.registry.channels
        def reject(self, session: Session, err: ProtocolError) -> None: ...
        def send(self, session: Session, message: dict[str, Any],
                 priority: Priority = Priority.CONTROL, *, text: str | None = None) -> bool: ...
        def _subscribe(self, request: Request, name: str,
                       auth: str | None) -> MaybeAwaitable[None]: ...
        def _leave(self, session: Session, name: str, *, timed_out: bool = False,
                   reason: str | None = None) -> None: ...
        def announce_presence(self, name: str, diff: dict[str, object],
                              exclude: Session | None = None) -> None: ...
        def _fan_out(self, channel: Channel, frame: bytes, exclude: Session | None = None,
                     priority: Priority = Priority.NORMAL, *,
                     message: dict[str, Any] | None = None) -> int: ...
